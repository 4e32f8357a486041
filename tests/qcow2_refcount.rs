//! The metadata layer of the qcow2 write engine against qemu-img: images made by qemu-img at
//! every refcount width take new clusters, L2 tables, refcount blocks and a relocated refcount
//! table, and `qemu-img check` finds them clean; shared L2 tables of an internal snapshot are
//! copied, leaving the snapshot as it was; a read-only device is refused with a typed error.
//!
//! Data is written through a second handle onto the file (the data layer's job), the mapping
//! through the metadata layer's test hooks.

mod common;

use qluks::qcow2::{Error, Qcow2};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

const TEST: &str = "qcow2_refcount";

fn rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// `qemu-img check` output; panics unless the image is clean (exit 0).
fn check_clean(img: &Path) {
    let out = common::output(Command::new("qemu-img").args(["check", "--output=json"]).arg(img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qemu-img check {}: {}\n{}",
        img.display(),
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("\"leaks\"") && !text.contains("\"corruptions\""), "{text}");
}

/// Maps guest clusters `clusters` to new clusters filled with `fill(guest cluster)`.
fn map(img: &Path, clusters: impl Iterator<Item = u64>, fill: impl Fn(u64) -> u8) {
    let data = rw(img);
    let mut q: Qcow2<File> = Qcow2::open(rw(img), None).unwrap();
    let cs = q.cluster_size();
    for g in clusters {
        let host = q.debug_map_new_cluster(g * cs).unwrap();
        data.write_all_at(&vec![fill(g); cs as usize], host).unwrap();
    }
    q.flush().unwrap();
}

fn read_guest(img: &Path, dir: &common::TempDir) -> Vec<u8> {
    common::qemu_raw(dir, &[], &format!("driver=qcow2,file.filename={}", img.display()))
}

#[test]
fn every_refcount_width_writes_clean_images() {
    if !common::tool(TEST, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(TEST);
    for bits in [1, 2, 4, 8, 16, 32, 64] {
        let img = dir.join(&format!("w{bits}.qcow2"));
        let opts = format!("cluster_size=512,refcount_bits={bits}");
        common::qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opts, img.to_str().unwrap(), "1M"]);
        let fill = |g: u64| (g % 251) as u8 + 1;
        // Sparse clusters in several L2 tables, then overwrite some (release + reuse).
        map(&img, (0..2048).step_by(37), fill);
        map(&img, (0..2048).step_by(74), |g| fill(g) ^ 0xff);
        check_clean(&img);
        let raw = read_guest(&img, &dir);
        for g in 0..2048u64 {
            let want = match g {
                g if g % 74 == 0 => fill(g) ^ 0xff,
                g if g % 37 == 0 => fill(g),
                _ => 0,
            };
            let c = &raw[g as usize * 512..(g as usize + 1) * 512];
            assert!(c.iter().all(|&b| b == want), "refcount_bits {bits}: guest cluster {g}");
        }
    }
}

#[test]
fn a_full_refcount_table_is_relocated_and_qemu_img_check_is_clean() {
    if !common::tool(TEST, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let img = dir.join("grow.qcow2");
    // 512-byte clusters, 64-bit refcounts: the one-cluster refcount table covers 2 MiB.
    common::qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512,refcount_bits=64",
        img.to_str().unwrap(),
        "4M",
    ]);
    let table = |img: &Path| {
        let mut h = [0u8; 12];
        File::open(img).unwrap().read_exact_at(&mut h, 48).unwrap();
        (u64::from_be_bytes(h[..8].try_into().unwrap()), u32::from_be_bytes(h[8..].try_into().unwrap()))
    };
    let before = table(&img);
    assert_eq!(before.1, 1);
    map(&img, 0..4600, |g| (g % 253) as u8 + 1);
    let after = table(&img);
    assert_ne!(after.0, before.0, "the refcount table moved");
    assert!(after.1 > 1);
    check_clean(&img);
    let raw = read_guest(&img, &dir);
    for g in 0..8192usize {
        let want = if g < 4600 { (g % 253) as u8 + 1 } else { 0 };
        assert!(raw[g * 512..(g + 1) * 512].iter().all(|&b| b == want), "guest cluster {g}");
    }
}

#[test]
fn shared_l2_tables_of_a_snapshot_are_copied_and_the_snapshot_kept() {
    if !common::tool(TEST, "qemu-img") || !common::tool(TEST, "qemu-io") {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let img = dir.join("snap.qcow2");
    let name = img.to_str().unwrap();
    common::qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", name, "8M"]);
    let opts = format!("driver=qcow2,file.filename={name}");
    common::qemu_io(&[], &opts, &["write -P 0x11 0 64k", "write -P 0x22 4M 8k"]);
    common::qemu_img(&["snapshot", "-c", "before", name]);
    let snap_before = {
        let out = dir.join("snap.raw");
        common::qemu_img(&["convert", "-l", "before", "-O", "raw", name, out.to_str().unwrap()]);
        std::fs::read(out).unwrap()
    };
    {
        let mut q: Qcow2<File> = Qcow2::open(rw(&img), None).unwrap();
        // The data clusters are shared with the snapshot (refcount 2).
        let host = q.mapping(0, 4096).unwrap().0;
        let qluks::qcow2::Mapping::Data { host_offset } = host else { panic!("{host:?}") };
        assert_eq!(q.debug_refcount_of(host_offset).unwrap(), 2);
    }
    // Copy on write of guest clusters 1 and 1025 (both L2 tables shared), new data 0x33.
    map(&img, [1u64, 1025].into_iter(), |_| 0x33);
    check_clean(&img);
    let raw = read_guest(&img, &dir);
    let at = |g: usize| &raw[g * 4096..(g + 1) * 4096];
    assert!(at(0).iter().all(|&b| b == 0x11) && at(2).iter().all(|&b| b == 0x11));
    assert!(at(1).iter().all(|&b| b == 0x33) && at(1025).iter().all(|&b| b == 0x33));
    assert!(at(1024).iter().all(|&b| b == 0x22));
    let out = dir.join("snap2.raw");
    common::qemu_img(&["convert", "-l", "before", "-O", "raw", name, out.to_str().unwrap()]);
    assert!(std::fs::read(out).unwrap() == snap_before, "the snapshot is unchanged");
}

#[test]
fn a_read_only_device_is_a_typed_io_error_and_the_file_is_unchanged() {
    if !common::tool(TEST, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let img = dir.join("ro.qcow2");
    common::qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    let before = std::fs::read(&img).unwrap();
    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), None).unwrap();
    assert!(matches!(q.debug_map_new_cluster(0), Err(Error::Io(_))));
    drop(q);
    assert_eq!(std::fs::read(&img).unwrap(), before);
}
