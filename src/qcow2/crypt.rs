//! Guest data encryption of a qcow2 image: which cipher, and which sector number feeds its IV
//! (formats.md §5).
//!
//! - crypt_method 2 (LUKS): the volume key comes from the LUKS header at the FDE extension; the
//!   IV sector is the **host** byte offset in the file / 512, so the same guest data encrypts
//!   differently in different clusters.
//! - crypt_method 1 (legacy AES): AES-128-CBC keyed with the passphrase's first 16 bytes (zero
//!   padded), IV plain64 of the **guest** sector.

use super::error::Error;
use crate::crypto::{CipherSpec, SectorCipher};

/// Encryption sector size (both methods work on 512-byte sectors).
pub const SECTOR: u64 = 512;

/// How data read from the image is decrypted.
pub(crate) enum Crypt {
    /// Plain image.
    None,
    /// Legacy AES: IV = guest sector.
    GuestSectorIv(SectorCipher),
    /// LUKS: IV = host sector.
    HostSectorIv(SectorCipher),
    /// Encrypted, opened for metadata only: data cannot be read.
    Locked,
}

impl core::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Crypt::None => f.write_str("None"),
            Crypt::GuestSectorIv(c) => f.debug_tuple("GuestSectorIv").field(&c.spec()).finish(),
            Crypt::HostSectorIv(c) => f.debug_tuple("HostSectorIv").field(&c.spec()).finish(),
            Crypt::Locked => f.write_str("Locked"),
        }
    }
}

impl Crypt {
    /// The legacy AES cipher of a passphrase: AES-128-CBC-plain64, key = the passphrase's first
    /// (at most) 16 bytes, zero padded, exactly as QEMU's `qcrypto_block_qcow_init`.
    pub(crate) fn legacy_aes(passphrase: &[u8]) -> Result<Crypt, crate::crypto::Error> {
        let mut key = zeroize::Zeroizing::new([0u8; 16]);
        let n = passphrase.len().min(16);
        key[..n].copy_from_slice(&passphrase[..n]);
        let spec = CipherSpec::parse("aes", "cbc-plain64", 16)?;
        Ok(Crypt::GuestSectorIv(SectorCipher::new(spec, &key[..])?))
    }

    /// Whether data needs decrypting.
    pub(crate) fn is_encrypted(&self) -> bool {
        !matches!(self, Crypt::None)
    }

    /// The cipher, if any.
    pub(crate) fn cipher(&self) -> Option<&SectorCipher> {
        match self {
            Crypt::None | Crypt::Locked => None,
            Crypt::GuestSectorIv(c) | Crypt::HostSectorIv(c) => Some(c),
        }
    }

    /// Decrypts whole sectors in place: `data` was read at `host_offset` and holds guest bytes
    /// from `guest_offset` (both sector-aligned). One batch call for the whole run.
    pub(crate) fn decrypt(
        &self,
        host_offset: u64,
        guest_offset: u64,
        data: &mut [u8],
    ) -> Result<(), crate::crypto::Error> {
        match self {
            Crypt::None | Crypt::Locked => Ok(()),
            Crypt::GuestSectorIv(c) => c.decrypt_sectors(data, SECTOR as usize, guest_offset / SECTOR),
            Crypt::HostSectorIv(c) => c.decrypt_sectors(data, SECTOR as usize, host_offset / SECTOR),
        }
    }

    /// Encrypts whole sectors in place, one batch call for the whole run: `data` holds guest
    /// bytes from `guest_offset` that will be written at `host_offset` (both sector-aligned).
    /// LUKS takes the IV from the *host* sector (so data moved by copy on write is encrypted
    /// again at its new place, iotest 263), legacy AES from the guest sector. A plain image
    /// leaves `data` as is; a locked one ([`Crypt::Locked`], opened without the passphrase)
    /// has no key and fails with [`Error::PassphraseRequired`].
    pub(crate) fn encrypt<E>(&self, host_offset: u64, guest_offset: u64, data: &mut [u8]) -> Result<(), Error<E>> {
        match self {
            Crypt::None => Ok(()),
            Crypt::Locked => Err(Error::PassphraseRequired),
            Crypt::GuestSectorIv(c) => Ok(c.encrypt_sectors(data, SECTOR as usize, guest_offset / SECTOR)?),
            Crypt::HostSectorIv(c) => Ok(c.encrypt_sectors(data, SECTOR as usize, host_offset / SECTOR)?),
        }
    }
}
