//! Internal snapshots written by qluks (create, apply, delete) against qemu-img: the same
//! operations on copies of the same images (v2, v3, LUKS, extended L2, refcount widths 4, 16
//! and 64, images with qemu-made snapshots and compressed clusters); then the active disk and
//! every snapshot (`qemu-img convert -l snapshot.id=N`) must be identical in both copies,
//! `qemu-img check` must be clean (exit 0) on the qluks copy, and `qemu-img snapshot -l`
//! must list what qluks made. Crash injection: every write of each operation fails in turn
//! (a device that fails every write after the Nth); then `qemu-img check` and the disk's
//! content (before or after the operation, snapshots included) are checked.
mod common;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use qluks::io::BlockIo;
use qluks::qcow2::{Error, Qcow2, Qcow2Image};

const SECRET: &str = "snapshot-secret";
/// A fixed date for snapshots qluks makes (the core has no clock).
const DATE: (u32, u32) = (1_764_000_000, 123_000_000);

/// An image and how QEMU opens it.
#[derive(Clone)]
struct Img {
    path: PathBuf,
    objects: Vec<String>,
    opts: String,
    passphrase: Option<String>,
}

impl Img {
    fn create(dir: &common::TempDir, name: &str, options: &str, size: &str, luks: bool) -> Img {
        let path = dir.join(name);
        let p = path.to_str().unwrap().to_string();
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", "qcow2"]);
        let mut o = options.to_string();
        let mut img = Img {
            path: path.clone(),
            objects: vec![],
            opts: format!("driver=qcow2,file.filename={p}"),
            passphrase: None,
        };
        if luks {
            let obj = format!("secret,id=sec0,data={SECRET}");
            c.args(["--object", &obj]);
            img.objects.push(obj);
            img.opts.push_str(",encrypt.key-secret=sec0");
            img.passphrase = Some(SECRET.into());
            if !o.is_empty() {
                o.push(',');
            }
            o.push_str("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10");
        }
        if !o.is_empty() {
            c.args(["-o", &o]);
        }
        c.args([&p, size]);
        common::run(&mut c);
        img
    }

    fn copy_to(&self, path: &Path) -> Img {
        std::fs::copy(&self.path, path).unwrap();
        let from = format!("file.filename={}", self.path.to_str().unwrap());
        let to = format!("file.filename={}", path.to_str().unwrap());
        Img { path: path.into(), opts: self.opts.replace(&from, &to), ..self.clone() }
    }

    fn objects(&self) -> Vec<&str> {
        self.objects.iter().map(String::as_str).collect()
    }

    fn qemu_io(&self, cmds: &[&str]) {
        common::qemu_io(&self.objects(), &self.opts, cmds);
    }

    fn qemu_img(&self, verb: &str, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("qemu-img");
        c.arg(verb);
        for o in &self.objects {
            c.args(["--object", o]);
        }
        c.args(args).args(["--image-opts", &self.opts]);
        common::output(&mut c)
    }

