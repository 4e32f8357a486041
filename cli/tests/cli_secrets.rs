//! qemu-img's secret spelling (`--object secret,id=ID,data=…|file=…[,format=base64]` named by
//! `--image-opts …,encrypt.key-secret=ID` / `key-secret=ID` / `backing.encrypt.key-secret=ID`,
//! a `json:{…}` filename, or `-o encrypt.key-secret=ID`) through the built binary: each verb's
//! command line typed as for qemu-img, run side by side with qemu-img on generated images, the
//! results compared; and the errors (wrong secret, unknown id, missing file, unknown object or
//! option): one line, exit code 1 as qemu-img's, no secret printed.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
use std::path::Path;
use std::process::{Command, Output};

const PASS0: &str = "first-Secret";
const PASS1: &str = "second-Secret";
const SEC0: &str = "secret,id=sec0,data=first-Secret";
const SEC1: &str = "secret,id=sec1,data=second-Secret";

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

/// Runs the same arguments with qemu-img and qluks in `dir`: (qemu-img's, qluks's).
fn both(dir: &Path, args: &[&str]) -> (Output, Output) {
    (common::output(qemu_img(dir).args(args)), common::output(qluks(dir).args(args)))
}

/// A LUKS qcow2 image `name` (passphrase of `object`, id `id`) holding a pattern, made by
/// qemu-img and qemu-io.
/// With a backing file, that file is encrypted with [`SEC1`].
fn enc_qcow2(dir: &Path, name: &str, object: &str, id: &str, backing: Option<&str>, seed: u64) {
    let mut c = qemu_img(dir);
    c.args(["create", "-q", "--object", object, "-f", "qcow2"]);
    c.args(["-o", &format!("encrypt.format=luks,encrypt.key-secret={id},encrypt.iter-time=10,cluster_size=4096")]);
    if let Some(b) = backing {
        c.args(["-b", b, "-F", "qcow2"]);
    }
    run(c.args([name, "1M"]));
    let mut io = Command::new("qemu-io");
    io.current_dir(dir).args(["--object", object, "--image-opts"]);
    if backing.is_some() {
        io.args([
            &format!("driver=qcow2,file.filename={name},encrypt.key-secret={id},backing.encrypt.key-secret=sec1"),
            "--object",
            SEC1,
        ]);
    } else {
        io.arg(format!("driver=qcow2,file.filename={name},encrypt.key-secret={id}"));
    }
    // Two differently placed writes: the overlay's covers part of the base's.
    let at = 64 * 1024 * (seed % 4 + 1);
    run(io.args(["-c", &format!("write -P {} {at} 64k", seed % 200 + 1), "-c", "write -z 0 4k"]));
}

/// qemu-img convert -O raw of `opts` (with `objects`) into `out`.
fn qemu_raw(dir: &Path, objects: &[&str], opts: &str, out: &str) -> Vec<u8> {
    let mut c = qemu_img(dir);
    c.arg("convert");
    for o in objects {
        c.args(["--object", o]);
    }
    run(c.args(["--image-opts", opts, "-O", "raw", out]));
    std::fs::read(dir.join(out)).unwrap()
}

