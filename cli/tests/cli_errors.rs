//! Every subcommand on bad input: missing files, truncated images (qcow2 and LUKS, cut short
//! at the header and after it), wrong passphrases, unknown options and missing arguments.
//! Each must exit with qemu-img's code (1; `compare` 2), print exactly one line on stderr
//! that names the file and what is wrong with it (the field or the offset), and never panic
//! (`panicked` / `RUST_BACKTRACE` never appear, with `RUST_BACKTRACE=1` set). Where qemu-img
//! has the same command line, its exit code is the same.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
use std::path::Path;
use std::process::{Command, Output};

fn qluks(dir: &Path, args: &[&str]) -> Output {
    common::output(Command::new(env!("CARGO_BIN_EXE_qluks")).current_dir(dir).env("RUST_BACKTRACE", "1").args(args))
}

fn qemu_img(dir: &Path, args: &[&str]) -> Output {
    common::output(Command::new("qemu-img").current_dir(dir).args(args))
}

/// The images: plain and encrypted qcow2, a LUKS volume, an overlay, passphrase files, and
/// copies cut short.
fn fixtures(test: &str) -> TempDir {
    let dir = TempDir::new(test);
    let d = dir.path();
    let img = |args: &[&str]| run(Command::new("qemu-img").current_dir(d).args(args));
    let sec = "secret,id=s,data=right";
    img(&["create", "-q", "-f", "qcow2", "plain.qcow2", "1M"]);
    run(Command::new("qemu-io").current_dir(d).args(["-c", "write -P 1 0 64k", "plain.qcow2"]));
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        sec,
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10",
        "enc.qcow2",
        "1M",
    ]);
    img(&["create", "-q", "-f", "luks", "--object", sec, "-o", "key-secret=s,iter-time=10", "vol.luks", "1M"]);
    img(&["create", "-q", "-f", "qcow2", "base.qcow2", "1M"]);
    img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"]);
    std::fs::write(d.join("pw.txt"), "right").unwrap();
    std::fs::write(d.join("bad.txt"), "wrong").unwrap();
    let cut = |from: &str, to: &str, len: usize| {
        let bytes = std::fs::read(d.join(from)).unwrap();
        std::fs::write(d.join(to), &bytes[..len]).unwrap();
    };
    // The qcow2 header itself cut (64 of its 72 bytes), and the image cut after its header
    // cluster (the L1 and refcount tables, at 0x30000 and 0x10000, are gone).
    cut("plain.qcow2", "cut-header.qcow2", 64);
    cut("plain.qcow2", "cut-magic.qcow2", 4);
    cut("plain.qcow2", "cut-tables.qcow2", 65536);
    cut("enc.qcow2", "cut-enc.qcow2", 65536);
    // The LUKS header cut (300 of 592 bytes), and the volume cut inside its keyslot area.
    cut("vol.luks", "cut-header.luks", 300);
    cut("vol.luks", "cut-slots.luks", 8192);
    dir
}

