//! LUKS2: reading the metadata cryptsetup writes, unlocking its keyslots, and the data
//! segment's geometry.
//!
//! Layering, from the bytes up:
//! - [`binary_header`]: the 4096-byte binary header of each metadata copy;
//! - [`json`]: a heap-free, depth-bounded JSON pull parser;
//! - [`metadata`]: keyslots, segments, digests and config extracted from the JSON and
//!   cross-checked;
//! - [`header`]: both copies read from a [`BlockIo`](crate::io::BlockIo), checksums streamed,
//!   the valid copy with the highest seqid chosen.
//!
//! Nothing here allocates: the JSON text goes into a caller-supplied buffer, Argon2 memory
//! comes from the caller.

pub mod binary_header;
pub mod header;
pub mod json;
pub mod metadata;
pub mod text;

use core::fmt;

pub use binary_header::{BinaryHeader, HeaderError};
pub use header::{read_header, Header, DEFAULT_JSON_BUFFER};
pub use metadata::{Digest, Kdf, Keyslot, Metadata, MetadataError, Segment};

/// Why a LUKS2 volume cannot be used (the format's side; device errors are separate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Neither metadata copy is usable; each one's reason.
    NoValidHeader {
        /// The primary copy's fault.
        primary: HeaderError,
        /// The secondary copy's fault.
        secondary: HeaderError,
    },
    /// The JSON text does not fit in the buffer the caller supplied.
    JsonTooLarge {
        /// Length of the JSON text.
        len: usize,
        /// Size of the buffer.
        capacity: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoValidHeader { primary, secondary } => {
                write!(f, "no valid LUKS2 header: primary copy: {primary}; secondary copy: {secondary}")
            }
            Error::JsonTooLarge { len, capacity } => {
                write!(f, "LUKS2 JSON metadata of {len} bytes does not fit the {capacity}-byte buffer")
            }
        }
    }
}

impl core::error::Error for Error {}

/// A LUKS2 error or the device's.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The device failed.
    Io(E),
    /// The volume is refused.
    Luks2(Error),
}

impl<E: fmt::Display> fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "I/O error: {e}"),
            ReadError::Luks2(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for ReadError<E> {}
