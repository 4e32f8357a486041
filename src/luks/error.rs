//! Errors of the LUKS layer: malformed headers, refused ciphers, wrong passphrases, and the
//! device's own errors.

use super::limits::KdfCost;
use crate::crypto::{self, Name};
use core::fmt;

/// What is wrong with a LUKS volume or request (independent of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LuksError {
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
    /// No keyslot accepted the passphrase (the one wrong-passphrase error of every LUKS path;
    /// see [`LuksError::is_wrong_passphrase`]).
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
        /// Bytes needed (see [`Metadata::kdf_memory_within`](super::luks2::Metadata::kdf_memory_within)).
        needed: u64,
        /// Bytes supplied.
        supplied: u64,
    },
    /// Another crypto-layer failure (random source, buffer shapes).
    Crypto(crypto::Error),
    /// A LUKS2-specific refusal (metadata, header copies, keyslot bindings).
    Luks2(crate::luks::luks2::Luks2Error),
}

impl From<crypto::Error> for LuksError {
    fn from(e: crypto::Error) -> Self {
        match e {
            crypto::Error::UnsupportedCipher { name } => LuksError::UnsupportedCipher { name },
            crypto::Error::UnsupportedMode { mode } => LuksError::UnsupportedMode { mode },
            crypto::Error::UnsupportedHash { name } => LuksError::UnsupportedHash { name },
            e => LuksError::Crypto(e),
        }
    }
}

impl From<crate::luks::luks2::Luks2Error> for LuksError {
    fn from(e: crate::luks::luks2::Luks2Error) -> Self {
        LuksError::Luks2(e)
    }
}

/// Offset of LUKS1 keyslot `k`'s 48-byte entry in the phdr.
fn keyslot_at(k: usize) -> usize {
    208 + 48 * k
}

/// Offset of a named LUKS1 phdr string field.
fn field_at(field: &str) -> usize {
    match field {
        "cipher_name" => 8,
        "cipher_mode" => 40,
        "hash_spec" => 72,
        _ => 168,
    }
}

impl LuksError {
    /// Whether the passphrase opened no keyslot (every keyslot within the limits was tried).
    /// This is the one wrong-passphrase error: ask again, do not report corruption.
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(self, LuksError::WrongPassphrase)
    }

    /// Whether the caller's [`KdfLimits`](super::KdfLimits) refused a keyslot or digest (a
    /// higher limit may open the volume); [`LuksError::kdf_cost`] says what was asked for.
    pub fn is_kdf_refused(&self) -> bool {
        self.kdf_cost().is_some()
    }

    /// The refused KDF claim, for [`LuksError::is_kdf_refused`] errors.
    pub fn kdf_cost(&self) -> Option<KdfCost> {
        match *self {
            LuksError::KeyslotKdfRefused { cost, .. }
            | LuksError::DigestKdfRefused { cost }
            | LuksError::KeyslotsRefused { cost, .. } => Some(cost),
            _ => None,
        }
    }

    /// Whether the caller's Argon2 region was too small ([`LuksError::KdfMemoryTooSmall`]).
    pub fn is_kdf_memory_too_small(&self) -> bool {
        matches!(self, LuksError::KdfMemoryTooSmall { .. })
    }
}

