//! qluks: an allocation-free engine for QEMU disk images (qcow2, qcow) and LUKS volumes.
//!
//! The core is `no_std`, forbids `unsafe` and allocates nothing: every buffer and cache comes
//! from the caller. I/O goes through [`io::BlockIo`], a positional block-device trait that a
//! boot loader, a unikernel or a std program implements; crypto goes through `qluks-hal`.
//!
//! # Quick start
//!
//! | you want to | start at |
//! |---|---|
//! | give qluks your device (a firmware disk, a partition, bytes in memory) | [`io`]: implement [`io::BlockIo`] (read-only devices implement `read_at` and `size` only); [`io::MemIo`] wraps `&mut [u8]` |
//! | read a qcow2 image, clear or LUKS-encrypted | [`qcow2`]: [`qcow2::Qcow2Image::open`], or [`qcow2::Qcow2::open_in`] into memory you own |
//! | follow backing files | [`qcow2::backing`]: a [`qcow2::backing::Resolver`] decides what names open; [`qcow2::Chain::open_in`] |
//! | open a LUKS1 or LUKS2 volume (Argon2 memory sized first) | [`luks`]: [`luks::LuksVolume::open`], [`luks::luks2::Luks2Header::read_into`] |
//! | open whatever format a disk holds | [`image::Image`] |
//! | import the common names | [`prelude`] |
//!
//! Every public module has a runnable example in its docs (kept compiling by doctests; only
//! `qcow2::file_resolver`'s is compile-only, as it needs real files); the README's library
//! section has three complete programs. Every open and read path runs in 64 KiB of stack when the large structs
//! live in caller memory; the [`qcow2`] and [`luks`] docs give each type's size.
//!
//! # Features
//!
//! | feature | adds |
//! |---|---|
//! | (none) | everything above: no `std`, no heap, deflate-compressed clusters |
//! | `alloc` | zstd-compressed qcow2 clusters (the decoder allocates) |
//! | `std` | `alloc`, `std::fs::File: BlockIo`, `qcow2::file_resolver::FileResolver` (backing files under a `BackingPolicy`), OS randomness for creating volumes |
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
    pub use crate::luks::luks2::Luks2Header;
    pub use crate::luks::{DataSegment, KdfLimits, LuksError, LuksIoError, LuksVolume, OpenOptions};
    pub use crate::qcow::{Error as QcowError, Qcow1};
    pub use crate::qcow2::backing::{BackingFormat, BackingRequest, DataFileRequest, NoBacking, Opened, Resolver};
    #[cfg(feature = "std")]
    pub use crate::qcow2::file_resolver::{BackingPolicy, FileResolver};
    pub use crate::qcow2::{Chain, ChainError, Error as Qcow2Error, Qcow2, Qcow2Image};
}

/// The README's library examples, compiled as doctests (`tests/readme-quickstart.sh` also
/// builds them as a new crate would).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
