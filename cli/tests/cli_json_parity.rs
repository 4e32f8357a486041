//! `qluks … --output=json` against `qemu-img … --output=json`, key by key, for `info`
//! (with `--backing-chain`), `check`, `map` and `measure`, on a matrix of images generated at
//! test time: plain qcow2 (v3 and v2), snapshots, a backing chain, LUKS qcow2, legacy AES
//! qcow2 and qcow, standalone LUKS1, compressed, extended L2 with zstd, an external data
//! file, persistent bitmaps, raw; and LUKS2 (which qemu-img reads as raw: checked against LUKS1's schema).
//!
//! The only differences allowed (README, "qemu-img parity"), each one named where it is used:
//! - keys named `qluks-…` are qluks-only facts: removed before comparing (they never replace a
//!   qemu key: the comparison would see a missing key);
//! - [`ALLOW_IMAGE_OPTS_FILENAME`]: `check` of an encrypted image, which qemu-img opens only
//!   through `--image-opts`, so it names the image by that option string in `filename`;
//! - [`ALLOW_LUKS2`]: qemu-img does not read LUKS2 (it shows such a volume as `raw`);
//! - `measure -o encrypt.key-secret=ID`: qemu-img also needs `--object secret,id=ID,…` on its
//!   command line; qluks needs no secret to measure, so the test gives it only the `-o` list.
//!
//! Values must be equal and of the same JSON type; nothing else may differ.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const TEST: &str = "cli_json_parity";
const SECRET: &str = "parity-secret";
const OBJECT: &str = "secret,id=sec0,data=parity-secret";

/// `check` of an image qemu-img opens through `--image-opts`: its `filename` is that string.
const ALLOW_IMAGE_OPTS_FILENAME: &str = "/filename";
/// qemu-img reads LUKS2 volumes as raw files.
const ALLOW_LUKS2: &str = "qemu-img shows a LUKS2 volume as format raw";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

/// One image of the matrix.
struct Img {
    path: PathBuf,
    /// qemu-img's `--image-opts` string when the image needs a secret to be opened.
    opts: Option<String>,
    /// qcow2 (has `check`).
    qcow2: bool,
}

impl Img {
    /// qemu-img's arguments naming the image (with its secret, if any).
    fn qemu_args(&self) -> Vec<String> {
        match &self.opts {
            Some(o) => vec!["--object".into(), OBJECT.into(), "--image-opts".into(), o.clone()],
            None => vec![self.path.to_str().unwrap().into()],
        }
    }

    /// qluks's arguments naming the image (with its passphrase, if any).
    fn qluks_args(&self, pass: &Path) -> Vec<String> {
        let mut v = Vec::new();
        if self.opts.is_some() {
            v.extend(["--passphrase-file".to_string(), s(pass).into()]);
        }
        v.push(s(&self.path).into());
        v
    }
}

fn out(cmd: &mut Command) -> Output {
    common::output(cmd)
}

fn json_of(o: &Output, what: &str) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{text}\nstderr: {}", String::from_utf8_lossy(&o.stderr)))
}

/// `v` without the qluks-only keys (`qluks-…`), at any depth.
fn strip_qluks(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with("qluks-")).map(|(k, v)| (k.clone(), strip_qluks(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_qluks).collect()),
        other => other.clone(),
    }
}

