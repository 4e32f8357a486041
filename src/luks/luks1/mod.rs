//! LUKS1: the phdr, its keyslots, unlock (also of the header QEMU embeds in qcow2), volume
//! creation and keyslot management.
//!
//! ```
//! use qluks::crypto::{CipherSpec, HashAlg};
//! use qluks::io::MemIo;
//! use qluks::luks::luks1::{self, CreateParams, Iterations, Luks1Header};
//! use qluks::luks::LuksIoError;
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut rng = doc_support::Rng(7);
//! // A volume as `cryptsetup luksFormat --type luks1` makes it (fixed iterations: a doctest
//! // has no time to calibrate; `Iterations` can also calibrate like cryptsetup).
//! let mut disk = vec![0u8; 4040 * 512 + 4096]; // 2 MiB header + keyslots, one data page
//! let mut io = MemIo::new(&mut disk);
//! let mut params =
//!     CreateParams { cipher: CipherSpec::DEFAULT, hash: HashAlg::Sha256, iterations: Iterations::fixed(1000) };
//! let (_, key) = luks1::format(&mut io, 0, &mut params, b"first", &mut rng)?;
//!
//! // Read the phdr back (area offset 0: a plain volume; qcow2 passes its embedded area).
//! let mut header = Luks1Header::read(&mut io, 0)?;
//! assert_eq!(header.payload_offset_bytes(), 4040 * 512);
//! let slot = luks1::add_keyslot(&mut io, 0, None, &mut header, &key, b"second", None, 1000, &mut rng)?;
//! assert_eq!(header.active_keyslots().collect::<Vec<_>>(), [0, slot]);
//!
//! let unlocked = luks1::unlock(&mut io, 0, None, &header, b"second")?;
//! assert_eq!(unlocked.as_bytes(), key.as_bytes());
//! let wrong = luks1::unlock(&mut io, 0, None, &header, b"third");
//! assert!(wrong.is_err_and(|e| e.is_wrong_passphrase()));
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
//! #     /// A LUKS2 volume (PBKDF2 keyslot, 16 KiB metadata copies, data at 1 MiB).
//! #     #[allow(dead_code)]
//! #     pub fn luks2_volume(pass: &[u8]) -> Vec<u8> {
//! #         use qluks::luks::luks2::create::{format, CreateKdf, CreateParams};
//! #         let kdf = CreateKdf::Pbkdf2 { hash: qluks::crypto::HashAlg::Sha256, iterations: 1000 };
//! #         let params = CreateParams { kdf, digest_iterations: 1000, data_offset: 1 << 20, ..Default::default() };
//! #         let mut disk = vec![0u8; (1 << 20) + 8192];
//! #         format(&mut qluks::io::MemIo::new(&mut disk), &params, pass, &mut [], &mut Rng(9)).unwrap();
//! #         disk
//! #     }
//! # }
//! ```

mod create;
mod header;
mod keyslot;
mod keyslots;
mod unlock;

pub(crate) use create::uuid_v4;
pub use create::{calibrate, format, layout, CreateParams, Iterations, MIN_ITERATIONS};
pub use header::{Luks1Header, DIGEST_LEN, HEADER_LEN, KEYSLOTS, MAX_ITERATIONS, MIN_PAYLOAD_OFFSET};
pub use keyslot::{Luks1Keyslot, KEYSLOT_DISABLED, KEYSLOT_ENABLED, STRIPES};
pub(crate) use keyslots::write_keyslot;
pub use keyslots::{add_keyslot, change_passphrase, change_passphrase_with_limits, remove_keyslot};
pub use unlock::{unlock, unlock_keyslot, unlock_with_limits, verify_key};
