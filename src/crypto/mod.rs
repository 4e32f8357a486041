//! Disk-encryption crypto above `qluks-hal`: hashes, PBKDF2, the LUKS anti-forensic splitter,
//! cipher specs and keyed sector ciphers.
//!
//! This module owns everything LUKS1, LUKS2 and qcow2 share about keys and sectors; it knows
//! nothing about headers or I/O. Nothing here allocates; every secret is zeroized on drop.

mod af;
pub(crate) mod argon2;
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
pub use pbkdf2::pbkdf2;
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
