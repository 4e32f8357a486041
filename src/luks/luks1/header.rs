//! The LUKS1 partition header (phdr): 592 bytes, parsed into a validated value and serialized
//! back byte for byte.

use super::keyslot::{be32, Luks1Keyslot, KEYSLOT_LEN, STRIPES};
use crate::crypto::{CipherSpec, HashAlg};
use crate::luks::{LuksError, MAGIC, SECTOR};

/// Number of keyslots.
pub const KEYSLOTS: usize = 8;
/// Size of the phdr.
pub const HEADER_LEN: usize = 592;
/// The payload may not start before this many sectors (QEMU's key-slot offset, 4096 bytes).
pub const MIN_PAYLOAD_OFFSET: u32 = 8;
/// Iteration counts above this are refused as absurd (minutes of PBKDF2 at any speed).
pub const MAX_ITERATIONS: u32 = 1 << 31;
/// Length of the master-key digest.
pub const DIGEST_LEN: usize = 20;

const KEYSLOTS_AT: usize = 208;

/// A validated LUKS1 header. String fields are kept as on disk so that serializing gives the
/// same bytes back; `cipher` and `hash` are their typed forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks1Header {
    /// `cipher_name`, NUL-terminated.
    pub cipher_name: [u8; 32],
    /// `cipher_mode`, NUL-terminated.
    pub cipher_mode: [u8; 32],
    /// `hash_spec`, NUL-terminated.
    pub hash_spec: [u8; 32],
    /// Start of the payload in 512-byte sectors.
    pub payload_offset: u32,
    /// Volume key length in bytes.
    pub key_bytes: u32,
    /// PBKDF2(volume key, mk_salt, mk_iterations) truncated to 20 bytes.
    pub mk_digest: [u8; DIGEST_LEN],
    /// Salt of the master-key digest.
    pub mk_salt: [u8; 32],
    /// Iterations of the master-key digest.
    pub mk_iterations: u32,
    /// UUID string, NUL-terminated.
    pub uuid: [u8; 40],
    /// The eight keyslots.
    pub keyslots: [Luks1Keyslot; KEYSLOTS],
    /// Typed `cipher_name` + `cipher_mode` + `key_bytes`.
    pub cipher: CipherSpec,
    /// Typed `hash_spec`.
    pub hash: HashAlg,
}

