//! Malformed qcow2 images (formats.md §8, in the style of qemu-iotests 080 and 060): a valid
//! small image made by qemu-img is patched, one rule per test, and the engine must answer with
//! the typed error that names the rule, never a panic, an overflow or a huge allocation.

mod common;

use std::process::Command;

use qluks::io::{MemIo, MemIoError};
use qluks::luks;
use qluks::qcow2::backing::{BackingRequest, Chain, DataFileRequest, Opened, Resolver};
use qluks::qcow2::compressed::{CompressedError, Compression};
use qluks::qcow2::header::Table;
use qluks::qcow2::{Corruption, Error, HeaderError, Qcow2};

type QError = Error<MemIoError>;

const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FDE: u32 = 0x0537_be77;

fn qemu_img(args: &[&str]) {
    common::run(Command::new("qemu-img").args(args));
}

fn qemu_io(img: &std::path::Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(img);
    common::run(&mut c);
}

/// A v3 image with 4 KiB clusters and data in its first clusters, as bytes. `opts` are extra
/// qemu-img create options; `cmds` are qemu-io commands (default: some data and a zero
/// cluster).
fn image(test: &str, opts: &str, cmds: &[&str]) -> Option<Vec<u8>> {
    if !common::tools(test, &["qemu-img", "qemu-io"]) {
        return None;
    }
    let dir = common::TempDir::new(test);
    let img = dir.join("m.qcow2");
    let opts = if opts.is_empty() { "cluster_size=4096".to_string() } else { format!("cluster_size=4096,{opts}") };
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opts, img.to_str().unwrap(), "1M"]);
    let default = ["write -P 0x11 0 8k", "write -z 64k 4k", "write -P 0x22 300k 1k"];
    qemu_io(&img, if cmds.is_empty() { &default } else { cmds });
    Some(std::fs::read(img).unwrap())
}

/// A compressed image (4 KiB clusters) made by `qemu-img convert -c`.
fn compressed_image(test: &str) -> Option<Vec<u8>> {
    if !common::tool(test, "qemu-img") {
        return None;
    }
    let dir = common::TempDir::new(test);
    let raw = dir.join("src.raw");
    let text: Vec<u8> = (0..64 * 1024).map(|i| b"compressible qcow2 text "[i % 24]).collect();
    std::fs::write(&raw, text).unwrap();
    let img = dir.join("c.qcow2");
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096"]).arg(&raw).arg(&img);
    common::run(&mut c);
    Some(std::fs::read(img).unwrap())
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}
fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}
fn set32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
fn set64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Opens the image in memory and reads all of it.
fn open_and_read(img: &mut [u8]) -> Result<(), QError> {
    let mut q: Qcow2<MemIo> = Qcow2::open(MemIo::new(img), None)?;
    let mut buf = vec![0u8; q.size().min(4 << 20) as usize];
    let mut scratch = vec![0u8; q.compressed_scratch_len()];
    q.read_at_with_scratch(0, &mut buf, &mut scratch)
}

/// Opens the image in memory (no read).
fn open(img: &mut [u8]) -> Result<(), QError> {
    Qcow2::<MemIo>::open(MemIo::new(img), None).map(drop)
}

/// Byte offset of the end-of-extensions marker in cluster 0.
fn extensions_end(img: &[u8]) -> usize {
    let mut off = be32(img, 100) as usize;
    while be32(img, off) != 0 {
        off += 8 + (be32(img, off + 4) as usize).next_multiple_of(8);
    }
    off
}

/// Appends a header extension (and a new end marker) after the existing ones.
fn add_extension(img: &mut [u8], ext_type: u32, data: &[u8]) {
    let at = extensions_end(img);
    set32(img, at, ext_type);
    set32(img, at + 4, data.len() as u32);
    img[at + 8..at + 8 + data.len()].copy_from_slice(data);
    let end = at + 8 + data.len().next_multiple_of(8);
    img[end..end + 8].fill(0);
}

/// File offset of L1 entry `index`.
fn l1_entry_at(img: &[u8], index: usize) -> usize {
    be64(img, 40) as usize + index * 8
}

/// File offset of the L2 entry for guest cluster `cluster` (through L1 entry 0).
fn l2_entry_at(img: &[u8], cluster: usize, entry_size: usize) -> usize {
    let l2 = (be64(img, l1_entry_at(img, 0)) & 0x00ff_ffff_ffff_fe00) as usize;
    l2 + cluster * entry_size
}

