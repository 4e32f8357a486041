//! x86-64 VAES + AVX2 (+ VPCLMULQDQ) backend: the XTS batch kernels over 256-bit registers.
//!
//! For CPUs with VAES but without (usable) AVX-512, such as Zen 3 or Alder Lake. One ymm register
//! holds two AES blocks; `vaesenc` on ymm has a latency of about four cycles at up to two per
//! cycle, so the data loop keeps eight independent ymm streams (16 blocks, 256 bytes) in flight.
//! With only 16 ymm registers, blocks and tweaks take all of them during the rounds and the round
//! keys come from memory operands (cheap: loads are not the bottleneck).
//!
//! Tweaks: lane `l` of stream `s` holds `T * x^(2s + l)`; after each 16-block step every lane is
//! multiplied by `x^16` (byte shift, carry-less multiply by 0x87, xor). Each unit's initial
//! tweak `AES-Enc(tweak_key, LE128(unit))` is computed for 16 units at a time; unit numbers
//! advance by the caller's step (1 for consecutive units, 8 for LUKS2 4096-byte sectors).
//!
//! This file only provides the multi-unit XTS kernels; everything else is served by `aesni`.
use core::arch::x86_64::*;

use crate::key::RoundKeys;

/// The kernels below are the real VAES ones, so the dispatcher offers this backend.
pub(crate) const READY: bool = true;

/// Bytes per step of the data loop: eight ymm streams of two blocks.
const STEP: usize = 256;
/// Parallel ymm streams.
const STREAMS: usize = 8;
/// Units whose initial tweaks are encrypted together (eight ymm streams of two lanes).
const TWEAK_BATCH: usize = 16;

/// XTS-encrypts data units in place, unit `i` with tweak LE128(`first_unit + i * step`) (mod
/// 2^128); see the backend contract in `backend/mod.rs`.
///
/// # Safety
/// The CPU must support AVX2, VAES, VPCLMULQDQ and AES-NI. `unit_size` must be a power of two
/// in 512..=4096 and divide `data.len()`; both key schedules must have the same number of rounds.
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
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
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
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

/// Broadcasts round key `r` of `keys` into both lanes of a ymm register.
#[target_feature(enable = "avx2")]
#[inline]
fn broadcast_key(keys: &[[u8; 16]; 15], r: usize) -> __m256i {
    // SAFETY: `keys[r]` is 16 readable bytes; the load is unaligned.
    unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(keys[r].as_ptr().cast())) }
}

/// Multiplies every 128-bit lane of `t` by `x^16` in GF(2^128) (XTS polynomial, little-endian
/// lanes): shift left by two bytes, fold the two bytes shifted out back in times 0x87.
#[target_feature(enable = "avx2,vpclmulqdq")]
#[inline]
fn mul_x16(t: __m256i, poly: __m256i) -> __m256i {
    let out = _mm256_bsrli_epi128::<14>(t);
    let shifted = _mm256_bslli_epi128::<2>(t);
    _mm256_xor_si256(shifted, _mm256_clmulepi64_epi128::<0x00>(out, poly))
}

/// Multiplies each 128-bit lane of `t` by `x^k`, the count `k < 64` given per lane in both
/// 64-bit halves of `counts` (and `64 - k` in `rcounts`).
#[target_feature(enable = "avx2,vpclmulqdq")]
#[inline]
fn mul_x_var(t: __m256i, counts: __m256i, rcounts: __m256i, poly: __m256i) -> __m256i {
    let shifted = _mm256_sllv_epi64(t, counts);
    // The top k bits of each 64-bit half (a count of 64 gives 0, as needed for k = 0).
    let out = _mm256_srlv_epi64(t, rcounts);
    // The low half's bits carry into the high half; the high half's bits wrap around and reduce.
    let carry = _mm256_bslli_epi128::<8>(out);
    let reduced = _mm256_clmulepi64_epi128::<0x01>(out, poly);
    _mm256_xor_si256(_mm256_xor_si256(shifted, carry), reduced)
}

