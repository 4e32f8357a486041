#![no_main]
//! CBC of every qluks-hal backend this CPU has against the `cbc` + `aes` crates: arbitrary
//! AES-128/192/256 keys (and wrong lengths that must be refused), one chain with any IV,
//! and runs of sectors of any size the API allows (a multiple of 16: 512, 4096 and others)
//! with plain, plain64 and ESSIV:sha256 IVs (ESSIV built from `aes` + `sha2` as dm-crypt and
//! LUKS derive it), first sector numbers near 2^32 and 2^64; encrypt and decrypt in place.
//! ESSIV with hashes whose digest is no AES key is refused. Then the core's `SectorCipher`
//! (CBC plain/plain64/ESSIV and ECB) against the same oracles.
//!
//! Input: byte 0 = choices (bits 0-1 key length 16/24/32/arbitrary, bits 2-3 IV generator
//! plain/plain64/essiv/one chain, bits 4-6 how the first sector is formed, bit 7 a ragged
//! length), byte 1 = sector size (bits 0-1: 512, 4096, 16 x (1 + n), arbitrary u16), byte 2 =
//! sector count - 1 (mod 40), byte 3 = ESSIV hash, u16 n, u64 raw sector, 16-byte IV, the key,
//! then the data.
use qluks::crypto::{CbcIv, CipherMode, CipherSpec, HashAlg, SectorCipher};
use qluks::hal::{Backend, Cbc, Error, Essiv, EssivHash, IvGen};

#[path = "oracles.rs"]
mod oracles;
#[path = "targets_support.rs"]
mod support;

const MAX_DATA: usize = 64 * 1024;

