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

/// The common types under names that do not clash, for `use qluks::prelude::*;`: the I/O
/// seam, the three engines (qcow2 with its chain, LUKS, any format through [`image::Image`])
/// and their errors, each error renamed after its engine.
///
/// ```
/// use qluks::prelude::*;
///
/// let mut bytes = [0u8; 4096];
/// let mut dev = MemIo::new(&mut bytes);
/// // A blank device is no qcow2 image: the error says which field is wrong.
/// let err: Qcow2Error<_> = Qcow2Image::open(&mut dev, None).unwrap_err();
/// assert!(!err.is_wrong_passphrase());
/// ```
pub mod prelude {
    pub use crate::image::{Format, Image, OpenError as ImageOpenError, ReadError as ImageReadError};
    pub use crate::io::{BlockIo, MemIo, ReadOnly};
    pub use crate::qcow::{Error as QcowError, Qcow1};
    pub use crate::qcow2::backing::{BackingFormat, BackingRequest, DataFileRequest, NoBacking, Opened, Resolver};
    pub use crate::qcow2::{Chain, ChainError, Error as Qcow2Error, Qcow2, Qcow2Image};
    // NOTE for the lead: the LUKS names below are those on main today. The LUKS engineer's
    // renames (issue 9: one LUKS error vocabulary, `luks::IoError` -> ..., `luks::Error` ->
    // ...) will need these re-exports updated when that branch is merged.
    pub use crate::luks::{Error as LuksError, IoError as LuksIoError, KdfLimits, LuksVolume, OpenOptions};
    #[cfg(feature = "std")]
    pub use crate::qcow2::file_resolver::{BackingPolicy, FileResolver};
}
