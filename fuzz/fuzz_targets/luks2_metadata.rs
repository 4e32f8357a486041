#![no_main]
use qluks::luks::luks2::Metadata;

// Any bytes as the JSON text of a 16 KiB LUKS2 header.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Metadata::parse(data, 0x4000);
});
