//! Every qcow2 / chain / `Image` open and read path runs on a thread with a 64 KiB stack (the
//! project's budget; firmware threads often get less than UEFI's 128 KiB). The caller's
//! structs (the image, the chain and their caches) live in caller-owned memory (here: boxes
//! made on the test's main thread), as firmware would put them in a static or a memory pool;
//! what is measured is the engine's own stack.
//!
//! Each path runs with its own budget: the minimum measured (by bisecting the thread's stack
//! size on x86-64) plus about 8 KiB of headroom, so that a regression of 16 KiB on the stack
//! fails the test; every budget is within 64 KiB in release and within twice that in debug.
//! `QLUKS_STACK_KIB` overrides the stack size (to bisect the minimum of a path again).
mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use qluks::image::Image;
use qluks::qcow2::backing::{BackingFormat, BackingRequest, Chain, DataFileRequest, Opened, Resolver};
use qluks::qcow2::Qcow2Image;

/// The project's stack budget for every engine path.
const BUDGET_KIB: usize = 64;

/// A path's stack budget in KiB: `release` in optimised builds, `debug` otherwise.
#[derive(Clone, Copy)]
struct Budget {
    release: usize,
    debug: usize,
}

impl Budget {
    fn bytes(self) -> usize {
        assert!(self.release <= BUDGET_KIB && self.debug <= 2 * BUDGET_KIB, "over the project's budget");
        let kib = if cfg!(debug_assertions) { self.debug } else { self.release };
        std::env::var("QLUKS_STACK_KIB").ok().and_then(|s| s.parse().ok()).unwrap_or(kib) * 1024
    }
}

// Minimum measured (release / debug, KiB): LUKS qcow2 27 / 69, legacy AES 9 / 49, compressed
// 29 / 57, three-layer chain 27 / 73; `Image` raw 9 / 9, qcow 9 / 43, qcow2 9 / 43, LUKS 29 / 75
// (the LUKS engine's own path), LUKS qcow2 31 / 83. A thread needs about 9 KiB by itself.
const LUKS_QCOW2: Budget = Budget { release: 36, debug: 80 };
const LEGACY_AES: Budget = Budget { release: 20, debug: 60 };
const COMPRESSED: Budget = Budget { release: 40, debug: 68 };
const CHAIN: Budget = Budget { release: 36, debug: 84 };
const IMAGE_RAW: Budget = Budget { release: 20, debug: 20 };
const IMAGE_QCOW: Budget = Budget { release: 20, debug: 52 };
const IMAGE_QCOW2: Budget = Budget { release: 20, debug: 52 };
const IMAGE_LUKS: Budget = Budget { release: 40, debug: 84 };
const IMAGE_LUKS_QCOW2: Budget = Budget { release: 40, debug: 92 };
// Write paths (open for writing, write_at with copy on write of snapshot-shared clusters, new
// clusters and L2 tables, unaligned bytes, write_zeroes, discard, flush, a whole read back):
// minimum measured (release / debug, KiB): plain <= 16 / 30, LUKS qcow2 <= 16 / 66 (16 KiB is
// the smallest thread stack glibc gives).
const WRITE_PLAIN: Budget = Budget { release: 24, debug: 40 };
const WRITE_LUKS: Budget = Budget { release: 24, debug: 76 };

/// Runs `f` on a thread with `budget`'s stack; a stack overflow aborts the test process.
fn on_small_stack<T: Send + 'static>(budget: Budget, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(budget.bytes()).spawn(f).unwrap().join().unwrap()
}

use common::{qemu_img, qemu_io, qemu_raw};

/// Hands out pre-opened files by name and per-layer passphrases (what firmware does).
struct Files {
    files: Vec<(Vec<u8>, Option<File>)>,
    passphrases: Vec<Vec<u8>>,
}

