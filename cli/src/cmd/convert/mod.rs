//! `qluks convert -O raw`: the plaintext of an image into a raw file (sparse where zero);
//! `-O qcow2` is [`crate::cmd::convert::to_qcow2`].

pub mod to_qcow2;
pub mod to_raw;
use std::error::Error;
use std::fs::OpenOptions as FileOptions;
use std::path::PathBuf;
use std::sync::mpsc;

use clap::Args;

use crate::image_open::ChainArgs;
use crate::open::MapEntry;
use crate::progress::Progress;
use crate::secret::SecretArgs;

/// `qluks convert` arguments.
#[derive(Args)]
pub struct ConvertArgs {
    /// Source format (probed when not given; a different format is refused).
    #[arg(short = 'f', value_name = "FMT")]
    format: Option<String>,
    /// Open the source without taking a lock (qemu-img's -U; qluks takes none).
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// Output format (raw, qcow2).
    #[arg(short = 'O', value_name = "FORMAT", default_value = "raw")]
    output_format: String,
    /// Options of a qcow2 output, comma-separated, with qemu-img's names (cluster_size,
    /// compat, refcount_bits, extended_l2, lazy_refcounts, preallocation, encrypt.format=luks,
    /// encrypt.cipher-alg, encrypt.cipher-mode, encrypt.ivgen-alg, encrypt.hash-alg,
    /// encrypt.iter-time, ...).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Option<String>,
    /// Passphrase of an encrypted output (`-o encrypt.format=luks`), from this file (used as
    /// is); without it or --target-passphrase-env, asked twice on the terminal.
    #[arg(long, value_name = "FILE", conflicts_with = "target_passphrase_env")]
    target_passphrase_file: Option<PathBuf>,
    /// Passphrase of an encrypted output, from this environment variable.
    #[arg(long, value_name = "VAR")]
    target_passphrase_env: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// Show progress on stderr.
    #[arg(short = 'p')]
    progress: bool,
    /// Quiet: no progress.
    #[arg(short = 'q')]
    quiet: bool,
    /// Write into the existing destination image instead of creating one (qemu-img's -n):
    /// its format and size stay; every byte of the source is written (zeros too).
    #[arg(short = 'n')]
    no_create: bool,
    /// The destination is an option string like --image-opts' (requires -n, as in qemu-img):
    /// `driver=qcow2,file.filename=PATH,encrypt.key-secret=ID`.
    #[arg(long)]
    target_image_opts: bool,
    /// Convert the disk as it was at this internal snapshot (qcow2): an id or a name, or
    /// `snapshot.id=ID` / `snapshot.name=NAME` as qemu-img takes them.
    #[arg(short = 'l', long = "snapshot", value_name = "SNAPSHOT")]
    snapshot: Option<String>,
    /// Source image.
    src: PathBuf,
    /// Destination file (created or truncated).
    dst: PathBuf,
}

// Large reads: contiguous clusters become one I/O and one batch decrypt.
const CHUNK: usize = 4 << 20;
/// Buffers in flight between the reader and the writer thread.
const BUFFERS: usize = 6;
/// Writer threads.
const WRITERS: usize = 4;

/// Runs `qluks convert`.
pub fn run(mut args: ConvertArgs) -> Result<(), Box<dyn Error>> {
    args.image_opts.resolve(&mut args.src, &mut args.secret, Some(&mut args.chain))?;
    let _ = args.force_share;
    if let Some(f) = &args.format {
        let src = args.src.display();
        let mut file = std::fs::File::open(&args.src).map_err(|e| format!("Could not open '{src}': {e}"))?;
        let detected = crate::open::detect(&mut file).map_err(|e| format!("{src}: {e}"))?;
        if f != detected.name() {
            return Err(format!("{src}: -f {f} given, but the image is {}", detected.name()).into());
        }
    }
    if args.target_image_opts && !args.no_create {
        return Err("--target-image-opts requires use of -n flag".into());
    }
    if args.no_create {
        return into_existing(args);
    }
    let staged = Staged::new(&args.dst)?;
    let dst = std::mem::replace(&mut args.dst, staged.path().to_path_buf());
    run_to(args)?;
    staged.commit().map_err(|e| format!("{}: {e}", dst.display()).into())
}

/// An output written under a temporary name in its directory and renamed over the
/// destination at the end: an error (or an interrupted run) never leaves a half-written
/// destination. Outputs that are not regular files (devices) are written in place.
pub struct Staged {
    tmp: std::path::PathBuf,
    dst: std::path::PathBuf,
    done: bool,
}

