//! qcow2 images (formats.md §1-§5): header and extensions, cluster mapping through a bounded
//! L1/L2 slice cache, encrypted data (LUKS and legacy AES), compressed clusters, subclusters,
//! external data files, backing chains and internal snapshots; read and write.
//!
//! Layout: [`header`] and [`extension`] parse cluster 0 (pure), [`l2_entry`] classifies table
//! entries (pure), [`l2_cache`] holds table slices in caller-sized inline memory (write-back,
//! with dirty tracking), `read` and `mapping` are the read engine over [`BlockIo`], `write`
//! (the data side) and `refcount` + `table_write` (the metadata side: allocation, refcounts,
//! L1/L2 updates, the write order) the write engine, [`create`] makes new images,
//! [`backing`] chains layers, [`snapshot`] lists and selects snapshots (`snapshot_write`:
//! [`Qcow2::snapshot_create`], `_apply`, `_delete`), [`extent`] reports allocation like
//! `qemu-img map`, [`check`] counts references like `qemu-img check` and repairs, [`resize`],
//! [`amend`] (LUKS keyslots), [`commit`] and [`rebase`] are the maintenance operations.
//!
//! Nothing allocates: [`Qcow2`] holds its cache inline (`N` slices of 4 KiB, chosen by the
//! caller) and compressed clusters decompress into caller scratch memory.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `File: BlockIo` needs the `std` feature.
//! use qluks::qcow2::Qcow2Image;
//! let file = std::fs::File::open("disk.qcow2")?;
//! let mut disk = Qcow2Image::open(file, Some(b"passphrase"))?;
//! let mut sector = [0u8; 512];
//! disk.read_at(0, &mut sector)?;
//! # Ok(()) }
//! ```
//!
//! # Memory and stack
//!
//! Every open and read path runs in 64 KiB of stack (`tests/stack_qcow2.rs` runs each on a
//! thread with its measured minimum plus about 8 KiB) provided the large structs live in the
//! caller's memory (a `static`, a box, a pool) and are opened in place: [`Qcow2::new_empty`]
//! and [`Chain::new_empty`] are `const`, [`Qcow2::open_in`] and [`Chain::open_in`] fill them
//! field by field (a chain keeps closed layers' caches for the next open), and
//! [`Image::open`](crate::image::Image::open) takes the chain by reference. The by-value
//! `open`s remain for callers with stack to spare (they build the value on the stack).
//!
//! | what | bytes (x86-64, `I = File`) |
//! | --- | --- |
//! | table cache, per qcow2 layer | `N` x 4 129 (a slice, its tag, stamp and dirty class) + under 100 |
//! | [`Extensions`] (kept: backing and data file names 1023 bytes each, format name 32, 16 feature table entries, 8 unknown extensions) | 3 128 (was 4 832) |
//! | [`Qcow2`] = cache + about 5 KiB (header, extensions, cipher key schedules, sizes, the write state's 0.6 KiB: queued releases, where the refcount blocks are, a snapshot transaction) | `N` = 1: 9 240; 4: 21 624; 16: 71 168 |
//! | [`Layer`] (`N` = 4) | 21 624 |
//! | [`Chain`] = `DEPTH` x [`Layer`] + 8 | `<4, 2>`: 43 192; `<4, 4>`: 86 376; `<8, 16>`: 609 672 |
//! | [`Image`](crate::image::Image) (the chain is the caller's) | 2 200 (was 90 160) |
//! | compressed scratch ([`Qcow2::compressed_scratch_len`]) | 3 x cluster size (192 KiB at 64 KiB clusters) |
//! | check memory ([`Qcow2::check_memory_len`], caller's) | one refcount of the image's width per cluster of the FILE, plus room for a rebuild (32 KiB per GiB at 64 KiB clusters and 16-bit refcounts) |
//! | write scratch ([`Qcow2::write_scratch_len`], [`Chain::write_scratch_len`]; more = larger batches) | 3 x cluster size (1.5 KiB at 512 B, 192 KiB at 64 KiB, 6 MiB at 2 MiB clusters) |
//! | bounce buffer of [`read_aligned`](crate::io::read_aligned) (stack, only with `block_size() > 1` or `io_align() > 1`) | 4 096 |
//! | header area read at open (stack, [`HEADER_AREA`]) | 8 192 |
//!
//! Minimum stack measured (x86-64, release / debug, KiB, by bisecting the thread's stack size;
//! a thread alone needs about 9): `Qcow2` open + read: LUKS 27 / 69, legacy AES 9 / 49,
//! compressed clusters 29 / 57; a three-layer LUKS chain 27 / 73; [`Image`](crate::image::Image)
//! on raw 9 / 9, qcow 9 / 43, qcow2 9 / 43, LUKS 29 / 75, LUKS qcow2 31 / 83.

