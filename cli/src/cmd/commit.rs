//! `qluks commit [-f FMT] [-d] [-p] IMAGE`: commit a qcow2 overlay into its backing file, as
//! `qemu-img commit` does (the overlay is emptied afterwards unless `-d`).
//!
//! The overlay's passphrase comes from `--passphrase-file`/`--passphrase-env` (or a prompt),
//! the base's (and its own backing layers') from `--backing-passphrase-file` (layer 1, 2, ...):
//! the two may differ (QEMU's iotest 198). The backing file is found through the same policy as
//! for reads (`--backing-root`, `--backing-allow-absolute`, `--backing-probe`) and reopened
//! writable through the very handle the policy checked.
use std::error::Error;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Args;
use qluks::qcow2::backing::{probe, BackingFormat, BackingRequest, Resolver};
use qluks::qcow2::commit::{commit, commit_scratch_len, Shifted};
use qluks::qcow2::file_resolver::FileResolver;
use qluks::qcow2::{Layer, Qcow2};

use crate::image_open::{ChainArgs, CliChain, CACHE_SLICES};
use crate::progress::Progress;
use crate::secret::SecretArgs;

/// Extra scratch beyond the minimum: larger batches (one read, one encrypt, one write each).
pub const BATCH_BYTES: usize = 4 << 20;

/// `qluks commit` arguments.
#[derive(Args)]
pub struct CommitArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// Format of the image (only qcow2 has a backing file to commit into).
    #[arg(short = 'f', value_name = "FMT")]
    format: Option<String>,
    /// Do not empty the overlay after the commit (qemu-img's -d).
    #[arg(short = 'd')]
    keep: bool,
    /// Show progress.
    #[arg(short = 'p')]
    progress: bool,
    /// Quiet: no progress.
    #[arg(short = 'q')]
    quiet: bool,
    /// The overlay.
    image: PathBuf,
}

/// A qcow2 image of the CLI, opened alone (boxed: it is large).
pub type CliQcow2 = Qcow2<File, File, CACHE_SLICES>;

/// Runs `qluks commit`.
pub fn run(mut args: CommitArgs) -> Result<(), Box<dyn Error>> {
    args.image_opts.resolve(&mut args.image, &mut args.secret, Some(&mut args.chain))?;
    check_format(args.format.as_deref(), &args.image)?;
    let mut r = crate::image_open::resolver(&args.image, &args.secret, &args.chain)?;
    let (path, keep, progress) = (args.image.clone(), args.keep, Progress::new(args.progress, args.quiet));
    // Chains hold their layers inline: open and work on a thread with room for them.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || run_commit(&path, &mut r, keep, progress))?
        .join()
        .map_err(|_| "commit panicked")??;
    if !args.quiet {
        println!("Image committed.");
    }
    Ok(())
}

/// Refuses formats other than qcow2.
pub fn check_format(format: Option<&str>, image: &Path) -> Result<(), String> {
    match format {
        None | Some("qcow2") => Ok(()),
        Some(f) => Err(format!("{}: -f {f}: only qcow2 images are supported here", image.display())),
    }
}

/// Opens the qcow2 image at `path` read-write, alone (no backing), with the depth-0 passphrase.
pub fn open_overlay(path: &Path, r: &mut FileResolver, metadata_only: bool) -> Result<Box<CliQcow2>, String> {
    let shown = path.display();
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut q: Box<CliQcow2> = Box::new(Qcow2::new_empty());
    let opened = if metadata_only {
        q.open_metadata_in(file, None)
    } else {
        let limits = r.kdf_limits(0);
        q.open_in_with(file, None, r.passphrase(0), &limits)
    };
    opened.map_err(|e| format!("{shown}: {e}"))?;
    Ok(q)
}

/// Opens the backing file `name` (found in the image at `image`, declared `format`) through the
/// resolver's policy as layer 1, with its own backing layers (passphrases of depth 1, 2, ...);
/// `writable`: its top reopened read-write through the checked handle.
pub fn open_backing_chain(
    image: &Path,
    r: &mut FileResolver,
    name: &[u8],
    format: Option<&[u8]>,
    writable: bool,
) -> Result<(Box<CliChain>, BackingFormat), String> {
    let shown_name = qluks::qcow2::UntrustedName(name);
    let ctx = format!("{}: backing file \"{shown_name}\"", image.display());
    let declared = match format {
        None => None,
        Some(f) => Some(
            BackingFormat::from_name(f)
                .ok_or_else(|| format!("{ctx}: unsupported format \"{}\"", qluks::qcow2::UntrustedName(f)))?,
        ),
    };
    let req = BackingRequest { name, format, depth: 1 };
    let opened = r.open_backing(&req).map_err(|e| format!("{ctx}: {e}"))?;
    let mut io = opened.io;
    let format = match opened.format.or(declared) {
        Some(f) => f,
        None => probe(&mut io).map_err(|e| format!("{ctx}: probing its format: {e}"))?,
    };
    if writable {
        io = reopen_writable(&io).map_err(|e| format!("{ctx}: opening it for writing: {e}"))?;
    }
    let mut chain: Box<CliChain> = Box::new(CliChain::new_empty());
    match format {
        BackingFormat::Raw => {
            let size = io.metadata().map_err(|e| format!("{ctx}: {e}"))?.len();
            if chain.push_backing(Layer::Raw { io, size }).is_err() {
                return Err(format!("{ctx}: cannot hold the layer"));
            }
        }
        BackingFormat::Qcow2 => chain
            .open_in(io, &mut Shifted::new(r, 1))
            .map_err(|e| format!("{ctx}: {e}{}{}", crate::image_open::hint(&e), crate::secret::chain_hint(&e)))?,
    }
    Ok((chain, format))
}

/// The file behind `file` opened again read-write (Linux: through `/proc/self/fd`), checked to
/// be the same inode: the policy checked the read-only handle, not a name.
fn reopen_writable(file: &File) -> std::io::Result<File> {
    let rw = OpenOptions::new().read(true).write(true).open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let (a, b) = (file.metadata()?, rw.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(std::io::Error::other("the file changed while it was opened"));
    }
    Ok(rw)
}

fn run_commit(path: &Path, r: &mut FileResolver, keep: bool, progress: Progress) -> Result<(), String> {
    let shown = path.display();
    let mut overlay = open_overlay(path, r, false)?;
    let Some(name) = overlay.extensions().backing_file.as_ref().map(|n| n.as_bytes().to_vec()) else {
        return Err(format!("{shown}: the image has no backing file to commit into"));
    };
    let format = overlay.extensions().backing_format.as_ref().map(|f| f.as_bytes().to_vec());
    let (mut base, _) = open_backing_chain(path, r, &name, format.as_deref(), true)?;
    let mut scratch = vec![0u8; commit_scratch_len(&*overlay, &*base) + BATCH_BYTES];
    let mut report = |done, total| progress.set(done, total);
    commit(&mut *overlay, &mut *base, keep, &mut scratch, &mut report)
        .map_err(|e| format!("{shown}: commit into \"{}\": {e}", qluks::qcow2::UntrustedName(&name)))?;
    progress.finish();
    Ok(())
}
