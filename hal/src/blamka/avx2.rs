//! The BlaMka permutation on AVX2 (and AVX-512VL's rotates): four 64-bit words per vector.
//!
//! The block is 32 vectors; vector `4k + i` holds words `16k + 4i .. 16k + 4i + 4`. A row is
//! four vectors (`A B C D` of the BLAKE2b state), so its column steps are lane-wise and its
//! diagonal steps rotate `B C D` across the lanes (`vpermq`). Two column pairs `2i, 2i + 1`
//! are the eight vectors `i, i + 4, .., i + 28`: each 128-bit half holds one column's word
//! pair, so their diagonal steps exchange words between neighbouring vectors within the
//! halves (`vpalignr`). Either way two independent 16-word states are in flight.
use core::arch::x86_64::*;

use super::Block;

/// `a + b + 2 * lo32(a) * lo32(b)` in every lane.
macro_rules! fblamka {
    ($a:expr, $b:expr) => {{
        let m = _mm256_mul_epu32($a, $b);
        _mm256_add_epi64(_mm256_add_epi64($a, $b), _mm256_add_epi64(m, m))
    }};
}

// Rotations right of every 64-bit lane, on AVX2: dword and byte shuffles, a shift pair for 63.
macro_rules! rotr32 {
    ($x:expr) => {
        _mm256_shuffle_epi32::<0b10_11_00_01>($x)
    };
}
macro_rules! rotr24 {
    ($x:expr) => {
        _mm256_shuffle_epi8(
            $x,
            _mm256_setr_epi8(
                3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, 3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9,
                10,
            ),
        )
    };
}
macro_rules! rotr16 {
    ($x:expr) => {
        _mm256_shuffle_epi8(
            $x,
            _mm256_setr_epi8(
                2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15,
                8, 9,
            ),
        )
    };
}
macro_rules! rotr63 {
    ($x:expr) => {{
        let x = $x;
        _mm256_xor_si256(_mm256_srli_epi64::<63>(x), _mm256_add_epi64(x, x))
    }};
}

// The same rotations with AVX-512VL's `vprorq`.
macro_rules! ror32 {
    ($x:expr) => {
        _mm256_ror_epi64::<32>($x)
    };
}
macro_rules! ror24 {
    ($x:expr) => {
        _mm256_ror_epi64::<24>($x)
    };
}
macro_rules! ror16 {
    ($x:expr) => {
        _mm256_ror_epi64::<16>($x)
    };
}
macro_rules! ror63 {
    ($x:expr) => {
        _mm256_ror_epi64::<63>($x)
    };
}

/// The G function on two states at once (lane-wise): `(a0, b0, c0, d0)` and `(a1, b1, c1, d1)`.
macro_rules! g2 {
    ($r32:ident, $r24:ident, $r16:ident, $r63:ident; $a0:ident, $a1:ident, $b0:ident, $b1:ident, $c0:ident, $c1:ident, $d0:ident, $d1:ident) => {
        $a0 = fblamka!($a0, $b0);
        $a1 = fblamka!($a1, $b1);
        $d0 = $r32!(_mm256_xor_si256($d0, $a0));
        $d1 = $r32!(_mm256_xor_si256($d1, $a1));
        $c0 = fblamka!($c0, $d0);
        $c1 = fblamka!($c1, $d1);
        $b0 = $r24!(_mm256_xor_si256($b0, $c0));
        $b1 = $r24!(_mm256_xor_si256($b1, $c1));
        $a0 = fblamka!($a0, $b0);
        $a1 = fblamka!($a1, $b1);
        $d0 = $r16!(_mm256_xor_si256($d0, $a0));
        $d1 = $r16!(_mm256_xor_si256($d1, $a1));
        $c0 = fblamka!($c0, $d0);
        $c1 = fblamka!($c1, $d1);
        $b0 = $r63!(_mm256_xor_si256($b0, $c0));
        $b1 = $r63!(_mm256_xor_si256($b1, $c1));
    };
}

