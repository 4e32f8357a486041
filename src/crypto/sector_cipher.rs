//! A keyed sector cipher: a [`CipherSpec`] plus key, expanded once on `qluks-hal`, encrypting
//! runs of sectors in place with one hal call per run.

use super::{CbcIv, CipherMode, CipherSpec, Error, HashAlg, XtsIv};
use qluks_hal::{Aes, Cbc, Essiv, EssivHash, IvGen, Xts};

enum Kind {
    Xts(Xts, XtsIv),
    Cbc(Cbc, CbcIvKeyed),
    Ecb(Aes),
}

// No heap in the core: the ESSIV key schedule lives inline, hence the size difference.
#[allow(clippy::large_enum_variant)]
enum CbcIvKeyed {
    Plain,
    Plain64,
    Essiv(Essiv),
}

/// An expanded sector cipher (round keys are zeroized on drop by `qluks-hal`).
pub struct SectorCipher {
    spec: CipherSpec,
    kind: Kind,
}

impl core::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SectorCipher").field("spec", &self.spec).finish_non_exhaustive()
    }
}

fn essiv_hash(h: HashAlg) -> Result<EssivHash, Error> {
    Ok(match h {
        HashAlg::Sha1 => EssivHash::Sha1,
        HashAlg::Sha224 => EssivHash::Sha224,
        HashAlg::Sha256 => EssivHash::Sha256,
        HashAlg::Sha384 => EssivHash::Sha384,
        HashAlg::Sha512 => EssivHash::Sha512,
        HashAlg::Ripemd160 => return Err(Error::KeyLength { key_bytes: 20 }),
    })
}

impl SectorCipher {
    /// Expands `key` (exactly `spec.key_bytes` long) for the best hal backend.
    pub fn new(spec: CipherSpec, key: &[u8]) -> Result<SectorCipher, Error> {
        if key.len() != spec.key_bytes {
            return Err(Error::KeyLength { key_bytes: key.len() });
        }
        let backend = qluks_hal::Backend::best();
        let kind = match spec.mode {
            CipherMode::Xts(iv) => Kind::Xts(Xts::with_backend(key, backend)?, iv),
            CipherMode::Cbc(iv) => {
                let iv = match iv {
                    CbcIv::Plain => CbcIvKeyed::Plain,
                    CbcIv::Plain64 => CbcIvKeyed::Plain64,
                    CbcIv::Essiv(h) => CbcIvKeyed::Essiv(Essiv::new(essiv_hash(h)?, key, backend)?),
                };
                Kind::Cbc(Cbc::with_backend(key, backend)?, iv)
            }
            CipherMode::Ecb => Kind::Ecb(Aes::with_backend(key, backend)?),
        };
        Ok(SectorCipher { spec, kind })
    }

    /// The hal backend this cipher runs on.
    pub fn backend(&self) -> qluks_hal::Backend {
        match &self.kind {
            Kind::Xts(xts, _) => xts.backend(),
            Kind::Cbc(cbc, _) => cbc.backend(),
            Kind::Ecb(aes) => aes.backend(),
        }
    }

    /// The spec this cipher was built from.
    pub fn spec(&self) -> CipherSpec {
        self.spec
    }

    /// Encrypts whole sectors of `sector_size` bytes in place; sector `i` of `data` uses the IV
    /// of sector number `first_sector + i` (counted in `sector_size` units).
    pub fn encrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64) -> Result<(), Error> {
        self.sectors(data, sector_size, first_sector, true)
    }

    /// Decrypts whole sectors in place; see [`SectorCipher::encrypt_sectors`].
    pub fn decrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64) -> Result<(), Error> {
        self.sectors(data, sector_size, first_sector, false)
    }

    fn sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64, enc: bool) -> Result<(), Error> {
        if sector_size == 0 || !data.len().is_multiple_of(sector_size) {
            return Err(qluks_hal::Error::LengthNotMultiple { len: data.len(), unit: sector_size }.into());
        }
        match &self.kind {
            Kind::Xts(xts, iv) => {
                // The tweak is the sector number mod 2^32 (plain) or mod 2^64 (plain64, as
                // dm-crypt's 64-bit sector numbers wrap): split the run where it wraps. The hal
                // counts tweaks in 128 bits, so a run crossing 2^64 would otherwise get tweak
                // 2^64 where dm-crypt uses 0. The first call always runs, so that an empty run
                // still checks the unit size.
                let max = match iv {
                    XtsIv::Plain => u64::from(u32::MAX),
                    XtsIv::Plain64 => u64::MAX,
                };
                let mut data = data;
                let mut sector = first_sector & max;
                loop {
                    let until_wrap = u128::from(max - sector) + 1;
                    let n = ((data.len() / sector_size) as u128).min(until_wrap) as usize;
                    let (run, rest) = data.split_at_mut(n * sector_size);
                    xts_units(xts, run, sector_size, u128::from(sector), enc)?;
                    if rest.is_empty() {
                        return Ok(());
                    }
                    data = rest;
                    sector = sector.wrapping_add(n as u64) & max;
                }
            }
            Kind::Cbc(cbc, iv) => {
                let ivgen = match iv {
                    CbcIvKeyed::Plain => IvGen::Plain,
                    CbcIvKeyed::Plain64 => IvGen::Plain64,
                    CbcIvKeyed::Essiv(e) => IvGen::Essiv(e),
                };
                if enc {
                    cbc.encrypt_sectors(data, sector_size, first_sector, ivgen)?
                } else {
                    cbc.decrypt_sectors(data, sector_size, first_sector, ivgen)?
                }
                Ok(())
            }
            Kind::Ecb(aes) => {
                if enc {
                    aes.encrypt_blocks(data)?
                } else {
                    aes.decrypt_blocks(data)?
                }
                Ok(())
            }
        }
    }
}

