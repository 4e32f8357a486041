//! LUKS1 interoperability with QEMU: volumes made by `qemu-img create -f luks` with default and
//! non-default ciphers, data written by `qemu-io` and read back by qluks byte for byte, data
//! written by qluks read back by qemu (`qemu-img convert` to raw).

mod common;

use common::{run, tools, TempDir};
use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::{LuksVolume, OpenOptions};
use std::fs::{File, OpenOptions as FileOptions};
use std::path::Path;
use std::process::Command;

const PASS: &str = "qemu-luks-pass";
const SIZE: usize = 1 << 20;

fn secret() -> String {
    format!("secret,id=sec0,data={PASS}")
}

fn qemu_create(path: &Path, opts: &str) {
    let o = format!("key-secret=sec0,iter-time=10{}{opts}", if opts.is_empty() { "" } else { "," });
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "luks", "--object", &secret(), "-o", &o])
        .arg(path)
        .arg("1M"));
}

fn image_opts(path: &Path) -> String {
    format!("driver=luks,key-secret=sec0,file.filename={}", path.display())
}

fn qemu_io(path: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["--object", &secret(), "--image-opts", &image_opts(path)]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = run(&mut c);
    assert!(!out.contains("failed"), "qemu-io: {out}");
}

/// The plaintext of the whole volume as QEMU sees it.
fn qemu_plaintext(dir: &TempDir, path: &Path) -> Vec<u8> {
    let raw = dir.join("qemu-view.raw");
    run(Command::new("qemu-img")
        .args(["convert", "--object", &secret(), "--image-opts", &image_opts(path), "-O", "raw"])
        .arg(&raw));
    std::fs::read(raw).unwrap()
}

fn open_rw(path: &Path) -> LuksVolume<File> {
    let f = FileOptions::new().read(true).write(true).open(path).unwrap();
    LuksVolume::open(f, PASS.as_bytes(), OpenOptions::default()).unwrap()
}

fn qluks_plaintext(path: &Path) -> Vec<u8> {
    let mut vol = open_rw(path);
    let mut all = vec![0u8; vol.size() as usize];
    vol.read_at(0, &mut all).unwrap();
    all
}

fn check_both_ways(test: &str, opts: &str) {
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let img = dir.join("v.luks");
    qemu_create(&img, opts);
    qemu_io(&img, &["write -P 0xab 0 64k", "write -P 0x5c 300000 12345", "write -P 0x01 1048064 512"]);
    // qemu-written data, and the garbage of never-written sectors, decrypt identically.
    let ours = qluks_plaintext(&img);
    assert_eq!(ours.len(), SIZE);
    assert!(ours[..65536].iter().all(|&b| b == 0xab));
    assert!(ours[300000..312345].iter().all(|&b| b == 0x5c));
    assert!(ours == qemu_plaintext(&dir, &img), "{test}: qluks and qemu disagree on the plaintext");
    // qluks-written data (unaligned, across sectors) is what qemu reads.
    let data = common::pattern(9, 70_001);
    open_rw(&img).write_at(4097, &data).unwrap();
    let theirs = qemu_plaintext(&dir, &img);
    assert_eq!(theirs[4097..4097 + data.len()], data[..]);
    assert!(theirs == qluks_plaintext(&img));
}

#[test]
fn qemu_default_volume_aes_256_xts_plain64_sha256() {
    check_both_ways("qemu_default", "");
}

#[test]
fn qemu_aes_128_xts_volume() {
    check_both_ways("qemu_aes128_xts", "cipher-alg=aes-128,cipher-mode=xts");
}

#[test]
fn qemu_aes_256_cbc_essiv_sha256_with_hash_sha1_volume() {
    check_both_ways(
        "qemu_cbc_essiv",
        "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1",
    );
}

#[test]
fn qemu_aes_256_cbc_plain64_volume() {
    check_both_ways("qemu_cbc_plain64", "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=plain64");
}

#[test]
fn qemu_sha512_volume() {
    check_both_ways("qemu_sha512", "hash-alg=sha512");
}