fn header_err(r: Result<(), QError>) -> HeaderError {
    match r {
        Err(Error::Header(h)) => h,
        other => panic!("expected a header error, got {other:?}"),
    }
}

fn corruption(r: Result<(), QError>) -> Corruption {
    match r {
        Err(Error::Corrupt(c)) => c,
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn valid_base_image_opens_and_reads() {
    let Some(mut img) = image("malformed_base", "", &[]) else { return };
    open_and_read(&mut img).unwrap();
}

#[test]
fn cluster_bits_outside_9_to_21_are_refused() {
    let Some(good) = image("cluster_bits", "", &[]) else { return };
    for bits in [0u32, 8, 22, 63, u32::MAX] {
        let mut img = good.clone();
        set32(&mut img, 20, bits);
        assert_eq!(header_err(open(&mut img)), HeaderError::ClusterBits { cluster_bits: bits });
    }
}

#[test]
fn header_length_must_be_at_least_104_a_multiple_of_8_and_inside_cluster_0() {
    let Some(good) = image("header_length", "", &[]) else { return };
    for len in [0u32, 72, 100, 108, 4104, u32::MAX] {
        let mut img = good.clone();
        set32(&mut img, 100, len);
        assert_eq!(header_err(open(&mut img)), HeaderError::HeaderLength { header_length: len }, "length {len}");
    }
}

#[test]
fn extension_running_past_cluster_0_is_refused() {
    let Some(mut img) = image("ext_too_large", "", &[]) else { return };
    let at = extensions_end(&img);
    set32(&mut img, at, 0x1234_5678);
    set32(&mut img, at + 4, 4096);
    let offset = at as u64;
    assert_eq!(
        header_err(open(&mut img)),
        HeaderError::ExtensionPastCluster { ext_type: 0x1234_5678, offset, len: 4096 }
    );
    set32(&mut img, at + 4, u32::MAX);
    assert_eq!(
        header_err(open(&mut img)),
        HeaderError::ExtensionPastCluster { ext_type: 0x1234_5678, offset, len: u32::MAX }
    );
}

#[test]
fn known_extension_twice_is_refused() {
    let Some(mut img) = image("ext_duplicate", "", &[]) else { return };
    add_extension(&mut img, EXT_BACKING_FORMAT, b"raw");
    add_extension(&mut img, EXT_BACKING_FORMAT, b"raw");
    assert_eq!(header_err(open(&mut img)), HeaderError::DuplicateExtension { ext_type: EXT_BACKING_FORMAT });

    let Some(mut img) = image("ext_duplicate_features", "", &[]) else { return };
    add_extension(&mut img, EXT_FEATURE_TABLE, &[0; 48]);
    add_extension(&mut img, EXT_FEATURE_TABLE, &[0; 48]);
    assert_eq!(header_err(open(&mut img)), HeaderError::DuplicateExtension { ext_type: EXT_FEATURE_TABLE });
}

/// FDE extension data: offset, length.
fn fde(offset: u64, length: u64) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&offset.to_be_bytes());
    d[8..].copy_from_slice(&length.to_be_bytes());
    d
}

#[test]
fn fde_extension_with_wrong_length_is_refused() {
    let Some(mut img) = image("fde_length", "", &[]) else { return };
    set32(&mut img, 32, 2);
    add_extension(&mut img, EXT_FDE, &fde(1 << 20, 8192)[..8]);
    assert_eq!(header_err(open(&mut img)), HeaderError::BadExtensionLength { ext_type: EXT_FDE, len: 8 });
}

#[test]
fn fde_extension_misaligned_or_empty_or_past_2_56_is_refused() {
    let Some(good) = image("fde_misaligned", "", &[]) else { return };
    for (offset, length) in [(4096 + 512, 8192), (0, 8192), (8192, 0), (1 << 56, 4096), (!4095, 4096)] {
        let mut img = good.clone();
        set32(&mut img, 32, 2);
        add_extension(&mut img, EXT_FDE, &fde(offset, length));
        assert_eq!(header_err(open(&mut img)), HeaderError::BadFdeExtension { offset, length });
    }
}

#[test]
fn luks_crypt_method_without_fde_extension_is_refused() {
    let Some(mut img) = image("fde_missing", "", &[]) else { return };
    set32(&mut img, 32, 2);
    assert_eq!(header_err(open(&mut img)), HeaderError::LuksWithoutFde);
}

