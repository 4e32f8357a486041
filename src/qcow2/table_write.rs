//! Pure helpers of the metadata writer: refcount entries of any width (1..=64 bits) inside
//! table bytes, and writes that respect the device's granularity
//! ([`BlockIo::block_size`]: read-modify-write of partial blocks; [`BlockIo::io_align`]).

// Called by the data layer (write.rs); until it lands only the tests use some of it.
#![cfg_attr(not(test), allow(dead_code))]

use crate::io::{BlockIo, MAX_BLOCK_SIZE};

/// Zeros for writing new tables, aligned for any `io_align` the engines honour.
#[repr(C, align(4096))]
struct Zeros([u8; MAX_BLOCK_SIZE]);

static ZEROS: Zeros = Zeros([0; MAX_BLOCK_SIZE]);

/// One block of bounce memory, aligned for any `io_align` up to [`MAX_BLOCK_SIZE`].
#[repr(C, align(4096))]
struct Bounce([u8; MAX_BLOCK_SIZE]);

/// The largest value a refcount of `2^order` bits holds.
pub(crate) fn refcount_max(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// Byte position of refcount entry `index` in its block, and (for widths under 8 bits) its
/// bit shift inside that byte (entries fill each byte from the least significant bit).
pub(crate) fn refcount_pos(order: u32, index: u64) -> (u64, u32) {
    let bit = index << order;
    (bit / 8, (bit % 8) as u32)
}

/// Reads the refcount entry at byte `at` (bit `shift`) of `b`: big-endian for widths of 8 bits
/// and more, from the least significant bit for smaller widths.
pub(crate) fn get_refcount(b: &[u8], at: usize, shift: u32, order: u32) -> u64 {
    match order {
        0..=2 => u64::from(b[at] >> shift) & refcount_max(order),
        3 => u64::from(b[at]),
        4 => u64::from(u16::from_be_bytes([b[at], b[at + 1]])),
        5 => u64::from(u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])),
        _ => {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(x)
        }
    }
}

/// Writes `value` (at most [`refcount_max`]) into the refcount entry at byte `at` (bit `shift`).
pub(crate) fn set_refcount(b: &mut [u8], at: usize, shift: u32, order: u32, value: u64) {
    match order {
        0..=2 => {
            let mask = (refcount_max(order) as u8) << shift;
            b[at] = (b[at] & !mask) | (((value as u8) << shift) & mask);
        }
        3 => b[at] = value as u8,
        4 => b[at..at + 2].copy_from_slice(&(value as u16).to_be_bytes()),
        5 => b[at..at + 4].copy_from_slice(&(value as u32).to_be_bytes()),
        _ => b[at..at + 8].copy_from_slice(&value.to_be_bytes()),
    }
}

/// The block size and buffer alignment `io` asks for (1 when out of range, as the read side).
fn granularity<I: BlockIo + ?Sized>(io: &I) -> (usize, usize) {
    let valid = |n: usize| n.is_power_of_two() && n <= MAX_BLOCK_SIZE;
    let bs = io.block_size();
    let align = io.io_align();
    (if valid(bs) { bs } else { 1 }, if valid(align) { align } else { 1 })
}

/// Writes `buf` at `offset` in requests `io` accepts: straight through when the range is whole
/// aligned blocks at an aligned address, else through a [`MAX_BLOCK_SIZE`] bounce buffer, with
/// a read-modify-write of partial blocks (metadata writes of 8 or 12 bytes on a 512-byte
/// device).
pub fn write_aligned<I: BlockIo + ?Sized>(io: &mut I, offset: u64, buf: &[u8]) -> Result<(), I::Error> {
    let (bs, align) = granularity(io);
    let whole = offset.is_multiple_of(bs as u64) && buf.len().is_multiple_of(bs);
    if whole && (buf.as_ptr() as usize).is_multiple_of(align) {
        return io.write_at(offset, buf);
    }
    write_bounced(io, offset, buf, bs)
}

