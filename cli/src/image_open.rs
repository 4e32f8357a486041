//! Opening qcow2 (with its backing chain) and qcow images for the CLI: passphrases per layer,
//! backing files through the std resolver, [`Disk`]s with an allocation map (qcow2: the top
//! layer writable on request; backing layers and qcow images read-only).
use std::error::Error;
use std::fs::File;
use std::path::{Path, PathBuf};

use clap::Args;
use qluks::image::{Image, MAX_SCRATCH_LEN};
use qluks::io::BlockIo;
use qluks::qcow2::backing::{BackingRequest, ChainError, DataFileRequest, Opened, Resolver};
use qluks::qcow2::extent::Extent;
use qluks::qcow2::file_resolver::{BackingPolicy, FileResolver, FileResolverError};
use qluks::qcow2::{Chain, CryptMethod};

use crate::open::{Disk, MapEntry};
use crate::secret::SecretArgs;

/// Table slices cached per qcow2 layer (4 KiB each).
pub const CACHE_SLICES: usize = 8;
/// Deepest backing chain the CLI opens.
pub const MAX_DEPTH: usize = 16;

/// A qcow2 chain as the CLI holds it (boxed: it is large).
pub type CliChain = Chain<File, CACHE_SLICES, MAX_DEPTH>;

/// Passphrases of backing layers and where backing files may live.
#[derive(Args, Clone, Debug, Default)]
pub struct ChainArgs {
    /// Passphrase file of the next encrypted backing layer (repeat: layer 1, 2, ...; used as is).
    #[arg(long = "backing-passphrase-file", value_name = "FILE")]
    pub backing_passphrase_files: Vec<PathBuf>,
    /// Backing and data files may resolve anywhere inside this directory (default: only inside
    /// the directory of the image that names them).
    #[arg(long, value_name = "DIR")]
    pub backing_root: Option<PathBuf>,
    /// Follow absolute backing and data file names wherever they point (inside --backing-root
    /// if given); still regular files only.
    #[arg(long)]
    pub backing_allow_absolute: bool,
    /// Probe the format of a backing file whose image declares none (a probed qcow2 that names
    /// files of its own is refused all the same).
    #[arg(long)]
    pub backing_probe: bool,
    /// Passphrases of backing layers by depth, from `--image-opts backing.encrypt.key-secret=ID`
    /// (before --backing-passphrase-file's).
    #[arg(skip)]
    pub backing_keys: Vec<(usize, crate::secret::KeySecret)>,
}

impl ChainArgs {
    /// The policy for names found in images.
    pub fn policy(&self) -> BackingPolicy {
        let policy = BackingPolicy::new().allow_absolute(self.backing_allow_absolute).probe_format(self.backing_probe);
        match &self.backing_root {
            Some(root) => policy.root(root),
            None => policy,
        }
    }

    /// The same policy without the passphrases (for a second image).
    pub fn policy_only(&self) -> ChainArgs {
        ChainArgs { backing_passphrase_files: Vec::new(), backing_keys: Vec::new(), ..self.clone() }
    }
}

/// A resolver for the image at `path`: the top passphrase from `secret` (asked only when the
/// image is encrypted), backing passphrases from `chain`.
pub fn resolver(path: &Path, secret: &SecretArgs, chain: &ChainArgs) -> Result<FileResolver, Box<dyn Error>> {
    if let Some(root) = &chain.backing_root {
        std::fs::metadata(root).map_err(|e| format!("--backing-root {}: {e}", root.display()))?;
    }
    let mut r = FileResolver::with_policy(path, chain.policy()).map_err(|e| format!("{}: {e}", path.display()))?;
    if needs_passphrase(path)? {
        let p = secret.get(&format!("Passphrase for {}: ", path.display()))?;
        r.set_passphrase(0, &p);
    }
    if let Ok(mut file) = File::open(path) {
        r.set_kdf_limits(secret.kdf.limits_for_chain(&crate::secret::pbkdf2_claims(&mut file)));
    }
    for (depth, f) in (1..).zip(&chain.backing_passphrase_files) {
        let p = zeroize::Zeroizing::new(std::fs::read(f).map_err(|e| format!("passphrase file {}: {e}", f.display()))?);
        if !chain.backing_keys.iter().any(|(d, _)| *d == depth) {
            r.set_passphrase(depth, &p);
        }
    }
    for (depth, key) in &chain.backing_keys {
        r.set_passphrase(*depth, &key.get()?);
    }
    Ok(r)
}

/// Whether the image at `path` is encrypted (qcow2, qcow or LUKS).
fn needs_passphrase(path: &Path) -> Result<bool, Box<dyn Error>> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(match qluks::image::detect(&mut file)? {
        qluks::image::Format::Qcow2 => {
            let (h, _, _) =
                qluks::qcow2::read_qcow2_header(&mut file).map_err(|e| format!("{}: {e}", path.display()))?;
            h.crypt_method != CryptMethod::None
        }
        qluks::image::Format::Qcow => {
            let mut raw = [0u8; qluks::qcow::header::HEADER_LEN];
            BlockIo::read_at(&mut file, 0, &mut raw)?;
            qluks::qcow::QcowHeader::parse(&raw)?.crypt_method != qluks::qcow::CryptMethod::None
        }
        qluks::image::Format::Luks => true,
        qluks::image::Format::Raw => false,
    })
}

