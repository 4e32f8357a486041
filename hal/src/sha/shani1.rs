//! x86-64 SHA-NI kernel for PBKDF2-HMAC-SHA-1: `N` chains in one instruction stream.
//!
//! Layouts (lane 0 first): the state is `abcd = [D, C, B, A]` plus E in lane 3 of `e`; a
//! message quarter is `[W3, W2, W1, W0]`. The digest A..D is thus already message words 0..4,
//! and E (lanes 0..3 zero) with the padding bit in lane 2 is words 4..8; words 8..16 are the
//! constant padding and length.
use super::Chain;
use core::arch::x86_64::*;

/// Four rounds: `sha1rnds4` after adding the message words to E (`sha1nexte`).
macro_rules! rounds4 {
    ($h0:expr, $h1:expr, $wk:expr, $i:literal) => {
        _mm_sha1rnds4_epu32($h0, _mm_sha1nexte_epu32($h1, $wk), $i)
    };
}

/// The next message quarter from the previous four.
macro_rules! schedule {
    ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {
        _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32($v0, $v1), $v2), $v3)
    };
}

/// Rounds of every lane with a new message quarter `w[l][$i4]`.
macro_rules! sched4 {
    ($n:ident, $h0:ident, $h1:ident, $w:ident, $i0:literal, $i1:literal, $i2:literal, $i3:literal, $i4:literal, $f:literal) => {
        for l in 0..$n {
            $w[l][$i4] = schedule!($w[l][$i0], $w[l][$i1], $w[l][$i2], $w[l][$i3]);
            $h1[l] = rounds4!($h0[l], $h1[l], $w[l][$i4], $f);
        }
    };
}

/// The 80 rounds and the feed-forward of the block `w0[l], w1[l], w2, w3` from `(abcd, e)`
/// for every lane; evaluates to the new `(abcd, e)` (E in lane 3, lanes 0..3 those of `e`).
macro_rules! compress {
    ($n:ident, $abcd:expr, $e:expr, $w0:expr, $w1:expr, $w2:expr, $w3:expr) => {{
        let (abcd, e, w0, w1, w2, w3): (__m128i, __m128i, [__m128i; $n], [__m128i; $n], __m128i, __m128i) =
            ($abcd, $e, $w0, $w1, $w2, $w3);
        let mut h0 = [abcd; $n];
        let mut h1 = [e; $n];
        let mut w = [[w2; 5]; $n];
        for l in 0..$n {
            w[l] = [w0[l], w1[l], w2, w3, w3];
            h1[l] = _mm_sha1rnds4_epu32(h0[l], _mm_add_epi32(e, w0[l]), 0);
        }
        for l in 0..$n {
            h0[l] = rounds4!(h1[l], h0[l], w1[l], 0);
        }
        for l in 0..$n {
            h1[l] = rounds4!(h0[l], h1[l], w2, 0);
        }
        for l in 0..$n {
            h0[l] = rounds4!(h1[l], h0[l], w3, 0);
        }
        sched4!($n, h0, h1, w, 0, 1, 2, 3, 4, 0);
        sched4!($n, h1, h0, w, 1, 2, 3, 4, 0, 1);
        sched4!($n, h0, h1, w, 2, 3, 4, 0, 1, 1);
        sched4!($n, h1, h0, w, 3, 4, 0, 1, 2, 1);
        sched4!($n, h0, h1, w, 4, 0, 1, 2, 3, 1);
        sched4!($n, h1, h0, w, 0, 1, 2, 3, 4, 1);
        sched4!($n, h0, h1, w, 1, 2, 3, 4, 0, 2);
        sched4!($n, h1, h0, w, 2, 3, 4, 0, 1, 2);
        sched4!($n, h0, h1, w, 3, 4, 0, 1, 2, 2);
        sched4!($n, h1, h0, w, 4, 0, 1, 2, 3, 2);
        sched4!($n, h0, h1, w, 0, 1, 2, 3, 4, 2);
        sched4!($n, h1, h0, w, 1, 2, 3, 4, 0, 3);
        sched4!($n, h0, h1, w, 2, 3, 4, 0, 1, 3);
        sched4!($n, h1, h0, w, 3, 4, 0, 1, 2, 3);
        sched4!($n, h0, h1, w, 4, 0, 1, 2, 3, 3);
        sched4!($n, h1, h0, w, 0, 1, 2, 3, 4, 3);
        let mut out = [(abcd, e); $n];
        for l in 0..$n {
            out[l] = (_mm_add_epi32(abcd, h0[l]), _mm_sha1nexte_epu32(h1[l], e));
        }
        out
    }};
}

/// Runs `iterations` PBKDF2-HMAC-SHA-1 iterations on each of the `N` chains (words 0..5).
///
/// # Safety
/// The CPU must support SHA, SSE2, SSSE3 and SSE4.1.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(super) unsafe fn chains<const N: usize>(
    inner: &[u32; 5],
    outer: &[u32; 5],
    chains: &mut [Chain; N],
    iterations: u32,
) {
    let abcd = |s: &[u32]| _mm_set_epi32(s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32);
    let e = |w: u32| _mm_set_epi32(w as i32, 0, 0, 0);
    // Message words 4..8 of a digest block: E, then the padding bit (W5 = 0x80000000).
    let w5 = _mm_set_epi32(0, 0x8000_0000u32 as i32, 0, 0);
    let w2 = _mm_setzero_si128();
    let w3 = _mm_set_epi32(0, 0, 0, (64 + 20) * 8);
    let (iabcd, ie) = (abcd(inner), e(inner[4]));
    let (oabcd, oe) = (abcd(outer), e(outer[4]));

    let mut u = [(w2, w2); N];
    let mut t = [(w2, w2); N];
    for l in 0..N {
        u[l] = (abcd(&chains[l].u), e(chains[l].u[4]));
        t[l] = (abcd(&chains[l].t), e(chains[l].t[4]));
    }
    for _ in 0..iterations {
        let mut m0 = [w2; N];
        let mut m1 = [w2; N];
        for l in 0..N {
            m0[l] = u[l].0;
            m1[l] = _mm_or_si128(u[l].1, w5);
        }
        let v = compress!(N, iabcd, ie, m0, m1, w2, w3);
        for l in 0..N {
            m0[l] = v[l].0;
            m1[l] = _mm_or_si128(v[l].1, w5);
        }
        u = compress!(N, oabcd, oe, m0, m1, w2, w3);
        for l in 0..N {
            t[l] = (_mm_xor_si128(t[l].0, u[l].0), _mm_xor_si128(t[l].1, u[l].1));
        }
    }
    for l in 0..N {
        store(&mut chains[l].u, u[l]);
        store(&mut chains[l].t, t[l]);
    }
}

#[inline]
#[target_feature(enable = "sse2,sse4.1")]
fn store(out: &mut [u32; 8], (abcd, e): (__m128i, __m128i)) {
    let words = [
        _mm_extract_epi32(abcd, 3),
        _mm_extract_epi32(abcd, 2),
        _mm_extract_epi32(abcd, 1),
        _mm_extract_epi32(abcd, 0),
    ];
    for (o, w) in out.iter_mut().zip(words) {
        *o = w as u32;
    }
    out[4] = _mm_extract_epi32(e, 3) as u32;
}
