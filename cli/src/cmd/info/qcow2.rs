//! `qluks info` for qcow2 and qcow images: geometry, compat, features, encryption details,
//! backing file and format, snapshots. Nothing is unlocked.
use std::error::Error;
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;

use qluks::io::BlockIo;
use qluks::luks::luks1;
use qluks::qcow2::feature::{known_name, table_name, FeatureKind};
use qluks::qcow2::{CryptMethod, Qcow2};
use serde_json::{json, Value};

use crate::escape::shown;
use qluks::qcow2::extension::BitmapsExt;

use crate::json::{
    FormatSpecific, ImageInfo, Qcow2BitmapInfo, Qcow2Encrypt, Qcow2Specific, QluksQcow2, SnapshotInfo, UnknownExtension,
};

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Names of the set bits of `bits`, from QEMU's names or the image's feature name table.
fn feature_names(bits: u64, kind: FeatureKind, table: &[u8]) -> Vec<String> {
    (0..64)
        .filter(|b| bits & (1u64 << b) != 0)
        .map(|b| match known_name(kind, b) {
            Some(n) => n.to_string(),
            None => match table_name(table, kind, b) {
                Some(n) if !n.is_empty() => lossy(n.as_bytes()),
                _ => format!("bit {b}"),
            },
        })
        .collect()
}

/// qemu-img's `ImageInfo` facts of the qcow2 image in `file` (opened as `filename`) into `info`.
pub fn qcow2_image_info(filename: &str, file: File, info: &mut ImageInfo) -> Result<(), Box<dyn Error>> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", shown(filename));
    let mut q: Qcow2<File> = Qcow2::open_metadata(file, None).map_err(|e| at(&e))?;
    let h = *q.header();
    let x = q.extensions().clone();
    let table = x.feature_table();
    let v3 = h.version >= 3;
    let encrypt = match h.crypt_method {
        CryptMethod::None => None,
        CryptMethod::Aes => Some(Qcow2Encrypt::Aes {}),
        CryptMethod::Luks => {
            let fde = x.fde.ok_or_else(|| at(&"the LUKS header extension is missing"))?;
            let (Some(mut file), _) = q.into_inner() else { return Err(at(&"image not open").into()) };
            let l = luks1::Luks1Header::read(&mut file, fde.offset)
                .map_err(|e| at(&format!("LUKS header at {:#x}: {e}", fde.offset)))?;
            q = Qcow2::open_metadata(file, None).map_err(|e| at(&e))?;
            Some(Qcow2Encrypt::Luks(crate::cmd::info::common::luks1_specific(&l)))
        }
    };
    let has_data_file = h.incompatible_features & 4 != 0;
    // Like qemu: the bitmaps extension counts only with its autoclear bit set.
    let bitmaps = match x.bitmaps.filter(|_| v3 && h.autoclear_features & 1 != 0) {
        Some(b) => {
            let (Some(mut file), _) = q.into_inner() else { return Err(at(&"image not open").into()) };
            let list = read_bitmaps(&mut file, &b).map_err(|e| at(&e))?;
            q = Qcow2::open_metadata(file, None).map_err(|e| at(&e))?;
            Some(list)
        }
        None => None,
    };
    info.cluster_size = Some(h.cluster_size());
    info.virtual_size = h.size;
    info.dirty_flag = h.incompatible_features & 1 != 0;
    if encrypt.is_some() {
        info.encrypted = Some(true);
        info.qluks_backend = Some(qluks_hal::Backend::best().name().into());
    }
    info.format_specific = Some(FormatSpecific::Qcow2(Qcow2Specific {
        compat: if v3 { "1.1" } else { "0.10" }.into(),
        data_file: x.data_file.as_ref().map(|n| lossy(n.as_bytes())),
        data_file_raw: has_data_file.then_some(h.autoclear_features & 2 != 0),
        extended_l2: v3.then_some(h.extended_l2()),
        lazy_refcounts: v3.then_some(h.compatible_features & 1 != 0),
        corrupt: v3.then_some(h.incompatible_features & 2 != 0),
        refcount_bits: h.refcount_bits(),
        encrypt,
        bitmaps,
        compression_type: h.compression_type.name().into(),
    }));
    info.qluks_qcow2 = Some(QluksQcow2 {
        version: h.version,
        incompatible_features: feature_names(h.incompatible_features, FeatureKind::Incompatible, table),
        compatible_features: feature_names(h.compatible_features, FeatureKind::Compatible, table),
        autoclear_features: feature_names(h.autoclear_features, FeatureKind::Autoclear, table),
        unknown_extensions: x
            .unknown()
            .iter()
            .map(|u| UnknownExtension { ext_type: u.ext_type, length: u.len })
            .collect(),
        luks_header: x.fde.map(|f| (f.offset, f.length)),
    });
    if let Some(b) = &x.backing_file {
        let name = lossy(b.as_bytes());
        info.full_backing_filename = Some(crate::cmd::info::common::full_backing_filename(filename, &name));
        info.backing_filename = Some(name);
        info.backing_filename_format = x.backing_format.as_ref().map(|n| lossy(n.as_bytes()));
    }
    for s in q.snapshots() {
        let s = s.map_err(|e| at(&e))?;
        info.snapshots.push(SnapshotInfo {
            id: lossy(s.id.as_bytes()),
            name: lossy(s.name.as_bytes()),
            vm_state_size: s.vm_state_size,
            date_sec: s.date_sec.into(),
            date_nsec: s.date_nsec.into(),
            vm_clock_sec: s.vm_clock_nsec / 1_000_000_000,
            vm_clock_nsec: s.vm_clock_nsec % 1_000_000_000,
            icount: s.icount.filter(|&i| i != u64::MAX),
        });
    }
    Ok(())
}

