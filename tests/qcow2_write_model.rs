//! Differential test of the qcow2 write engine against QEMU, at the core level: one seeded
//! random script of thousands of writes (1 byte to 64 KiB, unaligned, straddling clusters),
//! write-zeroes (with and without unmap), discards and flushes is applied with `qemu-io` (one
//! invocation, one `-c` per operation) to one copy of an image made by qemu-img and through
//! `Qcow2::{write_at, write_zeroes, discard, flush}` to another copy; then
//! - `qemu-img compare` finds the two guests identical,
//! - `qemu-img check` finds the qluks copy clean (no leak, no corruption),
//! - the internal snapshot (when there is one) reads as it did before,
//! - and along the way an in-memory model of the guest (a `Vec<u8>`) equals what qluks reads
//!   back after every flush.
//!
//! Configurations cover cluster sizes 512 B..2 MiB, refcount widths 1..64, extended L2,
//! compat 0.10, compressed clusters and internal snapshots made by qemu-img, LUKS and plain.
mod common;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::crash::{self, Bytes, Op};
use qluks::qcow2::file_resolver::FileResolver;
use qluks::qcow2::{Chain, Error, Qcow2};

/// What the script writes through: one image, or a chain whose top layer changes.
enum Writer {
    Image(Box<Qcow2<File>>),
    Chain(Box<Chain<File, 4, 2>>),
}

impl Writer {
    fn write_scratch_len(&self) -> usize {
        match self {
            Writer::Image(q) => q.write_scratch_len(),
            Writer::Chain(c) => c.write_scratch_len(),
        }
    }
    fn apply(&mut self, op: &Op, scratch: &mut [u8]) -> Result<(), Error<std::io::Error>> {
        match (self, op) {
            (Writer::Image(q), Op::Write { offset, data }) => q.write_at(*offset, data, scratch),
            (Writer::Image(q), Op::Zero { offset, len, unmap }) => q.write_zeroes(*offset, *len, *unmap, scratch),
            (Writer::Image(q), Op::Discard { offset, len }) => q.discard(*offset, *len),
            (Writer::Image(q), Op::Flush) => q.flush(),
            (Writer::Chain(c), Op::Write { offset, data }) => c.write_at(*offset, data, scratch),
            (Writer::Chain(c), Op::Zero { offset, len, unmap }) => c.write_zeroes(*offset, *len, *unmap, scratch),
            (Writer::Chain(c), Op::Discard { offset, len }) => c.discard(*offset, *len),
            (Writer::Chain(c), Op::Flush) => c.flush(),
        }
    }
    /// Reads (compressed clusters need scratch memory).
    fn read_at(&mut self, offset: u64, buf: &mut [u8], scratch: &mut [u8]) -> Result<(), Error<std::io::Error>> {
        match self {
            Writer::Image(q) => q.read_at_with_scratch(offset, buf, scratch),
            Writer::Chain(c) => c.read_at_with_scratch(offset, buf, scratch),
        }
    }
}

const SECRET: &str = "secret,id=s0,data=model-pw";
const PASS: &[u8] = b"model-pw";
/// The backing file's secret (encrypted overlays on encrypted bases have different secrets).
const BASE_SECRET: &str = "secret,id=s1,data=base-pw";
const BASE_PASS: &[u8] = b"base-pw";

struct Config {
    cluster: u64,
    refcount_bits: u32,
    extended_l2: bool,
    luks: bool,
    /// compat=0.10 (version 2).
    v2: bool,
    /// An internal snapshot made by qemu-img before the script.
    snapshot: bool,
    /// Start from `qemu-img convert -c` output (compressed clusters; not with LUKS).
    compressed: bool,
    /// A LUKS qcow2 backing file (its own secret) below: written through a `Chain`.
    backing: bool,
    size: u64,
    ops: usize,
    seed: u64,
}

const BASE: Config = Config {
    cluster: 65536,
    refcount_bits: 16,
    extended_l2: false,
    luks: false,
    v2: false,
    snapshot: false,
    compressed: false,
    backing: false,
    size: 4 << 20,
    ops: 2000,
    seed: 1,
};

fn opts(path: &Path, luks: bool) -> String {
    let enc = if luks { ",encrypt.key-secret=s0" } else { "" };
    // An overlay (named *top*) reads its LUKS base with the base's own secret.
    let below = if path.file_name().unwrap().to_string_lossy().starts_with("top-") {
        ",backing.encrypt.key-secret=s1"
    } else {
        ""
    };
    format!("driver=qcow2,file.filename={}{enc}{below}", path.display())
}

fn qemu_io(path: &Path, luks: bool, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["--object", SECRET, "--object", BASE_SECRET, "--image-opts", &opts(path, luks)]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = common::output(&mut c);
    common::check(&c, &out);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("failed") && !text.contains("rror"), "qemu-io reported a failure:\n{text}");
}

