//! Regression tests for what the issue-12 fuzz targets (fuzz/fuzz_targets: the differential,
//! snapshot, chain, unlock and create targets) found. Each test names the target and the
//! minimal input it reported.

use qluks::crypto::{CipherMode, CipherSpec, SectorCipher, XtsIv};
use qluks::io::MemIo;
use qluks::luks::{DataSegment, LuksVolume};

/// xts_differential, input `a0 02 ff` (an all-zero XTS-AES-128 key, 32 units from sector
/// u64::MAX): the sector after u64::MAX got the XTS tweak 2^64 instead of 0; plain64 tweaks
/// are LE64 of the sector number, which wraps at 2^64 as dm-crypt's sector_t does.
#[test]
fn xts_plain64_tweak_wraps_at_2_pow_64() {
    let spec = CipherSpec { mode: CipherMode::Xts(XtsIv::Plain64), key_bytes: 32 };
    let key = [0u8; 32];
    let cipher = SectorCipher::new(spec, &key).unwrap();
    let plain: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    let mut run = plain.clone();
    cipher.encrypt_sectors(&mut run, 512, u64::MAX).unwrap();
    let mut last = plain[..512].to_vec();
    cipher.encrypt_sectors(&mut last, 512, u64::MAX).unwrap();
    let mut zero = plain[512..].to_vec();
    cipher.encrypt_sectors(&mut zero, 512, 0).unwrap();
    assert_eq!(run[..512], last[..], "sector u64::MAX");
    assert_eq!(run[512..], zero[..], "the sector after u64::MAX is sector 0");
    cipher.decrypt_sectors(&mut run, 512, u64::MAX).unwrap();
    assert_eq!(run, plain);

    // The same through a LUKS volume whose segment's iv_tweak puts payload sector 1 at IV
    // sector 0 (a LUKS2 "iv_tweak" of 2^64 - 1).
    let mut device = vec![0u8; 4096];
    let segment = DataSegment {
        offset: 1024,
        size: Some(2048),
        sector_size: 512,
        iv_tweak: u64::MAX,
        cipher: SectorCipher::new(spec, &key).unwrap(),
    };
    let mut volume = LuksVolume::new(MemIo::new(&mut device), segment).unwrap();
    volume.write_at(0, &plain).unwrap();
    drop(volume);
    assert_eq!(device[1024..1536], last[..]);
    assert_eq!(device[1536..2048], zero[..]);
}
