//! qcow2 writes through the command line against QEMU: the same seeded random script of
//! writes (-P patterns), write -z [-u], discards and flushes (unaligned, straddling clusters,
//! 1 B to 320 KiB) applied with `qemu-io` to one copy of an image and `qluks io` to another,
//! across cluster sizes, refcount widths, extended L2, compat 0.10, LUKS and plain, an image
//! with an internal snapshot and compressed clusters, and an encrypted overlay on an encrypted
//! base (different secrets). After each batch: `qemu-img compare` identical; at the end
//! `qemu-img check` clean on the qluks copy, the snapshot and the backing file unchanged.
//! Also `qluks convert -O qcow2` (raw -> LUKS qcow2, LUKS qcow2 -> a new key, a chain) and the
//! refusals (wrong passphrase, read-only file) that leave the file unchanged.
//!
//! The seed is printed; `QLUKS_WRITE_SEED=N` replays a run.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{output, run, tools, TempDir};
use std::path::{Path, PathBuf};
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

/// The seed of this run (printed), from `QLUKS_WRITE_SEED` or the clock.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("QLUKS_WRITE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("{test}: seed {seed} (QLUKS_WRITE_SEED={seed} replays it)");
    seed
}

/// A small LCG (Knuth's MMIX constants), the high bits used.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        (self.next() << 31 | self.next()) % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// `ops` qemu-io commands on a disk of `size` bytes with `cluster`-byte clusters.
fn script(rng: &mut Lcg, size: u64, cluster: u64, ops: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(ops);
    for _ in 0..ops {
        let len = match rng.below(10) {
            0..=4 => rng.range(1, 4096),
            5..=7 => rng.range(4097, 64 << 10),
            8 => rng.range((64 << 10) + 1, 320 << 10),
            _ => rng.range(1, 3 * cluster),
        }
        .min(size);
        let offset = match rng.below(4) {
            // Straddling a cluster boundary.
            0 => {
                let boundary = rng.range(1, size / cluster - 1) * cluster;
                boundary.saturating_sub(rng.range(1, len.min(boundary)))
            }
            // Cluster aligned.
            1 => rng.below(size / cluster) * cluster,
            // Sector aligned.
            2 => rng.below(size / 512) * 512,
            _ => rng.below(size),
        }
        .min(size - len);
        let cmd = match rng.below(100) {
            0..=69 => format!("write -P {:#04x} {offset} {len}", rng.range(1, 255)),
            70..=75 => format!("write -z {offset} {len}"),
            76..=81 => format!("write -z -u {offset} {len}"),
            82..=91 => format!("discard {offset} {len}"),
            _ => "flush".to_string(),
        };
        out.push(cmd);
    }
    out
}

/// One image under test: its path, and how qemu and qluks open it.
struct Image {
    path: PathBuf,
    /// qemu `--object` secrets.
    objects: Vec<String>,
    /// qemu `--image-opts` without the file name.
    opts: String,
    /// qluks passphrase options.
    qluks_args: Vec<String>,
}

impl Image {
    fn plain(path: PathBuf) -> Image {
        Image { path, objects: vec![], opts: "driver=qcow2".into(), qluks_args: vec![] }
    }

    fn image_opts(&self) -> String {
        format!("{},file.filename={}", self.opts, s(&self.path))
    }

    /// The same image at another path.
    fn at(&self, path: PathBuf) -> Image {
        Image { path, objects: self.objects.clone(), opts: self.opts.clone(), qluks_args: self.qluks_args.clone() }
    }

    fn qemu_io(&self, cmds: &[String]) {
        let mut c = Command::new("qemu-io");
        for o in &self.objects {
            c.args(["--object", o]);
        }
        c.args(["--image-opts", &self.image_opts()]);
        for cmd in cmds {
            c.arg("-c").arg(cmd);
        }
        let out = output(&mut c);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !stdout.contains("failed"),
            "qemu-io: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn qluks_io(&self, cmds: &[String]) -> String {
        let mut c = qluks();
        c.arg("io").args(&self.qluks_args);
        for cmd in cmds {
            c.arg("-c").arg(cmd);
        }
        run(c.arg(&self.path))
    }

    fn qemu_cmd(&self, sub: &str) -> Command {
        let mut c = Command::new("qemu-img");
        c.arg(sub);
        for o in &self.objects {
            c.args(["--object", o]);
        }
        c
    }