/// Runs `qluks ARGS` (with `@` replaced by `file`) and checks: exit `code`, one stderr line
/// holding every one of `needles`, no panic.
fn fails(dir: &Path, args: &[&str], file: &str, code: i32, needles: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.replace('@', file)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = qluks(dir, &args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let shown = format!("qluks {}: exit {:?}, stderr {err:?}", args.join(" "), out.status.code());
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{shown}");
    assert_eq!(out.status.code(), Some(code), "{shown}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {shown}");
    for n in needles {
        assert!(err.contains(n), "{shown}: `{n}` is not named");
    }
    err
}

/// The subcommands that open an image, each with `@` for it; whether qemu-img takes the
/// same command line (then its exit code must be the same); whether it takes a passphrase.
const OPENING: &[(&[&str], bool, bool)] = &[
    (&["info", "@"], true, false),
    (&["check", "@"], true, false),
    (&["convert", "-O", "raw", "@", "out.raw"], true, true),
    (&["convert", "-O", "qcow2", "@", "out.qcow2"], true, true),
    (&["compare", "@", "plain.qcow2"], true, true),
    (&["map", "@"], true, true),
    (&["resize", "@", "2M"], true, true),
    (&["snapshot", "-l", "@"], true, false),
    (&["snapshot", "-c", "s1", "@"], true, true),
    (&["amend", "-o", "encrypt.state=inactive,encrypt.keyslot=1", "@"], true, true),
    (&["commit", "@"], true, true),
    (&["rebase", "-u", "-b", "base.qcow2", "@"], true, false),
    (&["rebase", "-b", "base.qcow2", "@"], true, true),
    (&["dd", "if=@", "of=out.raw"], true, true),
    (&["io", "-c", "read 0 512", "@"], false, true),
    (&["luks", "add-key", "--new-passphrase-file", "pw.txt", "@"], false, true),
];

/// The exit code qemu-img uses for a failed `verb`: compare 2, the others 1.
fn code(args: &[&str]) -> i32 {
    if args[0] == "compare" {
        2
    } else {
        1
    }
}

/// `args` with the passphrase file `pw` added where the command takes one.
fn with_passphrase<'a>(args: &[&'a str], takes: bool, pw: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if takes {
        v.insert(v.len() - 1, "--passphrase-file");
        v.insert(v.len() - 1, pw);
    }
    v
}

#[test]
fn missing_files_are_named_with_qemu_imgs_exit_codes() {
    const TEST: &str = "missing_files_are_named_with_qemu_imgs_exit_codes";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = fixtures(TEST);
    for (args, same, _) in OPENING {
        fails(dir.path(), args, "missing.qcow2", code(args), &["missing.qcow2", "No such file"]);
        if *same {
            let line: Vec<String> = args.iter().map(|a| a.replace('@', "missing.qcow2")).collect();
            let line: Vec<&str> = line.iter().map(String::as_str).collect();
            assert_eq!(qemu_img(dir.path(), &line).status.code(), Some(code(args)), "qemu-img {line:?}");
        }
    }
    // A missing backing file, passphrase file or operand file.
    fails(
        dir.path(),
        &["create", "-f", "qcow2", "-b", "@", "-F", "qcow2", "new.qcow2"],
        "gone.qcow2",
        1,
        &["backing file", "gone.qcow2", "No such file"],
    );
    fails(
        dir.path(),
        &["convert", "--passphrase-file", "@", "-O", "raw", "enc.qcow2", "o.raw"],
        "nopw.txt",
        1,
        &["passphrase file nopw.txt", "No such file"],
    );
    // Nothing is left behind by a failed convert or dd.
    assert!(!dir.path().join("out.raw").exists() && !dir.path().join("out.qcow2").exists());
}

#[test]
fn truncated_qcow2_images_name_the_field_and_offset() {
    const TEST: &str = "truncated_qcow2_images_name_the_field_and_offset";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = fixtures(TEST);
    for (args, _, pw) in OPENING.iter().filter(|(a, _, _)| a[0] != "luks") {
        let args = with_passphrase(args, *pw, "pw.txt");
        fails(dir.path(), &args, "cut-header.qcow2", code(&args), &["cut-header.qcow2", "header truncated", "72"]);
        fails(
            dir.path(),
            &args,
            "cut-tables.qcow2",
            code(&args),
            &["cut-tables.qcow2", "L1 table at 0x30000", "past the end of the file"],
        );
        fails(dir.path(), &args, "cut-enc.qcow2", code(&args), &["cut-enc.qcow2", "L1 table at 0x30000"]);
    }
    fails(
        dir.path(),
        &["create", "-f", "qcow2", "-b", "@", "-F", "qcow2", "new.qcow2"],
        "cut-header.qcow2",
        1,
        &["backing file cut-header.qcow2", "header truncated"],
    );
    // Only the magic is left: still a message, no panic (and a qcow v1 backing file still
    // gives its size).
    fails(
        dir.path(),
        &["create", "-f", "qcow2", "-b", "@", "-F", "qcow2", "new.qcow2"],
        "cut-magic.qcow2",
        1,
        &["backing file cut-magic.qcow2", "header truncated"],
    );
    run(Command::new("qemu-img").current_dir(dir.path()).args(["create", "-q", "-f", "qcow", "v1.qcow", "3M"]));
    run(Command::new(env!("CARGO_BIN_EXE_qluks")).current_dir(dir.path()).args([
        "create",
        "-f",
        "qcow2",
        "-b",
        "v1.qcow",
        "v1-top.qcow2",
    ]));
    // qemu-img refuses the cut header too.
    assert_eq!(qemu_img(dir.path(), &["info", "cut-header.qcow2"]).status.code(), Some(1));
}

