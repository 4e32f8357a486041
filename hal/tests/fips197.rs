//! FIPS-197 appendix C example vectors (AES-128/192/256 single block) on every backend.
use qluks_hal::{Aes, Backend};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn fips197_appendix_c_examples_on_every_backend() {
    let plain: [u8; 16] = hex("00112233445566778899aabbccddeeff").try_into().unwrap();
    let cases = [
        ("000102030405060708090a0b0c0d0e0f", "69c4e0d86a7b0430d8cdb78070b4c55a"),
        ("000102030405060708090a0b0c0d0e0f1011121314151617", "dda97ca4864cdfe06eaf70a0ec0d7191"),
        ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "8ea2b7ca516745bfeafc49904b496089"),
    ];
    for backend in Backend::available() {
        for (key, ct) in cases {
            let aes = Aes::with_backend(&hex(key), backend).unwrap();
            let mut b = plain;
            aes.encrypt_block(&mut b);
            assert_eq!(b.to_vec(), hex(ct), "{backend} key {key}");
            aes.decrypt_block(&mut b);
            assert_eq!(b, plain, "{backend} key {key}");
        }
    }
}
