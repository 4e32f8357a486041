//! Writes that cannot be done fail with a typed error and leave the image file unchanged byte
//! for byte: a wrong passphrase, an image opened without its key, a read-only device (a
//! read-only `MemIo` and a read-only `File`), corrupt metadata (an L2 entry pointing into the
//! header or onto a refcount block, a refcount table entry past the end of the file, the
//! corrupt bit, the dirty bit). A full device that refuses a write mid-way leaves an image
//! that `qemu-img check` finds free of corruption, with every byte flushed before intact.
mod common;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::crash::{CrashError, CrashIo, Fault};
use qluks::io::{MemIo, MemIoError};
use qluks::qcow2::{Corruption, Error, Qcow2};

const SECRET: &str = "secret,id=s0,data=right-pw";

/// A 1 MiB image with 64 KiB clusters (plain or LUKS) and data at 0..128 KiB and 512 KiB.
fn image(dir: &common::TempDir, luks: bool) -> PathBuf {
    let img = dir.join("e.qcow2");
    let mut o = "cluster_size=65536".to_string();
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
    common::qemu_io(&[SECRET], &opts, &["write -P 0x61 0 128k", "write -P 0x62 512k 4k"]);
    img
}

fn writable(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// Every write entry point on `q`, each followed by a flush (a write-back engine may only
/// meet the device when it writes its cached tables back), each expected to fail; returns the
/// errors.
fn try_all_writes<I: qluks::io::BlockIo>(q: &mut Qcow2<I>) -> Vec<(&'static str, Error<I::Error>)> {
    let mut scratch = vec![0u8; 4 << 20];
    let mut errors = Vec::new();
    let data = [0x77u8; 5000];
    for which in ["write_at in place", "write_at new cluster", "write_zeroes", "discard"] {
        let r = match which {
            "write_at in place" => q.write_at(100, &data, &mut scratch),
            "write_at new cluster" => q.write_at(700_000, &data, &mut scratch),
            "write_zeroes" => q.write_zeroes(0, 65536, false, &mut scratch),
            _ => q.discard(0, 65536),
        };
        match r.and_then(|()| q.flush()) {
            Ok(()) => panic!("{which} and flush succeeded"),
            Err(e) => errors.push((which, e)),
        }
    }
    errors
}

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let t = "wrong_passphrase_is_refused_and_changes_nothing";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, true);
    let before = fs::read(&img).unwrap();
    match Qcow2::<File>::open(writable(&img), Some(b"wrong-pw")) {
        Err(e) => assert!(e.is_wrong_passphrase(), "{e:?}"),
        Ok(_) => panic!("opened with a wrong passphrase"),
    }
    // Opened without the key (metadata only): data writes need the key, zeroes do not.
    let mut q = Qcow2::<File>::open_metadata(writable(&img), None).unwrap();
    let mut scratch = vec![0u8; 1 << 20];
    let e = q.write_at(100, &[1; 600], &mut scratch).unwrap_err();
    assert!(matches!(e, Error::PassphraseRequired), "{e:?}");
    drop(q);
    assert!(fs::read(&img).unwrap() == before, "the file changed");
}

#[test]
fn read_only_memio_refuses_writes_unchanged() {
    let t = "read_only_memio_refuses_writes_unchanged";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let bytes = fs::read(image(&dir, false)).unwrap();
    let mut q: Qcow2<MemIo> = Qcow2::open(MemIo::read_only(&bytes), None).unwrap();
    for (what, e) in try_all_writes(&mut q) {
        // A write that grows the device meets MemIo's bounds check before its read-only one.
        let growing = what == "write_at new cluster";
        assert!(
            matches!(e, Error::Io(MemIoError::ReadOnly))
                || growing && matches!(e, Error::Io(MemIoError::OutOfBounds(_))),
            "{what}: {e:?}"
        );
    }
    let (io, _) = q.into_inner();
    assert!(io.unwrap().as_slice() == bytes.as_slice());
}

#[test]
fn read_only_file_refuses_writes_unchanged() {
    let t = "read_only_file_refuses_writes_unchanged";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, true);
    let before = fs::read(&img).unwrap();
    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), Some(b"right-pw")).unwrap();
    for (what, e) in try_all_writes(&mut q) {
        // pwrite on a descriptor opened read-only: EBADF.
        assert!(matches!(&e, Error::Io(io) if io.raw_os_error() == Some(9)), "{what}: {e:?}");
    }
    drop(q);
    assert!(fs::read(&img).unwrap() == before, "the file changed");
}

/// Patches `len` big-endian bytes of `value` at `at` in the file.
fn patch(path: &Path, at: u64, value: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    writable(path).write_all_at(&value.to_be_bytes()[8 - len..], at).unwrap();
}

fn read_u64(bytes: &[u8], at: u64) -> u64 {
    u64::from_be_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap())
}

