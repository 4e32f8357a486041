//! `qluks snapshot -c|-a|-d|-l` against qemu-img: what qluks creates, applies and deletes,
//! qemu-img lists and reads (and finds clean); named errors that change nothing.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{output, run, tools, TempDir};
use std::path::Path;
use std::process::Command;

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

/// `qemu-img convert` of the active disk or (with `-l snapshot.name=NAME`) a snapshot.
fn raw(dir: &TempDir, pre: &[&str], snapshot: Option<&str>) -> Vec<u8> {
    let out = dir.join("out.raw");
    let mut c = Command::new("qemu-img");
    c.arg("convert");
    if let Some(name) = snapshot {
        c.args(["-l", &format!("snapshot.name={name}")]);
    }
    c.args(pre).args(["-O", "raw", s(&out)]);
    run(&mut c);
    std::fs::read(out).unwrap()
}

fn check_clean(pre: &[&str]) {
    let out = output(Command::new("qemu-img").arg("check").args(pre));
    assert!(out.status.success(), "qemu-img check: {}", String::from_utf8_lossy(&out.stdout));
}

/// Tags (names) in `qemu-img snapshot -l` output, with their ids.
fn listed(text: &str) -> Vec<(String, String)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

#[test]
fn create_apply_delete_as_qemu_img_sees_them() {
    let t = "create_apply_delete_as_qemu_img_sees_them";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let img = dir.join("d.qcow2");
    let p = s(&img);
    qemu_img(&["create", "-q", "-f", "qcow2", p, "2M"]);
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x11 0 128k", p]));
    run(qluks().args(["snapshot", "-c", "first", p]));
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x22 64k 128k", p]));
    run(qluks().args(["snapshot", "-q", "-c", "second", p]));
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x33 0 16k", p]));
    let pre = ["-f", "qcow2", p];
    check_clean(&pre);
    let first = raw(&dir, &pre, Some("first"));
    let second = raw(&dir, &pre, Some("second"));
    assert_eq!(first[0], 0x11);
    assert_eq!((second[0], second[64 << 10]), (0x11, 0x22));

    let theirs = qemu_img(&["snapshot", "-l", p]);
    assert_eq!(listed(&theirs), [("1".into(), "first".into()), ("2".into(), "second".into())]);
    let ours = run(qluks().args(["snapshot", "-l", p]));
    assert_eq!(listed(&ours), listed(&theirs));

    run(qluks().args(["snapshot", "-a", "first", p]));
    check_clean(&pre);
    assert!(raw(&dir, &pre, None) == first, "the active disk is the snapshot's");
    run(qluks().args(["snapshot", "-a", "2", p])); // by id
    assert!(raw(&dir, &pre, None) == second);

    run(qluks().args(["snapshot", "-d", "second", p]));
    check_clean(&pre);
    assert_eq!(listed(&qemu_img(&["snapshot", "-l", p])), [("1".into(), "first".into())]);
    assert!(raw(&dir, &pre, None) == second, "deleting a snapshot leaves the disk alone");
    run(qluks().args(["snapshot", "-d", "1", p])); // no such name: by id
    check_clean(&pre);
    assert_eq!(qemu_img(&["snapshot", "-l", p]), "");
    // qemu-img takes the next snapshot on the image qluks wrote.
    qemu_img(&["snapshot", "-c", "third", p]);
    assert_eq!(listed(&run(qluks().args(["snapshot", "-l", p]))), [("1".into(), "third".into())]);
}

#[test]
fn luks_image_with_a_passphrase_file() {
    let t = "luks_image_with_a_passphrase_file";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let img = dir.join("l.qcow2");
    let p = s(&img);
    let pass = dir.join("pass");
    std::fs::write(&pass, "snap pw").unwrap();
    let object = "secret,id=s0,data=snap pw";
    let opts = format!("driver=qcow2,file.filename={p},encrypt.key-secret=s0");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        object,
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
        p,
        "1M",
    ]);
    let io = |cmd: &str| run(Command::new("qemu-io").args(["--object", object, "--image-opts", &opts, "-c", cmd]));
    io("write -P 0x44 0 64k");
    run(qluks().args(["snapshot", "--passphrase-file", s(&pass), "-c", "before", p]));
    io("write -P 0x55 0 64k");
    let pre = ["--object", object, "--image-opts", &opts];
    check_clean(&pre);
    assert_eq!(raw(&dir, &pre, Some("before"))[0], 0x44);
    assert_eq!(raw(&dir, &pre, None)[0], 0x55);
    run(qluks().args(["snapshot", "--passphrase-file", s(&pass), "-a", "before", p]));
    assert_eq!(raw(&dir, &pre, None)[0], 0x44);
    run(qluks().args(["snapshot", "--passphrase-file", s(&pass), "-d", "before", p]));
    check_clean(&pre);
    assert_eq!(raw(&dir, &pre, None)[0], 0x44);
}

#[test]
fn errors_name_the_file_and_change_nothing() {
    let t = "errors_name_the_file_and_change_nothing";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let img = dir.join("e.qcow2");
    let p = s(&img);
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", p, "1M"]);
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x11 0 64k", p]));
    let before = std::fs::read(&img).unwrap();
    for (args, want) in [
        (vec!["-a", "nothing"], "could not apply snapshot 'nothing': no such snapshot"),
        (vec!["-d", "nothing"], "could not delete snapshot 'nothing': no such snapshot"),
        (vec!["-c", "x"], "could not create snapshot 'x': refcount of the cluster at"),
        (vec!["-c", ""], "could not create snapshot '': snapshot name of 0 bytes"),
    ] {
        let out = output(qluks().arg("snapshot").args(&args).arg(p));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(p) && err.contains(want), "{args:?}: {err}");
        assert!(std::fs::read(&img).unwrap() == before, "{args:?} changed the image");
    }
    let out = output(qluks().args(["snapshot", "-c", "a", "-d", "b", p]));
    assert!(!out.status.success(), "one action at a time");
}

/// A snapshot of an image whose L1 table spans several refcount blocks' ranges (1 GiB at
/// 512-byte clusters: a 512-cluster L1 copy, each block covering 256 clusters) gets its L1 copy
/// as one run near the data, as QEMU places it: the contiguous allocator once created a
/// refcount block inside every candidate run and wandered to a 5.9 GB offset (20 s).
#[test]
fn snapshot_of_an_l1_wider_than_a_refcount_block_stays_near_the_data() {
    let t = "snapshot_of_an_l1_wider_than_a_refcount_block_stays_near_the_data";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let img = dir.join("d.qcow2");
    let p = s(&img);
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "1G"]);
    run(Command::new("qemu-io").args(["-c", "write -P 7 0 64k", "-c", "write -P 9 900M 64k", p]));
    let before = raw(&dir, &[p], None);
    run(qluks().args(["snapshot", "-c", "s1", p]));
    check_clean(&[p]);
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(size < 4 << 20, "the image grew to {size} bytes for a 256 KiB L1 copy");
    assert!(raw(&dir, &[p], Some("s1")) == before, "snapshot s1 differs from the disk it was taken of");
}