/// Encrypts the initial tweaks `LE128(first_unit + i * step)` (mod 2^128) for `i` in `0..16`
/// with the tweak key, two units per ymm register; returns them in unit order.
#[target_feature(enable = "avx2,vaes,aes")]
#[inline]
fn encrypt_first_tweaks<const R: usize>(keys: &RoundKeys, first_unit: u128, step: u128) -> [__m256i; STREAMS] {
    let mut next = first_unit;
    let units: [u128; TWEAK_BATCH] = core::array::from_fn(|_| {
        let u = next;
        next = next.wrapping_add(step);
        u
    });
    let k0 = broadcast_key(&keys.enc, 0);
    let mut t: [__m256i; STREAMS] = core::array::from_fn(|s| {
        let (a, b) = (units[2 * s], units[2 * s + 1]);
        let v = _mm256_set_epi64x((b >> 64) as i64, b as i64, (a >> 64) as i64, a as i64);
        _mm256_xor_si256(v, k0)
    });
    for r in 1..R {
        let k = broadcast_key(&keys.enc, r);
        for v in &mut t {
            *v = _mm256_aesenc_epi128(*v, k);
        }
    }
    let k = broadcast_key(&keys.enc, R);
    for v in &mut t {
        *v = _mm256_aesenclast_epi128(*v, k);
    }
    t
}

/// The XTS kernel for `R` rounds, both directions (`ENCRYPT` chooses); `STEPS` is the number of
/// 256-byte steps per unit when fixed at compile time, 0 to take it from `unit_size`.
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
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
    let keys: [__m256i; 15] = core::array::from_fn(|r| broadcast_key(schedule, r.min(R)));
    let poly = _mm256_set1_epi64x(0x87);
    let sixty_four = _mm256_set1_epi64x(64);
    // A compile-time step count (512-byte units) lets LLVM unroll them into straight-line code.
    let steps_per_unit = if STEPS != 0 { STEPS } else { unit_size / STEP };

    let batch_step = step.wrapping_mul(TWEAK_BATCH as u128);
    let mut unit = first_unit;
    for batch in data.chunks_mut(TWEAK_BATCH * unit_size) {
        let first = encrypt_first_tweaks::<R>(tweak_keys, unit, step);
        unit = unit.wrapping_add(batch_step);
        let first_ptr: *const __m128i = first.as_ptr().cast();
        for (u, unit_data) in batch.chunks_exact_mut(unit_size).enumerate() {
            // SAFETY: `u < TWEAK_BATCH`, so block `u` lies inside the 256-byte `first` array.
            let t = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(first_ptr.add(u))) };
            // Stream s, lane l: t * x^(2s + l). Fixed-size arrays with constant trip counts are
            // fully unrolled, so they stay in registers.
            let mut tweaks: [__m256i; STREAMS] = core::array::from_fn(|s| {
                let counts = _mm256_set_epi64x(2 * s as i64 + 1, 2 * s as i64 + 1, 2 * s as i64, 2 * s as i64);
                mul_x_var(t, counts, _mm256_sub_epi64(sixty_four, counts), poly)
            });
            let mut p = unit_data.as_mut_ptr();
            for _ in 0..steps_per_unit {
                // SAFETY: `unit_data` holds `steps_per_unit * STEP` bytes and `p` advances by STEP
                // per step, so each access covers 256 in-bounds bytes; loads/stores are unaligned.
                unsafe {
                    let mut x: [__m256i; STREAMS] = core::array::from_fn(|s| {
                        let block = _mm256_loadu_si256(p.add(32 * s).cast());
                        _mm256_xor_si256(_mm256_xor_si256(block, tweaks[s]), keys[0])
                    });
                    for k in &keys[1..R] {
                        for v in &mut x {
                            *v = if ENCRYPT { _mm256_aesenc_epi128(*v, *k) } else { _mm256_aesdec_epi128(*v, *k) };
                        }
                    }
                    // Blocks and tweaks fill all 16 ymm registers during the rounds, so the last
                    // round's key (which the output tweak folds into: the round ends with an xor
                    // of its key) and the next step's tweaks are made only now.
                    for (s, (v, t)) in x.iter().zip(&mut tweaks).enumerate() {
                        let last = _mm256_xor_si256(keys[R], *t);
                        let out = if ENCRYPT {
                            _mm256_aesenclast_epi128(*v, last)
                        } else {
                            _mm256_aesdeclast_epi128(*v, last)
                        };
                        _mm256_storeu_si256(p.add(32 * s).cast(), out);
                        *t = mul_x16(*t, poly);
                    }
                    p = p.add(STEP);
                }
            }
        }
    }
}
