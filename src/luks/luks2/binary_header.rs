//! The 4096-byte LUKS2 binary header that starts each of the two metadata copies.
//!
//! Pure parsing: [`BinaryHeader::parse`] checks what the 4096 bytes alone can tell (magic,
//! version, header size, terminated strings, a known checksum algorithm). The checksum, which
//! also covers the JSON area behind the header, is verified by `header.rs` while it streams
//! that area from the device, with the help of [`Checksum`].
//!
//! ```
//! use qluks::luks::luks2::binary_header::{BinaryHeader, ChecksumAlg, HeaderCopy, BINARY_HEADER_SIZE};
//! use qluks::luks::luks2::Luks2CopyError;
//!
//! # fn main() -> Result<(), Luks2CopyError> {
//! # let disk = doc_support::luks2_volume(b"secret");
//! // `disk` starts with a LUKS2 header (cryptsetup's 16 KiB metadata copies).
//! let first: &[u8; BINARY_HEADER_SIZE] = disk[..4096].try_into().expect("4096 bytes");
//! let primary = BinaryHeader::parse(first)?;
//! assert_eq!((primary.copy, primary.hdr_size, primary.hdr_offset), (HeaderCopy::Primary, 16384, 0));
//! assert_eq!(primary.json_area_size(), 16384 - 4096);
//! assert_eq!(primary.checksum_alg, ChecksumAlg::Sha256);
//!
//! // The secondary copy sits at `hdr_size`, with its own magic and the same seqid.
//! let at = primary.hdr_size as usize;
//! let secondary = BinaryHeader::parse(disk[at..at + 4096].try_into().expect("4096 bytes"))?;
//! assert_eq!((secondary.copy, secondary.seqid), (HeaderCopy::Secondary, primary.seqid));
//! assert_eq!(secondary.uuid_text(), primary.uuid_text());
//! # Ok(())
//! # }
//! # mod doc_support {
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
//! #     /// A LUKS2 volume (PBKDF2 keyslot, 16 KiB metadata copies, data at 1 MiB).
//! #     #[allow(dead_code)]
//! #     pub fn luks2_volume(pass: &[u8]) -> Vec<u8> {
//! #         use qluks::luks::luks2::create::{format, CreateKdf, CreateParams};
//! #         let kdf = CreateKdf::Pbkdf2 { hash: qluks::crypto::HashAlg::Sha256, iterations: 1000 };
//! #         let params = CreateParams { kdf, digest_iterations: 1000, data_offset: 1 << 20, ..Default::default() };
//! #         let mut disk = vec![0u8; (1 << 20) + 8192];
//! #         format(&mut qluks::io::MemIo::new(&mut disk), &params, pass, &mut [], &mut Rng(9)).unwrap();
//! #         disk
//! #     }
//! # }
//! ```

use core::fmt;

use sha2::Digest as _;

/// Size of the binary header.
pub const BINARY_HEADER_SIZE: usize = 4096;

/// Magic of the primary copy (at offset 0).
pub const MAGIC_PRIMARY: [u8; 6] = *b"LUKS\xba\xbe";
/// Magic of the secondary copy (at offset `hdr_size`).
pub const MAGIC_SECONDARY: [u8; 6] = *b"SKUL\xba\xbe";

/// Every `hdr_size` cryptsetup accepts (binary header + JSON area): 16 KiB to 4 MiB. They are
/// also the offsets where the secondary copy is searched when the primary cannot be trusted.
pub const HDR_SIZES: [u64; 9] =
    [0x4000, 0x8000, 0x1_0000, 0x2_0000, 0x4_0000, 0x8_0000, 0x10_0000, 0x20_0000, 0x40_0000];

const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_LABEL: usize = 24;
const OFF_CHECKSUM_ALG: usize = 72;
const OFF_SALT: usize = 104;
const OFF_UUID: usize = 168;
const OFF_SUBSYSTEM: usize = 208;
const OFF_HDR_OFFSET: usize = 256;
/// Where the checksum field starts; it is zeroed while the checksum is computed.
pub const OFF_CSUM: usize = 448;
/// Length of the checksum field.
pub const CSUM_LEN: usize = 64;

