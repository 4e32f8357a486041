//! `Qcow2::check` against `qemu-img check`: the same counts (leaks, corruptions, check errors,
//! totals, image end) on clean images of every kind, on images with leaks and on images
//! corrupted by hand; repairs (`-r leaks`, `-r all`, a dirty image) that `qemu-img check` then
//! finds clean, with the guest content unchanged; crash injection after every write of a repair.
mod common;

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;

use qluks::io::BlockIo;
use qluks::qcow2::{CheckResult, Error, Finding, Qcow2, Repair};
use serde_json::Value;

const SECRET: &str = "secret,id=sec0,data=check-pass";

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

/// `qemu-img check [-r MODE] --output json`: (exit code, JSON).
fn qemu_check(path: &Path, repair: Option<&str>, luks: bool) -> (i32, Value) {
    let mut c = Command::new("qemu-img");
    c.arg("check");
    if let Some(r) = repair {
        c.args(["-r", r]);
    }
    c.args(["--output", "json"]);
    if luks {
        c.args(["--object", SECRET, "--image-opts"]);
        c.arg(format!("driver=qcow2,encrypt.key-secret=sec0,file.filename={}", path.display()));
    } else {
        c.arg(path);
    }
    let out = common::output(&mut c);
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, json)
}

fn field(v: &Value, name: &str) -> u64 {
    v.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// qemu-img's exit code for a result.
fn exit_code(r: &CheckResult) -> i32 {
    if r.check_errors != 0 {
        1
    } else if r.corruptions != 0 {
        2
    } else if r.leaks != 0 {
        3
    } else {
        0
    }
}

/// qluks's check of the file (opened read-write when repairing).
fn qluks_check(path: &Path, repair: Repair) -> (Result<CheckResult, Error<std::io::Error>>, Vec<Finding>) {
    let file = OpenOptions::new().read(true).write(repair != Repair::None).open(path).unwrap();
    let mut q: Qcow2<File> = Qcow2::open_metadata(file, None).unwrap();
    let mut memory = vec![0u8; q.check_memory_len().unwrap()];
    let mut findings = Vec::new();
    let r = q.check(&mut memory, repair, &mut |f| findings.push(*f));
    (r, findings)
}

/// Asserts qluks's plain check equals qemu-img's on `path`, field by field.
fn assert_agrees(what: &str, path: &Path, luks: bool) -> CheckResult {
    let (code, q) = qemu_check(path, None, luks);
    let (r, findings) = qluks_check(path, Repair::None);
    let r = r.unwrap_or_else(|e| panic!("{what}: qluks check failed: {e}"));
    let ours = [
        ("check-errors", r.check_errors),
        ("corruptions", r.corruptions),
        ("leaks", r.leaks),
        ("image-end-offset", r.image_end_offset),
        ("total-clusters", r.total_clusters),
        ("allocated-clusters", r.allocated_clusters),
        ("fragmented-clusters", r.fragmented_clusters),
        ("compressed-clusters", r.compressed_clusters),
    ];
    for (name, value) in ours {
        assert_eq!(value, field(&q, name), "{what}: {name} (qemu: {q}; qluks findings: {findings:?})");
    }
    assert_eq!(exit_code(&r), code, "{what}: exit code");
    r
}

fn create(path: &Path, opts: &str, size: &str, luks: bool) {
    let mut c = Command::new("qemu-img");
    c.arg("create");
    if luks {
        c.args(["--object", SECRET]);
    }
    c.args(["-f", "qcow2", "-o", opts]).arg(path).arg(size);
    common::run(&mut c);
}

fn io(path: &Path, luks: bool, cmds: &[&str]) {
    let opts = if luks {
        format!("driver=qcow2,encrypt.key-secret=sec0,file.filename={}", path.display())
    } else {
        format!("driver=qcow2,file.filename={}", path.display())
    };
    common::qemu_io(if luks { &[SECRET] } else { &[] }, &opts, cmds);
}

/// Guest content equal (`qemu-img compare`).
fn assert_same_content(a: &Path, b: &Path, luks: bool) {
    let mut c = Command::new("qemu-img");
    c.arg("compare");
    if luks {
        c.args(["--object", SECRET, "--image-opts"]);
        c.arg(format!("driver=qcow2,encrypt.key-secret=sec0,file.filename={}", a.display()));
        c.arg(format!("driver=qcow2,encrypt.key-secret=sec0,file.filename={}", b.display()));
    } else {
        c.arg(a).arg(b);
    }
    common::run(&mut c);
}

// ---- editing images by hand ----

fn be64(b: &[u8], at: u64) -> u64 {
    u64::from_be_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_be_bytes());
}

struct Geometry {
    cluster_bits: u32,
    order: u32,
    l1: u64,
    rt: u64,
    entry_size: u64,
}

