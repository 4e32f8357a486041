//! Header extensions: `u32 type, u32 len, data, pad to 8`, from `header_length` to a type-0
//! end marker or the end of cluster 0. Pure: parses a copy of cluster 0's start.
//!
//! Known extensions are decoded into fixed-size fields (no heap); unknown ones are kept as
//! (type, offset, length) records so that callers can list or preserve them.
//!
//! ```
//! use qluks::qcow2::extension::{Extensions, EXT_BACKING_FORMAT, EXT_FEATURE_TABLE};
//! use qluks::qcow2::feature::{table_name, FeatureKind};
//! use qluks::qcow2::{Header, HeaderError};
//!
//! # fn main() -> Result<(), HeaderError> {
//! # fn put(b: &mut [u8], off: usize, v: &[u8]) { b[off..off + v.len()].copy_from_slice(v) }
//! # let mut cluster0 = [0u8; 4096];
//! # put(&mut cluster0, 0, b"QFI\xfb");
//! # put(&mut cluster0, 4, &3u32.to_be_bytes());
//! # put(&mut cluster0, 20, &12u32.to_be_bytes());
//! # put(&mut cluster0, 24, &(1u64 << 20).to_be_bytes());
//! # put(&mut cluster0, 36, &1u32.to_be_bytes());
//! # put(&mut cluster0, 40, &8192u64.to_be_bytes());
//! # put(&mut cluster0, 48, &4096u64.to_be_bytes());
//! # put(&mut cluster0, 56, &1u32.to_be_bytes());
//! # put(&mut cluster0, 96, &4u32.to_be_bytes());
//! # put(&mut cluster0, 100, &104u32.to_be_bytes());
//! // Cluster 0 of a v3 image (header_length 104) whose backing file is `base.qcow2` at 256.
//! put(&mut cluster0, 8, &256u64.to_be_bytes());
//! put(&mut cluster0, 16, &10u32.to_be_bytes());
//! put(&mut cluster0, 256, b"base.qcow2");
//! // Extensions from byte 104: the backing format (padded to 8), a one-entry feature name
//! // table (compatible bit 5), then the zero end marker.
//! put(&mut cluster0, 104, &EXT_BACKING_FORMAT.to_be_bytes());
//! put(&mut cluster0, 108, &5u32.to_be_bytes());
//! put(&mut cluster0, 112, b"qcow2");
//! put(&mut cluster0, 120, &EXT_FEATURE_TABLE.to_be_bytes());
//! put(&mut cluster0, 124, &48u32.to_be_bytes());
//! put(&mut cluster0, 128, &[1, 5]);
//! put(&mut cluster0, 130, b"fast trim");
//!
//! let header = Header::parse(&cluster0)?;
//! let ext = Extensions::parse(&header, &cluster0)?;
//! assert_eq!(ext.backing_file.as_ref().map(|n| n.as_bytes()), Some(&b"base.qcow2"[..]));
//! assert_eq!(ext.backing_format.as_ref().map(|n| n.as_bytes()), Some(&b"qcow2"[..]));
//! let name = table_name(ext.feature_table(), FeatureKind::Compatible, 5);
//! assert_eq!(name.as_ref().map(|n| n.as_bytes()), Some(&b"fast trim"[..]));
//! assert_eq!((ext.data_file.is_none(), ext.unknown_count()), (true, 0));
//! # Ok(())
//! # }
//! ```

use super::error::HeaderError;
use super::header::{CryptMethod, Header, MAX_BACKING_NAME};
use super::{be32, be64};

/// Backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Full disk encryption header pointer.
pub const EXT_FDE: u32 = 0x0537_be77;
/// External data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Feature table entries kept (QEMU writes 8; entries past this only lose their names in
/// error messages).
pub const MAX_FEATURE_ENTRIES: usize = 16;
/// Bytes of a backing format name kept (QEMU's format names are a few bytes; a longer one
/// is kept truncated, and no format matches it).
pub const MAX_FORMAT_NAME: usize = 32;
/// Unknown extensions recorded.
pub const MAX_UNKNOWN: usize = 8;

/// A name stored in place: backing file or data file (at most 1023 bytes), backing format
/// (at most [`MAX_FORMAT_NAME`] bytes kept).
#[derive(Clone, PartialEq, Eq)]
pub struct NameBuf<const CAP: usize = { MAX_BACKING_NAME as usize }> {
    bytes: heapless::Vec<u8, CAP>,
    /// The length in the image (more than `CAP` when truncated).
    len: u32,
}

impl<const CAP: usize> NameBuf<CAP> {
    /// `raw`, or `None` when longer than `CAP`.
    pub(crate) fn new(raw: &[u8]) -> Option<Self> {
        Some(NameBuf { bytes: heapless::Vec::from_slice(raw).ok()?, len: raw.len() as u32 })
    }

