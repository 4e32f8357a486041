#![no_main]
//! The qcow2 write engine against a model, with simulated power loss.
//!
//! An image is created in memory with fuzz-chosen options (clusters of 512 B..64 KiB,
//! refcount widths 1..64 bits, version 2 or 3, extended L2, LUKS with 1 PBKDF2 iteration, a
//! raw backing file shorter, as long as or longer than the disk), then a fuzz-chosen list of
//! writes, write-zeroes (with and without unmap), discards, flushes, snapshot create, apply
//! and delete, resizes (grow and shrink), power losses and crashes in the middle of an
//! operation runs on it and on a model of the guest (bytes, and a copy per snapshot).
//!
//! Power loss (`power_io.rs`): everything up to the last completed flush is durable; any
//! subset of the sector pieces written since then may land. The rule the reopened image must
//! meet: the engine's own `check` finds no corruption and no check error (leaks are allowed),
//! the size is the model's, and every guest byte reads either as the model's byte at the last
//! completed flush or as the byte some operation since then put there (a write's data, or
//! zero for write-zeroes and discard; for a snapshot apply interrupted by the crash, the
//! snapshot's byte). The bytes read become the model (durable) and the run goes on. Snapshot
//! operations and resizes are followed by a flush, so they are durable once they return; a
//! crash in the middle of a snapshot create or delete may leave the snapshot there or not
//! (its contents are the model's copy either way), one in the middle of an apply leaves the
//! snapshot and a disk of old-or-snapshot bytes (only crashed when both sizes match).
//! At the end: the active disk and every snapshot read as the model, `check` is clean (no
//! leaks either when no power loss happened), and a clean close and reopen reads the same.
//!
//! One exception, QEMU's behaviour too: a grow from a size inside a cluster shows what that
//! cluster held past the old end (tests/qcow2_resize.rs asserts it), so the model does not
//! know those bytes until something writes them. A crash in the middle of a snapshot create
//! or delete gets no exception: they switch refcounts, tables and flags with one header write
//! (src/qcow2/refcount/shadow.rs), so `check` must find no corruption there either.
//!
//! Input: 5 option bytes (cluster bits and LUKS choices, refcount order, flags, size in
//! sectors), then operations, each a kind byte and its arguments (see `Op::decode`).
//!
//! Crash points: a power loss between operations; a crash in the middle of one (the device
//! dies after `n` writes, or at the operation's `n`-th flush request, where write ordering
//! matters; half the decoded flushes are such crash points), then a power loss.
//!
//! Injected-bug demonstration (issue 12; the bug was never committed): with the barrier
//! between the refcount write-back and the L2 write-back removed from `Qcow2::flush`
//! (src/qcow2/refcount.rs; L2 entries can then land before the refcounts and data they need),
//! this target failed after 2 s (during its first pass over 40 random seed inputs), with
//! `step 7: after power loss Subset(..): check found 10 corruptions, 0 check errors: ["ERROR
//! cluster 6 refcount=0 reference=1", ...]` (write, flush, resize, power loss, write, then a
//! crash at the flush's first flush request keeping a subset of the unflushed sectors). The
//! same input passes without the injected bug. (Before flushes were crash points, a 290 s run
//! of 2,500 executions did not find it; from an empty corpus, libFuzzer's slow input-length
//! growth kept inputs under 15 bytes, too short for the five operations, for 300 s.)
//!
//! Debugging: `QCOW2_MODEL_TRACE=1` prints the options and operations and where the disk
//! first departs from the model after each step; `POWER_IO_TRACE=1` every device write and
//! flush.
use qluks::crypto::{CbcIv, CipherMode, CipherSpec, HashAlg, XtsIv};
use qluks::luks::luks1::Iterations;
use qluks::qcow2::backing::{Chain, Layer};
use qluks::qcow2::check::Repair;
use qluks::qcow2::create::{create, Compat, CreateOptions, Encryption};
use qluks::qcow2::resize::ResizeError;
use qluks::qcow2::{Error, Qcow2};

#[path = "power_io.rs"]
mod power_io;
use power_io::{Loss, PowerError, PowerIo};

