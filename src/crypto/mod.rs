//! Disk-encryption crypto above `qluks-hal`: hashes, PBKDF2, the LUKS anti-forensic splitter,
//! cipher specs and keyed sector ciphers.
//!
//! This module owns everything LUKS1, LUKS2 and qcow2 share about keys and sectors; it knows
//! nothing about headers or I/O. Nothing here allocates; every secret is zeroized on drop.
//!
//! # Example
//!
//! What a LUKS keyslot does, in pieces: derive a key from a passphrase, split a volume key
//! into anti-forensic material and merge it back, and encrypt sectors in one batch call.
//!
//! ```
//! use qluks::crypto::{pbkdf2, AfMerge, AfSplit, CipherSpec, HashAlg, SectorCipher, VolumeKey};
//!
//! # fn main() -> Result<(), qluks::crypto::Error> {
//! # let mut rng = doc_support::Rng(3);
//! let spec = CipherSpec::parse_sized("aes-256-xts-plain64")?;
//! assert_eq!(spec, CipherSpec::DEFAULT); // 64 key bytes
//! let mut derived = [0u8; 64];
//! pbkdf2(HashAlg::Sha256, b"passphrase", b"salt", 1000, &mut derived)?;
//! let key = VolumeKey::from_slice(&derived)?;
//!
//! // Anti-forensic split over 4000 stripes (LUKS's count), streamed in any piece sizes.
//! let mut material = vec![0u8; 64 * 4000];
//! AfSplit::new(HashAlg::Sha256, &key, 4000)?.fill(&mut material, &mut rng)?;
//! let mut merge = AfMerge::new(HashAlg::Sha256, 64, 4000)?;
//! material.chunks(4096).for_each(|piece| merge.update(piece));
//! assert_eq!(merge.finish().map(|k| k.as_bytes() == key.as_bytes()), Some(true));
//!
//! let cipher = SectorCipher::new(spec, key.as_bytes())?;
//! let mut sectors = [0x11u8; 8 * 512];
//! cipher.encrypt_sectors(&mut sectors, 512, 2048)?; // sectors 2048..2056, one call
//! cipher.decrypt_sectors(&mut sectors, 512, 2048)?;
//! assert_eq!(sectors, [0x11u8; 8 * 512]);
//! # Ok(())
//! # }
//! # mod doc_support {
//! #     pub struct Rng(pub u64);
//! #     impl rand_core::TryRng for Rng {
//! #         type Error = core::convert::Infallible;
//! #         fn try_next_u32(&mut self) -> Result<u32, Self::Error> { Ok(self.try_next_u64()? as u32) }
//! #         fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
//! #             self.0 ^= self.0 << 13; self.0 ^= self.0 >> 7; self.0 ^= self.0 << 17; Ok(self.0)
//! #         }
//! #         fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
//! #             for b in dst { *b = self.try_next_u64()? as u8; } Ok(())
//! #         }
//! #     }
//! #     impl rand_core::TryCryptoRng for Rng {}
//! # }
//! ```

pub(crate) mod af;
pub mod argon2;
mod cipher_spec;
mod error;
mod hash;
mod md_state;
pub(crate) mod name;
mod pbkdf2;
mod sector_cipher;
mod volume_key;

pub use af::{AfMerge, AfSplit};
pub use cipher_spec::{CbcIv, CipherMode, CipherSpec, XtsIv};
pub use error::Error;
pub use hash::HashAlg;
pub use name::Name;
pub use pbkdf2::{pbkdf2, pbkdf2_many, pbkdf2_many_pays, pbkdf2_with, Pbkdf2Kernel};
pub use sector_cipher::SectorCipher;
pub use volume_key::VolumeKey;

/// Compares two byte strings in constant time (for equal lengths; lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The operating system's CSPRNG (std builds).
#[cfg(feature = "std")]
pub use getrandom::SysRng as OsRng;
