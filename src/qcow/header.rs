//! The qcow (version 1) header: a pure parse of the first 48 bytes, validated as QEMU's
//! `qcow_open` does.
//!
//! ```
//! use qluks::qcow::header::{CryptMethod, HeaderError, QcowHeader, MAGIC};
//!
//! # fn main() -> Result<(), HeaderError> {
//! let mut bytes = [0u8; 48];
//! bytes[..4].copy_from_slice(&MAGIC);
//! bytes[4..8].copy_from_slice(&1u32.to_be_bytes()); // version 1
//! bytes[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes()); // 64 MiB
//! (bytes[32], bytes[33]) = (12, 9); // 4 KiB clusters, 512-entry L2 tables
//! bytes[40..48].copy_from_slice(&4096u64.to_be_bytes()); // L1 table offset
//!
//! let header = QcowHeader::parse(&bytes)?;
//! assert_eq!((header.cluster_size(), header.l2_entries()), (4096, 512));
//! assert_eq!(header.l1_size, 32); // 64 MiB / (4 KiB * 512), derived, not stored
//! assert_eq!(header.crypt_method, CryptMethod::None);
//!
//! bytes[33] = 20; // QEMU refuses l2_bits outside 6..=13, and so does the parser
//! assert!(matches!(QcowHeader::parse(&bytes), Err(HeaderError::L2BitsOutOfRange { l2_bits: 20 })));
//! # Ok(())
//! # }
//! ```

use core::fmt;

/// `QFI\xfb`, shared with qcow2; the version tells the formats apart.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Bytes of the on-disk header.
pub const HEADER_LEN: usize = 48;

/// Longest backing file name QEMU accepts.
pub const MAX_BACKING_FILE_NAME: usize = 1023;

/// Bit 63 of an L2 entry: the cluster is stored deflate-compressed.
pub const L2_COMPRESSED: u64 = 1 << 63;

/// `crypt_method` of a qcow image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptMethod {
    /// Not encrypted.
    None,
    /// Legacy AES-128-CBC, IV = plain64 of the guest sector (formats.md §5).
    Aes,
}

/// A validated qcow v1 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QcowHeader {
    /// Byte offset of the backing file name (0 = none).
    pub backing_file_offset: u64,
    /// Length of the backing file name (<= 1023 when there is one).
    pub backing_file_size: u32,
    /// Modification time (informational).
    pub mtime: u32,
    /// Virtual size in bytes as stored (QEMU uses `size / 512` whole sectors).
    pub size: u64,
    /// log2 of the cluster size, 9..=16.
    pub cluster_bits: u8,
    /// log2 of the number of entries of an L2 table, 6..=13.
    pub l2_bits: u8,
    /// Encryption.
    pub crypt_method: CryptMethod,
    /// Byte offset of the L1 table.
    pub l1_table_offset: u64,
    /// Number of L1 entries, derived from `size` (not stored).
    pub l1_size: u64,
}

