//! Reading the LUKS2 metadata from a device: both copies checked, the valid one with the
//! highest seqid used.
//!
//! A copy is valid when its binary header parses, sits where its `hdr_offset` says, its
//! checksum matches header + JSON area (streamed through a fixed 4 KiB buffer, so a 4 MiB
//! area costs no memory), and its JSON parses into valid [`Metadata`]. When the primary copy
//! is damaged its `hdr_size` cannot be trusted, so the secondary is searched at every offset
//! where it may be (like cryptsetup does). The JSON text is kept in a buffer the caller
//! supplies; the metadata parsed from it is copied out, so the buffer is free afterwards.
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::luks::luks2::{Luks2Header, DEFAULT_JSON_BUFFER};
//! use qluks::luks::LuksIoError;
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut disk = doc_support::luks2_volume(b"secret");
//! // `disk` holds a LUKS2 volume; damage its primary copy's JSON area.
//! disk[4096 + 10] ^= 0xff;
//! let mut header = Luks2Header::EMPTY;
//! let mut json = [0u8; DEFAULT_JSON_BUFFER];
//! header.read_into(&mut MemIo::new(&mut disk), &mut json)?;
//! // The secondary copy (at `hdr_size`) was used, and the primary's fault is reported.
//! assert!(header.primary_fault.is_some() && header.secondary_fault.is_none());
//! assert_eq!(header.binary.hdr_offset, header.binary.hdr_size);
//! assert_eq!(header.metadata.keyslots().count(), 1);
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

use crate::io::BlockIo;

use super::binary_header::{
    BinaryHeader, Checksum, HeaderCopy, Luks2CopyError, BINARY_HEADER_SIZE, CSUM_LEN, HDR_SIZES, OFF_CSUM,
};
use super::metadata::Metadata;
use super::Luks2Error;
use crate::luks::{KdfLimits, LuksIoError};

/// A header copy that passed the binary checks and the checksum.
struct CheckedCopy {
    binary: BinaryHeader,
    /// Length of the JSON text (up to the first NUL of the area).
    json_len: usize,
}

/// The metadata in use and the state of both copies.
#[derive(Debug, Clone)]
pub struct Luks2Header {
    /// The binary header of the copy in use.
    pub binary: BinaryHeader,
    /// Its parsed metadata.
    pub metadata: Metadata,
    /// Why the primary copy was not usable (`None`: it was valid).
    pub primary_fault: Option<Luks2CopyError>,
    /// Why the secondary copy was not usable (`None`: it was valid).
    pub secondary_fault: Option<Luks2CopyError>,
}

/// The smallest JSON buffer that holds the JSON area of any header cryptsetup makes with its
/// defaults (16 KiB header, 12 KiB JSON area).
pub const DEFAULT_JSON_BUFFER: usize = 12 * 1024;

/// Reads and checks one copy at `offset`, hashing its JSON area through `scratch` (and into
/// `capture` as far as it reaches, when given). The outer error is the device's; the inner
/// one says why the copy is unusable.
fn check_copy<I: BlockIo>(
    io: &mut I,
    offset: u64,
    expected: HeaderCopy,
    device_size: u64,
    scratch: &mut [u8; BINARY_HEADER_SIZE],
    mut capture: Option<&mut [u8]>,
) -> Result<Result<CheckedCopy, Luks2CopyError>, I::Error> {
    let needed = offset + BINARY_HEADER_SIZE as u64;
    if needed > device_size {
        return Ok(Err(Luks2CopyError::Truncated { needed, device_size }));
    }
    crate::io::read_aligned(io, offset, scratch)?;
    let binary = match BinaryHeader::parse(scratch) {
        Ok(b) if b.copy == expected => b,
        Ok(_) => return Ok(Err(Luks2CopyError::BadMagic)),
        Err(e) => return Ok(Err(e)),
    };
    if binary.hdr_offset != offset {
        return Ok(Err(Luks2CopyError::OffsetMismatch { found_at: offset, hdr_offset: binary.hdr_offset }));
    }
    let needed = offset + binary.hdr_size;
    if needed > device_size {
        return Ok(Err(Luks2CopyError::Truncated { needed, device_size }));
    }

    let mut checksum = Checksum::new(binary.checksum_alg);
    scratch[OFF_CSUM..OFF_CSUM + CSUM_LEN].fill(0);
    checksum.update(scratch);

    // hdr_size <= 4 MiB, so every position fits in usize.
    let area_len = binary.json_area_size() as usize;
    let area_offset = offset + BINARY_HEADER_SIZE as u64;
    let mut json_len = None;
    let mut pos = 0usize;
    while pos < area_len {
        // Read straight into the caller's buffer while it has room (one large read in the
        // common case), then through the scratch buffer.
        let room = capture.as_deref().map_or(0, |c| c.len().saturating_sub(pos));
        let chunk: &mut [u8] = if room > 0 {
            let n = room.min(area_len - pos);
            match capture.as_deref_mut() {
                Some(c) => &mut c[pos..pos + n],
                None => &mut scratch[..0],
            }
        } else {
            let n = BINARY_HEADER_SIZE.min(area_len - pos);
            &mut scratch[..n]
        };
        crate::io::read_aligned(io, area_offset + pos as u64, chunk)?;
        checksum.update(chunk);
        if json_len.is_none() {
            json_len = chunk.iter().position(|&b| b == 0).map(|i| pos + i);
        }
        pos += chunk.len();
    }
    if checksum.finish()[..binary.checksum_alg.digest_len()] != binary.csum[..binary.checksum_alg.digest_len()] {
        return Ok(Err(Luks2CopyError::ChecksumMismatch));
    }
    match json_len {
        Some(json_len) => Ok(Ok(CheckedCopy { binary, json_len })),
        None => Ok(Err(Luks2CopyError::JsonNotTerminated)),
    }
}

