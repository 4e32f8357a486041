//! Regression tests for what the issue-12 fuzz targets (fuzz/fuzz_targets: the differential,
//! snapshot, chain, unlock and create targets) found. Each test names the target and the
//! minimal input it reported.

mod common;

use std::fs::File;

use qluks::crypto::{CipherMode, CipherSpec, OsRng, SectorCipher, XtsIv};
use qluks::io::{BlockIo, MemIo};
use qluks::luks::{DataSegment, LuksVolume};
use qluks::qcow2::create::{create, CreateOptions};
use qluks::qcow2::{Error, Qcow2Image};

/// xts_differential, input `a0 02 ff` (an all-zero XTS-AES-128 key, 32 units from sector
/// u64::MAX): the sector after u64::MAX got the XTS tweak 2^64 instead of 0; plain64 tweaks
/// are LE64 of the sector number, which wraps at 2^64 as dm-crypt's sector_t does.
#[test]
fn xts_plain64_tweak_wraps_at_2_pow_64() {
    let spec = CipherSpec { mode: CipherMode::Xts(XtsIv::Plain64), key_bytes: 32 };
    let key = [0u8; 32];
    let cipher = SectorCipher::new(spec, &key).unwrap();
    let plain: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    let mut run = plain.clone();
    cipher.encrypt_sectors(&mut run, 512, u64::MAX).unwrap();
    let mut last = plain[..512].to_vec();
    cipher.encrypt_sectors(&mut last, 512, u64::MAX).unwrap();
    let mut zero = plain[512..].to_vec();
    cipher.encrypt_sectors(&mut zero, 512, 0).unwrap();
    assert_eq!(run[..512], last[..], "sector u64::MAX");
    assert_eq!(run[512..], zero[..], "the sector after u64::MAX is sector 0");
    cipher.decrypt_sectors(&mut run, 512, u64::MAX).unwrap();
    assert_eq!(run, plain);

    // The same through a LUKS volume whose segment's iv_tweak puts payload sector 1 at IV
    // sector 0 (a LUKS2 "iv_tweak" of 2^64 - 1).
    let mut device = vec![0u8; 4096];
    let segment = DataSegment {
        offset: 1024,
        size: Some(2048),
        sector_size: 512,
        iv_tweak: u64::MAX,
        cipher: SectorCipher::new(spec, &key).unwrap(),
    };
    let mut volume = LuksVolume::new(MemIo::new(&mut device), segment).unwrap();
    volume.write_at(0, &plain).unwrap();
    drop(volume);
    assert_eq!(device[1024..1536], last[..]);
    assert_eq!(device[1536..2048], zero[..]);
}

/// qcow2_chain, an 83 KB input: a fuzzed extended-L2 image whose refcount block says every
/// cluster is free (header, tables and L2 table included). A write into an unallocated
/// cluster took host cluster 0, wrote guest data over the header and pointed the L2 entry at
/// offset 0 (the next read failed with SubclusterAllocWithoutCluster). The same image,
/// made small: a new qcow2 image whose refcount block is zeroed. QEMU checks every data
/// write against the metadata; so must the write engine for newly allocated clusters.
#[test]
fn qcow2_write_refuses_new_clusters_that_hold_metadata_with_refcount_zero() {
    let dir = common::TempDir::new("qcow2_write_refuses_new_clusters_that_hold_metadata_with_refcount_zero");
    let path = dir.join("zero-refcounts.qcow2");
    let mut file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let mut options = CreateOptions::new(256 << 10);
    options.cluster_size = 4096;
    create(&mut file, &mut options, &mut OsRng).unwrap();
    // Zero the (only) refcount block: every cluster now reads as free.
    let be64 = |file: &mut File, at: u64| {
        let mut b = [0u8; 8];
        file.read_at(at, &mut b).unwrap();
        u64::from_be_bytes(b)
    };
    let table = be64(&mut file, 48);
    let block = be64(&mut file, table);
    assert!(block != 0 && block % 4096 == 0);
    file.write_at(block, &[0u8; 4096]).unwrap();
    let mut header = [0u8; 512];
    file.read_at(0, &mut header).unwrap();

    let mut image = Qcow2Image::open(file, None).unwrap();
    let mut scratch = vec![0u8; image.write_scratch_len()];
    let r = image.write_at(8192, &[0x55; 4096], &mut scratch);
    assert!(matches!(r, Err(Error::MetadataOverlap { .. })), "a write over metadata: {r:?}");
    drop(image);
    let mut file = File::open(&path).unwrap();
    let mut now = [0u8; 512];
    file.read_at(0, &mut now).unwrap();
    assert!(now == header, "the header was overwritten");
    let mut image = Qcow2Image::open(file, None).unwrap();
    let mut back = [1u8; 4096];
    image.read_at(8192, &mut back).unwrap();
    assert_eq!(back, [0u8; 4096]);
}

