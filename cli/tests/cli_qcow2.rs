//! The qcow2 command line against qemu-img / qemu-io: convert (byte-identical and sparse),
//! map (same JSON as `qemu-img map`), info, snapshot -l, compare and io on qcow2 images.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tools, TempDir};
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

/// An encrypted base (secret "base pw") under a plain middle layer under an encrypted top
/// (secret "top pw"), partial overwrites at each level.
fn encrypted_chain(dir: &TempDir) -> (std::path::PathBuf, Vec<String>, String) {
    let (base, mid, top) = (dir.join("base.qcow2"), dir.join("mid.qcow2"), dir.join("top.qcow2"));
    let objects = vec!["secret,id=s0,data=base pw".to_string(), "secret,id=s2,data=top pw".to_string()];
    let enc = |id: &str| format!("encrypt.format=luks,encrypt.key-secret={id},encrypt.iter-time=10");
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", &objects[0], "-o", &enc("s0"), s(&base), "2M"]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&mid)]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        &objects[1],
        "-o",
        &enc("s2"),
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&top),
        "3M",
    ]);
    let top_opts =
        format!("driver=qcow2,file.filename={},encrypt.key-secret=s2,backing.backing.encrypt.key-secret=s0", s(&top));
    let mut io = Command::new("qemu-io");
    for o in &objects {
        io.arg("--object").arg(o);
    }
    io.args(["--image-opts", &top_opts, "-c", "write -P 0x71 0 100k", "-c", "write -P 0x72 2M 4k"]);
    run(&mut io);
    let base_opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", s(&base));
    run(Command::new("qemu-io").args([
        "--object",
        &objects[0],
        "--image-opts",
        &base_opts,
        "-c",
        "write -P 0xb5 64k 1M",
    ]));
    let mid_opts = format!("driver=qcow2,file.filename={},backing.encrypt.key-secret=s0", s(&mid));
    run(Command::new("qemu-io").args(["--object", &objects[0], "--image-opts", &mid_opts, "-c", "write -z 512k 64k"]));
    (top, objects, top_opts)
}

