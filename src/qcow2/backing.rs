//! Backing chains without a heap.
//!
//! A qcow2 image may name a backing file (and its format); unallocated clusters read from it.
//! The image only *names* the file: a [`Resolver`] supplied by the caller decides whether and
//! how to open that name (and the external data file name), and hands out each layer's
//! passphrase. The opened layers live inline in a [`Chain`], an array of `DEPTH` slots the
//! caller sizes with a const generic, so a boot loader without an allocator can read an
//! encrypted overlay on an encrypted base:
//!
//! ```
//! use qluks::io::{BlockIo, MemIo};
//! use qluks::qcow2::backing::{BackingFormat, BackingRequest, Chain, DataFileRequest, Opened, Resolver};
//!
//! /// Resolves the one backing file a boot loader knows about, from its own device table.
//! struct Disks<'a> {
//!     base: Option<MemIo<'a>>,
//!     passphrases: [&'a [u8]; 2],
//! }
//!
//! impl<'a> Resolver<MemIo<'a>> for Disks<'a> {
//!     type Error = &'static str;
//!     fn open_backing(&mut self, req: &BackingRequest<'_>) -> Result<Opened<MemIo<'a>>, &'static str> {
//!         if req.name != b"base.qcow2" {
//!             return Err("unknown backing file");
//!         }
//!         let io = self.base.take().ok_or("base already opened (loop?)")?;
//!         // The boot loader knows its base is qcow2 (`None` would take the image's declared
//!         // format, and without one the chain fails: formats are not probed by default).
//!         Ok(Opened { io, format: Some(BackingFormat::Qcow2), identity: Some(1) })
//!     }
//!     fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
//!         self.passphrases.get(depth).copied()
//!     }
//!     fn open_data_file(&mut self, _req: &DataFileRequest<'_>) -> Result<MemIo<'a>, &'static str> {
//!         Err("no external data files here")
//!     }
//! }
//!
//! fn boot(top: MemIo<'_>, base: MemIo<'_>) -> Result<(), &'static str> {
//!     let mut disks = Disks { base: Some(base), passphrases: [b"top secret", b"base secret"] };
//!     // 2 layers at most, 4 cached table slices per layer: all on the stack, no allocator.
//!     let mut chain: Chain<MemIo<'_>, 4, 2> =
//!         Chain::open(top, &mut disks).map_err(|_| "cannot open the chain")?;
//!     let mut sector = [0u8; 512];
//!     chain.read_at(0, &mut sector).map_err(|_| "read failed")?;
//!     Ok(())
//! }
//! # let _ = boot;
//! ```
//!
//! All layers share the device type `I` (a file, a partition of the boot disk, ...); wrap
//! different devices in one enum to mix them. Loops are caught through the identities the
//! resolver reports, and by the depth limit whatever it reports.

use core::fmt;

use super::error::Error;
use super::Qcow2;
use crate::crypto::Name;
use crate::io::BlockIo;

/// One layer of a chain: a qcow2 image or a raw file.
// No heap: the qcow2 variant carries its cache inline, by design.
#[allow(clippy::large_enum_variant)]
pub enum Layer<I: BlockIo, const N: usize = { super::DEFAULT_CACHE_SLICES }> {
    /// A qcow2 image (its own backing is the next layer of the chain).
    Qcow2(Qcow2<I, I, N>),
    /// A raw image of `size` bytes.
    Raw {
        /// The device.
        io: I,
        /// Its size.
        size: u64,
    },
}

impl<I: BlockIo, const N: usize> fmt::Debug for Layer<I, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Qcow2(q) => f.debug_tuple("Qcow2").field(q).finish(),
            Layer::Raw { size, .. } => f.debug_struct("Raw").field("size", size).finish_non_exhaustive(),
        }
    }
}

impl<I: BlockIo, const N: usize> Layer<I, N> {
    /// Virtual size of the layer.
    pub fn size(&self) -> u64 {
        match self {
            Layer::Qcow2(q) => q.size(),
            Layer::Raw { size, .. } => *size,
        }
    }

