//! Creating qcow2 images with QEMU's layout and qemu-img's options.
//!
//! QEMU's layout (`qcow2_co_create`, qcow2-write.md §4), which [`create`] reproduces byte for
//! byte for qemu-img's default options: cluster 0 the header, cluster 1 the refcount table,
//! cluster 2 one refcount block, then the L1 table (exactly as large as the virtual size
//! needs; none for size 0), then with `preallocation=metadata` each L2 table followed by its
//! data clusters, then with LUKS the header area (whole clusters, zero-filled) named by the
//! full disk encryption extension. Every cluster is refcounted. When an allocation reaches
//! past what the refcount blocks describe, new blocks follow it (describing themselves, as
//! QEMU places them); when the refcount table itself runs out of entries it is placed, larger,
//! at the end (cluster 1 then stays free, as after QEMU's relocation).
//!
//! Nothing is allocated: the work is done in passes over the (deterministic) layout with one
//! 4 KiB buffer, and every option is checked before the first byte is written.
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::qcow2::create::{create, CreateOptions};
//! use qluks::qcow2::Qcow2;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut rng = doc_rng::Rng(1);
//! // qemu-img create -f qcow2 IMAGE 64M: header, refcount table, one refcount block, and the
//! // L1 table's one entry at 0x30000 (QEMU's file ends there, at 0x30008).
//! let mut disk = vec![0u8; 0x30008];
//! create(&mut MemIo::new(&mut disk), &mut CreateOptions::new(64 << 20), &mut rng)?;
//! assert_eq!(&disk[40..48], &0x30000u64.to_be_bytes()); // l1_table_offset
//!
//! let mut image = Qcow2::open(MemIo::new(&mut disk), None)?;
//! let mut sector = [1u8; 512];
//! image.read_at((64 << 20) - 512, &mut sector)?;
//! assert_eq!(sector, [0; 512]);
//! # Ok(())
//! # }
//! # mod doc_rng {
//! #     pub struct Rng(pub u64);
//! #     impl rand_core::TryRng for Rng {
//! #         type Error = core::convert::Infallible;
//! #         fn try_next_u32(&mut self) -> Result<u32, Self::Error> { Ok(self.try_next_u64()? as u32) }
//! #         fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
//! #             self.0 ^= self.0 << 13; self.0 ^= self.0 >> 7; self.0 ^= self.0 << 17; Ok(self.0)
//! #         }
//! #         fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
//! #             for b in dst { *b = self.try_next_u64()? as u8; } Ok(())
//! #         }
//! #     }
//! #     impl rand_core::TryCryptoRng for Rng {}
//! # }
//! ```

use core::fmt;

use super::compressed::Compression;
use super::error::Error;
use super::extension::{EXT_BACKING_FORMAT, EXT_FDE, EXT_FEATURE_TABLE, MAX_FORMAT_NAME};
use super::feature::{known_name, FeatureKind};
use super::header::{MAGIC, MAX_BACKING_NAME, MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_OFFSET, MAX_REFCOUNT_TABLE_BYTES};
use super::header::{MIN_CLUSTER_BITS, V2_HEADER_LEN};
use crate::crypto::{CipherSpec, HashAlg};
use crate::io::BlockIo;
use crate::luks::luks1::{self, CreateParams, Iterations, MAX_ITERATIONS};
use crate::luks::LuksIoError;

/// qcow2 version (qemu-img's `compat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// `compat=0.10`: version 2.
    V0_10,
    /// `compat=1.1`: version 3 (default).
    V1_1,
}

/// `preallocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// `off` (default): nothing beyond the metadata QEMU always writes.
    Off,
    /// `metadata`: every L2 table and data cluster allocated (and refcounted) up front.
    ///
    /// As in QEMU the data clusters are not written (the file is only extended over them);
    /// unencrypted ones read as what the device holds there: zeros on a new file. Encrypted
    /// images (v3) get `ZERO | COPIED` entries that keep their offset, so nothing reads as
    /// decrypted garbage and the first write still lands in place (QEMU writes plain entries
    /// there, which read back as garbage); v2 has no zero flag, so encrypted v2 images refuse
    /// metadata preallocation ([`CreateError::PreallocationEncryptedV2`]).
    Metadata,
}

/// How guest data is encrypted.
pub enum Encryption<'a> {
    /// Not encrypted.
    None,
    /// LUKS in the full disk encryption header extension (`encrypt.format=luks`).
    Luks {
        /// Passphrase of keyslot 0.
        passphrase: &'a [u8],
        /// Cipher and IV generator (`encrypt.cipher-alg`, `encrypt.cipher-mode`,
        /// `encrypt.ivgen-alg`, `encrypt.ivgen-hash-alg`); QEMU's default aes-256-xts-plain64.
        /// (24-byte keys, aes-192 in CBC/ECB, give key material of 187.5 sectors, which qluks
        /// and cryptsetup read and QEMU 10 cannot: qemu-img aborts on an assertion.)
        cipher: CipherSpec,
        /// `encrypt.hash-alg` (default sha256).
        hash: HashAlg,
        /// `encrypt.iter-time` or explicit counts.
        iterations: Iterations<'a>,
    },
    /// Legacy AES-128-CBC (`encrypt.format=aes`): weak (the passphrase is the key, IVs are
    /// guessable); only for compatibility tests, and only when `i_know_it_is_weak` is true.
    LegacyAes {
        /// The key string.
        passphrase: &'a [u8],
        /// The explicit opt-in.
        i_know_it_is_weak: bool,
    },
}

