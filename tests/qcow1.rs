//! qcow v1 images made by qemu-img / qemu-io read byte for byte like `qemu-img convert -O raw`.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use qluks::io::MemIo;
use qluks::qcow::{Error, ExtentKind, HeaderError, Qcow1};
use qluks::qcow2::compressed::{CompressedError, Compression};

const SECRET: &str = "qcow1-secret-password-longer-than-16";

fn qemu_img(args: &[&str]) -> String {
    common::run(Command::new("qemu-img").args(args))
}

fn qemu_io(image_opts: &str, secret: Option<&str>, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    if let Some(s) = secret {
        c.args(["--object", &format!("secret,id=sec0,data={s}")]);
    }
    c.args(["--image-opts", image_opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    common::run(&mut c);
}

/// `qemu-img convert -O raw` of a qcow image (with the AES secret when given).
fn qemu_raw(dir: &common::TempDir, image: &Path, secret: Option<&str>) -> Vec<u8> {
    let out = dir.join("expected.raw");
    let mut c = Command::new("qemu-img");
    c.arg("convert");
    match secret {
        Some(s) => {
            c.args(["--object", &format!("secret,id=sec0,data={s}"), "--image-opts"]);
            c.arg(format!("driver=qcow,file.filename={},encrypt.key-secret=sec0", image.display()));
        }
        None => {
            c.args(["-f", "qcow"]).arg(image);
        }
    }
    c.args(["-O", "raw"]).arg(&out);
    common::run(&mut c);
    std::fs::read(out).unwrap()
}

fn read_all(image: &Path, password: Option<&[u8]>) -> Vec<u8> {
    let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
    let mut q = Qcow1::open(File::open(image).unwrap(), &mut scratch, password).unwrap();
    let mut out = vec![0u8; q.size() as usize];
    q.read_at(0, &mut out).unwrap();
    out
}

/// Reads at odd offsets and lengths (inside sectors, across clusters) agree with `expected`.
fn check_unaligned_reads(image: &Path, password: Option<&[u8]>, expected: &[u8]) {
    let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
    let mut q = Qcow1::open(File::open(image).unwrap(), &mut scratch, password).unwrap();
    let size = expected.len() as u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % size;
        let len = ((x >> 32) % 20_000).min(size - off) as usize;
        let mut buf = vec![0u8; len];
        q.read_at(off, &mut buf).unwrap();
        assert_eq!(buf[..], expected[off as usize..off as usize + len], "read of {len} at {off:#x}");
    }
}

fn writes() -> [&'static str; 5] {
    [
        "write -P 0x11 0 4096",
        "write -P 0x22 8192 12288",
        "write -P 0x33 100000 5000",
        "write -P 0x44 1048064 1536",
        "write -P 0x55 3145728 65536",
    ]
}

#[test]
fn plain_qcow_reads_like_qemu_img() {
    if !common::tools("plain_qcow", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("plain_qcow");
    let img = dir.join("a.qcow");
    qemu_img(&["create", "-q", "-f", "qcow", img.to_str().unwrap(), "4M"]);
    qemu_io(&format!("driver=qcow,file.filename={}", img.display()), None, &writes());
    let expected = qemu_raw(&dir, &img, None);
    assert_eq!(read_all(&img, None), expected);
    check_unaligned_reads(&img, None, &expected);
}

#[test]
fn converted_qcow_with_full_data_reads_like_qemu_img() {
    if !common::tool("converted_qcow", "qemu-img") {
        return;
    }
    let dir = common::TempDir::new("converted_qcow");
    let raw = dir.join("src.raw");
    let mut data = common::pattern(7, 3 << 20);
    data[1 << 20..(1 << 20) + 300_000].fill(0);
    std::fs::write(&raw, &data).unwrap();
    let img = dir.join("c.qcow");
    qemu_img(&["convert", "-q", "-f", "raw", "-O", "qcow", raw.to_str().unwrap(), img.to_str().unwrap()]);
    assert_eq!(read_all(&img, None), data);
    assert_eq!(qemu_raw(&dir, &img, None), data);
}

#[test]
fn compressed_qcow_clusters_decompress_like_qemu_img() {
    if !common::tool("compressed_qcow", "qemu-img") {
        return;
    }
    let dir = common::TempDir::new("compressed_qcow");
    let raw = dir.join("src.raw");
    let mut data = Vec::new();
    let mut i = 0u32;
    while data.len() < 2 << 20 {
        data.extend_from_slice(format!("qcow v1 compressed line {i} {}\n", i.wrapping_mul(2654435761)).as_bytes());
        i += 1;
    }
    data.truncate(2 << 20);
    let noise: Vec<u8> = common::pattern(9, 64_000).iter().map(|b| b & 0x0f).collect();
    data[500_000..564_000].copy_from_slice(&noise);
    std::fs::write(&raw, &data).unwrap();
    let img = dir.join("c.qcow");
    // qemu-img 10 writes the compressed qcow image but then exits 1 without a message (at its
    // final step; the data is complete): check the image with qemu-img compare instead.
    let _ = common::output(
        Command::new("qemu-img").args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow"]).arg(&raw).arg(&img),
    );
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "qcow", raw.to_str().unwrap(), img.to_str().unwrap()]);
    assert!(std::fs::metadata(&img).unwrap().len() < (1 << 20), "qemu-img compressed the image");
    assert_eq!(read_all(&img, None), data);
    check_unaligned_reads(&img, None, &data);

    let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
    let mut q = Qcow1::open(File::open(&img).unwrap(), &mut scratch, None).unwrap();
    assert!(matches!(q.extent_at(0).unwrap().kind, ExtentKind::Compressed { .. }));
}