/// Opens the qcow2 image at `path` with its backing chain.
pub fn open_chain(path: &Path, secret: &SecretArgs, chain: &ChainArgs) -> Result<Box<CliChain>, Box<dyn Error>> {
    open_chain_with(path, resolver(path, secret, chain)?)
}

/// Opens the qcow2 image at `path` with its backing chain through `r` (passphrases already set).
pub fn open_chain_with(path: &Path, r: FileResolver) -> Result<Box<CliChain>, Box<dyn Error>> {
    open_chain_mode(path, r, false)
}

/// [`open_chain_with`] with the top image (and its external data file) opened read-write, for
/// writes; backing layers stay read-only.
pub fn open_chain_writable(path: &Path, r: FileResolver) -> Result<Box<CliChain>, Box<dyn Error>> {
    open_chain_mode(path, r, true)
}

fn open_chain_mode(path: &Path, r: FileResolver, writable: bool) -> Result<Box<CliChain>, Box<dyn Error>> {
    let file = std::fs::OpenOptions::new().read(true).write(writable).open(path).map_err(|e| {
        let why = if writable { " (opened read-write: a command writes)" } else { "" };
        format!("{}: {e}{why}", path.display())
    })?;
    let shown = path.display().to_string();
    let mut r = TopWritable { inner: r, writable, image: path.to_path_buf() };
    // The chain is built by value (no heap in the core) and is large: build it on a thread
    // with room for unoptimized builds' copies, then keep it boxed.
    let opened = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            CliChain::open(file, &mut r)
                .map(Box::new)
                .map_err(|e| format!("{shown}: {e}{}{}", hint(&e), crate::secret::chain_hint(&e)))
        })?
        .join()
        .map_err(|_| "opening the image panicked")?;
    Ok(opened?)
}

/// The [`FileResolver`], except that the top image's external data file is reopened
/// read-write (the same file, found under the same policy) when the top image is written.
struct TopWritable {
    inner: FileResolver,
    writable: bool,
    image: PathBuf,
}

impl Resolver<File> for TopWritable {
    type Error = FileResolverError;

    fn open_backing(&mut self, request: &BackingRequest<'_>) -> Result<Opened<File>, FileResolverError> {
        self.inner.open_backing(request)
    }
    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        self.inner.passphrase(depth)
    }
    fn kdf_limits(&mut self, depth: usize) -> qluks::luks::KdfLimits {
        self.inner.kdf_limits(depth)
    }
    fn top_identity(&mut self) -> Option<u64> {
        self.inner.top_identity()
    }
    fn probe_undeclared_format(&mut self, request: &BackingRequest<'_>) -> bool {
        self.inner.probe_undeclared_format(request)
    }
    fn open_data_file(&mut self, request: &DataFileRequest<'_>) -> Result<File, FileResolverError> {
        let file = self.inner.open_data_file(request)?;
        if !(self.writable && request.depth == 0) {
            return Ok(file);
        }
        // The very file the policy checked, through its handle.
        let handle = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        std::fs::OpenOptions::new().read(true).write(true).open(&handle).map_err(|error| FileResolverError::Io {
            found: qluks::qcow2::file_resolver::Found {
                image: self.image.clone(),
                role: qluks::qcow2::file_resolver::FileRole::DataFile,
                name: request.name.unwrap_or_default().to_vec(),
            },
            path: std::fs::read_link(&handle).unwrap_or_else(|_| PathBuf::from(&handle)),
            error,
        })
    }
}

/// How to allow what the backing policy refused, in the CLI's options.
pub fn hint<E>(e: &ChainError<E, FileResolverError>) -> &'static str {
    match e {
        ChainError::Resolver { error: FileResolverError::OutsideRoot { widened: false, .. }, .. } => {
            " (--backing-root DIR, --backing-allow-absolute)"
        }
        ChainError::Resolver { error: FileResolverError::OutsideRoot { widened: true, .. }, .. } => {
            " (--backing-root DIR)"
        }
        ChainError::UndeclaredFormat { .. } => " (--backing-probe)",
        _ => "",
    }
}

/// Scratch memory of qcow2 writes beyond the engine's minimum ([`CliChain::write_scratch_len`],
/// 3 clusters): the engine encrypts (and copies on write) in it, so it sets the size of one
/// batch (one encrypt call and one `write_at`): 4 MiB, the CLI's request pieces.
pub const WRITE_SCRATCH: usize = 4 << 20;

