#![no_main]
use qluks::io::MemIo;
use qluks::qcow::Qcow1;

// Open any bytes as a qcow v1 image (AES with a fixed password when the header asks for it)
// and read its first MiB in odd-sized pieces, listing extents on the way.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut image = data.to_vec();
    let aes = data.get(36..40) == Some(&[0, 0, 0, 1]);
    let mut scratch = vec![0u8; Qcow1::<MemIo>::MAX_SCRATCH_LEN];
    let Ok(mut q) = Qcow1::open(MemIo::new(&mut image), &mut scratch, aes.then_some(&b"pw"[..])) else { return };
    let mut buf = vec![0u8; 70_000];
    let mut off = 0;
    while off < q.size().min(1 << 20) {
        let len = (q.size() - off).min(buf.len() as u64) as usize;
        let _ = q.extent_at(off);
        if q.read_at(off, &mut buf[..len]).is_err() {
            break;
        }
        off += len as u64;
    }
});
