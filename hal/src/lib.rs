//! qluks-hal: the crypto core of qluks.
//!
//! AES key schedules plus the sector modes disk encryption needs (XTS with plain64 tweaks,
//! CBC with plain/plain64/ESSIV IVs, ECB), over several backends chosen at run time
//! ([`Backend`]). Every backend gives bit-identical results; only speed differs.
//!
//! Nothing here allocates; all data is processed in place in the caller's buffer.
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
