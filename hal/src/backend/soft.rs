//! Portable constant-time AES: bitsliced over eight `u64` bit-planes, four blocks per pass.
//!
//! Plane `j` holds bit `j` of every byte of four blocks; AES state byte (row `r`, column `c`)
//! of block `l` sits at bit `16 * r + 4 * c + l`, so each row is one 16-bit field: MixColumns'
//! row rotations are word rotations and ShiftRows rotates each field. SubBytes is a Boolean
//! circuit, so nothing indexes memory or branches on key or data bits. Slow next to the
//! hardware backends, but safe everywhere.
#![deny(unsafe_code)]

use super::{gf_double, steal_tail, ChainIvs};
use crate::key::RoundKeys;
use crate::BLOCK;
use zeroize::Zeroize;

/// Eight bit-planes of four AES blocks.
type Planes = [u64; 8];

/// Blocks per bitsliced pass.
const LANES: usize = 4;
/// Bytes per bitsliced pass.
const PASS: usize = LANES * BLOCK;

/// Round keys broadcast to all four lanes and bitsliced, zeroized on drop.
pub(crate) struct SliceKeys {
    rk: [Planes; 15],
    rounds: usize,
}

impl Drop for SliceKeys {
    fn drop(&mut self) {
        self.rk.zeroize();
    }
}

impl SliceKeys {
    /// The encryption schedule.
    pub(crate) fn enc(keys: &RoundKeys) -> SliceKeys {
        SliceKeys::slice(&keys.enc, keys.rounds)
    }

    /// The equivalent-inverse decryption schedule.
    pub(crate) fn dec(keys: &RoundKeys) -> SliceKeys {
        SliceKeys::slice(&keys.dec, keys.rounds)
    }

    fn slice(keys: &[[u8; BLOCK]; 15], rounds: usize) -> SliceKeys {
        let mut rk = [[0u64; 8]; 15];
        let mut buf = [0u8; PASS];
        for (planes, key) in rk.iter_mut().zip(keys).take(rounds + 1) {
            for lane in buf.chunks_exact_mut(BLOCK) {
                lane.copy_from_slice(key);
            }
            *planes = pack(&buf);
        }
        buf.zeroize();
        SliceKeys { rk, rounds }
    }
}

/// Swaps the bits of `a` selected by `mask << n` with the bits of `b` selected by `mask`.
#[inline(always)]
fn swap_move(a: &mut u64, b: &mut u64, mask: u64, n: u32) {
    let t = ((*a >> n) ^ *b) & mask;
    *b ^= t;
    *a ^= t << n;
}

/// Transposes the 8x8 bit matrix in `x` (row = byte, column = bit within the byte).
#[inline(always)]
fn transpose_bits(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^= t ^ (t << 28);
    x
}

/// Transposes the 8x8 byte matrix `w` (row = word, column = byte within the word).
#[inline(always)]
fn transpose_bytes(w: &mut [u64; 8]) {
    for i in 0..4 {
        let (lo, hi) = w.split_at_mut(4);
        swap_move(&mut lo[i], &mut hi[i], 0x0000_0000_FFFF_FFFF, 32);
    }
    for i in [0, 1, 4, 5] {
        let (lo, hi) = w.split_at_mut(i + 2);
        swap_move(&mut lo[i], &mut hi[0], 0x0000_FFFF_0000_FFFF, 16);
    }
    for i in [0, 2, 4, 6] {
        let (lo, hi) = w.split_at_mut(i + 1);
        swap_move(&mut lo[i], &mut hi[0], 0x00FF_00FF_00FF_00FF, 8);
    }
}

/// Exchanges the block index (bits 4-5 of a plane position) with the row (bits 0-1): turns
/// the byte-order layout `16 * l + 4 * c + r` into `16 * r + 4 * c + l` and back.
#[inline(always)]
fn swap_block_and_row(mut x: u64) -> u64 {
    let t = ((x >> 15) ^ x) & 0x0000_AAAA_0000_AAAA;
    x ^= t ^ (t << 15);
    let t = ((x >> 30) ^ x) & 0x0000_0000_CCCC_CCCC;
    x ^= t ^ (t << 30);
    x
}

