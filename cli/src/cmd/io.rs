//! `qluks io IMAGE -c CMD ...`: qemu-io style reads and writes of an image's plaintext.
//!
//! Commands, with qemu-io's spellings (OFF and LEN take k/M/G/T suffixes and 0x hex; BYTE is
//! decimal, 0x hex or 0-prefixed octal, as qemu-io reads it):
//! - `read [-q] [-v] [-P BYTE] OFF LEN`: with -P, every byte is verified and a mismatch fails
//!   the command (`Pattern verification failed at offset OFF, LEN bytes`); -v dumps the bytes
//!   as qemu-io does;
//! - `write [-q] [-P BYTE] OFF LEN` (pattern 0xcd by default, as in qemu-io), `write -z [-u]
//!   OFF LEN` (write zeroes; -u lets the format free the clusters);
//! - `discard [-q] OFF LEN` (qcow2: the whole clusters inside the range);
//! - `flush`.
//!
//! The image is opened read-write only when a command writes (qcow2: its top layer; backing
//! layers stay read-only), and flushed at exit as qemu-io does on close. A failed command is
//! reported and the next one runs; the exit status is then non-zero. Requests of any length
//! go in pieces of at most 4 MiB (one buffer), and qcow2 writes in batches of the engine's
//! scratch memory ([`crate::image_open::WRITE_SCRATCH`]).
use std::error::Error;
use std::io::Write;
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
    /// A command to run (repeatable, run in order): read, write, discard, flush.
    #[arg(short = 'c', long = "cmd", value_name = "CMD", required = true)]
    commands: Vec<String>,
    /// The image.
    image: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
enum Op {
    Read { pattern: Option<u8>, dump: bool },
    Write { fill: u8 },
    WriteZeroes { unmap: bool },
    Discard,
    Flush,
}

#[derive(Debug, PartialEq, Eq)]
struct Cmd {
    op: Op,
    offset: u64,
    len: u64,
    quiet: bool,
}

impl Cmd {
    /// Whether the command changes the image (`flush` alone does not: it opens read-only).
    fn writes(&self) -> bool {
        matches!(self.op, Op::Write { .. } | Op::WriteZeroes { .. } | Op::Discard)
    }
}

/// A pattern byte as qemu-io reads it (`strtol` base 0: decimal, 0x hex, 0-prefixed octal).
fn parse_byte(s: &str) -> Result<u8, String> {
    let v = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u8::from_str_radix(hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        u8::from_str_radix(&s[1..], 8)
    } else {
        s.parse()
    };
    v.map_err(|_| format!("invalid pattern `{s}` (a byte: 171, 0xab or 0253)"))
}

fn parse(cmd: &str) -> Result<Cmd, String> {
    let mut words = cmd.split_whitespace();
    let name = words.next().ok_or("empty command")?;
    let (mut pattern, mut zero, mut unmap, mut quiet, mut dump) = (None, false, false, false, false);
    let mut positional = Vec::new();
    let usage = || match name {
        "read" => "usage: read [-q] [-v] [-P BYTE] OFFSET LENGTH",
        "write" => "usage: write [-q] [-P BYTE | -z [-u]] OFFSET LENGTH",
        "discard" => "usage: discard [-q] OFFSET LENGTH",
        _ => "usage: flush",
    };
    while let Some(w) = words.next() {
        match (name, w) {
            (_, "-q") => quiet = true,
            ("read" | "write", "-P") => pattern = Some(parse_byte(words.next().ok_or("-P needs a byte")?)?),
            ("read", "-v") => dump = true,
            ("write", "-z") => zero = true,
            ("write", "-u") => unmap = true,
            (_, w) if w.starts_with('-') && w.len() > 1 && !w[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                return Err(format!("{name}: unknown option {w} ({})", usage()))
            }
            (_, w) => positional.push(parse_size(w)?),
        }
    }
    let (offset, len) = match (name, positional.as_slice()) {
        ("flush", []) => (0, 0),
        ("read" | "write" | "discard", &[off, len]) => (off, len),
        ("read" | "write" | "discard" | "flush", _) => return Err(usage().into()),
        _ => return Err(format!("unknown command `{name}` (read, write, discard, flush)")),
    };
    let op = match name {
        "read" => Op::Read { pattern, dump },
        "write" if zero && pattern.is_some() => return Err("write: -P and -z exclude each other".into()),
        "write" if unmap && !zero => return Err("write: -u requires -z to be specified".into()),
        "write" if zero => Op::WriteZeroes { unmap },
        "write" => Op::Write { fill: pattern.unwrap_or(0xcd) },
        "discard" => Op::Discard,
        _ => Op::Flush,
    };
    Ok(Cmd { op, offset, len, quiet })
}