#[test]
fn fde_extension_without_luks_crypt_method_is_refused() {
    let Some(mut img) = image("fde_without_luks", "", &[]) else { return };
    add_extension(&mut img, EXT_FDE, &fde(8192, 4096));
    assert_eq!(header_err(open(&mut img)), HeaderError::FdeWithoutLuks);
}

#[test]
fn fde_area_past_end_of_file_is_refused() {
    let Some(mut img) = image("fde_past_eof", "", &[]) else { return };
    set32(&mut img, 32, 2);
    let past = (img.len() as u64).next_multiple_of(4096);
    add_extension(&mut img, EXT_FDE, &fde(past, 4096));
    assert_eq!(
        corruption(open(&mut img)),
        Corruption::PastEndOfFile { table: Table::Fde, offset: past, file_size: img.len() as u64 }
    );
}

#[test]
fn table_offsets_misaligned_in_cluster_0_or_past_2_56_are_refused() {
    let Some(good) = image("table_offsets", "", &[]) else { return };
    for (field, table) in [(40, Table::L1), (48, Table::Refcount)] {
        for (offset, reason) in [
            (4096 + 8, "not cluster-aligned"),
            (0, "points at cluster 0"),
            (1 << 56, "extends past 2^56"),
            (!4095, "extends past 2^56"),
        ] {
            let mut img = good.clone();
            set64(&mut img, field, offset);
            assert_eq!(
                header_err(open(&mut img)),
                HeaderError::BadTableOffset { table, offset, reason },
                "{table} at {offset:#x}"
            );
        }
    }
}

#[test]
fn tables_past_end_of_file_are_refused() {
    let Some(good) = image("tables_past_eof", "", &[]) else { return };
    let past = (good.len() as u64).next_multiple_of(4096) + 4096;
    for (field, table) in [(40, Table::L1), (48, Table::Refcount)] {
        let mut img = good.clone();
        set64(&mut img, field, past);
        assert_eq!(
            corruption(open(&mut img)),
            Corruption::PastEndOfFile { table, offset: past, file_size: good.len() as u64 }
        );
    }
}

#[test]
fn l1_table_too_small_for_the_virtual_size_is_refused() {
    let Some(mut img) = image("l1_too_small", "", &[]) else { return };
    set32(&mut img, 36, 0);
    assert_eq!(header_err(open(&mut img)), HeaderError::L1TooSmall { l1_size: 0, needed: 1 });
}

#[test]
fn l1_table_over_32_mib_is_refused() {
    let Some(mut img) = image("l1_too_big", "", &[]) else { return };
    let l1_size = (32 << 20) / 8 + 1;
    set32(&mut img, 36, l1_size);
    assert_eq!(header_err(open(&mut img)), HeaderError::L1TooLarge { l1_size });
}

#[test]
fn refcount_table_empty_or_over_8_mib_is_refused() {
    let Some(good) = image("refcount_table", "", &[]) else { return };
    let mut img = good.clone();
    set32(&mut img, 56, 0);
    assert_eq!(header_err(open(&mut img)), HeaderError::RefcountTableEmpty);
    let mut img = good.clone();
    let clusters = (8 << 20) / 4096 + 1;
    set32(&mut img, 56, clusters);
    assert_eq!(header_err(open(&mut img)), HeaderError::RefcountTableTooLarge { clusters });
}

#[test]
fn refcount_order_above_6_is_refused() {
    let Some(mut img) = image("refcount_order", "", &[]) else { return };
    set32(&mut img, 96, 7);
    assert_eq!(header_err(open(&mut img)), HeaderError::RefcountOrder { refcount_order: 7 });
}

#[test]
fn more_than_65536_snapshots_are_refused() {
    let Some(mut img) = image("snapshot_count", "", &[]) else { return };
    set32(&mut img, 60, 65537);
    set64(&mut img, 64, 8192);
    assert_eq!(header_err(open(&mut img)), HeaderError::TooManySnapshots { nb_snapshots: 65537 });
}

#[test]
fn snapshot_table_past_end_of_file_is_refused() {
    let Some(mut img) = image("snapshot_table", "", &[]) else { return };
    let past = (img.len() as u64).next_multiple_of(4096);
    set32(&mut img, 60, 1000);
    set64(&mut img, 64, past);
    assert_eq!(
        corruption(open(&mut img)),
        Corruption::PastEndOfFile { table: Table::Snapshots, offset: past, file_size: img.len() as u64 }
    );
}

