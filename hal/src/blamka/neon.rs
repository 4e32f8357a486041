//! The BlaMka permutation on aarch64 Advanced SIMD: two 64-bit words per vector.
//!
//! The block is 64 vectors; vector `j` holds words `2j, 2j + 1`. A row is the eight vectors
//! `8r .. 8r + 8`, the column pair `c` the eight vectors `c, c + 8, .., c + 56`; either way the
//! BLAKE2b state is `(A0 A1)(B0 B1)(C0 C1)(D0 D1)`, its column steps are lane-wise and its
//! diagonal steps exchange words between the two vectors of `B` and of `D` (`ext`) and swap
//! the two of `C`.
use core::arch::aarch64::*;

use super::Block;

/// `a + b + 2 * lo32(a) * lo32(b)` in both lanes.
#[inline]
#[target_feature(enable = "neon")]
fn fblamka(a: uint64x2_t, b: uint64x2_t) -> uint64x2_t {
    let m = vmull_u32(vmovn_u64(a), vmovn_u64(b));
    vaddq_u64(vaddq_u64(a, b), vaddq_u64(m, m))
}

#[inline]
#[target_feature(enable = "neon")]
fn rotr32(x: uint64x2_t) -> uint64x2_t {
    vreinterpretq_u64_u32(vrev64q_u32(vreinterpretq_u32_u64(x)))
}

#[inline]
#[target_feature(enable = "neon")]
fn rotr24(x: uint64x2_t) -> uint64x2_t {
    vsriq_n_u64::<24>(vshlq_n_u64::<40>(x), x)
}

#[inline]
#[target_feature(enable = "neon")]
fn rotr16(x: uint64x2_t) -> uint64x2_t {
    vsriq_n_u64::<16>(vshlq_n_u64::<48>(x), x)
}

#[inline]
#[target_feature(enable = "neon")]
fn rotr63(x: uint64x2_t) -> uint64x2_t {
    vsriq_n_u64::<63>(vshlq_n_u64::<1>(x), x)
}

/// The eight vectors of one 16-word state.
struct State([uint64x2_t; 8]);

impl State {
    /// G on the four lane-wise quadruples `(A, B, C, D)`.
    #[inline]
    #[target_feature(enable = "neon")]
    fn g(&mut self) {
        let [a0, a1, b0, b1, c0, c1, d0, d1] = &mut self.0;
        *a0 = fblamka(*a0, *b0);
        *a1 = fblamka(*a1, *b1);
        *d0 = rotr32(veorq_u64(*d0, *a0));
        *d1 = rotr32(veorq_u64(*d1, *a1));
        *c0 = fblamka(*c0, *d0);
        *c1 = fblamka(*c1, *d1);
        *b0 = rotr24(veorq_u64(*b0, *c0));
        *b1 = rotr24(veorq_u64(*b1, *c1));
        *a0 = fblamka(*a0, *b0);
        *a1 = fblamka(*a1, *b1);
        *d0 = rotr16(veorq_u64(*d0, *a0));
        *d1 = rotr16(veorq_u64(*d1, *a1));
        *c0 = fblamka(*c0, *d0);
        *c1 = fblamka(*c1, *d1);
        *b0 = rotr63(veorq_u64(*b0, *c0));
        *b1 = rotr63(veorq_u64(*b1, *c1));
    }

    /// P: the column step, then the diagonal step (`B` = (v5 v6)(v7 v4), `C` = (v10 v11)(v8
    /// v9), `D` = (v15 v12)(v13 v14)), then the words back in place.
    #[inline]
    #[target_feature(enable = "neon")]
    fn p(&mut self) {
        self.g();
        let [_, _, b0, b1, c0, c1, d0, d1] = &mut self.0;
        (*b0, *b1) = (vextq_u64::<1>(*b0, *b1), vextq_u64::<1>(*b1, *b0));
        (*c0, *c1) = (*c1, *c0);
        (*d0, *d1) = (vextq_u64::<1>(*d1, *d0), vextq_u64::<1>(*d0, *d1));
        self.g();
        let [_, _, b0, b1, c0, c1, d0, d1] = &mut self.0;
        (*b0, *b1) = (vextq_u64::<1>(*b1, *b0), vextq_u64::<1>(*b0, *b1));
        (*c0, *c1) = (*c1, *c0);
        (*d0, *d1) = (vextq_u64::<1>(*d0, *d1), vextq_u64::<1>(*d1, *d0));
    }
}

/// P on the state made of the vectors `first + stride * k`, `k` in 0..8.
#[inline]
#[target_feature(enable = "neon")]
fn p_at(block: &mut Block, first: usize, stride: usize) {
    let p = block.as_mut_ptr();
    // SAFETY (loads and stores): `p` points at the 128 words of `block`, which `&mut` gives
    // this function alone; the vectors read and written are words `2j, 2j + 1` for
    // `j = first + stride * k <= 63` (the callers keep `first + 7 * stride` below 64).
    let mut s = State(core::array::from_fn(|k| unsafe { vld1q_u64(p.add(2 * (first + stride * k))) }));
    s.p();
    for (k, v) in s.0.into_iter().enumerate() {
        unsafe { vst1q_u64(p.add(2 * (first + stride * k)), v) }
    }
}

#[target_feature(enable = "neon")]
fn permute_neon(block: &mut Block) {
    for row in 0..8 {
        p_at(block, 8 * row, 1);
    }
    for col in 0..8 {
        p_at(block, col, 8);
    }
}

/// The NEON kernel.
pub(super) fn permute(block: &mut Block) {
    // SAFETY: this module is compiled only for targets with the `neon` feature, which every
    // CPU running them has.
    unsafe { permute_neon(block) }
}
