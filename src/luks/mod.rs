//! LUKS volumes: headers, keyslots, unlock, and the encrypted payload.
//!
//! `luks1/` owns the LUKS1 on-disk header (also embedded in qcow2 images), its keyslots and
//! volume creation; `luks2/` the LUKS2 metadata, its keyslots (PBKDF2 and Argon2) and
//! creation; [`LuksVolume`] reads and writes the payload of an unlocked volume of either
//! version. The header and key-material layouts are pure; I/O goes through
//! [`crate::io::BlockIo`]. Everything here works with the default features (no `std`): the
//! examples below use [`MemIo`](crate::io::MemIo); `File: BlockIo` needs the `std` feature.
//!
//! Errors: functions that do I/O return [`LuksIoError`] (`Io` for the device's error, `Luks`
//! for the volume's); the pure ones [`LuksError`]. Branch with
//! [`LuksError::is_wrong_passphrase`] (ask again) and [`LuksError::is_kdf_refused`] (a
//! keyslot costs more than your [`KdfLimits`]; [`LuksError::kdf_cost`] says what it asks for).
//!
//! # Opening a LUKS1 volume
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::luks::{LuksIoError, LuksVolume, OpenOptions};
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut disk = doc_support::luks1_volume(b"secret");
//! # let disk: &mut [u8] = &mut disk;
//! // `disk` holds a LUKS1 volume (cryptsetup's or QEMU's); any `BlockIo` works the same.
//! let wrong = LuksVolume::open(MemIo::new(&mut *disk), b"guess", OpenOptions::default());
//! assert!(wrong.is_err_and(|e| e.is_wrong_passphrase()));
//!
//! let mut volume = LuksVolume::open(MemIo::new(disk), b"secret", OpenOptions::default())?;
//! let mut sector = [0u8; 512];
//! volume.read_at(0, &mut sector)?; // plaintext of the first payload sector
//! # assert_eq!(sector, [0x5a; 512]);
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
//! #     pub fn luks1_volume(pass: &[u8]) -> Vec<u8> {
//! #         use qluks::luks::luks1::{self, CreateParams, Iterations};
//! #         let mut disk = vec![0u8; 4040 * 512 + 4096];
//! #         let mut params = CreateParams { cipher: qluks::crypto::CipherSpec::DEFAULT,
//! #             hash: qluks::crypto::HashAlg::Sha256, iterations: Iterations::fixed(1000) };
//! #         luks1::format(&mut qluks::io::MemIo::new(&mut disk), 0, &mut params, pass, &mut Rng(7)).unwrap();
//! #         let mut v = qluks::luks::LuksVolume::open_luks1(qluks::io::MemIo::new(&mut disk), pass, None).unwrap();
//! #         v.write_at(0, &[0x5a; 512]).unwrap();
//! #         disk
//! #     }
//! # }
//! ```
//!
//! The same in steps, as qcow2 does for its embedded header: [`Luks1Header::read`], then
//! [`luks1::unlock_with_limits`] for the volume key, then [`LuksVolume::new`] over a
//! [`DataSegment`].
//!
//! # Opening a LUKS2 volume with Argon2: read once, size, unlock
//!
//! Argon2 keyslots need memory (cryptsetup's default is up to 1 GiB), which the engine never
//! allocates. Read the header once into storage you own, ask it how many bytes the keyslot it
//! will try needs within your limits, and unlock with a byte region of that size (any
//! alignment, no `unsafe`):
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::luks::luks2::{Luks2Header, DEFAULT_JSON_BUFFER};
//! use qluks::luks::{KdfLimits, LuksIoError, LuksVolume};
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut disk = doc_support::luks2_argon2id_volume(b"secret");
//! // Caller-owned storage: a static, a struct of yours or a box; here the (large) main stack.
//! let mut header = Luks2Header::EMPTY; // about 9.4 KiB
//! let mut json = [0u8; DEFAULT_JSON_BUFFER];
//! let mut region = [0u8; 256 * 1024]; // the Argon2 memory you can spare
//!
//! let mut io = MemIo::new(&mut disk);
//! header.read_into(&mut io, &mut json)?; // step 1: the header, read once
//! let limits = KdfLimits { argon2_memory_kib: 256, ..KdfLimits::DEFAULT };
//! let needed = header.kdf_memory_within(&limits, None); // step 2: bytes
//! # assert_eq!(needed, 64 * 1024);
//! let memory = usize::try_from(needed).ok().and_then(|n| region.get_mut(..n)).expect("region too small");
//! // Step 3: unlock (the header is not read again) and key the data segment.
//! let mut volume = LuksVolume::open_luks2_header(io, &header, b"secret", None, memory, &limits)?;
//! let mut sector = [0u8; 4096];
//! volume.read_at(0, &mut sector)?;
//! # assert_eq!(sector, [0xa5; 4096]);
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
//! #     pub fn luks2_argon2id_volume(pass: &[u8]) -> Vec<u8> {
//! #         use qluks::luks::luks2::create::{format, CreateKdf, CreateParams};
//! #         let params = CreateParams { kdf: CreateKdf::Argon2id { time: 1, memory_kib: 64, cpus: 1 },
//! #             digest_iterations: 1000, data_offset: 1 << 20, ..Default::default() };
//! #         let mut disk = vec![0u8; (1 << 20) + 8192];
//! #         let mut memory = vec![0u8; 64 * 1024];
//! #         format(&mut qluks::io::MemIo::new(&mut disk), &params, pass, &mut memory, &mut Rng(9)).unwrap();
//! #         let options = qluks::luks::OpenOptions { kdf_memory: Some(&mut memory), ..Default::default() };
//! #         let mut v = qluks::luks::LuksVolume::open(qluks::io::MemIo::new(&mut disk), pass, options).unwrap();
//! #         v.write_at(0, &[0xa5; 4096]).unwrap();
//! #         disk
//! #     }
//! # }
//! ```
//!
//! [`LuksVolume::open`] does the same in one call when given the storage in [`OpenOptions`]
//! (`header`, `json_buffer`, `kdf_memory`); without it, it puts the header and JSON buffer on
//! the stack.
//!
//! # Memory
//!
//! Sizes on x86-64 (`size_of`); nothing is allocated, so everything large is the caller's:
//!
//! | What | Size | Who holds it |
//! |---|---|---|
//! | [`LuksVolume<I>`] | 1080 B + `I` (the keyed [`DataSegment`]: 1056 B) | the caller (returned by value) |
//! | [`Luks1Header`] | 608 B | returned by [`Luks1Header::read`] |
//! | [`luks2::Luks2Header`] | 9656 B (its [`luks2::Metadata`]: 9280 B, 32 keyslots of 216 B) | caller storage: [`Luks2Header::EMPTY`](luks2::Luks2Header::EMPTY) + [`read_into`](luks2::Luks2Header::read_into), or [`OpenOptions::header`] |
//! | LUKS2 JSON text | [`luks2::DEFAULT_JSON_BUFFER`] (12 KiB) for cryptsetup's default 16 KiB header; up to 4 MiB − 4 KiB for the largest | caller ([`OpenOptions::json_buffer`]) |
//! | Argon2 memory | [`Luks2Header::kdf_memory_within`](luks2::Luks2Header::kdf_memory_within) bytes: the keyslot's `memory` KiB × 1024, rounded down to a multiple of 4 × `cpus` KiB | caller, a `&mut [u8]` of any alignment, wiped after use |
//! | LUKS1 / LUKS2 anti-forensic key material | streamed 4 KiB at a time through the stack | — |
//!
//! Stack: unlock streams key material through a 4 KiB buffer; Argon2 keeps 5 KiB of block
//! state; PBKDF2 wipes 4 KiB below its frame (16 KiB in debug builds); a read with a partial
//! first or last sector uses a 4 KiB sector scratch, [`LuksVolume::write_at`] a 16 KiB chunk.
//! `tests/stack_luks.rs` runs LUKS1, LUKS2 PBKDF2 and LUKS2 Argon2id open + read (through
//! [`LuksVolume::open`], the two-step open and the lower-level unlock functions) on threads with
//! a 64 KiB stack (32 KiB in release builds), so a regression fails `cargo test`. Measured
//! minimum thread stacks (x86-64, Rust 1.95, caller storage as above):
//!
//! | Path | debug | release |
//! |---|---|---|
//! | LUKS1 [`LuksVolume::open`] + read | 55 KiB | ≤ 16 KiB (the smallest thread glibc makes) |
//! | LUKS1 [`Luks1Header::read`] + [`luks1::unlock_with_limits`] + read | 50 KiB | ≤ 16 KiB |
//! | LUKS2 PBKDF2 [`LuksVolume::open`] / two-step / [`luks2::unlock_with_limits`] + read | 54 / 52 / 51 KiB | ≤ 16 KiB |
//! | LUKS2 Argon2id [`LuksVolume::open`] / two-step / [`luks2::unlock_with_limits`] + read | 54 / 52 / 51 KiB | ≤ 16 KiB |
//!
//! Without caller storage, [`LuksVolume::open`] of a LUKS2 volume adds the header (9.4 KiB)
//! and the JSON buffer (12 KiB) to its stack.

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
