//! Unlocking a LUKS2 keyslot: passphrase -> area key (KDF) -> key material decrypted with
//! the area's cipher (IV sectors from 0 at the area start) -> AF-merge -> candidate volume
//! key, accepted when the PBKDF2 digest of the data segment matches (constant time).
//!
//! Key material streams through one fixed stack buffer, whatever its size.
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::luks::luks2::{unlock, unlock_with_limits, verify_key, Luks2Header, DEFAULT_JSON_BUFFER};
//! use qluks::luks::{KdfLimits, LuksIoError};
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut disk = doc_support::luks2_volume(b"secret");
//! let mut io = MemIo::new(&mut disk); // a LUKS2 volume with keyslot 0 for "secret"
//! let mut header = Luks2Header::EMPTY;
//! header.read_into(&mut io, &mut [0u8; DEFAULT_JSON_BUFFER])?;
//! let metadata = &header.metadata;
//!
//! let (keyslot, key) = unlock(&mut io, metadata, b"secret", Some(0), &mut [])?;
//! let (_, digest) = metadata.digest_for_segment(0).expect("the data segment's digest");
//! assert!(keyslot == 0 && verify_key(digest, &key)?);
//!
//! let wrong = unlock(&mut io, metadata, b"guess", None, &mut []);
//! assert!(wrong.is_err_and(|e| e.is_wrong_passphrase()));
//! // Costs are checked before any work: a limit below the keyslot's iterations refuses it.
//! let tight = KdfLimits { pbkdf2_iterations: 100, ..KdfLimits::DEFAULT };
//! let refused = unlock_with_limits(&mut io, metadata, b"secret", None, &mut [], &tight);
//! assert!(refused.is_err_and(|e| e.is_kdf_refused()));
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

use zeroize::Zeroize;

use super::kdf::derive_with;
use super::metadata::{Kdf, Luks2Digest, Luks2Keyslot, Metadata, Priority, MAX_KEYSLOTS};
use super::Luks2Error;
use crate::crypto::argon2::{LaneRunner, Sequential};
use crate::crypto::{ct_eq, pbkdf2, AfMerge, CipherSpec, HashAlg, SectorCipher, VolumeKey};
use crate::io::BlockIo;
use crate::luks::{KdfLimits, LuksError, LuksIoError, SECTOR};

/// Key material is read and decrypted this many bytes at a time.
const CHUNK: usize = 8 * SECTOR;

/// Whether `key` matches `digest` (PBKDF2 of the key, compared in constant time).
pub fn verify_key(digest: &Luks2Digest, key: &VolumeKey) -> Result<bool, LuksError> {
    let hash = HashAlg::from_name(digest.hash.as_str())?;
    let expected = digest.digest.as_slice();
    if expected.len() != hash.digest_len() {
        return Err(Luks2Error::DigestLength { len: expected.len(), hash_len: hash.digest_len() }.into());
    }
    let mut computed = [0u8; 64];
    let computed = &mut computed[..expected.len()];
    pbkdf2(hash, key.as_bytes(), digest.salt.as_slice(), digest.iterations, computed)?;
    let ok = ct_eq(computed, expected);
    computed.zeroize();
    Ok(ok)
}

/// Derives keyslot `id`'s area key from `passphrase`, then decrypts and AF-merges its key
/// material into a candidate volume key (right only if the passphrase was).
pub fn merge_keyslot<I: BlockIo>(
    io: &mut I,
    slot: &Luks2Keyslot,
    passphrase: &[u8],
    kdf_memory: &mut [u8],
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    merge_keyslot_with(io, slot, passphrase, kdf_memory, &Sequential)
}

/// [`merge_keyslot`] with Argon2's lanes run by `runner`.
pub fn merge_keyslot_with<I: BlockIo>(
    io: &mut I,
    slot: &Luks2Keyslot,
    passphrase: &[u8],
    kdf_memory: &mut [u8],
    runner: &dyn LaneRunner,
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    let merge = merge_params(slot)?;
    let area_key = derive_area_key(slot, passphrase, kdf_memory, runner)?;
    merge_with_area_key(io, slot, merge, area_key)
}

/// The area cipher and AF hash of `slot`, checked before any KDF work.
fn merge_params(slot: &Luks2Keyslot) -> Result<(CipherSpec, HashAlg), LuksError> {
    let area = &slot.area;
    let spec = CipherSpec::parse_combined(area.encryption.as_str(), area.key_size as usize)?;
    Ok((spec, HashAlg::from_name(slot.af.hash.as_str())?))
}

/// The key material of `slot` merged with its area key (derived by the caller).
fn merge_with_area_key<I: BlockIo>(
    io: &mut I,
    slot: &Luks2Keyslot,
    (spec, af_hash): (CipherSpec, HashAlg),
    area_key: VolumeKey,
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    let cipher = SectorCipher::new(spec, area_key.as_bytes())?;
    drop(area_key);
    merge_material(io, slot, af_hash, &cipher)
}