fn geometry(b: &[u8]) -> Geometry {
    let version = u32::from_be_bytes(b[4..8].try_into().unwrap());
    let cluster_bits = u32::from_be_bytes(b[20..24].try_into().unwrap());
    let (order, incompat) =
        if version >= 3 { (u32::from_be_bytes(b[96..100].try_into().unwrap()), be64(b, 72)) } else { (4, 0) };
    let entry_size = if incompat & (1 << 4) != 0 { 16 } else { 8 };
    Geometry { cluster_bits, order, l1: be64(b, 40), rt: be64(b, 48), entry_size }
}

/// Byte position and mask shift of cluster `k`'s refcount.
fn refcount_at(b: &[u8], k: u64) -> (u64, u32, u32) {
    let g = geometry(b);
    let bb = g.cluster_bits + 3 - g.order;
    let block = be64(b, g.rt + (k >> bb) * 8) & !0x1ff;
    assert_ne!(block, 0, "cluster {k} has no refcount block");
    let bit = (k & ((1 << bb) - 1)) << g.order;
    (block + bit / 8, (bit % 8) as u32, 1 << g.order)
}

fn get_refcount(b: &[u8], k: u64) -> u64 {
    let (at, shift, bits) = refcount_at(b, k);
    let mut v = 0u64;
    for i in 0..bits.div_ceil(8) {
        v = (v << 8) | u64::from(b[(at + u64::from(i)) as usize]);
    }
    if bits < 8 {
        (v >> shift) & ((1 << bits) - 1)
    } else {
        v
    }
}

fn set_refcount(b: &mut [u8], k: u64, value: u64) {
    let (at, shift, bits) = refcount_at(b, k);
    if bits < 8 {
        let mask = (((1u16 << bits) - 1) as u8) << shift;
        b[at as usize] = (b[at as usize] & !mask) | (((value as u8) << shift) & mask);
    } else {
        let n = (bits / 8) as usize;
        b[at as usize..at as usize + n].copy_from_slice(&value.to_be_bytes()[8 - n..]);
    }
}

/// Offset of the L2 entry of guest cluster `guest_cluster` (its L2 table must exist).
fn l2_entry_at(b: &[u8], guest_cluster: u64) -> u64 {
    let g = geometry(b);
    let per = (1u64 << g.cluster_bits) / g.entry_size;
    let l1e = be64(b, g.l1 + (guest_cluster / per) * 8);
    let l2 = l1e & 0x00ff_ffff_ffff_fe00;
    assert_ne!(l2, 0);
    l2 + (guest_cluster % per) * g.entry_size
}

const COPIED: u64 = 1 << 63;
const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

fn copy(dir: &common::TempDir, from: &Path, name: &str) -> std::path::PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to
}

// ---- clean images ----

#[test]
fn clean_images_agree_with_qemu() {
    const TEST: &str = "clean_images_agree_with_qemu";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let mut cases: Vec<(String, bool, bool)> = vec![
        ("cluster_size=65536".into(), false, true),
        ("compat=0.10,cluster_size=4096".into(), false, true),
        ("cluster_size=32768,extended_l2=on".into(), false, true),
        ("cluster_size=512".into(), false, false),
        ("lazy_refcounts=on,cluster_size=4096".into(), false, true),
        ("cluster_size=4096,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10".into(), true, true),
    ];
    for bits in [1, 2, 4, 8, 16, 32, 64] {
        // A snapshot needs room above the refcount 16 of the host cluster 16 compressed clusters share.
        cases.push((format!("cluster_size=4096,refcount_bits={bits}"), false, bits >= 8));
    }
    for (i, (opts, luks, snapshot)) in cases.iter().enumerate() {
        let path = dir.join(&format!("clean{i}.qcow2"));
        create(&path, opts, "4M", *luks);
        assert_agrees(&format!("{opts} (empty)"), &path, *luks);
        io(&path, *luks, &["write -P 0x11 0 300k", "write -P 0x22 1M 64k", "write -z 2M 64k"]);
        if !opts.contains("extended_l2") {
            io(&path, *luks, &["write -c -P 0x33 3M 64k"]);
        }
        if *snapshot {
            let mut c = Command::new("qemu-img");
            c.args(["snapshot", "-c", "s1"]);
            if *luks {
                c.args(["--object", SECRET, "--image-opts"]);
                c.arg(format!("driver=qcow2,encrypt.key-secret=sec0,file.filename={}", path.display()));
            } else {
                c.arg(&path);
            }
            common::run(&mut c);
            io(&path, *luks, &["write -P 0x44 64k 128k", "write -P 0x55 3M 4k"]);
        }
        let r = assert_agrees(opts, &path, *luks);
        assert_eq!((r.corruptions, r.leaks, r.check_errors), (0, 0, 0), "{opts}");
        assert!(r.allocated_clusters > 0, "{opts}");
    }
}

// ---- leaks ----