    /// `qemu-img check`: exit 0 (no corruption, no leak).
    fn check_clean(&self) {
        let mut c = self.qemu_cmd("check");
        let out = output(c.args(["--image-opts", &self.image_opts()]));
        assert!(
            out.status.success(),
            "qemu-img check {}: {}\n{}{}",
            s(&self.path),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `qemu-img compare` of the guest content with `other` (secrets of both given).
    fn assert_same(&self, other: &Image, context: &str) {
        let mut c = self.qemu_cmd("compare");
        for o in other.objects.iter().filter(|o| !self.objects.contains(o)) {
            c.args(["--object", o]);
        }
        let out = output(c.args(["--image-opts", &self.image_opts(), &other.image_opts()]));
        assert!(
            out.status.success(),
            "{context}: qemu-img compare {} {}: {}\n{}{}",
            s(&self.path),
            s(&other.path),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The guest content at internal snapshot `name`, as qemu-img reads it.
    fn snapshot_raw(&self, dir: &TempDir, name: &str) -> Vec<u8> {
        let raw = dir.join("snapshot.raw");
        let mut c = self.qemu_cmd("convert");
        run(c.args(["-l", &format!("snapshot.name={name}"), "-O", "raw", "--image-opts", &self.image_opts(), s(&raw)]));
        std::fs::read(raw).unwrap()
    }
}

/// Applies the same random script to a copy of `image` with qemu-io and with qluks io, in
/// `batches` invocations of `ops` commands each, comparing after each; then checks the qluks
/// copy. `image` must hold its initial content already.
fn differential(test: &str, dir: &TempDir, image: &Image, size: u64, cluster: u64, ops: usize, batches: usize) {
    let mut rng = Lcg(seed(test));
    let ours = image.at(dir.join("qluks.qcow2"));
    std::fs::copy(&image.path, &ours.path).unwrap();
    let initial = image.at(dir.join("initial.qcow2"));
    std::fs::copy(&image.path, &initial.path).unwrap();
    for batch in 0..batches {
        let cmds = script(&mut rng, size, cluster, ops);
        image.qemu_io(&cmds);
        ours.qluks_io(&cmds);
        image.assert_same(&ours, &format!("{test}: after batch {batch}"));
    }
    ours.check_clean();
    // The control: the scripts changed the content, and compare sees it (exit 1: different).
    let mut c = initial.qemu_cmd("compare");
    let out = output(c.args(["--image-opts", &initial.image_opts(), &ours.image_opts()]));
    assert_eq!(out.status.code(), Some(1), "{test}: the scripts left the content as it was");
}

/// A qcow2 image made by qemu-img with `-o options` (plus LUKS with secret "pw" when
/// `luks`), partly filled by qemu-io.
fn qemu_image(dir: &TempDir, options: &str, luks: bool, size: u64) -> Image {
    let path = dir.join("qemu.qcow2");
    let mut image = Image::plain(path.clone());
    let mut options = options.to_string();
    if luks {
        image.objects.push("secret,id=s0,data=pw".into());
        image.opts.push_str(",encrypt.key-secret=s0");
        options.push_str(",encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10");
        let pass = dir.join("pass");
        std::fs::write(&pass, "pw").unwrap();
        image.qluks_args = vec!["--passphrase-file".into(), s(&pass).into()];
    }
    let mut c = image.qemu_cmd("create");
    run(c.args(["-q", "-f", "qcow2", "-o", &options, s(&path), &size.to_string()]));
    let third = size / 3;
    image.qemu_io(&[format!("write -P 0x11 0 {third}"), format!("write -P 0x22 {} {}", 2 * third + 777, third / 2)]);
    image
}

fn matrix_case(test: &str, options: &str, luks: bool, size: u64, cluster: u64, ops: usize) {
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let image = qemu_image(&dir, options, luks, size);
    differential(test, &dir, &image, size, cluster, ops, 2);
}

#[test]
fn random_writes_512b_clusters_refcount16() {
    matrix_case("w512", "cluster_size=512", false, 4 << 20, 512, 1000);
}

#[test]
fn random_writes_4k_clusters_refcount1_luks() {
    matrix_case("w4k_rc1_luks", "cluster_size=4k,refcount_bits=1", true, 8 << 20, 4096, 1000);
}

#[test]
fn random_writes_64k_clusters_refcount64() {
    matrix_case("w64k_rc64", "cluster_size=64k,refcount_bits=64", false, 32 << 20, 64 << 10, 1000);
}

#[test]
fn random_writes_2m_clusters_luks() {
    matrix_case("w2m_luks", "cluster_size=2M", true, 64 << 20, 2 << 20, 600);
}

#[test]
fn random_writes_extended_l2_luks() {
    matrix_case("wext_luks", "cluster_size=64k,extended_l2=on", true, 32 << 20, 64 << 10, 1000);
}

#[test]
fn random_writes_extended_l2_32k_refcount2() {
    matrix_case("wext32k_rc2", "cluster_size=32k,extended_l2=on,refcount_bits=2", false, 16 << 20, 32 << 10, 1000);
}

#[test]
fn random_writes_compat_0_10() {
    matrix_case("wv2", "compat=0.10,cluster_size=4k", false, 8 << 20, 4096, 1000);
}

#[test]
fn random_writes_lazy_refcounts() {
    matrix_case("wlazy", "cluster_size=16k,lazy_refcounts=on", false, 8 << 20, 16 << 10, 600);
}

/// An image with compressed clusters and an internal snapshot sharing them (and plain data):
/// every write to a shared cluster is a copy on write; the snapshot reads as before.
#[test]
fn random_writes_over_a_snapshot_and_compressed_clusters() {
    let test = "wsnap";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let size: u64 = 8 << 20;
    let cluster = 4096;
    let image = qemu_image(&dir, "cluster_size=4k", false, size);
    // Compressed clusters (whole clusters, qemu-io -c, where nothing is allocated yet), then a
    // snapshot of it all.
    image.qemu_io(&[
        "write -c -P 0x33 3M 64k".into(),
        "write -c -P 0x44 4M 256k".into(),
        "write -c -P 0x55 7M 4k".into(),
    ]);
    qemu_img(&["snapshot", "-c", "snap1", s(&image.path)]);
    let map = qemu_img(&["map", "--output=json", s(&image.path)]);
    assert!(map.contains("\"compressed\": true"), "no compressed clusters: {map}");
    let snapshot = image.snapshot_raw(&dir, "snap1");
    differential(test, &dir, &image, size, cluster, 1000, 2);
    let ours = image.at(dir.join("qluks.qcow2"));
    assert!(ours.snapshot_raw(&dir, "snap1") == snapshot, "the snapshot changed");
    let listed = qemu_img(&["snapshot", "-l", s(&ours.path)]);
    assert!(listed.contains("snap1"), "{listed}");
}

/// A LUKS overlay (secret "top pw") on a LUKS base (secret "base pw"): writes land in the
/// overlay, partial clusters filled from the base; the base is unchanged.
#[test]
fn random_writes_to_an_encrypted_overlay_on_an_encrypted_base() {
    let test = "woverlay";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let size: u64 = 16 << 20;
    let cluster = 64 << 10;
    let objects = vec!["secret,id=s0,data=base pw".to_string(), "secret,id=s1,data=top pw".to_string()];
    let enc = |id: &str| format!("encrypt.format=luks,encrypt.key-secret={id},encrypt.iter-time=10");
    let base = dir.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", &objects[0], "-o", &enc("s0"), s(&base), "16M"]);
    let base_image = Image {
        path: base.clone(),
        objects: vec![objects[0].clone()],
        opts: "driver=qcow2,encrypt.key-secret=s0".into(),
        qluks_args: vec![],
    };
    base_image.qemu_io(&["write -P 0x61 0 6M".into(), "write -P 0x62 9M 3M".into(), "write -P 0x63 15M 1M".into()]);
    let top = dir.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        &objects[1],
        "-o",
        &enc("s1"),
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    let (base_pass, top_pass) = (dir.join("base.pass"), dir.join("top.pass"));
    std::fs::write(&base_pass, "base pw").unwrap();
    std::fs::write(&top_pass, "top pw").unwrap();
    let image = Image {
        path: top,
        objects: objects.clone(),
        opts: "driver=qcow2,encrypt.key-secret=s1,backing.encrypt.key-secret=s0".into(),
        qluks_args: vec![
            "--passphrase-file".into(),
            s(&top_pass).into(),
            "--backing-passphrase-file".into(),
            s(&base_pass).into(),
        ],
    };
    image.qemu_io(&["write -P 0x71 1M 100k".into(), "write -P 0x72 10M 64k".into()]);
    let base_before = std::fs::read(&base).unwrap();
    differential(test, &dir, &image, size, cluster, 1000, 2);
    assert!(std::fs::read(&base).unwrap() == base_before, "the backing file changed");
}

/// One `qluks io` with 1 GiB-scale requests in a small image is refused cleanly; a 24 MiB
/// write (several scratch batches) reads back.
#[test]
fn large_requests_go_in_batches() {
    let test = "wlarge";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let image = qemu_image(&dir, "cluster_size=64k", true, 32 << 20);
    let ours = image.at(dir.join("qluks.qcow2"));
    std::fs::copy(&image.path, &ours.path).unwrap();
    let cmds: Vec<String> = vec!["write -P 0x5a 1000 24M".into(), "write -z 3M 5M".into()];
    let out = ours.qluks_io(&cmds);
    assert!(out.contains("wrote 25165824/25165824 bytes at offset 1000"), "{out}");
    image.qemu_io(&cmds);
    image.assert_same(&ours, "24 MiB write");
    ours.check_clean();
    let out = ours.qluks_io(&["read -P 0x5a 8M 16M".into(), "read -P 0 3M 5M".into()]);
    assert!(out.contains("read 16777216/16777216 bytes at offset 8388608"), "{out}");
    let mut c = qluks();
    let bad = output(c.arg("io").args(&ours.qluks_args).args(["-c", "write 32M 1", s(&ours.path)]));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("outside the disk"), "{err}");
    // A pattern mismatch fails the command and the exit status, as in qemu-io.
    let mut c = qluks();
    let bad = output(c.arg("io").args(&ours.qluks_args).args(["-c", "read -P 0x5b 1000 10", s(&ours.path)]));
    assert!(!bad.status.success());
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("Pattern verification failed at offset 1000, 10 bytes (found 0x5a, expected 0x5b)"), "{out}");
}

/// Wrong passphrase: refused before anything is written, the file unchanged.
#[test]
fn wrong_passphrase_leaves_the_image_unchanged() {
    let test = "wwrongpw";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let image = qemu_image(&dir, "cluster_size=64k", true, 4 << 20);
    let before = std::fs::read(&image.path).unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "pw\n").unwrap();
    let out = output(qluks().args(["io", "--passphrase-file", s(&wrong), "-c", "write 0 512", s(&image.path)]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(s(&image.path)) && err.contains("passphrase"), "{err}");
    assert!(std::fs::read(&image.path).unwrap() == before, "the image changed");
}

/// Makes a file read-only even for root (chattr +i) for the life of the guard.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = output(Command::new("chattr").arg("-i").arg(&self.0));
    }
}

