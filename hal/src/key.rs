//! AES key schedule and ECB over it.
use crate::{Backend, Error, BLOCK};
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};

enum Inner {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

/// An expanded AES-128/192/256 key (encrypt and decrypt schedules), zeroized on drop.
pub struct Aes {
    inner: Inner,
    backend: Backend,
}

impl core::fmt::Debug for Aes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Aes").field("key_len", &self.key_len()).field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Aes {
    /// Expands `key` (16, 24 or 32 bytes) for the best backend.
    pub fn new(key: &[u8]) -> Result<Aes, Error> {
        Aes::with_backend(key, Backend::best())
    }

    /// Expands `key` for a chosen backend.
    pub fn with_backend(key: &[u8], backend: Backend) -> Result<Aes, Error> {
        if !backend.is_available() {
            return Err(Error::BackendUnavailable(backend));
        }
        let inner = match key.len() {
            16 => Inner::A128(aes::Aes128::new_from_slice(key).expect("length checked")),
            24 => Inner::A192(aes::Aes192::new_from_slice(key).expect("length checked")),
            32 => Inner::A256(aes::Aes256::new_from_slice(key).expect("length checked")),
            len => return Err(Error::InvalidKeyLength { len }),
        };
        Ok(Aes { inner, backend })
    }

    /// Key length in bytes.
    pub fn key_len(&self) -> usize {
        match self.inner {
            Inner::A128(_) => 16,
            Inner::A192(_) => 24,
            Inner::A256(_) => 32,
        }
    }

    /// The backend this schedule runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Encrypts one block in place.
    pub fn encrypt_block(&self, block: &mut [u8; BLOCK]) {
        let mut b = aes::Block::from(*block);
        match &self.inner {
            Inner::A128(c) => c.encrypt_block(&mut b),
            Inner::A192(c) => c.encrypt_block(&mut b),
            Inner::A256(c) => c.encrypt_block(&mut b),
        }
        *block = b.into();
    }

    /// Decrypts one block in place.
    pub fn decrypt_block(&self, block: &mut [u8; BLOCK]) {
        let mut b = aes::Block::from(*block);
        match &self.inner {
            Inner::A128(c) => c.decrypt_block(&mut b),
            Inner::A192(c) => c.decrypt_block(&mut b),
            Inner::A256(c) => c.decrypt_block(&mut b),
        }
        *block = b.into();
    }

    /// ECB-encrypts `data` (a multiple of 16 bytes) in place.
    pub fn encrypt_blocks(&self, data: &mut [u8]) -> Result<(), Error> {
        for_blocks(data, |b| self.encrypt_block(b))
    }

    /// ECB-decrypts `data` (a multiple of 16 bytes) in place.
    pub fn decrypt_blocks(&self, data: &mut [u8]) -> Result<(), Error> {
        for_blocks(data, |b| self.decrypt_block(b))
    }
}

pub(crate) fn for_blocks(data: &mut [u8], mut f: impl FnMut(&mut [u8; BLOCK])) -> Result<(), Error> {
    if !data.len().is_multiple_of(BLOCK) {
        return Err(Error::LengthNotMultiple { len: data.len(), unit: BLOCK });
    }
    for chunk in data.chunks_exact_mut(BLOCK) {
        f(chunk.try_into().expect("exact chunk"));
    }
    Ok(())
}
