//! qcow2 reads against qemu-img: images made at test time, every cluster kind, compared byte
//! for byte with `qemu-img convert -O raw`.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use qluks::qcow2::{Error, Qcow2};

fn qemu_img(args: &[&str]) -> String {
    common::run(Command::new("qemu-img").args(args))
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.arg("-f").arg("qcow2");
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(img);
    common::run(&mut c);
}

fn qemu_raw(dir: &common::TempDir, img: &Path) -> Vec<u8> {
    let out = dir.join("qemu.raw");
    qemu_img(&["convert", "-O", "raw", img.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

fn read_all(q: &mut Qcow2<File>) -> Vec<u8> {
    let mut buf = vec![0u8; q.size() as usize];
    let mut scratch = vec![0u8; q.compressed_scratch_len()];
    q.read_at_with_scratch(0, &mut buf, &mut scratch).unwrap();
    buf
}

/// Reads at awkward offsets and lengths and compares with `want`.
fn check_unaligned_reads(q: &mut Qcow2<File>, want: &[u8]) {
    let mut scratch = vec![0u8; q.compressed_scratch_len()];
    let size = want.len() as u64;
    for (off, len) in [(1u64, 1usize), (511, 2), (4095, 8193), (65535, 65538), (size - 3, 3), (100_000, 300_001)] {
        if off + len as u64 > size {
            continue;
        }
        let mut buf = vec![0u8; len];
        q.read_at_with_scratch(off, &mut buf, &mut scratch).unwrap();
        assert_eq!(buf, want[off as usize..off as usize + len], "read of {len} at {off}");
    }
}

fn open(img: &Path) -> Qcow2<File> {
    Qcow2::open(File::open(img).unwrap(), None).unwrap()
}

/// Writes data, zero clusters and discards into a fresh image.
fn populate(img: &Path) {
    qemu_io(
        img,
        &[
            "write -P 0x11 0 64k",
            "write -P 0x22 100k 3k",
            "write -P 0x33 1M 1M",
            "write -z 1536k 64k",
            "discard 1600k 64k",
            "write -P 0x44 3M 1536",
            "write -z -u 3200k 128k",
        ],
    );
}

#[test]
fn every_standard_cluster_kind_reads_like_qemu() {
    let t = "every_standard_cluster_kind_reads_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    for (cs, compat) in [("512", "1.1"), ("4096", "1.1"), ("65536", "1.1"), ("65536", "0.10"), ("2M", "1.1")] {
        let img = dir.join(&format!("std-{cs}-{compat}.qcow2"));
        let opts = format!("cluster_size={cs},compat={compat}");
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opts, img.to_str().unwrap(), "4M"]);
        populate(&img);
        let want = qemu_raw(&dir, &img);
        let mut q = open(&img);
        assert_eq!(read_all(&mut q), want, "cluster_size {cs} compat {compat}");
        check_unaligned_reads(&mut q, &want);
    }
}

#[test]
fn extended_l2_subclusters_read_like_qemu() {
    let t = "extended_l2_subclusters_read_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("ext.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", img.to_str().unwrap(), "4M"]);
    // 2 KiB subclusters: allocate some, zero some, leave others unallocated in the same cluster.
    qemu_io(&img, &["write -P 0x55 0 2k", "write -P 0x66 6k 4k", "write -z 20k 2k", "write -P 0x77 1M 70k"]);
    populate(&img);
    let want = qemu_raw(&dir, &img);
    let mut q = open(&img);
    assert!(q.header().extended_l2());
    assert_eq!(read_all(&mut q), want);
    check_unaligned_reads(&mut q, &want);
}

#[test]
fn compressed_clusters_read_like_qemu() {
    let t = "compressed_clusters_read_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let src = dir.join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", src.to_str().unwrap(), "4M"]);
    populate(&src);
    // Compressible but not trivial data in one cluster.
    qemu_io(&src, &["write -P 0x99 2M 10k"]);
    for ctype in ["zlib", "zstd"] {
        for cs in ["4k", "64k"] {
            let img = dir.join(&format!("c-{ctype}-{cs}.qcow2"));
            let o = format!("compression_type={ctype},cluster_size={cs}");
            qemu_img(&["convert", "-c", "-O", "qcow2", "-o", &o, src.to_str().unwrap(), img.to_str().unwrap()]);
            let want = qemu_raw(&dir, &img);
            let mut q = open(&img);
            assert_eq!(read_all(&mut q), want, "{ctype} {cs}");
            check_unaligned_reads(&mut q, &want);
        }
    }
}