/// A file that cannot be opened for writing: `io` that writes fails naming the file (and why
/// it was opened read-write), `io` that only reads works, the file is unchanged.
#[test]
fn read_only_file_refuses_writes_and_still_reads() {
    let test = "wreadonly";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let image = qemu_image(&dir, "cluster_size=64k", false, 4 << 20);
    let path = image.path.clone();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut _guard = None;
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        // Privileged: mode bits do not stop us; the immutable attribute does.
        let out = output(Command::new("chattr").arg("+i").arg(&path));
        if !out.status.success() {
            println!("SKIP {test}: running privileged and chattr +i is not available");
            return;
        }
        _guard = Some(Immutable(path.clone()));
    }
    let before = std::fs::read(&path).unwrap();
    let out = output(qluks().args(["io", "-c", "write -P 1 0 512", s(&path)]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(s(&path)) && err.contains("opened read-write: a command writes"), "{err}");
    let read = run(qluks().args(["io", "-c", "read -P 0x11 0 4k", s(&path)]));
    assert!(read.contains("read 4096/4096 bytes at offset 0"), "{read}");
    assert!(std::fs::read(&path).unwrap() == before, "the image changed");
}

/// `qluks convert -O qcow2` of `src` (qluks arguments `src_args`) into `dst` with `-o
/// options` and, when given, the output passphrase from `target_pass`.
fn convert(src_args: &[String], src: &Path, dst: &Path, options: &str, target_pass: Option<&Path>) -> String {
    let mut c = qluks();
    c.arg("convert").args(src_args).args(["-O", "qcow2", "-o", options]);
    if let Some(p) = target_pass {
        c.arg("--target-passphrase-file").arg(p);
    }
    run(c.arg(src).arg(dst))
}

