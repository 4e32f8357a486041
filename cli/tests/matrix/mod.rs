//! The qcow2 interoperability matrix (issue 4's acceptance): images generated with
//! qemu-img/qemu-io at test time, with what QEMU itself reads from them (`qemu-img convert -O
//! raw`) and reports about them (`qemu-img map --output json`).
//!
//! Used by cli/tests/qcow2_matrix.rs, which checks every image through the library and through
//! the `qluks` binary in one pass (the images are generated once).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common;

/// Passphrases of the encrypted layers (different per layer on purpose).
pub const SECRET_TOP: &str = "top-layer passphrase";
pub const SECRET_BASE: &str = "base layer's other passphrase";
pub const SECRET_LUKS: &str = "luks qcow2 passphrase";
pub const SECRET_AES: &str = "legacy-aes-key-16b+ignored-tail";

/// Image format as QEMU names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Qcow,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Qcow => "qcow",
        }
    }
}

/// One generated image and how to open it.
#[derive(Debug, Clone)]
pub struct Case {
    /// Short name (also the file name stem).
    pub name: String,
    /// The image (top layer for chains).
    pub image: PathBuf,
    pub format: Format,
    /// Passphrase of the top layer, if encrypted.
    pub passphrase: Option<&'static str>,
    /// Passphrases of the backing layers, nearest first (None = that layer is not encrypted).
    pub backing_passphrases: Vec<Option<&'static str>>,
    /// The external data file, if any.
    pub data_file: Option<PathBuf>,
    /// Virtual size.
    pub size: u64,
    /// For images too large to convert whole: the guest windows to compare (offset, len).
    /// None = compare the whole disk.
    pub windows: Option<Vec<(u64, u64)>>,
    /// Internal snapshots whose disk state is compared too (by name).
    pub snapshots: Vec<&'static str>,
}

/// A range of `qemu-img map --output json`, reduced to what must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRange {
    pub start: u64,
    pub length: u64,
    pub data: bool,
    pub zero: bool,
}

fn qemu_img(args: &[&str]) -> String {
    common::run(Command::new("qemu-img").args(args))
}

fn qemu_io(img: &Path, fmt: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(img);
    common::run(&mut c);
}