#[test]
fn compressed_cluster_without_scratch_is_a_typed_error() {
    let t = "compressed_cluster_without_scratch_is_a_typed_error";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let src = dir.join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", src.to_str().unwrap(), "1M"]);
    qemu_io(&src, &["write -P 0x12 0 64k"]);
    let img = dir.join("c.qcow2");
    qemu_img(&["convert", "-c", "-O", "qcow2", src.to_str().unwrap(), img.to_str().unwrap()]);
    let mut q = open(&img);
    let mut buf = [0u8; 512];
    let needed = q.compressed_scratch_len();
    let r = q.read_at(0, &mut buf);
    assert!(matches!(r, Err(Error::ScratchTooSmall { needed: n, got: 0 }) if n == needed), "{r:?}");
}

#[test]
fn preallocated_images_read_like_qemu() {
    let t = "preallocated_images_read_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    for prealloc in ["metadata", "falloc", "full"] {
        let img = dir.join(&format!("p-{prealloc}.qcow2"));
        let o = format!("preallocation={prealloc}");
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &o, img.to_str().unwrap(), "2M"]);
        qemu_io(&img, &["write -P 0x21 64k 8k", "write -z 1M 64k"]);
        let want = qemu_raw(&dir, &img);
        assert_eq!(read_all(&mut open(&img)), want, "{prealloc}");
    }
}

#[test]
fn external_data_file_reads_like_qemu() {
    let t = "external_data_file_reads_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    for raw in ["off", "on"] {
        let img = dir.join(&format!("d-{raw}.qcow2"));
        let data = dir.join(&format!("d-{raw}.data"));
        let o = format!("data_file={},data_file_raw={raw}", data.to_str().unwrap());
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", &o, img.to_str().unwrap(), "4M"]);
        qemu_io(&img, &["write -P 0x31 0 64k", "write -P 0x32 1M 3k", "write -z 2M 64k"]);
        let want = qemu_raw(&dir, &img);
        assert!(matches!(Qcow2::<File>::open(File::open(&img).unwrap(), None), Err(Error::DataFileRequired)));
        let mut q: Qcow2<File> =
            Qcow2::open_with_data_file(File::open(&img).unwrap(), Some(File::open(&data).unwrap()), None).unwrap();
        assert_eq!(q.extensions().data_file.as_ref().unwrap().as_bytes(), data.to_str().unwrap().as_bytes());
        assert_eq!(read_all(&mut q), want, "data_file_raw={raw}");
    }
}

#[test]
fn data_beyond_sector_2_pow_32_reads_back() {
    let t = "data_beyond_sector_2_pow_32_reads_back";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("big.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", img.to_str().unwrap(), "5T"]);
    let far = (1u64 << 32) * 512 + 4096; // past sector 2^32
    qemu_io(&img, &[&format!("write -P 0x7e {far} 4k"), "write -P 0x7f 0 4k"]);
    let mut q = open(&img);
    assert_eq!(q.size(), 5 << 40);
    let mut buf = vec![0u8; 8192];
    q.read_at(far - 4096, &mut buf).unwrap();
    assert!(buf[..4096].iter().all(|&b| b == 0));
    assert!(buf[4096..].iter().all(|&b| b == 0x7e));
    q.read_at(0, &mut buf).unwrap();
    assert!(buf[..4096].iter().all(|&b| b == 0x7f));
}

#[test]
fn reads_past_the_virtual_size_are_refused() {
    let t = "reads_past_the_virtual_size_are_refused";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("s.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    let mut q = open(&img);
    let mut buf = [0u8; 2];
    for offset in [(1 << 20) - 1, u64::MAX] {
        let r = q.read_at(offset, &mut buf);
        assert!(
            matches!(r, Err(Error::OutOfRange { offset: o, len: 2, size }) if (o, size) == (offset, 1 << 20)),
            "{offset:#x}: {r:?}"
        );
    }
}

#[test]
fn an_image_not_yet_opened_is_empty() {
    // `new_empty` (the in-place slot before `open_in`) is a disk of size 0: reads are out of
    // range, never a panic or a read of a missing device.
    let mut q: qluks::qcow2::Qcow2Image<qluks::io::MemIo<'static>> = Qcow2::new_empty();
    assert_eq!(q.size(), 0);
    let mut buf = [0u8; 512];
    let e = q.read_at(0, &mut buf).unwrap_err();
    assert!(matches!(e, Error::OutOfRange { offset: 0, len: 512, size: 0 }), "{e:?}");
}
