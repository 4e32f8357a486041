//! `qluks commit` and `qluks rebase [-u]` against `qemu-img commit` / `qemu-img rebase` on
//! copies of the same chains: `qemu-img compare` equal, `qemu-img check` clean on the qluks
//! copies. LUKS layers with different passphrases (iotest 198 style), a raw base, a
//! three-layer chain for rebase.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{output, run, tools, TempDir};
use std::path::Path;
use std::process::Command;

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn qemu_img(dir: &Path, args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args).current_dir(dir))
}

fn qemu_io(dir: &Path, objects: &[&str], opts: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.current_dir(dir);
    for o in objects {
        c.args(["--object", o]);
    }
    c.args(["--image-opts", opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(&mut c);
}

/// `qemu-img compare` (with `--object`s and `--image-opts` when `objects` is not empty).
fn compare(dir: &Path, objects: &[&str], a: &str, b: &str) {
    let mut c = Command::new("qemu-img");
    c.current_dir(dir).arg("compare");
    for o in objects {
        c.args(["--object", o]);
    }
    if !objects.is_empty() {
        c.arg("--image-opts");
    }
    run(c.args([a, b]));
}

fn check_clean(dir: &Path, objects: &[&str], image: &str) {
    let mut c = Command::new("qemu-img");
    c.current_dir(dir).arg("check");
    for o in objects {
        c.args(["--object", o]);
    }
    if !objects.is_empty() {
        c.arg("--image-opts");
    }
    run(c.arg(image));
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn commit_plain_and_raw_base_like_qemu_img() {
    let t = "cli-commit-plain";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    for base_fmt in ["qcow2", "raw"] {
        let a = TempDir::new(t);
        let dir = a.path();
        qemu_img(dir, &["create", "-q", "-f", base_fmt, "base", "2M"]);
        qemu_io(dir, &[], &format!("driver={base_fmt},file.filename=base"), &["write -P 0x11 0 2M"]);
        qemu_img(dir, &["create", "-q", "-f", "qcow2", "-b", "base", "-F", base_fmt, "top"]);
        qemu_io(
            dir,
            &[],
            "driver=qcow2,file.filename=top",
            &["write -P 0x22 1000 9000", "write -z 256k 128k", "write -c -P 0x33 1M 64k"],
        );
        let b = TempDir::new(t);
        copy_dir(dir, b.path());
        let before = run(Command::new("qemu-img").args(["convert", "-O", "raw", "top", "before.raw"]).current_dir(dir));
        let _ = before;
        let out = run(qluks().args(["commit", "-p", "top"]).current_dir(dir));
        assert!(out.contains("Image committed."), "{out}");
        qemu_img(b.path(), &["commit", "-q", "top"]);
        compare(dir, &[], "base", &b.path().join("base").to_string_lossy());
        compare(dir, &[], "top", &b.path().join("top").to_string_lossy());
        compare(dir, &[], "top", "before.raw");
        check_clean(dir, &[], "top");
        if base_fmt == "qcow2" {
            check_clean(dir, &[], "base");
        }
    }
}

#[test]
fn commit_luks_into_luks_with_another_passphrase_iotest_198() {
    let t = "cli-commit-luks";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let a = TempDir::new(t);
    let dir = a.path();
    let objects = ["secret,id=sec0,data=top pw", "secret,id=sec1,data=base pw"];
    let enc = |id: &str| format!("encrypt.format=luks,encrypt.key-secret={id},encrypt.iter-time=10");
    let mut c = Command::new("qemu-img");
    c.current_dir(dir).args(["create", "-q", "--object", objects[1], "-f", "qcow2", "-o", &enc("sec1"), "base", "2M"]);
    run(&mut c);
    let mut c = Command::new("qemu-img");
    c.current_dir(dir).args(["create", "-q", "--object", objects[0], "-f", "qcow2", "-o", &enc("sec0")]);
    run(c.args(["-b", "base", "-F", "qcow2", "top"]));
    let base_opts = "driver=qcow2,file.filename=base,encrypt.key-secret=sec1";
    let top_opts = "driver=qcow2,file.filename=top,encrypt.key-secret=sec0,backing.encrypt.key-secret=sec1";
    qemu_io(dir, &objects, base_opts, &["write -P 0xa 0 2M"]);
    qemu_io(dir, &objects, top_opts, &["write -P 0xb 0 64k", "write -P 0xc 500k 70k", "write -z 1M 64k"]);
    std::fs::write(dir.join("top.pw"), "top pw").unwrap();
    std::fs::write(dir.join("base.pw"), "base pw").unwrap();
    let b = TempDir::new(t);
    copy_dir(dir, b.path());
    let mut c = Command::new("qemu-img");
    c.current_dir(dir).args(["convert", "--object", objects[0], "--object", objects[1], "--image-opts", top_opts]);
    run(c.args(["-O", "raw", "before.raw"]));

    let mut c = qluks();
    c.current_dir(dir).args(["commit", "--passphrase-file", "top.pw", "--backing-passphrase-file", "base.pw", "top"]);
    run(&mut c);
    let mut c = Command::new("qemu-img");
    c.current_dir(b.path()).args(["commit", "-q", "--object", objects[0], "--object", objects[1]]);
    run(c.args(["--image-opts", top_opts]));
    let other = |opts: &str| opts.replace("file.filename=", &format!("file.filename={}/", b.path().display()));
    compare(dir, &objects, base_opts, &other(base_opts));
    compare(dir, &objects, top_opts, &other(top_opts));
    let mut c = Command::new("qemu-img");
    c.current_dir(dir).args(["compare", "--object", objects[0], "--object", objects[1], "--image-opts", top_opts]);
    run(c.args(["--image-opts", "driver=raw,file.filename=before.raw"]).arg("-q"));
    check_clean(dir, &objects, base_opts);
    check_clean(dir, &objects, top_opts);

    // The wrong base passphrase is refused before anything is written.
    std::fs::write(dir.join("wrong.pw"), "nope").unwrap();
    let before = std::fs::read(dir.join("base")).unwrap();
    let mut c = qluks();
    c.current_dir(dir).args(["commit", "--passphrase-file", "top.pw", "--backing-passphrase-file", "wrong.pw", "top"]);
    let out = output(&mut c);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("top") && err.contains("base"), "{err}");
    assert!(std::fs::read(dir.join("base")).unwrap() == before, "file changed");
}

#[test]
fn rebase_safe_unsafe_and_remove_like_qemu_img() {
    let t = "cli-rebase";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let a = TempDir::new(t);
    let dir = a.path();
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "b0", "1M"]);
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "-b", "b0", "-F", "qcow2", "mid"]);
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "-b", "mid", "-F", "qcow2", "top"]);
    qemu_io(dir, &[], "driver=qcow2,file.filename=b0", &["write -P 1 0 1M"]);
    qemu_io(dir, &[], "driver=qcow2,file.filename=mid", &["write -P 2 100k 300k", "write -z 600k 64k"]);
    qemu_io(dir, &[], "driver=qcow2,file.filename=top", &["write -P 3 128k 4k"]);
    std::fs::copy(dir.join("top"), dir.join("top.orig")).unwrap();
    for (qluks_args, qemu_args) in [
        (vec!["rebase", "-b", "b0", "-F", "qcow2"], vec!["rebase", "-q", "-b", "b0", "-F", "qcow2"]),
        (vec!["rebase", "-b", "b0"], vec!["rebase", "-q", "-b", "b0", "-F", "qcow2"]),
        (vec!["rebase", "-b", ""], vec!["rebase", "-q", "-b", ""]),
        (vec!["rebase", "-u", "-b", "b0", "-F", "qcow2"], vec!["rebase", "-q", "-u", "-b", "b0", "-F", "qcow2"]),
    ] {
        std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
        std::fs::copy(dir.join("top.orig"), dir.join("topq")).unwrap();
        run(qluks().args(&qluks_args).arg("top").current_dir(dir));
        qemu_img(dir, &[qemu_args.as_slice(), &["topq"]].concat());
        compare(dir, &[], "top", "topq");
        check_clean(dir, &[], "top");
        let (i, iq) = (qemu_img(dir, &["info", "top"]), qemu_img(dir, &["info", "topq"]));
        let backing = |s: &str| s.lines().filter(|l| l.starts_with("backing file")).collect::<Vec<_>>().join("\n");
        assert_eq!(backing(&i), backing(&iq), "{qluks_args:?}");
        if !qluks_args.contains(&"-u") {
            compare(dir, &[], "top", "top.orig");
        }
    }
    // A name outside the image's directory is refused by the default policy.
    std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
    let out = output(qluks().args(["rebase", "-b", "/etc/passwd", "-F", "raw", "top"]).current_dir(dir));
    assert!(!out.status.success());
    assert!(std::fs::read(dir.join("top")).unwrap() == std::fs::read(dir.join("top.orig")).unwrap(), "file changed");
}