/// A v3 image, 4 KiB clusters, with a snapshot, some data, and a deleted snapshot (free
/// clusters inside the file).
fn image_with_snapshot(dir: &common::TempDir, name: &str, opts: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    create(&path, opts, "6M", false);
    io(&path, false, &["write -P 0x11 0 256k", "write -P 0x22 1M 64k", "write -P 0x55 3M 4k"]);
    common::qemu_img(&["snapshot", "-c", "gone", path.to_str().unwrap()]);
    io(&path, false, &["write -P 0x33 0 64k"]);
    common::qemu_img(&["snapshot", "-d", "gone", path.to_str().unwrap()]);
    common::qemu_img(&["snapshot", "-c", "s1", path.to_str().unwrap()]);
    io(&path, false, &["write -P 0x44 128k 64k"]);
    path
}

/// The first cluster of the file with refcount 0 (below its end).
fn free_cluster(b: &[u8]) -> u64 {
    let cs = 1u64 << geometry(b).cluster_bits;
    (1..b.len() as u64 / cs).find(|&k| get_refcount(b, k) == 0).expect("a free cluster inside the file")
}

/// Repairs a copy with qluks and another with qemu-img (`mode`), and checks: the same exit
/// code of the repair, the same fixed counts, `qemu-img check` clean on the qluks copy when
/// qemu's copy is clean, and the same guest content as before.
fn assert_repair_agrees(dir: &common::TempDir, what: &str, path: &Path, mode: &str) {
    assert_repair_agrees_luks(dir, what, path, mode, false)
}

fn assert_repair_agrees_luks(dir: &common::TempDir, what: &str, path: &Path, mode: &str, luks: bool) {
    let ours = copy(dir, path, "ours.qcow2");
    let theirs = copy(dir, path, "theirs.qcow2");
    let repair = if mode == "leaks" { Repair::Leaks } else { Repair::All };
    let (qemu_code, qemu_json) = qemu_check(&theirs, Some(mode), luks);
    let (r, findings) = qluks_check(&ours, repair);
    match r {
        Err(Error::CheckNeedsRebuild | Error::MetadataOverlap { .. }) => {
            // "Check failed" (a rebuild needed with -r leaks; a repair write on metadata).
            assert_eq!(qemu_code, 1, "{what}: qemu-img -r {mode} failed too ({qemu_json}; {findings:?})");
            return;
        }
        Err(e) => panic!("{what}: qluks repair failed: {e} ({findings:?})"),
        Ok(r) => {
            // The second pass decides, as in qemu-img.
            let (after, _) = qluks_check(&ours, Repair::None);
            let after = after.unwrap();
            // Divergence by design: for a refcount block past the end of the file, `qemu-img -r
            // all` grows the file up to it (gigabytes for a garbage offset; it may then fail)
            // and counts what that fixes; qluks rebuilds the refcount structures instead: the
            // image must then be clean.
            if mode == "all" && findings.iter().any(|f| matches!(f, Finding::RefblockOutside { .. })) {
                assert_eq!(exit_code(&after), 0, "{what}: rebuilt ({after:?})");
                let (code, json) = qemu_check(&ours, None, luks);
                assert_eq!(code, 0, "{what}: qemu-img check of the qluks-rebuilt copy: {json}");
                return;
            }
            assert_eq!(exit_code(&after), qemu_code, "{what} -r {mode}: exit code (qemu: {qemu_json})");
            assert_eq!(r.leaks_fixed, field(&qemu_json, "leaks-fixed"), "{what} -r {mode}: leaks fixed");
            assert_eq!(
                r.corruptions_fixed,
                field(&qemu_json, "corruptions-fixed"),
                "{what} -r {mode}: corruptions fixed ({findings:?}; qemu: {qemu_json})"
            );
        }
    }
    let (code, json) = qemu_check(&ours, None, luks);
    assert_eq!(code, qemu_code, "{what}: qemu-img check of the qluks-repaired copy: {json}");
    assert_agrees(&format!("{what} repaired"), &ours, luks);
    // Guest content unchanged (when the damaged image reads at all).
    if luks || readable(path) {
        assert_same_content(&ours, &theirs, luks);
        assert_same_content(&ours, path, luks);
    }
}

/// Whether qemu-img reads all of the (plain) image's guest content.
fn readable(path: &Path) -> bool {
    common::output(Command::new("qemu-img").arg("compare").arg(path).arg(path)).status.success()
}

#[test]
fn leaks_agree_and_are_repaired() {
    const TEST: &str = "leaks_agree_and_are_repaired";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    for opts in ["cluster_size=4096", "cluster_size=4096,refcount_bits=2", "cluster_size=4096,refcount_bits=64"] {
        let path = image_with_snapshot(&dir, "leaky.qcow2", opts);
        assert_agrees(opts, &path, false);
        edit(&path, |b| {
            // A data cluster referenced once, counted twice; a free cluster marked used.
            let e = be64(b, l2_entry_at(b, 256));
            let k = (e & OFFSET) >> 12;
            let v = get_refcount(b, k);
            set_refcount(b, k, v + 1);
            let free = free_cluster(b);
            set_refcount(b, free, 1);
        });
        let r = assert_agrees(&format!("{opts} with leaks"), &path, false);
        assert_eq!((r.leaks, r.corruptions), (2, 0), "{opts}");
        assert_repair_agrees(&dir, opts, &path, "leaks");
        assert_repair_agrees(&dir, opts, &path, "all");
    }
}

