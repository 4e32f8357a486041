#![no_main]
//! LUKS1 and LUKS2 volumes created in memory with arbitrary options (cipher, mode, IV
//! generator, key size, hash, iteration counts, Argon2id costs, sector size, data offset,
//! payload size; tiny KDF costs), then reopened: creation either fails with a typed error or
//! gives a volume that opens with its passphrase (not with another), unlocks to the volume key
//! creation returned, has the cipher, sector size and payload size asked for, and keeps what
//! is written at arbitrary offsets across a reopen (compared with a model of the payload).
//!
//! Input: byte 0 = flags (bit 0: LUKS2; bit 1: Argon2id keyslot (LUKS2); bit 2: arbitrary
//! sector size; bit 3: arbitrary data offset; bit 4: arbitrary key size; bit 5: also try a
//! wrong passphrase), byte 1 = mode, byte
//! 2 = key size choice, byte 3 = hash, u16 keyslot iterations, u16 digest iterations, byte
//! Argon2 time, u16 Argon2 memory, byte Argon2 lanes, u32 sector size, u32 data offset, u16
//! payload sectors, byte RNG seed, then up to 4 writes of u32 offset + u16 length; the rest is
//! the data written.
use qluks::crypto::{CbcIv, CipherMode, CipherSpec, HashAlg, XtsIv};
use qluks::io::{MemIo, MemIoError};
use qluks::luks::luks1::{self, Iterations, Luks1Header};
use qluks::luks::luks2::create::{CreateKdf, CreateParams, KEYSLOTS_OFFSET};
use qluks::luks::luks2::{self, Luks2Header};
use qluks::luks::{KdfLimits, LuksIoError, LuksVolume, OpenOptions};

#[path = "targets_support.rs"]
mod support;

/// Above every cost this target creates (keyslot iterations <= 255, Argon2 <= 4 passes over
/// 256 KiB), so every created volume must open.
const LIMITS: KdfLimits = KdfLimits { pbkdf2_iterations: 65535, argon2_time: 4, argon2_memory_kib: 256 };

fn spec(mode: u8, size_choice: u8, any_size: bool) -> CipherSpec {
    let hash = HashAlg::ALL[usize::from(size_choice >> 4) % HashAlg::ALL.len()];
    let mode = match mode % 6 {
        0 => CipherMode::Xts(XtsIv::Plain64),
        1 => CipherMode::Xts(XtsIv::Plain),
        2 => CipherMode::Cbc(CbcIv::Plain),
        3 => CipherMode::Cbc(CbcIv::Plain64),
        4 => CipherMode::Cbc(CbcIv::Essiv(if mode & 0x80 != 0 { hash } else { HashAlg::Sha256 })),
        _ => CipherMode::Ecb,
    };
    let key_bytes = if any_size {
        usize::from(size_choice % 80)
    } else if matches!(mode, CipherMode::Xts(_)) {
        [32, 48, 64][usize::from(size_choice % 3)]
    } else {
        [16, 24, 32][usize::from(size_choice % 3)]
    };
    CipherSpec { mode, key_bytes }
}

fn open<'a>(device: &'a mut [u8], pass: &[u8]) -> Result<LuksVolume<MemIo<'a>>, LuksIoError<MemIoError>> {
    let mut memory = vec![0u8; 256 << 10];
    let options = OpenOptions { kdf_memory: Some(&mut memory), kdf_limits: LIMITS, ..Default::default() };
    LuksVolume::open(MemIo::new(device), pass, options)
}

