#![no_main]
//! `Image` format probing and reading over fuzzed bytes: any image (raw, qcow, qcow2, LUKS)
//! opened through a resolver that refuses every backing and data file name (passphrase `pw`),
//! then reads at fuzz-chosen offsets and lengths. Every failure must be a typed error.
//!
//! Input: byte 0 = number of reads (mod 9), then that many 11-byte reads: kind (bits 0-1: how
//! the offset is formed, see `offset`), offset (u64 LE), length (u16 LE); then the image.
use qluks::image::{Image, ReadError, MAX_SCRATCH_LEN};
use qluks::io::MemIo;
use qluks::luks::KdfLimits;
use qluks::qcow2::backing::{BackingRequest, DataFileRequest, Opened, Resolver};

#[path = "kdf_budget.rs"]
mod kdf_budget;

const OP_LEN: usize = 11;

/// Refuses every name; knows one passphrase.
struct Refuse;

impl<'a> Resolver<MemIo<'a>> for Refuse {
    type Error = &'static str;
    fn open_backing(&mut self, _: &BackingRequest<'_>) -> Result<Opened<MemIo<'a>>, &'static str> {
        Err("refused")
    }
    fn passphrase(&mut self, _: usize) -> Option<&[u8]> {
        Some(b"pw")
    }
    fn open_data_file(&mut self, _: &DataFileRequest<'_>) -> Result<MemIo<'a>, &'static str> {
        Err("refused")
    }
    fn kdf_limits(&mut self, _: usize) -> KdfLimits {
        kdf_budget::LIMITS
    }
}

fn offset(kind: u8, raw: u64, size: u64) -> u64 {
    match kind & 3 {
        0 => raw,
        1 => size.wrapping_sub(raw % 65536),
        2 => u64::MAX - raw % 65536,
        _ => raw % size.saturating_add(1),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let Some((ops, image)) = rest.split_at_checked(usize::from(count % 9) * OP_LEN) else { return };
    // KDF costs above kdf_budget::LIMITS are refused before any work, for standalone LUKS
    // volumes and qcow2 images with an embedded LUKS header alike (Image::open passes no
    // Argon2 memory, so an Argon2 keyslot fails with a typed error before any work).
    let mut device = image.to_vec();
    let mut scratch = vec![0u8; MAX_SCRATCH_LEN];
    let mut chain = Box::<qluks::qcow2::Chain<MemIo>>::default();
    let Ok(mut img) = Image::open(MemIo::new(&mut device), &mut Refuse, &mut chain, &mut scratch) else { return };
    let size = img.size();
    let mut buf = vec![0u8; 65535];
    let reads = ops.chunks_exact(OP_LEN).map(|op| {
        (
            offset(op[0], u64::from_le_bytes(op[1..9].try_into().unwrap()), size),
            usize::from(u16::from_le_bytes([op[9], op[10]])),
        )
    });
    // And always the last sector, where offsets are largest.
    for (off, len) in reads.chain([(size.saturating_sub(512), size.min(512) as usize)]) {
        let in_range = off.checked_add(len as u64).is_some_and(|end| end <= size);
        match img.read_at(off, &mut buf[..len]) {
            Ok(()) => assert!(in_range, "read at {off:#x} len {len} accepted outside size {size:#x}"),
            Err(ReadError::OutOfRange { .. }) => {
                assert!(!in_range, "read at {off:#x} len {len} refused inside {size:#x}")
            }
            Err(_) => assert!(in_range, "read at {off:#x} len {len} outside {size:#x} not refused as out of range"),
        }
    }
});