/// An image with one internal snapshot, and the file offset of its snapshot table.
fn snapshot_image(test: &str) -> Option<(Vec<u8>, usize)> {
    if !common::tools(test, &["qemu-img", "qemu-io"]) {
        return None;
    }
    let dir = common::TempDir::new(test);
    let img = dir.join("s.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img.to_str().unwrap(), "1M"]);
    qemu_io(&img, &["write -P 0x11 0 8k"]);
    qemu_img(&["snapshot", "-c", "snap", img.to_str().unwrap()]);
    let bytes = std::fs::read(img).unwrap();
    let table = be64(&bytes, 64) as usize;
    Some((bytes, table))
}

fn snapshot_error(img: &mut [u8]) -> Corruption {
    let mut q: Qcow2<MemIo> = Qcow2::open(MemIo::new(img), None).unwrap();
    let r = q.snapshots().next().expect("one snapshot").and_then(|s| q.select_snapshot(&s));
    match r {
        Err(Error::Corrupt(c)) => c,
        other => panic!("expected a corrupt snapshot, got {other:?}"),
    }
}

#[test]
fn snapshot_extra_data_over_1024_bytes_is_refused() {
    let Some((mut img, table)) = snapshot_image("snapshot_extra") else { return };
    set32(&mut img, table + 36, 1025);
    assert_eq!(
        snapshot_error(&mut img),
        Corruption::BadSnapshot { index: 0, reason: "extra data larger than 1024 bytes" }
    );
}

#[test]
fn snapshot_with_invalid_l1_table_is_refused() {
    let Some((good, table)) = snapshot_image("snapshot_l1") else { return };
    // Misaligned, in cluster 0, too small, too large, past the end of the file.
    let past = (good.len() as u64).next_multiple_of(4096);
    for (offset, size, reason) in [
        (4096 + 8, 1u32, "L1 table offset invalid"),
        (0, 1, "L1 table offset invalid"),
        (4096, 0, "L1 table too small for the disk size"),
        (4096, (32 << 20) / 8 + 1, "L1 table larger than 32 MiB"),
        (past, 1, "L1 table past the end of the file"),
    ] {
        let mut img = good.clone();
        set64(&mut img, table, offset);
        set32(&mut img, table + 8, size);
        assert_eq!(
            snapshot_error(&mut img),
            Corruption::BadSnapshot { index: 0, reason },
            "snapshot L1 at {offset:#x}, {size} entries"
        );
    }
}

#[test]
fn unknown_incompatible_feature_is_refused_by_bit() {
    let Some(mut img) = image("unknown_incompatible", "", &[]) else { return };
    set64(&mut img, 72, 1 << 9);
    // qemu-img's feature name table names bits 0..4 only: no name for bit 9.
    let r = open(&mut img);
    assert!(matches!(&r, Err(Error::UnknownIncompatibleFeature { bit: 9, name }) if name.is_empty()), "{r:?}");
}

#[test]
fn l1_entry_with_reserved_bits_or_offset_past_2_56_is_corrupt() {
    let Some(good) = image("l1_reserved", "", &[]) else { return };
    let at = l1_entry_at(&good, 0);
    let entry = be64(&good, at);
    for bit in [1u64 << 1, 1 << 8, 1 << 56, 1 << 62] {
        let mut img = good.clone();
        set64(&mut img, at, entry | bit);
        assert_eq!(corruption(open_and_read(&mut img)), Corruption::L1ReservedBits { l1_index: 0, entry: entry | bit });
    }
}

#[test]
fn l2_table_misaligned_is_corrupt() {
    let Some(mut img) = image("l2_misaligned", "", &[]) else { return };
    let at = l1_entry_at(&img, 0);
    let entry = be64(&img, at);
    set64(&mut img, at, entry + 512);
    let offset = (entry + 512) & 0x00ff_ffff_ffff_fe00;
    assert_eq!(corruption(open_and_read(&mut img)), Corruption::L2TableUnaligned { l1_index: 0, offset });
}

#[test]
fn l2_table_past_end_of_file_is_corrupt() {
    let Some(mut img) = image("l2_past_eof", "", &[]) else { return };
    let at = l1_entry_at(&img, 0);
    let past = (img.len() as u64).next_multiple_of(4096) + 4096;
    set64(&mut img, at, past | (1 << 63));
    assert_eq!(
        corruption(open_and_read(&mut img)),
        Corruption::PastEndOfFile { table: Table::L2, offset: past, file_size: img.len() as u64 }
    );
}

#[test]
fn l2_entry_with_reserved_bits_or_offset_past_2_56_is_corrupt() {
    let Some(good) = image("l2_reserved", "", &[]) else { return };
    let at = l2_entry_at(&good, 0, 8);
    let entry = be64(&good, at);
    for bit in [1u64 << 1, 1 << 8, 1 << 56, 1 << 61] {
        let mut img = good.clone();
        set64(&mut img, at, entry | bit);
        assert_eq!(corruption(open_and_read(&mut img)), Corruption::L2ReservedBits { entry: entry | bit });
    }
}

#[test]
fn data_cluster_misaligned_is_corrupt() {
    let Some(mut img) = image("data_misaligned", "", &[]) else { return };
    let at = l2_entry_at(&img, 0, 8);
    let entry = be64(&img, at);
    set64(&mut img, at, entry + 512);
    let offset = (entry + 512) & 0x00ff_ffff_ffff_fe00;
    assert_eq!(corruption(open_and_read(&mut img)), Corruption::DataUnaligned { offset });
}

#[test]
fn compressed_cluster_with_copied_flag_is_corrupt() {
    let Some(mut img) = compressed_image("compressed_copied") else { return };
    let at = l2_entry_at(&img, 0, 8);
    let entry = be64(&img, at);
    assert!(entry & (1 << 62) != 0, "qemu-img compressed cluster 0");
    set64(&mut img, at, entry | (1 << 63));
    assert_eq!(corruption(open_and_read(&mut img)), Corruption::CompressedCopied { entry: entry | (1 << 63) });
}

#[test]
fn compressed_data_past_end_of_file_is_corrupt() {
    let Some(mut img) = compressed_image("compressed_past_eof") else { return };
    let at = l2_entry_at(&img, 0, 8);
    let entry = be64(&img, at);
    let x = 62 - (12 - 8);
    let past = (img.len() as u64) + 100;
    set64(&mut img, at, (entry & !((1u64 << x) - 1)) | past);
    // The compressed length: (sector count field + 1) 512-byte sectors less the offset's part of
    // its first sector.
    let sectors = ((entry >> x) & ((1u64 << (62 - x)) - 1)) + 1;
    let len = sectors * 512 - (past & 511);
    assert_eq!(
        corruption(open_and_read(&mut img)),
        Corruption::DataPastEndOfFile { offset: past, len, file_size: img.len() as u64 }
    );
}

#[test]
fn compressed_cluster_not_decoding_to_one_cluster_is_refused() {
    let Some(good) = compressed_image("compressed_bad_stream") else { return };
    let at = l2_entry_at(&good, 0, 8);
    let entry = be64(&good, at);
    let x = 62 - (12 - 8);
    let host = (entry & ((1u64 << x) - 1)) as usize;
    // Garbage instead of the deflate stream.
    let mut img = good.clone();
    img[host..host + 16].fill(0xff);
    let r = open_and_read(&mut img);
    let corrupt = CompressedError::Corrupt { compression: Compression::Deflate };
    assert!(matches!(r, Err(Error::Decompress { guest_offset: 0, error }) if error == corrupt), "{r:?}");
    // The descriptor pointing one byte into the stream: not a stream of one cluster.
    let mut img = good.clone();
    set64(&mut img, at, entry + 1);
    let r = open_and_read(&mut img);
    assert!(matches!(r, Err(Error::Decompress { guest_offset: 0, error }) if error == corrupt), "{r:?}");
}

#[test]
fn subcluster_both_allocated_and_zero_is_corrupt() {
    let Some(mut img) = image("subcluster_alloc_zero", "extended_l2=on,cluster_size=16384", &["write -P 0x11 0 1k"])
    else {
        return;
    };
    // cluster_size is overridden to 16 KiB (extended L2 needs >= 16 KiB), so read the layout.
    assert_eq!(be32(&img, 20), 14);
    let at = l2_entry_at(&img, 0, 16);
    let bitmap = be64(&img, at + 8);
    assert_eq!(bitmap & 1, 1, "qemu-io allocated subcluster 0");
    set64(&mut img, at + 8, bitmap | (1 << 32));
    assert_eq!(corruption(open_and_read(&mut img)), Corruption::SubclusterAllocAndZero { bitmap: bitmap | (1 << 32) });
}

#[test]
fn subclusters_allocated_in_an_unallocated_cluster_are_corrupt() {
    let Some(mut img) = image("subcluster_without_cluster", "extended_l2=on,cluster_size=16384", &["write -P 1 0 1k"])
    else {
        return;
    };
    // Guest cluster 1 is unallocated: give it an allocation bit but no host offset.
    let at = l2_entry_at(&img, 1, 16);
    assert_eq!(be64(&img, at), 0);
    set64(&mut img, at + 8, 1);
    assert_eq!(corruption(open_and_read(&mut img)), Corruption::SubclusterAllocWithoutCluster { bitmap: 1 });
}

#[test]
fn compressed_cluster_with_subcluster_bitmap_is_corrupt() {
    if !common::tool("compressed_bitmap", "qemu-img") {
        return;
    }
    let dir = common::TempDir::new("compressed_bitmap");
    let raw = dir.join("src.raw");
    std::fs::write(&raw, vec![b'q'; 64 * 1024]).unwrap();
    let img_path = dir.join("c.qcow2");
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "extended_l2=on,cluster_size=16384"])
        .arg(&raw)
        .arg(&img_path);
    common::run(&mut c);
    let mut img = std::fs::read(img_path).unwrap();
    let at = l2_entry_at(&img, 0, 16);
    assert!(be64(&img, at) & (1 << 62) != 0, "qemu-img compressed cluster 0");
    set64(&mut img, at + 8, 1);
    assert_eq!(corruption(open_and_read(&mut img)), Corruption::CompressedBitmap { bitmap: 1 });
}

