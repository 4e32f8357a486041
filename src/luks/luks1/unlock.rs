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
    // A slot key derived together with the previous keyslot's (see `slot_keys`).
    let mut ahead: Option<(usize, VolumeKey)> = None;
    let mut slots = header.active_keyslots().filter(|&k| keyslot.is_none_or(|want| want == k)).peekable();
    while let Some(k) = slots.next() {
        if let Err(cost) = limits.check_pbkdf2(header.keyslots[k].iterations) {
            refused.get_or_insert((k, cost));
            refused_count += 1;
            continue;
        }
        check_area(header, k, area_len)?;
        let slot_key = match ahead.take() {
            Some((j, key)) if j == k => key,
            _ => {
                let next = slots.peek().copied().filter(|&n| {
                    header.keyslots[n].iterations == header.keyslots[k].iterations
                        && crate::crypto::pbkdf2_many_pays(header.hash, header.key_bytes as usize, 2)
                });
                match next {
                    Some(n) => {
                        let (key, key_n) = slot_keys(header, k, n, passphrase)?;
                        ahead = Some((n, key_n));
                        key
                    }
                    None => slot_key(header, k, passphrase)?,
                }
            }
        };
        let cipher = SectorCipher::new(header.cipher, slot_key.as_bytes())?;
        drop(slot_key);
        let candidate = merge_material(io, area_offset, header, k, &cipher)?;
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

/// The slot keys of keyslots `k` and `n` (same iteration count) in one PBKDF2 call, whose
/// chains share the interleaving kernel: when trying the keyslots in turn, the next one's key
/// comes at little extra cost (the caller checks [`crate::crypto::pbkdf2_many_pays`]).
#[inline(never)]
fn slot_keys(header: &Luks1Header, k: usize, n: usize, passphrase: &[u8]) -> Result<(VolumeKey, VolumeKey), LuksError> {
    let (slot_k, slot_n) = (&header.keyslots[k], &header.keyslots[n]);
    let mut key_k = VolumeKey::zeroed(header.key_bytes as usize)?;
    let mut key_n = VolumeKey::zeroed(header.key_bytes as usize)?;
    let mut jobs = [(&slot_k.salt[..], key_k.as_mut_bytes()), (&slot_n.salt[..], key_n.as_mut_bytes())];
    crate::crypto::pbkdf2_many(header.hash, passphrase, slot_k.iterations, &mut jobs)?;
    Ok((key_k, key_n))
}

/// Checks that keyslot `k`'s key material lies inside the area.
pub(crate) fn check_area(header: &Luks1Header, k: usize, area_len: u64) -> Result<(), LuksError> {
    let r = header.keyslots[k].material_range(header.key_bytes);
    if r.end > area_len {
        return Err(LuksError::KeyMaterialOutsideArea { keyslot: k, end: r.end, area_len });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CipherSpec, HashAlg, OsRng, Pbkdf2Kernel};
    use crate::io::MemIo;
    use crate::luks::luks1::{add_keyslot, format, CreateParams, Iterations};

    /// Keyslots tried in turn with their slot keys derived two at a time (32-byte keys of
    /// SHA-256: one chain each, so two keyslots share the interleaving kernel's lanes): each
    /// passphrase opens its own keyslot, including the ones whose key was derived ahead (1, 3)
    /// and one whose iteration count differs from its neighbour's (2 with 3, then 4 alone).
    #[test]
    fn keyslots_derived_in_pairs_open_each_its_own_passphrase() {
        for (spec, hash) in [("aes-128-xts-plain64", HashAlg::Sha256), ("aes-128-cbc-essiv:sha256", HashAlg::Sha1)] {
            let mut disk = std::vec![0u8; 3 << 20];
            let cipher = CipherSpec::parse_sized(spec).unwrap();
            let mut params = CreateParams { cipher, hash, iterations: Iterations::fixed(1000) };
            let mut io = MemIo::new(&mut disk);
            let (mut header, key) = format(&mut io, 0, &mut params, b"p0", &mut OsRng).unwrap();
            for (k, iterations) in [(1, 1000), (2, 1001), (3, 1001), (4, 1000)] {
                let pass = std::format!("p{k}");
                add_keyslot(&mut io, 0, None, &mut header, &key, pass.as_bytes(), Some(k), iterations, &mut OsRng)
                    .unwrap();
            }
            if hash == HashAlg::Sha256 && Pbkdf2Kernel::best() != Pbkdf2Kernel::Scalar {
                assert!(crate::crypto::pbkdf2_many_pays(hash, header.key_bytes as usize, 2));
            }
            for k in 0..5 {
                let pass = std::format!("p{k}");
                let (slot, got) = unlock_keyslot(&mut io, 0, None, &header, pass.as_bytes(), None).unwrap();
                assert_eq!((slot, got.as_bytes()), (k, key.as_bytes()), "{spec}: passphrase of keyslot {k}");
            }
            let wrong = unlock_keyslot(&mut io, 0, None, &header, b"p9", None).unwrap_err();
            assert!(matches!(wrong, LuksIoError::Luks(LuksError::WrongPassphrase)), "{spec}: {wrong:?}");
        }
    }
}
