//! LUKS1 interoperability with cryptsetup: volumes made by `cryptsetup luksFormat --type luks1`
//! unlock to the volume key `luksDump --dump-volume-key` prints; volumes and keyslots made by
//! qluks are accepted by `cryptsetup luksDump` / `open --test-passphrase`, and keyslots removed
//! on either side are gone on the other.

mod common;

use common::{run, tool, TempDir};
use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::{LuksError, LuksIoError};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;

fn cryptsetup(args: &[&str]) -> Command {
    let mut c = Command::new("cryptsetup");
    c.args(["--batch-mode"]).args(args);
    c
}

fn write_pass(dir: &TempDir, name: &str, pass: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pass).unwrap();
    p.to_str().unwrap().to_string()
}

fn dumped_volume_key(img: &Path, key_file: &str) -> Vec<u8> {
    let out = run(cryptsetup(&["luksDump", "--dump-volume-key", "--key-file", key_file]).arg(img));
    let at = out.find("MK dump:").expect("MK dump in luksDump output");
    let mut key = Vec::new();
    for (i, line) in out[at + "MK dump:".len()..].lines().enumerate() {
        if i > 0 && !line.starts_with('\t') {
            break;
        }
        key.extend(line.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()));
    }
    key
}

fn test_passphrase(img: &Path, key_file: &str, slot: Option<usize>) -> bool {
    let mut c = cryptsetup(&["open", "--test-passphrase", "--key-file", key_file]);
    if let Some(s) = slot {
        c.args(["--key-slot", &s.to_string()]);
    }
    common::output(c.arg(img)).status.success()
}

fn rw(img: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(img).unwrap()
}