/// qemu-io on an encrypted image (or chain): `opts` is the --image-opts string.
fn qemu_io_opts(secrets: &[(&str, &str)], opts: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    for (id, data) in secrets {
        c.args(["--object", &format!("secret,id={id},data={data}")]);
    }
    c.args(["--image-opts", opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    common::run(&mut c);
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Data, zero clusters, discards and unaligned writes: the standard workload, scaled to the
/// cluster size `cs` (all inside 4 MiB, or 8 MiB for 2 MiB clusters).
fn standard_writes(cs: u64) -> Vec<String> {
    if cs >= 1 << 20 {
        return [
            "write -P 0x11 0 64k",
            "write -P 0x22 100k 3k",
            "write -P 0x33 2M 4M",
            "write -z 4M 2M",
            "write -P 0x44 3M 1536",
            "write -z -u 6M 2M",
            "write -P 0x55 7M 1k",
            "discard 0 2M",
        ]
        .map(String::from)
        .to_vec();
    }
    vec![
        "write -P 0x11 0 64k".into(),
        "write -P 0x22 100k 3k".into(),
        "write -P 0x33 1M 1M".into(),
        format!("write -z 1536k {}", cs.max(4096) * 2),
        format!("discard {} {}", 1600 * 1024 + 16 * cs, 4 * cs),
        "write -P 0x44 3M 1536".into(),
        "write -P 0x55 3583k 1k".into(),
        format!("write -z -u {} {}", 2 * 1024 * 1024 + 8 * cs, 2 * cs),
    ]
}

/// The LUKS options of a cipher variant (fast PBKDF2: the test is about data, not KDF cost).
fn luks_opts(secret_id: &str, cipher: &str) -> String {
    let mut o = format!("encrypt.format=luks,encrypt.key-secret={secret_id},encrypt.iter-time=10");
    match cipher {
        "aes-256-xts" => {}
        // iotest 284: the LUKS header area spans many small clusters.
        "aes-256-xts-cs512" => o.push_str(",cluster_size=512"),
        "aes-128-xts" => o.push_str(",encrypt.cipher-alg=aes-128"),
        "aes-256-cbc-essiv" => {
            o.push_str(",encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256")
        }
        other => panic!("unknown cipher variant {other}"),
    }
    o
}

/// Compressible guest data with a zero hole, for `qemu-img convert -c`.
fn compressible(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut i = 0u64;
    while data.len() < len {
        data.extend_from_slice(format!("matrix line {i:07} {}\n", i * 104729).as_bytes());
        i += 1;
    }
    data.truncate(len);
    data[len / 2..len / 2 + 300_000].fill(0);
    let noise = common::pattern(11, 20_000);
    data[100_000..120_000].copy_from_slice(&noise);
    data
}

impl Case {
    fn new(name: &str, image: PathBuf, format: Format, size: u64) -> Case {
        Case {
            name: name.into(),
            image,
            format,
            passphrase: None,
            backing_passphrases: Vec::new(),
            data_file: None,
            size,
            windows: None,
            snapshots: Vec::new(),
        }
    }

    /// Secrets (id, passphrase) and the `--image-opts` string that open this image in QEMU,
    /// or None when a plain `-f FORMAT PATH` does.
    pub fn qemu_image_opts(&self) -> Option<(Vec<(String, String)>, String)> {
        let encrypted = self.passphrase.is_some() || self.backing_passphrases.iter().any(Option::is_some);
        if !encrypted {
            return None;
        }
        let mut secrets = Vec::new();
        let mut opts = format!("driver={},file.filename={}", self.format.name(), p(&self.image));
        if let Some(s) = self.passphrase {
            secrets.push(("s0".to_string(), s.to_string()));
            opts.push_str(",encrypt.key-secret=s0");
        }
        let mut prefix = String::new();
        for (i, s) in self.backing_passphrases.iter().enumerate() {
            prefix.push_str("backing.");
            if let Some(s) = s {
                let id = format!("s{}", i + 1);
                secrets.push((id.clone(), s.to_string()));
                opts.push_str(&format!(",{prefix}encrypt.key-secret={id}"));
            }
        }
        Some((secrets, opts))
    }

    fn qemu_img_cmd(&self, verb: &str) -> Command {
        let mut c = Command::new("qemu-img");
        c.arg(verb);
        match self.qemu_image_opts() {
            Some((secrets, opts)) => {
                for (id, data) in secrets {
                    c.args(["--object", &format!("secret,id={id},data={data}")]);
                }
                c.args(["--image-opts", &opts]);
            }
            None => {
                c.args(["-f", self.format.name()]).arg(&self.image);
            }
        }
        c
    }

    /// What QEMU reads: the whole disk (or the windows, concatenated) as raw bytes.
    pub fn qemu_raw(&self, dir: &Path) -> Vec<u8> {
        let out = dir.join(format!("{}.qemu.raw", self.name));
        let mut c = self.qemu_img_cmd("convert");
        c.args(["-O", "raw"]).arg(&out);
        common::run(&mut c);
        let bytes = match &self.windows {
            None => std::fs::read(&out).unwrap(),
            Some(windows) => read_windows(&out, windows),
        };
        let _ = std::fs::remove_file(&out);
        bytes
    }

    /// What QEMU reads from internal snapshot `name` (`qemu-img convert -l`), whole disk.
    pub fn qemu_raw_snapshot(&self, dir: &Path, name: &str) -> Vec<u8> {
        assert!(self.qemu_image_opts().is_none(), "snapshot cases are not encrypted");
        let out = dir.join(format!("{}.{name}.qemu.raw", self.name));
        let mut c = Command::new("qemu-img");
        c.args(["convert", "-f", self.format.name(), "-l", &format!("snapshot.name={name}")]);
        c.arg(&self.image).args(["-O", "raw"]).arg(&out);
        common::run(&mut c);
        let bytes = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        bytes
    }

    /// What QEMU reports with `qemu-img map --output json`, merged into maximal ranges.
    pub fn qemu_map(&self) -> Vec<MapRange> {
        let mut c = self.qemu_img_cmd("map");
        c.args(["--output", "json"]);
        parse_map_json(&common::run(&mut c))
    }
}

/// Reads `windows` of a (sparse) raw file, concatenated.
pub fn read_windows(path: &Path, windows: &[(u64, u64)]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut out = Vec::new();
    for &(off, len) in windows {
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, off).unwrap();
        out.extend_from_slice(&buf);
    }
    out
}

/// Parses `qemu-img map --output json` (or qluks's, which uses the same keys): one object per
/// range with `start`, `length`, `data`, `zero`. Adjacent ranges of the same kind are merged,
/// since only the data/zero classification must agree, not how it is split.
pub fn parse_map_json(json: &str) -> Vec<MapRange> {
    let mut ranges: Vec<MapRange> = Vec::new();
    for obj in json.split('{').skip(1) {
        if !obj.contains("\"start\"") {
            continue;
        }
        let obj = obj.split('}').next().unwrap();
        let field = |name: &str| -> &str {
            let key = format!("\"{name}\"");
            let at = obj.find(&key).unwrap_or_else(|| panic!("map entry without {name}: {obj}")) + key.len();
            obj[at..].trim_start().trim_start_matches(':').trim_start().split([',', '}']).next().unwrap().trim()
        };
        let r = MapRange {
            start: field("start").parse().unwrap(),
            length: field("length").parse().unwrap(),
            data: field("data") == "true",
            zero: field("zero") == "true",
        };
        ranges.push(r);
    }
    merge(ranges)
}

const MIB: u64 = 1 << 20;

/// Generates every image of the matrix in `dir`. Groups run in parallel threads: most of the
/// time goes to QEMU's PBKDF2 calibration for the LUKS images, which is wall-clock bound.
pub fn build(dir: &Path) -> Vec<Case> {
    let groups: [fn(&Path) -> Vec<Case>; 10] = [
        plain_images,
        compressed_images,
        |d| luks_image(d, "aes-256-xts"),
        |d| luks_image(d, "aes-128-xts"),
        |d| luks_image(d, "aes-256-cbc-essiv"),
        |d| luks_image(d, "aes-256-xts-cs512"),
        legacy_aes_and_qcow1_images,
        data_file_and_snapshot_images,
        chain_images,
        huge_image,
    ];
    std::thread::scope(|s| {
        let handles: Vec<_> = groups.iter().map(|g| s.spawn(move || g(dir))).collect();
        handles.into_iter().flat_map(|h| h.join().expect("image generation failed")).collect()
    })
}

/// Cluster sizes (compat 1.1), compat 0.10, refcount widths, extended L2, preallocation.
fn plain_images(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mib = MIB;

    // Cluster sizes (compat 1.1), then compat 0.10 and refcount widths at 64 KiB.
    for (name, opts) in [
        ("cs512", "cluster_size=512"),
        ("cs4k", "cluster_size=4096"),
        ("cs64k", "cluster_size=65536"),
        ("cs2m", "cluster_size=2M"),
        ("compat010", "compat=0.10"),
        ("refcount1", "refcount_bits=1"),
        ("refcount16", "refcount_bits=16"),
        ("refcount64", "refcount_bits=64"),
        ("extl2", "extended_l2=on,cluster_size=65536"),
        ("extl2-32k", "extended_l2=on,cluster_size=32768"),
        ("prealloc-metadata", "preallocation=metadata"),
        ("prealloc-full", "preallocation=full"),
    ] {
        let img = dir.join(format!("{name}.qcow2"));
        let size = if name == "cs2m" { 8 * mib } else { 4 * mib };
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p(&img), &size.to_string()]);
        let cs = match name {
            "cs512" => 512,
            "cs4k" => 4096,
            "cs2m" => 2 * mib,
            "extl2-32k" => 32768,
            _ => 65536,
        };
        let cmds = standard_writes(cs);
        let mut cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        if name.starts_with("extl2") {
            // Subcluster-sized pieces: allocated, zero and untouched subclusters in one cluster.
            cmds.extend(["write -P 0x66 1M 2k", "write -z 1028k 1k", "write -P 0x67 1034k 512"]);
        }
        qemu_io(&img, "qcow2", &cmds);
        cases.push(Case::new(name, img, Format::Qcow2, size));
    }
    cases
}