/// 64 bytes (four blocks) -> planes in the row-field layout described at the top.
#[inline]
fn pack(bytes: &[u8; PASS]) -> Planes {
    let mut w = [0u64; 8];
    for (word, chunk) in w.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = transpose_bits(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    // Now bit `i` of plane `j` is bit `j` of byte `i`; regroup the positions by row.
    transpose_bytes(&mut w);
    for x in w.iter_mut() {
        *x = swap_block_and_row(*x);
    }
    w
}

/// Inverse of [`pack`].
#[inline]
fn unpack(planes: &Planes) -> [u8; PASS] {
    let mut w = *planes;
    for x in w.iter_mut() {
        *x = swap_block_and_row(*x);
    }
    transpose_bytes(&mut w);
    let mut out = [0u8; PASS];
    for (word, chunk) in w.iter().zip(out.chunks_exact_mut(8)) {
        chunk.copy_from_slice(&transpose_bits(*word).to_le_bytes());
    }
    out
}

/// ShiftRows: row `r` (bits `16 r .. 16 r + 15`, four bits per column) rotates right by `4 r`
/// bits, moving column `c` to `c - r`.
#[inline(always)]
fn shift_rows(s: &mut Planes) {
    for x in s.iter_mut() {
        let v = *x;
        *x = (v & 0xFFFF)
            | ((v >> 4) & 0x0000_0000_0FFF_0000)
            | ((v << 12) & 0x0000_0000_F000_0000)
            | ((v >> 8) & 0x0000_00FF_0000_0000)
            | ((v << 8) & 0x0000_FF00_0000_0000)
            | ((v >> 12) & 0x000F_0000_0000_0000)
            | ((v << 4) & 0xFFF0_0000_0000_0000);
    }
}

/// Inverse of [`shift_rows`]: row `r` rotates left by `4 r` bits.
#[inline(always)]
fn inv_shift_rows(s: &mut Planes) {
    for x in s.iter_mut() {
        let v = *x;
        *x = (v & 0xFFFF)
            | ((v << 4) & 0x0000_0000_FFF0_0000)
            | ((v >> 12) & 0x0000_0000_000F_0000)
            | ((v << 8) & 0x0000_FF00_0000_0000)
            | ((v >> 8) & 0x0000_00FF_0000_0000)
            | ((v << 12) & 0xF000_0000_0000_0000)
            | ((v >> 4) & 0x0FFF_0000_0000_0000);
    }
}

/// Each byte takes the value of the byte one row below it in its column (row 3 takes row 0).
#[inline(always)]
fn rot_row1(v: u64) -> u64 {
    v.rotate_right(16)
}

/// Each byte takes the value of the byte two rows below it in its column.
#[inline(always)]
fn rot_row2(v: u64) -> u64 {
    v.rotate_right(32)
}

/// Multiplication by x in GF(2^8) on every byte (plane 0 = least significant bit).
#[inline(always)]
fn xtime(s: &Planes) -> Planes {
    [s[7], s[0] ^ s[7], s[1], s[2] ^ s[7], s[3] ^ s[7], s[4], s[5], s[6]]
}

/// MixColumns: out_r = 2(a_r + a_r+1) + a_r+1 + (a_r+2 + a_r+3).
#[inline(always)]
fn mix_columns(s: &mut Planes) {
    let mut r1 = [0u64; 8];
    let mut t = [0u64; 8];
    for j in 0..8 {
        r1[j] = rot_row1(s[j]);
        t[j] = s[j] ^ r1[j];
    }
    let t2 = xtime(&t);
    for j in 0..8 {
        s[j] = t2[j] ^ r1[j] ^ rot_row2(t[j]);
    }
}

/// InvMixColumns = MixColumns after adding 4(a_r + a_r+2) to every a_r.
#[inline(always)]
fn inv_mix_columns(s: &mut Planes) {
    let mut u = [0u64; 8];
    for j in 0..8 {
        u[j] = s[j] ^ rot_row2(s[j]);
    }
    let u4 = xtime(&xtime(&u));
    for j in 0..8 {
        s[j] ^= u4[j];
    }
    mix_columns(s);
}

#[inline(always)]
fn add_round_key(s: &mut Planes, k: &Planes) {
    for (x, y) in s.iter_mut().zip(k) {
        *x ^= y;
    }
}

/// SubBytes: the Boyar-Peralta circuit plus the affine constant 0x63 (bits 0, 1, 5, 6).
#[inline(always)]
fn sub_bytes(s: &mut Planes) {
    sub_bytes_raw(s);
    s[0] = !s[0];
    s[1] = !s[1];
    s[5] = !s[5];
    s[6] = !s[6];
}

/// InvSubBytes: remove the affine constant, then the circuit inverting `sub_bytes_raw`.
#[inline(always)]
fn inv_sub_bytes(s: &mut Planes) {
    s[0] = !s[0];
    s[1] = !s[1];
    s[5] = !s[5];
    s[6] = !s[6];
    inv_sub_bytes_raw(s);
}

/// Encrypts four blocks (64 bytes) in place.
fn encrypt4(k: &SliceKeys, bytes: &mut [u8; PASS]) {
    let mut s = pack(bytes);
    add_round_key(&mut s, &k.rk[0]);
    for rk in &k.rk[1..k.rounds] {
        sub_bytes(&mut s);
        shift_rows(&mut s);
        mix_columns(&mut s);
        add_round_key(&mut s, rk);
    }
    sub_bytes(&mut s);
    shift_rows(&mut s);
    add_round_key(&mut s, &k.rk[k.rounds]);
    *bytes = unpack(&s);
    s.zeroize();
}

/// Decrypts four blocks in place (equivalent inverse cipher, schedule from [`SliceKeys::dec`]).
fn decrypt4(k: &SliceKeys, bytes: &mut [u8; PASS]) {
    let mut s = pack(bytes);
    add_round_key(&mut s, &k.rk[0]);
    for rk in &k.rk[1..k.rounds] {
        inv_sub_bytes(&mut s);
        inv_shift_rows(&mut s);
        inv_mix_columns(&mut s);
        add_round_key(&mut s, rk);
    }
    inv_sub_bytes(&mut s);
    inv_shift_rows(&mut s);
    add_round_key(&mut s, &k.rk[k.rounds]);
    *bytes = unpack(&s);
    s.zeroize();
}

/// The AES S-box applied to each byte of a word (key expansion), without table lookups.
pub(crate) fn sub_word(w: [u8; 4]) -> [u8; 4] {
    let mut buf = [0u8; PASS];
    buf[..4].copy_from_slice(&w);
    let mut s = pack(&buf);
    sub_bytes(&mut s);
    let out = unpack(&s);
    s.zeroize();
    buf.zeroize();
    [out[0], out[1], out[2], out[3]]
}

/// InvMixColumns of one round key (decryption schedule), without table lookups.
pub(crate) fn inv_mix_columns_block(b: &[u8; BLOCK]) -> [u8; BLOCK] {
    let mut buf = [0u8; PASS];
    buf[..BLOCK].copy_from_slice(b);
    let mut s = pack(&buf);
    inv_mix_columns(&mut s);
    let out = unpack(&s);
    s.zeroize();
    buf.zeroize();
    out[..BLOCK].try_into().expect("one block")
}

/// Runs `f` over `data` (a multiple of 16 bytes) in passes of up to four blocks; the unused
/// lanes of a short last pass are zero and discarded.
fn passes(data: &mut [u8], mut f: impl FnMut(&mut [u8; PASS])) {
    let mut buf = [0u8; PASS];
    for chunk in data.chunks_mut(PASS) {
        let n = chunk.len();
        buf[..n].copy_from_slice(chunk);
        buf[n..].fill(0);
        f(&mut buf);
        chunk.copy_from_slice(&buf[..n]);
    }
    buf.zeroize();
}

/// ECB encryption of whole blocks.
pub(crate) fn ecb_encrypt(keys: &RoundKeys, data: &mut [u8]) {
    let k = SliceKeys::enc(keys);
    passes(data, |b| encrypt4(&k, b));
}

/// ECB decryption of whole blocks.
pub(crate) fn ecb_decrypt(keys: &RoundKeys, data: &mut [u8]) {
    let k = SliceKeys::dec(keys);
    passes(data, |b| decrypt4(&k, b));
}

/// CBC encryption of one chain (sequential by nature: one block per pass).
pub(crate) fn cbc_encrypt(keys: &RoundKeys, data: &mut [u8], iv: &[u8; BLOCK]) {
    let k = SliceKeys::enc(keys);
    let mut buf = [0u8; PASS];
    let mut prev = *iv;
    for block in data.chunks_exact_mut(BLOCK) {
        for (i, x) in buf[..BLOCK].iter_mut().enumerate() {
            *x = block[i] ^ prev[i];
        }
        encrypt4(&k, &mut buf);
        block.copy_from_slice(&buf[..BLOCK]);
        prev.copy_from_slice(&buf[..BLOCK]);
    }
    buf.zeroize();
}

/// CBC decryption of one chain, four blocks per pass.
pub(crate) fn cbc_decrypt(keys: &RoundKeys, data: &mut [u8], iv: &[u8; BLOCK]) {
    let k = SliceKeys::dec(keys);
    cbc_decrypt_with(&k, data, iv);
}

fn cbc_decrypt_with(k: &SliceKeys, data: &mut [u8], iv: &[u8; BLOCK]) {
    let mut prev = *iv;
    let mut cipher = [0u8; PASS];
    passes(data, |buf| {
        cipher = *buf;
        decrypt4(k, buf);
        for (l, lane) in buf.chunks_exact_mut(BLOCK).enumerate() {
            let p: &[u8] = if l == 0 { &prev } else { &cipher[(l - 1) * BLOCK..l * BLOCK] };
            for (x, y) in lane.iter_mut().zip(p) {
                *x ^= y;
            }
        }
        // The last lane's ciphertext chains into the next pass; unused lanes are never read
        // because a short pass is the last one.
        prev.copy_from_slice(&cipher[PASS - BLOCK..]);
    });
}

/// CBC encryption of consecutive sectors, four chains interleaved per pass.
pub(crate) fn cbc_encrypt_sectors(keys: &RoundKeys, data: &mut [u8], sector_size: usize, ivs: ChainIvs<'_>) {
    let k = SliceKeys::enc(keys);
    let mut buf = [0u8; PASS];
    for (group, group_ivs) in data.chunks_mut(LANES.saturating_mul(sector_size)).zip(ivs.chunks(LANES)) {
        let chains = group.len() / sector_size;
        let mut prev = [[0u8; BLOCK]; LANES];
        prev[..chains].copy_from_slice(group_ivs);
        for off in (0..sector_size).step_by(BLOCK) {
            buf.fill(0);
            for l in 0..chains {
                let at = l * sector_size + off;
                for i in 0..BLOCK {
                    buf[l * BLOCK + i] = group[at + i] ^ prev[l][i];
                }
            }
            encrypt4(&k, &mut buf);
            for l in 0..chains {
                let at = l * sector_size + off;
                group[at..at + BLOCK].copy_from_slice(&buf[l * BLOCK..(l + 1) * BLOCK]);
                prev[l].copy_from_slice(&buf[l * BLOCK..(l + 1) * BLOCK]);
            }
        }
    }
    buf.zeroize();
}

/// CBC decryption of consecutive sectors (each chain already runs four blocks per pass).
pub(crate) fn cbc_decrypt_sectors(keys: &RoundKeys, data: &mut [u8], sector_size: usize, ivs: ChainIvs<'_>) {
    let k = SliceKeys::dec(keys);
    for (sector, iv) in data.chunks_exact_mut(sector_size).zip(ivs) {
        cbc_decrypt_with(&k, sector, iv);
    }
}

/// XEX over whole blocks starting with the encrypted tweak `t`; returns the tweak of the
/// block after the last one.
fn xts_blocks(k: &SliceKeys, data: &mut [u8], mut t: [u8; BLOCK], enc: bool) -> [u8; BLOCK] {
    let mut buf = [0u8; PASS];
    let mut tweaks = [0u8; PASS];
    for chunk in data.chunks_mut(PASS) {
        let n = chunk.len();
        for lane in tweaks[..n].chunks_exact_mut(BLOCK) {
            lane.copy_from_slice(&t);
            gf_double(&mut t);
        }
        for i in 0..n {
            buf[i] = chunk[i] ^ tweaks[i];
        }
        buf[n..].fill(0);
        if enc {
            encrypt4(k, &mut buf)
        } else {
            decrypt4(k, &mut buf)
        }
        for i in 0..n {
            chunk[i] = buf[i] ^ tweaks[i];
        }
    }
    buf.zeroize();
    tweaks.zeroize();
    t
}

/// XTS over data units whose tweaks advance by `step`; see the backend contract.
pub(crate) fn xts_encrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
    step: u128,
) {
    xts_units(&SliceKeys::enc(data_keys), tweak_keys, data, unit_size, first_unit, step, true)
}