/// Which of the two copies a header claims to be (from its magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCopy {
    /// `LUKS\xba\xbe`, at offset 0.
    Primary,
    /// `SKUL\xba\xbe`, at offset `hdr_size`.
    Secondary,
}

/// The checksum algorithm named in `checksum_alg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlg {
    /// `sha256`, cryptsetup's choice.
    Sha256,
    /// `sha512`.
    Sha512,
}

impl ChecksumAlg {
    /// Looks up a `checksum_alg` name.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"sha256" => Some(ChecksumAlg::Sha256),
            b"sha512" => Some(ChecksumAlg::Sha512),
            _ => None,
        }
    }

    /// The name as written in the header.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlg::Sha256 => "sha256",
            ChecksumAlg::Sha512 => "sha512",
        }
    }

    /// Length of the digest in bytes (the rest of the 64-byte field is zero).
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlg::Sha256 => 32,
            ChecksumAlg::Sha512 => 64,
        }
    }
}

/// A checksum being computed over a header copy, fed in pieces.
#[derive(Clone)]
pub enum Checksum {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Checksum {
    /// A fresh state for `alg`.
    pub fn new(alg: ChecksumAlg) -> Self {
        match alg {
            ChecksumAlg::Sha256 => Checksum::Sha256(sha2::Sha256::new()),
            ChecksumAlg::Sha512 => Checksum::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Checksum::Sha256(h) => h.update(bytes),
            Checksum::Sha512(h) => h.update(bytes),
        }
    }

    /// The checksum as stored in the `csum` field (zero-padded to 64 bytes).
    pub fn finish(self) -> [u8; CSUM_LEN] {
        let mut out = [0u8; CSUM_LEN];
        match self {
            Checksum::Sha256(h) => out[..32].copy_from_slice(&h.finalize()),
            Checksum::Sha512(h) => out.copy_from_slice(&h.finalize()),
        }
        out
    }
}

/// Why one header copy cannot be used. When both copies fail, the caller gets both reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Luks2CopyError {
    /// The device ends before the copy does.
    Truncated {
        /// Bytes the copy needs from its start.
        needed: u64,
        /// Device size.
        device_size: u64,
    },
    /// No LUKS2 magic where this copy must be (for the secondary: at none of the possible
    /// offsets).
    BadMagic,
    /// The magic says LUKS, the version is not 2 (a LUKS1 header has version 1).
    UnsupportedVersion {
        /// Version found.
        version: u16,
    },
    /// `hdr_size` is not one of 16 KiB, 32 KiB, ... 4 MiB.
    BadHeaderSize {
        /// Value found.
        hdr_size: u64,
    },
    /// `hdr_offset` does not match where the copy was found.
    OffsetMismatch {
        /// Where the copy is.
        found_at: u64,
        /// What its `hdr_offset` says.
        hdr_offset: u64,
    },
    /// The secondary copy disagrees with the primary on `hdr_size`.
    SizeMismatch {
        /// The primary's `hdr_size`.
        primary: u64,
        /// The secondary's `hdr_size`.
        secondary: u64,
    },
    /// A string field fills its whole width with no terminating NUL.
    NotTerminated {
        /// The field.
        field: &'static str,
    },
    /// `checksum_alg` names an algorithm qluks does not implement.
    UnsupportedChecksum {
        /// The name (its first 16 bytes, NUL-padded).
        name: [u8; 16],
    },
    /// The stored checksum does not match the header and JSON area.
    ChecksumMismatch,
    /// The JSON area has no terminating NUL.
    JsonNotTerminated,
    /// The checksum is right but the JSON metadata is refused.
    Metadata(super::metadata::MetadataError),
}