#[test]
fn aes_qcow_decrypts_with_guest_sector_iv() {
    if !common::tools("aes_qcow", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("aes_qcow");
    let img = dir.join("e.qcow");
    common::run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow",
        "--object",
        &format!("secret,id=sec0,data={SECRET}"),
        "-o",
        "encrypt.format=aes,encrypt.key-secret=sec0",
        img.to_str().unwrap(),
        "4M",
    ]));
    let opts = format!("driver=qcow,file.filename={},encrypt.key-secret=sec0", img.display());
    qemu_io(&opts, Some(SECRET), &writes());
    let expected = qemu_raw(&dir, &img, Some(SECRET));
    assert_eq!(expected[8192], 0x22);
    assert_eq!(read_all(&img, Some(SECRET.as_bytes())), expected);
    check_unaligned_reads(&img, Some(SECRET.as_bytes()), &expected);

    // Only the first 16 bytes of the password are the key.
    assert_eq!(read_all(&img, Some(&SECRET.as_bytes()[..16])), expected);
    // Legacy AES has no key check: a wrong password reads garbage, not the data.
    assert_ne!(read_all(&img, Some(b"wrong")), expected);

    let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
    assert!(matches!(Qcow1::open(File::open(&img).unwrap(), &mut scratch, None), Err(Error::PasswordRequired)));
}

#[test]
fn password_for_unencrypted_qcow_is_refused() {
    if !common::tool("qcow_not_encrypted", "qemu-img") {
        return;
    }
    let dir = common::TempDir::new("qcow_not_encrypted");
    let img = dir.join("a.qcow");
    qemu_img(&["create", "-q", "-f", "qcow", img.to_str().unwrap(), "1M"]);
    let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
    assert!(matches!(Qcow1::open(File::open(&img).unwrap(), &mut scratch, Some(b"pw")), Err(Error::NotEncrypted)));
}