/// XTS decryption over data units whose tweaks advance by `step`; see the backend contract.
pub(crate) fn xts_decrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
    step: u128,
) {
    xts_units(&SliceKeys::dec(data_keys), tweak_keys, data, unit_size, first_unit, step, false)
}

fn xts_units(
    k: &SliceKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first: u128,
    step: u128,
    enc: bool,
) {
    let tk = SliceKeys::enc(tweak_keys);
    let mut tweaks = [0u8; PASS];
    let mut unit = first;
    for group in data.chunks_mut(LANES * unit_size) {
        // The tweaks of four units in one pass (unit numbers wrap at 2^128).
        for lane in tweaks.chunks_exact_mut(BLOCK) {
            lane.copy_from_slice(&unit.to_le_bytes());
            unit = unit.wrapping_add(step);
        }
        encrypt4(&tk, &mut tweaks);
        for (u, lane) in group.chunks_exact_mut(unit_size).zip(tweaks.chunks_exact(BLOCK)) {
            xts_blocks(k, u, lane.try_into().expect("one block"), enc);
        }
    }
}

/// One XTS data unit of any length >= 16 with an arbitrary tweak and ciphertext stealing.
pub(crate) fn xts_unit(data_keys: &RoundKeys, tweak_keys: &RoundKeys, data: &mut [u8], tweak: &[u8; BLOCK], enc: bool) {
    let mut buf = [0u8; PASS];
    buf[..BLOCK].copy_from_slice(tweak);
    encrypt4(&SliceKeys::enc(tweak_keys), &mut buf);
    let t: [u8; BLOCK] = buf[..BLOCK].try_into().expect("one block");
    let k = if enc { SliceKeys::enc(data_keys) } else { SliceKeys::dec(data_keys) };
    let whole = super::xts_whole_blocks(data.len());
    let t = xts_blocks(&k, &mut data[..whole], t, enc);
    steal_tail(&mut data[whole..], t, enc, |block, tw| {
        buf.fill(0);
        for i in 0..BLOCK {
            buf[i] = block[i] ^ tw[i];
        }
        if enc {
            encrypt4(&k, &mut buf)
        } else {
            decrypt4(&k, &mut buf)
        }
        for i in 0..BLOCK {
            block[i] = buf[i] ^ tw[i];
        }
    });
    buf.zeroize();
}

