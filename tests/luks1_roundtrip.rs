//! LUKS1 in memory: format, unlock, payload read/write, keyslot management.

mod common;

use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::io::{BlockIo, MemIo};
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::{LuksError, LuksIoError, LuksVolume, OpenOptions};

const PAYLOAD: usize = 64 * 1024;

fn formatted(cipher: &str, hash: HashAlg, pass: &[u8]) -> Vec<u8> {
    let spec = CipherSpec::parse_sized(cipher).unwrap();
    let (_, payload_offset) = luks1::layout(spec.key_bytes as u32);
    let mut disk = vec![0u8; payload_offset as usize * 512 + PAYLOAD];
    let mut params = CreateParams { cipher: spec, hash, iterations: Iterations::fixed(1000) };
    luks1::format(&mut MemIo::new(&mut disk), 0, &mut params, pass, &mut OsRng).unwrap();
    disk
}

fn luks_err<E: std::fmt::Debug>(r: Result<impl Sized, LuksIoError<E>>) -> LuksError {
    match r {
        Err(LuksIoError::Luks(e)) => e,
        Err(e) => panic!("device error {e:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn formatted_volume_opens_with_its_passphrase_and_round_trips_data() {
    for (cipher, hash) in [
        ("aes-256-xts-plain64", HashAlg::Sha256),
        ("aes-128-xts-plain", HashAlg::Sha1),
        ("aes-256-cbc-essiv:sha256", HashAlg::Sha512),
        ("aes-192-cbc-plain64", HashAlg::Ripemd160),
        ("aes-128-ecb", HashAlg::Sha224),
    ] {
        let mut disk = formatted(cipher, hash, b"secret");
        let mut vol = LuksVolume::open(MemIo::new(&mut disk), b"secret", OpenOptions::default()).unwrap();
        assert_eq!(vol.size(), PAYLOAD as u64);
        let data = common::pattern(1, 10_000);
        vol.write_at(777, &data).unwrap();
        let mut back = vec![0u8; 10_000];
        vol.read_at(777, &mut back).unwrap();
        assert_eq!(back, data, "{cipher}");
        // Through a fresh open, and unaligned pieces.
        drop(vol);
        let mut vol = LuksVolume::open(MemIo::new(&mut disk), b"secret", OpenOptions::default()).unwrap();
        let mut piece = vec![0u8; 3];
        vol.read_at(777 + 510, &mut piece).unwrap();
        assert_eq!(piece, data[510..513], "{cipher}");
    }
}

#[test]
fn write_in_place_matches_write_at() {
    let mut a = formatted("aes-256-xts-plain64", HashAlg::Sha256, b"p");
    let mut b = a.clone();
    let data = common::pattern(2, 8192 + 100);
    LuksVolume::open(MemIo::new(&mut a), b"p", OpenOptions::default()).unwrap().write_at(512, &data).unwrap();
    let mut copy = data.clone();
    LuksVolume::open(MemIo::new(&mut b), b"p", OpenOptions::default()).unwrap().write_in_place(512, &mut copy).unwrap();
    assert_eq!(a, b);
}

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let mut disk = formatted("aes-256-xts-plain64", HashAlg::Sha256, b"right");
    let before = disk.clone();
    let e = luks_err(LuksVolume::open(MemIo::new(&mut disk), b"wrong", OpenOptions::default()));
    assert_eq!(e, LuksError::WrongPassphrase);
    assert!(disk == before);
}

#[test]
fn access_past_the_payload_is_refused() {
    let mut disk = formatted("aes-256-xts-plain64", HashAlg::Sha256, b"p");
    let mut vol = LuksVolume::open(MemIo::new(&mut disk), b"p", OpenOptions::default()).unwrap();
    let e = luks_err(vol.read_at(PAYLOAD as u64 - 1, &mut [0u8; 2]));
    assert_eq!(e, LuksError::OutOfRange { offset: PAYLOAD as u64 - 1, len: 2, size: PAYLOAD as u64 });
    assert_eq!(
        luks_err(vol.write_at(u64::MAX, &[1])),
        LuksError::OutOfRange { offset: u64::MAX, len: 1, size: PAYLOAD as u64 }
    );
}

#[test]
fn added_keyslot_opens_the_same_volume_key() {
    let mut disk = formatted("aes-256-xts-plain64", HashAlg::Sha256, b"first");
    let mut io = MemIo::new(&mut disk);
    let mut header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    let key = luks1::unlock(&mut io, 0, None, &header, b"first").unwrap();
    let k = luks1::add_keyslot(&mut io, 0, None, &mut header, &key, b"second", None, 1000, &mut OsRng).unwrap();
    assert_eq!(k, 1);
    let header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    let (slot, key2) = luks1::unlock_keyslot(&mut io, 0, None, &header, b"second", None).unwrap();
    assert_eq!((slot, key2.as_bytes()), (1, key.as_bytes()));
    let e = luks_err(luks1::unlock_keyslot(&mut io, 0, None, &header, b"second", Some(0)));
    assert_eq!(e, LuksError::WrongPassphrase);
}

#[test]
fn removed_keyslot_key_material_is_overwritten() {
    let mut disk = formatted("aes-256-xts-plain64", HashAlg::Sha256, b"first");
    let mut io = MemIo::new(&mut disk);
    let mut header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    let key = luks1::unlock(&mut io, 0, None, &header, b"first").unwrap();
    luks1::add_keyslot(&mut io, 0, None, &mut header, &key, b"second", None, 1000, &mut OsRng).unwrap();
    let old_header = io.as_slice()[..4096].to_vec();
    let range = header.keyslots[1].material_range(header.key_bytes);
    let old_material = io.as_slice()[range.start as usize..range.end as usize].to_vec();
    luks1::remove_keyslot(&mut io, 0, None, &mut header, 1, false, &mut OsRng).unwrap();
    assert!(!header.keyslots[1].active);
    assert_ne!(&io.as_slice()[range.start as usize..range.end as usize], &old_material[..]);
    // iotest 294: putting the old header back does not bring the passphrase back.
    io.write_at(0, &old_header).unwrap();
    let restored = luks1::Luks1Header::read(&mut io, 0).unwrap();
    let e = luks_err(luks1::unlock(&mut io, 0, None, &restored, b"second"));
    assert_eq!(e, LuksError::WrongPassphrase);
    assert!(luks1::unlock(&mut io, 0, None, &restored, b"first").is_ok());
}

#[test]
fn the_last_keyslot_is_only_removed_when_allowed() {
    let mut disk = formatted("aes-256-xts-plain64", HashAlg::Sha256, b"only");
    let mut io = MemIo::new(&mut disk);
    let mut header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    let e = luks_err(luks1::remove_keyslot(&mut io, 0, None, &mut header, 0, false, &mut OsRng));
    assert_eq!(e, LuksError::LastKeyslot { keyslot: 0 });
    luks1::remove_keyslot(&mut io, 0, None, &mut header, 0, true, &mut OsRng).unwrap();
    let header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    assert_eq!(luks_err(luks1::unlock(&mut io, 0, None, &header, b"only")), LuksError::NoActiveKeyslot);
}

#[test]
fn changed_passphrase_replaces_the_old_one() {
    let mut disk = formatted("aes-256-xts-plain64", HashAlg::Sha256, b"old");
    let mut io = MemIo::new(&mut disk);
    let mut header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    let key = luks1::unlock(&mut io, 0, None, &header, b"old").unwrap();
    let k = luks1::change_passphrase(&mut io, 0, None, &mut header, b"old", b"new", None, 1000, &mut OsRng).unwrap();
    let header = luks1::Luks1Header::read(&mut io, 0).unwrap();
    assert_eq!(header.active_keyslots().collect::<Vec<_>>(), vec![k]);
    assert_eq!(luks1::unlock(&mut io, 0, None, &header, b"new").unwrap().as_bytes(), key.as_bytes());
    assert_eq!(luks_err(luks1::unlock(&mut io, 0, None, &header, b"old")), LuksError::WrongPassphrase);
}

#[test]
fn header_serializes_back_to_the_same_bytes() {
    let disk = formatted("aes-128-cbc-essiv:sha256", HashAlg::Sha1, b"p");
    let header = luks1::Luks1Header::parse(&disk).unwrap();
    assert_eq!(header.to_bytes()[..], disk[..592]);
    assert_eq!(header.payload_offset, luks1::layout(16).1);
}
