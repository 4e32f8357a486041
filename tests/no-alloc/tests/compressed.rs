//! qcow2 compressed clusters in a qluks built without `alloc` (what firmware uses): a zstd
//! cluster is refused by name, and deflate decompresses with no heap allocation at all.
//! (Moved here from src/qcow2/compressed.rs, where the `std` self dev-dependency kept the
//! no-alloc test from ever being compiled.)

#[path = "../../common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{assert_counter_sees_allocations, count_allocations, Counting};
use qluks::qcow2::compressed::{
    decompress_cluster, decompress_cluster_with, CompressedError, Compression, InflateScratch,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A zstd frame with one raw block (single segment, one-byte content size).
fn zstd_raw_frame(data: &[u8]) -> Vec<u8> {
    let mut s = 0xFD2F_B528u32.to_le_bytes().to_vec();
    s.push(0x20); // single segment, 1-byte frame content size, no checksum, no dictionary
    s.push(data.len() as u8);
    let header = ((data.len() as u32) << 3) | 1; // last block, raw
    s.extend_from_slice(&header.to_le_bytes()[..3]);
    s.extend_from_slice(data);
    s
}

/// A raw deflate stream of one final stored block.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let len = data.len() as u16;
    let mut s = vec![1]; // BFINAL, BTYPE 00 (stored)
    s.extend_from_slice(&len.to_le_bytes());
    s.extend_from_slice(&(!len).to_le_bytes());
    s.extend_from_slice(data);
    s
}

#[test]
fn zstd_without_alloc_is_refused_by_name() {
    let frame = zstd_raw_frame(b"abcdefgh");
    let mut out = [0u8; 8];
    // With `alloc` (feature with-alloc) this decodes "abcdefgh" and the test fails.
    assert_eq!(decompress_cluster(Compression::Zstd, &frame, &mut out), Err(CompressedError::ZstdNeedsAlloc));
    let mut scratch = InflateScratch::new();
    assert_eq!(
        decompress_cluster_with(&mut scratch, Compression::Zstd, &frame, &mut out),
        Err(CompressedError::ZstdNeedsAlloc)
    );
    assert_eq!(out, [0u8; 8], "nothing written");
}

#[test]
fn deflate_without_alloc_allocates_nothing() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let stream = deflate_stored(&data);
    let mut out = vec![0u8; data.len()];
    let mut scratch = Box::new(InflateScratch::new());
    let (r, allocations) = count_allocations(|| {
        decompress_cluster(Compression::Deflate, &stream, &mut out)?;
        decompress_cluster_with(&mut scratch, Compression::Deflate, &stream, &mut out)
    });
    r.unwrap();
    assert_eq!(allocations, 0, "deflate allocated");
    assert_counter_sees_allocations();
    assert!(out == data);
}
