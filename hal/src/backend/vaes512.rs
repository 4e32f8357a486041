//! x86-64 VAES + AVX-512 + VPCLMULQDQ backend: the XTS batch kernels over 512-bit registers.
//!
//! One zmm register holds four AES blocks, and `vaesenc` on a zmm register does four block-rounds
//! per instruction, with a latency of a few cycles and one (Zen 4) or two (Zen 5) issued per
//! cycle. The data loop keeps four independent zmm streams (16 blocks, 256 bytes) in flight;
//! on the Zen 5 development machine that already runs at the AES units' limit (AES-128 and
//! AES-256 throughput are in the ratio of their round counts, 14:10, and eight streams measured
//! no faster). Every state value (blocks, tweaks, round keys) lives in a SIMD local; nothing in
//! the hot loop goes through an array indexed at run time, because that makes LLVM scalarize it.
//!
//! Tweaks: lane `l` of stream `s` holds `T * x^(4s + l)`. After each 16-block step every lane is
//! multiplied by `x^16` with a byte shift, one carry-less multiply by 0x87 and an xor; these are
//! independent of the AES rounds of the same step, so they run in the shadow of the rounds.
//!
//! Per-unit cost: each data unit's first tweak is `AES-Enc(tweak_key, LE128(unit))`, a ~56-cycle
//! dependency chain if done alone. The kernels encrypt those initial tweaks for 16 units at a
//! time (four zmm streams again), which is what keeps 512-byte sectors fast. Unit numbers
//! advance by the caller's step (1 for consecutive units, 8 for LUKS2 4096-byte sectors),
//! added to the 128-bit lanes with a carry from the low half.
//!
//! This file only provides the multi-unit XTS kernels; everything else (single-unit XTS with
//! ciphertext stealing, CBC, ECB) is served by the `aesni` backend.
use core::arch::x86_64::*;

use crate::key::RoundKeys;

/// The kernels below are the real VAES ones, so the dispatcher offers this backend.
pub(crate) const READY: bool = true;

/// Bytes per step of the data loop: four zmm streams of four blocks.
const STEP: usize = 256;
/// Units whose initial tweaks are encrypted together (four zmm streams of four lanes).
const TWEAK_BATCH: usize = 16;

/// XTS-encrypts data units in place, unit `i` with tweak LE128(`first_unit + i * step`) (mod
/// 2^128); see the backend contract in `backend/mod.rs`.
///
/// # Safety
/// The CPU must support AVX-512F/BW/VL, VAES and VPCLMULQDQ (and the OS must have enabled the
/// zmm state). `unit_size` must be a power of two in 512..=4096 and divide `data.len()`;
/// `data_keys` and `tweak_keys` must have the same number of rounds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes")]
pub(crate) unsafe fn xts_encrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
    step: u128,
) {
    debug_assert_eq!(data_keys.rounds, tweak_keys.rounds);
    debug_assert!(unit_size.is_power_of_two() && (512..=4096).contains(&unit_size));
    debug_assert!(data.len().is_multiple_of(unit_size));
    match (data_keys.rounds, unit_size) {
        (10, 512) => units::<10, true, 2>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (10, _) => units::<10, true, 0>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (12, 512) => units::<12, true, 2>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (12, _) => units::<12, true, 0>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (_, 512) => units::<14, true, 2>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        _ => units::<14, true, 0>(data_keys, tweak_keys, data, unit_size, first_unit, step),
    }
}

/// XTS-decrypts data units in place, tweaks advancing by `step`; see [`xts_encrypt_units`].
///
/// # Safety
/// As for [`xts_encrypt_units`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes")]
pub(crate) unsafe fn xts_decrypt_units(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
    step: u128,
) {
    debug_assert_eq!(data_keys.rounds, tweak_keys.rounds);
    debug_assert!(unit_size.is_power_of_two() && (512..=4096).contains(&unit_size));
    debug_assert!(data.len().is_multiple_of(unit_size));
    match (data_keys.rounds, unit_size) {
        (10, 512) => units::<10, false, 2>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (10, _) => units::<10, false, 0>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (12, 512) => units::<12, false, 2>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (12, _) => units::<12, false, 0>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        (_, 512) => units::<14, false, 2>(data_keys, tweak_keys, data, unit_size, first_unit, step),
        _ => units::<14, false, 0>(data_keys, tweak_keys, data, unit_size, first_unit, step),
    }
}