impl fmt::Display for Luks2CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Luks2CopyError::Truncated { needed, device_size } => {
                write!(f, "needs {needed} bytes but the device has {device_size}")
            }
            Luks2CopyError::BadMagic => f.write_str("no LUKS2 magic"),
            Luks2CopyError::UnsupportedVersion { version } => write!(f, "LUKS version {version}, expected 2"),
            Luks2CopyError::BadHeaderSize { hdr_size } => {
                write!(f, "hdr_size {hdr_size} is not a power of two from 16 KiB to 4 MiB")
            }
            Luks2CopyError::OffsetMismatch { found_at, hdr_offset } => {
                write!(f, "found at {found_at:#x} but hdr_offset says {hdr_offset:#x}")
            }
            Luks2CopyError::SizeMismatch { primary, secondary } => {
                write!(f, "hdr_size {secondary} differs from the primary copy's {primary}")
            }
            Luks2CopyError::NotTerminated { field } => write!(f, "field {field} is not NUL-terminated"),
            Luks2CopyError::UnsupportedChecksum { name } => {
                write!(f, "unsupported checksum_alg \"{}\"", super::text::Text(name))
            }
            Luks2CopyError::ChecksumMismatch => f.write_str("checksum mismatch"),
            Luks2CopyError::JsonNotTerminated => f.write_str("JSON area is not NUL-terminated"),
            Luks2CopyError::Metadata(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for Luks2CopyError {}

/// The fields of a binary header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryHeader {
    /// Which copy the magic names.
    pub copy: HeaderCopy,
    /// Size of binary header + JSON area (the offset of the secondary copy).
    pub hdr_size: u64,
    /// Sequence id, incremented on every metadata update; the higher valid copy wins.
    pub seqid: u64,
    /// Label (NUL-padded).
    pub label: [u8; 48],
    /// Checksum algorithm.
    pub checksum_alg: ChecksumAlg,
    /// Salt that makes the checksum unique per copy.
    pub salt: [u8; 64],
    /// UUID (NUL-padded text).
    pub uuid: [u8; 40],
    /// Subsystem (NUL-padded).
    pub subsystem: [u8; 48],
    /// Where this copy says it is.
    pub hdr_offset: u64,
    /// Stored checksum (zero-padded).
    pub csum: [u8; CSUM_LEN],
}