/// Compressed images, deflate and zstd.
fn compressed_images(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mib = MIB;
    let raw = dir.join("compressible.raw");
    std::fs::write(&raw, compressible(3 * mib as usize)).unwrap();
    for (name, ty) in [("compressed-zlib", "zlib"), ("compressed-zstd", "zstd")] {
        let img = dir.join(format!("{name}.qcow2"));
        qemu_img(&[
            "convert",
            "-q",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            &format!("compression_type={ty},cluster_size=65536"),
            p(&raw),
            p(&img),
        ]);
        // Overwrite part of a compressed cluster: it becomes a normal cluster again.
        qemu_io(&img, "qcow2", &["write -P 0x71 200k 4k", "write -z 2M 64k"]);
        cases.push(Case::new(name, img, Format::Qcow2, 3 * mib));
    }
    cases
}

/// LUKS qcow2 with one of the cipher variants.
fn luks_image(dir: &Path, cipher: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mib = MIB;
    {
        let name = format!("luks-{cipher}");
        let img = dir.join(format!("{name}.qcow2"));
        common::run(Command::new("qemu-img").args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            &format!("secret,id=s0,data={SECRET_LUKS}"),
            "-o",
            &luks_opts("s0", cipher),
            p(&img),
            "4M",
        ]));
        let opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", p(&img));
        let cmds = standard_writes(if cipher.ends_with("cs512") { 512 } else { 65536 });
        let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io_opts(&[("s0", SECRET_LUKS)], &opts, &cmds);
        let mut case = Case::new(&name, img, Format::Qcow2, 4 * mib);
        case.passphrase = Some(SECRET_LUKS);
        cases.push(case);
    }
    cases
}