/// Largest bitmap directory qemu accepts (1024 bytes for each of at most 65535 bitmaps).
const MAX_BITMAP_DIRECTORY: u64 = 1024 * 65535;

/// The persistent dirty bitmaps listed in the bitmap directory `b` points at (name,
/// granularity, flags as qemu names them). Reads what the directory holds, at most
/// [`MAX_BITMAP_DIRECTORY`] bytes and never past the file's end.
fn read_bitmaps(file: &mut File, b: &BitmapsExt) -> Result<Vec<Qcow2BitmapInfo>, String> {
    let file_len = BlockIo::size(file).map_err(|e| e.to_string())?;
    let size = b.bitmap_directory_size;
    let fits = b.bitmap_directory_offset.checked_add(size).is_some_and(|end| end <= file_len);
    if size > MAX_BITMAP_DIRECTORY || !fits {
        return Err(format!(
            "bitmap directory at {:#x} of {size} bytes does not fit in the file (or exceeds {MAX_BITMAP_DIRECTORY})",
            b.bitmap_directory_offset
        ));
    }
    let mut dir = vec![0u8; size as usize];
    BlockIo::read_at(file, b.bitmap_directory_offset, &mut dir).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for i in 0..b.nb_bitmaps {
        let bad = || {
            format!(
                "bitmap directory entry {i} at {:#x} runs past the directory",
                b.bitmap_directory_offset + at as u64
            )
        };
        let entry = dir.get(at..at + 24).ok_or_else(bad)?;
        let flags = u32::from_be_bytes([entry[12], entry[13], entry[14], entry[15]]);
        let granularity_bits = entry[17];
        let name_len = usize::from(u16::from_be_bytes([entry[18], entry[19]]));
        let extra = u32::from_be_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        let name_at = at + 24 + extra;
        let name = dir.get(name_at..name_at + name_len).ok_or_else(bad)?;
        if granularity_bits > 63 {
            return Err(format!("bitmap {i}: granularity of 2^{granularity_bits} bytes"));
        }
        let mut names = Vec::new();
        if flags & 1 != 0 {
            names.push("in-use".to_string());
        }
        if flags & 2 != 0 {
            names.push("auto".to_string());
        }
        out.push(Qcow2BitmapInfo { name: lossy(name), granularity: 1 << granularity_bits, flags: names });
        at = (name_at + name_len).next_multiple_of(8);
    }
    Ok(out)
}