#[test]
fn convert_of_an_encrypted_chain_is_byte_identical_and_sparse() {
    let t = "convert_of_an_encrypted_chain_is_byte_identical_and_sparse";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (top, objects, top_opts) = encrypted_chain(&dir);
    let want = dir.join("qemu.raw");
    let mut c = Command::new("qemu-img");
    c.arg("convert");
    for o in &objects {
        c.arg("--object").arg(o);
    }
    c.args(["--image-opts", &top_opts, "-O", "raw", s(&want)]);
    run(&mut c);
    let (top_pw, base_pw, empty) = (dir.join("top.pw"), dir.join("base.pw"), dir.join("empty.pw"));
    std::fs::write(&top_pw, "top pw").unwrap();
    std::fs::write(&base_pw, "base pw").unwrap();
    std::fs::write(&empty, "").unwrap();
    let got = dir.join("qluks.raw");
    run(qluks().args(["convert", "-O", "raw", "--passphrase-file", s(&top_pw)]).args([
        "--backing-passphrase-file",
        s(&empty),
        "--backing-passphrase-file",
        s(&base_pw),
        s(&top),
        s(&got),
    ]));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&want).unwrap());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&got).unwrap();
    assert!(meta.blocks() * 512 < meta.len(), "unallocated ranges are holes ({} blocks)", meta.blocks());

    // A wrong backing passphrase is reported, naming the layer.
    let out = common::output(
        qluks()
            .args(["convert", "-O", "raw", "--passphrase-file", s(&top_pw), "--backing-passphrase-file", s(&empty)])
            .args(["--backing-passphrase-file", s(&top_pw), s(&top), s(&got)]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backing layer 2") && err.contains("passphrase"), "{err}");
}

#[test]
fn map_json_is_the_same_as_qemu_img_map() {
    let t = "map_json_is_the_same_as_qemu_img_map";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (base, top) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 1 0 192k", "-c", "write -z 1M 64k"]).arg(&base));
    let compressed = dir.join("c.qcow2");
    qemu_img(&["convert", "-c", "-O", "qcow2", s(&base), s(&compressed)]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "c.qcow2", "-F", "qcow2", s(&top), "6M"]);
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 2 64k 64k", "-c", "write -z 2M 64k"]).arg(&top));
    let ext = dir.join("ext.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "extended_l2=on", s(&ext), "1M"]);
    let cmds = ["write -P 1 0 2k", "write -z 8k 2k", "write -P 2 64k 64k"];
    run(Command::new("qemu-io").args(["-f", "qcow2"]).args(cmds.iter().flat_map(|c| ["-c", c])).arg(&ext));
    for img in [&base, &compressed, &top, &ext] {
        let ours = run(qluks().args(["map", "--output", "json", s(img)]));
        let theirs = qemu_img(&["map", "--output", "json", s(img)]);
        assert_eq!(ours, theirs, "{}", img.display());
    }
}

#[test]
fn info_describes_geometry_encryption_backing_and_snapshots() {
    let t = "info_describes_geometry_encryption_backing_and_snapshots";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (base, top) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k,compat=0.10", s(&base), "1M"]);
    qemu_img(&["snapshot", "-c", "before", s(&base)]);
    let o = "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,extended_l2=on";
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s,data=x",
        "-o",
        o,
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    let v: serde_json::Value = serde_json::from_str(&run(qluks().args(["info", "--output", "json", s(&top)]))).unwrap();
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual-size"], 1 << 20);
    assert_eq!(v["cluster-size"], 65536);
    let q = &v["format-specific"]["data"];
    assert_eq!(q["compat"], "1.1");
    assert_eq!(q["extended-l2"], true);
    assert_eq!(v["backing-filename"], "base.qcow2");
    assert_eq!(v["backing-filename-format"], "qcow2");
    assert_eq!(q["encrypt"]["format"], "luks");
    assert_eq!(q["encrypt"]["cipher-alg"], "aes-128");
    assert_eq!((&q["encrypt"]["cipher-mode"], &q["encrypt"]["ivgen-alg"]), (&"xts".into(), &"plain64".into()));
    assert_eq!(v["qluks-qcow2"]["incompatible-features"], serde_json::json!(["extended L2 entries"]));
    let b: serde_json::Value =
        serde_json::from_str(&run(qluks().args(["info", "--output", "json", s(&base)]))).unwrap();
    assert_eq!(
        (b["format-specific"]["data"]["compat"].as_str(), b["cluster-size"].as_u64()),
        (Some("0.10"), Some(4096))
    );
    assert_eq!(b["snapshots"][0]["name"], "before");
    let human = run(qluks().args(["info", s(&top)]));
    assert!(human.contains("virtual size: 1048576") && human.contains("cipher alg: aes-128"), "{human}");
}

#[test]
fn snapshot_list_names_every_snapshot() {
    let t = "snapshot_list_names_every_snapshot";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(t);
    let img = dir.join("s.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "1M"]);
    qemu_img(&["snapshot", "-c", "alpha", s(&img)]);
    qemu_img(&["snapshot", "-c", "beta", s(&img)]);
    qemu_img(&["resize", "-q", s(&img), "2M"]);
    run(Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x12 1536k 4k"])
        .arg(&img));
    let out = run(qluks().args(["snapshot", "-l", s(&img)]));
    let rows: Vec<(&str, &str)> =
        out.lines().skip(2).map(|l| l.split_whitespace().collect::<Vec<_>>()).map(|w| (w[0], w[1])).collect();
    assert_eq!(rows, [("1", "alpha"), ("2", "beta")], "{out}");
    // The disk as it was at "beta" (before the write) and now.
    for (snapshot, fill) in [(Some("beta"), 0u8), (Some("snapshot.id=2"), 0), (None, 0x11)] {
        let raw = dir.join("s.raw");
        let mut c = qluks();
        c.args(["convert", "-O", "raw"]);
        if let Some(sn) = snapshot {
            c.args(["-l", sn]);
        }
        run(c.args([s(&img), s(&raw)]));
        let bytes = std::fs::read(&raw).unwrap();
        assert!(bytes[..65536].iter().all(|&b| b == fill), "{snapshot:?}");
        // Byte-identical to qemu-img, which keeps the current (resized) size.
        let want = dir.join("q.raw");
        let mut q = Command::new("qemu-img");
        q.args(["convert", "-O", "raw"]);
        if let Some(sn) = snapshot {
            q.args(["-l", sn]);
        }
        run(q.args([s(&img), s(&want)]));
        assert_eq!(bytes, std::fs::read(&want).unwrap(), "{snapshot:?}");
    }
    let missing = common::output(qluks().args(["convert", "-O", "raw", "-l", "gamma", s(&img), s(&dir.join("x.raw"))]));
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains(&format!("{}: snapshot gamma: no such snapshot", s(&img))), "{err}");
}

#[test]
fn map_json_of_qcow_v1_is_the_same_as_qemu_img_map() {
    let t = "map_json_of_qcow_v1_is_the_same_as_qemu_img_map";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    // (qemu-img 10 exits with an error after `convert -c -O qcow`, so no compressed case here.)
    let img = dir.join("v1.qcow");
    qemu_img(&["create", "-q", "-f", "qcow", s(&img), "4M"]);
    run(Command::new("qemu-io").args(["-f", "qcow", "-c", "write -P 1 0 100k", "-c", "write -P 2 1M 4k"]).arg(&img));
    let ours = run(qluks().args(["map", "--output", "json", s(&img)]));
    assert_eq!(ours, qemu_img(&["map", "--output", "json", s(&img)]));
    assert!(ours.lines().count() >= 3, "{ours}");
}

#[test]
fn compare_and_io_read_qcow2_content() {
    let t = "compare_and_io_read_qcow2_content";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let img = dir.join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "1M"]);
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x3c 4k 8k"]).arg(&img));
    let raw = dir.join("a.raw");
    qemu_img(&["convert", "-O", "raw", s(&img), s(&raw)]);
    let same = run(qluks().args(["compare", s(&img), s(&raw)]));
    assert!(same.contains("Images are identical."), "{same}");
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[10_000] ^= 1;
    std::fs::write(&raw, &bytes).unwrap();
    let out = common::output(qluks().args(["compare", s(&img), s(&raw)]));
    // qemu-img compare's exit status for images that differ.
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Content mismatch at offset 10000!"));
    let read = run(qluks().args(["io", s(&img), "-c", "read -P 0x3c 4k 8k", "-c", "read -P 0 0 4k"]));
    assert!(read.contains("read 8192/8192 bytes at offset 4096"), "{read}");
    let bad = common::output(qluks().args(["io", s(&img), "-c", "read -P 0x3c 0 4k"]));
    assert!(!bad.status.success());
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("Pattern verification failed at offset 0, 4096 bytes (found 0x00, expected 0x3c)"), "{out}");
}