const PASS: &[u8] = b"pw";
const MAX_SECTORS: u64 = 2048; // 1 MiB disks at most
const SMALL_SECTORS: u64 = 128; // 64 KiB

type Q = Qcow2<PowerIo>;
type C = Chain<PowerIo, { qluks::qcow2::DEFAULT_CACHE_SLICES }, 2>;

use power_io::Input;

use power_io::Rng;

#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        len: u64,
        tag: u8,
    },
    Zero {
        offset: u64,
        len: u64,
        unmap: bool,
    },
    Discard {
        offset: u64,
        len: u64,
    },
    Flush,
    SnapCreate,
    SnapApply(u8),
    SnapDelete(u8),
    Resize {
        sectors: u64,
        shrink: bool,
    },
    PowerLoss(Loss),
    /// `op` with the device dying after `writes` more writes, then a power loss.
    Crash {
        op: Box<Op>,
        writes: u64,
        loss: Loss,
    },
}

impl Op {
    /// One operation from the input, for a disk of `size` bytes and `cs`-byte clusters.
    fn decode(input: &mut Input, size: u64, cs: u64, max_sectors: u64, nested: bool) -> Op {
        let kind = input.u8();
        let range = |input: &mut Input, max: u64| {
            let offset = if size == 0 { 0 } else { u64::from(input.u32()) % size };
            let offset = if kind & 0x80 != 0 { offset / 512 * 512 } else { offset };
            let len = (1 + u64::from(input.u16()) % max).min(size - offset);
            (offset, len)
        };
        match kind % 16 {
            0..=4 => {
                let (offset, len) = range(input, (4 * cs).min(65536));
                Op::Write { offset, len, tag: input.u8() }
            }
            5 => {
                let (offset, len) = range(input, 12 * cs);
                Op::Zero { offset, len, unmap: kind & 0x40 != 0 }
            }
            6 => {
                let (offset, len) = range(input, 16 * cs);
                Op::Discard { offset, len }
            }
            // Half the flushes are crash points: the device dies at one of the flush's own
            // flush requests (where write ordering matters) and keeps a subset of the rest.
            7 | 8 if kind & 0x40 != 0 && !nested => Op::Crash {
                op: Box::new(Op::Flush),
                writes: 128 | u64::from(kind >> 4 & 3),
                loss: Loss::Subset(input.u64()),
            },
            7 | 8 => Op::Flush,
            9 => Op::SnapCreate,
            10 => Op::SnapApply(input.u8()),
            11 => Op::SnapDelete(input.u8()),
            12 => Op::Resize {
                sectors: u64::from(input.u16()) % (2 * max_sectors + 1).min(MAX_SECTORS + 1),
                shrink: kind & 0x40 != 0,
            },
            13 | 14 => Op::PowerLoss(Loss::from_input(input.u8(), input.u64())),
            _ if nested => Op::Flush,
            _ => {
                let writes = u64::from(input.u8());
                let op = Box::new(Op::decode(input, size, cs, max_sectors, true));
                Op::Crash { op, writes, loss: Loss::from_input(input.u8(), input.u64()) }
            }
        }
    }
}

/// The bytes write `tag` puts at guest `offset..offset + len`: never 0, and they change every
/// 64 bytes of the guest so that misplaced sectors show.
fn pattern(tag: u8, offset: u64, len: u64) -> Vec<u8> {
    let mut data = vec![0u8; len as usize];
    let mut at = 0usize;
    while at < data.len() {
        let pos = offset + at as u64;
        let run = ((64 - pos % 64) as usize).min(data.len() - at);
        data[at..at + run].fill((tag ^ (pos >> 6) as u8 ^ (pos >> 14) as u8).max(1));
        at += run;
    }
    data
}

/// The guest range a discard of `offset..+len` zeroes: the whole clusters inside (a partial
/// last cluster at the end of the disk counts as whole).
fn discarded(offset: u64, len: u64, cluster: u64, size: u64) -> (u64, u64) {
    let start = offset.next_multiple_of(cluster);
    let end = offset + len;
    let end = if end == size { end } else { end / cluster * cluster };
    (start.min(end), end)
}

