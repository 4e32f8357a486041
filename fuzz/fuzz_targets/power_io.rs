//! An in-memory block device with simulated power loss, shared by the model-based targets
//! (`qcow2_write_model`, `luks_volume_model`; included with `#[path]`, not a target itself).
//!
//! The device keeps the durable bytes (the state at the last completed flush) and the log of
//! sector writes since then. A power loss keeps the durable bytes plus a fuzzer-chosen subset
//! of the unflushed writes, cut into 512-byte sector pieces (a piece is the part of one write
//! inside one sector (or [`Dev::atomic`] unit): each lands or not on its own, later pieces over earlier ones in issue
//! order). A crash in the middle of an operation is a device that dies after `n` more
//! successful writes, or at its `n`-th flush request (which fails: the crash points where
//! write ordering matters): later writes and flushes fail with [`PowerError::Dead`].
#![allow(dead_code)]

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use qluks::io::{BlockIo, ReadOnly};

/// Sector size of the power-loss pieces.
pub const SECTOR: u64 = 512;

/// The device's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerError {
    /// A read past the end of the bytes.
    OutOfRange,
    /// The device died (injected crash).
    Dead,
    /// Written through the read-only default.
    ReadOnly,
}

impl fmt::Display for PowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerError::OutOfRange => "read past the end of the device",
            PowerError::Dead => "injected crash: the device is gone",
            PowerError::ReadOnly => "read-only",
        })
    }
}

impl std::error::Error for PowerError {}

impl From<ReadOnly> for PowerError {
    fn from(_: ReadOnly) -> Self {
        PowerError::ReadOnly
    }
}

/// What the device holds.
#[derive(Debug, Default)]
pub struct Dev {
    /// The bytes as the engine sees them.
    pub cur: Vec<u8>,
    /// The bytes at the last completed flush.
    pub durable: Vec<u8>,
    /// Writes since the last completed flush, in issue order.
    pub pending: Vec<(u64, Vec<u8>)>,
    /// Successful writes left before the device dies (`None`: never).
    pub die_after: Option<u64>,
    /// The device dies at this flush request (1: the next one), which then fails and makes
    /// nothing durable: the crash points where write ordering matters.
    pub die_at_flush: Option<u64>,
    /// Whether the device is dead.
    pub dead: bool,
    /// Whether writes are refused (a read-only backing layer).
    pub read_only: bool,
    /// The unit a power loss keeps or loses whole (0: [`SECTOR`]); a LUKS2 volume with
    /// 4096-byte sectors assumes a device that writes 4096 bytes atomically, as dm-crypt does.
    pub atomic: u64,
}

/// The device (clones share the bytes).
#[derive(Debug, Clone, Default)]
pub struct PowerIo(pub Rc<RefCell<Dev>>);

/// Writes `data` at `offset` of `bytes`, growing it with zeros as a file grows.
pub fn put(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

/// How a power loss treats the unflushed writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// All lost.
    DropAll,
    /// All landed (a crash of the process, not of the host).
    KeepAll,
    /// The first `n` sector pieces landed (a crash in the middle of the stream).
    Prefix(u64),
    /// Piece `i` landed when bit `i % 64` of `bits` is set, rotated by `i / 64` turns of a
    /// mixer (the fuzzer chooses the first 64 pieces directly).
    Subset(u64),
}

impl Loss {
    /// A loss chosen by a byte and a 64-bit word of fuzz input.
    pub fn from_input(kind: u8, word: u64) -> Loss {
        match kind % 4 {
            0 => Loss::DropAll,
            1 => Loss::KeepAll,
            2 => Loss::Prefix(word % 4096),
            _ => Loss::Subset(word),
        }
    }
}

/// Whether `POWER_IO_TRACE` asks for every device write and flush on stderr (debugging).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("POWER_IO_TRACE").is_some())
}