/// A qcow2 chain as a [`Disk`]: read-only, or with its top layer writable.
pub struct Qcow2Disk {
    chain: Box<CliChain>,
    scratch: Vec<u8>,
    writable: bool,
    /// Write scratch, made at the first write.
    write_scratch: Vec<u8>,
}

impl Qcow2Disk {
    /// Opens `path` read-only.
    pub fn open(path: &Path, secret: &SecretArgs, chain: &ChainArgs) -> Result<Qcow2Disk, Box<dyn Error>> {
        Ok(Qcow2Disk::from_chain(open_chain(path, secret, chain)?))
    }

    /// Opens `path` with its top layer read-write (backing layers read-only).
    pub fn open_writable(path: &Path, secret: &SecretArgs, chain: &ChainArgs) -> Result<Qcow2Disk, Box<dyn Error>> {
        let mut disk = Qcow2Disk::from_chain(open_chain_writable(path, resolver(path, secret, chain)?)?);
        disk.writable = true;
        Ok(disk)
    }

    /// A read-only disk over an opened chain.
    pub fn from_chain(chain: Box<CliChain>) -> Qcow2Disk {
        let scratch = vec![0; chain.compressed_scratch_len()];
        Qcow2Disk { chain, scratch, writable: false, write_scratch: Vec::new() }
    }

    /// A disk over a chain opened by [`open_chain_writable`].
    pub fn from_writable_chain(chain: Box<CliChain>) -> Qcow2Disk {
        Qcow2Disk { writable: true, ..Qcow2Disk::from_chain(chain) }
    }

    /// The write scratch (made once), or an error when the image was opened read-only.
    fn write_scratch(&mut self) -> Result<&mut [u8], Box<dyn Error>> {
        if !self.writable {
            return Err("the image was opened read-only".into());
        }
        if self.write_scratch.is_empty() {
            self.write_scratch = vec![0; self.chain.write_scratch_len() + WRITE_SCRATCH];
        }
        Ok(&mut self.write_scratch)
    }
}

impl Disk for Qcow2Disk {
    fn size(&self) -> u64 {
        self.chain.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        Ok(self.chain.read_at_with_scratch(offset, buf, &mut self.scratch)?)
    }
    fn write_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        self.write_scratch()?;
        Ok(self.chain.write_at(offset, buf, &mut self.write_scratch)?)
    }
    fn keeps_buffer(&self) -> bool {
        true
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<(), Box<dyn Error>> {
        self.write_scratch()?;
        Ok(self.chain.write_zeroes(offset, len, unmap, &mut self.write_scratch)?)
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), Box<dyn Error>> {
        if !self.writable {
            return Err("the image was opened read-only".into());
        }
        Ok(self.chain.discard(offset, len)?)
    }
    fn flush(&mut self) -> Result<(), Box<dyn Error>> {
        if self.writable {
            self.chain.flush()?;
        }
        Ok(())
    }
    fn map(&mut self) -> Result<Option<Vec<MapEntry>>, Box<dyn Error>> {
        let mut out = Vec::new();
        for e in self.chain.extents(0) {
            let e: Extent = e?;
            out.push(MapEntry { start: e.start, length: e.length, zero: e.zero() && !e.data() });
        }
        Ok(Some(out))
    }
}

/// A qcow (v1) image as a read-only [`Disk`] (its scratch memory leaked: one per process).
pub struct QcowDisk(Image<'static, File>);

impl QcowDisk {
    /// Opens `path`.
    pub fn open(path: &Path, secret: &SecretArgs) -> Result<QcowDisk, Box<dyn Error>> {
        let mut r = resolver(path, secret, &ChainArgs::default())?;
        let scratch: &'static mut [u8] = Box::leak(vec![0u8; MAX_SCRATCH_LEN].into_boxed_slice());
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let chain: &'static mut qluks::qcow2::Chain<File> = Box::leak(Box::default());
        let image = Image::open(file, &mut r, chain, scratch).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(QcowDisk(image))
    }
}

impl Disk for QcowDisk {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        Ok(self.0.read_at(offset, buf)?)
    }
    fn write_at(&mut self, _offset: u64, _buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        Err("qcow images are read-only in qluks".into())
    }
    fn flush(&mut self) -> Result<(), Box<dyn Error>> {
        Ok(())
    }
    /// From the L1/L2 tables: unallocated ranges read as zero (qcow images with a backing
    /// file are not opened here).
    fn map(&mut self) -> Result<Option<Vec<MapEntry>>, Box<dyn Error>> {
        let Image::Qcow(q) = &mut self.0 else { return Ok(None) };
        let mut out: Vec<MapEntry> = Vec::new();
        let mut offset = 0;
        while offset < q.size() {
            let e = q.extent_at(offset)?;
            let zero = e.kind == qluks::qcow::ExtentKind::Unallocated;
            match out.last_mut() {
                Some(last) if last.zero == zero => last.length += e.len,
                _ => out.push(MapEntry { start: e.offset, length: e.len, zero }),
            }
            offset += e.len;
        }
        Ok(Some(out))
    }
}