/// Runs `qluks io`.
pub fn run(args: IoArgs) -> Result<(), Box<dyn Error>> {
    let cmds = args.commands.iter().map(|c| parse(c)).collect::<Result<Vec<_>, _>>()?;
    let writable = cmds.iter().any(Cmd::writes);
    let mut disk = crate::open::open_with_chain(&args.image, writable, &args.secret, &args.chain)?;
    let mut failed = 0;
    let mut buf = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for cmd in &cmds {
        if let Err(e) = execute(disk.as_mut(), cmd, &mut buf, &mut out) {
            out.flush()?;
            eprintln!("{} failed: {}: {e}", op_name(&cmd.op), args.image.display());
            failed += 1;
        }
    }
    out.flush()?;
    // qemu-io flushes when it closes the image.
    if writable {
        disk.flush().map_err(|e| format!("{}: flush: {e}", args.image.display()))?;
    }
    if failed > 0 {
        return Err(format!("{}: {failed} of {} commands failed", args.image.display(), cmds.len()).into());
    }
    Ok(())
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Read { .. } => "read",
        Op::Write { .. } | Op::WriteZeroes { .. } => "write",
        Op::Discard => "discard",
        Op::Flush => "flush",
    }
}

/// Requests are processed in pieces of at most this size, so `read 0 1T` needs no 1 TiB buffer.
const PIECE: u64 = 4 << 20;

fn execute(disk: &mut dyn Disk, cmd: &Cmd, buf: &mut Vec<u8>, out: &mut impl Write) -> Result<(), Box<dyn Error>> {
    let Cmd { offset, len, .. } = *cmd;
    let end = offset
        .checked_add(len)
        .filter(|&e| e <= disk.size())
        .ok_or_else(|| format!("{len} bytes at offset {offset} are outside the disk (size {})", disk.size()))?;
    let piece = len.min(PIECE) as usize;
    if buf.len() < piece {
        buf.resize(piece, 0);
    }
    match cmd.op {
        Op::Read { pattern, dump } => {
            let mut mismatch = None;
            let mut at = offset;
            while at < end {
                let n = (end - at).min(PIECE) as usize;
                disk.read_at(at, &mut buf[..n]).map_err(|e| format!("at offset {at}: {e}"))?;
                if let Some(p) = pattern {
                    if mismatch.is_none() {
                        mismatch = buf[..n].iter().position(|&b| b != p).map(|i| (at + i as u64, buf[i], p));
                    }
                }
                if dump {
                    hexdump(out, at, &buf[..n])?;
                }
                at += n as u64;
            }
            if let Some((at, found, expected)) = mismatch {
                // qemu-io's message (it names the request) and what was found.
                writeln!(
                    out,
                    "Pattern verification failed at offset {offset}, {len} bytes (found {found:#04x}, expected {expected:#04x})"
                )?;
                return Err(format!("pattern verification: the first differing byte is at offset {at}").into());
            }
            if !cmd.quiet {
                writeln!(out, "read {len}/{len} bytes at offset {offset}")?;
            }
        }
        Op::Write { fill } => {
            let keeps = disk.keeps_buffer();
            buf[..piece].fill(fill);
            let mut at = offset;
            while at < end {
                let n = (end - at).min(PIECE) as usize;
                if !keeps {
                    // The disk encrypted the last piece in place.
                    buf[..n].fill(fill);
                }
                disk.write_at(at, &mut buf[..n]).map_err(|e| format!("at offset {at}: {e}"))?;
                at += n as u64;
            }
            if !cmd.quiet {
                writeln!(out, "wrote {len}/{len} bytes at offset {offset}")?;
            }
        }
        Op::WriteZeroes { unmap } => {
            disk.write_zeroes(offset, len, unmap).map_err(|e| format!("zeroes at offset {offset}+{len}: {e}"))?;
            if !cmd.quiet {
                writeln!(out, "wrote {len}/{len} bytes at offset {offset}")?;
            }
        }
        Op::Discard => {
            disk.discard(offset, len).map_err(|e| format!("at offset {offset}+{len}: {e}"))?;
            if !cmd.quiet {
                writeln!(out, "discard {len}/{len} bytes at offset {offset}")?;
            }
        }
        Op::Flush => disk.flush()?,
    }
    Ok(())
}

