//! `Qcow2::resize` against `qemu-img resize` on copies of the same images (plain v2/v3, LUKS,
//! extended L2, refcount widths, 512-byte clusters so that L1 growth crosses clusters), the
//! typed refusals, and crash injection at every write of a grow and a shrink.
mod common;

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;

use qluks::io::BlockIo;
use qluks::qcow2::resize::ResizeError;
use qluks::qcow2::{Error, Qcow2, Qcow2Image};

const SECRET: &str = "secret,id=sec0,data=resize-pass";
const PASS: &[u8] = b"resize-pass";

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// (size, l1_size, l1_table_offset, refcount_table_offset, refcount_table_clusters)
fn fields(path: &Path) -> (u64, u32, u64, u64, u32) {
    let b = std::fs::read(path).unwrap();
    let be64 = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    let be32 = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    (be64(24), be32(36), be64(40), be64(48), be32(56))
}

fn image_opts(path: &Path, luks: bool) -> String {
    let mut s = format!("driver=qcow2,file.filename={}", path.display());
    if luks {
        s.push_str(",encrypt.key-secret=sec0");
    }
    s
}

/// `qemu-img check` exit code (0 clean, 3 leaks only, 2 corruptions, 1 errors).
fn check_code(path: &Path, luks: bool) -> i32 {
    let mut c = Command::new("qemu-img");
    c.args(["check", "--object", SECRET, "--image-opts", &image_opts(path, luks)]);
    let out = common::output(&mut c);
    out.status.code().unwrap_or(-1)
}

fn compare(a: &Path, b: &Path, luks: bool) {
    let mut c = Command::new("qemu-img");
    c.args(["compare", "--object", SECRET, "--image-opts", &image_opts(a, luks), &image_opts(b, luks)]);
    common::run(&mut c);
}

fn create(dir: &common::TempDir, name: &str, opts: &str, size: &str, luks: bool) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut o = opts.to_string();
    if luks {
        o.push_str(",encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10");
    }
    let mut c = Command::new("qemu-img");
    c.args(["create", "-f", "qcow2", "--object", SECRET, "-o", &o]).arg(&p).arg(size);
    common::run(&mut c);
    p
}

fn qemu_io(path: &Path, luks: bool, cmds: &[&str]) {
    common::qemu_io(&[SECRET], &image_opts(path, luks), cmds);
}

fn qluks_resize(path: &Path, luks: bool, size: u64, shrink: bool) -> Result<(), Error<std::io::Error>> {
    let mut q = Qcow2Image::open(open_rw(path), luks.then_some(PASS))?;
    q.resize(size, shrink)?;
    q.flush()
}

fn qemu_resize(path: &Path, luks: bool, size: u64, shrink: bool) {
    let mut c = Command::new("qemu-img");
    c.args(["resize", "--object", SECRET]);
    if shrink {
        c.arg("--shrink");
    }
    c.args(["--image-opts", &image_opts(path, luks), &size.to_string()]);
    common::run(&mut c);
}

