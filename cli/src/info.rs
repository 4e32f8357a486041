//! `qluks info`: what an image is, without unlocking it.
use std::error::Error;
use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use qluks::io::BlockIo;
use qluks::luks::luks1::{self, Luks1Header};

use crate::open::{detect, Format};

/// `qluks info` arguments.
#[derive(Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    /// The image.
    image: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// Runs `qluks info`.
pub fn run(args: InfoArgs) -> Result<(), Box<dyn Error>> {
    let path = &args.image_opts.path(&args.image)?;
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file_size = BlockIo::size(&mut file)?;
    let text = match detect(&mut file)? {
        Format::Luks => {
            let mut v = [0u8; 8];
            BlockIo::read_at(&mut file, 0, &mut v)?;
            match u16::from_be_bytes([v[6], v[7]]) {
                1 => {
                    let header =
                        luks1::Luks1Header::read(&mut file, 0).map_err(|e| format!("{}: {e}", path.display()))?;
                    luks1_info(&header, file_size, args.output)
                }
                2 => crate::luks2_info::info(&mut file, file_size, args.output == Output::Json)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                version => return Err(format!("{}: LUKS version {version} is not supported", path.display()).into()),
            }
        }
        Format::Qcow2 => crate::qcow2_info::qcow2_info(path, file, args.output == Output::Json)?,
        Format::Qcow => crate::qcow2_info::qcow_info(path, file, args.output == Output::Json)?,
        Format::Raw => {
            let name = Format::Raw.name();
            match args.output {
                Output::Human => format!("format: {name}\nvirtual size: {file_size}\n"),
                Output::Json => format!("{{\"format\":\"{name}\",\"virtual_size\":{file_size}}}\n"),
            }
        }
    };
    print!("{text}");
    Ok(())
}

fn luks1_info(h: &Luks1Header, file_size: u64, output: Output) -> String {
    let payload = h.payload_offset_bytes();
    let virtual_size = file_size.saturating_sub(payload) / 512 * 512;
    let mut s = String::new();
    match output {
        Output::Human => {
            let _ = writeln!(s, "format: luks\nversion: 1\ncipher: {}", h.cipher);
            let _ = writeln!(s, "cipher name: {}\ncipher mode: {}", h.cipher.cipher_name(), h.cipher.mode_name());
            let _ = writeln!(s, "hash: {}\nkey bytes: {}", h.hash, h.key_bytes);
            let _ = writeln!(s, "payload offset: {payload} ({} sectors)", h.payload_offset);
            let _ = writeln!(s, "virtual size: {virtual_size}\nuuid: {}", crate::escape::shown(h.uuid_str()));
            let _ = writeln!(s, "mk iterations: {}\nkeyslots:", h.mk_iterations);
            for (i, k) in h.keyslots.iter().enumerate() {
                let at = k.key_offset as u64 * 512;
                if k.active {
                    let _ = writeln!(s, "  {i}: active, iterations {}, key material at {at}", k.iterations);
                } else {
                    let _ = writeln!(s, "  {i}: inactive");
                }
            }
        }
        Output::Json => {
            let _ = write!(
                s,
                "{{\"format\":\"luks\",\"version\":1,\"cipher\":\"{}\",\"cipher_name\":\"{}\",\"cipher_mode\":\"{}\",\
                 \"hash\":\"{}\",\"key_bytes\":{},\"payload_offset\":{payload},\"virtual_size\":{virtual_size},\
                 \"uuid\":\"{}\",\"mk_iterations\":{},\"keyslots\":[",
                h.cipher,
                h.cipher.cipher_name(),
                h.cipher.mode_name(),
                h.hash,
                h.key_bytes,
                json_escape(h.uuid_str()),
                h.mk_iterations
            );
            for (i, k) in h.keyslots.iter().enumerate() {
                let _ = write!(
                    s,
                    "{}{{\"index\":{i},\"active\":{},\"iterations\":{},\"key_offset\":{},\"stripes\":{}}}",
                    if i > 0 { "," } else { "" },
                    k.active,
                    k.iterations,
                    k.key_offset as u64 * 512,
                    k.stripes
                );
            }
            s.push_str("]}\n");
        }
    }
    s
}

pub(crate) fn json_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}