/// Opens the corrupted image (must succeed: reading is allowed), tries `write`, expects
/// `expect` to accept its error, and the file to be unchanged.
fn refused_unchanged(
    path: &Path,
    what: &str,
    write: impl FnOnce(&mut Qcow2<File>, &mut [u8]) -> Result<(), Error<std::io::Error>>,
    expect: impl FnOnce(&Error<std::io::Error>) -> bool,
) {
    let before = fs::read(path).unwrap();
    let mut q: Qcow2<File> = match Qcow2::open(writable(path), None) {
        Ok(q) => q,
        Err(e) => panic!("{what}: the image must still open (for reading): {e}"),
    };
    let mut scratch = vec![0u8; 4 << 20];
    match write(&mut q, &mut scratch) {
        Ok(()) => panic!("{what}: the write succeeded"),
        Err(e) => assert!(expect(&e), "{what}: unexpected error {e:?} ({e})"),
    }
    let _ = q.flush();
    drop(q);
    assert!(fs::read(path).unwrap() == before, "{what}: the file changed");
}

/// The first L2 table's offset (L1 entry 0) and the file's bytes.
fn first_l2(path: &Path) -> (u64, Vec<u8>) {
    let bytes = fs::read(path).unwrap();
    let l1 = read_u64(&bytes, 40);
    (read_u64(&bytes, l1) & 0x00ff_ffff_ffff_fe00, bytes)
}

/// In-place writes onto metadata are refused before anything is written (QEMU's overlap
/// check): guest cluster 1's L2 entry (COPIED, so written in place) is made to point at each
/// table in turn. (An entry pointing at host offset 0, the header, is not one of them: offset
/// 0 means "unallocated", as in QEMU, and the write allocates a new cluster.)
#[test]
fn l2_entry_pointing_at_metadata_is_refused() {
    let t = "l2_entry_pointing_at_metadata_is_refused";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, false);
    common::qemu_img(&["snapshot", "-c", "s", img.to_str().unwrap()]);
    let (l2, bytes) = first_l2(&img);
    let l1 = read_u64(&bytes, 40);
    let table = read_u64(&bytes, 48);
    let block = read_u64(&bytes, table);
    let snapshots = read_u64(&bytes, 64);
    let clean = dir.join("clean.qcow2");
    fs::copy(&img, &clean).unwrap();
    for (what, target) in [
        ("active L1 table", l1),
        ("refcount table", table),
        ("refcount block", block),
        ("L2 table", l2),
        ("snapshot table", snapshots),
    ] {
        fs::copy(&clean, &img).unwrap();
        // The snapshot shares the L2 table: mark it (and the entry) unshared, as a corrupt
        // image could.
        patch(&img, l1, read_u64(&bytes, l1) | 1 << 63, 8);
        patch(&img, l2 + 8, (1 << 63) | target, 8);
        refused_unchanged(
            &img,
            &format!("in-place write onto the {what}"),
            |q, s| q.write_at(65536 + 100, &[1; 512], s),
            |e| matches!(e, Error::MetadataOverlap { what: w, host_offset, .. } if *w == what && *host_offset == target),
        );
    }
}

#[test]
fn refcount_table_entry_past_the_end_of_the_file_is_refused() {
    let t = "refcount_table_entry_past_the_end_of_the_file_is_refused";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, false);
    let bytes = fs::read(&img).unwrap();
    let table = read_u64(&bytes, 48);
    patch(&img, table, 1 << 40, 8);
    refused_unchanged(
        &img,
        "allocating write with the refcount block past EOF",
        |q, s| q.write_at(700_000, &[1; 100], s),
        |e| matches!(e, Error::Corrupt(Corruption::PastEndOfFile { .. })),
    );
}

#[test]
fn corrupt_bit_refuses_writes() {
    let t = "corrupt_bit_refuses_writes";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, false);
    patch(&img, 72, 1 << 1, 8);
    for (which, name) in ["write_at", "write_zeroes", "discard"].into_iter().enumerate() {
        refused_unchanged(
            &img,
            name,
            |q, s| match which {
                0 => q.write_at(0, &[1], s),
                1 => q.write_zeroes(0, 65536, true, s),
                _ => q.discard(0, 65536),
            },
            |e| matches!(e, Error::CorruptImage),
        );
    }
}

#[test]
fn dirty_bit_refuses_writes() {
    let t = "dirty_bit_refuses_writes";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, false);
    patch(&img, 72, 1, 8);
    refused_unchanged(
        &img,
        "write to a dirty image",
        |q, s| q.write_at(0, &[1], s),
        |e| matches!(e, Error::DirtyImage),
    );
}