/// What to create (qemu-img's `-o` options).
pub struct CreateOptions<'a> {
    /// Virtual size in bytes (a multiple of 512; qemu-img rounds up before asking).
    pub size: u64,
    /// `cluster_size`: a power of two, 512 B..=2 MiB (default 64 KiB).
    pub cluster_size: u64,
    /// `compat`.
    pub compat: Compat,
    /// `refcount_bits`: 1, 2, 4, ..., 64 (default 16; above 16 needs compat 1.1).
    pub refcount_bits: u32,
    /// `extended_l2` (compat 1.1, clusters of 16 KiB or more).
    pub extended_l2: bool,
    /// `compression_type` (zstd needs compat 1.1).
    pub compression: Compression,
    /// `lazy_refcounts` (compat 1.1).
    pub lazy_refcounts: bool,
    /// `backing_file` (`-b`), as stored in the image.
    pub backing_file: Option<&'a [u8]>,
    /// `backing_fmt` (`-F`).
    pub backing_format: Option<&'a [u8]>,
    /// `preallocation`.
    pub preallocation: Preallocation,
    /// `encrypt.format` and its options.
    pub encryption: Encryption<'a>,
}

impl<'a> CreateOptions<'a> {
    /// qemu-img's defaults for an image of `size` bytes: compat 1.1, 64 KiB clusters, 16-bit
    /// refcounts, zlib, no extended L2, no lazy refcounts, no backing file, no preallocation,
    /// no encryption.
    pub fn new(size: u64) -> Self {
        CreateOptions {
            size,
            cluster_size: 64 << 10,
            compat: Compat::V1_1,
            refcount_bits: 16,
            extended_l2: false,
            compression: Compression::Deflate,
            lazy_refcounts: false,
            backing_file: None,
            backing_format: None,
            preallocation: Preallocation::Off,
            encryption: Encryption::None,
        }
    }
}

/// Options that cannot be created, found before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    /// The virtual size is not a multiple of 512 bytes.
    SizeUnaligned {
        /// The size.
        size: u64,
    },
    /// The virtual size needs an L1 table above 32 MiB (or the image would pass 2^56 bytes).
    SizeTooLarge {
        /// The size.
        size: u64,
        /// The cluster size.
        cluster_size: u64,
    },
    /// The cluster size is not a power of two between 512 bytes and 2 MiB.
    ClusterSize {
        /// The cluster size.
        cluster_size: u64,
    },
    /// The refcount width is not a power of two up to 64.
    RefcountBits {
        /// The width.
        bits: u32,
    },
    /// An option that needs compat=1.1 (version 3) with compat=0.10.
    NeedsCompat11 {
        /// The option (qemu-img's name and value).
        option: &'static str,
    },
    /// Extended L2 entries with clusters below 16 KiB.
    ExtendedL2ClusterSize {
        /// The cluster size.
        cluster_size: u64,
    },
    /// A backing format without a backing file.
    BackingFormatWithoutFile,
    /// An empty backing file or format name.
    EmptyName {
        /// Which (`backing_file` or `backing_fmt`).
        option: &'static str,
    },
    /// A backing file name longer than 1023 bytes.
    BackingNameTooLong {
        /// Its length.
        len: usize,
    },
    /// A backing format name longer than qluks reads back (32 bytes).
    BackingFormatTooLong {
        /// Its length.
        len: usize,
    },
    /// Header, extensions and backing file name do not fit in cluster 0.
    HeaderTooLarge {
        /// Bytes needed.
        needed: usize,
        /// The cluster size.
        cluster_size: u64,
    },
    /// Preallocation with a backing file needs extended L2 entries (QEMU's rule: a
    /// preallocated standard cluster would hide the backing file).
    PreallocationWithBacking,
    /// Encrypted v2 images cannot be preallocated: v2 has no zero flag, so the preallocated
    /// clusters would read as decrypted garbage.
    PreallocationEncryptedV2,
    /// Legacy AES requested without the opt-in.
    LegacyAesWeak,
    /// LUKS PBKDF2 iterations outside 1..=2^31.
    Iterations {
        /// The count.
        iterations: u32,
    },
    /// The refcount table would exceed 8 MiB (preallocating a very large image with small
    /// clusters).
    RefcountTableTooLarge {
        /// Clusters it would need.
        clusters: u64,
    },
    /// The device's block size is larger than a cluster (or than 4 KiB).
    DeviceBlockSize {
        /// The device's block size.
        block_size: usize,
        /// The cluster size.
        cluster_size: u64,
    },
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CreateError::*;
        match *self {
            SizeUnaligned { size } => write!(f, "image size {size} is not a multiple of 512 bytes"),
            SizeTooLarge { size, cluster_size } => write!(
                f,
                "image size {size} is too large for qcow2 with {cluster_size}-byte clusters (try a larger cluster_size)"
            ),
            ClusterSize { cluster_size } => {
                write!(f, "cluster_size {cluster_size} is not a power of two between 512 and 2048k")
            }
            RefcountBits { bits } => write!(f, "refcount_bits {bits} is not a power of two up to 64"),
            NeedsCompat11 { option } => write!(f, "{option} needs compat=1.1 (version 3)"),
            ExtendedL2ClusterSize { cluster_size } => {
                write!(f, "extended_l2 needs a cluster_size of at least 16k (got {cluster_size})")
            }
            BackingFormatWithoutFile => write!(f, "backing_fmt given without backing_file"),
            EmptyName { option } => write!(f, "{option} is empty"),
            BackingNameTooLong { len } => write!(f, "backing_file name of {len} bytes is longer than 1023"),
            BackingFormatTooLong { len } => {
                write!(f, "backing_fmt name of {len} bytes is longer than {MAX_FORMAT_NAME}")
            }
            HeaderTooLarge { needed, cluster_size } => write!(
                f,
                "header, extensions and backing file name need {needed} bytes, more than a {cluster_size}-byte cluster"
            ),
            PreallocationWithBacking => {
                write!(f, "preallocation with a backing file needs extended_l2=on")
            }
            PreallocationEncryptedV2 => write!(
                f,
                "preallocation=metadata on an encrypted compat=0.10 image would read as decrypted garbage \
                 (v2 has no zero flag); use compat=1.1"
            ),
            LegacyAesWeak => write!(
                f,
                "encrypt.format=aes is weak (the passphrase is the key, IVs repeat across snapshots, no key \
                 stretching): use LUKS, or opt in explicitly"
            ),
            Iterations { iterations } => write!(f, "PBKDF2 iteration count {iterations} outside 1..=2^31"),
            RefcountTableTooLarge { clusters } => {
                write!(f, "refcount table of {clusters} clusters would exceed 8 MiB (use a larger cluster_size)")
            }
            DeviceBlockSize { block_size, cluster_size } => {
                write!(f, "device block size {block_size} is larger than the {cluster_size}-byte clusters (or 4 KiB)")
            }
        }
    }
}