#[test]
fn read_verbs_take_qemu_img_secrets() {
    if !tools("read_verbs_take_qemu_img_secrets", &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = TempDir::new("cli-secrets-read");
    let dir = d.path();
    enc_qcow2(dir, "e.qcow2", SEC0, "sec0", None, 1);
    let opts = "driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=sec0";
    let expected = qemu_raw(dir, &[SEC0], opts, "expected.raw");

    // convert: data=, file= (every byte counts), format=base64 of both, file.driver=file.
    std::fs::write(dir.join("pass0"), PASS0).unwrap();
    std::fs::write(dir.join("pass0.b64"), "Zmlyc3QtU2VjcmV0").unwrap();
    assert_eq!(std::str::from_utf8(b"first-Secret").unwrap(), PASS0);
    for object in [
        SEC0,
        "secret,id=sec0,file=pass0",
        "secret,id=sec0,data=Zmlyc3QtU2VjcmV0,format=base64",
        "secret,id=sec0,file=pass0.b64,format=base64",
        "secret,id=sec0,data=first-Secret,format=raw",
    ] {
        for spec in [opts, "driver=qcow2,file.driver=file,file.filename=e.qcow2,encrypt.key-secret=sec0"] {
            let args = ["convert", "--object", object, "--image-opts", spec, "-O", "raw", "out.raw"];
            let q = common::output(qemu_img(dir).args(args));
            assert!(q.status.success(), "qemu-img {object}: {}", stderr(&q));
            let qemu_out = std::fs::read(dir.join("out.raw")).unwrap();
            std::fs::remove_file(dir.join("out.raw")).unwrap();
            let l = common::output(qluks(dir).args(args));
            assert!(l.status.success(), "qluks {object}: {}", stderr(&l));
            assert!(std::fs::read(dir.join("out.raw")).unwrap() == qemu_out);
            assert!(qemu_out == expected);
        }
    }
    // The json: filename (no --image-opts), nested or dotted.
    for json in [
        r#"json:{"driver":"qcow2","file":{"driver":"file","filename":"e.qcow2"},"encrypt":{"key-secret":"sec0"}}"#,
        r#"json:{"driver":"qcow2","file":{"driver":"file","filename":"e.qcow2"},"encrypt.key-secret":"sec0"}"#,
    ] {
        let (q, l) = both(dir, &["convert", "--object", SEC0, json, "-O", "raw", "j.raw"]);
        assert!(q.status.success() && l.status.success(), "{}\n{}", stderr(&q), stderr(&l));
        assert!(std::fs::read(dir.join("j.raw")).unwrap() == expected);
    }

    // compare (both images as options), check, info, map: same exit codes as qemu-img.
    run(qemu_img(dir).args(["create", "-q", "-f", "raw", "plain.raw", "1M"]));
    std::fs::write(dir.join("plain.raw"), &expected).unwrap();
    let (q, l) = both(dir, &["compare", "--object", SEC0, "--image-opts", opts, "driver=raw,file.filename=plain.raw"]);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&l));
    let (q, l) = both(dir, &["check", "--object", SEC0, "--image-opts", opts]);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&l));
    let (q, l) = both(dir, &["info", "--object", SEC0, "--image-opts", opts]);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&l));
    let by_path = common::output(qluks(dir).args(["info", "e.qcow2"]));
    assert_eq!(l.stdout, by_path.stdout, "info: both spellings describe the same image");
    let (q, l) = both(dir, &["map", "--output=json", "--object", SEC0, "--image-opts", opts]);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&l));
    let by_path = common::output(qluks(dir).args(["map", "--output=json", "--passphrase-file", "pass0", "e.qcow2"]));
    assert_eq!(l.stdout, by_path.stdout, "map: both spellings give the same map");

    // A LUKS volume: driver=luks,key-secret=ID.
    run(qemu_img(dir).args([
        "create",
        "-q",
        "--object",
        SEC1,
        "-f",
        "luks",
        "-o",
        "key-secret=sec1,iter-time=10",
        "v.luks",
        "1M",
    ]));
    let lopts = "driver=luks,file.filename=v.luks,key-secret=sec1";
    run(Command::new("qemu-io").current_dir(dir).args([
        "--object",
        SEC1,
        "--image-opts",
        lopts,
        "-c",
        "write -P 9 4k 8k",
    ]));
    let expected = qemu_raw(dir, &[SEC1], lopts, "lexp.raw");
    run(qluks(dir).args(["convert", "--object", SEC1, "--image-opts", lopts, "-O", "raw", "l.raw"]));
    assert!(std::fs::read(dir.join("l.raw")).unwrap() == expected);
    let (q, l) = both(dir, &["compare", "--object", SEC1, "--image-opts", lopts, "driver=raw,file.filename=lexp.raw"]);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&l));
}

