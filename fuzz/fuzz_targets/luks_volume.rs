#![no_main]
//! A LUKS1 or LUKS2 volume opened from fuzzed bytes (passphrase `pw`, tiny KDF costs), then a
//! fuzz-chosen sequence of reads and writes at arbitrary offsets and lengths, including
//! offsets near the end of the volume and near u64::MAX. Every failure must be a typed error;
//! a write that succeeds must read back.
//!
//! Input: a control prefix, then the device bytes.
//!   byte 0: flags. bit 0: recompute the LUKS2 header checksums (so that mutated JSON gets
//!           past them); bit 1: try only keyslot (flags >> 4); bit 2: a 64 KiB JSON buffer
//!           instead of the default stack one; bit 3: caller storage for the LUKS2 header.
//!   byte 1: number of operations (mod 9), then that many 12-byte operations:
//!           kind (bits 0-1: 0/3 read_at, 1 write_at, 2 write_in_place; bits 2-3: how the
//!           offset is formed, see `offset`), offset (u64 LE), length (u24 LE, mod 192 KiB + 1).
use qluks::io::MemIo;
use qluks::luks::luks2::binary_header::{Checksum, BINARY_HEADER_SIZE, CSUM_LEN, OFF_CSUM};
use qluks::luks::luks2::BinaryHeader;
use qluks::luks::{LuksError, LuksIoError, LuksVolume, OpenOptions};

#[path = "kdf_budget.rs"]
mod kdf_budget;

const OP_LEN: usize = 12;
const MAX_LEN: usize = 192 * 1024;

/// Recomputes the checksum of the LUKS2 header copy at `at` (if one parses there); returns
/// its hdr_size.
fn fix_checksum(device: &mut [u8], at: usize) -> Option<u64> {
    let raw: &[u8; BINARY_HEADER_SIZE] = device.get(at..at + BINARY_HEADER_SIZE)?.try_into().ok()?;
    let binary = BinaryHeader::parse(raw).ok()?;
    let end = at.checked_add(usize::try_from(binary.hdr_size).ok()?)?;
    let area = device.get_mut(at..end)?;
    area[OFF_CSUM..OFF_CSUM + CSUM_LEN].fill(0);
    let mut checksum = Checksum::new(binary.checksum_alg);
    checksum.update(area);
    let len = binary.checksum_alg.digest_len();
    area[OFF_CSUM..OFF_CSUM + len].copy_from_slice(&checksum.finish()[..len]);
    Some(binary.hdr_size)
}

/// The offset an operation names: as given, counted back from the volume's end, counted back
/// from u64::MAX, or reduced into the volume.
fn offset(kind: u8, raw: u64, size: u64) -> u64 {
    match (kind >> 2) & 3 {
        0 => raw,
        1 => size.wrapping_sub(raw % 65536),
        2 => u64::MAX - raw % 65536,
        _ => raw % size.saturating_add(1),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&[flags, count], rest)) = data.split_first_chunk::<2>() else { return };
    let ops_len = usize::from(count % 9) * OP_LEN;
    let Some((ops, device)) = rest.split_at_checked(ops_len) else { return };
    let mut device = device.to_vec();
    if flags & 1 != 0 {
        if let Some(hdr_size) = fix_checksum(&mut device, 0) {
            fix_checksum(&mut device, hdr_size as usize);
        }
    }
    let mut memory = vec![0u8; kdf_budget::argon2_bytes(&device)];
    let mut json = vec![0u8; 64 * 1024];
    // Caller storage for the header, or the stack fallback.
    let mut header = Box::new(qluks::luks::luks2::Luks2Header::EMPTY);
    let options = OpenOptions {
        keyslot: (flags & 2 != 0).then_some(usize::from(flags >> 4)),
        kdf_memory: Some(&mut memory),
        json_buffer: (flags & 4 != 0).then_some(&mut json[..]),
        kdf_limits: kdf_budget::LIMITS,
        header: (flags & 8 != 0).then_some(&mut *header),
    };
    let Ok(mut volume) = LuksVolume::open(MemIo::new(&mut device), b"pw", options) else { return };
    let size = volume.size();
    let mut buf = Vec::new();
    for op in ops.chunks_exact(OP_LEN) {
        let kind = op[0];
        let off = offset(kind, u64::from_le_bytes(op[1..9].try_into().unwrap()), size);
        let len = (u32::from_le_bytes([op[9], op[10], op[11], 0]) as usize) % (MAX_LEN + 1);
        let in_range = off.checked_add(len as u64).is_some_and(|end| end <= size);
        buf.clear();
        buf.extend((0..len).map(|i| (i as u8) ^ kind));
        let written = buf.clone();
        let r = match kind & 3 {
            1 => volume.write_at(off, &buf),
            2 => volume.write_in_place(off, &mut buf),
            _ => volume.read_at(off, &mut buf),
        };
        // Requests outside the volume fail as out of range; inside it, only the device may
        // refuse (a segment that runs past it), never the volume.
        match &r {
            Ok(()) => assert!(in_range, "op {} at {off:#x} len {len} accepted outside size {size:#x}", kind & 3),
            Err(LuksIoError::Luks(LuksError::OutOfRange { .. })) => {
                assert!(!in_range, "op {} at {off:#x} len {len}", kind & 3)
            }
            Err(e) => {
                assert!(in_range && matches!(e, LuksIoError::Io(_)), "op {} at {off:#x} len {len}: {e:?}", kind & 3)
            }
        }
        if r.is_ok() && kind & 3 != 0 && kind & 3 != 3 {
            let mut back = vec![0u8; len];
            volume.read_at(off, &mut back).expect("reading back a write");
            assert!(back == written, "a write at {off:#x} len {len} does not read back");
        }
    }
});