impl core::error::Error for CreateError {}

impl<E> From<CreateError> for Error<E> {
    fn from(e: CreateError) -> Self {
        Error::Create(e)
    }
}

/// The one work buffer.
const BUF: usize = 4096;
/// L2 / L1 COPIED flag.
const COPIED: u64 = 1 << 63;
/// L2 zero flag (v3, standard entries).
const ZERO: u64 = 1;
/// QEMU writes the feature name table only into clusters larger than this (observed).
const FEATURE_TABLE_MIN_CLUSTER: u64 = 8192;
/// Bytes of QEMU's feature name table (8 entries of 48 bytes).
const FEATURE_TABLE_LEN: usize = 8 * 48;
const FEATURES: [(FeatureKind, u8, u8); 8] = [
    (FeatureKind::Incompatible, 0, 0),
    (FeatureKind::Incompatible, 0, 1),
    (FeatureKind::Incompatible, 0, 2),
    (FeatureKind::Incompatible, 0, 3),
    (FeatureKind::Incompatible, 0, 4),
    (FeatureKind::Compatible, 1, 0),
    (FeatureKind::Autoclear, 2, 0),
    (FeatureKind::Autoclear, 2, 1),
];

/// Everything the layout depends on, derived from the options (all checked).
#[derive(Clone, Copy)]
struct Geometry {
    cluster_bits: u32,
    cs: u64,
    /// Bytes per L2 entry (8, or 16 with extended L2).
    l2_entry: u64,
    l2_entries: u64,
    refcount_order: u32,
    /// Refcount entries per block.
    rb_entries: u64,
    data_clusters: u64,
    l1_size: u64,
    l1_clusters: u64,
    prealloc: bool,
    /// Clusters of the LUKS header area (0 without LUKS).
    luks_clusters: u64,
    /// Preallocated entries carry the zero flag (encrypted v3, standard L2).
    zero_flag: bool,
}

/// One allocation of the layout, in file order.
#[derive(Clone, Copy)]
enum Event {
    /// Refcount block `k` at cluster `at`; `ahead` when placed before blocks of lower
    /// index (see [`Cursor::cover`]).
    Block { k: u64, at: u64, ahead: bool },
    /// The L1 table.
    L1 { at: u64 },
    /// L2 table `index`.
    L2 { index: u64, at: u64 },
    /// `n` data clusters for guest clusters `first..first + n`, at host cluster `at`.
    Data { first: u64, at: u64, n: u64 },
    /// The LUKS header area.
    Luks { at: u64 },
}

/// Refcount blocks placed ahead of their turn at once (QEMU's recursion in
/// `alloc_refcount_block`); more would be placed in order (valid, QEMU's layout aside).
const MAX_AHEAD: usize = 4;

/// Where the layout walk stands: next free cluster, refcount blocks placed.
#[derive(Clone, Copy)]
struct Cursor {
    next: u64,
    /// Blocks `0..blocks` are placed ...
    blocks: u64,
    /// ... and these beyond them (`u64::MAX`: free slot).
    ahead: [u64; MAX_AHEAD],
}

/// The outcome of a dry run.
#[derive(Clone, Copy)]
struct Plan {
    /// Clusters in use: `0..total` (cluster 1 excepted when the table moved).
    total: u64,
    /// Refcount table: cluster and length in clusters.
    table_at: u64,
    table_clusters: u64,
    relocated: bool,
    l1_at: u64,
    luks_at: u64,
    /// End (cluster) of the last preallocated data run, when data ends the file.
    data_end_last: bool,
}

