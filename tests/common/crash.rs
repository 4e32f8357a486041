//! A crash-injecting in-memory [`BlockIo`] for the write engine's crash tests.
//!
//! [`CrashIo`] is a growable byte vector behind a shared handle (the test keeps a clone and
//! reads the bytes after the engine is gone). It counts writes and flushes, records every
//! device event in order (a write's offset and bytes, or a flush), and injects one fault:
//!
//! - [`Fault::StopAfter`]`(n)`: writes 1..=n succeed; after write n the device is dead and
//!   every later write and flush fails with [`CrashError::Crashed`] (a process or host crash:
//!   what was written stays, flushed or not).
//! - [`Fault::TearAfter`]: writes 1..=n succeed; write n+1 writes only a seeded prefix of
//!   itself that ends at a 512-byte boundary strictly inside it, then fails, and the device is
//!   dead.
//! - [`Fault::Capacity`]`(size)`: a full device: any write that would end past `size` fails
//!   with [`CrashError::Full`] and changes nothing (later writes inside the size work).
//!
//! Power loss (only what was flushed, plus any subset of the unflushed sector writes) is
//! computed from a recorded log by [`power_loss`]; [`after_writes`] and [`torn`] compute the
//! other two faults' results from the same log, so that one recorded run of a deterministic
//! workload gives the image of every crash point (the tests also replay some of them for real
//! to prove that the engine's error paths leave the same bytes).
#![allow(dead_code)]

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use qluks::io::{BlockIo, ReadOnly};

/// The sector size of the tears and of the power-loss subsets.
pub const SECTOR: u64 = 512;

/// The error of a [`CrashIo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashError {
    /// The device died (injected crash).
    Crashed,
    /// A write past the device's capacity.
    Full {
        /// End of the refused write.
        end: u64,
        /// The capacity.
        capacity: u64,
    },
    /// A read past the end of the bytes.
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Size.
        size: u64,
    },
    /// Written through the read-only default.
    ReadOnly,
}

impl fmt::Display for CrashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashError::Crashed => write!(f, "injected crash: the device is gone"),
            CrashError::Full { end, capacity } => write!(f, "device full: write up to {end:#x} past {capacity:#x}"),
            CrashError::OutOfRange { offset, len, size } => {
                write!(f, "read of {len} bytes at {offset:#x} past the end ({size:#x})")
            }
            CrashError::ReadOnly => write!(f, "read-only"),
        }
    }
}

impl std::error::Error for CrashError {}

impl From<ReadOnly> for CrashError {
    fn from(_: ReadOnly) -> Self {
        CrashError::ReadOnly
    }
}

/// The fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None: a perfect device.
    None,
    /// Dead after write number `n` (1-based; 0 = dead from the start).
    StopAfter(u64),
    /// Write `n + 1` is torn at a 512-byte boundary chosen by `seed` (kept whole when it has
    /// no 512-byte boundary strictly inside), then the device is dead.
    TearAfter {
        /// Writes that complete.
        n: u64,
        /// Chooses the boundary.
        seed: u64,
    },
    /// Writes ending past this size fail with [`CrashError::Full`].
    Capacity(u64),
}

/// One device event, in the order the engine issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A successful write (or the torn part of one).
    Write {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// A successful flush.
    Flush,
}

/// What a [`CrashIo`] holds (shared between the engine's handle and the test's).
#[derive(Debug)]
pub struct Disk {
    /// The device's bytes as the engine sees them.
    pub bytes: Vec<u8>,
    /// Successful writes (a torn write counts).
    pub writes: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Write requests refused (crash or full).
    pub refused: u64,
    /// Every successful event, when recording.
    pub log: Vec<Event>,
    /// Whether events are recorded.
    pub record: bool,
    /// The fault.
    pub fault: Fault,
    /// Whether the device died.
    pub dead: bool,
}

/// The crash-injecting device (cheap to clone: the clones share the bytes).
#[derive(Debug, Clone)]
pub struct CrashIo(pub Rc<RefCell<Disk>>);

impl CrashIo {
    /// A device holding `bytes` with `fault`, recording events.
    pub fn new(bytes: Vec<u8>, fault: Fault) -> CrashIo {
        let dead = fault == Fault::StopAfter(0);
        CrashIo(Rc::new(RefCell::new(Disk {
            bytes,
            writes: 0,
            flushes: 0,
            refused: 0,
            log: Vec::new(),
            record: true,
            fault,
            dead,
        })))
    }

