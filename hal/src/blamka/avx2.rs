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

/// The kernel, generic over the rotations.
macro_rules! kernel {
    ($name:ident, $features:literal, $r32:ident, $r24:ident, $r16:ident, $r63:ident) => {
        #[target_feature(enable = $features)]
        fn $name(block: &mut Block) {
            let p = block.as_mut_ptr().cast::<__m256i>();
            // SAFETY (loads and stores below): `p` points at the 1024 bytes of `block`, which
            // `&mut` gives this function alone; every index is below 32, and `loadu`/`storeu`
            // take any alignment.
            macro_rules! ld {
                ($j:expr) => {
                    unsafe { _mm256_loadu_si256(p.add($j)) }
                };
            }
            macro_rules! st {
                ($j:expr, $v:expr) => {
                    unsafe { _mm256_storeu_si256(p.add($j), $v) }
                };
            }
            // Rows 2i and 2i + 1: vectors 8i .. 8i + 4 and 8i + 4 .. 8i + 8.
            for i in 0..4 {
                let j = 8 * i;
                let (mut a0, mut b0, mut c0, mut d0) = (ld!(j), ld!(j + 1), ld!(j + 2), ld!(j + 3));
                let (mut a1, mut b1, mut c1, mut d1) = (ld!(j + 4), ld!(j + 5), ld!(j + 6), ld!(j + 7));
                g2!($r32, $r24, $r16, $r63; a0, a1, b0, b1, c0, c1, d0, d1);
                // Diagonals: B, C, D rotated by one, two and three words.
                b0 = _mm256_permute4x64_epi64::<0x39>(b0);
                b1 = _mm256_permute4x64_epi64::<0x39>(b1);
                c0 = _mm256_permute4x64_epi64::<0x4e>(c0);
                c1 = _mm256_permute4x64_epi64::<0x4e>(c1);
                d0 = _mm256_permute4x64_epi64::<0x93>(d0);
                d1 = _mm256_permute4x64_epi64::<0x93>(d1);
                g2!($r32, $r24, $r16, $r63; a0, a1, b0, b1, c0, c1, d0, d1);
                b0 = _mm256_permute4x64_epi64::<0x93>(b0);
                b1 = _mm256_permute4x64_epi64::<0x93>(b1);
                c0 = _mm256_permute4x64_epi64::<0x4e>(c0);
                c1 = _mm256_permute4x64_epi64::<0x4e>(c1);
                d0 = _mm256_permute4x64_epi64::<0x39>(d0);
                d1 = _mm256_permute4x64_epi64::<0x39>(d1);
                st!(j, a0);
                st!(j + 1, b0);
                st!(j + 2, c0);
                st!(j + 3, d0);
                st!(j + 4, a1);
                st!(j + 5, b1);
                st!(j + 6, c1);
                st!(j + 7, d1);
            }
            // Columns 2i and 2i + 1: vectors i + 4k; in each 128-bit half the state words
            // (v0 v1)(v2 v3) | (v4 v5)(v6 v7) | (v8 v9)(v10 v11) | (v12 v13)(v14 v15).
            for i in 0..4 {
                let (mut a0, mut a1, mut b0, mut b1) = (ld!(i), ld!(i + 4), ld!(i + 8), ld!(i + 12));
                let (mut c0, mut c1, mut d0, mut d1) = (ld!(i + 16), ld!(i + 20), ld!(i + 24), ld!(i + 28));
                g2!($r32, $r24, $r16, $r63; a0, a1, b0, b1, c0, c1, d0, d1);
                // Diagonals: (v5 v6)(v7 v4), (v10 v11)(v8 v9), (v15 v12)(v13 v14).
                let (t0, t1) = (_mm256_alignr_epi8::<8>(b1, b0), _mm256_alignr_epi8::<8>(b0, b1));
                (b0, b1) = (t0, t1);
                (c0, c1) = (c1, c0);
                let (t0, t1) = (_mm256_alignr_epi8::<8>(d0, d1), _mm256_alignr_epi8::<8>(d1, d0));
                (d0, d1) = (t0, t1);
                g2!($r32, $r24, $r16, $r63; a0, a1, b0, b1, c0, c1, d0, d1);
                let (t0, t1) = (_mm256_alignr_epi8::<8>(b0, b1), _mm256_alignr_epi8::<8>(b1, b0));
                (b0, b1) = (t0, t1);
                (c0, c1) = (c1, c0);
                let (t0, t1) = (_mm256_alignr_epi8::<8>(d1, d0), _mm256_alignr_epi8::<8>(d0, d1));
                (d0, d1) = (t0, t1);
                st!(i, a0);
                st!(i + 4, a1);
                st!(i + 8, b0);
                st!(i + 12, b1);
                st!(i + 16, c0);
                st!(i + 20, c1);
                st!(i + 24, d0);
                st!(i + 28, d1);
            }
        }
    };
}

kernel!(permute_avx2, "avx2", rotr32, rotr24, rotr16, rotr63);
kernel!(permute_avx512vl, "avx2,avx512f,avx512vl", ror32, ror24, ror16, ror63);

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
