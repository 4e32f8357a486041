//! Unlocking a LUKS1 header: passphrase -> slot key -> key material -> volume key, checked
//! against the master-key digest.
//!
//! The header may sit anywhere in a device (qcow2 embeds it at its FDE extension offset): all
//! key-material offsets are relative to `area_offset`, and with `area_len` the reads are
//! confined to that area. Key material is read, decrypted and AF-merged a few sectors at a
//! time through one fixed stack buffer, so memory use does not depend on the stripe count.

use super::header::{Luks1Header, DIGEST_LEN, HEADER_LEN, KEYSLOTS};
use crate::crypto::{ct_eq, pbkdf2, AfMerge, SectorCipher, VolumeKey};
use crate::io::BlockIo;
use crate::luks::{KdfLimits, LuksError, LuksIoError, SECTOR};
use zeroize::Zeroize;

/// Key material is processed this many bytes at a time.
const CHUNK: usize = 8 * SECTOR;

impl Luks1Header {
    /// Reads and validates the phdr at `area_offset` of `io` (0 for a standalone volume, the
    /// FDE extension offset in a qcow2 image).
    pub fn read<I: BlockIo>(io: &mut I, area_offset: u64) -> Result<Luks1Header, LuksIoError<I::Error>> {
        read_header(io, area_offset)
    }
}

fn read_header<I: BlockIo>(io: &mut I, area_offset: u64) -> Result<Luks1Header, LuksIoError<I::Error>> {
    let size = io.size().map_err(LuksIoError::Io)?;
    let available = size.saturating_sub(area_offset);
    if available < HEADER_LEN as u64 {
        return Err(LuksError::TooShort { len: available as usize, needed: HEADER_LEN }.into());
    }
    let mut b = [0u8; HEADER_LEN];
    crate::io::read_aligned(io, area_offset, &mut b).map_err(LuksIoError::Io)?;
    Ok(Luks1Header::parse(&b)?)
}

/// Unlocks with `passphrase`, trying every active keyslot in order; returns the volume key.
///
/// `area_offset` is where the phdr starts in `io` (0 for a standalone volume, the FDE extension
/// offset for qcow2); with `area_len = Some(n)` key material outside `area_offset..+n` is
/// refused with [`LuksError::KeyMaterialOutsideArea`]. A passphrase that opens no keyslot gives
/// [`LuksError::WrongPassphrase`]. KDF costs are checked against [`KdfLimits::DEFAULT`] (see
/// [`unlock_with_limits`]). Nothing is written.
pub fn unlock<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
    header: &Luks1Header,
    passphrase: &[u8],
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    unlock_keyslot(io, area_offset, area_len, header, passphrase, None).map(|(_, key)| key)
}

/// Like [`unlock`], but tries only `keyslot` when given; returns the keyslot that matched too.
/// Costs are checked against [`KdfLimits::DEFAULT`]; see [`unlock_with_limits`].
pub fn unlock_keyslot<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
    header: &Luks1Header,
    passphrase: &[u8],
    keyslot: Option<usize>,
) -> Result<(usize, VolumeKey), LuksIoError<I::Error>> {
    unlock_with_limits(io, area_offset, area_len, header, passphrase, keyslot, &KdfLimits::DEFAULT)
}

/// Like [`unlock_keyslot`], with the caller's KDF limits, checked before any PBKDF2 work: a
/// master-key digest over the limit gives [`LuksError::DigestKdfRefused`]; a chosen keyslot over it
/// [`LuksError::KeyslotKdfRefused`]. Without a chosen keyslot, keyslots over the limit are skipped,
/// and when no other keyslot matches the error is [`LuksError::KeyslotsRefused`] (naming the first
/// skipped one), not [`LuksError::WrongPassphrase`].
pub fn unlock_with_limits<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    area_len: Option<u64>,
    header: &Luks1Header,
    passphrase: &[u8],
    keyslot: Option<usize>,
    limits: &KdfLimits,
) -> Result<(usize, VolumeKey), LuksIoError<I::Error>> {
    let area_len = match area_len {
        Some(n) => n,
        None => io.size().map_err(LuksIoError::Io)?.saturating_sub(area_offset),
    };
    if let Some(k) = keyslot {
        if k >= KEYSLOTS {
            return Err(LuksError::KeyslotOutOfRange { keyslot: k }.into());
        }
        if !header.keyslots[k].active {
            return Err(LuksError::KeyslotInactive { keyslot: k }.into());
        }
        limits
            .check_pbkdf2(header.keyslots[k].iterations)
            .map_err(|cost| LuksError::KeyslotKdfRefused { keyslot: k, cost })?;
    }
    if header.active_keyslots().next().is_none() {
        return Err(LuksError::NoActiveKeyslot.into());
    }
    limits.check_pbkdf2(header.mk_iterations).map_err(|cost| LuksError::DigestKdfRefused { cost })?;
    let mut refused = None;
    let mut refused_count = 0;
    for k in header.active_keyslots().filter(|&k| keyslot.is_none_or(|want| want == k)) {
        if let Err(cost) = limits.check_pbkdf2(header.keyslots[k].iterations) {
            refused.get_or_insert((k, cost));
            refused_count += 1;
            continue;
        }
        let candidate = merge_keyslot(io, area_offset, area_len, header, passphrase, k)?;
        if verify_key(header, &candidate)? {
            return Ok((k, candidate));
        }
    }
    Err(match refused {
        Some((keyslot, cost)) => LuksError::KeyslotsRefused { keyslot, cost, refused: refused_count },
        None => LuksError::WrongPassphrase,
    }
    .into())
}

