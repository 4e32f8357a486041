//! The JSON models of qemu-img's QAPI types that `qluks` prints: `ImageInfo` (`info`),
//! `ImageCheck` (`check`), `MapEntry` (`map`) and `BlockMeasureInfo` (`measure`), with
//! qemu-img's key names and optional keys left out exactly where qemu-img leaves them out.
//! Facts only qluks knows are extra keys named `qluks-...`; they never replace qemu's keys.
use std::io::Write;

use serde::Serialize;

/// `ImageInfo`: what `qemu-img info --output=json` prints for one image.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// The image's children as qemu's block graph has them (the protocol `file` node).
    pub children: Vec<ChildInfo>,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// The name the image was opened by.
    pub filename: String,
    /// Cluster size, for formats that have clusters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Format name (`qcow2`, `luks`, `raw`, `qcow`, `file`).
    pub format: String,
    /// Bytes the file takes on its filesystem (allocated blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<u64>,
    /// Format-specific facts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_specific: Option<FormatSpecific>,
    /// Present (and true) only for encrypted images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// The backing file name as the image stores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    /// The backing file name resolved against the image's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_backing_filename: Option<String>,
    /// The backing format the image declares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename_format: Option<String>,
    /// Internal snapshots (left out when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotInfo>,
    /// Whether the image is marked dirty (qcow2: needs a refcount rebuild).
    pub dirty_flag: bool,
    /// qluks only: the AES backend that would decrypt this image on this machine.
    #[serde(rename = "qluks-backend", skip_serializing_if = "Option::is_none")]
    pub qluks_backend: Option<String>,
    /// qluks only: qcow2 feature bits by name, unknown header extensions.
    #[serde(rename = "qluks-qcow2", skip_serializing_if = "Option::is_none")]
    pub qluks_qcow2: Option<QluksQcow2>,
    /// qluks only: LUKS2 metadata qemu cannot show (qemu reads LUKS1 only).
    #[serde(rename = "qluks-luks2", skip_serializing_if = "Option::is_none")]
    pub qluks_luks2: Option<serde_json::Value>,
}

/// One child node (`{"name": "file", "info": {...}}`).
#[derive(Serialize, Debug, Clone)]
pub struct ChildInfo {
    /// The child's role.
    pub name: String,
    /// Its description.
    pub info: ImageInfo,
}

/// `ImageInfoSpecific`: `{"type": ..., "data": {...}}`.
#[derive(Serialize, Debug, Clone)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum FormatSpecific {
    /// A qcow2 image.
    Qcow2(Qcow2Specific),
    /// A LUKS volume.
    Luks(LuksSpecific),
    /// A plain file (the protocol node).
    File(FileSpecific),
}

/// `ImageInfoSpecificFile`: qemu shows nothing for a file on an ordinary filesystem.
#[derive(Serialize, Debug, Clone, Default)]
pub struct FileSpecific {}

/// `ImageInfoSpecificQCow2`.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "kebab-case")]
pub struct Qcow2Specific {
    /// `0.10` (version 2) or `1.1` (version 3).
    pub compat: String,
    /// The external data file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
    /// Whether the external data file is raw (version 3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file_raw: Option<bool>,
    /// Whether L2 entries have subclusters (version 3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_l2: Option<bool>,
    /// Lazy refcounts (version 3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy_refcounts: Option<bool>,
    /// The corrupt bit (version 3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<bool>,
    /// Refcount width.
    pub refcount_bits: u32,
    /// Encryption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Qcow2Encrypt>,
    /// Persistent dirty bitmaps (only when the image has some).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmaps: Option<Vec<Qcow2BitmapInfo>>,
    /// `zlib` or `zstd`.
    pub compression_type: String,
}

/// `Qcow2BitmapInfo`: one persistent dirty bitmap.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Qcow2BitmapInfo {
    /// Its name.
    pub name: String,
    /// Bytes per bit.
    pub granularity: u64,
    /// `in-use`, `auto`.
    pub flags: Vec<String>,
}