/// splitmix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl PowerIo {
    /// A device holding `bytes`, all durable.
    pub fn new(bytes: Vec<u8>) -> PowerIo {
        PowerIo(Rc::new(RefCell::new(Dev { cur: bytes.clone(), durable: bytes, ..Dev::default() })))
    }

    /// The device dies after `n` more successful writes.
    pub fn die_after(&self, n: u64) {
        let mut d = self.0.borrow_mut();
        d.die_after = Some(n);
        d.dead = n == 0;
    }

    /// The device dies now (so that nothing the engine does while it is dropped lands).
    pub fn kill(&self) {
        self.0.borrow_mut().dead = true;
    }

    /// The device dies at the `n`-th flush request from now (n >= 1).
    pub fn die_at_flush(&self, n: u64) {
        self.0.borrow_mut().die_at_flush = Some(n.max(1));
    }

    /// Number of unflushed writes.
    pub fn pending(&self) -> usize {
        self.0.borrow().pending.len()
    }

    /// Power loss: the bytes become the durable bytes plus the unflushed sector pieces that
    /// `loss` keeps; the device comes back (alive, everything durable).
    pub fn power_loss(&self, loss: Loss) {
        let mut d = self.0.borrow_mut();
        let mut bytes = d.durable.clone();
        let mut index = 0u64;
        let mut bits = match loss {
            Loss::Subset(b) => b,
            _ => 0,
        };
        let unit = if d.atomic == 0 { SECTOR } else { d.atomic };
        for (offset, data) in &d.pending {
            let mut at = 0usize;
            while at < data.len() {
                let pos = offset + at as u64;
                let piece = ((unit - pos % unit) as usize).min(data.len() - at);
                let keep = match loss {
                    Loss::DropAll => false,
                    Loss::KeepAll => true,
                    Loss::Prefix(n) => index < n,
                    Loss::Subset(_) => {
                        if index > 0 && index.is_multiple_of(64) {
                            bits = mix(bits);
                        }
                        bits >> (index % 64) & 1 == 1
                    }
                };
                if keep {
                    put(&mut bytes, pos, &data[at..at + piece]);
                }
                index += 1;
                at += piece;
            }
        }
        d.cur = bytes.clone();
        d.durable = bytes;
        d.pending.clear();
        d.die_after = None;
        d.die_at_flush = None;
        d.dead = false;
    }

    /// The current bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().cur.clone()
    }
}

impl BlockIo for PowerIo {
    type Error = PowerError;

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), PowerError> {
        let d = self.0.borrow();
        let end = offset.checked_add(buf.len() as u64).ok_or(PowerError::OutOfRange)?;
        if end > d.cur.len() as u64 {
            return Err(PowerError::OutOfRange);
        }
        buf.copy_from_slice(&d.cur[offset as usize..end as usize]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), PowerError> {
        let mut d = self.0.borrow_mut();
        if d.read_only {
            return Err(PowerError::ReadOnly);
        }
        if d.dead {
            return Err(PowerError::Dead);
        }
        // Writes far past the end are an engine bug here (images are small).
        let end = offset.checked_add(buf.len() as u64).ok_or(PowerError::OutOfRange)?;
        assert!(end <= 1 << 30, "a write up to {end:#x}: far past anything a small image needs");
        if trace() {
            eprintln!("    device: write {offset:#x} +{:#x}", buf.len());
        }
        put(&mut d.cur, offset, buf);
        d.pending.push((offset, buf.to_vec()));
        if let Some(n) = d.die_after.as_mut() {
            *n -= 1;
            if *n == 0 {
                d.dead = true;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PowerError> {
        let mut d = self.0.borrow_mut();
        if d.read_only {
            return Err(PowerError::ReadOnly);
        }
        if d.dead {
            return Err(PowerError::Dead);
        }
        if let Some(n) = d.die_at_flush.as_mut() {
            *n -= 1;
            if *n == 0 {
                d.dead = true;
                return Err(PowerError::Dead);
            }
        }
        if trace() {
            eprintln!("    device: flush");
        }
        let pending = std::mem::take(&mut d.pending);
        for (offset, data) in &pending {
            put(&mut d.durable, *offset, data);
        }
        Ok(())
    }

    fn size(&mut self) -> Result<u64, PowerError> {
        Ok(self.0.borrow().cur.len() as u64)
    }
}

/// A deterministic RNG for LUKS keys and salts (the model targets need reproducible runs).
pub struct Rng(pub u64);
impl rand_core::TryRng for Rng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self.0.wrapping_add(1);
        Ok(mix(self.0))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.try_next_u64()? as u8;
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Rng {}

/// The fuzz input read as little-endian integers (0 past its end).
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(core::array::from_fn(|_| self.u8()))
    }
}