    fn read_layered(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        below: &mut [Option<Layer<I, N>>],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        match self {
            Layer::Qcow2(q) => q.read_layered(offset, buf, below, scratch),
            Layer::Raw { io, .. } => crate::io::read_aligned(io, offset, buf).map_err(Error::Io),
        }
    }
}

/// Reads `out` at `guest` from the layers below (the first is the direct backing). Past the
/// end of a shorter backing, and without any backing, bytes read as zeros.
pub(crate) fn read_below<I: BlockIo, const N: usize>(
    guest: u64,
    out: &mut [u8],
    below: &mut [Option<Layer<I, N>>],
    scratch: &mut [u8],
) -> Result<(), Error<I::Error>> {
    match below.split_first_mut() {
        Some((Some(layer), rest)) => {
            let avail = layer.size().saturating_sub(guest).min(out.len() as u64) as usize;
            let (present, past_end) = out.split_at_mut(avail);
            if !present.is_empty() {
                layer.read_layered(guest, present, rest, scratch)?;
            }
            past_end.fill(0);
        }
        _ => out.fill(0),
    }
    Ok(())
}

/// Format of a backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingFormat {
    /// Raw bytes.
    Raw,
    /// qcow2.
    Qcow2,
}

impl BackingFormat {
    /// The format QEMU names `name` ("raw", "qcow2"), if supported.
    pub fn from_name(name: &[u8]) -> Option<BackingFormat> {
        match name {
            b"raw" => Some(BackingFormat::Raw),
            b"qcow2" => Some(BackingFormat::Qcow2),
            _ => None,
        }
    }
}

/// What an image asks for: its backing file.
#[derive(Debug)]
pub struct BackingRequest<'a> {
    /// The backing file name as stored in the image (untrusted).
    pub name: &'a [u8],
    /// The backing format extension, if present (untrusted).
    pub format: Option<&'a [u8]>,
    /// Depth of the layer to open (1 = the top image's backing).
    pub depth: usize,
}

/// What an image asks for: its external data file.
#[derive(Debug)]
pub struct DataFileRequest<'a> {
    /// The data file name from the image, if it names one (untrusted).
    pub name: Option<&'a [u8]>,
    /// Depth of the image needing it (0 = top).
    pub depth: usize,
}

/// A backing file the resolver opened.
pub struct Opened<I> {
    /// The device.
    pub io: I,
    /// The format, if the resolver knows it (it overrides the image's declaration); `None` =
    /// the format the image declares. When neither says, the file is probed only if
    /// [`Resolver::probe_undeclared_format`] allows it.
    pub format: Option<BackingFormat>,
    /// A stable identity of the file (e.g. device and inode), for loop detection.
    pub identity: Option<u64>,
}

/// The caller's policy for names found in images.
pub trait Resolver<I: BlockIo> {
    /// Why a name was refused or could not be opened.
    type Error: fmt::Debug + fmt::Display;