#[test]
fn tiny_file_claiming_a_huge_disk_is_refused_without_allocating() {
    let Some(good) = image("tiny_huge", "", &[]) else { return };
    // Only cluster 0 remains; the header claims 1 TiB with a matching 4 MiB L1 table.
    let mut img = good[..4096].to_vec();
    let size = 1u64 << 40;
    let l1_entries = size / (4096 * 512);
    set64(&mut img, 24, size);
    set32(&mut img, 36, l1_entries as u32);
    let l1_offset = be64(&img, 40);
    assert_eq!(
        corruption(open(&mut img)),
        Corruption::PastEndOfFile { table: Table::L1, offset: l1_offset, file_size: 4096 }
    );
    // 2^50 bytes would need an L1 table beyond QEMU's 32 MiB.
    set64(&mut img, 24, 1 << 50);
    assert_eq!(header_err(open(&mut img)), HeaderError::SizeTooLarge { size: 1 << 50 });
    // A size whose L1 table cannot even be counted.
    set64(&mut img, 24, u64::MAX);
    assert_eq!(header_err(open(&mut img)), HeaderError::SizeTooLarge { size: u64::MAX });
}

#[test]
fn truncated_header_is_refused() {
    let Some(good) = image("truncated_header", "", &[]) else { return };
    for (len, needed) in [(0usize, 72), (4, 72), (71, 72), (100, 104)] {
        let mut img = good[..len].to_vec();
        assert_eq!(header_err(open(&mut img)), HeaderError::Truncated { needed, got: len }, "{len} bytes");
    }
}

