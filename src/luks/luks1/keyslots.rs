//! Luks1Keyslot management on an existing LUKS1 header: add a passphrase, remove one (its key
//! material overwritten, as QEMU iotest 294 requires), change one.
//!
//! Every change writes key material first and the header last, so an interruption leaves the
//! old header valid; removal overwrites the material before disabling the slot.

use super::header::{Luks1Header, HEADER_LEN, KEYSLOTS};
use super::unlock::{check_area, unlock_with_limits};
use crate::crypto::{pbkdf2, AfSplit, SectorCipher, VolumeKey};
use crate::io::BlockIo;
use crate::luks::{KdfLimits, LuksError, LuksIoError, SECTOR};
use zeroize::Zeroize;

const CHUNK: usize = 8 * SECTOR;

fn random<R: rand_core::TryCryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) -> Result<(), LuksError> {
    rng.try_fill_bytes(out).map_err(|_| LuksError::Crypto(crate::crypto::Error::Random))
}

/// Writes the phdr at `area_offset` (validated first).
pub(crate) fn write_header<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    header: &Luks1Header,
) -> Result<(), LuksIoError<I::Error>> {
    header.validate()?;
    io.write_at(area_offset, &header.to_bytes()).map_err(LuksIoError::Io)
}

/// Writes the phdr followed by zeros up to the first key material (4096 bytes), as at creation.
pub(crate) fn write_header_padded<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    header: &Luks1Header,
) -> Result<(), LuksIoError<I::Error>> {
    let mut b = [0u8; 8 * SECTOR];
    b[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    io.write_at(area_offset, &b).map_err(LuksIoError::Io)
}

/// Fills keyslot `k` for `passphrase`: new salt, AF-split key material encrypted with the slot
/// key and written at the keyslot's offset; then marks it active in `header` (not on disk).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_keyslot<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    area_offset: u64,
    header: &mut Luks1Header,
    k: usize,
    passphrase: &[u8],
    key: &VolumeKey,
    iterations: u32,
    rng: &mut R,
) -> Result<(), LuksIoError<I::Error>> {
    if iterations == 0 || iterations > super::MAX_ITERATIONS {
        return Err(LuksError::KeyslotIterations { keyslot: k, iterations }.into());
    }
    let slot = &mut header.keyslots[k];
    random(rng, &mut slot.salt)?;
    slot.iterations = iterations;
    let slot = *slot;
    let mut slot_key = VolumeKey::zeroed(header.key_bytes as usize)?;
    pbkdf2(header.hash, passphrase, &slot.salt, slot.iterations, slot_key.as_mut_bytes())?;
    let cipher = SectorCipher::new(header.cipher, slot_key.as_bytes())?;
    drop(slot_key);
    let mut split = AfSplit::new(header.hash, key, slot.stripes)?;
    let range = slot.material_range(header.key_bytes);
    let mut buf = [0u8; CHUNK];
    let mut at = range.start;
    let mut result = Ok(());
    while at < range.end {
        let n = ((range.end - at) as usize).min(CHUNK);
        let chunk = &mut buf[..n];
        let step = split
            .fill(chunk, rng)
            .and_then(|()| cipher.encrypt_sectors(chunk, SECTOR, (at - range.start) / SECTOR as u64))
            .map_err(LuksIoError::from)
            .and_then(|()| io.write_at(area_offset + at, chunk).map_err(LuksIoError::Io));
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        at += n as u64;
    }
    buf.zeroize();
    result?;
    header.keyslots[k].active = true;
    Ok(())
}

