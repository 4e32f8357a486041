//! The XTS batch kernels with a tweak step (`Xts::encrypt_units_step` / `decrypt_units_step`)
//! against `xts-mode` + `aes`, one oracle call per unit with tweak LE128(first + i * step) mod
//! 2^128, for every backend available here (each forced; a backend that QLUKS_REQUIRE_BACKENDS
//! names must be available, the others print SKIP).
//!
//! Steps: 1 (today's consecutive units), 2, 7 (odd), 8 (LUKS2 4096-byte sectors counted in
//! 512-byte IV sectors), 2^32, 2^64 (only the high half moves), a large odd one and 2^128 - 1
//! (the units count down). First units are placed so that the runs cross 2^32, 2^64 and the
//! 2^128 wrap part-way through a batch of initial tweaks (the kernels compute 4, 8 or 16 of
//! them at a time).
mod common;

use common::{oracle_xts_unit, Rng};
use core::num::NonZeroU128;
use qluks_hal::{Backend, Error, Xts};

const STEPS: [u128; 8] = [1, 2, 7, 8, 1 << 32, 1 << 64, 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835, u128::MAX];
const UNIT_SIZES: [usize; 4] = [512, 1024, 2048, 4096];
const COUNTS: [usize; 14] = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 70];
const XTS_KEY_LENS: [usize; 3] = [32, 48, 64];

/// First units for a step: at 0, and `k` steps before 2^32, 2^64 and the 2^128 wrap (so unit
/// `k` of the run is the first one past the boundary), and at the top of the range.
fn firsts(step: u128) -> [u128; 7] {
    let before = |boundary: u128, k: u128| boundary.wrapping_sub(step.wrapping_mul(k));
    [0, before(1 << 32, 3), before(1 << 64, 5), (1 << 64) - 1, before(0, 6), before(0, 17), u128::MAX]
}

/// The oracle: `xts-mode` one unit at a time.
fn oracle(key: &[u8], data: &mut [u8], unit: usize, first: u128, step: u128, enc: bool) {
    let mut tweak = first;
    for u in data.chunks_exact_mut(unit) {
        oracle_xts_unit(key, u, tweak.to_le_bytes(), enc);
        tweak = tweak.wrapping_add(step);
    }
}

#[allow(clippy::too_many_arguments)]
fn check(backend: Backend, rng: &mut Rng, key_len: usize, unit: usize, count: usize, first: u128, step: u128) {
    let key = rng.bytes(key_len);
    let xts = Xts::with_backend(&key, backend).unwrap();
    let nz = NonZeroU128::new(step).unwrap();
    let what = format!("{backend}: key {key_len} unit {unit} x{count} from {first:#x} step {step:#x}");
    let plain = rng.bytes(unit * count);
    let mut ours = plain.clone();
    xts.encrypt_units_step(&mut ours, unit, first, nz).unwrap();
    let mut theirs = plain.clone();
    oracle(&key, &mut theirs, unit, first, step, true);
    assert!(ours == theirs, "encrypt {what}");
    // Decrypt an independent ciphertext so that the direction is checked on its own.
    let cipher = rng.bytes(unit * count);
    let mut ours = cipher.clone();
    xts.decrypt_units_step(&mut ours, unit, first, nz).unwrap();
    let mut theirs = cipher.clone();
    oracle(&key, &mut theirs, unit, first, step, false);
    assert!(ours == theirs, "decrypt {what}");
}

#[test]
fn stepped_xts_units_match_xts_mode_for_every_backend_step_unit_size_and_count() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_5701);
        let mut case = 0;
        for &step in &STEPS {
            let firsts = firsts(step);
            for &unit in &UNIT_SIZES {
                for &count in &COUNTS {
                    // The longest runs only with the small units, to keep the test fast (it
                    // also runs under qemu).
                    if count * unit > 32 * 1024 {
                        continue;
                    }
                    // Rotate key length and first unit across the grid (3 and 7 are coprime
                    // with the 14 counts, so every pair meets).
                    let key_len = XTS_KEY_LENS[case % XTS_KEY_LENS.len()];
                    let first = firsts[case % firsts.len()];
                    check(backend, &mut rng, key_len, unit, count, first, step);
                    case += 1;
                }
            }
        }
        assert!(case > 250, "the grid shrank to {case} cases");
    }
}

#[test]
fn stepped_xts_units_across_2_32_2_64_and_2_128_for_every_key_length() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_5702);
        let mut case = 0;
        for &step in &STEPS {
            for first in firsts(step) {
                // 40 units: two full batches of 16 initial tweaks and a partial one. The key
                // length rotates (7 firsts per step, so each step meets every key length).
                check(backend, &mut rng, XTS_KEY_LENS[case % XTS_KEY_LENS.len()], 512, 40, first, step);
                case += 1;
            }
        }
    }
}

#[test]
fn step_one_is_encrypt_units_and_step_eight_is_one_call_per_unit() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_5703);
        let key = rng.bytes(64);
        let xts = Xts::with_backend(&key, backend).unwrap();
        let plain = rng.bytes(4096 * 37);
        let first = (1u128 << 64) - 100;
        let mut stepped = plain.clone();
        xts.encrypt_units_step(&mut stepped, 4096, first, NonZeroU128::MIN).unwrap();
        let mut batch = plain.clone();
        xts.encrypt_units(&mut batch, 4096, first).unwrap();
        assert!(stepped == batch, "{backend}: step 1");
        let eight = NonZeroU128::new(8).unwrap();
        let mut stepped = plain.clone();
        xts.encrypt_units_step(&mut stepped, 4096, first, eight).unwrap();
        let mut per_unit = plain.clone();
        for (i, u) in per_unit.chunks_exact_mut(4096).enumerate() {
            xts.encrypt_units(u, 4096, first + 8 * i as u128).unwrap();
        }
        assert!(stepped == per_unit, "{backend}: step 8");
        xts.decrypt_units_step(&mut stepped, 4096, first, eight).unwrap();
        assert!(stepped == plain, "{backend}: step 8 round trip");
    }
}

#[test]
fn stepped_calls_check_unit_size_and_length() {
    let xts = Xts::with_backend(&[7u8; 64], Backend::Soft).unwrap();
    let eight = NonZeroU128::new(8).unwrap();
    assert_eq!(xts.encrypt_units_step(&mut [0u8; 1536], 768, 0, eight), Err(Error::InvalidUnitSize { size: 768 }));
    assert_eq!(xts.decrypt_units_step(&mut [0u8; 8192], 8192, 0, eight), Err(Error::InvalidUnitSize { size: 8192 }));
    assert_eq!(
        xts.decrypt_units_step(&mut [0u8; 5000], 4096, 0, eight),
        Err(Error::LengthNotMultiple { len: 5000, unit: 4096 })
    );
    // An empty run is a no-op, also for the largest step.
    xts.encrypt_units_step(&mut [], 4096, u128::MAX, NonZeroU128::MAX).unwrap();
}