/// A qcow v1 header QEMU would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 48 bytes.
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// Not `QFI\xfb`.
    BadMagic {
        /// The first four bytes.
        magic: [u8; 4],
    },
    /// A qcow-family image of another version (2 and 3 are qcow2).
    UnsupportedVersion {
        /// The header's version.
        version: u32,
    },
    /// Virtual size below 2 bytes.
    SizeTooSmall {
        /// The header's size.
        size: u64,
    },
    /// cluster_bits outside 9..=16 (512 B to 64 KiB clusters).
    ClusterBitsOutOfRange {
        /// The header's value.
        cluster_bits: u8,
    },
    /// l2_bits outside 6..=13 (L2 tables of 512 B to 64 KiB).
    L2BitsOutOfRange {
        /// The header's value.
        l2_bits: u8,
    },
    /// crypt_method other than 0 (none) and 1 (AES).
    UnknownCryptMethod {
        /// The header's value.
        crypt_method: u32,
    },
    /// The size needs an L1 table larger than QEMU accepts (2^31 / 8 entries).
    ImageTooLarge {
        /// The header's size.
        size: u64,
    },
    /// Backing file name longer than 1023 bytes.
    BackingFileNameTooLong {
        /// The header's backing_file_size.
        len: u32,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeaderError::TooShort { len } => write!(f, "qcow header needs {HEADER_LEN} bytes, file has {len}"),
            HeaderError::BadMagic { magic } => write!(f, "not a qcow image (magic {magic:02x?})"),
            HeaderError::UnsupportedVersion { version } => write!(f, "qcow version {version} is not qcow v1"),
            HeaderError::SizeTooSmall { size } => write!(f, "image size {size} is too small (at least 2 bytes)"),
            HeaderError::ClusterBitsOutOfRange { cluster_bits } => {
                write!(f, "cluster_bits {cluster_bits} out of range (9..=16: 512 B to 64 KiB clusters)")
            }
            HeaderError::L2BitsOutOfRange { l2_bits } => {
                write!(f, "l2_bits {l2_bits} out of range (6..=13: L2 tables of 512 B to 64 KiB)")
            }
            HeaderError::UnknownCryptMethod { crypt_method } => {
                write!(f, "unknown qcow crypt_method {crypt_method} (0 none, 1 AES)")
            }
            HeaderError::ImageTooLarge { size } => write!(f, "image size {size} needs an L1 table that is too large"),
            HeaderError::BackingFileNameTooLong { len } => {
                write!(f, "backing file name of {len} bytes is longer than {MAX_BACKING_FILE_NAME}")
            }
        }
    }
}

impl core::error::Error for HeaderError {}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be64(b: &[u8], off: usize) -> u64 {
    (u64::from(be32(b, off)) << 32) | u64::from(be32(b, off + 4))
}

impl QcowHeader {
    /// Parses and validates the header at the start of `bytes` (at least 48 bytes).
    pub fn parse(bytes: &[u8]) -> Result<QcowHeader, HeaderError> {
        let b = bytes.get(..HEADER_LEN).ok_or(HeaderError::TooShort { len: bytes.len() })?;
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(HeaderError::BadMagic { magic });
        }
        let version = be32(b, 4);
        if version != 1 {
            return Err(HeaderError::UnsupportedVersion { version });
        }
        let backing_file_offset = be64(b, 8);
        let backing_file_size = be32(b, 16);
        let mtime = be32(b, 20);
        let size = be64(b, 24);
        let cluster_bits = b[32];
        let l2_bits = b[33];
        let crypt_method = be32(b, 36);
        let l1_table_offset = be64(b, 40);