/// Adds `new_passphrase` for `key` (the volume key, from an unlock) in `keyslot` or the first
/// free one; writes key material and header. Returns the keyslot used.
#[allow(clippy::too_many_arguments)]
pub fn add_keyslot<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
    header: &mut Luks1Header,
    key: &VolumeKey,
    new_passphrase: &[u8],
    keyslot: Option<usize>,
    iterations: u32,
    rng: &mut R,
) -> Result<usize, LuksIoError<I::Error>> {
    let k = match keyslot {
        Some(k) if k >= KEYSLOTS => return Err(LuksError::KeyslotOutOfRange { keyslot: k }.into()),
        Some(k) if header.keyslots[k].active => return Err(LuksError::KeyslotActive { keyslot: k }.into()),
        Some(k) => k,
        None => header.keyslots.iter().position(|s| !s.active).ok_or(LuksError::NoFreeKeyslot)?,
    };
    let area_len = area_len_or_device(io, area_offset, area_len)?;
    check_area(header, k, area_len)?;
    let mut updated = header.clone();
    write_keyslot(io, area_offset, &mut updated, k, new_passphrase, key, iterations, rng)?;
    // The key material is durable before the header names it.
    io.flush().map_err(LuksIoError::Io)?;
    write_header(io, area_offset, &updated)?;
    io.flush().map_err(LuksIoError::Io)?;
    *header = updated;
    Ok(k)
}

/// Disables keyslot `k` after overwriting its key material with random bytes, so that an old
/// copy of the header cannot bring the passphrase back. Refuses the only active keyslot
/// unless `allow_last`.
///
/// The material is wiped (flushed) before the header write that disables the keyslot, as
/// cryptsetup's `LUKS_del_key` orders it: a crash in between leaves the keyslot active with
/// its material gone, and the guard still counts it (the header is all it can see without the
/// passphrases), so removing another keyslot then may remove the last one that works. Found by
/// the `luks_volume_model` fuzz target; unlock every passphrase you mean to keep before
/// removing keyslots after an interrupted remove.
pub fn remove_keyslot<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
    header: &mut Luks1Header,
    k: usize,
    allow_last: bool,
    rng: &mut R,
) -> Result<(), LuksIoError<I::Error>> {
    if k >= KEYSLOTS {
        return Err(LuksError::KeyslotOutOfRange { keyslot: k }.into());
    }
    if !header.keyslots[k].active {
        return Err(LuksError::KeyslotInactive { keyslot: k }.into());
    }
    if !allow_last && header.active_keyslots().count() == 1 {
        return Err(LuksError::LastKeyslot { keyslot: k }.into());
    }
    let area_len = area_len_or_device(io, area_offset, area_len)?;
    check_area(header, k, area_len)?;
    let range = header.keyslots[k].material_range(header.key_bytes);
    let mut buf = [0u8; CHUNK];
    let mut at = range.start;
    while at < range.end {
        let n = ((range.end - at) as usize).min(CHUNK);
        random(rng, &mut buf[..n])?;
        io.write_at(area_offset + at, &buf[..n]).map_err(LuksIoError::Io)?;
        at += n as u64;
    }
    io.flush().map_err(LuksIoError::Io)?;
    let mut updated = header.clone();
    let slot = &mut updated.keyslots[k];
    slot.active = false;
    slot.iterations = 0;
    slot.salt = [0; 32];
    write_header(io, area_offset, &updated)?;
    io.flush().map_err(LuksIoError::Io)?;
    *header = updated;
    Ok(())
}

/// Replaces the passphrase `old` (of `keyslot`, or whichever keyslot it opens) by `new`.
/// When a keyslot is free the new passphrase goes there first and the old keyslot is removed
/// afterwards (as cryptsetup does), so an interruption never loses both; otherwise the keyslot
/// is rewritten in place. Returns the keyslot now holding `new`.
#[allow(clippy::too_many_arguments)]
pub fn change_passphrase<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
    header: &mut Luks1Header,
    old: &[u8],
    new: &[u8],
    keyslot: Option<usize>,
    iterations: u32,
    rng: &mut R,
) -> Result<usize, LuksIoError<I::Error>> {
    let limits = KdfLimits::DEFAULT;
    change_passphrase_with_limits(io, area_offset, area_len, header, old, new, keyslot, iterations, &limits, rng)
}