#[test]
fn cryptsetup_luks1_volumes_unlock_to_the_dumped_volume_key() {
    if !tool("cryptsetup_luks1_unlock", "cryptsetup") {
        return;
    }
    let dir = TempDir::new("cryptsetup_luks1_unlock");
    let pass = write_pass(&dir, "pass", b"cryptsetup pass\n");
    for (i, extra) in [
        &[][..],
        &["--cipher", "aes-xts-plain64", "--key-size", "256"][..],
        &["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha1"][..],
        &["--cipher", "aes-cbc-plain64", "--key-size", "128", "--hash", "sha512"][..],
        &["--cipher", "aes-xts-plain", "--key-size", "512", "--hash", "ripemd160"][..],
    ]
    .iter()
    .enumerate()
    {
        let img = dir.join(&format!("cs{i}.img"));
        File::create(&img).unwrap().set_len(4 << 20).unwrap();
        run(cryptsetup(&["luksFormat", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", &pass])
            .args(*extra)
            .arg(&img));
        let mut f = rw(&img);
        let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
        let key = luks1::unlock(&mut f, 0, None, &header, b"cryptsetup pass\n").unwrap();
        assert_eq!(key.as_bytes(), &dumped_volume_key(&img, &pass)[..], "{extra:?}");
        // The newline is part of the passphrase: without it the volume stays locked.
        let e = luks1::unlock(&mut f, 0, None, &header, b"cryptsetup pass");
        assert!(matches!(e, Err(LuksIoError::Luks(LuksError::WrongPassphrase))));
    }
}

fn qluks_volume(img: &Path, cipher: &str, hash: HashAlg, pass: &[u8]) {
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(img).unwrap();
    let spec = CipherSpec::parse_sized(cipher).unwrap();
    let mut params = CreateParams { cipher: spec, hash, iterations: Iterations::fixed(1000) };
    let (header, _) = luks1::format(&mut f, 0, &mut params, pass, &mut OsRng).unwrap();
    f.set_len(header.payload_offset_bytes() + (1 << 20)).unwrap();
}

#[test]
fn qluks_volumes_are_accepted_by_cryptsetup() {
    if !tool("qluks_volumes_cryptsetup", "cryptsetup") {
        return;
    }
    let dir = TempDir::new("qluks_volumes_cryptsetup");
    let pass = write_pass(&dir, "pass", b"qluks-made");
    for (cipher, hash) in [
        ("aes-256-xts-plain64", HashAlg::Sha256),
        ("aes-128-cbc-essiv:sha256", HashAlg::Sha1),
        ("aes-256-cbc-plain64", HashAlg::Sha512),
    ] {
        let img = dir.join("q.img");
        qluks_volume(&img, cipher, hash, b"qluks-made");
        let dump = run(cryptsetup(&["luksDump"]).arg(&img));
        assert!(dump.contains(&format!("Hash spec:     \t{}", hash.name())), "{dump}");
        assert!(test_passphrase(&img, &pass, None), "{cipher}: cryptsetup refuses the passphrase");
        let mut f = rw(&img);
        let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
        let key = luks1::unlock(&mut f, 0, None, &header, b"qluks-made").unwrap();
        assert_eq!(key.as_bytes(), &dumped_volume_key(&img, &pass)[..], "{cipher}");
    }
}

#[test]
fn keyslots_added_and_removed_by_qluks_are_seen_by_cryptsetup() {
    if !tool("qluks_keyslots_cryptsetup", "cryptsetup") {
        return;
    }
    let dir = TempDir::new("qluks_keyslots_cryptsetup");
    let first = write_pass(&dir, "first", b"first");
    let second = write_pass(&dir, "second", b"second");
    let img = dir.join("k.img");
    qluks_volume(&img, "aes-256-xts-plain64", HashAlg::Sha256, b"first");
    let mut f = rw(&img);
    let mut header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    let key = luks1::unlock(&mut f, 0, None, &header, b"first").unwrap();
    let k = luks1::add_keyslot(&mut f, 0, None, &mut header, &key, b"second", Some(5), 1000, &mut OsRng).unwrap();
    assert_eq!(k, 5);
    assert!(test_passphrase(&img, &second, Some(5)));
    luks1::remove_keyslot(&mut f, 0, None, &mut header, 0, false, &mut OsRng).unwrap();
    assert!(!test_passphrase(&img, &first, None), "removed keyslot still opens in cryptsetup");
    assert!(run(cryptsetup(&["luksDump"]).arg(&img)).contains("Key Slot 0: DISABLED"));
    assert!(test_passphrase(&img, &second, None));
}

#[test]
fn keyslots_added_and_killed_by_cryptsetup_are_seen_by_qluks() {
    if !tool("cryptsetup_keyslots_qluks", "cryptsetup") {
        return;
    }
    let dir = TempDir::new("cryptsetup_keyslots_qluks");
    let first = write_pass(&dir, "first", b"first");
    let second = write_pass(&dir, "second", b"second");
    let img = dir.join("c.img");
    qluks_volume(&img, "aes-256-xts-plain64", HashAlg::Sha256, b"first");
    run(cryptsetup(&["luksAddKey", "--pbkdf-force-iterations", "1000", "--key-file", &first, "--key-slot", "3"])
        .arg(&img)
        .arg(&second));
    let mut f = rw(&img);
    let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    let (slot, key) = luks1::unlock_keyslot(&mut f, 0, None, &header, b"second", None).unwrap();
    assert_eq!(slot, 3);
    assert_eq!(key.as_bytes(), luks1::unlock(&mut f, 0, None, &header, b"first").unwrap().as_bytes());
    run(cryptsetup(&["luksKillSlot", "--key-file", &second]).arg(&img).arg("0"));
    let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    assert!(!header.keyslots[0].active);
    assert!(matches!(
        luks1::unlock(&mut f, 0, None, &header, b"first"),
        Err(LuksIoError::Luks(LuksError::WrongPassphrase))
    ));
}

#[test]
fn restoring_an_old_header_does_not_bring_a_removed_keyslot_back() {
    if !tool("removed_keyslot_gone", "cryptsetup") {
        return;
    }
    let dir = TempDir::new("removed_keyslot_gone");
    let second = write_pass(&dir, "second", b"second");
    let img = dir.join("r.img");
    qluks_volume(&img, "aes-256-xts-plain64", HashAlg::Sha256, b"first");
    let mut f = rw(&img);
    let mut header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    let key = luks1::unlock(&mut f, 0, None, &header, b"first").unwrap();
    luks1::add_keyslot(&mut f, 0, None, &mut header, &key, b"second", None, 1000, &mut OsRng).unwrap();
    let old_header = std::fs::read(&img).unwrap()[..4096].to_vec();
    luks1::remove_keyslot(&mut f, 0, None, &mut header, 1, false, &mut OsRng).unwrap();
    drop(f);
    // iotest 294: with the old header back, keyslot 1 is active again but its key material is gone.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[..4096].copy_from_slice(&old_header);
    std::fs::write(&img, &bytes).unwrap();
    assert!(run(cryptsetup(&["luksDump"]).arg(&img)).contains("Key Slot 1: ENABLED"));
    assert!(!test_passphrase(&img, &second, None), "the removed passphrase still opens the volume");
}
