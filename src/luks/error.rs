//! Errors of the LUKS layer: malformed headers, refused ciphers, wrong passphrases, and the
//! device's own errors.

use super::limits::KdfCost;
use crate::crypto::{self, Name};
use core::fmt;

/// What is wrong with a LUKS volume or request (independent of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The header is shorter than its fixed size.
    TooShort {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The first six bytes are not `LUKS\xba\xbe`.
    BadMagic,
    /// A header version this code does not read.
    UnsupportedVersion {
        /// The version field.
        version: u16,
    },
    /// A string field has no NUL terminator.
    StringNotTerminated {
        /// The field's name.
        field: &'static str,
    },
    /// A cipher qluks does not implement (named as in the header).
    UnsupportedCipher {
        /// The cipher name.
        name: Name,
    },
    /// A cipher mode or IV generator qluks does not implement.
    UnsupportedMode {
        /// The mode.
        mode: Name,
    },
    /// A hash qluks does not implement.
    UnsupportedHash {
        /// The hash name.
        name: Name,
    },
    /// `key_bytes` does not fit the cipher and mode.
    KeyBytes {
        /// The header's key size.
        key_bytes: u32,
    },
    /// The master-key digest iteration count is 0 or absurd.
    DigestIterations {
        /// The value.
        iterations: u32,
    },
    /// An active keyslot's iteration count is 0 or absurd.
    KeyslotIterations {
        /// Keyslot index.
        keyslot: usize,
        /// The value.
        iterations: u32,
    },
    /// A keyslot's `active` field is neither enabled (0x00AC71F3) nor disabled (0x0000DEAD).
    KeyslotState {
        /// Keyslot index.
        keyslot: usize,
        /// The value.
        active: u32,
    },
    /// A keyslot's stripe count is not 4000.
    KeyslotStripes {
        /// Keyslot index.
        keyslot: usize,
        /// The value.
        stripes: u32,
    },
    /// A keyslot's key material overlaps the phdr.
    KeyslotOverlapsHeader {
        /// Keyslot index.
        keyslot: usize,
    },
    /// A keyslot's key material overlaps another keyslot's.
    KeyslotsOverlap {
        /// First keyslot.
        keyslot: usize,
        /// Second keyslot.
        other: usize,
    },
    /// A keyslot's key material runs into the payload.
    KeyslotOverlapsPayload {
        /// Keyslot index.
        keyslot: usize,
    },
    /// The payload starts inside the 8 header sectors.
    PayloadOffset {
        /// The value in sectors.
        payload_offset: u32,
    },
    /// Key material lies outside the area the caller allowed (qcow2's FDE area) or the device.
    KeyMaterialOutsideArea {
        /// Keyslot index.
        keyslot: usize,
        /// End of the key material relative to the area start, in bytes.
        end: u64,
        /// Area (or device) length in bytes.
        area_len: u64,
    },
    /// No keyslot accepted the passphrase.
    WrongPassphrase,
    /// No keyslot is active.
    NoActiveKeyslot,
    /// A keyslot index outside 0..8.
    KeyslotOutOfRange {
        /// The index.
        keyslot: usize,
    },
    /// The chosen keyslot is disabled.
    KeyslotInactive {
        /// The index.
        keyslot: usize,
    },
    /// The chosen keyslot is already in use.
    KeyslotActive {
        /// The index.
        keyslot: usize,
    },
    /// All eight keyslots are in use.
    NoFreeKeyslot,
    /// Removing the only active keyslot would make the volume unopenable.
    LastKeyslot {
        /// The index.
        keyslot: usize,
    },
    /// A payload access outside the volume.
    OutOfRange {
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Volume size.
        size: u64,
    },
    /// The payload starts past the end of the device.
    PayloadPastEnd {
        /// Payload offset in bytes.
        payload_offset: u64,
        /// Device size.
        device_size: u64,
    },
    /// A sector size other than 512..=4096 (power of two).
    SectorSize {
        /// The value.
        sector_size: usize,
    },
    /// The named keyslot's KDF costs more than the caller's [`KdfLimits`](super::KdfLimits)
    /// allow; nothing was derived.
    KeyslotKdfRefused {
        /// Keyslot index.
        keyslot: usize,
        /// What it asks for, and the limit.
        cost: KdfCost,
    },
    /// The master-key digest (LUKS1) or the data segment's digest (LUKS2) costs more than the
    /// caller's limits allow, so no key could be verified; nothing was derived.
    DigestKdfRefused {
        /// What it asks for, and the limit.
        cost: KdfCost,
    },
    /// No keyslot within the caller's limits accepted the passphrase, and keyslot `keyslot`
    /// (the first of `refused`) was not tried for its cost: a higher limit may open the volume.
    KeyslotsRefused {
        /// The first keyslot not tried.
        keyslot: usize,
        /// What it asks for, and the limit.
        cost: KdfCost,
        /// How many keyslots were not tried.
        refused: usize,
    },
    /// A segment does not fit in the device (offset + size past its end, or overflowing).
    SegmentPastEnd {
        /// Segment offset in bytes.
        offset: u64,
        /// Segment size in bytes.
        size: u64,
        /// Device size.
        device_size: u64,
    },
    /// Argon2 needs more memory than the caller supplied (LUKS2).
    KdfMemoryTooSmall {
        /// Bytes needed.
        needed: u64,
    },
    /// Another crypto-layer failure (random source, buffer shapes).
    Crypto(crypto::Error),
    /// A LUKS2-specific refusal (metadata, header copies, keyslot bindings).
    Luks2(crate::luks::luks2::Error),
}

