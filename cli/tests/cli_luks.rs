//! The LUKS command line against qemu-img / qemu-io / cryptsetup: create, info, io, convert and
//! keyslot management through the built `qluks` binary.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tool, tools, TempDir};
use std::path::Path;
use std::process::{Command, Output};

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn qluks_ok(args: &[&str]) -> String {
    run(qluks().args(args))
}

fn qluks_out(args: &[&str]) -> Output {
    common::output(qluks().args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qemu_raw(dir: &TempDir, img: &Path, pass_file: &Path) -> Vec<u8> {
    let raw = dir.join("qemu.raw");
    run(Command::new("qemu-img").args([
        "convert",
        "--object",
        &format!("secret,id=sec0,file={}", s(pass_file)),
        "--image-opts",
        &format!("driver=luks,key-secret=sec0,file.filename={}", s(img)),
        "-O",
        "raw",
        s(&raw),
    ]));
    std::fs::read(raw).unwrap()
}

#[test]
fn created_volume_is_read_by_qemu_and_described_by_info() {
    if !tool("cli_create", "qemu-img") {
        return;
    }
    let dir = TempDir::new("cli_create");
    let pass = dir.join("pass");
    // The file's content is the passphrase as is, newline included (like qemu's secret,file=).
    std::fs::write(&pass, b"cli pass\n").unwrap();
    let img = dir.join("v.luks");
    qluks_ok(&["create", "-f", "luks", "--passphrase-file", s(&pass), "-o", "iterations=1000", s(&img), "1M"]);
    let io = qluks_ok(&[
        "io",
        "--passphrase-file",
        s(&pass),
        s(&img),
        "-c",
        "write -P 0xab 0 64k",
        "-c",
        "write -z 4k 1k",
        "-c",
        "flush",
    ]);
    assert!(io.contains("wrote 65536/65536 bytes at offset 0"), "{io}");
    let raw = qemu_raw(&dir, &img, &pass);
    assert_eq!(raw.len(), 1 << 20);
    assert!(raw[..4096].iter().all(|&b| b == 0xab));
    assert!(raw[4096..5120].iter().all(|&b| b == 0));
    assert!(raw[5120..65536].iter().all(|&b| b == 0xab));

    let json: serde_json::Value = serde_json::from_str(&qluks_ok(&["info", "--output", "json", s(&img)])).unwrap();
    assert_eq!(json["format"], "luks", "{json:#}");
    assert_eq!(json["virtual-size"], 1048576, "{json:#}");
    assert_eq!(json["encrypted"], true, "{json:#}");
    let luks = &json["format-specific"]["data"];
    assert_eq!(json["format-specific"]["type"], "luks", "{json:#}");
    assert_eq!(luks["qluks-luks-version"], 1, "{json:#}");
    assert_eq!(
        (&luks["cipher-alg"], &luks["cipher-mode"], &luks["ivgen-alg"]),
        (&"aes-256".into(), &"xts".into(), &"plain64".into())
    );
    assert_eq!(luks["hash-alg"], "sha256", "{json:#}");
    assert_eq!(luks["payload-offset"], 2068480, "{json:#}");
    assert_eq!(
        luks["slots"][0],
        serde_json::json!({"active": true, "iters": 1000, "key-offset": 4096, "stripes": 4000})
    );
    assert_eq!(luks["slots"][1], serde_json::json!({"active": false, "key-offset": 262144}));
    let human = qluks_ok(&["info", s(&img)]);
    assert!(human.contains("cipher: aes-256-xts-plain64") && human.contains("0: active"), "{human}");
}

#[test]
fn qemu_data_is_read_and_verified_by_io_and_convert() {
    if !tools("cli_qemu_data", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new("cli_qemu_data");
    let pass = dir.join("pass");
    std::fs::write(&pass, b"qemu secret").unwrap();
    let img = dir.join("q.luks");
    let secret = format!("secret,id=sec0,file={}", s(&pass));
    run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "luks",
        "--object",
        &secret,
        "-o",
        "key-secret=sec0,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256",
        s(&img),
        "2M",
    ]));
    run(Command::new("qemu-io").args([
        "--object",
        &secret,
        "--image-opts",
        &format!("driver=luks,key-secret=sec0,file.filename={}", s(&img)),
        "-c",
        "write -P 0x3c 1M 300k",
    ]));
    run(qluks().env("QLUKS_TEST_PASS", "qemu secret").args([
        "io",
        "--passphrase-env",
        "QLUKS_TEST_PASS",
        s(&img),
        "-c",
        "read -P 0x3c 1M 300k",
    ]));
    let bad = qluks_out(&["io", "--passphrase-file", s(&pass), s(&img), "-c", "read -P 0x3c 1023k 2k"]);
    assert!(!bad.status.success(), "a pattern mismatch must fail");
    assert!(String::from_utf8_lossy(&bad.stdout).contains("Pattern verification failed"));
    let raw = dir.join("ours.raw");
    qluks_ok(&["convert", "-O", "raw", "--passphrase-file", s(&pass), s(&img), s(&raw)]);
    assert!(std::fs::read(&raw).unwrap() == qemu_raw(&dir, &img, &pass));
}