#[test]
fn backing_file_name_is_exposed_and_unallocated_ranges_read_from_backing() {
    if !common::tools("qcow_backing", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("qcow_backing");
    let base = dir.join("base.raw");
    // The backing is shorter than the overlay: the rest reads as zeros.
    std::fs::write(&base, common::pattern(5, 3 << 20)).unwrap();
    let img = dir.join("o.qcow");
    qemu_img(&["create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", img.to_str().unwrap(), "4M"]);
    qemu_io(&format!("driver=qcow,file.filename={}", img.display()), None, &writes());
    let expected = qemu_raw(&dir, &img, None);

    let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
    let mut q = Qcow1::open(File::open(&img).unwrap(), &mut scratch, None).unwrap();
    assert_eq!(q.backing_file(), Some(&b"base.raw"[..]));
    let mut backing = File::open(&base).unwrap();
    let mut out = vec![0u8; q.size() as usize];
    q.read_at_backed(0, &mut out, &mut backing).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn extents_agree_with_qemu_img_map() {
    if !common::tools("qcow_map", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("qcow_map");
    let img = dir.join("a.qcow");
    qemu_img(&["create", "-q", "-f", "qcow", img.to_str().unwrap(), "4M"]);
    qemu_io(&format!("driver=qcow,file.filename={}", img.display()), None, &writes());
    let map = qemu_img(&["map", "--output", "json", "-f", "qcow", img.to_str().unwrap()]);

    let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
    let mut q = Qcow1::open(File::open(&img).unwrap(), &mut scratch, None).unwrap();
    // Per 512-byte sector: does it hold data (and where)?
    let sectors = (q.size() / 512) as usize;
    let mut ours = vec![None; sectors];
    let mut off = 0;
    while off < q.size() {
        let e = q.extent_at(off).unwrap();
        for s in 0..e.len / 512 {
            ours[((e.offset / 512) + s) as usize] = match e.kind {
                ExtentKind::Data { host_offset } => Some(host_offset + s * 512),
                ExtentKind::Unallocated => None,
                ExtentKind::Compressed { .. } => panic!("no compressed clusters here"),
            };
        }
        off += e.len;
    }
    let mut theirs = vec![None; sectors];
    for line in map.lines() {
        let field = |name: &str| -> Option<u64> {
            let at = line.find(&format!("\"{name}\": "))? + name.len() + 4;
            line[at..].split([',', '}']).next()?.trim().parse().ok()
        };
        let (start, length) = (field("start").unwrap(), field("length").unwrap());
        let data = line.contains("\"data\": true");
        for s in 0..length / 512 {
            theirs[((start / 512) + s) as usize] = if data { Some(field("offset").unwrap() + s * 512) } else { None };
        }
    }
    assert_eq!(ours, theirs);
}

/// A small valid image in memory, to corrupt.
fn small_image(dir: &common::TempDir) -> Vec<u8> {
    let img = dir.join("s.qcow");
    qemu_img(&["create", "-q", "-f", "qcow", img.to_str().unwrap(), "1M"]);
    qemu_io(&format!("driver=qcow,file.filename={}", img.display()), None, &["write -P 0x66 0 8192"]);
    std::fs::read(img).unwrap()
}

fn open_mem(image: &mut [u8]) -> Result<(), Error<qluks::io::MemIoError>> {
    let mut scratch = vec![0u8; Qcow1::<MemIo>::MAX_SCRATCH_LEN];
    let mut q = Qcow1::open(MemIo::new(image), &mut scratch, None)?;
    let mut buf = vec![0u8; q.size() as usize];
    q.read_at(0, &mut buf)
}

fn l1_entry0(image: &[u8]) -> u64 {
    let l1 = u64::from_be_bytes(image[40..48].try_into().unwrap()) as usize;
    u64::from_be_bytes(image[l1..l1 + 8].try_into().unwrap())
}

#[test]
fn corrupt_tables_give_typed_errors() {
    if !common::tools("qcow_corrupt", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("qcow_corrupt");
    let good = small_image(&dir);
    let mut img = good.clone();
    open_mem(&mut img).unwrap();

    // Header: cluster_bits out of QEMU's range.
    let mut img = good.clone();
    img[32] = 17;
    assert!(matches!(open_mem(&mut img), Err(Error::Header(HeaderError::ClusterBitsOutOfRange { cluster_bits: 17 }))));

    // L1 table past the end of the file.
    let mut img = good.clone();
    let len = img.len() as u64;
    img[40..48].copy_from_slice(&len.to_be_bytes());
    // One 8-byte L1 entry per cluster_bits + l2_bits of the virtual size.
    let size = u64::from_be_bytes(good[24..32].try_into().unwrap());
    let l1_bytes = 8 * size.div_ceil(1 << (good[32] + good[33]));
    let r = open_mem(&mut img);
    assert!(
        matches!(r, Err(Error::L1TablePastEnd { offset, len: l, file_size }) if (offset, l, file_size) == (len, l1_bytes, len)),
        "{r:?}"
    );

    // L2 table past the end of the file.
    let l1 = u64::from_be_bytes(good[40..48].try_into().unwrap()) as usize;
    let mut img = good.clone();
    img[l1..l1 + 8].copy_from_slice(&(u64::MAX - 8).to_be_bytes());
    let file_size = good.len() as u64;
    let r = open_mem(&mut img);
    assert!(
        matches!(r, Err(Error::L2TablePastEnd { l1_index: 0, offset: o, file_size: f }) if (o, f) == (u64::MAX - 8, file_size)),
        "{r:?}"
    );

    // A data cluster at an unaligned host offset, then one past the end.
    let l2 = l1_entry0(&good) as usize;
    let mut img = good.clone();
    let host = u64::from_be_bytes(img[l2..l2 + 8].try_into().unwrap());
    img[l2..l2 + 8].copy_from_slice(&(host + 1).to_be_bytes());
    let r = open_mem(&mut img);
    assert!(
        matches!(r, Err(Error::ClusterMisaligned { guest_offset: 0, host_offset }) if host_offset == host + 1),
        "{r:?}"
    );
    let mut img = good.clone();
    let past = (img.len() as u64 + 4095) & !4095;
    img[l2..l2 + 8].copy_from_slice(&past.to_be_bytes());
    let r = open_mem(&mut img);
    assert!(
        matches!(r, Err(Error::ClusterPastEnd { guest_offset: 0, host_offset: h, file_size: f }) if (h, f) == (past, file_size)),
        "{r:?}"
    );

    // A compressed cluster whose bytes run past the end, then one that is not deflate.
    let mut img = good.clone();
    let at = img.len() as u64 - 50;
    let entry = (1u64 << 63) | (100u64 << (63 - 12)) | at;
    img[l2..l2 + 8].copy_from_slice(&entry.to_be_bytes());
    let r = open_mem(&mut img);
    assert!(
        matches!(r, Err(Error::CompressedPastEnd { guest_offset: 0, host_offset: h, len: 100, file_size: f }) if (h, f) == (at, file_size)),
        "{r:?}"
    );
    let mut img = good.clone();
    let entry = (1u64 << 63) | (100u64 << (63 - 12)) | host;
    img[l2..l2 + 8].copy_from_slice(&entry.to_be_bytes());
    // 100 bytes of 0x66 data are not a deflate stream.
    let corrupt = CompressedError::Corrupt { compression: Compression::Deflate };
    let r = open_mem(&mut img);
    assert!(matches!(r, Err(Error::Compressed { guest_offset: 0, error }) if error == corrupt), "{r:?}");

    // A file cut inside the header.
    let mut img = good[..40].to_vec();
    assert!(matches!(open_mem(&mut img), Err(Error::Header(HeaderError::TooShort { len: 40 }))));
}