    /// Opens (or refuses) the backing file an image names.
    fn open_backing(&mut self, request: &BackingRequest<'_>) -> Result<Opened<I>, Self::Error>;

    /// The passphrase of the encrypted qcow2 layer at `depth` (0 = top), if the resolver has
    /// one. Each layer may have its own.
    fn passphrase(&mut self, depth: usize) -> Option<&[u8]>;

    /// The most KDF work and memory unlocking the layer at `depth` may cost (default:
    /// [`KdfLimits::DEFAULT`](crate::luks::KdfLimits::DEFAULT)); keyslots over them are refused
    /// before any work is done.
    fn kdf_limits(&mut self, depth: usize) -> crate::luks::KdfLimits {
        let _ = depth;
        crate::luks::KdfLimits::DEFAULT
    }

    /// The identity of the top image (see [`Opened::identity`]), so that a backing file
    /// pointing back at it is caught as a loop at once.
    fn top_identity(&mut self) -> Option<u64> {
        None
    }

    /// Whether the backing file of `request`, whose format neither the image declares nor the
    /// resolver reported, may be probed (qcow2 magic, else raw). Default: no, the chain fails
    /// with [`ChainError::UndeclaredFormat`]; a raw disk a guest filled with a qcow2 header
    /// would otherwise be read as qcow2. Even when allowed, a probed qcow2 that names a backing
    /// or data file of its own is refused ([`ChainError::ProbedNamesFile`]).
    fn probe_undeclared_format(&mut self, request: &BackingRequest<'_>) -> bool {
        let _ = request;
        false
    }

    /// Opens (or refuses) the external data file an image needs.
    fn open_data_file(&mut self, request: &DataFileRequest<'_>) -> Result<I, Self::Error>;
}

/// A resolver that opens nothing: images with backing or data files fail to open.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBacking;

impl<I: BlockIo> Resolver<I> for NoBacking {
    type Error = &'static str;
    fn open_backing(&mut self, _: &BackingRequest<'_>) -> Result<Opened<I>, &'static str> {
        Err("backing files are not allowed")
    }
    fn passphrase(&mut self, _: usize) -> Option<&[u8]> {
        None
    }
    fn open_data_file(&mut self, _: &DataFileRequest<'_>) -> Result<I, &'static str> {
        Err("external data files are not allowed")
    }
}

/// Why a chain could not be opened.
#[derive(Debug)]
pub enum ChainError<E, R> {
    /// A layer failed to open.
    Layer {
        /// Its depth (0 = top).
        depth: usize,
        /// The error.
        error: Error<E>,
    },
    /// The resolver refused or failed.
    Resolver {
        /// Depth of the layer asked for.
        depth: usize,
        /// The resolver's error.
        error: R,
    },
    /// The chain is deeper than its storage (or the limit).
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A layer is its own ancestor.
    Loop {
        /// Depth where the loop closed.
        depth: usize,
    },
    /// A backing format this reader cannot open.
    UnsupportedFormat {
        /// Depth of the layer.
        depth: usize,
        /// The format name.
        format: Name,
    },
    /// The image names a backing file but declares no format for it, the resolver does not
    /// know it either, and probing was not allowed.
    UndeclaredFormat {
        /// Depth of the backing layer.
        depth: usize,
    },
    /// A backing file whose format was probed turned out to be a qcow2 image that names a
    /// backing file or an external data file of its own: refused, since a raw disk a guest
    /// wrote could otherwise make the host open files.
    ProbedNamesFile {
        /// Depth of the probed layer.
        depth: usize,
        /// `true` for an external data file, `false` for a backing file.
        data_file: bool,
    },
    /// The device failed outside any layer's open (while probing a backing file's format).
    Io {
        /// Depth of the layer.
        depth: usize,
        /// The error.
        error: E,
    },
}

impl<E: fmt::Display, R: fmt::Display> fmt::Display for ChainError<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::Layer { depth: 0, error } => write!(f, "{error}"),
            ChainError::Layer { depth, error } => write!(f, "backing layer {depth}: {error}"),
            ChainError::Resolver { depth: 0, error } => write!(f, "{error}"),
            ChainError::Resolver { depth, error } => write!(f, "backing layer {depth}: {error}"),
            ChainError::TooDeep { limit } => write!(f, "backing chain deeper than {limit} layers"),
            ChainError::Loop { depth } => write!(f, "backing chain loops back at layer {depth}"),
            ChainError::UnsupportedFormat { depth, format } => {
                write!(f, "backing layer {depth}: unsupported format \"{format}\"")
            }
            ChainError::UndeclaredFormat { depth } => write!(
                f,
                "backing layer {depth}: the image that names it declares no backing format; refusing to guess \
                 (declare it, e.g. `qemu-img rebase -u -b NAME -F raw|qcow2`, or allow probing)"
            ),
            ChainError::ProbedNamesFile { depth, data_file } => write!(
                f,
                "backing layer {depth}: its format was probed as qcow2 and it names {} of its own; refused \
                 (a raw disk can hold such a header); declare its format in the image that names it",
                if *data_file { "an external data file" } else { "a backing file" }
            ),
            ChainError::Io { depth, error } => write!(f, "backing layer {depth}: probing its format: {error}"),
        }
    }
}

/// `source()` is the layer's error or the device's; a resolver's error has no `'static`
/// `Error` bound (resolvers may report a `&str`), so it is only shown, not chained.
impl<E: core::error::Error + 'static, R: fmt::Debug + fmt::Display> core::error::Error for ChainError<E, R> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ChainError::Layer { error, .. } => Some(error),
            ChainError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl<E, R> ChainError<E, R> {
    /// Whether a layer's passphrase was wrong ([`Error::is_wrong_passphrase`]).
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(self, ChainError::Layer { error, .. } if error.is_wrong_passphrase())
    }

