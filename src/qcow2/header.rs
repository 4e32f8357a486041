//! The fixed qcow2 header (version 2 and 3), parsed and validated from the first bytes of
//! cluster 0. Pure: bytes in, a validated [`Header`] or a [`HeaderError`] out.
//!
//! Validation follows QEMU's `qcow2_do_open`: everything that would make a later table read
//! overflow, land in cluster 0 or allocate absurdly is refused here, before any I/O.
//!
//! ```
//! use qluks::qcow2::header::{CryptMethod, Header, MAGIC, V3_HEADER_LEN};
//! use qluks::qcow2::HeaderError;
//!
//! # fn main() -> Result<(), HeaderError> {
//! # fn put(b: &mut [u8], off: usize, v: &[u8]) { b[off..off + v.len()].copy_from_slice(v) }
//! // The first bytes of a v3 image: 64 KiB clusters, 1 GiB, L1 in cluster 3, refcounts in 1.
//! let mut cluster0 = [0u8; 512];
//! put(&mut cluster0, 0, &MAGIC);
//! put(&mut cluster0, 4, &3u32.to_be_bytes()); // version
//! put(&mut cluster0, 20, &16u32.to_be_bytes()); // cluster_bits
//! put(&mut cluster0, 24, &(1u64 << 30).to_be_bytes()); // size
//! put(&mut cluster0, 36, &2u32.to_be_bytes()); // l1_size: 2 x 512 MiB
//! put(&mut cluster0, 40, &(3u64 << 16).to_be_bytes()); // l1_table_offset
//! put(&mut cluster0, 48, &(1u64 << 16).to_be_bytes()); // refcount_table_offset
//! put(&mut cluster0, 56, &1u32.to_be_bytes()); // refcount_table_clusters
//! put(&mut cluster0, 96, &4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
//! put(&mut cluster0, 100, &V3_HEADER_LEN.to_be_bytes()); // header_length
//!
//! let header = Header::parse(&cluster0)?;
//! assert_eq!((header.cluster_size(), header.l2_entries(), header.size), (65536, 8192, 1 << 30));
//! assert_eq!(header.crypt_method, CryptMethod::None);
//!
//! put(&mut cluster0, 36, &1u32.to_be_bytes()); // an L1 table too small for the size
//! assert!(matches!(Header::parse(&cluster0), Err(HeaderError::L1TooSmall { l1_size: 1, needed: 2 })));
//! # Ok(())
//! # }
//! ```

use super::compressed::Compression;
use super::error::HeaderError;
use super::feature::{Incompatible, KNOWN_INCOMPATIBLE};
use super::{be32, be64};

/// `QFI\xfb`.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Smallest accepted cluster_bits (512-byte clusters).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest accepted cluster_bits (2 MiB clusters), QEMU's limit.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU's largest L1 table (32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's largest refcount table (8 MiB).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// QEMU's largest snapshot count.
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Longest backing file name QEMU accepts.
pub const MAX_BACKING_NAME: u32 = 1023;
/// Bits 56..=63 of a table offset must be clear (offsets are < 2^56).
pub const MAX_OFFSET: u64 = 1 << 56;
/// Length of the fixed part a v2 header has.
pub const V2_HEADER_LEN: u32 = 72;
/// Length of the fixed part of a v3 header without the compression type byte.
pub const V3_HEADER_LEN: u32 = 104;

/// How guest data is encrypted (`crypt_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptMethod {
    /// Not encrypted.
    None,
    /// Legacy AES-128-CBC, IV = guest sector (weak, read-only support).
    Aes,
    /// LUKS, header found through the full disk encryption extension.
    Luks,
}

/// A validated qcow2 header (the fixed fields; extensions are in [`super::Extensions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Byte offset of the backing file name in cluster 0 (0 = no backing file).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Encryption.
    pub crypt_method: CryptMethod,
    /// Entries of the active L1 table.
    pub l1_size: u32,
    /// Offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (all known: unknown ones are refused).
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Length of the header structure; extensions start here.
    pub header_length: u32,
    /// Compression of compressed clusters.
    pub compression_type: Compression,
}

