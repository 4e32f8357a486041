//! The RustCrypto oracles of the differential targets (`aes`, `xts-mode`, `cbc`, and ESSIV
//! built from `aes` + `sha2` as dm-crypt derives it), independent of qluks-hal.
#![allow(dead_code)]

use aes::cipher::{
    consts::U16, Array, BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, BlockSizeUser,
    KeyInit, KeyIvInit,
};

trait Cipher: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16> + Clone {}
impl<C: KeyInit + BlockCipherEncrypt + BlockCipherDecrypt + BlockSizeUser<BlockSize = U16> + Clone> Cipher for C {}

/// One XTS data unit with `xts-mode` (ciphertext stealing included); `key` is both halves.
pub fn xts_unit(key: &[u8], data: &mut [u8], tweak: [u8; 16], enc: bool) {
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

/// Consecutive XTS units, unit `i` with the tweak `tweak(i)`.
pub fn xts_units(key: &[u8], data: &mut [u8], unit: usize, tweak: impl Fn(usize) -> u128, enc: bool) {
    for (i, u) in data.chunks_exact_mut(unit).enumerate() {
        xts_unit(key, u, tweak(i).to_le_bytes(), enc);
    }
}

/// One CBC chain with the `cbc` crate.
pub fn cbc(key: &[u8], data: &mut [u8], iv: &[u8; 16], enc: bool) {
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

/// ECB with the `aes` crate.
pub fn ecb(key: &[u8], data: &mut [u8], enc: bool) {
    fn run<C: Cipher>(key: &[u8], data: &mut [u8], enc: bool) {
        let c = C::new_from_slice(key).unwrap();
        for b in data.chunks_exact_mut(16) {
            let blk = <&mut Array<u8, U16>>::try_from(b).unwrap();
            if enc {
                c.encrypt_block(blk)
            } else {
                c.decrypt_block(blk)
            }
        }
    }
    match key.len() {
        16 => run::<aes::Aes128>(key, data, enc),
        24 => run::<aes::Aes192>(key, data, enc),
        32 => run::<aes::Aes256>(key, data, enc),
        n => panic!("bad key length {n}"),
    }
}

/// dm-crypt's ESSIV:sha256 IV of `sector`: AES-256 keyed by SHA-256(volume key) over
/// LE64(sector).
pub fn essiv_sha256(volume_key: &[u8], sector: u64) -> [u8; 16] {
    use sha2::Digest;
    let salt = sha2::Sha256::digest(volume_key);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&sector.to_le_bytes());
    ecb(&salt, &mut b, true);
    b
}