/// A raw file (data, zeros and a hole) into a new LUKS qcow2: same content as the raw file
/// for qemu-img, clean, encrypted, and sparse (zero ranges not allocated).
#[test]
fn convert_raw_into_luks_qcow2() {
    let test = "convert_raw_luks";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let raw = dir.join("src.raw");
    let size = 6u64 << 20;
    let mut bytes = vec![0u8; size as usize];
    bytes[1000..1_500_000].copy_from_slice(&common::pattern(7, 1_499_000));
    bytes[(4 << 20) + 3..(4 << 20) + 70_000].fill(0xee);
    std::fs::write(&raw, &bytes).unwrap();
    let pass = dir.join("target.pass");
    std::fs::write(&pass, "new secret").unwrap();
    let dst = dir.join("out.qcow2");
    convert(&[], &raw, &dst, "encrypt.format=luks,encrypt.iter-time=10,cluster_size=4k", Some(&pass));
    let out = Image {
        path: dst.clone(),
        objects: vec!["secret,id=t0,data=new secret".into()],
        opts: "driver=qcow2,encrypt.key-secret=t0".into(),
        qluks_args: vec!["--passphrase-file".into(), s(&pass).into()],
    };
    let src = Image { path: raw.clone(), objects: vec![], opts: "driver=raw".into(), qluks_args: vec![] };
    out.assert_same(&src, "raw -> LUKS qcow2");
    out.check_clean();
    let info = qemu_img(&["info", s(&dst)]);
    assert!(info.contains("encrypted: yes") && info.contains("cluster_size: 4096"), "{info}");
    // The zero stretch between the two data ranges (1.5 MiB .. 4 MiB) holds no data.
    let mut c = out.qemu_cmd("map");
    let map = run(c.args(["--output=json", "--image-opts", &out.image_opts()]));
    assert!(
        map.lines().any(|l| l.contains("\"start\": 1503232, \"length\": 2691072,") && l.contains("\"data\": false")),
        "the zero range was written:\n{map}"
    );
}