/// P on two rows at once: `(a0 b0 c0 d0)` is one row, `(a1 b1 c1 d1)` the next.
macro_rules! round_rows {
    ($r32:ident, $r24:ident, $r16:ident, $r63:ident; $a0:ident, $b0:ident, $c0:ident, $d0:ident, $a1:ident, $b1:ident, $c1:ident, $d1:ident) => {
        g2!($r32, $r24, $r16, $r63; $a0, $a1, $b0, $b1, $c0, $c1, $d0, $d1);
        // Diagonals: B, C, D rotated by one, two and three words.
        $b0 = _mm256_permute4x64_epi64::<0x39>($b0);
        $b1 = _mm256_permute4x64_epi64::<0x39>($b1);
        $c0 = _mm256_permute4x64_epi64::<0x4e>($c0);
        $c1 = _mm256_permute4x64_epi64::<0x4e>($c1);
        $d0 = _mm256_permute4x64_epi64::<0x93>($d0);
        $d1 = _mm256_permute4x64_epi64::<0x93>($d1);
        g2!($r32, $r24, $r16, $r63; $a0, $a1, $b0, $b1, $c0, $c1, $d0, $d1);
        $b0 = _mm256_permute4x64_epi64::<0x93>($b0);
        $b1 = _mm256_permute4x64_epi64::<0x93>($b1);
        $c0 = _mm256_permute4x64_epi64::<0x4e>($c0);
        $c1 = _mm256_permute4x64_epi64::<0x4e>($c1);
        $d0 = _mm256_permute4x64_epi64::<0x39>($d0);
        $d1 = _mm256_permute4x64_epi64::<0x39>($d1);
    };
}

/// P on two columns at once; in each 128-bit half the state words are
/// `a0 = (v0 v1)`, `a1 = (v2 v3)`, `b0 = (v4 v5)`, `b1 = (v6 v7)`, ... `d1 = (v14 v15)`.
macro_rules! round_columns {
    ($r32:ident, $r24:ident, $r16:ident, $r63:ident; $a0:ident, $a1:ident, $b0:ident, $b1:ident, $c0:ident, $c1:ident, $d0:ident, $d1:ident) => {
        g2!($r32, $r24, $r16, $r63; $a0, $a1, $b0, $b1, $c0, $c1, $d0, $d1);
        // Diagonals: (v5 v6)(v7 v4), (v10 v11)(v8 v9), (v15 v12)(v13 v14).
        let (t0, t1) = (_mm256_alignr_epi8::<8>($b1, $b0), _mm256_alignr_epi8::<8>($b0, $b1));
        ($b0, $b1) = (t0, t1);
        ($c0, $c1) = ($c1, $c0);
        let (t0, t1) = (_mm256_alignr_epi8::<8>($d0, $d1), _mm256_alignr_epi8::<8>($d1, $d0));
        ($d0, $d1) = (t0, t1);
        g2!($r32, $r24, $r16, $r63; $a0, $a1, $b0, $b1, $c0, $c1, $d0, $d1);
        let (t0, t1) = (_mm256_alignr_epi8::<8>($b0, $b1), _mm256_alignr_epi8::<8>($b1, $b0));
        ($b0, $b1) = (t0, t1);
        ($c0, $c1) = ($c1, $c0);
        let (t0, t1) = (_mm256_alignr_epi8::<8>($d1, $d0), _mm256_alignr_epi8::<8>($d0, $d1));
        ($d0, $d1) = (t0, t1);
    };
}

// SAFETY (every `ld!`/`st!` below): the pointer is one of the functions' `&`/`&mut` arguments
// of 1024 bytes (those written are `&mut`: this function's alone), every index is below 32,
// and `loadu`/`storeu` take any alignment.
macro_rules! ld {
    ($p:expr, $j:expr) => {
        unsafe { _mm256_loadu_si256($p.add($j)) }
    };
}
macro_rules! st {
    ($p:expr, $j:expr, $v:expr) => {
        unsafe { _mm256_storeu_si256($p.add($j), $v) }
    };
}

/// P on the columns of the block at `p` (32 vectors), in place.
macro_rules! columns {
    ($r32:ident, $r24:ident, $r16:ident, $r63:ident; $p:expr) => {
        // Columns 2i and 2i + 1: vectors i + 4k.
        for i in 0..4 {
            let (mut a0, mut a1, mut b0, mut b1) = (ld!($p, i), ld!($p, i + 4), ld!($p, i + 8), ld!($p, i + 12));
            let (mut c0, mut c1, mut d0, mut d1) = (ld!($p, i + 16), ld!($p, i + 20), ld!($p, i + 24), ld!($p, i + 28));
            round_columns!($r32, $r24, $r16, $r63; a0, a1, b0, b1, c0, c1, d0, d1);
            st!($p, i, a0);
            st!($p, i + 4, a1);
            st!($p, i + 8, b0);
            st!($p, i + 12, b1);
            st!($p, i + 16, c0);
            st!($p, i + 20, c1);
            st!($p, i + 24, d0);
            st!($p, i + 28, d1);
        }
    };
}

