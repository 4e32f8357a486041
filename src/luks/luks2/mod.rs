//! LUKS2: reading the metadata cryptsetup writes, unlocking its keyslots, and the data
//! segment's geometry.
//!
//! Layering, from the bytes up:
//! - [`binary_header`]: the 4096-byte binary header of each metadata copy;
//! - [`json`]: a heap-free, depth-bounded JSON pull parser;
//! - [`metadata`]: keyslots, segments, digests and config extracted from the JSON and
//!   cross-checked;
//! - [`header`]: both copies read from a [`BlockIo`](crate::io::BlockIo), checksums streamed,
//!   the valid copy with the highest seqid chosen;
//! - [`kdf`] and [`keyslot`]: passphrase to volume key;
//! - [`open`]: the data segment keyed, as a [`LuksVolume`](crate::luks::LuksVolume);
//! - [`create`]: formatting a new volume (cryptsetup's layout).
//!
//! Nothing here allocates: the JSON text goes into a caller-supplied buffer, Argon2 memory
//! comes from the caller.
//!
//! # Example: the layers, step by step
//!
//! [`LuksVolume::open`](crate::luks::LuksVolume::open) does all of this in one call; the
//! steps are for callers that want to choose (a detached header, a keyslot, their memory):
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::luks::luks2::{self, Luks2Header, DEFAULT_JSON_BUFFER};
//! use qluks::luks::{LuksIoError, LuksVolume};
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut disk = doc_support::luks2_volume(b"secret");
//! // `disk` holds a LUKS2 volume (cryptsetup's layout, a PBKDF2 keyslot).
//! let mut io = MemIo::new(&mut disk);
//! let mut header = Luks2Header::EMPTY; // caller storage: about 9.4 KiB
//! let mut json = [0u8; DEFAULT_JSON_BUFFER];
//! header.read_into(&mut io, &mut json)?; // both copies checked, the newest valid one kept
//! // PBKDF2 needs no KDF memory (Argon2: `header.kdf_memory_within` bytes).
//! let (keyslot, key) = luks2::unlock(&mut io, &header.metadata, b"secret", None, &mut [])?;
//! assert_eq!(keyslot, 0);
//! let segment = luks2::data_segment(&header.metadata, &key)?;
//! assert_eq!(segment.offset, 1 << 20);
//!
//! let mut volume = LuksVolume::new(io, segment)?; // or over another device (detached)
//! volume.write_at(0, b"hello")?;
//! let mut back = [0u8; 5];
//! volume.read_at(0, &mut back)?;
//! assert_eq!(&back, b"hello");
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

pub mod binary_header;
pub mod create;
pub mod header;
pub mod json;
pub mod kdf;
pub mod keyslot;
pub mod metadata;
pub mod open;
pub mod text;

use core::fmt;

pub use binary_header::{BinaryHeader, Luks2CopyError};
pub use header::{Luks2Header, DEFAULT_JSON_BUFFER};
pub use kdf::ARGON2_BLOCK_SIZE;
pub use keyslot::{unlock, unlock_with_limits, verify_key};
pub use metadata::{Kdf, Luks2Digest, Luks2Keyslot, Luks2Segment, Metadata, MetadataError};
pub use open::data_segment;

/// Why a LUKS2 volume cannot be used (the format's side; device errors are separate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Luks2Error {
    /// Neither metadata copy is usable; each one's reason.
    NoValidHeader {
        /// The primary copy's fault.
        primary: Luks2CopyError,
        /// The secondary copy's fault.
        secondary: Luks2CopyError,
    },
    /// The JSON text does not fit in the buffer the caller supplied.
    JsonTooLarge {
        /// Length of the JSON text.
        len: usize,
        /// Size of the buffer.
        capacity: usize,
    },
    /// The volume lists a mandatory requirement qluks does not implement (an unfinished
    /// reencryption, ...).
    UnmetRequirement {
        /// The requirement.
        name: text::Name<32>,
    },
    /// No single data segment (none, or several during a reencryption).
    NoDataSegment,
    /// No digest covers the data segment, so no key can be verified.
    NoDigest {
        /// The segment.
        segment: u8,
    },
    /// The chosen keyslot does not hold the data segment's key.
    KeyslotNotBound {
        /// The keyslot.
        keyslot: u8,
        /// The segment.
        segment: u8,
    },
    /// A digest's stored length does not match its hash.
    DigestLength {
        /// Stored length.
        len: usize,
        /// The hash's output length.
        hash_len: usize,
    },
    /// The Argon2 implementation refused the keyslot's parameters.
    Argon2Failed,
    /// The data segment is not encrypted (`linear`).
    SegmentNotEncrypted {
        /// The segment.
        segment: u8,
    },
}

impl fmt::Display for Luks2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Luks2Error::NoValidHeader { primary, secondary } => {
                write!(f, "no valid LUKS2 header: primary copy: {primary}; secondary copy: {secondary}")
            }
            Luks2Error::JsonTooLarge { len, capacity } => {
                write!(f, "LUKS2 JSON metadata of {len} bytes does not fit the {capacity}-byte buffer")
            }
            Luks2Error::UnmetRequirement { name } => {
                write!(f, "LUKS2 volume requires \"{name}\", which qluks does not implement")
            }
            Luks2Error::NoDataSegment => f.write_str("LUKS2 volume has no single data segment"),
            Luks2Error::NoDigest { segment } => write!(f, "no LUKS2 digest covers segment {segment}"),
            Luks2Error::KeyslotNotBound { keyslot, segment } => {
                write!(f, "LUKS2 keyslot {keyslot} does not hold the key of segment {segment}")
            }
            Luks2Error::DigestLength { len, hash_len } => {
                write!(f, "LUKS2 digest of {len} bytes does not match its hash ({hash_len} bytes)")
            }
            Luks2Error::Argon2Failed => f.write_str("Argon2 refused the keyslot's parameters"),
            Luks2Error::SegmentNotEncrypted { segment } => write!(f, "LUKS2 segment {segment} is not encrypted"),
        }
    }
}

impl core::error::Error for Luks2Error {}

impl<E> From<Luks2Error> for crate::luks::LuksIoError<E> {
    fn from(e: Luks2Error) -> Self {
        crate::luks::LuksIoError::Luks(e.into())
    }
}
