//! Opening a LUKS2 volume into a [`LuksVolume`]: metadata read, keyslot unlocked, data segment
//! keyed.

use super::header::{read_header, DEFAULT_JSON_BUFFER};
use super::keyslot::unlock_with_limits;
use super::metadata::{Metadata, SegmentType};
use super::Error as Luks2Error;
use crate::crypto::{CipherSpec, SectorCipher, VolumeKey};
use crate::io::BlockIo;
use crate::luks::{Error, IoError, LuksVolume, OpenOptions, Segment};

/// The data segment of `metadata`, keyed with the unlocked volume `key`. With a detached
/// header, pass the result to [`LuksVolume::new`] over the data device.
pub fn data_segment(metadata: &Metadata, key: &VolumeKey) -> Result<Segment, Error> {
    if let Some(name) = metadata.config.requirement {
        return Err(Luks2Error::UnmetRequirement { name }.into());
    }
    let (id, segment) = metadata.data_segment().ok_or(Luks2Error::NoDataSegment)?;
    if segment.segment_type != SegmentType::Crypt {
        return Err(Luks2Error::SegmentNotEncrypted { segment: id }.into());
    }
    let spec = CipherSpec::parse_combined(segment.encryption.as_str(), key.len())?;
    Ok(Segment {
        offset: segment.offset,
        size: segment.size,
        sector_size: segment.sector_size as usize,
        iv_tweak: segment.iv_tweak,
        cipher: SectorCipher::new(spec, key.as_bytes())?,
    })
}

impl<I: BlockIo> LuksVolume<I> {
    /// Opens a LUKS2 volume whose header starts `io`: the newest valid metadata copy is read
    /// (into `options.json_buffer`, or a [`DEFAULT_JSON_BUFFER`]-byte stack buffer), a keyslot
    /// unlocked within `options.kdf_limits` (Argon2 in `options.kdf_memory`), and the data segment keyed. A volume with an
    /// unfinished reencryption (a mandatory requirement) is refused.
    pub fn open_luks2(mut io: I, passphrase: &[u8], options: OpenOptions<'_>) -> Result<Self, IoError<I::Error>> {
        let header = match options.json_buffer {
            Some(buf) => read_header(&mut io, buf)?,
            None => read_header(&mut io, &mut [0u8; DEFAULT_JSON_BUFFER])?,
        };
        let metadata = &header.metadata;
        if let Some(name) = metadata.config.requirement {
            return Err(Luks2Error::UnmetRequirement { name }.into());
        }
        let kdf_memory = options.kdf_memory.unwrap_or(&mut []);
        let (_, key) =
            unlock_with_limits(&mut io, metadata, passphrase, options.keyslot, kdf_memory, &options.kdf_limits)?;
        let segment = data_segment(metadata, &key)?;
        drop(key);
        LuksVolume::new(io, segment)
    }
}
