//! `qluks resize [--shrink] [-f FMT] IMAGE [+|-]SIZE`, like `qemu-img resize`: qcow2 images
//! through the core's [`Qcow2::resize`] (sizes a multiple of 512; LUKS images need their
//! passphrase), raw files by length (exact, as qemu-img).
use std::error::Error;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use clap::Args;
use qluks::qcow2::{CryptMethod, Qcow2Image};

use crate::image_open::{ChainArgs, CliChain};
use crate::secret::SecretArgs;

/// `qluks resize` arguments.
#[derive(Args)]
pub struct ResizeArgs {
    /// Allow the new size to be smaller: everything past it is deleted.
    #[arg(long)]
    shrink: bool,
    /// Image format: qcow2 or raw (default: probed).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<String>,
    /// Quiet: no "Image resized." line.
    #[arg(short = 'q')]
    quiet: bool,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// The image.
    image: PathBuf,
    /// The new size (k, M, G, T suffixes), or +SIZE / -SIZE relative to the current one.
    #[arg(allow_hyphen_values = true)]
    size: String,
}

/// The new size from `+N`, `-N` or `N` and the current size.
fn new_size(spec: &str, current: u64) -> Result<u64, String> {
    let (sign, rest) = match spec.as_bytes().first() {
        Some(b'+') => (1, &spec[1..]),
        Some(b'-') => (-1, &spec[1..]),
        _ => (0, spec),
    };
    let n = crate::units::parse_size(rest)?;
    match sign {
        1 => current.checked_add(n).ok_or_else(|| format!("size {current} + {n} overflows")),
        -1 => current.checked_sub(n).ok_or_else(|| format!("cannot shrink {current} bytes by {n}: below 0")),
        _ => Ok(n),
    }
}

/// Runs `qluks resize`.
pub fn run(mut args: ResizeArgs) -> Result<(), Box<dyn Error>> {
    args.image_opts.resolve(&mut args.image, &mut args.secret, Some(&mut args.chain))?;
    let path = &args.image;
    let name = path.display();
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{name}: {e}"))?;
    let mut magic = [0u8; 6];
    let n = std::io::Read::read(&mut file, &mut magic).map_err(|e| format!("{name}: {e}"))?;
    let probed = match &magic[..n] {
        [b'Q', b'F', b'I', 0xfb, ..] => "qcow2",
        b"LUKS\xba\xbe" => "luks",
        _ => "raw",
    };
    let format = args.format.as_deref().unwrap_or(probed);
    match format {
        "qcow2" if probed == "qcow2" => resize_qcow2(&args, file),
        "qcow2" => Err(format!("{name}: not a qcow2 image").into()),
        "raw" if probed == "raw" || args.format.is_some() => {
            let size = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
            let to = new_size(&args.size, size).map_err(|e| format!("{name}: {e}"))?;
            if to < size && !args.shrink {
                return Err(shrink_hint(path, size, to).into());
            }
            file.set_len(to).map_err(|e| format!("{name}: {e}"))?;
            file.sync_all().map_err(|e| format!("{name}: {e}"))?;
            if !args.quiet {
                println!("Image resized.");
            }
            Ok(())
        }
        "luks" => Err(format!("{name}: resizing LUKS volumes is not supported (qcow2 and raw only)").into()),
        other => Err(format!("{name}: resizing format `{other}` is not supported (qcow2, raw)").into()),
    }
}

fn shrink_hint(path: &std::path::Path, size: u64, to: u64) -> String {
    format!(
        "{}: the new size ({to} bytes) is smaller than the current one ({size} bytes): use --shrink to delete \
         everything past the new end",
        path.display()
    )
}

fn resize_qcow2(args: &ResizeArgs, mut file: File) -> Result<(), Box<dyn Error>> {
    let path = &args.image;
    let name = path.display();
    let (header, extensions, _) = qluks::qcow2::read_qcow2_header(&mut file).map_err(|e| format!("{name}: {e}"))?;
    let to = new_size(&args.size, header.size).map_err(|e| format!("{name}: {e}"))?;
    if to < header.size && !args.shrink {
        return Err(shrink_hint(path, header.size, to).into());
    }
    if extensions.backing_file.is_some() && to > header.size {
        // With the backing chain open: the new area must read as zeros where the backing
        // file is longer (as qemu-img does).
        let mut r = crate::image_open::resolver(path, &args.secret, &args.chain)?;
        let shown = name.to_string();
        let mut chain = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || CliChain::open(file, &mut r).map(Box::new).map_err(|e| format!("{shown}: {e}")))?
            .join()
            .map_err(|_| "opening the image panicked")??;
        let mut scratch = vec![0u8; chain.write_scratch_len()];
        chain.resize(to, args.shrink, &mut scratch).map_err(|e| format!("{name}: {e}"))?;
        chain.flush().map_err(|e| format!("{name}: {e}"))?;
        if !args.quiet {
            println!("Image resized.");
        }
        return Ok(());
    }
    let passphrase = match header.crypt_method {
        CryptMethod::None => None,
        _ => Some(args.secret.get(&format!("Passphrase for {name}: "))?),
    };
    let mut q = match &passphrase {
        Some(p) => {
            let claims = crate::secret::pbkdf2_claims(&mut file);
            let limits = args.secret.kdf.limits(&claims);
            Qcow2Image::open_with_kdf_limits(file, None, Some(p), &limits)
        }
        None => Qcow2Image::open(file, None),
    }
    .map_err(|e| format!("{name}: {e}"))?;
    if to < header.size {
        eprintln!(
            "qluks: warning: shrinking deletes all data past the new end ({to} bytes) of {name}; make sure \
             nothing important is there"
        );
    }
    q.resize(to, args.shrink).map_err(|e| format!("{name}: {e}"))?;
    q.flush().map_err(|e| format!("{name}: {e}"))?;
    if !args.quiet {
        println!("Image resized.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::new_size;

    #[test]
    fn relative_and_absolute_sizes() {
        assert_eq!(new_size("+1M", 1 << 20), Ok(2 << 20));
        assert_eq!(new_size("-512k", 1 << 20), Ok(512 << 10));
        assert_eq!(new_size("3G", 1), Ok(3 << 30));
        assert!(new_size("-2M", 1 << 20).is_err());
        assert!(new_size("+1", u64::MAX).is_err());
    }
}
