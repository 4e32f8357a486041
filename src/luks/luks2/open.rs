//! Opening a LUKS2 volume into a [`LuksVolume`]: metadata read, keyslot unlocked, data segment
//! keyed.
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::luks::luks2::{Luks2Header, DEFAULT_JSON_BUFFER};
//! use qluks::luks::{LuksIoError, LuksVolume, OpenOptions};
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut disk = doc_support::luks2_volume(b"secret");
//! // `disk` holds a LUKS2 volume. Header and JSON text in caller storage (not the stack).
//! let mut header = Luks2Header::EMPTY;
//! let mut json = [0u8; DEFAULT_JSON_BUFFER];
//! let options = OpenOptions { header: Some(&mut header), json_buffer: Some(&mut json), ..Default::default() };
//! let mut volume = LuksVolume::open_luks2(MemIo::new(&mut disk), b"secret", options)?;
//! volume.write_at(0, &[1; 4096])?;
//! let mut sector = [0u8; 4096];
//! volume.read_at(0, &mut sector)?;
//! assert_eq!(sector, [1; 4096]);
//! assert_eq!(volume.segment().offset, 1 << 20); // the data segment from the metadata
//! assert_eq!(header.metadata.keyslots().count(), 1); // the header stays readable
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

use super::header::{Luks2Header, DEFAULT_JSON_BUFFER};
use super::keyslot::unlock_with_runner;
use super::metadata::{Metadata, SegmentType};
use super::Luks2Error;
use crate::crypto::argon2::{LaneRunner, Sequential};
use crate::crypto::{CipherSpec, SectorCipher, VolumeKey};
use crate::io::BlockIo;
use crate::luks::{DataSegment, KdfLimits, LuksError, LuksIoError, LuksVolume, OpenOptions};

/// The data segment of `metadata`, keyed with the unlocked volume `key`. With a detached
/// header, pass the result to [`LuksVolume::new`] over the data device.
pub fn data_segment(metadata: &Metadata, key: &VolumeKey) -> Result<DataSegment, LuksError> {
    if let Some(name) = metadata.config.requirement {
        return Err(Luks2Error::UnmetRequirement { name }.into());
    }
    let (id, segment) = metadata.data_segment().ok_or(Luks2Error::NoDataSegment)?;
    if segment.segment_type != SegmentType::Crypt {
        return Err(Luks2Error::SegmentNotEncrypted { segment: id }.into());
    }
    let spec = CipherSpec::parse_combined(segment.encryption.as_str(), key.len())?;
    Ok(DataSegment {
        offset: segment.offset,
        size: segment.size,
        sector_size: segment.sector_size as usize,
        iv_tweak: segment.iv_tweak,
        cipher: SectorCipher::new(spec, key.as_bytes())?,
    })
}

impl<I: BlockIo> LuksVolume<I> {
    /// Opens a LUKS2 volume whose header starts `io`: the newest valid metadata copy is read
    /// into `options.header` (or a header on the stack, about 10 KiB) with the JSON text in
    /// `options.json_buffer` (or a [`DEFAULT_JSON_BUFFER`]-byte stack buffer), a keyslot
    /// unlocked within `options.kdf_limits` (Argon2 in `options.kdf_memory`), and the data
    /// segment keyed. A volume with an unfinished reencryption (a mandatory requirement) is
    /// refused. With both buffers supplied the open fits the 64 KiB stack budget (see the
    /// [module docs](crate::luks#memory)).
    pub fn open_luks2(mut io: I, passphrase: &[u8], options: OpenOptions<'_>) -> Result<Self, LuksIoError<I::Error>> {
        let OpenOptions { keyslot, kdf_memory, kdf_limits, json_buffer, header } = options;
        let kdf_memory = kdf_memory.unwrap_or(&mut []);
        let Some(header) = header else {
            return open_with_stack_header(io, passphrase, keyslot, kdf_memory, &kdf_limits, json_buffer);
        };
        match json_buffer {
            Some(json) => header.read_into(&mut io, json)?,
            None => read_with_stack_json(&mut io, header)?,
        }
        LuksVolume::open_luks2_header(io, header, passphrase, keyslot, kdf_memory, &kdf_limits)
    }

    /// The second step of a two-step LUKS2 open: unlocks with a header already read by
    /// [`Luks2Header::read_into`] (the header is not read again). `kdf_memory` is a byte
    /// region of any alignment of at least [`Luks2Header::kdf_memory_within`]`(limits,
    /// keyslot)` bytes (empty for PBKDF2 keyslots); `keyslot` picks one keyslot, `None` tries
    /// every keyslot of the data segment within `limits`.
    pub fn open_luks2_header(
        io: I,
        header: &Luks2Header,
        passphrase: &[u8],
        keyslot: Option<usize>,
        kdf_memory: &mut [u8],
        limits: &KdfLimits,
    ) -> Result<Self, LuksIoError<I::Error>> {
        LuksVolume::open_luks2_header_with(io, header, passphrase, keyslot, kdf_memory, limits, &Sequential)
    }

    /// [`LuksVolume::open_luks2_header`] with Argon2's lanes run by `runner` (a caller with
    /// threads runs them at once; see [`LaneRunner`]).
    pub fn open_luks2_header_with(
        mut io: I,
        header: &Luks2Header,
        passphrase: &[u8],
        keyslot: Option<usize>,
        kdf_memory: &mut [u8],
        limits: &KdfLimits,
        runner: &dyn LaneRunner,
    ) -> Result<Self, LuksIoError<I::Error>> {
        let metadata = &header.metadata;
        if let Some(name) = metadata.config.requirement {
            return Err(Luks2Error::UnmetRequirement { name }.into());
        }
        let (_, key) = unlock_with_runner(&mut io, metadata, passphrase, keyslot, kdf_memory, limits, runner)?;
        let segment = data_segment(metadata, &key)?;
        drop(key);
        LuksVolume::new(io, segment)
    }
}

/// [`LuksVolume::open_luks2`] without caller storage for the header (kept out of line, so
/// that its 10 KiB are on the stack only when used).
#[inline(never)]
fn open_with_stack_header<I: BlockIo>(
    mut io: I,
    passphrase: &[u8],
    keyslot: Option<usize>,
    kdf_memory: &mut [u8],
    limits: &KdfLimits,
    json_buffer: Option<&mut [u8]>,
) -> Result<LuksVolume<I>, LuksIoError<I::Error>> {
    let mut header = Luks2Header::EMPTY;
    match json_buffer {
        Some(json) => header.read_into(&mut io, json)?,
        None => read_with_stack_json(&mut io, &mut header)?,
    }
    LuksVolume::open_luks2_header(io, &header, passphrase, keyslot, kdf_memory, limits)
}

/// Reads the header with a [`DEFAULT_JSON_BUFFER`]-byte stack buffer (out of line, as above).
#[inline(never)]
fn read_with_stack_json<I: BlockIo>(io: &mut I, header: &mut Luks2Header) -> Result<(), LuksIoError<I::Error>> {
    header.read_into(io, &mut [0u8; DEFAULT_JSON_BUFFER])
}