impl Cursor {
    /// Allocates `n` clusters at the end, then refcount blocks for everything below the end.
    fn alloc<X>(&mut self, g: &Geometry, n: u64, f: &mut impl FnMut(Event) -> Result<(), X>) -> Result<u64, X> {
        let at = self.next;
        self.next += n;
        self.cover(g, f)?;
        Ok(at)
    }

    /// New refcount blocks right after the end until every cluster below it is described
    /// (QEMU: the block lands at the free index, after the allocation that needed it).
    ///
    /// As in QEMU, when the cluster a block would take lies in the range of a later block
    /// that does not exist yet, that later block is placed first, right after it (describing
    /// itself), and the earlier block then takes the cluster (described by the later one).
    fn cover<X>(&mut self, g: &Geometry, f: &mut impl FnMut(Event) -> Result<(), X>) -> Result<(), X> {
        loop {
            while let Some(slot) = self.ahead.iter_mut().find(|b| **b == self.blocks) {
                *slot = u64::MAX;
                self.blocks += 1;
            }
            if self.blocks * g.rb_entries >= self.next {
                return Ok(());
            }
            let (k, at) = (self.blocks, self.next);
            let j = at / g.rb_entries;
            let free = self.ahead.iter().position(|b| *b == u64::MAX);
            match free {
                Some(slot) if j > k && (at + 1) / g.rb_entries == j && !self.ahead.contains(&j) => {
                    f(Event::Block { k: j, at: at + 1, ahead: true })?;
                    self.ahead[slot] = j;
                    f(Event::Block { k, at, ahead: false })?;
                    self.next += 2;
                }
                _ => {
                    f(Event::Block { k, at, ahead: false })?;
                    self.next += 1;
                }
            }
            self.blocks += 1;
        }
    }
}

/// Largest data run QEMU's preallocation allocates at once (`INT_MAX` bytes, in clusters).
fn prealloc_cap(g: &Geometry) -> u64 {
    (i32::MAX as u64 >> g.cluster_bits).max(1)
}

/// Walks the layout, calling `f` for every allocation in file order. `table` is the
/// relocated refcount table's length (None: the table stays in cluster 1).
fn walk<X>(g: &Geometry, table: Option<u64>, f: &mut impl FnMut(Event) -> Result<(), X>) -> Result<Cursor, X> {
    // Clusters 0..=2: header, refcount table, refcount block 0 (describing all three).
    let mut c = Cursor { next: 3, blocks: 1, ahead: [u64::MAX; MAX_AHEAD] };
    f(Event::Block { k: 0, at: 2, ahead: false })?;
    c.cover(g, f)?;
    if g.l1_size > 0 {
        let at = c.alloc(g, g.l1_clusters, f)?;
        f(Event::L1 { at })?;
    }
    if g.prealloc {
        let cap = prealloc_cap(g);
        let mut guest = 0u64;
        while guest < g.data_clusters {
            let in_table = guest % g.l2_entries;
            if in_table == 0 {
                let at = c.alloc(g, 1, f)?;
                f(Event::L2 { index: guest / g.l2_entries, at })?;
            }
            let n = (g.l2_entries - in_table).min(g.data_clusters - guest).min(cap);
            let at = c.next;
            c.next += n;
            f(Event::Data { first: guest, at, n })?;
            c.cover(g, f)?;
            guest += n;
        }
    }
    if g.luks_clusters > 0 {
        let at = c.alloc(g, g.luks_clusters, f)?;
        f(Event::Luks { at })?;
    }
    if let Some(clusters) = table {
        c.alloc(g, clusters, f)?;
    }
    Ok(c)
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a / b + u64::from(!a.is_multiple_of(b))
}