// ---- corruptions made by hand ----

/// Guest cluster 32 (128 KiB) was written after snapshot s1 (refcount 1, COPIED); guest
/// cluster 256 (1 MiB) before it (shared: refcount 2, no COPIED); L2 table 0 is shared.
fn corrupt(name: &str, b: &mut [u8]) {
    let g = geometry(b);
    let cb = g.cluster_bits;
    let own = l2_entry_at(b, 32);
    let shared = l2_entry_at(b, 256);
    match name {
        "refcount too low" => {
            let k = (be64(b, shared) & OFFSET) >> cb;
            assert_eq!(get_refcount(b, k), 2);
            set_refcount(b, k, 1);
        }
        "refcount zero" => {
            let k = (be64(b, own) & OFFSET) >> cb;
            assert_eq!(get_refcount(b, k), 1);
            set_refcount(b, k, 0);
        }
        "L2 entry into the L1 table" => put64(b, own, g.l1 | COPIED),
        "L2 entry into a refcount block" => {
            let block = be64(b, g.rt) & OFFSET;
            put64(b, own, block | COPIED);
        }
        "L2 entry into the refcount table" => put64(b, own, g.rt | COPIED),
        "COPIED missing" => {
            let e = be64(b, own);
            put64(b, own, e & !COPIED);
        }
        "COPIED on a shared data cluster" => {
            let e = be64(b, shared);
            put64(b, own, e | COPIED);
        }
        "COPIED on a shared L2 table" => {
            // L1 entry 1 (2..4 MiB) is shared with the snapshot.
            let e = be64(b, g.l1 + 8);
            assert!(e != 0 && e & COPIED == 0);
            put64(b, g.l1 + 8, e | COPIED);
        }
        "COPIED alone in an L1 entry" => {
            let e = be64(b, g.l1 + 16);
            assert_eq!(e, 0);
            put64(b, g.l1 + 16, COPIED);
        }
        "unaligned preallocated zero cluster" => {
            let e = be64(b, own);
            put64(b, own, ((e & OFFSET) + 512) | COPIED | 1);
        }
        "unaligned data cluster" => {
            let e = be64(b, own);
            put64(b, own, ((e & OFFSET) + 512) | COPIED);
        }
        "reserved bits" => {
            let e = be64(b, own);
            put64(b, own, e | 0x100);
        }
        other => panic!("{other}"),
    }
}

const CORRUPTIONS: [&str; 12] = [
    "refcount too low",
    "refcount zero",
    "L2 entry into the L1 table",
    "L2 entry into a refcount block",
    "L2 entry into the refcount table",
    "COPIED missing",
    "COPIED on a shared data cluster",
    "COPIED on a shared L2 table",
    "COPIED alone in an L1 entry",
    "unaligned preallocated zero cluster",
    "unaligned data cluster",
    "reserved bits",
];

#[test]
fn corruptions_agree_and_are_repaired() {
    const TEST: &str = "corruptions_agree_and_are_repaired";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    for opts in ["cluster_size=4096", "cluster_size=4096,refcount_bits=64"] {
        let clean = image_with_snapshot(&dir, "clean.qcow2", opts);
        for name in CORRUPTIONS {
            let what = format!("{opts}: {name}");
            let path = copy(&dir, &clean, "corrupt.qcow2");
            edit(&path, |b| corrupt(name, b));
            let r = assert_agrees(&what, &path, false);
            assert!(r.corruptions > 0, "{what}: {r:?}");
            assert_repair_agrees(&dir, &what, &path, "leaks");
            assert_repair_agrees(&dir, &what, &path, "all");
        }
    }
}

// ---- dirty images, killed writers, crashes ----

#[test]
fn dirty_image_is_repaired_then_writable() {
    const TEST: &str = "dirty_image_is_repaired_then_writable";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let path = dir.join("dirty.qcow2");
    create(&path, "cluster_size=4096,lazy_refcounts=on", "8M", false);
    io(&path, false, &["write -P 0x11 0 64k"]);
    // qemu-io aborts after the write: refcounts of the new clusters never reach the disk.
    let opts = format!("driver=qcow2,file.filename={}", path.display());
    let out = common::output(Command::new("qemu-io").args([
        "--image-opts",
        &opts,
        "-c",
        "write -P 0x22 1M 512k",
        "-c",
        "abort",
    ]));
    assert!(!out.status.success());
    let dirty = |p: &Path| be64(&std::fs::read(p).unwrap(), 72) & 1 != 0;
    assert!(dirty(&path));
    let r = assert_agrees("dirty", &path, false);
    assert!(r.corruptions > 0);
    let theirs = copy(&dir, &path, "theirs.qcow2");
    assert_eq!(qemu_check(&theirs, Some("all"), false).0, 0);

    // Writing is refused until the image is repaired.
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut q: Qcow2<File> = Qcow2::open(file, None).unwrap();
    let mut scratch = vec![0u8; q.write_scratch_len()];
    assert!(matches!(q.write_at(0, &[0x33; 512], &mut scratch), Err(Error::DirtyImage)));
    let mut memory = vec![0u8; q.check_memory_len().unwrap()];
    let r = q.repair_dirty(&mut memory).unwrap();
    assert!(r.corruptions_fixed > 0 && r.corruptions == 0, "{r:?}");
    q.write_at(0, &[0x33; 512], &mut scratch).unwrap();
    q.flush().unwrap();
    drop(q);
    assert!(!dirty(&path));
    assert_eq!(qemu_check(&path, None, false).0, 0);
    io(&theirs, false, &["write -P 0x33 0 512"]);
    assert_same_content(&path, &theirs, false);
}

