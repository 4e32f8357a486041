//! Published known-answer vectors on every backend this machine supports: IEEE Std 1619-2007
//! XTS-AES (all 19 vectors, including ciphertext stealing), NIST SP 800-38A CBC-AES and the
//! FIPS-197 Appendix C block examples.
mod common;

use common::hex;
use qluks_hal::{Aes, Cbc, Xts};

/// Records of `Name = value` lines separated by blank lines; `#` starts a comment line.
fn records(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = vec![];
    let mut cur = vec![];
    for line in text.lines().chain([""]) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let (k, v) = line.split_once('=').expect("Name = value");
        cur.push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

fn field<'a>(rec: &'a [(String, String)], name: &str) -> &'a str {
    &rec.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("missing {name}")).1
}

struct XtsVector {
    number: u32,
    key: Vec<u8>,
    tweak: [u8; 16],
    ptx: Vec<u8>,
    ctx: Vec<u8>,
}

fn ieee1619_vectors() -> Vec<XtsVector> {
    let v: Vec<XtsVector> = records(include_str!("data/ieee1619_2007_xts.txt"))
        .iter()
        .map(|r| XtsVector {
            number: field(r, "Vector").parse().unwrap(),
            key: hex(field(r, "Key")),
            tweak: hex(field(r, "Tweak")).try_into().unwrap(),
            ptx: hex(field(r, "PTX")),
            ctx: hex(field(r, "CTX")),
        })
        .collect();
    assert_eq!(v.iter().map(|v| v.number).collect::<Vec<_>>(), (1..=19).collect::<Vec<_>>());
    v
}

#[test]
fn ieee1619_vectors_single_unit_api_on_every_backend() {
    for backend in common::tested_backends() {
        for v in ieee1619_vectors() {
            let xts = Xts::with_backend(&v.key, backend).unwrap();
            let mut buf = v.ptx.clone();
            xts.encrypt_unit(&mut buf, &v.tweak).unwrap();
            assert!(buf == v.ctx, "{backend}: vector {} encrypt", v.number);
            xts.decrypt_unit(&mut buf, &v.tweak).unwrap();
            assert!(buf == v.ptx, "{backend}: vector {} decrypt", v.number);
        }
    }
}

#[test]
fn ieee1619_ciphertext_stealing_vectors_15_to_18_cover_17_to_20_bytes() {
    let lens: Vec<usize> =
        ieee1619_vectors().iter().filter(|v| (15..=18).contains(&v.number)).map(|v| v.ptx.len()).collect();
    assert_eq!(lens, [17, 18, 19, 20]);
}

#[test]
fn ieee1619_512_byte_vectors_through_the_batch_api_on_every_backend() {
    // Vectors with one 512-byte data unit: the tweak is the unit number as LE128, so the batch
    // API with first_unit = that number must give the same ciphertext.
    for backend in common::tested_backends() {
        let mut seen = 0;
        for v in ieee1619_vectors().into_iter().filter(|v| v.ptx.len() == 512) {
            seen += 1;
            let xts = Xts::with_backend(&v.key, backend).unwrap();
            let unit = u128::from_le_bytes(v.tweak);
            let mut buf = v.ptx.clone();
            xts.encrypt_units(&mut buf, 512, unit).unwrap();
            assert!(buf == v.ctx, "{backend}: vector {} encrypt_units", v.number);
            xts.decrypt_units(&mut buf, 512, unit).unwrap();
            assert!(buf == v.ptx, "{backend}: vector {} decrypt_units", v.number);
        }
        assert_eq!(seen, 12, "vectors 4-14 and 19");
    }
}

#[test]
fn ieee1619_vectors_4_to_6_chain_as_consecutive_units_in_one_batch() {
    // Vectors 4, 5 and 6 share one key and have tweaks 0, 1 and 2: as units 0, 1, 2 of one
    // batch they must give the three ciphertexts.
    let v = ieee1619_vectors();
    let (v4, v5, v6) = (&v[3], &v[4], &v[5]);
    for backend in common::tested_backends() {
        let xts = Xts::with_backend(&v4.key, backend).unwrap();
        let mut buf = [v4.ptx.clone(), v5.ptx.clone(), v6.ptx.clone()].concat();
        xts.encrypt_units(&mut buf, 512, 0).unwrap();
        assert!(buf == [v4.ctx.clone(), v5.ctx.clone(), v6.ctx.clone()].concat(), "{backend}");
    }
}

#[test]
fn sp800_38a_cbc_vectors_on_every_backend() {
    let recs = records(include_str!("data/sp800_38a_cbc.txt"));
    assert_eq!(recs.len(), 3);
    for backend in common::tested_backends() {
        for r in &recs {
            let key = hex(field(r, "Key"));
            let iv: [u8; 16] = hex(field(r, "IV")).try_into().unwrap();
            let (pt, ct) = (hex(field(r, "Plaintext")), hex(field(r, "Ciphertext")));
            let cbc = Cbc::with_backend(&key, backend).unwrap();
            let mut buf = pt.clone();
            cbc.encrypt(&mut buf, &iv).unwrap();
            assert!(buf == ct, "{backend}: CBC-AES{} encrypt", key.len() * 8);
            cbc.decrypt(&mut buf, &iv).unwrap();
            assert!(buf == pt, "{backend}: CBC-AES{} decrypt", key.len() * 8);
        }
    }
}

#[test]
fn fips197_appendix_c_examples_on_every_backend() {
    let plain: [u8; 16] = hex("00112233445566778899aabbccddeeff").try_into().unwrap();
    let cases = [
        ("000102030405060708090a0b0c0d0e0f", "69c4e0d86a7b0430d8cdb78070b4c55a"),
        ("000102030405060708090a0b0c0d0e0f1011121314151617", "dda97ca4864cdfe06eaf70a0ec0d7191"),
        ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "8ea2b7ca516745bfeafc49904b496089"),
    ];
    for backend in common::tested_backends() {
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