    /// The current bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().bytes.clone()
    }

    /// Successful writes so far.
    pub fn writes(&self) -> u64 {
        self.0.borrow().writes
    }

    /// Successful flushes so far.
    pub fn flushes(&self) -> u64 {
        self.0.borrow().flushes
    }

    /// Events recorded so far.
    pub fn events(&self) -> usize {
        self.0.borrow().log.len()
    }

    /// The recorded log.
    pub fn log(&self) -> Vec<Event> {
        self.0.borrow().log.clone()
    }

    /// Whether the fault has struck.
    pub fn dead(&self) -> bool {
        self.0.borrow().dead
    }
}

/// Writes `data` at `offset` of `bytes`, growing it with zeros as a file grows.
pub fn put(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

/// The length of the torn prefix of a write of `len` bytes at `offset`: a 512-byte boundary
/// strictly inside it chosen by `seed`, or `None` when it has none.
pub fn tear_len(offset: u64, len: usize, seed: u64) -> Option<usize> {
    let first = (offset / SECTOR + 1) * SECTOR;
    let end = offset + len as u64;
    if first >= end {
        return None;
    }
    let choices = (end - 1 - first) / SECTOR + 1;
    let boundary = first + (mix(seed) % choices) * SECTOR;
    Some((boundary - offset) as usize)
}

/// A 64-bit mixer (splitmix64's finaliser) for seeded choices.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl BlockIo for CrashIo {
    type Error = CrashError;

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), CrashError> {
        let d = self.0.borrow();
        let size = d.bytes.len() as u64;
        let err = CrashError::OutOfRange { offset, len: buf.len(), size };
        let end = offset.checked_add(buf.len() as u64).ok_or(err)?;
        if end > size {
            return Err(err);
        }
        buf.copy_from_slice(&d.bytes[offset as usize..end as usize]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), CrashError> {
        let mut d = self.0.borrow_mut();
        if d.dead {
            d.refused += 1;
            return Err(CrashError::Crashed);
        }
        let end = offset.checked_add(buf.len() as u64).ok_or(CrashError::Full { end: u64::MAX, capacity: 0 })?;
        let mut data = buf;
        match d.fault {
            Fault::Capacity(capacity) if end > capacity => {
                d.refused += 1;
                return Err(CrashError::Full { end, capacity });
            }
            Fault::TearAfter { n, seed } if d.writes == n => {
                let keep = tear_len(offset, buf.len(), seed).unwrap_or(buf.len());
                data = &buf[..keep];
                d.dead = true;
            }
            _ => {}
        }
        put(&mut d.bytes, offset, data);
        if d.record {
            d.log.push(Event::Write { offset, data: data.to_vec() });
        }
        d.writes += 1;
        if d.dead {
            d.refused += 1;
            return Err(CrashError::Crashed);
        }
        if d.fault == Fault::StopAfter(d.writes) {
            d.dead = true;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CrashError> {
        let mut d = self.0.borrow_mut();
        if d.dead {
            return Err(CrashError::Crashed);
        }
        d.flushes += 1;
        if d.record {
            d.log.push(Event::Flush);
        }
        Ok(())
    }

    fn size(&mut self) -> Result<u64, CrashError> {
        Ok(self.0.borrow().bytes.len() as u64)
    }
}

/// Number of write events in `log`.
pub fn write_count(log: &[Event]) -> u64 {
    log.iter().filter(|e| matches!(e, Event::Write { .. })).count() as u64
}

/// The number of leading events of `log` that succeed when the device dies after write `n`:
/// everything up to and including write `n` (0 for n = 0; all of `log` past its last write).
pub fn events_before_death(log: &[Event], n: u64) -> usize {
    if n == 0 {
        return 0;
    }
    let mut seen = 0;
    for (i, e) in log.iter().enumerate() {
        if matches!(e, Event::Write { .. }) {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    log.len()
}

/// The number of events of `log` before write `n + 1` (all of them if there is none): the
/// events that succeed when write `n + 1` is torn.
pub fn events_before_write(log: &[Event], n: u64) -> usize {
    let mut seen = 0;
    for (i, e) in log.iter().enumerate() {
        if matches!(e, Event::Write { .. }) {
            if seen == n {
                return i;
            }
            seen += 1;
        }
    }
    log.len()
}

/// The bytes after a crash following write `n` ([`Fault::StopAfter`]): `initial` with the
/// first `n` writes of `log`.
pub fn after_writes(initial: &[u8], log: &[Event], n: u64) -> Vec<u8> {
    let mut bytes = initial.to_vec();
    for e in &log[..events_before_death(log, n)] {
        if let Event::Write { offset, data } = e {
            put(&mut bytes, *offset, data);
        }
    }
    bytes
}

/// The bytes after write `n + 1` of `log` is torn ([`Fault::TearAfter`]); `None` when that
/// write has no 512-byte boundary inside (or does not exist).
pub fn torn(initial: &[u8], log: &[Event], n: u64, seed: u64) -> Option<Vec<u8>> {
    let k = events_before_death(log, n);
    let next = log[k..].iter().find_map(|e| match e {
        Event::Write { offset, data } => Some((*offset, data)),
        Event::Flush => None,
    })?;
    let keep = tear_len(next.0, next.1.len(), seed)?;
    let mut bytes = after_writes(initial, log, n);
    put(&mut bytes, next.0, &next.1[..keep]);
    Some(bytes)
}

/// The bytes after a power loss right after write `n` (the device dies: later events fail):
/// every write before the last successful flush, plus a `seed`-chosen subset of the sectors
/// written after it (each piece of a write within one 512-byte sector is kept or lost on its
/// own, in order).
pub fn power_loss(initial: &[u8], log: &[Event], n: u64, seed: u64) -> Vec<u8> {
    let live = &log[..events_before_death(log, n)];
    let durable = live.iter().rposition(|e| *e == Event::Flush).map_or(0, |i| i + 1);
    let mut bytes = initial.to_vec();
    for e in &live[..durable] {
        if let Event::Write { offset, data } = e {
            put(&mut bytes, *offset, data);
        }
    }
    let mut choice = seed;
    for e in &live[durable..] {
        let Event::Write { offset, data } = e else { continue };
        let mut at = 0usize;
        while at < data.len() {
            let pos = offset + at as u64;
            let piece = ((SECTOR - pos % SECTOR) as usize).min(data.len() - at);
            choice = mix(choice);
            if choice & 1 == 1 {
                put(&mut bytes, pos, &data[at..at + piece]);
            }
            at += piece;
        }
    }
    bytes
}

/// Shared-handle plumbing for tests that do not care about faults: a [`CrashIo`] with
/// [`Fault::None`] and no log.
pub fn plain(bytes: Vec<u8>) -> CrashIo {
    let io = CrashIo::new(bytes, Fault::None);
    io.0.borrow_mut().record = false;
    io
}

/// One guest operation of a workload (what the write engine's public API does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `write_at(offset, data)`.
    Write {
        /// Guest offset.
        offset: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// `write_zeroes(offset, len, unmap)`.
    Zero {
        /// Guest offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Whether clusters may be freed.
        unmap: bool,
    },
    /// `discard(offset, len)`: the whole clusters inside read as zero afterwards (v3).
    Discard {
        /// Guest offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// `flush()`.
    Flush,
}

impl Op {
    /// Applies the operation to a model of the guest (`cluster`: the image's cluster size,
    /// for discard).
    pub fn apply(&self, guest: &mut [u8], cluster: u64) {
        match self {
            Op::Write { offset, data } => guest[*offset as usize..*offset as usize + data.len()].copy_from_slice(data),
            Op::Zero { offset, len, .. } => guest[*offset as usize..(*offset + *len) as usize].fill(0),
            Op::Discard { offset, len } => {
                let (start, end) = discarded(*offset, *len, cluster, guest.len() as u64);
                guest[start as usize..end as usize].fill(0);
            }
            Op::Flush => {}
        }
    }

    /// Whether the operation may have left byte `i` reading `value` (a crash during or after
    /// it, before the next completed flush).
    pub fn may_leave(&self, i: u64, value: u8, cluster: u64, size: u64) -> bool {
        match self {
            Op::Write { offset, data } => {
                i >= *offset && i - offset < data.len() as u64 && data[(i - offset) as usize] == value
            }
            Op::Zero { offset, len, .. } => value == 0 && i >= *offset && i - offset < *len,
            Op::Discard { offset, len } => {
                let (start, end) = discarded(*offset, *len, cluster, size);
                value == 0 && (start..end).contains(&i)
            }
            Op::Flush => false,
        }
    }

    /// The qemu-io command doing the same, for a write whose bytes are all `pattern` (qemu-io
    /// writes constant patterns); `None` for a write of other bytes.
    pub fn qemu_io(&self) -> Option<String> {
        Some(match self {
            Op::Write { offset, data } => {
                let p = data[0];
                if data.iter().any(|&b| b != p) {
                    return None;
                }
                format!("write -P 0x{p:02x} {offset} {}", data.len())
            }
            Op::Zero { offset, len, unmap: true } => format!("write -z -u {offset} {len}"),
            Op::Zero { offset, len, unmap: false } => format!("write -z {offset} {len}"),
            Op::Discard { offset, len } => format!("discard {offset} {len}"),
            Op::Flush => "flush".to_string(),
        })
    }
}

/// The guest range a discard of `offset..+len` zeroes: the whole clusters inside it (a
/// partial last cluster at the end of the disk counts as whole).
pub fn discarded(offset: u64, len: u64, cluster: u64, size: u64) -> (u64, u64) {
    let start = offset.next_multiple_of(cluster);
    let end = offset + len;
    let end = if end == size { end } else { end / cluster * cluster };
    (start.min(end), end)
}

/// A seeded random generator (splitmix64) for workloads.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// How a workload picks its data bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bytes {
    /// Random bytes (a different stream per write).
    Random,
    /// One byte value per write (what qemu-io can write too).
    Pattern,
}

/// A seeded workload of `count` operations on a disk of `size` bytes with `cluster`-byte
/// clusters: about a third sequential writes of 2..40 KiB into fresh space (the file grows:
/// new L2 tables, refcount blocks and eventually a larger refcount table), random writes of
/// 1 byte to 64 KiB (unaligned, straddling clusters, overwriting old and snapshot-shared
/// data), write-zeroes with and without unmap, discards and flushes; ends with a flush.
pub fn workload(seed: u64, size: u64, cluster: u64, count: usize, bytes: Bytes) -> Vec<Op> {
    let mut r = Rng(seed);
    let mut cursor = size / 3;
    let mut ops = Vec::with_capacity(count + 1);
    for i in 0..count {
        let kind = r.below(100);
        let op = match kind {
            0..=29 => {
                let len = r.range(2048, 40 << 10).min(size - 1);
                if cursor + len > size {
                    cursor = r.below(size / 4);
                }
                let offset = cursor;
                cursor += len + r.below(3) * cluster;
                write(seed, i, offset, len, bytes, &mut r)
            }
            30..=64 => {
                let len = match r.below(4) {
                    0 => r.range(1, 600),
                    1 => r.range(1, 8) * 512,
                    2 => r.range(1, 16 << 10),
                    _ => r.range(1, 64 << 10),
                }
                .min(size);
                let offset = if r.below(3) == 0 { r.below(size / 512) * 512 } else { r.below(size) };
                let offset = offset.min(size - len);
                write(seed, i, offset, len, bytes, &mut r)
            }
            65..=74 => {
                let len = r.range(1, 12 * cluster).min(size);
                let offset = r.below(size - len + 1);
                Op::Zero { offset, len, unmap: r.below(2) == 0 }
            }
            75..=84 => {
                let len = r.range(1, 16 * cluster).min(size);
                let offset = r.below(size - len + 1);
                Op::Discard { offset, len }
            }
            _ => Op::Flush,
        };
        ops.push(op);
    }
    ops.push(Op::Flush);
    ops
}

fn write(seed: u64, i: usize, offset: u64, len: u64, bytes: Bytes, r: &mut Rng) -> Op {
    let data = match bytes {
        Bytes::Random => super::pattern(seed ^ (i as u64).wrapping_mul(0x1000_0001), len as usize),
        // Never 0: a pattern write must be told apart from zeroes.
        Bytes::Pattern => vec![r.range(1, 255) as u8; len as usize],
    };
    Op::Write { offset, data }
}

/// Checks that guest bytes `got` are what a crash may leave: every byte as in `flushed` (the
/// disk at the last completed flush), or as one of the operations in `window` (those after
/// that flush, up to the one the crash interrupted) may have left it.
pub fn crash_consistent(got: &[u8], flushed: &[u8], window: &[Op], cluster: u64) -> Result<(), String> {
    if got.len() != flushed.len() {
        return Err(format!("guest size {} instead of {}", got.len(), flushed.len()));
    }
    let size = got.len() as u64;
    let mut bad = Vec::new();
    const CHUNK: usize = 4096;
    for (c, (gc, fc)) in got.chunks(CHUNK).zip(flushed.chunks(CHUNK)).enumerate() {
        if gc == fc {
            continue;
        }
        for (j, (&g, &f)) in gc.iter().zip(fc).enumerate() {
            let i = c * CHUNK + j;
            if g != f && !window.iter().any(|op| op.may_leave(i as u64, g, cluster, size)) {
                bad.push(i);
            }
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let i = bad[0];
    Err(format!(
        "{} guest bytes neither flushed nor written since (first at {i:#x}: {:#04x}, flushed {:#04x}; last at {:#x})",
        bad.len(),
        got[i],
        flushed[i],
        bad[bad.len() - 1]
    ))
}
