//! aarch64 FEAT_SHA512 kernel: `N` PBKDF2-HMAC-SHA-512 (or SHA-384) chains in one instruction
//! stream.
//!
//! The state is four vectors `ab = [A, B]`, `cd`, `ef`, `gh` (lane 0 first), which are already
//! the message words 0..8 of the block that carries the digest (SHA-384: words 0..6 from
//! `ab, cd, ef`, then the padding); the padding words 8..16 (and, in the first sixteen rounds,
//! their sums with the round constants) are loop constants. The rounds follow Arm's sequence
//! for `sha512h`/`sha512h2` (as in mbedtls and RustCrypto's `sha2`): two rounds per step, the
//! four state vectors changing roles every step. The instructions are Rust's `sha3` feature
//! (FEAT_SHA512 with FEAT_SHA3).
use super::Chain;
use core::arch::aarch64::*;

/// The SHA-512 round constants.
const K64: [u64; 80] = [
    0x428a2f98d728ae22,
    0x7137449123ef65cd,
    0xb5c0fbcfec4d3b2f,
    0xe9b5dba58189dbbc,
    0x3956c25bf348b538,
    0x59f111f1b605d019,
    0x923f82a4af194f9b,
    0xab1c5ed5da6d8118,
    0xd807aa98a3030242,
    0x12835b0145706fbe,
    0x243185be4ee4b28c,
    0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f,
    0x80deb1fe3b1696b1,
    0x9bdc06a725c71235,
    0xc19bf174cf692694,
    0xe49b69c19ef14ad2,
    0xefbe4786384f25e3,
    0x0fc19dc68b8cd5b5,
    0x240ca1cc77ac9c65,
    0x2de92c6f592b0275,
    0x4a7484aa6ea6e483,
    0x5cb0a9dcbd41fbd4,
    0x76f988da831153b5,
    0x983e5152ee66dfab,
    0xa831c66d2db43210,
    0xb00327c898fb213f,
    0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2,
    0xd5a79147930aa725,
    0x06ca6351e003826f,
    0x142929670a0e6e70,
    0x27b70a8546d22ffc,
    0x2e1b21385c26c926,
    0x4d2c6dfc5ac42aed,
    0x53380d139d95b3df,
    0x650a73548baf63de,
    0x766a0abb3c77b2a8,
    0x81c2c92e47edaee6,
    0x92722c851482353b,
    0xa2bfe8a14cf10364,
    0xa81a664bbc423001,
    0xc24b8b70d0f89791,
    0xc76c51a30654be30,
    0xd192e819d6ef5218,
    0xd69906245565a910,
    0xf40e35855771202a,
    0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8,
    0x1e376c085141ab53,
    0x2748774cdf8eeb99,
    0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63,
    0x4ed8aa4ae3418acb,
    0x5b9cca4f7763e373,
    0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc,
    0x78a5636f43172f60,
    0x84c87814a1f0ab72,
    0x8cc702081a6439ec,
    0x90befffa23631e28,
    0xa4506cebde82bde9,
    0xbef9a3f7b2c67915,
    0xc67178f2e372532b,
    0xca273eceea26619c,
    0xd186b8c721c0c207,
    0xeada7dd6cde0eb1e,
    0xf57d4f7fee6ed178,
    0x06f067aa72176fba,
    0x0a637dc5a2c898a6,
    0x113f9804bef90dae,
    0x1b710b35131c471b,
    0x28db77f523047d84,
    0x32caab7b40c72493,
    0x3c9ebe0a15c9bebc,
    0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6,
    0x597f299cfc657e2a,
    0x5fcb6fab3ad6faec,
    0x6c44198c4a475817,
];

#[inline]
#[target_feature(enable = "neon")]
fn words(w: &[u64]) -> uint64x2_t {
    let w: &[u64; 2] = w.try_into().expect("two words");
    // SAFETY: `w` is two readable u64.
    unsafe { vld1q_u64(w.as_ptr()) }
}

