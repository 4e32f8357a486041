//! `qluks dd` against `qemu-img dd` on generated raw, qcow2, LUKS qcow2 and LUKS inputs: the
//! same operands give the same output bytes (raw outputs byte for byte, qcow2 outputs by
//! content and virtual size), the same warnings and exit codes; bad operands fail with
//! qemu-img's message and exit code 1.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
use std::path::Path;
use std::process::{Command, Output};

const SEC0: &str = "secret,id=sec0,data=dd-Passphrase";

fn qluks(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qluks"));
    c.current_dir(dir);
    c
}

fn qemu_img(dir: &Path) -> Command {
    let mut c = Command::new("qemu-img");
    c.current_dir(dir);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The inputs: (leading arguments naming the input format or secrets, `if=` value).
fn inputs(dir: &Path) -> Vec<(Vec<String>, String)> {
    // An odd size (not a multiple of 512 nor of the block sizes below), with data and holes.
    let mut data = common::pattern(7, (1 << 20) + 1000);
    data[200_000..600_000].fill(0);
    std::fs::write(dir.join("in.raw"), &data).unwrap();
    run(qemu_img(dir).args(["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", "in.raw", "in.qcow2"]));
    let enc = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10";
    run(qemu_img(dir).args([
        "convert",
        "--object",
        SEC0,
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        enc,
        "in.raw",
        "enc.qcow2",
    ]));
    run(qemu_img(dir).args([
        "convert",
        "--object",
        SEC0,
        "-f",
        "raw",
        "-O",
        "luks",
        "-o",
        "key-secret=sec0,iter-time=10",
        "in.raw",
        "in.luks",
    ]));
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (v(&["-f", "raw"]), "in.raw".into()),
        (v(&["-f", "qcow2"]), "in.qcow2".into()),
        (v(&["--object", SEC0, "--image-opts"]), "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=sec0".into()),
        (v(&["--object", SEC0, "--image-opts"]), "driver=luks,file.filename=in.luks,key-secret=sec0".into()),
    ]
}

const OPERANDS: &[&[&str]] = &[
    &[],
    &["bs=4k"],
    &["bs=4k", "count=8"],
    &["bs=4k", "skip=16"],
    &["bs=4k", "skip=16", "count=100"],
    &["bs=4k", "skip=16", "count=8"],
    &["bs=4k", "skip=300"],
    &["bs=1000", "count=3"],
    &["bs=64k", "count=1000"],
    &["bs=1M", "skip=1"],
    &["bs=7", "skip=3", "count=10"],
    &["count=0"],
];

#[test]
fn dd_matches_qemu_img_byte_for_byte() {
    if !tools("dd_matches_qemu_img_byte_for_byte", &["qemu-img"]) {
        return;
    }
    let d = TempDir::new("cli-dd");
    let dir = d.path();
    for (lead, input) in inputs(dir) {
        for ops in OPERANDS {
            let mut args: Vec<String> = vec!["dd".into()];
            args.extend(lead.iter().cloned());
            args.extend(ops.iter().map(|s| s.to_string()));
            args.push(format!("if={input}"));
            let q = common::output(qemu_img(dir).args(&args).arg("of=q.out"));
            let l = common::output(qluks(dir).args(&args).arg("of=l.out"));
            assert_eq!(q.status.code(), Some(0), "qemu-img {args:?}: {}", stderr(&q));
            assert_eq!(l.status.code(), Some(0), "qluks {args:?}: {}", stderr(&l));
            assert_eq!(
                stderr(&q).contains("cannot skip to specified offset"),
                stderr(&l).contains("cannot skip to specified offset"),
                "{args:?}: {}",
                stderr(&l)
            );
            let (qb, lb) = (std::fs::read(dir.join("q.out")).unwrap(), std::fs::read(dir.join("l.out")).unwrap());
            assert_eq!(qb.len(), lb.len(), "{args:?}: output sizes");
            assert!(qb == lb, "{args:?}: output bytes differ");

            // qcow2 output: the same content and virtual size.
            let q = common::output(qemu_img(dir).args(&args).args(["-O", "qcow2", "of=q.qcow2"]));
            let l = common::output(qluks(dir).args(&args).args(["-O", "qcow2", "of=l.qcow2"]));
            assert!(q.status.success() && l.status.success(), "{args:?}: {}\n{}", stderr(&q), stderr(&l));
            run(qemu_img(dir).args(["compare", "-f", "qcow2", "-F", "qcow2", "q.qcow2", "l.qcow2"]));
            let size = |f: &str| {
                let info = run(qemu_img(dir).args(["info", "--output=json", f]));
                let v: serde_json::Value = serde_json::from_str(&info).unwrap();
                v["virtual-size"].as_u64().unwrap()
            };
            assert_eq!(size("q.qcow2"), size("l.qcow2"), "{args:?}");
        }
    }
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().contains("qluks-tmp")), "{names:?}");
}

