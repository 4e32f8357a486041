//! The LUKS2 JSON metadata: keyslots, segments, digests and config, extracted into fixed-size
//! tables and cross-checked.
//!
//! Input is untrusted: every field is type- and range-checked, ids are bounded by the tables'
//! capacities, duplicate members are refused, and the layout is validated (keyslot areas inside
//! the keyslots area and apart from each other and the data, digests referring to existing
//! keyslots and segments). Tokens belong to other programs and are only checked for syntax.
//! Numbers are accepted both as JSON numbers and as decimal strings, as LUKS2 writes 64-bit
//! values in strings.
//!
//! ```
//! use qluks::luks::luks2::metadata::{Kdf, Metadata, MetadataError};
//!
//! # fn main() -> Result<(), MetadataError> {
//! # let disk = doc_support::luks2_volume(b"secret");
//! // `disk` holds a LUKS2 volume; its primary JSON area follows the 4 KiB binary header.
//! // (`Luks2Header::read_into` does this, checksum included, for both copies.)
//! let area = &disk[4096..16384];
//! let json = &area[..area.iter().position(|&b| b == 0).unwrap_or(area.len())];
//! let metadata = Metadata::parse(json, 16384)?;
//!
//! let (id, keyslot) = metadata.keyslots().next().expect("one keyslot");
//! assert!(id == 0 && keyslot.key_size == 64);
//! assert!(matches!(keyslot.kdf, Kdf::Pbkdf2 { iterations: 1000, .. }));
//! let (_, segment) = metadata.data_segment().expect("a data segment");
//! assert_eq!((segment.offset, segment.sector_size), (1 << 20, 4096));
//! assert_eq!(segment.encryption.as_str(), "aes-xts-plain64");
//! assert_eq!(metadata.kdf_memory(), 0); // no Argon2 keyslot
//!
//! // Cross-checks: a keyslot area outside the keyslots area is refused, with its offset.
//! let bad = String::from_utf8_lossy(json).replace("\"offset\":\"32768\"", "\"offset\":\"4096\"");
//! assert!(Metadata::parse(bad.as_bytes(), 16384).is_err());
//! # Ok(())
//! # }
//! # mod doc_support {
//! #     pub struct Rng(pub u64);
//! #     impl rand_core::TryRng for Rng {
//! #         type Error = core::convert::Infallible;
//! #         fn try_next_u32(&mut self) -> Result<u32, Self::Error> { Ok(self.try_next_u64()? as u32) }
//! #         fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
//! #             self.0 ^= self.0 << 13; self.0 ^= self.0 >> 7; self.0 ^= self.0 << 17; Ok(self.0)
//! #         }
//! #         fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
//! #             for b in dst { *b = self.try_next_u64()? as u8; } Ok(())
//! #         }
//! #     }
//! #     impl rand_core::TryCryptoRng for Rng {}
//! #     /// A LUKS2 volume (PBKDF2 keyslot, 16 KiB metadata copies, data at 1 MiB).
//! #     #[allow(dead_code)]
//! #     pub fn luks2_volume(pass: &[u8]) -> Vec<u8> {
//! #         use qluks::luks::luks2::create::{format, CreateKdf, CreateParams};
//! #         let kdf = CreateKdf::Pbkdf2 { hash: qluks::crypto::HashAlg::Sha256, iterations: 1000 };
//! #         let params = CreateParams { kdf, digest_iterations: 1000, data_offset: 1 << 20, ..Default::default() };
//! #         let mut disk = vec![0u8; (1 << 20) + 8192];
//! #         format(&mut qluks::io::MemIo::new(&mut disk), &params, pass, &mut [], &mut Rng(9)).unwrap();
//! #         disk
//! #     }
//! # }
//! ```

use core::fmt;

use super::binary_header::BINARY_HEADER_SIZE;
use super::json::{parse_decimal_u64, JsonError, JsonStr, Parser, ValueKind};
use super::text::{Bytes, Name};

/// Luks2Keyslot ids are 0..32 (cryptsetup's limit).
pub const MAX_KEYSLOTS: usize = 32;
/// Luks2Segment ids are 0..8 (a stable volume has one; reencryption uses up to three).
pub const MAX_SEGMENTS: usize = 8;
/// Luks2Digest ids are 0..8 (cryptsetup's limit).
pub const MAX_DIGESTS: usize = 8;
/// The anti-forensic split LUKS2 uses, like LUKS1.
pub const AF_STRIPES: u32 = 4000;
/// Largest volume or keyslot-area key (AES-256-XTS).
pub const MAX_KEY_SIZE: u32 = 64;
/// PBKDF2 iteration counts above this are refused as absurd (LUKS1's limit).
pub use crate::luks::luks1::MAX_ITERATIONS;
/// cryptsetup's ceiling on Argon2 memory: 4 GiB, in KiB.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;

/// A hash name ("sha256").
pub type HashName = Name<16>;
/// A dm-crypt cipher spec ("aes-xts-plain64", "aes-cbc-essiv:sha256").
pub type CipherName = Name<64>;
/// A salt.
pub type Salt = Bytes<64>;

/// Why the metadata is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataError {
    /// The JSON text itself is malformed.
    Json(JsonError),
    /// A required member is absent.
    MissingField {
        /// The member, as a path ("keyslots.N.kdf.salt").
        field: &'static str,
        /// Offset of the object that lacks it.
        offset: usize,
    },
    /// A member appears twice in the same object.
    DuplicateField {
        /// The member.
        field: &'static str,
        /// Offset of the second occurrence.
        offset: usize,
    },
    /// A member has the wrong type, cannot be decoded, or is out of range.
    BadValue {
        /// The member.
        field: &'static str,
        /// Offset of the value.
        offset: usize,
    },
    /// An id (object key under keyslots/segments/digests, or a reference to one) is not a
    /// decimal number below the section's limit.
    BadId {
        /// "keyslots", "segments" or "digests".
        section: &'static str,
        /// Offset of the id.
        offset: usize,
    },
    /// A type name qluks does not implement (kdf "scrypt", segment "integrity", ...).
    Unsupported {
        /// What the name is the type of.
        what: &'static str,
        /// The name (cut at 16 bytes).
        name: Name<16>,
    },
    /// `config.json_size` disagrees with the binary header's `hdr_size`.
    JsonSizeMismatch {
        /// `config.json_size`.
        json_size: u64,
        /// `hdr_size - 4096`.
        expected: u64,
    },
    /// `config.keyslots_size` is not a multiple of 4096 or overflows.
    BadKeyslotsSize {
        /// The value.
        keyslots_size: u64,
    },
    /// A keyslot area lies (partly) outside the keyslots area.
    AreaOutsideKeyslotsArea {
        /// The keyslot.
        keyslot: u8,
        /// Area offset.
        offset: u64,
        /// Area size.
        size: u64,
    },
    /// A keyslot area is too small for its key material.
    AreaTooSmall {
        /// The keyslot.
        keyslot: u8,
        /// Area size.
        size: u64,
        /// Bytes of key material (key_size * stripes, in whole sectors).
        needed: u64,
    },
    /// Two keyslot areas overlap.
    AreasOverlap {
        /// One keyslot.
        keyslot: u8,
        /// The other.
        other: u8,
    },
    /// A keyslot area reaches into the data segment.
    AreaOverlapsData {
        /// The keyslot.
        keyslot: u8,
        /// The segment.
        segment: u8,
    },
    /// A segment's sector size is not a power of two from 512 to 4096, or its offset or size
    /// is not aligned to it.
    BadSegmentGeometry {
        /// The segment.
        segment: u8,
    },
    /// A segment starts inside the metadata (both header copies and the keyslots area), so
    /// writing its data would overwrite the header; offset 0 (a detached header) is allowed.
    SegmentOverlapsMetadata {
        /// The segment.
        segment: u8,
        /// Its offset.
        offset: u64,
        /// End of the metadata (2 * hdr_size + keyslots_size).
        metadata_end: u64,
    },
    /// A digest names a keyslot or segment that does not exist.
    DanglingReference {
        /// The digest.
        digest: u8,
        /// "keyslot" or "segment".
        kind: &'static str,
        /// The id it names.
        id: u8,
    },
}

