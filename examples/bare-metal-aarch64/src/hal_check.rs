//! A check of qluks-hal before the job: the chosen backend must give the same XTS ciphertext as
//! the portable one (bit-identical by contract), and how much faster it is, measured here.

use qluks_hal::{Backend, Xts};

use crate::static_buf::StaticBuf;
use crate::timer::Instant;

const CHECK_LEN: usize = 256 << 10;
const UNIT: usize = 4096;
static CHOSEN: StaticBuf<CHECK_LEN> = StaticBuf::new();
static PORTABLE: StaticBuf<CHECK_LEN> = StaticBuf::new();

/// A fixed, non-secret test key (AES-256-XTS): this checks the code, not a volume.
const TEST_KEY: [u8; 64] = {
    let mut k = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        k[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    k
};

pub struct Report {
    pub backend: Backend,
    /// Microseconds to encrypt `CHECK_LEN` bytes with the chosen backend and the portable one.
    pub chosen_us: u64,
    pub portable_us: u64,
    pub bytes: usize,
}

pub fn check() -> Result<Report, &'static str> {
    let backend = Backend::best();
    let chosen = CHOSEN.take().ok_or("hal check buffer in use")?;
    let portable = PORTABLE.take().ok_or("hal check buffer in use")?;
    for (i, (a, b)) in chosen.iter_mut().zip(portable.iter_mut()).enumerate() {
        let v = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
        *a = v;
        *b = v;
    }
    let fast = Xts::with_backend(&TEST_KEY, backend).map_err(|_| "the best backend refused the key")?;
    let soft = Xts::with_backend(&TEST_KEY, Backend::Soft).map_err(|_| "the soft backend refused the key")?;
    // Units numbered near 2^32 so the tweak's upper half is exercised too.
    let first_unit = (1u128 << 32) - 7;
    let t = Instant::now();
    fast.encrypt_units(chosen, UNIT, first_unit).map_err(|_| "encrypt failed")?;
    let chosen_us = t.elapsed_us();
    let t = Instant::now();
    soft.encrypt_units(portable, UNIT, first_unit).map_err(|_| "encrypt failed")?;
    let portable_us = t.elapsed_us();
    if chosen[..] != portable[..] {
        return Err("XTS ciphertext of the chosen backend differs from the soft backend's");
    }
    fast.decrypt_units(chosen, UNIT, first_unit).map_err(|_| "decrypt failed")?;
    let round_trip_ok =
        chosen.iter().enumerate().all(|(i, &a)| a == (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]);
    if !round_trip_ok {
        return Err("XTS decrypt did not give back the plaintext");
    }
    Ok(Report { backend, chosen_us, portable_us, bytes: CHECK_LEN })
}
