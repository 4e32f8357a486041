//! The README's table "qemu-img and cryptsetup command lines": every row is run, in order,
//! as written. The left line (qemu-img or cryptsetup) runs in one directory, the right line
//! (qluks) in a twin directory holding the same generated images; both must succeed. For
//! qemu-img rows the qluks line must be the qemu-img line with `qemu-img` replaced by
//! `qluks` (the acceptance: qemu-img's command lines run unchanged with qluks). At the
//! end each tool reads what the other made.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
use std::path::Path;
use std::process::Command;

/// The rows of the README's table: (qemu-img or cryptsetup line, qluks line).
fn rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("\n## qemu-img and cryptsetup command lines\n").expect("the README section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let rows: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.strip_suffix("` |")?.split_once("` | `"))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert!(rows.len() >= 20, "the table has {} rows", rows.len());
    rows
}

/// The images the lines name, generated into `dir`.
fn fixtures(dir: &Path) {
    std::fs::write(dir.join("pw.txt"), "hunter2").unwrap();
    std::fs::write(dir.join("new.txt"), "new-pass").unwrap();
    std::fs::write(dir.join("disk.raw"), common::pattern(13, 16 << 20)).unwrap();
    run(Command::new("qemu-img").current_dir(dir).args(["create", "-q", "-f", "qcow2", "base.qcow2", "16M"]));
    run(Command::new("qemu-io").current_dir(dir).args(["-c", "write -P 3 0 8M", "base.qcow2"]));
    // cryptsetup luksFormat formats an existing file.
    std::fs::File::create(dir.join("vol.luks")).unwrap().set_len(16 << 20).unwrap();
}

/// Runs `line` with `sh -c` in `dir`, qluks first on PATH; fails the test unless it succeeds.
fn shell(dir: &Path, line: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_qluks")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = common::output(Command::new("sh").current_dir(dir).env("PATH", path).args(["-c", line]));
    assert!(out.status.success(), "`{line}` failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_command_lines_run_with_qemu_img_cryptsetup_and_qluks() {
    const TEST: &str = "the_readme_command_lines_run_with_qemu_img_cryptsetup_and_qluks";
    if !tools(TEST, &["qemu-img", "qemu-io", "cryptsetup"]) {
        return;
    }
    let rows = rows();
    let (peer, ours) = (TempDir::new(&format!("{TEST}-peer")), TempDir::new(&format!("{TEST}-qluks")));
    fixtures(peer.path());
    fixtures(ours.path());
    let mut verbs = Vec::new();
    for (left, right) in &rows {
        assert!(right.starts_with("qluks "), "{right}");
        if left.starts_with("qemu-img ") {
            assert_eq!(right, &left.replacen("qemu-img", "qluks", 1), "the qluks line is the qemu-img line");
            verbs.push(left.split(' ').nth(1).unwrap().to_string());
        } else {
            assert!(left.starts_with("cryptsetup "), "{left}");
        }
        shell(peer.path(), left);
        shell(ours.path(), right);
    }
    // Every qemu-img verb of the issue has its row (measure comes with the JSON branch).
    for verb in [
        "info", "check", "convert", "create", "compare", "map", "resize", "snapshot", "amend", "commit", "rebase",
        "dd", "measure",
    ] {
        assert!(verbs.iter().any(|v| v == verb), "no README row for qemu-img {verb}");
    }
    // Each tool reads what the other made: the same content, the same passphrases.
    let (p, o) = (peer.path(), ours.path());
    let both = |name: &str| (p.join(name).display().to_string(), o.join(name).display().to_string());
    let (a, b) = both("head.raw");
    run(Command::new("cmp").args([&a, &b]));
    let (a, b) = both("overlay.qcow2");
    run(Command::new("qemu-img").args(["compare", &a, &b]));
    let (a, b) = both("disk.qcow2");
    run(Command::new("qemu-img").args([
        "compare",
        "--object",
        "secret,id=s,data=new-pass",
        "--image-opts",
        &format!("driver=qcow2,file.filename={a},encrypt.key-secret=s"),
        &format!("driver=qcow2,file.filename={b},encrypt.key-secret=s"),
    ]));
    let (_, b) = both("vol.luks");
    run(Command::new("cryptsetup").args([
        "open",
        "--test-passphrase",
        "--key-file",
        &p.join("pw.txt").display().to_string(),
        &b,
    ]));
}
