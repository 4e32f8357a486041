#![no_main]
use qluks::qcow2::compressed::{decompress_cluster, Compression};

// First byte: method (bit 0) and cluster size 512 << (bits 1..=3 % 6, up to 16 KiB here).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else { return };
    let method = if sel & 1 == 0 { Compression::Deflate } else { Compression::Zstd };
    let mut out = vec![0u8; 512 << ((sel >> 1) % 6)];
    let _ = decompress_cluster(method, input, &mut out);
});
