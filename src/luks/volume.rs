//! The payload of an unlocked LUKS volume (LUKS1 or LUKS2): byte-addressed reads and writes
//! over encrypted sectors.
//!
//! Whole sectors are read into the caller's buffer and decrypted there, one device read and one
//! cipher call per request; only a partial first or last sector goes through a one-sector
//! stack scratch (read-modify-write for writes). Nothing is allocated.

use super::{luks1, KdfLimits, LuksError, LuksIoError, MAGIC, SECTOR};
use crate::crypto::SectorCipher;
use crate::io::BlockIo;
use crate::sector_span::sector_spans;
use zeroize::Zeroize;

/// Largest supported encryption sector (LUKS2 allows 512..=4096).
const MAX_SECTOR: usize = 4096;
/// [`LuksVolume::write_at`] encrypts through a stack buffer of this size.
const WRITE_CHUNK: usize = 16 * 1024;

/// Where and how the payload is encrypted.
#[derive(Debug)]
pub struct DataSegment {
    /// Start of the payload in the device, in bytes.
    pub offset: u64,
    /// Payload length in bytes; `None`: up to the end of the device (rounded down to sectors).
    pub size: Option<u64>,
    /// Encryption sector size (512 for LUKS1; 512..=4096 for LUKS2).
    pub sector_size: usize,
    /// Added to the IV sector. IV sectors count 512-byte units for every sector size (dm-crypt
    /// without `iv_large_sectors`, as cryptsetup sets up LUKS2): the sector at payload byte X
    /// has IV sector X / 512 + iv_tweak.
    pub iv_tweak: u64,
    /// The keyed cipher.
    pub cipher: SectorCipher,
}

/// Choices when opening a volume.
#[derive(Debug, Default)]
pub struct OpenOptions<'m> {
    /// Try only this keyslot.
    pub keyslot: Option<usize>,
    /// Memory for memory-hard KDFs (LUKS2 Argon2): a byte region of any alignment, at least
    /// [`Metadata::kdf_memory_within`](super::luks2::Metadata::kdf_memory_within) bytes; LUKS1
    /// and PBKDF2 keyslots need none.
    pub kdf_memory: Option<&'m mut [u8]>,
    /// The most work and memory the KDFs may cost (default: [`KdfLimits::DEFAULT`]); keyslots
    /// and digests over them are refused before any work is done.
    pub kdf_limits: KdfLimits,
    /// Buffer for the LUKS2 JSON metadata (default: a stack buffer of
    /// [`luks2::DEFAULT_JSON_BUFFER`](super::luks2::DEFAULT_JSON_BUFFER) bytes).
    pub json_buffer: Option<&'m mut [u8]>,
    /// Storage for the LUKS2 header (default: one on the stack, about 10 KiB; see
    /// [`Luks2Header::EMPTY`](super::luks2::Luks2Header::EMPTY)).
    pub header: Option<&'m mut super::luks2::Luks2Header>,
}

/// An unlocked volume over a device.
pub struct LuksVolume<I> {
    io: I,
    segment: DataSegment,
    size: u64,
}

impl<I: BlockIo> LuksVolume<I> {
    /// A volume over `segment` of `io` (already unlocked). The segment must lie inside the
    /// device: [`LuksError::PayloadPastEnd`] for a dynamic segment starting past its end,
    /// [`LuksError::SegmentPastEnd`] for a sized one whose end is past it (or overflows), so that
    /// every device offset of the volume is below the device size. The payload is the
    /// segment's whole sectors.
    pub fn new(mut io: I, segment: DataSegment) -> Result<Self, LuksIoError<I::Error>> {
        let s = segment.sector_size;
        if !s.is_power_of_two() || !(SECTOR..=MAX_SECTOR).contains(&s) {
            return Err(LuksError::SectorSize { sector_size: s }.into());
        }
        let device_size = io.size().map_err(LuksIoError::Io)?;
        let size = match segment.size {
            Some(size) => {
                if segment.offset.checked_add(size).is_none_or(|end| end > device_size) {
                    return Err(LuksError::SegmentPastEnd { offset: segment.offset, size, device_size }.into());
                }
                // Whole sectors only (LUKS2 metadata is validated so; a caller's segment too),
                // so that no sector read or written reaches past the segment.
                size / s as u64 * s as u64
            }
            None => {
                if segment.offset > device_size {
                    return Err(LuksError::PayloadPastEnd { payload_offset: segment.offset, device_size }.into());
                }
                (device_size - segment.offset) / s as u64 * s as u64
            }
        };
        Ok(LuksVolume { io, segment, size })
    }