/// Legacy AES qcow2 and qcow v1 (plain and AES).
fn legacy_aes_and_qcow1_images(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mib = MIB;
    for (name, format) in [("aes-qcow2", Format::Qcow2), ("qcow1", Format::Qcow), ("qcow1-aes", Format::Qcow)] {
        let img = dir.join(format!("{name}.{}", format.name()));
        let aes = name.contains("aes");
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", format.name()]);
        if aes {
            c.args(["--object", &format!("secret,id=s0,data={SECRET_AES}")]);
            c.args(["-o", "encrypt.format=aes,encrypt.key-secret=s0"]);
        }
        c.arg(&img).arg("4M");
        common::run(&mut c);
        let cmds = [
            "write -P 0x11 0 64k",
            "write -P 0x22 100k 3k",
            "write -P 0x33 1M 1M",
            "write -P 0x44 3M 1536",
            "write -P 0x55 3583k 1k",
        ];
        let mut case = Case::new(name, img.clone(), format, 4 * mib);
        if aes {
            let opts = format!("driver={},file.filename={},encrypt.key-secret=s0", format.name(), p(&img));
            qemu_io_opts(&[("s0", SECRET_AES)], &opts, &cmds);
            case.passphrase = Some(SECRET_AES);
        } else {
            qemu_io(&img, format.name(), &cmds);
        }
        cases.push(case);
    }
    // qcow v1 compressed. qemu-img 10 writes it completely, then exits 1 without a message:
    // the result is checked with qemu-img compare instead of the exit status.
    let raw = dir.join("qcow1-compressible.raw");
    let mut data = compressible(2 * mib as usize);
    data[100_000..120_000].iter_mut().for_each(|b| *b &= 0x0f); // every cluster must compress
    std::fs::write(&raw, data).unwrap();
    let img = dir.join("qcow1-compressed.qcow");
    let _ = common::output(
        Command::new("qemu-img").args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow"]).arg(&raw).arg(&img),
    );
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "qcow", p(&raw), p(&img)]);
    cases.push(Case::new("qcow1-compressed", img, Format::Qcow, 2 * mib));
    cases
}

