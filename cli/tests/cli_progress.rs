//! `-p` (progress) on convert, dd, commit, create: qemu-img's line `    (NN.NN/100%)` on a
//! terminal (given by `script`, which runs the command on a pseudo-terminal), reaching 100%;
//! nothing when stderr is not a terminal, nor with `-q`.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
use std::path::Path;
use std::process::Command;

fn qluks_line(args: &str) -> String {
    format!("{} {args}", env!("CARGO_BIN_EXE_qluks"))
}

/// Runs `qluks ARGS` in `dir` on a pseudo-terminal; what it printed there.
fn on_terminal(dir: &Path, args: &str) -> String {
    let out = common::output(Command::new("script").current_dir(dir).args(["-qec", &qluks_line(args), "/dev/null"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "qluks {args} on a terminal failed: {text}");
    text
}

/// Runs `qluks ARGS` in `dir` with captured (not terminal) stdout and stderr.
fn captured(dir: &Path, args: &[&str]) -> (String, String) {
    let out = common::output(Command::new(env!("CARGO_BIN_EXE_qluks")).current_dir(dir).args(args));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "qluks {args:?} failed: {err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

fn images(dir: &TempDir) {
    let p = dir.path().to_str().unwrap();
    run(Command::new("qemu-img").current_dir(p).args(["create", "-f", "qcow2", "base.qcow2", "8M"]));
    run(Command::new("qemu-io").current_dir(p).args(["-c", "write -P 7 0 8M", "base.qcow2"]));
    run(Command::new("qemu-img").current_dir(p).args([
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]));
    run(Command::new("qemu-io").current_dir(p).args(["-c", "write -P 9 1M 2M", "top.qcow2"]));
}

const LINES: [&str; 7] = [
    "convert -p -O raw base.qcow2 out.raw",
    "convert -p -O qcow2 base.qcow2 out.qcow2",
    "convert -p -O raw top.qcow2 out2.raw",
    "dd -p bs=64k if=base.qcow2 of=dd.raw",
    "commit -p top.qcow2",
    "rebase -p -b out.qcow2 -F qcow2 top.qcow2",
    "create -p -f qcow2 -o preallocation=metadata pre.qcow2 64M",
];

#[test]
fn progress_reaches_100_on_a_terminal() {
    const TEST: &str = "progress_reaches_100_on_a_terminal";
    if !tools(TEST, &["qemu-img", "qemu-io", "script"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    images(&dir);
    for line in LINES {
        let shown = on_terminal(dir.path(), line);
        assert!(shown.contains("    (100.00/100%)"), "{line}: {shown:?}");
        assert!(shown.ends_with('\n'), "{line}: the line is ended: {shown:?}");
        // Quiet wins over -p.
        let quiet = on_terminal(dir.path(), &line.replacen(" -p ", " -p -q ", 1));
        assert!(!quiet.contains("/100%)"), "{line} -q: {quiet:?}");
    }
    // The copies are right (the progress did not disturb them); out.raw and dd.raw hold the
    // base before the commit, out2.raw the top, which the commit kept as it reads.
    run(Command::new("qemu-img").current_dir(dir.path()).args(["compare", "out.raw", "dd.raw"]));
    run(Command::new("qemu-img").current_dir(dir.path()).args(["compare", "top.qcow2", "out2.raw"]));
    run(Command::new("qemu-img").current_dir(dir.path()).args(["compare", "base.qcow2", "out2.raw"]));
}

#[test]
fn progress_is_hidden_when_stderr_is_not_a_terminal() {
    const TEST: &str = "progress_is_hidden_when_stderr_is_not_a_terminal";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    images(&dir);
    for line in LINES {
        let args: Vec<&str> = line.split(' ').collect();
        let (out, err) = captured(dir.path(), &args);
        let said = if line.starts_with("commit") { "Image committed.\n" } else { "" };
        assert_eq!((out.as_str(), err.as_str()), (said, ""), "{line}");
        let mut quiet = args.clone();
        quiet.insert(1, "-q");
        assert_eq!(captured(dir.path(), &quiet), (String::new(), String::new()), "{line} -q");
    }
}