// The S-box circuits below are from the RustCrypto `aes` crate (MIT OR Apache-2.0,
// backends/fixslice/sbox.rs), after Boyar, Peralta and Calik
// (<http://www.cs.yale.edu/homes/peralta/CircuitStuff/SLP_AES_113.txt>). Planes are in bit
// order, plane 0 = least significant bit. `sub_bytes_raw` leaves out the four NOTs of the
// affine constant ([`sub_bytes`] adds them); `inv_sub_bytes_raw` inverts `sub_bytes_raw`.
fn sub_bytes_raw(state: &mut Planes) {
    let u7 = state[0];
    let u6 = state[1];
    let u5 = state[2];
    let u4 = state[3];
    let u3 = state[4];
    let u2 = state[5];
    let u1 = state[6];
    let u0 = state[7];

    let y14 = u3 ^ u5;
    let y13 = u0 ^ u6;
    let y12 = y13 ^ y14;
    let t1 = u4 ^ y12;
    let y15 = t1 ^ u5;
    let t2 = y12 & y15;
    let y6 = y15 ^ u7;
    let y20 = t1 ^ u1;
    let y9 = u0 ^ u3;
    let y11 = y20 ^ y9;
    let t12 = y9 & y11;
    let y7 = u7 ^ y11;
    let y8 = u0 ^ u5;
    let t0 = u1 ^ u2;
    let y10 = y15 ^ t0;
    let y17 = y10 ^ y11;
    let t13 = y14 & y17;
    let t14 = t13 ^ t12;
    let y19 = y10 ^ y8;
    let t15 = y8 & y10;
    let t16 = t15 ^ t12;
    let y16 = t0 ^ y11;
    let y21 = y13 ^ y16;
    let t7 = y13 & y16;
    let y18 = u0 ^ y16;
    let y1 = t0 ^ u7;
    let y4 = y1 ^ u3;
    let t5 = y4 & u7;
    let t6 = t5 ^ t2;
    let t18 = t6 ^ t16;
    let t22 = t18 ^ y19;
    let y2 = y1 ^ u0;
    let t10 = y2 & y7;
    let t11 = t10 ^ t7;
    let t20 = t11 ^ t16;
    let t24 = t20 ^ y18;
    let y5 = y1 ^ u6;
    let t8 = y5 & y1;
    let t9 = t8 ^ t7;
    let t19 = t9 ^ t14;
    let t23 = t19 ^ y21;
    let y3 = y5 ^ y8;
    let t3 = y3 & y6;
    let t4 = t3 ^ t2;
    let t17 = t4 ^ y20;
    let t21 = t17 ^ t14;
    let t26 = t21 & t23;
    let t27 = t24 ^ t26;
    let t31 = t22 ^ t26;
    let t25 = t21 ^ t22;
    let t28 = t25 & t27;
    let t29 = t28 ^ t22;
    let z14 = t29 & y2;
    let z5 = t29 & y7;
    let t30 = t23 ^ t24;
    let t32 = t31 & t30;
    let t33 = t32 ^ t24;
    let t35 = t27 ^ t33;
    let t36 = t24 & t35;
    let t38 = t27 ^ t36;
    let t39 = t29 & t38;
    let t40 = t25 ^ t39;
    let t43 = t29 ^ t40;
    let z3 = t43 & y16;
    let tc12 = z3 ^ z5;
    let z12 = t43 & y13;
    let z13 = t40 & y5;
    let z4 = t40 & y1;
    let tc6 = z3 ^ z4;
    let t34 = t23 ^ t33;
    let t37 = t36 ^ t34;
    let t41 = t40 ^ t37;
    let z8 = t41 & y10;
    let z17 = t41 & y8;
    let t44 = t33 ^ t37;
    let z0 = t44 & y15;
    let z9 = t44 & y12;
    let z10 = t37 & y3;
    let z1 = t37 & y6;
    let tc5 = z1 ^ z0;
    let tc11 = tc6 ^ tc5;
    let z11 = t33 & y4;
    let t42 = t29 ^ t33;
    let t45 = t42 ^ t41;
    let z7 = t45 & y17;
    let tc8 = z7 ^ tc6;
    let z16 = t45 & y14;
    let z6 = t42 & y11;
    let tc16 = z6 ^ tc8;
    let z15 = t42 & y9;
    let tc20 = z15 ^ tc16;
    let tc1 = z15 ^ z16;
    let tc2 = z10 ^ tc1;
    let tc21 = tc2 ^ z11;
    let tc3 = z9 ^ tc2;
    let s0 = tc3 ^ tc16;
    let s3 = tc3 ^ tc11;
    let s1 = s3 ^ tc16;
    let tc13 = z13 ^ tc1;
    let z2 = t33 & u7;
    let tc4 = z0 ^ z2;
    let tc7 = z12 ^ tc4;
    let tc9 = z8 ^ tc7;
    let tc10 = tc8 ^ tc9;
    let tc17 = z14 ^ tc10;
    let s5 = tc21 ^ tc17;
    let tc26 = tc17 ^ tc20;
    let s2 = tc26 ^ z17;
    let tc14 = tc4 ^ tc12;
    let tc18 = tc13 ^ tc14;
    let s6 = tc10 ^ tc18;
    let s7 = z12 ^ tc18;
    let s4 = tc14 ^ s3;

    state[0] = s7;
    state[1] = s6;
    state[2] = s5;
    state[3] = s4;
    state[4] = s3;
    state[5] = s2;
    state[6] = s1;
    state[7] = s0;
}

