#![no_main]
//! XTS of every qluks-hal backend this CPU has against `xts-mode` + `aes`: arbitrary keys
//! (XTS-AES-128/192/256, and wrong lengths that must be refused), data unit sizes (512..4096
//! and invalid ones), batches of units, first unit numbers near 2^32, 2^64 and 2^128, single
//! units of any length (ciphertext stealing) with any tweak; encrypt and decrypt in place.
//! Then the core's `SectorCipher` (what LUKS and qcow2 use) with plain and plain64 IVs, whose
//! tweaks are the sector number mod 2^32 and mod 2^64 as in dm-crypt. With choice bit 7, units
//! advance their tweak by a step (8 as LUKS2 4096-byte sectors do, small, 2^32, or arbitrary)
//! through the stepped batch calls.
//!
//! Input: byte 0 = choices (bits 0-1 key length 32/48/64/arbitrary, bit 2 one unit of any
//! length, bits 3-5 how the first unit number is formed, bit 6 a ragged length, bit 7 a tweak
//! step from bits 8-9 of the second raw unit number), byte 1 =
//! unit size (bits 0-1: 512 << n; bit 2: an arbitrary u16), byte 2 = unit count - 1 (mod 32),
//! u16 extra length, u64 + u64 raw unit number, then the key, then the data.
use qluks::crypto::{CipherMode, CipherSpec, SectorCipher, XtsIv};
use std::num::{NonZeroU128, NonZeroU64};

use qluks::hal::{Backend, Error, Xts};

#[path = "oracles.rs"]
mod oracles;
#[path = "targets_support.rs"]
mod support;

const MAX_DATA: usize = 64 * 1024;

