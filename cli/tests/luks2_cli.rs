//! `qluks info`, `convert -O raw` and `io` on LUKS2 volumes made by cryptsetup.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const QLUKS: &str = env!("CARGO_BIN_EXE_qluks");

fn cryptsetup(args: &[&str], key_file: &Path, image: &Path) {
    common::run(Command::new("cryptsetup").args(args).arg("--batch-mode").arg("--key-file").arg(key_file).arg(image));
}

fn qluks(args: &[&str], paths: &[&Path]) -> std::process::Output {
    common::output(Command::new(QLUKS).args(args).args(paths))
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "qluks failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 20 MiB LUKS2 volume: keyslot 0 argon2id with small memory and two lanes, keyslot 1
/// pbkdf2.
fn two_keyslot_volume(dir: &common::TempDir) -> (PathBuf, PathBuf) {
    let image = dir.join("v.luks2");
    let key_file = dir.join("key");
    std::fs::write(&key_file, b"first").unwrap();
    std::fs::File::create(&image).unwrap().set_len(20 << 20).unwrap();
    cryptsetup(
        &["luksFormat", "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "64"]
            .into_iter()
            .chain(["--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2", "--sector-size", "4096"])
            .collect::<Vec<_>>(),
        &key_file,
        &image,
    );
    let second = dir.join("second");
    std::fs::write(&second, b"second").unwrap();
    common::run(
        Command::new("cryptsetup")
            .args(["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg("--key-file")
            .arg(&key_file)
            .arg(&image)
            .arg(&second),
    );
    (image, key_file)
}

#[test]
fn info_shows_luks2_version_segments_and_keyslots() {
    let test = "info_shows_luks2_version_segments_and_keyslots";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, _) = two_keyslot_volume(&dir);
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&qluks(&["info", "--output", "json"], &[&image]))).unwrap();
    assert_eq!((&json["format"], &json["virtual-size"]), (&"luks".into(), &4194304.into()), "{json:#}");
    let qemu = &json["format-specific"]["data"];
    assert_eq!(qemu["qluks-luks-version"], 2, "{json:#}");
    assert_eq!(qemu["payload-offset"], 16777216, "{json:#}");
    assert_eq!(
        (&qemu["cipher-alg"], &qemu["cipher-mode"], &qemu["ivgen-alg"]),
        (&"aes-256".into(), &"xts".into(), &"plain64".into())
    );
    let x = &json["qluks-luks2"];
    assert_eq!(
        (&x["version"], &x["cipher"], &x["sector-size"]),
        (&2.into(), &"aes-xts-plain64".into(), &4096.into()),
        "{x:#}"
    );
    assert_eq!(
        x["segments"][0],
        serde_json::json!({"id": 0, "type": "crypt", "offset": 16777216, "size": "dynamic", "encryption": "aes-xts-plain64", "sector-size": 4096, "iv-tweak": 0})
    );
    let slot = |i: usize| {
        let k = &x["keyslots"][i];
        (k["index"].clone(), k["type"].clone(), k["key-size"].clone(), k["priority"].clone(), k["kdf"].clone())
    };
    assert_eq!(
        slot(0),
        (
            0.into(),
            "luks2".into(),
            64.into(),
            "normal".into(),
            serde_json::json!({"type": "argon2id", "time": 4, "memory": 64, "cpus": 2})
        )
    );
    assert_eq!(
        slot(1),
        (
            1.into(),
            "luks2".into(),
            64.into(),
            "normal".into(),
            serde_json::json!({"type": "pbkdf2", "hash": "sha256", "iterations": 1000})
        )
    );
    assert_eq!(
        (&x["digests"][0]["keyslots"], &x["digests"][0]["segments"]),
        (&serde_json::json!([0, 1]), &serde_json::json!([0]))
    );
    let human = stdout(&qluks(&["info"], &[&image]));
    assert!(human.contains("version: 2\n"), "{human}");
    assert!(human.contains("kdf argon2id (time 4, memory 64 KiB, cpus 2)"), "{human}");
}

#[test]
fn convert_raw_of_luks2_gives_the_plaintext() {
    let test = "convert_raw_of_luks2_gives_the_plaintext";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let image = dir.join("v.luks2");
    let key_file = dir.join("key");
    std::fs::write(&key_file, b"pw").unwrap();
    let plain = common::pattern(9, 1 << 20);
    let mut content = plain.clone();
    content.resize(3 << 20, 0);
    std::fs::write(&image, &content).unwrap();
    cryptsetup(
        &["reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size", "2M", "--pbkdf", "pbkdf2"]
            .into_iter()
            .chain(["--pbkdf-force-iterations", "1000", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m"])
            .collect::<Vec<_>>(),
        &key_file,
        &image,
    );
    let raw = dir.join("out.raw");
    let out = qluks(&["convert", "-O", "raw", "--passphrase-file"], &[&key_file, &image, &raw]);
    stdout(&out);
    let converted = std::fs::read(&raw).unwrap();
    assert!(converted.len() >= plain.len());
    assert!(converted[..plain.len()] == plain[..], "converted plaintext differs");
}

#[test]
fn io_writes_and_reads_back_through_either_keyslot() {
    let test = "io_writes_and_reads_back_through_either_keyslot";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, key_file) = two_keyslot_volume(&dir);
    let second = dir.join("second");
    stdout(&qluks(&["io", "-c", "write -P 0x5a 1000 9000", "-c", "flush", "--passphrase-file"], &[&key_file, &image]));
    stdout(&qluks(&["io", "-c", "read -P 0x5a 1000 9000", "--passphrase-file"], &[&second, &image]));
    let mismatch = qluks(&["io", "-c", "read -P 0x5b 1000 9000", "--passphrase-file"], &[&second, &image]);
    assert!(!mismatch.status.success(), "a pattern mismatch fails");
    let out = String::from_utf8_lossy(&mismatch.stdout);
    assert!(
        out.contains("Pattern verification failed at offset 1000, 9000 bytes (found 0x5a, expected 0x5b)"),
        "{out}"
    );
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, b"wrong").unwrap();
    let refused = qluks(&["io", "-c", "read 0 512", "--passphrase-file"], &[&wrong, &image]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no keyslot matches the passphrase"));
}

#[test]
fn create_luks2_makes_a_volume_cryptsetup_opens() {
    let test = "create_luks2_makes_a_volume_cryptsetup_opens";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let image = dir.join("new.luks2");
    let key_file = dir.join("key");
    std::fs::write(&key_file, b"new volume").unwrap();
    let opts = "pbkdf=argon2id,memory=256,time=2,cpus=2,iterations=1000,sector-size=512,cipher=aes-128-xts-plain64";
    stdout(&qluks(&["create", "-f", "luks2", "-o", opts, "--passphrase-file"], &[&key_file, &image, Path::new("1M")]));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), (16 << 20) + (1 << 20));
    common::run(
        Command::new("cryptsetup").args(["open", "--test-passphrase", "--key-file"]).arg(&key_file).arg(&image),
    );
    let dump = common::run(Command::new("cryptsetup").arg("luksDump").arg(&image));
    for expected in
        ["PBKDF:      argon2id", "Memory:     256", "Threads:    2", "sector: 512 [bytes]", "Key:        256 bits"]
    {
        assert!(dump.contains(expected), "{expected} not in {dump}");
    }
    stdout(&qluks(
        &["io", "-c", "write -P 0x33 511 2000", "-c", "read -P 0x33 511 2000", "--passphrase-file"],
        &[&key_file, &image],
    ));
}