#[test]
fn qluks_created_volume_is_opened_by_qemu() {
    if !tools("qluks_created_qemu", &["qemu-img"]) {
        return;
    }
    for (cipher, hash) in [("aes-256-xts-plain64", HashAlg::Sha256), ("aes-128-cbc-essiv:sha256", HashAlg::Sha1)] {
        let dir = TempDir::new("qluks_created_qemu");
        let img = dir.join("q.luks");
        let spec = CipherSpec::parse_sized(cipher).unwrap();
        let mut f = FileOptions::new().read(true).write(true).create(true).truncate(true).open(&img).unwrap();
        let mut params = CreateParams { cipher: spec, hash, iterations: Iterations::fixed(1000) };
        let (header, _) = luks1::format(&mut f, 0, &mut params, PASS.as_bytes(), &mut OsRng).unwrap();
        f.set_len(header.payload_offset_bytes() + SIZE as u64).unwrap();
        drop(f);
        let data = common::pattern(3, SIZE);
        open_rw(&img).write_at(0, &data).unwrap();
        assert!(qemu_plaintext(&dir, &img) == data, "{cipher}");
    }
}

#[test]
fn keyslots_added_by_qluks_open_in_qemu_and_qemu_amend_keyslots_open_in_qluks() {
    if !tools("keyslots_qemu", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new("keyslots_qemu");
    let img = dir.join("k.luks");
    qemu_create(&img, "");
    // qluks adds "second"; qemu opens the volume with it.
    let mut f = FileOptions::new().read(true).write(true).open(&img).unwrap();
    let mut header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    let key = luks1::unlock(&mut f, 0, None, &header, PASS.as_bytes()).unwrap();
    let k = luks1::add_keyslot(&mut f, 0, None, &mut header, &key, b"second", None, 1000, &mut OsRng).unwrap();
    drop(f);
    let second = format!("driver=luks,key-secret=s2,file.filename={}", img.display());
    run(Command::new("qemu-io").args([
        "--object",
        "secret,id=s2,data=second",
        "--image-opts",
        &second,
        "-c",
        "write -P 0x42 0 4k",
    ]));
    // qemu-img amend adds "third" in the next slot; qluks opens with it and sees qemu's write.
    run(Command::new("qemu-img").args([
        "amend",
        "--object",
        "secret,id=s2,data=second",
        "--object",
        "secret,id=s3,data=third",
        "--image-opts",
        &second,
        "-o",
        "state=active,new-secret=s3,iter-time=10",
    ]));
    let mut f = FileOptions::new().read(true).write(true).open(&img).unwrap();
    let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    let (slot, key3) = luks1::unlock_keyslot(&mut f, 0, None, &header, b"third", None).unwrap();
    assert!(slot != 0 && slot != k, "amend used keyslot {slot}");
    assert_eq!(key3.as_bytes(), key.as_bytes());
    let mut vol = LuksVolume::open(f, b"third", OpenOptions::default()).unwrap();
    let mut back = vec![0u8; 4096];
    vol.read_at(0, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0x42));
}

/// iotest 149: sector numbers past 2^32 on a sparse 4 TiB volume, with plain64 IVs and with
/// `plain` IVs (truncated to 32 bits, so they wrap at 2 TiB).
#[test]
fn sector_numbers_past_2_pow_32_match_qemu() {
    if !tools("luks_4t", &["qemu-img", "qemu-io"]) {
        return;
    }
    for ivgen in ["plain64", "plain"] {
        let dir = TempDir::new("luks_4t");
        let img = dir.join("big.luks");
        let o = format!("key-secret=sec0,iter-time=10,cipher-alg=aes-128,cipher-mode=xts,ivgen-alg={ivgen}");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "luks", "--object", &secret(), "-o", &o])
            .arg(&img)
            .arg("4T"));
        // Straddling the 2 TiB boundary, and well past it.
        qemu_io(&img, &["write -P 0x77 2199023253504 4096", "write -P 0x66 3T 64k"]);
        let mut vol = open_rw(&img);
        let mut buf = vec![0u8; 65536];
        vol.read_at(2199023253504, &mut buf[..4096]).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0x77), "{ivgen}: across 2 TiB");
        vol.read_at(3 << 40, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x66), "{ivgen}: at 3 TiB");
        vol.write_at((3 << 40) + (1 << 20) + 100, &[0x55; 5000]).unwrap();
        drop(vol);
        qemu_io(&img, &["read -P 0x55 3298535932004 5000"]);
    }
}