    /// The depth of the layer the error is about (0 = top), when it is about one.
    pub fn depth(&self) -> Option<usize> {
        match self {
            ChainError::Layer { depth, .. }
            | ChainError::Resolver { depth, .. }
            | ChainError::Loop { depth }
            | ChainError::UnsupportedFormat { depth, .. }
            | ChainError::UndeclaredFormat { depth }
            | ChainError::ProbedNamesFile { depth, .. }
            | ChainError::Io { depth, .. } => Some(*depth),
            ChainError::TooDeep { .. } => None,
        }
    }
}

/// An image with its backing layers, stored inline: `DEPTH` layers at most, `N` cached table
/// slices per qcow2 layer.
pub struct Chain<I: BlockIo, const N: usize = { super::DEFAULT_CACHE_SLICES }, const DEPTH: usize = 4> {
    /// `..len` are the chain (top first); the slots past it keep closed qcow2 layers (their
    /// cache memory, for the next open) or nothing.
    layers: [Option<Layer<I, N>>; DEPTH],
    len: usize,
}

impl<I: BlockIo, const N: usize, const DEPTH: usize> fmt::Debug for Chain<I, N, DEPTH> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.layers()).finish()
    }
}

impl<I: BlockIo, const N: usize, const DEPTH: usize> Chain<I, N, DEPTH> {
    /// A chain without layers, to be filled by [`Chain::open_in`] (const: it can initialise a
    /// `static`). Reading an empty chain fails with [`Error::OutOfRange`] (its size is 0).
    pub const fn new_empty() -> Self {
        const { assert!(DEPTH > 0, "a chain holds at least one layer") };
        Chain { layers: [const { Some(Layer::Qcow2(Qcow2::new_empty())) }; DEPTH], len: 0 }
    }

    /// A chain of one layer; add backings with [`Chain::push_backing`].
    pub fn new(top: Layer<I, N>) -> Self {
        let mut chain = Self::new_empty();
        chain.layers[0] = Some(top);
        chain.len = 1;
        chain
    }

