//! Encrypted qcow2 (LUKS through the FDE extension, legacy AES) against qemu-img: images made
//! at test time, decrypted reads compared byte for byte with `qemu-img convert -O raw`.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use qluks::qcow2::{Error, HeaderError, Qcow2};

fn secret(pw: &str) -> String {
    format!("secret,id=sec0,data={pw}")
}

fn image_opts(img: &Path) -> String {
    format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", img.display())
}

fn create(img: &Path, pw: &str, opts: &str, size: &str) {
    let o = format!("encrypt.key-secret=sec0,{opts}");
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "--object", &secret(pw), "-o", &o])
            .arg(img)
            .arg(size),
    );
}

fn qemu_io(img: &Path, pw: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["--object", &secret(pw), "--image-opts", &image_opts(img)]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    common::run(&mut c);
}

fn qemu_raw(dir: &common::TempDir, img: &Path, pw: &str) -> Vec<u8> {
    let out = dir.join("qemu.raw");
    common::run(
        Command::new("qemu-img")
            .args(["convert", "--object", &secret(pw), "--image-opts", &image_opts(img), "-O", "raw"])
            .arg(&out),
    );
    std::fs::read(out).unwrap()
}

fn read_all(q: &mut Qcow2<File>) -> Vec<u8> {
    let mut buf = vec![0u8; q.size() as usize];
    q.read_at(0, &mut buf).unwrap();
    buf
}

const WRITES: &[&str] =
    &["write -P 0x5a 0 64k", "write -P 0x21 70000 5000", "write -z 512k 64k", "write -P 0x42 1000k 24k"];

fn check_luks_variant(t: &str, opts: &str) {
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("luks.qcow2");
    create(&img, "pw-123", &format!("encrypt.format=luks,encrypt.iter-time=10,{opts}"), "2M");
    qemu_io(&img, "pw-123", WRITES);
    let want = qemu_raw(&dir, &img, "pw-123");
    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), Some(b"pw-123")).unwrap();
    assert!(q.is_encrypted());
    assert_eq!(read_all(&mut q), want, "{opts}");
    // Unaligned reads go through the partial-sector path and must agree too.
    for (off, len) in [(1u64, 1usize), (511, 2), (69_999, 5_003), (1_000 * 1024 - 7, 24 * 1024 + 14)] {
        let mut buf = vec![0u8; len];
        q.read_at(off, &mut buf).unwrap();
        assert_eq!(buf, want[off as usize..off as usize + len], "{opts}: {len} at {off}");
    }
}

#[test]
fn luks_aes_256_xts_default_decrypts_with_host_sector_ivs() {
    check_luks_variant("luks_aes_256_xts_default_decrypts_with_host_sector_ivs", "encrypt.cipher-alg=aes-256");
}

#[test]
fn luks_aes_128_xts_decrypts() {
    check_luks_variant("luks_aes_128_xts_decrypts", "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=xts");
}

#[test]
fn luks_aes_256_cbc_essiv_decrypts() {
    check_luks_variant(
        "luks_aes_256_cbc_essiv_decrypts",
        "encrypt.cipher-alg=aes-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256",
    );
}

#[test]
fn luks_wrong_passphrase_is_a_typed_error() {
    let t = "luks_wrong_passphrase_is_a_typed_error";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("luks.qcow2");
    create(&img, "right", "encrypt.format=luks,encrypt.iter-time=10", "1M");
    let r = Qcow2::<File>::open(File::open(&img).unwrap(), Some(b"wrong"));
    assert!(matches!(r, Err(Error::Luks(qluks::luks::LuksError::WrongPassphrase))), "{r:?}");
    assert!(r.as_ref().is_err_and(|e| e.is_wrong_passphrase()));
    let r = Qcow2::<File>::open(File::open(&img).unwrap(), None);
    assert!(matches!(r, Err(Error::PassphraseRequired)), "{r:?}");
}

#[test]
fn luks_without_fde_extension_is_refused_clearly() {
    let t = "luks_without_fde_extension_is_refused_clearly";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("luks.qcow2");
    create(&img, "pw", "encrypt.format=luks,encrypt.iter-time=10", "1M");
    // Turn the FDE extension into an unknown one (type 0x0537be77 -> 0x0537be00).
    let mut bytes = std::fs::read(&img).unwrap();
    let at = bytes[..4096].windows(4).position(|w| w == [0x05, 0x37, 0xbe, 0x77]).expect("FDE extension");
    bytes[at + 3] = 0;
    std::fs::write(&img, &bytes).unwrap();
    let r = Qcow2::<File>::open(File::open(&img).unwrap(), Some(b"pw"));
    assert!(matches!(r, Err(Error::Header(HeaderError::LuksWithoutFde))), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("full disk encryption header extension is missing"));
}

#[test]
fn legacy_aes_decrypts_with_guest_sector_ivs() {
    let t = "legacy_aes_decrypts_with_guest_sector_ivs";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("aes.qcow2");
    // A passphrase longer than 16 bytes: only the first 16 form the key.
    let pw = "0123456789abcdefIGNORED";
    create(&img, pw, "encrypt.format=aes", "2M");
    qemu_io(&img, pw, WRITES);
    let want = qemu_raw(&dir, &img, pw);
    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), Some(pw.as_bytes())).unwrap();
    assert_eq!(read_all(&mut q), want);
    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), Some(b"0123456789abcdef")).unwrap();
    assert_eq!(read_all(&mut q), want, "key = first 16 bytes");
}

/// Data past guest sector 2^32 (2 TiB) of a 5 TiB image: the legacy AES IV is the 64-bit guest
/// sector (plain64, not truncated), the LUKS IV the host sector.
#[test]
fn data_beyond_sector_2_pow_32_decrypts_with_legacy_aes_and_luks() {
    let t = "data_beyond_sector_2_pow_32_decrypts_with_legacy_aes_and_luks";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let far = (1u64 << 32) * 512 + 3 * 512;
    for (name, opts) in [
        ("aes", "encrypt.format=aes,cluster_size=2M"),
        ("luks", "encrypt.format=luks,encrypt.iter-time=10,cluster_size=2M"),
    ] {
        let img = dir.join(&format!("{name}.qcow2"));
        create(&img, "big secret", opts, "5T");
        qemu_io(&img, "big secret", &[&format!("write -P 0x6b {far} 1536"), "write -P 0x6c 0 512"]);
        let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), Some(b"big secret")).unwrap();
        let mut buf = vec![0u8; 2560];
        q.read_at(far - 512, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0), "{name}");
        assert!(buf[512..2048].iter().all(|&b| b == 0x6b), "{name}: sectors past 2^32");
        assert!(buf[2048..].iter().all(|&b| b == 0), "{name}");
        q.read_at(0, &mut buf[..512]).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0x6c), "{name}");
    }
}
