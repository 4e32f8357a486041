//! aarch64 FEAT_SHA1 kernel: `N` PBKDF2-HMAC-SHA-1 chains in one instruction stream.
//!
//! Layouts (lane 0 first): the state is `abcd = [A, B, C, D]` plus E as a scalar; a message
//! quarter is `[W0, W1, W2, W3]`. The digest A..D is thus already message words 0..4, and
//! words 4..8 are `[E, 0x80000000, 0, 0]` (E, then the padding bit); words 8..16 are the
//! constant padding and length, whose sums with the first round constant are loop constants.
//! The FEAT_SHA1 instructions (`sha1c/p/m`, `sha1h`, `sha1su0/1`) come with FEAT_SHA256 in
//! the `sha2` target feature (std detects it only when the CPU reports both).
use super::Chain;
use core::arch::aarch64::*;

/// The SHA-1 round constants, one per twenty rounds.
const K: [u32; 4] = [0x5a82_7999, 0x6ed9_eba1, 0x8f1b_bcdc, 0xca62_c1d6];

/// Four rounds with the boolean function `$f` (`vsha1cq_u32`: choose, `vsha1pq_u32`: parity,
/// `vsha1mq_u32`: majority) and the message+constant words `wk`; `$e` is E before the rounds
/// and E after them (A before them, rotated by 30: `sha1h`).
macro_rules! rounds4 {
    ($f:ident, $abcd:expr, $e:expr, $wk:expr) => {{
        let wk = $wk;
        let a = vgetq_lane_u32::<0>($abcd);
        $abcd = $f($abcd, $e, wk);
        $e = vsha1h_u32(a);
    }};
}

/// Four rounds of every lane with the message words `4g..4g+4` (`g` > 3) computed in place in
/// `w[l][i0]` from the previous sixteen (`i0..i3` = `g % 4` onward), and the constant `k`.
macro_rules! sched4 {
    ($n:ident, $f:ident, $k:expr, $a:ident, $e:ident, $w:ident, $i0:literal, $i1:literal, $i2:literal, $i3:literal) => {
        for l in 0..$n {
            $w[l][$i0] = vsha1su1q_u32(vsha1su0q_u32($w[l][$i0], $w[l][$i1], $w[l][$i2]), $w[l][$i3]);
            rounds4!($f, $a[l], $e[l], vaddq_u32($w[l][$i0], $k));
        }
    };
}

/// The loop-invariant parts of a digest block's compression.
#[derive(Clone, Copy)]
struct Pad {
    /// Words 8..12 (zero) and 12..16 (the length).
    w2: uint32x4_t,
    w3: uint32x4_t,
    /// Their sums with `K[0]`.
    wk2: uint32x4_t,
    wk3: uint32x4_t,
    /// The round constants as vectors.
    k: [uint32x4_t; 4],
}

/// The 80 rounds and the feed-forward of the block `w0[l], w1[l], pad` from `(abcd, e)` for
/// every lane; evaluates to the new `(abcd, e)` per lane. A macro so that it is always inlined
/// into the `target_feature` kernel.
macro_rules! compress {
    ($n:ident, $abcd:expr, $e:expr, $w0:expr, $w1:expr, $pad:expr) => {{
        let (abcd, e, w0, w1, pad): (uint32x4_t, u32, [uint32x4_t; $n], [uint32x4_t; $n], Pad) =
            ($abcd, $e, $w0, $w1, $pad);
        let [k0, k1, k2, k3] = pad.k;
        let mut a = [abcd; $n];
        let mut h = [e; $n];
        let mut w = [[pad.w2; 4]; $n];
        for l in 0..$n {
            w[l] = [w0[l], w1[l], pad.w2, pad.w3];
        }
        for l in 0..$n {
            rounds4!(vsha1cq_u32, a[l], h[l], vaddq_u32(w0[l], k0));
        }
        for l in 0..$n {
            rounds4!(vsha1cq_u32, a[l], h[l], vaddq_u32(w1[l], k0));
        }
        for l in 0..$n {
            rounds4!(vsha1cq_u32, a[l], h[l], pad.wk2);
        }
        for l in 0..$n {
            rounds4!(vsha1cq_u32, a[l], h[l], pad.wk3);
        }
        sched4!($n, vsha1cq_u32, k0, a, h, w, 0, 1, 2, 3);
        sched4!($n, vsha1pq_u32, k1, a, h, w, 1, 2, 3, 0);
        sched4!($n, vsha1pq_u32, k1, a, h, w, 2, 3, 0, 1);
        sched4!($n, vsha1pq_u32, k1, a, h, w, 3, 0, 1, 2);
        sched4!($n, vsha1pq_u32, k1, a, h, w, 0, 1, 2, 3);
        sched4!($n, vsha1pq_u32, k1, a, h, w, 1, 2, 3, 0);
        sched4!($n, vsha1mq_u32, k2, a, h, w, 2, 3, 0, 1);
        sched4!($n, vsha1mq_u32, k2, a, h, w, 3, 0, 1, 2);
        sched4!($n, vsha1mq_u32, k2, a, h, w, 0, 1, 2, 3);
        sched4!($n, vsha1mq_u32, k2, a, h, w, 1, 2, 3, 0);
        sched4!($n, vsha1mq_u32, k2, a, h, w, 2, 3, 0, 1);
        sched4!($n, vsha1pq_u32, k3, a, h, w, 3, 0, 1, 2);
        sched4!($n, vsha1pq_u32, k3, a, h, w, 0, 1, 2, 3);
        sched4!($n, vsha1pq_u32, k3, a, h, w, 1, 2, 3, 0);
        sched4!($n, vsha1pq_u32, k3, a, h, w, 2, 3, 0, 1);
        sched4!($n, vsha1pq_u32, k3, a, h, w, 3, 0, 1, 2);
        for l in 0..$n {
            a[l] = vaddq_u32(a[l], abcd);
            h[l] = h[l].wrapping_add(e);
        }
        (a, h)
    }};
}

