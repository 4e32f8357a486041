//! Keyslot key derivation: PBKDF2 (through `crate::crypto`) or Argon2i/Argon2id with memory
//! the caller supplies.
//!
//! Argon2 is memory-hard by design: cryptsetup's default asks for up to 1 GiB. An
//! allocation-free engine cannot conjure that, so the caller passes the blocks (sized with
//! [`Metadata::kdf_memory_blocks`](super::Metadata::kdf_memory_blocks)) and gets
//! [`Error::KdfMemoryTooSmall`] with the exact need when they are too few. The blocks are
//! zeroized after use: they hold passphrase-derived state.

use zeroize::Zeroize;

use super::metadata::{kdf_memory_blocks, Argon2Variant, Kdf};
use crate::crypto::{pbkdf2, HashAlg};
use crate::luks::Error;

/// One 1 KiB block of Argon2 working memory (the unit callers allocate).
pub use argon2::Block as Argon2Block;

/// Bytes in one [`Argon2Block`].
pub const ARGON2_BLOCK_SIZE: usize = argon2::Block::SIZE;

/// Derives `out.len()` bytes from `passphrase` with `kdf`; Argon2 works in `memory`.
pub fn derive(kdf: &Kdf, passphrase: &[u8], out: &mut [u8], memory: &mut [Argon2Block]) -> Result<(), Error> {
    match kdf {
        Kdf::Pbkdf2 { hash, iterations, salt } => {
            let hash = HashAlg::from_name(hash.as_str())?;
            pbkdf2(hash, passphrase, salt.as_slice(), *iterations, out)?;
            Ok(())
        }
        Kdf::Argon2 { variant, time, memory_kib, cpus, salt } => {
            let needed = kdf_memory_blocks(kdf);
            let Some(blocks) = memory.get_mut(..needed) else {
                return Err(Error::KdfMemoryTooSmall { needed: (needed * ARGON2_BLOCK_SIZE) as u64 });
            };
            let algorithm = match variant {
                Argon2Variant::Argon2i => argon2::Algorithm::Argon2i,
                Argon2Variant::Argon2id => argon2::Algorithm::Argon2id,
            };
            let result = argon2::Params::new(*memory_kib, *time, *cpus, Some(out.len())).and_then(|params| {
                argon2::Argon2::new(algorithm, argon2::Version::V0x13, params).hash_password_into_with_memory(
                    passphrase,
                    salt.as_slice(),
                    out,
                    &mut *blocks,
                )
            });
            for block in blocks.iter_mut() {
                block.zeroize();
            }
            result.map_err(|_| super::Error::Argon2Failed.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::luks::luks2::text::{Bytes, Name};

    fn argon2id(memory_kib: u32) -> Kdf {
        Kdf::Argon2 {
            variant: Argon2Variant::Argon2id,
            time: 1,
            memory_kib,
            cpus: 1,
            salt: Bytes::new(&[7; 16]).unwrap(),
        }
    }

    #[test]
    fn argon2_refuses_too_little_memory_naming_the_need() {
        let mut memory = [Argon2Block::default(); 7];
        let err = derive(&argon2id(8), b"pw", &mut [0; 32], &mut memory).unwrap_err();
        assert_eq!(err, Error::KdfMemoryTooSmall { needed: 8 * 1024 });
    }

    #[test]
    fn argon2_wipes_its_memory_and_depends_on_the_variant() {
        let mut memory = [Argon2Block::default(); 16];
        let (mut id, mut i) = ([0u8; 32], [0u8; 32]);
        derive(&argon2id(16), b"password", &mut id, &mut memory).unwrap();
        assert!(memory.iter().all(|b| b.as_ref().iter().all(|&w| w == 0)), "memory is wiped");
        let Kdf::Argon2 { time, memory_kib, cpus, salt, .. } = argon2id(16) else { unreachable!() };
        let argon2i = Kdf::Argon2 { variant: Argon2Variant::Argon2i, time, memory_kib, cpus, salt };
        derive(&argon2i, b"password", &mut i, &mut memory).unwrap();
        assert_ne!(id, i);
        assert_ne!(id, [0u8; 32]);
    }

    #[test]
    fn pbkdf2_uses_the_named_hash() {
        let kdf = Kdf::Pbkdf2 { hash: Name::new("sha256").unwrap(), iterations: 1, salt: Bytes::new(b"salt").unwrap() };
        let mut out = [0u8; 32];
        derive(&kdf, b"password", &mut out, &mut []).unwrap();
        // RFC 7914 section 11 / well-known PBKDF2-HMAC-SHA256 vector, c = 1.
        assert_eq!(out[..4], [0x12, 0x0f, 0xb6, 0xcf]);
    }
}
