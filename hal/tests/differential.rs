//! Differential tests: every available backend against the RustCrypto oracles (`xts-mode` +
//! `aes`, `cbc`), random keys and data, both directions.
mod common;

use common::{oracle_cbc, oracle_ecb, oracle_xts_unit, oracle_xts_units, Rng};
use qluks_hal::{Aes, Backend, Cbc, Essiv, EssivHash, IvGen, Xts};

const UNIT_SIZES: [usize; 4] = [512, 1024, 2048, 4096];
const BATCHES: [usize; 13] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 300];
const XTS_KEY_LENS: [usize; 3] = [32, 48, 64];
/// First unit numbers near 0, 2^32, 2^64 - 1 and the u128 wrap; with batches up to 300 units
/// the runs cross each of these boundaries.
const FIRST_UNITS: [u128; 7] = [0, 1, (1 << 32) - 5, 1 << 32, (1 << 64) - 1, (1 << 64) - 40, u128::MAX - 4];

fn check_units(backend: Backend, rng: &mut Rng, key_len: usize, unit: usize, count: usize, first: u128) {
    let key = rng.bytes(key_len);
    let plain = rng.bytes(unit * count);
    let xts = Xts::with_backend(&key, backend).unwrap();
    let mut ours = plain.clone();
    xts.encrypt_units(&mut ours, unit, first).unwrap();
    let mut theirs = plain.clone();
    oracle_xts_units(&key, &mut theirs, unit, first, true);
    assert!(ours == theirs, "{backend}: encrypt key {key_len} unit {unit} x{count} from {first:#x}");
    // Decrypt an independent ciphertext so the direction is checked on its own.
    let cipher = rng.bytes(unit * count);
    let mut ours = cipher.clone();
    xts.decrypt_units(&mut ours, unit, first).unwrap();
    let mut theirs = cipher.clone();
    oracle_xts_units(&key, &mut theirs, unit, first, false);
    assert!(ours == theirs, "{backend}: decrypt key {key_len} unit {unit} x{count} from {first:#x}");
}

#[test]
fn xts_units_match_xts_mode_for_every_backend_unit_size_and_batch() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_0001);
        let mut case = 0;
        for &count in &BATCHES {
            for &unit in &UNIT_SIZES {
                // The longest batches only with the small units, to keep the test fast (it also
                // runs under qemu): the kernels do not depend on the unit size beyond its
                // block count.
                if count * unit > 64 * 1024 && unit > 1024 {
                    continue;
                }
                // Rotate key length and first unit across the grid so every combination of
                // each pair appears without running the full cross product.
                let key_len = XTS_KEY_LENS[case % XTS_KEY_LENS.len()];
                let first = FIRST_UNITS[case % FIRST_UNITS.len()];
                check_units(backend, &mut rng, key_len, unit, count, first);
                case += 1;
            }
        }
        assert!(case > 40, "the grid shrank to {case} cases");
    }
}

#[test]
fn xts_units_near_every_counter_boundary_for_every_key_length() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_0002);
        for &first in &FIRST_UNITS {
            for &key_len in &XTS_KEY_LENS {
                check_units(backend, &mut rng, key_len, 512, 9, first);
            }
        }
    }
}

#[test]
fn xts_single_unit_with_any_tweak_and_length_matches_xts_mode() {
    let lengths: Vec<usize> = (16..=80).chain([127, 128, 129, 143, 255, 511, 512, 513, 4095, 4096, 4111]).collect();
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_0003);
        for (i, &len) in lengths.iter().enumerate() {
            let key = rng.bytes(XTS_KEY_LENS[i % 3]);
            let tweak = rng.block();
            let xts = Xts::with_backend(&key, backend).unwrap();
            let plain = rng.bytes(len);
            let mut ours = plain.clone();
            xts.encrypt_unit(&mut ours, &tweak).unwrap();
            let mut theirs = plain.clone();
            oracle_xts_unit(&key, &mut theirs, tweak, true);
            assert!(ours == theirs, "{backend}: encrypt_unit len {len}");
            xts.decrypt_unit(&mut ours, &tweak).unwrap();
            assert!(ours == plain, "{backend}: decrypt_unit len {len}");
        }
    }
}

#[test]
fn ecb_matches_aes_crate() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_0004);
        for key_len in [16, 24, 32] {
            for blocks in [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33] {
                let key = rng.bytes(key_len);
                let aes = Aes::with_backend(&key, backend).unwrap();
                let plain = rng.bytes(blocks * 16);
                let mut ours = plain.clone();
                aes.encrypt_blocks(&mut ours).unwrap();
                let mut theirs = plain.clone();
                oracle_ecb(&key, &mut theirs, true);
                assert!(ours == theirs, "{backend}: ECB encrypt key {key_len} blocks {blocks}");
                let mut ours = plain.clone();
                aes.decrypt_blocks(&mut ours).unwrap();
                let mut theirs = plain.clone();
                oracle_ecb(&key, &mut theirs, false);
                assert!(ours == theirs, "{backend}: ECB decrypt key {key_len} blocks {blocks}");
            }
        }
    }
}