/// What an operation since the last flush may have left in a guest range.
enum Pending {
    Bytes { offset: u64, data: Vec<u8> },
    Zero { start: u64, end: u64 },
}

struct Snap {
    name: Vec<u8>,
    content: Vec<u8>,
    unknown: Vec<bool>,
}

struct Model {
    /// The guest now.
    cur: Vec<u8>,
    /// The guest at the last completed flush.
    durable: Vec<u8>,
    /// Bytes the model does not know (now, and at the last completed flush): a grow from a
    /// size inside a cluster shows what that cluster held past the old end (QEMU's behaviour,
    /// which tests/qcow2_resize.rs asserts), until something writes them.
    unknown: Vec<bool>,
    durable_unknown: Vec<bool>,
    pending: Vec<Pending>,
    snaps: Vec<Snap>,
    next_snap: u32,
    /// The guest was replaced (snapshot apply, resize) since the last flush.
    replaced: bool,
}

impl Model {
    fn apply(&mut self, p: Pending) {
        match &p {
            Pending::Bytes { offset, data } => {
                self.cur[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
                self.unknown[*offset as usize..*offset as usize + data.len()].fill(false);
            }
            Pending::Zero { start, end } => {
                self.cur[*start as usize..*end as usize].fill(0);
                self.unknown[*start as usize..*end as usize].fill(false);
            }
        }
        self.pending.push(p);
    }
    fn flushed(&mut self) {
        self.durable_unknown.clone_from(&self.unknown);
        if !self.replaced {
            for p in self.pending.drain(..) {
                match p {
                    Pending::Bytes { offset, data } => {
                        self.durable[offset as usize..offset as usize + data.len()].copy_from_slice(&data)
                    }
                    Pending::Zero { start, end } => self.durable[start as usize..end as usize].fill(0),
                }
            }
        } else {
            self.durable = self.cur.clone();
            self.pending.clear();
            self.replaced = false;
        }
    }
    /// Whether guest byte `i` may read `v` after a power loss.
    fn allowed(&self, i: usize, v: u8) -> bool {
        self.durable.get(i) == Some(&v)
            || self.durable_unknown.get(i) == Some(&true)
            || self.pending.iter().any(|p| match p {
                Pending::Bytes { offset, data } => {
                    (i as u64).checked_sub(*offset).and_then(|k| data.get(k as usize)) == Some(&v)
                }
                Pending::Zero { start, end } => v == 0 && (*start..*end).contains(&(i as u64)),
            })
    }
}

struct Setup {
    cs: u64,
    v2: bool,
    luks: bool,
    backing: Option<(PowerIo, u64)>,
}

fn top(chain: &mut C) -> &mut Q {
    match chain.layers_mut()[0].as_mut() {
        Some(Layer::Qcow2(q)) => q,
        _ => unreachable!("the top layer is qcow2"),
    }
}

fn open(dev: &PowerIo, setup: &Setup) -> Box<C> {
    let q = Q::open(dev.clone(), setup.luks.then_some(PASS)).unwrap_or_else(|e| panic!("reopening: {e}"));
    let mut chain = Box::new(C::new(Layer::Qcow2(q)));
    if let Some((io, size)) = &setup.backing {
        chain.push_backing(Layer::Raw { io: io.clone(), size: *size }).unwrap();
    }
    chain
}

/// `check` with no repair (no corruption allowed, after any crash); returns the leaks.
fn check(chain: &mut C, when: &str) -> u64 {
    let q = top(chain);
    let mut memory = vec![0u8; q.check_memory_len().unwrap_or_else(|e| panic!("{when}: check memory: {e}"))];
    let mut findings = Vec::new();
    let r =
        q.check(&mut memory, Repair::None, &mut |f| findings.push(*f)).unwrap_or_else(|e| panic!("{when}: check: {e}"));
    let shown: Vec<String> = findings.iter().map(|f| format!("{f}")).collect();
    assert!(
        r.corruptions == 0 && r.check_errors == 0,
        "{when}: check found {} corruptions, {} check errors: {shown:?}",
        r.corruptions,
        r.check_errors
    );
    r.leaks
}

fn read_all(chain: &mut C, when: &str) -> Vec<u8> {
    let mut buf = vec![0u8; chain.size() as usize];
    chain.read_at(0, &mut buf).unwrap_or_else(|e| panic!("{when}: reading the disk: {e}"));
    buf
}

/// The first byte where `got` differs from `model`, bytes the model does not know aside.
fn mismatch(got: &[u8], model: &[u8], unknown: &[bool]) -> Option<usize> {
    if got == model {
        return None;
    }
    if got.len() != model.len() {
        return Some(got.len().min(model.len()));
    }
    // Sector by sector (byte loops are slow under coverage instrumentation).
    for (k, (g, m)) in got.chunks(512).zip(model.chunks(512)).enumerate() {
        if g != m {
            let at = k * 512;
            let j = (0..g.len()).find(|&j| g[j] != m[j] && !unknown[at + j]);
            if let Some(j) = j {
                return Some(at + j);
            }
        }
    }
    None
}

/// Refusals the API documents (before anything is written): no change to the model.
fn refused(e: &Error<PowerError>) -> bool {
    matches!(
        e,
        Error::RefcountOverflow { .. }
            | Error::SnapshotTableFull { .. }
            | Error::DiscardUnsupported
            | Error::Resize(ResizeError::V2WithSnapshots | ResizeError::V2CannotZero)
    )
}

struct Run {
    dev: PowerIo,
    setup: Setup,
    chain: Box<C>,
    model: Model,
    scratch: Vec<u8>,
    losses: u32,
    step: usize,
}

impl Run {
    fn size(&self) -> u64 {
        self.model.cur.len() as u64
    }

