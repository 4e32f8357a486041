//! Luks2Keyslot key derivation: PBKDF2 (through `crate::crypto`) or Argon2i/Argon2id with memory
//! the caller supplies.
//!
//! Argon2 is memory-hard by design: cryptsetup's default asks for up to 1 GiB. An
//! allocation-free engine cannot conjure that, so the caller passes a plain byte region (sized
//! with [`Metadata::kdf_memory_within`](super::Metadata::kdf_memory_within), in bytes) and gets
//! [`LuksError::KdfMemoryTooSmall`] with the exact need in bytes when it is too small. The
//! region needs no alignment, and is zeroized after use: it holds passphrase-derived state.
//!
//! ```
//! use qluks::crypto::{pbkdf2, HashAlg};
//! use qluks::luks::luks2::kdf::derive;
//! use qluks::luks::luks2::metadata::{kdf_memory_bytes, Argon2Variant, HashName, Kdf, Salt};
//! use qluks::luks::LuksError;
//!
//! # fn main() -> Result<(), LuksError> {
//! let salt = Salt::new(&[7; 32]).expect("at most 64 bytes");
//! let sha256 = HashName::new("sha256").expect("a short name");
//! let mut key = [0u8; 32];
//! derive(&Kdf::Pbkdf2 { hash: sha256, iterations: 1000, salt }, b"pass", &mut key, &mut [])?;
//! let mut expected = [0u8; 32];
//! pbkdf2(HashAlg::Sha256, b"pass", &[7; 32], 1000, &mut expected)?;
//! assert_eq!(key, expected);
//!
//! // Argon2id with 64 KiB: the caller brings the memory, sized by `kdf_memory_bytes`.
//! let argon2 = Kdf::Argon2 { variant: Argon2Variant::Argon2id, time: 1, memory_kib: 64, cpus: 1, salt };
//! let needed = kdf_memory_bytes(&argon2);
//! assert_eq!(needed, 64 * 1024);
//! let too_small = derive(&argon2, b"pass", &mut key, &mut [0u8; 1024]);
//! assert!(matches!(too_small, Err(LuksError::KdfMemoryTooSmall { needed: 65536, .. })));
//! let mut memory = vec![0u8; 64 * 1024]; // any alignment; wiped after use
//! derive(&argon2, b"pass", &mut key, &mut memory)?;
//! # Ok(())
//! # }
//! ```

use super::metadata::{kdf_memory_bytes, Argon2Variant, Kdf};
use crate::crypto::argon2::{argon2_with, Argon2Error, Input, LaneRunner, Params, Sequential, Variant};
use crate::crypto::{pbkdf2, HashAlg};
use crate::luks::LuksError;

/// Argon2's unit of memory: region sizes are whole multiples of it.
pub const ARGON2_BLOCK_SIZE: usize = crate::crypto::argon2::BLOCK_BYTES;

/// The Argon2 parameters of a keyslot KDF (`None` for PBKDF2).
pub(crate) fn argon2_params(kdf: &Kdf) -> Option<Params> {
    match *kdf {
        Kdf::Pbkdf2 { .. } => None,
        Kdf::Argon2 { variant, time, memory_kib, cpus, .. } => Some(Params {
            variant: match variant {
                Argon2Variant::Argon2i => Variant::Argon2i,
                Argon2Variant::Argon2id => Variant::Argon2id,
            },
            time,
            memory_kib,
            lanes: cpus,
        }),
    }
}

/// Derives `out.len()` bytes from `passphrase` with `kdf`; Argon2 works in `memory` (a plain
/// byte region of any alignment, at least [`kdf_memory_bytes`] long; wiped afterwards), on the
/// calling thread.
pub fn derive(kdf: &Kdf, passphrase: &[u8], out: &mut [u8], memory: &mut [u8]) -> Result<(), LuksError> {
    derive_with(kdf, passphrase, out, memory, &Sequential)
}

/// [`derive()`] with Argon2's lanes run by `runner` (for example one thread per lane).
pub fn derive_with(
    kdf: &Kdf,
    passphrase: &[u8],
    out: &mut [u8],
    memory: &mut [u8],
    runner: &dyn LaneRunner,
) -> Result<(), LuksError> {
    match kdf {
        Kdf::Pbkdf2 { hash, iterations, salt } => {
            let hash = HashAlg::from_name(hash.as_str())?;
            pbkdf2(hash, passphrase, salt.as_slice(), *iterations, out)?;
            Ok(())
        }
        Kdf::Argon2 { salt, .. } => {
            let params = argon2_params(kdf).ok_or(super::Luks2Error::Argon2Failed)?;
            if (memory.len() as u64) < kdf_memory_bytes(kdf) {
                return Err(LuksError::KdfMemoryTooSmall {
                    needed: kdf_memory_bytes(kdf),
                    supplied: memory.len() as u64,
                });
            }
            let input = Input { password: passphrase, salt: salt.as_slice(), secret: &[], ad: &[] };
            argon2_with(&params, &input, out, memory, runner).map_err(|e| match e {
                Argon2Error::MemoryTooSmall { needed } => {
                    LuksError::KdfMemoryTooSmall { needed, supplied: memory.len() as u64 }
                }
                Argon2Error::Params => super::Luks2Error::Argon2Failed.into(),
            })
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
        let mut memory = [0u8; 8 * 1024 - 1];
        let err = derive(&argon2id(8), b"pw", &mut [0; 32], &mut memory).unwrap_err();
        assert_eq!(err, LuksError::KdfMemoryTooSmall { needed: 8 * 1024, supplied: 8 * 1024 - 1 });
    }

    #[test]
    fn argon2_wipes_its_memory_and_depends_on_the_variant() {
        let mut memory = [0u8; 16 * 1024];
        let (mut id, mut i) = ([0u8; 32], [0u8; 32]);
        derive(&argon2id(16), b"password", &mut id, &mut memory).unwrap();
        assert!(memory.iter().all(|&b| b == 0), "memory is wiped");
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