/// qemu-io's `read -v` dump: 16 bytes a line, offset, hex, and the alphanumeric characters.
fn hexdump(out: &mut impl Write, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    for (i, line) in bytes.chunks(16).enumerate() {
        write!(out, "{:08x}:  ", offset + 16 * i as u64)?;
        for b in line {
            write!(out, "{b:02x} ")?;
        }
        let text: String = line.iter().map(|&b| if b.is_ascii_alphanumeric() { b as char } else { '.' }).collect();
        writeln!(out, " {text}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(op: Op, offset: u64, len: u64) -> Result<Cmd, String> {
        Ok(Cmd { op, offset, len, quiet: false })
    }

    #[test]
    fn commands_parse_like_qemu_io() {
        assert_eq!(parse("read -P 0xab 0 64k"), cmd(Op::Read { pattern: Some(0xab), dump: false }, 0, 65536));
        assert_eq!(parse("read -v 1 2"), cmd(Op::Read { pattern: None, dump: true }, 1, 2));
        assert_eq!(parse("write -z 1M 512"), cmd(Op::WriteZeroes { unmap: false }, 1 << 20, 512));
        assert_eq!(parse("write -z -u 0 1"), cmd(Op::WriteZeroes { unmap: true }, 0, 1));
        assert_eq!(parse("write 0 1"), cmd(Op::Write { fill: 0xcd }, 0, 1));
        assert_eq!(parse("write -P 010 0 1"), cmd(Op::Write { fill: 8 }, 0, 1));
        assert_eq!(parse("write -P 0 0 1"), cmd(Op::Write { fill: 0 }, 0, 1));
        assert_eq!(parse("discard 4k 0x1000"), cmd(Op::Discard, 4096, 4096));
        assert_eq!(parse("flush"), cmd(Op::Flush, 0, 0));
        assert_eq!(
            parse("write -q 0 1G"),
            Ok(Cmd { op: Op::Write { fill: 0xcd }, offset: 0, len: 1 << 30, quiet: true })
        );
        assert!(parse("read 0").is_err());
        assert!(parse("flush 0").is_err());
        assert!(parse("write -u 0 1").is_err());
        assert!(parse("write -z -P 1 0 1").is_err());
        assert!(parse("discard -P 1 0 1").is_err());
        assert!(parse("trim 0 1").is_err());
        assert!(parse("read -P 300 0 1").is_err());
        assert!(parse("read -P 09 0 1").is_err());
    }

    #[test]
    fn hexdump_matches_qemu_io() {
        let mut out = Vec::new();
        let mut bytes = vec![0x41u8; 20];
        bytes.extend_from_slice(&[0x20, 0x2e]);
        hexdump(&mut out, 0x10, &bytes).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "00000010:  41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41  AAAAAAAAAAAAAAAA\n\
             00000020:  41 41 41 41 20 2e  AAAA..\n"
        );
    }
}
