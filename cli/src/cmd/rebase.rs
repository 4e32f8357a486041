//! `qluks rebase [-u] -b BACKING [-F FMT] [-p] IMAGE`: point a qcow2 image at another backing
//! file, as `qemu-img rebase` does. Safe (default): what differs between the old and the new
//! backing chain is copied into the image first; `-u`: the header only. `-b ""` removes the
//! backing file.
//!
//! Passphrases: the image's from `--passphrase-file`/`--passphrase-env`, the old backing
//! chain's from `--backing-passphrase-file` (layer 1, 2, ...), the new backing chain's from
//! `--new-backing-passphrase-file` (layer 1, 2, ...; default: the old chain's). The new backing
//! file is named relative to the image and found under the same policy as for reads.
use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Args;
use qluks::qcow2::backing::{probe, BackingFormat, BackingRequest, Resolver};
use qluks::qcow2::file_resolver::FileResolver;
use qluks::qcow2::rebase::{rebase, rebase_scratch_len, rebase_within};
use qluks::qcow2::Layer;
use std::os::unix::fs::MetadataExt;

use crate::cmd::commit::{check_format, open_backing_chain, open_overlay, BATCH_BYTES};
use crate::image_open::{ChainArgs, CliChain};
use crate::secret::SecretArgs;

/// `qluks rebase` arguments.
#[derive(Args)]
pub struct RebaseArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// Passphrase file of the new backing chain's next encrypted layer (repeat: layer 1, 2,
    /// ...; used as is). Default: the --backing-passphrase-file ones.
    #[arg(long = "new-backing-passphrase-file", value_name = "FILE")]
    new_backing_passphrase_files: Vec<PathBuf>,
    /// Format of the image (only qcow2).
    #[arg(short = 'f', value_name = "FMT")]
    format: Option<String>,
    /// Unsafe: rewrite the header only (the new backing file must read as the old one).
    #[arg(short = 'u')]
    unsafe_header_only: bool,
    /// The new backing file, relative to the image ("" = none).
    #[arg(short = 'b', value_name = "BACKING", required = true)]
    backing: String,
    /// Format of the new backing file (raw or qcow2; probed when not given).
    #[arg(short = 'F', value_name = "FMT")]
    backing_format: Option<String>,
    /// Show progress.
    #[arg(short = 'p')]
    progress: bool,
    /// Quiet: no progress.
    #[arg(short = 'q')]
    quiet: bool,
    /// The image.
    image: PathBuf,
}

/// Runs `qluks rebase`.
pub fn run(mut args: RebaseArgs) -> Result<(), Box<dyn Error>> {
    args.image_opts.resolve(&mut args.image, &mut args.secret, Some(&mut args.chain))?;
    check_format(args.format.as_deref(), &args.image)?;
    if let Some(f) = &args.backing_format {
        BackingFormat::from_name(f.as_bytes()).ok_or_else(|| format!("-F {f}: unsupported format (raw, qcow2)"))?;
    }
    let mut r = if args.unsafe_header_only {
        FileResolver::with_policy(&args.image, args.chain.policy())
            .map_err(|e| format!("{}: {e}", args.image.display()))?
    } else {
        crate::image_open::resolver(&args.image, &args.secret, &args.chain)?
    };
    let mut new_passphrases = Vec::new();
    for f in &args.new_backing_passphrase_files {
        new_passphrases.push(zeroize::Zeroizing::new(
            std::fs::read(f).map_err(|e| format!("passphrase file {}: {e}", f.display()))?,
        ));
    }
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || run_rebase(&args, &mut r, &new_passphrases))?
        .join()
        .map_err(|_| "rebase panicked")??;
    Ok(())
}