fn first_sector(kind: u8, raw: u64) -> u64 {
    let near = raw % 64;
    match kind & 7 {
        0 | 5 => raw,
        1 => near,
        2 => (1 << 32) - near - 1,
        3 => u64::MAX - near,
        4 => (1 << 32) + near,
        _ => (1 << 63) - near,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Iv {
    Plain,
    Plain64,
    Essiv,
}

fn expected_iv(iv: Iv, key: &[u8], sector: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    match iv {
        Iv::Plain => b[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
        Iv::Plain64 => b[..8].copy_from_slice(&sector.to_le_bytes()),
        Iv::Essiv => b = oracles::essiv_sha256(key, sector),
    }
    b
}

/// The oracle over whole sectors, sector `i` with the IV of `first + i` (wrapping u64).
fn oracle_sectors(key: &[u8], data: &mut [u8], sector_size: usize, first: u64, iv: Iv, enc: bool) {
    for (i, s) in data.chunks_exact_mut(sector_size).enumerate() {
        oracles::cbc(key, s, &expected_iv(iv, key, first.wrapping_add(i as u64)), enc);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = support::Reader::new(data);
    let (choice, size_sel, count, hash_sel) = (r.u8(), r.u8(), usize::from(r.u8() % 40) + 1, r.u8());
    let n = usize::from(r.u16());
    let raw = r.u64();
    let chain_iv: [u8; 16] = r.bytes();
    let key_len = match choice & 3 {
        0 => 16,
        1 => 24,
        2 => 32,
        _ => usize::from(hash_sel % 72),
    };
    let key = r.take_padded(key_len);
    let payload = r.rest();
    let backends: Vec<Backend> = Backend::available().collect();

    if !matches!(key_len, 16 | 24 | 32) {
        for &b in &backends {
            let r = Cbc::with_backend(&key, b);
            assert!(matches!(r, Err(Error::InvalidKeyLength { len }) if len == key_len), "{b}: key {key_len}");
        }
        return;
    }
    // ESSIV keyed by a digest that is no AES key (SHA-1, SHA-224, SHA-384, SHA-512) is refused.
    let hash = [EssivHash::Sha1, EssivHash::Sha224, EssivHash::Sha384, EssivHash::Sha512][usize::from(hash_sel & 3)];
    for &b in &backends {
        assert!(matches!(Essiv::new(hash, &key, b), Err(Error::InvalidKeyLength { .. })), "{b}: ESSIV {hash:?}");
    }

    if choice >> 2 & 3 == 3 {
        // One chain with an arbitrary IV.
        let len = (n % 4096) & !15;
        let plain = support::fill(len, choice, payload);
        let mut expect_enc = plain.clone();
        oracles::cbc(&key, &mut expect_enc, &chain_iv, true);
        let mut expect_dec = plain.clone();
        oracles::cbc(&key, &mut expect_dec, &chain_iv, false);
        for &b in &backends {
            let cbc = Cbc::with_backend(&key, b).unwrap();
            let mut ours = plain.clone();
            cbc.encrypt(&mut ours, &chain_iv).unwrap();
            assert!(ours == expect_enc, "{b}: CBC encrypt key {key_len} len {len}");
            cbc.decrypt(&mut ours, &chain_iv).unwrap();
            assert!(ours == plain, "{b}: CBC decrypt(encrypt) len {len}");
            cbc.decrypt(&mut ours, &chain_iv).unwrap();
            assert!(ours == expect_dec, "{b}: CBC decrypt key {key_len} len {len}");
            let mut ragged = vec![0u8; len + 1 + n % 15];
            assert!(cbc.encrypt(&mut ragged, &chain_iv).is_err(), "{b}: CBC over a partial block");
        }
        return;
    }

    let iv = [Iv::Plain, Iv::Plain64, Iv::Essiv][usize::from(choice >> 2 & 3)];
    let sector_size = match size_sel & 3 {
        0 => 512,
        1 => 4096,
        2 => 16 * (1 + n % 512),
        _ => n,
    };
    let valid = sector_size != 0 && sector_size % 16 == 0;
    let count = if valid { count.clamp(1, (MAX_DATA / sector_size).max(1)) } else { count };
    let len = match (valid, choice & 0x80 != 0) {
        (false, _) => count * 16,
        (true, true) => count * sector_size + 16 * (1 + n % (sector_size / 16).max(1)) % sector_size.max(1),
        (true, false) => count * sector_size,
    };
    let first = first_sector(choice >> 4, raw);
    let plain = support::fill(len, choice, payload);
    for &b in &backends {
        let cbc = Cbc::with_backend(&key, b).unwrap();
        assert_eq!((cbc.backend(), cbc.key_len()), (b, key_len));
        let essiv = Essiv::new(EssivHash::Sha256, &key, b).unwrap();
        let gen = match iv {
            Iv::Plain => IvGen::Plain,
            Iv::Plain64 => IvGen::Plain64,
            Iv::Essiv => IvGen::Essiv(&essiv),
        };
        assert_eq!(gen.iv(first), expected_iv(iv, &key, first), "{b}: {iv:?} IV of sector {first:#x}");
        let mut ours = plain.clone();
        let r = cbc.encrypt_sectors(&mut ours, sector_size, first, gen);
        if !valid {
            assert!(matches!(r, Err(Error::InvalidUnitSize { .. })), "{b}: sector size {sector_size}: {r:?}");
        } else if len % sector_size != 0 {
            assert!(matches!(r, Err(Error::LengthNotMultiple { .. })), "{b}: len {len} sector {sector_size}: {r:?}");
        }
        if r.is_err() {
            assert!(ours == plain, "{b}: a refused call changed the data");
            let r = cbc.decrypt_sectors(&mut ours, sector_size, first, gen);
            assert!(r.is_err() && ours == plain, "{b}: decrypt accepted what encrypt refused");
            continue;
        }
        let what = format!("{b}: {iv:?} key {key_len} sector {sector_size} x{count} from {first:#x}");
        let mut theirs = plain.clone();
        oracle_sectors(&key, &mut theirs, sector_size, first, iv, true);
        assert!(ours == theirs, "encrypt {what}");
        cbc.decrypt_sectors(&mut ours, sector_size, first, gen).unwrap();
        assert!(ours == plain, "decrypt(encrypt) {what}");
        cbc.decrypt_sectors(&mut ours, sector_size, first, gen).unwrap();
        let mut theirs = plain.clone();
        oracle_sectors(&key, &mut theirs, sector_size, first, iv, false);
        assert!(ours == theirs, "decrypt {what}");
    }
    if !valid || len % sector_size != 0 {
        return;
    }
    // The core's sector cipher (what LUKS and qcow2 use), CBC and ECB.
    let mode = match iv {
        Iv::Plain => CipherMode::Cbc(CbcIv::Plain),
        Iv::Plain64 => CipherMode::Cbc(CbcIv::Plain64),
        Iv::Essiv => CipherMode::Cbc(CbcIv::Essiv(HashAlg::Sha256)),
    };
    let cipher = SectorCipher::new(CipherSpec { mode, key_bytes: key_len }, &key).unwrap();
    let mut ours = plain.clone();
    cipher.encrypt_sectors(&mut ours, sector_size, first).unwrap();
    let mut theirs = plain.clone();
    oracle_sectors(&key, &mut theirs, sector_size, first, iv, true);
    assert!(ours == theirs, "SectorCipher {iv:?} sector {sector_size} x{count} from {first:#x}");
    cipher.decrypt_sectors(&mut ours, sector_size, first).unwrap();
    assert!(ours == plain, "SectorCipher {iv:?} decrypt");
    let ecb = SectorCipher::new(CipherSpec { mode: CipherMode::Ecb, key_bytes: key_len }, &key).unwrap();
    let mut ours = plain.clone();
    ecb.encrypt_sectors(&mut ours, sector_size, first).unwrap();
    let mut theirs = plain.clone();
    oracles::ecb(&key, &mut theirs, true);
    assert!(ours == theirs, "SectorCipher ECB sector {sector_size} x{count}");
    ecb.decrypt_sectors(&mut ours, sector_size, first).unwrap();
    assert!(ours == plain, "SectorCipher ECB decrypt");
});
