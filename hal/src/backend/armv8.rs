//! aarch64 ARMv8 Cryptography Extensions backend: AESE/AESMC and AESD/AESIMC on NEON
//! registers, eight blocks in flight.
//!
//! AESE+AESMC pairs are fused by most cores but still have a latency of a few cycles, so
//! independent blocks are interleaved exactly as in the AES-NI backend: XTS and ECB eight blocks
//! per round loop, CBC decryption too, CBC encryption across up to eight sectors' chains. XTS
//! tweaks advance by x^8 with one PMULL each.
//!
//! Every kernel is an `unsafe fn` with `#[target_feature(enable = "neon,aes")]`: the caller (the
//! dispatcher in `backend/mod.rs`) must know the CPU has FEAT_AES (and FEAT_PMULL, which Rust's
//! `aes` feature includes).
use super::{steal_tail, xts_whole_blocks, ChainIvs};
use crate::key::RoundKeys;
use crate::BLOCK;
use core::arch::aarch64::*;

/// Round keys loaded into vector registers (`rounds + 1` of the 15 slots used).
struct Keys {
    k: [uint8x16_t; 15],
    rounds: usize,
}

impl Drop for Keys {
    /// The stack copy of the round keys is wiped (registers are left to be overwritten).
    fn drop(&mut self) {
        let len = core::mem::size_of_val(&self.k);
        // SAFETY: vector values are plain bytes with no invalid patterns, and the slice covers
        // exactly `self.k`, which is exclusively borrowed here.
        let bytes = unsafe { core::slice::from_raw_parts_mut(self.k.as_mut_ptr().cast::<u8>(), len) };
        zeroize::Zeroize::zeroize(bytes);
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_keys(keys: &[[u8; BLOCK]; 15], rounds: usize) -> Keys {
    let mut k = [vdupq_n_u8(0); 15];
    for (reg, key) in k.iter_mut().zip(keys) {
        *reg = load(key, 0);
    }
    Keys { k, rounds }
}

/// Loads the 16 bytes at `buf[off..off + 16]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load(buf: &[u8], off: usize) -> uint8x16_t {
    let b = &buf[off..off + BLOCK];
    // SAFETY: `b` is a bounds-checked 16-byte slice; LD1 has no alignment requirement.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// Stores `v` to `buf[off..off + 16]`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store(buf: &mut [u8], off: usize, v: uint8x16_t) {
    let b = &mut buf[off..off + BLOCK];
    // SAFETY: `b` is a bounds-checked, exclusively borrowed 16-byte slice; ST1 is unaligned.
    unsafe { vst1q_u8(b.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn from_u128(v: u128) -> uint8x16_t {
    load(&v.to_le_bytes(), 0)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn from_block(b: &[u8; BLOCK]) -> uint8x16_t {
    load(b, 0)
}

/// Encrypts (`ENC`) or decrypts N blocks together; decryption uses the equivalent-inverse
/// schedule (`RoundKeys::dec`). AESE/AESD add the round key first, so the last key is a plain
/// XOR.
#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn crypt<const N: usize, const ENC: bool>(k: &Keys, x: &mut [uint8x16_t; N]) {
    for rk in &k.k[..k.rounds - 1] {
        for b in x.iter_mut() {
            *b = if ENC { vaesmcq_u8(vaeseq_u8(*b, *rk)) } else { vaesimcq_u8(vaesdq_u8(*b, *rk)) };
        }
    }
    let (penultimate, last) = (k.k[k.rounds - 1], k.k[k.rounds]);
    for b in x.iter_mut() {
        *b = veorq_u8(if ENC { vaeseq_u8(*b, penultimate) } else { vaesdq_u8(*b, penultimate) }, last);
    }
}

/// Tweak times x in GF(2^128): shift each 64-bit half left, carry bit 63 into bit 64 and fold
/// bit 127 back as 0x87.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mul_x(t: uint8x16_t) -> uint8x16_t {
    let signs = vreinterpretq_u64_s64(vshrq_n_s64::<63>(vreinterpretq_s64_u8(t)));
    // Lane 0 <- sign of bit 127, lane 1 <- sign of bit 63.
    let swapped = vextq_u64::<1>(signs, signs);
    let carries = vandq_u64(swapped, vcombine_u64(vcreate_u64(0x87), vcreate_u64(1)));
    vreinterpretq_u8_u64(veorq_u64(vshlq_n_u64::<1>(vreinterpretq_u64_u8(t)), carries))
}

/// Tweak times x^8: a one-byte shift, with the byte shifted out folded back by a carry-less
/// multiply (PMULL) with 0x87.
#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn mul_x8(t: uint8x16_t) -> uint8x16_t {
    let top = vgetq_lane_u8::<15>(t) as u64;
    let folded = vreinterpretq_u8_p128(vmull_p64(top, 0x87));
    veorq_u8(vextq_u8::<15>(vdupq_n_u8(0), t), folded)
}

/// XEX over whole blocks, starting with the encrypted tweak `t`; returns the tweak of the next
/// block.
#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn xts_run<const ENC: bool>(k: &Keys, data: &mut [u8], t: uint8x16_t) -> uint8x16_t {
    let mut t8 = [t; 8];
    for j in 1..8 {
        t8[j] = mul_x(t8[j - 1]);
    }
    let mut chunks = data.chunks_exact_mut(8 * BLOCK);
    for c in &mut chunks {
        let mut x = [vdupq_n_u8(0); 8];
        for j in 0..8 {
            x[j] = veorq_u8(load(c, j * BLOCK), t8[j]);
        }
        crypt::<8, ENC>(k, &mut x);
        for j in 0..8 {
            store(c, j * BLOCK, veorq_u8(x[j], t8[j]));
            t8[j] = mul_x8(t8[j]);
        }
    }
    let mut t = t8[0];
    for b in chunks.into_remainder().chunks_exact_mut(BLOCK) {
        let mut x = [veorq_u8(load(b, 0), t)];
        crypt::<1, ENC>(k, &mut x);
        store(b, 0, veorq_u8(x[0], t));
        t = mul_x(t);
    }
    t
}

#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn xts_units<const ENC: bool>(
    dk: &RoundKeys,
    tk: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first: u128,
    step: u128,
) {
    let k = if ENC { load_keys(&dk.enc, dk.rounds) } else { load_keys(&dk.dec, dk.rounds) };
    let tkeys = load_keys(&tk.enc, tk.rounds);
    let mut unit = first;
    for group in data.chunks_mut(8 * unit_size) {
        // The tweaks of eight units in one pass, unit numbers advancing by `step` and wrapping
        // at 2^128 (extra ones for a short group are unused).
        let mut tw = [vdupq_n_u8(0); 8];
        for t in tw.iter_mut() {
            *t = from_u128(unit);
            unit = unit.wrapping_add(step);
        }
        crypt::<8, true>(&tkeys, &mut tw);
        for (u, t) in group.chunks_exact_mut(unit_size).zip(tw) {
            xts_run::<ENC>(&k, u, t);
        }
    }
}

