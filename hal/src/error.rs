use core::fmt;

/// Errors of the crypto core: all are caller mistakes (bad lengths, unusable backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An AES key must be 16, 24 or 32 bytes (XTS: 32, 48 or 64).
    InvalidKeyLength {
        /// The length given.
        len: usize,
    },
    /// Unit (sector) size must be a power of two in 512..=4096 (CBC: a multiple of 16).
    InvalidUnitSize {
        /// The size given.
        size: usize,
    },
    /// The buffer is not a whole number of units / blocks.
    LengthNotMultiple {
        /// Buffer length.
        len: usize,
        /// The unit it must be a multiple of.
        unit: usize,
    },
    /// XTS needs at least one full block per data unit.
    TooShort {
        /// Buffer length.
        len: usize,
    },
    /// The requested backend cannot run on this CPU.
    BackendUnavailable(crate::Backend),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidKeyLength { len } => write!(f, "invalid key length {len} bytes"),
            Error::InvalidUnitSize { size } => write!(f, "invalid data unit size {size}"),
            Error::LengthNotMultiple { len, unit } => {
                write!(f, "buffer length {len} is not a multiple of {unit}")
            }
            Error::TooShort { len } => write!(f, "data unit of {len} bytes is shorter than one AES block"),
            Error::BackendUnavailable(b) => write!(f, "backend {} is not available on this CPU", b.name()),
        }
    }
}

impl core::error::Error for Error {}
