//! L1 and L2 entries: what one guest cluster (or subcluster) maps to. Pure.
//!
//! The classification mirrors QEMU's `qcow2_get_cluster_type` / `qcow2_get_subcluster_type`,
//! including the external data file rule (host offset 0 is a real offset there when COPIED is
//! set) and the invalid subcluster states.
//!
//! ```
//! use qluks::qcow2::l2_entry::{classify, Mapping, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
//! use qluks::qcow2::{Corruption, Header};
//!
//! # fn main() -> Result<(), Corruption> {
//! let header = Header { cluster_bits: 16, ..Header::EMPTY }; // 64 KiB clusters, no subclusters
//! // An allocated cluster at host 0x50000; byte 0x100 of it, and the 0xff00 bytes left.
//! let (mapping, run) = classify(&header, false, OFLAG_COPIED | 0x5_0000, 0, 0x100)?;
//! assert_eq!((mapping, run), (Mapping::Data { host_offset: 0x5_0100 }, 0xff00));
//!
//! assert_eq!(classify(&header, false, 0, 0, 0)?.0, Mapping::Unallocated { host_offset: None });
//! assert_eq!(classify(&header, false, OFLAG_ZERO, 0, 0)?.0, Mapping::Zero { host_offset: None });
//!
//! // Compressed: offset in the low 54 bits (62 - (16 - 8)), then the extra 512-byte sectors.
//! let entry = OFLAG_COMPRESSED | (3 << 54) | 0x7_0200;
//! let compressed = Mapping::Compressed { host_offset: 0x7_0200, compressed_len: 4 * 512 };
//! assert_eq!(classify(&header, false, entry, 0, 0)?.0, compressed);
//!
//! // A data offset that is not cluster aligned is corruption, not a panic.
//! assert!(classify(&header, false, 0x5_0200, 0, 0).is_err());
//! # Ok(())
//! # }
//! ```

use super::error::Corruption;
use super::header::Header;

/// L1 entry: bits 9..=55 hold the L2 table offset.
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 entry bits that must be zero (1..=8, 56..=62).
pub const L1E_RESERVED_MASK: u64 = 0x7f00_0000_0000_01fe;
/// L2 entry: bits 9..=55 hold the host cluster offset.
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Standard L2 entry bits that must be zero (1..=8, 56..=61).
pub const L2E_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// Refcount is exactly one (informational for readers).
pub const OFLAG_COPIED: u64 = 1 << 63;
/// The cluster is compressed.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// The cluster reads as zero (v3, without extended L2).
pub const OFLAG_ZERO: u64 = 1;
/// Subclusters per cluster with extended L2.
pub const SUBCLUSTERS: u32 = 32;

/// Where a stretch of guest data comes from, for one (sub)cluster or a run of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Stored at this host offset (in the image file, or in the external data file).
    Data {
        /// Host byte offset of the first guest byte.
        host_offset: u64,
    },
    /// Reads as zero; `host_offset` is the preallocated space, if any.
    Zero {
        /// Preallocated host offset of the first guest byte.
        host_offset: Option<u64>,
    },
    /// Not allocated in this layer: read from the backing file, or zeros without one.
    /// `host_offset` is set for an unallocated subcluster of an allocated cluster.
    Unallocated {
        /// Host offset reserved for the first guest byte.
        host_offset: Option<u64>,
    },
    /// Compressed cluster (never merged with a neighbour).
    Compressed {
        /// Host byte offset of the compressed stream (unaligned).
        host_offset: u64,
        /// Bytes QEMU reads for it: `(sectors + 1) * 512 - (host_offset & 511)`.
        compressed_len: u64,
    },
}

impl Mapping {
    /// The mapping `len` bytes further into the same run (host offsets advance with it).
    pub fn advance(self, len: u64) -> Mapping {
        let add = |o: Option<u64>| o.map(|h| h + len);
        match self {
            Mapping::Data { host_offset } => Mapping::Data { host_offset: host_offset + len },
            Mapping::Zero { host_offset } => Mapping::Zero { host_offset: add(host_offset) },
            Mapping::Unallocated { host_offset } => Mapping::Unallocated { host_offset: add(host_offset) },
            c @ Mapping::Compressed { .. } => c,
        }
    }