/// Broadcasts round key `r` of `keys` into all four lanes of a zmm register.
#[target_feature(enable = "avx512f")]
#[inline]
fn broadcast_key(keys: &[[u8; 16]; 15], r: usize) -> __m512i {
    // SAFETY: `keys[r]` is 16 readable bytes; the load is unaligned.
    unsafe { _mm512_broadcast_i32x4(_mm_loadu_si128(keys[r].as_ptr().cast())) }
}

/// Multiplies every 128-bit lane of `t` by `x^16` in GF(2^128) (XTS polynomial, little-endian
/// lanes): shift the lane left by two bytes and fold the two bytes shifted out back in with a
/// carry-less multiply by 0x87.
#[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
#[inline]
fn mul_x16(t: __m512i, poly: __m512i) -> __m512i {
    let out = _mm512_bsrli_epi128::<14>(t);
    let shifted = _mm512_bslli_epi128::<2>(t);
    _mm512_xor_si512(shifted, _mm512_clmulepi64_epi128::<0x00>(out, poly))
}

/// Multiplies each 128-bit lane of `t` by `x^k`, where the shift count `k < 64` is given per lane
/// in both 64-bit halves of `counts` (and `64 - k` in `rcounts`).
#[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
#[inline]
fn mul_x_var(t: __m512i, counts: __m512i, rcounts: __m512i, poly: __m512i) -> __m512i {
    let shifted = _mm512_sllv_epi64(t, counts);
    // The top k bits of each 64-bit half (a count of 64 gives 0, as needed for k = 0).
    let out = _mm512_srlv_epi64(t, rcounts);
    // The low half's bits carry into the high half; the high half's bits wrap around and reduce.
    let carry = _mm512_bslli_epi128::<8>(out);
    let reduced = _mm512_clmulepi64_epi128::<0x01>(out, poly);
    _mm512_ternarylogic_epi64::<0x96>(shifted, carry, reduced)
}

/// The four tweak streams of a unit whose encrypted first tweak `t` is broadcast to all lanes:
/// lane `l` of stream `s` becomes `t * x^(4s + l)`.
#[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
#[inline]
fn first_tweaks(t: __m512i, poly: __m512i) -> (__m512i, __m512i, __m512i, __m512i) {
    let lanes = _mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0);
    let sixty_four = _mm512_set1_epi64(64);
    let counts = |s: i64| _mm512_add_epi64(lanes, _mm512_set1_epi64(4 * s));
    let (c0, c1, c2, c3) = (counts(0), counts(1), counts(2), counts(3));
    (
        mul_x_var(t, c0, _mm512_sub_epi64(sixty_four, c0), poly),
        mul_x_var(t, c1, _mm512_sub_epi64(sixty_four, c1), poly),
        mul_x_var(t, c2, _mm512_sub_epi64(sixty_four, c2), poly),
        mul_x_var(t, c3, _mm512_sub_epi64(sixty_four, c3), poly),
    )
}

/// Adds the 128-bit little-endian lanes of `inc` to those of `v`, carrying from the low 64-bit
/// half into the high one (wrapping at 2^128).
#[target_feature(enable = "avx512f")]
#[inline]
fn add_lanes_u128(v: __m512i, inc: __m512i) -> __m512i {
    let sum = _mm512_add_epi64(v, inc);
    // A low half that wrapped is now below its old value; carry one into the high half above it.
    let wrapped = _mm512_cmplt_epu64_mask(sum, v) & 0x55;
    _mm512_mask_add_epi64(sum, wrapped << 1, sum, _mm512_set1_epi64(1))
}

/// The per-lane increments for [`encrypt_first_tweaks`]: lane `l` holds `l * step`, and four
/// lanes' worth, `4 * step`, in every lane (both mod 2^128).
#[derive(Clone, Copy)]
struct UnitSteps {
    lanes: __m512i,
    four: __m512i,
}

