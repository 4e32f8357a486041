//! Reading the LUKS2 metadata from a device: both copies checked, the valid one with the
//! highest seqid used.
//!
//! A copy is valid when its binary header parses, sits where its `hdr_offset` says, its
//! checksum matches header + JSON area (streamed through a fixed 4 KiB buffer, so a 4 MiB
//! area costs no memory), and its JSON parses into valid [`Metadata`]. When the primary copy
//! is damaged its `hdr_size` cannot be trusted, so the secondary is searched at every offset
//! where it may be (like cryptsetup does). The JSON text is kept in a buffer the caller
//! supplies; the metadata parsed from it is copied out, so the buffer is free afterwards.

use crate::io::BlockIo;

use super::binary_header::{
    BinaryHeader, Checksum, HeaderCopy, HeaderError, BINARY_HEADER_SIZE, CSUM_LEN, HDR_SIZES, OFF_CSUM,
};
use super::metadata::Metadata;
use super::Error;
use crate::luks::IoError;

/// A header copy that passed the binary checks and the checksum.
struct CheckedCopy {
    binary: BinaryHeader,
    /// Length of the JSON text (up to the first NUL of the area).
    json_len: usize,
}

/// The metadata in use and the state of both copies.
#[derive(Debug, Clone)]
pub struct Header {
    /// The binary header of the copy in use.
    pub binary: BinaryHeader,
    /// Its parsed metadata.
    pub metadata: Metadata,
    /// Why the primary copy was not usable (`None`: it was valid).
    pub primary_fault: Option<HeaderError>,
    /// Why the secondary copy was not usable (`None`: it was valid).
    pub secondary_fault: Option<HeaderError>,
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
) -> Result<Result<CheckedCopy, HeaderError>, I::Error> {
    let needed = offset + BINARY_HEADER_SIZE as u64;
    if needed > device_size {
        return Ok(Err(HeaderError::Truncated { needed, device_size }));
    }
    io.read_at(offset, scratch)?;
    let binary = match BinaryHeader::parse(scratch) {
        Ok(b) if b.copy == expected => b,
        Ok(_) => return Ok(Err(HeaderError::BadMagic)),
        Err(e) => return Ok(Err(e)),
    };
    if binary.hdr_offset != offset {
        return Ok(Err(HeaderError::OffsetMismatch { found_at: offset, hdr_offset: binary.hdr_offset }));
    }
    let needed = offset + binary.hdr_size;
    if needed > device_size {
        return Ok(Err(HeaderError::Truncated { needed, device_size }));
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
        io.read_at(area_offset + pos as u64, chunk)?;
        checksum.update(chunk);
        if json_len.is_none() {
            json_len = chunk.iter().position(|&b| b == 0).map(|i| pos + i);
        }
        pos += chunk.len();
    }
    if checksum.finish()[..binary.checksum_alg.digest_len()] != binary.csum[..binary.checksum_alg.digest_len()] {
        return Ok(Err(HeaderError::ChecksumMismatch));
    }
    match json_len {
        Some(json_len) => Ok(Ok(CheckedCopy { binary, json_len })),
        None => Ok(Err(HeaderError::JsonNotTerminated)),
    }
}

/// Finds the secondary copy when the primary's `hdr_size` cannot be trusted: the first of
/// the possible offsets holding a secondary magic is checked.
fn find_secondary<I: BlockIo>(
    io: &mut I,
    device_size: u64,
    scratch: &mut [u8; BINARY_HEADER_SIZE],
) -> Result<Result<CheckedCopy, HeaderError>, I::Error> {
    for offset in HDR_SIZES {
        if offset + BINARY_HEADER_SIZE as u64 > device_size {
            break;
        }
        io.read_at(offset, &mut scratch[..])?;
        if scratch[..6] == super::binary_header::MAGIC_SECONDARY {
            return check_copy(io, offset, HeaderCopy::Secondary, device_size, scratch, None);
        }
    }
    Ok(Err(HeaderError::BadMagic))
}

/// Reads the LUKS2 metadata of the volume on `io`, using `json_buf` for the JSON text
/// ([`DEFAULT_JSON_BUFFER`] is enough for cryptsetup's default 16 KiB headers; a larger
/// header needs up to its JSON area size, else [`Error::JsonTooLarge`]).
pub fn read_header<I: BlockIo>(io: &mut I, json_buf: &mut [u8]) -> Result<Header, IoError<I::Error>> {
    let device_size = io.size().map_err(IoError::Device)?;
    let mut scratch = [0u8; BINARY_HEADER_SIZE];

    // The primary is read with capture: it is the one in use unless the secondary is newer.
    let mut primary = check_copy(io, 0, HeaderCopy::Primary, device_size, &mut scratch, Some(&mut *json_buf))
        .map_err(IoError::Device)?;
    let mut secondary = match &primary {
        Ok(p) => {
            let hdr_size = p.binary.hdr_size;
            check_copy(io, hdr_size, HeaderCopy::Secondary, device_size, &mut scratch, None)
                .map_err(IoError::Device)?
                .and_then(|s| {
                    if s.binary.hdr_size == hdr_size {
                        Ok(s)
                    } else {
                        Err(HeaderError::SizeMismatch { primary: hdr_size, secondary: s.binary.hdr_size })
                    }
                })
        }
        Err(_) => find_secondary(io, device_size, &mut scratch).map_err(IoError::Device)?,
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
                .map_err(IoError::Device)?
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
            return Err(IoError::Luks(Error::JsonTooLarge { len: json_len, capacity: json_buf.len() }.into()));
        }
        match Metadata::parse(&json_buf[..json_len], binary.hdr_size) {
            Ok(metadata) => {
                let primary_fault = primary.as_ref().err().copied();
                let secondary_fault = secondary.as_ref().err().copied();
                return Ok(Header { binary, metadata, primary_fault, secondary_fault });
            }
            Err(e) => {
                let fault = Err(HeaderError::Metadata(e));
                if use_secondary {
                    secondary = fault;
                } else {
                    primary = fault;
                }
            }
        }
    }
    Err(IoError::Luks(
        Error::NoValidHeader {
            primary: primary.err().unwrap_or(HeaderError::BadMagic),
            secondary: secondary.err().unwrap_or(HeaderError::BadMagic),
        }
        .into(),
    ))
}