/// `qemu-img convert` of the guest (or of snapshot `snap`) to raw.
fn qemu_guest(dir: &common::TempDir, path: &Path, luks: bool, snapshot: Option<&str>) -> Vec<u8> {
    let raw = dir.join("guest.raw");
    let mut c = Command::new("qemu-img");
    c.args(["convert", "--object", SECRET, "--object", BASE_SECRET]);
    if let Some(s) = snapshot {
        c.args(["-l", &format!("snapshot.name={s}")]);
    }
    c.args(["--image-opts", &opts(path, luks), "-O", "raw"]).arg(&raw);
    common::run(&mut c);
    fs::read(raw).unwrap()
}

fn create_options(cfg: &Config) -> String {
    let mut o = format!("cluster_size={},refcount_bits={}", cfg.cluster, cfg.refcount_bits);
    if cfg.extended_l2 {
        o.push_str(",extended_l2=on");
    }
    if cfg.v2 {
        o.push_str(",compat=0.10");
    }
    if cfg.luks {
        o.push_str(",encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10");
    }
    o
}

/// Data written before the script, in qemu-io commands (a few patterns spread over the disk).
fn prefill(size: u64) -> Vec<String> {
    vec![
        format!("write -P 0x11 0 {}", size / 8),
        format!("write -P 0x22 {} {}", size / 4 + 1000, size / 16),
        format!("write -P 0x33 {} 5000", size / 2 + 700),
        format!("write -z {} {}", size / 2 + 70_000, size / 32),
        format!("write -P 0x44 {} {}", size - size / 16, size / 16),
    ]
}

/// Makes the starting image (qemu-img, qemu-io, `convert -c`, `snapshot -c`) at `path`.
fn make_base(dir: &common::TempDir, path: &Path, cfg: &Config) {
    let o = create_options(cfg);
    let create = |p: &Path, o: &str| {
        common::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "--object", SECRET, "-o", o])
                .arg(p)
                .arg(cfg.size.to_string()),
        );
    };
    if cfg.backing {
        // The base: LUKS with its own secret, 64 KiB clusters, data in places.
        let base = dir.join("base-below.qcow2");
        let base_o = "encrypt.format=luks,encrypt.key-secret=s1,encrypt.iter-time=10";
        common::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "--object", BASE_SECRET, "-o", base_o])
                .arg(&base)
                .arg(cfg.size.to_string()),
        );
        let base_opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s1", base.display());
        common::qemu_io(
            &[BASE_SECRET],
            &base_opts,
            &["write -P 0xb1 0 1M", "write -P 0xb2 1536k 1M", "write -P 0xb3 3M 700k"],
        );
        common::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "--object", SECRET, "-o", &o])
                .args(["-u", "-b", "base-below.qcow2", "-F", "qcow2"])
                .arg(path)
                .arg(cfg.size.to_string()),
        );
        qemu_io(path, cfg.luks, &[format!("write -P 0x5c {} 20000", cfg.size / 8 + 3)]);
    } else if cfg.compressed {
        assert!(!cfg.luks, "qemu-img does not compress encrypted output");
        let plain = dir.join("plain.qcow2");
        create(&plain, "cluster_size=65536");
        qemu_io(&plain, false, &prefill(cfg.size));
        common::run(
            Command::new("qemu-img").args(["convert", "-q", "-c", "-O", "qcow2", "-o", &o]).arg(&plain).arg(path),
        );
    } else {
        create(path, &o);
        qemu_io(path, cfg.luks, &prefill(cfg.size));
    }
    if cfg.snapshot {
        common::run(
            Command::new("qemu-img")
                .args(["snapshot", "-c", "snap", "--object", SECRET, "--object", BASE_SECRET, "--image-opts"])
                .arg(opts(path, cfg.luks)),
        );
        qemu_io(path, cfg.luks, &[format!("write -P 0x55 {} 3000", cfg.size / 16 + 100)]);
    }
}

