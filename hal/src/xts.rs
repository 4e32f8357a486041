//! XTS (IEEE 1619) over two AES keys.
use crate::backend;
use crate::{Aes, Backend, Error, BLOCK};
use core::num::NonZeroU128;

/// An XTS-AES key pair: data key (first half) and tweak key (second half).
#[derive(Debug)]
pub struct Xts {
    data: Aes,
    tweak: Aes,
}

impl Xts {
    /// Expands a 32-, 48- or 64-byte XTS key for the best backend.
    pub fn new(key: &[u8]) -> Result<Xts, Error> {
        Xts::with_backend(key, Backend::best())
    }

    /// Expands an XTS key for a chosen backend.
    pub fn with_backend(key: &[u8], backend: Backend) -> Result<Xts, Error> {
        if !matches!(key.len(), 32 | 48 | 64) {
            return Err(Error::InvalidKeyLength { len: key.len() });
        }
        let (k1, k2) = key.split_at(key.len() / 2);
        Ok(Xts { data: Aes::with_backend(k1, backend)?, tweak: Aes::with_backend(k2, backend)? })
    }

    /// Full key length in bytes (both halves).
    pub fn key_len(&self) -> usize {
        self.data.key_len() * 2
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.data.backend()
    }

    /// Encrypts consecutive data units of `unit_size` bytes (power of two, 512..=4096) in place;
    /// unit `i` of the buffer uses tweak LE128(`first_unit + i`) (LUKS "plain64").
    pub fn encrypt_units(&self, data: &mut [u8], unit_size: usize, first_unit: u128) -> Result<(), Error> {
        self.units(data, unit_size, first_unit, true)
    }

    /// Decrypts consecutive data units in place; see [`Xts::encrypt_units`].
    pub fn decrypt_units(&self, data: &mut [u8], unit_size: usize, first_unit: u128) -> Result<(), Error> {
        self.units(data, unit_size, first_unit, false)
    }

    /// Encrypts consecutive data units of `unit_size` bytes (power of two, 512..=4096) in place,
    /// their tweaks advancing by `step`: unit `i` of the buffer uses tweak
    /// LE128(`first_unit + i * step`), wrapping at 2^128 as [`Xts::encrypt_units`] does (which
    /// is this with step 1). One batch call for the whole buffer, whatever the step: LUKS2
    /// volumes with 4096-byte sectors count their IVs in 512-byte sectors (step 8).
    pub fn encrypt_units_step(
        &self,
        data: &mut [u8],
        unit_size: usize,
        first_unit: u128,
        step: NonZeroU128,
    ) -> Result<(), Error> {
        self.units_step(data, unit_size, first_unit, step.get(), true)
    }

    /// Decrypts consecutive data units in place, their tweaks advancing by `step`; see
    /// [`Xts::encrypt_units_step`].
    pub fn decrypt_units_step(
        &self,
        data: &mut [u8],
        unit_size: usize,
        first_unit: u128,
        step: NonZeroU128,
    ) -> Result<(), Error> {
        self.units_step(data, unit_size, first_unit, step.get(), false)
    }

    /// Encrypts one data unit of any length >= 16 with an arbitrary tweak, with ciphertext
    /// stealing when the length is not a multiple of 16.
    pub fn encrypt_unit(&self, data: &mut [u8], tweak: &[u8; BLOCK]) -> Result<(), Error> {
        self.unit(data, tweak, true)
    }

    /// Decrypts one data unit; see [`Xts::encrypt_unit`].
    pub fn decrypt_unit(&self, data: &mut [u8], tweak: &[u8; BLOCK]) -> Result<(), Error> {
        self.unit(data, tweak, false)
    }

    fn units(&self, data: &mut [u8], unit_size: usize, first_unit: u128, enc: bool) -> Result<(), Error> {
        self.units_step(data, unit_size, first_unit, 1, enc)
    }

    fn units_step(
        &self,
        data: &mut [u8],
        unit_size: usize,
        first_unit: u128,
        step: u128,
        enc: bool,
    ) -> Result<(), Error> {
        if !unit_size.is_power_of_two() || !(512..=4096).contains(&unit_size) {
            return Err(Error::InvalidUnitSize { size: unit_size });
        }
        if !data.len().is_multiple_of(unit_size) {
            return Err(Error::LengthNotMultiple { len: data.len(), unit: unit_size });
        }
        backend::xts_units(self.backend(), self.data.keys(), self.tweak.keys(), data, unit_size, first_unit, step, enc);
        Ok(())
    }

    fn unit(&self, data: &mut [u8], tweak: &[u8; BLOCK], enc: bool) -> Result<(), Error> {
        if data.len() < BLOCK {
            return Err(Error::TooShort { len: data.len() });
        }
        backend::xts_unit(self.backend(), self.data.keys(), self.tweak.keys(), data, tweak, enc);
        Ok(())
    }
}