/// XTS encryption of data units whose tweaks advance by `step` (contract kernel).
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn xts_encrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
    step: u128,
) {
    xts_units::<true>(data_keys, tweak_keys, data, unit_size, first_unit, step)
}

/// XTS decryption of data units whose tweaks advance by `step` (contract kernel).
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn xts_decrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
    step: u128,
) {
    xts_units::<false>(data_keys, tweak_keys, data, unit_size, first_unit, step)
}

#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn xts_unit_dir<const ENC: bool>(dk: &RoundKeys, tk: &RoundKeys, data: &mut [u8], tweak: &[u8; BLOCK]) {
    let k = if ENC { load_keys(&dk.enc, dk.rounds) } else { load_keys(&dk.dec, dk.rounds) };
    let mut t = [from_block(tweak)];
    crypt::<1, true>(&load_keys(&tk.enc, tk.rounds), &mut t);
    let whole = xts_whole_blocks(data.len());
    let t = xts_run::<ENC>(&k, &mut data[..whole], t[0]);
    let mut tb = [0u8; BLOCK];
    store(&mut tb, 0, t);
    steal_tail(&mut data[whole..], tb, ENC, |block, tw| {
        // SAFETY: this closure runs inside a function whose target features the caller
        // guaranteed.
        unsafe {
            let tw = from_block(tw);
            let mut x = [veorq_u8(from_block(block), tw)];
            crypt::<1, ENC>(&k, &mut x);
            store(block, 0, veorq_u8(x[0], tw));
        }
    });
}

/// One XTS data unit (>= 16 bytes) with an arbitrary tweak and ciphertext stealing.
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn xts_unit(dk: &RoundKeys, tk: &RoundKeys, data: &mut [u8], tweak: &[u8; BLOCK], enc: bool) {
    if enc {
        xts_unit_dir::<true>(dk, tk, data, tweak)
    } else {
        xts_unit_dir::<false>(dk, tk, data, tweak)
    }
}

#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn ecb<const ENC: bool>(k: &Keys, data: &mut [u8]) {
    let mut chunks = data.chunks_exact_mut(8 * BLOCK);
    for c in &mut chunks {
        let mut x = [vdupq_n_u8(0); 8];
        for (j, b) in x.iter_mut().enumerate() {
            *b = load(c, j * BLOCK);
        }
        crypt::<8, ENC>(k, &mut x);
        for (j, b) in x.iter().enumerate() {
            store(c, j * BLOCK, *b);
        }
    }
    for b in chunks.into_remainder().chunks_exact_mut(BLOCK) {
        let mut x = [load(b, 0)];
        crypt::<1, ENC>(k, &mut x);
        store(b, 0, x[0]);
    }
}

