//! LUKS1 hardening (formats.md §8): every malformed or truncated header is a typed error,
//! never a panic, and the file is never modified by a failed open.

mod common;

use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::io::MemIo;
use qluks::luks::luks1::{self, CreateParams, Iterations, Luks1Header, HEADER_LEN};
use qluks::luks::{LuksError, LuksIoError, LuksVolume, OpenOptions};
use std::sync::OnceLock;

/// A valid volume (QEMU layout, 64-byte key, keyslot 0 for "pass") with 4 KiB of payload.
fn volume() -> Vec<u8> {
    static V: OnceLock<Vec<u8>> = OnceLock::new();
    V.get_or_init(|| {
        let mut disk = vec![0u8; 4040 * 512 + 4096];
        let mut params =
            CreateParams { cipher: CipherSpec::DEFAULT, hash: HashAlg::Sha256, iterations: Iterations::fixed(1000) };
        luks1::format(&mut MemIo::new(&mut disk), 0, &mut params, b"pass", &mut OsRng).unwrap();
        disk
    })
    .clone()
}

fn with(edit: impl FnOnce(&mut [u8])) -> LuksError {
    let mut v = volume();
    edit(&mut v);
    Luks1Header::parse(&v).expect_err("header accepted")
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn slot_at(k: usize) -> usize {
    208 + 48 * k
}

fn open_err(disk: &mut [u8], pass: &[u8]) -> LuksError {
    match LuksVolume::open(MemIo::new(disk), pass, OpenOptions::default()) {
        Err(LuksIoError::Luks(e)) => e,
        Err(LuksIoError::Io(e)) => panic!("device error {e}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn the_valid_header_parses() {
    let h = Luks1Header::parse(&volume()).unwrap();
    assert_eq!((h.payload_offset, h.key_bytes), (4040, 64));
}

#[test]
fn truncated_header_is_too_short() {
    for len in [0, 6, 100, HEADER_LEN - 1] {
        assert_eq!(Luks1Header::parse(&volume()[..len]), Err(LuksError::TooShort { len, needed: HEADER_LEN }));
    }
    let mut short = volume()[..300].to_vec();
    assert_eq!(open_err(&mut short, b"pass"), LuksError::TooShort { len: 300, needed: HEADER_LEN });
}

#[test]
fn bad_magic_is_refused() {
    assert_eq!(with(|b| b[0] = b'X'), LuksError::BadMagic);
}

#[test]
fn unknown_version_is_refused() {
    assert_eq!(with(|b| b[7] = 3), LuksError::UnsupportedVersion { version: 3 });
}

#[test]
fn unterminated_strings_are_refused() {
    assert_eq!(with(|b| b[8..40].fill(b'a')), LuksError::StringNotTerminated { field: "cipher_name" });
    assert_eq!(with(|b| b[40..72].fill(b'a')), LuksError::StringNotTerminated { field: "cipher_mode" });
    assert_eq!(with(|b| b[72..104].fill(b'a')), LuksError::StringNotTerminated { field: "hash_spec" });
    assert_eq!(with(|b| b[168..208].fill(b'a')), LuksError::StringNotTerminated { field: "uuid" });
}

#[test]
fn unknown_or_unimplemented_ciphers_are_refused_by_name() {
    match with(|b| b[8..15].copy_from_slice(b"serpent")) {
        LuksError::UnsupportedCipher { name } => assert_eq!(name.as_bytes(), b"serpent"),
        e => panic!("{e:?}"),
    }
    match with(|b| b[8..11].copy_from_slice(b"xyz")) {
        LuksError::UnsupportedCipher { name } => assert_eq!(name.as_bytes(), b"xyz"),
        e => panic!("{e:?}"),
    }
    match with(|b| b[40..51].copy_from_slice(b"ctr-plain64")) {
        LuksError::UnsupportedMode { mode } => assert_eq!(mode.as_bytes(), b"ctr-plain64"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn unknown_hash_is_refused_by_name() {
    match with(|b| b[72..78].copy_from_slice(b"md5\0\0\0")) {
        LuksError::UnsupportedHash { name } => assert_eq!(name.as_bytes(), b"md5"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn key_bytes_not_matching_the_cipher_are_refused() {
    assert_eq!(with(|b| put32(b, 108, 20)), LuksError::KeyBytes { key_bytes: 20 });
    assert_eq!(with(|b| put32(b, 108, u32::MAX)), LuksError::KeyBytes { key_bytes: u32::MAX });
}

#[test]
fn zero_or_absurd_digest_iterations_are_refused() {
    assert_eq!(with(|b| put32(b, 164, 0)), LuksError::DigestIterations { iterations: 0 });
    assert_eq!(with(|b| put32(b, 164, u32::MAX)), LuksError::DigestIterations { iterations: u32::MAX });
}

#[test]
fn zero_or_absurd_keyslot_iterations_are_refused() {
    assert_eq!(with(|b| put32(b, slot_at(0) + 4, 0)), LuksError::KeyslotIterations { keyslot: 0, iterations: 0 });
    let e = with(|b| put32(b, slot_at(0) + 4, u32::MAX));
    assert_eq!(e, LuksError::KeyslotIterations { keyslot: 0, iterations: u32::MAX });
}

#[test]
fn invalid_keyslot_state_is_refused() {
    assert_eq!(with(|b| put32(b, slot_at(2), 7)), LuksError::KeyslotState { keyslot: 2, active: 7 });
}

#[test]
fn stripes_other_than_4000_are_refused() {
    assert_eq!(with(|b| put32(b, slot_at(1) + 44, 3999)), LuksError::KeyslotStripes { keyslot: 1, stripes: 3999 });
    assert_eq!(
        with(|b| put32(b, slot_at(1) + 44, u32::MAX)),
        LuksError::KeyslotStripes { keyslot: 1, stripes: u32::MAX }
    );
}

#[test]
fn key_material_overlapping_the_header_is_refused() {
    assert_eq!(with(|b| put32(b, slot_at(0) + 40, 1)), LuksError::KeyslotOverlapsHeader { keyslot: 0 });
}

#[test]
fn overlapping_keyslot_areas_are_refused() {
    assert_eq!(with(|b| put32(b, slot_at(3) + 40, 520)), LuksError::KeyslotsOverlap { keyslot: 1, other: 3 });
}

#[test]
fn key_material_running_into_the_payload_is_refused() {
    assert_eq!(with(|b| put32(b, slot_at(7) + 40, 3600)), LuksError::KeyslotOverlapsPayload { keyslot: 7 });
    assert_eq!(with(|b| put32(b, slot_at(7) + 40, u32::MAX)), LuksError::KeyslotOverlapsPayload { keyslot: 7 });
}

#[test]
fn payload_inside_the_header_sectors_is_refused() {
    assert_eq!(with(|b| put32(b, 104, 7)), LuksError::PayloadOffset { payload_offset: 7 });
}

#[test]
fn key_material_past_the_end_of_the_file_is_refused() {
    let mut v = volume()[..100_000].to_vec();
    // Keyslot 0's material: 4000 stripes of the 64-byte key from sector 8.
    assert_eq!(
        open_err(&mut v, b"pass"),
        LuksError::KeyMaterialOutsideArea { keyslot: 0, end: 4096 + 4000 * 64, area_len: 100_000 }
    );
}

#[test]
fn key_material_outside_the_callers_area_is_refused() {
    let mut v = volume();
    let mut io = MemIo::new(&mut v);
    let header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    let e = luks1::unlock(&mut io, 0, Some(8 * 512), &header, b"pass").unwrap_err();
    assert!(
        matches!(e, LuksIoError::Luks(LuksError::KeyMaterialOutsideArea { keyslot: 0, end: 260_096, area_len: 4096 })),
        "{e:?}"
    );
}

#[test]
fn a_header_at_an_offset_unlocks_with_offsets_relative_to_it() {
    let v = volume();
    let mut shifted = vec![0u8; 65536];
    shifted.extend_from_slice(&v);
    let mut io = MemIo::new(&mut shifted);
    let header = luks1::Luks1Header::read(&mut io, 65536).unwrap();
    let key = luks1::unlock(&mut io, 65536, Some(4040 * 512), &header, b"pass").unwrap();
    assert_eq!(key.len(), 64);
}

#[test]
fn wrong_passphrase_leaves_the_file_byte_identical() {
    let mut v = volume();
    let before = v.clone();
    assert_eq!(open_err(&mut v, b"Pass"), LuksError::WrongPassphrase);
    assert!(v == before);
}

#[test]
fn corrupted_key_material_gives_wrong_passphrase() {
    let mut v = volume();
    v[8 * 512 + 1000] ^= 1;
    assert_eq!(open_err(&mut v, b"pass"), LuksError::WrongPassphrase);
}

#[test]
fn corrupted_digest_gives_wrong_passphrase() {
    let mut v = volume();
    v[112] ^= 0x80;
    assert_eq!(open_err(&mut v, b"pass"), LuksError::WrongPassphrase);
}

#[test]
fn random_bytes_never_panic_the_parser() {
    let base = volume();
    for seed in 0..2000u64 {
        let mut h = base[..HEADER_LEN].to_vec();
        let noise = common::pattern(seed, 8);
        let at = (u64::from_le_bytes(noise[..8].try_into().unwrap()) % HEADER_LEN as u64) as usize;
        h[at] ^= noise[0] | 1;
        let _ = Luks1Header::parse(&h);
    }
}
