#![no_main]
use qluks::io::MemIo;
use qluks::qcow2::Qcow2;

// Open any bytes as a qcow2 image over an in-memory device (legacy AES with a fixed key when
// asked; LUKS unlock is too slow to fuzz usefully) and read its first MiB in odd pieces and
// its last sectors.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.get(32..36) == Some(&[0, 0, 0, 2]) {
        return; // LUKS: PBKDF2 with image-chosen iterations
    }
    let mut image = data.to_vec();
    let Ok(mut q) = Qcow2::<MemIo>::open(MemIo::new(&mut image), Some(b"pw")) else { return };
    let mut scratch = vec![0u8; q.compressed_scratch_len()];
    let mut buf = vec![0u8; 70_000];
    let mut off = 0;
    while off < q.size().min(1 << 20) {
        let len = (q.size() - off).min(buf.len() as u64) as usize;
        if q.read_at_with_scratch(off, &mut buf[..len], &mut scratch).is_err() {
            break;
        }
        off += len as u64;
    }
    // And the last sectors, where offsets are largest.
    let tail = q.size().min(4096);
    let _ = q.read_at_with_scratch(q.size() - tail, &mut buf[..tail as usize], &mut scratch);
});
