//! `qluks resize` and `qluks amend` through the built binary, against `qemu-img resize` and
//! `qemu-img amend` on copies of the same images, and their errors (named file, no panic).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
use std::path::Path;
use std::process::{Command, Output};

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn qluks_out(args: &[&str]) -> Output {
    common::output(qluks().args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn header_fields(p: &Path) -> (u64, u32, u64) {
    let b = std::fs::read(p).unwrap();
    (
        u64::from_be_bytes(b[24..32].try_into().unwrap()),
        u32::from_be_bytes(b[36..40].try_into().unwrap()),
        u64::from_be_bytes(b[40..48].try_into().unwrap()),
    )
}

fn opts(p: &Path) -> String {
    format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", s(p))
}

#[test]
fn resize_like_qemu_img() {
    if !tools("resize_like_qemu_img", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new("cli-resize");
    let a = dir.join("a.qcow2");
    let b = dir.join("b.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", s(&a), "1M"]));
    run(Command::new("qemu-io").args(["-c", "write -P 0x3c 0 1M", s(&a)]));
    std::fs::copy(&a, &b).unwrap();
    let out = run(qluks().args(["resize", s(&a), "+63M"]));
    assert_eq!(out, "Image resized.\n");
    run(Command::new("qemu-img").args(["resize", "-q", s(&b), "+63M"]));
    assert_eq!(header_fields(&a), header_fields(&b));
    run(Command::new("qemu-img").args(["check", s(&a)]));
    run(Command::new("qemu-img").args(["compare", s(&a), s(&b)]));

    // Shrink: refused without --shrink (the file named, nothing written), then as qemu-img.
    let before = std::fs::read(&a).unwrap();
    let o = qluks_out(&["resize", s(&a), "512k"]);
    assert!(!o.status.success() && stderr(&o).contains(s(&a)) && stderr(&o).contains("--shrink"), "{}", stderr(&o));
    assert!(std::fs::read(&a).unwrap() == before);
    run(qluks().args(["resize", "--shrink", "-f", "qcow2", s(&a), "512k"]));
    run(Command::new("qemu-img").args(["resize", "-q", "--shrink", s(&b), "512k"]));
    assert_eq!(header_fields(&a), header_fields(&b));
    run(Command::new("qemu-img").args(["check", s(&a)]));
    run(Command::new("qemu-img").args(["compare", s(&a), s(&b)]));
    run(qluks().args(["resize", "--shrink", s(&a), "-256k"]));
    assert_eq!(header_fields(&a).0, 256 << 10);

    // Unaligned sizes: refused, as qemu-img does for qcow2.
    let o = qluks_out(&["resize", s(&a), "+1000"]);
    assert!(!o.status.success() && stderr(&o).contains("multiple of 512"), "{}", stderr(&o));
    let o = qluks_out(&["resize", s(&a), "-1G"]);
    assert!(!o.status.success() && stderr(&o).contains(s(&a)), "{}", stderr(&o));

    // Raw files: exact length, like qemu-img.
    let raw = dir.join("r.raw");
    std::fs::write(&raw, vec![7u8; 4096]).unwrap();
    run(qluks().args(["resize", "-f", "raw", s(&raw), "+1000"]));
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 5096);

    // An overlay over a longer backing file: the new area reads as zeros, as with qemu-img.
    let base = dir.join("base.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", s(&base), "4M"]));
    run(Command::new("qemu-io").args(["-c", "write -P 0x77 0 4M", s(&base)]));
    let top = dir.join("top.qcow2");
    run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&top),
        "1M",
    ]));
    let top2 = dir.join("top2.qcow2");
    std::fs::copy(&top, &top2).unwrap();
    run(qluks().args(["resize", s(&top), "4M"]));
    run(Command::new("qemu-img").args(["resize", "-q", s(&top2), "4M"]));
    run(Command::new("qemu-io").args(["-c", "read -P 0x77 0 1M", "-c", "read -P 0 1M 3M", s(&top)]));
    run(Command::new("qemu-img").args(["compare", s(&top), s(&top2)]));
    run(Command::new("qemu-img").args(["check", s(&top)]));

    // LUKS: the passphrase from a file.
    let pass = dir.join("pass");
    std::fs::write(&pass, "cli-pass").unwrap();
    let l = dir.join("l.qcow2");
    let obj = format!("secret,id=sec0,file={}", s(&pass));
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "--object", &obj]).args([
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        s(&l),
        "16M",
    ]));
    run(Command::new("qemu-io").args(["--object", &obj, "--image-opts", &opts(&l), "-c", "write -P 0x4d 0 1M"]));
    run(qluks().args(["resize", "--passphrase-file", s(&pass), s(&l), "3G"]));
    run(Command::new("qemu-img").args(["check", "--object", &obj, "--image-opts", &opts(&l)]));
    run(Command::new("qemu-io").args([
        "--object",
        &obj,
        "--image-opts",
        &opts(&l),
        "-c",
        "read -P 0x4d 0 1M",
        "-c",
        "read -P 0 3071M 1M",
    ]));
}