/// An image file in memory whose writes stop after a budget (a crash: later writes and
/// flushes fail, nothing more reaches the "disk").
struct CrashIo {
    data: Vec<u8>,
    budget: usize,
    writes: usize,
    /// When kept: the bytes as of the last flush (a crash may lose every later write).
    durable: Option<Vec<u8>>,
}

impl BlockIo for CrashIo {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), std::io::Error> {
        let start = offset as usize;
        let end = start + buf.len();
        if end > self.data.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&self.data[start..end]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), std::io::Error> {
        if self.writes == self.budget {
            return Err(std::io::Error::other("crashed"));
        }
        self.writes += 1;
        let start = offset as usize;
        if self.data.len() < start + buf.len() {
            self.data.resize(start + buf.len(), 0);
        }
        self.data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), std::io::Error> {
        if self.writes == self.budget {
            return Err(std::io::Error::other("crashed"));
        }
        if let Some(d) = self.durable.as_mut() {
            d.clone_from(&self.data);
        }
        Ok(())
    }
    fn size(&mut self) -> Result<u64, std::io::Error> {
        Ok(self.data.len() as u64)
    }
}

/// Runs `f` on the image bytes with a write budget; returns the bytes on "disk" afterwards
/// and how many writes happened, and the bytes as of the last flush.
fn crash_run(image: &[u8], budget: usize, f: impl FnOnce(&mut Qcow2<CrashIo>)) -> (Vec<u8>, usize, Vec<u8>) {
    let io = CrashIo { data: image.to_vec(), budget, writes: 0, durable: Some(image.to_vec()) };
    let mut q: Qcow2<CrashIo> = Qcow2::open_metadata(io, None).unwrap();
    f(&mut q);
    let io = q.into_inner().0.unwrap();
    (io.data, io.writes, io.durable.unwrap_or_default())
}

fn repair_with(repair: Repair) -> impl FnOnce(&mut Qcow2<CrashIo>) {
    move |q| {
        let Ok(len) = q.check_memory_len() else { return };
        let mut memory = vec![0u8; len];
        let _ = q.check(&mut memory, repair, &mut |_| {});
    }
}

/// A crash after every single write of a repair: `qemu-img check` finds no more corruptions
/// than before (leaks may change), the guest content is unchanged, and the repair, run again
/// on the crashed image, finishes the job.
fn assert_crash_safe(dir: &common::TempDir, what: &str, path: &Path, repair: Repair) {
    let image = std::fs::read(path).unwrap();
    let (before, _) = qemu_check(path, None, false);
    let before_corruptions = {
        let (_, j) = qemu_check(path, None, false);
        field(&j, "corruptions")
    };
    let (_, total, _) = crash_run(&image, usize::MAX, repair_with(repair));
    assert!(total > 0, "{what}: the repair writes");
    let mut seen = std::collections::HashSet::new();
    for budget in 0..total {
        let (bytes, _, durable) = crash_run(&image, budget, repair_with(repair));
        // Every write so far on disk, or only those the last flush made durable.
        for (state, bytes) in [("written", bytes), ("flushed", durable)] {
            if !seen.insert(bytes.clone()) {
                continue;
            }
            let what = format!("{what}: crash after {budget} of {total} writes ({state})");
            let crashed = dir.join("crashed.qcow2");
            std::fs::write(&crashed, &bytes).unwrap();
            let (code, j) = qemu_check(&crashed, None, false);
            assert!(
                field(&j, "corruptions") <= before_corruptions && field(&j, "check-errors") == 0,
                "{what}: {j} (before: exit {before})"
            );
            assert!(code == 0 || code == 3 || code == before, "{what}: exit {code}");
            assert_same_content(&crashed, path, false);
            let (r, _) = qluks_check(&crashed, repair);
            r.unwrap_or_else(|e| panic!("{what}: repair after the crash: {e}"));
            assert_eq!(qemu_check(&crashed, None, false).0, 0, "{what}: repaired after the crash");
        }
    }
}