#[test]
fn rebase_luks_chain_with_per_layer_passphrases() {
    let t = "cli-rebase-luks";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let a = TempDir::new(t);
    let dir = a.path();
    let objects = ["secret,id=s0,data=b0 pw", "secret,id=s1,data=mid pw", "secret,id=s2,data=top pw"];
    let enc = |id: &str| format!("encrypt.format=luks,encrypt.key-secret={id},encrypt.iter-time=10");
    for (i, (name, backing)) in [("b0", None), ("mid", Some("b0")), ("top", Some("mid"))].into_iter().enumerate() {
        let mut c = Command::new("qemu-img");
        c.current_dir(dir).args(["create", "-q", "--object", objects[i], "-f", "qcow2", "-o", &enc(&format!("s{i}"))]);
        if let Some(b) = backing {
            c.args(["-b", b, "-F", "qcow2"]);
        }
        run(c.args([name, "1M"]));
    }
    let b0 = "driver=qcow2,file.filename=b0,encrypt.key-secret=s0";
    let mid = "driver=qcow2,file.filename=mid,encrypt.key-secret=s1,backing.encrypt.key-secret=s0";
    let top = "driver=qcow2,file.filename=top,encrypt.key-secret=s2,backing.encrypt.key-secret=s1,\
               backing.backing.encrypt.key-secret=s0";
    qemu_io(dir, &objects, b0, &["write -P 1 0 1M"]);
    qemu_io(dir, &objects, mid, &["write -P 2 100k 300k"]);
    qemu_io(dir, &objects, top, &["write -P 3 128k 4k"]);
    let mut c = Command::new("qemu-img");
    c.current_dir(dir).arg("convert");
    for o in objects {
        c.args(["--object", o]);
    }
    run(c.args(["--image-opts", top, "-O", "raw", "before.raw"]));
    for (f, p) in [("b0.pw", "b0 pw"), ("mid.pw", "mid pw"), ("top.pw", "top pw")] {
        std::fs::write(dir.join(f), p).unwrap();
    }
    let mut c = qluks();
    c.current_dir(dir).args(["rebase", "--passphrase-file", "top.pw"]);
    c.args(["--backing-passphrase-file", "mid.pw", "--backing-passphrase-file", "b0.pw"]);
    run(c.args(["--new-backing-passphrase-file", "b0.pw", "-b", "b0", "-F", "qcow2", "top"]));
    let rebased = "driver=qcow2,file.filename=top,encrypt.key-secret=s2,backing.encrypt.key-secret=s0";
    compare(dir, &objects, rebased, "driver=raw,file.filename=before.raw");
    check_clean(dir, &objects, rebased);
    let info = qemu_img(dir, &["info", "top"]);
    assert!(info.contains("backing file: b0"), "{info}");
}