/// ECB encryption of whole blocks.
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn ecb_encrypt(keys: &RoundKeys, data: &mut [u8]) {
    ecb::<true>(&load_keys(&keys.enc, keys.rounds), data)
}

/// ECB decryption of whole blocks.
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn ecb_decrypt(keys: &RoundKeys, data: &mut [u8]) {
    ecb::<false>(&load_keys(&keys.dec, keys.rounds), data)
}

/// CBC encryption of one chain (inherently sequential).
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn cbc_encrypt(keys: &RoundKeys, data: &mut [u8], iv: &[u8; BLOCK]) {
    let k = load_keys(&keys.enc, keys.rounds);
    let mut prev = from_block(iv);
    for b in data.chunks_exact_mut(BLOCK) {
        let mut x = [veorq_u8(load(b, 0), prev)];
        crypt::<1, true>(&k, &mut x);
        store(b, 0, x[0]);
        prev = x[0];
    }
}

#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn cbc_decrypt_chain(k: &Keys, data: &mut [u8], iv: uint8x16_t) {
    let mut prev = iv;
    let mut chunks = data.chunks_exact_mut(8 * BLOCK);
    for c in &mut chunks {
        let mut ct = [vdupq_n_u8(0); 8];
        for (j, b) in ct.iter_mut().enumerate() {
            *b = load(c, j * BLOCK);
        }
        let mut x = ct;
        crypt::<8, false>(k, &mut x);
        store(c, 0, veorq_u8(x[0], prev));
        for j in 1..8 {
            store(c, j * BLOCK, veorq_u8(x[j], ct[j - 1]));
        }
        prev = ct[7];
    }
    for b in chunks.into_remainder().chunks_exact_mut(BLOCK) {
        let ct = load(b, 0);
        let mut x = [ct];
        crypt::<1, false>(k, &mut x);
        store(b, 0, veorq_u8(x[0], prev));
        prev = ct;
    }
}

/// CBC decryption of one chain, eight blocks in flight.
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn cbc_decrypt(keys: &RoundKeys, data: &mut [u8], iv: &[u8; BLOCK]) {
    cbc_decrypt_chain(&load_keys(&keys.dec, keys.rounds), data, from_block(iv))
}

/// CBC-encrypts N sectors of `group` in lock step, one block of each chain per round loop.
#[inline]
#[target_feature(enable = "neon,aes")]
unsafe fn cbc_encrypt_lanes<const N: usize>(k: &Keys, group: &mut [u8], sector_size: usize, ivs: ChainIvs) {
    let mut prev = [vdupq_n_u8(0); N];
    for (p, iv) in prev.iter_mut().zip(ivs) {
        *p = from_block(iv);
    }
    for off in (0..sector_size).step_by(BLOCK) {
        let mut x = prev;
        for (l, b) in x.iter_mut().enumerate() {
            *b = veorq_u8(load(group, l * sector_size + off), *b);
        }
        crypt::<N, true>(k, &mut x);
        for (l, b) in x.iter().enumerate() {
            store(group, l * sector_size + off, *b);
        }
        prev = x;
    }
}

/// CBC encryption of consecutive sectors, the chains of up to eight sectors interleaved.
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn cbc_encrypt_sectors(keys: &RoundKeys, data: &mut [u8], sector_size: usize, ivs: ChainIvs) {
    let k = load_keys(&keys.enc, keys.rounds);
    let mut data = data;
    let mut ivs = ivs;
    while !ivs.is_empty() {
        let lanes = match ivs.len() {
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        };
        let (group, rest) = core::mem::take(&mut data).split_at_mut(lanes * sector_size);
        match lanes {
            8 => cbc_encrypt_lanes::<8>(&k, group, sector_size, &ivs[..8]),
            4 => cbc_encrypt_lanes::<4>(&k, group, sector_size, &ivs[..4]),
            2 => cbc_encrypt_lanes::<2>(&k, group, sector_size, &ivs[..2]),
            _ => cbc_encrypt_lanes::<1>(&k, group, sector_size, &ivs[..1]),
        }
        data = rest;
        ivs = &ivs[lanes..];
    }
}

/// CBC decryption of consecutive sectors (each chain is already eight blocks in flight).
#[target_feature(enable = "neon,aes")]
pub(crate) unsafe fn cbc_decrypt_sectors(keys: &RoundKeys, data: &mut [u8], sector_size: usize, ivs: ChainIvs) {
    let k = load_keys(&keys.dec, keys.rounds);
    for (sector, iv) in data.chunks_exact_mut(sector_size).zip(ivs) {
        cbc_decrypt_chain(&k, sector, from_block(iv));
    }
}