#[test]
fn repairs_survive_a_crash_after_every_write() {
    const TEST: &str = "repairs_survive_a_crash_after_every_write";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let clean = image_with_snapshot(&dir, "clean.qcow2", "cluster_size=4096");
    let leaky = copy(&dir, &clean, "leaky.qcow2");
    edit(&leaky, |b| {
        let free = free_cluster(b);
        set_refcount(b, free, 1);
        let k = (be64(b, l2_entry_at(b, 256)) & OFFSET) >> 12;
        let v = get_refcount(b, k);
        set_refcount(b, k, v + 1);
    });
    assert_crash_safe(&dir, "leaks, -r leaks", &leaky, Repair::Leaks);
    for name in ["refcount zero", "refcount too low", "COPIED missing", "L2 entry into a refcount block"] {
        let path = copy(&dir, &clean, "corrupt.qcow2");
        edit(&path, |b| corrupt(name, b));
        assert_crash_safe(&dir, name, &path, Repair::All);
    }
    // A rebuild writing dozens of refcount blocks (512-byte clusters, 64-bit refcounts).
    let path = dir.join("many.qcow2");
    create(&path, "cluster_size=512,refcount_bits=64", "4M", false);
    io(&path, false, &["write -P 0x11 0 1M"]);
    common::qemu_img(&["snapshot", "-c", "s1", path.to_str().unwrap()]);
    io(&path, false, &["write -P 0x22 256k 64k"]);
    edit(&path, |b| {
        let k = (be64(b, l2_entry_at(b, 100)) & OFFSET) >> 9;
        set_refcount(b, k, 0);
    });
    assert_crash_safe(&dir, "many blocks, refcount zero", &path, Repair::All);
}

#[test]
fn killed_writer_leaves_leaks_that_agree_and_are_repaired() {
    const TEST: &str = "killed_writer_leaves_leaks_that_agree_and_are_repaired";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let base = image_with_snapshot(&dir, "base.qcow2", "cluster_size=4096");
    let image = std::fs::read(&base).unwrap();
    let write = |q: &mut Qcow2<CrashIo>| {
        let file = q;
        let mut scratch = vec![0u8; file.write_scratch_len()];
        let data = common::pattern(7, 200 << 10);
        // Rewrites shared clusters (copy on write, old references dropped) and new ones.
        let _ = file.write_at(64 << 10, &data, &mut scratch);
        let _ = file.write_at(5 << 20, &data[..64 << 10], &mut scratch);
        let _ = file.flush();
    };
    let open_rw = |bytes: &[u8], budget| {
        let io = CrashIo { data: bytes.to_vec(), budget, writes: 0, durable: Some(bytes.to_vec()) };
        let mut q: Qcow2<CrashIo> = Qcow2::open(io, None).unwrap();
        write(&mut q);
        let io = q.into_inner().0.unwrap();
        (io.data, io.writes, io.durable.unwrap_or_default())
    };
    let (_, total, _) = open_rw(&image, usize::MAX);
    let mut leaky = 0;
    let mut seen = std::collections::HashSet::new();
    for budget in 0..total {
        let (bytes, _, durable) = open_rw(&image, budget);
        // Every write so far on disk, or only those its last flush made durable.
        for (state, bytes) in [("written", bytes), ("flushed", durable)] {
            if !seen.insert(bytes.clone()) {
                continue;
            }
            let what = format!("writer killed after {budget} of {total} writes ({state})");
            let path = dir.join("killed.qcow2");
            std::fs::write(&path, &bytes).unwrap();
            let r = assert_agrees(&what, &path, false);
            assert_eq!(r.corruptions, 0, "{what}");
            if r.leaks > 0 {
                leaky += 1;
                assert_repair_agrees(&dir, &what, &path, "leaks");
            }
        }
    }
    assert!(leaky > 0, "no crash point left leaks ({total} writes)");
}