fn run_config(t: &str, cfg: Config) {
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let started = std::time::Instant::now();
    let dir = common::TempDir::new(t);
    let prefix = if cfg.backing { "top-" } else { "" };
    let base: PathBuf = dir.join(&format!("{prefix}base.qcow2"));
    make_base(&dir, &base, &cfg);
    let below = cfg.backing.then(|| fs::read(dir.join("base-below.qcow2")).unwrap());
    let (theirs, ours) = (dir.join(&format!("{prefix}qemu.qcow2")), dir.join(&format!("{prefix}qluks.qcow2")));
    fs::copy(&base, &theirs).unwrap();
    fs::copy(&base, &ours).unwrap();
    let snapshot = cfg.snapshot.then(|| qemu_guest(&dir, &base, cfg.luks, Some("snap")));
    let mut model = qemu_guest(&dir, &base, cfg.luks, None);

    let ops = crash::workload(cfg.seed, cfg.size, cfg.cluster, cfg.ops, Bytes::Pattern);
    let script: Vec<String> = ops.iter().map(|op| op.qemu_io().expect("pattern writes")).collect();
    qemu_io(&theirs, cfg.luks, &script);
    // The model agrees with qemu (so that a failure below is the engine's, not the model's).
    let mut expected = model.clone();
    ops.iter().for_each(|op| op.apply(&mut expected, cfg.cluster));
    let qemu_result = qemu_guest(&dir, &theirs, cfg.luks, None);
    if qemu_result != expected {
        let at = qemu_result.iter().zip(&expected).position(|(a, b)| a != b).unwrap();
        panic!(
            "seed {}: the model disagrees with qemu at {at:#x} ({:#04x}, model {:#04x})",
            cfg.seed, qemu_result[at], expected[at]
        );
    }

    let file = OpenOptions::new().read(true).write(true).open(&ours).unwrap();
    let mut q = if cfg.backing {
        let mut resolver = FileResolver::new(&ours, dir.path()).unwrap();
        resolver.set_passphrase(0, PASS);
        resolver.set_passphrase(1, BASE_PASS);
        let mut chain: Box<Chain<File, 4, 2>> = Box::default();
        chain.open_in(file, &mut resolver).unwrap();
        Writer::Chain(chain)
    } else {
        Writer::Image(Box::new(Qcow2::open(file, cfg.luks.then_some(PASS)).unwrap()))
    };
    let mut scratch = vec![0u8; q.write_scratch_len()];
    let mut readback = vec![0u8; cfg.size as usize];
    for (i, (op, cmd)) in ops.iter().zip(&script).enumerate() {
        q.apply(op, &mut scratch).unwrap_or_else(|e| panic!("seed {}: op {i} `{cmd}`: {e}", cfg.seed));
        op.apply(&mut model, cfg.cluster);
        if *op == Op::Flush {
            q.read_at(0, &mut readback, &mut scratch)
                .unwrap_or_else(|e| panic!("seed {}: read after op {i}: {e}", cfg.seed));
            if readback != model {
                let at = readback.iter().zip(&model).position(|(a, b)| a != b).unwrap();
                panic!(
                    "seed {}: after op {i} (flush) the guest differs from the model at {at:#x} ({:#04x}, model {:#04x}); \
                     the script so far:\n{}",
                    cfg.seed,
                    readback[at],
                    model[at],
                    last(&script[..=i])
                );
            }
        }
    }
    drop(q);
    if let Some(below) = below {
        assert!(fs::read(dir.join("base-below.qcow2")).unwrap() == below, "the backing file changed");
    }

    let compare = common::output(
        Command::new("qemu-img")
            .args(["compare", "--object", SECRET, "--object", BASE_SECRET, "--image-opts"])
            .arg(opts(&theirs, cfg.luks))
            .arg(opts(&ours, cfg.luks)),
    );
    assert!(
        compare.status.success(),
        "seed {}: qemu-img compare: {}{}",
        cfg.seed,
        String::from_utf8_lossy(&compare.stdout),
        String::from_utf8_lossy(&compare.stderr)
    );
    let check = common::output(
        Command::new("qemu-img")
            .args(["check", "--object", SECRET, "--object", BASE_SECRET, "--image-opts"])
            .arg(opts(&ours, cfg.luks)),
    );
    assert!(
        check.status.code() == Some(0),
        "seed {}: qemu-img check of the qluks copy ({:?}):\n{}{}",
        cfg.seed,
        check.status.code(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(qemu_guest(&dir, &ours, cfg.luks, None) == model, "seed {}: qemu reads the model", cfg.seed);
    if let Some(snap) = snapshot {
        assert!(qemu_guest(&dir, &ours, cfg.luks, Some("snap")) == snap, "seed {}: the snapshot changed", cfg.seed);
    }
    let sizes = (fs::metadata(&theirs).unwrap().len(), fs::metadata(&ours).unwrap().len());
    println!(
        "{t}: {} ops in {:.1} s; file sizes qemu {} qluks {}",
        ops.len(),
        started.elapsed().as_secs_f64(),
        sizes.0,
        sizes.1
    );
}

/// The last few commands of a script, for failure messages.
fn last(script: &[String]) -> String {
    script[script.len().saturating_sub(12)..].join("\n")
}

#[test]
fn clusters_512_refcount_1_plain() {
    let cfg = Config { cluster: 512, refcount_bits: 1, size: 2 << 20, seed: 51_201, ..BASE };
    run_config("clusters_512_refcount_1_plain", cfg);
}

#[test]
fn clusters_1k_refcount_2_luks_snapshot() {
    let cfg = Config { cluster: 1024, refcount_bits: 2, luks: true, snapshot: true, seed: 102_402, ..BASE };
    run_config("clusters_1k_refcount_2_luks_snapshot", cfg);
}

#[test]
fn clusters_4k_refcount_4_snapshot() {
    let cfg = Config { cluster: 4096, refcount_bits: 4, snapshot: true, seed: 409_604, ..BASE };
    run_config("clusters_4k_refcount_4_snapshot", cfg);
}

#[test]
fn clusters_16k_refcount_8_extended_l2_luks_snapshot() {
    let cfg =
        Config { cluster: 16384, refcount_bits: 8, extended_l2: true, luks: true, snapshot: true, seed: 1_608, ..BASE };
    run_config("clusters_16k_refcount_8_extended_l2_luks_snapshot", cfg);
}

#[test]
fn clusters_64k_refcount_16_extended_l2_compressed_snapshot() {
    let cfg = Config { extended_l2: true, compressed: true, snapshot: true, seed: 6_416, ..BASE };
    run_config("clusters_64k_refcount_16_extended_l2_compressed_snapshot", cfg);
}

#[test]
fn compat_0_10_compressed_snapshot() {
    let cfg = Config { v2: true, compressed: true, snapshot: true, seed: 10, ..BASE };
    run_config("compat_0_10_compressed_snapshot", cfg);
}

#[test]
fn clusters_256k_refcount_32_luks() {
    let cfg =
        Config { cluster: 256 << 10, refcount_bits: 32, luks: true, size: 8 << 20, ops: 1000, seed: 25_632, ..BASE };
    run_config("clusters_256k_refcount_32_luks", cfg);
}

#[test]
fn clusters_2m_refcount_64_plain() {
    let cfg = Config { cluster: 2 << 20, refcount_bits: 64, size: 16 << 20, ops: 1000, seed: 204_864, ..BASE };
    run_config("clusters_2m_refcount_64_plain", cfg);
}

#[test]
fn clusters_2m_refcount_64_luks_snapshot() {
    let cfg = Config {
        cluster: 2 << 20,
        refcount_bits: 64,
        luks: true,
        snapshot: true,
        size: 16 << 20,
        ops: 400,
        seed: 204_865,
        ..BASE
    };
    run_config("clusters_2m_refcount_64_luks_snapshot", cfg);
}

#[test]
fn luks_overlay_on_luks_base_with_different_secrets() {
    let cfg = Config { cluster: 32768, luks: true, backing: true, snapshot: true, seed: 90_001, ..BASE };
    run_config("luks_overlay_on_luks_base_with_different_secrets", cfg);
}

#[test]
fn plain_overlay_with_4k_clusters_on_luks_base() {
    let cfg = Config { cluster: 4096, backing: true, seed: 90_002, ..BASE };
    run_config("plain_overlay_with_4k_clusters_on_luks_base", cfg);
}

/// Space freed by discard is allocated again (first fit from the lowest free cluster, as
/// QEMU): rewriting discarded data does not grow the file, for qluks as for qemu-io.
#[test]
fn discarded_clusters_are_reused() {
    let t = "discarded_clusters_are_reused";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let mut sizes = Vec::new();
    for (name, cluster) in [("c64k.qcow2", 65536u64), ("c2m.qcow2", 2 << 20)] {
        let img = dir.join(name);
        common::qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cluster}"),
            img.to_str().unwrap(),
            "16M",
        ]);
        let qemu = dir.join(&format!("qemu-{name}"));
        fs::copy(&img, &qemu).unwrap();
        let mut script = vec!["write -P 0x11 0 4M".to_string()];
        for i in 0..6 {
            script.push("discard 0 4M".into());
            script.push(format!("write -P 0x{:02x} 0 4M", 0x20 + i));
        }
        qemu_io(&qemu, false, &script);
        let file = OpenOptions::new().read(true).write(true).open(&img).unwrap();
        let mut q: Qcow2<File> = Qcow2::open(file, None).unwrap();
        let mut scratch = vec![0u8; q.write_scratch_len()];
        q.write_at(0, &vec![0x11; 4 << 20], &mut scratch).unwrap();
        q.flush().unwrap();
        for i in 0..6u8 {
            q.discard(0, 4 << 20).unwrap();
            q.flush().unwrap();
            q.write_at(0, &vec![0x20 + i; 4 << 20], &mut scratch).unwrap();
            q.flush().unwrap();
        }
        drop(q);
        let (ours, theirs) = (fs::metadata(&img).unwrap().len(), fs::metadata(&qemu).unwrap().len());
        sizes.push((name, ours, theirs));
    }
    println!("{sizes:?}");
    for (name, ours, theirs) in sizes {
        assert!(ours <= theirs, "{name}: qluks's file grew to {ours} bytes, qemu's to {theirs}");
    }
}