#[test]
fn truncated_luks_volumes_name_the_field_and_offset() {
    const TEST: &str = "truncated_luks_volumes_name_the_field_and_offset";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = fixtures(TEST);
    let d = dir.path();
    // The commands that read LUKS volumes.
    let reading: [&[&str]; 5] = [
        &["convert", "--passphrase-file", "pw.txt", "-O", "raw", "@", "out.raw"],
        &["convert", "--passphrase-file", "pw.txt", "-O", "qcow2", "@", "out.qcow2"],
        &["dd", "--passphrase-file", "pw.txt", "if=@", "of=out.raw"],
        &["io", "--passphrase-file", "pw.txt", "-c", "read 0 512", "@"],
        &["luks", "add-key", "--passphrase-file", "pw.txt", "--new-passphrase-file", "bad.txt", "@"],
    ];
    for args in reading {
        fails(d, args, "cut-header.luks", 1, &["cut-header.luks", "LUKS header truncated", "592"]);
        fails(d, args, "cut-slots.luks", 1, &["cut-slots.luks", "keyslot 0", "0x3f800", "outside the LUKS area"]);
    }
    fails(d, &["info", "@"], "cut-header.luks", 1, &["cut-header.luks", "LUKS header truncated"]);
    fails(
        d,
        &["compare", "--passphrase-file", "pw.txt", "@", "vol.luks"],
        "cut-slots.luks",
        2,
        &["cut-slots.luks", "keyslot 0"],
    );
    // map reads LUKS volumes too (as qemu-img maps them): it names the cut header.
    for (args, _, pw) in OPENING.iter().filter(|(a, _, _)| a[0] == "map") {
        let args = with_passphrase(args, *pw, "pw.txt");
        fails(d, &args, "cut-header.luks", 1, &["cut-header.luks", "LUKS header truncated", "592"]);
    }
    // The qcow2-only verbs say so.
    for (args, _, pw) in OPENING.iter().filter(|(a, _, _)| matches!(a[0], "snapshot" | "amend" | "commit" | "rebase")) {
        let args = with_passphrase(args, *pw, "pw.txt");
        fails(d, &args, "cut-header.luks", 1, &["cut-header.luks", "not a qcow2 image"]);
    }
}