impl fmt::Display for LuksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LuksError::*;
        match self {
            TooShort { len, needed } => write!(f, "LUKS header truncated: {len} bytes, {needed} needed"),
            BadMagic => write!(f, "LUKS header: bad magic at offset 0 (expected LUKS\\xba\\xbe)"),
            UnsupportedVersion { version } => {
                write!(f, "LUKS header: version {version} (offset 6) is not supported (1 or 2)")
            }
            StringNotTerminated { field } => {
                write!(f, "LUKS1 header field {field} (offset {}) is not NUL-terminated", field_at(field))
            }
            UnsupportedCipher { name } => write!(f, "LUKS: cipher `{name}` is not supported (qluks implements aes)"),
            UnsupportedMode { mode } => write!(f, "LUKS: cipher mode `{mode}` is not supported"),
            UnsupportedHash { name } => write!(f, "LUKS: hash `{name}` is not supported"),
            KeyBytes { key_bytes } => write!(f, "LUKS: key size {key_bytes} bytes does not fit the cipher"),
            DigestIterations { iterations } => {
                write!(f, "LUKS: key digest iteration count {iterations} is invalid (LUKS1 mk_digest_iter, offset 164)")
            }
            KeyslotIterations { keyslot, iterations } => write!(
                f,
                "LUKS1 keyslot {keyslot} (offset {}): iteration count {iterations} is invalid",
                keyslot_at(*keyslot)
            ),
            KeyslotState { keyslot, active } => {
                write!(f, "LUKS1 keyslot {keyslot} (offset {}): invalid state {active:#010x}", keyslot_at(*keyslot))
            }
            KeyslotStripes { keyslot, stripes } => {
                write!(f, "LUKS keyslot {keyslot}: {stripes} anti-forensic stripes (4000 expected)")
            }
            KeyslotOverlapsHeader { keyslot } => {
                write!(f, "LUKS1 keyslot {keyslot} (offset {}): key material overlaps the header", keyslot_at(*keyslot))
            }
            KeyslotsOverlap { keyslot, other } => {
                write!(f, "LUKS1 keyslots {keyslot} and {other}: key material overlaps")
            }
            KeyslotOverlapsPayload { keyslot } => write!(
                f,
                "LUKS1 keyslot {keyslot} (offset {}): key material overlaps the payload",
                keyslot_at(*keyslot)
            ),
            PayloadOffset { payload_offset } => write!(
                f,
                "LUKS1 header field payload_offset (offset 104): {payload_offset} sectors lies inside the header"
            ),
            KeyMaterialOutsideArea { keyslot, end, area_len } => write!(
                f,
                "LUKS keyslot {keyslot}: key material ends at {end:#x}, outside the LUKS area ({area_len:#x} bytes)"
            ),
            WrongPassphrase => write!(f, "no keyslot matches the passphrase (wrong passphrase)"),
            NoActiveKeyslot => write!(f, "LUKS: no keyslot is active"),
            KeyslotOutOfRange { keyslot } => write!(f, "LUKS: keyslot {keyslot} does not exist"),
            KeyslotInactive { keyslot } => write!(f, "LUKS: keyslot {keyslot} is not active"),
            KeyslotActive { keyslot } => write!(f, "LUKS: keyslot {keyslot} is already in use"),
            NoFreeKeyslot => write!(f, "LUKS: all keyslots are in use"),
            LastKeyslot { keyslot } => {
                write!(f, "LUKS: keyslot {keyslot} is the only active one; removing it would lose the data")
            }
            OutOfRange { offset, len, size } => {
                write!(f, "LUKS volume: access of {len} bytes at {offset:#x} is outside the volume (size {size:#x})")
            }
            PayloadPastEnd { payload_offset, device_size } => {
                write!(f, "LUKS: payload offset {payload_offset:#x} is past the end of the device ({device_size:#x})")
            }
            SectorSize { sector_size } => write!(f, "LUKS: sector size {sector_size} is not supported"),
            KeyslotKdfRefused { keyslot, cost } => write!(f, "LUKS keyslot {keyslot} refused: it asks for {cost}"),
            DigestKdfRefused { cost } => write!(f, "LUKS key digest refused: it asks for {cost}"),
            KeyslotsRefused { keyslot, cost, refused } => write!(
                f,
                "no LUKS keyslot within the KDF limits matches the passphrase; {refused} keyslot(s) not tried, \
                 keyslot {keyslot} asks for {cost}"
            ),
            SegmentPastEnd { offset, size, device_size } => write!(
                f,
                "LUKS segment at {offset:#x} of {size:#x} bytes does not fit in the device ({device_size:#x} bytes)"
            ),
            KdfMemoryTooSmall { needed, supplied } => {
                write!(f, "LUKS2 Argon2 needs {needed} bytes of KDF memory, {supplied} bytes were supplied")
            }
            Crypto(e) => write!(f, "LUKS: {e}"),
            Luks2(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for LuksError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LuksError::Crypto(e) => Some(e),
            LuksError::Luks2(e) => Some(e),
            _ => None,
        }
    }
}

/// A LUKS error or the device's own error: what every LUKS function that does I/O returns.
/// The device variant is `Io`, as in [`qcow2::Error::Io`](crate::qcow2::Error::Io).
#[derive(Debug)]
pub enum LuksIoError<E> {
    /// The device failed.
    Io(E),
    /// The volume or request is invalid.
    Luks(LuksError),
}

impl<E> From<LuksError> for LuksIoError<E> {
    fn from(e: LuksError) -> Self {
        LuksIoError::Luks(e)
    }
}

impl<E> From<crypto::Error> for LuksIoError<E> {
    fn from(e: crypto::Error) -> Self {
        LuksIoError::Luks(e.into())
    }
}

impl<E> LuksIoError<E> {
    /// The LUKS error, if this is one.
    pub fn luks(&self) -> Option<&LuksError> {
        match self {
            LuksIoError::Luks(e) => Some(e),
            LuksIoError::Io(_) => None,
        }
    }

    /// See [`LuksError::is_wrong_passphrase`].
    pub fn is_wrong_passphrase(&self) -> bool {
        self.luks().is_some_and(LuksError::is_wrong_passphrase)
    }

    /// See [`LuksError::is_kdf_refused`].
    pub fn is_kdf_refused(&self) -> bool {
        self.luks().is_some_and(LuksError::is_kdf_refused)
    }

    /// Whether the device failed (not the volume).
    pub fn is_io(&self) -> bool {
        matches!(self, LuksIoError::Io(_))
    }
}

impl<E: fmt::Display> fmt::Display for LuksIoError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LuksIoError::Io(e) => write!(f, "LUKS: device error: {e}"),
            LuksIoError::Luks(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for LuksIoError<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LuksIoError::Io(e) => Some(e),
            LuksIoError::Luks(e) => Some(e),
        }
    }
}
