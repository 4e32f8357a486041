//! CBC per sector with IV generators (plain, plain64, ESSIV), as dm-crypt and QEMU use them.
use crate::backend;
use crate::key::check_blocks;
use crate::{Aes, Backend, Error, BLOCK};

/// Hash used to derive the ESSIV key from the volume key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EssivHash {
    /// SHA-1 (20-byte digest: not a valid AES key, refused).
    Sha1,
    /// SHA-224 (28 bytes: refused).
    Sha224,
    /// SHA-256: ESSIV cipher AES-256.
    Sha256,
    /// SHA-384: 48 bytes, refused.
    Sha384,
    /// SHA-512: 64 bytes, refused.
    Sha512,
}

/// ESSIV IV generator: IV = E_{H(volume key)}(LE64(sector)).
#[derive(Debug)]
pub struct Essiv {
    aes: Aes,
}

impl Essiv {
    /// Derives the ESSIV cipher from the volume key, as dm-crypt does.
    pub fn new(hash: EssivHash, volume_key: &[u8], backend: Backend) -> Result<Essiv, Error> {
        use sha2::Digest;
        let mut buf = [0u8; 64];
        let n = match hash {
            EssivHash::Sha1 => {
                buf[..20].copy_from_slice(&sha1::Sha1::digest(volume_key));
                20
            }
            EssivHash::Sha224 => {
                buf[..28].copy_from_slice(&sha2::Sha224::digest(volume_key));
                28
            }
            EssivHash::Sha256 => {
                buf[..32].copy_from_slice(&sha2::Sha256::digest(volume_key));
                32
            }
            EssivHash::Sha384 => {
                buf[..48].copy_from_slice(&sha2::Sha384::digest(volume_key));
                48
            }
            EssivHash::Sha512 => {
                buf[..64].copy_from_slice(&sha2::Sha512::digest(volume_key));
                64
            }
        };
        let r = Aes::with_backend(&buf[..n], backend).map(|aes| Essiv { aes });
        zeroize::Zeroize::zeroize(&mut buf);
        r
    }

    /// The IV of one sector.
    pub fn iv(&self, sector: u64) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..8].copy_from_slice(&sector.to_le_bytes());
        self.aes.encrypt_block(&mut b);
        b
    }
}

/// How the IV of each sector is derived from its sector number.
#[derive(Debug, Clone, Copy)]
pub enum IvGen<'a> {
    /// LE32 of the sector number (truncated), zero padded.
    Plain,
    /// LE64 of the sector number, zero padded.
    Plain64,
    /// ESSIV.
    Essiv(&'a Essiv),
}

impl IvGen<'_> {
    /// The IV for `sector`.
    pub fn iv(&self, sector: u64) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        match self {
            IvGen::Plain => b[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
            IvGen::Plain64 => b[..8].copy_from_slice(&sector.to_le_bytes()),
            IvGen::Essiv(e) => b = e.iv(sector),
        }
        b
    }

    /// The IVs of `ivs.len()` consecutive sectors from `first`; ESSIV encrypts them all in
    /// one ECB call.
    fn fill(&self, ivs: &mut [[u8; BLOCK]], first: u64) {
        for (i, iv) in ivs.iter_mut().enumerate() {
            let sector = first.wrapping_add(i as u64);
            *iv = [0u8; BLOCK];
            match self {
                IvGen::Plain => iv[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
                IvGen::Plain64 | IvGen::Essiv(_) => iv[..8].copy_from_slice(&sector.to_le_bytes()),
            }
        }
        if let IvGen::Essiv(e) = self {
            backend::ecb_encrypt(e.aes.backend(), e.aes.keys(), ivs.as_flattened_mut());
        }
    }
}

/// AES-CBC over one key.
#[derive(Debug)]
pub struct Cbc {
    aes: Aes,
}

impl Cbc {
    /// Expands a 16/24/32-byte key for the best backend.
    pub fn new(key: &[u8]) -> Result<Cbc, Error> {
        Cbc::with_backend(key, Backend::best())
    }

    /// Expands a key for a chosen backend.
    pub fn with_backend(key: &[u8], backend: Backend) -> Result<Cbc, Error> {
        Ok(Cbc { aes: Aes::with_backend(key, backend)? })
    }

    /// Key length in bytes.
    pub fn key_len(&self) -> usize {
        self.aes.key_len()
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.aes.backend()
    }

    /// CBC-encrypts `data` (a multiple of 16) in place with `iv`.
    pub fn encrypt(&self, data: &mut [u8], iv: &[u8; BLOCK]) -> Result<(), Error> {
        check_blocks(data)?;
        backend::cbc_encrypt(self.backend(), self.aes.keys(), data, iv);
        Ok(())
    }

    /// CBC-decrypts `data` (a multiple of 16) in place with `iv`.
    pub fn decrypt(&self, data: &mut [u8], iv: &[u8; BLOCK]) -> Result<(), Error> {
        check_blocks(data)?;
        backend::cbc_decrypt(self.backend(), self.aes.keys(), data, iv);
        Ok(())
    }

    /// Encrypts consecutive sectors of `sector_size` bytes in place, sector `i` with
    /// `ivgen.iv(first_sector + i)`. The chains of several sectors run interleaved.
    pub fn encrypt_sectors(
        &self,
        data: &mut [u8],
        sector_size: usize,
        first_sector: u64,
        ivgen: IvGen<'_>,
    ) -> Result<(), Error> {
        self.sectors(data, sector_size, first_sector, ivgen, true)
    }

    /// Decrypts consecutive sectors in place; see [`Cbc::encrypt_sectors`].
    pub fn decrypt_sectors(
        &self,
        data: &mut [u8],
        sector_size: usize,
        first_sector: u64,
        ivgen: IvGen<'_>,
    ) -> Result<(), Error> {
        self.sectors(data, sector_size, first_sector, ivgen, false)
    }

    fn sectors(
        &self,
        data: &mut [u8],
        sector_size: usize,
        first_sector: u64,
        ivgen: IvGen<'_>,
        enc: bool,
    ) -> Result<(), Error> {
        check_sectors(data, sector_size)?;
        let mut ivs = [[0u8; BLOCK]; IV_BATCH];
        let mut sector = first_sector;
        for run in data.chunks_mut(IV_BATCH.saturating_mul(sector_size)) {
            let n = run.len() / sector_size;
            ivgen.fill(&mut ivs[..n], sector);
            if enc {
                backend::cbc_encrypt_sectors(self.backend(), self.aes.keys(), run, sector_size, &ivs[..n]);
            } else {
                backend::cbc_decrypt_sectors(self.backend(), self.aes.keys(), run, sector_size, &ivs[..n]);
            }
            sector = sector.wrapping_add(n as u64);
        }
        Ok(())
    }
}

/// Sectors whose IVs are computed in one go (one ECB call for ESSIV), on the stack.
const IV_BATCH: usize = 32;

fn check_sectors(data: &[u8], sector_size: usize) -> Result<(), Error> {
    if sector_size == 0 || !sector_size.is_multiple_of(BLOCK) {
        return Err(Error::InvalidUnitSize { size: sector_size });
    }
    if !data.len().is_multiple_of(sector_size) {
        return Err(Error::LengthNotMultiple { len: data.len(), unit: sector_size });
    }
    Ok(())
}