#[test]
fn full_device_mid_write_leaves_a_consistent_image() {
    let t = "full_device_mid_write_leaves_a_consistent_image";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, false);
    let bytes = fs::read(&img).unwrap();
    // Room for a few more clusters, not for 512 KiB of new data.
    let capacity = bytes.len() as u64 + 3 * 65536;
    let io = CrashIo::new(bytes, Fault::Capacity(capacity));
    let mut q: Qcow2<CrashIo> = Qcow2::open(io.clone(), None).unwrap();
    let mut scratch = vec![0u8; q.write_scratch_len()];
    q.write_at(100, &[0x71; 1000], &mut scratch).unwrap(); // in place: fits
    q.flush().unwrap();
    let data = common::pattern(3, 512 << 10);
    let e = q.write_at(520 << 10, &data[..500 << 10], &mut scratch).unwrap_err();
    assert!(matches!(e, Error::Io(CrashError::Full { .. })), "{e:?}");
    let _ = q.flush();
    drop(q);
    assert!(io.0.borrow().bytes.len() as u64 <= capacity);
    let after = dir.join("after.qcow2");
    fs::write(&after, io.bytes()).unwrap();
    let check = common::output(Command::new("qemu-img").arg("check").arg(&after));
    assert!(matches!(check.status.code(), Some(0 | 3)), "{}", String::from_utf8_lossy(&check.stdout));
    let mut q: Qcow2<File> = Qcow2::open(File::open(&after).unwrap(), None).unwrap();
    let mut guest = vec![0u8; 1 << 20];
    q.read_at(0, &mut guest).unwrap();
    assert!(guest[..100].iter().all(|&b| b == 0x61) && guest[100..1100].iter().all(|&b| b == 0x71));
    assert!(guest[1100..128 << 10].iter().all(|&b| b == 0x61), "flushed data intact");
    assert!(guest[512 << 10..516 << 10].iter().all(|&b| b == 0x62), "flushed data intact");
}

#[test]
fn bad_requests_are_typed_errors_and_change_nothing() {
    let t = "bad_requests_are_typed_errors_and_change_nothing";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, false);
    refused_unchanged(
        &img,
        "write past the virtual size",
        |q, s| q.write_at((1 << 20) - 10, &[1; 11], s),
        |e| matches!(e, Error::OutOfRange { offset, size: 1048576, .. } if *offset == (1 << 20) - 10),
    );
    refused_unchanged(
        &img,
        "write at an offset that overflows",
        |q, s| q.write_at(u64::MAX - 3, &[1; 11], s),
        |e| matches!(e, Error::OutOfRange { .. }),
    );
    refused_unchanged(
        &img,
        "write-zeroes past the virtual size",
        |q, s| q.write_zeroes(1 << 19, 1 << 20, true, s),
        |e| matches!(e, Error::OutOfRange { .. }),
    );
    refused_unchanged(
        &img,
        "discard past the virtual size",
        |q, _| q.discard(u64::MAX - 100, 1000),
        |e| matches!(e, Error::OutOfRange { .. }),
    );
    let before = fs::read(&img).unwrap();
    let mut q: Qcow2<File> = Qcow2::open(writable(&img), None).unwrap();
    let mut small = vec![0u8; q.write_scratch_len() - 1];
    let e = q.write_at(700_000, &[1; 100], &mut small).unwrap_err();
    assert!(matches!(e, Error::ScratchTooSmall { got, .. } if got == small.len()), "{e:?}");
    let mut scratch = vec![0u8; q.write_scratch_len()];
    q.write_at(5, &[], &mut scratch).unwrap_or_else(|e| panic!("an empty write is a no-op: {e}"));
    drop(q);
    assert!(fs::read(&img).unwrap() == before, "the file changed");
}

/// The LUKS header area is metadata too: an in-place write onto it is refused (it would
/// destroy the keyslots), the file unchanged.
#[test]
fn l2_entry_pointing_into_the_luks_header_is_refused() {
    let t = "l2_entry_pointing_into_the_luks_header_is_refused";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = image(&dir, true);
    let (l2, bytes) = first_l2(&img);
    // The full disk encryption extension (0x0537be77): offset, length.
    let mut at = u32::from_be_bytes(bytes[100..104].try_into().unwrap()) as usize;
    let fde = loop {
        let kind = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        assert_ne!(kind, 0, "no FDE extension");
        if kind == 0x0537_be77 {
            break read_u64(&bytes, at as u64 + 8);
        }
        at += 8 + len.next_multiple_of(8);
    };
    let target = fde + 2 * 65536;
    patch(&img, l2 + 8, (1 << 63) | target, 8);
    let before = fs::read(&img).unwrap();
    let mut q: Qcow2<File> = Qcow2::open(writable(&img), Some(b"right-pw")).unwrap();
    let mut scratch = vec![0u8; q.write_scratch_len()];
    let e = q.write_at(65536 + 7, &[1; 700], &mut scratch).unwrap_err();
    assert!(
        matches!(e, Error::MetadataOverlap { what: "LUKS header area", host_offset, .. } if host_offset == target),
        "{e:?}"
    );
    drop(q);
    assert!(fs::read(&img).unwrap() == before, "the file changed");
}
