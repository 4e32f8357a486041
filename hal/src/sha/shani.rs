//! x86-64 SHA-NI kernel: `N` PBKDF2-HMAC-SHA-256 chains in one instruction stream.
//!
//! Register layouts (lane 0 first): a message quarter `w` is `[W0, W1, W2, W3]`; the chaining
//! state is kept as `abef = [F, E, B, A]` and `cdgh = [H, G, D, C]`, the operands of
//! `sha256rnds2`. A digest becomes the next block's words 0..8 with four shuffles, and the
//! padding words 8..16 (and their sums with the round constants) are loop constants.
use super::{Chain, K32, SHA224_W7};
use core::arch::x86_64::*;

/// `K32[4r..4r+4]` as a vector.
#[inline]
#[target_feature(enable = "sse2")]
fn k(r: usize) -> __m128i {
    _mm_set_epi32(K32[4 * r + 3] as i32, K32[4 * r + 2] as i32, K32[4 * r + 1] as i32, K32[4 * r] as i32)
}

#[inline]
#[target_feature(enable = "sse2")]
fn words(w: &[u32]) -> __m128i {
    _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32)
}

/// Digest words `[A..D]`, `[E..H]` to the `abef`/`cdgh` state layout.
#[inline]
#[target_feature(enable = "sse2,ssse3,sse4.1")]
fn to_state(dcba: __m128i, hgfe: __m128i) -> (__m128i, __m128i) {
    let cdab = _mm_shuffle_epi32(dcba, 0xB1);
    let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    (_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0))
}

/// The `abef`/`cdgh` state layout to digest words `[A..D]`, `[E..H]`: the message words of the
/// block that carries the digest.
#[inline]
#[target_feature(enable = "sse2,ssse3,sse4.1")]
fn to_words(abef: __m128i, cdgh: __m128i) -> (__m128i, __m128i) {
    let feba = _mm_shuffle_epi32(abef, 0x1B);
    let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    (_mm_blend_epi16(feba, dchg, 0xF0), _mm_alignr_epi8(dchg, feba, 8))
}

/// Four rounds with the message+constant words `wk`.
macro_rules! rounds4 {
    ($abef:expr, $cdgh:expr, $wk:expr) => {{
        let wk = $wk;
        $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, wk);
        $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }};
}

/// The loop-invariant parts of a digest block's compression.
#[derive(Clone, Copy)]
struct Pad {
    /// Message words 8..12 and 12..16.
    w2: __m128i,
    w3: __m128i,
    /// The same plus round constants 8..12 and 12..16.
    wk2: __m128i,
    wk3: __m128i,
}

/// Rounds `4r..4r+4` of every lane, with the message words `4r..4r+4` computed in place in
/// `w[l][i0]` from the previous sixteen (`i0..i3` = `r % 4` onward).
macro_rules! schedule {
    ($n:ident, $a:ident, $c:ident, $w:ident, $r:literal, $i0:literal, $i1:literal, $i2:literal, $i3:literal) => {
        for l in 0..$n {
            let m =
                _mm_add_epi32(_mm_sha256msg1_epu32($w[l][$i0], $w[l][$i1]), _mm_alignr_epi8($w[l][$i3], $w[l][$i2], 4));
            $w[l][$i0] = _mm_sha256msg2_epu32(m, $w[l][$i3]);
            rounds4!($a[l], $c[l], _mm_add_epi32($w[l][$i0], k($r)));
        }
    };
}

/// Runs the 64 rounds, for each lane `l`, of the block `w0[l], w1[l], pad` from `(abef, cdgh)`
/// and evaluates to the states before the feed-forward. `wk0[l]` holds the operands of the
/// first two `sha256rnds2` (words 0, 1 and 2, 3 plus their round constants in the low
/// halves), computed by the caller straight from the previous compression's output (see
/// [`Next`]). A macro so that it is always inlined into the `target_feature` kernel (a call
/// would pass the lanes through memory).
macro_rules! compress {
    ($n:ident, $abef:expr, $cdgh:expr, $w0:expr, $w1:expr, $wk0:expr, $pad:expr) => {{
        let (abef, cdgh, w0, w1, wk0, pad): (__m128i, __m128i, [__m128i; $n], [__m128i; $n], [[__m128i; 2]; $n], Pad) =
            ($abef, $cdgh, $w0, $w1, $wk0, $pad);
        let mut a = [abef; $n];
        let mut c = [cdgh; $n];
        let mut w = [[pad.w2; 4]; $n];
        for l in 0..$n {
            w[l] = [w0[l], w1[l], pad.w2, pad.w3];
        }
        for l in 0..$n {
            c[l] = _mm_sha256rnds2_epu32(c[l], a[l], wk0[l][0]);
            a[l] = _mm_sha256rnds2_epu32(a[l], c[l], wk0[l][1]);
        }
        for l in 0..$n {
            rounds4!(a[l], c[l], _mm_add_epi32(w1[l], k(1)));
        }
        for l in 0..$n {
            rounds4!(a[l], c[l], pad.wk2);
        }
        for l in 0..$n {
            rounds4!(a[l], c[l], pad.wk3);
        }
        schedule!($n, a, c, w, 4, 0, 1, 2, 3);
        schedule!($n, a, c, w, 5, 1, 2, 3, 0);
        schedule!($n, a, c, w, 6, 2, 3, 0, 1);
        schedule!($n, a, c, w, 7, 3, 0, 1, 2);
        schedule!($n, a, c, w, 8, 0, 1, 2, 3);
        schedule!($n, a, c, w, 9, 1, 2, 3, 0);
        schedule!($n, a, c, w, 10, 2, 3, 0, 1);
        schedule!($n, a, c, w, 11, 3, 0, 1, 2);
        schedule!($n, a, c, w, 12, 0, 1, 2, 3);
        schedule!($n, a, c, w, 13, 1, 2, 3, 0);
        schedule!($n, a, c, w, 14, 2, 3, 0, 1);
        schedule!($n, a, c, w, 15, 3, 0, 1, 2);
        (a, c)
    }};
}