/// A LUKS qcow2 made by qemu-img re-encrypted by `qluks convert` under a new passphrase (and a
/// new master key): the same content, the old passphrase no longer opens it.
#[test]
fn convert_luks_qcow2_to_a_new_key() {
    let test = "convert_rekey";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let src = qemu_image(&dir, "cluster_size=64k", true, 8 << 20);
    src.qemu_io(&["write -P 0x99 3M 12345".into(), "write -z 100k 200k".into()]);
    let new_pass = dir.join("new.pass");
    std::fs::write(&new_pass, "another pw").unwrap();
    let dst = dir.join("rekeyed.qcow2");
    convert(&src.qluks_args, &src.path, &dst, "encrypt.format=luks,encrypt.iter-time=10", Some(&new_pass));
    let out = Image {
        path: dst.clone(),
        objects: vec!["secret,id=n0,data=another pw".into()],
        opts: "driver=qcow2,encrypt.key-secret=n0".into(),
        qluks_args: vec!["--passphrase-file".into(), s(&new_pass).into()],
    };
    src.assert_same(&out, "re-encrypted");
    out.check_clean();
    let old_secret = Image { objects: vec!["secret,id=n0,data=pw".into()], ..out.at(dst.clone()) };
    let mut c = old_secret.qemu_cmd("compare");
    let refused = output(c.args(["--image-opts", &old_secret.image_opts(), &src.image_opts()]));
    assert!(!refused.status.success(), "the old passphrase still opens the converted image");
    // qluks reads it with the new passphrase.
    let read = out.qluks_io(&["read -P 0x99 3M 12345".into(), "read -P 0 100k 200k".into()]);
    assert!(read.contains("read 12345/12345 bytes at offset 3145728"), "{read}");
}

/// The content of a chain (a LUKS overlay on a plain base) into one unencrypted qcow2 with
/// small clusters and 1-bit refcounts.
#[test]
fn convert_chain_into_plain_qcow2() {
    let test = "convert_chain";
    if !tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(test);
    let base = dir.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    Image::plain(base.clone()).qemu_io(&["write -P 0x41 0 3M".into()]);
    let top = dir.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s0,data=pw",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    let pass = dir.join("pass");
    std::fs::write(&pass, "pw").unwrap();
    let chain = Image {
        path: top.clone(),
        objects: vec!["secret,id=s0,data=pw".into()],
        opts: "driver=qcow2,encrypt.key-secret=s0".into(),
        qluks_args: vec!["--passphrase-file".into(), s(&pass).into()],
    };
    chain.qemu_io(&["write -P 0x42 1000 70000".into(), "write -z 2M 4k".into()]);
    let dst = dir.join("flat.qcow2");
    convert(&chain.qluks_args, &top, &dst, "cluster_size=512,refcount_bits=1", None);
    let flat = Image::plain(dst.clone());
    chain.assert_same(&flat, "flattened chain");
    flat.check_clean();
    let info = qemu_img(&["info", s(&dst)]);
    assert!(!info.contains("backing file") && !info.contains("encrypted: yes"), "{info}");
}