/// `ImageInfoSpecificQCow2Encryption`: `{"format": "aes"}` or `{"format": "luks", ...}`.
#[derive(Serialize, Debug, Clone)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Qcow2Encrypt {
    /// Legacy AES-CBC.
    Aes {},
    /// An embedded LUKS header.
    Luks(LuksSpecific),
}

/// `QCryptoBlockInfoLUKS`.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "kebab-case")]
pub struct LuksSpecific {
    /// `aes-256`, ...
    pub cipher_alg: String,
    /// `xts`, `cbc`, `ecb`.
    pub cipher_mode: String,
    /// `plain`, `plain64`, `essiv`.
    pub ivgen_alg: String,
    /// ESSIV's hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivgen_hash_alg: Option<String>,
    /// The hash of the PBKDF2 and anti-forensic splitter.
    pub hash_alg: String,
    /// Whether the header lives in another file (never, for qluks).
    pub detached_header: bool,
    /// Offset of the encrypted payload in bytes.
    pub payload_offset: u64,
    /// PBKDF2 iterations of the master key digest.
    pub master_key_iters: u64,
    /// The volume UUID.
    pub uuid: String,
    /// The keyslots.
    pub slots: Vec<LuksSlot>,
    /// qluks only: the LUKS version (qemu reads only version 1).
    #[serde(rename = "qluks-luks-version", skip_serializing_if = "Option::is_none")]
    pub qluks_luks_version: Option<u16>,
}

/// `QCryptoBlockInfoLUKSSlot`: iterations and stripes only for active slots.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "kebab-case")]
pub struct LuksSlot {
    /// In use.
    pub active: bool,
    /// PBKDF2 iterations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iters: Option<u64>,
    /// Anti-forensic stripes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripes: Option<u64>,
    /// Offset of the key material in bytes.
    pub key_offset: u64,
}

/// `SnapshotInfo`.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotInfo {
    /// Unique id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Size of the saved VM state.
    pub vm_state_size: u64,
    /// Creation time, seconds.
    pub date_sec: u64,
    /// Creation time, nanoseconds part.
    pub date_nsec: u64,
    /// Guest clock, seconds.
    pub vm_clock_sec: u64,
    /// Guest clock, nanoseconds part.
    pub vm_clock_nsec: u64,
    /// Instruction count, when the snapshot records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icount: Option<u64>,
}

/// qluks-only qcow2 facts.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "kebab-case")]
pub struct QluksQcow2 {
    /// Header version (2 or 3).
    pub version: u32,
    /// Incompatible feature bits by name.
    pub incompatible_features: Vec<String>,
    /// Compatible feature bits by name.
    pub compatible_features: Vec<String>,
    /// Autoclear feature bits by name.
    pub autoclear_features: Vec<String>,
    /// Header extensions qluks does not know: type and length.
    pub unknown_extensions: Vec<UnknownExtension>,
    /// The embedded LUKS header's place (offset, length), when encrypted with LUKS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luks_header: Option<(u64, u64)>,
}

/// A header extension qluks does not know.
#[derive(Serialize, Debug, Clone)]
pub struct UnknownExtension {
    /// Its type.
    #[serde(rename = "type")]
    pub ext_type: u32,
    /// Its length.
    pub length: u32,
}

