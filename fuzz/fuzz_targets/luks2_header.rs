#![no_main]
use qluks::io::MemIo;
use qluks::luks::luks2::{Luks2Header, DEFAULT_JSON_BUFFER};

// Any bytes as a device holding LUKS2 metadata: both copies, checksums, JSON.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut device = data.to_vec();
    let _ = Luks2Header::read(&mut MemIo::new(&mut device), &mut [0u8; DEFAULT_JSON_BUFFER]);
});
