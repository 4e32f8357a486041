//! `qluks convert -O raw`: the plaintext of an image into a raw file (sparse where zero).
use std::error::Error;
use std::fs::OpenOptions as FileOptions;
use std::path::PathBuf;

use clap::Args;
use qluks::io::BlockIo;

use crate::secret::SecretArgs;

/// `qluks convert` arguments.
#[derive(Args)]
pub struct ConvertArgs {
    /// Output format (raw).
    #[arg(short = 'O', value_name = "FORMAT", default_value = "raw")]
    output_format: String,
    #[command(flatten)]
    secret: SecretArgs,
    /// Source image.
    src: PathBuf,
    /// Destination file (created or truncated).
    dst: PathBuf,
}

const CHUNK: usize = 1 << 20;

/// Runs `qluks convert`.
pub fn run(args: ConvertArgs) -> Result<(), Box<dyn Error>> {
    if args.output_format != "raw" {
        return Err(format!("output format `{}` is not supported (raw)", args.output_format).into());
    }
    let mut src = crate::open::open(&args.src, false, &args.secret)?;
    let mut dst = FileOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args.dst)
        .map_err(|e| format!("{}: {e}", args.dst.display()))?;
    let size = src.size();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let n = ((size - offset) as usize).min(CHUNK);
        src.read_at(offset, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            BlockIo::write_at(&mut dst, offset, &buf[..n])?;
        }
        offset += n as u64;
    }
    dst.set_len(size)?;
    dst.sync_data()?;
    Ok(())
}