#[test]
fn cbc_single_chain_matches_cbc_crate() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_0005);
        for key_len in [16, 24, 32] {
            for blocks in [0, 1, 2, 7, 8, 9, 16, 17, 32, 33, 256] {
                let key = rng.bytes(key_len);
                let iv = rng.block();
                let cbc = Cbc::with_backend(&key, backend).unwrap();
                let plain = rng.bytes(blocks * 16);
                let mut ours = plain.clone();
                cbc.encrypt(&mut ours, &iv).unwrap();
                let mut theirs = plain.clone();
                oracle_cbc(&key, &mut theirs, &iv, true);
                assert!(ours == theirs, "{backend}: CBC encrypt key {key_len} blocks {blocks}");
                let cipher = rng.bytes(blocks * 16);
                let mut ours = cipher.clone();
                cbc.decrypt(&mut ours, &iv).unwrap();
                let mut theirs = cipher.clone();
                oracle_cbc(&key, &mut theirs, &iv, false);
                assert!(ours == theirs, "{backend}: CBC decrypt key {key_len} blocks {blocks}");
            }
        }
    }
}

/// The IV of a sector computed without qluks-hal: ESSIV = AES-256-ECB keyed by SHA-256 of the
/// volume key, over LE64(sector).
fn independent_essiv(volume_key: &[u8], sector: u64) -> [u8; 16] {
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    use sha2::Digest;
    let salt = sha2::Sha256::digest(volume_key);
    let c = aes::Aes256::new_from_slice(&salt).unwrap();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&sector.to_le_bytes());
    let mut blk = b.into();
    c.encrypt_block(&mut blk);
    blk.into()
}

fn expected_iv(kind: &str, volume_key: &[u8], sector: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    match kind {
        "plain" => iv[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
        "plain64" => iv[..8].copy_from_slice(&sector.to_le_bytes()),
        "essiv" => iv = independent_essiv(volume_key, sector),
        _ => unreachable!(),
    }
    iv
}

#[test]
fn cbc_sectors_match_cbc_crate_with_plain_plain64_and_essiv_ivs() {
    let firsts: [u64; 4] = [0, (1 << 32) - 3, 1 << 40, u64::MAX - 5];
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_0006);
        let mut case = 0;
        for key_len in [16, 24, 32] {
            for (sector_size, counts) in
                [(16, &[1, 2, 3, 5, 8, 9, 17, 33, 70][..]), (512, &[1, 3, 8, 9, 33]), (4096, &[1, 9])]
            {
                for &count in counts {
                    for kind in ["plain", "plain64", "essiv"] {
                        let first = firsts[case % firsts.len()];
                        case += 1;
                        let key = rng.bytes(key_len);
                        let cbc = Cbc::with_backend(&key, backend).unwrap();
                        let essiv = Essiv::new(EssivHash::Sha256, &key, backend).unwrap();
                        let ivgen = match kind {
                            "plain" => IvGen::Plain,
                            "plain64" => IvGen::Plain64,
                            _ => IvGen::Essiv(&essiv),
                        };
                        let plain = rng.bytes(sector_size * count);
                        let mut ours = plain.clone();
                        cbc.encrypt_sectors(&mut ours, sector_size, first, ivgen).unwrap();
                        let mut theirs = plain.clone();
                        for (i, s) in theirs.chunks_exact_mut(sector_size).enumerate() {
                            let iv = expected_iv(kind, &key, first.wrapping_add(i as u64));
                            oracle_cbc(&key, s, &iv, true);
                        }
                        let what = format!("{backend}: {kind} key {key_len} sector {sector_size} x{count} @{first}");
                        assert!(ours == theirs, "encrypt {what}");
                        cbc.decrypt_sectors(&mut ours, sector_size, first, ivgen).unwrap();
                        assert!(ours == plain, "decrypt {what}");
                    }
                }
            }
        }
    }
}

#[test]
fn essiv_single_iv_matches_independent_computation() {
    for backend in common::tested_backends() {
        let mut rng = Rng(0x5EED_0007);
        for key_len in [16, 32, 64] {
            let key = rng.bytes(key_len);
            let essiv = Essiv::new(EssivHash::Sha256, &key, backend).unwrap();
            for sector in [0, 1, 0xFFFF_FFFF, 1 << 32, u64::MAX] {
                assert_eq!(essiv.iv(sector), independent_essiv(&key, sector), "{backend}");
                assert_eq!(IvGen::Essiv(&essiv).iv(sector), independent_essiv(&key, sector), "{backend}");
            }
        }
    }
}

#[test]
fn all_backends_agree_bit_for_bit() {
    let mut rng = Rng(0x5EED_0008);
    let key = rng.bytes(64);
    let plain = rng.bytes(4096 * 5);
    let mut reference: Option<(Backend, Vec<u8>)> = None;
    for backend in common::tested_backends() {
        let mut buf = plain.clone();
        Xts::with_backend(&key, backend).unwrap().encrypt_units(&mut buf, 4096, 77).unwrap();
        match &reference {
            None => reference = Some((backend, buf)),
            Some((b, r)) => assert!(*r == buf, "{backend} differs from {b}"),
        }
    }
}