/// `K64[2i..2i+2]` as a vector.
#[inline]
#[target_feature(enable = "neon")]
fn k(i: usize) -> uint64x2_t {
    words(&K64[2 * i..2 * i + 2])
}

/// Rounds `2i, 2i+1` with the message+constant words `wk`, on the state vectors in the roles
/// `p, q, r, s` (step `i`: `ab, cd, ef, gh` rotated right by `i % 4`).
macro_rules! rounds2 {
    ($p:expr, $q:expr, $r:expr, $s:expr, $wk:expr) => {{
        let wk = $wk;
        let sum = vaddq_u64(vextq_u64::<1>(wk, wk), $s);
        let im = vsha512hq_u64(sum, vextq_u64::<1>($r, $s), vextq_u64::<1>($q, $r));
        $s = vsha512h2q_u64(im, $q, $p);
        $q = vaddq_u64($q, im);
    }};
}

/// Step `i` of every lane: the roles of the state vectors `x[l][0..4]` (`i % 4` = 0: `ab, cd,
/// ef, gh`) given by the literal indices `p, q, r, s`.
macro_rules! step {
    ($n:ident, $x:ident, $p:literal, $q:literal, $r:literal, $s:literal, $wk:expr) => {
        for l in 0..$n {
            rounds2!($x[l][$p], $x[l][$q], $x[l][$r], $x[l][$s], $wk(l));
        }
    };
}

/// Steps `i` >= 8 of every lane: the message words `2i, 2i+1` computed in place in `w[l][j0]`
/// (`j0..j7` = `i % 8` onward) from the previous sixteen.
macro_rules! sched {
    ($n:ident, $x:ident, $w:ident, $i:expr, $p:literal, $q:literal, $r:literal, $s:literal,
     $j0:literal, $j1:literal, $j4:literal, $j5:literal, $j7:literal) => {
        for l in 0..$n {
            $w[l][$j0] = vsha512su1q_u64(
                vsha512su0q_u64($w[l][$j0], $w[l][$j1]),
                $w[l][$j7],
                vextq_u64::<1>($w[l][$j4], $w[l][$j5]),
            );
            rounds2!($x[l][$p], $x[l][$q], $x[l][$r], $x[l][$s], vaddq_u64($w[l][$j0], k($i)));
        }
    };
}

/// Eight steps (sixteen rounds) with scheduled message words, from step `i`.
macro_rules! sched8 {
    ($n:ident, $x:ident, $w:ident, $i:expr) => {
        sched!($n, $x, $w, $i, 0, 1, 2, 3, 0, 1, 4, 5, 7);
        sched!($n, $x, $w, $i + 1, 3, 0, 1, 2, 1, 2, 5, 6, 0);
        sched!($n, $x, $w, $i + 2, 2, 3, 0, 1, 2, 3, 6, 7, 1);
        sched!($n, $x, $w, $i + 3, 1, 2, 3, 0, 3, 4, 7, 0, 2);
        sched!($n, $x, $w, $i + 4, 0, 1, 2, 3, 4, 5, 0, 1, 3);
        sched!($n, $x, $w, $i + 5, 3, 0, 1, 2, 5, 6, 1, 2, 4);
        sched!($n, $x, $w, $i + 6, 2, 3, 0, 1, 6, 7, 2, 3, 5);
        sched!($n, $x, $w, $i + 7, 1, 2, 3, 0, 7, 0, 3, 4, 6);
    };
}

/// The loop-invariant parts of a digest block's compression: the message words 6..16 (only
/// 8..16 for SHA-512) and their sums with the round constants.
#[derive(Clone, Copy)]
struct Pad {
    /// `w[j]`: message words `2j, 2j+1` (constant for `j` >= 4, and `j` = 3 with SHA-384).
    w: [uint64x2_t; 8],
    /// `wk[j] = w[j] + K64[2j..2j+2]`.
    wk: [uint64x2_t; 8],
}