    /// `qemu-img snapshot FLAG NAME` (-c, -a, -d), which must succeed.
    fn qemu_snapshot(&self, flag: &str, name: &str) {
        let out = self.qemu_img("snapshot", &[flag, name]);
        assert!(out.status.success(), "qemu-img snapshot {flag} {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The active disk (`snapshot`: None) or a snapshot by id, as `qemu-img convert` reads it.
    fn raw(&self, dir: &common::TempDir, snapshot: Option<&str>) -> Vec<u8> {
        let out = dir.join("convert.raw");
        let mut c = Command::new("qemu-img");
        c.arg("convert");
        for o in &self.objects {
            c.args(["--object", o]);
        }
        if let Some(id) = snapshot {
            c.args(["-l", &format!("snapshot.id={id}")]);
        }
        c.args(["--image-opts", &self.opts, "-O", "raw"]).arg(&out);
        common::run(&mut c);
        std::fs::read(&out).unwrap()
    }

    /// `qemu-img check`: its exit code and output.
    fn check(&self) -> (i32, String) {
        let out = self.qemu_img("check", &[]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    fn check_clean(&self) {
        let (code, text) = self.check();
        assert_eq!(code, 0, "qemu-img check {}:\n{text}", self.path.display());
    }

    /// (id, name, disk size) of every snapshot, read by qluks.
    fn snapshots(&self) -> Vec<(String, String, Option<u64>)> {
        let mut q: Qcow2Image<File> = Qcow2::open_metadata(File::open(&self.path).unwrap(), None).unwrap();
        q.snapshots().map(|s| s.unwrap()).map(|s| (s.id.to_string(), s.name.to_string(), s.disk_size)).collect()
    }

    fn open(&self) -> Qcow2Image<File> {
        let f = OpenOptions::new().read(true).write(true).open(&self.path).unwrap();
        Qcow2::open(f, self.passphrase.as_deref().map(str::as_bytes)).unwrap()
    }

    fn create_snapshot(&self, name: &str) {
        let mut q = self.open();
        let mut scratch = vec![0u8; q.snapshot_scratch_len()];
        q.snapshot_create(name.as_bytes(), DATE.0, DATE.1, &mut scratch).unwrap();
        q.flush().unwrap();
    }

    fn apply_snapshot(&self, name: &str) {
        let mut q = self.open();
        let mut scratch = vec![0u8; q.snapshot_scratch_len()];
        let s = q.find_snapshot(name.as_bytes()).unwrap();
        q.snapshot_apply(&s, &mut scratch).unwrap();
        q.flush().unwrap();
    }

    fn delete_snapshot(&self, name: &str) {
        let mut q = self.open();
        let mut scratch = vec![0u8; q.snapshot_scratch_len()];
        let s = q.find_snapshot(name.as_bytes()).unwrap();
        q.snapshot_delete(&s, &mut scratch).unwrap();
        q.flush().unwrap();
    }
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = (i + 16).min(got.len());
        panic!("{what}: first difference at {i:#x}: got {:02x?}, want {:02x?}", &got[i..end], &want[i..end]);
    }
}

/// Both copies hold the same disk and the same snapshots (ids, names, sizes and contents), and
/// the qluks copy is clean.
fn same_states(dir: &common::TempDir, ours: &Img, theirs: &Img, step: &str) {
    ours.check_clean();
    let list = ours.snapshots();
    assert_eq!(list, theirs.snapshots(), "{step}: snapshot lists");
    assert_same(&ours.raw(dir, None), &theirs.raw(dir, None), &format!("{step}: active disk"));
    for (id, name, _) in &list {
        assert_same(&ours.raw(dir, Some(id)), &theirs.raw(dir, Some(id)), &format!("{step}: snapshot {id} {name}"));
    }
    // qemu-img lists what qluks made.
    let out = ours.qemu_img("snapshot", &["-l"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for (id, name, _) in &list {
        assert!(text.lines().any(|l| l.split_whitespace().take(2).eq([id.as_str(), name.as_str()])), "{step}: {text}");
    }
}

/// Guest data through qemu-io: plain and zero writes, a discard, compressed clusters.
fn workload(img: &Img, v3: bool, compressed: bool) {
    let mut cmds = vec!["write -P 0x11 0 192k", "write -P 0x22 1M 64k", "write -P 0x23 1088k 8k", "discard 1M 64k"];
    if v3 {
        cmds.push("write -z 128k 64k");
    }
    if compressed {
        cmds.extend(["write -c -P 0x33 2M 64k", "write -c -P 0x34 2112k 64k"]);
    }
    img.qemu_io(&cmds);
}

/// The differential scenario on one kind of image.
fn scenario(test: &str, options: &str, luks: bool, v3: bool, compressed: bool) {
    if !common::tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(test);
    let base = Img::create(&dir, "base.qcow2", options, "4M", luks);
    workload(&base, v3, compressed);
    base.qemu_snapshot("-c", "q1");
    base.qemu_io(&["write -P 0x44 0 64k", "write -P 0x45 3M 4k"]);
    let ours = base.copy_to(&dir.join("ours.qcow2"));
    let theirs = base.copy_to(&dir.join("theirs.qcow2"));

    ours.create_snapshot("s1");
    theirs.qemu_snapshot("-c", "s1");
    same_states(&dir, &ours, &theirs, "create s1");

    // Writes after the snapshot copy on write (in both).
    for img in [&ours, &theirs] {
        img.qemu_io(&["write -P 0x55 32k 64k", "write -P 0x56 1536k 4k", "write -P 0x57 2M 64k"]);
    }
    same_states(&dir, &ours, &theirs, "writes after s1");

    ours.create_snapshot("s2");
    theirs.qemu_snapshot("-c", "s2");
    same_states(&dir, &ours, &theirs, "create s2");

    ours.apply_snapshot("q1");
    theirs.qemu_snapshot("-a", "q1");
    same_states(&dir, &ours, &theirs, "apply q1");

    for img in [&ours, &theirs] {
        img.qemu_io(&["write -P 0x66 96k 64k"]);
    }
    same_states(&dir, &ours, &theirs, "writes after apply");

    ours.delete_snapshot("s1");
    theirs.qemu_snapshot("-d", "s1");
    same_states(&dir, &ours, &theirs, "delete s1");

    ours.apply_snapshot("3"); // s2, by id
    theirs.qemu_snapshot("-a", "s2");
    same_states(&dir, &ours, &theirs, "apply s2");

    for name in ["q1", "s2"] {
        ours.delete_snapshot(name);
        theirs.qemu_snapshot("-d", name);
        same_states(&dir, &ours, &theirs, &format!("delete {name}"));
    }
    assert!(ours.snapshots().is_empty());
}

#[test]
fn v3_with_compressed_clusters_and_a_qemu_snapshot() {
    scenario("v3_with_compressed_clusters_and_a_qemu_snapshot", "", false, true, true);
}

#[test]
fn v2_image() {
    scenario("v2_image", "compat=0.10", false, false, true);
}

#[test]
fn luks_image() {
    scenario("luks_image", "", true, true, false);
}

#[test]
fn extended_l2() {
    scenario("extended_l2", "extended_l2=on,cluster_size=64k", false, true, true);
}

#[test]
fn refcount_widths_4_and_64_small_clusters() {
    scenario("refcount_4", "refcount_bits=4,cluster_size=4k", false, true, false);
    scenario("refcount_64", "refcount_bits=64,cluster_size=512", false, true, false);
}

/// qemu-img refuses a snapshot whose refcounts would overflow (`refcount_bits=1` as soon as a
/// cluster is allocated; 4-bit refcounts of a cluster holding 16 compressed streams): qluks
/// refuses too, with a typed error, before writing anything (qemu-img leaks its L1 copy).
#[test]
fn refcount_overflow_is_refused_like_qemu_img() {
    let t = "refcount_overflow_is_refused_like_qemu_img";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let one = Img::create(&dir, "one.qcow2", "refcount_bits=1", "1M", false);
    // An empty image can take a snapshot (nothing is shared).
    one.create_snapshot("empty");
    one.check_clean();
    one.qemu_io(&["write -P 0x11 0 64k"]);
    let four = Img::create(&dir, "four.qcow2", "refcount_bits=4,cluster_size=4k", "1M", false);
    four.qemu_io(&["write -c -P 0x22 0 64k"]);
    for (img, bits) in [(&one, 1), (&four, 4)] {
        let before = std::fs::read(&img.path).unwrap();
        let mut q = img.open();
        let mut scratch = vec![0u8; q.snapshot_scratch_len()];
        match q.snapshot_create(b"s", DATE.0, DATE.1, &mut scratch) {
            Err(Error::RefcountOverflow { refcount_bits, .. }) => assert_eq!(refcount_bits, bits),
            other => panic!("{bits}-bit refcounts: {other:?}"),
        }
        drop(q);
        assert!(std::fs::read(&img.path).unwrap() == before, "{bits} bits: nothing written");
        let theirs = img.copy_to(&dir.join("theirs.qcow2"));
        assert!(!theirs.qemu_img("snapshot", &["-c", "s"]).status.success(), "qemu-img refuses too");
    }
}
