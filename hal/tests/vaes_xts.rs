//! The VAES XTS batch kernels (`vaes256`, `vaes512`) against `xts-mode` + `aes` as the oracle.
//!
//! These target what is particular to the wide kernels: the 16-unit batches of initial tweaks
//! (unit counts around multiples of 4 and 16), the tweak streams stepped by x^16 across every
//! unit size, the 128-bit unit counter carrying at 2^64 and wrapping at 2^128, and all three key
//! sizes in both directions. On a CPU without these backends the tests say SKIP and pass,
//! unless QLUKS_REQUIRE_BACKENDS names them (as CI does when /proc/cpuinfo has their
//! features): then they fail.
mod common;

use aes::cipher::{Array, KeyInit};
use qluks_hal::{Backend, Xts};
use xts_mode::Xts128;

const VAES_BACKENDS: [Backend; 2] = [Backend::Vaes256, Backend::Vaes512];
const UNIT_SIZES: [usize; 4] = [512, 1024, 2048, 4096];

/// Deterministic test bytes (splitmix64), different for every seed.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The oracle: `xts-mode` one unit at a time, tweak LE128(first_unit + i) wrapping at 2^128.
fn oracle(key: &[u8], data: &mut [u8], unit_size: usize, first_unit: u128, encrypt: bool) {
    fn run<C>(xts: Xts128<C>, data: &mut [u8], unit_size: usize, first_unit: u128, encrypt: bool)
    where
        C: aes::cipher::BlockCipherEncrypt
            + aes::cipher::BlockCipherDecrypt
            + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    {
        for (i, unit) in data.chunks_exact_mut(unit_size).enumerate() {
            let tweak = Array(first_unit.wrapping_add(i as u128).to_le_bytes());
            if encrypt {
                xts.encrypt_sector(unit, tweak);
            } else {
                xts.decrypt_sector(unit, tweak);
            }
        }
    }
    let (k1, k2) = key.split_at(key.len() / 2);
    match k1.len() {
        16 => run(
            Xts128::new(aes::Aes128::new_from_slice(k1).unwrap(), aes::Aes128::new_from_slice(k2).unwrap()),
            data,
            unit_size,
            first_unit,
            encrypt,
        ),
        24 => run(
            Xts128::new(aes::Aes192::new_from_slice(k1).unwrap(), aes::Aes192::new_from_slice(k2).unwrap()),
            data,
            unit_size,
            first_unit,
            encrypt,
        ),
        _ => run(
            Xts128::new(aes::Aes256::new_from_slice(k1).unwrap(), aes::Aes256::new_from_slice(k2).unwrap()),
            data,
            unit_size,
            first_unit,
            encrypt,
        ),
    }
}

/// The VAES backends usable here; prints SKIP for the others and fails for a required one
/// that is missing.
fn backends() -> Vec<Backend> {
    common::backends_under_test(&VAES_BACKENDS)
}

/// Fails unless every required VAES backend is among those a test ran on.
fn assert_required_ran(ran: &[Backend]) {
    for b in common::required_backends().into_iter().filter(|b| VAES_BACKENDS.contains(b)) {
        assert!(ran.contains(&b), "required backend {b} was not exercised");
    }
}

/// Checks both directions of one configuration on every VAES backend against the oracle;
/// returns the backends it ran on.
fn check(key: &[u8], unit_size: usize, units: usize, first_unit: u128) -> Vec<Backend> {
    let seed = (key.len() * 1_000_003 + unit_size * 131 + units) as u64 ^ first_unit as u64;
    let plain = bytes(seed, unit_size * units);
    let mut expected_cipher = plain.clone();
    oracle(key, &mut expected_cipher, unit_size, first_unit, true);
    let mut expected_plain = expected_cipher.clone();
    oracle(key, &mut expected_plain, unit_size, first_unit, false);
    assert_eq!(expected_plain, plain, "oracle round trip");
    let backends = backends();
    for &backend in &backends {
        let xts = Xts::with_backend(key, backend).unwrap();
        let what = format!("{backend}, key {} bytes, unit {unit_size}, {units} units from {first_unit:#x}", key.len());
        let mut buf = plain.clone();
        xts.encrypt_units(&mut buf, unit_size, first_unit).unwrap();
        assert!(buf == expected_cipher, "encrypt differs: {what}");
        // Decrypt the oracle's ciphertext, not our own, so that a symmetric bug cannot hide.
        let mut buf = expected_cipher.clone();
        xts.decrypt_units(&mut buf, unit_size, first_unit).unwrap();
        assert!(buf == plain, "decrypt differs: {what}");
    }
    backends
}

/// Guards the SKIPs below: a detection or wiring mistake must fail here, not skip silently.
#[cfg(target_arch = "x86_64")]
#[test]
fn vaes_backends_are_available_exactly_when_the_cpu_has_their_features() {
    use std::is_x86_feature_detected as has;
    let vaes = has!("aes") && has!("pclmulqdq") && has!("vaes") && has!("vpclmulqdq");
    assert_eq!(Backend::Vaes256.is_available(), vaes && has!("avx2"));
    assert_eq!(Backend::Vaes512.is_available(), vaes && has!("avx512f") && has!("avx512bw") && has!("avx512vl"));
}

#[test]
fn every_unit_size_and_key_size_matches_xts_mode() {
    for key_len in [32, 48, 64] {
        let key = bytes(key_len as u64, key_len);
        for unit_size in UNIT_SIZES {
            assert_required_ran(&check(&key, unit_size, 3, 7));
        }
    }
}

#[test]
fn unit_counts_around_the_tweak_batch_of_16_match_xts_mode() {
    let key = bytes(64, 64);
    for units in (1..=20).chain([31, 32, 33, 47, 48, 49, 63, 64, 65]) {
        assert_required_ran(&check(&key, 512, units, 1000));
    }
    let key = bytes(32, 32);
    for units in [1, 4, 5, 16, 17, 35] {
        check(&key, 4096, units, 0);
    }
}

#[test]
fn unit_numbers_carry_from_the_low_into_the_high_64_bits() {
    for key_len in [32, 48, 64] {
        let key = bytes(7 * key_len as u64, key_len);
        // Batches of 16 straddle 2^64 at every lane position.
        for start in (u64::MAX as u128 - 20)..=(u64::MAX as u128) {
            check(&key, 512, 21, start);
        }
        check(&key, 4096, 33, u64::MAX as u128 - 3);
    }
}

#[test]
fn unit_numbers_near_2_32_match_xts_mode() {
    let key = bytes(3, 64);
    check(&key, 512, 40, (1 << 32) - 17);
    check(&key, 2048, 9, (1 << 32) - 4);
}

#[test]
fn unit_numbers_wrap_at_2_128() {
    for key_len in [32, 48, 64] {
        let key = bytes(11 * key_len as u64, key_len);
        check(&key, 512, 19, u128::MAX - 9);
        check(&key, 1024, 5, u128::MAX);
    }
}

#[test]
fn a_buffer_of_one_mebibyte_matches_xts_mode() {
    let key = bytes(99, 64);
    check(&key, 4096, 256, 123_456);
    check(&key, 512, 2048, 1 << 40);
}

#[test]
fn an_empty_buffer_is_left_alone() {
    for backend in backends() {
        let xts = Xts::with_backend(&bytes(5, 64), backend).unwrap();
        let mut empty: [u8; 0] = [];
        xts.encrypt_units(&mut empty, 512, 0).unwrap();
        xts.decrypt_units(&mut empty, 4096, 0).unwrap();
    }
}
