//! `qcow2::create::create` against qemu-img 10: images created by qluks for every option pass
//! `qemu-img check`, show their options in `qemu-img info`, read as zeros through qemu-io and
//! the qluks reader, take a qemu-io write and read it back; for the options where QEMU's
//! layout is reproduced the file is byte-identical to `qemu-img create`'s (LUKS: identical
//! outside the LUKS header area, whose key material is random). Invalid options are typed
//! errors and write nothing.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use common::counting_alloc::count_allocations;
use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::io::{BlockIo, MemIo};
use qluks::luks::luks1::Iterations;
use qluks::qcow2::compressed::Compression;
use qluks::qcow2::create::{create, Compat, CreateError, CreateOptions, Encryption, Preallocation};
use qluks::qcow2::{Error, Qcow2};

const PASS: &str = "create-pass";

fn secret() -> String {
    format!("secret,id=sec0,data={PASS}")
}

fn image_opts(img: &Path, encrypted: bool) -> String {
    let mut o = format!("driver=qcow2,file.filename={}", img.display());
    if encrypted {
        o.push_str(",encrypt.key-secret=sec0");
    }
    o
}

fn qluks_create(img: &Path, opts: &mut CreateOptions<'_>) {
    let mut f = File::options().read(true).write(true).create(true).truncate(true).open(img).unwrap();
    create(&mut f, opts, &mut OsRng).unwrap_or_else(|e| panic!("create {}: {e}", img.display()));
}

/// `qemu-img create -f qcow2 [--object secret] -o OPTS IMG SIZE`.
fn qemu_create(img: &Path, opts: &str, size: &str, backing: Option<(&str, &str)>) {
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2", "--object", &secret()]);
    if let Some((b, fmt)) = backing {
        c.args(["-b", b, "-F", fmt]);
    }
    if !opts.is_empty() {
        c.args(["-o", opts]);
    }
    common::run(c.arg(img).arg(size));
}

fn info(img: &Path, encrypted: bool) -> serde_json::Value {
    let mut c = Command::new("qemu-img");
    c.args(["info", "--output=json", "--object", &secret(), "--image-opts", &image_opts(img, encrypted)]);
    serde_json::from_str(&common::run(&mut c)).unwrap()
}

/// `qemu-img check` exits 0 (no corruption, no leak).
fn check(img: &Path, encrypted: bool) {
    let mut c = Command::new("qemu-img");
    c.args(["check", "--object", &secret(), "--image-opts", &image_opts(img, encrypted)]);
    let out = common::output(&mut c);
    assert!(
        out.status.success(),
        "qemu-img check {}: {}\n{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_io(img: &Path, encrypted: bool, cmds: &[&str]) -> String {
    let mut c = Command::new("qemu-io");
    c.args(["--object", &secret(), "--image-opts", &image_opts(img, encrypted)]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = common::run(&mut c);
    assert!(!out.contains("Pattern verification failed"), "{img:?} {cmds:?}: {out}");
    out
}

/// The whole round: check, zeros through qemu-io and qluks, a qemu-io write read back by both,
/// check again.
fn exercise(img: &Path, encrypted: bool, size: u64) {
    check(img, encrypted);
    let len = size.min(3 << 20);
    let tail = size.saturating_sub(4096);
    qemu_io(img, encrypted, &[&format!("read -P 0 0 {len}"), &format!("read -P 0 {tail} {}", size - tail)]);
    let pass = encrypted.then_some(PASS.as_bytes());
    {
        let mut q = Qcow2::open(File::open(img).unwrap(), pass).unwrap();
        assert_eq!(q.size(), size);
        let mut buf = vec![0xffu8; len as usize];
        q.read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "{img:?}: qluks reads non-zero bytes");
    }
    if size >= 8192 {
        let w = [format!("write -P 0x5a 512 {}", size.min(200_000) - 1024), format!("write -P 0x33 {tail} 4096")];
        qemu_io(img, encrypted, &[&w[0], &w[1]]);
        let r = [format!("read -P 0x5a 512 {}", size.min(200_000) - 1024), format!("read -P 0x33 {tail} 4096")];
        qemu_io(img, encrypted, &[&r[0], &r[1], "read -P 0 0 512"]);
        let mut q = Qcow2::open(File::open(img).unwrap(), pass).unwrap();
        let mut buf = vec![0u8; 4096];
        q.read_at(tail, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x33), "{img:?}: qluks does not read qemu-io's write");
        q.read_at(0, &mut buf[..1024]).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 0) && buf[512..1024].iter().all(|&b| b == 0x5a));
        check(img, encrypted);
    }
}