#[test]
fn chains_take_backing_key_secrets() {
    if !tools("chains_take_backing_key_secrets", &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = TempDir::new("cli-secrets-chain");
    let dir = d.path();
    enc_qcow2(dir, "base.qcow2", SEC1, "sec1", None, 2);
    enc_qcow2(dir, "top.qcow2", SEC0, "sec0", Some("base.qcow2"), 3);
    let opts = "driver=qcow2,file.filename=top.qcow2,encrypt.key-secret=sec0,backing.encrypt.key-secret=sec1";
    let expected = qemu_raw(dir, &[SEC0, SEC1], opts, "expected.raw");
    let args = ["convert", "--object", SEC0, "--object", SEC1, "--image-opts", opts, "-O", "raw", "out.raw"];
    run(qluks(dir).args(args));
    assert!(std::fs::read(dir.join("out.raw")).unwrap() == expected);

    // commit, as typed for qemu-img, on a copy each; then the bases agree.
    for f in ["base.qcow2", "top.qcow2"] {
        std::fs::create_dir_all(dir.join("q")).unwrap();
        std::fs::copy(dir.join(f), dir.join("q").join(f)).unwrap();
    }
    let commit = ["commit", "--object", SEC0, "--object", SEC1, "--image-opts", opts];
    run(qemu_img(&dir.join("q")).args(commit));
    run(qluks(dir).args(commit));
    let base = "driver=qcow2,file.filename=base.qcow2,encrypt.key-secret=sec1";
    let ours = qemu_raw(dir, &[SEC1], base, "ours.raw");
    let theirs = qemu_raw(&dir.join("q"), &[SEC1], base, "theirs.raw");
    assert!(ours == theirs && ours == expected);

    // rebase -u onto a copy of the base, then a safe rebase back: content unchanged.
    std::fs::copy(dir.join("base.qcow2"), dir.join("base2.qcow2")).unwrap();
    let rebase =
        ["rebase", "--object", SEC0, "--object", SEC1, "--image-opts", opts, "-u", "-b", "base2.qcow2", "-F", "qcow2"];
    run(qluks(dir).args(rebase));
    let opts2 = "driver=qcow2,file.filename=top.qcow2,encrypt.key-secret=sec0,backing.encrypt.key-secret=sec1";
    let rebase =
        ["rebase", "--object", SEC0, "--object", SEC1, "--image-opts", opts2, "-b", "base.qcow2", "-F", "qcow2"];
    run(qluks(dir).args(rebase));
    assert!(qemu_raw(dir, &[SEC0, SEC1], opts, "after.raw") == expected);
    let info = run(Command::new("qemu-img").current_dir(dir).args(["info", "top.qcow2"]));
    assert!(info.contains("backing file: base.qcow2"), "{info}");
}

#[test]
fn writing_verbs_take_qemu_img_secrets() {
    if !tools("writing_verbs_take_qemu_img_secrets", &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = TempDir::new("cli-secrets-write");
    let dir = d.path();
    // create: -o encrypt.key-secret names the passphrase, as for qemu-img.
    let create = |name: &str| {
        let o = "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,cluster_size=4096";
        vec!["create", "--object", SEC0, "-f", "qcow2", "-o", o, name, "1M"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    run(qluks(dir).args(create("a.qcow2")));
    run(qemu_img(dir).args(create("b.qcow2")));
    let oa = "driver=qcow2,file.filename=a.qcow2,encrypt.key-secret=sec0";
    let ob = "driver=qcow2,file.filename=b.qcow2,encrypt.key-secret=sec0";
    for o in [oa, ob] {
        run(Command::new("qemu-io").current_dir(dir).args([
            "--object",
            SEC0,
            "--image-opts",
            o,
            "-c",
            "write -P 7 0 64k",
        ]));
    }
    let compare = ["compare", "--object", SEC0, "--image-opts", oa, ob];
    let (q, l) = both(dir, &compare);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&l));
    // create -f luks -o key-secret.
    run(qluks(dir).args([
        "create",
        "--object",
        SEC1,
        "-f",
        "luks",
        "-o",
        "key-secret=sec1,iter-time=10",
        "v.luks",
        "1M",
    ]));
    run(Command::new("qemu-io").current_dir(dir).args([
        "--object",
        SEC1,
        "--image-opts",
        "driver=luks,file.filename=v.luks,key-secret=sec1",
        "-c",
        "write -P 3 0 4k",
    ]));

    // convert -O qcow2 -o encrypt.format=luks,encrypt.key-secret: qemu-img opens the output.
    let conv = [
        "convert",
        "--object",
        SEC0,
        "--object",
        SEC1,
        "--image-opts",
        oa,
        "-O",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec1,encrypt.iter-time=10",
        "c.qcow2",
    ];
    run(qluks(dir).args(conv));
    let oc = "driver=qcow2,file.filename=c.qcow2,encrypt.key-secret=sec1";
    let (q, l) = both(dir, &["compare", "--object", SEC0, "--object", SEC1, "--image-opts", oa, oc]);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&q));

    // resize: the same size as qemu-img's on the twin image.
    let (q, l) = both(dir, &["resize", "--object", SEC0, "--image-opts", ob, "2M"]);
    assert!(q.status.success(), "{}", stderr(&q));
    let l2 = common::output(qluks(dir).args(["resize", "--object", SEC0, "--image-opts", oa, "2M"]));
    assert!(l2.status.success(), "{}", stderr(&l2));
    let _ = l;
    for f in ["a.qcow2", "b.qcow2"] {
        let info = run(Command::new("qemu-img").current_dir(dir).args(["info", f]));
        assert!(info.contains("virtual size: 2 MiB"), "{f}: {info}");
    }

    // snapshot -c / -l / -a / -d through the options.
    run(qluks(dir).args(["snapshot", "--object", SEC0, "--image-opts", oa, "-c", "snap1"]));
    let list = ["snapshot", "--object", SEC0, "--image-opts", oa, "-l"];
    let (q, l) = both(dir, &list);
    let (qs, ls) = (String::from_utf8_lossy(&q.stdout), String::from_utf8_lossy(&l.stdout));
    assert!(qs.contains("snap1") && ls.contains("snap1"), "{qs}\n{ls}");
    run(Command::new("qemu-io").current_dir(dir).args([
        "--object",
        SEC0,
        "--image-opts",
        oa,
        "-c",
        "write -P 8 0 64k",
    ]));
    run(qluks(dir).args(["snapshot", "--object", SEC0, "--image-opts", oa, "-a", "snap1"]));
    let (q, l) = both(dir, &compare);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "applied snapshot: {}", stderr(&l));
    run(qluks(dir).args(["snapshot", "--object", SEC0, "--image-opts", oa, "-d", "snap1"]));
    assert!(!run(qemu_img(dir).args(list)).contains("snap1"));

    // amend: add a keyslot for sec1, unlocked by the options' key-secret; qemu-img opens
    // the image with the new passphrase.
    let amend = [
        "amend",
        "--object",
        SEC0,
        "--object",
        SEC1,
        "--image-opts",
        oa,
        "-o",
        "encrypt.state=active,encrypt.new-secret=sec1,encrypt.iter-time=10",
    ];
    run(qluks(dir).args(amend));
    let with1 = "driver=qcow2,file.filename=a.qcow2,encrypt.key-secret=sec1";
    let (q, l) = both(dir, &["compare", "--object", SEC0, "--object", SEC1, "--image-opts", with1, ob]);
    assert_eq!((q.status.code(), l.status.code()), (Some(0), Some(0)), "{}", stderr(&q));
}

