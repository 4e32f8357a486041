#![no_main]
//! LUKS2 unlock of arbitrary headers (both copies, JSON, keyslots, digests, segments;
//! passphrase `pw`) under the tiny KDF limits of kdf_budget.rs: PBKDF2 and Argon2 costs over
//! them are refused before any work, and the Argon2 memory lent is what the header's
//! permitted keyslots need, so no header makes an execution slow or large. The two-step open
//! (read the header, size the memory, unlock) must agree with the one-step open. A successful
//! unlock returns a keyslot bound to the data segment's digest whose key verifies against it.
//! Every failure must be a typed error.
//!
//! Input: byte 0 = flags (bit 0: recompute both header checksums so that mutated JSON gets
//! past them; bit 1: try only keyslot flags >> 4; bit 2: also open through LuksVolume::open
//! and compare; bit 3: a short JSON buffer of DEFAULT_JSON_BUFFER bytes), then the device.
use qluks::io::MemIo;
use qluks::luks::luks2::{self, Luks2Header, DEFAULT_JSON_BUFFER};
use qluks::luks::{LuksVolume, OpenOptions};

#[path = "kdf_budget.rs"]
mod kdf_budget;
#[path = "targets_support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, device)) = data.split_first() else { return };
    let mut device = device.to_vec();
    if flags & 1 != 0 {
        support::fix_checksums(&mut device);
    }
    let keyslot = (flags & 2 != 0).then_some(usize::from(flags >> 4));
    let limits = kdf_budget::LIMITS;
    let mut json = vec![0u8; if flags & 8 != 0 { DEFAULT_JSON_BUFFER } else { 64 * 1024 }];
    let mut header = Box::new(Luks2Header::EMPTY);
    if header.read_into(&mut MemIo::new(&mut device), &mut json).is_err() {
        return;
    }
    let memory_len = header.kdf_memory_within(&limits, keyslot);
    assert!(
        memory_len <= u64::from(limits.argon2_memory_kib) * 1024,
        "{memory_len} bytes of KDF memory under a {} KiB limit",
        limits.argon2_memory_kib
    );
    let mut memory = vec![0u8; memory_len as usize];
    let metadata = &header.metadata;
    let unlocked =
        luks2::unlock_with_limits(&mut MemIo::new(&mut device), metadata, b"pw", keyslot, &mut memory, &limits);
    if let Ok((k, key)) = &unlocked {
        assert!(keyslot.is_none_or(|want| want == *k), "asked for keyslot {keyslot:?}, got {k}");
        let (segment, _) = metadata.data_segment().expect("unlocked without a data segment");
        let (_, digest) = metadata.digest_for_segment(segment).expect("unlocked without a digest");
        assert!(digest.keyslots & (1 << k) != 0, "keyslot {k} is not bound to the segment's digest");
        assert!(luks2::verify_key(digest, key).unwrap(), "the unlocked key does not verify");
    }
    let two_step =
        LuksVolume::open_luks2_header(MemIo::new(&mut device), &header, b"pw", keyslot, &mut memory, &limits);
    if unlocked.is_err() {
        assert!(two_step.is_err(), "the volume opened where unlock failed");
    }
    let two_step = two_step.map(|v| (v.size(), v.segment().offset, v.segment().sector_size));
    if flags & 4 != 0 {
        let mut json = vec![0u8; 64 * 1024];
        let mut memory = vec![0u8; memory_len as usize];
        let options = OpenOptions {
            keyslot,
            kdf_memory: Some(&mut memory),
            json_buffer: Some(&mut json),
            kdf_limits: limits,
            header: None,
        };
        let one_step = LuksVolume::open(MemIo::new(&mut device), b"pw", options)
            .map(|v| (v.size(), v.segment().offset, v.segment().sector_size));
        assert_eq!(one_step.is_ok(), two_step.is_ok(), "one-step {one_step:?} vs two-step {two_step:?}");
        if let (Ok(a), Ok(b)) = (&one_step, &two_step) {
            assert_eq!(a, b);
        }
    }
});
