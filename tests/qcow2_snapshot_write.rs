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

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

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
    let mut c = Command::new("qemu-img");
    c.arg("compare");
    for o in &ours.objects {
        c.args(["--object", o]);
    }
    let out = common::output(c.args(["--image-opts", &ours.opts, &theirs.opts]));
    assert!(out.status.success(), "{step}: qemu-img compare: {}", String::from_utf8_lossy(&out.stdout));
    for (id, name, _) in &list {
        assert_same(&ours.raw(dir, Some(id)), &theirs.raw(dir, Some(id)), &format!("{step}: snapshot {id} {name}"));
    }
    // qluks reads what qemu-img made (its own reader, the snapshot's size).
    let mut q = theirs.open();
    for (i, (id, name, size)) in list.iter().enumerate() {
        let want = theirs.raw(dir, Some(id));
        let snap = q.find_snapshot(id.as_bytes()).unwrap();
        assert_eq!(snap.index as usize, i);
        q.select_snapshot(&snap).unwrap();
        let len = size.unwrap() as usize;
        let mut got = vec![0u8; len];
        let mut scratch = vec![0u8; q.compressed_scratch_len()];
        q.read_at_with_scratch(0, &mut got, &mut scratch).unwrap();
        // `convert -l` reads the snapshot at the disk's current size (zeros past the
        // snapshot's end; a larger snapshot's tail is not shown).
        let m = len.min(want.len());
        assert_same(&got[..m], &want[..m], &format!("{step}: qluks reads snapshot {id} {name}"));
        assert!(want[m..].iter().all(|&b| b == 0), "{step}: snapshot {id} past its size");
    }
    drop(q);
    // qemu-img lists what qluks made.
    let out = ours.qemu_img("snapshot", &["-l"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for (id, name, _) in &list {
        assert!(text.lines().any(|l| l.split_whitespace().take(2).eq([id.as_str(), name.as_str()])), "{step}: {text}");
    }
}

/// The raw bytes of the last snapshot table entry.
fn last_entry(img: &Img) -> Vec<u8> {
    let file = std::fs::read(&img.path).unwrap();
    let be32 = |at: usize| u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    let nb = be32(60);
    let mut at = u64::from_be_bytes(file[64..72].try_into().unwrap()) as usize;
    let mut entry = Vec::new();
    for _ in 0..nb {
        let len = (40
            + be32(at + 36)
            + usize::from(u16::from_be_bytes([file[at + 12], file[at + 13]]))
            + usize::from(u16::from_be_bytes([file[at + 14], file[at + 15]])))
        .next_multiple_of(8);
        // The file may end before the last entry's padding.
        entry = file[at..(at + len).min(file.len())].to_vec();
        entry.resize(len, 0);
        at += len;
    }
    entry
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
    // The entry is QEMU's, byte for byte, but for its L1 table offset and date.
    let (a, b) = (last_entry(&ours), last_entry(&theirs));
    assert_eq!((a.len(), &a[8..16], &a[24..]), (b.len(), &b[8..16], &b[24..]), "snapshot table entries");

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
    // 8 compressed streams in one cluster: refcount 8, and +8 would make 16.
    let eight = Img::create(&dir, "eight.qcow2", "refcount_bits=4,cluster_size=4k", "1M", false);
    eight.qemu_io(&["write -c -P 0x22 0 32k"]);
    for (img, bits) in [(&one, 1), (&four, 4), (&eight, 4)] {
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

/// An in-memory device whose writes fail from the `limit`th on (a crash: what was written
/// before stays, nothing after), shared so the test can look at the bytes afterwards.
#[derive(Clone)]
struct CrashIo {
    data: Arc<Mutex<Vec<u8>>>,
    writes: Arc<Mutex<(u64, u64)>>,
}

impl CrashIo {
    fn new(bytes: Vec<u8>, limit: u64) -> CrashIo {
        CrashIo { data: Arc::new(Mutex::new(bytes)), writes: Arc::new(Mutex::new((0, limit))) }
    }

    fn writes(&self) -> u64 {
        self.writes.lock().unwrap().0
    }
}

impl BlockIo for CrashIo {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let d = self.data.lock().unwrap();
        let end = offset as usize + buf.len();
        if end > d.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&d[offset as usize..end]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        let mut w = self.writes.lock().unwrap();
        if w.0 >= w.1 {
            return Err(std::io::Error::other("injected crash"));
        }
        w.0 += 1;
        let mut d = self.data.lock().unwrap();
        let end = offset as usize + buf.len();
        if end > d.len() {
            d.resize(end, 0);
        }
        d[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&mut self) -> std::io::Result<u64> {
        Ok(self.data.lock().unwrap().len() as u64)
    }
}

#[derive(Clone, Copy, Debug)]
enum SnapOp {
    Create(&'static str),
    Apply(&'static str),
    Delete(&'static str),
}

/// Runs `op` on `bytes` through a device that crashes at write `limit`: the bytes left and
/// the writes done.
fn run_crashing(bytes: &[u8], passphrase: Option<&str>, op: SnapOp, limit: u64) -> (Vec<u8>, u64, bool) {
    let io = CrashIo::new(bytes.to_vec(), limit);
    let mut q: Qcow2Image<CrashIo> = Qcow2::open(io.clone(), passphrase.map(str::as_bytes)).unwrap();
    let mut scratch = vec![0u8; q.snapshot_scratch_len()];
    let r = match op {
        SnapOp::Create(name) => q.snapshot_create(name.as_bytes(), DATE.0, DATE.1, &mut scratch).map(drop),
        SnapOp::Apply(name) => q.find_snapshot(name.as_bytes()).and_then(|s| q.snapshot_apply(&s, &mut scratch)),
        SnapOp::Delete(name) => q.find_snapshot(name.as_bytes()).and_then(|s| q.snapshot_delete(&s, &mut scratch)),
    };
    let r = r.and_then(|()| q.flush());
    if limit == u64::MAX {
        if let Err(e) = &r {
            panic!("{op:?}: {e}");
        }
    }
    let ok = r.is_ok();
    drop(q);
    let writes = io.writes();
    let data = io.data.lock().unwrap().clone();
    (data, writes, ok)
}

/// What a reader sees: the snapshots (id, name, size) and the contents of the active disk and
/// of each snapshot.
type State = (Vec<(String, String, Option<u64>)>, Vec<Vec<u8>>);

fn state(dir: &common::TempDir, img: &Img) -> State {
    let list = img.snapshots();
    let mut contents = vec![img.raw(dir, None)];
    for (id, _, _) in &list {
        contents.push(img.raw(dir, Some(id)));
    }
    (list, contents)
}

/// Crash injection at every write of `op`: after each, `qemu-img check` finds no corruption
/// (exit 0, or 3 for leaks) and the image reads as before or as after the operation.
fn crash_points(test: &str, options: &str, luks: bool, ops: &[SnapOp]) {
    if !common::tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(test);
    let base = Img::create(&dir, "base.qcow2", options, "2M", luks);
    base.qemu_io(&["write -P 0x11 0 192k", "write -P 0x22 1M 64k"]);
    base.qemu_snapshot("-c", "q1");
    base.qemu_io(&["write -P 0x33 64k 64k", "write -P 0x44 1536k 4k"]);
    let work = base.copy_to(&dir.join("work.qcow2"));
    let crash = base.copy_to(&dir.join("crash.qcow2"));
    let pass = base.passphrase.clone();
    for &op in ops {
        let bytes = std::fs::read(&work.path).unwrap();
        let before = state(&dir, &work);
        let (after_bytes, total, ok) = run_crashing(&bytes, pass.as_deref(), op, u64::MAX);
        assert!(ok, "{op:?} without a crash");
        std::fs::write(&work.path, &after_bytes).unwrap();
        work.check_clean();
        let after = state(&dir, &work);
        assert_ne!(before, after, "{op:?} changes something");
        for limit in 0..total {
            let (left, _, ok) = run_crashing(&bytes, pass.as_deref(), op, limit);
            assert!(!ok, "{op:?} crashing at write {limit} fails");
            std::fs::write(&crash.path, &left).unwrap();
            let seen = state(&dir, &crash);
            assert!(
                seen == before || seen == after,
                "{op:?}, crash at write {limit} of {total}: neither before nor after"
            );
            // No corruption, not even a COPIED flag that disagrees with its refcount: at
            // worst leaks (exit 3).
            let (code, text) = crash.check();
            assert!(code == 0 || code == 3, "{op:?}, crash at write {limit} of {total}: check exit {code}\n{text}");
        }
        println!("{op:?}: {total} writes, each a clean crash point");
    }
}

#[test]
fn crash_at_every_write_plain() {
    crash_points(
        "crash_at_every_write_plain",
        "cluster_size=4k",
        false,
        &[SnapOp::Create("s1"), SnapOp::Apply("q1"), SnapOp::Create("s2"), SnapOp::Delete("s1"), SnapOp::Delete("q1")],
    );
}

#[test]
fn crash_at_every_write_luks_extended_l2() {
    crash_points(
        "crash_at_every_write_luks_extended_l2",
        "extended_l2=on,cluster_size=16k",
        true,
        &[SnapOp::Create("s1"), SnapOp::Delete("s1"), SnapOp::Create("s2"), SnapOp::Apply("q1"), SnapOp::Delete("q1")],
    );
}

/// The host offset of guest cluster 0 through the L1 table at `l1` (64 KiB clusters).
fn host_of_cluster0(file: &[u8], l1: u64) -> u64 {
    let be = |at: u64| u64::from_be_bytes(file[at as usize..at as usize + 8].try_into().unwrap());
    let mask = 0x00ff_ffff_ffff_fe00;
    be(be(l1) & mask) & mask
}

/// LUKS: after a snapshot, a write to a shared cluster lands at a new host offset (so it is
/// encrypted with a new IV, the sector number of its new host offset), and the snapshot's
/// ciphertext stays as it was.
#[test]
fn luks_writes_after_a_snapshot_use_new_host_offsets() {
    let t = "luks_writes_after_a_snapshot_use_new_host_offsets";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = Img::create(&dir, "l.qcow2", "", "1M", true);
    let old = common::pattern(1, 64 << 10);
    let new = common::pattern(2, 64 << 10);
    let mut q = img.open();
    let mut scratch = vec![0u8; q.write_scratch_len()];
    q.write_at(0, &old, &mut scratch).unwrap();
    let s = q.snapshot_create(b"before", DATE.0, DATE.1, &mut scratch).unwrap();
    q.flush().unwrap();
    let file = std::fs::read(&img.path).unwrap();
    let snap_host = host_of_cluster0(&file, s.l1_table_offset);
    assert_eq!(host_of_cluster0(&file, q.header().l1_table_offset), snap_host, "shared after the snapshot");
    let ciphertext = file[snap_host as usize..][..64 << 10].to_vec();
    assert_ne!(&ciphertext[..], &old[..], "stored encrypted");

    q.write_at(0, &new, &mut scratch).unwrap();
    q.flush().unwrap();
    let file = std::fs::read(&img.path).unwrap();
    let active_host = host_of_cluster0(&file, q.header().l1_table_offset);
    assert_ne!(active_host, snap_host, "the write went to a new cluster");
    assert_eq!(host_of_cluster0(&file, s.l1_table_offset), snap_host);
    assert_eq!(&file[snap_host as usize..][..64 << 10], &ciphertext[..], "snapshot ciphertext intact");
    assert_ne!(&file[active_host as usize..][..64 << 10], &ciphertext[..]);

    let mut buf = vec![0u8; 64 << 10];
    q.read_at(0, &mut buf).unwrap();
    assert!(buf == new);
    q.select_snapshot(&s).unwrap();
    q.read_at(0, &mut buf).unwrap();
    assert!(buf == old);
    drop(q);
    img.check_clean();
    assert!(img.raw(&dir, Some("1"))[..64 << 10] == old[..], "QEMU reads the snapshot");
    assert!(img.raw(&dir, None)[..64 << 10] == new[..], "QEMU reads the active disk");
}

/// Apply restores the snapshot's virtual size (smaller and larger than the disk's), as
/// `qemu-img snapshot -a`; the L1 table keeps the larger size.
#[test]
fn apply_restores_the_snapshot_size() {
    let t = "apply_restores_the_snapshot_size";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    // 512-byte clusters: 32 KiB per L2 table, so the sizes need L1 tables of different sizes.
    let base = Img::create(&dir, "base.qcow2", "cluster_size=512", "64k", false);
    base.qemu_io(&["write -P 0x11 0 48k"]);
    base.qemu_snapshot("-c", "small");
    common::qemu_img(&["resize", "-q", "-f", "qcow2", base.path.to_str().unwrap(), "200k"]);
    base.qemu_io(&["write -P 0x22 150k 20k"]);
    let ours = base.copy_to(&dir.join("ours.qcow2"));
    let theirs = base.copy_to(&dir.join("theirs.qcow2"));
    ours.create_snapshot("big");
    theirs.qemu_snapshot("-c", "big");
    same_states(&dir, &ours, &theirs, "create big");
    ours.apply_snapshot("small");
    theirs.qemu_snapshot("-a", "small");
    same_states(&dir, &ours, &theirs, "apply small");
    assert_eq!(ours.open().size(), 64 << 10);
    for img in [&ours, &theirs] {
        img.qemu_io(&["write -P 0x33 60k 4k"]);
    }
    ours.apply_snapshot("big");
    theirs.qemu_snapshot("-a", "big");
    same_states(&dir, &ours, &theirs, "apply big");
    assert_eq!(ours.open().size(), 200 << 10);
}

/// Stack for the snapshot paths (KiB, release / debug): the minimum measured plus about 8 KiB
/// (x86-64, bisected with `QLUKS_STACK_KIB`, which overrides it: release runs with 12, the
/// thread's own minimum; debug needs 36), well within the project's 64 KiB.
const STACK_KIB: (usize, usize) = (20, 44);

/// Create, apply and delete on a LUKS image allocate nothing and run on a thread with a
/// small stack; the image (with its table cache) and the scratch are the caller's (made on
/// the test's main thread).
#[test]
fn snapshot_paths_allocate_nothing_on_a_small_stack() {
    let t = "snapshot_paths_allocate_nothing_on_a_small_stack";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = Img::create(&dir, "n.qcow2", "", "4M", true);
    workload(&img, true, false);
    img.qemu_snapshot("-c", "q1");
    let mut q = Box::new(img.open());
    let mut scratch = vec![0u8; q.snapshot_scratch_len()];
    let kib = std::env::var("QLUKS_STACK_KIB").ok().and_then(|s| s.parse().ok()).unwrap_or(if cfg!(debug_assertions) {
        STACK_KIB.1
    } else {
        STACK_KIB.0
    });
    let (q, allocations) = std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(move || {
            let (r, n) = common::counting_alloc::count_allocations(|| {
                let s = q.snapshot_create(b"s1", DATE.0, DATE.1, &mut scratch)?;
                let q1 = q.find_snapshot(b"q1")?;
                q.snapshot_apply(&q1, &mut scratch)?;
                q.snapshot_delete(&s, &mut scratch)?;
                q.flush()
            });
            r.unwrap();
            (q, n)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(allocations, 0, "heap allocations in the snapshot paths");
    drop(q);
    img.check_clean();
    assert_eq!(img.snapshots().len(), 1);
}

/// 512-byte clusters: L2 tables of 32 KiB of guest data, so the operations write many slices;
/// with 64-bit refcounts, refcount blocks of 64 clusters, so they also make new refcount
/// blocks (each a crash point). Version 2 (16-bit refcounts only) and 3.
#[test]
fn crash_at_every_write_small_clusters_v2_and_64_bit_refcounts() {
    let ops = [SnapOp::Create("s1"), SnapOp::Apply("q1"), SnapOp::Delete("s1")];
    crash_points("crash_small_clusters_v2", "compat=0.10,cluster_size=512", false, &ops);
    crash_points("crash_small_clusters_64_bit", "cluster_size=512,refcount_bits=64", false, &ops);
}

/// Names as qemu-img takes them: a repeated name is a new snapshot with the next id (qemu-img
/// 10 accepts it too; `-d NAME` then deletes the first); ids follow the largest numeric id.
/// Refused, before any write: an empty or overlong name, and a selected snapshot (writes go
/// to the active disk only).
#[test]
fn names_and_refusals_like_qemu_img() {
    let t = "names_and_refusals_like_qemu_img";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let base = Img::create(&dir, "base.qcow2", "", "1M", false);
    base.qemu_io(&["write -P 0x11 0 64k"]);
    let ours = base.copy_to(&dir.join("ours.qcow2"));
    let theirs = base.copy_to(&dir.join("theirs.qcow2"));
    for name in ["dup", "dup", "other", "dup"] {
        ours.create_snapshot(name);
        theirs.qemu_snapshot("-c", name);
    }
    same_states(&dir, &ours, &theirs, "repeated names");
    ours.delete_snapshot("dup");
    theirs.qemu_snapshot("-d", "dup");
    same_states(&dir, &ours, &theirs, "delete the first dup");
    ours.create_snapshot("next");
    theirs.qemu_snapshot("-c", "next");
    same_states(&dir, &ours, &theirs, "the next id");
    assert_eq!(ours.snapshots().last().unwrap().0, "5");

    let before = std::fs::read(&ours.path).unwrap();
    let mut q = ours.open();
    let mut scratch = vec![0u8; q.snapshot_scratch_len()];
    for (name, len) in [(&[][..], 0), (&[b'n'; 129][..], 129)] {
        match q.snapshot_create(name, DATE.0, DATE.1, &mut scratch) {
            Err(Error::SnapshotNameInvalid { len: l }) => assert_eq!(l, len),
            other => panic!("name of {len} bytes: {other:?}"),
        }
    }
    let s = q.find_snapshot(b"other").unwrap();
    q.select_snapshot(&s).unwrap();
    assert!(matches!(q.snapshot_create(b"x", DATE.0, DATE.1, &mut scratch), Err(Error::SnapshotSelected)));
    assert!(matches!(q.snapshot_delete(&s, &mut scratch), Err(Error::SnapshotSelected)));
    q.select_active();
    let mut small = [0u8; 100];
    assert!(matches!(q.snapshot_delete(&s, &mut small), Err(Error::ScratchTooSmall { .. })));
    drop(q);
    assert!(std::fs::read(&ours.path).unwrap() == before, "refusals write nothing");
}

/// A disk of size 0 (an empty L1 table): create, apply and delete as qemu-img.
#[test]
fn empty_disk() {
    let t = "empty_disk";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let base = Img::create(&dir, "base.qcow2", "", "0", false);
    let ours = base.copy_to(&dir.join("ours.qcow2"));
    let theirs = base.copy_to(&dir.join("theirs.qcow2"));
    ours.create_snapshot("a");
    theirs.qemu_snapshot("-c", "a");
    same_states(&dir, &ours, &theirs, "create");
    ours.apply_snapshot("a");
    theirs.qemu_snapshot("-a", "a");
    same_states(&dir, &ours, &theirs, "apply");
    ours.delete_snapshot("a");
    theirs.qemu_snapshot("-d", "a");
    same_states(&dir, &ours, &theirs, "delete");
}

/// Snapshots of an overlay taken, applied and deleted through a `Chain` (the backing layer
/// never changes): qemu-img lists and reads the snapshot as the whole chain read when it was
/// taken, and checks the overlay clean after each step.
#[test]
fn snapshots_of_an_overlay_through_the_chain() {
    let test = "snapshots_of_an_overlay_through_the_chain";
    if !common::tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(test);
    let base = Img::create(&dir, "base.qcow2", "cluster_size=4k", "1M", false);
    base.qemu_io(&["write -P 0x11 0 1M"]);
    let top_path = dir.join("top.qcow2");
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"])
            .arg(&top_path),
    );
    let top = Img {
        path: top_path.clone(),
        objects: vec![],
        opts: format!("driver=qcow2,file.filename={}", top_path.display()),
        passphrase: None,
    };
    top.qemu_io(&["write -P 0x22 64k 64k"]);
    let before = top.raw(&dir, None);

    let open = || {
        let mut r = qluks::qcow2::file_resolver::FileResolver::new(&top_path, &dir.join("")).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&top_path).unwrap();
        qluks::qcow2::Chain::<File>::open(f, &mut r).unwrap()
    };
    let read_all = |chain: &mut qluks::qcow2::Chain<File>| {
        let mut buf = vec![0u8; chain.size() as usize];
        chain.read_at(0, &mut buf).unwrap();
        buf
    };
    let mut chain = open();
    let mut scratch = vec![0u8; chain.snapshot_scratch_len().max(chain.write_scratch_len())];
    let sn = chain.snapshot_create(b"before", DATE.0, DATE.1, &mut scratch).unwrap();
    chain.write_at(0, &[0x33; 128 * 1024], &mut scratch).unwrap();
    chain.flush().unwrap();
    drop(chain);
    top.check_clean();
    let list = top.snapshots();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].0.as_str(), list[0].1.as_str()), (sn.id.to_string().as_str(), "before"));
    assert!(top.raw(&dir, Some(&list[0].0)) == before, "qemu-img reads the snapshot as the chain was");
    let mut now = before.clone();
    now[..128 * 1024].fill(0x33);
    assert!(top.raw(&dir, None) == now, "the active disk has the write");

    let mut chain = open();
    assert!(read_all(&mut chain) == now);
    let sn = chain.find_snapshot(b"before").unwrap();
    chain.snapshot_apply(&sn, &mut scratch).unwrap();
    assert!(read_all(&mut chain) == before, "applied: the chain reads as it did");
    chain.snapshot_delete(&sn, &mut scratch).unwrap();
    assert!(read_all(&mut chain) == before);
    drop(chain);
    top.check_clean();
    assert!(top.snapshots().is_empty());
    assert!(top.raw(&dir, None) == before);
    assert!(base.raw(&dir, None).iter().all(|&b| b == 0x11), "the backing file never changes");
}