fn run_rebase(
    args: &RebaseArgs,
    r: &mut FileResolver,
    new_passphrases: &[zeroize::Zeroizing<Vec<u8>>],
) -> Result<(), String> {
    let path = &args.image;
    let shown = path.display();
    let name = args.backing.as_bytes();
    if args.unsafe_header_only {
        let format = match (&args.backing_format, name.is_empty()) {
            (_, true) => None,
            (Some(f), false) => Some(f.clone().into_bytes()),
            (None, false) => Some(probe_new(path, r, name)?),
        };
        let mut q = open_overlay(path, r, true)?;
        let mut scratch = vec![0u8; qluks::qcow2::HEADER_AREA];
        return q
            .set_backing_file(name, format.as_deref(), &mut scratch)
            .map_err(|e| format!("{shown}: setting the backing file: {e}"));
    }
    // The image with its old backing chain, the image itself writable.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut chain: Box<CliChain> = Box::new(CliChain::new_empty());
    chain
        .open_in(file, r)
        .map_err(|e| format!("{shown}: {e}{}{}", crate::image_open::hint(&e), crate::secret::chain_hint(&e)))?;
    for (depth, p) in (1..).zip(new_passphrases) {
        r.set_passphrase(depth, p);
    }
    let progress = crate::progress::Progress::new(args.progress, args.quiet);
    let mut report = |done, total| progress.set(done, total);
    // The new backing file is a layer of the old chain: only what the layers above it
    // allocate is compared (as QEMU does).
    if let Some((depth, format)) = layer_of_old_chain(path, r, &chain, name, args.backing_format.as_deref())? {
        let mut scratch = vec![0u8; rebase_scratch_len::<_, _, _, 1, 1>(&*chain, None) + BATCH_BYTES];
        rebase_within(&mut *chain, depth, name, Some(format), &mut scratch, &mut report)
            .map_err(|e| format!("{shown}: rebase: {e}"))?;
        progress.finish();
        return Ok(());
    }
    let mut new_chain = None;
    let mut format = None;
    if !name.is_empty() {
        let declared = args.backing_format.as_ref().map(|f| f.as_bytes());
        let (c, f) = open_backing_chain(path, r, name, declared, false)?;
        new_chain = Some(c);
        format = Some(match f {
            BackingFormat::Raw => &b"raw"[..],
            BackingFormat::Qcow2 => &b"qcow2"[..],
        });
    }
    let new_ref = new_chain.as_deref_mut();
    let mut scratch = vec![0u8; rebase_scratch_len(&*chain, new_ref.as_deref()) + BATCH_BYTES];
    rebase(&mut *chain, new_ref, name, format, &mut scratch, &mut report)
        .map_err(|e| format!("{shown}: rebase: {e}"))?;
    progress.finish();
    Ok(())
}

/// The depth in the old chain of the layer that is the new backing file (the same inode,
/// opened as the same format), if any, with its format name.
fn layer_of_old_chain(
    path: &Path,
    r: &mut FileResolver,
    chain: &CliChain,
    name: &[u8],
    format: Option<&str>,
) -> Result<Option<(usize, &'static [u8])>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    let ctx = format!("{}: backing file \"{}\"", path.display(), qluks::qcow2::UntrustedName(name));
    let opened = r.open_backing(&BackingRequest { name, format: None, depth: 1 }).map_err(|e| format!("{ctx}: {e}"))?;
    let mut io = opened.io;
    let kind = match format {
        Some(f) => BackingFormat::from_name(f.as_bytes()).ok_or_else(|| format!("-F {f}: unsupported format"))?,
        None => probe(&mut io).map_err(|e| format!("{ctx}: probing its format: {e}"))?,
    };
    let meta = io.metadata().map_err(|e| format!("{ctx}: {e}"))?;
    for (depth, layer) in chain.layers().enumerate().skip(1) {
        let (file, layer_kind) = match layer {
            Layer::Qcow2(q) => (q.io(), BackingFormat::Qcow2),
            Layer::Raw { io, .. } => (Some(io), BackingFormat::Raw),
        };
        let Some(m) = file.and_then(|f| f.metadata().ok()) else { continue };
        if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) && layer_kind == kind {
            let name: &'static [u8] = if kind == BackingFormat::Raw { b"raw" } else { b"qcow2" };
            return Ok(Some((depth, name)));
        }
    }
    Ok(None)
}

/// The format of the new backing file, probed (opened under the policy).
fn probe_new(path: &Path, r: &mut FileResolver, name: &[u8]) -> Result<Vec<u8>, String> {
    let ctx = format!("{}: backing file \"{}\"", path.display(), qluks::qcow2::UntrustedName(name));
    let opened = r
        .open_backing(&BackingRequest { name, format: None, depth: 1 })
        .map_err(|e| format!("{ctx}: {e} (give its format with -F to rebase without opening it)"))?;
    let mut io = opened.io;
    Ok(match probe(&mut io).map_err(|e| format!("{ctx}: probing its format: {e}"))? {
        BackingFormat::Raw => b"raw".to_vec(),
        BackingFormat::Qcow2 => b"qcow2".to_vec(),
    })
}
