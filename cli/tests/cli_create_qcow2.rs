//! `qluks create -f qcow2` against qemu-img 10: the same options give the same file (outside
//! the random LUKS key material), qemu-img check/info/qemu-io accept the images, the size can
//! come from the backing file, `-o help` lists the options, bad options are named and leave
//! existing files alone.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
use std::path::Path;
use std::process::{Command, Output};

const PASS: &str = "cli-create-pass";

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn qluks_out(args: &[&str]) -> Output {
    common::output(qluks().args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn secret() -> String {
    format!("secret,id=sec0,data={PASS}")
}

fn opts(img: &Path, encrypted: bool) -> String {
    let key = if encrypted { ",encrypt.key-secret=sec0" } else { "" };
    format!("driver=qcow2,file.filename={}{key}", s(img))
}

fn info(img: &Path, encrypted: bool) -> serde_json::Value {
    let out = run(Command::new("qemu-img").args([
        "info",
        "--output=json",
        "--object",
        &secret(),
        "--image-opts",
        &opts(img, encrypted),
    ]));
    serde_json::from_str(&out).unwrap()
}

fn check(img: &Path, encrypted: bool) {
    run(Command::new("qemu-img").args(["check", "--object", &secret(), "--image-opts", &opts(img, encrypted)]));
}

fn qemu_io(img: &Path, encrypted: bool, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["--object", &secret(), "--image-opts", &opts(img, encrypted)]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = run(&mut c);
    assert!(!out.contains("Pattern verification failed"), "{img:?}: {out}");
}

/// The FDE extension (offset, length) of a qcow2 file.
fn fde(b: &[u8]) -> Option<(usize, usize)> {
    let be32 = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let be64 = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let mut at = if be32(4) == 3 { be32(100) } else { 72 };
    while be32(at) != 0 {
        if be32(at) == 0x0537_be77 {
            return Some((be64(at + 8), be64(at + 16)));
        }
        at += 8 + be32(at + 4).next_multiple_of(8);
    }
    None
}

/// Byte-identical files outside the LUKS key material.
fn same_file(ours: &Path, theirs: &Path) {
    let (a, b) = (std::fs::read(ours).unwrap(), std::fs::read(theirs).unwrap());
    assert_eq!(a.len(), b.len(), "{ours:?}: size differs from qemu-img's");
    let area = fde(&a);
    assert_eq!(area, fde(&b), "{ours:?}: FDE extension differs");
    let (start, end) = area.map_or((a.len(), a.len()), |(o, l)| (o, o + l));
    assert!(a[..start] == b[..start] && a[end..] == b[end..], "{ours:?} differs from qemu-img's");
}

#[test]
fn options_give_qemu_img_s_file() {
    let t = "options_give_qemu_img_s_file";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pw = dir.join("pw");
    std::fs::write(&pw, PASS).unwrap();
    let luks = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10";
    let cases = [
        ("", "64M"),
        ("cluster_size=512", "1000k"),
        ("cluster_size=2k,refcount_bits=1", "32M"),
        ("cluster_size=2M,refcount_bits=64,lazy_refcounts=on", "1G"),
        ("compat=0.10", "1G"),
        ("compat=v2,cluster_size=4k", "100M"),
        ("compat=v3,extended_l2=on,compression_type=zstd", "10M"),
        ("preallocation=metadata,cluster_size=4k,refcount_bits=4", "16M"),
        (luks, "64M"),
        (
            "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,\
             encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha1,\
             cluster_size=32k",
            "8M",
        ),
        (
            "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.cipher-alg=aes-256,\
             encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain64,encrypt.hash-alg=sha512,compat=0.10",
            "8M",
        ),
    ];
    for (i, (o, size)) in cases.into_iter().enumerate() {
        let ours = dir.join(&format!("{i}.qcow2"));
        let theirs = dir.join(&format!("{i}-qemu.qcow2"));
        let mut args = vec!["create", "-f", "qcow2", "--passphrase-file", s(&pw)];
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        args.extend([s(&ours), size]);
        run(qluks().args(&args));
        let mut q = Command::new("qemu-img");
        q.args(["create", "-q", "-f", "qcow2", "--object", &secret()]);
        if !o.is_empty() {
            q.args(["-o", o]);
        }
        run(q.arg(&theirs).arg(size));
        same_file(&ours, &theirs);
        let encrypted = o.contains("encrypt.format");
        let (a, b) = (info(&ours, encrypted), info(&theirs, encrypted));
        assert_eq!(a["virtual-size"], b["virtual-size"], "{o}");
        for key in ["compat", "compression-type", "lazy-refcounts", "refcount-bits", "extended-l2"] {
            assert_eq!(a["format-specific"]["data"][key], b["format-specific"]["data"][key], "{o}: {key}");
        }
        for key in ["format", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg", "payload-offset"]
        {
            let (x, y) = (&a["format-specific"]["data"]["encrypt"][key], &b["format-specific"]["data"]["encrypt"][key]);
            assert_eq!(x, y, "{o}: encrypt {key}");
        }
        check(&ours, encrypted);
        qemu_io(&ours, encrypted, &["write -P 0x3c 4096 70000", "read -P 0x3c 4096 70000", "read -P 0 0 4096"]);
        check(&ours, encrypted);
        // The qluks reader opens it too.
        let mut args = vec!["convert", "-O", "raw", "--passphrase-file", s(&pw)];
        let raw = dir.join("raw");
        args.extend([s(&ours), s(&raw)]);
        if encrypted {
            run(qluks().args(&args));
        } else {
            run(qluks().args(["convert", "-O", "raw", s(&ours), s(&raw)]));
        }
        let data = std::fs::read(&raw).unwrap();
        assert!(data[4096..74096].iter().all(|&b| b == 0x3c) && data[..4096].iter().all(|&b| b == 0), "{o}");
    }
}

#[test]
fn explicit_iterations_and_legacy_aes_opt_in() {
    let t = "explicit_iterations_and_legacy_aes_opt_in";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pw = dir.join("pw");
    std::fs::write(&pw, PASS).unwrap();
    let img = dir.join("it.qcow2");
    run(qluks().args(["create", "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.iterations=1500"]).args([
        "--passphrase-file",
        s(&pw),
        s(&img),
        "1M",
    ]));
    let i = info(&img, true);
    assert_eq!(i["format-specific"]["data"]["encrypt"]["slots"][0]["iters"], 1500);
    qemu_io(&img, true, &["read -P 0 0 1M"]);

    // Legacy AES: refused with a message that says why and how to opt in; nothing created.
    let aes = dir.join("aes.qcow2");
    let out =
        qluks_out(&["create", "-f", "qcow2", "-o", "encrypt.format=aes", "--passphrase-file", s(&pw), s(&aes), "1M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("weak") && err.contains("encrypt.i-know-it-is-weak=on"), "{err}");
    assert!(!aes.exists());
    run(qluks().args(["create", "-f", "qcow2", "-o", "encrypt.format=aes,encrypt.i-know-it-is-weak=on"]).args([
        "--passphrase-file",
        s(&pw),
        s(&aes),
        "1M",
    ]));
    assert_eq!(info(&aes, true)["format-specific"]["data"]["encrypt"]["format"], "aes");
    qemu_io(&aes, true, &["write -P 0x11 0 64k", "read -P 0x11 0 64k"]);
    check(&aes, true);
}

#[test]
fn backing_file_gives_the_size_when_it_is_omitted() {
    let t = "backing_file_gives_the_size_when_it_is_omitted";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let base = dir.join("base.qcow2");
    run(qluks().args(["create", "-f", "qcow2", s(&base), "3M"]));
    qemu_io(&base, false, &["write -P 0x61 0 3M"]);
    let raw = dir.join("base.raw");
    std::fs::write(&raw, vec![0x62u8; 5 << 20]).unwrap();
    for (name, backing, fmt, size, pattern) in
        [("top1.qcow2", "base.qcow2", "qcow2", 3u64 << 20, "0x61"), ("top2.qcow2", "base.raw", "raw", 5 << 20, "0x62")]
    {
        let top = dir.join(name);
        run(qluks().args(["create", "-f", "qcow2", "-b", backing, "-F", fmt, s(&top)]));
        let i = info(&top, false);
        assert_eq!(i["virtual-size"], size);
        assert_eq!(i["backing-filename"], backing);
        assert_eq!(i["backing-filename-format"], fmt);
        // The same file as qemu-img's.
        let theirs = dir.join(&format!("{name}-qemu"));
        run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt, s(&theirs)]));
        same_file(&top, &theirs);
        check(&top, false);
        qemu_io(&top, false, &[&format!("read -P {pattern} 0 {size}")]);
    }
    // Without SIZE and without -b: the error says what is missing.
    let out = qluks_out(&["create", "-f", "qcow2", s(&dir.join("x.qcow2"))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIZE"));
    assert!(!out.status.success());
}

#[test]
fn help_lists_options_and_errors_name_them() {
    let t = "help_lists_options_and_errors_name_them";
    let dir = TempDir::new(t);
    let help = run(qluks().args(["create", "-f", "qcow2", "-o", "help"]));
    for name in [
        "backing_file",
        "backing_fmt",
        "cluster_size",
        "compat",
        "compression_type",
        "extended_l2",
        "lazy_refcounts",
        "preallocation",
        "refcount_bits",
        "encrypt.format",
        "encrypt.cipher-alg",
        "encrypt.cipher-mode",
        "encrypt.ivgen-alg",
        "encrypt.ivgen-hash-alg",
        "encrypt.hash-alg",
        "encrypt.iter-time",
        "encrypt.iterations",
    ] {
        assert!(help.contains(&format!("{name}=")), "-o help misses {name}");
    }
    // An existing file is left alone when the options are refused.
    let img = dir.join("keep.qcow2");
    std::fs::write(&img, b"precious").unwrap();
    for (o, named) in [
        ("cluster_size=3k", "cluster_size"),
        ("cluster_size=4M", "cluster_size"),
        ("refcount_bits=3", "refcount_bits"),
        ("compat=0.10,refcount_bits=32", "compat=1.1"),
        ("compat=0.10,extended_l2=on", "extended_l2"),
        ("extended_l2=on,cluster_size=8k", "extended_l2"),
        ("compat=0.10,compression_type=zstd", "zstd"),
        ("compat=0.10,lazy_refcounts=on", "lazy_refcounts"),
        ("compression_type=lz4", "compression_type"),
        ("preallocation=full", "preallocation"),
        ("backing_fmt=raw", "backing_fmt"),
        ("bogus=1", "bogus"),
        ("encrypt.cipher-alg=aes-512", "encrypt.cipher-alg"),
        ("encrypt.format=luks,compat=0.10,preallocation=metadata", "garbage"),
    ] {
        let out = qluks_out(&["create", "-f", "qcow2", "-o", o, s(&img), "64M"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{o} accepted");
        assert!(err.contains(named), "{o}: {err}");
        assert!(!err.contains("panicked"), "{o}: {err}");
        assert_eq!(std::fs::read(&img).unwrap(), b"precious", "{o} touched the file");
    }
    let out = qluks_out(&["create", "-f", "qcow2", s(&img), "12Q"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("12Q"));
    // qemu-img's size rounding and suffixes.
    let img = dir.join("sizes.qcow2");
    for (size, bytes) in [("1000", 1024u64), ("1k", 1024), ("3M", 3 << 20), ("2G", 2 << 30), ("1T", 1 << 40)] {
        run(qluks().args(["create", "-f", "qcow2", s(&img), size]));
        let b = std::fs::read(&img).unwrap();
        assert_eq!(u64::from_be_bytes(b[24..32].try_into().unwrap()), bytes, "{size}");
    }
}