#[test]
fn too_little_memory_is_a_typed_error() {
    const TEST: &str = "too_little_memory_is_a_typed_error";
    if !common::tools(TEST, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let path = dir.join("a.qcow2");
    create(&path, "cluster_size=512,refcount_bits=64", "1G", false);
    let file = File::open(&path).unwrap();
    let mut q: Qcow2<File> = Qcow2::open_metadata(file, None).unwrap();
    let len = q.check_memory_len().unwrap();
    // The file's clusters (8 bytes each) and a rebuild's room, not the 1 GiB the header claims.
    let file_clusters = std::fs::metadata(&path).unwrap().len() / 512;
    assert!(len as u64 >= file_clusters * 8 && (len as u64) < file_clusters * 8 * 3 + 4096, "{len}");
    let mut memory = vec![0u8; len - 1];
    match q.check(&mut memory, Repair::None, &mut |_| {}) {
        Err(Error::CheckMemoryTooSmall { needed, got }) => assert_eq!((needed, got), (len, len - 1)),
        other => panic!("{other:?}"),
    }
    let mut memory = vec![0u8; len];
    let r = q.check(&mut memory, Repair::None, &mut |_| {}).unwrap();
    assert_eq!((r.corruptions, r.leaks, r.check_errors), (0, 0, 0));
}

#[test]
fn check_and_rebuild_run_in_64_kib_of_stack() {
    const TEST: &str = "check_and_rebuild_run_in_64_kib_of_stack";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let clean = image_with_snapshot(&dir, "clean.qcow2", "cluster_size=4096");
    let path = copy(&dir, &clean, "zero.qcow2");
    edit(&path, |b| corrupt("refcount zero", b));
    let image = std::fs::read(&path).unwrap();
    // Debug builds need about twice the stack of release builds (no inlining).
    let kib = if cfg!(debug_assertions) { 128 } else { 64 };
    let repaired = std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(move || {
            let io = CrashIo { data: image, budget: usize::MAX, writes: 0, durable: None };
            let mut q: Box<Qcow2<CrashIo>> = Box::new(Qcow2::new_empty());
            q.open_metadata_in(io, None).unwrap();
            let mut memory = vec![0u8; q.check_memory_len().unwrap()];
            let r = q.check(&mut memory, Repair::All, &mut |_| {}).unwrap();
            assert!(r.corruptions_fixed > 0, "{r:?}");
            q.into_inner().0.unwrap().data
        })
        .unwrap()
        .join()
        .unwrap();
    std::fs::write(&path, repaired).unwrap();
    assert_eq!(qemu_check(&path, None, false).0, 0);
}

#[test]
fn luks_extended_l2_and_bitmaps_agree_and_are_repaired() {
    const TEST: &str = "luks_extended_l2_and_bitmaps_agree_and_are_repaired";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let cases = [
        ("cluster_size=4096,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", true, false),
        ("cluster_size=16384,extended_l2=on", false, false),
        ("cluster_size=4096", false, true),
    ];
    for (opts, luks, bitmaps) in cases {
        let path = dir.join("img.qcow2");
        create(&path, opts, "4M", luks);
        if bitmaps {
            common::qemu_img(&["bitmap", "--add", path.to_str().unwrap(), "b0"]);
        }
        io(&path, luks, &["write -P 0x11 0 300k", "write -P 0x22 2M 16k", "write -z 3M 64k"]);
        if bitmaps {
            common::qemu_img(&["bitmap", "--add", "--granularity", "4k", path.to_str().unwrap(), "b1"]);
        }
        let r = assert_agrees(opts, &path, luks);
        assert_eq!((r.corruptions, r.leaks), (0, 0), "{opts}");
        // Leaks: the clusters of the first data cluster raised, a free cluster marked used.
        edit(&path, |b| {
            let cb = geometry(b).cluster_bits;
            let k = (be64(b, l2_entry_at(b, 0)) & OFFSET) >> cb;
            let v = get_refcount(b, k);
            set_refcount(b, k, v + 1);
        });
        let len = std::fs::metadata(&path).unwrap().len();
        let cs = 1u64 << geometry(&std::fs::read(&path).unwrap()).cluster_bits;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len.next_multiple_of(cs) + cs).unwrap();
        edit(&path, |b| set_refcount(b, len.div_ceil(cs), 1));
        // qemu-img finds the first raised cluster's COPIED wrong too (refcount 2).
        let r = assert_agrees(&format!("{opts} with leaks"), &path, luks);
        assert_eq!(r.leaks, 2, "{opts}");
        assert_repair_agrees_luks(&dir, opts, &path, "leaks", luks);
        assert_repair_agrees_luks(&dir, opts, &path, "all", luks);
    }
}

#[test]
fn damaged_metadata_never_panics() {
    const TEST: &str = "damaged_metadata_never_panics";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let clean = image_with_snapshot(&dir, "clean.qcow2", "cluster_size=4096");
    let image = std::fs::read(&clean).unwrap();
    let g = geometry(&image);
    // Metadata clusters: the refcount table and block, L1 and L2 tables, the snapshot table.
    let meta: Vec<u64> = [g.rt, be64(&image, g.rt), g.l1, be64(&image, g.l1) & OFFSET, be64(&image, 64)]
        .into_iter()
        .filter(|&o| o != 0)
        .collect();
    let noise = common::pattern(99, 4096);
    for seed in 0..48u64 {
        let mut b = image.clone();
        let at = meta[(seed % meta.len() as u64) as usize];
        for j in 0..(1 + seed % 8) {
            let pos = at + (u64::from(noise[(seed * 8 + j) as usize % 4096]) * 8 + j) % 512;
            b[pos as usize] ^= noise[(seed * 13 + j) as usize % 4096] | 1;
        }
        for repair in [Repair::None, Repair::Leaks, Repair::All] {
            let io = CrashIo { data: b.clone(), budget: usize::MAX, writes: 0, durable: None };
            let Ok(mut q) = Qcow2::<CrashIo>::open_metadata(io, None) else { continue };
            let Ok(len) = q.check_memory_len() else { continue };
            let mut memory = vec![0u8; len];
            let _ = q.check(&mut memory, repair, &mut |f| {
                let _ = f.to_string();
            });
        }
    }
}

