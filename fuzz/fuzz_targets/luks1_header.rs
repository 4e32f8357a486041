#![no_main]
use qluks::luks::Luks1Header;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Luks1Header::parse(data);
});