pub mod amend;
pub mod backing;
pub mod check;
pub mod commit;
pub mod compressed;
pub mod create;
mod crypt;
mod error;
pub mod extension;
pub mod extent;
pub mod feature;
#[cfg(feature = "std")]
pub mod file_resolver;
pub mod header;
pub mod l2_cache;
pub mod l2_entry;
mod luks;
mod mapping;
mod read;
pub mod rebase;
mod refcount;
pub mod resize;
pub mod snapshot;
mod snapshot_write;
mod table_write;
mod write;

pub use backing::{Chain, ChainError, Layer};
pub use check::{CheckResult, Finding, Repair};
pub use error::{Corruption, Error, HeaderError};
pub use extension::{Extensions, FdeHeader};
pub use extent::Extent;
pub use feature::Incompatible;
pub use header::{CryptMethod, Header};
pub use l2_entry::Mapping;
pub use snapshot::Snapshot;

use crate::io::BlockIo;
use crypt::Crypt;
use l2_cache::L2Cache;

/// Bytes of cluster 0 read at open: the header, the extensions and the backing file name must
/// lie within them (QEMU-made images use well under 1 KiB).
pub const HEADER_AREA: usize = 8192;

/// Default number of cached table slices (4 KiB each).
pub const DEFAULT_CACHE_SLICES: usize = 4;

pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Displays image-supplied bytes (names) safely: printable UTF-8 as is; control characters
/// (newlines and ESC included), Unicode bidirectional and invisible format characters escaped;
/// bytes that are not UTF-8 as `\\xNN`. What a terminal shows is then exactly what the image
/// holds, with no escape sequence run and no text reordered or hidden.
pub struct UntrustedName<'a>(pub &'a [u8]);

impl core::fmt::Display for UntrustedName<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        crate::crypto::name::fmt_untrusted(self.0, f)
    }
}

impl core::fmt::Debug for UntrustedName<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// An open qcow2 image.
///
/// `I` is the image file, `D` the external data file (the same type as `I` by default; unused
/// without one), `N` the number of 4 KiB table slices cached inline.
pub struct Qcow2<I: BlockIo, D: BlockIo<Error = I::Error> = I, const N: usize = DEFAULT_CACHE_SLICES> {
    /// `None` until opened ([`Qcow2::new_empty`]).
    io: Option<I>,
    data_file: Option<D>,
    header: Header,
    extensions: Extensions,
    file_size: u64,
    data_file_size: u64,
    /// The L1 table in use (active, or the selected snapshot's).
    l1_table_offset: u64,
    l1_size: u32,
    /// Virtual size in use (changes with a snapshot).
    size: u64,
    snapshot: Option<u32>,
    crypt: Crypt,
    cache: L2Cache<N>,
    /// Write engine state (allocator position, whether writes were accepted).
    write: refcount::WriteState,
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> core::fmt::Debug for Qcow2<I, D, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Qcow2")
            .field("header", &self.header)
            .field("extensions", &self.extensions)
            .field("size", &self.size)
            .field("snapshot", &self.snapshot)
            .field("crypt", &self.crypt)
            .finish_non_exhaustive()
    }
}

/// Dropping an image that was written flushes it (best effort, as QEMU does on close): call
/// [`Qcow2::flush`] before to see its errors.
impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Drop for Qcow2<I, D, N> {
    fn drop(&mut self) {
        if self.write.ready && self.io.is_some() {
            let _ = self.flush();
        }
    }
}

/// A [`Qcow2`] with the defaults spelled out (the image file's type for the data file,
/// [`DEFAULT_CACHE_SLICES`] cached slices), so that `Qcow2Image::open(file, ..)` infers.
pub type Qcow2Image<I> = Qcow2<I, I, DEFAULT_CACHE_SLICES>;