/// Whether `key` matches the header's master-key digest (compared in constant time).
pub fn verify_key(header: &Luks1Header, key: &VolumeKey) -> Result<bool, LuksError> {
    let mut digest = [0u8; DIGEST_LEN];
    pbkdf2(header.hash, key.as_bytes(), &header.mk_salt, header.mk_iterations, &mut digest)?;
    let ok = ct_eq(&digest, &header.mk_digest);
    digest.zeroize();
    Ok(ok)
}

/// The slot key of keyslot `k`: PBKDF2 of the passphrase with the keyslot's salt and count.
#[inline(never)]
pub(crate) fn slot_key(header: &Luks1Header, k: usize, passphrase: &[u8]) -> Result<VolumeKey, LuksError> {
    let slot = &header.keyslots[k];
    let mut key = VolumeKey::zeroed(header.key_bytes as usize)?;
    pbkdf2(header.hash, passphrase, &slot.salt, slot.iterations, key.as_mut_bytes())?;
    Ok(key)
}

/// Checks that keyslot `k`'s key material lies inside the area.
pub(crate) fn check_area(header: &Luks1Header, k: usize, area_len: u64) -> Result<(), LuksError> {
    let r = header.keyslots[k].material_range(header.key_bytes);
    if r.end > area_len {
        return Err(LuksError::KeyMaterialOutsideArea { keyslot: k, end: r.end, area_len });
    }
    Ok(())
}

/// Derives keyslot `k`'s slot key and AF-merges its decrypted key material into a candidate
/// volume key (correct only if the passphrase was).
fn merge_keyslot<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    area_len: u64,
    header: &Luks1Header,
    passphrase: &[u8],
    k: usize,
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    check_area(header, k, area_len)?;
    let slot_key = slot_key(header, k, passphrase)?;
    let cipher = SectorCipher::new(header.cipher, slot_key.as_bytes())?;
    drop(slot_key);
    merge_material(io, area_offset, header, k, &cipher)
}

/// Reads, decrypts and AF-merges keyslot `k`'s key material through a 4 KiB stack buffer
/// (out of line, so that the buffer is not on the stack while PBKDF2 runs).
#[inline(never)]
fn merge_material<I: BlockIo>(
    io: &mut I,
    area_offset: u64,
    header: &Luks1Header,
    k: usize,
    cipher: &SectorCipher,
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    let slot = &header.keyslots[k];
    let mut merge = AfMerge::new(header.hash, header.key_bytes as usize, slot.stripes)?;
    let range = slot.material_range(header.key_bytes);
    let mut buf = [0u8; CHUNK];
    let mut result = Ok(());
    let mut at = range.start;
    while at < range.end {
        let n = ((range.end - at) as usize).min(CHUNK);
        let chunk = &mut buf[..n];
        if let Err(e) = crate::io::read_aligned(io, area_offset + at, chunk) {
            result = Err(LuksIoError::Io(e));
            break;
        }
        // Key material IVs count sectors from the start of the key material.
        let sector = (at - range.start) / SECTOR as u64;
        if let Err(e) = cipher.decrypt_sectors(chunk, SECTOR, sector) {
            result = Err(e.into());
            break;
        }
        merge.update(chunk);
        at += n as u64;
    }
    buf.zeroize();
    result?;
    Ok(merge.finish().ok_or(LuksError::KeyslotStripes { keyslot: k, stripes: slot.stripes })?)
}
