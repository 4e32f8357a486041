//! `qluks compare A B`: whether two images have the same guest-visible content, like
//! `qemu-img compare` (the part of the larger image past the smaller one must read as zero).
use std::error::Error;
use std::path::PathBuf;

use clap::Args;

use crate::image_open::ChainArgs;
use crate::secret::SecretArgs;

/// `qluks compare` arguments.
#[derive(Args)]
pub struct CompareArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    /// Passphrase file of the second image (used as is).
    #[arg(long, value_name = "FILE")]
    second_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    chain: ChainArgs,
    /// Format of the first image (probed when not given; a different format is refused).
    #[arg(short = 'f', value_name = "FMT")]
    format: Option<String>,
    /// Format of the second image (likewise).
    #[arg(short = 'F', value_name = "FMT")]
    second_format: Option<String>,
    /// Quiet: print nothing (the exit code tells).
    #[arg(short = 'q')]
    quiet: bool,
    /// Open the images without taking a lock (qemu-img's -U; qluks takes none).
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// First image.
    a: PathBuf,
    /// Second image.
    b: PathBuf,
}

const CHUNK: usize = 4 << 20;

/// Runs `qluks compare`: prints "Images are identical." (exit 0) or the first differing offset
/// (exit 1); an error (an image that cannot be opened or read) exits with 2, as qemu-img's.
pub fn run(args: CompareArgs) -> std::process::ExitCode {
    match compare(args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("qluks: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Whether the images read the same (a difference is printed).
fn compare(mut args: CompareArgs) -> Result<bool, Box<dyn Error>> {
    let mut second = SecretArgs {
        passphrase_file: args.second_passphrase_file.clone(),
        passphrase_env: None,
        kdf: args.secret.kdf.clone(),
        key: None,
    };
    let mut second_chain = args.chain.policy_only();
    args.image_opts.resolve(&mut args.b, &mut second, Some(&mut second_chain))?;
    args.image_opts.resolve(&mut args.a, &mut args.secret, Some(&mut args.chain))?;
    let _ = args.force_share;
    for (path, format) in [(&args.a, &args.format), (&args.b, &args.second_format)] {
        if let Some(f) = format {
            let shown = path.display();
            let mut file = std::fs::File::open(path).map_err(|e| format!("Could not open '{shown}': {e}"))?;
            let detected = crate::open::detect(&mut file).map_err(|e| format!("{shown}: {e}"))?;
            if f != detected.name() {
                return Err(format!("{shown}: format {f} given, but the image is {}", detected.name()).into());
            }
        }
    }
    let quiet = args.quiet;
    let say = |m: &str| {
        if !quiet {
            println!("{m}");
        }
    };
    let (na, nb) = (args.a.display().to_string(), args.b.display().to_string());
    let mut a = crate::open::open_with_chain(&args.a, false, &args.secret, &args.chain)?;
    let mut b = crate::open::open_with_chain(&args.b, false, &second, &second_chain)?;
    let (sa, sb) = (a.size(), b.size());
    let common = sa.min(sb);
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < common {
        let n = ((common - offset) as usize).min(CHUNK);
        a.read_at(offset, &mut ba[..n]).map_err(|e| read_err(&na, offset, e))?;
        b.read_at(offset, &mut bb[..n]).map_err(|e| read_err(&nb, offset, e))?;
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            say(&format!("Content mismatch at offset {}!", offset + i as u64));
            return Ok(false);
        }
        offset += n as u64;
    }
    let (longer, end, name) = if sa > sb { (&mut a, sa, &na) } else { (&mut b, sb, &nb) };
    while offset < end {
        let n = ((end - offset) as usize).min(CHUNK);
        longer.read_at(offset, &mut ba[..n]).map_err(|e| read_err(name, offset, e))?;
        if let Some(i) = ba[..n].iter().position(|&x| x != 0) {
            say(&format!("Content mismatch at offset {}!", offset + i as u64));
            return Ok(false);
        }
        offset += n as u64;
    }
    if sa != sb {
        say("Warning: Image size mismatch!");
    }
    say("Images are identical.");
    Ok(true)
}

/// A read error, naming the image and the offset.
fn read_err(name: &str, at: u64, e: Box<dyn Error>) -> String {
    format!("{name}: read at offset {at}: {e}")
}
