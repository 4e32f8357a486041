//! LUKS volumes: headers, keyslots, unlock, and the encrypted payload.
//!
//! `luks1/` owns the LUKS1 on-disk header (also embedded in qcow2 images), its keyslots and
//! volume creation; [`LuksVolume`] reads and writes the payload of an unlocked volume of either
//! version. The header and key-material layouts are pure; I/O goes through [`crate::io::BlockIo`].

mod error;
mod limits;
pub mod luks1;
pub mod luks2;
mod volume;

pub use error::{LuksError, LuksIoError};
pub use limits::{KdfCost, KdfLimits, DEFAULT_ARGON2_MEMORY_KIB, DEFAULT_ARGON2_TIME, DEFAULT_PBKDF2_ITERATIONS};
pub use luks1::Luks1Header;
pub use volume::{DataSegment, LuksVolume, OpenOptions};

/// The magic at the start of a LUKS1 or LUKS2 header.
pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";

/// LUKS's unit for offsets (key material, payload) and for IV sector numbers.
pub const SECTOR: usize = 512;
