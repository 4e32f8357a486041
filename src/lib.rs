//! qluks: an allocation-free engine for QEMU disk images (qcow2, qcow) and LUKS volumes.
//!
//! The core is `no_std`, forbids `unsafe` and allocates nothing: every buffer and cache comes
//! from the caller. I/O goes through [`io::BlockIo`], a positional block-device trait that a
//! boot loader, a unikernel or a std program implements; crypto goes through `qluks-hal`.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod crypto;
pub mod image;
pub mod io;
pub mod luks;
pub mod qcow;
pub mod qcow2;
mod sector_span;

pub use qluks_hal as hal;