/// Every difference between `ours` and `theirs` (missing or extra keys, different values or
/// types, different array lengths), as JSON paths.
fn diff(ours: &Value, theirs: &Value, path: &str, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get(k) {
                    None => out.push(format!("{path}/{k}: missing in qluks (qemu-img: {v})")),
                    Some(w) => diff(w, v, &format!("{path}/{k}"), out),
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                out.push(format!("{path}/{k}: qluks has it, qemu-img does not ({})", a[k]));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!("{path}: {} entries in qluks, {} in qemu-img", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, &format!("{path}/{i}"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: qluks {a}, qemu-img {b}")),
    }
}

/// Asserts that `ours` (qluks-only keys removed) and `theirs` agree, except at the `allowed`
/// paths.
fn assert_agree(what: &str, ours: &Value, theirs: &Value, allowed: &[&str]) {
    let mut d = Vec::new();
    diff(&strip_qluks(ours), theirs, "", &mut d);
    d.retain(|line| !allowed.iter().any(|a| line.starts_with(&format!("{a}:"))));
    assert!(
        d.is_empty(),
        "{what}: qluks and qemu-img differ:\n  {}\nqluks: {ours:#}\nqemu-img: {theirs:#}",
        d.join("\n  ")
    );
}

fn qemu_img(args: &[&str]) {
    common::qemu_img(args);
}

fn qemu_io(image: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    common::run(c.arg(image));
}

/// Generates the matrix in `dir`.
fn matrix(dir: &common::TempDir) -> Vec<Img> {
    let p = |n: &str| dir.join(n);
    let plain = |name: &str| Img { path: p(name), opts: None, qcow2: true };
    let mut v = Vec::new();

    // Plain qcow2 v3: data, a zero cluster, a partial cluster.
    let plain_qcow2 = p("plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&plain_qcow2), "4M"]);
    qemu_io(s(&plain_qcow2), &["write -P 0x11 0 300k", "write -z 1M 64k", "write -P 0x22 2M 4k"]);
    v.push(plain("plain.qcow2"));

    // qcow2 v2 with 4 KiB clusters.
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", s(&p("v2.qcow2")), "1M"]);
    qemu_io(s(&p("v2.qcow2")), &["write -P 0x33 8k 20k"]);
    v.push(plain("v2.qcow2"));

    // Snapshots.
    let snap = p("snap.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&snap), "2M"]);
    qemu_io(s(&snap), &["write -P 0x44 0 128k"]);
    qemu_img(&["snapshot", "-c", "first", s(&snap)]);
    qemu_io(s(&snap), &["write -P 0x45 64k 128k"]);
    qemu_img(&["snapshot", "-c", "second", s(&snap)]);
    v.push(plain("snap.qcow2"));

    // A backing chain (relative name, declared format): base <- mid <- top.
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p("base.qcow2")), "3M"]);
    qemu_io(s(&p("base.qcow2")), &["write -P 0x55 0 1M"]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s(&p("mid.qcow2"))]);
    qemu_io(s(&p("mid.qcow2")), &["write -P 0x56 512k 256k", "write -z 2M 64k"]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", s(&p("top.qcow2"))]);
    qemu_io(s(&p("top.qcow2")), &["write -P 0x57 600k 4k"]);
    v.push(plain("top.qcow2"));

    // LUKS qcow2.
    let luks = p("luks.qcow2");
    common::run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "--object", OBJECT, "-o"]).args([
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128",
        s(&luks),
        "2M",
    ]));
    let luks_opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", s(&luks));
    common::qemu_io(&[OBJECT], &luks_opts, &["write -P 0x66 64k 200k"]);
    v.push(Img { path: luks, opts: Some(luks_opts), qcow2: true });

    // Legacy AES qcow2.
    let aes = p("aes.qcow2");
    common::run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "--object", OBJECT, "-o"]).args([
        "encrypt.format=aes,encrypt.key-secret=sec0",
        s(&aes),
        "1M",
    ]));
    let aes_opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", s(&aes));
    common::qemu_io(&[OBJECT], &aes_opts, &["write -P 0x77 0 70k"]);
    v.push(Img { path: aes, opts: Some(aes_opts), qcow2: true });

    // Legacy AES qcow (v1).
    let qcow = p("aes.qcow");
    common::run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow", "--object", OBJECT, "-o"]).args([
        "encrypt.format=aes,encrypt.key-secret=sec0",
        s(&qcow),
        "1M",
    ]));
    let qcow_opts = format!("driver=qcow,file.filename={},encrypt.key-secret=sec0", s(&qcow));
    common::qemu_io(&[OBJECT], &qcow_opts, &["write -P 0x78 4k 10k"]);
    v.push(Img { path: qcow, opts: Some(qcow_opts), qcow2: false });

    // Standalone LUKS1 (qemu-img -f luks).
    let l1 = p("luks1.img");
    common::run(Command::new("qemu-img").args(["create", "-q", "-f", "luks", "--object", OBJECT, "-o"]).args([
        "key-secret=sec0,iter-time=10",
        s(&l1),
        "1M",
    ]));
    let l1_opts = format!("driver=luks,file.filename={},key-secret=sec0", s(&l1));
    common::qemu_io(&[OBJECT], &l1_opts, &["write -P 0x79 0 64k"]);
    v.push(Img { path: l1, opts: Some(l1_opts), qcow2: false });

    // Compressed.
    qemu_img(&["convert", "-c", "-O", "qcow2", s(&plain_qcow2), s(&p("compressed.qcow2"))]);
    v.push(plain("compressed.qcow2"));

    // Extended L2 entries with zstd: subcluster writes and a zero range.
    let ext = p("extl2.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,compression_type=zstd", s(&ext), "2M"]);
    qemu_io(s(&ext), &["write -P 0x88 0 4k", "write -P 0x89 40k 8k", "write -z 128k 64k"]);
    v.push(plain("extl2.qcow2"));

    // External data file.
    let df = p("datafile.qcow2");
    // (qemu opens a relative data file name relative to its working directory: the test runs
    // in `dir`.)
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "data_file=datafile.raw", s(&df), "1M"]);
    qemu_io(s(&df), &["write -P 0x99 64k 64k"]);
    v.push(plain("datafile.qcow2"));

    // Persistent dirty bitmaps (qemu lists them; measure counts them). The bitmap clusters
    // written after a partial data cluster leave a hole in the file under it: qemu then takes
    // the image for metadata-preallocated and maps that hole as zero.
    let bm = p("bitmaps.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&bm), "3M"]);
    qemu_io(s(&bm), &["write -P 0x9a 0 100k"]);
    qemu_img(&["bitmap", "--add", s(&bm), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "1M", "--disable", s(&bm), "second-bitmap"]);
    v.push(plain("bitmaps.qcow2"));

    // A qcow2 overlay over a sparse raw backing file (qemu maps the raw file's holes as zero).
    qemu_img(&["create", "-q", "-f", "raw", s(&p("rawbase.img")), "2M"]);
    common::run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0xab 1M 64k", s(&p("rawbase.img"))]));
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "rawbase.img", "-F", "raw", s(&p("overraw.qcow2"))]);
    qemu_io(s(&p("overraw.qcow2")), &["write -P 0xac 0 4k"]);
    v.push(plain("overraw.qcow2"));

    // Raw, sparse.
    let raw = p("sparse.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&raw), "1M"]);
    common::run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0xaa 256k 64k", s(&raw)]));
    v.push(Img { path: raw, opts: None, qcow2: false });
    v
}