#[inline]
#[target_feature(enable = "neon")]
fn words(w: &[u32]) -> uint32x4_t {
    let w: &[u32; 4] = w.try_into().expect("four words");
    // SAFETY: `w` is four readable u32.
    unsafe { vld1q_u32(w.as_ptr()) }
}

/// Runs `iterations` PBKDF2-HMAC-SHA-1 iterations on each of the `N` chains (words 0..5; see
/// `super::pbkdf2_sha1_chains`).
///
/// # Safety
/// The CPU must implement FEAT_SHA1 (Rust's `sha2` feature: FEAT_SHA1 and FEAT_SHA256).
#[target_feature(enable = "sha2")]
pub(super) unsafe fn chains<const N: usize>(
    inner: &[u32; 5],
    outer: &[u32; 5],
    chains: &mut [Chain; N],
    iterations: u32,
) {
    let k = [vdupq_n_u32(K[0]), vdupq_n_u32(K[1]), vdupq_n_u32(K[2]), vdupq_n_u32(K[3])];
    let w2 = vdupq_n_u32(0);
    let w3 = vsetq_lane_u32::<3>((64 + 20) * 8, w2);
    let pad = Pad { w2, w3, wk2: vaddq_u32(w2, k[0]), wk3: vaddq_u32(w3, k[0]), k };
    // Message words 4..8 of a digest block with E in lane 0: E, then the padding bit.
    let w1 = vsetq_lane_u32::<1>(0x8000_0000, w2);
    let (iabcd, ie) = (words(&inner[..4]), inner[4]);
    let (oabcd, oe) = (words(&outer[..4]), outer[4]);

    let mut ua = [w2; N];
    let mut ue = [0u32; N];
    let mut ta = [w2; N];
    let mut te = [0u32; N];
    for l in 0..N {
        ua[l] = words(&chains[l].u[..4]);
        ue[l] = chains[l].u[4];
        ta[l] = words(&chains[l].t[..4]);
        te[l] = chains[l].t[4];
    }
    for _ in 0..iterations {
        let mut m1 = [w1; N];
        for l in 0..N {
            m1[l] = vsetq_lane_u32::<0>(ue[l], w1);
        }
        let (va, ve) = compress!(N, iabcd, ie, ua, m1, pad);
        for l in 0..N {
            m1[l] = vsetq_lane_u32::<0>(ve[l], w1);
        }
        (ua, ue) = compress!(N, oabcd, oe, va, m1, pad);
        for l in 0..N {
            ta[l] = veorq_u32(ta[l], ua[l]);
            te[l] ^= ue[l];
        }
    }
    for l in 0..N {
        store(&mut chains[l].u, ua[l], ue[l]);
        store(&mut chains[l].t, ta[l], te[l]);
    }
}

#[inline]
#[target_feature(enable = "neon")]
fn store(out: &mut [u32; 8], abcd: uint32x4_t, e: u32) {
    // SAFETY: `out` is eight writable u32: one 4-word store.
    unsafe { vst1q_u32(out.as_mut_ptr(), abcd) };
    out[4] = e;
}