/// qemu-img's `ImageInfo` facts of the qcow (v1) image in `file` (opened as `filename`).
pub fn qcow_image_info(filename: &str, mut file: File, info: &mut ImageInfo) -> Result<(), Box<dyn Error>> {
    let mut raw = [0u8; qluks::qcow::header::HEADER_LEN];
    BlockIo::read_at(&mut file, 0, &mut raw)?;
    let h = qluks::qcow::QcowHeader::parse(&raw).map_err(|e| format!("{}: {e}", shown(filename)))?;
    info.virtual_size = h.virtual_size();
    info.cluster_size = Some(h.cluster_size() as u64);
    if h.crypt_method != qluks::qcow::CryptMethod::None {
        info.encrypted = Some(true);
        info.qluks_backend = Some(qluks_hal::Backend::best().name().into());
    }
    if h.backing_file_offset != 0 && h.backing_file_size as usize <= qluks::qcow::header::MAX_BACKING_FILE_NAME {
        let mut b = vec![0u8; h.backing_file_size as usize];
        BlockIo::read_at(&mut file, h.backing_file_offset, &mut b)?;
        let name = lossy(&b);
        info.full_backing_filename = Some(crate::cmd::info::common::full_backing_filename(filename, &name));
        info.backing_filename = Some(name);
    }
    Ok(())
}

/// The description of the qcow2 image in `file`.
pub fn qcow2_info(path: &Path, file: File) -> Result<String, Box<dyn Error>> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut q: Qcow2<File> = Qcow2::open_metadata(file, None).map_err(|e| at(&e))?;
    let h = *q.header();
    let x = q.extensions().clone();
    let table = x.feature_table();
    let compat = if h.version == 2 { "0.10" } else { "1.1" };
    let encryption = match h.crypt_method {
        CryptMethod::None => Value::Null,
        CryptMethod::Aes => json!({ "format": "aes" }),
        CryptMethod::Luks => {
            let fde = x.fde.ok_or("FDE extension missing")?;
            let (Some(mut file), _) = q.into_inner() else { return Err("image not open".into()) };
            let l = luks1::Luks1Header::read(&mut file, fde.offset).map_err(|e| at(&e))?;
            let slots: Vec<Value> = l
                .keyslots
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    json!({ "index": i, "active": k.active, "iterations": k.iterations,
                            "key_offset": k.key_offset as u64 * 512, "stripes": k.stripes })
                })
                .collect();
            let v = json!({
                "format": "luks",
                "cipher": l.cipher.to_string(),
                "cipher_alg": format!("{}-{}", l.cipher.cipher_name(), l.cipher.aes_bits()),
                "cipher_mode": l.cipher.mode_name(),
                "hash": l.hash.name(),
                "key_bytes": l.key_bytes,
                "uuid": l.uuid_str(),
                "mk_iterations": l.mk_iterations,
                "header_offset": fde.offset,
                "header_length": fde.length,
                "payload_offset": l.payload_offset_bytes(),
                "keyslots": slots,
            });
            q = Qcow2::open_metadata(file, None).map_err(|e| at(&e))?;
            v
        }
    };
    let mut snapshots = Vec::new();
    for s in q.snapshots() {
        let s = s.map_err(|e| at(&e))?;
        snapshots.push(json!({
            "id": lossy(s.id.as_bytes()),
            "name": lossy(s.name.as_bytes()),
            "date_sec": s.date_sec,
            "date_nsec": s.date_nsec,
            "vm_clock_nsec": s.vm_clock_nsec,
            "vm_state_size": s.vm_state_size,
            "disk_size": s.disk_size,
            "l1_size": s.l1_size,
        }));
    }
    let file_size = q.into_inner().0.ok_or("image not open")?.size()?;
    let v = json!({
        "format": "qcow2",
        "filename": path.display().to_string(),
        "virtual_size": h.size,
        "actual_size_file": file_size,
        "cluster_size": h.cluster_size(),
        "version": h.version,
        "compat": compat,
        "refcount_bits": h.refcount_bits(),
        "compression_type": h.compression_type.name(),
        "extended_l2": h.extended_l2(),
        "lazy_refcounts": h.compatible_features & 1 != 0,
        "corrupt": h.incompatible_features & 2 != 0,
        "dirty": h.incompatible_features & 1 != 0,
        "incompatible_features": feature_names(h.incompatible_features, FeatureKind::Incompatible, table),
        "compatible_features": feature_names(h.compatible_features, FeatureKind::Compatible, table),
        "autoclear_features": feature_names(h.autoclear_features, FeatureKind::Autoclear, table),
        "encrypted": h.crypt_method != CryptMethod::None,
        "encryption": encryption,
        "backing_file": x.backing_file.as_ref().map(|n| lossy(n.as_bytes())),
        "backing_file_format": x.backing_format.as_ref().map(|n| lossy(n.as_bytes())),
        "data_file": x.data_file.as_ref().map(|n| lossy(n.as_bytes())),
        "data_file_raw": h.autoclear_features & 2 != 0,
        "unknown_extensions": x.unknown().iter().map(|u| json!({"type": u.ext_type, "length": u.len})).collect::<Vec<_>>(),
        "snapshots": snapshots,
    });
    Ok(human(&v))
}