/// Runs `iterations` PBKDF2 iterations on each of the `N` chains (see `super::pbkdf2_sha256_chains`).
///
/// # Safety
/// The CPU must support SHA, SSE2, SSSE3 and SSE4.1.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(super) unsafe fn chains<const N: usize, const SHA224: bool>(
    inner: &[u32; 8],
    outer: &[u32; 8],
    chains: &mut [Chain; N],
    iterations: u32,
) {
    let pw = super::pad_words(SHA224);
    let (w2, w3) = (words(&pw[..4]), words(&pw[4..]));
    let pad = Pad { w2, w3, wk2: _mm_add_epi32(w2, k(2)), wk3: _mm_add_epi32(w3, k(3)) };
    // SHA-224: word 7 of a digest block is the padding byte, not a digest word.
    let w7 = _mm_set_epi32(SHA224_W7 as i32, 0, 0, 0);
    macro_rules! with_pad {
        ($w:expr) => {
            if SHA224 {
                _mm_blend_epi16($w, w7, 0xC0)
            } else {
                $w
            }
        };
    }
    let (iabef, icdgh) = to_state(words(&inner[..4]), words(&inner[4..]));
    let (oabef, ocdgh) = to_state(words(&outer[..4]), words(&outer[4..]));
    let (after_inner, after_outer) = (Next::new(iabef, icdgh), Next::new(oabef, ocdgh));

    let mut u0 = [w2; N];
    let mut u1 = [w2; N];
    let mut uk = [[w2; 2]; N];
    let mut t0 = [w2; N];
    let mut t1 = [w2; N];
    for l in 0..N {
        u0[l] = words(&chains[l].u[..4]);
        u1[l] = with_pad!(words(&chains[l].u[4..]));
        let wk = _mm_add_epi32(u0[l], k(0));
        uk[l] = [wk, _mm_shuffle_epi32(wk, 0x0E)];
        t0[l] = words(&chains[l].t[..4]);
        t1[l] = words(&chains[l].t[4..]);
    }
    for _ in 0..iterations {
        let (a, c) = compress!(N, iabef, icdgh, u0, u1, uk, pad);
        let mut v0 = [w2; N];
        let mut v1 = [w2; N];
        let mut vk = [[w2; 2]; N];
        for l in 0..N {
            let (x0, x1) = to_words(_mm_add_epi32(a[l], iabef), _mm_add_epi32(c[l], icdgh));
            v0[l] = x0;
            v1[l] = with_pad!(x1);
            vk[l] = after_inner.wk0(a[l], c[l]);
        }
        let (a, c) = compress!(N, oabef, ocdgh, v0, v1, vk, pad);
        for l in 0..N {
            let (x0, x1) = to_words(_mm_add_epi32(a[l], oabef), _mm_add_epi32(c[l], ocdgh));
            t0[l] = _mm_xor_si128(t0[l], x0);
            t1[l] = _mm_xor_si128(t1[l], x1);
            u0[l] = x0;
            u1[l] = with_pad!(x1);
            uk[l] = after_outer.wk0(a[l], c[l]);
        }
    }
    for l in 0..N {
        store(&mut chains[l].u, u0[l], u1[l]);
        store(&mut chains[l].t, t0[l], t1[l]);
    }
}

/// The first message operands of the compression that follows one from a given state, taken
/// from that compression's raw output: the feed-forward and the round constants are folded
/// into one addition (`state + K` per lane) and a shuffle moves digest words A, B (resp. C, D)
/// to the low half, which is all the first `sha256rnds2` reads. This keeps the two shuffles
/// and the blend of the digest-to-words conversion off the chain's critical path.
#[derive(Clone, Copy)]
struct Next {
    /// `abef` + `[0, 0, K1, K0]` (lanes 0..4), `cdgh` + `[0, 0, K3, K2]`.
    ab: __m128i,
    cd: __m128i,
}

impl Next {
    #[inline]
    #[target_feature(enable = "sse2")]
    fn new(abef: __m128i, cdgh: __m128i) -> Next {
        let ab = _mm_add_epi32(abef, _mm_set_epi32(K32[0] as i32, K32[1] as i32, 0, 0));
        let cd = _mm_add_epi32(cdgh, _mm_set_epi32(K32[2] as i32, K32[3] as i32, 0, 0));
        Next { ab, cd }
    }

    /// `[A+K0, B+K1, ..]`, `[C+K2, D+K3, ..]` of the digest of the raw output `(abef, cdgh)`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn wk0(self, abef: __m128i, cdgh: __m128i) -> [__m128i; 2] {
        [_mm_shuffle_epi32(_mm_add_epi32(abef, self.ab), 0x0B), _mm_shuffle_epi32(_mm_add_epi32(cdgh, self.cd), 0x0B)]
    }
}

#[inline]
#[target_feature(enable = "sse2")]
fn store(out: &mut [u32; 8], lo: __m128i, hi: __m128i) {
    let p: *mut __m128i = out.as_mut_ptr().cast();
    // SAFETY: `out` is 32 writable bytes: two unaligned 16-byte stores.
    unsafe {
        _mm_storeu_si128(p, lo);
        _mm_storeu_si128(p.add(1), hi);
    }
}