    /// Opens a LUKS volume at the start of `io` with `passphrase`, whichever its version.
    pub fn open(mut io: I, passphrase: &[u8], options: OpenOptions<'_>) -> Result<Self, LuksIoError<I::Error>> {
        let mut start = [0u8; 8];
        let size = io.size().map_err(LuksIoError::Io)?;
        if size < start.len() as u64 {
            return Err(LuksError::TooShort { len: size as usize, needed: luks1::HEADER_LEN }.into());
        }
        crate::io::read_aligned(&mut io, 0, &mut start).map_err(LuksIoError::Io)?;
        if start[..6] != MAGIC {
            return Err(LuksError::BadMagic.into());
        }
        match u16::from_be_bytes([start[6], start[7]]) {
            1 => LuksVolume::open_luks1_with_limits(io, passphrase, options.keyslot, &options.kdf_limits),
            2 => LuksVolume::open_luks2(io, passphrase, options),
            version => Err(LuksError::UnsupportedVersion { version }.into()),
        }
    }

    /// Opens a standalone LUKS1 volume: payload at `payload_offset`, IV sector = payload offset
    /// / 512.
    /// KDF costs are checked against [`KdfLimits::DEFAULT`].
    pub fn open_luks1(io: I, passphrase: &[u8], keyslot: Option<usize>) -> Result<Self, LuksIoError<I::Error>> {
        LuksVolume::open_luks1_with_limits(io, passphrase, keyslot, &KdfLimits::DEFAULT)
    }

    /// [`LuksVolume::open_luks1`] with the caller's KDF limits (see
    /// [`luks1::unlock_with_limits`]).
    pub fn open_luks1_with_limits(
        mut io: I,
        passphrase: &[u8],
        keyslot: Option<usize>,
        limits: &KdfLimits,
    ) -> Result<Self, LuksIoError<I::Error>> {
        let header = luks1::Luks1Header::read(&mut io, 0)?;
        let (_, key) = luks1::unlock_with_limits(&mut io, 0, None, &header, passphrase, keyslot, limits)?;
        let cipher = SectorCipher::new(header.cipher, key.as_bytes())?;
        let segment =
            DataSegment { offset: header.payload_offset_bytes(), size: None, sector_size: SECTOR, iv_tweak: 0, cipher };
        LuksVolume::new(io, segment)
    }

    /// Payload size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The segment.
    pub fn segment(&self) -> &DataSegment {
        &self.segment
    }

    /// The device.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// Gives the device back.
    pub fn into_inner(self) -> I {
        self.io
    }