struct Case {
    name: &'static str,
    opts: &'static str,
    luks: bool,
    from: &'static str,
    to: u64,
    writes: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "v3",
        opts: "compat=1.1",
        luks: false,
        from: "64M",
        to: 3 << 40,
        writes: &["write -P 0x11 0 1M", "write -P 0x22 60M 4M"],
    },
    Case { name: "v2", opts: "compat=0.10", luks: false, from: "64M", to: 100 << 30, writes: &["write -P 0x33 1M 3M"] },
    Case {
        name: "luks",
        opts: "compat=1.1",
        luks: true,
        from: "16M",
        to: 200 << 30,
        writes: &["write -P 0x44 0 2M", "write -P 0x45 15M 1M"],
    },
    Case {
        name: "ext-l2",
        opts: "extended_l2=on,cluster_size=64k",
        luks: false,
        from: "32M",
        to: 1 << 40,
        writes: &["write -P 0x55 8k 100k"],
    },
    Case {
        name: "small-clusters",
        opts: "cluster_size=512",
        luks: false,
        from: "1M",
        to: 64 << 20,
        writes: &["write -P 0x66 0 1M"],
    },
    Case {
        name: "rc1",
        opts: "cluster_size=512,refcount_bits=1",
        luks: false,
        from: "1M",
        to: 48 << 20,
        writes: &["write -P 0x77 0 512k"],
    },
    Case {
        name: "rc16-small",
        opts: "cluster_size=1k,refcount_bits=16",
        luks: false,
        from: "2M",
        to: 300 << 20,
        writes: &["write -P 0x78 1M 1M"],
    },
    Case {
        name: "rc64",
        opts: "cluster_size=512,refcount_bits=64",
        luks: false,
        from: "1M",
        to: 32 << 20,
        writes: &["write -P 0x79 0 1M"],
    },
    // New L1 tables longer than a refcount block's range (the run crosses ranges without one).
    Case {
        name: "l1-over-blocks-16",
        opts: "cluster_size=512",
        luks: false,
        from: "1M",
        to: 2 << 30,
        writes: &["write -P 0x7b 0 1M"],
    },
    Case {
        name: "l1-over-blocks-64",
        opts: "cluster_size=512,refcount_bits=64",
        luks: false,
        from: "1M",
        to: 256 << 20,
        writes: &["write -P 0x7c 0 1M"],
    },
    Case {
        name: "luks-small",
        opts: "cluster_size=512",
        luks: true,
        from: "1M",
        to: 20 << 20,
        writes: &["write -P 0x7a 0 1M"],
    },
];