/// [`change_passphrase`] with the caller's KDF limits for unlocking with `old` (see
/// [`unlock_with_limits`]).
#[allow(clippy::too_many_arguments)]
pub fn change_passphrase_with_limits<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
    header: &mut Luks1Header,
    old: &[u8],
    new: &[u8],
    keyslot: Option<usize>,
    iterations: u32,
    limits: &KdfLimits,
    rng: &mut R,
) -> Result<usize, LuksIoError<I::Error>> {
    let (k, key) = unlock_with_limits(io, area_offset, area_len, header, old, keyslot, limits)?;
    if header.keyslots.iter().any(|s| !s.active) {
        let new_k = add_keyslot(io, area_offset, area_len, header, &key, new, None, iterations, rng)?;
        remove_keyslot(io, area_offset, area_len, header, k, true, rng)?;
        return Ok(new_k);
    }
    let mut updated = header.clone();
    write_keyslot(io, area_offset, &mut updated, k, new, &key, iterations, rng)?;
    io.flush().map_err(LuksIoError::Io)?;
    write_header(io, area_offset, &updated)?;
    io.flush().map_err(LuksIoError::Io)?;
    *header = updated;
    Ok(k)
}

fn area_len_or_device<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
) -> Result<u64, LuksIoError<I::Error>> {
    match area_len {
        Some(n) => Ok(n),
        None => Ok(io.size().map_err(LuksIoError::Io)?.saturating_sub(area_offset)),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::crypto::{CipherSpec, HashAlg};
    use crate::io::{MemIo, MemIoError};
    use crate::luks::luks1::{format, CreateParams, Iterations};

    use crate::crypto::af::tests::TestRng as Rng;

    /// Notes whether a flush came between the last key-material write and the header write.
    struct Recorder<'a> {
        io: MemIo<'a>,
        flushed_since_material: bool,
        header_after_flush: Option<bool>,
    }

    impl BlockIo for Recorder<'_> {
        type Error = MemIoError;
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MemIoError> {
            self.io.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), MemIoError> {
            if offset == 0 {
                self.header_after_flush.get_or_insert(self.flushed_since_material);
            } else {
                self.flushed_since_material = false;
            }
            self.io.write_at(offset, buf)
        }
        fn flush(&mut self) -> Result<(), MemIoError> {
            self.flushed_since_material = true;
            Ok(())
        }
        fn size(&mut self) -> Result<u64, MemIoError> {
            self.io.size()
        }
    }

    #[test]
    fn key_material_is_flushed_before_the_header_names_it() {
        let mut disk = std::vec![0u8; 4040 * 512];
        let mut rng = Rng(5);
        let mut params =
            CreateParams { cipher: CipherSpec::DEFAULT, hash: HashAlg::Sha256, iterations: Iterations::fixed(1000) };
        let (mut header, key) = format(&mut MemIo::new(&mut disk), 0, &mut params, b"one", &mut rng).unwrap();
        let mut dev = Recorder { io: MemIo::new(&mut disk), flushed_since_material: false, header_after_flush: None };
        add_keyslot(&mut dev, 0, None, &mut header, &key, b"two", None, 1000, &mut rng).unwrap();
        assert_eq!(
            dev.header_after_flush,
            Some(true),
            "add_keyslot: header written before the key material was flushed"
        );
        let mut dev = Recorder { io: MemIo::new(&mut disk), flushed_since_material: false, header_after_flush: None };
        for k in 2..8 {
            add_keyslot(&mut dev, 0, None, &mut header, &key, b"filler", Some(k), 1000, &mut rng).unwrap();
        }
        let mut dev = Recorder { io: MemIo::new(&mut disk), flushed_since_material: false, header_after_flush: None };
        // Every keyslot in use: the passphrase is rewritten in place.
        change_passphrase(&mut dev, 0, None, &mut header, b"two", b"three", None, 1000, &mut rng).unwrap();
        assert_eq!(dev.header_after_flush, Some(true), "change_passphrase: header before the material was flushed");
    }
}
