#![no_main]
use qluks::io::MemIo;
use qluks::qcow2::backing::{Chain, NoBacking};

// The allocation map (`qluks map`) of any bytes opened as a qcow2 image without backing files
// (LUKS skipped: PBKDF2 with image-chosen iterations), its first 10000 extents.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.get(32..36) == Some(&[0, 0, 0, 2]) {
        return;
    }
    let mut image = data.to_vec();
    let Ok(mut chain) = Chain::<MemIo, 2, 1>::open(MemIo::new(&mut image), &mut NoBacking) else { return };
    for extent in chain.extents(0).take(10_000) {
        if extent.is_err() {
            break;
        }
    }
});
