//! qluks-hal: the crypto core of qluks.
//!
//! AES key schedules plus the sector modes disk encryption needs (XTS with plain64 tweaks,
//! CBC with plain/plain64/ESSIV IVs, ECB), over several backends chosen at run time
//! ([`Backend`]). Every backend gives bit-identical results; only speed differs.
//!
//! Nothing here allocates; all data is processed in place in the caller's buffer.
//!
//! # Backends
//! - `soft`: portable, constant time (bitsliced: no table lookups or branches on secrets).
//! - `aesni`: x86-64 AES-NI + PCLMULQDQ, eight blocks in flight.
//! - `vaes256` / `vaes512`: x86-64 VAES on 256/512-bit vectors for the XTS batch path (other
//!   operations run on their AES-NI kernels).
//! - `armv8`: aarch64 Cryptography Extensions (AESE/AESMC, AESD/AESIMC), eight blocks in flight.
//!
//! Detection: with the `std` feature through `is_x86_feature_detected!` /
//! `is_aarch64_feature_detected!`; without std on x86-64 through CPUID and XGETBV (VAES only
//! when the OS saves the ymm, resp. zmm, state); on bare-metal aarch64 when built with the `aes`
//! target feature, or after the caller vouches for the CPU with `Backend::assert_armv8_aes`.
//! The result is cached. On the soft-float `x86_64-unknown-none` target no SIMD code can be
//! compiled, so only `soft` exists there.
//!
//! # Example
//!
//! XTS-encrypt a batch of sectors with the fastest backend, check that the soft backend
//! decrypts them (backends are interchangeable), then CBC with ESSIV IVs, as LUKS1 uses:
//!
//! ```
//! use qluks_hal::{Backend, Cbc, Essiv, EssivHash, IvGen, Xts};
//!
//! # fn main() -> Result<(), qluks_hal::Error> {
//! let key = [0x42u8; 64]; // AES-256-XTS: two 32-byte keys
//! let plain = [0x5au8; 4 * 512]; // four 512-byte sectors, one call
//! let mut data = plain;
//! Xts::with_backend(&key, Backend::best())?.encrypt_units(&mut data, 512, 100)?; // sectors 100..104
//! assert_ne!(data, plain);
//! Xts::with_backend(&key, Backend::Soft)?.decrypt_units(&mut data, 512, 100)?;
//! assert_eq!(data, plain);
//!
//! let cbc_key = [7u8; 32]; // aes-cbc-essiv:sha256
//! let essiv = Essiv::new(EssivHash::Sha256, &cbc_key, Backend::best())?;
//! let cbc = Cbc::new(&cbc_key)?;
//! cbc.encrypt_sectors(&mut data, 512, 0, IvGen::Essiv(&essiv))?;
//! cbc.decrypt_sectors(&mut data, 512, 0, IvGen::Essiv(&essiv))?;
//! assert_eq!(data, plain);
//! # Ok(())
//! # }
//! ```
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod backend;
pub mod blamka;
mod cbc;
mod cpu;
mod error;
mod key;
pub mod sha;
mod xts;

pub use backend::Backend;
pub use cbc::{Cbc, Essiv, EssivHash, IvGen};
pub use error::Error;
pub use key::Aes;
pub use xts::Xts;

/// AES block size in bytes.
pub const BLOCK: usize = 16;
