//! KDF limits on the command line: every command that unlocks refuses a keyslot whose PBKDF2
//! iterations would take more than about a minute here, or whose Argon2 memory exceeds the
//! limit, at once and with a message saying how to allow it; the options raise the limits; the
//! Argon2 memory of a refused keyslot is never allocated.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/luks2_json.rs"]
mod luks2_json;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{run, tool, TempDir};

/// A refusal comes at once (one short calibration); the claims would take far longer.
const BOUND: Duration = Duration::from_secs(30);
/// Patched into headers: 2^31 iterations, the most LUKS accepts (minutes even in release).
const HUGE: u32 = 1 << 31;

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs qluks with `args`, expecting a quick failure; returns stderr.
fn refused(args: &[&str]) -> String {
    let start = Instant::now();
    let out: Output = common::output_within(qluks().args(args), BOUND * 2);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    assert!(start.elapsed() < BOUND, "{args:?} took {:?}", start.elapsed());
    stderr
}

fn patch_be32(path: &Path, at: usize, value: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A LUKS1 volume made by qluks with 1000 iterations, keyslot 0 then patched to claim `claim`.
fn luks1_volume(dir: &TempDir, claim: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let pass = dir.join("pass");
    std::fs::write(&pass, b"pw").unwrap();
    let img = dir.join("v.luks");
    run(qluks().args(["create", "-f", "luks", "--passphrase-file", s(&pass), "-o", "iterations=1000", s(&img), "1M"]));
    patch_be32(&img, 208 + 4, claim);
    (img, pass)
}

#[test]
fn every_unlocking_command_refuses_a_costly_luks1_keyslot_with_the_override() {
    let dir = TempDir::new("cli_kdf_luks1");
    let (img, pass) = luks1_volume(&dir, HUGE);
    let other = dir.join("other.raw");
    std::fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let out = dir.join("out.raw");
    let (img, pass) = (s(&img), s(&pass));
    let hint = format!("to allow it, pass --max-kdf-iterations {HUGE}");
    let claim = format!("keyslot 0 asks for PBKDF2 with {HUGE} iterations");
    for args in [
        vec!["io", "--passphrase-file", pass, img, "-c", "read 0 512"],
        vec!["convert", "--passphrase-file", pass, "-O", "raw", img, s(&out)],
        vec!["compare", "--passphrase-file", pass, img, s(&other)],
        vec!["luks", "add-key", "--passphrase-file", pass, "--new-passphrase-file", pass, img],
        vec!["luks", "change-key", "--passphrase-file", pass, "--new-passphrase-file", pass, img],
        vec!["luks", "remove-key", "--passphrase-file", pass, img],
    ] {
        let stderr = refused(&args);
        assert!(stderr.contains(&claim), "{args:?}: {stderr}");
        assert!(stderr.contains(&hint), "{args:?}: {stderr}");
        assert!(stderr.contains(img), "{args:?} names the file: {stderr}");
    }
    // A named keyslot is refused by name.
    let stderr =
        refused(&["luks", "change-key", "--passphrase-file", pass, "--new-passphrase-file", pass, "--slot", "0", img]);
    assert!(stderr.contains(&format!("keyslot 0 refused: it asks for PBKDF2 with {HUGE} iterations")), "{stderr}");
}

#[test]
fn max_kdf_iterations_raises_and_lowers_the_limit() {
    let dir = TempDir::new("cli_kdf_override");
    let pass = dir.join("pass");
    std::fs::write(&pass, b"pw").unwrap();
    let img = dir.join("v.luks");
    run(qluks().args(["create", "-f", "luks", "--passphrase-file", s(&pass), "-o", "iterations=3000", s(&img), "1M"]));
    let read = |limit: &str| {
        common::output(qluks().args([
            "io",
            "--passphrase-file",
            s(&pass),
            "--max-kdf-iterations",
            limit,
            s(&img),
            "-c",
            "read 0 512",
        ]))
    };
    let low = read("2999");
    let stderr = String::from_utf8_lossy(&low.stderr);
    assert!(!low.status.success());
    assert!(stderr.contains("keyslot 0 asks for PBKDF2 with 3000 iterations (limit 2999)"), "{stderr}");
    assert!(stderr.contains("--max-kdf-iterations 3000"), "{stderr}");
    let exact = read("3000");
    assert!(exact.status.success(), "{}", String::from_utf8_lossy(&exact.stderr));
}

#[test]
fn qcow2_with_a_costly_embedded_luks_keyslot_is_refused_by_convert_and_map() {
    if !tool("cli_kdf_qcow2", "qemu-img") {
        return;
    }
    let dir = TempDir::new("cli_kdf_qcow2");
    let pass = dir.join("pass");
    std::fs::write(&pass, b"pw").unwrap();
    let img = dir.join("enc.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "--object", &format!("secret,id=sec0,file={}", s(&pass))])
        .args(["-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"])
        .arg(&img)
        .arg("1M"));
    let mut file = std::fs::File::open(&img).unwrap();
    let (_, extensions, _) = qluks::qcow2::read_qcow2_header(&mut file).unwrap();
    patch_be32(&img, extensions.fde.unwrap().offset as usize + 208 + 4, HUGE);
    let out = dir.join("out.raw");
    for args in [
        vec!["convert", "--passphrase-file", s(&pass), "-O", "raw", s(&img), s(&out)],
        vec!["map", "--passphrase-file", s(&pass), s(&img)],
    ] {
        let stderr = refused(&args);
        assert!(stderr.contains(&format!("keyslot 0 asks for PBKDF2 with {HUGE} iterations")), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("--max-kdf-iterations {HUGE}")), "{args:?}: {stderr}");
    }
}