impl<I: BlockIo> Qcow2<I, I, DEFAULT_CACHE_SLICES> {
    /// Opens an image without an external data file, returning it by value (about
    /// `size_of::<Qcow2Image<I>>()` bytes: see the module docs; [`Qcow2::open_in`] opens into
    /// caller-owned memory instead). `passphrase` is needed for encrypted images (LUKS: any
    /// key slot's passphrase; legacy AES: the key string).
    pub fn open(io: I, passphrase: Option<&[u8]>) -> Result<Self, Error<I::Error>> {
        Self::open_with_data_file(io, None, passphrase)
    }
}

impl<I: BlockIo, const N: usize> Qcow2<I, I, N> {
    /// Opens an image without an external data file into this (caller-owned) value, made by
    /// [`Qcow2::new_empty`] or holding an image opened before (replaced; its cache memory is
    /// reused): nothing of the image's size is built on the stack or moved.
    pub fn open_in(&mut self, io: I, passphrase: Option<&[u8]>) -> Result<(), Error<I::Error>> {
        self.open_in_with(io, None, passphrase, &crate::luks::KdfLimits::DEFAULT)
    }
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Default for Qcow2<I, D, N> {
    fn default() -> Self {
        Self::new_empty()
    }
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// An image that holds nothing yet (size 0, no device), for [`Qcow2::open_in`]: its
    /// memory (mostly the table cache) is the caller's, e.g. a `static` (this is `const`), a
    /// box or a pool.
    pub const fn new_empty() -> Self {
        Qcow2 {
            io: None,
            data_file: None,
            header: Header::EMPTY,
            extensions: Extensions::EMPTY,
            file_size: 0,
            data_file_size: 0,
            l1_table_offset: 0,
            l1_size: 0,
            size: 0,
            snapshot: None,
            crypt: Crypt::Locked,
            cache: L2Cache::new(),
            write: refcount::WriteState::NEW,
        }
    }

    /// Whether an image is open (not [`Qcow2::new_empty`], nor closed by a failed
    /// [`Qcow2::open_in`]).
    pub fn is_open(&self) -> bool {
        self.io.is_some()
    }

    /// Opens an image whose guest data may live in `data_file` (required when the image has
    /// the external data file feature; the image's [`Extensions::data_file`] names it, and the
    /// caller decides whether and how to open that name).
    pub fn open_with_data_file(
        io: I,
        data_file: Option<D>,
        passphrase: Option<&[u8]>,
    ) -> Result<Self, Error<I::Error>> {
        Self::open_with_kdf_limits(io, data_file, passphrase, &crate::luks::KdfLimits::DEFAULT)
    }

    /// [`Qcow2::open_with_data_file`] with the caller's KDF limits for the embedded LUKS header
    /// (keyslots over them are refused before any work; see
    /// [`luks1::unlock_with_limits`](crate::luks::luks1::unlock_with_limits)).
    pub fn open_with_kdf_limits(
        io: I,
        data_file: Option<D>,
        passphrase: Option<&[u8]>,
        limits: &crate::luks::KdfLimits,
    ) -> Result<Self, Error<I::Error>> {
        let mut q = Self::new_empty();
        q.open_in_with(io, data_file, passphrase, limits)?;
        Ok(q)
    }

    /// [`Qcow2::open_with_kdf_limits`] into this (caller-owned) value (see
    /// [`Qcow2::open_in`]). On error the value is left closed ([`Qcow2::is_open`] false).
    pub fn open_in_with(
        &mut self,
        io: I,
        data_file: Option<D>,
        passphrase: Option<&[u8]>,
        limits: &crate::luks::KdfLimits,
    ) -> Result<(), Error<I::Error>> {
        self.open_steps(io, data_file, Some((passphrase, limits)))
    }

    /// Opens the metadata only: header, tables, snapshots and the allocation map are
    /// available without a passphrase or data file; reading encrypted data (or data in a
    /// missing data file) fails with [`Error::PassphraseRequired`] ([`Error::DataFileRequired`]).
    pub fn open_metadata(io: I, data_file: Option<D>) -> Result<Self, Error<I::Error>> {
        let mut q = Self::new_empty();
        q.open_metadata_in(io, data_file)?;
        Ok(q)
    }

    /// [`Qcow2::open_metadata`] into this (caller-owned) value (see [`Qcow2::open_in_with`]).
    pub fn open_metadata_in(&mut self, io: I, data_file: Option<D>) -> Result<(), Error<I::Error>> {
        self.open_steps(io, data_file, None)
    }

    fn open_steps(
        &mut self,
        io: I,
        data_file: Option<D>,
        key: Option<(Option<&[u8]>, &crate::luks::KdfLimits)>,
    ) -> Result<(), Error<I::Error>> {
        let r = self.read_header_in(io).and_then(|()| self.finish_open(data_file, key));
        if r.is_err() {
            self.close();
        }
        r
    }

    /// Drops the devices and forgets the image, keeping the cache memory: the value is then
    /// as [`Qcow2::new_empty`] made it. An image that was written is flushed first, best
    /// effort: call [`Qcow2::flush`] before to see its errors.
    pub fn close(&mut self) {
        if self.write.ready && self.io.is_some() {
            let _ = self.flush();
        }
        self.io = None;
        self.data_file = None;
        self.header = Header::EMPTY;
        self.extensions = Extensions::EMPTY;
        self.file_size = 0;
        self.data_file_size = 0;
        self.l1_table_offset = 0;
        self.l1_size = 0;
        self.size = 0;
        self.snapshot = None;
        self.crypt = Crypt::Locked;
        self.cache.clear_all();
        self.write = refcount::WriteState::NEW;
    }

    /// Opening, step 1: closes this image, takes `io` and reads and checks the header into
    /// place (the caller may look at the names before [`Qcow2::finish_open`]). The image stays
    /// unreadable (size 0) until step 2. On error the caller closes it.
    // Not inlined (nor is what it calls): the header area's frame is gone before the unlock.
    #[inline(never)]
    pub(crate) fn read_header_in(&mut self, io: I) -> Result<(), Error<I::Error>> {
        self.close();
        let io = self.io.insert(io);
        let file_size = read_header_into(io, &mut self.header, &mut self.extensions)?;
        self.file_size = file_size;
        let header = &self.header;
        let l1_bytes = u64::from(header.l1_size) * 8;
        check_in_file(header::Table::L1, header.l1_table_offset, l1_bytes, file_size)?;
        let rt_bytes = u64::from(header.refcount_table_clusters) << header.cluster_bits;
        check_in_file(header::Table::Refcount, header.refcount_table_offset, rt_bytes, file_size)?;
        if header.nb_snapshots > 0 {
            check_in_file(header::Table::Snapshots, header.snapshots_offset, 40, file_size)?;
        }
        Ok(())
    }

    /// Opening, step 2: takes the data file (kept only when the image has the feature),
    /// unlocks (`key`: `None` = metadata only, `Some((passphrase, limits))`), and makes the
    /// image readable. On error the caller closes it.
    #[inline(never)]
    pub(crate) fn finish_open(
        &mut self,
        mut data_file: Option<D>,
        key: Option<(Option<&[u8]>, &crate::luks::KdfLimits)>,
    ) -> Result<(), Error<I::Error>> {
        self.data_file_size = if self.header.incompatible(Incompatible::ExternalDataFile) {
            match data_file.as_mut() {
                Some(d) => d.size().map_err(Error::Io)?,
                None if key.is_none() => 0,
                None => return Err(Error::DataFileRequired),
            }
        } else {
            data_file = None;
            0
        };
        self.data_file = data_file;
        let Some(io) = self.io.as_mut() else {
            return Err(Error::NotOpen);
        };
        self.crypt = match (self.header.crypt_method, key) {
            (CryptMethod::None, _) => Crypt::None,
            (_, None) => Crypt::Locked,
            (_, Some((passphrase, limits))) => {
                unlock(io, &self.header, &self.extensions, self.file_size, passphrase, limits)?
            }
        };
        self.l1_table_offset = self.header.l1_table_offset;
        self.l1_size = self.header.l1_size;
        self.size = self.header.size;
        self.snapshot = None;
        self.cache.clear();
        Ok(())
    }
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header extensions and names.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Virtual disk size in bytes (of the selected snapshot, if one is selected).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// Scratch bytes [`Qcow2::read_at_with_scratch`] needs for compressed clusters: the
    /// largest compressed input (two clusters) plus one cluster of output.
    pub fn compressed_scratch_len(&self) -> usize {
        3 * self.cluster_size() as usize
    }

    /// The data cipher, if the image is encrypted.
    pub fn cipher(&self) -> Option<&crate::crypto::SectorCipher> {
        self.crypt.cipher()
    }

    /// Whether guest data is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.crypt.is_encrypted()
    }