/// Checks the options and derives the geometry (nothing written yet).
fn geometry(o: &CreateOptions<'_>) -> Result<Geometry, CreateError> {
    let cs = o.cluster_size;
    if !cs.is_power_of_two() || !(1u64 << MIN_CLUSTER_BITS..=1u64 << MAX_CLUSTER_BITS).contains(&cs) {
        return Err(CreateError::ClusterSize { cluster_size: cs });
    }
    let cluster_bits = cs.trailing_zeros();
    let bits = o.refcount_bits;
    if !bits.is_power_of_two() || bits > 64 {
        return Err(CreateError::RefcountBits { bits });
    }
    let v3 = o.compat == Compat::V1_1;
    let needs_v3 = |cond: bool, option| if cond && !v3 { Err(CreateError::NeedsCompat11 { option }) } else { Ok(()) };
    needs_v3(bits != 16, "refcount_bits other than 16")?;
    needs_v3(o.extended_l2, "extended_l2=on")?;
    needs_v3(o.compression == Compression::Zstd, "compression_type=zstd")?;
    needs_v3(o.lazy_refcounts, "lazy_refcounts=on")?;
    if o.extended_l2 && cs < 16384 {
        return Err(CreateError::ExtendedL2ClusterSize { cluster_size: cs });
    }
    if !o.size.is_multiple_of(512) {
        return Err(CreateError::SizeUnaligned { size: o.size });
    }
    match (o.backing_file, o.backing_format) {
        (None, Some(_)) => return Err(CreateError::BackingFormatWithoutFile),
        (Some([]), _) => return Err(CreateError::EmptyName { option: "backing_file" }),
        (_, Some([])) => return Err(CreateError::EmptyName { option: "backing_fmt" }),
        (Some(name), _) if name.len() > MAX_BACKING_NAME as usize => {
            return Err(CreateError::BackingNameTooLong { len: name.len() })
        }
        (_, Some(fmt)) if fmt.len() > MAX_FORMAT_NAME => {
            return Err(CreateError::BackingFormatTooLong { len: fmt.len() })
        }
        _ => {}
    }
    let prealloc = o.preallocation == Preallocation::Metadata;
    if prealloc && o.backing_file.is_some() && !o.extended_l2 {
        return Err(CreateError::PreallocationWithBacking);
    }
    let encrypted = !matches!(o.encryption, Encryption::None);
    if prealloc && encrypted && !v3 {
        return Err(CreateError::PreallocationEncryptedV2);
    }
    let mut luks_clusters = 0;
    match &o.encryption {
        Encryption::None => {}
        Encryption::LegacyAes { i_know_it_is_weak, .. } => {
            if !i_know_it_is_weak {
                return Err(CreateError::LegacyAesWeak);
            }
        }
        Encryption::Luks { cipher, iterations, .. } => {
            if let Iterations::Fixed { keyslot, digest } = iterations {
                for &n in [keyslot, digest] {
                    if n == 0 || n > MAX_ITERATIONS {
                        return Err(CreateError::Iterations { iterations: n });
                    }
                }
            }
            luks_clusters = ceil_div(luks_len(cipher), cs);
        }
    }
    let too_large = CreateError::SizeTooLarge { size: o.size, cluster_size: cs };
    if o.size > i64::MAX as u64 {
        return Err(too_large);
    }
    let l2_entry = if o.extended_l2 { 16 } else { 8 };
    let l2_entries = cs / l2_entry;
    let data_clusters = ceil_div(o.size, cs);
    let l1_size = ceil_div(data_clusters, l2_entries);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(too_large);
    }
    // Preallocated data and L2 tables must stay below 2^56 bytes: refused here, before a walk
    // over more clusters than any file can hold.
    if prealloc && (data_clusters + l1_size) > (MAX_OFFSET >> cluster_bits) {
        return Err(too_large);
    }
    let refcount_order = bits.trailing_zeros();
    Ok(Geometry {
        cluster_bits,
        cs,
        l2_entry,
        l2_entries,
        refcount_order,
        rb_entries: (cs * 8) >> refcount_order,
        data_clusters,
        l1_size,
        l1_clusters: ceil_div(l1_size * 8, cs),
        prealloc,
        luks_clusters,
        zero_flag: encrypted && !o.extended_l2,
    })
}

/// Bytes of the LUKS header area QEMU reserves: the LUKS payload offset for this key size
/// (2068480 for 64-byte keys).
fn luks_len(cipher: &CipherSpec) -> u64 {
    u64::from(luks1::layout(cipher.key_bytes as u32).1) * 512
}

/// Dry runs: where everything goes, and whether the refcount table must move.
fn plan(g: &Geometry, size: u64) -> Result<Plan, CreateError> {
    let too_large = CreateError::SizeTooLarge { size, cluster_size: g.cs };
    // Cluster offsets stay below 2^56 (the L1/L2 offset field): stop counting past it so
    // nothing overflows on absurd inputs (the L1 limit already bounds the walk).
    let limit = MAX_OFFSET >> g.cluster_bits;
    let (mut l1_at, mut luks_at, mut last_is_data) = (0, 0, false);
    let mut track = |e: Event| {
        match e {
            Event::L1 { at } => l1_at = at,
            Event::Luks { at } => luks_at = at,
            _ => {}
        }
        last_is_data = matches!(e, Event::Data { .. });
        Ok::<(), ()>(())
    };
    let end = walk(g, None, &mut track).map_err(|()| too_large)?;
    if end.next > limit {
        return Err(too_large);
    }
    let plan = Plan {
        total: end.next,
        table_at: 1,
        table_clusters: 1,
        relocated: false,
        l1_at,
        luks_at,
        data_end_last: last_is_data,
    };
    if end.blocks <= g.cs / 8 {
        return Ok(plan);
    }
    // The table moves to the end, sized for every block including those it needs itself.
    let mut clusters = ceil_div(end.blocks * 8, g.cs);
    loop {
        if clusters * g.cs > MAX_REFCOUNT_TABLE_BYTES {
            return Err(CreateError::RefcountTableTooLarge { clusters });
        }
        let mut c = end;
        let _ = c.alloc(g, clusters, &mut |_| Ok::<(), ()>(()));
        if c.blocks * 8 <= clusters * g.cs {
            if c.next > limit {
                return Err(too_large);
            }
            return Ok(Plan {
                total: c.next,
                table_at: end.next,
                table_clusters: clusters,
                relocated: true,
                data_end_last: false,
                ..plan
            });
        }
        clusters += 1;
    }
}

/// Checks `options` as [`create`] does before it writes anything (all but the device's block
/// size): for callers that want to refuse before they create or truncate a file.
pub fn validate(options: &CreateOptions<'_>) -> Result<(), CreateError> {
    let g = geometry(options)?;
    let p = plan(&g, options.size)?;
    let mut header = Aligned([0u8; BUF]);
    build_header(options, &g, &p, &mut header.0)?;
    Ok(())
}

