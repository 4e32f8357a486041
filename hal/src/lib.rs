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
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod backend;
mod cbc;
mod error;
mod key;
mod xts;

pub use backend::Backend;
pub use cbc::{Cbc, Essiv, EssivHash, IvGen};
pub use error::Error;
pub use key::Aes;
pub use xts::Xts;

/// AES block size in bytes.
pub const BLOCK: usize = 16;