/// qcow2_chain (a 28 KB input that timed out): an image whose refcount table has no block for
/// the clusters the header and tables sit in. The allocator finds cluster 0 "free" with no
/// refcount block, makes cluster 0 a new refcount block (`new_refcount_block` writes it over
/// the header), and then `alloc_clusters` loops forever. The cause is in
/// src/qcow2/refcount.rs: a new refcount block (and a contiguous run, and a relocated refcount
/// area) now gets the same overlap check as data (header, L1, refcount table, L2 tables,
/// snapshot table, LUKS area): the write fails with a typed error, nothing is overwritten.
#[test]
fn qcow2_write_without_a_refcount_block_for_the_metadata_neither_hangs_nor_overwrites_the_header() {
    let dir = common::TempDir::new("qcow2_write_without_a_refcount_block_for_the_metadata");
    let path = dir.join("no-block.qcow2");
    let mut file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let mut options = CreateOptions::new(256 << 10);
    options.cluster_size = 4096;
    create(&mut file, &mut options, &mut OsRng).unwrap();
    let mut b = [0u8; 8];
    file.read_at(48, &mut b).unwrap();
    file.write_at(u64::from_be_bytes(b), &[0u8; 8]).unwrap(); // refcount table entry 0: no block
    let mut header = [0u8; 512];
    file.read_at(0, &mut header).unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut image = Qcow2Image::open(file, None).unwrap();
        let mut scratch = vec![0u8; image.write_scratch_len()];
        let r = image.write_at(8192, &[0x55; 4096], &mut scratch).map_err(|e| format!("{e:?}"));
        let _ = done.send(r);
    });
    let r = wait.recv_timeout(std::time::Duration::from_secs(20)).expect("the write did not return within 20 s");
    assert!(r.is_err(), "a write over metadata succeeded");
    let mut now = [0u8; 512];
    File::open(&path).unwrap().read_at(0, &mut now).unwrap();
    assert!(now == header, "the header was overwritten");
}

/// qcow2_chain, a 28 KB input: a legacy-AES image whose L2 table maps guest clusters 8, 9 and
/// 10 to host clusters past the end of the file, where the refcounts say 0. A 16 KiB write at
/// guest 0x9e5a changed guest cluster 8: the write's new clusters are found free by their
/// refcounts, one of them is the cluster guest 8 points at. The image is corrupt (`qemu-img
/// check` and qluks's check report the references past the end of the file), and QEMU does
/// the same: it also takes new clusters by refcount, so QEMU's write changes guest cluster 8
/// too. The target now expects unchanged neighbours only on images that check clean; this
/// test pins the behaviour on the corrupt image to QEMU's, byte for byte.
#[test]
fn qcow2_write_into_a_corrupt_image_does_what_qemu_does() {
    const TEST: &str = "qcow2_write_into_a_corrupt_image_does_what_qemu_does";
    if !common::tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let made = dir.join("made.qcow2");
    let made_s = made.to_str().unwrap();
    common::run(std::process::Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        made_s,
        "256K",
    ]));
    common::run(std::process::Command::new("qemu-io").args(["-c", "write -q -P 1 0 4K", made_s]));
    // Guest cluster 8 -> the cluster one past the end of the file (refcount 0, unallocated).
    let mut file = File::options().read(true).write(true).open(&made).unwrap();
    let be64 = |file: &mut File, at: u64| {
        let mut b = [0u8; 8];
        file.read_at(at, &mut b).unwrap();
        u64::from_be_bytes(b)
    };
    let l1 = be64(&mut file, 40);
    let l2 = be64(&mut file, l1) & 0x00ff_ffff_ffff_fe00;
    let end = file.size().unwrap();
    file.write_at(l2 + 8 * 8, &(end + 4096).to_be_bytes()).unwrap();
    drop(file);
    let (ours, theirs) = (dir.join("qluks.qcow2"), dir.join("qemu.qcow2"));
    std::fs::copy(&made, &ours).unwrap();
    std::fs::copy(&made, &theirs).unwrap();

    let mut image = Qcow2Image::open(File::options().read(true).write(true).open(&ours).unwrap(), None).unwrap();
    let mut memory = vec![0u8; image.check_memory_len().unwrap()];
    let report = image.check(&mut memory, qluks::qcow2::Repair::None, &mut |_| {}).unwrap();
    assert!(report.corruptions + report.check_errors > 0, "the image is corrupt: {report:?}");
    let mut scratch = vec![0u8; image.write_scratch_len()];
    image.write_at(0x9000, &[0x55; 16 << 10], &mut scratch).unwrap();
    image.flush().unwrap();
    let mut ours_read = vec![0u8; 256 << 10];
    image.read_at(0, &mut ours_read).unwrap();
    drop(image);

    common::run(std::process::Command::new("qemu-io").args([
        "-c",
        "write -q -P 0x55 0x9000 16K",
        theirs.to_str().unwrap(),
    ]));
    let raw = dir.join("qemu.raw");
    common::run(std::process::Command::new("qemu-img").args([
        "convert",
        "-O",
        "raw",
        theirs.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]));
    let theirs_read = std::fs::read(&raw).unwrap();
    assert_eq!(theirs_read[0x8000..0x9000], [0x55; 4096], "QEMU's write changes guest cluster 8 too");
    assert!(ours_read == theirs_read, "qluks and QEMU read the written corrupt image differently");
}