    /// Appends the backing of the current bottom layer; gives the layer back when full.
    #[allow(clippy::result_large_err)]
    pub fn push_backing(&mut self, layer: Layer<I, N>) -> Result<(), Layer<I, N>> {
        match self.layers.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(layer);
                self.len += 1;
                Ok(())
            }
            None => Err(layer),
        }
    }

    /// Opens the qcow2 image on `top` and, through `resolver`, every backing file it names,
    /// returning the chain by value (`DEPTH` layers of about `size_of::<Qcow2Image<I>>()`
    /// each; [`Chain::open_in`] opens into caller-owned memory instead).
    pub fn open<R: Resolver<I>>(top: I, resolver: &mut R) -> Result<Self, ChainError<I::Error, R::Error>> {
        let mut chain = Self::new_empty();
        chain.open_in(top, resolver)?;
        Ok(chain)
    }

    /// Opens the qcow2 image on `top` and, through `resolver`, every backing file it names,
    /// into this chain's own storage (layers already there are replaced; their cache memory is
    /// reused): nothing of a layer's size is built on the stack or moved. Each qcow2 layer's
    /// passphrase comes from [`Resolver::passphrase`]. On error the chain holds the layers
    /// opened so far (reading it is then meaningless; open it again).
    pub fn open_in<R: Resolver<I>>(&mut self, top: I, resolver: &mut R) -> Result<(), ChainError<I::Error, R::Error>> {
        self.close();
        open_qcow2::<I, N, R>(&mut self.layers[0], top, resolver, 0, false)?;
        self.len = 1;
        let mut identities = [None::<u64>; DEPTH];
        identities[0] = resolver.top_identity();
        let mut depth = 0;
        loop {
            let (above, below) = self.layers.split_at_mut(depth + 1);
            let Some(Layer::Qcow2(parent)) = &above[depth] else { break };
            let Some(name) = parent.extensions().backing_file.as_ref() else { break };
            depth += 1;
            let Some(slot) = below.first_mut() else {
                return Err(ChainError::TooDeep { limit: DEPTH });
            };
            let format_name = parent.extensions().backing_format.as_ref();
            let request = BackingRequest { name: name.as_bytes(), format: format_name.map(|n| n.as_bytes()), depth };
            let declared = match request.format {
                None => None,
                Some(f) => Some(
                    BackingFormat::from_name(f).ok_or(ChainError::UnsupportedFormat { depth, format: Name::new(f) })?,
                ),
            };
            let opened = resolver.open_backing(&request).map_err(|error| ChainError::Resolver { depth, error })?;
            let Opened { mut io, format, identity } = opened;
            if let Some(id) = identity {
                if identities[..depth].contains(&Some(id)) {
                    return Err(ChainError::Loop { depth });
                }
                identities[depth] = Some(id);
            }
            let (format, probed) = match format.or(declared) {
                Some(f) => (f, false),
                None if resolver.probe_undeclared_format(&request) => {
                    (probe(&mut io).map_err(|error| ChainError::Io { depth, error })?, true)
                }
                None => return Err(ChainError::UndeclaredFormat { depth }),
            };
            match format {
                BackingFormat::Raw => {
                    let size = io.size().map_err(|e| ChainError::Layer { depth, error: Error::Io(e) })?;
                    put_raw_layer(slot, io, size);
                }
                BackingFormat::Qcow2 => open_qcow2::<I, N, R>(slot, io, resolver, depth, probed)?,
            }
            self.len = depth + 1;
        }
        Ok(())
    }

    /// Closes every layer (dropping the devices, keeping the qcow2 layers' cache memory): the
    /// chain is then empty, as [`Chain::new_empty`] made it.
    pub fn close(&mut self) {
        for slot in self.layers.iter_mut() {
            match slot {
                Some(Layer::Qcow2(q)) => q.close(),
                // Drops the raw device (the slot becomes an empty qcow2 layer).
                Some(Layer::Raw { .. }) => new_qcow2_layer(slot),
                None => {}
            }
        }
        self.len = 0;
    }

    /// Virtual size (the top layer's; 0 when empty).
    pub fn size(&self) -> u64 {
        self.layers().next().map_or(0, Layer::size)
    }

    /// The layers, top first.
    pub fn layers(&self) -> impl Iterator<Item = &Layer<I, N>> {
        self.layers[..self.len].iter().map_while(Option::as_ref)
    }

    /// Scratch bytes [`Chain::read_at_with_scratch`] needs for compressed clusters in any
    /// layer (0 when no layer is qcow2).
    pub fn compressed_scratch_len(&self) -> usize {
        self.layers()
            .map(|l| match l {
                Layer::Qcow2(q) => q.compressed_scratch_len(),
                Layer::Raw { .. } => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// The top layer (`None` when the chain is empty).
    pub fn top(&self) -> Option<&Layer<I, N>> {
        self.layers().next()
    }

    /// Mutable access to the layers (top first).
    pub fn layers_mut(&mut self) -> &mut [Option<Layer<I, N>>] {
        &mut self.layers[..self.len]
    }

    /// Reads guest bytes through the chain. Compressed clusters need scratch memory: use
    /// [`Chain::read_at_with_scratch`].
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.read_at_with_scratch(offset, buf, &mut [])
    }

    /// [`Chain::read_at`] with `scratch` (see [`Qcow2::compressed_scratch_len`] of the
    /// largest-cluster layer) for compressed clusters.
    pub fn read_at_with_scratch(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let Some((top, below)) = self.layers[..self.len].split_first_mut() else {
            return Err(Error::OutOfRange { offset, len: buf.len(), size: 0 });
        };
        match top {
            Some(Layer::Qcow2(q)) => q.read_layered(offset, buf, below, scratch),
            Some(Layer::Raw { io, size }) => {
                if offset.checked_add(buf.len() as u64).is_none_or(|e| e > *size) {
                    return Err(Error::OutOfRange { offset, len: buf.len(), size: *size });
                }
                crate::io::read_aligned(io, offset, buf).map_err(Error::Io)
            }
            None => Err(Error::OutOfRange { offset, len: buf.len(), size: 0 }),
        }
    }
}

impl<I: BlockIo, const N: usize, const DEPTH: usize> Default for Chain<I, N, DEPTH> {
    fn default() -> Self {
        Self::new_empty()
    }
}

/// Opens the qcow2 layer at `depth` into `slot`; a `probed` one (format guessed, not declared) may name no
/// files of its own.
#[inline(never)]
fn open_qcow2<I: BlockIo, const N: usize, R: Resolver<I>>(
    slot: &mut Option<Layer<I, N>>,
    io: I,
    resolver: &mut R,
    depth: usize,
    probed: bool,
) -> Result<(), ChainError<I::Error, R::Error>> {
    let q = qcow2_slot(slot);
    let r = open_steps::<I, N, R>(q, io, resolver, depth, probed);
    if r.is_err() {
        q.close();
    }
    r
}

fn open_steps<I: BlockIo, const N: usize, R: Resolver<I>>(
    q: &mut Qcow2<I, I, N>,
    io: I,
    resolver: &mut R,
    depth: usize,
    probed: bool,
) -> Result<(), ChainError<I::Error, R::Error>> {
    let layer_err = |error| ChainError::Layer { depth, error };
    // The header first: the data file feature (and, when probed, any name) decide what to
    // ask the resolver for before unlocking.
    q.read_header_in(io).map_err(layer_err)?;
    let external = q.header().incompatible(super::Incompatible::ExternalDataFile);
    let names = q.extensions();
    if probed {
        if names.backing_file.is_some() {
            return Err(ChainError::ProbedNamesFile { depth, data_file: false });
        }
        if names.data_file.is_some() || external {
            return Err(ChainError::ProbedNamesFile { depth, data_file: true });
        }
    }
    let data_file = match external {
        false => None,
        true => {
            let request = DataFileRequest { name: names.data_file.as_ref().map(|n| n.as_bytes()), depth };
            Some(resolver.open_data_file(&request).map_err(|error| ChainError::Resolver { depth, error })?)
        }
    };
    let limits = resolver.kdf_limits(depth);
    let passphrase = resolver.passphrase(depth);
    q.finish_open(data_file, Some((passphrase, &limits))).map_err(layer_err)
}

/// The qcow2 layer in `slot`, where the next layer opens in place (reusing its cache memory).
fn qcow2_slot<I: BlockIo, const N: usize>(slot: &mut Option<Layer<I, N>>) -> &mut Qcow2<I, I, N> {
    if !matches!(slot, Some(Layer::Qcow2(_))) {
        new_qcow2_layer(slot);
    }
    match slot {
        Some(Layer::Qcow2(q)) => q,
        _ => unreachable!("just made a qcow2 layer"),
    }
}

/// Puts an empty qcow2 layer where a raw one (or none) was. Not inlined: its frame holds a
/// whole layer while it is built (only chains with raw layers, or made by [`Chain::new`]).
#[cold]
#[inline(never)]
fn new_qcow2_layer<I: BlockIo, const N: usize>(slot: &mut Option<Layer<I, N>>) {
    *slot = Some(Layer::Qcow2(Qcow2::new_empty()));
}

/// Puts a raw layer in `slot`. Not inlined, for the same reason.
#[cold]
#[inline(never)]
fn put_raw_layer<I: BlockIo, const N: usize>(slot: &mut Option<Layer<I, N>>, io: I, size: u64) {
    *slot = Some(Layer::Raw { io, size });
}

/// qcow2 magic and version 2/3 -> qcow2, anything else raw.
pub fn probe<I: BlockIo>(io: &mut I) -> Result<BackingFormat, I::Error> {
    let mut magic = [0u8; 8];
    if io.size()? < 8 {
        return Ok(BackingFormat::Raw);
    }
    crate::io::read_aligned(io, 0, &mut magic)?;
    let version = u32::from_be_bytes([magic[4], magic[5], magic[6], magic[7]]);
    Ok(if magic[..4] == super::header::MAGIC && (version == 2 || version == 3) {
        BackingFormat::Qcow2
    } else {
        BackingFormat::Raw
    })
}