impl From<JsonError> for MetadataError {
    fn from(e: JsonError) -> Self {
        MetadataError::Json(e)
    }
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::Json(e) => write!(f, "{e}"),
            MetadataError::MissingField { field, offset } => {
                write!(f, "LUKS2 metadata: {field} is missing (object at byte {offset})")
            }
            MetadataError::DuplicateField { field, offset } => {
                write!(f, "LUKS2 metadata: {field} appears twice (byte {offset})")
            }
            MetadataError::BadValue { field, offset } => {
                write!(f, "LUKS2 metadata: {field} has an invalid value (byte {offset})")
            }
            MetadataError::BadId { section, offset } => write!(
                f,
                "LUKS2 metadata: invalid {section} id at byte {offset} (decimal, below {})",
                match *section {
                    "keyslots" => MAX_KEYSLOTS,
                    "segments" => MAX_SEGMENTS,
                    _ => MAX_DIGESTS,
                }
            ),
            MetadataError::Unsupported { what, name } => write!(f, "LUKS2 {what} \"{name}\" is not supported"),
            MetadataError::JsonSizeMismatch { json_size, expected } => {
                write!(f, "LUKS2 config.json_size {json_size} does not match the header ({expected})")
            }
            MetadataError::BadKeyslotsSize { keyslots_size } => {
                write!(f, "LUKS2 config.keyslots_size {keyslots_size} is invalid")
            }
            MetadataError::AreaOutsideKeyslotsArea { keyslot, offset, size } => write!(
                f,
                "LUKS2 keyslot {keyslot}: area at {offset:#x} of {size:#x} bytes is outside the keyslots area"
            ),
            MetadataError::AreaTooSmall { keyslot, size, needed } => {
                write!(f, "LUKS2 keyslot {keyslot}: area of {size} bytes cannot hold {needed} bytes of key material")
            }
            MetadataError::AreasOverlap { keyslot, other } => {
                write!(f, "LUKS2 keyslots {keyslot} and {other} have overlapping areas")
            }
            MetadataError::AreaOverlapsData { keyslot, segment } => {
                write!(f, "LUKS2 keyslot {keyslot}: area overlaps data segment {segment}")
            }
            MetadataError::BadSegmentGeometry { segment } => write!(
                f,
                "LUKS2 segment {segment}: sector_size must be 512..=4096 (power of two) and offset/size aligned"
            ),
            MetadataError::SegmentOverlapsMetadata { segment, offset, metadata_end } => write!(
                f,
                "LUKS2 segment {segment}: offset {offset:#x} lies inside the metadata (which ends at {metadata_end:#x})"
            ),
            MetadataError::DanglingReference { digest, kind, id } => {
                write!(f, "LUKS2 digest {digest} refers to missing {kind} {id}")
            }
        }
    }
}

impl core::error::Error for MetadataError {}

/// Luks2Keyslot priority: which slots are tried first when none is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// 0: only used when chosen explicitly.
    Ignore,
    /// 1: the default.
    Normal,
    /// 2: tried before normal slots.
    High,
}

/// The Argon2 variant of a keyslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argon2Variant {
    /// `argon2i`
    Argon2i,
    /// `argon2id`
    Argon2id,
}

/// How a keyslot turns the passphrase into the key of its area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// `pbkdf2`
    Pbkdf2 {
        /// PRF hash.
        hash: HashName,
        /// Iterations (>= 1).
        iterations: u32,
        /// Salt.
        salt: Salt,
    },
    /// `argon2i` / `argon2id`
    Argon2 {
        /// Variant.
        variant: Argon2Variant,
        /// Passes (`time`).
        time: u32,
        /// Memory in KiB.
        memory_kib: u32,
        /// Lanes (`cpus`).
        cpus: u32,
        /// Salt.
        salt: Salt,
    },
}

impl Kdf {
    /// The kdf's name as LUKS2 writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Kdf::Pbkdf2 { .. } => "pbkdf2",
            Kdf::Argon2 { variant: Argon2Variant::Argon2i, .. } => "argon2i",
            Kdf::Argon2 { variant: Argon2Variant::Argon2id, .. } => "argon2id",
        }
    }
}

/// The anti-forensic splitter (`af`, type `luks1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Af {
    /// Always 4000.
    pub stripes: u32,
    /// Diffusion hash.
    pub hash: HashName,
}

/// Where a keyslot's key material lives (`area`, type `raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// Byte offset from the start of the device (the header).
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Cipher the key material is encrypted with, IV sectors counting from 0 at `offset`.
    pub encryption: CipherName,
    /// Key size of that cipher in bytes.
    pub key_size: u32,
}

/// A `luks2` keyslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Luks2Keyslot {
    /// Size of the volume key this slot stores, in bytes.
    pub key_size: u32,
    /// Priority.
    pub priority: Priority,
    /// Passphrase to area key.
    pub kdf: Kdf,
    /// Anti-forensic split.
    pub af: Af,
    /// Key material area.
    pub area: Area,
}

impl Luks2Keyslot {
    /// Bytes of key material: key_size * stripes, rounded up to whole 512-byte sectors.
    pub fn material_len(&self) -> u64 {
        (u64::from(self.key_size) * u64::from(self.af.stripes)).div_ceil(512) * 512
    }
}

/// What a segment maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentType {
    /// `crypt`: encrypted data.
    Crypt,
    /// `linear`: plaintext (only during reencryption).
    Linear,
}

/// A data segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Luks2Segment {
    /// Type.
    pub segment_type: SegmentType,
    /// Byte offset of the data on the device.
    pub offset: u64,
    /// Size in bytes; `None` for `dynamic` (up to the end of the device).
    pub size: Option<u64>,
    /// Added to the IV sector number (in 512-byte units).
    pub iv_tweak: u64,
    /// Cipher spec (`crypt` only; empty for `linear`).
    pub encryption: CipherName,
    /// Encryption sector size: 512, 1024, 2048 or 4096.
    pub sector_size: u32,
    /// Whether `flags` mark it as a reencryption backup (not data).
    pub backup: bool,
}

/// A `pbkdf2` digest: proves a candidate volume key right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Luks2Digest {
    /// Keyslots holding the key (bit i = keyslot i).
    pub keyslots: u32,
    /// Segments encrypted with the key (bit i = segment i).
    pub segments: u8,
    /// PBKDF2 hash.
    pub hash: HashName,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: Salt,
    /// Expected PBKDF2 output.
    pub digest: Bytes<64>,
}

/// The `config` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Size of the JSON area (hdr_size - 4096).
    pub json_size: u64,
    /// Size of the keyslots area, which starts right after the two header copies.
    pub keyslots_size: u64,
    /// First mandatory requirement (e.g. `online-reencrypt-v2`): a volume with one must not be
    /// used by a program that does not implement it.
    pub requirement: Option<Name<32>>,
}

