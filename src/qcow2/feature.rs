//! Feature bits (incompatible / compatible / autoclear) and the feature name table extension,
//! which lets an image name bits this reader does not know.
//!
//! ```
//! use qluks::qcow2::feature::{known_name, table_name, FeatureKind, Incompatible};
//! use qluks::qcow2::Header;
//!
//! // QEMU's names for the bits it defines...
//! assert_eq!(known_name(FeatureKind::Incompatible, 4), Some("extended L2 entries"));
//! assert_eq!(known_name(FeatureKind::Incompatible, 9), None);
//!
//! // ...and the image's own feature name table (48-byte entries: kind, bit, name), which is
//! // how an error can name an incompatible bit this reader does not know.
//! let mut table = [0u8; 96];
//! table[..2].copy_from_slice(&[0, 9]); // incompatible bit 9
//! table[2..15].copy_from_slice(b"future format");
//! table[48..50].copy_from_slice(&[2, 0]); // autoclear bit 0
//! table[50..57].copy_from_slice(b"bitmaps");
//! let name = table_name(&table, FeatureKind::Incompatible, 9).expect("in the table");
//! assert_eq!(name.as_bytes(), b"future format");
//! assert!(table_name(&table, FeatureKind::Compatible, 9).is_none());
//!
//! let header = Header { cluster_bits: 16, incompatible_features: 1 << 4, ..Header::EMPTY };
//! assert!(header.incompatible(Incompatible::ExtendedL2) && header.extended_l2());
//! ```

/// Known incompatible feature bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Incompatible {
    /// Refcounts may be stale (the image was not closed cleanly).
    Dirty = 0,
    /// The image is corrupt; read-only access only.
    Corrupt = 1,
    /// Guest data lives in an external data file.
    ExternalDataFile = 2,
    /// The compression_type header field is valid (and not deflate).
    CompressionType = 3,
    /// L2 entries carry subcluster bitmaps.
    ExtendedL2 = 4,
}

/// Mask of the incompatible bits this reader understands.
pub const KNOWN_INCOMPATIBLE: u64 = 0b1_1111;

/// Compatible bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u32 = 0;
/// Autoclear bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u32 = 0;
/// Autoclear bit 1: the external data file is raw (guest offset == host offset).
pub const AUTOCLEAR_DATA_FILE_RAW: u32 = 1;

/// Feature kind, as in the feature name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Unknown bits refuse opening.
    Incompatible,
    /// Unknown bits are ignored.
    Compatible,
    /// Unknown bits are cleared by writers.
    Autoclear,
}

/// QEMU's name of a known feature bit.
pub fn known_name(kind: FeatureKind, bit: u32) -> Option<&'static str> {
    match (kind, bit) {
        (FeatureKind::Incompatible, 0) => Some("dirty bit"),
        (FeatureKind::Incompatible, 1) => Some("corrupt bit"),
        (FeatureKind::Incompatible, 2) => Some("external data file"),
        (FeatureKind::Incompatible, 3) => Some("compression type"),
        (FeatureKind::Incompatible, 4) => Some("extended L2 entries"),
        (FeatureKind::Compatible, 0) => Some("lazy refcounts"),
        (FeatureKind::Autoclear, 0) => Some("bitmaps"),
        (FeatureKind::Autoclear, 1) => Some("raw external data"),
        _ => None,
    }
}

/// A feature name, up to 46 bytes (NUL padding removed).
#[derive(Clone, PartialEq, Eq)]
pub struct FeatureName {
    bytes: heapless::Vec<u8, 46>,
}

impl FeatureName {
    /// An empty name (the bit is not in the table).
    pub const fn empty() -> FeatureName {
        FeatureName { bytes: heapless::Vec::new() }
    }

    pub(crate) fn from_raw(raw: &[u8]) -> FeatureName {
        let len = raw.iter().take(46).position(|&c| c == 0).unwrap_or(raw.len().min(46));
        FeatureName { bytes: heapless::Vec::from_slice(&raw[..len]).unwrap_or_default() }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the table had no name for the bit.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl core::fmt::Debug for FeatureName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", crate::qcow2::UntrustedName(self.as_bytes()))
    }
}

impl core::fmt::Display for FeatureName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&crate::qcow2::UntrustedName(self.as_bytes()), f)
    }
}

/// Looks a bit up in a feature name table (the extension's data: 48-byte entries).
pub fn table_name(table: &[u8], kind: FeatureKind, bit: u32) -> Option<FeatureName> {
    let want = match kind {
        FeatureKind::Incompatible => 0,
        FeatureKind::Compatible => 1,
        FeatureKind::Autoclear => 2,
    };
    table.chunks_exact(48).find(|e| e[0] == want && u32::from(e[1]) == bit).map(|e| FeatureName::from_raw(&e[2..48]))
}
