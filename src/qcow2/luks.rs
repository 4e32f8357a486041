//! The LUKS header inside a qcow2 image (crypt_method 2): found through the FDE extension,
//! every key-material offset relative to it and confined to its length, the payload offset
//! ignored (the payload is the qcow2 data clusters, IV = host sector).

use super::crypt::Crypt;
use super::error::Error;
use super::extension::FdeHeader;
use crate::crypto::SectorCipher;
use crate::io::BlockIo;
use crate::luks::{luks1, KdfLimits, LuksIoError};

/// Unlocks the LUKS header at `fde` with `passphrase`, within the caller's KDF `limits`, and
/// returns the data cipher.
pub(crate) fn unlock<I: BlockIo>(
    io: &mut I,
    fde: FdeHeader,
    passphrase: &[u8],
    limits: &KdfLimits,
) -> Result<Crypt, Error<I::Error>> {
    let map = |e: LuksIoError<I::Error>| match e {
        LuksIoError::Io(e) => Error::Io(e),
        LuksIoError::Luks(e) => Error::Luks(e),
    };
    let header = luks1::Luks1Header::read(io, fde.offset).map_err(map)?;
    let (_, key) =
        luks1::unlock_with_limits(io, fde.offset, Some(fde.length), &header, passphrase, None, limits).map_err(map)?;
    Ok(Crypt::HostSectorIv(SectorCipher::new(header.cipher, key.as_bytes())?))
}
