//! `qluks create -f luks IMAGE SIZE`: a new LUKS1 volume with QEMU's defaults (`-f luks2`:
//! [`crate::cmd::create::luks2`]; `-f qcow2`: [`crate::cmd::create::qcow2`], qemu-img's options).
//!
//! `-o` takes `cipher=aes-256-xts-plain64`, `hash=sha256`, `iter-time=MS` or `iterations=N`,
//! and QEMU's own option names (`cipher-alg=aes-128`, `cipher-mode=cbc`, `ivgen-alg=essiv`,
//! `ivgen-hash-alg=sha256`, `hash-alg=sha1`).

pub mod luks2;
pub mod luks_options;
pub mod qcow2;

use std::error::Error;
use std::fs::OpenOptions as FileOptions;
use std::path::PathBuf;

use clap::Args;
use qluks::crypto::OsRng;
use qluks::luks::luks1::{self, CreateParams, Iterations};

use crate::secret::SecretArgs;
use crate::units::parse_size;
use luks_options::parse_options;

/// `qluks create` arguments.
#[derive(Args)]
pub struct CreateArgs {
    /// Image format (qcow2, luks, luks2).
    #[arg(short = 'f', value_name = "FORMAT")]
    format: String,
    /// qcow2: backing file, stored as given (relative names resolve against IMAGE's directory).
    #[arg(short = 'b', value_name = "BACKING")]
    backing: Option<String>,
    /// qcow2: format of the backing file.
    #[arg(short = 'F', value_name = "FMT")]
    backing_format: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    objects: crate::secret::ObjectArgs,
    /// Format options, comma-separated (`-o help` lists qcow2's).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Option<String>,
    /// qcow2 with preallocation: show progress on stderr (hidden when not a terminal).
    #[arg(short = 'p')]
    progress: bool,
    /// Quiet: no progress.
    #[arg(short = 'q')]
    quiet: bool,
    /// The image to create (overwritten).
    image: Option<PathBuf>,
    /// Payload size (k/M/G/T suffixes), rounded up to 512 bytes; qcow2: the virtual size,
    /// optional with -b (the backing file's).
    size: Option<String>,
}

/// Runs `qluks create`.
pub fn run(mut args: CreateArgs) -> Result<(), Box<dyn Error>> {
    let secrets = args.objects.secrets()?;
    if let Some(id) = crate::secret::key_secret_option(args.options.as_deref(), &["encrypt.key-secret", "key-secret"]) {
        // An id no --object has falls back to --passphrase-file/-env when given.
        if secrets.get(&id).is_some() || !args.secret.is_given() {
            args.secret.key = Some(secrets.key(&id));
        }
    }
    if args.format == "qcow2" {
        let parsed = crate::cmd::create::qcow2::parse_options(args.options.as_deref())?;
        if parsed.help {
            print!("{}", crate::cmd::create::qcow2::HELP);
            return Ok(());
        }
        let image = args.image.as_deref().ok_or("IMAGE is required")?;
        // The preallocation is one call of the engine: the line shows its start and its end.
        let prealloc = parsed.preallocation != qluks::qcow2::create::Preallocation::Off;
        let progress = crate::progress::Progress::new(args.progress && prealloc, args.quiet);
        progress.set(0, 1);
        crate::cmd::create::qcow2::run(
            image,
            args.size.as_deref(),
            args.options.as_deref(),
            args.backing.as_deref(),
            args.backing_format.as_deref(),
            &args.secret,
        )?;
        progress.finish();
        return Ok(());
    }
    if args.backing.is_some() || args.backing_format.is_some() {
        return Err(format!("-b and -F are qcow2 options, not {}", args.format).into());
    }
    let image = args.image.ok_or("IMAGE is required")?;
    let size = args.size.ok_or("SIZE is required")?;
    if args.format == "luks2" {
        return crate::cmd::create::luks2::run(&image, &size, args.options.as_deref(), &args.secret);
    }
    if args.format != "luks" {
        return Err(format!("format `{}` cannot be created (qcow2, luks, luks2)", args.format).into());
    }
    let opts = parse_options(args.options.as_deref())?;
    let size = parse_size(&size)?.next_multiple_of(512);
    let passphrase = args.secret.get("Passphrase for the new volume: ")?;
    let mut clock = crate::cpu_time::calibration_clock();
    let iterations = match opts.iterations {
        Some(n) => Iterations::fixed(n),
        None => Iterations::IterTime { ms: opts.iter_time_ms, clock_ns: &mut clock },
    };
    let mut params = CreateParams { cipher: opts.cipher, hash: opts.hash, iterations };
    let mut file = FileOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    let (header, _key) = luks1::format(&mut file, 0, &mut params, &passphrase, &mut OsRng)?;
    file.set_len(header.payload_offset_bytes() + size)?;
    file.sync_all()?;
    Ok(())
}
