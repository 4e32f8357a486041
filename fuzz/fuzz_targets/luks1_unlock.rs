#![no_main]
//! LUKS1 unlock of arbitrary headers and key material (passphrase `pw`) under the tiny KDF
//! limits of kdf_budget.rs, so that no header can make an execution slow (costs over the
//! limits are refused before any PBKDF2 work): standalone volumes and headers inside an area
//! of the device (as qcow2's LUKS extension places them, with key material confined to the
//! area), every keyslot or a chosen one. A successful unlock returns an active keyslot and a
//! key of the header's size that verifies against the header digest, and the volume then
//! opens with the same keyslot. Every failure must be a typed error.
//!
//! Input: byte 0 = flags (bit 0: try only keyslot flags >> 4; bit 1: the header sits at
//! 512 x the next u16 bytes; bit 2: an area length (the u32 after it); bit 3: also try a
//! wrong passphrase), u16, u32, then the device bytes.
use qluks::io::MemIo;
use qluks::luks::luks1::{self, Luks1Header, KEYSLOTS};
use qluks::luks::{LuksError, LuksIoError, LuksVolume};

#[path = "kdf_budget.rs"]
mod kdf_budget;
#[path = "targets_support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = support::Reader::new(data);
    let flags = r.u8();
    let (sectors, area) = (r.u16(), r.u32());
    let mut device = r.rest().to_vec();
    let keyslot = (flags & 1 != 0).then_some(usize::from(flags >> 4));
    let area_offset = if flags & 2 != 0 { u64::from(sectors) * 512 } else { 0 };
    let area_len = (flags & 4 != 0).then_some(u64::from(area));
    let mut io = MemIo::new(&mut device);
    let Ok(header) = Luks1Header::read(&mut io, area_offset) else { return };
    let limits = kdf_budget::LIMITS;
    match luks1::unlock_with_limits(&mut io, area_offset, area_len, &header, b"pw", keyslot, &limits) {
        Ok((k, key)) => {
            assert!(k < KEYSLOTS && header.keyslots[k].active, "unlocked by inactive keyslot {k}");
            assert!(keyslot.is_none_or(|want| want == k), "asked for keyslot {keyslot:?}, got {k}");
            assert!(header.keyslots[k].iterations <= limits.pbkdf2_iterations, "keyslot {k} over the limit");
            assert_eq!(key.len(), header.key_bytes as usize);
            assert!(luks1::verify_key(&header, &key).unwrap(), "the unlocked key does not verify");
            if area_offset == 0 && area_len.is_none() {
                let opened = LuksVolume::open_luks1_with_limits(MemIo::new(&mut device), b"pw", Some(k), &limits);
                // The payload may lie outside the device: only that may refuse.
                if let Err(e) = opened {
                    assert!(
                        matches!(e, LuksIoError::Luks(LuksError::OutOfRange { .. }) | LuksIoError::Luks(_)),
                        "{e:?}"
                    );
                }
            }
            if flags & 8 != 0 {
                let mut io = MemIo::new(&mut device);
                let wrong = luks1::unlock_with_limits(&mut io, area_offset, area_len, &header, b"pX", keyslot, &limits);
                assert!(wrong.is_err(), "a wrong passphrase unlocked keyslot {:?}", wrong.map(|(k, _)| k));
            }
        }
        Err(LuksIoError::Luks(LuksError::WrongPassphrase)) => {
            assert!(keyslot.is_none_or(|k| k < KEYSLOTS && header.keyslots[k].active));
        }
        Err(_) => {}
    }
});
