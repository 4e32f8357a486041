//! Compressed clusters written by `qemu-img convert -c` decompress to exactly the guest data.
//!
//! The test walks the image's L1/L2 tables itself (only as far as needed to find compressed
//! descriptors, formats.md §3) so that it checks `decompress_cluster` alone, independently of the
//! qcow2 engine.

mod common;

use std::process::Command;

use qluks::qcow2::compressed::{decompress_cluster, CompressedError, Compression};

fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}
fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

/// Guest data that compresses well but is not trivial: text-like lines with varying numbers,
/// some pseudo-random (incompressible) clusters and a zero hole.
fn guest_data(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut i = 0u64;
    while data.len() < len {
        data.extend_from_slice(format!("line {i:08} of the qluks compressed-cluster test {}\n", i * 7919).as_bytes());
        i += 1;
    }
    data.truncate(len);
    let noise = common::pattern(3, 64 * 1024);
    data[128 * 1024..192 * 1024].copy_from_slice(&noise);
    data[256 * 1024..320 * 1024].fill(0);
    data
}

/// One compressed cluster found in the image: guest offset, stored bytes (as QEMU reads them).
struct Stored {
    guest_offset: u64,
    bytes: Vec<u8>,
}

fn compressed_clusters(image: &[u8]) -> (u32, Vec<Stored>) {
    let cluster_bits = be32(image, 20);
    let cs = 1u64 << cluster_bits;
    let l1_size = be32(image, 36) as u64;
    let l1_offset = be64(image, 40);
    let l2_entries = cs / 8;
    let x = 62 - (cluster_bits - 8);
    let mut found = Vec::new();
    for l1_index in 0..l1_size {
        let l2_offset = be64(image, (l1_offset + l1_index * 8) as usize) & 0x00ff_ffff_ffff_fe00;
        if l2_offset == 0 {
            continue;
        }
        for l2_index in 0..l2_entries {
            let entry = be64(image, (l2_offset + l2_index * 8) as usize);
            if entry & (1 << 62) == 0 {
                continue;
            }
            let host = entry & ((1u64 << x) - 1);
            let sectors = (entry & ((1u64 << 62) - 1)) >> x;
            let len = (sectors + 1) * 512 - (host & 511);
            let end = ((host + len) as usize).min(image.len());
            found.push(Stored {
                guest_offset: (l1_index * l2_entries + l2_index) * cs,
                bytes: image[host as usize..end].to_vec(),
            });
        }
    }
    (cluster_bits, found)
}

fn check_method(test: &str, compression: Compression, cluster_size: u32) {
    if !common::tool(test, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(test);
    let raw = dir.join("guest.raw");
    let img = dir.join("c.qcow2");
    let data = guest_data(1 << 20);
    std::fs::write(&raw, &data).unwrap();
    common::run(
        Command::new("qemu-img")
            .args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o"])
            .arg(format!("cluster_size={cluster_size},compression_type={}", compression.name()))
            .arg(&raw)
            .arg(&img),
    );
    let image = std::fs::read(&img).unwrap();
    assert_eq!(image[104], compression as u8, "qemu-img wrote the requested compression_type");
    let (cluster_bits, stored) = compressed_clusters(&image);
    assert!(stored.len() >= 4, "qemu-img stored compressed clusters ({} found)", stored.len());
    let cs = 1usize << cluster_bits;
    let mut out = vec![0u8; cs];
    for s in &stored {
        decompress_cluster(compression, &s.bytes, &mut out)
            .unwrap_or_else(|e| panic!("cluster at guest {:#x}: {e}", s.guest_offset));
        let g = s.guest_offset as usize;
        assert_eq!(out[..], data[g..g + cs], "cluster at guest {g:#x}");
    }

    // The same stored bytes, cut or mis-sized, give typed errors.
    let s = &stored[0];
    let mut big = vec![0u8; cs * 2];
    let short = decompress_cluster(compression, &s.bytes, &mut big);
    match compression {
        // The deflate stream ends properly after one cluster.
        Compression::Deflate => {
            assert_eq!(short, Err(CompressedError::TooLittleOutput { compression, produced: cs, expected: cs * 2 }))
        }
        // zstd goes on looking for a next frame: the zero sector padding is none, so the input
        // ends with one cluster of the two produced.
        Compression::Zstd => {
            assert_eq!(short, Err(CompressedError::Truncated { compression, produced: cs, expected: cs * 2 }))
        }
    }
    let mut small = vec![0u8; cs / 2];
    assert_eq!(
        decompress_cluster(compression, &s.bytes, &mut small),
        Err(CompressedError::TooMuchOutput { compression, expected: cs / 2 })
    );
    let used = s.bytes.len().min(64);
    assert!(matches!(
        decompress_cluster(compression, &s.bytes[..used / 2], &mut out),
        Err(CompressedError::Truncated { .. } | CompressedError::Corrupt { .. })
    ));
}

#[test]
fn deflate_clusters_from_qemu_img_decompress_exactly_4k() {
    check_method("deflate_4k", Compression::Deflate, 4096);
}

#[test]
fn deflate_clusters_from_qemu_img_decompress_exactly_64k() {
    check_method("deflate_64k", Compression::Deflate, 65536);
}

#[test]
fn zstd_clusters_from_qemu_img_decompress_exactly_4k() {
    check_method("zstd_4k", Compression::Zstd, 4096);
}

#[test]
fn zstd_clusters_from_qemu_img_decompress_exactly_64k() {
    check_method("zstd_64k", Compression::Zstd, 65536);
}