impl UnitSteps {
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn new(step: u128) -> UnitSteps {
        let half = |v: u128, high: bool| (if high { v >> 64 } else { v }) as u64 as i64;
        let lane = |l: u128, high: bool| half(step.wrapping_mul(l), high);
        let four = step.wrapping_mul(4);
        UnitSteps {
            lanes: _mm512_set_epi64(
                lane(3, true),
                lane(3, false),
                lane(2, true),
                lane(2, false),
                lane(1, true),
                lane(1, false),
                0,
                0,
            ),
            four: _mm512_set_epi64(
                half(four, true),
                half(four, false),
                half(four, true),
                half(four, false),
                half(four, true),
                half(four, false),
                half(four, true),
                half(four, false),
            ),
        }
    }
}

/// Encrypts the initial tweaks `LE128(first_unit + i * step)` for `i` in `0..16` (mod 2^128),
/// four units per zmm register, with the tweak key; returns them in unit order (stream-major,
/// then lane).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,aes")]
#[inline]
fn encrypt_first_tweaks<const R: usize>(keys: &RoundKeys, first_unit: u128, steps: UnitSteps) -> [__m512i; 4] {
    let base = _mm512_broadcast_i32x4(_mm_set_epi64x((first_unit >> 64) as i64, first_unit as i64));
    let u0 = add_lanes_u128(base, steps.lanes);
    let four = steps.four;
    let u1 = add_lanes_u128(u0, four);
    let u2 = add_lanes_u128(u1, four);
    let u3 = add_lanes_u128(u2, four);
    let k0 = broadcast_key(&keys.enc, 0);
    let (mut a, mut b, mut c, mut d) =
        (_mm512_xor_si512(u0, k0), _mm512_xor_si512(u1, k0), _mm512_xor_si512(u2, k0), _mm512_xor_si512(u3, k0));
    for r in 1..R {
        let k = broadcast_key(&keys.enc, r);
        a = _mm512_aesenc_epi128(a, k);
        b = _mm512_aesenc_epi128(b, k);
        c = _mm512_aesenc_epi128(c, k);
        d = _mm512_aesenc_epi128(d, k);
    }
    let k = broadcast_key(&keys.enc, R);
    [
        _mm512_aesenclast_epi128(a, k),
        _mm512_aesenclast_epi128(b, k),
        _mm512_aesenclast_epi128(c, k),
        _mm512_aesenclast_epi128(d, k),
    ]
}