#[test]
fn dd_reads_encrypted_inputs_with_either_spelling_and_writes_luks_qcow2() {
    if !tools("dd_reads_encrypted_inputs_with_either_spelling_and_writes_luks_qcow2", &["qemu-img"]) {
        return;
    }
    let d = TempDir::new("cli-dd-enc");
    let dir = d.path();
    let _ = inputs(dir);
    std::fs::write(dir.join("pass"), "dd-Passphrase").unwrap();
    let ops = ["bs=4k", "skip=3", "count=200"];
    run(qemu_img(dir).args(["dd", "-f", "raw"]).args(ops).args(["if=in.raw", "of=expected.raw"]));
    for input in ["enc.qcow2", "in.luks"] {
        run(qluks(dir)
            .args(["dd", "--passphrase-file", "pass"])
            .args(ops)
            .arg(format!("if={input}"))
            .arg("of=out.raw"));
        assert!(std::fs::read(dir.join("out.raw")).unwrap() == std::fs::read(dir.join("expected.raw")).unwrap());
        // base64 and file= secrets.
        let object = "secret,id=s,data=ZGQtUGFzc3BocmFzZQ==,format=base64";
        let driver =
            if input.ends_with("luks") { "driver=luks,key-secret=s" } else { "driver=qcow2,encrypt.key-secret=s" };
        run(qluks(dir)
            .args(["dd", "--object", object, "--image-opts"])
            .args(ops)
            .arg(format!("if={driver},file.filename={input}"))
            .arg("of=out2.raw"));
        assert!(std::fs::read(dir.join("out2.raw")).unwrap() == std::fs::read(dir.join("expected.raw")).unwrap());
    }
    // A LUKS qcow2 output (a qluks extension: -o), opened by qemu-img with the secret.
    let o = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,cluster_size=4096";
    run(qluks(dir)
        .args(["dd", "--object", SEC0, "-O", "qcow2", "-o", o])
        .args(ops)
        .args(["if=in.raw", "of=out.qcow2"]));
    run(qemu_img(dir).args([
        "compare",
        "--object",
        SEC0,
        "--image-opts",
        "driver=qcow2,file.filename=out.qcow2,encrypt.key-secret=sec0",
        "driver=raw,file.filename=expected.raw",
    ]));
    let info = run(qemu_img(dir).args(["info", "out.qcow2"]));
    assert!(info.contains("encrypted: yes"), "{info}");
}

#[test]
fn dd_errors_match_qemu_img() {
    if !tools("dd_errors_match_qemu_img", &["qemu-img"]) {
        return;
    }
    let d = TempDir::new("cli-dd-errors");
    let dir = d.path();
    let _ = inputs(dir);
    let cases: &[(&[&str], &str)] = &[
        (&["bs=0", "if=in.raw", "of=o"], "Invalid bs specified. Must be between 1 and 2147483647."),
        (&["bs=3G", "if=in.raw", "of=o"], "Invalid bs specified. Must be between 1 and 2147483647."),
        (&["count=1k", "if=in.raw", "of=o"], "Invalid count specified: '1k'."),
        (&["count=-1", "if=in.raw", "of=o"], "Invalid count specified. Must be between 0 and 9223372036854775807."),
        (&["skip=1k", "if=in.raw", "of=o"], "Invalid skip specified: '1k'."),
        (&["foo=1", "if=in.raw", "of=o"], "unrecognized operand foo"),
        (&["xx", "if=in.raw", "of=o"], "unrecognized operand xx"),
        (&["if=in.raw"], "Must specify both input and output files"),
        (&["of=o"], "Must specify both input and output files"),
        (&["if=missing.raw", "of=o"], "missing.raw"),
        (&["-O", "vmdkx", "if=in.raw", "of=o"], "Unknown file format"),
        (&["-f", "qcow2", "if=in.raw", "of=o"], "in.raw"),
        (&["-x", "if=in.raw", "of=o"], "-x"),
        (
            &[
                "--object",
                "secret,id=sec0,data=Wrong-Pass",
                "--image-opts",
                "if=driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=sec0",
                "of=o",
            ],
            "enc.qcow2",
        ),
        (
            &[
                "--object",
                SEC0,
                "--image-opts",
                "if=driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=nope",
                "of=o",
            ],
            "nope",
        ),
        (
            &["--object", SEC0, "--image-opts", "if=driver=luks,file.filename=in.luks,key-secret=sec0,bogus=1", "of=o"],
            "bogus",
        ),
    ];
    for (args, message) in cases {
        let q = common::output(qemu_img(dir).arg("dd").args(*args));
        let l = common::output(qluks(dir).arg("dd").args(*args));
        assert_eq!(q.status.code(), Some(1), "qemu-img {args:?}: {}", stderr(&q));
        assert_eq!(l.status.code(), Some(1), "qluks {args:?}: {}", stderr(&l));
        let le = stderr(&l);
        assert!(le.contains(message), "{args:?}: `{message}` not in {le}");
        assert!(!le.contains("Wrong-Pass") && !le.contains("dd-Passphrase"), "{le}");
        assert!(!le.contains("panicked"), "{le}");
        assert!(!dir.join("o").exists(), "{args:?} left an output");
    }
    // A failing read part way leaves neither the output nor a temporary file.
    let mut img = std::fs::read(dir.join("in.qcow2")).unwrap();
    let l1 = u64::from_be_bytes(img[40..48].try_into().unwrap()) as usize;
    let l2 = u64::from_be_bytes(img[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00;
    img.truncate(l2 as usize);
    std::fs::write(dir.join("cut.qcow2"), &img).unwrap();
    let l = common::output(qluks(dir).args(["dd", "if=cut.qcow2", "of=o"]));
    assert_eq!(l.status.code(), Some(1), "{}", stderr(&l));
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!names.iter().any(|n| n == "o" || n.to_string_lossy().contains("qluks-tmp")), "{names:?}");
}