/// Finds the secondary copy when the primary's `hdr_size` cannot be trusted: the first of
/// the possible offsets holding a secondary magic is checked.
fn find_secondary<I: BlockIo>(
    io: &mut I,
    device_size: u64,
    scratch: &mut [u8; BINARY_HEADER_SIZE],
) -> Result<Result<CheckedCopy, Luks2CopyError>, I::Error> {
    for offset in HDR_SIZES {
        if offset + BINARY_HEADER_SIZE as u64 > device_size {
            break;
        }
        crate::io::read_aligned(io, offset, &mut scratch[..])?;
        if scratch[..6] == super::binary_header::MAGIC_SECONDARY {
            return check_copy(io, offset, HeaderCopy::Secondary, device_size, scratch, None);
        }
    }
    Ok(Err(Luks2CopyError::BadMagic))
}

impl Luks2Header {
    /// Storage for [`Luks2Header::read_into`]: no metadata. About 10 KiB (see the
    /// [module docs](crate::luks#memory)); put it in a static, a caller's struct or a box
    /// rather than on a small stack.
    pub const EMPTY: Luks2Header = Luks2Header {
        binary: BinaryHeader::EMPTY,
        metadata: Metadata::EMPTY,
        primary_fault: None,
        secondary_fault: None,
    };

    /// Reads the LUKS2 metadata of the volume on `io` into `self`, in place, using `json_buf`
    /// for the JSON text ([`DEFAULT_JSON_BUFFER`] is enough for cryptsetup's default 16 KiB
    /// headers; a larger header needs up to its JSON area size, else
    /// [`Luks2Error::JsonTooLarge`]). The two-step open: read once, size the KDF memory with
    /// [`Luks2Header::kdf_memory_within`], then unlock with
    /// [`LuksVolume::open_luks2_header`](crate::luks::LuksVolume::open_luks2_header). On error
    /// `self` holds no metadata.
    pub fn read_into<I: BlockIo>(&mut self, io: &mut I, json_buf: &mut [u8]) -> Result<(), LuksIoError<I::Error>> {
        let result = read_into(self, io, json_buf);
        if result.is_err() {
            self.metadata.clear();
            self.binary = BinaryHeader::EMPTY;
        }
        result
    }

    /// [`Luks2Header::read_into`] a new boxed header (`alloc` builds; the header never
    /// crosses the stack by value).
    #[cfg(feature = "alloc")]
    pub fn read<I: BlockIo>(
        io: &mut I,
        json_buf: &mut [u8],
    ) -> Result<alloc::boxed::Box<Luks2Header>, LuksIoError<I::Error>> {
        let mut header = alloc::boxed::Box::new(Luks2Header::EMPTY);
        header.read_into(io, json_buf)?;
        Ok(header)
    }