    /// The selected snapshot's index, if any.
    pub fn selected_snapshot(&self) -> Option<u32> {
        self.snapshot
    }

    /// Gives back the image file (`None` if not open) and data file. An image that was
    /// written is flushed first, best effort: call [`Qcow2::flush`] before to see its errors.
    pub fn into_inner(mut self) -> (Option<I>, Option<D>) {
        if self.write.ready && self.io.is_some() {
            let _ = self.flush();
        }
        (self.io.take(), self.data_file.take())
    }

    /// Reads `buf.len()` guest bytes at `offset`; unallocated clusters read as zeros (this
    /// image alone, no backing file: see [`Chain`]). Compressed clusters need scratch memory:
    /// use [`Qcow2::read_at_with_scratch`].
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.read_layered::<1>(offset, buf, &mut [], &mut [])
    }

    /// [`Qcow2::read_at`] with `scratch` (at least [`Qcow2::compressed_scratch_len`] bytes)
    /// for compressed clusters.
    pub fn read_at_with_scratch(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        self.read_layered::<1>(offset, buf, &mut [], scratch)
    }
}

/// Reads and validates the header and extensions of the image on `io` (no passphrase needed:
/// this is what `qluks info` shows). Returns them with the file size.
#[inline(never)]
fn unlock<I: BlockIo>(
    io: &mut I,
    header: &Header,
    extensions: &Extensions,
    file_size: u64,
    passphrase: Option<&[u8]>,
    limits: &crate::luks::KdfLimits,
) -> Result<Crypt, Error<I::Error>> {
    Ok(match header.crypt_method {
        CryptMethod::None => Crypt::None,
        CryptMethod::Aes => Crypt::legacy_aes(passphrase.ok_or(Error::PassphraseRequired)?)?,
        CryptMethod::Luks => {
            let fde = extensions.fde.ok_or(Error::Header(HeaderError::LuksWithoutFde))?;
            if fde.offset.saturating_add(fde.length) > file_size {
                return Err(Error::Corrupt(Corruption::PastEndOfFile {
                    table: header::Table::Fde,
                    offset: fde.offset,
                    file_size,
                }));
            }
            luks::unlock(io, fde, passphrase.ok_or(Error::PassphraseRequired)?, limits)?
        }
    })
}