#[test]
fn grow_matches_qemu_img() {
    if !common::tools("grow_matches_qemu_img", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("resize-grow");
    for case in CASES {
        let a = create(&dir, &format!("{}-a.qcow2", case.name), case.opts, case.from, case.luks);
        qemu_io(&a, case.luks, case.writes);
        let b = dir.join(&format!("{}-b.qcow2", case.name));
        std::fs::copy(&a, &b).unwrap();
        qluks_resize(&a, case.luks, case.to, false).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        qemu_resize(&b, case.luks, case.to, false);
        assert_eq!(fields(&a), fields(&b), "{}: header fields (size, l1_size, l1 offset, reftable)", case.name);
        assert_eq!(check_code(&a, case.luks), 0, "{}: qemu-img check", case.name);
        compare(&a, &b, case.luks);
        // Written again after the grow: the new area maps like any other.
        qemu_io(&a, case.luks, &[&format!("write -P 0x99 {} 64k", case.to - 65536)]);
        qemu_io(&a, case.luks, &[&format!("read -P 0x99 {} 64k", case.to - 65536)]);
        assert_eq!(check_code(&a, case.luks), 0, "{}: check after a write at the new end", case.name);
    }
}

/// (name, create options, LUKS, size, new size, qemu-io commands)
type ShrinkCase = (&'static str, &'static str, bool, &'static str, u64, &'static [&'static str]);

#[test]
fn shrink_matches_qemu_img() {
    if !common::tools("shrink_matches_qemu_img", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("resize-shrink");
    let cases: &[ShrinkCase] = &[
        (
            "v3",
            "compat=1.1",
            false,
            "2G",
            700 << 20,
            &["write -P 0x11 0 1M", "write -P 0x12 699M 2M", "write -P 0x13 1500M 1M"],
        ),
        ("v2", "compat=0.10", false, "64M", (20 << 20) + 512, &["write -P 0x21 19M 3M", "write -P 0x22 40M 1M"]),
        ("luks", "compat=1.1", true, "32M", 8 << 20, &["write -P 0x31 7M 2M", "write -P 0x32 30M 1M"]),
        ("ext-l2", "extended_l2=on", false, "64M", 10 << 20, &["write -P 0x41 9M 2M", "write -z 20M 64k"]),
        ("small", "cluster_size=512,refcount_bits=1", false, "4M", 100 << 10, &["write -P 0x51 0 4M"]),
        ("compressed", "cluster_size=4k", false, "8M", 1 << 20, &["write -c -P 0x61 2M 64k", "write -P 0x62 0 1M"]),
    ];
    for &(name, opts, luks, from, to, writes) in cases {
        let a = create(&dir, &format!("{name}-a.qcow2"), opts, from, luks);
        qemu_io(&a, luks, writes);
        let b = dir.join(&format!("{name}-b.qcow2"));
        std::fs::copy(&a, &b).unwrap();
        // Not without the shrink flag, and nothing written.
        let before = std::fs::read(&a).unwrap();
        let e = qluks_resize(&a, luks, to, false).unwrap_err();
        assert!(matches!(e, Error::Resize(ResizeError::ShrinkNotAllowed { .. })), "{name}: {e}");
        assert!(std::fs::read(&a).unwrap() == before, "{name}: a refused shrink wrote");
        qluks_resize(&a, luks, to, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        qemu_resize(&b, luks, to, true);
        let (fa, fb) = (fields(&a), fields(&b));
        assert_eq!((fa.0, fa.1, fa.2), (fb.0, fb.1, fb.2), "{name}: size, l1_size, l1 offset");
        assert_eq!(check_code(&a, luks), 0, "{name}: qemu-img check after the shrink");
        compare(&a, &b, luks);
        // Grown back, both read the same (QEMU keeps the partial last cluster's old bytes).
        qluks_resize(&a, luks, 3 << 30, false).unwrap();
        qemu_resize(&b, luks, 3 << 30, false);
        compare(&a, &b, luks);
        assert_eq!(check_code(&a, luks), 0, "{name}: check after growing back");
    }
}

#[test]
fn refusals_are_typed_and_write_nothing() {
    if !common::tools("refusals_are_typed_and_write_nothing", &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new("resize-refuse");
    let a = create(&dir, "a.qcow2", "compat=1.1", "1M", false);
    let before = std::fs::read(&a).unwrap();
    let e = qluks_resize(&a, false, (1 << 20) + 1000, false).unwrap_err();
    assert!(matches!(e, Error::Resize(ResizeError::Unaligned { size }) if size == (1 << 20) + 1000), "{e}");
    let e = qluks_resize(&a, false, 1 << 62, false).unwrap_err();
    assert!(matches!(e, Error::Resize(ResizeError::TooLarge { .. })), "{e}");
    assert!(std::fs::read(&a).unwrap() == before);
    // QEMU refuses unaligned sizes too.
    let out = common::output(Command::new("qemu-img").args(["resize"]).arg(&a).arg("1049000"));
    assert!(!out.status.success());

    // v2 with a snapshot: QEMU refuses, so do we.
    let v2 = create(&dir, "v2.qcow2", "compat=0.10", "1M", false);
    common::qemu_img(&["snapshot", "-c", "s1", v2.to_str().unwrap()]);
    let before = std::fs::read(&v2).unwrap();
    let e = qluks_resize(&v2, false, 2 << 20, false).unwrap_err();
    assert!(matches!(e, Error::Resize(ResizeError::V2WithSnapshots)), "{e}");
    assert!(std::fs::read(&v2).unwrap() == before);
    let out = common::output(Command::new("qemu-img").args(["resize"]).arg(&v2).arg("2M"));
    assert!(!out.status.success(), "qemu-img resized a v2 image with snapshots");

    // v3 with a snapshot: allowed, and the snapshot keeps its data.
    let v3 = create(&dir, "v3.qcow2", "compat=1.1,cluster_size=512", "1M", false);
    common::qemu_io(&[], &image_opts(&v3, false), &["write -P 0x5a 0 1M"]);
    common::qemu_img(&["snapshot", "-c", "s1", v3.to_str().unwrap()]);
    qluks_resize(&v3, false, 64 << 20, false).unwrap();
    qluks_resize(&v3, false, 256 << 10, true).unwrap();
    assert_eq!(check_code(&v3, false), 0);
    common::qemu_img(&["snapshot", "-a", "s1", v3.to_str().unwrap()]);
    common::qemu_io(&[], &image_opts(&v3, false), &["read -P 0x5a 0 1M"]);

    // LUKS without the passphrase: refused before writing.
    let l = create(&dir, "l.qcow2", "compat=1.1", "1M", true);
    let before = std::fs::read(&l).unwrap();
    let mut q = Qcow2Image::open_metadata(open_rw(&l), None).unwrap();
    assert!(matches!(q.resize(2 << 20, false), Err(Error::PassphraseRequired)));
    drop(q);
    assert!(std::fs::read(&l).unwrap() == before);
}

/// A file whose writes fail after `left` of them (a crash: what was written stays).
struct Crashy {
    file: File,
    left: Option<usize>,
    writes: usize,
}

impl BlockIo for Crashy {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if self.left == Some(0) {
            return Err(std::io::Error::other("injected crash"));
        }
        self.left = self.left.map(|n| n - 1);
        self.writes += 1;
        self.file.write_at(offset, buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&mut self) -> std::io::Result<u64> {
        self.file.size()
    }
}

/// Resizes a copy of `orig` with writes failing after `left`; returns the writes done.
fn crashy_resize(orig: &Path, work: &Path, luks: bool, to: u64, shrink: bool, left: Option<usize>) -> usize {
    std::fs::copy(orig, work).unwrap();
    let dev = Crashy { file: open_rw(work), left, writes: 0 };
    let mut q: Qcow2<Crashy> = Qcow2::open_with_data_file(dev, None, luks.then_some(PASS)).unwrap();
    let r = q.resize(to, shrink).and_then(|()| q.flush());
    if left.is_none() {
        r.unwrap();
    }
    // Nothing more reaches the file after the crash (drop flushes, best effort, and fails).
    let (dev, _) = q.into_inner();
    dev.unwrap().writes
}

fn crash_every_write(name: &str, opts: &str, luks: bool, from: &str, writes: &[&str], to: u64, shrink: bool) {
    let dir = common::TempDir::new(&format!("resize-crash-{name}"));
    let orig = create(&dir, "orig.qcow2", opts, from, luks);
    qemu_io(&orig, luks, writes);
    let mut q = Qcow2Image::open(File::open(&orig).unwrap(), luks.then_some(PASS)).unwrap();
    let old = q.size();
    let mut before = vec![0u8; old as usize];
    q.read_at(0, &mut before).unwrap();
    drop(q);
    let work = dir.join("work.qcow2");
    let total = crashy_resize(&orig, &work, luks, to, shrink, None);
    println!("{name}: {total} writes, a crash after each");
    assert!(total > 2, "{name}: {total} writes");
    for n in 0..total {
        crashy_resize(&orig, &work, luks, to, shrink, Some(n));
        let code = check_code(&work, luks);
        assert!(code == 0 || code == 3, "{name}: crash after {n} of {total} writes: qemu-img check exit {code}");
        let mut q = Qcow2Image::open(File::open(&work).unwrap(), luks.then_some(PASS)).unwrap();
        let size = q.size();
        assert!(size == old || size == to, "{name}: crash after {n}: size {size}");
        let mut now = vec![0u8; size as usize];
        q.read_at(0, &mut now).unwrap();
        let keep = old.min(to) as usize;
        assert!(now[..keep] == before[..keep], "{name}: crash after {n}: data below the smaller size changed");
        if size == old && to > old {
            assert!(now == before, "{name}: crash after {n}: old size, data changed");
        }
        if size == to && to > old {
            assert!(now[old as usize..].iter().all(|&b| b == 0), "{name}: crash after {n}: the new area is not zero");
        }
    }
}

#[test]
fn crash_at_every_write_of_a_grow() {
    if !common::tools("crash_at_every_write_of_a_grow", &["qemu-img", "qemu-io"]) {
        return;
    }
    crash_every_write(
        "grow",
        "cluster_size=512,refcount_bits=16",
        false,
        "1M",
        &["write -P 0x66 0 1M"],
        40 << 20,
        false,
    );
    // The new L1 run crosses ranges without a refcount block (64 entries per block here).
    crash_every_write(
        "grow-over-blocks",
        "cluster_size=512,refcount_bits=64",
        false,
        "1M",
        &["write -P 0x68 0 1M"],
        192 << 20,
        false,
    );
    crash_every_write("grow-luks", "cluster_size=512", true, "256k", &["write -P 0x67 0 256k"], 8 << 20, false);
}

#[test]
fn crash_at_every_write_of_a_shrink() {
    if !common::tools("crash_at_every_write_of_a_shrink", &["qemu-img", "qemu-io"]) {
        return;
    }
    crash_every_write(
        "shrink",
        "cluster_size=512,refcount_bits=16",
        false,
        "2M",
        &["write -P 0x66 0 2M"],
        300 << 10,
        true,
    );
}

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

/// Resize (L1 growth across clusters, shrink) and keyslot amend (add, erase) run in the
/// project's 64 KiB of stack (128 KiB in debug builds) and allocate nothing: the image lives in
/// the caller's memory (a box here).
#[test]
fn resize_and_amend_fit_in_64_kib_of_stack_without_heap() {
    use qluks::crypto::OsRng;
    use qluks::luks::KdfLimits;
    use qluks::qcow2::amend::{AmendKeyslots, KeyslotState};
    let t = "resize_and_amend_fit_in_64_kib_of_stack_without_heap";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    common::counting_alloc::assert_counter_sees_allocations();
    let kib = if cfg!(debug_assertions) { 128 } else { 64 };
    let kib = std::env::var("QLUKS_STACK_KIB").ok().and_then(|s| s.parse().ok()).unwrap_or(kib);
    let dir = common::TempDir::new("resize-stack");
    let a = create(&dir, "a.qcow2", "cluster_size=512", "1M", true);
    qemu_io(&a, true, &["write -P 0x21 0 1M"]);
    let mut q = Box::new(Qcow2Image::open(open_rw(&a), Some(PASS)).unwrap());
    let (q, allocations) = std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(move || {
            common::counting_alloc::count_allocations(move || {
                q.resize(64 << 20, false).unwrap();
                q.resize(512 << 10, true).unwrap();
                q.flush().unwrap();
                let add = AmendKeyslots {
                    state: KeyslotState::Active,
                    keyslot: None,
                    new_secret: Some(b"stack-new"),
                    old_secret: None,
                    iterations: Some(1000),
                };
                assert_eq!(q.amend_keyslots(Some(PASS), &add, &KdfLimits::DEFAULT, &mut OsRng).unwrap(), 2);
                let erase = AmendKeyslots {
                    state: KeyslotState::Inactive,
                    keyslot: None,
                    new_secret: None,
                    old_secret: Some(PASS),
                    iterations: None,
                };
                assert_eq!(q.amend_keyslots(None, &erase, &KdfLimits::DEFAULT, &mut OsRng).unwrap(), 1);
                q
            })
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(allocations, 0, "resize and amend allocated");
    drop(q);
    assert_eq!(fields(&a).0, 512 << 10);
    let mut c = Command::new("qemu-img");
    c.args(["check", "--object", "secret,id=sec0,data=stack-new", "--image-opts", &image_opts(&a, true)]);
    common::run(&mut c);
    common::qemu_io(&["secret,id=sec0,data=stack-new"], &image_opts(&a, true), &["read -P 0x21 0 512k"]);
}

/// Growing an overlay whose backing file is longer than the old size: the new area reads as
/// zeros (QEMU zeroes it), through `Chain::resize`; `Qcow2::resize` alone refuses to grow an
/// overlay, and a v2 overlay is refused as QEMU fails, both before writing.
#[test]
fn growing_an_overlay_hides_the_longer_backing_file_like_qemu() {
    use qluks::qcow2::file_resolver::FileResolver;
    use qluks::qcow2::Chain;
    let t = "growing_an_overlay_hides_the_longer_backing_file_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("resize-overlay");
    let base = create(&dir, "base.qcow2", "compat=1.1", "4M", false);
    qemu_io(&base, false, &["write -P 0x77 0 4M"]);
    // (name, overlay options, old size, new size)
    let cases: &[(&str, &str, u64, u64)] = &[
        ("aligned", "compat=1.1", 1 << 20, 6 << 20),
        ("unaligned-head", "compat=1.1", (1 << 20) + 512, 3 << 20),
        ("ext-l2", "compat=1.1,extended_l2=on", (1 << 20) + 2048, 4 << 20),
        ("shorter-backing", "compat=1.1", 5 << 20, 8 << 20),
    ];
    for &(name, o, from, to) in cases {
        let a = dir.join(&format!("{name}-a.qcow2"));
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", o])
            .arg(&a)
            .arg(from.to_string());
        common::run(&mut c);
        qemu_io(&a, false, &["write -P 0x12 4096 4096"]);
        let b = dir.join(&format!("{name}-b.qcow2"));
        std::fs::copy(&a, &b).unwrap();
        let before = std::fs::read(&a).unwrap();
        let e = qluks_resize(&a, false, to, false).unwrap_err();
        assert!(matches!(e, Error::Resize(ResizeError::BackingChainRequired)), "{name}: {e}");
        assert!(std::fs::read(&a).unwrap() == before, "{name}: refused, yet written");
        let mut r = FileResolver::new(&a, dir.path()).unwrap();
        let mut chain: Chain<File> = Chain::open(open_rw(&a), &mut r).unwrap();
        let mut scratch = vec![0u8; chain.write_scratch_len()];
        chain.resize(to, false, &mut scratch).unwrap_or_else(|e| panic!("{name}: {e}"));
        chain.flush().unwrap();
        drop(chain);
        qemu_resize(&b, false, to, false);
        assert_eq!(fields(&a).0, to);
        assert_eq!(check_code(&a, false), 0, "{name}: check");
        compare(&a, &b, false);
    }
    // Version 2: QEMU fails ("Failed to zero out new clusters"); qluks refuses first.
    let v2 = dir.join("v2.qcow2");
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", "compat=0.10"]).arg(&v2).arg("1M");
    common::run(&mut c);
    let before = std::fs::read(&v2).unwrap();
    let mut r = FileResolver::new(&v2, dir.path()).unwrap();
    let mut chain: Chain<File> = Chain::open(open_rw(&v2), &mut r).unwrap();
    let mut scratch = vec![0u8; chain.write_scratch_len()];
    let e = chain.resize(4 << 20, false, &mut scratch).unwrap_err();
    assert!(matches!(e, Error::Resize(ResizeError::V2CannotZero)), "{e}");
    drop(chain);
    assert!(std::fs::read(&v2).unwrap() == before);
}

/// A writable device that takes only whole aligned 512-byte blocks (panics otherwise).
struct Blocks512(File);

impl BlockIo for Blocks512 {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        assert!(
            offset.is_multiple_of(512) && buf.len().is_multiple_of(512),
            "read of {} bytes at {offset:#x}",
            buf.len()
        );
        self.0.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        assert!(
            offset.is_multiple_of(512) && buf.len().is_multiple_of(512),
            "write of {} bytes at {offset:#x}",
            buf.len()
        );
        self.0.write_at(offset, buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&mut self) -> std::io::Result<u64> {
        self.0.size()
    }
    fn block_size(&self) -> usize {
        512
    }
}

/// Resize (L1 growth, header fields of 8 and 12 bytes, L1 entries zeroed one at a time) and
/// keyslot amend (the 592-byte phdr) on a device of whole 512-byte blocks.
#[test]
fn resize_and_amend_on_a_512_byte_block_device() {
    use qluks::crypto::OsRng;
    use qluks::luks::KdfLimits;
    use qluks::qcow2::amend::{AmendKeyslots, KeyslotState};
    let t = "resize_and_amend_on_a_512_byte_block_device";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("resize-blocks");
    let a = create(&dir, "a.qcow2", "cluster_size=4k", "4M", true);
    qemu_io(&a, true, &["write -P 0x2b 0 4M"]);
    let b = dir.join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    let mut q: Box<Qcow2<Blocks512>> =
        Box::new(Qcow2::open_with_data_file(Blocks512(open_rw(&a)), None, Some(PASS)).unwrap());
    q.resize(9 << 30, false).unwrap();
    q.resize(1 << 20, true).unwrap();
    q.flush().unwrap();
    let add = AmendKeyslots {
        state: KeyslotState::Active,
        keyslot: Some(6),
        new_secret: Some(b"block-new"),
        old_secret: None,
        iterations: Some(1000),
    };
    q.amend_keyslots(Some(PASS), &add, &KdfLimits::DEFAULT, &mut OsRng).unwrap();
    let erase = AmendKeyslots {
        state: KeyslotState::Inactive,
        keyslot: Some(0),
        new_secret: None,
        old_secret: None,
        iterations: None,
    };
    q.amend_keyslots(None, &erase, &KdfLimits::DEFAULT, &mut OsRng).unwrap();
    drop(q);
    qemu_resize(&b, true, 9 << 30, false);
    qemu_resize(&b, true, 1 << 20, true);
    let sec = "secret,id=sec0,data=block-new";
    let mut c = Command::new("qemu-img");
    c.args(["check", "--object", sec, "--image-opts", &image_opts(&a, true)]);
    common::run(&mut c);
    common::qemu_io(&[sec], &image_opts(&a, true), &["read -P 0x2b 0 1M"]);
    let (fa, fb) = (fields(&a), fields(&b));
    assert_eq!((fa.0, fa.1, fa.2), (fb.0, fb.1, fb.2));
}

/// Opens the one backing file of the crash test (through [`Crashy`], never failing).
struct BaseResolver(std::path::PathBuf);

impl qluks::qcow2::backing::Resolver<Crashy> for BaseResolver {
    type Error = &'static str;
    fn open_backing(
        &mut self,
        _: &qluks::qcow2::backing::BackingRequest<'_>,
    ) -> Result<qluks::qcow2::backing::Opened<Crashy>, &'static str> {
        let io = Crashy { file: File::open(&self.0).unwrap(), left: None, writes: 0 };
        Ok(qluks::qcow2::backing::Opened {
            io,
            format: Some(qluks::qcow2::backing::BackingFormat::Qcow2),
            identity: None,
        })
    }
    fn passphrase(&mut self, _: usize) -> Option<&[u8]> {
        None
    }
    fn open_data_file(&mut self, _: &qluks::qcow2::backing::DataFileRequest<'_>) -> Result<Crashy, &'static str> {
        Err("no data files")
    }
}

/// A crash after every write of an overlay grow that zeroes the new area over a longer
/// backing file: check clean (or leaks), and the overlay reads as before or as after.
#[test]
fn crash_at_every_write_of_an_overlay_grow() {
    use qluks::qcow2::Chain;
    let t = "crash_at_every_write_of_an_overlay_grow";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("resize-crash-overlay");
    let base = create(&dir, "base.qcow2", "compat=1.1", "4M", false);
    qemu_io(&base, false, &["write -P 0x77 0 4M"]);
    let orig = dir.join("orig.qcow2");
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", "cluster_size=4k"])
        .arg(&orig)
        .arg(((1 << 20) + 512).to_string());
    common::run(&mut c);
    qemu_io(&orig, false, &["write -P 0x12 0 64k"]);
    let old = (1 << 20) + 512;
    let to = 4 << 20;
    let before = common::qemu_raw(&dir, &[], &image_opts(&orig, false));
    let work = dir.join("work.qcow2");
    let run = |left: Option<usize>| {
        std::fs::copy(&orig, &work).unwrap();
        let top = Crashy { file: open_rw(&work), left, writes: 0 };
        let mut chain: Chain<Crashy> = Chain::open(top, &mut BaseResolver(base.clone())).unwrap();
        let mut scratch = vec![0u8; chain.write_scratch_len()];
        let r = chain.resize(to, false, &mut scratch).and_then(|()| chain.flush());
        if left.is_none() {
            r.unwrap();
        }
        let Some(qluks::qcow2::Layer::Qcow2(top)) = chain.layers_mut()[0].take() else { panic!("no top") };
        top.into_inner().0.unwrap().writes
    };
    let total = run(None);
    println!("overlay grow: {total} writes, a crash after each");
    assert!(total > 3);
    for n in 0..total {
        run(Some(n));
        let code = check_code(&work, false);
        assert!(code == 0 || code == 3, "crash after {n} of {total}: qemu-img check exit {code}");
        let now = common::qemu_raw(&dir, &[], &image_opts(&work, false));
        match now.len() as u64 {
            s if s == old => assert!(now == before, "crash after {n}: old size, data changed"),
            s if s == to => {
                assert!(now[..old as usize] == before[..], "crash after {n}: data below the old size changed");
                assert!(now[old as usize..].iter().all(|&b| b == 0), "crash after {n}: backing data shows");
            }
            s => panic!("crash after {n}: size {s}"),
        }
    }
}