#[test]
fn amend_keyslots_like_qemu_img() {
    if !tools("amend_keyslots_like_qemu_img", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new("cli-amend");
    let l = dir.join("l.qcow2");
    let sec0 = "secret,id=sec0,data=old-pass";
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "--object", sec0]).args([
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        s(&l),
        "4M",
    ]));
    run(Command::new("qemu-io").args(["--object", sec0, "--image-opts", &opts(&l), "-c", "write -P 0x6e 0 1M"]));
    // qemu-img's spelling.
    run(qluks().args(["amend", "--object", sec0, "--object", "secret,id=sec1,data=new-pass"]).args([
        "-o",
        "encrypt.key-secret=sec0,encrypt.state=active,encrypt.keyslot=2,encrypt.new-secret=sec1,encrypt.iter-time=10",
        s(&l),
    ]));
    let new_obj = "secret,id=sec0,data=new-pass";
    run(Command::new("qemu-io").args(["--object", new_obj, "--image-opts", &opts(&l), "-c", "read -P 0x6e 0 1M"]));
    let info = run(Command::new("qemu-img").args(["info", "--output=json", s(&l)]));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let slots = &v["format-specific"]["data"]["encrypt"]["slots"];
    assert_eq!(slots[2]["active"], true, "{info}");
    // Erase the old passphrase's keyslots, passphrases from files.
    let old = dir.join("old");
    std::fs::write(&old, "old-pass").unwrap();
    run(qluks().args(["amend", "-o", "encrypt.state=inactive", "--old-passphrase-file", s(&old), s(&l)]));
    let o =
        common::output(Command::new("qemu-io").args(["--object", sec0, "--image-opts", &opts(&l), "-c", "read 0 512"]));
    assert!(!o.status.success(), "qemu opens with the erased passphrase");
    run(Command::new("qemu-img").args(["check", "--object", new_obj, "--image-opts", &opts(&l)]));
    // Errors name the file and QEMU's reason; nothing changes.
    let before = std::fs::read(&l).unwrap();
    let o = qluks_out(&["amend", "-o", "encrypt.state=inactive,encrypt.keyslot=2", s(&l)]);
    assert!(
        !o.status.success() && stderr(&o).contains(s(&l)) && stderr(&o).contains("no active keyslot"),
        "{}",
        stderr(&o)
    );
    let o = qluks_out(&["amend", "-o", "encrypt.state=inactive,encrypt.keyslot=9", s(&l)]);
    assert!(!o.status.success() && stderr(&o).contains("between 0 and 7"), "{}", stderr(&o));
    let o = qluks_out(&["amend", "-o", "encrypt.state=active,encrypt.new-secret=nope", s(&l)]);
    assert!(!o.status.success() && stderr(&o).contains("id=nope"), "{}", stderr(&o));
    let o = qluks_out(&["amend", "-o", "encrypt.cipher-alg=aes-128", s(&l)]);
    assert!(!o.status.success() && stderr(&o).contains("not supported"), "{}", stderr(&o));
    assert!(std::fs::read(&l).unwrap() == before);
    let plain = dir.join("p.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", s(&plain), "1M"]));
    let o = qluks_out(&["amend", "-o", "encrypt.state=inactive,encrypt.keyslot=0", s(&plain)]);
    assert!(!o.status.success() && stderr(&o).contains("not LUKS"), "{}", stderr(&o));
}
