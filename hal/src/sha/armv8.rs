//! aarch64 FEAT_SHA256 kernel: `N` PBKDF2-HMAC-SHA-256 chains in one instruction stream.
//!
//! The state registers `abcd = [A, B, C, D]`, `efgh = [E, F, G, H]` (lane 0 first) are already
//! the message words 0..8 of the block that carries the digest, so a digest feeds the next
//! compression without any shuffle; the padding words 8..16 (and their sums with the round
//! constants) are loop constants.
use super::{Chain, K32, SHA224_W7};
use core::arch::aarch64::*;

#[inline]
#[target_feature(enable = "neon")]
fn words(w: &[u32]) -> uint32x4_t {
    let w: &[u32; 4] = w.try_into().expect("four words");
    // SAFETY: `w` is four readable u32.
    unsafe { vld1q_u32(w.as_ptr()) }
}

/// `K32[4r..4r+4]` as a vector.
#[inline]
#[target_feature(enable = "neon")]
fn k(r: usize) -> uint32x4_t {
    words(&K32[4 * r..4 * r + 4])
}

/// Four rounds with the message+constant words `wk`.
macro_rules! rounds4 {
    ($abcd:expr, $efgh:expr, $wk:expr) => {{
        let wk = $wk;
        let prev = $abcd;
        $abcd = vsha256hq_u32(prev, $efgh, wk);
        $efgh = vsha256h2q_u32($efgh, prev, wk);
    }};
}

/// The loop-invariant parts of a digest block's compression.
#[derive(Clone, Copy)]
struct Pad {
    w2: uint32x4_t,
    w3: uint32x4_t,
    wk2: uint32x4_t,
    wk3: uint32x4_t,
}

/// Rounds `4r..4r+4` of every lane, with the message words `4r..4r+4` computed in place in
/// `w[l][i0]` from the previous sixteen (`i0..i3` = `r % 4` onward).
macro_rules! schedule {
    ($n:ident, $a:ident, $e:ident, $w:ident, $r:literal, $i0:literal, $i1:literal, $i2:literal, $i3:literal) => {
        for l in 0..$n {
            $w[l][$i0] = vsha256su1q_u32(vsha256su0q_u32($w[l][$i0], $w[l][$i1]), $w[l][$i2], $w[l][$i3]);
            rounds4!($a[l], $e[l], vaddq_u32($w[l][$i0], k($r)));
        }
    };
}

/// Compresses, for each lane `l`, the block `w0[l], w1[l], pad` from `(abcd, efgh)` and adds
/// the state back; evaluates to the new states (= the digest words). A macro so that it is
/// always inlined into the `target_feature` kernel.
macro_rules! compress {
    ($n:ident, $abcd:expr, $efgh:expr, $w0:expr, $w1:expr, $pad:expr) => {{
        let (abcd, efgh, w0, w1, pad): (uint32x4_t, uint32x4_t, [uint32x4_t; $n], [uint32x4_t; $n], Pad) =
            ($abcd, $efgh, $w0, $w1, $pad);
        let mut a = [abcd; $n];
        let mut e = [efgh; $n];
        let mut w = [[pad.w2; 4]; $n];
        for l in 0..$n {
            w[l] = [w0[l], w1[l], pad.w2, pad.w3];
        }
        for l in 0..$n {
            rounds4!(a[l], e[l], vaddq_u32(w0[l], k(0)));
        }
        for l in 0..$n {
            rounds4!(a[l], e[l], vaddq_u32(w1[l], k(1)));
        }
        for l in 0..$n {
            rounds4!(a[l], e[l], pad.wk2);
        }
        for l in 0..$n {
            rounds4!(a[l], e[l], pad.wk3);
        }
        schedule!($n, a, e, w, 4, 0, 1, 2, 3);
        schedule!($n, a, e, w, 5, 1, 2, 3, 0);
        schedule!($n, a, e, w, 6, 2, 3, 0, 1);
        schedule!($n, a, e, w, 7, 3, 0, 1, 2);
        schedule!($n, a, e, w, 8, 0, 1, 2, 3);
        schedule!($n, a, e, w, 9, 1, 2, 3, 0);
        schedule!($n, a, e, w, 10, 2, 3, 0, 1);
        schedule!($n, a, e, w, 11, 3, 0, 1, 2);
        schedule!($n, a, e, w, 12, 0, 1, 2, 3);
        schedule!($n, a, e, w, 13, 1, 2, 3, 0);
        schedule!($n, a, e, w, 14, 2, 3, 0, 1);
        schedule!($n, a, e, w, 15, 3, 0, 1, 2);
        for l in 0..$n {
            a[l] = vaddq_u32(a[l], abcd);
            e[l] = vaddq_u32(e[l], efgh);
        }
        (a, e)
    }};
}

/// Runs `iterations` PBKDF2 iterations on each of the `N` chains (see `super::pbkdf2_sha256_chains`).
///
/// # Safety
/// The CPU must implement FEAT_SHA256.
#[target_feature(enable = "sha2")]
pub(super) unsafe fn chains<const N: usize, const SHA224: bool>(
    inner: &[u32; 8],
    outer: &[u32; 8],
    chains: &mut [Chain; N],
    iterations: u32,
) {
    let pw = super::pad_words(SHA224);
    let (w2, w3) = (words(&pw[..4]), words(&pw[4..]));
    let pad = Pad { w2, w3, wk2: vaddq_u32(w2, k(2)), wk3: vaddq_u32(w3, k(3)) };
    macro_rules! with_pad {
        ($w:expr) => {
            if SHA224 {
                vsetq_lane_u32::<3>(SHA224_W7, $w)
            } else {
                $w
            }
        };
    }
    let (iabcd, iefgh) = (words(&inner[..4]), words(&inner[4..]));
    let (oabcd, oefgh) = (words(&outer[..4]), words(&outer[4..]));

    let mut u0 = [w2; N];
    let mut u1 = [w2; N];
    let mut t0 = [w2; N];
    let mut t1 = [w2; N];
    for l in 0..N {
        u0[l] = words(&chains[l].u[..4]);
        u1[l] = with_pad!(words(&chains[l].u[4..]));
        t0[l] = words(&chains[l].t[..4]);
        t1[l] = words(&chains[l].t[4..]);
    }
    for _ in 0..iterations {
        let (a, e) = compress!(N, iabcd, iefgh, u0, u1, pad);
        let mut v1 = e;
        for v in v1.iter_mut() {
            *v = with_pad!(*v);
        }
        let (a, e) = compress!(N, oabcd, oefgh, a, v1, pad);
        for l in 0..N {
            t0[l] = veorq_u32(t0[l], a[l]);
            t1[l] = veorq_u32(t1[l], e[l]);
            u0[l] = a[l];
            u1[l] = with_pad!(e[l]);
        }
    }
    for l in 0..N {
        store(&mut chains[l].u, u0[l], u1[l]);
        store(&mut chains[l].t, t0[l], t1[l]);
    }
}

#[inline]
#[target_feature(enable = "neon")]
fn store(out: &mut [u32; 8], lo: uint32x4_t, hi: uint32x4_t) {
    // SAFETY: `out` is eight writable u32: two 4-word stores.
    unsafe {
        vst1q_u32(out.as_mut_ptr(), lo);
        vst1q_u32(out.as_mut_ptr().add(4), hi);
    }
}