/// The parsed and validated metadata of one header copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `luks2` keyslots by id.
    pub keyslots: [Option<Luks2Keyslot>; MAX_KEYSLOTS],
    /// Keyslots of other types (`reencrypt`), by bit: present, but they hold no volume key.
    pub other_keyslots: u32,
    /// Segments by id.
    pub segments: [Option<Luks2Segment>; MAX_SEGMENTS],
    /// Digests by id.
    pub digests: [Option<Luks2Digest>; MAX_DIGESTS],
    /// Config.
    pub config: Config,
}

/// Stores `value` in `slot` unless the member was already seen.
fn set_once<T>(slot: &mut Option<T>, value: T, field: &'static str, offset: usize) -> Result<(), MetadataError> {
    if slot.is_some() {
        return Err(MetadataError::DuplicateField { field, offset });
    }
    *slot = Some(value);
    Ok(())
}

fn required<T>(slot: Option<T>, field: &'static str, offset: usize) -> Result<T, MetadataError> {
    slot.ok_or(MetadataError::MissingField { field, offset })
}

/// A u64 written as a JSON number or as a decimal string.
fn u64_value(p: &mut Parser<'_>, field: &'static str) -> Result<u64, MetadataError> {
    let offset = p.offset();
    let bad = MetadataError::BadValue { field, offset };
    let value = match p.peek()? {
        ValueKind::Number => p.number()?.as_u64(),
        ValueKind::String => {
            let s = p.string()?;
            parse_decimal_u64(s.raw().as_bytes())
        }
        _ => None,
    };
    value.ok_or(bad)
}

fn u32_value(
    p: &mut Parser<'_>,
    field: &'static str,
    range: core::ops::RangeInclusive<u32>,
) -> Result<u32, MetadataError> {
    let offset = p.offset();
    let v = u64_value(p, field)?;
    u32::try_from(v).ok().filter(|v| range.contains(v)).ok_or(MetadataError::BadValue { field, offset })
}

fn string_value<'a>(p: &mut Parser<'a>, field: &'static str) -> Result<JsonStr<'a>, MetadataError> {
    let offset = p.offset();
    if p.peek()? != ValueKind::String {
        return Err(MetadataError::BadValue { field, offset });
    }
    Ok(p.string()?)
}

fn name_value<const N: usize>(p: &mut Parser<'_>, field: &'static str) -> Result<Name<N>, MetadataError> {
    let offset = p.offset();
    let s = string_value(p, field)?;
    Name::from_json(s).ok_or(MetadataError::BadValue { field, offset })
}

fn base64_value<const N: usize>(p: &mut Parser<'_>, field: &'static str) -> Result<Bytes<N>, MetadataError> {
    let offset = p.offset();
    let s = string_value(p, field)?;
    Bytes::from_base64(s.raw().as_bytes()).ok_or(MetadataError::BadValue { field, offset })
}

/// A `type` member, returned for matching against the known names.
fn type_value(p: &mut Parser<'_>, field: &'static str) -> Result<Name<32>, MetadataError> {
    name_value(p, field)
}

fn unsupported(what: &'static str, name: Name<32>) -> MetadataError {
    MetadataError::Unsupported { what, name: Name::truncated(name.as_str()) }
}

/// An id: an object key or array element naming a keyslot, segment or digest.
fn id_value(s: JsonStr<'_>, section: &'static str, limit: usize, offset: usize) -> Result<u8, MetadataError> {
    parse_decimal_u64(s.raw().as_bytes())
        .filter(|&id| id < limit as u64)
        .map(|id| id as u8)
        .ok_or(MetadataError::BadId { section, offset })
}

/// A checked object: refuses a value that is not an object with a [`MetadataError::BadValue`].
fn object<'a>(
    p: &mut Parser<'a>,
    field: &'static str,
    member: impl FnMut(&mut Parser<'a>, JsonStr<'a>) -> Result<(), MetadataError>,
) -> Result<(), MetadataError> {
    let offset = p.offset();
    if p.peek()? != ValueKind::Object {
        return Err(MetadataError::BadValue { field, offset });
    }
    p.object(member)
}

fn array<'a>(
    p: &mut Parser<'a>,
    field: &'static str,
    element: impl FnMut(&mut Parser<'a>) -> Result<(), MetadataError>,
) -> Result<(), MetadataError> {
    let offset = p.offset();
    if p.peek()? != ValueKind::Array {
        return Err(MetadataError::BadValue { field, offset });
    }
    p.array(element)
}

/// A bitmask of ids from an array of id strings.
fn id_list(p: &mut Parser<'_>, field: &'static str, section: &'static str, limit: usize) -> Result<u32, MetadataError> {
    let mut mask = 0u32;
    array(p, field, |p| {
        let offset = p.offset();
        let s = string_value(p, field)?;
        mask |= 1 << id_value(s, section, limit, offset)?;
        Ok(())
    })?;
    Ok(mask)
}

fn parse_kdf(p: &mut Parser<'_>) -> Result<Kdf, MetadataError> {
    let start = p.offset();
    let (mut kind, mut hash, mut iterations, mut salt) = (None, None, None, None);
    let (mut time, mut memory, mut cpus) = (None, None, None);
    object(p, "keyslots.N.kdf", |p, key| {
        let at = p.offset();
        if key.eq_str("type") {
            set_once(&mut kind, type_value(p, "keyslots.N.kdf.type")?, "keyslots.N.kdf.type", at)
        } else if key.eq_str("hash") {
            set_once(&mut hash, name_value(p, "keyslots.N.kdf.hash")?, "keyslots.N.kdf.hash", at)
        } else if key.eq_str("iterations") {
            let v = u32_value(p, "keyslots.N.kdf.iterations", 1..=MAX_ITERATIONS)?;
            set_once(&mut iterations, v, "keyslots.N.kdf.iterations", at)
        } else if key.eq_str("salt") {
            set_once(&mut salt, base64_value(p, "keyslots.N.kdf.salt")?, "keyslots.N.kdf.salt", at)
        } else if key.eq_str("time") {
            set_once(&mut time, u32_value(p, "keyslots.N.kdf.time", 1..=u32::MAX)?, "keyslots.N.kdf.time", at)
        } else if key.eq_str("memory") {
            let v = u32_value(p, "keyslots.N.kdf.memory", 8..=MAX_ARGON2_MEMORY_KIB)?;
            set_once(&mut memory, v, "keyslots.N.kdf.memory", at)
        } else if key.eq_str("cpus") {
            set_once(&mut cpus, u32_value(p, "keyslots.N.kdf.cpus", 1..=0xFF_FFFF)?, "keyslots.N.kdf.cpus", at)
        } else {
            Ok(p.skip()?)
        }
    })?;
    let kind = required(kind, "keyslots.N.kdf.type", start)?;
    let salt = required(salt, "keyslots.N.kdf.salt", start)?;
    let variant = match kind.as_str() {
        "pbkdf2" => {
            return Ok(Kdf::Pbkdf2 {
                hash: required(hash, "keyslots.N.kdf.hash", start)?,
                iterations: required(iterations, "keyslots.N.kdf.iterations", start)?,
                salt,
            })
        }
        "argon2i" => Argon2Variant::Argon2i,
        "argon2id" => Argon2Variant::Argon2id,
        _ => return Err(unsupported("kdf", kind)),
    };
    let time = required(time, "keyslots.N.kdf.time", start)?;
    let memory_kib = required(memory, "keyslots.N.kdf.memory", start)?;
    let cpus = required(cpus, "keyslots.N.kdf.cpus", start)?;
    // Let the implementation judge the combination (memory >= 8 * lanes, salt length, ...)
    // now, so that a bad slot is reported as bad metadata and not as a failed unlock.
    let params = crate::crypto::argon2::Params {
        variant: crate::crypto::argon2::Variant::Argon2id,
        time,
        memory_kib,
        lanes: cpus,
    };
    if params.memory_bytes().is_none() || salt.as_slice().len() < crate::crypto::argon2::MIN_SALT_LEN {
        return Err(MetadataError::BadValue { field: "keyslots.N.kdf", offset: start });
    }
    Ok(Kdf::Argon2 { variant, time, memory_kib, cpus, salt })
}