fn read_all(volume: &mut LuksVolume<MemIo>) -> Vec<u8> {
    let mut all = vec![0u8; volume.size() as usize];
    volume.read_at(0, &mut all).expect("reading the whole payload");
    all
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = support::Reader::new(data);
    let (flags, mode, size_choice, hash) = (r.u8(), r.u8(), r.u8(), r.u8());
    let (slot_iterations, digest_iterations) = (u32::from(r.u16() % 256), u32::from(r.u16()));
    let (time, memory_kib, cpus) = (u32::from(r.u8() % 5), u32::from(r.u16() % 257), u32::from(r.u8() % 5));
    let (raw_sector, raw_offset, payload_sectors, seed) = (r.u32(), r.u32(), r.u16() % 129, r.u8());
    let writes: Vec<(u64, usize)> = (0..4).map(|_| (u64::from(r.u32()), usize::from(r.u16() % 16384))).collect();
    let content = r.rest();
    let spec = spec(mode, size_choice, flags & 16 != 0);
    let hash = HashAlg::ALL[usize::from(hash) % HashAlg::ALL.len()];
    let luks2 = flags & 1 != 0;
    let mut rng = support::Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(seed));
    let pass = b"pw";

    // Create.
    let (mut device, key, sector_size, data_offset) = if luks2 {
        let sector_size = if flags & 4 != 0 { raw_sector } else { 512 << (raw_sector & 3) };
        let area = (spec.key_bytes as u64 * 4000).div_ceil(512) * 512;
        let least = KEYSLOTS_OFFSET + area.next_multiple_of(4096);
        let data_offset =
            if flags & 8 != 0 { u64::from(raw_offset) % (4 << 20) } else { least + u64::from(raw_offset % 4) * 4096 };
        let kdf = if flags & 2 != 0 {
            CreateKdf::Argon2id { time, memory_kib, cpus }
        } else {
            CreateKdf::Pbkdf2 { hash, iterations: slot_iterations }
        };
        let params = CreateParams {
            cipher: spec,
            sector_size,
            kdf,
            digest_iterations: 1000 + digest_iterations % 64 - if digest_iterations % 7 == 0 { 1000 } else { 0 },
            data_offset,
        };
        if data_offset == 0 {
            return; // a detached header: its keyslots area is 16 MiB
        }
        let mut device = vec![0u8; (data_offset + u64::from(payload_sectors) * 512) as usize];
        let mut memory = vec![0u8; if flags & 2 != 0 { 256 << 10 } else { 0 }];
        match luks2::create::format(&mut MemIo::new(&mut device), &params, pass, &mut memory, &mut rng) {
            Ok(key) => (device, key, sector_size as usize, data_offset),
            Err(_) => return,
        }
    } else {
        let Ok(key_bytes) = u32::try_from(spec.key_bytes) else { return };
        let (_, payload_offset) = luks1::layout(key_bytes);
        let data_offset = u64::from(payload_offset) * 512;
        if data_offset > 8 << 20 {
            return;
        }
        let mut device = vec![0u8; (data_offset + u64::from(payload_sectors) * 512) as usize];
        let digest = 1 + digest_iterations % 256;
        let mut params = luks1::CreateParams {
            cipher: spec,
            hash,
            iterations: Iterations::Fixed { keyslot: slot_iterations, digest },
        };
        match luks1::format(&mut MemIo::new(&mut device), 0, &mut params, pass, &mut rng) {
            Ok((header, key)) => {
                assert_eq!(header.payload_offset_bytes(), data_offset);
                (device, key, 512, data_offset)
            }
            Err(_) => return,
        }
    };
    assert_eq!(key.len(), spec.key_bytes);

    // The key creation returned is the one the passphrase unlocks.
    let mut io = MemIo::new(&mut device);
    let mut memory = vec![0u8; 256 << 10];
    let unlocked = if luks2 {
        let mut json = vec![0u8; 64 * 1024];
        let header = Luks2Header::read(&mut io, &mut json).expect("reading a created LUKS2 header");
        assert!(header.primary_fault.is_none() && header.secondary_fault.is_none());
        luks2::unlock_with_limits(&mut io, &header.metadata, pass, None, &mut memory, &LIMITS).expect("unlock").1
    } else {
        let header = Luks1Header::read(&mut io, 0).expect("reading a created LUKS1 header");
        luks1::unlock_with_limits(&mut io, 0, None, &header, pass, None, &LIMITS).expect("unlock").1
    };
    assert!(unlocked.as_bytes() == key.as_bytes(), "the passphrase unlocks another key than creation made");

    if flags & 32 != 0 {
        let wrong = open(&mut device, b"pX");
        assert!(wrong.as_ref().is_err_and(|e| e.is_wrong_passphrase()), "a wrong passphrase: {:?}", wrong.err());
    }
    let mut volume = open(&mut device, pass).expect("opening a created volume");
    let payload = u64::from(payload_sectors) * 512;
    assert_eq!(volume.size(), payload / sector_size as u64 * sector_size as u64, "payload size");
    assert_eq!(volume.segment().cipher.spec(), spec);
    assert_eq!((volume.segment().sector_size, volume.segment().offset), (sector_size, data_offset));

    // Writes against a model, then a reopen.
    let mut model = read_all(&mut volume);
    let size = volume.size();
    for (i, &(at, len)) in writes.iter().enumerate() {
        let at = at % (size + 1);
        let len = len.min((size - at) as usize);
        let bytes = support::fill(len, i as u8, content);
        volume.write_at(at, &bytes).expect("writing inside the payload");
        model[at as usize..at as usize + len].copy_from_slice(&bytes);
    }
    assert!(read_all(&mut volume) == model, "the payload differs from the model");
    drop(volume);
    let mut volume = open(&mut device, pass).expect("reopening");
    assert!(read_all(&mut volume) == model, "the payload differs from the model after a reopen");
});
