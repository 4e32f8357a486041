#![no_main]
use qluks::qcow2::{Extensions, Header};

// The pure parsers of cluster 0: header, then the extensions behind it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::parse(data) {
        let _ = Extensions::parse(&header, &data[..data.len().min(header.cluster_size() as usize)]);
    }
});