fn cstr<'a>(b: &'a [u8], field: &'static str) -> Result<&'a str, LuksError> {
    let end = b.iter().position(|&c| c == 0).ok_or(LuksError::StringNotTerminated { field })?;
    // Non-UTF-8 names cannot match any cipher or hash; report them as unsupported names.
    Ok(core::str::from_utf8(&b[..end]).unwrap_or("\u{fffd}"))
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

impl Luks1Header {
    /// Parses and validates a phdr (`bytes` may be longer than 592).
    ///
    /// Checks, as QEMU and cryptsetup do: magic and version, NUL-terminated strings, a supported
    /// cipher, mode and hash with a fitting key size, non-zero and sane iteration counts, valid
    /// keyslot states, 4000 stripes, and key material that neither overlaps the header, another
    /// keyslot nor the payload. Whether the key material lies inside the device is checked at
    /// unlock, where the device size is known.
    pub fn parse(bytes: &[u8]) -> Result<Luks1Header, LuksError> {
        if bytes.len() < HEADER_LEN {
            return Err(LuksError::TooShort { len: bytes.len(), needed: HEADER_LEN });
        }
        if bytes[..6] != MAGIC {
            return Err(LuksError::BadMagic);
        }
        let version = u16::from_be_bytes([bytes[6], bytes[7]]);
        if version != 1 {
            return Err(LuksError::UnsupportedVersion { version });
        }
        let cipher_name_s = cstr(&bytes[8..40], "cipher_name")?;
        let cipher_mode_s = cstr(&bytes[40..72], "cipher_mode")?;
        let hash_s = cstr(&bytes[72..104], "hash_spec")?;
        cstr(&bytes[168..208], "uuid")?;
        let payload_offset = be32(bytes, 104);
        let key_bytes = be32(bytes, 108);
        let cipher = CipherSpec::parse(cipher_name_s, cipher_mode_s, key_bytes as usize).map_err(|e| match e {
            crate::crypto::Error::KeyLength { .. } => LuksError::KeyBytes { key_bytes },
            e => e.into(),
        })?;
        let hash = HashAlg::from_name(hash_s)?;
        let mut keyslots = [Luks1Keyslot { active: false, iterations: 0, salt: [0; 32], key_offset: 0, stripes: 0 }; 8];
        for (i, slot) in keyslots.iter_mut().enumerate() {
            let at = KEYSLOTS_AT + i * KEYSLOT_LEN;
            *slot = Luks1Keyslot::parse(&array(bytes, at), i)?;
        }
        let header = Luks1Header {
            cipher_name: array(bytes, 8),
            cipher_mode: array(bytes, 40),
            hash_spec: array(bytes, 72),
            payload_offset,
            key_bytes,
            mk_digest: array(bytes, 112),
            mk_salt: array(bytes, 132),
            mk_iterations: be32(bytes, 164),
            uuid: array(bytes, 168),
            keyslots,
            cipher,
            hash,
        };
        header.validate()?;
        Ok(header)
    }

    /// The checks of [`Luks1Header::parse`] that concern numbers and layout (also run before
    /// a header is written).
    pub fn validate(&self) -> Result<(), LuksError> {
        if self.mk_iterations == 0 || self.mk_iterations > MAX_ITERATIONS {
            return Err(LuksError::DigestIterations { iterations: self.mk_iterations });
        }
        if self.payload_offset < MIN_PAYLOAD_OFFSET {
            return Err(LuksError::PayloadOffset { payload_offset: self.payload_offset });
        }
        let payload = self.payload_offset as u64 * SECTOR as u64;
        for (i, slot) in self.keyslots.iter().enumerate() {
            if slot.active && (slot.iterations == 0 || slot.iterations > MAX_ITERATIONS) {
                return Err(LuksError::KeyslotIterations { keyslot: i, iterations: slot.iterations });
            }
            if slot.stripes != STRIPES {
                return Err(LuksError::KeyslotStripes { keyslot: i, stripes: slot.stripes });
            }
            let r = slot.material_range(self.key_bytes);
            if r.start < HEADER_LEN as u64 {
                return Err(LuksError::KeyslotOverlapsHeader { keyslot: i });
            }
            if r.end > payload {
                return Err(LuksError::KeyslotOverlapsPayload { keyslot: i });
            }
            for (j, other) in self.keyslots.iter().enumerate().skip(i + 1) {
                let o = other.material_range(self.key_bytes);
                if r.start < o.end && o.start < r.end {
                    return Err(LuksError::KeyslotsOverlap { keyslot: i, other: j });
                }
            }
        }
        Ok(())
    }

    /// The 592-byte phdr.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        b[8..40].copy_from_slice(&self.cipher_name);
        b[40..72].copy_from_slice(&self.cipher_mode);
        b[72..104].copy_from_slice(&self.hash_spec);
        b[104..108].copy_from_slice(&self.payload_offset.to_be_bytes());
        b[108..112].copy_from_slice(&self.key_bytes.to_be_bytes());
        b[112..132].copy_from_slice(&self.mk_digest);
        b[132..164].copy_from_slice(&self.mk_salt);
        b[164..168].copy_from_slice(&self.mk_iterations.to_be_bytes());
        b[168..208].copy_from_slice(&self.uuid);
        for (i, slot) in self.keyslots.iter().enumerate() {
            let at = KEYSLOTS_AT + i * KEYSLOT_LEN;
            b[at..at + KEYSLOT_LEN].copy_from_slice(&slot.to_bytes());
        }
        b
    }

    /// The UUID as text.
    pub fn uuid_str(&self) -> &str {
        cstr(&self.uuid, "uuid").unwrap_or("")
    }

    /// Payload offset in bytes.
    pub fn payload_offset_bytes(&self) -> u64 {
        self.payload_offset as u64 * SECTOR as u64
    }

    /// Indexes of the active keyslots.
    pub fn active_keyslots(&self) -> impl Iterator<Item = usize> + '_ {
        self.keyslots.iter().enumerate().filter(|(_, s)| s.active).map(|(i, _)| i)
    }
}
