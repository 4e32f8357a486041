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
fn same_layout(ours: &Path, theirs: &Path) {
    let a = std::fs::read(ours).unwrap();
    let b = std::fs::read(theirs).unwrap();
    assert_eq!(a.len(), b.len(), "file sizes differ: {ours:?} vs qemu-img");
    let area = fde(&a);
    assert_eq!(area, fde(&b), "FDE extensions differ");
    let (start, end) = area.map_or((a.len(), a.len()), |(o, l)| (o as usize, (o + l) as usize));
    // Cluster 0 .. the LUKS area, and after it: byte for byte.
    for (what, r) in [("before the LUKS area", 0..start), ("after the LUKS area", end..a.len())] {
        if let Some(i) = r.clone().find(|&i| a[i] != b[i]) {
            panic!("{ours:?} differs from qemu-img's {what} at {i:#x}: {:#04x} vs {:#04x}", a[i], b[i]);
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
        name: "prealloc-3G",
        qemu: "preallocation=metadata",
        size: 3 << 30,
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
        identical: false,
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
