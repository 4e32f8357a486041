//! Errors of the crypto layer.

use super::Name;
use core::fmt;

/// What went wrong building or using a cipher, hash or KDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A cipher qluks recognises or not, but does not implement (only AES is implemented).
    UnsupportedCipher {
        /// The cipher name as given.
        name: Name,
    },
    /// A cipher mode or IV generator qluks does not implement.
    UnsupportedMode {
        /// The mode as given (e.g. `ctr-plain64`, `cbc-essiv:sha1`).
        mode: Name,
    },
    /// A hash qluks does not implement.
    UnsupportedHash {
        /// The hash name as given.
        name: Name,
    },
    /// The key size does not fit the cipher and mode (e.g. 20 bytes for AES-XTS).
    KeyLength {
        /// Key bytes given.
        key_bytes: usize,
    },
    /// PBKDF2 with zero iterations is undefined.
    ZeroIterations,
    /// The anti-forensic splitter needs at least one stripe.
    ZeroStripes,
    /// The random-number source failed.
    Random,
    /// A buffer length the sector cipher cannot process.
    Hal(qluks_hal::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnsupportedCipher { name } => write!(f, "cipher `{name}` is not supported (qluks implements aes)"),
            Error::UnsupportedMode { mode } => write!(
                f,
                "cipher mode `{mode}` is not supported (qluks implements xts-plain64, xts-plain, \
                 cbc-essiv:sha256, cbc-plain64, cbc-plain, ecb)"
            ),
            Error::UnsupportedHash { name } => write!(
                f,
                "hash `{name}` is not supported (qluks implements sha1, sha224, sha256, sha384, sha512, ripemd160)"
            ),
            Error::KeyLength { key_bytes } => write!(f, "a {key_bytes}-byte key does not fit the cipher and mode"),
            Error::ZeroIterations => write!(f, "PBKDF2 iteration count is 0"),
            Error::ZeroStripes => write!(f, "anti-forensic stripe count is 0"),
            Error::Random => write!(f, "the random-number source failed"),
            Error::Hal(e) => write!(f, "sector cipher: {e}"),
        }
    }
}

impl core::error::Error for Error {}

impl From<qluks_hal::Error> for Error {
    fn from(e: qluks_hal::Error) -> Self {
        Error::Hal(e)
    }
}