#[test]
fn backing_file_name_over_1023_bytes_is_refused() {
    let Some(mut img) = image("backing_name_long", "", &[]) else { return };
    set64(&mut img, 8, 512);
    set32(&mut img, 16, 1024);
    assert_eq!(header_err(open(&mut img)), HeaderError::BackingNameTooLong { len: 1024 });
}

#[test]
fn backing_file_offset_near_2_64_is_refused_without_overflow() {
    // Found by the qcow2_header fuzz target: offset + size used to overflow.
    let Some(mut img) = image("backing_offset_overflow", "", &[]) else { return };
    set64(&mut img, 8, u64::MAX);
    set32(&mut img, 16, 1);
    assert_eq!(header_err(open(&mut img)), HeaderError::BackingNameOutsideCluster0 { offset: u64::MAX, len: 1 });
}

/// Resolves every backing name to another copy of the same image bytes: a loop.
struct Loop<'a> {
    images: Vec<&'a mut [u8]>,
}

impl<'a> Resolver<MemIo<'a>> for Loop<'a> {
    type Error = &'static str;
    fn open_backing(&mut self, _: &BackingRequest<'_>) -> Result<Opened<MemIo<'a>>, &'static str> {
        let io = MemIo::new(self.images.pop().ok_or("out of copies")?);
        Ok(Opened { io, format: None, identity: Some(7) })
    }
    fn passphrase(&mut self, _: usize) -> Option<&[u8]> {
        None
    }
    fn open_data_file(&mut self, _: &DataFileRequest<'_>) -> Result<MemIo<'a>, &'static str> {
        Err("none")
    }
}