#[test]
fn info_check_map_measure_agree_with_qemu_img() {
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let pass = dir.join("pass");
    std::fs::write(&pass, SECRET).unwrap();
    // qemu opens an image's relative data file name relative to its working directory (qluks:
    // relative to the image's directory, like backing files): both run in `dir`.
    std::env::set_current_dir(dir.path()).unwrap();
    let images = matrix(&dir);
    for img in &images {
        let name = img.path.file_name().unwrap().to_str().unwrap();

        // info: no secret needed by either.
        let ours = out(qluks().args(["info", "-U", "--output=json", s(&img.path)]));
        let theirs = out(Command::new("qemu-img").args(["info", "-U", "--output=json", s(&img.path)]));
        assert!(ours.status.success() && theirs.status.success(), "info {name}");
        let ours = json_of(&ours, "qluks info");
        assert_agree(&format!("info {name}"), &ours, &json_of(&theirs, "qemu-img info"), &[]);
        if img.opts.is_some() {
            // The qluks-only fact next to qemu's keys: the backend that would decrypt.
            assert!(ours["qluks-backend"].is_string(), "info {name}: {ours:#}");
        }

        // check: the same JSON and exit code (63 for formats without checks); qluks checks
        // metadata only and needs no passphrase.
        let ours = out(qluks().args(["check", "--output=json", s(&img.path)]));
        let theirs = out(Command::new("qemu-img").args(["check", "--output=json"]).args(img.qemu_args()));
        if img.qcow2 && img.opts.is_none() {
            // The same with qemu-img's -f.
            let f = out(qluks().args(["check", "-f", "qcow2", "--output=json", s(&img.path)]));
            assert_eq!((f.status.code(), &f.stdout), (ours.status.code(), &ours.stdout), "check -f qcow2 {name}");
        }
        assert_eq!(ours.status.code(), theirs.status.code(), "check {name} exit code");
        if img.qcow2 {
            assert_eq!(ours.status.code(), Some(0), "check {name}");
            let allowed: &[&str] = if img.opts.is_some() { &[ALLOW_IMAGE_OPTS_FILENAME] } else { &[] };
            let ours = json_of(&ours, "qluks check");
            assert_eq!(ours["filename"], s(&img.path), "check {name}");
            assert_agree(&format!("check {name}"), &ours, &json_of(&theirs, "qemu-img check"), allowed);
        } else {
            assert_eq!(ours.status.code(), Some(63), "check {name}");
        }

        // map: byte for byte (qemu-img's layout).
        let ours = out(qluks().args(["map", "--output=json"]).args(img.qluks_args(&pass)));
        let theirs = out(Command::new("qemu-img").args(["map", "--output=json"]).args(img.qemu_args()));
        assert!(ours.status.success() && theirs.status.success(), "map {name}: {ours:?} {theirs:?}");
        assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&theirs.stdout), "map {name}");
        if img.opts.is_none() {
            // Forcing a format as qemu-img does: a qcow2 file mapped as raw is its bytes.
            let ours = out(qluks().args(["map", "-f", "raw", "--output=json", s(&img.path)]));
            let theirs = out(Command::new("qemu-img").args(["map", "-f", "raw", "--output=json", s(&img.path)]));
            assert!(ours.status.success() && theirs.status.success(), "map -f raw {name}");
            assert_eq!(
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&theirs.stdout),
                "map -f raw {name}"
            );
        }

        // measure: several targets and options.
        let targets: &[&[&str]] = &[
            &["-O", "qcow2"],
            &["-O", "raw"],
            &["-O", "qcow2", "-o", "cluster_size=4k,refcount_bits=1"],
            &["-O", "qcow2", "-o", "cluster_size=2M,refcount_bits=64,lazy_refcounts=on"],
            &["-O", "qcow2", "-o", "extended_l2=on"],
            &["-O", "qcow2", "-o", "compat=0.10"],
            &["-O", "qcow2", "-o", "preallocation=full"],
            &["-O", "qcow2", "-o", "backing_file=elsewhere.qcow2"],
            &["-O", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"],
            &["-O", "luks", "-o", "key-secret=sec0,iter-time=10,cipher-alg=aes-128"],
        ];
        // qemu-img measures a LUKS target by creating a LUKS header in memory (seconds of
        // PBKDF2 timing each): those two targets for a few sources only.
        let luks_sources = ["luks.qcow2"];
        let n = if luks_sources.contains(&name) { targets.len() } else { targets.len() - 2 };
        for t in &targets[..n] {
            let ours = out(qluks().args(["measure", "--output=json"]).args(*t).args(img.qluks_args(&pass)));
            let mut q = Command::new("qemu-img");
            q.args(["measure", "--output=json", "--object", OBJECT]).args(*t);
            // The secret object is given once, for the target's and the source's key-secret.
            q.args(img.qemu_args().iter().skip(if img.opts.is_some() { 2 } else { 0 }));
            let theirs = out(&mut q);
            assert!(ours.status.success() && theirs.status.success(), "measure {t:?} {name}: {ours:?} {theirs:?}");
            assert_agree(
                &format!("measure {t:?} {name}"),
                &json_of(&ours, "qluks measure"),
                &json_of(&theirs, "qemu-img measure"),
                &[],
            );
        }
    }

    // info --backing-chain: the same array.
    let top = dir.join("top.qcow2");
    let ours = out(qluks().args(["info", "--output=json", "--backing-chain", s(&top)]));
    let theirs = out(Command::new("qemu-img").args(["info", "--output=json", "--backing-chain", s(&top)]));
    let (ours, theirs) = (json_of(&ours, "qluks info --backing-chain"), json_of(&theirs, "qemu-img"));
    assert_eq!(ours.as_array().map(Vec::len), Some(3), "{ours:#}");
    assert_agree("info --backing-chain", &ours, &theirs, &[]);
}