/// The hash of two PBKDF2 keyslots whose area keys one [`crate::crypto::pbkdf2_many`] call
/// derives in about the time of one: the same hash, iteration count and area key size, on a
/// kernel with lanes for both (see [`crate::crypto::pbkdf2_many_pays`]).
fn pbkdf2_pair(a: &Luks2Keyslot, b: &Luks2Keyslot) -> Option<HashAlg> {
    match (&a.kdf, &b.kdf) {
        (Kdf::Pbkdf2 { hash, iterations, .. }, Kdf::Pbkdf2 { hash: hash_b, iterations: iterations_b, .. })
            if hash.as_str() == hash_b.as_str() && iterations == iterations_b && a.area.key_size == b.area.key_size =>
        {
            let hash = HashAlg::from_name(hash.as_str()).ok()?;
            crate::crypto::pbkdf2_many_pays(hash, a.area.key_size as usize, 2).then_some(hash)
        }
        _ => None,
    }
}

/// The area keys of PBKDF2 keyslots `a` and `b` (see [`pbkdf2_pair`]) in one call, out of line
/// like [`derive_area_key`].
#[inline(never)]
fn derive_area_keys(
    a: &Luks2Keyslot,
    b: &Luks2Keyslot,
    hash: HashAlg,
    passphrase: &[u8],
) -> Result<(VolumeKey, VolumeKey), LuksError> {
    let (Kdf::Pbkdf2 { iterations, salt: salt_a, .. }, Kdf::Pbkdf2 { salt: salt_b, .. }) = (&a.kdf, &b.kdf) else {
        unreachable!("pbkdf2_pair checked both")
    };
    let mut key_a = VolumeKey::zeroed(a.area.key_size as usize)?;
    let mut key_b = VolumeKey::zeroed(b.area.key_size as usize)?;
    let mut jobs = [(salt_a.as_slice(), key_a.as_mut_bytes()), (salt_b.as_slice(), key_b.as_mut_bytes())];
    crate::crypto::pbkdf2_many(hash, passphrase, *iterations, &mut jobs)?;
    Ok((key_a, key_b))
}

/// The KDF step, out of line: the key-material buffer of [`merge_material`] is not on the
/// stack while PBKDF2 or Argon2 runs (the deepest point of an unlock).
#[inline(never)]
fn derive_area_key(
    slot: &Luks2Keyslot,
    passphrase: &[u8],
    kdf_memory: &mut [u8],
    runner: &dyn LaneRunner,
) -> Result<VolumeKey, LuksError> {
    let mut area_key = VolumeKey::zeroed(slot.area.key_size as usize)?;
    derive_with(&slot.kdf, passphrase, area_key.as_mut_bytes(), kdf_memory, runner)?;
    Ok(area_key)
}

/// Reads, decrypts and AF-merges keyslot `slot`'s key material (a 4 KiB stack buffer).
#[inline(never)]
fn merge_material<I: BlockIo>(
    io: &mut I,
    slot: &Luks2Keyslot,
    af_hash: HashAlg,
    cipher: &SectorCipher,
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    let area = &slot.area;
    let mut merge = AfMerge::new(af_hash, slot.key_size as usize, slot.af.stripes)?;
    // Validated metadata: the material lies inside the area, which lies inside the device's
    // keyslots area.
    let len = slot.material_len();
    let mut buf = [0u8; CHUNK];
    let mut result = Ok(());
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(CHUNK);
        let chunk = &mut buf[..n];
        if let Err(e) = crate::io::read_aligned(io, area.offset + done, chunk) {
            result = Err(LuksIoError::Io(e));
            break;
        }
        if let Err(e) = cipher.decrypt_sectors(chunk, SECTOR, done / SECTOR as u64) {
            result = Err(e.into());
            break;
        }
        merge.update(chunk);
        done += n as u64;
    }
    buf.zeroize();
    result?;
    Ok(merge.finish().ok_or(LuksError::KeyslotStripes { keyslot: 0, stripes: slot.af.stripes })?)
}

/// Unlocks the data segment's volume key with `passphrase`.
///
/// With `keyslot = None`, every keyslot bound to the data segment's digest is tried, high
/// priority first, skipping `ignore` ones; with `Some(k)`, only keyslot `k`. Argon2 keyslots
/// work in `kdf_memory`, a byte region of any alignment (size it in bytes with
/// [`Metadata::kdf_memory_within`]; PBKDF2-only volumes can pass `&mut []`). Returns the keyslot that matched and the volume key; a passphrase that
/// opens none gives [`LuksError::WrongPassphrase`]. KDF costs are checked against
/// [`KdfLimits::DEFAULT`] (see [`unlock_with_limits`]). Nothing is written.
pub fn unlock<I: BlockIo>(
    io: &mut I,
    metadata: &Metadata,
    passphrase: &[u8],
    keyslot: Option<usize>,
    kdf_memory: &mut [u8],
) -> Result<(usize, VolumeKey), LuksIoError<I::Error>> {
    unlock_with_limits(io, metadata, passphrase, keyslot, kdf_memory, &KdfLimits::DEFAULT)
}

