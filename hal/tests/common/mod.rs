//! Helpers shared by the hal tests: a deterministic generator for keys and data, hex, and the
//! RustCrypto oracles (`aes`, `xts-mode`, `cbc`).
#![allow(dead_code)]

use aes::cipher::{
    consts::U16, Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, BlockSizeUser,
    KeyInit, KeyIvInit,
};

/// SplitMix64: reproducible "random" keys and data (seeded per test).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn block(&mut self) -> [u8; 16] {
        self.bytes(16).try_into().unwrap()
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

trait Cipher: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16> + Clone {}
impl<C: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16> + Clone> Cipher for C {}

fn with_cipher<R>(key: &[u8], f: impl FnOnce(&dyn Fn(&mut [u8; 16], bool)) -> R) -> R {
    fn run<C: Cipher, R>(key: &[u8], f: impl FnOnce(&dyn Fn(&mut [u8; 16], bool)) -> R) -> R {
        let c = C::new_from_slice(key).unwrap();
        f(&|b: &mut [u8; 16], enc: bool| {
            let blk: &mut Array<u8, U16> = b.into();
            if enc {
                c.encrypt_block(blk)
            } else {
                c.decrypt_block(blk)
            }
        })
    }
    match key.len() {
        16 => run::<aes::Aes128, R>(key, f),
        24 => run::<aes::Aes192, R>(key, f),
        32 => run::<aes::Aes256, R>(key, f),
        n => panic!("bad key length {n}"),
    }
}

/// ECB with the `aes` crate.
pub fn oracle_ecb(key: &[u8], data: &mut [u8], enc: bool) {
    with_cipher(key, |f| {
        for b in data.chunks_exact_mut(16) {
            f(b.try_into().unwrap(), enc)
        }
    })
}

/// One XTS data unit with `xts-mode` (ciphertext stealing included).
pub fn oracle_xts_unit(key: &[u8], data: &mut [u8], tweak: [u8; 16], enc: bool) {
    fn run<C: Cipher>(key: &[u8], data: &mut [u8], tweak: [u8; 16], enc: bool) {
        let (k1, k2) = key.split_at(key.len() / 2);
        let xts = xts_mode::Xts128::new(C::new_from_slice(k1).unwrap(), C::new_from_slice(k2).unwrap());
        if enc {
            xts.encrypt_sector(data, tweak.into())
        } else {
            xts.decrypt_sector(data, tweak.into())
        }
    }
    match key.len() {
        32 => run::<aes::Aes128>(key, data, tweak, enc),
        48 => run::<aes::Aes192>(key, data, tweak, enc),
        64 => run::<aes::Aes256>(key, data, tweak, enc),
        n => panic!("bad XTS key length {n}"),
    }
}

/// Consecutive XTS units with `xts-mode`, tweak LE128(first + i) wrapping at 2^128.
pub fn oracle_xts_units(key: &[u8], data: &mut [u8], unit: usize, first: u128, enc: bool) {
    for (i, u) in data.chunks_exact_mut(unit).enumerate() {
        oracle_xts_unit(key, u, first.wrapping_add(i as u128).to_le_bytes(), enc);
    }
}

/// CBC over one chain with the `cbc` crate.
pub fn oracle_cbc(key: &[u8], data: &mut [u8], iv: &[u8; 16], enc: bool) {
    fn run<C: Cipher>(key: &[u8], data: &mut [u8], iv: &[u8; 16], enc: bool) {
        let blocks = data.chunks_exact_mut(16).map(|b| <&mut Array<u8, U16>>::try_from(b).unwrap());
        if enc {
            let mut m = cbc::Encryptor::<C>::new_from_slices(key, iv).unwrap();
            blocks.for_each(|b| m.encrypt_block(b));
        } else {
            let mut m = cbc::Decryptor::<C>::new_from_slices(key, iv).unwrap();
            blocks.for_each(|b| m.decrypt_block(b));
        }
    }
    match key.len() {
        16 => run::<aes::Aes128>(key, data, iv, enc),
        24 => run::<aes::Aes192>(key, data, iv, enc),
        32 => run::<aes::Aes256>(key, data, iv, enc),
        n => panic!("bad key length {n}"),
    }
}

/// The backends CI says this machine must offer: `QLUKS_REQUIRE_BACKENDS`, comma-separated
/// names (`.ci/run` derives them from /proc/cpuinfo). Unset or empty: none. An unknown name
/// fails.
pub fn required_backends() -> Vec<qluks_hal::Backend> {
    let list = std::env::var("QLUKS_REQUIRE_BACKENDS").unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            qluks_hal::Backend::from_name(n)
                .unwrap_or_else(|| panic!("QLUKS_REQUIRE_BACKENDS names an unknown backend `{n}`"))
        })
        .collect()
}

/// The backends of `candidates` that the tests run on: the available ones. A candidate that
/// is required (see [`required_backends`]) but not available fails the test; one that is
/// neither prints a SKIP line, so that a CPU without it cannot pass silently in CI.
pub fn backends_under_test(candidates: &[qluks_hal::Backend]) -> Vec<qluks_hal::Backend> {
    let required = required_backends();
    candidates
        .iter()
        .copied()
        .filter(|b| {
            let available = b.is_available();
            assert!(
                available || !required.contains(b),
                "backend {b} is required (QLUKS_REQUIRE_BACKENDS) but not available on this CPU"
            );
            if !available {
                eprintln!("SKIP: backend {b} is not available on this CPU");
            }
            available
        })
        .collect()
}

/// Every backend the tests run on ([`backends_under_test`] of all of them).
pub fn tested_backends() -> Vec<qluks_hal::Backend> {
    backends_under_test(&qluks_hal::Backend::ALL)
}