impl Header {
    /// The header of an image not opened yet ([`super::Qcow2::new_empty`]): size 0, no
    /// tables, 512-byte clusters.
    pub const EMPTY: Header = Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: 9,
        size: 0,
        crypt_method: CryptMethod::None,
        l1_size: 0,
        l1_table_offset: 0,
        refcount_table_offset: 0,
        refcount_table_clusters: 0,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: V3_HEADER_LEN,
        compression_type: Compression::Deflate,
    };

    /// Parses and validates the header from the start of the file (at least 72 bytes, and at
    /// least `header_length` bytes for v3).
    ///
    /// Unknown incompatible bits are refused with [`HeaderError::UnknownIncompatibleFeatures`];
    /// the engine later names them from the feature name table.
    pub fn parse(b: &[u8]) -> Result<Header, HeaderError> {
        if b.len() < V2_HEADER_LEN as usize {
            return Err(HeaderError::Truncated { needed: V2_HEADER_LEN as usize, got: b.len() });
        }
        if b[0..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = be32(b, 4);
        if version == 1 {
            return Err(HeaderError::QcowVersion1);
        }
        if version != 2 && version != 3 {
            return Err(HeaderError::UnsupportedVersion { version });
        }
        let cluster_bits = be32(b, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(HeaderError::ClusterBits { cluster_bits });
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(b, 8),
            backing_file_size: be32(b, 16),
            cluster_bits,
            size: be64(b, 24),
            crypt_method: match be32(b, 32) {
                0 => CryptMethod::None,
                1 => CryptMethod::Aes,
                2 => CryptMethod::Luks,
                method => return Err(HeaderError::CryptMethod { method }),
            },
            l1_size: be32(b, 36),
            l1_table_offset: be64(b, 40),
            refcount_table_offset: be64(b, 48),
            refcount_table_clusters: be32(b, 56),
            nb_snapshots: be32(b, 60),
            snapshots_offset: be64(b, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: Compression::Deflate,
        };
        if version == 3 {
            if b.len() < V3_HEADER_LEN as usize {
                return Err(HeaderError::Truncated { needed: V3_HEADER_LEN as usize, got: b.len() });
            }
            h.incompatible_features = be64(b, 72);
            h.compatible_features = be64(b, 80);
            h.autoclear_features = be64(b, 88);
            h.refcount_order = be32(b, 96);
            h.header_length = be32(b, 100);
            let len = h.header_length;
            if len < V3_HEADER_LEN || !len.is_multiple_of(8) || u64::from(len) > cluster_size {
                return Err(HeaderError::HeaderLength { header_length: len });
            }
            if b.len() < len as usize {
                return Err(HeaderError::Truncated { needed: len as usize, got: b.len() });
            }
            if len > V3_HEADER_LEN {
                h.compression_type =
                    Compression::from_type(b[104]).ok_or(HeaderError::CompressionType { compression_type: b[104] })?;
            }
        }
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<(), HeaderError> {
        let unknown = self.incompatible_features & !KNOWN_INCOMPATIBLE;
        if unknown != 0 {
            return Err(HeaderError::UnknownIncompatibleFeatures { bits: unknown });
        }
        let has_type_bit = self.incompatible(Incompatible::CompressionType);
        // QEMU: the bit is set exactly when the type is not deflate.
        if (self.compression_type != Compression::Deflate) != has_type_bit {
            return Err(HeaderError::CompressionTypeBit);
        }
        if self.refcount_order > 6 {
            return Err(HeaderError::RefcountOrder { refcount_order: self.refcount_order });
        }
        if self.incompatible(Incompatible::ExtendedL2) && self.cluster_bits < 14 {
            return Err(HeaderError::ExtendedL2ClusterSize { cluster_bits: self.cluster_bits });
        }
        let cs = self.cluster_size();
        if self.backing_file_offset != 0 {
            if self.backing_file_size > MAX_BACKING_NAME {
                return Err(HeaderError::BackingNameTooLong { len: self.backing_file_size });
            }
            // The offset is any u64 from the file: add with a check, so a hostile value is an
            // error, not an overflow.
            let end = self.backing_file_offset.checked_add(u64::from(self.backing_file_size));
            if self.backing_file_offset < u64::from(self.header_length) || end.is_none_or(|end| end > cs) {
                return Err(HeaderError::BackingNameOutsideCluster0 {
                    offset: self.backing_file_offset,
                    len: self.backing_file_size,
                });
            }
        }
        // The L1 table must cover the virtual size and stay within QEMU's limit.
        let entries_needed = self.l1_entries_needed()?;
        if u64::from(self.l1_size) < entries_needed {
            return Err(HeaderError::L1TooSmall { l1_size: self.l1_size, needed: entries_needed });
        }
        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(HeaderError::L1TooLarge { l1_size: self.l1_size });
        }
        check_table(self, Table::L1, self.l1_table_offset, l1_bytes)?;
        if self.refcount_table_clusters == 0 {
            return Err(HeaderError::RefcountTableEmpty);
        }
        let rt_bytes = u64::from(self.refcount_table_clusters) << self.cluster_bits;
        if rt_bytes > MAX_REFCOUNT_TABLE_BYTES {
            return Err(HeaderError::RefcountTableTooLarge { clusters: self.refcount_table_clusters });
        }
        check_table(self, Table::Refcount, self.refcount_table_offset, rt_bytes)?;
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(HeaderError::TooManySnapshots { nb_snapshots: self.nb_snapshots });
        }
        if self.nb_snapshots > 0 {
            // Each entry is at least 40 bytes; the table itself is checked when it is read.
            check_table(self, Table::Snapshots, self.snapshots_offset, u64::from(self.nb_snapshots) * 40)?;
        }
        Ok(())
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether an incompatible feature bit is set.
    pub fn incompatible(&self, f: Incompatible) -> bool {
        self.incompatible_features & (1 << f as u32) != 0
    }

    /// Whether L2 entries are 128-bit with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible(Incompatible::ExtendedL2)
    }

    /// Bytes per L2 entry (8, or 16 with extended L2).
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }

    /// Entries of one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// The L1 entries needed to map `size` (QEMU's `size_to_l1`).
    pub fn l1_entries_needed(&self) -> Result<u64, HeaderError> {
        l1_entries_for(self, self.size)
    }
}