#[inline(never)]
fn write_bounced<I: BlockIo + ?Sized>(io: &mut I, offset: u64, buf: &[u8], bs: usize) -> Result<(), I::Error> {
    let mut bounce = Bounce([0; MAX_BLOCK_SIZE]);
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let within = (pos % bs as u64) as usize;
        let rest = buf.len() - done;
        if within == 0 && rest >= bs {
            let n = rest.min(MAX_BLOCK_SIZE) / bs * bs;
            bounce.0[..n].copy_from_slice(&buf[done..done + n]);
            io.write_at(pos, &bounce.0[..n])?;
            done += n;
            continue;
        }
        let start = pos - within as u64;
        io.read_at(start, &mut bounce.0[..bs])?;
        let n = (bs - within).min(rest);
        bounce.0[within..within + n].copy_from_slice(&buf[done..done + n]);
        io.write_at(start, &bounce.0[..bs])?;
        done += n;
    }
    Ok(())
}

/// Writes `len` zero bytes at `offset` (a new table's cluster), in chunks from a static
/// buffer: no large buffer on the stack.
pub fn write_zeros<I: BlockIo + ?Sized>(io: &mut I, offset: u64, len: u64) -> Result<(), I::Error> {
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(MAX_BLOCK_SIZE as u64) as usize;
        write_aligned(io, offset + done, &ZEROS.0[..n])?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{MemIo, MemIoError};

    #[test]
    fn every_width_round_trips_and_leaves_its_neighbours_alone() {
        for order in 0..=6u32 {
            let max = refcount_max(order);
            let mut b = [0u8; 64];
            let entries = (64 * 8) >> order;
            for i in 0..entries {
                let (at, shift) = refcount_pos(order, i);
                set_refcount(&mut b, at as usize, shift, order, i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & max);
            }
            for i in 0..entries {
                let (at, shift) = refcount_pos(order, i);
                assert_eq!(get_refcount(&b, at as usize, shift, order), i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & max);
            }
        }
    }

    #[test]
    fn layouts_match_qemu() {
        // 1-bit: entry 0 is bit 0 of byte 0 (LSB first); entry 9 is bit 1 of byte 1.
        let mut b = [0u8; 8];
        let (at, shift) = refcount_pos(0, 9);
        set_refcount(&mut b, at as usize, shift, 0, 1);
        assert_eq!(b[..2], [0, 0b10]);
        // 4-bit: entry 1 is the high nibble of byte 0.
        let mut b = [0u8; 8];
        let (at, shift) = refcount_pos(2, 1);
        set_refcount(&mut b, at as usize, shift, 2, 0xa);
        assert_eq!(b[0], 0xa0);
        // 16-bit: big-endian.
        let mut b = [0u8; 8];
        let (at, shift) = refcount_pos(4, 1);
        set_refcount(&mut b, at as usize, shift, 4, 0x0102);
        assert_eq!(b[..4], [0, 0, 1, 2]);
        assert_eq!(refcount_max(6), u64::MAX);
        assert_eq!(refcount_max(0), 1);
    }

    /// A device that accepts only whole aligned 512-byte blocks.
    struct Blocks<'a>(MemIo<'a>);

    impl BlockIo for Blocks<'_> {
        type Error = MemIoError;
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MemIoError> {
            assert!(offset.is_multiple_of(512) && buf.len().is_multiple_of(512), "unaligned read");
            self.0.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), MemIoError> {
            assert!(offset.is_multiple_of(512) && buf.len().is_multiple_of(512), "unaligned write");
            self.0.write_at(offset, buf)
        }
        fn flush(&mut self) -> Result<(), MemIoError> {
            Ok(())
        }
        fn size(&mut self) -> Result<u64, MemIoError> {
            self.0.size()
        }
        fn block_size(&self) -> usize {
            512
        }
    }

    #[test]
    fn small_writes_on_a_block_device_read_modify_write() {
        let mut mem = [7u8; 2048];
        let mut dev = Blocks(MemIo::new(&mut mem));
        write_aligned(&mut dev, 508, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        write_zeros(&mut dev, 1024, 1024).unwrap();
        assert_eq!(mem[500..520], [7, 7, 7, 7, 7, 7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 8, 7, 7, 7, 7]);
        assert!(mem[1024..].iter().all(|&b| b == 0));
        assert!(mem[..508].iter().all(|&b| b == 7));
    }
}