/// [`unlock`] with the caller's KDF limits, checked before any KDF work: the digest's PBKDF2
/// iterations over the limit give [`LuksError::DigestKdfRefused`], a chosen keyslot over it
/// [`LuksError::KeyslotKdfRefused`]. Without a chosen keyslot, keyslots over the limits are not
/// tried, and when no other keyslot matches the error is [`LuksError::KeyslotsRefused`] (naming
/// the first one skipped), not [`LuksError::WrongPassphrase`].
pub fn unlock_with_limits<I: BlockIo>(
    io: &mut I,
    metadata: &Metadata,
    passphrase: &[u8],
    keyslot: Option<usize>,
    kdf_memory: &mut [u8],
    limits: &KdfLimits,
) -> Result<(usize, VolumeKey), LuksIoError<I::Error>> {
    unlock_with_runner(io, metadata, passphrase, keyslot, kdf_memory, limits, &Sequential)
}

/// [`unlock_with_limits`] with Argon2's lanes run by `runner` (for example one thread per
/// lane; see [`LaneRunner`]).
pub fn unlock_with_runner<I: BlockIo>(
    io: &mut I,
    metadata: &Metadata,
    passphrase: &[u8],
    keyslot: Option<usize>,
    kdf_memory: &mut [u8],
    limits: &KdfLimits,
    runner: &dyn LaneRunner,
) -> Result<(usize, VolumeKey), LuksIoError<I::Error>> {
    let (segment, _) = metadata.data_segment().ok_or(Luks2Error::NoDataSegment)?;
    let (_, digest) = metadata.digest_for_segment(segment).ok_or(Luks2Error::NoDigest { segment })?;
    let bound = |k: usize| digest.keyslots & (1 << k) != 0 && metadata.keyslots[k].is_some();

    if let Some(k) = keyslot {
        if k >= MAX_KEYSLOTS {
            return Err(LuksError::KeyslotOutOfRange { keyslot: k }.into());
        }
        if metadata.keyslots[k].is_none() {
            return Err(LuksError::KeyslotInactive { keyslot: k }.into());
        }
        if !bound(k) {
            return Err(Luks2Error::KeyslotNotBound { keyslot: k as u8, segment }.into());
        }
        if let Some(slot) = &metadata.keyslots[k] {
            limits.check(&slot.kdf).map_err(|cost| LuksError::KeyslotKdfRefused { keyslot: k, cost })?;
        }
    } else if !(0..MAX_KEYSLOTS).any(bound) {
        return Err(LuksError::NoActiveKeyslot.into());
    }
    limits.check_pbkdf2(digest.iterations).map_err(|cost| LuksError::DigestKdfRefused { cost })?;

    // A chosen keyslot is tried whatever its priority; otherwise high before normal.
    let mut order = [0usize; MAX_KEYSLOTS];
    let mut count = 0;
    for priority in [Priority::High, Priority::Normal] {
        for (k, slot) in metadata.keyslots.iter().enumerate() {
            let wanted = match (keyslot, slot) {
                (Some(want), Some(_)) => want == k && priority == Priority::High,
                (None, Some(slot)) => bound(k) && slot.priority == priority,
                (_, None) => false,
            };
            if wanted {
                order[count] = k;
                count += 1;
            }
        }
    }
    let mut refused = None;
    let mut refused_count = 0;
    // An area key derived together with the previous keyslot's (see `pbkdf2_pair`).
    let mut ahead: Option<(usize, VolumeKey)> = None;
    for (pos, &k) in order[..count].iter().enumerate() {
        let Some(slot) = &metadata.keyslots[k] else { continue };
        if let Err(cost) = limits.check(&slot.kdf) {
            refused.get_or_insert((k, cost));
            refused_count += 1;
            continue;
        }
        let merge = merge_params(slot)?;
        let area_key = match ahead.take() {
            Some((j, key)) if j == k => key,
            _ => {
                // The next keyslot to try, when its area key comes at little extra cost.
                let next = order[pos + 1..count].first().and_then(|&n| {
                    let other = metadata.keyslots[n].as_ref().filter(|o| limits.check(&o.kdf).is_ok())?;
                    merge_params(other).ok()?;
                    Some((n, other, pbkdf2_pair(slot, other)?))
                });
                match next {
                    Some((n, other, hash)) => {
                        let (key, key_n) = derive_area_keys(slot, other, hash, passphrase)?;
                        ahead = Some((n, key_n));
                        key
                    }
                    None => derive_area_key(slot, passphrase, kdf_memory, runner)?,
                }
            }
        };
        let key = merge_with_area_key(io, slot, merge, area_key).map_err(|e| match e {
            LuksIoError::Luks(LuksError::KeyslotStripes { stripes, .. }) => {
                LuksIoError::Luks(LuksError::KeyslotStripes { keyslot: k, stripes })
            }
            e => e,
        })?;
        if verify_key(digest, &key)? {
            return Ok((k, key));
        }
    }
    Err(match refused {
        Some((keyslot, cost)) => LuksError::KeyslotsRefused { keyslot, cost, refused: refused_count },
        None => LuksError::WrongPassphrase,
    }
    .into())
}