impl From<crypto::Error> for Error {
    fn from(e: crypto::Error) -> Self {
        match e {
            crypto::Error::UnsupportedCipher { name } => Error::UnsupportedCipher { name },
            crypto::Error::UnsupportedMode { mode } => Error::UnsupportedMode { mode },
            crypto::Error::UnsupportedHash { name } => Error::UnsupportedHash { name },
            e => Error::Crypto(e),
        }
    }
}

impl From<crate::luks::luks2::Error> for Error {
    fn from(e: crate::luks::luks2::Error) -> Self {
        Error::Luks2(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            TooShort { len, needed } => write!(f, "LUKS header truncated: {len} bytes, {needed} needed"),
            BadMagic => write!(f, "not a LUKS volume (bad magic)"),
            UnsupportedVersion { version } => write!(f, "LUKS version {version} is not supported"),
            StringNotTerminated { field } => write!(f, "LUKS header field {field} is not NUL-terminated"),
            UnsupportedCipher { name } => write!(f, "cipher `{name}` is not supported (qluks implements aes)"),
            UnsupportedMode { mode } => write!(f, "cipher mode `{mode}` is not supported"),
            UnsupportedHash { name } => write!(f, "hash `{name}` is not supported"),
            KeyBytes { key_bytes } => write!(f, "key size {key_bytes} bytes does not fit the cipher"),
            DigestIterations { iterations } => write!(f, "master key digest iteration count {iterations} is invalid"),
            KeyslotIterations { keyslot, iterations } => {
                write!(f, "keyslot {keyslot}: iteration count {iterations} is invalid")
            }
            KeyslotState { keyslot, active } => write!(f, "keyslot {keyslot}: invalid state {active:#010x}"),
            KeyslotStripes { keyslot, stripes } => write!(f, "keyslot {keyslot}: {stripes} stripes (4000 expected)"),
            KeyslotOverlapsHeader { keyslot } => write!(f, "keyslot {keyslot}: key material overlaps the header"),
            KeyslotsOverlap { keyslot, other } => write!(f, "keyslots {keyslot} and {other}: key material overlaps"),
            KeyslotOverlapsPayload { keyslot } => write!(f, "keyslot {keyslot}: key material overlaps the payload"),
            PayloadOffset { payload_offset } => {
                write!(f, "payload offset {payload_offset} sectors lies inside the header")
            }
            KeyMaterialOutsideArea { keyslot, end, area_len } => write!(
                f,
                "keyslot {keyslot}: key material ends at {end:#x}, outside the LUKS area ({area_len:#x} bytes)"
            ),
            WrongPassphrase => write!(f, "no keyslot matches the passphrase"),
            NoActiveKeyslot => write!(f, "no keyslot is active"),
            KeyslotOutOfRange { keyslot } => write!(f, "keyslot {keyslot} does not exist (0..7)"),
            KeyslotInactive { keyslot } => write!(f, "keyslot {keyslot} is not active"),
            KeyslotActive { keyslot } => write!(f, "keyslot {keyslot} is already in use"),
            NoFreeKeyslot => write!(f, "all keyslots are in use"),
            LastKeyslot { keyslot } => {
                write!(f, "keyslot {keyslot} is the only active one; removing it would lose the data")
            }
            OutOfRange { offset, len, size } => {
                write!(f, "access of {len} bytes at {offset:#x} is outside the volume (size {size:#x})")
            }
            PayloadPastEnd { payload_offset, device_size } => {
                write!(f, "payload offset {payload_offset:#x} is past the end of the device ({device_size:#x})")
            }
            SectorSize { sector_size } => write!(f, "sector size {sector_size} is not supported"),
            KeyslotKdfRefused { keyslot, cost } => write!(f, "keyslot {keyslot} refused: it asks for {cost}"),
            DigestKdfRefused { cost } => write!(f, "key digest refused: it asks for {cost}"),
            KeyslotsRefused { keyslot, cost, refused } => write!(
                f,
                "no keyslot within the KDF limits matches the passphrase; {refused} keyslot(s) not tried, \
                 keyslot {keyslot} asks for {cost}"
            ),
            SegmentPastEnd { offset, size, device_size } => write!(
                f,
                "segment at {offset:#x} of {size:#x} bytes does not fit in the device ({device_size:#x} bytes)"
            ),
            KdfMemoryTooSmall { needed } => write!(f, "the key derivation needs {needed} bytes of memory"),
            Crypto(e) => write!(f, "{e}"),
            Luks2(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for Error {}

/// A LUKS error or the device's own error.
#[derive(Debug)]
pub enum IoError<E> {
    /// The device failed.
    Device(E),
    /// The volume or request is invalid.
    Luks(Error),
}

impl<E> From<Error> for IoError<E> {
    fn from(e: Error) -> Self {
        IoError::Luks(e)
    }
}

impl<E> From<crypto::Error> for IoError<E> {
    fn from(e: crypto::Error) -> Self {
        IoError::Luks(e.into())
    }
}

impl<E> IoError<E> {
    /// The LUKS error, if this is one.
    pub fn luks(&self) -> Option<&Error> {
        match self {
            IoError::Luks(e) => Some(e),
            IoError::Device(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for IoError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Device(e) => write!(f, "device: {e}"),
            IoError::Luks(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for IoError<E> {}