    /// Whether `next` (which starts `len` bytes after `self`) continues the same run.
    pub fn continues(self, len: u64, next: Mapping) -> bool {
        match (self, next) {
            (Mapping::Compressed { .. }, _) | (_, Mapping::Compressed { .. }) => false,
            (Mapping::Data { .. }, Mapping::Data { .. })
            | (Mapping::Zero { .. }, Mapping::Zero { .. })
            | (Mapping::Unallocated { .. }, Mapping::Unallocated { .. }) => self.advance(len) == next,
            _ => false,
        }
    }
}

/// Validates an L1 entry and returns its L2 table offset (0 = no L2 table).
pub fn l2_offset(h: &Header, l1_index: u64, entry: u64) -> Result<u64, Corruption> {
    if entry & L1E_RESERVED_MASK != 0 {
        return Err(Corruption::L1ReservedBits { l1_index, entry });
    }
    let offset = entry & L1E_OFFSET_MASK;
    if offset & (h.cluster_size() - 1) != 0 {
        return Err(Corruption::L2TableUnaligned { l1_index, offset });
    }
    Ok(offset)
}

/// Classifies the guest byte at `in_cluster` (offset within its cluster) described by the L2
/// entry (and bitmap, with extended L2). Returns the mapping of that byte and how many bytes of
/// the same (sub)cluster follow it, itself included.
pub fn classify(
    h: &Header,
    has_data_file: bool,
    entry: u64,
    bitmap: u64,
    in_cluster: u64,
) -> Result<(Mapping, u64), Corruption> {
    let cs = h.cluster_size();
    let sub = h.extended_l2();
    if entry & OFLAG_COMPRESSED != 0 {
        if entry & OFLAG_COPIED != 0 {
            return Err(Corruption::CompressedCopied { entry });
        }
        if sub && bitmap != 0 {
            return Err(Corruption::CompressedBitmap { bitmap });
        }
        if has_data_file {
            return Err(Corruption::CompressedWithDataFile);
        }
        let x = 62 - (h.cluster_bits - 8);
        let host_offset = entry & ((1u64 << x) - 1);
        let sectors = (entry >> x) & ((1u64 << (h.cluster_bits - 8)) - 1);
        let compressed_len = (sectors + 1) * 512 - (host_offset & 511);
        return Ok((Mapping::Compressed { host_offset, compressed_len }, cs - in_cluster));
    }
    if entry & L2E_RESERVED_MASK != 0 {
        return Err(Corruption::L2ReservedBits { entry });
    }
    let base = entry & L2E_OFFSET_MASK;
    if base & (cs - 1) != 0 {
        return Err(Corruption::DataUnaligned { offset: base });
    }
    // With an external data file, offset 0 is real; COPIED disambiguates (QEMU's rule).
    let allocated = base != 0 || (has_data_file && entry & OFLAG_COPIED != 0);
    let host = base + in_cluster;
    if !sub {
        let rest = cs - in_cluster;
        let m = if entry & OFLAG_ZERO != 0 {
            Mapping::Zero { host_offset: allocated.then_some(host) }
        } else if allocated {
            Mapping::Data { host_offset: host }
        } else {
            Mapping::Unallocated { host_offset: None }
        };
        return Ok((m, rest));
    }
    let sc_size = cs / u64::from(SUBCLUSTERS);
    let sc = (in_cluster / sc_size) as u32;
    let rest = sc_size - in_cluster % sc_size;
    let alloc_bits = bitmap as u32;
    let zero_bits = (bitmap >> 32) as u32;
    let m = if allocated {
        if alloc_bits & zero_bits != 0 {
            return Err(Corruption::SubclusterAllocAndZero { bitmap });
        }
        if zero_bits & (1 << sc) != 0 {
            Mapping::Zero { host_offset: Some(host) }
        } else if alloc_bits & (1 << sc) != 0 {
            Mapping::Data { host_offset: host }
        } else {
            Mapping::Unallocated { host_offset: Some(host) }
        }
    } else {
        if alloc_bits != 0 {
            return Err(Corruption::SubclusterAllocWithoutCluster { bitmap });
        }
        if zero_bits & (1 << sc) != 0 {
            Mapping::Zero { host_offset: None }
        } else {
            Mapping::Unallocated { host_offset: None }
        }
    };
    Ok((m, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 header with `cluster_bits` and the given incompatible bits.
    fn header(cluster_bits: u32, incompatible: u64) -> Header {
        let mut b = [0u8; 112];
        b[0..4].copy_from_slice(b"QFI\xfb");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        b[36..40].copy_from_slice(&64u32.to_be_bytes());
        b[40..48].copy_from_slice(&(3u64 << cluster_bits).to_be_bytes());
        b[48..56].copy_from_slice(&(1u64 << cluster_bits).to_be_bytes());
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[72..80].copy_from_slice(&incompatible.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        Header::parse(&b).unwrap()
    }

    #[test]
    fn compressed_descriptor_splits_at_62_minus_cluster_bits_minus_8() {
        let h = header(16, 0); // x = 62 - 8 = 54: offset in bits 0..54, sectors above
        let entry = OFLAG_COMPRESSED | (3u64 << 54) | 0x12_3456;
        let (m, rest) = classify(&h, false, entry, 0, 100).unwrap();
        // (3 + 1) sectors minus the offset's position inside its sector.
        assert_eq!(m, Mapping::Compressed { host_offset: 0x12_3456, compressed_len: 4 * 512 - 0x56 });
        assert_eq!(rest, 65536 - 100);
    }

    #[test]
    fn zero_flag_with_and_without_preallocation() {
        let h = header(16, 0);
        assert_eq!(classify(&h, false, OFLAG_ZERO, 0, 0).unwrap().0, Mapping::Zero { host_offset: None });
        let m = classify(&h, false, OFLAG_ZERO | 0x50000, 0, 8).unwrap().0;
        assert_eq!(m, Mapping::Zero { host_offset: Some(0x50008) });
    }

    #[test]
    fn offset_zero_is_data_in_an_external_data_file_only_with_copied() {
        let h = header(16, 1 << 2);
        assert_eq!(classify(&h, true, OFLAG_COPIED, 0, 0).unwrap().0, Mapping::Data { host_offset: 0 });
        assert_eq!(classify(&h, true, 0, 0, 0).unwrap().0, Mapping::Unallocated { host_offset: None });
    }

    #[test]
    fn subcluster_bitmap_selects_allocated_zero_or_unallocated() {
        let h = header(16, 1 << 4); // 2 KiB subclusters
        let bitmap = 0b01 | (0b10 << 32); // subcluster 0 allocated, 1 zero, 2.. unallocated
        let entry = OFLAG_COPIED | 0x70000;
        assert_eq!(classify(&h, false, entry, bitmap, 10).unwrap(), (Mapping::Data { host_offset: 0x7000a }, 2038));
        assert_eq!(classify(&h, false, entry, bitmap, 2048).unwrap().0, Mapping::Zero { host_offset: Some(0x70800) });
        let third = classify(&h, false, entry, bitmap, 4096).unwrap().0;
        assert_eq!(third, Mapping::Unallocated { host_offset: Some(0x71000) });
        assert_eq!(
            classify(&h, false, entry, 1 | (1 << 32), 0).unwrap_err(),
            Corruption::SubclusterAllocAndZero { bitmap: 1 | (1 << 32) },
            "allocated and zero at once"
        );
    }

    #[test]
    fn runs_continue_only_with_contiguous_host_offsets() {
        let a = Mapping::Data { host_offset: 0x10000 };
        assert!(a.continues(0x10000, Mapping::Data { host_offset: 0x20000 }));
        assert!(!a.continues(0x10000, Mapping::Data { host_offset: 0x30000 }));
        let c = Mapping::Compressed { host_offset: 0x10000, compressed_len: 512 };
        assert!(!c.continues(0x10000, c));
    }
}