/// External data file, raw (readable as is) and not; internal snapshots.
fn data_file_and_snapshot_images(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mib = MIB;
    for (name, raw_flag) in [("datafile-raw", "on"), ("datafile", "off")] {
        let img = dir.join(format!("{name}.qcow2"));
        let data = dir.join(format!("{name}.data"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={},data_file_raw={raw_flag}", p(&data)),
            p(&img),
            "4M",
        ]);
        let cmds = standard_writes(65536);
        let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(&img, "qcow2", &cmds);
        let mut case = Case::new(name, img, Format::Qcow2, 4 * mib);
        case.data_file = Some(data);
        cases.push(case);
    }

    // Internal snapshots taken between writes (the active state is compared).
    {
        let img = dir.join("snapshots.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", p(&img), "4M"]);
        qemu_io(&img, "qcow2", &["write -P 0x11 0 1M"]);
        qemu_img(&["snapshot", "-c", "first", p(&img)]);
        qemu_io(&img, "qcow2", &["write -P 0x22 512k 1M", "write -z 0 64k"]);
        qemu_img(&["snapshot", "-c", "second", p(&img)]);
        qemu_io(&img, "qcow2", &["write -P 0x33 1M 1M", "discard 1536k 64k"]);
        let mut case = Case::new("snapshots", img, Format::Qcow2, 4 * mib);
        case.snapshots = vec!["first", "second"];
        cases.push(case);
    }
    cases
}

/// A 3-deep chain: LUKS base (3 MiB, shorter than the overlays) <- plain mid <- LUKS top with
// another passphrase; partial overwrites at every level.
fn chain_images(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mib = MIB;
    {
        let base = dir.join("chain-base.qcow2");
        let mid = dir.join("chain-mid.qcow2");
        let top = dir.join("chain-top.qcow2");
        common::run(Command::new("qemu-img").args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            &format!("secret,id=s0,data={SECRET_BASE}"),
            "-o",
            &luks_opts("s0", "aes-256-xts"),
            p(&base),
            "3M",
        ]));
        qemu_io_opts(
            &[("s0", SECRET_BASE)],
            &format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", p(&base)),
            &["write -P 0xb1 0 3M"],
        );
        common::run(Command::new("qemu-img").args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "chain-base.qcow2",
            "-F",
            "qcow2",
            "-o",
            "cluster_size=4096",
            p(&mid),
            "4M",
        ]));
        qemu_io_opts(
            &[("s1", SECRET_BASE)],
            &format!("driver=qcow2,file.filename={},backing.encrypt.key-secret=s1", p(&mid)),
            &["write -P 0xa2 10k 5k", "write -z 1M 8k", "write -P 0xa3 2047k 2k", "write -P 0xa4 3582k 4k"],
        );
        common::run(Command::new("qemu-img").args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            &format!("secret,id=s0,data={SECRET_TOP}"),
            "-b",
            "chain-mid.qcow2",
            "-F",
            "qcow2",
            "-o",
            &luks_opts("s0", "aes-128-xts"),
            p(&top),
            "4M",
        ]));
        qemu_io_opts(
            &[("s0", SECRET_TOP), ("s2", SECRET_BASE)],
            &format!(
                "driver=qcow2,file.filename={},encrypt.key-secret=s0,backing.backing.encrypt.key-secret=s2",
                p(&top)
            ),
            &["write -P 0xc1 12k 1k", "write -P 0xc2 64k 70k", "write -z 2M 64k", "write -P 0xc3 4000k 96k"],
        );
        let mut case = Case::new("chain3", top, Format::Qcow2, 4 * mib);
        case.passphrase = Some(SECRET_TOP);
        case.backing_passphrases = vec![None, Some(SECRET_BASE)];
        cases.push(case);
    }
    cases
}

