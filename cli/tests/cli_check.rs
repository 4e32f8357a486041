//! `qluks check [-r leaks|all] [--output human|json]` against `qemu-img check` on copies of the
//! same images: the same stdout (human), the same JSON, the same findings on stderr, the same
//! exit codes (0 clean, 1 check failed or cannot open, 2 corruptions, 3 leaks, 63 no checks for
//! the format).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `prog check ARGS IMAGE`: (exit code, stdout).
fn check(prog: Command, args: &[&str], image: &Path) -> (i32, String) {
    let (code, out, _) = check_full(prog, args, image);
    (code, out)
}

/// Runs `prog check ARGS IMAGE`: (exit code, stdout, the findings on stderr: the lines that
/// do not name the program).
fn check_full(mut prog: Command, args: &[&str], image: &Path) -> (i32, String, String) {
    prog.arg("check").args(args).arg(image);
    let out = common::output(&mut prog);
    let findings = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("qemu-img: ") && !l.starts_with("qluks: "))
        .map(|l| format!("{l}\n"))
        .collect();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), findings)
}

/// The same check by both on copies named alike (`a/IMAGE`, `b/IMAGE`, run from each
/// directory so that `filename` is the same): exit codes, stdout (human) or JSON equal.
fn assert_same(dir: &common::TempDir, image: &Path, args: &[&str]) -> i32 {
    let name = "img.qcow2";
    let (a, b) = (dir.join("a"), dir.join("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(image, d.join(name)).unwrap();
    }
    let mut ours = qluks();
    ours.current_dir(&a);
    let mut theirs = Command::new("qemu-img");
    theirs.current_dir(&b);
    let (code, out, findings) = check_full(ours, args, Path::new(name));
    let (qcode, qout, qfindings) = check_full(theirs, args, Path::new(name));
    assert_eq!(code, qcode, "exit code of check {args:?}: qluks:\n{out}\nqemu-img:\n{qout}");
    // The findings, in qemu-img's words and order.
    assert_eq!(findings, qfindings, "stderr of check {args:?}");
    if args.contains(&"json") {
        let (v, qv): (Value, Value) = (serde_json::from_str(&out).unwrap(), serde_json::from_str(&qout).unwrap());
        assert_eq!(v, qv, "JSON of check {args:?}");
    } else {
        assert_eq!(out, qout, "stdout of check {args:?}");
    }
    if args.contains(&"-r") && code != 1 {
        // The repaired copies: qemu-img finds the same in both.
        let (c1, o1) = check(Command::new("qemu-img"), &[], &a.join(name));
        let (c2, o2) = check(Command::new("qemu-img"), &[], &b.join(name));
        assert_eq!((c1, o1), (c2, o2), "qemu-img check of the copies repaired by qluks and qemu-img");
    }
    code
}

fn be64(b: &[u8], at: u64) -> u64 {
    u64::from_be_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

/// Sets the 16-bit refcount of cluster `k` (64 KiB clusters, refcount block 0).
fn set_refcount(path: &Path, k: u64, v: u16) {
    let mut b = std::fs::read(path).unwrap();
    let block = be64(&b, be64(&b, 48));
    let at = (block + k * 2) as usize;
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    std::fs::write(path, b).unwrap();
}

fn image(dir: &common::TempDir) -> PathBuf {
    let path = dir.join("base.qcow2");
    common::qemu_img(&["create", "-q", "-f", "qcow2", s(&path), "16M"]);
    let opts = format!("driver=qcow2,file.filename={}", path.display());
    common::qemu_io(&[], &opts, &["write -P 0x11 0 256k", "write -c -P 0x22 1M 64k", "write -P 0x33 8M 64k"]);
    path
}

#[test]
fn check_output_and_exit_codes_match_qemu_img() {
    const TEST: &str = "check_output_and_exit_codes_match_qemu_img";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let clean = image(&dir);
    for args in [&[][..], &["--output", "json"], &["-r", "all"], &["-r", "leaks", "--output", "json"]] {
        assert_eq!(assert_same(&dir, &clean, args), 0, "clean {args:?}");
    }

    // A leak: a cluster past the data (inside the file) marked used.
    let leaky = dir.join("leaky.qcow2");
    std::fs::copy(&clean, &leaky).unwrap();
    let clusters = std::fs::metadata(&leaky).unwrap().len() >> 16;
    std::fs::OpenOptions::new().write(true).open(&leaky).unwrap().set_len((clusters + 2) << 16).unwrap();
    set_refcount(&leaky, clusters + 1, 1);
    for args in [&[][..], &["--output", "json"]] {
        assert_eq!(assert_same(&dir, &leaky, args), 3, "leaks {args:?}");
    }
    for args in [&["-r", "leaks"][..], &["-r", "all", "--output", "json"]] {
        assert_eq!(assert_same(&dir, &leaky, args), 0, "leaks {args:?}");
    }

    // A corruption: the first data cluster's refcount too low (2 references, 1 on disk, by
    // pointing a second L2 entry at it) ...
    let corrupt = dir.join("corrupt.qcow2");
    std::fs::copy(&clean, &corrupt).unwrap();
    {
        let mut b = std::fs::read(&corrupt).unwrap();
        let l2 = be64(&b, be64(&b, 40)) & 0x00ff_ffff_ffff_fe00;
        let e0 = be64(&b, l2);
        let at = (l2 + 10 * 8) as usize;
        b[at..at + 8].copy_from_slice(&e0.to_be_bytes());
        std::fs::write(&corrupt, b).unwrap();
    }
    for args in [&[][..], &["--output", "json"]] {
        assert_eq!(assert_same(&dir, &corrupt, args), 2, "corrupt {args:?}");
    }
    assert_eq!(assert_same(&dir, &corrupt, &["-r", "all"]), 0);
    assert_eq!(assert_same(&dir, &corrupt, &["-r", "leaks", "--output", "json"]), 2);

    // ... and a data cluster with refcount 0: only a rebuild repairs it (-r leaks fails).
    let zero = dir.join("zero.qcow2");
    std::fs::copy(&clean, &zero).unwrap();
    {
        let b = std::fs::read(&zero).unwrap();
        let l2 = be64(&b, be64(&b, 40)) & 0x00ff_ffff_ffff_fe00;
        let k = (be64(&b, l2) & 0x00ff_ffff_ffff_fe00) >> 16;
        set_refcount(&zero, k, 0);
    }
    assert_eq!(assert_same(&dir, &zero, &[]), 2);
    assert_eq!(assert_same(&dir, &zero, &["-r", "leaks"]), 1);
    assert_eq!(assert_same(&dir, &zero, &["-r", "all"]), 0);
}

#[test]
fn check_refuses_what_qemu_img_refuses() {
    const TEST: &str = "check_refuses_what_qemu_img_refuses";
    if !common::tools(TEST, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let raw = dir.join("disk.raw");
    common::qemu_img(&["create", "-q", "-f", "raw", s(&raw), "1M"]);
    let (code, _) = check(qluks(), &[], &raw);
    assert_eq!(code, 63);
    assert_eq!(check(Command::new("qemu-img"), &[], &raw).0, 63);
    let missing = dir.join("missing.qcow2");
    let out = common::output(qluks().arg("check").arg(&missing));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.qcow2"));
    assert_eq!(check(Command::new("qemu-img"), &[], &missing).0, 1);
}