impl Files {
    fn new(dir: &Path, names: &[&str], passphrases: &[&str]) -> Files {
        Files {
            files: names.iter().map(|n| (n.as_bytes().to_vec(), Some(File::open(dir.join(n)).unwrap()))).collect(),
            passphrases: passphrases.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }
}

impl Resolver<File> for Files {
    type Error = &'static str;
    fn open_backing(&mut self, req: &BackingRequest<'_>) -> Result<Opened<File>, &'static str> {
        let (i, f) = self.files.iter_mut().enumerate().find(|(_, (n, _))| n == req.name).ok_or("unknown name")?;
        let io = f.1.take().ok_or("opened twice")?;
        Ok(Opened { io, format: Some(BackingFormat::Qcow2), identity: Some(i as u64 + 100) })
    }
    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        self.passphrases.get(depth).map(Vec::as_slice)
    }
    fn open_data_file(&mut self, _: &DataFileRequest<'_>) -> Result<File, &'static str> {
        Err("no data files")
    }
}

fn luks_opts(secret: &str) -> String {
    format!("encrypt.format=luks,encrypt.key-secret={secret},encrypt.iter-time=10")
}

/// Opens `img` as a single qcow2 image in caller-owned memory and reads it all on the small
/// stack; returns the bytes.
fn qcow2_on_small_stack(img: PathBuf, passphrase: &'static [u8], budget: Budget) -> Vec<u8> {
    // `new_empty` is const: firmware would use a `static`; here a box made on the main thread.
    let mut q: Box<Qcow2Image<File>> = Box::default();
    on_small_stack(budget, move || {
        q.open_in(File::open(img).unwrap(), Some(passphrase)).unwrap();
        let mut buf = vec![0u8; q.size() as usize];
        let mut scratch = vec![0u8; q.compressed_scratch_len()];
        q.read_at_with_scratch(0, &mut buf, &mut scratch).unwrap();
        // An unaligned read through the partial-sector path.
        let mut odd = [0u8; 1001];
        q.read_at_with_scratch(70_001, &mut odd, &mut scratch).unwrap();
        assert_eq!(odd[..], buf[70_001..71_002]);
        buf
    })
}

#[test]
fn qcow2_luks_open_and_read_fit_in_64_kib() {
    let t = "qcow2_luks_open_and_read_fit_in_64_kib";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("luks.qcow2");
    let sec = "secret,id=s0,data=pw";
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", sec, "-o", &luks_opts("s0"), img.to_str().unwrap(), "1M"]);
    let opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", img.display());
    qemu_io(&[sec], &opts, &["write -P 0x5a 0 64k", "write -P 0x21 70000 5000"]);
    let want = qemu_raw(&dir, &[sec], &opts);
    assert_eq!(qcow2_on_small_stack(img, b"pw", LUKS_QCOW2), want);
}

#[test]
fn qcow2_legacy_aes_open_and_read_fit_in_64_kib() {
    let t = "qcow2_legacy_aes_open_and_read_fit_in_64_kib";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("aes.qcow2");
    let sec = "secret,id=s0,data=aes-key";
    let o = "encrypt.format=aes,encrypt.key-secret=s0";
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", sec, "-o", o, img.to_str().unwrap(), "1M"]);
    let opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", img.display());
    qemu_io(&[sec], &opts, &["write -P 0x5a 0 64k", "write -P 0x21 70000 5000"]);
    let want = qemu_raw(&dir, &[sec], &opts);
    assert_eq!(qcow2_on_small_stack(img, b"aes-key", LEGACY_AES), want);
}

#[test]
fn qcow2_compressed_clusters_read_in_64_kib() {
    let t = "qcow2_compressed_clusters_read_in_64_kib";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (plain, img) = (dir.join("plain.qcow2"), dir.join("zlib.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", plain.to_str().unwrap(), "1M"]);
    let opts = format!("driver=qcow2,file.filename={}", plain.display());
    let text: Vec<String> = (0..4).map(|i| format!("write -P 0x{:02x} {}k 60k", 0x30 + i, i * 192)).collect();
    let cmds: Vec<&str> = text.iter().map(String::as_str).collect();
    qemu_io(&[], &opts, &cmds);
    qemu_img(&["convert", "-q", "-c", "-O", "qcow2", plain.to_str().unwrap(), img.to_str().unwrap()]);
    let want = qemu_raw(&dir, &[], &format!("driver=qcow2,file.filename={}", img.display()));
    assert_eq!(qcow2_on_small_stack(img, b"", COMPRESSED), want);
}

#[test]
fn three_layer_encrypted_chain_opens_and_reads_in_64_kib() {
    let t = "three_layer_encrypted_chain_opens_and_reads_in_64_kib";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let objs = ["secret,id=s0,data=base-pw", "secret,id=s1,data=mid-pw", "secret,id=s2,data=top-pw"];
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let (b, m, tp) = (p("base.qcow2"), p("mid.qcow2"), p("top.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", objs[0], "-o", &luks_opts("s0"), &b, "1M"]);
    let o1 = format!("{},cluster_size=4k", luks_opts("s1"));
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", objs[1], "-o", &o1, "-b", "base.qcow2", "-F", "qcow2", &m]);
    let o2 = luks_opts("s2");
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", objs[2], "-o", &o2, "-b", "mid.qcow2", "-F", "qcow2", &tp]);
    let base_opts = format!("driver=qcow2,file.filename={b},encrypt.key-secret=s0");
    let mid_opts = format!("{},encrypt.key-secret=s1,backing.encrypt.key-secret=s0", base_opts.replace(&b, &m))
        .replace(",encrypt.key-secret=s0,", ",");
    let top_opts = format!(
        "driver=qcow2,file.filename={tp},encrypt.key-secret=s2,backing.encrypt.key-secret=s1,\
         backing.backing.encrypt.key-secret=s0"
    );
    qemu_io(&objs, &base_opts, &["write -P 0xb0 0 256k", "write -P 0xb1 512k 100k"]);
    qemu_io(&objs, &mid_opts, &["write -P 0x41 64k 8k", "write -P 0x42 600k 10000"]);
    qemu_io(&objs, &top_opts, &["write -P 0x70 96k 64k", "write -P 0x71 700k 512"]);
    let want = qemu_raw(&dir, &objs, &top_opts);
    let mut r = Files::new(dir.path(), &["base.qcow2", "mid.qcow2"], &["top-pw", "mid-pw", "base-pw"]);
    let mut chain: Box<Chain<File, 4, 3>> = Box::default();
    let top = File::open(&tp).unwrap();
    let got = on_small_stack(CHAIN, move || {
        chain.open_in(top, &mut r).unwrap();
        assert_eq!(chain.layers().count(), 3);
        let mut buf = vec![0u8; chain.size() as usize];
        chain.read_at(0, &mut buf).unwrap();
        let mut odd = vec![0u8; 70_001];
        chain.read_at(64 * 1024 - 3, &mut odd).unwrap();
        assert_eq!(odd[..], buf[64 * 1024 - 3..64 * 1024 - 3 + 70_001]);
        buf
    });
    assert_eq!(got, want);
}

/// Opens `img` for writing in caller-owned memory and, on the small stack, writes into
/// clusters shared with an internal snapshot (copy on write), into new clusters and L2 tables,
/// unaligned bytes, write-zeroes, discard and flush; returns the guest read back. `want` gets
/// the same changes.
fn qcow2_write_on_small_stack(img: PathBuf, passphrase: &'static [u8], budget: Budget, want: &mut [u8]) -> Vec<u8> {
    let mut q: Box<Qcow2Image<File>> = Box::default();
    let data = common::pattern(11, 300_000);
    let mut scratch = vec![0u8; 4 << 20];
    for (off, len) in [(1000, 5000), (200_000, 300_000), (70_001, 3)] {
        want[off..off + len].copy_from_slice(&data[..len]);
    }
    want[16_384..24_576].fill(0);
    want[(600 << 10)..(700 << 10)].fill(0);
    on_small_stack(budget, move || {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(img).unwrap();
        q.open_in(file, Some(passphrase)).unwrap();
        let scratch = &mut scratch[..q.write_scratch_len()];
        q.write_at(1000, &data[..5000], scratch).unwrap();
        q.write_at(200_000, &data, scratch).unwrap();
        q.write_at(70_001, &data[..3], scratch).unwrap();
        q.write_zeroes(16_384, 8192, false, scratch).unwrap();
        q.discard(600 << 10, 100 << 10).unwrap();
        q.flush().unwrap();
        let mut buf = vec![0u8; q.size() as usize];
        q.read_at(0, &mut buf).unwrap();
        buf
    })
}

fn write_case(t: &str, luks: bool, budget: Budget) {
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("w.qcow2");
    let sec = "secret,id=s0,data=pw";
    let o = if luks { luks_opts("s0") } else { "cluster_size=65536".to_string() };
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", sec, "-o", &o, img.to_str().unwrap(), "1M"]);
    let enc = if luks { ",encrypt.key-secret=s0" } else { "" };
    let opts = format!("driver=qcow2,file.filename={}{enc}", img.display());
    qemu_io(&[sec], &opts, &["write -P 0x5a 0 64k", "write -P 0x21 70000 5000"]);
    qemu_img(&["snapshot", "-c", "s", "--object", sec, "--image-opts", &opts]);
    let mut want = qemu_raw(&dir, &[sec], &opts);
    let got = qcow2_write_on_small_stack(img, b"pw", budget, &mut want);
    assert!(got == want, "qluks reads back what it wrote");
    assert!(qemu_raw(&dir, &[sec], &opts) == want, "qemu reads what qluks wrote");
    common::run(std::process::Command::new("qemu-img").args(["check", "--object", sec, "--image-opts", &opts]));
}

#[test]
fn qcow2_plain_write_with_cow_fits_in_64_kib() {
    write_case("qcow2_plain_write_with_cow_fits_in_64_kib", false, WRITE_PLAIN);
}

#[test]
fn qcow2_luks_write_with_cow_fits_in_64_kib() {
    write_case("qcow2_luks_write_with_cow_fits_in_64_kib", true, WRITE_LUKS);
}

/// Opens `img` through `Image` on the small stack (format detected) and reads it all.
fn image_on_small_stack(img: PathBuf, passphrase: &'static str, budget: Budget) -> Vec<u8> {
    let mut chain: Box<Chain<File>> = Box::default();
    let mut scratch = vec![0u8; 3 << 16];
    let mut r = Files::new(Path::new("/"), &[], &[passphrase]);
    on_small_stack(budget, move || {
        let mut image: Image<'_, File> =
            Image::open(File::open(img).unwrap(), &mut r, &mut chain, &mut scratch).unwrap();
        let mut buf = vec![0u8; image.size() as usize];
        image.read_at(0, &mut buf).unwrap();
        buf
    })
}

/// `Image` on one format: `name` is the file name (and the qemu driver).
fn image_case(t: &str, name: &str, budget: Budget) {
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let sec = "secret,id=s0,data=pw";
    let luks_qcow2 = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10";
    let create = match name {
        "raw" => vec!["-f", "raw"],
        "qcow" => vec!["-f", "qcow"],
        "qcow2" => vec!["-f", "qcow2"],
        "luks" => vec!["-f", "luks", "--object", sec, "-o", "key-secret=s0,iter-time=10"],
        _ => vec!["-f", "qcow2", "--object", sec, "-o", luks_qcow2],
    };
    let img = dir.join(name);
    let mut args = vec!["create", "-q"];
    args.extend(create);
    args.extend([img.to_str().unwrap(), "1M"]);
    qemu_img(&args);
    let opts = match name {
        "luks" => format!("driver=luks,file.filename={},key-secret=s0", img.display()),
        "luks.qcow2" => format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", img.display()),
        _ => format!("driver={name},file.filename={}", img.display()),
    };
    qemu_io(&[sec], &opts, &["write -P 0x5a 0 64k", "write -P 0x21 70000 5000"]);
    let want = qemu_raw(&dir, &[sec], &opts);
    assert_eq!(image_on_small_stack(img, "pw", budget), want, "{name}");
}

#[test]
fn image_raw_fits_in_64_kib() {
    image_case("image_raw_fits_in_64_kib", "raw", IMAGE_RAW);
}

#[test]
fn image_qcow_fits_in_64_kib() {
    image_case("image_qcow_fits_in_64_kib", "qcow", IMAGE_QCOW);
}

#[test]
fn image_qcow2_fits_in_64_kib() {
    image_case("image_qcow2_fits_in_64_kib", "qcow2", IMAGE_QCOW2);
}

#[test]
fn image_luks_fits_in_64_kib() {
    image_case("image_luks_fits_in_64_kib", "luks", IMAGE_LUKS);
}

#[test]
fn image_luks_qcow2_fits_in_64_kib() {
    image_case("image_luks_qcow2_fits_in_64_kib", "luks.qcow2", IMAGE_LUKS_QCOW2);
}

/// The sizes the module docs' memory table reports (printed with `--nocapture`); a layer
/// costs its cache plus under 5 KiB (the names it keeps, the header, the cipher).
#[test]
fn struct_sizes_stay_within_the_documented_table() {
    use qluks::image::Image;
    use qluks::qcow2::backing::Layer;
    use qluks::qcow2::extension::Extensions;
    use qluks::qcow2::Qcow2;
    use std::mem::size_of;
    let rows = [
        ("Extensions", size_of::<Extensions>()),
        ("Qcow2<File> (N = 4)", size_of::<Qcow2Image<File>>()),
        ("Qcow2<File, File, 1>", size_of::<Qcow2<File, File, 1>>()),
        ("Qcow2<File, File, 16>", size_of::<Qcow2<File, File, 16>>()),
        ("Layer<File> (N = 4)", size_of::<Layer<File>>()),
        ("Chain<File, 4, 2>", size_of::<Chain<File, 4, 2>>()),
        ("Chain<File> (4, 4)", size_of::<Chain<File>>()),
        ("Chain<File, 8, 16>", size_of::<Chain<File, 8, 16>>()),
        ("Image<File>", size_of::<Image<'_, File>>()),
    ];
    for (name, size) in rows {
        println!("{name:24} {size:>8}");
    }
    assert!(size_of::<Extensions>() < 3584, "was 4.8 KiB with inline 1 KiB names and 32 feature entries");
    let cache = |n: usize| n * (4096 + 32);
    assert!(size_of::<Qcow2Image<File>>() < cache(4) + 5120);
    assert!(size_of::<Chain<File, 8, 16>>() < 16 * (cache(8) + 5120));
    assert!(size_of::<Image<'_, File>>() < 4096, "the chain is the caller's, not inline");
}