/// L1 entries needed to map `size` bytes with this header's geometry.
pub(crate) fn l1_entries_for(h: &Header, size: u64) -> Result<u64, HeaderError> {
    let shift = h.cluster_bits + h.l2_entries().trailing_zeros();
    // A size whose L1 would exceed QEMU's limit is refused before any arithmetic can overflow.
    let entries = size.div_ceil(1u64 << shift);
    if entries > MAX_L1_BYTES / 8 {
        return Err(HeaderError::SizeTooLarge { size });
    }
    Ok(entries)
}

/// Which metadata table an offset belongs to, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The active (or a snapshot's) L1 table.
    L1,
    /// The refcount table.
    Refcount,
    /// The snapshot table.
    Snapshots,
    /// An L2 table.
    L2,
    /// The LUKS header area (full disk encryption extension).
    Fde,
    /// The bitmap directory.
    Bitmaps,
}

impl core::fmt::Display for Table {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Table::L1 => "L1 table",
            Table::Refcount => "refcount table",
            Table::Snapshots => "snapshot table",
            Table::L2 => "L2 table",
            Table::Fde => "LUKS header area",
            Table::Bitmaps => "bitmap directory",
        })
    }
}

/// QEMU's `qcow2_validate_table`: aligned, below 2^56, not in cluster 0, no overflow.
pub(crate) fn check_table(h: &Header, table: Table, offset: u64, len: u64) -> Result<(), HeaderError> {
    let bad = |reason| HeaderError::BadTableOffset { table, offset, reason };
    if len == 0 {
        return Ok(());
    }
    if offset & (h.cluster_size() - 1) != 0 {
        return Err(bad("not cluster-aligned"));
    }
    if offset == 0 {
        return Err(bad("points at cluster 0"));
    }
    match offset.checked_add(len) {
        Some(end) if end <= MAX_OFFSET => Ok(()),
        _ => Err(bad("extends past 2^56")),
    }
}