/// The kernels, generic over the rotations: `$permute` (P in place) and `$fill` (a whole
/// Argon2 block step, see [`super::fill_block`]).
macro_rules! kernel {
    ($permute:ident, $fill:ident, $features:literal, $r32:ident, $r24:ident, $r16:ident, $r63:ident) => {
        #[target_feature(enable = $features)]
        fn $permute(block: &mut Block) {
            let p = block.as_mut_ptr().cast::<__m256i>();
            // Rows 2i and 2i + 1: vectors 8i .. 8i + 4 and 8i + 4 .. 8i + 8.
            for i in 0..4 {
                let j = 8 * i;
                let (mut a0, mut b0, mut c0, mut d0) = (ld!(p, j), ld!(p, j + 1), ld!(p, j + 2), ld!(p, j + 3));
                let (mut a1, mut b1, mut c1, mut d1) = (ld!(p, j + 4), ld!(p, j + 5), ld!(p, j + 6), ld!(p, j + 7));
                round_rows!($r32, $r24, $r16, $r63; a0, b0, c0, d0, a1, b1, c1, d1);
                for (k, v) in [a0, b0, c0, d0, a1, b1, c1, d1].into_iter().enumerate() {
                    st!(p, j + k, v);
                }
            }
            columns!($r32, $r24, $r16, $r63; p);
        }

        #[target_feature(enable = $features)]
        fn $fill(prev: &mut Block, refb: &[u8; 1024], dst: &mut [u8; 1024], xor: bool, tmp: &mut Block) {
            let (pp, rp) = (prev.as_mut_ptr().cast::<__m256i>(), refb.as_ptr().cast::<__m256i>());
            let (dp, tp) = (dst.as_mut_ptr().cast::<__m256i>(), tmp.as_mut_ptr().cast::<__m256i>());
            // All 16 lines of the reference block requested at once (it is usually not in the
            // caches: a random block of the memory), then rows 2i and 2i + 1 of R = prev ^ ref
            // as its lines arrive; R (^ the block being overwritten) waits in `prev` for the end.
            for line in 0..16 {
                // SAFETY: a prefetch is a hint: it never faults, and the address is in `refb`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(refb.as_ptr().add(64 * line).cast()) };
            }
            for i in 0..4 {
                let j = 8 * i;
                let mut r = [_mm256_setzero_si256(); 8];
                for (k, r) in r.iter_mut().enumerate() {
                    *r = _mm256_xor_si256(ld!(pp, j + k), ld!(rp, j + k));
                    let xy = if xor { _mm256_xor_si256(*r, ld!(dp, j + k)) } else { *r };
                    st!(pp, j + k, xy);
                }
                let [mut a0, mut b0, mut c0, mut d0, mut a1, mut b1, mut c1, mut d1] = r;
                round_rows!($r32, $r24, $r16, $r63; a0, b0, c0, d0, a1, b1, c1, d1);
                for (k, v) in [a0, b0, c0, d0, a1, b1, c1, d1].into_iter().enumerate() {
                    st!(tp, j + k, v);
                }
            }
            columns!($r32, $r24, $r16, $r63; tp);
            for j in 0..32 {
                let out = _mm256_xor_si256(ld!(tp, j), ld!(pp, j));
                st!(pp, j, out);
                st!(dp, j, out);
            }
        }
    };
}

kernel!(permute_avx2, fill_avx2, "avx2", rotr32, rotr24, rotr16, rotr63);
kernel!(permute_avx512vl, fill_avx512vl, "avx2,avx512f,avx512vl", ror32, ror24, ror16, ror63);

/// The AVX2 kernel; the caller checked that AVX2 is available.
pub(super) fn permute(block: &mut Block) {
    // SAFETY: `super::permute` calls this only when detection found AVX2 (and the ymm state
    // saved by the OS).
    unsafe { permute_avx2(block) }
}

/// The AVX-512VL kernel; the caller checked that AVX-512F and AVX-512VL are available.
pub(super) fn permute_vl(block: &mut Block) {
    // SAFETY: `super::permute` calls this only when detection found AVX2, AVX-512F and
    // AVX-512VL (and the zmm state saved by the OS).
    unsafe { permute_avx512vl(block) }
}

/// The AVX2 block step; the caller checked that AVX2 is available.
pub(super) fn fill(prev: &mut Block, refb: &[u8; 1024], dst: &mut [u8; 1024], xor: bool, tmp: &mut Block) {
    // SAFETY: as for `permute`.
    unsafe { fill_avx2(prev, refb, dst, xor, tmp) }
}

/// The AVX-512VL block step; the caller checked that AVX-512F and AVX-512VL are available.
pub(super) fn fill_vl(prev: &mut Block, refb: &[u8; 1024], dst: &mut [u8; 1024], xor: bool, tmp: &mut Block) {
    // SAFETY: as for `permute_vl`.
    unsafe { fill_avx512vl(prev, refb, dst, xor, tmp) }
}