#[test]
fn secret_errors_are_one_line_with_exit_code_1() {
    if !tools("secret_errors_are_one_line_with_exit_code_1", &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = TempDir::new("cli-secrets-errors");
    let dir = d.path();
    enc_qcow2(dir, "e.qcow2", SEC0, "sec0", None, 4);
    let opts = "driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=sec0";
    let wrong = "secret,id=sec0,data=Wrong-Hunter2";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["convert", "--object", wrong, "--image-opts", opts, "-O", "raw", "o.raw"], "e.qcow2"),
        (vec!["convert", "--object", SEC1, "--image-opts", opts, "-O", "raw", "o.raw"], "sec0"),
        (
            vec!["convert", "--object", "secret,id=sec0,file=no-such-file", "--image-opts", opts, "-O", "raw", "o.raw"],
            "no-such-file",
        ),
        (vec!["convert", "--object", "foo,id=x", "--image-opts", opts, "-O", "raw", "o.raw"], "foo"),
        (
            vec![
                "convert",
                "--object",
                "secret,id=sec0,data=Hunter2x,bogus=1",
                "--image-opts",
                opts,
                "-O",
                "raw",
                "o.raw",
            ],
            "bogus",
        ),
        (
            vec![
                "convert",
                "--object",
                "secret,id=sec0,data=@@Hunter2,format=base64",
                "--image-opts",
                opts,
                "-O",
                "raw",
                "o.raw",
            ],
            "base64",
        ),
        (
            vec![
                "convert",
                "--object",
                "secret,id=sec0,data=Hunter2,file=x",
                "--image-opts",
                opts,
                "-O",
                "raw",
                "o.raw",
            ],
            "mutually exclusive",
        ),
        (vec!["convert", "--object", "secret,data=Hunter2", "--image-opts", opts, "-O", "raw", "o.raw"], "'id'"),
        (vec!["convert", "--object", SEC0, "--object", SEC0, "--image-opts", opts, "-O", "raw", "o.raw"], "sec0"),
        (
            vec![
                "convert",
                "--object",
                SEC0,
                "--image-opts",
                "driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=sec0,foo=1",
                "-O",
                "raw",
                "o.raw",
            ],
            "'foo'",
        ),
        (
            vec![
                "convert",
                "--object",
                SEC0,
                "--image-opts",
                "driver=qcow2,file.filename=missing.qcow2,encrypt.key-secret=sec0",
                "-O",
                "raw",
                "o.raw",
            ],
            "missing.qcow2",
        ),
        (vec!["check", "--object", wrong, "--image-opts", "driver=qcow2,file.filename=missing.qcow2"], "missing.qcow2"),
        (vec!["map", "--object", SEC1, "--image-opts", opts], "sec0"),
        (vec!["resize", "--object", wrong, "--image-opts", opts, "2M"], "e.qcow2"),
        (vec!["snapshot", "--object", wrong, "--image-opts", opts, "-c", "s"], "e.qcow2"),
        (vec!["commit", "--object", wrong, "--image-opts", opts], "e.qcow2"),
    ];
    let before = std::fs::read(dir.join("e.qcow2")).unwrap();
    for (args, named) in cases {
        let (q, l) = both(dir, &args);
        let (qe, le) = (stderr(&q), stderr(&l));
        assert_eq!(q.status.code(), Some(1), "qemu-img {args:?}: {qe}");
        assert_eq!(l.status.code(), Some(1), "qluks {args:?}: {le}");
        assert_eq!(le.lines().count(), 1, "{args:?}: {le}");
        assert!(le.contains(named), "{args:?}: `{named}` not in: {le}");
        for secret in ["Hunter2", PASS0, PASS1] {
            assert!(!le.contains(secret), "{args:?} printed a secret: {le}");
        }
        assert!(!le.contains("panicked"), "{le}");
        assert!(!dir.join("o.raw").exists(), "{args:?} left an output behind");
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("qluks-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{args:?}: {leftovers:?}");
    }
    // compare: 2 for an error (qemu-img's code), 1 for images that differ.
    let (q, l) = both(dir, &["compare", "--object", wrong, "--image-opts", opts, opts]);
    assert_eq!((q.status.code(), l.status.code()), (Some(2), Some(2)), "{}", stderr(&l));
    assert!(stderr(&l).contains("e.qcow2") && !stderr(&l).contains("Hunter2"), "{}", stderr(&l));
    std::fs::write(dir.join("other.raw"), vec![1u8; 1 << 20]).unwrap();
    let (q, l) = both(dir, &["compare", "--object", SEC0, "--image-opts", opts, "driver=raw,file.filename=other.raw"]);
    assert_eq!((q.status.code(), l.status.code()), (Some(1), Some(1)), "{}", stderr(&l));
    assert_eq!(q.stdout, l.stdout);
    assert!(std::fs::read(dir.join("e.qcow2")).unwrap() == before, "a failed command changed the image");
}