fn parse_af(p: &mut Parser<'_>) -> Result<Af, MetadataError> {
    let start = p.offset();
    let (mut kind, mut stripes, mut hash) = (None, None, None);
    object(p, "keyslots.N.af", |p, key| {
        let at = p.offset();
        if key.eq_str("type") {
            set_once(&mut kind, type_value(p, "keyslots.N.af.type")?, "keyslots.N.af.type", at)
        } else if key.eq_str("stripes") {
            let v = u32_value(p, "keyslots.N.af.stripes", AF_STRIPES..=AF_STRIPES)?;
            set_once(&mut stripes, v, "keyslots.N.af.stripes", at)
        } else if key.eq_str("hash") {
            set_once(&mut hash, name_value(p, "keyslots.N.af.hash")?, "keyslots.N.af.hash", at)
        } else {
            Ok(p.skip()?)
        }
    })?;
    let kind = required(kind, "keyslots.N.af.type", start)?;
    if kind.as_str() != "luks1" {
        return Err(unsupported("af", kind));
    }
    Ok(Af {
        stripes: required(stripes, "keyslots.N.af.stripes", start)?,
        hash: required(hash, "keyslots.N.af.hash", start)?,
    })
}

fn parse_area(p: &mut Parser<'_>) -> Result<Area, MetadataError> {
    let start = p.offset();
    let (mut kind, mut offset, mut size, mut encryption, mut key_size) = (None, None, None, None, None);
    object(p, "keyslots.N.area", |p, key| {
        let at = p.offset();
        if key.eq_str("type") {
            set_once(&mut kind, type_value(p, "keyslots.N.area.type")?, "keyslots.N.area.type", at)
        } else if key.eq_str("offset") {
            set_once(&mut offset, u64_value(p, "keyslots.N.area.offset")?, "keyslots.N.area.offset", at)
        } else if key.eq_str("size") {
            set_once(&mut size, u64_value(p, "keyslots.N.area.size")?, "keyslots.N.area.size", at)
        } else if key.eq_str("encryption") {
            let v = name_value(p, "keyslots.N.area.encryption")?;
            set_once(&mut encryption, v, "keyslots.N.area.encryption", at)
        } else if key.eq_str("key_size") {
            let v = u32_value(p, "keyslots.N.area.key_size", 1..=MAX_KEY_SIZE)?;
            set_once(&mut key_size, v, "keyslots.N.area.key_size", at)
        } else {
            Ok(p.skip()?)
        }
    })?;
    let kind = required(kind, "keyslots.N.area.type", start)?;
    if kind.as_str() != "raw" {
        return Err(unsupported("keyslot area", kind));
    }
    Ok(Area {
        offset: required(offset, "keyslots.N.area.offset", start)?,
        size: required(size, "keyslots.N.area.size", start)?,
        encryption: required(encryption, "keyslots.N.area.encryption", start)?,
        key_size: required(key_size, "keyslots.N.area.key_size", start)?,
    })
}

/// The `type` of the keyslot object at the cursor, found by a look-ahead (JSON objects are
/// unordered: cryptsetup writes `area` before `type` in reencryption keyslots).
fn keyslot_type(mut probe: Parser<'_>) -> Result<Name<32>, MetadataError> {
    let start = probe.offset();
    let mut kind = None;
    object(&mut probe, "keyslots.N", |p, key| {
        let at = p.offset();
        if key.eq_str("type") {
            set_once(&mut kind, type_value(p, "keyslots.N.type")?, "keyslots.N.type", at)
        } else {
            Ok(p.skip()?)
        }
    })?;
    required(kind, "keyslots.N.type", start)
}

/// One keyslot; `None` for a keyslot of another type than `luks2` (skipped).
fn parse_keyslot(p: &mut Parser<'_>) -> Result<Option<Luks2Keyslot>, MetadataError> {
    let start = p.offset();
    let kind = keyslot_type(p.clone())?;
    match kind.as_str() {
        "luks2" => {}
        // Reencryption bookkeeping: it holds no key; the volume's requirements refuse use
        // while a reencryption is unfinished.
        "reencrypt" => {
            p.skip()?;
            return Ok(None);
        }
        _ => return Err(unsupported("keyslot type", kind)),
    }
    let (mut key_size, mut priority, mut kdf, mut af, mut area) = (None, None, None, None, None);
    object(p, "keyslots.N", |p, key| {
        let at = p.offset();
        if key.eq_str("key_size") {
            let v = u32_value(p, "keyslots.N.key_size", 1..=MAX_KEY_SIZE)?;
            set_once(&mut key_size, v, "keyslots.N.key_size", at)
        } else if key.eq_str("priority") {
            let v = match u32_value(p, "keyslots.N.priority", 0..=2)? {
                0 => Priority::Ignore,
                1 => Priority::Normal,
                _ => Priority::High,
            };
            set_once(&mut priority, v, "keyslots.N.priority", at)
        } else if key.eq_str("kdf") {
            set_once(&mut kdf, parse_kdf(p)?, "keyslots.N.kdf", at)
        } else if key.eq_str("af") {
            set_once(&mut af, parse_af(p)?, "keyslots.N.af", at)
        } else if key.eq_str("area") {
            set_once(&mut area, parse_area(p)?, "keyslots.N.area", at)
        } else {
            Ok(p.skip()?)
        }
    })?;
    Ok(Some(Luks2Keyslot {
        key_size: required(key_size, "keyslots.N.key_size", start)?,
        priority: priority.unwrap_or(Priority::Normal),
        kdf: required(kdf, "keyslots.N.kdf", start)?,
        af: required(af, "keyslots.N.af", start)?,
        area: required(area, "keyslots.N.area", start)?,
    }))
}