fn xts_units(xts: &Xts, data: &mut [u8], unit: usize, first: u128, enc: bool) -> Result<(), Error> {
    if enc {
        xts.encrypt_units(data, unit, first)?
    } else {
        xts.decrypt_units(data, unit, first)?
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> std::vec::Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(3)).collect()
    }

    fn data(n: usize) -> std::vec::Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(7)).collect()
    }

    #[test]
    fn a_sector_cipher_runs_on_the_best_backend_for_every_mode() {
        for spec in ["aes-xts-plain64", "aes-cbc-essiv:sha256", "aes-ecb"] {
            let spec = CipherSpec::parse_combined(spec, 32).unwrap();
            assert_eq!(SectorCipher::new(spec, &key(32)).unwrap().backend(), qluks_hal::Backend::best(), "{spec:?}");
        }
    }

    #[test]
    fn xts_plain64_is_one_hal_call_with_the_sector_as_tweak() {
        let spec = CipherSpec::DEFAULT;
        let c = SectorCipher::new(spec, &key(64)).unwrap();
        let mut a = data(4096);
        c.encrypt_sectors(&mut a, 512, 1 << 40).unwrap();
        let mut b = data(4096);
        Xts::new(&key(64)).unwrap().encrypt_units(&mut b, 512, 1 << 40).unwrap();
        assert_eq!(a, b);
        c.decrypt_sectors(&mut a, 512, 1 << 40).unwrap();
        assert_eq!(a, data(4096));
    }

    #[test]
    fn xts_plain_truncates_the_sector_number_to_32_bits() {
        let spec = CipherSpec::parse("aes", "xts-plain", 32).unwrap();
        let c = SectorCipher::new(spec, &key(32)).unwrap();
        let first = u32::MAX as u64 - 1;
        let mut a = data(2048);
        c.encrypt_sectors(&mut a, 512, first).unwrap();
        let xts = Xts::new(&key(32)).unwrap();
        let mut b = data(2048);
        for (i, s) in b.chunks_mut(512).enumerate() {
            xts.encrypt_units(s, 512, ((first + i as u64) as u32) as u128).unwrap();
        }
        assert_eq!(a, b);
    }

    #[test]
    fn cbc_modes_match_the_hal_ivgens() {
        for (mode, key_bytes) in [("cbc-plain", 16), ("cbc-plain64", 24), ("cbc-essiv:sha256", 32)] {
            let spec = CipherSpec::parse("aes", mode, key_bytes).unwrap();
            let c = SectorCipher::new(spec, &key(key_bytes)).unwrap();
            let mut a = data(2048);
            c.encrypt_sectors(&mut a, 512, 5_000_000_000).unwrap();
            let cbc = Cbc::new(&key(key_bytes)).unwrap();
            let essiv = Essiv::new(EssivHash::Sha256, &key(key_bytes), qluks_hal::Backend::best()).unwrap();
            let ivgen = match mode {
                "cbc-plain" => IvGen::Plain,
                "cbc-plain64" => IvGen::Plain64,
                _ => IvGen::Essiv(&essiv),
            };
            let mut b = data(2048);
            cbc.encrypt_sectors(&mut b, 512, 5_000_000_000, ivgen).unwrap();
            assert_eq!(a, b, "{mode}");
            c.decrypt_sectors(&mut a, 512, 5_000_000_000).unwrap();
            assert_eq!(a, data(2048), "{mode}");
        }
    }

    #[test]
    fn sector_size_4096_counts_4096_byte_sectors() {
        let c = SectorCipher::new(CipherSpec::DEFAULT, &key(64)).unwrap();
        let mut a = data(8192);
        c.encrypt_sectors(&mut a, 4096, 3).unwrap();
        let mut b = data(8192);
        Xts::new(&key(64)).unwrap().encrypt_units(&mut b, 4096, 3).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn ecb_matches_aes_blocks() {
        let c = SectorCipher::new(CipherSpec::parse("aes", "ecb", 16).unwrap(), &key(16)).unwrap();
        let mut a = data(1024);
        c.encrypt_sectors(&mut a, 512, 9).unwrap();
        let mut b = data(1024);
        Aes::new(&key(16)).unwrap().encrypt_blocks(&mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn partial_sectors_and_wrong_keys_are_errors() {
        let c = SectorCipher::new(CipherSpec::DEFAULT, &key(64)).unwrap();
        assert_eq!(
            c.encrypt_sectors(&mut [0u8; 500], 512, 0),
            Err(Error::Hal(qluks_hal::Error::LengthNotMultiple { len: 500, unit: 512 }))
        );
        assert_eq!(SectorCipher::new(CipherSpec::DEFAULT, &key(32)).err(), Some(Error::KeyLength { key_bytes: 32 }));
    }
}