#[test]
fn argon2_memory_over_the_limit_is_refused_before_it_is_allocated() {
    if !tool("cli_kdf_argon2", "cryptsetup") {
        return;
    }
    let dir = TempDir::new("cli_kdf_argon2");
    let pass = dir.join("pass");
    std::fs::write(&pass, b"pw").unwrap();
    let img = dir.join("v.luks2");
    std::fs::File::create(&img).unwrap().set_len(20 << 20).unwrap();
    run(Command::new("cryptsetup")
        .args(["luksFormat", "--type", "luks2", "--batch-mode", "--key-file", s(&pass)])
        .args([
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "1024",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-parallel",
            "1",
        ])
        .arg(&img));
    let io = |extra: &[&str]| {
        let mut args = vec!["io", "--passphrase-file", s(&pass)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&img), "-c", "read 0 512"]);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // Control: 1 MiB opens under a 2 MiB limit; a 512 KiB limit refuses it with the override.
    run(qluks().args(io(&["--max-kdf-memory", "2M"])));
    let args = io(&["--max-kdf-memory", "512k"]);
    let stderr = refused(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stderr.contains("keyslot 0 asks for Argon2 with 1024 KiB of memory (limit 512 KiB)"), "{stderr}");
    assert!(stderr.contains("to allow it, pass --max-kdf-memory 1024k"), "{stderr}");

    // Claim 4 GiB (the format's maximum) and run under a 1 GiB address-space limit: the refusal
    // must come before any allocation of the claim.
    let mut bytes = std::fs::read(&img).unwrap();
    luks2_json::patch(&mut bytes, 0x4000, |t| luks2_json::replace_once(t, "\"memory\":1024,", "\"memory\":4194304,"));
    std::fs::write(&img, bytes).unwrap();
    let mut shell = Command::new("sh");
    shell.arg("-c").arg("ulimit -v 1048576 && exec \"$@\"").arg("sh").arg(env!("CARGO_BIN_EXE_qluks"));
    shell.args(io(&["--max-kdf-memory", "1G"]));
    let start = Instant::now();
    let out = common::output_within(&mut shell, BOUND * 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(start.elapsed() < BOUND);
    assert!(stderr.contains("keyslot 0 asks for Argon2 with 4194304 KiB of memory (limit 1048576 KiB)"), "{stderr}");
    assert!(stderr.contains("--max-kdf-memory 4194304k"), "{stderr}");
}
