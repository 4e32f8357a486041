//! The volume (master) key: fixed storage, zeroized on drop, never shown.

use super::Error;
use zeroize::Zeroize;

/// A volume key of up to 64 bytes (AES-256-XTS), zeroized on drop. `Debug` shows only its length.
#[derive(Clone)]
pub struct VolumeKey {
    bytes: [u8; 64],
    len: usize,
}

impl VolumeKey {
    /// The largest key LUKS volumes use here (AES-256-XTS).
    pub const MAX_LEN: usize = 64;

    /// Copies a key of 1..=64 bytes.
    pub fn from_slice(key: &[u8]) -> Result<VolumeKey, Error> {
        let mut k = VolumeKey::zeroed(key.len())?;
        k.bytes[..key.len()].copy_from_slice(key);
        Ok(k)
    }

    /// An all-zero key of `len` bytes, to be filled through [`VolumeKey::as_mut_bytes`].
    pub fn zeroed(len: usize) -> Result<VolumeKey, Error> {
        if len == 0 || len > Self::MAX_LEN {
            return Err(Error::KeyLength { key_bytes: len });
        }
        Ok(VolumeKey { bytes: [0; 64], len })
    }

    /// A fresh key of `len` bytes from a cryptographic RNG.
    pub fn random<R: rand_core::TryCryptoRng + ?Sized>(len: usize, rng: &mut R) -> Result<VolumeKey, Error> {
        let mut k = VolumeKey::zeroed(len)?;
        rng.try_fill_bytes(k.as_mut_bytes()).map_err(|_| Error::Random)?;
        Ok(k)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The key bytes, writable.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a key has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for VolumeKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl core::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VolumeKey").field("len", &self.len).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_key_bytes() {
        let k = VolumeKey::from_slice(&[0xa5; 32]).unwrap();
        let s = std::format!("{k:?}");
        assert!(s.contains("32") && !s.contains("165") && !s.contains("a5"), "{s}");
    }

    #[test]
    fn key_lengths_outside_1_to_64_are_refused() {
        assert_eq!(VolumeKey::zeroed(0).err(), Some(Error::KeyLength { key_bytes: 0 }));
        assert_eq!(VolumeKey::zeroed(65).err(), Some(Error::KeyLength { key_bytes: 65 }));
        assert_eq!(VolumeKey::zeroed(64).unwrap().len(), 64);
    }
}
