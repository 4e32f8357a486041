//! Shared by the differential, snapshot, chain, unlock and create targets: a reader that turns
//! fuzz bytes into choices (zeros once the bytes run out), a growable in-memory file that
//! several handles share, a deterministic RNG, and the LUKS2 checksum fixer.
#![allow(dead_code)] // each target uses part of this module

use std::cell::RefCell;
use std::rc::Rc;

use qluks::io::{BlockIo, ReadOnly};
use qluks::luks::luks2::binary_header::{Checksum, BINARY_HEADER_SIZE, CSUM_LEN, OFF_CSUM};
use qluks::luks::luks2::BinaryHeader;

/// Consumes fuzz bytes front to back; reads past the end give zeros.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    pub fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.bytes())
    }

    /// Up to `n` bytes (fewer when the input ends).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// Exactly `n` bytes: what is left, zero padded.
    pub fn take_padded(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.take(n).to_vec();
        v.resize(n, 0);
        v
    }

    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }
}

/// `len` bytes that depend on `seed` and `data` (the input repeated, else a counter).
pub fn fill(len: usize, seed: u8, data: &[u8]) -> Vec<u8> {
    (0..len).map(|i| if data.is_empty() { (i as u8) ^ seed } else { data[i % data.len()] ^ seed }).collect()
}

/// A growable in-memory file behind shared handles (a resolver hands out several).
#[derive(Clone, Default)]
pub struct SharedIo {
    pub data: Rc<RefCell<Vec<u8>>>,
    /// Request granularity the device advertises (1, 512 or 4096).
    pub block: usize,
}

impl SharedIo {
    pub fn new(bytes: Vec<u8>) -> Self {
        SharedIo { data: Rc::new(RefCell::new(bytes)), block: 1 }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.data.borrow().clone()
    }
}

#[derive(Debug)]
pub enum SharedIoError {
    OutOfRange { offset: u64, len: usize },
    TooLarge,
    ReadOnly,
}

impl core::fmt::Display for SharedIoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<ReadOnly> for SharedIoError {
    fn from(_: ReadOnly) -> Self {
        SharedIoError::ReadOnly
    }
}

/// Files stop growing here (a write past it fails like a full disk).
pub const MAX_FILE: u64 = 256 << 20;

impl BlockIo for SharedIo {
    type Error = SharedIoError;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SharedIoError> {
        let d = self.data.borrow();
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= d.len() as u64);
        let end = end.ok_or(SharedIoError::OutOfRange { offset, len: buf.len() })? as usize;
        buf.copy_from_slice(&d[offset as usize..end]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), SharedIoError> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= MAX_FILE).ok_or(SharedIoError::TooLarge)?;
        let mut d = self.data.borrow_mut();
        if end as usize > d.len() {
            d.resize(end as usize, 0);
        }
        d[offset as usize..end as usize].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SharedIoError> {
        Ok(())
    }
    fn size(&mut self) -> Result<u64, SharedIoError> {
        Ok(self.data.borrow().len() as u64)
    }
    fn block_size(&self) -> usize {
        self.block
    }
}

/// xorshift64: reproducible keys and salts for the create targets.
pub struct Rng(pub u64);

impl rand_core::TryRng for Rng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.try_next_u64()? as u8;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Rng {}

/// Recomputes the checksum of the LUKS2 header copy at `at` (if one parses there); returns
/// its hdr_size.
pub fn fix_checksum(device: &mut [u8], at: usize) -> Option<u64> {
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

/// Both LUKS2 copies' checksums.
pub fn fix_checksums(device: &mut [u8]) {
    if let Some(hdr_size) = fix_checksum(device, 0) {
        fix_checksum(device, hdr_size as usize);
    }
}
