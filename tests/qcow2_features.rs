//! Feature bits: an unknown incompatible bit is refused and named from the image's feature
//! name table; unknown compatible/autoclear bits and unknown extensions do not stop a read.
mod common;

use std::fs::File;
use std::process::Command;

use qluks::qcow2::{Error, Qcow2};

fn image(dir: &common::TempDir) -> (std::path::PathBuf, Vec<u8>) {
    let img = dir.join("f.qcow2");
    common::run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&img).arg("1M"));
    let bytes = std::fs::read(&img).unwrap();
    (img, bytes)
}

/// Offset of the feature table entry (type, bit) in the header cluster.
fn table_entry(bytes: &[u8], kind: u8, bit: u8) -> usize {
    let table = bytes[..4096].windows(4).position(|w| w == [0x68, 0x03, 0xf8, 0x57]).expect("feature table") + 8;
    (table..table + 48 * 16).step_by(48).find(|&e| bytes[e] == kind && bytes[e + 1] == bit).expect("entry")
}

#[test]
fn unknown_incompatible_bit_is_refused_by_its_table_name() {
    let t = "unknown_incompatible_bit_is_refused_by_its_table_name";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(t);
    let (img, mut bytes) = image(&dir);
    // Rename the table entry of incompatible bit 4 to bit 10, "future widgets", and set bit 10.
    let e = table_entry(&bytes, 0, 4);
    bytes[e + 1] = 10;
    bytes[e + 2..e + 48].fill(0);
    bytes[e + 2..e + 16].copy_from_slice(b"future widgets");
    bytes[72 + 6] |= 1 << 2; // bit 10 of the big-endian u64 at 72
    std::fs::write(&img, &bytes).unwrap();
    let err = Qcow2::<File>::open(File::open(&img).unwrap(), None).unwrap_err();
    match &err {
        Error::UnknownIncompatibleFeature { bit: 10, name } => assert_eq!(name.as_bytes(), b"future widgets"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("bit 10: future widgets"), "{err}");
}

#[test]
fn unknown_compatible_and_autoclear_bits_and_extensions_are_kept_not_fatal() {
    let t = "unknown_compatible_and_autoclear_bits_and_extensions_are_kept_not_fatal";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(t);
    let (img, mut bytes) = image(&dir);
    bytes[80 + 7] |= 1 << 5; // compatible bit 5
    bytes[88 + 7] |= 1 << 6; // autoclear bit 6
                             // Retype the feature table into an unknown extension.
    let at = bytes[..4096].windows(4).position(|w| w == [0x68, 0x03, 0xf8, 0x57]).unwrap();
    bytes[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    std::fs::write(&img, &bytes).unwrap();
    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), None).unwrap();
    assert_eq!(q.header().compatible_features & (1 << 5), 1 << 5);
    let unknown = q.extensions().unknown();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].ext_type, 0x1234_5678);
    assert_eq!(unknown[0].offset, at as u64 + 8);
    let mut buf = [1u8; 4096];
    q.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}