/// The human form: one `key: value` per line, nested objects indented.
fn human(v: &Value) -> String {
    let mut s = String::new();
    let skip = ["snapshots", "encryption"];
    for (k, val) in v.as_object().expect("object") {
        if skip.contains(&k.as_str()) || val.is_null() {
            continue;
        }
        let shown = match val {
            Value::Array(a) if a.is_empty() => continue,
            Value::Array(a) => a.iter().map(value_shown).collect::<Vec<_>>().join(", "),
            other => value_shown(other),
        };
        let _ = writeln!(s, "{}: {shown}", k.replace('_', " "));
    }
    if let Some(e) = v.get("encryption").filter(|e| !e.is_null()) {
        let _ = writeln!(s, "encryption:");
        for (k, val) in e.as_object().expect("object") {
            if k == "keyslots" {
                for slot in val.as_array().expect("array") {
                    if slot["active"] == true {
                        let _ = writeln!(
                            s,
                            "    keyslot {}: active, iterations {}, key material at {}",
                            slot["index"], slot["iterations"], slot["key_offset"]
                        );
                    }
                }
                continue;
            }
            let _ = writeln!(s, "    {}: {}", k.replace('_', " "), value_shown(val));
        }
    }
    let snaps = v["snapshots"].as_array().expect("array");
    if !snaps.is_empty() {
        let _ = writeln!(s, "snapshots:");
        s.push_str(&crate::cmd::snapshot::table(snaps));
    }
    s
}

/// A JSON value for the human form: strings (which may come from the image) escaped.
fn value_shown(v: &Value) -> String {
    match v {
        Value::String(t) => shown(t),
        other => other.to_string(),
    }
}