#[test]
fn wrong_passphrase_fails_and_leaves_the_file_unchanged() {
    let dir = TempDir::new("cli_wrong_pass");
    let pass = dir.join("pass");
    let wrong = dir.join("wrong");
    std::fs::write(&pass, b"right").unwrap();
    std::fs::write(&wrong, b"right\n").unwrap();
    let img = dir.join("w.luks");
    qluks_ok(&["create", "-f", "luks", "--passphrase-file", s(&pass), "-o", "iterations=1000", s(&img), "64k"]);
    let before = std::fs::read(&img).unwrap();
    let out = qluks_out(&["io", "--passphrase-file", s(&wrong), s(&img), "-c", "write 0 512"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no keyslot matches the passphrase"));
    assert!(std::fs::read(&img).unwrap() == before);
}

#[test]
fn keyslots_managed_by_the_cli_work_in_cryptsetup() {
    if !tool("cli_keyslots", "cryptsetup") {
        return;
    }
    let dir = TempDir::new("cli_keyslots");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    std::fs::write(&a, b"alpha").unwrap();
    std::fs::write(&b, b"bravo").unwrap();
    std::fs::write(&c, b"charlie").unwrap();
    let img = dir.join("k.luks");
    let test_pass = |key: &Path| {
        common::output(Command::new("cryptsetup").args([
            "open",
            "--test-passphrase",
            "--batch-mode",
            "--key-file",
            s(key),
            s(&img),
        ]))
        .status
        .success()
    };
    qluks_ok(&["create", "-f", "luks", "--passphrase-file", s(&a), "-o", "iterations=1000", s(&img), "64k"]);
    let added = qluks_ok(&[
        "luks",
        "add-key",
        "--passphrase-file",
        s(&a),
        "--new-passphrase-file",
        s(&b),
        "--slot",
        "2",
        "--iterations",
        "1000",
        s(&img),
    ]);
    assert!(added.contains("keyslot 2"), "{added}");
    assert!(test_pass(&b));
    qluks_ok(&[
        "luks",
        "change-key",
        "--passphrase-file",
        s(&a),
        "--new-passphrase-file",
        s(&c),
        "--iterations",
        "1000",
        s(&img),
    ]);
    assert!(test_pass(&c) && !test_pass(&a));
    // The last-keyslot guard, then removal by passphrase.
    qluks_ok(&["luks", "remove-key", "--slot", "2", s(&img)]);
    assert!(!test_pass(&b));
    let last = qluks_out(&["luks", "remove-key", "--passphrase-file", s(&c), s(&img)]);
    assert!(!last.status.success(), "removing the last keyslot needs --force");
    let err = String::from_utf8_lossy(&last.stderr);
    assert!(err.contains("is the only active one; removing it would lose the data"), "{err}");
    assert!(test_pass(&c), "the refused removal left the keyslot in place");
    qluks_ok(&["luks", "remove-key", "--passphrase-file", s(&c), "--force", s(&img)]);
    assert!(!test_pass(&c));
}