/// Creates a qcow2 image on `io` (expected empty; it is written from offset 0 and grown as
/// needed). Randomness (LUKS keys and salts) comes from `rng`.
///
/// Every metadata byte is written (zero-filled clusters included); what is not written is
/// what QEMU does not write either: preallocated data clusters (unencrypted ones then read
/// as whatever the device held, zeros on a new file) and bytes past the end of the image.
/// The device must accept whole aligned blocks of [`BlockIo::block_size`] up to a cluster
/// (LUKS: 512-byte blocks; LUKS formatting writes key material in sectors).
///
/// Every option is checked first ([`CreateError`] inside [`Error::Create`]); then the
/// refcount structures, tables and LUKS header are written, and the header (cluster 0) last,
/// after a flush, so an interrupted create leaves no image that looks valid. Memory: one
/// 4 KiB buffer on the stack (plus what LUKS formatting uses).
pub fn create<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    options: &mut CreateOptions<'_>,
    rng: &mut R,
) -> Result<(), Error<I::Error>> {
    let g = geometry(options)?;
    let block_size = io.block_size();
    let bs = if block_size.is_power_of_two() && block_size <= crate::io::MAX_BLOCK_SIZE { block_size } else { 1 };
    if bs as u64 > g.cs {
        return Err(CreateError::DeviceBlockSize { block_size, cluster_size: g.cs }.into());
    }
    let p = plan(&g, options.size)?;
    let mut w = Writer { io, bs, buf: Aligned([0u8; BUF]) };
    // Built once now only to check that it fits, before anything is written.
    build_header(options, &g, &p, &mut w.buf.0)?;
    let table = p.relocated.then_some(p.table_clusters);

    // Pass 1: refcount blocks and the zeroed LUKS area.
    walk(&g, table, &mut |e| match e {
        Event::Block { k, at, .. } => w.refcount_block(&g, &p, k, at),
        Event::Luks { at } => w.zeros(at * g.cs, g.luks_clusters * g.cs),
        _ => Ok(()),
    })
    .map_err(Error::Io)?;
    // Pass 2: L2 tables (preallocation).
    if g.prealloc {
        w.l2_tables(&g, table).map_err(Error::Io)?;
        if p.data_end_last {
            // QEMU truncates the file up to the last preallocated cluster.
            w.zeros(p.total * g.cs - w.bs as u64, w.bs as u64).map_err(Error::Io)?;
        }
    }
    // Pass 3: the L1 table.
    if g.l1_size > 0 {
        w.l1_table(&g, &p).map_err(Error::Io)?;
    }
    // Pass 4: the refcount table (and a free, zeroed cluster 1 when it moved).
    w.refcount_table(&g, &p).map_err(Error::Io)?;
    // LUKS: key material and header in the zeroed area.
    if let Encryption::Luks { passphrase, cipher, hash, iterations } = &mut options.encryption {
        let passphrase: &[u8] = passphrase;
        let iterations = core::mem::replace(iterations, Iterations::Fixed { keyslot: 1, digest: 1 });
        let mut params = CreateParams { cipher: *cipher, hash: *hash, iterations };
        let r = luks1::format(w.io, p.luks_at * g.cs, &mut params, passphrase, rng);
        if let Encryption::Luks { iterations, .. } = &mut options.encryption {
            *iterations = params.iterations;
        }
        match r {
            Ok(_) => {}
            Err(LuksIoError::Io(e)) => return Err(Error::Io(e)),
            Err(LuksIoError::Luks(e)) => return Err(Error::Luks(e)),
        }
    }
    // The header last, after everything it names is durable.
    w.io.flush().map_err(Error::Io)?;
    w.buf.0.fill(0);
    build_header(options, &g, &p, &mut w.buf.0)?;
    let first = (g.cs as usize).min(BUF);
    w.io.write_at(0, &w.buf.0[..first]).map_err(Error::Io)?;
    w.zeros(first as u64, g.cs - first as u64).map_err(Error::Io)?;
    w.io.flush().map_err(Error::Io)?;
    Ok(())
}