    /// Bytes of Argon2 memory an unlock of this volume within `limits` (of `keyslot` only,
    /// when given) needs: see [`Metadata::kdf_memory_within`].
    pub fn kdf_memory_within(&self, limits: &KdfLimits, keyslot: Option<usize>) -> u64 {
        self.metadata.kdf_memory_within(limits, keyslot)
    }
}

fn read_into<I: BlockIo>(out: &mut Luks2Header, io: &mut I, json_buf: &mut [u8]) -> Result<(), LuksIoError<I::Error>> {
    let device_size = io.size().map_err(LuksIoError::Io)?;
    let mut scratch = [0u8; BINARY_HEADER_SIZE];

    // The primary is read with capture: it is the one in use unless the secondary is newer.
    let mut primary = check_copy(io, 0, HeaderCopy::Primary, device_size, &mut scratch, Some(&mut *json_buf))
        .map_err(LuksIoError::Io)?;
    let mut secondary = match &primary {
        Ok(p) => {
            let hdr_size = p.binary.hdr_size;
            check_copy(io, hdr_size, HeaderCopy::Secondary, device_size, &mut scratch, None)
                .map_err(LuksIoError::Io)?
                .and_then(|s| {
                    if s.binary.hdr_size == hdr_size {
                        Ok(s)
                    } else {
                        Err(Luks2CopyError::SizeMismatch { primary: hdr_size, secondary: s.binary.hdr_size })
                    }
                })
        }
        Err(_) => find_secondary(io, device_size, &mut scratch).map_err(LuksIoError::Io)?,
    };

    // The primary first unless the secondary has a higher seqid; a copy whose JSON is
    // refused gives way to the other.
    let secondary_first = match (&primary, &secondary) {
        (Ok(p), Ok(s)) => s.binary.seqid > p.binary.seqid,
        (Err(_), Ok(_)) => true,
        _ => false,
    };
    for use_secondary in [secondary_first, !secondary_first] {
        let copy = if use_secondary { &secondary } else { &primary };
        let Ok(checked) = copy else { continue };
        let (binary, json_len) = if use_secondary {
            // Read again, now keeping the JSON (the buffer holds the primary's).
            let offset = checked.binary.hdr_offset;
            match check_copy(io, offset, HeaderCopy::Secondary, device_size, &mut scratch, Some(&mut *json_buf))
                .map_err(LuksIoError::Io)?
            {
                Ok(c) => (c.binary, c.json_len),
                Err(e) => {
                    // Changed between the two reads.
                    secondary = Err(e);
                    continue;
                }
            }
        } else {
            (checked.binary.clone(), checked.json_len)
        };
        if json_len > json_buf.len() {
            return Err(LuksIoError::Luks(Luks2Error::JsonTooLarge { len: json_len, capacity: json_buf.len() }.into()));
        }
        match out.metadata.parse_into(&json_buf[..json_len], binary.hdr_size) {
            Ok(()) => {
                out.primary_fault = primary.as_ref().err().copied();
                out.secondary_fault = secondary.as_ref().err().copied();
                out.binary = binary;
                return Ok(());
            }
            Err(e) => {
                let fault = Err(Luks2CopyError::Metadata(e));
                if use_secondary {
                    secondary = fault;
                } else {
                    primary = fault;
                }
            }
        }
    }
    Err(LuksIoError::Luks(
        Luks2Error::NoValidHeader {
            primary: primary.err().unwrap_or(Luks2CopyError::BadMagic),
            secondary: secondary.err().unwrap_or(Luks2CopyError::BadMagic),
        }
        .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;
    use crate::luks::luks2::metadata::tests::CRYPTSETUP_JSON;
    use crate::luks::luks2::Luks2Error;
    use crate::luks::LuksError;
    use std::vec::Vec;

    const HDR: usize = 0x4000;

    /// Writes one copy (binary header + JSON area) with a correct checksum.
    fn write_copy(image: &mut [u8], at: usize, secondary: bool, seqid: u64, label: &[u8], json: &[u8]) {
        let copy = &mut image[at..at + HDR];
        copy.fill(0);
        copy[..6].copy_from_slice(if secondary { b"SKUL\xba\xbe" } else { b"LUKS\xba\xbe" });
        copy[7] = 2;
        copy[8..16].copy_from_slice(&(HDR as u64).to_be_bytes());
        copy[16..24].copy_from_slice(&seqid.to_be_bytes());
        copy[24..24 + label.len()].copy_from_slice(label);
        copy[72..78].copy_from_slice(b"sha256");
        copy[256..264].copy_from_slice(&(at as u64).to_be_bytes());
        copy[4096..4096 + json.len()].copy_from_slice(json);
        let mut sum = Checksum::new(super::super::binary_header::ChecksumAlg::Sha256);
        sum.update(copy);
        let csum = sum.finish();
        copy[OFF_CSUM..OFF_CSUM + CSUM_LEN].copy_from_slice(&csum);
    }

    fn image(primary_seqid: u64, secondary_seqid: u64) -> Vec<u8> {
        let mut image = std::vec![0u8; 2 * HDR];
        write_copy(&mut image, 0, false, primary_seqid, b"primary", CRYPTSETUP_JSON.as_bytes());
        write_copy(&mut image, HDR, true, secondary_seqid, b"secondary", CRYPTSETUP_JSON.as_bytes());
        image
    }

    fn read(image: &mut [u8]) -> Result<Luks2Header, LuksError> {
        let mut json = [0u8; DEFAULT_JSON_BUFFER];
        let mut header = Luks2Header::EMPTY;
        header.read_into(&mut MemIo::new(image), &mut json).map(|()| header).map_err(|e| match e {
            LuksIoError::Luks(e) => e,
            LuksIoError::Io(e) => panic!("{e}"),
        })
    }

    fn no_valid_header(image: &mut [u8]) -> (Luks2CopyError, Luks2CopyError) {
        match read(image) {
            Err(LuksError::Luks2(Luks2Error::NoValidHeader { primary, secondary })) => (primary, secondary),
            other => panic!("expected NoValidHeader, got {other:?}"),
        }
    }

    #[test]
    fn equal_seqids_use_the_primary() {
        let h = read(&mut image(5, 5)).unwrap();
        assert_eq!(h.binary.label_text(), b"primary");
        assert_eq!((h.primary_fault, h.secondary_fault), (None, None));
        assert_eq!(h.metadata.keyslots().count(), 2);
    }

    #[test]
    fn the_copy_with_the_higher_seqid_is_used() {
        assert_eq!(read(&mut image(6, 5)).unwrap().binary.label_text(), b"primary");
        let h = read(&mut image(5, 6)).unwrap();
        assert_eq!(h.binary.label_text(), b"secondary");
        assert_eq!(h.binary.seqid, 6);
    }

    #[test]
    fn a_corrupted_primary_falls_back_to_the_secondary() {
        let mut img = image(7, 5);
        img[4096 + 10] ^= 1;
        let h = read(&mut img).unwrap();
        assert_eq!(h.binary.label_text(), b"secondary");
        assert_eq!(h.primary_fault, Some(Luks2CopyError::ChecksumMismatch));
    }

    #[test]
    fn a_corrupted_secondary_leaves_the_primary() {
        let mut img = image(5, 7);
        img[HDR + 100] ^= 0x40;
        let h = read(&mut img).unwrap();
        assert_eq!(h.binary.label_text(), b"primary");
        assert_eq!(h.secondary_fault, Some(Luks2CopyError::ChecksumMismatch));
    }

    #[test]
    fn a_primary_with_a_wiped_binary_header_still_finds_the_secondary() {
        let mut img = image(5, 5);
        img[..4096].fill(0);
        let h = read(&mut img).unwrap();
        assert_eq!(h.binary.label_text(), b"secondary");
        assert_eq!(h.primary_fault, Some(Luks2CopyError::BadMagic));
    }

    #[test]
    fn both_copies_corrupted_is_an_error_with_both_reasons() {
        let mut img = image(5, 5);
        img[4096 + 10] ^= 1;
        img[HDR] = b'X';
        assert_eq!(no_valid_header(&mut img), (Luks2CopyError::ChecksumMismatch, Luks2CopyError::BadMagic));
    }

    #[test]
    fn a_copy_with_bad_json_gives_way_to_the_other() {
        let mut img = image(9, 5);
        let mut bad = std::string::String::from(CRYPTSETUP_JSON);
        bad.truncate(bad.len() - 1);
        write_copy(&mut img, 0, false, 9, b"primary", bad.as_bytes());
        let h = read(&mut img).unwrap();
        assert_eq!(h.binary.label_text(), b"secondary");
        // The text ends where the closing brace was.
        let end = super::super::json::JsonError {
            kind: super::super::json::JsonErrorKind::UnexpectedEnd,
            offset: CRYPTSETUP_JSON.len() - 1,
        };
        assert_eq!(h.primary_fault, Some(Luks2CopyError::Metadata(MetadataError::Json(end))));
    }

    use super::super::metadata::MetadataError;

    #[test]
    fn sha512_checksums_are_verified() {
        let mut img = image(5, 9);
        for at in [0, HDR] {
            let copy = &mut img[at..at + HDR];
            copy[72..78].copy_from_slice(b"sha512");
            copy[OFF_CSUM..OFF_CSUM + CSUM_LEN].fill(0);
            let mut sum = Checksum::new(super::super::binary_header::ChecksumAlg::Sha512);
            sum.update(copy);
            let csum = sum.finish();
            copy[OFF_CSUM..OFF_CSUM + CSUM_LEN].copy_from_slice(&csum);
        }
        let h = read(&mut img).unwrap();
        assert_eq!(h.binary.checksum_alg.name(), "sha512");
        assert_eq!(h.binary.seqid, 9);
        img[HDR + OFF_CSUM + 63] ^= 1;
        let h = read(&mut img).unwrap();
        assert_eq!((h.binary.seqid, h.secondary_fault), (5, Some(Luks2CopyError::ChecksumMismatch)));
    }

    #[test]
    fn hdr_offset_must_match_the_position() {
        let mut img = image(5, 5);
        let json = CRYPTSETUP_JSON.as_bytes();
        write_copy(&mut img, HDR, true, 5, b"secondary", json);
        // Make the secondary claim to be at 0 (and re-checksum it so only the offset is wrong).
        img[HDR + 256..HDR + 264].copy_from_slice(&0u64.to_be_bytes());
        img[HDR + OFF_CSUM..HDR + OFF_CSUM + CSUM_LEN].fill(0);
        let mut sum = Checksum::new(super::super::binary_header::ChecksumAlg::Sha256);
        sum.update(&img[HDR..2 * HDR]);
        let csum = sum.finish();
        img[HDR + OFF_CSUM..HDR + OFF_CSUM + CSUM_LEN].copy_from_slice(&csum);
        let h = read(&mut img).unwrap();
        assert_eq!(h.secondary_fault, Some(Luks2CopyError::OffsetMismatch { found_at: HDR as u64, hdr_offset: 0 }));
    }

    #[test]
    fn a_truncated_device_is_a_header_error() {
        let mut img = image(5, 5);
        let (primary, secondary) = no_valid_header(&mut img[..HDR - 1]);
        assert_eq!(primary, Luks2CopyError::Truncated { needed: HDR as u64, device_size: HDR as u64 - 1 });
        assert_eq!(secondary, Luks2CopyError::BadMagic);
        let (primary, _) = no_valid_header(&mut img[..100]);
        assert_eq!(primary, Luks2CopyError::Truncated { needed: 4096, device_size: 100 });
    }

    #[test]
    fn json_larger_than_the_buffer_is_refused() {
        let mut img = image(5, 5);
        let mut json = [0u8; 100];
        let mut header = Luks2Header::EMPTY;
        let err = header.read_into(&mut MemIo::new(&mut img), &mut json).unwrap_err();
        assert!(matches!(
            err,
            LuksIoError::Luks(LuksError::Luks2(Luks2Error::JsonTooLarge { len, capacity: 100 })) if len == CRYPTSETUP_JSON.len()
        ));
    }

    #[test]
    fn an_unterminated_json_area_is_refused() {
        let mut img = image(5, 5);
        let filler = std::vec![b' '; HDR - 4096];
        write_copy(&mut img, 0, false, 5, b"primary", &filler);
        let h = read(&mut img).unwrap();
        assert_eq!(h.primary_fault, Some(Luks2CopyError::JsonNotTerminated));
    }

    #[test]
    fn header_byte_mutations_never_panic() {
        let pristine = image(5, 5);
        let mut img = pristine.clone();
        // Every byte of the primary's fields and checksum, and a stride through both copies
        // (the JSON text itself is mutated byte by byte in metadata.rs).
        let positions = (0..512).step_by(3).chain((512..2 * HDR).step_by(397));
        for pos in positions {
            img[pos] ^= 0xff;
            let _ = read(&mut img);
            img[pos] = pristine[pos];
        }
    }
}
