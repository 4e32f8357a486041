//! Writing qcow2 allocates nothing: opening an image for writing, `write_at` (new clusters,
//! new L2 tables, copy on write of clusters shared with an internal snapshot, partial
//! clusters, unaligned bytes), `write_zeroes`, `discard` and `flush` run under a counting
//! global allocator that sees no allocation, over a `MemIo` (caller memory), plain and LUKS.
mod common;

use std::process::Command;

use qluks::io::MemIo;
use qluks::qcow2::Qcow2;

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

const SECRET: &str = "secret,id=s0,data=no-alloc-pw";

/// An image made by qemu-img (64 KiB clusters; 4 KiB with `small`), with data and an
/// internal snapshot, padded with zeros to `room` bytes (a fixed-size device: the engine
/// allocates inside it, where the refcounts say clusters are free).
fn image(t: &str, luks: bool, room: usize) -> (common::TempDir, Vec<u8>) {
    let dir = common::TempDir::new(t);
    let img = dir.join("w.qcow2");
    let mut o = "cluster_size=4096".to_string();
    if luks {
        o.push_str(",encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10");
    }
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "--object", SECRET, "-o", &o])
            .arg(&img)
            .arg("1M"),
    );
    let opts =
        format!("driver=qcow2,file.filename={}{}", img.display(), if luks { ",encrypt.key-secret=s0" } else { "" });
    common::qemu_io(&[SECRET], &opts, &["write -P 0x61 0 64k", "write -P 0x62 300k 10000"]);
    common::run(Command::new("qemu-img").args(["snapshot", "-c", "s", "--object", SECRET, "--image-opts", &opts]));
    let mut bytes = std::fs::read(&img).unwrap();
    assert!(bytes.len() < room);
    bytes.resize(room, 0);
    (dir, bytes)
}

fn no_allocation_case(t: &str, luks: bool) {
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let (_dir, mut bytes) = image(t, luks, 6 << 20);
    common::counting_alloc::assert_counter_sees_allocations();
    let pass: Option<&[u8]> = luks.then_some(b"no-alloc-pw");
    let data = common::pattern(7, 200_000);
    // Scratch memory is the caller's: sized from a first opening, made before watching.
    let scratch_len = Qcow2::<MemIo>::open(MemIo::new(&mut bytes), pass).unwrap().write_scratch_len();
    let mut scratch = vec![0u8; scratch_len];
    let mut back = vec![0u8; 200_000];

    let (result, n) = common::counting_alloc::count_allocations(|| {
        let mut q: Qcow2<MemIo> = Qcow2::open(MemIo::new(&mut bytes), pass)?;
        q.write_at(1000, &data[..5000], &mut scratch)?; // COW of clusters shared with the snapshot
        q.write_at(400_000, &data, &mut scratch)?; // new clusters and a new L2 table... of 200 KB
        q.write_at(70_001, &data[..3], &mut scratch)?; // unaligned, in an unallocated cluster
        q.write_zeroes(16_384, 8192, false, &mut scratch)?;
        q.write_zeroes(420_000, 70_000, true, &mut scratch)?;
        q.discard(500_000, 65_536)?;
        q.flush()?;
        q.write_at(1003, &data[..10], &mut scratch)?; // in place now (COPIED)
        q.flush()?;
        q.read_at(300_000, &mut back)
    });
    assert_eq!(n, 0, "open + write_at + write_zeroes + discard + flush allocated {n} times");
    result.unwrap();

    // And it did what it was asked (read back through a fresh opening).
    let mut q: Qcow2<MemIo> = Qcow2::open(MemIo::new(&mut bytes), pass).unwrap();
    let mut guest = vec![0u8; 1 << 20];
    q.read_at(0, &mut guest).unwrap();
    let mut want = vec![0x61u8; 64 << 10];
    want.resize(1 << 20, 0);
    want[300 << 10..(300 << 10) + 10000].fill(0x62);
    want[1000..6000].copy_from_slice(&data[..5000]);
    want[400_000..600_000].copy_from_slice(&data);
    want[70_001..70_004].copy_from_slice(&data[..3]);
    want[16_384..24_576].fill(0);
    want[420_000..490_000].fill(0);
    want[(500_000usize).next_multiple_of(4096)..(565_536 / 4096) * 4096].fill(0);
    want[1003..1013].copy_from_slice(&data[..10]);
    assert!(guest == want, "the guest reads what was written");
}

#[test]
fn plain_writes_allocate_nothing() {
    no_allocation_case("plain_writes_allocate_nothing", false);
}

#[test]
fn luks_writes_allocate_nothing() {
    no_allocation_case("luks_writes_allocate_nothing", true);
}
