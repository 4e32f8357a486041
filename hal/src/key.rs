//! AES key schedules (FIPS-197 key expansion, our own, constant time) and ECB over them.
use crate::backend;
use crate::{Backend, Error, BLOCK};
use zeroize::Zeroize;

/// Expanded AES round keys, shared by every backend (see notes/hal-contract.md).
///
/// Zeroized on drop; deliberately has no `Debug`.
pub(crate) struct RoundKeys {
    /// Encryption round keys enc[0..=rounds] (FIPS-197 order, byte order as in memory for
    /// _mm_loadu_si128 / vld1q_u8).
    pub(crate) enc: [[u8; 16]; 15],
    /// Decryption keys in "equivalent inverse cipher" order for AESDEC (x86) and AESD+AESIMC
    /// (arm): dec[0] = enc[rounds], dec[i] = InvMixColumns(enc[rounds - i]) for 0 < i < rounds,
    /// dec[rounds] = enc[0].
    pub(crate) dec: [[u8; 16]; 15],
    /// 10, 12 or 14.
    pub(crate) rounds: usize,
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.dec.zeroize();
    }
}

/// Round constants of the key expansion (x^(i-1) in GF(2^8)).
const RCON: [u8; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];

impl RoundKeys {
    /// Expands a 16-, 24- or 32-byte key. Branches depend only on the key length and word
    /// index; the S-box is a Boolean circuit (no table lookups on key bytes).
    pub(crate) fn new(key: &[u8]) -> Result<RoundKeys, Error> {
        let nk = match key.len() {
            16 | 24 | 32 => key.len() / 4,
            len => return Err(Error::InvalidKeyLength { len }),
        };
        let rounds = nk + 6;
        let total = 4 * (rounds + 1);
        let mut w = [[0u8; 4]; 60];
        for (word, chunk) in w.iter_mut().zip(key.chunks_exact(4)) {
            word.copy_from_slice(chunk);
        }
        for i in nk..total {
            let mut temp = w[i - 1];
            if i % nk == 0 {
                temp = backend::soft::sub_word([temp[1], temp[2], temp[3], temp[0]]);
                temp[0] ^= RCON[i / nk - 1];
            } else if nk > 6 && i % nk == 4 {
                temp = backend::soft::sub_word(temp);
            }
            for b in 0..4 {
                w[i][b] = w[i - nk][b] ^ temp[b];
            }
        }
        let mut keys = RoundKeys { enc: [[0u8; 16]; 15], dec: [[0u8; 16]; 15], rounds };
        for r in 0..=rounds {
            for c in 0..4 {
                keys.enc[r][4 * c..4 * c + 4].copy_from_slice(&w[4 * r + c]);
            }
        }
        w.zeroize();
        keys.dec[0] = keys.enc[rounds];
        for i in 1..rounds {
            keys.dec[i] = backend::soft::inv_mix_columns_block(&keys.enc[rounds - i]);
        }
        keys.dec[rounds] = keys.enc[0];
        Ok(keys)
    }

    /// Key length in bytes.
    pub(crate) fn key_len(&self) -> usize {
        (self.rounds - 6) * 4
    }
}

/// An expanded AES-128/192/256 key (encrypt and decrypt schedules), zeroized on drop.
pub struct Aes {
    keys: RoundKeys,
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

    /// Expands `key` for a chosen backend; refused with [`Error::BackendUnavailable`] when that
    /// backend cannot run on this CPU.
    pub fn with_backend(key: &[u8], backend: Backend) -> Result<Aes, Error> {
        // Invariant relied upon by every dispatch in `backend`: an `Aes` only exists for a
        // backend whose CPU features are present.
        if !backend.is_available() {
            return Err(Error::BackendUnavailable(backend));
        }
        Ok(Aes { keys: RoundKeys::new(key)?, backend })
    }

    /// Key length in bytes.
    pub fn key_len(&self) -> usize {
        self.keys.key_len()
    }

    /// The backend this schedule runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn keys(&self) -> &RoundKeys {
        &self.keys
    }

    /// Encrypts one block in place.
    pub fn encrypt_block(&self, block: &mut [u8; BLOCK]) {
        backend::ecb_encrypt(self.backend, &self.keys, block);
    }

    /// Decrypts one block in place.
    pub fn decrypt_block(&self, block: &mut [u8; BLOCK]) {
        backend::ecb_decrypt(self.backend, &self.keys, block);
    }

    /// ECB-encrypts `data` (a multiple of 16 bytes) in place.
    pub fn encrypt_blocks(&self, data: &mut [u8]) -> Result<(), Error> {
        check_blocks(data)?;
        backend::ecb_encrypt(self.backend, &self.keys, data);
        Ok(())
    }

    /// ECB-decrypts `data` (a multiple of 16 bytes) in place.
    pub fn decrypt_blocks(&self, data: &mut [u8]) -> Result<(), Error> {
        check_blocks(data)?;
        backend::ecb_decrypt(self.backend, &self.keys, data);
        Ok(())
    }
}

pub(crate) fn check_blocks(data: &[u8]) -> Result<(), Error> {
    if !data.len().is_multiple_of(BLOCK) {
        return Err(Error::LengthNotMultiple { len: data.len(), unit: BLOCK });
    }
    Ok(())
}