fn parse_segment(p: &mut Parser<'_>) -> Result<Luks2Segment, MetadataError> {
    let start = p.offset();
    let (mut kind, mut offset, mut size, mut iv_tweak, mut encryption, mut sector_size) =
        (None, None, None, None, None, None);
    let mut backup = false;
    object(p, "segments.N", |p, key| {
        let at = p.offset();
        if key.eq_str("type") {
            set_once(&mut kind, type_value(p, "segments.N.type")?, "segments.N.type", at)
        } else if key.eq_str("offset") {
            set_once(&mut offset, u64_value(p, "segments.N.offset")?, "segments.N.offset", at)
        } else if key.eq_str("size") {
            let v = if p.peek()? == ValueKind::String {
                let s = p.string()?;
                if s.eq_str("dynamic") {
                    None
                } else {
                    Some(
                        parse_decimal_u64(s.raw().as_bytes())
                            .ok_or(MetadataError::BadValue { field: "segments.N.size", offset: at })?,
                    )
                }
            } else {
                Some(u64_value(p, "segments.N.size")?)
            };
            set_once(&mut size, v, "segments.N.size", at)
        } else if key.eq_str("iv_tweak") {
            set_once(&mut iv_tweak, u64_value(p, "segments.N.iv_tweak")?, "segments.N.iv_tweak", at)
        } else if key.eq_str("encryption") {
            let v = name_value(p, "segments.N.encryption")?;
            set_once(&mut encryption, v, "segments.N.encryption", at)
        } else if key.eq_str("sector_size") {
            let v = u32_value(p, "segments.N.sector_size", 0..=u32::MAX)?;
            set_once(&mut sector_size, v, "segments.N.sector_size", at)
        } else if key.eq_str("flags") {
            array(p, "segments.N.flags", |p| {
                let flag = string_value(p, "segments.N.flags")?;
                backup |= flag.raw().starts_with("backup-");
                Ok(())
            })
        } else if key.eq_str("integrity") {
            // dm-integrity (authenticated encryption) needs per-sector tags qluks does not
            // implement; refusing is better than returning unauthenticated data.
            p.skip()?;
            Err(MetadataError::Unsupported { what: "segment feature", name: Name::truncated("integrity") })
        } else {
            Ok(p.skip()?)
        }
    })?;
    let kind = required(kind, "segments.N.type", start)?;
    let segment_type = match kind.as_str() {
        "crypt" => SegmentType::Crypt,
        "linear" => SegmentType::Linear,
        _ => return Err(unsupported("segment type", kind)),
    };
    let offset = required(offset, "segments.N.offset", start)?;
    let size = required(size, "segments.N.size", start)?;
    let (encryption, sector_size, iv_tweak) = match segment_type {
        SegmentType::Crypt => (
            required(encryption, "segments.N.encryption", start)?,
            required(sector_size, "segments.N.sector_size", start)?,
            required(iv_tweak, "segments.N.iv_tweak", start)?,
        ),
        SegmentType::Linear => (Name::truncated(""), 512, 0),
    };
    Ok(Luks2Segment { segment_type, offset, size, iv_tweak, encryption, sector_size, backup })
}

fn parse_digest(p: &mut Parser<'_>) -> Result<Luks2Digest, MetadataError> {
    let start = p.offset();
    let (mut kind, mut keyslots, mut segments, mut hash, mut iterations, mut salt, mut digest) =
        (None, None, None, None, None, None, None);
    object(p, "digests.N", |p, key| {
        let at = p.offset();
        if key.eq_str("type") {
            set_once(&mut kind, type_value(p, "digests.N.type")?, "digests.N.type", at)
        } else if key.eq_str("keyslots") {
            let v = id_list(p, "digests.N.keyslots", "keyslots", MAX_KEYSLOTS)?;
            set_once(&mut keyslots, v, "digests.N.keyslots", at)
        } else if key.eq_str("segments") {
            let v = id_list(p, "digests.N.segments", "segments", MAX_SEGMENTS)? as u8;
            set_once(&mut segments, v, "digests.N.segments", at)
        } else if key.eq_str("hash") {
            set_once(&mut hash, name_value(p, "digests.N.hash")?, "digests.N.hash", at)
        } else if key.eq_str("iterations") {
            let v = u32_value(p, "digests.N.iterations", 1..=MAX_ITERATIONS)?;
            set_once(&mut iterations, v, "digests.N.iterations", at)
        } else if key.eq_str("salt") {
            set_once(&mut salt, base64_value(p, "digests.N.salt")?, "digests.N.salt", at)
        } else if key.eq_str("digest") {
            set_once(&mut digest, base64_value(p, "digests.N.digest")?, "digests.N.digest", at)
        } else {
            Ok(p.skip()?)
        }
    })?;
    let kind = required(kind, "digests.N.type", start)?;
    if kind.as_str() != "pbkdf2" {
        return Err(unsupported("digest type", kind));
    }
    let digest = required(digest, "digests.N.digest", start)?;
    if digest.as_slice().is_empty() {
        return Err(MetadataError::BadValue { field: "digests.N.digest", offset: start });
    }
    Ok(Luks2Digest {
        keyslots: required(keyslots, "digests.N.keyslots", start)?,
        segments: required(segments, "digests.N.segments", start)?,
        hash: required(hash, "digests.N.hash", start)?,
        iterations: required(iterations, "digests.N.iterations", start)?,
        salt: required(salt, "digests.N.salt", start)?,
        digest,
    })
}

fn parse_config(p: &mut Parser<'_>) -> Result<Config, MetadataError> {
    let start = p.offset();
    let (mut json_size, mut keyslots_size, mut requirement) = (None, None, None);
    object(p, "config", |p, key| {
        let at = p.offset();
        if key.eq_str("json_size") {
            set_once(&mut json_size, u64_value(p, "config.json_size")?, "config.json_size", at)
        } else if key.eq_str("keyslots_size") {
            set_once(&mut keyslots_size, u64_value(p, "config.keyslots_size")?, "config.keyslots_size", at)
        } else if key.eq_str("requirements") {
            object(p, "config.requirements", |p, key| {
                if !key.eq_str("mandatory") {
                    return Ok(p.skip()?);
                }
                array(p, "config.requirements.mandatory", |p| {
                    let name: Name<32> = name_value(p, "config.requirements.mandatory")?;
                    requirement.get_or_insert(name);
                    Ok(())
                })
            })
        } else {
            Ok(p.skip()?)
        }
    })?;
    Ok(Config {
        json_size: required(json_size, "config.json_size", start)?,
        keyslots_size: required(keyslots_size, "config.keyslots_size", start)?,
        requirement,
    })
}

/// Parses the members of a section object ("keyslots", ...) keyed by id.
fn section<'a, T>(
    p: &mut Parser<'a>,
    name: &'static str,
    table: &mut [Option<T>],
    mut parse: impl FnMut(&mut Parser<'a>, u8) -> Result<Option<T>, MetadataError>,
) -> Result<(), MetadataError> {
    let limit = table.len();
    object(p, name, |p, key| {
        let at = p.offset();
        let id = id_value(key, name, limit, at)?;
        let entry = &mut table[usize::from(id)];
        if entry.is_some() {
            return Err(MetadataError::DuplicateField { field: name, offset: at });
        }
        *entry = parse(p, id)?;
        Ok(())
    })
}

impl Metadata {
    /// Parses and validates the JSON text of a header copy whose binary header says
    /// `hdr_size`.
    ///
    /// This returns about 10 KiB by value; [`Metadata::parse_into`] fills caller-owned storage
    /// instead (firmware with a small stack).
    pub fn parse(json: &[u8], hdr_size: u64) -> Result<Metadata, MetadataError> {
        let mut metadata = Metadata::EMPTY;
        metadata.parse_into(json, hdr_size)?;
        Ok(metadata)
    }

    /// No keyslots, segments or digests: the storage [`Metadata::parse_into`] fills.
    pub const EMPTY: Metadata = Metadata {
        keyslots: [None; MAX_KEYSLOTS],
        other_keyslots: 0,
        segments: [None; MAX_SEGMENTS],
        digests: [None; MAX_DIGESTS],
        config: Config { json_size: 0, keyslots_size: 0, requirement: None },
    };

    /// [`Metadata::parse`] into `self`, in place (nothing large on the stack). On error `self`
    /// holds no keyslot, segment or digest.
    pub fn parse_into(&mut self, json: &[u8], hdr_size: u64) -> Result<(), MetadataError> {
        let result = self.parse_in_place(json, hdr_size);
        if result.is_err() {
            self.clear();
        }
        result
    }

    /// Empties every table (in place).
    pub(crate) fn clear(&mut self) {
        self.keyslots.iter_mut().for_each(|k| *k = None);
        self.segments.iter_mut().for_each(|s| *s = None);
        self.digests.iter_mut().for_each(|d| *d = None);
        self.other_keyslots = 0;
        self.config = Config { json_size: 0, keyslots_size: 0, requirement: None };
    }

