//! Argon2 lanes on threads in the CLI unlock (cryptsetup-made LUKS2 volumes, argon2id and
//! argon2i, 2 and 4 lanes), and `qluks bench unlock` on LUKS2, LUKS1 and LUKS-encrypted qcow2.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const QLUKS: &str = env!("CARGO_BIN_EXE_qluks");

fn qluks(args: &[&str], paths: &[&Path]) -> std::process::Output {
    common::output(Command::new(QLUKS).args(args).args(paths))
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "qluks failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 20 MiB LUKS2 volume made by cryptsetup: keyslot 0 with `kdf` (`lanes` lanes, `memory_kib`,
/// 4 passes) and passphrase "first", keyslot 1 PBKDF2 (1000 iterations) with "second".
fn luks2_volume(dir: &common::TempDir, kdf: &str, lanes: u32, memory_kib: u32) -> (PathBuf, PathBuf, PathBuf) {
    let image = dir.join(&format!("{kdf}-{lanes}.luks2"));
    let first = dir.join("first");
    let second = dir.join("second");
    std::fs::write(&first, b"first").unwrap();
    std::fs::write(&second, b"second").unwrap();
    std::fs::File::create(&image).unwrap().set_len(20 << 20).unwrap();
    let (lanes, memory) = (lanes.to_string(), memory_kib.to_string());
    common::run(
        Command::new("cryptsetup")
            .args(["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", kdf, "--pbkdf-memory", &memory])
            .args(["--pbkdf-force-iterations", "4", "--pbkdf-parallel", &lanes])
            .arg("--key-file")
            .arg(&first)
            .arg(&image),
    );
    common::run(
        Command::new("cryptsetup")
            .args(["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg("--key-file")
            .arg(&first)
            .arg(&image)
            .arg(&second),
    );
    (image, first, second)
}

/// The JSON lines `qluks bench unlock --output json` printed, by keyslot.
fn bench_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The Argon2 keyslot 0 of `image` through the CLI's threaded unlock: `qluks io` writes and
/// reads back data with passphrase `first` (the digest check proves the derived key right),
/// refuses a wrong passphrase, and `bench unlock` opens keyslot 0 alone. Returns its lanes.
fn unlock_on_threads(image: &Path, first: &Path, wrong: &Path, kdf: &str) -> u64 {
    let pass = format!("--passphrase-file={}", first.display());
    stdout(&qluks(&["io", &pass, "-c", "write -P 0x5c 8192 4096"], &[image]));
    stdout(&qluks(&["io", &pass, "-c", "read -P 0x5c 8192 4096"], &[image]));
    let bad = qluks(&["io", &format!("--passphrase-file={}", wrong.display()), "-c", "read 0 512"], &[image]);
    assert!(!bad.status.success(), "{} opened with a wrong passphrase", image.display());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("passphrase"), "{}: {err}", image.display());
    let lines = bench_lines(&qluks(&["bench", "unlock", &pass, "--keyslot", "0", "--output", "json"], &[image]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["kdf"], kdf);
    assert_eq!(lines[0]["time"], 4);
    assert_eq!(lines[0]["opened"], true, "{}: {lines:?}", image.display());
    lines[0]["lanes"].as_u64().unwrap()
}

#[test]
fn cryptsetup_argon2_volumes_with_2_and_4_lanes_unlock_on_threads() {
    let test = "cryptsetup_argon2_volumes_with_2_and_4_lanes_unlock_on_threads";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, b"firsT").unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    for kdf in ["argon2id", "argon2i"] {
        for lanes in [2u64, 4] {
            let (image, first, _) = luks2_volume(&dir, kdf, lanes as u32, 1024);
            // cryptsetup makes no more lanes than the machine has CPUs.
            assert_eq!(unlock_on_threads(&image, &first, &wrong, kdf), lanes.min(cpus), "{kdf}");
        }
    }
    // Four lanes whatever the CPUs: made by qluks (one thread), checked by cryptsetup, then
    // unlocked on threads.
    let image = dir.join("four-lanes.luks2");
    let first = dir.join("first");
    stdout(&qluks(
        &[
            "create",
            "-f",
            "luks2",
            "-o",
            "pbkdf=argon2id,time=4,memory=2048,cpus=4",
            &format!("--passphrase-file={}", first.display()),
        ],
        &[&image, Path::new("20M")],
    ));
    common::run(Command::new("cryptsetup").args(["open", "--test-passphrase", "--key-file"]).arg(&first).arg(&image));
    assert_eq!(unlock_on_threads(&image, &first, &wrong, "argon2id"), 4);
}

#[test]
fn bench_unlock_times_every_luks2_keyslot_and_says_which_the_passphrase_opens() {
    let test = "bench_unlock_times_every_luks2_keyslot_and_says_which_the_passphrase_opens";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, first, second) = luks2_volume(&dir, "argon2id", 2, 256);
    for (key, opens) in [(&first, 0), (&second, 1)] {
        let pass = format!("--passphrase-file={}", key.display());
        let lines = bench_lines(&qluks(&["bench", "unlock", &pass, "--repeat", "2", "--output", "json"], &[&image]));
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (k, line) in lines.iter().enumerate() {
            assert_eq!(line["keyslot"], k);
            assert_eq!(line["opened"], k == opens, "keyslot {k} with {}: {line}", key.display());
            let wall = line["wall_s"].as_f64().unwrap();
            assert!(wall > 0.0 && wall < 60.0, "{line}");
            assert!(line["convention"].as_str().unwrap().contains("--iter-time 2000 ms"), "{line}");
        }
        assert_eq!(lines[0]["kdf"], "argon2id");
        assert_eq!(lines[0]["memory_kib"], 256);
        assert!(lines[0]["convention"].as_str().unwrap().contains("--pbkdf-memory 256 --pbkdf-parallel 2"));
        assert_eq!(lines[1]["kdf"], "pbkdf2");
        assert_eq!(lines[1]["iterations"], 1000);
        assert!(lines[1]["iterations_per_s"].as_f64().unwrap() > 0.0);
    }
    // The human table names both keyslots and the verdicts.
    let human = stdout(&qluks(&["bench", "unlock", &format!("--passphrase-file={}", second.display())], &[&image]));
    assert!(human.contains("keyslot 0: argon2id, 4 passes, 256 KiB, 2 lanes"), "{human}");
    assert!(human.contains("not opened by the passphrase"), "{human}");
    assert!(human.contains("keyslot 1: pbkdf2-sha256, 1000 iterations"), "{human}");
    assert!(human.contains("cryptsetup convention"), "{human}");
    // A keyslot over the KDF limits is reported, not run.
    let limited = qluks(
        &[
            "bench",
            "unlock",
            &format!("--passphrase-file={}", first.display()),
            "--max-kdf-memory",
            "128k",
            "--output",
            "json",
        ],
        &[&image],
    );
    let lines = bench_lines(&limited);
    assert!(lines[0]["refused"].as_str().unwrap().contains("--max-kdf-memory"), "{lines:?}");
    assert_eq!(lines[1]["opened"], false);
}

#[test]
fn bench_unlock_times_qemu_img_luks1_and_luks_qcow2_keyslots() {
    let test = "bench_unlock_times_qemu_img_luks1_and_luks_qcow2_keyslots";
    if !common::tool(test, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(test);
    let luks = dir.join("v.luks");
    let qcow2 = dir.join("v.qcow2");
    let object = "secret,id=sec0,data=hunter2";
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "--object", object, "-f", "luks", "-o", "key-secret=sec0,iter-time=10"])
            .arg(&luks)
            .arg("1M"),
    );
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "--object", object, "-f", "qcow2"])
            .args(["-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"])
            .arg(&qcow2)
            .arg("1M"),
    );
    let right = dir.join("right");
    let wrong = dir.join("wrong");
    std::fs::write(&right, b"hunter2").unwrap();
    std::fs::write(&wrong, b"hunter3").unwrap();
    for image in [&luks, &qcow2] {
        for (key, opened) in [(&right, true), (&wrong, false)] {
            let pass = format!("--passphrase-file={}", key.display());
            let lines = bench_lines(&qluks(&["bench", "unlock", &pass, "--output", "json"], &[image]));
            assert_eq!(lines.len(), 1, "qemu-img fills keyslot 0 only: {lines:?}");
            assert_eq!(lines[0]["keyslot"], 0);
            assert_eq!(lines[0]["kdf"], "pbkdf2");
            assert_eq!(lines[0]["hash"], "sha256");
            assert_eq!(lines[0]["opened"], opened, "{} with {}", image.display(), key.display());
            assert!(lines[0]["iterations"].as_u64().unwrap() >= 1000, "{lines:?}");
        }
    }
    // qemu-img's spelling of the passphrase: --object secret + --image-opts.
    let opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", qcow2.display());
    let out = common::output(Command::new(QLUKS).args(["bench", "unlock", "--object", object, "--image-opts", &opts]));
    let human = stdout(&out);
    assert!(human.contains("qcow2 with a LUKS1 header at"), "{human}");
    assert!(human.contains("keyslot 0: pbkdf2-sha256") && human.contains("opened by the passphrase"), "{human}");
    assert!(!human.contains("not opened"), "{human}");
    // Images without keyslots are refused with the reason.
    let raw = dir.join("raw");
    std::fs::write(&raw, [0u8; 4096]).unwrap();
    let out = qluks(&["bench", "unlock", &format!("--passphrase-file={}", right.display())], &[&raw]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no keyslots"), "{out:?}");
}