fn inv_sub_bytes_raw(state: &mut Planes) {
    let u7 = state[0];
    let u6 = state[1];
    let u5 = state[2];
    let u4 = state[3];
    let u3 = state[4];
    let u2 = state[5];
    let u1 = state[6];
    let u0 = state[7];

    let t23 = u0 ^ u3;
    let t8 = u1 ^ t23;
    let m2 = t23 & t8;
    let t4 = u4 ^ t8;
    let t22 = u1 ^ u3;
    let t2 = u0 ^ u1;
    let t1 = u3 ^ u4;
    let t9 = u7 ^ t1;
    let m7 = t22 & t9;
    let t24 = u4 ^ u7;
    let t10 = t2 ^ t24;
    let m14 = t2 & t10;
    let r5 = u6 ^ u7;
    let t3 = t1 ^ r5;
    let t13 = t2 ^ r5;
    let t19 = t22 ^ r5;
    let t17 = u2 ^ t19;
    let t25 = u2 ^ t1;
    let r13 = u1 ^ u6;
    let t20 = t24 ^ r13;
    let m9 = t20 & t17;
    let r17 = u2 ^ u5;
    let t6 = t22 ^ r17;
    let m1 = t13 & t6;
    let y5 = u0 ^ r17;
    let m4 = t19 & y5;
    let m5 = m4 ^ m1;
    let m17 = m5 ^ t24;
    let r18 = u5 ^ u6;
    let t27 = t1 ^ r18;
    let t15 = t10 ^ t27;
    let m11 = t1 & t15;
    let m15 = m14 ^ m11;
    let m21 = m17 ^ m15;
    let m12 = t4 & t27;
    let m13 = m12 ^ m11;
    let t14 = t10 ^ r18;
    let m3 = t14 ^ m1;
    let m16 = m3 ^ m2;
    let m20 = m16 ^ m13;
    let r19 = u2 ^ u4;
    let t16 = r13 ^ r19;
    let t26 = t3 ^ t16;
    let m6 = t3 & t16;
    let m8 = t26 ^ m6;
    let m18 = m8 ^ m7;
    let m22 = m18 ^ m13;
    let m25 = m22 & m20;
    let m26 = m21 ^ m25;
    let m10 = m9 ^ m6;
    let m19 = m10 ^ m15;
    let m23 = m19 ^ t25;
    let m28 = m23 ^ m25;
    let m24 = m22 ^ m23;
    let m30 = m26 & m24;
    let m39 = m23 ^ m30;
    let m48 = m39 & y5;
    let m57 = m39 & t19;
    let m36 = m24 ^ m25;
    let m31 = m20 & m23;
    let m27 = m20 ^ m21;
    let m32 = m27 & m31;
    let m29 = m28 & m27;
    let m37 = m21 ^ m29;
    let m42 = m37 ^ m39;
    let m52 = m42 & t15;
    let m61 = m42 & t1;
    let p0 = m52 ^ m61;
    let p16 = m57 ^ m61;
    let m60 = m37 & t20;
    let m51 = m37 & t17;
    let m33 = m27 ^ m25;
    let m38 = m32 ^ m33;
    let m43 = m37 ^ m38;
    let m49 = m43 & t16;
    let p6 = m49 ^ m60;
    let p13 = m49 ^ m51;
    let m58 = m43 & t3;
    let m50 = m38 & t9;
    let m59 = m38 & t22;
    let p1 = m58 ^ m59;
    let p7 = p0 ^ p1;
    let m34 = m21 & m22;
    let m35 = m24 & m34;
    let m40 = m35 ^ m36;
    let m41 = m38 ^ m40;
    let m45 = m42 ^ m41;
    let m53 = m45 & t27;
    let p8 = m50 ^ m53;
    let p23 = p7 ^ p8;
    let m62 = m45 & t4;
    let p14 = m49 ^ m62;
    let s6 = p14 ^ p23;
    let m54 = m41 & t10;
    let p2 = m54 ^ m62;
    let p22 = p2 ^ p7;
    let s0 = p13 ^ p22;
    let p17 = m58 ^ p2;
    let p15 = m54 ^ m59;
    let m63 = m41 & t2;
    let m44 = m39 ^ m40;
    let m46 = m44 & t6;
    let p5 = m46 ^ m51;
    let p18 = m63 ^ p5;
    let p24 = p5 ^ p7;
    let p12 = m46 ^ m48;
    let s3 = p12 ^ p22;
    let m55 = m44 & t13;
    let p9 = m55 ^ m63;
    let s7 = p9 ^ p16;
    let m47 = m40 & t8;
    let p3 = m47 ^ m50;
    let p19 = p2 ^ p3;
    let s5 = p19 ^ p24;
    let p11 = p0 ^ p3;
    let p26 = p9 ^ p11;
    let m56 = m40 & t23;
    let p4 = m48 ^ m56;
    let p20 = p4 ^ p6;
    let p29 = p15 ^ p20;
    let s1 = p26 ^ p29;
    let p10 = m57 ^ p4;
    let p27 = p10 ^ p18;
    let s4 = p23 ^ p27;
    let p25 = p6 ^ p10;
    let p28 = p11 ^ p25;
    let s2 = p17 ^ p28;

    state[0] = s7;
    state[1] = s6;
    state[2] = s5;
    state[3] = s4;
    state[4] = s3;
    state[5] = s2;
    state[6] = s1;
    state[7] = s0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Planes {
        let mut b = [0u8; PASS];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        pack(&b)
    }

    #[test]
    fn each_layer_is_inverted_by_its_inverse() {
        let s0 = sample();
        let mut s = s0;
        sub_bytes(&mut s);
        inv_sub_bytes(&mut s);
        assert_eq!(s, s0, "sbox");
        shift_rows(&mut s);
        inv_shift_rows(&mut s);
        assert_eq!(s, s0, "shift");
        mix_columns(&mut s);
        inv_mix_columns(&mut s);
        assert_eq!(s, s0, "mix");
    }
}