    fn parse_in_place(&mut self, json: &[u8], hdr_size: u64) -> Result<(), MetadataError> {
        self.clear();
        let Metadata { keyslots, other_keyslots, segments, digests, config: config_out } = self;
        let mut config = None;
        let mut seen = [false; 3];
        Parser::document(json, |p, key| {
            let at = p.offset();
            let mut once = |i: usize, field| {
                if core::mem::replace(&mut seen[i], true) {
                    return Err(MetadataError::DuplicateField { field, offset: at });
                }
                Ok(())
            };
            if key.eq_str("keyslots") {
                once(0, "keyslots")?;
                section(p, "keyslots", &mut keyslots[..], |p, id| {
                    let slot = parse_keyslot(p)?;
                    if slot.is_none() {
                        *other_keyslots |= 1 << id;
                    }
                    Ok(slot)
                })
            } else if key.eq_str("segments") {
                once(1, "segments")?;
                section(p, "segments", &mut segments[..], |p, _| parse_segment(p).map(Some))
            } else if key.eq_str("digests") {
                once(2, "digests")?;
                section(p, "digests", &mut digests[..], |p, _| parse_digest(p).map(Some))
            } else if key.eq_str("config") {
                set_once(&mut config, parse_config(p)?, "config", at)
            } else {
                // "tokens" and anything newer: other programs' business.
                Ok(p.skip()?)
            }
        })?;
        for (i, name) in ["keyslots", "segments", "digests"].into_iter().enumerate() {
            if !seen[i] {
                return Err(MetadataError::MissingField { field: name, offset: 0 });
            }
        }
        *config_out = required(config, "config", 0)?;
        self.validate(hdr_size)
    }

    fn validate(&self, hdr_size: u64) -> Result<(), MetadataError> {
        let expected = hdr_size.saturating_sub(BINARY_HEADER_SIZE as u64);
        if self.config.json_size != expected {
            return Err(MetadataError::JsonSizeMismatch { json_size: self.config.json_size, expected });
        }
        let keyslots_size = self.config.keyslots_size;
        let area_start = hdr_size.saturating_mul(2);
        let area_end = area_start.checked_add(keyslots_size);
        let Some(area_end) = area_end.filter(|_| keyslots_size.is_multiple_of(4096)) else {
            return Err(MetadataError::BadKeyslotsSize { keyslots_size });
        };

        for (id, slot) in self.keyslots() {
            let area = &slot.area;
            let end = area.offset.checked_add(area.size);
            if area.offset < area_start || end.is_none_or(|end| end > area_end) {
                return Err(MetadataError::AreaOutsideKeyslotsArea {
                    keyslot: id,
                    offset: area.offset,
                    size: area.size,
                });
            }
            if area.size < slot.material_len() {
                return Err(MetadataError::AreaTooSmall { keyslot: id, size: area.size, needed: slot.material_len() });
            }
            for (other_id, other) in self.keyslots().filter(|(o, _)| *o > id) {
                let (a, b) = (&slot.area, &other.area);
                if a.offset < b.offset.saturating_add(b.size) && b.offset < a.offset + a.size {
                    return Err(MetadataError::AreasOverlap { keyslot: id, other: other_id });
                }
            }
            for (segment_id, segment) in self.segments() {
                // Offset 0 means a detached header: the data lives on another device.
                if segment.offset != 0 && area.offset + area.size > segment.offset {
                    return Err(MetadataError::AreaOverlapsData { keyslot: id, segment: segment_id });
                }
            }
        }

        for (id, segment) in self.segments() {
            let sector = u64::from(segment.sector_size);
            let geometry_ok = segment.sector_size.is_power_of_two()
                && (512..=4096).contains(&segment.sector_size)
                && segment.offset.is_multiple_of(512)
                && segment.size.is_none_or(|size| size.is_multiple_of(sector));
            if !geometry_ok {
                return Err(MetadataError::BadSegmentGeometry { segment: id });
            }
            // As cryptsetup: data may not start inside the metadata (offset 0: detached header).
            if segment.offset != 0 && segment.offset < area_end {
                return Err(MetadataError::SegmentOverlapsMetadata {
                    segment: id,
                    offset: segment.offset,
                    metadata_end: area_end,
                });
            }
        }

        for (id, digest) in self.digests() {
            for bit in 0..MAX_KEYSLOTS {
                let named = digest.keyslots & (1 << bit) != 0;
                if named && self.keyslots[bit].is_none() && self.other_keyslots & (1 << bit) == 0 {
                    return Err(MetadataError::DanglingReference { digest: id, kind: "keyslot", id: bit as u8 });
                }
            }
            for bit in 0..MAX_SEGMENTS {
                if digest.segments & (1 << bit) != 0 && self.segments[bit].is_none() {
                    return Err(MetadataError::DanglingReference { digest: id, kind: "segment", id: bit as u8 });
                }
            }
        }
        Ok(())
    }

    /// The `luks2` keyslots with their ids.
    pub fn keyslots(&self) -> impl Iterator<Item = (u8, &Luks2Keyslot)> + '_ {
        self.keyslots.iter().enumerate().filter_map(|(i, k)| Some((i as u8, k.as_ref()?)))
    }

    /// The segments with their ids.
    pub fn segments(&self) -> impl Iterator<Item = (u8, &Luks2Segment)> + '_ {
        self.segments.iter().enumerate().filter_map(|(i, s)| Some((i as u8, s.as_ref()?)))
    }

    /// The digests with their ids.
    pub fn digests(&self) -> impl Iterator<Item = (u8, &Luks2Digest)> + '_ {
        self.digests.iter().enumerate().filter_map(|(i, d)| Some((i as u8, d.as_ref()?)))
    }

    /// The segment holding the volume's data: the one segment not marked as a reencryption
    /// backup. `None` when there is none or more than one (a reencryption in progress).
    pub fn data_segment(&self) -> Option<(u8, &Luks2Segment)> {
        let mut data = self.segments().filter(|(_, s)| !s.backup);
        let first = data.next()?;
        data.next().is_none().then_some(first)
    }

    /// The digest that verifies keys for segment `segment`.
    pub fn digest_for_segment(&self, segment: u8) -> Option<(u8, &Luks2Digest)> {
        self.digests().find(|(_, d)| d.segments & (1 << segment) != 0)
    }

    /// Bytes of Argon2 memory the most demanding keyslot needs; 0 when every keyslot uses
    /// PBKDF2. See [`Metadata::kdf_memory_within`] to size for what an unlock will try.
    pub fn kdf_memory(&self) -> u64 {
        self.keyslots().map(|(_, k)| kdf_memory_bytes(&k.kdf)).max().unwrap_or(0)
    }

    /// Bytes of Argon2 memory an unlock within `limits` (of `keyslot` only, when given) can
    /// use: the most demanding keyslot the limits admit, so that a caller never sets aside
    /// memory for a keyslot the limits refuse. 0 when every such keyslot uses PBKDF2. Pass a
    /// region of (at least) this many bytes, of any alignment, to the unlock.
    pub fn kdf_memory_within(&self, limits: &crate::luks::KdfLimits, keyslot: Option<usize>) -> u64 {
        self.keyslots()
            .filter(|(id, k)| keyslot.is_none_or(|want| want == usize::from(*id)) && limits.check(&k.kdf).is_ok())
            .map(|(_, k)| kdf_memory_bytes(&k.kdf))
            .max()
            .unwrap_or(0)
    }
}