/// Builds cluster 0's meaningful bytes; returns their length.
fn build_header(o: &CreateOptions<'_>, g: &Geometry, p: &Plan, b: &mut [u8; BUF]) -> Result<usize, CreateError> {
    let v3 = o.compat == Compat::V1_1;
    let put32 = |b: &mut [u8; BUF], off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |b: &mut [u8; BUF], off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_be_bytes());
    b[0..4].copy_from_slice(&MAGIC);
    put32(b, 4, if v3 { 3 } else { 2 });
    put32(b, 20, g.cluster_bits);
    put64(b, 24, o.size);
    put32(
        b,
        32,
        match o.encryption {
            Encryption::None => 0,
            Encryption::LegacyAes { .. } => 1,
            Encryption::Luks { .. } => 2,
        },
    );
    put32(b, 36, g.l1_size as u32);
    put64(b, 40, if g.l1_size > 0 { p.l1_at * g.cs } else { 0 });
    put64(b, 48, p.table_at * g.cs);
    put32(b, 56, p.table_clusters as u32);
    let mut at = V2_HEADER_LEN as usize;
    if v3 {
        let mut incompatible = 0u64;
        if o.compression == Compression::Zstd {
            incompatible |= 1 << 3;
        }
        if o.extended_l2 {
            incompatible |= 1 << 4;
        }
        put64(b, 72, incompatible);
        put64(b, 80, u64::from(o.lazy_refcounts));
        put32(b, 96, g.refcount_order);
        put32(b, 100, 112);
        b[104] = u8::from(o.compression == Compression::Zstd);
        at = 112;
    }
    // Extensions in QEMU's order, each padded to 8 bytes; the size is checked first.
    let pad8 = |n: usize| n.next_multiple_of(8);
    let fmt_len = o.backing_format.map_or(0, |f| 8 + pad8(f.len()));
    let fde_len = if g.luks_clusters > 0 { 8 + 16 } else { 0 };
    let table = v3 && g.cs >= FEATURE_TABLE_MIN_CLUSTER;
    let table_len = if table { 8 + FEATURE_TABLE_LEN } else { 0 };
    let name_len = o.backing_file.map_or(0, |n| n.len());
    let needed = at + fmt_len + fde_len + table_len + 8 + name_len;
    if needed as u64 > g.cs || needed > BUF {
        return Err(CreateError::HeaderTooLarge { needed, cluster_size: g.cs });
    }
    if let Some(fmt) = o.backing_format {
        put32(b, at, EXT_BACKING_FORMAT);
        put32(b, at + 4, fmt.len() as u32);
        b[at + 8..at + 8 + fmt.len()].copy_from_slice(fmt);
        at += fmt_len;
    }
    if let Encryption::Luks { cipher, .. } = &o.encryption {
        put32(b, at, EXT_FDE);
        put32(b, at + 4, 16);
        put64(b, at + 8, p.luks_at * g.cs);
        put64(b, at + 16, luks_len(cipher));
        at += fde_len;
    }
    if table {
        put32(b, at, EXT_FEATURE_TABLE);
        put32(b, at + 4, FEATURE_TABLE_LEN as u32);
        at += 8;
        for (kind, kind_byte, bit) in FEATURES {
            b[at] = kind_byte;
            b[at + 1] = bit;
            let name = known_name(kind, bit.into()).unwrap_or("");
            b[at + 2..at + 2 + name.len()].copy_from_slice(name.as_bytes());
            at += 48;
        }
    }
    at += 8; // end marker (zeros)
    if let Some(name) = o.backing_file {
        put64(b, 8, at as u64);
        put32(b, 16, name.len() as u32);
        b[at..at + name.len()].copy_from_slice(name);
        at += name.len();
    }
    Ok(at)
}

/// The refcount table being written in chunks.
struct Table {
    base: u64,
    len: usize,
    per_chunk: u64,
    chunk: u64,
    /// Entries (block index, offset) of chunks not reached yet (`u64::MAX`: free).
    waiting: [(u64, u64); 2 * MAX_AHEAD],
}

impl Table {
    fn set(&self, buf: &mut Aligned, (k, offset): (u64, u64)) {
        let off = ((k % self.per_chunk) * 8) as usize;
        buf.0[off..off + 8].copy_from_slice(&offset.to_be_bytes());
    }
}

/// The work buffer, aligned for any device (`BlockIo::io_align` up to 4 KiB).
#[repr(C, align(4096))]
struct Aligned([u8; BUF]);

struct Writer<'i, I> {
    io: &'i mut I,
    /// The device's block size (a power of two, at most a cluster).
    bs: usize,
    buf: Aligned,
}

