//! A keyed sector cipher: a [`CipherSpec`] plus key, expanded once on `qluks-hal`, encrypting
//! runs of sectors in place with one hal call per run.
//!
//! IV sector numbers advance by one per sector, or by a caller's step: LUKS2 volumes with
//! sectors larger than 512 bytes count their IVs in 512-byte units (dm-crypt without
//! `iv_large_sectors`, which cryptsetup never sets for LUKS2), so a 4096-byte sector's IV
//! sector steps by 8. XTS takes any step in one hal call per run.

use super::{CbcIv, CipherMode, CipherSpec, Error, HashAlg, XtsIv};
use core::num::{NonZeroU128, NonZeroU64};
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
        self.sectors(data, sector_size, first_sector, NonZeroU64::MIN, true)
    }

    /// Decrypts whole sectors in place; see [`SectorCipher::encrypt_sectors`].
    pub fn decrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_sector: u64) -> Result<(), Error> {
        self.sectors(data, sector_size, first_sector, NonZeroU64::MIN, false)
    }

    /// Encrypts whole sectors of `sector_size` bytes in place whose IV sector numbers advance
    /// by `iv_step` per sector: sector `i` of `data` uses the IV of sector number
    /// `first_iv + i * iv_step` (wrapping as the IV mode does). A LUKS2 volume with 4096-byte
    /// sectors passes its IV sectors in 512-byte units and step 8. XTS is one hal call per run
    /// (split only where the IV wraps); CBC makes one call per sector when the step is not 1.
    pub fn encrypt_sectors_step(
        &self,
        data: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: NonZeroU64,
    ) -> Result<(), Error> {
        self.sectors(data, sector_size, first_iv, iv_step, true)
    }

    /// Decrypts whole sectors in place, IV sectors advancing by `iv_step`; see
    /// [`SectorCipher::encrypt_sectors_step`].
    pub fn decrypt_sectors_step(
        &self,
        data: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: NonZeroU64,
    ) -> Result<(), Error> {
        self.sectors(data, sector_size, first_iv, iv_step, false)
    }

    fn sectors(
        &self,
        data: &mut [u8],
        sector_size: usize,
        first: u64,
        step: NonZeroU64,
        enc: bool,
    ) -> Result<(), Error> {
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
                let Some(step) = NonZeroU64::new(step.get() & max) else {
                    // A step that is a multiple of 2^32 with 32-bit IVs: every sector has the
                    // same tweak (no caller does this; it is served, one call per sector).
                    let tweak = u128::from(first & max);
                    if data.is_empty() {
                        return xts_units(xts, data, sector_size, tweak, NonZeroU128::MIN, enc);
                    }
                    for sector in data.chunks_exact_mut(sector_size) {
                        xts_units(xts, sector, sector_size, tweak, NonZeroU128::MIN, enc)?;
                    }
                    return Ok(());
                };
                let mut data = data;
                let mut sector = first & max;
                loop {
                    // The sectors whose tweaks `sector + i * step` stay <= max.
                    let until_wrap = u128::from((max - sector) / step.get()) + 1;
                    let n = ((data.len() / sector_size) as u128).min(until_wrap) as usize;
                    let (run, rest) = data.split_at_mut(n * sector_size);
                    xts_units(xts, run, sector_size, u128::from(sector), step.into(), enc)?;
                    if rest.is_empty() {
                        return Ok(());
                    }
                    data = rest;
                    sector = sector.wrapping_add((n as u64).wrapping_mul(step.get())) & max;
                }
            }
            Kind::Cbc(cbc, iv) => {
                let ivgen = match iv {
                    CbcIvKeyed::Plain => IvGen::Plain,
                    CbcIvKeyed::Plain64 => IvGen::Plain64,
                    CbcIvKeyed::Essiv(e) => IvGen::Essiv(e),
                };
                let crypt = |data: &mut [u8], first: u64| {
                    if enc {
                        cbc.encrypt_sectors(data, sector_size, first, ivgen)
                    } else {
                        cbc.decrypt_sectors(data, sector_size, first, ivgen)
                    }
                };
                if step == NonZeroU64::MIN {
                    crypt(data, first)?;
                } else {
                    // The hal's CBC IV generators count sectors one by one.
                    let mut iv = first;
                    for sector in data.chunks_exact_mut(sector_size) {
                        crypt(sector, iv)?;
                        iv = iv.wrapping_add(step.get());
                    }
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

fn xts_units(xts: &Xts, data: &mut [u8], unit: usize, first: u128, step: NonZeroU128, enc: bool) -> Result<(), Error> {
    if enc {
        xts.encrypt_units_step(data, unit, first, step)?
    } else {
        xts.decrypt_units_step(data, unit, first, step)?
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

    /// One XTS unit per sector through the hal's single-unit call, tweak LE128 of the IV
    /// sector (`first + i * step`, wrapping at 2^64, then truncated to 32 bits for plain).
    fn xts_per_sector(key: &[u8], data: &mut [u8], size: usize, first: u64, step: u64, plain: bool, enc: bool) {
        let xts = Xts::new(key).unwrap();
        let mut iv = first;
        for sector in data.chunks_exact_mut(size) {
            let tweak = if plain { u128::from(iv as u32) } else { u128::from(iv) };
            if enc {
                xts.encrypt_unit(sector, &tweak.to_le_bytes()).unwrap();
            } else {
                xts.decrypt_unit(sector, &tweak.to_le_bytes()).unwrap();
            }
            iv = iv.wrapping_add(step);
        }
    }

    #[test]
    fn xts_stepped_sectors_match_one_unit_per_sector_across_the_iv_wraps() {
        let steps = [1u64, 2, 4, 7, 8, 1 << 32, (1 << 32) + 8, u64::MAX];
        for mode in ["xts-plain64", "xts-plain"] {
            let plain = mode == "xts-plain";
            let c = SectorCipher::new(CipherSpec::parse("aes", mode, 64).unwrap(), &key(64)).unwrap();
            for step in steps {
                // At 0, and a few steps before the 32-bit and the 64-bit wrap.
                let firsts = [
                    0,
                    (1u64 << 32).wrapping_sub(step.wrapping_mul(3)),
                    0u64.wrapping_sub(step.wrapping_mul(5)),
                    u64::MAX,
                ];
                for first in firsts {
                    for size in [512, 4096] {
                        for count in [0, 1, 6, 19] {
                            let what = std::format!("{mode} step {step:#x} from {first:#x} {count}x{size}");
                            let mut ours = data(size * count);
                            c.encrypt_sectors_step(&mut ours, size, first, NonZeroU64::new(step).unwrap()).unwrap();
                            let mut theirs = data(size * count);
                            xts_per_sector(&key(64), &mut theirs, size, first, step, plain, true);
                            assert!(ours == theirs, "encrypt {what}");
                            c.decrypt_sectors_step(&mut ours, size, first, NonZeroU64::new(step).unwrap()).unwrap();
                            assert!(ours == data(size * count), "decrypt {what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn xts_step_one_is_encrypt_sectors() {
        let c = SectorCipher::new(CipherSpec::DEFAULT, &key(64)).unwrap();
        let mut a = data(4096 * 5);
        c.encrypt_sectors_step(&mut a, 4096, u64::MAX - 2, NonZeroU64::MIN).unwrap();
        let mut b = data(4096 * 5);
        c.encrypt_sectors(&mut b, 4096, u64::MAX - 2).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn cbc_stepped_sectors_match_one_call_per_sector() {
        for (mode, key_bytes) in [("cbc-plain", 16), ("cbc-plain64", 24), ("cbc-essiv:sha256", 32)] {
            let spec = CipherSpec::parse("aes", mode, key_bytes).unwrap();
            let c = SectorCipher::new(spec, &key(key_bytes)).unwrap();
            let first = (1u64 << 32) - 16;
            let mut a = data(4096 * 5);
            c.encrypt_sectors_step(&mut a, 4096, first, NonZeroU64::new(8).unwrap()).unwrap();
            let mut b = data(4096 * 5);
            for (i, sector) in b.chunks_exact_mut(4096).enumerate() {
                c.encrypt_sectors(sector, 4096, first + 8 * i as u64).unwrap();
            }
            assert_eq!(a, b, "{mode}");
            c.decrypt_sectors_step(&mut a, 4096, first, NonZeroU64::new(8).unwrap()).unwrap();
            assert_eq!(a, data(4096 * 5), "{mode}");
        }
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
        // An empty run still checks the unit size, whatever the step.
        for step in [1, 8, 1 << 32] {
            let spec = CipherSpec::parse("aes", "xts-plain", 64).unwrap();
            let c = SectorCipher::new(spec, &key(64)).unwrap();
            assert_eq!(
                c.encrypt_sectors_step(&mut [], 768, 0, NonZeroU64::new(step).unwrap()),
                Err(Error::Hal(qluks_hal::Error::InvalidUnitSize { size: 768 })),
                "step {step}"
            );
        }
        assert_eq!(SectorCipher::new(CipherSpec::DEFAULT, &key(32)).err(), Some(Error::KeyLength { key_bytes: 32 }));
    }
}