/// The FDE extension of a LUKS qcow2: (offset, length).
fn fde(bytes: &[u8]) -> Option<(u64, u64)> {
    let be32 = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    let be64 = |o: usize| u64::from_be_bytes(bytes[o..o + 8].try_into().unwrap());
    let mut at = if be32(4) == 3 { be32(100) as usize } else { 72 };
    loop {
        let (t, len) = (be32(at), be32(at + 4) as usize);
        if t == 0 {
            return None;
        }
        if t == 0x0537_be77 {
            return Some((be64(at + 8), be64(at + 16)));
        }
        at += 8 + len.next_multiple_of(8);
    }
}

/// qluks's file equals qemu-img's, outside the LUKS header area (random key material).
/// Compared in 1 MiB pieces (preallocated images are gigabytes of sparse zeros).
fn same_layout(ours: &Path, theirs: &Path) {
    use std::os::unix::fs::FileExt;
    let (a, b) = (File::open(ours).unwrap(), File::open(theirs).unwrap());
    let len = a.metadata().unwrap().len();
    assert_eq!(len, b.metadata().unwrap().len(), "file sizes differ: {ours:?} vs qemu-img");
    let mut head = vec![0u8; 4096.min(len as usize)];
    a.read_exact_at(&mut head, 0).unwrap();
    let mut head_b = head.clone();
    b.read_exact_at(&mut head_b, 0).unwrap();
    let area = fde(&head);
    assert_eq!(area, fde(&head_b), "FDE extensions differ");
    let (start, end) = area.map_or((len, len), |(o, l)| (o, o + l));
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    // Before the LUKS area and after it: byte for byte.
    for (what, mut at, stop) in [("before the LUKS area", 0, start), ("after the LUKS area", end, len)] {
        while at < stop {
            let n = (stop - at).min(1 << 20) as usize;
            a.read_exact_at(&mut x[..n], at).unwrap();
            b.read_exact_at(&mut y[..n], at).unwrap();
            if x[..n] != y[..n] {
                let i = (0..n).find(|&i| x[i] != y[i]).unwrap();
                panic!(
                    "{ours:?} differs from qemu-img's {what} at {:#x}: {:#04x} vs {:#04x}",
                    at + i as u64,
                    x[i],
                    y[i]
                );
            }
            at += n as u64;
        }
    }
}

