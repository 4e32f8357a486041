//! Shared by the LUKS-opening fuzz targets: whether opening a LUKS volume would cost more KDF
//! work than a fuzz execution can afford.
//!
//! TODO: once `OpenOptions` carries `KdfLimits` (issue 8, item 4; being added on another
//! branch), pass these same tiny limits to the open itself (`OpenOptions { kdf_limits:
//! KdfLimits { pbkdf2_iterations: 4096, .. }, .. }`) instead of pre-checking here, so that the
//! refusal path is fuzzed too and headers that fail this pre-check still reach the open.

use qluks::io::MemIo;
use qluks::luks::luks2::{read_header, Kdf};
use qluks::luks::{Luks1Header, MAGIC};

/// Most PBKDF2 iterations one keyslot or digest may claim (cryptsetup's minimum is 1000).
pub const MAX_PBKDF2_ITERATIONS: u32 = 4096;
/// Most Argon2 memory (KiB) and passes x memory (KiB) one keyslot may claim (cryptsetup's
/// minimum is 32 KiB, 4 passes).
pub const MAX_ARGON2_KIB: u32 = 256;
pub const MAX_ARGON2_WORK: u64 = 1024;

/// `Some(blocks)` (the Argon2 memory to pass) when `device` is a LUKS volume whose every
/// keyslot and digest claims a KDF within the budget, or is not LUKS at all (Some(0));
/// `None` when opening it could be slow (or its header does not parse: opening then fails
/// before any KDF work, so it is also Some(0)).
pub fn within_budget(device: &[u8]) -> Option<usize> {
    if device.len() < 8 || device[..6] != MAGIC {
        return Some(0);
    }
    match u16::from_be_bytes([device[6], device[7]]) {
        1 => {
            let Ok(h) = Luks1Header::parse(device) else { return Some(0) };
            let slots_ok = h.keyslots.iter().all(|s| !s.active || s.iterations <= MAX_PBKDF2_ITERATIONS);
            (h.mk_iterations <= MAX_PBKDF2_ITERATIONS && slots_ok).then_some(0)
        }
        2 => {
            let mut copy = device.to_vec();
            let mut json = vec![0u8; 64 * 1024];
            let Ok(h) = read_header(&mut MemIo::new(&mut copy), &mut json) else { return Some(0) };
            let m = &h.metadata;
            let slots_ok = m.keyslots().all(|(_, k)| match k.kdf {
                Kdf::Pbkdf2 { iterations, .. } => iterations <= MAX_PBKDF2_ITERATIONS,
                Kdf::Argon2 { time, memory_kib, .. } => {
                    memory_kib <= MAX_ARGON2_KIB && u64::from(time) * u64::from(memory_kib) <= MAX_ARGON2_WORK
                }
            });
            let digests_ok = m.digests().all(|(_, d)| d.iterations <= MAX_PBKDF2_ITERATIONS);
            (slots_ok && digests_ok).then(|| m.kdf_memory_blocks())
        }
        _ => Some(0),
    }
}
