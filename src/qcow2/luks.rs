//! The LUKS header inside a qcow2 image (crypt_method 2): found through the FDE extension,
//! every key-material offset relative to it, the payload offset ignored.

use super::crypt::Crypt;
use super::error::Error;
use super::extension::FdeHeader;
use crate::io::BlockIo;

/// Unlocks the LUKS header at `fde` with `passphrase` and returns the data cipher, whose IVs
/// count host sectors.
pub(crate) fn unlock<I: BlockIo>(_io: &mut I, _fde: FdeHeader, _passphrase: &[u8]) -> Result<Crypt, Error<I::Error>> {
    Err(Error::Luks("LUKS-encrypted qcow2 images are not supported yet"))
}