#[inline(never)]
pub fn read_qcow2_header<I: BlockIo>(io: &mut I) -> Result<(Header, Extensions, u64), Error<I::Error>> {
    let mut header = Header::EMPTY;
    let mut extensions = Extensions::EMPTY;
    let file_size = read_header_into(io, &mut header, &mut extensions)?;
    Ok((header, extensions, file_size))
}

/// [`read_qcow2_header`] into place (nothing large returned by value).
#[inline(never)]
fn read_header_into<I: BlockIo>(
    io: &mut I,
    header: &mut Header,
    extensions: &mut Extensions,
) -> Result<u64, Error<I::Error>> {
    let file_size = io.size().map_err(Error::Io)?;
    let mut area = [0u8; HEADER_AREA];
    let n = (HEADER_AREA as u64).min(file_size) as usize;
    crate::io::read_aligned(io, 0, &mut area[..n]).map_err(Error::Io)?;
    let area = &area[..n];
    *header = match Header::parse(area) {
        Err(HeaderError::UnknownIncompatibleFeatures { bits }) => {
            return Err(unknown_feature_error(area, bits));
        }
        r => r?,
    };
    let n = n.min(header.cluster_size() as usize);
    extensions.parse_into(header, &area[..n])?;
    Ok(file_size)
}

fn check_in_file<E>(table: header::Table, offset: u64, len: u64, file_size: u64) -> Result<(), Error<E>> {
    if len != 0 && offset.saturating_add(len) > file_size {
        return Err(Error::Corrupt(Corruption::PastEndOfFile { table, offset, file_size }));
    }
    Ok(())
}

/// Names the lowest unknown incompatible bit from the image's feature name table.
fn unknown_feature_error<E>(area: &[u8], bits: u64) -> Error<E> {
    let bit = bits.trailing_zeros();
    let name = header_length(area)
        .and_then(|start| extension::find(area, start, extension::EXT_FEATURE_TABLE))
        .and_then(|table| feature::table_name(table, feature::FeatureKind::Incompatible, bit))
        .unwrap_or(feature::FeatureName::empty());
    Error::UnknownIncompatibleFeature { bit, name }
}

fn header_length(area: &[u8]) -> Option<usize> {
    (area.len() >= header::V3_HEADER_LEN as usize).then(|| be32(area, 100) as usize)
}