impl<I: BlockIo> Writer<'_, I> {
    /// Zeros over `len` bytes at `off`, in chunks.
    fn zeros(&mut self, off: u64, len: u64) -> Result<(), I::Error> {
        self.buf.0.fill(0);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BUF as u64) as usize;
            self.io.write_at(off + done, &self.buf.0[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Refcount block `k`: 1 for every cluster in use.
    fn refcount_block(&mut self, g: &Geometry, p: &Plan, k: u64, at: u64) -> Result<(), I::Error> {
        let chunk = (g.cs as usize).min(BUF);
        let per_chunk = (chunk as u64 * 8) >> g.refcount_order;
        let bits = 1u64 << g.refcount_order;
        let mut done = 0u64;
        while done < g.cs {
            let buf = &mut self.buf.0[..chunk];
            buf.fill(0);
            let first = k * g.rb_entries + ((done * 8) >> g.refcount_order);
            let used = p.total.saturating_sub(first).min(per_chunk);
            for j in 0..used {
                if p.relocated && first + j == 1 {
                    continue;
                }
                if bits >= 8 {
                    let bytes = (bits / 8) as usize;
                    buf[(j as usize + 1) * bytes - 1] = 1;
                } else {
                    let bit = j * bits;
                    buf[(bit / 8) as usize] |= 1 << (bit % 8);
                }
            }
            self.io.write_at(at * g.cs + done, buf)?;
            done += chunk as u64;
        }
        Ok(())
    }

    /// Writes `upto - *chunk` chunks of `len` bytes of a table at `base` (the buffer, then
    /// zeros), advancing `*chunk`.
    fn chunks(&mut self, base: u64, len: usize, chunk: &mut u64, upto: u64) -> Result<(), I::Error> {
        while *chunk < upto {
            self.io.write_at(base + *chunk * len as u64, &self.buf.0[..len])?;
            self.buf.0.fill(0);
            *chunk += 1;
        }
        Ok(())
    }

    /// Every preallocated L2 table, whole, in chunks: `offset | COPIED` (`| ZERO` when
    /// encrypted) for each data cluster, zeros after the last.
    fn l2_tables(&mut self, g: &Geometry, table: Option<u64>) -> Result<(), I::Error> {
        let len = (g.cs as usize).min(BUF);
        let per_chunk = len as u64 / g.l2_entry;
        let chunks = g.cs / len as u64;
        let flags = COPIED | if g.zero_flag { ZERO } else { 0 };
        let mut base = None;
        let mut chunk = 0u64;
        self.buf.0.fill(0);
        walk(g, table, &mut |e| {
            match e {
                Event::L2 { at, .. } => {
                    if let Some(b) = base {
                        self.chunks(b, len, &mut chunk, chunks)?;
                    }
                    base = Some(at * g.cs);
                    chunk = 0;
                }
                Event::Data { first, at, n } => {
                    let b = base.unwrap_or(0);
                    for j in 0..n {
                        let index = (first + j) % g.l2_entries;
                        self.chunks(b, len, &mut chunk, index / per_chunk)?;
                        let off = ((index % per_chunk) * g.l2_entry) as usize;
                        let entry = ((at + j) * g.cs) | flags;
                        self.buf.0[off..off + 8].copy_from_slice(&entry.to_be_bytes());
                    }
                }
                _ => {}
            }
            Ok::<(), I::Error>(())
        })?;
        if let Some(b) = base {
            self.chunks(b, len, &mut chunk, chunks)?;
        }
        Ok(())
    }

    /// The L1 table: every L2 table's offset (preallocation) or zeros. When the table ends
    /// the file, exactly `l1_size * 8` bytes (rounded up to the device's block size), as
    /// QEMU's file ends; otherwise its whole clusters.
    fn l1_table(&mut self, g: &Geometry, p: &Plan) -> Result<(), I::Error> {
        let last = p.l1_at + g.l1_clusters == p.total;
        let bytes = if last { (g.l1_size * 8).next_multiple_of(self.bs as u64) } else { g.l1_clusters * g.cs };
        let base = p.l1_at * g.cs;
        let per_chunk = (BUF / 8) as u64;
        let mut chunk = 0u64;
        self.buf.0.fill(0);
        if g.prealloc {
            walk(g, p.relocated.then_some(p.table_clusters), &mut |e| {
                if let Event::L2 { index, at } = e {
                    self.chunks(base, BUF, &mut chunk, index / per_chunk)?;
                    let off = ((index % per_chunk) * 8) as usize;
                    self.buf.0[off..off + 8].copy_from_slice(&((at * g.cs) | COPIED).to_be_bytes());
                }
                Ok::<(), I::Error>(())
            })?;
        }
        let full = bytes / BUF as u64;
        self.chunks(base, BUF, &mut chunk, full)?;
        let tail = (bytes % BUF as u64) as usize;
        if tail > 0 {
            self.io.write_at(base + full * BUF as u64, &self.buf.0[..tail])?;
        }
        Ok(())
    }

    /// The refcount table: every block's offset, the rest of its clusters zero. Blocks come
    /// in index order but for a few placed ahead ([`MAX_AHEAD`]): their entries wait in
    /// [`Table::waiting`] until their chunk is filled.
    fn refcount_table(&mut self, g: &Geometry, p: &Plan) -> Result<(), I::Error> {
        let len = (g.cs as usize).min(BUF);
        let mut t = Table {
            base: p.table_at * g.cs,
            len,
            per_chunk: (len / 8) as u64,
            chunk: 0,
            waiting: [(u64::MAX, 0); 2 * MAX_AHEAD],
        };
        self.buf.0.fill(0);
        walk(g, p.relocated.then_some(p.table_clusters), &mut |e| {
            if let Event::Block { k, at, ahead } = e {
                let entry = (k, at * g.cs);
                let chunk = k / t.per_chunk;
                if ahead && chunk > t.chunk {
                    // An entry waits while its block is ahead of the order (at most
                    // MAX_AHEAD) or was passed over since the last block in order (as
                    // many): the room is enough (were it not, the chunks up to it would be
                    // written early and lose entries still to come, which the bound rules
                    // out).
                    if let Some(slot) = t.waiting.iter_mut().find(|e| e.0 == u64::MAX) {
                        *slot = entry;
                        return Ok(());
                    }
                    debug_assert!(false, "refcount table entries waiting beyond the bound");
                }
                self.table_advance(&mut t, chunk)?;
                t.set(&mut self.buf, entry);
            }
            Ok::<(), I::Error>(())
        })?;
        self.table_advance(&mut t, p.table_clusters * g.cs / len as u64)?;
        if p.relocated {
            self.zeros(g.cs, g.cs)?;
        }
        Ok(())
    }

    /// Writes the table's chunks before chunk `upto`, each with its waiting entries, and
    /// puts those of chunk `upto` into the buffer.
    fn table_advance(&mut self, t: &mut Table, upto: u64) -> Result<(), I::Error> {
        loop {
            for i in 0..t.waiting.len() {
                let e = t.waiting[i];
                if e.0 != u64::MAX && e.0 / t.per_chunk == t.chunk {
                    t.set(&mut self.buf, e);
                    t.waiting[i].0 = u64::MAX;
                }
            }
            if t.chunk >= upto {
                return Ok(());
            }
            let next = t.chunk + 1;
            self.chunks(t.base, t.len, &mut t.chunk, next)?;
        }
    }
}