#[test]
fn damaged_metadata_agrees_with_qemu_and_is_repaired() {
    const TEST: &str = "damaged_metadata_agrees_with_qemu_and_is_repaired";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let clean = image_with_snapshot(&dir, "clean.qcow2", "cluster_size=4096");
    let image = std::fs::read(&clean).unwrap();
    let g = geometry(&image);
    // Bytes flipped in the refcount table and block, the active L1 and L2 tables, the
    // snapshot table.
    // The snapshot's L1 table: the first entry of the snapshot table.
    let snapshot_l1 = be64(&image, be64(&image, 64));
    let meta: Vec<u64> = [g.rt, be64(&image, g.rt), g.l1, be64(&image, g.l1) & OFFSET, be64(&image, 64), snapshot_l1]
        .into_iter()
        .filter(|&o| o != 0)
        .collect();
    let noise = common::pattern(99, 4096);
    let mut damaged = 0;
    for seed in 0..32u64 {
        let mut b = image.clone();
        let at = meta[(seed % meta.len() as u64) as usize];
        for j in 0..(1 + seed % 8) {
            let pos = at + (u64::from(noise[(seed * 8 + j) as usize % 4096]) * 8 + j) % 512;
            b[pos as usize] ^= noise[(seed * 13 + j) as usize % 4096] | 1;
        }
        let path = dir.join("damaged.qcow2");
        std::fs::write(&path, &b).unwrap();
        let what = format!("seed {seed} (bytes at {at:#x})");
        let r = assert_agrees(&what, &path, false);
        if r.corruptions + r.leaks > 0 {
            damaged += 1;
            assert_repair_agrees(&dir, &what, &path, "leaks");
            assert_repair_agrees(&dir, &what, &path, "all");
        }
    }
    assert!(damaged > 16, "{damaged} of 32 damaged images found damaged");
}

#[test]
fn rebuild_with_many_refcount_blocks_and_a_larger_table() {
    const TEST: &str = "rebuild_with_many_refcount_blocks_and_a_larger_table";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    // 512-byte clusters, 64-bit refcounts: a refcount block covers 64 clusters, a table
    // cluster 64 blocks; 3 MiB of data needs more than one table cluster.
    let path = dir.join("many.qcow2");
    create(&path, "cluster_size=512,refcount_bits=64", "8M", false);
    io(&path, false, &["write -P 0x11 0 3M"]);
    common::qemu_img(&["snapshot", "-c", "s1", path.to_str().unwrap()]);
    io(&path, false, &["write -P 0x22 1M 64k", "write -P 0x33 6M 512k"]);
    let clusters_before = be64(&std::fs::read(&path).unwrap(), 56) >> 32;
    assert!(clusters_before > 1, "the table spans {clusters_before} clusters");
    edit(&path, |b| {
        let k = (be64(b, l2_entry_at(b, 100)) & OFFSET) >> 9;
        set_refcount(b, k, 0);
    });
    let r = assert_agrees("many blocks, refcount zero", &path, false);
    assert!(r.corruptions > 0);
    assert_repair_agrees(&dir, "many blocks, refcount zero", &path, "all");
    let (r, findings) = qluks_check(&path, Repair::All);
    assert!(findings.contains(&Finding::Rebuilding), "{r:?}");
    let b = std::fs::read(&path).unwrap();
    assert!(be64(&b, 56) >> 32 > 1, "the rebuilt table spans more than one cluster");
    assert_eq!(qemu_check(&path, None, false).0, 0);
}

#[test]
fn check_and_rebuild_allocate_nothing() {
    const TEST: &str = "check_and_rebuild_allocate_nothing";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let clean = image_with_snapshot(&dir, "clean.qcow2", "cluster_size=4096");
    let path = copy(&dir, &clean, "zero.qcow2");
    edit(&path, |b| corrupt("refcount zero", b));
    let image = std::fs::read(&path).unwrap();
    // Room for the file to grow (a rebuild appends) without the Vec reallocating.
    let mut data = Vec::with_capacity(image.len() + (1 << 20));
    data.extend_from_slice(&image);
    let mut q: Box<Qcow2<CrashIo>> = Box::new(Qcow2::new_empty());
    q.open_metadata_in(CrashIo { data, budget: usize::MAX, writes: 0, durable: None }, None).unwrap();
    let mut memory = vec![0u8; q.check_memory_len().unwrap()];
    let mut findings = 0;
    for repair in [Repair::None, Repair::All, Repair::Leaks, Repair::None] {
        let (r, n) = common::counting_alloc::count_allocations(|| q.check(&mut memory, repair, &mut |_| findings += 1));
        let r = r.unwrap();
        assert_eq!(n, 0, "{repair:?} allocated ({r:?})");
    }
    assert!(findings > 0);
    let (r, _) = common::counting_alloc::count_allocations(|| q.check(&mut memory, Repair::None, &mut |_| {}));
    assert_eq!(exit_code(&r.unwrap()), 0);
}