#[test]
fn failed_convert_leaves_the_destination_as_it_was() {
    if !tools("failed_convert_leaves_the_destination_as_it_was", &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = TempDir::new("cli-secrets-staged");
    let dir = d.path();
    enc_qcow2(dir, "e.qcow2", SEC0, "sec0", None, 5);
    std::fs::write(dir.join("out.raw"), b"previous content").unwrap();
    // A source cut at its first L2 table: it opens, then the copy fails part way.
    let mut img = std::fs::read(dir.join("e.qcow2")).unwrap();
    let l1 = u64::from_be_bytes(img[40..48].try_into().unwrap()) as usize;
    let l2 = u64::from_be_bytes(img[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00;
    assert!(l2 > 0);
    img.truncate(l2 as usize);
    std::fs::write(dir.join("t.qcow2"), &img).unwrap();
    let opts = "driver=qcow2,file.filename=t.qcow2,encrypt.key-secret=sec0";
    for fmt in ["raw", "qcow2"] {
        let o =
            common::output(qluks(dir).args(["convert", "--object", SEC0, "--image-opts", opts, "-O", fmt, "out.raw"]));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(std::fs::read(dir.join("out.raw")).unwrap() == b"previous content", "the destination changed");
        let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "no temporary file is left: {names:?}");
    }
    // A good run replaces it.
    let opts = "driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=sec0";
    run(qluks(dir).args(["convert", "--object", SEC0, "--image-opts", opts, "-O", "raw", "out.raw"]));
    assert!(std::fs::read(dir.join("out.raw")).unwrap() == qemu_raw(dir, &[SEC0], opts, "q.raw"));
}

#[test]
fn convert_n_takes_target_image_opts() {
    if !tools("convert_n_takes_target_image_opts", &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = TempDir::new("cli-secrets-target");
    let dir = d.path();
    enc_qcow2(dir, "src.qcow2", SEC0, "sec0", None, 6);
    // Two twin targets holding other data, encrypted with another secret.
    enc_qcow2(dir, "q.qcow2", SEC1, "sec1", None, 9);
    std::fs::copy(dir.join("q.qcow2"), dir.join("l.qcow2")).unwrap();
    let src = "driver=qcow2,file.filename=src.qcow2,encrypt.key-secret=sec0";
    let args = |t: &str| {
        let target = format!("driver=qcow2,file.filename={t},encrypt.key-secret=sec1");
        ["convert", "-n", "--object", SEC0, "--object", SEC1, "--image-opts", src, "--target-image-opts"]
            .iter()
            .map(|s| s.to_string())
            .chain([target])
            .collect::<Vec<_>>()
    };
    run(qemu_img(dir).args(args("q.qcow2")));
    run(qluks(dir).args(args("l.qcow2")));
    let expected = qemu_raw(dir, &[SEC0], src, "src.raw");
    for t in ["q.qcow2", "l.qcow2"] {
        let got = qemu_raw(dir, &[SEC1], &format!("driver=qcow2,file.filename={t},encrypt.key-secret=sec1"), "t.raw");
        assert!(got == expected, "{t}");
    }
    run(qemu_img(dir).args([
        "check",
        "--object",
        SEC1,
        "--image-opts",
        "driver=qcow2,file.filename=l.qcow2,encrypt.key-secret=sec1",
    ]));
    // --target-image-opts without -n: qemu-img's error and exit code.
    let mut a = args("l.qcow2");
    a.retain(|s| s != "-n");
    let (q, l) = both(dir, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((q.status.code(), l.status.code()), (Some(1), Some(1)));
    assert!(stderr(&l).contains("--target-image-opts requires use of -n flag"), "{}", stderr(&l));
}
