//! `qluks io IMAGE -c CMD ...`: qemu-io style reads and writes of an image's plaintext.
//!
//! Commands: `read [-P BYTE] OFF LEN` (with -P, verify every byte; a mismatch fails the
//! command), `write [-P BYTE] [-z] OFF LEN` (pattern 0xcd by default as in qemu-io; -z writes
//! zeros), `flush`. OFF and LEN take k/M/G suffixes.
use std::error::Error;
use std::path::PathBuf;

use clap::Args;

use crate::open::Disk;
use crate::secret::SecretArgs;
use crate::units::parse_size;

/// `qluks io` arguments.
#[derive(Args)]
pub struct IoArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    chain: crate::image_open::ChainArgs,
    /// A command to run (repeatable, run in order).
    #[arg(short = 'c', long = "cmd", value_name = "CMD", required = true)]
    commands: Vec<String>,
    /// The image.
    image: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Read { pattern: Option<u8>, offset: u64, len: u64 },
    Write { fill: u8, offset: u64, len: u64 },
    Flush,
}

fn parse_byte(s: &str) -> Result<u8, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.map_err(|_| format!("invalid pattern `{s}` (a byte, e.g. 0xab)"))
}

fn parse(cmd: &str) -> Result<Cmd, String> {
    let mut words = cmd.split_whitespace();
    let name = words.next().ok_or("empty command")?;
    let mut pattern = None;
    let mut zero = false;
    let mut positional = Vec::new();
    while let Some(w) = words.next() {
        match w {
            "-P" => pattern = Some(parse_byte(words.next().ok_or("-P needs a byte")?)?),
            "-z" => zero = true,
            w if w.starts_with('-') => return Err(format!("{name}: unknown option {w}")),
            w => positional.push(parse_size(w)?),
        }
    }
    let off_len = |positional: &[u64]| match positional {
        [off, len] => Ok((*off, *len)),
        _ => Err(format!("usage: {name} [-P BYTE] OFFSET LENGTH")),
    };
    match name {
        "read" if !zero => {
            let (offset, len) = off_len(&positional)?;
            Ok(Cmd::Read { pattern, offset, len })
        }
        "write" => {
            let (offset, len) = off_len(&positional)?;
            let fill = if zero { 0 } else { pattern.unwrap_or(0xcd) };
            Ok(Cmd::Write { fill, offset, len })
        }
        "flush" if positional.is_empty() => Ok(Cmd::Flush),
        _ => Err(format!("unknown or malformed command `{cmd}` (read, write, flush)")),
    }
}

/// Runs `qluks io`.
pub fn run(args: IoArgs) -> Result<(), Box<dyn Error>> {
    let cmds = args.commands.iter().map(|c| parse(c)).collect::<Result<Vec<_>, _>>()?;
    let writable = cmds.iter().any(|c| matches!(c, Cmd::Write { .. }));
    let mut disk = crate::open::open_with_chain(&args.image, writable, &args.secret, &args.chain)?;
    let mut failed = false;
    for cmd in &cmds {
        if let Err(e) = execute(disk.as_mut(), cmd) {
            println!("{e}");
            failed = true;
        }
    }
    if failed {
        return Err("a command failed".into());
    }
    Ok(())
}

/// Requests are processed in pieces of at most this size, so `read 0 1T` needs no 1 TiB buffer.
const PIECE: u64 = 4 << 20;

fn execute(disk: &mut dyn Disk, cmd: &Cmd) -> Result<(), Box<dyn Error>> {
    match *cmd {
        Cmd::Read { pattern, offset, len } => {
            let mut buf = vec![0u8; len.min(PIECE) as usize];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(PIECE) as usize;
                let at = offset.checked_add(done).ok_or("offset overflows")?;
                disk.read_at(at, &mut buf[..n])?;
                if let Some(p) = pattern {
                    if let Some(i) = buf[..n].iter().position(|&b| b != p) {
                        return Err(format!(
                            "Pattern verification failed at offset {}, {len} bytes (found {:#04x}, expected {p:#04x})",
                            at + i as u64,
                            buf[i]
                        )
                        .into());
                    }
                }
                done += n as u64;
            }
            println!("read {len}/{len} bytes at offset {offset}");
        }
        Cmd::Write { fill, offset, len } => {
            let mut buf = vec![0u8; len.min(PIECE) as usize];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(PIECE) as usize;
                // The disk may encrypt the buffer in place: refill it every time.
                buf[..n].fill(fill);
                disk.write_at(offset.checked_add(done).ok_or("offset overflows")?, &mut buf[..n])?;
                done += n as u64;
            }
            println!("wrote {len}/{len} bytes at offset {offset}");
        }
        Cmd::Flush => disk.flush()?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_like_qemu_io() {
        assert_eq!(parse("read -P 0xab 0 64k"), Ok(Cmd::Read { pattern: Some(0xab), offset: 0, len: 65536 }));
        assert_eq!(parse("write -z 1M 512"), Ok(Cmd::Write { fill: 0, offset: 1 << 20, len: 512 }));
        assert_eq!(parse("write 0 1"), Ok(Cmd::Write { fill: 0xcd, offset: 0, len: 1 }));
        assert_eq!(parse("flush"), Ok(Cmd::Flush));
        assert!(parse("read 0").is_err());
        assert!(parse("discard 0 1").is_err());
        assert!(parse("read -P 300 0 1").is_err());
    }
}
