//! Opening and reading qcow v1 images (legacy AES, compressed) performs no heap allocation:
//! this test binary counts every allocation through its global allocator (its own file, so no
//! other test shares it).

mod common;

use std::process::Command;

use qluks::io::MemIo;
use qluks::qcow::Qcow1;

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

#[test]
fn open_and_read_of_aes_and_compressed_qcow_allocate_nothing() {
    let t = "qcow1_no_heap";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let aes = dir.join("e.qcow");
    common::run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow",
        "--object",
        "secret,id=s0,data=pw",
        "-o",
        "encrypt.format=aes,encrypt.key-secret=s0",
        aes.to_str().unwrap(),
        "1M",
    ]));
    common::run(Command::new("qemu-io").args([
        "--object",
        "secret,id=s0,data=pw",
        "--image-opts",
        &format!("driver=qcow,file.filename={},encrypt.key-secret=s0", aes.display()),
        "-c",
        "write -P 0x5a 4000 70000",
    ]));
    let raw = dir.join("t.raw");
    std::fs::write(&raw, b"no heap here ".repeat(40_000)).unwrap();
    let compressed = dir.join("c.qcow");
    // qemu-img 10 exits 1 after writing a compressed qcow v1 image completely: check with compare.
    let _ = common::output(
        Command::new("qemu-img").args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow"]).arg(&raw).arg(&compressed),
    );
    common::run(Command::new("qemu-img").args(["compare", "-q", "-f", "raw", "-F", "qcow"]).arg(&raw).arg(&compressed));

    let mut aes_guest = vec![0u8; 1 << 20];
    aes_guest[4000..74_000].fill(0x5a);
    let text = std::fs::read(&raw).unwrap();
    for (image, password, guest) in [(aes, Some(&b"pw"[..]), aes_guest), (compressed, None, text)] {
        let mut bytes = std::fs::read(&image).unwrap();
        let mut scratch = vec![0u8; Qcow1::<MemIo>::MAX_SCRATCH_LEN];
        let mut buf = vec![0u8; 300_000];

        let (q, allocations) = common::counting_alloc::count_allocations(|| {
            let mut q = Qcow1::open(MemIo::new(&mut bytes), &mut scratch, password).unwrap();
            q.read_at(1, &mut buf[..299_999]).unwrap();
            q.read_at(3999, &mut buf[..70_002]).unwrap();
            let _ = q.extent_at(4096).unwrap();
            q
        });
        drop(q);
        assert_eq!(allocations, 0, "{}: allocations during open + read", image.display());
        common::counting_alloc::assert_counter_sees_allocations();
        assert_eq!(buf[..70_002], guest[3999..74_001], "{}: data", image.display());
    }
}