/// The XTS kernel for `R` rounds, both directions (`ENCRYPT` chooses); `STEPS` is the number of
/// 256-byte steps per unit when fixed at compile time, 0 to take it from `unit_size`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,vaes,vpclmulqdq,aes")]
#[inline]
fn units<const R: usize, const ENCRYPT: bool, const STEPS: usize>(
    data_keys: &RoundKeys,
    tweak_keys: &RoundKeys,
    data: &mut [u8],
    unit_size: usize,
    first_unit: u128,
    step: u128,
) {
    let schedule = if ENCRYPT { &data_keys.enc } else { &data_keys.dec };
    // Round keys in zmm locals: LLVM keeps the fully unrolled constant-index array in registers.
    let keys: [__m512i; 15] = core::array::from_fn(|r| broadcast_key(schedule, r.min(R)));
    let poly = _mm512_set1_epi64(0x87);
    // A compile-time step count (512-byte units) lets LLVM unroll them into straight-line code,
    // which removes a loop exit per unit from the most common sector size.
    let steps_per_unit = if STEPS != 0 { STEPS } else { unit_size / STEP };

    // Software pipelining: the initial tweaks of the next batch are encrypted before the units of
    // this one, so their ~56-cycle chain overlaps this batch's rounds instead of stalling at the
    // batch boundary.
    let batch_bytes = TWEAK_BATCH * unit_size;
    let steps = UnitSteps::new(step);
    let batch_step = step.wrapping_mul(TWEAK_BATCH as u128);
    let mut next = encrypt_first_tweaks::<R>(tweak_keys, first_unit, steps);
    let mut unit = first_unit;
    let mut batches = data.chunks_mut(batch_bytes).peekable();
    while let Some(batch) = batches.next() {
        let first = next;
        unit = unit.wrapping_add(batch_step);
        if batches.peek().is_some() {
            next = encrypt_first_tweaks::<R>(tweak_keys, unit, steps);
        }
        let first_ptr: *const __m128i = first.as_ptr().cast();
        for (u, unit_data) in batch.chunks_exact_mut(unit_size).enumerate() {
            // SAFETY: `u < TWEAK_BATCH`, so block `u` lies inside the 256-byte `first` array.
            let t = unsafe { _mm512_broadcast_i32x4(_mm_loadu_si128(first_ptr.add(u))) };
            let (mut t0, mut t1, mut t2, mut t3) = first_tweaks(t, poly);
            let mut p = unit_data.as_mut_ptr();
            for _ in 0..steps_per_unit {
                // SAFETY: `unit_data` holds `steps_per_unit * STEP` bytes and `p` advances by STEP
                // per step, so each access covers 256 in-bounds bytes; loads/stores are unaligned.
                unsafe {
                    let (mut x0, mut x1, mut x2, mut x3) = (
                        _mm512_loadu_si512(p.cast()),
                        _mm512_loadu_si512(p.add(64).cast()),
                        _mm512_loadu_si512(p.add(128).cast()),
                        _mm512_loadu_si512(p.add(192).cast()),
                    );
                    // Whitening: block ^ tweak ^ round key 0 in one three-way xor.
                    x0 = _mm512_ternarylogic_epi64::<0x96>(x0, t0, keys[0]);
                    x1 = _mm512_ternarylogic_epi64::<0x96>(x1, t1, keys[0]);
                    x2 = _mm512_ternarylogic_epi64::<0x96>(x2, t2, keys[0]);
                    x3 = _mm512_ternarylogic_epi64::<0x96>(x3, t3, keys[0]);
                    // The last round ends with an xor of its key, so the output tweak folds into it.
                    let (l0, l1, l2, l3) = (
                        _mm512_xor_si512(keys[R], t0),
                        _mm512_xor_si512(keys[R], t1),
                        _mm512_xor_si512(keys[R], t2),
                        _mm512_xor_si512(keys[R], t3),
                    );
                    t0 = mul_x16(t0, poly);
                    t1 = mul_x16(t1, poly);
                    t2 = mul_x16(t2, poly);
                    t3 = mul_x16(t3, poly);
                    if ENCRYPT {
                        for k in &keys[1..R] {
                            x0 = _mm512_aesenc_epi128(x0, *k);
                            x1 = _mm512_aesenc_epi128(x1, *k);
                            x2 = _mm512_aesenc_epi128(x2, *k);
                            x3 = _mm512_aesenc_epi128(x3, *k);
                        }
                        x0 = _mm512_aesenclast_epi128(x0, l0);
                        x1 = _mm512_aesenclast_epi128(x1, l1);
                        x2 = _mm512_aesenclast_epi128(x2, l2);
                        x3 = _mm512_aesenclast_epi128(x3, l3);
                    } else {
                        for k in &keys[1..R] {
                            x0 = _mm512_aesdec_epi128(x0, *k);
                            x1 = _mm512_aesdec_epi128(x1, *k);
                            x2 = _mm512_aesdec_epi128(x2, *k);
                            x3 = _mm512_aesdec_epi128(x3, *k);
                        }
                        x0 = _mm512_aesdeclast_epi128(x0, l0);
                        x1 = _mm512_aesdeclast_epi128(x1, l1);
                        x2 = _mm512_aesdeclast_epi128(x2, l2);
                        x3 = _mm512_aesdeclast_epi128(x3, l3);
                    }
                    _mm512_storeu_si512(p.cast(), x0);
                    _mm512_storeu_si512(p.add(64).cast(), x1);
                    _mm512_storeu_si512(p.add(128).cast(), x2);
                    _mm512_storeu_si512(p.add(192).cast(), x3);
                    p = p.add(STEP);
                }
            }
        }
    }
}
