//! Creating (formatting) a LUKS1 volume the way QEMU does: its slot layout, its defaults, and
//! iteration counts measured on this machine or given explicitly.

use super::header::{Luks1Header, DIGEST_LEN, KEYSLOTS, MIN_PAYLOAD_OFFSET};
use super::keyslot::{Luks1Keyslot, STRIPES};
use super::keyslots::{write_header_padded, write_keyslot};
use crate::crypto::{pbkdf2, CipherSpec, HashAlg, VolumeKey};
use crate::io::BlockIo;
use crate::luks::{LuksError, LuksIoError, SECTOR};

/// QEMU's lower bound for both keyslot and digest iterations when measured.
pub const MIN_ITERATIONS: u32 = 1000;

/// How PBKDF2 iteration counts are chosen.
pub enum Iterations<'c> {
    /// Explicit counts.
    Fixed {
        /// Luks1Keyslot iterations.
        keyslot: u32,
        /// Master-key digest iterations.
        digest: u32,
    },
    /// Counts that take about `ms` milliseconds here (QEMU's `iter-time`, default 2000), measured
    /// with `clock_ns`, a monotonic clock in nanoseconds. As in QEMU (and cryptsetup) the digest
    /// gets an eighth of the keyslot's time; both are at least [`MIN_ITERATIONS`].
    IterTime {
        /// Target time in milliseconds.
        ms: u32,
        /// Monotonic clock, nanoseconds.
        clock_ns: &'c mut dyn FnMut() -> u64,
    },
}

impl Iterations<'_> {
    /// Explicit keyslot iterations, with QEMU's digest rule (an eighth, at least 1000).
    pub fn fixed(keyslot: u32) -> Self {
        Iterations::Fixed { keyslot, digest: (keyslot / 8).max(MIN_ITERATIONS) }
    }

    /// (keyslot iterations, digest iterations) for `hash` and a `key_bytes`-byte key.
    pub fn resolve(&mut self, hash: HashAlg, key_bytes: usize) -> Result<(u32, u32), LuksError> {
        match self {
            Iterations::Fixed { keyslot, digest } => Ok((*keyslot, *digest)),
            Iterations::IterTime { ms, clock_ns } => {
                // Measured with the real output sizes, as QEMU does: the keyslot derives
                // key_bytes (several chains), the digest 20 bytes.
                let budget = |per_sec: u64| per_sec.saturating_mul(*ms as u64) / 1000;
                let clamp = |n: u64| n.clamp(MIN_ITERATIONS as u64, super::MAX_ITERATIONS as u64 / 2) as u32;
                let keyslot = budget(calibrate(hash, key_bytes, *clock_ns)?);
                let digest = budget(calibrate(hash, DIGEST_LEN, *clock_ns)?) / 8;
                Ok((clamp(keyslot), clamp(digest)))
            }
        }
    }
}

/// PBKDF2 iterations per second of `hash` deriving `out_len` (<= 64) bytes, measured with
/// `clock_ns` (doubling the count until a run takes at least 50 ms).
pub fn calibrate(hash: HashAlg, out_len: usize, clock_ns: &mut dyn FnMut() -> u64) -> Result<u64, LuksError> {
    let mut iterations = 1000u32;
    let mut out = [0u8; 64];
    let out = &mut out[..out_len.clamp(1, 64)];
    loop {
        let start = clock_ns();
        pbkdf2(hash, b"qluks calibration", b"qluks salt of 32 bytes, padded..", iterations, out)?;
        let elapsed = clock_ns().saturating_sub(start);
        if elapsed >= 50_000_000 || iterations >= 1 << 30 {
            return Ok((iterations as u64 * 1_000_000_000) / elapsed.max(1));
        }
        iterations *= 2;
    }
}

/// What to create.
pub struct CreateParams<'c> {
    /// Cipher (default aes-256-xts-plain64).
    pub cipher: CipherSpec,
    /// Hash for PBKDF2 and AF (default sha256).
    pub hash: HashAlg,
    /// Iteration counts.
    pub iterations: Iterations<'c>,
}

/// QEMU's layout for `key_bytes`: keyslot key-material offsets (sectors) and the payload offset.
/// Keyslots start at sector 8, each spaced by its key material rounded up to 8 sectors; the
/// payload follows the last (4040 sectors for a 64-byte key).
pub fn layout(key_bytes: u32) -> ([u32; KEYSLOTS], u32) {
    let material = (key_bytes as u64 * STRIPES as u64).div_ceil(SECTOR as u64);
    let spacing = material.next_multiple_of(8) as u32;
    let mut offsets = [0u32; KEYSLOTS];
    for (i, o) in offsets.iter_mut().enumerate() {
        *o = MIN_PAYLOAD_OFFSET + i as u32 * spacing;
    }
    (offsets, MIN_PAYLOAD_OFFSET + KEYSLOTS as u32 * spacing)
}