/// Bytes of Argon2 memory one KDF needs (its KiB rounded down to whole segments, as Argon2
/// uses them); 0 for PBKDF2.
pub fn kdf_memory_bytes(kdf: &Kdf) -> u64 {
    // Validated at parse time; invalid costs cannot happen here, 0 keeps it panic-free.
    super::kdf::argon2_params(kdf).and_then(|p| p.memory_bytes()).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::string::String;

    /// Metadata written by cryptsetup 2.6.1 (`luksFormat --pbkdf argon2id`, then `luksAddKey
    /// --pbkdf pbkdf2`), 16 KiB header.
    pub(crate) const CRYPTSETUP_JSON: &str = r#"{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"argon2id","time":4,"memory":64,"cpus":1,"salt":"nlym4BXYibvM0AcanhXLXZBn8+wTcL9Q2mSzryz5XCY="}},"1":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"290816","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"rI3G9e7XlINqaDMDBbyVmdCKYYGjub1Afo0iPM+ig2Y="}}},"tokens":{},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},"digests":{"0":{"type":"pbkdf2","keyslots":["0","1"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"1W0qzwwVhkdZt6EbX64IAyFjkUKTxxB6xkK210VYtYs=","digest":"T4wv7oAqP78CDRXZeSQ1Z89Ss5NMF4i19TqE/2N2wds="}},"config":{"json_size":"12288","keyslots_size":"16744448"}}"#;

    const HDR_SIZE: u64 = 0x4000;

    fn parse(json: &str) -> Result<Metadata, MetadataError> {
        Metadata::parse(json.as_bytes(), HDR_SIZE)
    }

    /// Offset of `needle` in `json` (its only occurrence).
    fn at(json: &str, needle: &str) -> usize {
        assert_eq!(json.matches(needle).count(), 1, "{needle}");
        json.find(needle).unwrap()
    }

    fn variant(from: &str, to: &str) -> String {
        assert!(CRYPTSETUP_JSON.contains(from), "fixture lacks {from}");
        CRYPTSETUP_JSON.replacen(from, to, 1)
    }

    #[test]
    fn cryptsetup_metadata_parses_into_keyslots_segments_digests() {
        let m = parse(CRYPTSETUP_JSON).unwrap();
        let slot0 = m.keyslots[0].unwrap();
        assert_eq!(slot0.key_size, 64);
        assert_eq!(slot0.priority, Priority::Normal);
        assert!(matches!(
            slot0.kdf,
            Kdf::Argon2 { variant: Argon2Variant::Argon2id, time: 4, memory_kib: 64, cpus: 1, salt } if salt.as_slice().len() == 32
        ));
        assert_eq!(slot0.af.stripes, 4000);
        assert_eq!(slot0.af.hash.as_str(), "sha256");
        assert_eq!(slot0.area.offset, 32768);
        assert_eq!(slot0.area.size, 258048);
        assert_eq!(slot0.area.encryption.as_str(), "aes-xts-plain64");
        let slot1 = m.keyslots[1].unwrap();
        assert!(matches!(slot1.kdf, Kdf::Pbkdf2 { iterations: 1000, hash, .. } if hash.as_str() == "sha256"));
        assert_eq!(m.keyslots().count(), 2);

        let (id, seg) = m.data_segment().unwrap();
        assert_eq!(id, 0);
        assert_eq!(seg.segment_type, SegmentType::Crypt);
        assert_eq!((seg.offset, seg.size, seg.iv_tweak, seg.sector_size), (16777216, None, 0, 4096));

        let (_, digest) = m.digest_for_segment(0).unwrap();
        assert_eq!(digest.keyslots, 0b11);
        assert_eq!(digest.digest.as_slice().len(), 32);
        assert_eq!(m.config.keyslots_size, 16744448);
        assert_eq!(m.kdf_memory(), 64 * 1024);
        let limits = crate::luks::KdfLimits { argon2_memory_kib: 63, ..crate::luks::KdfLimits::DEFAULT };
        // Keyslot 0 (Argon2id, 64 KiB) is over the limit; keyslot 1 is PBKDF2.
        assert_eq!(m.kdf_memory_within(&limits, None), 0);
        assert_eq!(m.kdf_memory_within(&crate::luks::KdfLimits::DEFAULT, Some(0)), 64 * 1024);
        assert_eq!(m.kdf_memory_within(&crate::luks::KdfLimits::DEFAULT, Some(1)), 0);
    }

    #[test]
    fn parse_into_fills_in_place_and_a_failure_leaves_it_empty() {
        let mut m = Metadata::parse(CRYPTSETUP_JSON.as_bytes(), HDR_SIZE).unwrap();
        let expected = m.clone();
        m.parse_into(CRYPTSETUP_JSON.as_bytes(), HDR_SIZE).unwrap();
        assert_eq!(m, expected);
        assert!(m.parse_into(b"{}", HDR_SIZE).is_err());
        assert_eq!(m, Metadata::EMPTY);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..CRYPTSETUP_JSON.len() {
            assert!(Metadata::parse(&CRYPTSETUP_JSON.as_bytes()[..len], HDR_SIZE).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn byte_mutations_never_panic() {
        let original = CRYPTSETUP_JSON.as_bytes();
        let mut json = std::vec::Vec::from(original);
        let mut accepted = 0;
        for pos in 0..json.len() {
            for b in [b'"', b'}', b']', b'9', b'\\', b',', 0xff] {
                json[pos] = b;
                accepted += usize::from(Metadata::parse(&json, HDR_SIZE).is_ok());
                json[pos] = original[pos];
            }
        }
        // Some mutations are harmless (inside a salt, a digit of a size); most are not.
        assert!(accepted < original.len() * 7 / 4, "{accepted} mutations accepted");
    }

    #[test]
    fn offsets_and_sizes_accept_numbers_and_decimal_strings_only() {
        let m = parse(&variant(r#""offset":"32768""#, r#""offset":32768"#)).unwrap();
        assert_eq!(m.keyslots[0].unwrap().area.offset, 32768);
        for bad in [r#""offset":"0x8000""#, r#""offset":"-1""#, r#""offset":1.5"#, r#""offset":true"#] {
            let json = variant(r#""offset":"32768""#, bad);
            let offset = at(&json, bad) + r#""offset":"#.len();
            assert_eq!(parse(&json), Err(MetadataError::BadValue { field: "keyslots.N.area.offset", offset }), "{bad}");
        }
    }

    #[test]
    fn duplicate_members_are_refused() {
        // The offset is the second occurrence's value (where the parser stands after its key).
        let twice = variant(r#""tokens":{}"#, r#""tokens":{},"config":{"json_size":"12288","keyslots_size":"0"}"#);
        let offset = twice.rfind(r#""config""#).unwrap() + r#""config":"#.len();
        assert_eq!(parse(&twice), Err(MetadataError::DuplicateField { field: "config", offset }));
        let twice = variant(r#""iterations":1000,"salt":"rI3"#, r#""iterations":1000,"iterations":1,"salt":"rI3"#);
        let offset = at(&twice, r#""iterations":1,"#) + r#""iterations":"#.len();
        assert_eq!(parse(&twice), Err(MetadataError::DuplicateField { field: "keyslots.N.kdf.iterations", offset }));
        let twice = variant(r#"},"1":{"type":"luks2""#, r#"},"0":{"type":"luks2""#);
        let offset = at(&twice, r#"},"0":{"type":"luks2""#) + r#"},"0":"#.len();
        assert_eq!(parse(&twice), Err(MetadataError::DuplicateField { field: "keyslots", offset }));
    }

    #[test]
    fn ids_must_be_decimal_and_below_the_limit() {
        for id in ["32", "x", "", "-1", "99999999999999999999999"] {
            let json = variant(r#""1":{"type":"luks2""#, &std::format!(r#""{id}":{{"type":"luks2""#));
            // The offset of the keyslot object the id names.
            let offset = at(&json, &std::format!(r#""{id}":{{"type":"luks2""#)) + id.len() + 3;
            assert_eq!(parse(&json), Err(MetadataError::BadId { section: "keyslots", offset }), "{id}");
        }
        let json = variant(r#""segments":["0"]"#, r#""segments":["8"]"#);
        let offset = at(&json, r#""segments":["8"]"#) + r#""segments":["#.len();
        assert_eq!(parse(&json), Err(MetadataError::BadId { section: "segments", offset }));
    }

    #[test]
    fn missing_members_are_named() {
        // The offset is the object's that lacks the member.
        let json = variant(r#""hash":"sha256","iterations":1000,"salt":"rI3"#, r#""iterations":1000,"salt":"rI3"#);
        let offset = at(&json, r#"{"type":"pbkdf2","iterations":1000,"salt":"rI3"#);
        assert_eq!(parse(&json), Err(MetadataError::MissingField { field: "keyslots.N.kdf.hash", offset }));
        let json = variant(r#","config":{"json_size":"12288","keyslots_size":"16744448"}"#, "");
        assert_eq!(parse(&json), Err(MetadataError::MissingField { field: "config", offset: 0 }));
    }

    #[test]
    fn stripes_must_be_4000() {
        let json = variant(r#""stripes":4000"#, r#""stripes":3999"#);
        let offset = at(&json, "3999");
        assert_eq!(parse(&json), Err(MetadataError::BadValue { field: "keyslots.N.af.stripes", offset }));
    }

    #[test]
    fn unknown_types_are_refused_by_name() {
        let json = variant(r#""type":"argon2id""#, r#""type":"scrypt""#);
        let err = parse(&json).unwrap_err();
        assert!(matches!(err, MetadataError::Unsupported { what: "kdf", name } if name.as_str() == "scrypt"));
        let json = variant(r#""type":"crypt""#, r#""type":"integrity""#);
        let err = parse(&json).unwrap_err();
        assert!(
            matches!(err, MetadataError::Unsupported { what: "segment type", name } if name.as_str() == "integrity")
        );
    }

    #[test]
    fn integrity_segments_are_refused() {
        let json = variant(r#""sector_size":4096"#, r#""sector_size":4096,"integrity":{"type":"hmac(sha256)"}"#);
        let err = parse(&json).unwrap_err();
        assert!(
            matches!(err, MetadataError::Unsupported { what: "segment feature", name } if name.as_str() == "integrity"),
            "{err:?}"
        );
    }

    #[test]
    fn argon2_parameters_are_range_checked() {
        // The offset is the value's.
        let value_at = |json: &str, member: &str| at(json, member) + member.find(':').unwrap() + 1;
        for memory in [r#""memory":4"#, r#""memory":8388608"#] {
            let json = variant(r#""memory":64"#, memory);
            let offset = value_at(&json, memory);
            assert_eq!(parse(&json), Err(MetadataError::BadValue { field: "keyslots.N.kdf.memory", offset }));
        }
        let json = variant(r#""time":4"#, r#""time":0"#);
        let offset = value_at(&json, r#""time":0"#);
        assert_eq!(parse(&json), Err(MetadataError::BadValue { field: "keyslots.N.kdf.time", offset }));
        for absurd in ["0", "2147483649"] {
            let member = std::format!(r#""iterations":{absurd},"salt":"rI3"#);
            let json = variant(r#""iterations":1000,"salt":"rI3"#, &member);
            let offset = value_at(&json, &member);
            assert_eq!(parse(&json), Err(MetadataError::BadValue { field: "keyslots.N.kdf.iterations", offset }));
        }
        let json = variant(r#""iterations":1000,"salt":"1W0"#, r#""iterations":0,"salt":"1W0"#);
        let offset = value_at(&json, r#""iterations":0,"salt":"1W0"#);
        assert_eq!(parse(&json), Err(MetadataError::BadValue { field: "digests.N.iterations", offset }));
    }

    #[test]
    fn json_size_must_match_the_header() {
        assert_eq!(
            Metadata::parse(CRYPTSETUP_JSON.as_bytes(), 0x8000),
            Err(MetadataError::JsonSizeMismatch { json_size: 12288, expected: 0x7000 })
        );
    }

    #[test]
    fn keyslot_areas_must_lie_in_the_keyslots_area() {
        let outside = |keyslot, offset, size| Err(MetadataError::AreaOutsideKeyslotsArea { keyslot, offset, size });
        let json = variant(r#""offset":"32768""#, r#""offset":"16384""#);
        assert_eq!(parse(&json), outside(0, 16384, 258048));
        let json = variant(r#""offset":"32768""#, r#""offset":"18446744073709551615""#);
        assert_eq!(parse(&json), outside(0, u64::MAX, 258048));
        let json = variant(r#""keyslots_size":"16744448""#, r#""keyslots_size":"262144""#);
        assert_eq!(parse(&json), outside(1, 290816, 258048));
    }

    #[test]
    fn keyslot_areas_must_not_overlap() {
        let json = variant(r#""offset":"290816""#, r#""offset":"36864""#);
        assert_eq!(parse(&json), Err(MetadataError::AreasOverlap { keyslot: 0, other: 1 }));
    }

    #[test]
    fn keyslot_areas_must_hold_the_key_material() {
        let json = variant(r#""size":"258048""#, r#""size":"4096""#);
        assert_eq!(parse(&json), Err(MetadataError::AreaTooSmall { keyslot: 0, size: 4096, needed: 256000 }));
    }

    #[test]
    fn keyslot_areas_must_not_reach_the_data() {
        let json = variant(r#""offset":"16777216""#, r#""offset":"65536""#);
        assert_eq!(parse(&json), Err(MetadataError::AreaOverlapsData { keyslot: 0, segment: 0 }));
    }

    #[test]
    fn segment_sector_size_is_a_power_of_two_from_512_to_4096() {
        for bad in ["0", "256", "1000", "8192"] {
            let json = variant(r#""sector_size":4096"#, &std::format!(r#""sector_size":{bad}"#));
            assert_eq!(parse(&json), Err(MetadataError::BadSegmentGeometry { segment: 0 }), "{bad}");
        }
        let json = variant(r#""size":"dynamic""#, r#""size":"1000""#);
        assert_eq!(parse(&json), Err(MetadataError::BadSegmentGeometry { segment: 0 }));
    }

    #[test]
    fn digests_must_refer_to_existing_keyslots_and_segments() {
        let json = variant(r#""keyslots":["0","1"]"#, r#""keyslots":["0","5"]"#);
        assert_eq!(parse(&json), Err(MetadataError::DanglingReference { digest: 0, kind: "keyslot", id: 5 }));
        let json = variant(r#""segments":["0"]"#, r#""segments":["1"]"#);
        assert_eq!(parse(&json), Err(MetadataError::DanglingReference { digest: 0, kind: "segment", id: 1 }));
    }

    #[test]
    fn mandatory_requirements_are_recorded() {
        let json = variant(
            r#""keyslots_size":"16744448""#,
            r#""keyslots_size":"16744448","requirements":{"mandatory":["online-reencrypt-v2"]}"#,
        );
        assert_eq!(parse(&json).unwrap().config.requirement.unwrap().as_str(), "online-reencrypt-v2");
    }
}