#[test]
fn circular_and_too_deep_backing_chains_are_refused() {
    if !common::tools("backing_loop", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("backing_loop");
    let base = dir.join("self.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base.to_str().unwrap(), "1M"]);
    let img = dir.join("loop.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        "-b",
        "self.qcow2",
        "-F",
        "qcow2",
        img.to_str().unwrap(),
        "1M",
    ]);
    let bytes = std::fs::read(&img).unwrap();
    // Every layer names a backing file; the resolver reports the same identity twice.
    let mut copies: Vec<Vec<u8>> = (0..12).map(|_| bytes.clone()).collect();
    let (top, rest) = copies.split_first_mut().unwrap();
    let mut resolver = Loop { images: rest.iter_mut().map(|v| v.as_mut_slice()).collect() };
    let r = Chain::<MemIo, 2, 8>::open(MemIo::new(top), &mut resolver);
    assert!(matches!(r, Err(qluks::qcow2::backing::ChainError::Loop { depth: 2 })), "{r:?}");

    // Without identities only the depth limit stops it.
    struct NoIdentity<'a>(Loop<'a>);
    impl<'a> Resolver<MemIo<'a>> for NoIdentity<'a> {
        type Error = &'static str;
        fn open_backing(&mut self, r: &BackingRequest<'_>) -> Result<Opened<MemIo<'a>>, &'static str> {
            self.0.open_backing(r).map(|o| Opened { identity: None, ..o })
        }
        fn passphrase(&mut self, _: usize) -> Option<&[u8]> {
            None
        }
        fn open_data_file(&mut self, r: &DataFileRequest<'_>) -> Result<MemIo<'a>, &'static str> {
            self.0.open_data_file(r)
        }
    }
    let mut copies: Vec<Vec<u8>> = (0..12).map(|_| bytes.clone()).collect();
    let (top, rest) = copies.split_first_mut().unwrap();
    let mut resolver = NoIdentity(Loop { images: rest.iter_mut().map(|v| v.as_mut_slice()).collect() });
    let r = Chain::<MemIo, 2, 8>::open(MemIo::new(top), &mut resolver);
    assert!(matches!(r, Err(qluks::qcow2::backing::ChainError::TooDeep { limit: 8 })), "{r:?}");
}

#[test]
fn luks_key_material_outside_the_fde_area_is_refused() {
    let t = "fde_area_too_small";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("l.qcow2");
    common::run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s0,data=pw",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,cluster_size=4096",
        img.to_str().unwrap(),
        "1M",
    ]));
    let good = std::fs::read(&img).unwrap();
    let mut off = be32(&good, 100) as usize;
    while be32(&good, off) != EXT_FDE {
        assert_ne!(be32(&good, off), 0, "qemu-img writes the FDE extension");
        off += 8 + (be32(&good, off + 4) as usize).next_multiple_of(8);
    }
    let mut ok = good.clone();
    Qcow2::<MemIo>::open(MemIo::new(&mut ok), Some(b"pw")).unwrap();
    // The area shrunk to the LUKS header's first cluster: the key slots lie outside it.
    let mut img = good.clone();
    set64(&mut img, off + 16, 4096);
    let r = Qcow2::<MemIo>::open(MemIo::new(&mut img), Some(b"pw")).map(drop);
    // Keyslot 0's material starts at 4096 (the cluster after the LUKS header): it ends at
    // 4096 + 4000 stripes * 64 key bytes (qemu's default aes-256-xts), rounded up to a sector.
    let end = (4096 + 4000 * 64u64).next_multiple_of(512);
    assert!(
        matches!(r, Err(Error::Luks(luks::LuksError::KeyMaterialOutsideArea { keyslot: 0, end: e, area_len: 4096 })) if e == end),
        "{r:?}"
    );
}