fn field<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [0u8; N];
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

pub(crate) fn uuid_v4<R: rand_core::TryCryptoRng + ?Sized>(rng: &mut R) -> Result<[u8; 40], LuksError> {
    let mut r = [0u8; 16];
    rng.try_fill_bytes(&mut r).map_err(|_| LuksError::Crypto(crate::crypto::Error::Random))?;
    r[6] = (r[6] & 0x0f) | 0x40;
    r[8] = (r[8] & 0x3f) | 0x80;
    let hex = b"0123456789abcdef";
    let mut out = [0u8; 40];
    let mut at = 0;
    for (i, byte) in r.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = hex[(byte >> 4) as usize];
        out[at + 1] = hex[(byte & 15) as usize];
        at += 2;
    }
    Ok(out)
}

/// Formats a LUKS1 volume in `io` at `area_offset` with one keyslot (0) for `passphrase`;
/// returns the header written and the new volume key.
///
/// Writes the phdr (zero-padded to the first keyslot at 4096 bytes) and keyslot 0's key
/// material; the payload starts at `header.payload_offset_bytes()` after `area_offset`, and
/// sizing the device for it is the caller's business. Key material is written before the
/// header, so an interrupted format leaves no header that points at missing material.
pub fn format<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    area_offset: u64,
    params: &mut CreateParams<'_>,
    passphrase: &[u8],
    rng: &mut R,
) -> Result<(Luks1Header, VolumeKey), LuksIoError<I::Error>> {
    let spec = params.cipher;
    let key_bytes = spec.key_bytes as u32;
    let (slot_iterations, digest_iterations) = params.iterations.resolve(params.hash, spec.key_bytes)?;
    let key = VolumeKey::random(spec.key_bytes, rng)?;
    let mut mk_salt = [0u8; 32];
    rng.try_fill_bytes(&mut mk_salt).map_err(|_| LuksError::Crypto(crate::crypto::Error::Random))?;
    let mut mk_digest = [0u8; DIGEST_LEN];
    pbkdf2(params.hash, key.as_bytes(), &mk_salt, digest_iterations, &mut mk_digest)?;
    let (offsets, payload_offset) = layout(key_bytes);
    let mut keyslots =
        [Luks1Keyslot { active: false, iterations: 0, salt: [0; 32], key_offset: 0, stripes: STRIPES }; 8];
    for (slot, off) in keyslots.iter_mut().zip(offsets) {
        slot.key_offset = off;
    }
    let mut header = Luks1Header {
        cipher_name: field(spec.cipher_name()),
        cipher_mode: field(spec.mode_name()),
        hash_spec: field(params.hash.name()),
        payload_offset,
        key_bytes,
        mk_digest,
        mk_salt,
        mk_iterations: digest_iterations,
        uuid: uuid_v4(rng)?,
        keyslots,
        cipher: spec,
        hash: params.hash,
    };
    write_keyslot(io, area_offset, &mut header, 0, passphrase, &key, slot_iterations, rng)?;
    header.validate()?;
    write_header_padded(io, area_offset, &header)?;
    io.flush().map_err(LuksIoError::Io)?;
    Ok((header, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_layout_puts_the_payload_at_4040_sectors_for_64_byte_keys() {
        let (offsets, payload) = layout(64);
        assert_eq!(offsets, [8, 512, 1016, 1520, 2024, 2528, 3032, 3536]);
        assert_eq!(payload, 4040);
    }

    #[test]
    fn qemu_layout_for_32_byte_keys_spaces_slots_by_256_sectors() {
        let (offsets, payload) = layout(32);
        assert_eq!(offsets[1], 8 + 256);
        assert_eq!(payload, 8 + 8 * 256);
    }

    #[test]
    fn fixed_iterations_give_the_digest_an_eighth_but_at_least_1000() {
        assert_eq!(Iterations::fixed(80_000).resolve(HashAlg::Sha256, 64), Ok((80_000, 10_000)));
        assert_eq!(Iterations::fixed(1000).resolve(HashAlg::Sha256, 64), Ok((1000, 1000)));
    }
}