        if size <= 1 {
            return Err(HeaderError::SizeTooSmall { size });
        }
        if !(9..=16).contains(&cluster_bits) {
            return Err(HeaderError::ClusterBitsOutOfRange { cluster_bits });
        }
        if !(6..=13).contains(&l2_bits) {
            return Err(HeaderError::L2BitsOutOfRange { l2_bits });
        }
        let crypt_method = match crypt_method {
            0 => CryptMethod::None,
            1 => CryptMethod::Aes,
            other => return Err(HeaderError::UnknownCryptMethod { crypt_method: other }),
        };
        let shift = u32::from(cluster_bits) + u32::from(l2_bits);
        let l1_size = size.checked_add((1u64 << shift) - 1).ok_or(HeaderError::ImageTooLarge { size })? >> shift;
        if l1_size > (i32::MAX as u64) / 8 {
            return Err(HeaderError::ImageTooLarge { size });
        }
        if backing_file_offset != 0 && backing_file_size as usize > MAX_BACKING_FILE_NAME {
            return Err(HeaderError::BackingFileNameTooLong { len: backing_file_size });
        }
        Ok(QcowHeader {
            backing_file_offset,
            backing_file_size,
            mtime,
            size,
            cluster_bits,
            l2_bits,
            crypt_method,
            l1_table_offset,
            l1_size,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> usize {
        1 << self.cluster_bits
    }

    /// Entries of one L2 table.
    pub fn l2_entries(&self) -> usize {
        1 << self.l2_bits
    }

    /// Bytes of one L2 table.
    pub fn l2_table_len(&self) -> usize {
        self.l2_entries() * 8
    }

    /// The guest-visible size: QEMU counts whole 512-byte sectors of `size`.
    pub fn virtual_size(&self) -> u64 {
        self.size & !511
    }

    /// Bytes of the L1 table.
    pub fn l1_table_len(&self) -> u64 {
        self.l1_size * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&1u32.to_be_bytes());
        b[24..32].copy_from_slice(&(4u64 << 20).to_be_bytes());
        b[32] = 12;
        b[33] = 9;
        b[40..48].copy_from_slice(&48u64.to_be_bytes());
        b
    }

    #[test]
    fn qemu_default_header_parses() {
        let h = QcowHeader::parse(&header()).unwrap();
        assert_eq!(h.cluster_size(), 4096);
        assert_eq!(h.l2_entries(), 512);
        assert_eq!(h.l1_size, 2); // 4 MiB / (4 KiB * 512)
        assert_eq!(h.crypt_method, CryptMethod::None);
    }

    #[test]
    fn version_2_is_not_qcow_v1() {
        let mut b = header();
        b[7] = 2;
        assert_eq!(QcowHeader::parse(&b), Err(HeaderError::UnsupportedVersion { version: 2 }));
    }

    #[test]
    fn cluster_bits_must_be_9_to_16() {
        for bad in [8u8, 17, 255] {
            let mut b = header();
            b[32] = bad;
            assert_eq!(QcowHeader::parse(&b), Err(HeaderError::ClusterBitsOutOfRange { cluster_bits: bad }));
        }
    }

    #[test]
    fn l2_bits_must_be_6_to_13() {
        for bad in [5u8, 14] {
            let mut b = header();
            b[33] = bad;
            assert_eq!(QcowHeader::parse(&b), Err(HeaderError::L2BitsOutOfRange { l2_bits: bad }));
        }
    }

    #[test]
    fn crypt_method_above_aes_is_refused() {
        let mut b = header();
        b[39] = 2;
        assert_eq!(QcowHeader::parse(&b), Err(HeaderError::UnknownCryptMethod { crypt_method: 2 }));
    }

    #[test]
    fn size_near_u64_max_is_too_large_not_an_overflow() {
        let mut b = header();
        b[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(QcowHeader::parse(&b), Err(HeaderError::ImageTooLarge { size: u64::MAX }));
        b[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes());
        assert_eq!(QcowHeader::parse(&b), Err(HeaderError::ImageTooLarge { size: 1 << 62 }));
    }

    #[test]
    fn size_below_two_bytes_is_refused() {
        let mut b = header();
        b[24..32].copy_from_slice(&1u64.to_be_bytes());
        assert_eq!(QcowHeader::parse(&b), Err(HeaderError::SizeTooSmall { size: 1 }));
    }

    #[test]
    fn backing_file_name_over_1023_bytes_is_refused() {
        let mut b = header();
        b[8..16].copy_from_slice(&48u64.to_be_bytes());
        b[16..20].copy_from_slice(&1024u32.to_be_bytes());
        assert_eq!(QcowHeader::parse(&b), Err(HeaderError::BackingFileNameTooLong { len: 1024 }));
    }

    #[test]
    fn short_input_and_bad_magic_are_typed() {
        assert_eq!(QcowHeader::parse(&header()[..47]), Err(HeaderError::TooShort { len: 47 }));
        let mut b = header();
        b[0] = b'X';
        assert_eq!(QcowHeader::parse(&b), Err(HeaderError::BadMagic { magic: *b"XFI\xfb" }));
    }
}
