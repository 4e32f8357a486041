//! Shared by the LUKS-opening fuzz targets: the KDF limits every open runs under, so that no
//! execution pays for an image-chosen PBKDF2 or Argon2 cost, and claims above them exercise
//! the refusal path instead of being skipped.
#![allow(dead_code)] // each target uses part of this module

use qluks::io::MemIo;
use qluks::luks::luks2::Luks2Header;
use qluks::luks::{KdfLimits, MAGIC};

/// 4096 PBKDF2 iterations (cryptsetup's minimum is 1000), Argon2 at most 4 passes over 256 KiB
/// (cryptsetup's minimum is 4 passes over 32 KiB).
pub const LIMITS: KdfLimits = KdfLimits { pbkdf2_iterations: 4096, argon2_time: 4, argon2_memory_kib: 256 };

/// The Argon2 memory (bytes) to lend an open of `device` under [`LIMITS`]: what its
/// costliest permitted LUKS2 keyslot needs (0 for anything else).
pub fn argon2_bytes(device: &[u8]) -> usize {
    if device.len() < 8 || device[..6] != MAGIC || device[6..8] != [0, 2] {
        return 0;
    }
    let mut copy = device.to_vec();
    let mut json = vec![0u8; 64 * 1024];
    match Luks2Header::read(&mut MemIo::new(&mut copy), &mut json) {
        Ok(h) => h.kdf_memory_within(&LIMITS, None) as usize,
        Err(_) => 0,
    }
}