/// The 80 rounds and the feed-forward of the digest blocks `m[l]` (message words 0..8; only
/// 0..6 are used with SHA-384) from `state` for every lane; evaluates to the new states.
macro_rules! compress {
    ($n:ident, $sha384:expr, $state:expr, $m:expr, $pad:expr) => {{
        let (state, m, pad): ([uint64x2_t; 4], [[uint64x2_t; 4]; $n], Pad) = ($state, $m, $pad);
        let mut x = [state; $n];
        let mut w = [pad.w; $n];
        for l in 0..$n {
            w[l][0] = m[l][0];
            w[l][1] = m[l][1];
            w[l][2] = m[l][2];
            if !$sha384 {
                w[l][3] = m[l][3];
            }
        }
        step!($n, x, 0, 1, 2, 3, |l: usize| vaddq_u64(w[l][0], k(0)));
        step!($n, x, 3, 0, 1, 2, |l: usize| vaddq_u64(w[l][1], k(1)));
        step!($n, x, 2, 3, 0, 1, |l: usize| vaddq_u64(w[l][2], k(2)));
        step!($n, x, 1, 2, 3, 0, |l: usize| if $sha384 { pad.wk[3] } else { vaddq_u64(w[l][3], k(3)) });
        step!($n, x, 0, 1, 2, 3, |_| pad.wk[4]);
        step!($n, x, 3, 0, 1, 2, |_| pad.wk[5]);
        step!($n, x, 2, 3, 0, 1, |_| pad.wk[6]);
        step!($n, x, 1, 2, 3, 0, |_| pad.wk[7]);
        sched8!($n, x, w, 8);
        sched8!($n, x, w, 16);
        sched8!($n, x, w, 24);
        sched8!($n, x, w, 32);
        for l in 0..$n {
            for j in 0..4 {
                x[l][j] = vaddq_u64(x[l][j], state[j]);
            }
        }
        x
    }};
}

/// Runs `iterations` PBKDF2 iterations on each of the `N` chains (see
/// `super::pbkdf2_sha512_chains`).
///
/// # Safety
/// The CPU must implement FEAT_SHA512 (Rust's `sha3` feature: FEAT_SHA512 and FEAT_SHA3).
#[target_feature(enable = "sha3")]
pub(super) unsafe fn chains<const N: usize, const SHA384: bool>(
    inner: &[u64; 8],
    outer: &[u64; 8],
    chains: &mut [Chain<u64>; N],
    iterations: u32,
) {
    let pw = super::pad_words64(SHA384);
    let zero = vdupq_n_u64(0);
    let mut pad = Pad { w: [zero; 8], wk: [zero; 8] };
    for j in 3..8 {
        pad.w[j] = words(&pw[2 * j - 6..2 * j - 4]);
        pad.wk[j] = vaddq_u64(pad.w[j], k(j));
    }
    let load = |s: &[u64; 8]| [words(&s[0..2]), words(&s[2..4]), words(&s[4..6]), words(&s[6..8])];
    let (istate, ostate) = (load(inner), load(outer));

    let mut u = [[zero; 4]; N];
    let mut t = [[zero; 4]; N];
    for l in 0..N {
        u[l] = load(&chains[l].u);
        t[l] = load(&chains[l].t);
    }
    for _ in 0..iterations {
        let v = compress!(N, SHA384, istate, u, pad);
        u = compress!(N, SHA384, ostate, v, pad);
        for l in 0..N {
            for j in 0..4 {
                t[l][j] = veorq_u64(t[l][j], u[l][j]);
            }
        }
    }
    for l in 0..N {
        store(&mut chains[l].u, u[l]);
        store(&mut chains[l].t, t[l]);
    }
}

#[inline]
#[target_feature(enable = "neon")]
fn store(out: &mut [u64; 8], x: [uint64x2_t; 4]) {
    for (o, v) in out.chunks_exact_mut(2).zip(x) {
        // SAFETY: `o` is two writable u64.
        unsafe { vst1q_u64(o.as_mut_ptr(), v) };
    }
}