#[test]
fn wrong_passphrases_are_named() {
    const TEST: &str = "wrong_passphrases_are_named";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = fixtures(TEST);
    let d = dir.path();
    let needs_key = |a: &&(&[&str], bool, bool)| a.2 && !matches!(a.0[0], "amend" | "luks" | "compare");
    for (args, _, _) in OPENING.iter().filter(needs_key) {
        let args = with_passphrase(args, true, "bad.txt");
        fails(d, &args, "enc.qcow2", 1, &["enc.qcow2", "wrong passphrase"]);
    }
    for args in [
        &["convert", "--passphrase-file", "bad.txt", "-O", "raw", "@", "out.raw"][..],
        &["dd", "--passphrase-file", "bad.txt", "if=@", "of=out.raw"],
        &["io", "--passphrase-file", "bad.txt", "-c", "read 0 512", "@"],
        &["luks", "add-key", "--passphrase-file", "bad.txt", "--new-passphrase-file", "pw.txt", "@"],
        &["luks", "change-key", "--passphrase-file", "bad.txt", "--new-passphrase-file", "pw.txt", "@"],
        &["luks", "remove-key", "--passphrase-file", "bad.txt", "@"],
    ] {
        fails(d, args, "vol.luks", 1, &["vol.luks", "wrong passphrase"]);
    }
    // compare: errors exit 2; the second image's passphrase is its own.
    fails(
        d,
        &["compare", "--passphrase-file", "bad.txt", "@", "plain.qcow2"],
        "enc.qcow2",
        2,
        &["enc.qcow2", "wrong passphrase"],
    );
    fails(
        d,
        &["compare", "--second-passphrase-file", "bad.txt", "plain.qcow2", "@"],
        "enc.qcow2",
        2,
        &["enc.qcow2", "wrong passphrase"],
    );
    // No passphrase and no terminal: the message names the image.
    fails(d, &["compare", "@", "plain.qcow2"], "enc.qcow2", 2, &["enc.qcow2", "--passphrase-file"]);
    fails(d, &["convert", "-O", "raw", "@", "out.raw"], "vol.luks", 1, &["vol.luks", "--passphrase-file"]);
    // qemu-img's spelling: a wrong --object secret.
    fails(
        d,
        &["convert", "--object", "secret,id=s,data=nope", "--image-opts", "-O", "raw", "@", "out.raw"],
        "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s",
        1,
        &["enc.qcow2", "wrong passphrase"],
    );
    // amend: adding a keyslot needs the right passphrase.
    fails(
        d,
        &[
            "amend",
            "--passphrase-file",
            "bad.txt",
            "--object",
            "secret,id=n,data=new",
            "-o",
            "encrypt.state=active,encrypt.new-secret=n,encrypt.iter-time=10",
            "@",
        ],
        "enc.qcow2",
        1,
        &["enc.qcow2", "wrong passphrase"],
    );
    // The images are untouched: the right passphrase still opens them.
    run(Command::new(env!("CARGO_BIN_EXE_qluks")).current_dir(d).args([
        "compare",
        "--passphrase-file",
        "pw.txt",
        "--second-passphrase-file",
        "pw.txt",
        "enc.qcow2",
        "enc.qcow2",
    ]));
}

/// Every subcommand, as `qluks SUB` (nested ones too).
const SUBCOMMANDS: &[&[&str]] = &[
    &["info"],
    &["check"],
    &["convert"],
    &["create"],
    &["compare"],
    &["map"],
    &["measure"],
    &["resize"],
    &["snapshot"],
    &["amend"],
    &["commit"],
    &["rebase"],
    &["dd"],
    &["io"],
    &["luks", "add-key"],
    &["luks", "remove-key"],
    &["luks", "change-key"],
    &["bench", "xts"],
    &["bench", "pbkdf2"],
    &["demo"],
];

/// Whether this build has `qluks SUB` (`measure` comes with another branch).
fn exists(dir: &Path, sub: &[&str]) -> bool {
    let mut args = sub.to_vec();
    args.push("--help");
    qluks(dir, &args).status.success()
}