    /// The first `CAP` bytes of `raw`.
    pub(crate) fn truncated(raw: &[u8]) -> Self {
        let keep = raw.len().min(CAP);
        NameBuf { bytes: heapless::Vec::from_slice(&raw[..keep]).unwrap_or_default(), len: raw.len() as u32 }
    }

    /// The bytes (not NUL-terminated; usually UTF-8 but not guaranteed).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the image's name was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.len as usize > self.bytes.len()
    }
}

impl<const CAP: usize> core::fmt::Debug for NameBuf<CAP> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", super::UntrustedName(self.as_bytes()))
    }
}

/// The full disk encryption header pointer: where the LUKS header lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdeHeader {
    /// Byte offset of the LUKS header (cluster-aligned).
    pub offset: u64,
    /// Length of the LUKS header area in bytes.
    pub length: u64,
}

/// The bitmaps extension (persistent dirty bitmaps; read-only engines only report it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExt {
    /// Number of bitmaps.
    pub nb_bitmaps: u32,
    /// Size of the bitmap directory.
    pub bitmap_directory_size: u64,
    /// Offset of the bitmap directory.
    pub bitmap_directory_offset: u64,
}

/// An extension this reader does not know, kept by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownExt {
    /// Extension type.
    pub ext_type: u32,
    /// Offset of its data in the file.
    pub offset: u64,
    /// Length of its data.
    pub len: u32,
}

/// All header extensions of an image.
#[derive(Clone)]
pub struct Extensions {
    /// Backing file format name ("qcow2", "raw", ...; see [`NameBuf::is_truncated`]).
    pub backing_format: Option<NameBuf<MAX_FORMAT_NAME>>,
    /// Backing file name (from the header's backing_file_offset, not an extension, kept here
    /// with the other names).
    pub backing_file: Option<NameBuf>,
    /// External data file name.
    pub data_file: Option<NameBuf>,
    /// LUKS header location.
    pub fde: Option<FdeHeader>,
    /// Bitmaps.
    pub bitmaps: Option<BitmapsExt>,
    feature_table: heapless::Vec<u8, { MAX_FEATURE_ENTRIES * 48 }>,
    unknown: heapless::Vec<UnknownExt, MAX_UNKNOWN>,
    unknown_total: usize,
}

impl core::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Extensions")
            .field("backing_file", &self.backing_file)
            .field("backing_format", &self.backing_format)
            .field("data_file", &self.data_file)
            .field("fde", &self.fde)
            .field("bitmaps", &self.bitmaps)
            .field("feature_entries", &(self.feature_table.len() / 48))
            .field("unknown", &self.unknown())
            .finish()
    }
}

impl Extensions {
    /// No extensions and no names (an image not opened yet).
    pub const EMPTY: Extensions = Extensions {
        backing_format: None,
        backing_file: None,
        data_file: None,
        fde: None,
        bitmaps: None,
        feature_table: heapless::Vec::new(),
        unknown: heapless::Vec::new(),
        unknown_total: 0,
    };

    /// Parses the extensions and the backing file name from `area`, a copy of the first bytes
    /// of cluster 0 (all of it, or at least up to the end marker).
    pub fn parse(h: &Header, area: &[u8]) -> Result<Extensions, HeaderError> {
        let mut x = Extensions::EMPTY;
        x.parse_into(h, area)?;
        Ok(x)
    }