struct Case {
    name: &'static str,
    qemu: &'static str,
    size: u64,
    /// Byte-identical to qemu-img (outside the LUKS area).
    identical: bool,
    set: fn(&mut CreateOptions<'_>),
}

fn luks(o: &mut CreateOptions<'_>) {
    o.encryption = Encryption::Luks {
        passphrase: PASS.as_bytes(),
        cipher: CipherSpec::DEFAULT,
        hash: HashAlg::Sha256,
        iterations: Iterations::fixed(1000),
    };
}

const CASES: &[Case] = &[
    Case { name: "default", qemu: "", size: 64 << 20, identical: true, set: |_| {} },
    Case { name: "size0", qemu: "", size: 0, identical: true, set: |_| {} },
    Case { name: "odd-size", qemu: "", size: 1_000_448, identical: true, set: |_| {} },
    Case { name: "5T", qemu: "", size: 5 << 40, identical: true, set: |_| {} },
    Case { name: "c512", qemu: "cluster_size=512", size: 64 << 20, identical: true, set: |o| o.cluster_size = 512 },
    // An L1 table of 10240 clusters, described by 40 refcount blocks.
    Case { name: "c512-20G", qemu: "cluster_size=512", size: 20 << 30, identical: true, set: |o| o.cluster_size = 512 },
    Case {
        name: "c1k-r32-8G",
        qemu: "cluster_size=1k,refcount_bits=32",
        size: 8 << 30,
        identical: true,
        set: |o| {
            o.cluster_size = 1024;
            o.refcount_bits = 32;
        },
    },
    Case { name: "c2k", qemu: "cluster_size=2k", size: 64 << 20, identical: true, set: |o| o.cluster_size = 2048 },
    Case { name: "c4k", qemu: "cluster_size=4k", size: 64 << 20, identical: true, set: |o| o.cluster_size = 4096 },
    Case { name: "c2M", qemu: "cluster_size=2M", size: 1 << 30, identical: true, set: |o| o.cluster_size = 2 << 20 },
    Case { name: "v2", qemu: "compat=0.10", size: 64 << 20, identical: true, set: |o| o.compat = Compat::V0_10 },
    Case {
        name: "xl2-zstd-lazy",
        qemu: "extended_l2=on,compression_type=zstd,lazy_refcounts=on",
        size: 64 << 20,
        identical: true,
        set: |o| {
            o.extended_l2 = true;
            o.compression = Compression::Zstd;
            o.lazy_refcounts = true;
        },
    },
    Case {
        name: "prealloc",
        qemu: "preallocation=metadata",
        size: 64 << 20,
        identical: true,
        set: |o| o.preallocation = Preallocation::Metadata,
    },
    Case {
        name: "prealloc-2G",
        qemu: "preallocation=metadata",
        size: 2 << 30,
        identical: true,
        set: |o| o.preallocation = Preallocation::Metadata,
    },
    Case {
        name: "prealloc-4k",
        qemu: "preallocation=metadata,cluster_size=4k",
        size: 64 << 20,
        identical: true,
        set: |o| {
            o.preallocation = Preallocation::Metadata;
            o.cluster_size = 4096;
        },
    },
    Case {
        name: "prealloc-512",
        qemu: "preallocation=metadata,cluster_size=512",
        size: 1 << 20,
        identical: true,
        set: |o| {
            o.preallocation = Preallocation::Metadata;
            o.cluster_size = 512;
        },
    },
    Case {
        name: "prealloc-xl2",
        qemu: "preallocation=metadata,extended_l2=on,cluster_size=32k",
        size: 5 << 20,
        identical: true,
        set: |o| {
            o.preallocation = Preallocation::Metadata;
            o.extended_l2 = true;
            o.cluster_size = 32768;
        },
    },
    Case {
        name: "luks",
        qemu: "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 64 << 20,
        identical: true,
        set: luks,
    },
    Case {
        name: "luks-size0",
        qemu: "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 0,
        identical: true,
        set: luks,
    },
    Case {
        name: "luks-5T",
        qemu: "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 5 << 40,
        identical: true,
        set: luks,
    },
    Case {
        name: "luks-v2",
        qemu: "compat=0.10,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 1 << 20,
        identical: true,
        set: |o| {
            luks(o);
            o.compat = Compat::V0_10;
        },
    },
    // iotest 284: the LUKS header area in whole clusters at 512 B, 2 KiB and 32 KiB.
    Case {
        name: "luks-c512",
        qemu: "cluster_size=512,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 1 << 20,
        // The header area spans 16 refcount blocks: block 15 is placed before 1..14 (QEMU's
        // recursion), and the refcount table says so.
        identical: true,
        set: |o| {
            luks(o);
            o.cluster_size = 512;
        },
    },
    Case {
        name: "luks-c2k",
        qemu: "cluster_size=2k,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 1 << 20,
        identical: true,
        set: |o| {
            luks(o);
            o.cluster_size = 2048;
        },
    },
    Case {
        name: "luks-c32k",
        qemu: "cluster_size=32k,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 1 << 20,
        identical: true,
        set: |o| {
            luks(o);
            o.cluster_size = 32768;
        },
    },
    // More refcount blocks than one table cluster holds: the table moves to the end (QEMU
    // relocates it there too, with a different layout).
    Case {
        name: "luks-c512-r64",
        qemu: "cluster_size=512,refcount_bits=64,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        size: 1 << 20,
        identical: false,
        set: |o| {
            luks(o);
            o.cluster_size = 512;
            o.refcount_bits = 64;
        },
    },
    Case {
        name: "prealloc-c512-r64",
        qemu: "cluster_size=512,refcount_bits=64,preallocation=metadata",
        size: 4 << 20,
        identical: false,
        set: |o| {
            o.cluster_size = 512;
            o.refcount_bits = 64;
            o.preallocation = Preallocation::Metadata;
        },
    },
];

/// `qemu-img info` without what differs between any two LUKS headers (UUID, measured
/// iteration counts).
fn without_random(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(e) = v.pointer_mut("/format-specific/data/encrypt").and_then(|e| e.as_object_mut()) {
        e.remove("uuid");
        e.remove("master-key-iters");
        for slot in e.get_mut("slots").and_then(|s| s.as_array_mut()).into_iter().flatten() {
            slot.as_object_mut().unwrap().remove("iters");
        }
    }
    v
}

#[test]
fn created_images_match_qemu_img_and_pass_its_checks() {
    let t = "created_images_match_qemu_img_and_pass_its_checks";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    for case in CASES {
        let ours = dir.join(&format!("{}.qcow2", case.name));
        let theirs = dir.join(&format!("{}-qemu.qcow2", case.name));
        let mut o = CreateOptions::new(case.size);
        (case.set)(&mut o);
        let encrypted = !matches!(o.encryption, Encryption::None);
        qluks_create(&ours, &mut o);
        qemu_create(&theirs, case.qemu, &case.size.to_string(), None);
        if case.identical {
            same_layout(&ours, &theirs);
        }
        let (a, b) = (info(&ours, encrypted), info(&theirs, encrypted));
        let (a, b) = (without_random(a), without_random(b));
        assert_eq!(a["virtual-size"], b["virtual-size"], "{}", case.name);
        assert_eq!(a["cluster-size"], b["cluster-size"], "{}", case.name);
        assert_eq!(a["format-specific"], b["format-specific"], "{}: info differs", case.name);
        exercise(&ours, encrypted, case.size);
    }
}

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

/// A growable in-memory file (what `File` does, without the file system).
struct VecIo {
    data: Vec<u8>,
    /// The device's block size; every request must be whole aligned blocks.
    block: usize,
    writes: usize,
}

impl BlockIo for VecIo {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.aligned(offset, buf.len());
        let end = offset as usize + buf.len();
        if end > self.data.len() {
            return Err(std::io::Error::other("read past the end"));
        }
        buf.copy_from_slice(&self.data[offset as usize..end]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.aligned(offset, buf.len());
        self.writes += 1;
        let end = offset as usize + buf.len();
        if end > self.data.len() {
            // Grows (outside any allocation count: the vector is reserved by the tests).
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&mut self) -> std::io::Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn block_size(&self) -> usize {
        self.block
    }
}

impl VecIo {
    fn new(block: usize, capacity: usize) -> Self {
        VecIo { data: Vec::with_capacity(capacity), block, writes: 0 }
    }
    fn aligned(&self, offset: u64, len: usize) {
        let b = self.block as u64;
        assert!(
            offset.is_multiple_of(b) && (len as u64).is_multiple_of(b),
            "request of {len} bytes at {offset:#x} is not whole {b}-byte blocks"
        );
    }
}

#[test]
fn refcount_widths_1_to_64_match_qemu_img() {
    let t = "refcount_widths_1_to_64_match_qemu_img";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    for bits in [1u32, 2, 4, 8, 16, 32, 64] {
        // Plain (one refcount block), and preallocated with 4 KiB clusters (several blocks,
        // the narrow widths packed many to a byte).
        for (cs, prealloc, size) in [(65536u64, false, 64u64 << 20), (4096, true, 24 << 20)] {
            let name = format!("r{bits}-{cs}-{prealloc}");
            let ours = dir.join(&format!("{name}.qcow2"));
            let theirs = dir.join(&format!("{name}-qemu.qcow2"));
            let mut o = CreateOptions::new(size);
            o.refcount_bits = bits;
            o.cluster_size = cs;
            if prealloc {
                o.preallocation = Preallocation::Metadata;
            }
            qluks_create(&ours, &mut o);
            let p = if prealloc { ",preallocation=metadata" } else { "" };
            qemu_create(&theirs, &format!("refcount_bits={bits},cluster_size={cs}{p}"), &size.to_string(), None);
            same_layout(&ours, &theirs);
            assert_eq!(info(&ours, false)["format-specific"]["data"]["refcount-bits"], bits);
            exercise(&ours, false, size);
        }
    }
}

#[test]
fn backing_file_and_format_match_qemu_img_and_read_through() {
    let t = "backing_file_and_format_match_qemu_img_and_read_through";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let base = dir.join("base.qcow2");
    qluks_create(&base, &mut CreateOptions::new(4 << 20));
    qemu_io(&base, false, &["write -P 0x77 0 4M"]);
    type Set = fn(&mut CreateOptions<'_>);
    let cases: [(&str, &str, Set); 4] = [
        ("plain", "", |_| {}),
        ("v2", "compat=0.10", |o| o.compat = Compat::V0_10),
        ("prealloc-xl2", "preallocation=metadata,extended_l2=on", |o| {
            o.preallocation = Preallocation::Metadata;
            o.extended_l2 = true;
        }),
        ("luks", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", luks),
    ];
    for (name, qemu, set) in cases {
        let ours = dir.join(&format!("{name}.qcow2"));
        let theirs = dir.join(&format!("{name}-qemu.qcow2"));
        let mut o = CreateOptions::new(4 << 20);
        o.backing_file = Some(b"base.qcow2");
        o.backing_format = Some(b"qcow2");
        set(&mut o);
        let encrypted = !matches!(o.encryption, Encryption::None);
        qluks_create(&ours, &mut o);
        // qemu-img resolves the name against the overlay's directory, as stored.
        qemu_create(&theirs, qemu, "4M", Some(("base.qcow2", "qcow2")));
        same_layout(&ours, &theirs);
        let i = info(&ours, encrypted);
        assert_eq!(i["backing-filename"], "base.qcow2", "{name}");
        assert_eq!(i["backing-filename-format"], "qcow2", "{name}");
        check(&ours, encrypted);
        qemu_io(&ours, encrypted, &["read -P 0x77 0 4M"]);
        qemu_io(&ours, encrypted, &["write -P 0x12 4096 512"]);
        qemu_io(&ours, encrypted, &["read -P 0x77 0 4096", "read -P 0x12 4096 512", "read -P 0x77 4608 65536"]);
        check(&ours, encrypted);
    }
}

#[test]
fn luks_ciphers_hashes_and_iter_time_work_with_qemu() {
    let t = "luks_ciphers_hashes_and_iter_time_work_with_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    // (cipher, hash, what qemu-img info shows: cipher-alg, cipher-mode, ivgen-alg, ivgen-hash-alg)
    let cases = [
        ("aes-128-cbc-essiv:sha256", HashAlg::Sha1, ["aes-128", "cbc", "essiv", "sha256"]),
        ("aes-256-cbc-plain64", HashAlg::Sha512, ["aes-256", "cbc", "plain64", ""]),
        ("aes-128-xts-plain64", HashAlg::Sha384, ["aes-128", "xts", "plain64", ""]),
        // (Not aes-192: 24-byte keys make key material of 187.5 sectors, which QEMU 10 cannot
        // decrypt, not even in images it creates itself: an assertion aborts qemu-img.)
        ("aes-256-cbc-plain", HashAlg::Sha224, ["aes-256", "cbc", "plain", ""]),
        ("aes-256-xts-plain", HashAlg::Ripemd160, ["aes-256", "xts", "plain", ""]),
    ];
    for (i, (cipher, hash, shown)) in cases.into_iter().enumerate() {
        let img = dir.join(&format!("luks{i}.qcow2"));
        let mut clock =
            || std::time::Instant::now().duration_since(*START.get_or_init(std::time::Instant::now)).as_nanos() as u64;
        // The first with a measured iter-time of 10 ms (qemu-img's encrypt.iter-time), the
        // others with small fixed counts.
        let iterations = if i == 0 {
            Iterations::IterTime { ms: 10, clock_ns: &mut clock }
        } else {
            Iterations::fixed(1000 + i as u32)
        };
        let mut o = CreateOptions::new(1 << 20);
        o.cluster_size = 4096 << i; // 4k .. 64k
        o.encryption = Encryption::Luks {
            passphrase: PASS.as_bytes(),
            cipher: CipherSpec::parse_sized(cipher).unwrap(),
            hash,
            iterations,
        };
        qluks_create(&img, &mut o);
        let info = info(&img, true);
        let e = &info["format-specific"]["data"]["encrypt"];
        assert_eq!(e["cipher-alg"], shown[0], "{cipher}");
        assert_eq!(e["cipher-mode"], shown[1], "{cipher}");
        assert_eq!(e["ivgen-alg"], shown[2], "{cipher}");
        if !shown[3].is_empty() {
            assert_eq!(e["ivgen-hash-alg"], shown[3], "{cipher}");
        }
        assert_eq!(e["hash-alg"], hash.name(), "{cipher}");
        if i > 0 {
            assert_eq!(e["slots"][0]["iters"], 1000 + i as u64, "{cipher}");
        }
        exercise(&img, true, 1 << 20);
        // The wrong passphrase is refused by qluks.
        let wrong = Qcow2::open(File::open(&img).unwrap(), Some(b"wrong".as_slice()));
        assert!(wrong.is_err_and(|e| e.is_wrong_passphrase()), "{cipher}");
    }
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

#[test]
fn luks_preallocated_clusters_read_as_zeros_and_take_writes_in_place() {
    let t = "luks_preallocated_clusters_read_as_zeros_and_take_writes_in_place";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    for (name, xl2) in [("luks-prealloc", false), ("luks-prealloc-xl2", true)] {
        let img = dir.join(&format!("{name}.qcow2"));
        let mut o = CreateOptions::new(3 << 20);
        luks(&mut o);
        o.preallocation = Preallocation::Metadata;
        o.extended_l2 = xl2;
        qluks_create(&img, &mut o);
        let before = std::fs::metadata(&img).unwrap().len();
        // QEMU's own layout: the data clusters before the LUKS area.
        let theirs = dir.join(&format!("{name}-qemu.qcow2"));
        let x = if xl2 { ",extended_l2=on" } else { "" };
        qemu_create(
            &theirs,
            &format!("preallocation=metadata,encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10{x}"),
            "3M",
            None,
        );
        assert_eq!(before, std::fs::metadata(&theirs).unwrap().len(), "{name}");
        assert_eq!(fde(&std::fs::read(&img).unwrap()), fde(&std::fs::read(&theirs).unwrap()), "{name}");
        let map = common::run(Command::new("qemu-img").args([
            "map",
            "--output=json",
            "--object",
            &secret(),
            "--image-opts",
            &image_opts(&img, true),
        ]));
        assert!(map.contains("\"zero\": true"), "{name}: {map}");
        exercise(&img, true, 3 << 20);
        // The writes landed in the preallocated clusters: the file did not grow.
        assert_eq!(std::fs::metadata(&img).unwrap().len(), before, "{name}: writes allocated new clusters");
    }
}

#[test]
fn legacy_aes_needs_the_opt_in_then_matches_qemu_img() {
    let t = "legacy_aes_needs_the_opt_in_then_matches_qemu_img";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("aes.qcow2");
    let mut o = CreateOptions::new(1 << 20);
    o.encryption = Encryption::LegacyAes { passphrase: PASS.as_bytes(), i_know_it_is_weak: false };
    let mut io = VecIo::new(1, 0);
    let e = create(&mut io, &mut o, &mut OsRng).unwrap_err();
    assert!(matches!(e, Error::Create(CreateError::LegacyAesWeak)), "{e}");
    assert!(e.to_string().contains("weak"), "{e}");
    assert_eq!(io.writes, 0);

    o.encryption = Encryption::LegacyAes { passphrase: PASS.as_bytes(), i_know_it_is_weak: true };
    qluks_create(&img, &mut o);
    let theirs = dir.join("aes-qemu.qcow2");
    qemu_create(&theirs, "encrypt.format=aes,encrypt.key-secret=sec0", "1M", None);
    same_layout(&img, &theirs);
    assert_eq!(info(&img, true)["format-specific"]["data"]["encrypt"]["format"], "aes");
    exercise(&img, true, 1 << 20);

    // Preallocated (v3): zero entries, so nothing reads as decrypted garbage.
    let img = dir.join("aes-prealloc.qcow2");
    o.preallocation = Preallocation::Metadata;
    qluks_create(&img, &mut o);
    exercise(&img, true, 1 << 20);
}

#[test]
fn invalid_options_are_typed_errors_and_write_nothing() {
    type Set = fn(&mut CreateOptions<'static>);
    let cases: &[(Set, CreateError)] = &[
        (|o| o.size = 1000, CreateError::SizeUnaligned { size: 1000 }),
        (|o| o.cluster_size = 3000, CreateError::ClusterSize { cluster_size: 3000 }),
        (|o| o.cluster_size = 256, CreateError::ClusterSize { cluster_size: 256 }),
        (|o| o.cluster_size = 4 << 20, CreateError::ClusterSize { cluster_size: 4 << 20 }),
        (|o| o.refcount_bits = 3, CreateError::RefcountBits { bits: 3 }),
        (|o| o.refcount_bits = 128, CreateError::RefcountBits { bits: 128 }),
        (|o| o.refcount_bits = 0, CreateError::RefcountBits { bits: 0 }),
        (
            |o| {
                o.compat = Compat::V0_10;
                o.refcount_bits = 32;
            },
            CreateError::NeedsCompat11 { option: "refcount_bits other than 16" },
        ),
        (
            |o| {
                o.compat = Compat::V0_10;
                o.extended_l2 = true;
            },
            CreateError::NeedsCompat11 { option: "extended_l2=on" },
        ),
        (
            |o| {
                o.compat = Compat::V0_10;
                o.compression = Compression::Zstd;
            },
            CreateError::NeedsCompat11 { option: "compression_type=zstd" },
        ),
        (
            |o| {
                o.compat = Compat::V0_10;
                o.lazy_refcounts = true;
            },
            CreateError::NeedsCompat11 { option: "lazy_refcounts=on" },
        ),
        (
            |o| {
                o.extended_l2 = true;
                o.cluster_size = 8192;
            },
            CreateError::ExtendedL2ClusterSize { cluster_size: 8192 },
        ),
        (|o| o.backing_format = Some(b"qcow2"), CreateError::BackingFormatWithoutFile),
        (|o| o.backing_file = Some(b""), CreateError::EmptyName { option: "backing_file" }),
        (
            |o| {
                o.backing_file = Some(b"b");
                o.backing_format = Some(b"");
            },
            CreateError::EmptyName { option: "backing_fmt" },
        ),
        (|o| o.backing_file = Some(&[b'n'; 1024]), CreateError::BackingNameTooLong { len: 1024 }),
        (
            |o| {
                o.backing_file = Some(b"b");
                o.backing_format = Some(&[b'f'; 33]);
            },
            CreateError::BackingFormatTooLong { len: 33 },
        ),
        (
            |o| {
                o.cluster_size = 512;
                o.backing_file = Some(&[b'n'; 600]);
            },
            CreateError::HeaderTooLarge { needed: 112 + 8 + 600, cluster_size: 512 },
        ),
        (
            |o| {
                o.backing_file = Some(b"b");
                o.preallocation = Preallocation::Metadata;
            },
            CreateError::PreallocationWithBacking,
        ),
        (
            |o| {
                luks(o);
                o.compat = Compat::V0_10;
                o.preallocation = Preallocation::Metadata;
            },
            CreateError::PreallocationEncryptedV2,
        ),
        (
            |o| {
                o.encryption = Encryption::LegacyAes { passphrase: b"k", i_know_it_is_weak: true };
                o.compat = Compat::V0_10;
                o.preallocation = Preallocation::Metadata;
            },
            CreateError::PreallocationEncryptedV2,
        ),
        (
            |o| o.encryption = Encryption::LegacyAes { passphrase: b"k", i_know_it_is_weak: false },
            CreateError::LegacyAesWeak,
        ),
        (
            |o| {
                luks(o);
                if let Encryption::Luks { iterations, .. } = &mut o.encryption {
                    *iterations = Iterations::Fixed { keyslot: 0, digest: 1000 };
                }
            },
            CreateError::Iterations { iterations: 0 },
        ),
        (|o| o.size = 1 << 60, CreateError::SizeTooLarge { size: 1 << 60, cluster_size: 65536 }),
        (
            // An L1 table of 4 MiB entries is allowed, 2^61 bytes of preallocated clusters not
            // (and refused before walking them).
            |o| {
                o.size = 1 << 61;
                o.cluster_size = 2 << 20;
                o.preallocation = Preallocation::Metadata;
            },
            CreateError::SizeTooLarge { size: 1 << 61, cluster_size: 2 << 20 },
        ),
        (|o| o.size = u64::MAX - 511, CreateError::SizeTooLarge { size: u64::MAX - 511, cluster_size: 65536 }),
        (
            |o| {
                o.size = 1 << 40;
                o.cluster_size = 512;
            },
            CreateError::SizeTooLarge { size: 1 << 40, cluster_size: 512 },
        ),
        (
            |o| {
                o.size = 64 << 30;
                o.cluster_size = 512;
                o.refcount_bits = 64;
                o.preallocation = Preallocation::Metadata;
            },
            // 2^27 data clusters, 2^21 L2 tables, 64 refcounts a block: 33817 table clusters.
            CreateError::RefcountTableTooLarge { clusters: 33817 },
        ),
    ];
    for (i, (set, want)) in cases.iter().enumerate() {
        let mut o = CreateOptions::new(1 << 20);
        set(&mut o);
        let mut io = VecIo::new(1, 0);
        let e = create(&mut io, &mut o, &mut OsRng).unwrap_err();
        match &e {
            Error::Create(got) => assert_eq!(got, want, "case {i}"),
            other => panic!("case {i}: {other}"),
        }
        assert!(!e.to_string().is_empty());
        assert_eq!(io.writes, 0, "case {i} ({e}) wrote");
    }
    // A device whose blocks are larger than the clusters.
    let mut o = CreateOptions::new(1 << 20);
    o.cluster_size = 2048;
    let mut io = VecIo::new(4096, 0);
    let e = create(&mut io, &mut o, &mut OsRng).unwrap_err();
    assert!(matches!(e, Error::Create(CreateError::DeviceBlockSize { block_size: 4096, cluster_size: 2048 })), "{e}");
    assert_eq!(io.writes, 0);
}

#[test]
fn block_devices_get_whole_aligned_blocks_and_nothing_is_allocated() {
    let t = "block_devices_get_whole_aligned_blocks_and_nothing_is_allocated";
    common::counting_alloc::assert_counter_sees_allocations();
    let dir = common::TempDir::new(t);
    File::create(dir.join("base.img")).unwrap().set_len(20 << 20).unwrap();
    type Set = fn(&mut CreateOptions<'static>);
    let cases: [(&str, Set); 4] = [
        ("default", |_| {}),
        ("prealloc-4k", |o| {
            o.preallocation = Preallocation::Metadata;
            o.cluster_size = 4096;
            o.refcount_bits = 2;
        }),
        ("luks", luks),
        ("backing-v2", |o| {
            o.compat = Compat::V0_10;
            o.backing_file = Some(b"base.img");
            o.backing_format = Some(b"raw");
        }),
    ];
    for (name, set) in cases {
        for block in [1usize, 512, 4096] {
            if name == "luks" && block > 512 {
                // luks1::format writes key material in 512-byte sectors.
                continue;
            }
            let mut o = CreateOptions::new(20 << 20);
            set(&mut o);
            // Room for everything up front: growing the vector is the test device's business,
            // not an allocation of the engine.
            let mut io = VecIo::new(block, 32 << 20);
            let (r, allocations) = count_allocations(|| create(&mut io, &mut o, &mut OsRng));
            r.unwrap_or_else(|e| panic!("{name} on {block}-byte blocks: {e}"));
            assert_eq!(allocations, 0, "{name} on {block}-byte blocks allocated");
            let pass = matches!(o.encryption, Encryption::Luks { .. }).then_some(PASS.as_bytes());
            let mut mem = io.data.clone();
            let mut q = Qcow2::open(MemIo::new(&mut mem), pass).unwrap_or_else(|e| panic!("{name}/{block}: {e}"));
            let mut buf = vec![1u8; 8192];
            q.read_at((20 << 20) - 8192, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0), "{name}/{block}");
            if block > 1 && common::tool(t, "qemu-img") {
                let img = dir.join(&format!("{name}-{block}.qcow2"));
                std::fs::write(&img, &io.data).unwrap();
                check(&img, pass.is_some());
            }
        }
    }
}

/// `create` runs within the project's 64 KiB stack: plain with preallocation, LUKS (whose
/// formatting derives keys and splits them), a 1023-byte backing name. Minimum measured by
/// bisecting the thread's stack (x86-64, this thread's own ~9 KiB included): 37..40 KiB in
/// release, 73..80 KiB in debug; the budgets leave 8 KiB of headroom. `QLUKS_STACK_KIB`
/// overrides the size (to bisect again).
#[test]
fn create_runs_in_64_kib_of_stack() {
    let kib = if cfg!(debug_assertions) { 88 } else { 48 };
    let kib = std::env::var("QLUKS_STACK_KIB").ok().and_then(|s| s.parse().ok()).unwrap_or(kib);
    type Set = fn(&mut CreateOptions<'static>);
    let cases: [(&str, Set); 3] = [
        ("prealloc-2k-r1", |o| {
            o.preallocation = Preallocation::Metadata;
            o.cluster_size = 2048;
            o.refcount_bits = 1;
        }),
        ("luks", luks),
        ("backing-xl2", |o| {
            o.backing_file = Some(&[b'b'; 1023]);
            o.backing_format = Some(b"qcow2");
            o.extended_l2 = true;
        }),
    ];
    for (name, set) in cases {
        let data = std::thread::Builder::new()
            .stack_size(kib * 1024)
            .spawn(move || {
                let mut o = CreateOptions::new(8 << 20);
                set(&mut o);
                let mut io = VecIo::new(1, 0);
                create(&mut io, &mut o, &mut OsRng).map(|()| io.data).map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&data[..4], b"QFI\xfb", "{name}");
    }
}