    /// Makes previous writes durable.
    pub fn flush(&mut self) -> Result<(), LuksIoError<I::Error>> {
        self.io.flush().map_err(LuksIoError::Io)
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), LuksError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(LuksError::OutOfRange { offset, len: len as u64, size: self.size }),
        }
    }

    fn iv_sector(&self, sector: u64) -> u64 {
        // `sector` < size / sector_size, so the product stays below size / 512; the tweak wraps
        // as dm-crypt's IV arithmetic does.
        sector.wrapping_mul((self.segment.sector_size / SECTOR) as u64).wrapping_add(self.segment.iv_tweak)
    }

    /// Device offset of payload sector `sector`, checked (never wraps to the header).
    fn device_offset(&self, sector: u64, len: usize) -> Result<u64, LuksError> {
        let s = self.segment.sector_size as u64;
        sector
            .checked_mul(s)
            .and_then(|at| self.segment.offset.checked_add(at))
            .filter(|at| at.checked_add(len as u64).is_some())
            .ok_or(LuksError::OutOfRange { offset: sector.saturating_mul(s), len: len as u64, size: self.size })
    }

    /// En/decrypts whole sectors whose IV sectors step by sector_size / 512: one cipher call
    /// (for XTS, one hal batch call) for every sector size.
    fn crypt_sectors(&self, buf: &mut [u8], first_iv: u64, encrypt: bool) -> Result<(), LuksError> {
        let s = self.segment.sector_size;
        let cipher = &self.segment.cipher;
        // `new` checked s in SECTOR..=MAX_SECTOR, so the step is 1..=8.
        let step = core::num::NonZeroU64::new((s / SECTOR) as u64).ok_or(LuksError::SectorSize { sector_size: s })?;
        Ok(if encrypt {
            cipher.encrypt_sectors_step(buf, s, first_iv, step)
        } else {
            cipher.decrypt_sectors_step(buf, s, first_iv, step)
        }?)
    }

    /// Reads and decrypts whole sectors starting at payload sector `sector` into `buf`.
    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), LuksIoError<I::Error>> {
        let at = self.device_offset(sector, buf.len())?;
        crate::io::read_aligned(&mut self.io, at, buf).map_err(LuksIoError::Io)?;
        self.crypt_sectors(buf, self.iv_sector(sector), false)?;
        Ok(())
    }

    /// Encrypts whole plaintext sectors in `buf` in place and writes them at payload sector `sector`.
    fn write_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), LuksIoError<I::Error>> {
        let at = self.device_offset(sector, buf.len())?;
        self.crypt_sectors(buf, self.iv_sector(sector), true)?;
        self.io.write_at(at, buf).map_err(LuksIoError::Io)
    }

    /// Writes `data` at byte `within` of payload sector `sector` (read-modify-write).
    fn write_partial(&mut self, sector: u64, within: usize, data: &[u8]) -> Result<(), LuksIoError<I::Error>> {
        let s = self.segment.sector_size;
        let mut scratch = [0u8; MAX_SECTOR];
        let r = self.read_sectors(sector, &mut scratch[..s]).and_then(|()| {
            scratch[within..within + data.len()].copy_from_slice(data);
            self.write_sectors(sector, &mut scratch[..s])
        });
        scratch.zeroize();
        r
    }

    /// Reads `buf.len()` bytes of plaintext at payload byte `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), LuksIoError<I::Error>> {
        self.check(offset, buf.len())?;
        let s = self.segment.sector_size;
        let mut done = 0;
        for span in sector_spans(offset, buf.len(), s, usize::MAX) {
            let out = &mut buf[done..done + span.len];
            if span.is_whole(s) {
                // The aligned middle: straight into the caller's buffer, one read, one decrypt.
                self.read_sectors(span.sector, out)?;
            } else {
                let mut scratch = [0u8; MAX_SECTOR];
                let r = self.read_sectors(span.sector, &mut scratch[..s]);
                out.copy_from_slice(&scratch[span.within..span.within + span.len]);
                scratch.zeroize();
                r?;
            }
            done += span.len;
        }
        Ok(())
    }

    /// Encrypts `buf` in place and writes it at payload byte `offset`: the fast path, one
    /// encrypt and one device write for the aligned part. `buf` is left holding ciphertext
    /// where it covered whole sectors.
    ///
    /// Reads honour [`BlockIo::block_size`]; writes go to the device in whole volume sectors
    /// (512 or 4096 bytes), so a device whose blocks are larger than the volume's sectors must
    /// accept sector-sized writes.
    pub fn write_in_place(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), LuksIoError<I::Error>> {
        self.check(offset, buf.len())?;
        let s = self.segment.sector_size;
        let mut done = 0;
        for span in sector_spans(offset, buf.len(), s, usize::MAX) {
            let part = &mut buf[done..done + span.len];
            if span.is_whole(s) {
                self.write_sectors(span.sector, part)?;
            } else {
                self.write_partial(span.sector, span.within, part)?;
            }
            done += span.len;
        }
        Ok(())
    }

    /// Writes `data` at payload byte `offset`, encrypting through a stack buffer (`data` is
    /// left untouched; see [`LuksVolume::write_in_place`] for the zero-copy path).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), LuksIoError<I::Error>> {
        self.check(offset, data.len())?;
        let s = self.segment.sector_size;
        let mut chunk = [0u8; WRITE_CHUNK];
        let mut result = Ok(());
        let mut done = 0;
        for span in sector_spans(offset, data.len(), s, WRITE_CHUNK) {
            let part = &data[done..done + span.len];
            result = if span.is_whole(s) {
                chunk[..span.len].copy_from_slice(part);
                self.write_sectors(span.sector, &mut chunk[..span.len])
            } else {
                self.write_partial(span.sector, span.within, part)
            };
            if result.is_err() {
                break;
            }
            done += span.len;
        }
        chunk.zeroize();
        result
    }
}

impl<I> core::fmt::Debug for LuksVolume<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LuksVolume").field("segment", &self.segment).field("size", &self.size).finish_non_exhaustive()
    }
}