#[test]
fn unknown_options_and_missing_arguments_are_one_line_with_exit_1() {
    const TEST: &str = "unknown_options_and_missing_arguments_are_one_line_with_exit_1";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = fixtures(TEST);
    let d = dir.path();
    for sub in SUBCOMMANDS {
        if sub == &["measure"] && !exists(d, sub) {
            println!("SKIP measure: not in this build");
            continue;
        }
        let name = format!("qluks {}", sub.join(" "));
        let hint = format!("(try '{name} --help')");
        for bad in ["--bogus", "-Z"] {
            let mut args = sub.to_vec();
            args.extend([bad, "plain.qcow2"]);
            let err = fails(d, &args, "", 1, &[&format!("{name}: unrecognized option '{bad}'"), &hint]);
            assert!(!err.contains("Usage"), "{err}");
            // qemu-img: 1 too.
            if sub.len() == 1 && sub[0] != "io" && sub[0] != "demo" {
                let q = qemu_img(d, &[sub[0], bad, "plain.qcow2"]);
                assert_eq!(q.status.code(), Some(1), "qemu-img {} {bad}", sub[0]);
            }
        }
        // --bogus=value is named without its value.
        let mut args = sub.to_vec();
        args.push("--bogus=1");
        fails(d, &args, "", 1, &[&format!("{name}: unrecognized option '--bogus'")]);
        // --help: exit 0, on stdout.
        let mut args = sub.to_vec();
        args.push("--help");
        let out = qluks(d, &args);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Usage"), "{name} --help");
    }
    // Missing operands, as qemu-img: exit 1 (and one line).
    for (args, what) in [
        (&["info"][..], "<IMAGE>"),
        (&["check"], "<IMAGE>"),
        (&["convert", "plain.qcow2"], "<DST>"),
        (&["compare", "plain.qcow2"], "<B>"),
        (&["map"], "<IMAGE>"),
        (&["commit"], "<IMAGE>"),
        (&["resize", "plain.qcow2"], "<SIZE>"),
    ] {
        fails(d, args, "", 1, &[&format!("qluks {}: missing argument", args[0]), what]);
        assert_eq!(qemu_img(d, args).status.code(), Some(1), "qemu-img {args:?}");
    }
    // convert -f names the format it found; -f with the right format and -U are taken.
    fails(
        d,
        &["convert", "-f", "luks", "-O", "raw", "@", "o.raw"],
        "plain.qcow2",
        1,
        &["plain.qcow2: -f luks given, but the image is qcow2"],
    );
    fails(
        d,
        &["convert", "-f", "qcow2", "-O", "raw", "@", "o.raw"],
        "missing.qcow2",
        1,
        &["missing.qcow2", "No such file"],
    );
    run(Command::new(env!("CARGO_BIN_EXE_qluks")).current_dir(d).args([
        "convert",
        "-U",
        "-f",
        "qcow2",
        "-O",
        "raw",
        "plain.qcow2",
        "o.raw",
    ]));
    run(Command::new("qemu-img").current_dir(d).args(["compare", "plain.qcow2", "o.raw"]));
    fails(d, &["frobnicate"], "", 1, &["qluks: Command not found: frobnicate"]);
    fails(d, &[], "", 1, &["qluks: Not enough arguments"]);
    fails(d, &["check", "--output", "xml", "plain.qcow2"], "", 1, &["qluks check", "'xml'", "--output"]);
    fails(d, &["dd", "bs=0", "if=plain.qcow2", "of=o.raw"], "", 1, &["Invalid bs"]);
    fails(d, &["resize", "plain.qcow2", "12Q"], "", 1, &["12Q"]);
    let version = qluks(d, &["--version"]);
    assert!(version.status.success() && String::from_utf8_lossy(&version.stdout).starts_with("qluks "));
    assert!(qluks(d, &["--help"]).status.success());
}

#[test]
fn qemu_imgs_quiet_format_and_share_flags_are_taken() {
    const TEST: &str = "qemu_imgs_quiet_format_and_share_flags_are_taken";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let (peer, ours) = (fixtures(&format!("{TEST}-peer")), fixtures(&format!("{TEST}-qluks")));
    let amend = "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s";
    let lines: [&[&str]; 8] = [
        &["compare", "-q", "-U", "-f", "qcow2", "-F", "qcow2", "plain.qcow2", "plain.qcow2"],
        &["compare", "-q", "plain.qcow2", "base.qcow2"],
        &["convert", "-q", "-U", "-f", "qcow2", "-O", "raw", "plain.qcow2", "o.raw"],
        &["resize", "-q", "-f", "qcow2", "plain.qcow2", "2M"],
        &["commit", "-q", "top.qcow2"],
        &["rebase", "-q", "-u", "-b", "plain.qcow2", "-F", "qcow2", "top.qcow2"],
        &["snapshot", "-q", "-c", "s1", "plain.qcow2"],
        &[
            "amend",
            "-q",
            "--object",
            "secret,id=s,data=right",
            "--object",
            "secret,id=n,data=new",
            "--image-opts",
            "-o",
            "encrypt.state=active,encrypt.new-secret=n,encrypt.iter-time=10",
            amend,
        ],
    ];
    for args in lines {
        let q = qemu_img(peer.path(), args);
        let l = qluks(ours.path(), args);
        let shown = format!("{args:?}: qemu-img {q:?}, qluks {l:?}");
        assert_eq!(q.status.code(), l.status.code(), "{shown}");
        assert!(l.stdout.is_empty() && l.stderr.is_empty() && q.stdout.is_empty(), "{shown}");
    }
}