impl BinaryHeader {
    /// All-zero fields: storage for [`Luks2Header::EMPTY`](super::Luks2Header::EMPTY).
    pub const EMPTY: BinaryHeader = BinaryHeader {
        copy: HeaderCopy::Primary,
        hdr_size: 0,
        seqid: 0,
        label: [0; 48],
        checksum_alg: ChecksumAlg::Sha256,
        salt: [0; 64],
        uuid: [0; 40],
        subsystem: [0; 48],
        hdr_offset: 0,
        csum: [0; CSUM_LEN],
    };
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// The text of a NUL-padded field, up to its first NUL.
pub fn padded_text(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

impl BinaryHeader {
    /// Parses and checks a binary header.
    pub fn parse(bytes: &[u8; BINARY_HEADER_SIZE]) -> Result<Self, Luks2CopyError> {
        let copy = match &bytes[..6] {
            m if m == MAGIC_PRIMARY => HeaderCopy::Primary,
            m if m == MAGIC_SECONDARY => HeaderCopy::Secondary,
            _ => return Err(Luks2CopyError::BadMagic),
        };
        let version = u16::from_be_bytes([bytes[OFF_VERSION], bytes[OFF_VERSION + 1]]);
        if version != 2 {
            return Err(Luks2CopyError::UnsupportedVersion { version });
        }
        let hdr_size = be_u64(bytes, OFF_HDR_SIZE);
        if !HDR_SIZES.contains(&hdr_size) {
            return Err(Luks2CopyError::BadHeaderSize { hdr_size });
        }
        let label: [u8; 48] = field(bytes, OFF_LABEL);
        let checksum_name: [u8; 32] = field(bytes, OFF_CHECKSUM_ALG);
        let uuid: [u8; 40] = field(bytes, OFF_UUID);
        let subsystem: [u8; 48] = field(bytes, OFF_SUBSYSTEM);
        for (name, text) in [
            ("label", &label[..]),
            ("checksum_alg", &checksum_name[..]),
            ("uuid", &uuid[..]),
            ("subsystem", &subsystem[..]),
        ] {
            if !text.contains(&0) {
                return Err(Luks2CopyError::NotTerminated { field: name });
            }
        }
        let checksum_alg = ChecksumAlg::from_name(padded_text(&checksum_name))
            .ok_or(Luks2CopyError::UnsupportedChecksum { name: field(&checksum_name, 0) })?;
        Ok(BinaryHeader {
            copy,
            hdr_size,
            seqid: be_u64(bytes, OFF_SEQID),
            label,
            checksum_alg,
            salt: field(bytes, OFF_SALT),
            uuid,
            subsystem,
            hdr_offset: be_u64(bytes, OFF_HDR_OFFSET),
            csum: field(bytes, OFF_CSUM),
        })
    }

    /// Size of the JSON area behind this binary header.
    pub fn json_area_size(&self) -> u64 {
        self.hdr_size - BINARY_HEADER_SIZE as u64
    }

    /// The label text (up to its NUL).
    pub fn label_text(&self) -> &[u8] {
        padded_text(&self.label)
    }

    /// The UUID text (up to its NUL).
    pub fn uuid_text(&self) -> &[u8] {
        padded_text(&self.uuid)
    }

    /// The subsystem text (up to its NUL).
    pub fn subsystem_text(&self) -> &[u8] {
        padded_text(&self.subsystem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn sample() -> [u8; BINARY_HEADER_SIZE] {
        let mut b = [0u8; BINARY_HEADER_SIZE];
        b[..6].copy_from_slice(&MAGIC_PRIMARY);
        b[OFF_VERSION + 1] = 2;
        b[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&0x4000u64.to_be_bytes());
        b[OFF_SEQID..OFF_SEQID + 8].copy_from_slice(&7u64.to_be_bytes());
        b[OFF_CHECKSUM_ALG..OFF_CHECKSUM_ALG + 6].copy_from_slice(b"sha256");
        b[OFF_UUID..OFF_UUID + 4].copy_from_slice(b"abcd");
        b
    }

    #[test]
    fn fields_are_big_endian_at_their_offsets() {
        let h = BinaryHeader::parse(&sample()).unwrap();
        assert_eq!(h.copy, HeaderCopy::Primary);
        assert_eq!(h.hdr_size, 0x4000);
        assert_eq!(h.seqid, 7);
        assert_eq!(h.checksum_alg, ChecksumAlg::Sha256);
        assert_eq!(h.uuid_text(), b"abcd");
        assert_eq!(h.json_area_size(), 0x3000);
    }

    #[test]
    fn secondary_magic_is_recognised() {
        let mut b = sample();
        b[..6].copy_from_slice(&MAGIC_SECONDARY);
        assert_eq!(BinaryHeader::parse(&b).unwrap().copy, HeaderCopy::Secondary);
    }

    #[test]
    fn magic_must_match() {
        let mut b = sample();
        b[0] = b'X';
        assert_eq!(BinaryHeader::parse(&b), Err(Luks2CopyError::BadMagic));
    }

    #[test]
    fn version_must_be_2() {
        let mut b = sample();
        b[OFF_VERSION + 1] = 1;
        assert_eq!(BinaryHeader::parse(&b), Err(Luks2CopyError::UnsupportedVersion { version: 1 }));
    }

    #[test]
    fn hdr_size_must_be_a_known_size() {
        for bad in [0u64, 4096, 0x4001, 0x80_0000, u64::MAX] {
            let mut b = sample();
            b[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(BinaryHeader::parse(&b), Err(Luks2CopyError::BadHeaderSize { hdr_size: bad }));
        }
    }

    #[test]
    fn string_fields_must_be_terminated() {
        let mut b = sample();
        b[OFF_LABEL..OFF_LABEL + 48].fill(b'L');
        assert_eq!(BinaryHeader::parse(&b), Err(Luks2CopyError::NotTerminated { field: "label" }));
        let mut b = sample();
        b[OFF_UUID..OFF_UUID + 40].fill(b'u');
        assert_eq!(BinaryHeader::parse(&b), Err(Luks2CopyError::NotTerminated { field: "uuid" }));
    }

    #[test]
    fn unknown_checksum_alg_is_named() {
        let mut b = sample();
        b[OFF_CHECKSUM_ALG..OFF_CHECKSUM_ALG + 6].copy_from_slice(b"md5\0\0\0");
        let err = BinaryHeader::parse(&b).unwrap_err();
        assert!(matches!(err, Luks2CopyError::UnsupportedChecksum { name } if name.starts_with(b"md5\0")));
        assert_eq!(err.to_string(), "unsupported checksum_alg \"md5\"");
    }
}