    /// [`Extensions::parse`] into `self` (replacing what it held), without a large value
    /// returned on the stack.
    pub fn parse_into(&mut self, h: &Header, area: &[u8]) -> Result<(), HeaderError> {
        *self = Extensions::EMPTY;
        let x = self;
        let cluster_end = h.cluster_size();
        if h.backing_file_offset != 0 {
            let start = h.backing_file_offset as usize;
            let raw = area
                .get(start..start + h.backing_file_size as usize)
                .ok_or(HeaderError::Truncated { needed: start + h.backing_file_size as usize, got: area.len() })?;
            x.backing_file = NameBuf::new(raw);
        }
        if h.version < 3 && h.header_length == super::header::V2_HEADER_LEN && area.len() < 80 {
            return Ok(());
        }
        let mut off = u64::from(h.header_length);
        let mut seen = 0u32; // bit per known type
        loop {
            if off + 8 > cluster_end {
                // No room for another extension header: the area simply ends.
                break;
            }
            let hdr = area
                .get(off as usize..off as usize + 8)
                .ok_or(HeaderError::ExtensionAreaTooLarge { offset: off, readable: area.len() })?;
            let ext_type = be32(hdr, 0);
            let len = be32(hdr, 4);
            if ext_type == 0 {
                break;
            }
            let data_start = off + 8;
            let data_end = data_start + u64::from(len);
            if data_end > cluster_end {
                return Err(HeaderError::ExtensionPastCluster { ext_type, offset: off, len });
            }
            let data = area
                .get(data_start as usize..data_end as usize)
                .ok_or(HeaderError::ExtensionAreaTooLarge { offset: off, readable: area.len() })?;
            let bit = match ext_type {
                EXT_BACKING_FORMAT => 1,
                EXT_FEATURE_TABLE => 2,
                EXT_BITMAPS => 4,
                EXT_FDE => 8,
                EXT_DATA_FILE => 16,
                _ => 0,
            };
            if bit != 0 {
                if seen & bit != 0 {
                    return Err(HeaderError::DuplicateExtension { ext_type });
                }
                seen |= bit;
            }
            match ext_type {
                EXT_BACKING_FORMAT => {
                    if len > MAX_BACKING_NAME {
                        return Err(HeaderError::NameTooLong { ext_type, len });
                    }
                    x.backing_format = Some(NameBuf::truncated(data));
                }
                EXT_DATA_FILE => {
                    x.data_file = Some(NameBuf::new(data).ok_or(HeaderError::NameTooLong { ext_type, len })?);
                }
                EXT_FEATURE_TABLE => {
                    // Entries past our capacity are dropped: they only serve error messages.
                    let keep = data.len().min(x.feature_table.capacity()) / 48 * 48;
                    x.feature_table.clear();
                    x.feature_table.extend_from_slice(&data[..keep]).expect("within capacity");
                }
                EXT_BITMAPS => {
                    if len != 24 {
                        return Err(HeaderError::BadExtensionLength { ext_type, len });
                    }
                    let b = BitmapsExt {
                        nb_bitmaps: be32(data, 0),
                        bitmap_directory_size: be64(data, 8),
                        bitmap_directory_offset: be64(data, 16),
                    };
                    super::header::check_table(
                        h,
                        super::header::Table::Bitmaps,
                        b.bitmap_directory_offset,
                        b.bitmap_directory_size,
                    )
                    .map_err(|_| HeaderError::BadBitmapsExtension)?;
                    x.bitmaps = Some(b);
                }
                EXT_FDE => {
                    if len != 16 {
                        return Err(HeaderError::BadExtensionLength { ext_type, len });
                    }
                    let fde = FdeHeader { offset: be64(data, 0), length: be64(data, 8) };
                    if h.crypt_method != CryptMethod::Luks {
                        return Err(HeaderError::FdeWithoutLuks);
                    }
                    let aligned = fde.offset & (cluster_end - 1) == 0 && fde.offset != 0;
                    let fits = fde.offset.checked_add(fde.length).is_some_and(|e| e <= super::header::MAX_OFFSET);
                    if !aligned || !fits || fde.length == 0 {
                        return Err(HeaderError::BadFdeExtension { offset: fde.offset, length: fde.length });
                    }
                    x.fde = Some(fde);
                }
                _ => {
                    // Past the capacity only the count is kept.
                    let _ = x.unknown.push(UnknownExt { ext_type, offset: data_start, len });
                    x.unknown_total += 1;
                }
            }
            off = data_start + u64::from(len).next_multiple_of(8);
        }
        if h.crypt_method == CryptMethod::Luks && x.fde.is_none() {
            return Err(HeaderError::LuksWithoutFde);
        }
        Ok(())
    }

    /// The raw feature name table (48-byte entries).
    pub fn feature_table(&self) -> &[u8] {
        &self.feature_table
    }

    /// Unknown extensions (the first [`MAX_UNKNOWN`]; see [`Extensions::unknown_count`]).
    pub fn unknown(&self) -> &[UnknownExt] {
        &self.unknown
    }

    /// How many unknown extensions the image has in total.
    pub fn unknown_count(&self) -> usize {
        self.unknown_total
    }
}

/// The data of the first extension of `ext_type` in `area` (extensions from `start`), without
/// validating anything else: used to name unknown features of an image that fails to open.
pub fn find(area: &[u8], start: usize, ext_type: u32) -> Option<&[u8]> {
    let mut off = start;
    loop {
        let hdr = area.get(off..off.checked_add(8)?)?;
        let (t, len) = (be32(hdr, 0), be32(hdr, 4) as usize);
        if t == 0 {
            return None;
        }
        let data = area.get(off + 8..(off + 8).checked_add(len)?)?;
        if t == ext_type {
            return Some(data);
        }
        off = off + 8 + len.next_multiple_of(8);
    }
}