/// The description of the qcow (v1) image in `file`.
pub fn qcow_info(path: &Path, mut file: File) -> Result<String, Box<dyn Error>> {
    let mut raw = [0u8; qluks::qcow::header::HEADER_LEN];
    BlockIo::read_at(&mut file, 0, &mut raw)?;
    let h = qluks::qcow::QcowHeader::parse(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut backing = None;
    if h.backing_file_offset != 0 && h.backing_file_size as usize <= qluks::qcow::header::MAX_BACKING_FILE_NAME {
        let mut b = vec![0u8; h.backing_file_size as usize];
        BlockIo::read_at(&mut file, h.backing_file_offset, &mut b)?;
        backing = Some(lossy(&b));
    }
    let v = json!({
        "format": "qcow",
        "filename": path.display().to_string(),
        "virtual_size": h.virtual_size(),
        "cluster_size": h.cluster_size(),
        "encrypted": h.crypt_method != qluks::qcow::CryptMethod::None,
        "backing_file": backing,
    });
    Ok(human(&json!({ "format": v["format"], "filename": v["filename"], "virtual_size": v["virtual_size"],
        "cluster_size": v["cluster_size"], "encrypted": v["encrypted"], "backing_file": v["backing_file"],
        "snapshots": [] })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bitmap directory of `entries` at offset 0 of a scratch file.
    fn directory(name: &str, entries: &[u8]) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("qluks-bitmaps-{name}-{}", std::process::id()));
        std::fs::write(&path, entries).unwrap();
        (File::open(&path).unwrap(), path)
    }

    fn entry(name: &[u8], flags: u32, granularity_bits: u8, extra: u32) -> Vec<u8> {
        let mut e = vec![0u8; 24];
        e[12..16].copy_from_slice(&flags.to_be_bytes());
        e[17] = granularity_bits;
        e[18..20].copy_from_slice(&(name.len() as u16).to_be_bytes());
        e[20..24].copy_from_slice(&extra.to_be_bytes());
        e.extend(std::iter::repeat_n(0, extra as usize));
        e.extend_from_slice(name);
        e.resize(e.len().next_multiple_of(8), 0);
        e
    }

    #[test]
    fn bitmap_directory_is_read_like_qemu_and_bounded() {
        let mut dir = entry(b"b0", 2, 16, 0);
        dir.extend(entry(b"second", 1, 20, 8));
        let (mut f, path) = directory("ok", &dir);
        let ext = BitmapsExt { nb_bitmaps: 2, bitmap_directory_size: dir.len() as u64, bitmap_directory_offset: 0 };
        let list = read_bitmaps(&mut f, &ext).unwrap();
        assert_eq!(
            (list[0].name.as_str(), list[0].granularity, list[0].flags.clone()),
            ("b0", 65536, vec!["auto".into()])
        );
        assert_eq!(
            (list[1].name.as_str(), list[1].granularity, list[1].flags.clone()),
            ("second", 1 << 20, vec!["in-use".into()])
        );
        // More entries than the directory holds, a directory past the end of the file, a
        // name past the directory, an absurd granularity: typed errors, no panic.
        for (nb, size, offset) in [(3, dir.len() as u64, 0), (2, dir.len() as u64 + 1, 0), (2, 8, u64::MAX - 4)] {
            let ext = BitmapsExt { nb_bitmaps: nb, bitmap_directory_size: size, bitmap_directory_offset: offset };
            assert!(read_bitmaps(&mut f, &ext).is_err(), "{nb} {size} {offset}");
        }
        let _ = std::fs::remove_file(path);
        // Extra data claimed past the directory, then a granularity of 2^64.
        let mut bad = entry(b"x", 0, 16, 0);
        bad[20..24].copy_from_slice(&(u32::MAX - 30).to_be_bytes());
        let (mut f, path) = directory("bad", &bad);
        let ext = BitmapsExt { nb_bitmaps: 1, bitmap_directory_size: 32, bitmap_directory_offset: 0 };
        assert!(read_bitmaps(&mut f, &ext).is_err());
        let _ = std::fs::remove_file(path);
        let bad = entry(b"x", 0, 64, 0);
        let (mut f, path) = directory("granularity", &bad);
        let ext = BitmapsExt { nb_bitmaps: 1, bitmap_directory_size: 32, bitmap_directory_offset: 0 };
        assert!(read_bitmaps(&mut f, &ext).is_err());
        let _ = std::fs::remove_file(path);
    }
}