/// `ImageCheck`: the counters only when non-zero, as qemu-img prints them.
#[derive(Serialize, Debug, Clone, Default)]
#[serde(rename_all = "kebab-case")]
pub struct ImageCheck {
    /// The image.
    pub filename: String,
    /// Its format.
    pub format: String,
    /// Internal errors of the check.
    pub check_errors: u64,
    /// End of the last cluster in use.
    #[serde(skip_serializing_if = "is_zero")]
    pub image_end_offset: u64,
    /// Corruptions found.
    #[serde(skip_serializing_if = "is_zero")]
    pub corruptions: u64,
    /// Leaked clusters found.
    #[serde(skip_serializing_if = "is_zero")]
    pub leaks: u64,
    /// Corruptions repaired.
    #[serde(skip_serializing_if = "is_zero")]
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    #[serde(skip_serializing_if = "is_zero")]
    pub leaks_fixed: u64,
    /// Guest clusters.
    #[serde(skip_serializing_if = "is_zero")]
    pub total_clusters: u64,
    /// Guest clusters allocated.
    #[serde(skip_serializing_if = "is_zero")]
    pub allocated_clusters: u64,
    /// Allocated clusters not following their predecessor on the host.
    #[serde(skip_serializing_if = "is_zero")]
    pub fragmented_clusters: u64,
    /// Compressed clusters.
    #[serde(skip_serializing_if = "is_zero")]
    pub compressed_clusters: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `MapEntry` of `qemu-img map --output=json`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// Guest offset.
    pub start: u64,
    /// Length.
    pub length: u64,
    /// Layer (0 = top).
    pub depth: usize,
    /// Allocated in some layer.
    pub present: bool,
    /// Reads as zero.
    pub zero: bool,
    /// Holds data.
    pub data: bool,
    /// Compressed.
    pub compressed: bool,
    /// Host offset, where qemu reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl From<&qluks::qcow2::extent::Extent> for MapEntry {
    fn from(e: &qluks::qcow2::extent::Extent) -> MapEntry {
        MapEntry {
            start: e.start,
            length: e.length,
            depth: e.depth,
            present: e.present(),
            zero: e.zero(),
            data: e.data(),
            compressed: e.compressed(),
            offset: e.offset(),
        }
    }
}

/// `BlockMeasureInfo`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct BlockMeasureInfo {
    /// Bytes the new image needs for the data given.
    pub required: u64,
    /// Bytes it needs when fully allocated.
    pub fully_allocated: u64,
    /// Bytes for persistent bitmaps (only when both sides support them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmaps: Option<u64>,
}

/// `value` pretty-printed the way qemu-img prints its JSON (four-space indent), with a newline.
pub fn pretty<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    // Serializing these plain structs into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    out.push(b'\n');
    String::from_utf8(out).unwrap_or_default()
}

/// One map entry on one line exactly as qemu-img prints it: `{ "start": 0, "length": 65536, ... }`.
pub fn map_line(entry: &MapEntry) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, MapFormatter);
    if entry.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// qemu-img map's one-line object layout: `{ "key": value, "key": value}`.
struct MapFormatter;

impl serde_json::ser::Formatter for MapFormatter {
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b"{")
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        w.write_all(if first { b" " } else { b", " })
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_line_is_qemu_img_layout() {
        let e = MapEntry {
            start: 0,
            length: 65536,
            depth: 1,
            present: true,
            zero: false,
            data: true,
            compressed: false,
            offset: Some(327680),
        };
        assert_eq!(
            map_line(&e),
            "{ \"start\": 0, \"length\": 65536, \"depth\": 1, \"present\": true, \"zero\": false, \"data\": true, \
             \"compressed\": false, \"offset\": 327680}"
        );
        let e = MapEntry { offset: None, ..e };
        assert!(map_line(&e).ends_with("\"compressed\": false}"));
    }

    #[test]
    fn format_specific_is_tagged_like_qapi() {
        let v = serde_json::to_value(FormatSpecific::File(FileSpecific {})).unwrap();
        assert_eq!(v, serde_json::json!({"type": "file", "data": {}}));
        let v = serde_json::to_value(Qcow2Encrypt::Aes {}).unwrap();
        assert_eq!(v, serde_json::json!({"format": "aes"}));
        let v = serde_json::to_value(Qcow2Encrypt::Luks(LuksSpecific::default())).unwrap();
        assert_eq!(v["format"], "luks");
        assert_eq!(v["detached-header"], false);
    }
}