#[test]
fn measure_by_size_agrees_with_qemu_img() {
    if !common::tool(TEST, "qemu-img") {
        return;
    }
    let sizes = ["0", "1", "512", "7777777", "100M", "1G", "1T"];
    let targets: &[&[&str]] = &[
        &["-O", "qcow2"],
        &["-O", "raw"],
        &["-O", "qcow2", "-o", "cluster_size=512"],
        &["-O", "qcow2", "-o", "extended_l2=on,cluster_size=16k"],
        &["-O", "qcow2", "-o", "refcount_bits=1,cluster_size=2M"],
        &["-O", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc"],
        &["-O", "luks", "-o", "key-secret=sec0,iter-time=10"],
    ];
    for (i, size) in sizes.iter().enumerate() {
        // LUKS targets (seconds of PBKDF2 timing per qemu-img run) for one size only.
        let luks = i == 5;
        let n = if luks { targets.len() } else { targets.len() - 2 };
        for (j, t) in targets[..n].iter().enumerate() {
            let outputs: &[&str] =
                if j >= targets.len() - 2 { &["--output=json"] } else { &["--output=json", "--output=human"] };
            for &output in outputs {
                let ours = out(qluks().args(["measure", output, "--size", size]).args(*t));
                let theirs = out(Command::new("qemu-img")
                    .args(["measure", output, "--object", OBJECT, "--size", size])
                    .args(*t));
                let what = format!("measure {t:?} --size {size}");
                assert_eq!(ours.status.code(), theirs.status.code(), "{what}: {ours:?} {theirs:?}");
                if !theirs.status.success() {
                    // The same refusal (1 TiB of 512-byte clusters needs too large an L1).
                    let msg = |o: &Output, prog: &str| {
                        String::from_utf8_lossy(&o.stderr).trim().trim_start_matches(prog).to_string()
                    };
                    assert_eq!(msg(&ours, "qluks: "), msg(&theirs, "qemu-img: "), "{what}");
                } else if output == "--output=json" {
                    assert_agree(&what, &json_of(&ours, "qluks"), &json_of(&theirs, "qemu-img"), &[]);
                } else {
                    assert_eq!(
                        String::from_utf8_lossy(&ours.stdout),
                        String::from_utf8_lossy(&theirs.stdout),
                        "{what}"
                    );
                }
            }
        }
    }
    // qemu-img's refusals.
    for bad in [&["-O", "qcow2"][..], &["-O", "qcow2", "-o", "cluster_size=4k,extended_l2=on", "--size", "1M"]] {
        let ours = out(qluks().arg("measure").args(bad));
        let theirs = out(Command::new("qemu-img").arg("measure").args(bad));
        assert_eq!((ours.status.code(), theirs.status.code()), (Some(1), Some(1)), "{bad:?}");
    }
}

#[test]
fn luks2_info_has_the_luks1_schema() {
    if !common::tools(TEST, &["qemu-img", "cryptsetup"]) {
        return;
    }
    let dir = common::TempDir::new("cli_json_parity_luks2");
    let (l1, l2, key) = (dir.join("l1.img"), dir.join("l2.img"), dir.join("key"));
    std::fs::write(&key, SECRET).unwrap();
    common::run(Command::new("qemu-img").args(["create", "-q", "-f", "luks", "--object", OBJECT]).args([
        "-o",
        "key-secret=sec0,iter-time=10",
        s(&l1),
        "1M",
    ]));
    std::fs::File::create(&l2).unwrap().set_len(20 << 20).unwrap();
    common::run(
        Command::new("cryptsetup").args(["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2"]).args([
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            s(&key),
            s(&l2),
        ]),
    );
    let info = |p: &Path| json_of(&out(qluks().args(["info", "--output=json", s(p)])), "qluks info");
    let (i1, i2) = (info(&l1), info(&l2));
    // qemu-img reads LUKS2 as raw; qluks gives it LUKS1's (qemu's) schema.
    let theirs = json_of(&out(Command::new("qemu-img").args(["info", "--output=json", s(&l2)])), "qemu-img info");
    assert_eq!(theirs["format"], "raw", "{ALLOW_LUKS2}");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().filter(|k| !k.starts_with("qluks-")).cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&i1), keys(&i2), "top-level keys");
    assert_eq!(keys(&i1["format-specific"]["data"]), keys(&i2["format-specific"]["data"]));
    assert_eq!(keys(&i1["format-specific"]["data"]["slots"][0]), keys(&i2["format-specific"]["data"]["slots"][0]));
    assert_eq!(i2["format"], "luks");
    assert_eq!(i2["format-specific"]["data"]["qluks-luks-version"], 2);
    assert_eq!(i2["qluks-luks2"]["keyslots"][0]["kdf"]["type"], "pbkdf2");
    assert_eq!(i2["format-specific"]["data"]["cipher-alg"], "aes-256");
    assert_eq!(i2["format-specific"]["data"]["cipher-mode"], "xts");
    assert_eq!(i2["format-specific"]["data"]["ivgen-alg"], "plain64");
    assert_eq!(i2["format-specific"]["data"]["slots"][0]["iters"], 1000);
    let uuid = common::run(Command::new("cryptsetup").args(["luksUUID", s(&l2)]));
    assert_eq!(i2["format-specific"]["data"]["uuid"], uuid.trim());
    let offset = i2["format-specific"]["data"]["payload-offset"].as_u64().unwrap();
    assert_eq!(i2["virtual-size"].as_u64().unwrap(), (20 << 20) - offset);
}