fn first_unit(kind: u8, lo: u64, hi: u64) -> u128 {
    let near = u128::from(lo % 64);
    match kind & 7 {
        0 => u128::from(lo) | u128::from(hi) << 64,
        1 => near,
        2 => (1u128 << 32) - near - 1,
        3 => (1u128 << 64) - near - 1,
        4 => u128::MAX - near,
        5 => (1u128 << 64) + near,
        _ => u128::from(lo),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = support::Reader::new(data);
    let (choice, unit_sel, count) = (r.u8(), r.u8(), usize::from(r.u8() % 32) + 1);
    let extra = usize::from(r.u16());
    let (lo, hi) = (r.u64(), r.u64());
    let key_len = match choice & 3 {
        0 => 32,
        1 => 48,
        2 => 64,
        _ => usize::from(hi as u8 % 80),
    };
    let key = r.take_padded(key_len);
    let payload = r.rest();
    let backends: Vec<Backend> = Backend::available().collect();
    assert!(backends.contains(&Backend::Soft));

    if !matches!(key_len, 32 | 48 | 64) {
        for &b in &backends {
            assert!(
                matches!(Xts::with_backend(&key, b), Err(Error::InvalidKeyLength { len }) if len == key_len),
                "{b}: XTS key of {key_len} bytes not refused"
            );
        }
        return;
    }

    if choice & 4 != 0 {
        // One unit of any length >= 16 with an arbitrary tweak (ciphertext stealing).
        let len = extra % 8192;
        let tweak = first_unit(choice >> 3, lo, hi).to_le_bytes();
        let plain = support::fill(len, choice, payload);
        let mut expect_enc = plain.clone();
        let mut expect_dec = plain.clone();
        if len >= 16 {
            oracles::xts_unit(&key, &mut expect_enc, tweak, true);
            oracles::xts_unit(&key, &mut expect_dec, tweak, false);
        }
        for &b in &backends {
            let xts = Xts::with_backend(&key, b).unwrap();
            let mut ours = plain.clone();
            let r = xts.encrypt_unit(&mut ours, &tweak);
            if len < 16 {
                assert!(matches!(r, Err(Error::TooShort { .. })), "{b}: unit of {len} bytes: {r:?}");
                assert!(ours == plain, "{b}: a refused unit changed");
                continue;
            }
            r.unwrap();
            assert!(ours == expect_enc, "{b}: encrypt_unit len {len} key {key_len}");
            xts.decrypt_unit(&mut ours, &tweak).unwrap();
            assert!(ours == plain, "{b}: decrypt_unit(encrypt_unit) len {len}");
            xts.decrypt_unit(&mut ours, &tweak).unwrap();
            assert!(ours == expect_dec, "{b}: decrypt_unit len {len} key {key_len}");
        }
        return;
    }

    let unit = if unit_sel & 4 != 0 { extra } else { 512 << (unit_sel & 3) };
    let valid_unit = unit.is_power_of_two() && (512..=4096).contains(&unit);
    let count = if valid_unit { count.min(MAX_DATA / unit) } else { count };
    let len = if !valid_unit {
        count * 512
    } else if choice & 0x40 != 0 {
        count * unit + 1 + extra % (unit - 1)
    } else {
        count * unit
    };
    let first = first_unit(choice >> 3, lo, hi);
    // The tweak step (1 unless bit 7): what LUKS2 4096-byte sectors use (8), a small one, 2^32,
    // or an arbitrary odd one.
    let step: u64 = match (choice >> 7, hi >> 8 & 3) {
        (0, _) => 1,
        (_, 0) => 8,
        (_, 1) => 2 + (hi >> 16) % 15,
        (_, 2) => 1 << 32,
        _ => (hi >> 10) | 1,
    };
    let at = |i: usize| first.wrapping_add((i as u128).wrapping_mul(u128::from(step)));
    let plain = support::fill(len, choice, payload);
    for &b in &backends {
        let xts = Xts::with_backend(&key, b).unwrap();
        assert_eq!((xts.backend(), xts.key_len()), (b, key_len));
        let mut ours = plain.clone();
        let step128 = NonZeroU128::new(u128::from(step)).unwrap();
        let r = if step == 1 {
            xts.encrypt_units(&mut ours, unit, first)
        } else {
            xts.encrypt_units_step(&mut ours, unit, first, step128)
        };
        if !valid_unit {
            assert!(matches!(r, Err(Error::InvalidUnitSize { size }) if size == unit), "{b}: unit {unit}: {r:?}");
        } else if len % unit != 0 {
            assert!(matches!(r, Err(Error::LengthNotMultiple { .. })), "{b}: length {len} unit {unit}: {r:?}");
        }
        if r.is_err() {
            assert!(ours == plain, "{b}: a refused call changed the data");
            let r = xts.decrypt_units_step(&mut ours, unit, first, step128);
            assert!(r.is_err() && ours == plain, "{b}: decrypt accepted what encrypt refused");
            continue;
        }
        let mut theirs = plain.clone();
        oracles::xts_units(&key, &mut theirs, unit, at, true);
        assert!(ours == theirs, "{b}: encrypt key {key_len} unit {unit} x{count} from {first:#x} step {step}");
        xts.decrypt_units_step(&mut ours, unit, first, step128).unwrap();
        assert!(ours == plain, "{b}: decrypt(encrypt) unit {unit} x{count} from {first:#x} step {step}");
        // Decrypt on its own: the input taken as ciphertext.
        xts.decrypt_units_step(&mut ours, unit, first, step128).unwrap();
        let mut theirs = plain.clone();
        oracles::xts_units(&key, &mut theirs, unit, at, false);
        assert!(ours == theirs, "{b}: decrypt key {key_len} unit {unit} x{count} from {first:#x} step {step}");
    }
    if !valid_unit || len % unit != 0 {
        return;
    }
    // The core's sector cipher: sector numbers are u64; plain64 tweaks are LE64 of the sector
    // number (wrapping at 2^64 as dm-crypt's sector_t), plain tweaks LE32 (wrapping at 2^32).
    let sector = first as u64;
    let nth = |i: usize| sector.wrapping_add((i as u64).wrapping_mul(step));
    let step64 = NonZeroU64::new(step).unwrap();
    for (iv, tweak) in [
        (XtsIv::Plain64, &(|i: usize| u128::from(nth(i))) as &dyn Fn(usize) -> u128),
        (XtsIv::Plain, &|i: usize| u128::from(nth(i) as u32)),
    ] {
        let spec = CipherSpec { mode: CipherMode::Xts(iv), key_bytes: key_len };
        let cipher = SectorCipher::new(spec, &key).unwrap();
        let mut ours = plain.clone();
        if step == 1 {
            cipher.encrypt_sectors(&mut ours, unit, sector).unwrap();
        } else {
            cipher.encrypt_sectors_step(&mut ours, unit, sector, step64).unwrap();
        }
        let mut theirs = plain.clone();
        oracles::xts_units(&key, &mut theirs, unit, tweak, true);
        assert!(ours == theirs, "SectorCipher {iv:?} encrypt unit {unit} x{count} from sector {sector:#x}");
        cipher.decrypt_sectors_step(&mut ours, unit, sector, step64).unwrap();
        assert!(ours == plain, "SectorCipher {iv:?} decrypt(encrypt) unit {unit} x{count} from {sector:#x}");
        cipher.decrypt_sectors_step(&mut ours, unit, sector, step64).unwrap();
        let mut theirs = plain.clone();
        oracles::xts_units(&key, &mut theirs, unit, tweak, false);
        assert!(ours == theirs, "SectorCipher {iv:?} decrypt unit {unit} x{count} from sector {sector:#x}");
    }
});
