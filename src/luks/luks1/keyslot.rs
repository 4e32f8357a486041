//! One LUKS1 keyslot (48 bytes of the phdr) and where its key material lies.

use crate::luks::{LuksError, SECTOR};

/// `active` value of an enabled keyslot.
pub const KEYSLOT_ENABLED: u32 = 0x00AC_71F3;
/// `active` value of a disabled keyslot.
pub const KEYSLOT_DISABLED: u32 = 0x0000_DEAD;
/// The only stripe count LUKS1 implementations use (and QEMU accepts).
pub const STRIPES: u32 = 4000;
/// Size of a keyslot record in the phdr.
pub const KEYSLOT_LEN: usize = 48;

/// A keyslot: PBKDF2 parameters and the location of its AF-split, encrypted key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Luks1Keyslot {
    /// Enabled (0x00AC71F3) or not (0x0000DEAD).
    pub active: bool,
    /// PBKDF2 iterations deriving the slot key from the passphrase.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: [u8; 32],
    /// Start of the key material, in 512-byte sectors from the header start.
    pub key_offset: u32,
    /// AF stripes (4000).
    pub stripes: u32,
}

impl Luks1Keyslot {
    /// Parses a 48-byte record (fields only; [`super::Luks1Header::parse`] validates them).
    pub(crate) fn parse(b: &[u8; KEYSLOT_LEN], index: usize) -> Result<Luks1Keyslot, LuksError> {
        let active = match be32(b, 0) {
            KEYSLOT_ENABLED => true,
            KEYSLOT_DISABLED => false,
            active => return Err(LuksError::KeyslotState { keyslot: index, active }),
        };
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&b[8..40]);
        Ok(Luks1Keyslot { active, iterations: be32(b, 4), salt, key_offset: be32(b, 40), stripes: be32(b, 44) })
    }

    /// The 48-byte record.
    pub(crate) fn to_bytes(self) -> [u8; KEYSLOT_LEN] {
        let mut b = [0u8; KEYSLOT_LEN];
        let active = if self.active { KEYSLOT_ENABLED } else { KEYSLOT_DISABLED };
        b[0..4].copy_from_slice(&active.to_be_bytes());
        b[4..8].copy_from_slice(&self.iterations.to_be_bytes());
        b[8..40].copy_from_slice(&self.salt);
        b[40..44].copy_from_slice(&self.key_offset.to_be_bytes());
        b[44..48].copy_from_slice(&self.stripes.to_be_bytes());
        b
    }

    /// Bytes of key material: `key_bytes * stripes`.
    pub fn material_len(&self, key_bytes: u32) -> u64 {
        key_bytes as u64 * self.stripes as u64
    }

    /// Sectors the key material occupies (rounded up: the cipher works on whole sectors).
    pub fn material_sectors(&self, key_bytes: u32) -> u64 {
        self.material_len(key_bytes).div_ceil(SECTOR as u64)
    }

    /// Byte range of the key material relative to the header start.
    pub fn material_range(&self, key_bytes: u32) -> core::ops::Range<u64> {
        let start = self.key_offset as u64 * SECTOR as u64;
        start..start + self.material_sectors(key_bytes) * SECTOR as u64
    }
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