    /// Runs `op` on the engine and the model. `Ok(false)`: refused; `Err`: a device error
    /// (only with a dying device).
    fn exec(&mut self, op: &Op) -> Result<bool, Error<PowerError>> {
        let size = self.size();
        let cs = self.setup.cs;
        let scratch = &mut self.scratch;
        match *op {
            Op::Write { offset, len, tag } => {
                if len == 0 {
                    return Ok(true);
                }
                let data = pattern(tag, offset, len);
                let r = self.chain.write_at(offset, &data, scratch);
                self.model.apply(Pending::Bytes { offset, data });
                r?;
            }
            Op::Zero { offset, len, unmap } => {
                if len == 0 {
                    return Ok(true);
                }
                let r = self.chain.write_zeroes(offset, len, unmap, scratch);
                self.model.apply(Pending::Zero { start: offset, end: offset + len });
                r?;
            }
            Op::Discard { offset, len } => {
                if len == 0 {
                    return Ok(true);
                }
                match self.chain.discard(offset, len) {
                    Err(e) if refused(&e) => return Ok(false),
                    r => {
                        let (start, end) = discarded(offset, len, cs, size);
                        self.model.apply(Pending::Zero { start, end });
                        r?;
                    }
                }
            }
            Op::Flush => {
                self.chain.flush()?;
                self.model.flushed();
            }
            Op::SnapCreate => {
                let name = format!("s{}", self.model.next_snap).into_bytes();
                self.model.next_snap += 1;
                let q = top(&mut self.chain);
                match q.snapshot_create(&name, 0, 0, scratch) {
                    Err(e) if refused(&e) => return Ok(false),
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
                let (content, unknown) = (self.model.cur.clone(), self.model.unknown.clone());
                self.model.snaps.push(Snap { name, content, unknown });
                self.chain.flush()?;
                self.model.flushed();
            }
            Op::SnapApply(i) | Op::SnapDelete(i) => {
                if self.model.snaps.is_empty() {
                    return Ok(false);
                }
                let k = usize::from(i) % self.model.snaps.len();
                let q = top(&mut self.chain);
                let sn =
                    q.find_snapshot(&self.model.snaps[k].name).unwrap_or_else(|e| panic!("finding a snapshot: {e}"));
                let apply = matches!(op, Op::SnapApply(_));
                let r = if apply { q.snapshot_apply(&sn, scratch) } else { q.snapshot_delete(&sn, scratch) };
                match r {
                    Err(e) if refused(&e) => return Ok(false),
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
                if apply {
                    self.model.cur = self.model.snaps[k].content.clone();
                    self.model.unknown = self.model.snaps[k].unknown.clone();
                    self.model.replaced = true;
                } else {
                    self.model.snaps.remove(k);
                }
                self.chain.flush()?;
                self.model.flushed();
            }
            Op::Resize { sectors, shrink } => {
                let new_size = sectors * 512;
                match self.chain.resize(new_size, shrink, scratch) {
                    Err(Error::Resize(ResizeError::ShrinkNotAllowed { .. })) if !shrink => return Ok(false),
                    Err(e) if refused(&e) => return Ok(false),
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
                self.model.cur.resize(new_size as usize, 0);
                self.model.unknown.resize(new_size as usize, false);
                let tail_end = new_size.min(size.next_multiple_of(cs));
                if tail_end > size {
                    self.model.unknown[size as usize..tail_end as usize].fill(true);
                }
                self.model.replaced = true;
                self.chain.flush()?;
                self.model.flushed();
            }
            Op::PowerLoss(_) | Op::Crash { .. } => unreachable!(),
        }
        Ok(true)
    }

    /// Power loss: kill the device, drop the engine, keep what `loss` keeps, reopen, check.
    /// `apply`: the snapshot (content, unknown bytes) an interrupted apply may have left.
    fn power_loss(&mut self, loss: Loss, apply: Option<(Vec<u8>, Vec<bool>)>) {
        let when = format!("step {}: after power loss {loss:?}", self.step);
        self.losses += 1;
        self.dev.kill();
        self.chain.close();
        self.dev.power_loss(loss);
        self.chain = open(&self.dev, &self.setup);
        check(&mut self.chain, &when);
        assert_eq!(self.chain.size(), self.size(), "{when}: the disk size");
        let got = read_all(&mut self.chain, &when);
        // Sector by sector (byte loops are slow under coverage instrumentation), byte by
        // byte where a sector is not the durable one.
        for (k, sector) in got.chunks(512).enumerate() {
            let at = k * 512;
            if self.model.durable.get(at..at + sector.len()) == Some(sector) {
                continue;
            }
            self.check_sector(at, sector, apply.as_ref(), &when);
        }
        self.model.cur = got.clone();
        self.model.durable = got;
        self.model.unknown.clone_from(&self.model.durable_unknown);
        self.model.pending.clear();
        self.model.replaced = false;
        // Snapshots named by the model that an interrupted create or delete left behind or
        // removed: the image says.
        let q = top(&mut self.chain);
        let mut names = Vec::new();
        for s in q.snapshots() {
            let s = s.unwrap_or_else(|e| panic!("{when}: listing snapshots: {e}"));
            names.push(s.name.as_bytes().to_vec());
        }
        self.model.snaps.retain(|s| names.contains(&s.name));
        assert_eq!(
            names,
            self.model.snaps.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "{when}: the snapshot table"
        );
        self.scratch = vec![0u8; scratch_len(&mut self.chain)];
    }

    fn check_sector(&self, at: usize, sector: &[u8], apply: Option<&(Vec<u8>, Vec<bool>)>, when: &str) {
        for (j, &v) in sector.iter().enumerate() {
            let i = at + j;
            let from_apply = apply.is_some_and(|(c, u)| c[i] == v || u[i]);
            assert!(
                from_apply || self.model.allowed(i, v),
                "{when}: guest byte {i:#x} reads {v:#04x}; durable {:#04x}, latest {:#04x}; the sector reads {:02x?}",
                self.model.durable[i],
                self.model.cur[i],
                &sector[j.saturating_sub(8)..(j + 24).min(sector.len())]
            );
        }
    }

    fn crash(&mut self, op: &Op, writes: u64, loss: Loss) {
        let size = self.size();
        // An apply is crashed only when it keeps the size (the model checks bytes).
        let mut apply = None;
        if let Op::SnapApply(i) = *op {
            if self.model.snaps.is_empty() {
                return;
            }
            let snap = &self.model.snaps[usize::from(i) % self.model.snaps.len()];
            if snap.content.len() as u64 != size {
                return;
            }
            apply = Some((snap.content.clone(), snap.unknown.clone()));
        }
        if matches!(op, Op::Resize { .. } | Op::PowerLoss(_) | Op::Crash { .. }) {
            return self.power_loss(loss, None);
        }
        // A create interrupted after its table switch: the snapshot holds what the disk held.
        let before = (self.model.cur.clone(), self.model.unknown.clone());
        let next = self.model.next_snap;
        // `writes` bit 7: die at flush request `writes % 4 + 1` of the operation; else after
        // `writes % 128` writes.
        if writes & 128 != 0 {
            self.dev.die_at_flush(writes % 4 + 1);
        } else {
            self.dev.die_after(writes % 128);
        }
        match self.exec(op) {
            Ok(_) => {}
            Err(Error::Io(PowerError::Dead)) => {
                let name = format!("s{next}").into_bytes();
                if matches!(op, Op::SnapCreate) && !self.model.snaps.iter().any(|s| s.name == name) {
                    // The model did not record it; the image may have (then it holds the disk
                    // as it was: its first flush made every earlier write durable).
                    self.model.snaps.push(Snap { name, content: before.0, unknown: before.1 });
                }
                // An interrupted delete: the model keeps the snapshot until the image says.
            }
            Err(e) => panic!("step {}: {op:?} with a dying device: {e}", self.step),
        }
        self.power_loss(loss, apply);
    }
}

fn scratch_len(chain: &mut C) -> usize {
    let s = chain.write_scratch_len();
    s.max(top(chain).snapshot_scratch_len())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let b0 = input.u8();
    let cluster_bits = 9 + u32::from(b0 % 8);
    let refcount_order = u32::from(input.u8() % 7);
    let flags = input.u8();
    // Mostly disks of 64 KiB at most (fast); up to 1 MiB with flag bit 6.
    let big = flags & 0x40 != 0;
    let max_sectors = if big { MAX_SECTORS } else { SMALL_SECTORS };
    let sectors = u64::from(input.u16()) % (max_sectors + 1);
    let cs = 1u64 << cluster_bits;
    let v2 = flags & 1 != 0;
    // Version 2 has 16-bit refcounts only.
    let refcount_bits = if v2 { 16 } else { 1 << refcount_order };
    let extended_l2 = flags & 2 != 0 && !v2 && cs >= 16384;
    // LUKS on a quarter of the inputs (opening one merges 4000 anti-forensic stripes: slow),
    // with small keys: aes-128-xts-plain64 or aes-128-cbc-essiv:sha256.
    let luks = flags & 4 != 0 && b0 & 8 != 0;
    let cipher = if b0 & 16 != 0 {
        CipherSpec { mode: CipherMode::Cbc(CbcIv::Essiv(HashAlg::Sha256)), key_bytes: 16 }
    } else {
        CipherSpec { mode: CipherMode::Xts(XtsIv::Plain64), key_bytes: 32 }
    };
    let size = sectors * 512;
    let backing = (flags & 8 != 0).then(|| {
        let len = match flags >> 4 & 3 {
            0 => size,
            1 => size / 2,
            2 => size + 3 * 512,
            _ => size / 3,
        };
        let bytes: Vec<u8> = (0..len).map(|p| (p as u8 ^ (p >> 9) as u8) | 0x80).collect();
        let io = PowerIo::new(bytes);
        io.0.borrow_mut().read_only = true;
        (io, len)
    });

    let dev = PowerIo::new(Vec::new());
    let mut options = CreateOptions::new(size);
    options.cluster_size = cs;
    options.refcount_bits = refcount_bits;
    options.extended_l2 = extended_l2;
    options.compat = if v2 { Compat::V0_10 } else { Compat::V1_1 };
    if backing.is_some() {
        options.backing_file = Some(b"base.raw");
        options.backing_format = Some(b"raw");
    }
    if luks {
        options.encryption = Encryption::Luks {
            passphrase: PASS,
            cipher,
            hash: HashAlg::Sha256,
            iterations: Iterations::Fixed { keyslot: 1, digest: 1 },
        };
    }
    match create(&mut dev.clone(), &mut options, &mut Rng(u64::from(flags))) {
        Ok(()) => {}
        Err(Error::Create(e)) => {
            // Option combinations create refuses.
            if std::env::var_os("QCOW2_MODEL_TRACE").is_some() {
                eprintln!("create refused: {e}");
            }
            return;
        }
        Err(e) => panic!("create: {e}"),
    }
    qluks::io::BlockIo::flush(&mut dev.clone()).expect("flush after create");

    let setup = Setup { cs, v2, luks, backing };
    let mut chain = open(&dev, &setup);
    let mut initial = vec![0u8; size as usize];
    if let Some((io, len)) = &setup.backing {
        let n = (*len).min(size) as usize;
        initial[..n].copy_from_slice(&io.0.borrow().cur[..n]);
    }
    let scratch = vec![0u8; scratch_len(&mut chain)];
    let unknown = vec![false; initial.len()];
    let durable_unknown = unknown.clone();
    let model = Model {
        cur: initial.clone(),
        durable: initial,
        unknown,
        durable_unknown,
        pending: Vec::new(),
        snaps: Vec::new(),
        next_snap: 1,
        replaced: false,
    };
    let mut run = Run { dev, setup, chain, model, scratch, losses: 0, step: 0 };
    assert!(read_all(&mut run.chain, "after create") == run.model.cur, "a new image reads its backing file or zeros");

    let trace = std::env::var_os("QCOW2_MODEL_TRACE").is_some();
    if trace {
        eprintln!("cluster {cs}, refcount bits {refcount_bits}, v2 {v2}, extended L2 {extended_l2}, LUKS {luks}, size {size}, backing {:?}", run.setup.backing.as_ref().map(|b| b.1));
    }
    let mut steps = 0;
    while !input.0.is_empty() && steps < 64 {
        steps += 1;
        run.step = steps;
        let op = Op::decode(&mut input, run.size(), cs, max_sectors, false);
        if trace {
            eprintln!("step {steps}: {op:?}");
        }
        match op {
            Op::PowerLoss(loss) => run.power_loss(loss, None),
            Op::Crash { op, writes, loss } => run.crash(&op, writes, loss),
            op => {
                if let Err(e) = run.exec(&op) {
                    panic!("step {steps}: {op:?}: {e}");
                }
            }
        }
        if trace {
            // Debugging aid: where the engine first departs from the model.
            let got = read_all(&mut run.chain, "trace");
            if let Some(at) = mismatch(&got, &run.model.cur, &run.model.unknown) {
                eprintln!("  differs at {at:#x}: {:#04x?}, model {:#04x?}", got.get(at), run.model.cur.get(at));
            }
        }
    }

    // At the end, everything.
    let when = "at the end";
    run.chain.flush().unwrap_or_else(|e| panic!("{when}: flush: {e}"));
    run.model.flushed();
    if let Some(at) = mismatch(&read_all(&mut run.chain, when), &run.model.cur, &run.model.unknown) {
        panic!("{when}: the active disk differs at {at:#x}");
    }
    let leaks = check(&mut run.chain, when);
    assert!(leaks == 0 || run.losses > 0, "{when}: {leaks} leaked clusters without a power loss");
    for s in &run.model.snaps {
        let q = top(&mut run.chain);
        let sn = q.find_snapshot(&s.name).unwrap_or_else(|e| panic!("{when}: finding a snapshot: {e}"));
        q.select_snapshot(&sn).unwrap_or_else(|e| panic!("{when}: selecting a snapshot: {e}"));
        let got = read_all(&mut run.chain, when);
        if let Some(at) = mismatch(&got, &s.content, &s.unknown) {
            panic!("{when}: snapshot {} differs at {at:#x}", String::from_utf8_lossy(&s.name));
        }
        top(&mut run.chain).select_active();
    }
    // A clean close and reopen.
    run.chain.close();
    let mut chain = open(&run.dev, &run.setup);
    if let Some(at) = mismatch(&read_all(&mut chain, when), &run.model.cur, &run.model.unknown) {
        panic!("{when}: after reopening, the disk differs at {at:#x}");
    }
    let _ = run.setup.v2;
});