/// Past 4 TiB: data beyond sector 2^32, compared in windows.
fn huge_image(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mib = MIB;
    {
        let img = dir.join("huge.qcow2");
        let size = 5u64 << 40;
        qemu_img(&["create", "-q", "-f", "qcow2", p(&img), &size.to_string()]);
        let at1 = (1u64 << 32) * 512 + 4096; // just past sector 2^32
        let at2 = (4u64 << 40) + 3 * mib; // past 4 TiB
        qemu_io(
            &img,
            "qcow2",
            &[
                "write -P 0x5a 1M 64k",
                &format!("write -P 0x5b {at1} 70k"),
                &format!("write -P 0x5c {at2} 1M"),
                &format!("write -z {} 64k", at2 + 2 * mib),
            ],
        );
        let mut case = Case::new("huge", img, Format::Qcow2, size);
        case.windows = Some(vec![(0, 2 * mib), (at1 - 64 * 1024, 256 * 1024), (at2 - mib, 4 * mib), (size - mib, mib)]);
        cases.push(case);
    }

    cases
}

/// Sanity checks that the generator made what it claims, from QEMU's own point of view.
pub fn check_generated(case: &Case, map: &[MapRange], raw: &[u8]) {
    let name = case.name.as_str();
    let data_ranges = map.iter().filter(|r| r.data).count();
    assert!(data_ranges > 0, "{name}: QEMU sees data");
    let expected_len = match &case.windows {
        None => case.size,
        Some(w) => w.iter().map(|&(_, l)| l).sum(),
    };
    assert_eq!(raw.len() as u64, expected_len, "{name}: raw length");
    assert_eq!(map.iter().map(|r| r.length).sum::<u64>(), case.size, "{name}: map covers the disk");
    if case.passphrase.is_some() && case.format == Format::Qcow2 && name != "aes-qcow2" {
        let header = std::fs::read(&case.image).unwrap();
        assert_eq!(u32::from_be_bytes(header[32..36].try_into().unwrap()), 2, "{name}: LUKS crypt_method");
    }
    if name.contains("compressed") {
        let json = {
            let mut c = case.qemu_img_cmd("map");
            c.args(["--output", "json"]);
            common::run(&mut c)
        };
        assert!(json.contains("\"compressed\": true"), "{name}: QEMU sees compressed clusters");
    }
    if name == "huge" {
        let at1 = ((1u64 << 32) * 512 + 4096) as usize;
        assert!(map.iter().any(|r| r.data && r.start as usize >= at1 - 4096), "{name}: data past sector 2^32");
    }
}

/// Merges adjacent ranges of the same kind.
pub fn merge(ranges: impl IntoIterator<Item = MapRange>) -> Vec<MapRange> {
    let mut out: Vec<MapRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.start + last.length == r.start && last.data == r.data && last.zero == r.zero => {
                last.length += r.length
            }
            _ => out.push(r),
        }
    }
    out
}

/// Compares two maps over the whole disk: which bytes hold data must agree exactly; where
/// neither holds data, whether they read as zero must agree. (On data ranges QEMU may add
/// `zero: true` from probing holes of the host file, which is not a property of the image.)
pub fn compare_maps(ours: &[MapRange], qemu: &[MapRange]) -> Result<(), String> {
    let end = |m: &[MapRange]| m.last().map_or(0, |r| r.start + r.length);
    if end(ours) != end(qemu) {
        return Err(format!("map ends at {:#x}, QEMU's at {:#x}", end(ours), end(qemu)));
    }
    let (mut i, mut j, mut pos) = (0, 0, 0u64);
    while i < ours.len() && j < qemu.len() {
        let (a, b) = (ours[i], qemu[j]);
        let agree = a.data == b.data && (a.data || a.zero == b.zero);
        if !agree {
            return Err(format!(
                "at {pos:#x}: qluks says data={} zero={}, QEMU says data={} zero={}",
                a.data, a.zero, b.data, b.zero
            ));
        }
        let next = (a.start + a.length).min(b.start + b.length);
        pos = next;
        if a.start + a.length == next {
            i += 1;
        }
        if b.start + b.length == next {
            j += 1;
        }
    }
    Ok(())
}