impl Staged {
    /// Picks the temporary name for `dst`.
    pub fn new(dst: &std::path::Path) -> Result<Staged, Box<dyn Error>> {
        let in_place = std::fs::metadata(dst).map(|m| !m.is_file()).unwrap_or(false);
        if in_place {
            return Ok(Staged { tmp: dst.to_path_buf(), dst: dst.to_path_buf(), done: true });
        }
        let name = dst.file_name().ok_or_else(|| format!("{}: not a file name", dst.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".qluks-tmp-{}", std::process::id()));
        let tmp = dst.with_file_name(tmp_name);
        Ok(Staged { tmp, dst: dst.to_path_buf(), done: false })
    }

    /// Where to write.
    pub fn path(&self) -> &std::path::Path {
        &self.tmp
    }

    /// Renames the written output over the destination.
    pub fn commit(mut self) -> std::io::Result<()> {
        // Nothing written (`-o help`): nothing to rename.
        if !self.done && self.tmp.symlink_metadata().is_ok() {
            std::fs::rename(&self.tmp, &self.dst)?;
            self.done = true;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `convert -n`: the source's guest bytes written over those of an existing image (opened
/// with its own secret: `--target-image-opts …key-secret=ID`, or the target passphrase).
fn into_existing(args: ConvertArgs) -> Result<(), Box<dyn Error>> {
    if args.options.is_some() || args.snapshot.is_some() {
        return Err("-n writes into an existing image: -o and -l do not apply".into());
    }
    let mut target_secret = SecretArgs {
        passphrase_file: args.target_passphrase_file.clone(),
        passphrase_env: args.target_passphrase_env.clone(),
        kdf: args.secret.kdf.clone(),
        key: None,
    };
    let mut target_chain = args.chain.policy_only();
    let mut target = args.dst.clone();
    if args.target_image_opts {
        let text = target.to_string_lossy().into_owned();
        let opts = crate::image_opts::ImageOpts::parse(&text).map_err(|e| format!("Could not open '{text}': {e}"))?;
        let secrets = args.image_opts.objects.secrets()?;
        crate::image_opts::apply(&opts, &secrets, &mut target_secret, Some(&mut target_chain))?;
        target = opts.filename.clone();
        let mut file = std::fs::File::open(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        opts.check_driver(crate::open::detect(&mut file)?)?;
    }
    let mut src = crate::open::open_with_chain(&args.src, false, &args.secret, &args.chain)?;
    let mut dst = crate::open::open_with_chain(&target, true, &target_secret, &target_chain)?;
    let name = target.display();
    let size = src.size();
    if dst.size() < size {
        return Err(
            format!("{name}: the image ({} bytes) is smaller than the source ({size} bytes)", dst.size()).into()
        );
    }
    let progress = Progress::new(args.progress, args.quiet);
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let n = ((size - offset) as usize).min(CHUNK);
        src.read_at(offset, &mut buf[..n]).map_err(|e| format!("{}: at offset {offset}: {e}", args.src.display()))?;
        let written = if buf[..n].iter().all(|&b| b == 0) {
            dst.write_zeroes(offset, n as u64, false)
        } else {
            dst.write_at(offset, &mut buf[..n])
        };
        written.map_err(|e| format!("{name}: at offset {offset}: {e}"))?;
        offset += n as u64;
        progress.set(offset, size);
    }
    progress.finish();
    dst.flush().map_err(|e| format!("{name}: flush: {e}"))?;
    Ok(())
}

fn run_to(args: ConvertArgs) -> Result<(), Box<dyn Error>> {
    if args.output_format == "qcow2" {
        if args.snapshot.is_some() {
            return Err("-l (a snapshot) is supported with -O raw only".into());
        }
        let secret = crate::secret::NewSecretArgs {
            new_passphrase_file: args.target_passphrase_file.clone(),
            new_passphrase_env: args.target_passphrase_env.clone(),
        };
        let objects = args.image_opts.objects.secrets()?;
        let given = args.target_passphrase_file.is_some() || args.target_passphrase_env.is_some();
        let key = crate::secret::key_secret_option(args.options.as_deref(), &["encrypt.key-secret"])
            .filter(|id| objects.get(id).is_some() || !given)
            .map(|id| objects.lookup(&id))
            .transpose()?;
        let target = crate::cmd::convert::to_qcow2::Target { options: args.options.as_deref(), secret: &secret, key };
        return crate::cmd::convert::to_qcow2::run(
            &args.src,
            &args.dst,
            &args.secret,
            &args.chain,
            &target,
            Progress::new(args.progress, args.quiet),
        );
    }
    if args.output_format != "raw" {
        return Err(format!("output format `{}` is not supported (raw, qcow2)", args.output_format).into());
    }
    if args.options.is_some() || args.target_passphrase_file.is_some() || args.target_passphrase_env.is_some() {
        return Err("-o and --target-passphrase-* apply to -O qcow2 only".into());
    }
    let mut probe = std::fs::File::open(&args.src).map_err(|e| format!("{}: {e}", args.src.display()))?;
    if crate::open::detect(&mut probe)? == crate::open::Format::Qcow2 {
        let snapshot = args.snapshot.as_deref();
        return crate::cmd::convert::to_raw::run(
            &args.src,
            &args.dst,
            &args.secret,
            &args.chain,
            snapshot,
            Progress::new(args.progress, args.quiet),
        );
    }
    if args.snapshot.is_some() {
        return Err(format!("{}: only qcow2 images have internal snapshots", args.src.display()).into());
    }
    let mut src = crate::open::open_with_chain(&args.src, false, &args.secret, &args.chain)?;
    let dst = FileOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&args.dst)
        .map_err(|e| format!("{}: {e}", args.dst.display()))?;
    let size = src.size();
    // Sized up front: writes then fill holes instead of extending the file.
    dst.set_len(size)?;
    // Ranges known to read as zero become holes; without a map, zero chunks do.
    let map = src.map()?;
    let known_map = map.is_some();
    let map = map.unwrap_or_else(|| vec![MapEntry { start: 0, length: size, zero: false }]);
    // Reading (and decrypting) here overlaps with writing on a second thread: buffers travel
    // to the writer and come back for reuse.
    let (to_writer, writer_rx) = mpsc::sync_channel::<(u64, Vec<u8>, usize)>(BUFFERS - 1);
    let (to_reader, free_buffers) = mpsc::channel::<Vec<u8>>();
    for _ in 0..BUFFERS {
        to_reader.send(vec![0u8; CHUNK])?;
    }
    // Several writers, like qemu-img's thread pool: one pwrite each in flight.
    let writer_rx = std::sync::Arc::new(std::sync::Mutex::new(writer_rx));
    let dst = std::sync::Arc::new(dst);
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (rx, to_reader, dst) = (writer_rx.clone(), to_reader.clone(), dst.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                loop {
                    let next = rx.lock().map_err(|_| std::io::Error::other("writer lock poisoned"))?.recv();
                    let Ok((offset, buf, n)) = next else { return Ok(()) };
                    std::os::unix::fs::FileExt::write_all_at(&*dst, &buf[..n], offset)?;
                    let _ = to_reader.send(buf);
                }
            })
        })
        .collect();
    drop(to_reader);
    let progress = Progress::new(args.progress, args.quiet);
    let mut read_result = Ok(());
    // A buffer whose chunk read as zeros is not sent (the output keeps a hole there): it is
    // reused for the next chunk instead of being taken from the pool again.
    let mut spare: Option<Vec<u8>> = None;
    'copy: for range in map.iter().filter(|m| !m.zero) {
        let mut offset = range.start;
        let end = range.start + range.length;
        while offset < end {
            let n = ((end - offset) as usize).min(CHUNK);
            let mut buf = match spare.take() {
                Some(buf) => buf,
                None => match free_buffers.recv() {
                    Ok(buf) => buf,
                    Err(_) => break 'copy,
                },
            };
            if let Err(e) = src.read_at(offset, &mut buf[..n]) {
                read_result = Err(e);
                break 'copy;
            }
            if !known_map && buf[..n].iter().all(|&b| b == 0) {
                spare = Some(buf);
            } else if to_writer.send((offset, buf, n)).is_err() {
                break 'copy; // the writer failed: its error is reported below
            }
            offset += n as u64;
            progress.set(offset, size);
        }
    }
    drop(to_writer);
    for w in writers {
        w.join().map_err(|_| "a writer thread panicked")?.map_err(|e| format!("{}: {e}", args.dst.display()))?;
    }
    let dst = std::sync::Arc::into_inner(dst).ok_or("writers still hold the output")?;
    read_result?;
    progress.finish();
    dst.set_len(size)?;
    dst.sync_data()?;
    Ok(())
}
