//! Argon2d, Argon2i and Argon2id (RFC 9106, version 0x13) working in a caller-supplied byte
//! region.
//!
//! LUKS2 keyslots derive their area key with Argon2, which is memory-hard: cryptsetup asks for
//! up to 1 GiB. The memory comes from the caller as a plain `&mut [u8]` of any alignment
//! (firmware hands over a raw region without `unsafe`): the block step
//! ([`qluks_hal::blamka::fill_block`], on the CPU's fastest BlaMka kernel) reads the reference
//! block and the block it replaces as little-endian bytes and writes the new one back, keeping
//! the previous block as words on the stack, so no aligned view of the region is ever needed.
//! The region is wiped afterwards (a lane per job, see below): it holds passphrase-derived
//! state.
//!
//! The lanes of one slice are independent (RFC 9106 section 3.4: a block references other
//! lanes only outside the current slice), so the fill hands them to a [`LaneRunner`] as
//! [`SegmentJob`]s: the memory is lane-major, each job gets a `&mut` to its own segment and a
//! shared view of the memory outside the segments being written. [`Sequential`] runs them in
//! turn; a caller with threads (the CLI, a multi-core firmware) runs them at once. Each job
//! holds four 1 KiB blocks and two address blocks on the stack of the thread running it.

use zeroize::Zeroize;

/// The shortest salt Argon2 accepts.
pub const MIN_SALT_LEN: usize = 8;
/// Bytes in one Argon2 block.
pub const BLOCK_BYTES: usize = 1024;
const WORDS: usize = blamka::WORDS;
const SYNC_POINTS: usize = 4;
const VERSION: u32 = 0x13;

/// Which Argon2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Data-independent addressing.
    Argon2i,
    /// Data-independent for the first half pass, then data-dependent (cryptsetup's default).
    Argon2id,
    /// Data-dependent addressing (RFC 9106; not used by LUKS2).
    Argon2d,
}

/// Argon2 costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The variant.
    pub variant: Variant,
    /// Passes (`t`), at least 1.
    pub time: u32,
    /// Memory in KiB (`m`), at least 8 per lane.
    pub memory_kib: u32,
    /// Lanes (`p`), 1..2^24.
    pub lanes: u32,
}

/// Why Argon2 refused to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argon2Error {
    /// The costs are outside what RFC 9106 allows (`t` = 0, no lanes, less than 8 KiB per
    /// lane, a salt under 8 bytes, an output under 4 bytes).
    Params,
    /// The memory region is smaller than [`Params::memory_bytes`].
    MemoryTooSmall {
        /// Bytes needed.
        needed: u64,
    },
}

impl Params {
    fn valid(&self) -> bool {
        self.time >= 1 && (1..1 << 24).contains(&self.lanes) && self.memory_kib >= 8 * self.lanes
    }

    /// Blocks actually used: `m` rounded down to a multiple of 4 lanes' segments.
    fn block_count(&self) -> usize {
        let per = SYNC_POINTS * self.lanes as usize;
        self.memory_kib as usize / per * per
    }

    /// Bytes of working memory these costs need (`m` KiB rounded down to whole segments);
    /// `None` when the costs are invalid.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.valid().then(|| self.block_count() as u64 * BLOCK_BYTES as u64)
    }
}

/// BLAKE2b (RFC 7693) without a key, 1..=64 output bytes. Written as loops rather than the
/// unrolled rounds of the `blake2` crate, whose compression function takes about 80 KiB of
/// stack in debug builds.
struct Blake2b {
    h: [u64; 8],
    t: u128,
    buf: [u8; 128],
    len: usize,
    out_len: usize,
}

const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

const SIGMA: [[u8; 16]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

/// The (a, b, c, d) words of the eight G calls of a round.
const G_WORDS: [[usize; 4]; 8] = [
    [0, 4, 8, 12],
    [1, 5, 9, 13],
    [2, 6, 10, 14],
    [3, 7, 11, 15],
    [0, 5, 10, 15],
    [1, 6, 11, 12],
    [2, 7, 8, 13],
    [3, 4, 9, 14],
];

impl Blake2b {
    fn new(out_len: usize) -> Blake2b {
        let mut h = IV;
        h[0] ^= 0x0101_0000 ^ out_len as u64;
        Blake2b { h, t: 0, buf: [0; 128], len: 0, out_len }
    }

    fn compress(&mut self, last: bool) {
        let mut m = [0u64; 16];
        for (w, b) in m.iter_mut().zip(self.buf.chunks_exact(8)) {
            *w = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        let mut v = [0u64; 16];
        v[..8].copy_from_slice(&self.h);
        v[8..].copy_from_slice(&IV);
        v[12] ^= self.t as u64;
        v[13] ^= (self.t >> 64) as u64;
        if last {
            v[14] = !v[14];
        }
        for round in 0..12 {
            let s = &SIGMA[round % 10];
            for (i, &[a, b, c, d]) in G_WORDS.iter().enumerate() {
                let (x, y) = (m[s[2 * i] as usize], m[s[2 * i + 1] as usize]);
                v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
                v[d] = (v[d] ^ v[a]).rotate_right(32);
                v[c] = v[c].wrapping_add(v[d]);
                v[b] = (v[b] ^ v[c]).rotate_right(24);
                v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
                v[d] = (v[d] ^ v[a]).rotate_right(16);
                v[c] = v[c].wrapping_add(v[d]);
                v[b] = (v[b] ^ v[c]).rotate_right(63);
            }
        }
        for i in 0..8 {
            self.h[i] ^= v[i] ^ v[i + 8];
        }
        m.zeroize();
        v.zeroize();
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // The last block is compressed by `finish`, so a full buffer waits for more data.
            if self.len == 128 {
                self.t += 128;
                self.compress(false);
                self.len = 0;
            }
            let n = (128 - self.len).min(data.len());
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
        }
    }

    fn finish(mut self, out: &mut [u8]) {
        self.t += self.len as u128;
        self.buf[self.len..].fill(0);
        self.compress(true);
        let mut bytes = [0u8; 64];
        for (b, w) in bytes.chunks_exact_mut(8).zip(self.h.iter()) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        out.copy_from_slice(&bytes[..self.out_len]);
        bytes.zeroize();
        self.h.zeroize();
        self.buf.zeroize();
    }
}

/// H' of RFC 9106 (variable-length BLAKE2b) of the concatenation of `inputs` into `out`
/// (1..=1024 bytes here).
fn blake2b_long(inputs: &[&[u8]], out: &mut [u8]) {
    let len = (out.len() as u32).to_le_bytes();
    let mut h = Blake2b::new(out.len().min(64));
    h.update(&len);
    for input in inputs {
        h.update(input);
    }
    if out.len() <= 64 {
        h.finish(out);
        return;
    }
    let mut v = [0u8; 64];
    h.finish(&mut v);
    let (first, mut rest) = out.split_at_mut(32);
    first.copy_from_slice(&v[..32]);
    while rest.len() > 64 {
        let mut h = Blake2b::new(64);
        h.update(&v);
        h.finish(&mut v);
        let (chunk, tail) = rest.split_at_mut(32);
        chunk.copy_from_slice(&v[..32]);
        rest = tail;
    }
    let mut h = Blake2b::new(rest.len());
    h.update(&v);
    h.finish(rest);
    v.zeroize();
}

use qluks_hal::blamka::{self, BlamkaBackend, Block};

fn load(bytes: &[u8], out: &mut Block) {
    for (w, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
}

fn block(memory: &[u8], index: usize) -> &[u8] {
    &memory[index * BLOCK_BYTES..(index + 1) * BLOCK_BYTES]
}

/// G(x, y) into `out`: `out` = P(x ^ y) ^ (x ^ y) [^ `out` when `xor`].
fn compress(kernel: BlamkaBackend, x: &Block, y: &Block, out: &mut Block, tmp: &mut Block, xor: bool) {
    for k in 0..WORDS {
        let r = x[k] ^ y[k];
        tmp[k] = r;
        out[k] = if xor { out[k] ^ r } else { r };
    }
    blamka::permute(kernel, tmp);
    for k in 0..WORDS {
        out[k] ^= tmp[k];
    }
}

/// Work state on the stack: previous block, reference block, output block, scratch.
struct Work {
    prev: Block,
    refb: Block,
    cur: Block,
    tmp: Block,
}

impl Zeroize for Work {
    fn zeroize(&mut self) {
        self.prev.zeroize();
        self.refb.zeroize();
        self.cur.zeroize();
        self.tmp.zeroize();
    }
}

/// The all-zero block (input of the address generator).
static ZERO_BLOCK: Block = [0; WORDS];

/// The inputs of one derivation besides the costs.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The password (`P`).
    pub password: &'a [u8],
    /// The salt (`S`), at least [`MIN_SALT_LEN`] bytes.
    pub salt: &'a [u8],
    /// The secret value (`K`), empty for none (LUKS2 uses none).
    pub secret: &'a [u8],
    /// The associated data (`X`), empty for none (LUKS2 uses none).
    pub ad: &'a [u8],
}

/// Most lanes handed to a [`LaneRunner`] in one call: the segments of one slice are split
/// into fixed arrays of this many jobs (no heap). More lanes are handed over in groups.
pub const MAX_PARALLEL_LANES: usize = 16;

/// Runs the segment jobs of one slice. Between two calls the fill synchronises (RFC 9106's
/// slices): the jobs of one call write disjoint segments and read only blocks no job of the
/// call writes, so they may run in any order or all at once, on as many threads as the runner
/// has. A job the runner leaves unrun is run by the fill itself after the call.
pub trait LaneRunner {
    /// Runs every job of `jobs` ([`SegmentJob::run`]) and returns when they are finished.
    fn run(&self, jobs: &mut [SegmentJob<'_>]);
}

/// The single-thread [`LaneRunner`]: runs the jobs one after another.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl LaneRunner for Sequential {
    fn run(&self, jobs: &mut [SegmentJob<'_>]) {
        for job in jobs {
            job.run();
        }
    }
}

/// The shape of one fill.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    variant: Variant,
    y: u32,
    lanes: usize,
    lane_len: usize,
    segment_len: usize,
    passes: usize,
    kernel: BlamkaBackend,
}

/// The fill of one segment (one lane in one slice of one pass): a `&mut` to that segment and a
/// shared view of every block outside the segments written in the same slice. `Send`: a
/// runner may move it to another thread.
pub struct SegmentJob<'a> {
    geometry: Geometry,
    pass: usize,
    slice: usize,
    lane: usize,
    /// Segment (`lane`, `slice`), `segment_len` blocks.
    own: &'a mut [u8],
    /// The readable rest of the memory, as runs (first block index, bytes) in address order.
    runs: &'a [(usize, &'a [u8])],
    done: bool,
    /// A wipe job: `own` is the whole lane, to be zeroed (the memory's wipe, lanes in parallel).
    wipe: bool,
}

impl SegmentJob<'_> {
    fn empty(geometry: Geometry) -> Self {
        SegmentJob { geometry, pass: 0, slice: 0, lane: 0, own: &mut [], runs: &[], done: true, wipe: false }
    }

    /// The lane this job fills.
    pub fn lane(&self) -> usize {
        self.lane
    }

    /// Fills the segment (a second call does nothing). Its stack use is about 7 KiB, wiped
    /// before it returns. After the last pass, a job wipes its lane of the memory instead.
    pub fn run(&mut self) {
        if self.done {
            return;
        }
        if self.wipe {
            self.own.zeroize();
            self.done = true;
            return;
        }
        let mut w = Work { prev: [0; WORDS], refb: [0; WORDS], cur: [0; WORDS], tmp: [0; WORDS] };
        let mut address = [0u64; WORDS];
        let mut input = [0u64; WORDS];
        self.fill(&mut w, &mut address, &mut input);
        w.zeroize();
        address.zeroize();
        input.zeroize();
        self.done = true;
    }

    /// Block `index` (counted over the whole memory, lane-major).
    fn block(&self, index: usize) -> &[u8] {
        let own_first = self.lane * self.geometry.lane_len + self.slice * self.geometry.segment_len;
        if let Some(i) = index.checked_sub(own_first).filter(|&i| i < self.geometry.segment_len) {
            return block(self.own, i);
        }
        shared_block(self.runs, index)
    }

    fn fill(&mut self, w: &mut Work, address: &mut Block, input: &mut Block) {
        let Geometry { variant, y, lanes, lane_len, segment_len, passes, kernel } = self.geometry;
        let (pass, slice, lane) = (self.pass, self.slice, self.lane);
        let block_count = lane_len * lanes;
        let independent = match variant {
            Variant::Argon2i => true,
            Variant::Argon2d => false,
            Variant::Argon2id => pass == 0 && slice < SYNC_POINTS / 2,
        };
        if independent {
            input[..6].copy_from_slice(&[
                pass as u64,
                lane as u64,
                slice as u64,
                block_count as u64,
                passes as u64,
                y as u64,
            ]);
        }
        let start = if pass == 0 && slice == 0 {
            if independent {
                next_addresses(kernel, address, input, &mut w.tmp);
            }
            2
        } else {
            0
        };
        let first = lane * lane_len + slice * segment_len + start;
        let prev = if first.is_multiple_of(lane_len) { first + lane_len - 1 } else { first - 1 };
        load(self.block(prev), &mut w.prev);
        // The reference block of block `i` of the segment (an index over the whole memory) for
        // the pseudo-random word `pseudo` (RFC 9106 section 3.4).
        let reference = |i: usize, pseudo: u64| {
            let ref_lane = if pass == 0 && slice == 0 { lane } else { (pseudo >> 32) as usize % lanes };
            let same_lane = ref_lane == lane;
            let area = if pass == 0 {
                if slice == 0 {
                    i - 1
                } else if same_lane {
                    slice * segment_len + i - 1
                } else {
                    slice * segment_len - usize::from(i == 0)
                }
            } else if same_lane {
                lane_len - segment_len + i - 1
            } else {
                lane_len - segment_len - usize::from(i == 0)
            } as u64;
            let j1 = pseudo & 0xffff_ffff;
            let rel = (j1 * j1) >> 32;
            let rel = area - 1 - ((area * rel) >> 32);
            let begin = if pass != 0 && slice != SYNC_POINTS - 1 { (slice + 1) * segment_len } else { 0 };
            ref_lane * lane_len + (begin as u64 + rel) as usize % lane_len
        };
        // Within a segment the previous block is the one just computed (kept in `w.prev`).
        for i in start..segment_len {
            let pseudo = if independent {
                if i % WORDS == 0 {
                    next_addresses(kernel, address, input, &mut w.tmp);
                }
                address[i % WORDS]
            } else {
                w.prev[0]
            };
            let index = reference(i, pseudo);
            // With data-independent addresses the next block's reference is known now: its
            // lines are requested while this block is computed (within the address block).
            if independent && (i + 1) % WORDS != 0 && i + 1 < segment_len {
                blamka::prefetch(self.block(reference(i + 1, address[(i + 1) % WORDS])));
            }
            // G(prev, ref) = P(R) ^ R with R = prev ^ ref, xored into the block it replaces
            // after the first pass: the kernel reads `ref` and the old block from memory and
            // writes the new one to memory and to `prev` (the next block's previous).
            let (before, rest) = self.own.split_at_mut(i * BLOCK_BYTES);
            let own_first = lane * lane_len + slice * segment_len;
            let refb = match index.checked_sub(own_first).filter(|&k| k < segment_len) {
                // In this segment: one of the blocks before `i` (RFC 9106 section 3.4).
                Some(k) => block(before, k),
                None => shared_block(self.runs, index),
            };
            let (Ok(refb), Ok(dst)) = (refb.try_into(), (&mut rest[..BLOCK_BYTES]).try_into()) else {
                unreachable!("blocks are BLOCK_BYTES long")
            };
            blamka::fill_block(kernel, &mut w.prev, refb, dst, pass != 0, &mut w.tmp);
        }
    }
}

/// Derives `out` from `password` and `salt` with `params`, working in `memory` (at least
/// [`Params::memory_bytes`] bytes, any alignment; wiped afterwards), on the calling thread.
pub fn argon2(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut [u8],
) -> Result<(), Argon2Error> {
    let input = Input { password, salt, secret: &[], ad: &[] };
    argon2_with(params, &input, out, memory, &Sequential)
}

/// [`argon2`] with a secret and associated data, the lanes of each slice run by `runner`
/// (for example on one thread per lane; the result does not depend on the runner), the
/// compression on the fastest kernel of the CPU ([`BlamkaBackend::best`]).
pub fn argon2_with(
    params: &Params,
    input: &Input<'_>,
    out: &mut [u8],
    memory: &mut [u8],
    runner: &dyn LaneRunner,
) -> Result<(), Argon2Error> {
    argon2_with_kernel(params, input, out, memory, runner, BlamkaBackend::best())
}

/// [`argon2_with`] on a chosen compression kernel (the portable one where `kernel` cannot run
/// here); for benchmarks and tests: the result does not depend on the kernel.
pub fn argon2_with_kernel(
    params: &Params,
    input: &Input<'_>,
    out: &mut [u8],
    memory: &mut [u8],
    runner: &dyn LaneRunner,
    kernel: BlamkaBackend,
) -> Result<(), Argon2Error> {
    let needed = params.memory_bytes().ok_or(Argon2Error::Params)?;
    let too_long = |b: &[u8]| b.len() > u32::MAX as usize;
    if input.salt.len() < MIN_SALT_LEN
        || out.len() < 4
        || too_long(out)
        || too_long(input.password)
        || too_long(input.salt)
        || too_long(input.secret)
        || too_long(input.ad)
    {
        return Err(Argon2Error::Params);
    }
    let Some(memory) = usize::try_from(needed).ok().and_then(|n| memory.get_mut(..n)) else {
        return Err(Argon2Error::MemoryTooSmall { needed });
    };
    let y: u32 = match params.variant {
        Variant::Argon2d => 0,
        Variant::Argon2i => 1,
        Variant::Argon2id => 2,
    };
    let mut h = Blake2b::new(64);
    for v in [params.lanes, out.len() as u32, params.memory_kib, params.time, VERSION, y] {
        h.update(&v.to_le_bytes());
    }
    for field in [input.password, input.salt, input.secret, input.ad] {
        h.update(&(field.len() as u32).to_le_bytes());
        h.update(field);
    }
    let mut h0 = [0u8; 64];
    h.finish(&mut h0);
    let lanes = params.lanes as usize;
    let lane_len = params.block_count() / lanes;
    let geometry = Geometry {
        variant: params.variant,
        y,
        lanes,
        lane_len,
        segment_len: lane_len / SYNC_POINTS,
        passes: params.time as usize,
        kernel,
    };
    // The first two blocks of each lane.
    let mut bytes = [0u8; BLOCK_BYTES];
    for lane in 0..lanes {
        for i in 0..2u32 {
            blake2b_long(&[&h0, &i.to_le_bytes(), &(lane as u32).to_le_bytes()], &mut bytes);
            memory[(lane * lane_len + i as usize) * BLOCK_BYTES..][..BLOCK_BYTES].copy_from_slice(&bytes);
        }
    }
    h0.zeroize();
    for pass in 0..geometry.passes {
        for slice in 0..SYNC_POINTS {
            for group in (0..lanes).step_by(MAX_PARALLEL_LANES) {
                run_slice(geometry, pass, slice, group..lanes.min(group + MAX_PARALLEL_LANES), memory, runner, false);
            }
        }
    }
    // Final block: xor of every lane's last block.
    let mut w = Work { prev: [0; WORDS], refb: [0; WORDS], cur: [0; WORDS], tmp: [0; WORDS] };
    load(block(memory, lane_len - 1), &mut w.cur);
    for lane in 1..lanes {
        load(block(memory, lane * lane_len + lane_len - 1), &mut w.refb);
        for k in 0..WORDS {
            w.cur[k] ^= w.refb[k];
        }
    }
    // The memory holds passphrase-derived state: wiped, a lane per job (in parallel where the
    // runner has threads).
    for group in (0..lanes).step_by(MAX_PARALLEL_LANES) {
        run_slice(geometry, 0, 0, group..lanes.min(group + MAX_PARALLEL_LANES), memory, runner, true);
    }
    for (b, word) in bytes.chunks_exact_mut(8).zip(w.cur.iter()) {
        b.copy_from_slice(&word.to_le_bytes());
    }
    blake2b_long(&[&bytes], out);
    bytes.zeroize();
    w.zeroize();
    Ok(())
}

/// Hands the segments of `lanes` in `slice` of `pass` to `runner` as jobs: `memory` is cut
/// at those segments, the rest is shared read-only among the jobs. With `wipe`, the jobs are
/// the whole lanes instead, to be zeroed.
#[inline(never)]
fn run_slice(
    geometry: Geometry,
    pass: usize,
    slice: usize,
    lanes: core::ops::Range<usize>,
    memory: &mut [u8],
    runner: &dyn LaneRunner,
    wipe: bool,
) {
    let count = lanes.len();
    let (offset, len) =
        if wipe { (0, geometry.lane_len) } else { (slice * geometry.segment_len, geometry.segment_len) };
    let mut owns: [&mut [u8]; MAX_PARALLEL_LANES] = Default::default();
    let mut runs: [(usize, &[u8]); MAX_PARALLEL_LANES + 1] = [(0, &[]); MAX_PARALLEL_LANES + 1];
    let mut rest = memory;
    let mut consumed = 0;
    for (k, lane) in lanes.clone().enumerate() {
        let first = lane * geometry.lane_len + offset;
        let (before, tail) = core::mem::take(&mut rest).split_at_mut((first - consumed) * BLOCK_BYTES);
        let (own, after) = tail.split_at_mut(len * BLOCK_BYTES);
        runs[k] = (consumed, before);
        owns[k] = own;
        rest = after;
        consumed = first + len;
    }
    runs[count] = (consumed, rest);
    let runs = &runs[..=count];
    let mut jobs: [SegmentJob<'_>; MAX_PARALLEL_LANES] = core::array::from_fn(|_| SegmentJob::empty(geometry));
    for ((job, own), lane) in jobs.iter_mut().zip(owns.iter_mut()).zip(lanes) {
        *job = SegmentJob { geometry, pass, slice, lane, own: core::mem::take(own), runs, done: false, wipe };
    }
    let jobs = &mut jobs[..count];
    runner.run(jobs);
    // A runner that skipped a job (a thread that could not start) leaves it to us.
    for job in jobs {
        job.run();
    }
}

/// Block `index` (counted over the whole memory, lane-major) outside the segments being
/// written: in the last run starting at or before `index` (the reference rules never point
/// into another lane's segment of the current slice, which no run holds).
fn shared_block<'a>(runs: &[(usize, &'a [u8])], index: usize) -> &'a [u8] {
    let k = runs.partition_point(|&(first, _)| first <= index) - 1;
    let (first, bytes) = runs[k];
    block(bytes, index - first)
}

fn next_addresses(kernel: BlamkaBackend, address: &mut Block, input: &mut Block, tmp: &mut Block) {
    input[6] += 1;
    compress(kernel, &ZERO_BLOCK, input, address, tmp, false);
    let a = *address;
    compress(kernel, &ZERO_BLOCK, &a, address, tmp, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(params: &Params, password: &[u8], salt: &[u8], out_len: usize) -> std::vec::Vec<u8> {
        let algorithm = match params.variant {
            Variant::Argon2d => ::argon2::Algorithm::Argon2d,
            Variant::Argon2i => ::argon2::Algorithm::Argon2i,
            Variant::Argon2id => ::argon2::Algorithm::Argon2id,
        };
        let p = ::argon2::Params::new(params.memory_kib, params.time, params.lanes, Some(out_len)).unwrap();
        let mut blocks = std::vec![::argon2::Block::default(); p.block_count()];
        let mut out = std::vec![0u8; out_len];
        ::argon2::Argon2::new(algorithm, ::argon2::Version::V0x13, p)
            .hash_password_into_with_memory(password, salt, &mut out, &mut blocks)
            .unwrap();
        out
    }

    #[test]
    fn matches_the_argon2_crate_for_both_variants_lanes_passes_and_lengths() {
        let cases = [
            (Variant::Argon2id, 1, 8, 1, 32),
            (Variant::Argon2id, 3, 64, 4, 64),
            (Variant::Argon2i, 2, 40, 2, 16),
            (Variant::Argon2id, 1, 1000, 3, 100),
            (Variant::Argon2i, 4, 300, 1, 4),
            (Variant::Argon2id, 2, 2048, 2, 1024),
        ];
        for (variant, time, memory_kib, lanes, out_len) in cases {
            let params = Params { variant, time, memory_kib, lanes };
            let expected = reference(&params, b"password", b"somesalt-16bytes", out_len);
            // An unaligned region: one byte into a buffer.
            let mut region = std::vec![0xa5u8; params.memory_bytes().unwrap() as usize + 1];
            let mut out = std::vec![0u8; out_len];
            argon2(&params, b"password", b"somesalt-16bytes", &mut out, &mut region[1..]).unwrap();
            assert_eq!(out, expected, "{params:?} -> {out_len}");
            assert!(region[1..].iter().all(|&b| b == 0), "the region is wiped");
        }
    }

    #[test]
    fn rfc_9106_argon2id_without_secret_matches_phc_vector() {
        // argon2 reference `test.c`: argon2id v=0x13, t=2, m=2^16, p=1, "password"/"somesalt".
        let params = Params { variant: Variant::Argon2id, time: 2, memory_kib: 1 << 16, lanes: 1 };
        let mut region = std::vec![0u8; params.memory_bytes().unwrap() as usize];
        let mut out = [0u8; 32];
        argon2(&params, b"password", b"somesalt", &mut out, &mut region).unwrap();
        assert_eq!(hex(&out), "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7");
    }

    /// One thread per job (the jobs of a slice at once), as the CLI runs them.
    struct Threads;

    impl LaneRunner for Threads {
        fn run(&self, jobs: &mut [SegmentJob<'_>]) {
            std::thread::scope(|s| {
                for job in jobs.iter_mut() {
                    s.spawn(move || job.run());
                }
            });
        }
    }

    /// Runs the jobs last first, and leaves every other one to the fill's own catch-up.
    struct BackwardsSkipping;

    impl LaneRunner for BackwardsSkipping {
        fn run(&self, jobs: &mut [SegmentJob<'_>]) {
            for job in jobs.iter_mut().rev().step_by(2) {
                job.run();
            }
        }
    }

    fn hex(bytes: &[u8]) -> std::string::String {
        bytes.iter().map(|b| std::format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc_9106_section_5_vectors_for_every_variant_and_runner() {
        // RFC 9106 section 5: m = 32 KiB, t = 3, p = 4, password 32 x 0x01, salt 16 x 0x02,
        // secret 8 x 0x03, associated data 12 x 0x04, 32-byte tag.
        let vectors = [
            (Variant::Argon2d, "512b391b6f1162975371d30919734294f868e3be3984f3c1a13a4db9fabe4acb"),
            (Variant::Argon2i, "c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8"),
            (Variant::Argon2id, "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"),
        ];
        let input = Input { password: &[1; 32], salt: &[2; 16], secret: &[3; 8], ad: &[4; 12] };
        let runners: [&dyn LaneRunner; 3] = [&Sequential, &Threads, &BackwardsSkipping];
        for (variant, tag) in vectors {
            let params = Params { variant, time: 3, memory_kib: 32, lanes: 4 };
            for runner in runners {
                let mut memory = std::vec![0u8; 32 * 1024];
                let mut out = [0u8; 32];
                argon2_with(&params, &input, &mut out, &mut memory, runner).unwrap();
                assert_eq!(hex(&out), tag, "{variant:?}");
                assert!(memory.iter().all(|&b| b == 0), "the region is wiped");
            }
            for kernel in BlamkaBackend::available() {
                let mut memory = std::vec![0u8; 32 * 1024];
                let mut out = [0u8; 32];
                argon2_with_kernel(&params, &input, &mut out, &mut memory, &Sequential, kernel).unwrap();
                assert_eq!(hex(&out), tag, "{variant:?} on the {kernel} kernel");
            }
        }
    }

    /// xorshift64: reproducible parameters without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn bytes(&mut self, max: u64) -> std::vec::Vec<u8> {
            (0..self.below(max + 1)).map(|_| self.below(256) as u8).collect()
        }
    }

    #[test]
    fn random_small_costs_match_the_argon2_crate_sequentially_and_threaded() {
        let mut rng = Rng(0x9106_2021_dead_beef);
        for case in 0..48 {
            let variant = [Variant::Argon2d, Variant::Argon2i, Variant::Argon2id][rng.below(3) as usize];
            let lanes = 1 + rng.below(8) as u32;
            let memory_kib = (8 * lanes).max(8 + rng.below(249) as u32);
            let time = 1 + rng.below(4) as u32;
            let params = Params { variant, time, memory_kib, lanes };
            let password = rng.bytes(40);
            let mut salt = rng.bytes(24);
            salt.resize(salt.len().max(MIN_SALT_LEN), 0x5a);
            let out_len = 4 + rng.below(125) as usize;
            let expected = reference(&params, &password, &salt, out_len);
            let input = Input { password: &password, salt: &salt, secret: &[], ad: &[] };
            let runners: [&dyn LaneRunner; 2] = [&Sequential, &Threads];
            for runner in runners {
                let mut region = std::vec![0xa5u8; params.memory_bytes().unwrap() as usize + 3];
                let mut out = std::vec![0u8; out_len];
                argon2_with(&params, &input, &mut out, &mut region[3..], runner).unwrap();
                assert_eq!(out, expected, "case {case}: {params:?} -> {out_len}");
            }
            // Every kernel of this CPU, the portable one included (the sequential runner).
            let kernel = BlamkaBackend::available().nth(case % BlamkaBackend::available().count()).unwrap();
            let mut region = std::vec![0u8; params.memory_bytes().unwrap() as usize];
            let mut out = std::vec![0u8; out_len];
            argon2_with_kernel(&params, &input, &mut out, &mut region, &Sequential, kernel).unwrap();
            assert_eq!(out, expected, "case {case}: {params:?} -> {out_len} on the {kernel} kernel");
        }
    }

    #[test]
    fn more_lanes_than_one_runner_call_takes_are_handed_over_in_groups() {
        let lanes = MAX_PARALLEL_LANES as u32 + 3;
        for variant in [Variant::Argon2i, Variant::Argon2id] {
            let params = Params { variant, time: 2, memory_kib: 8 * lanes, lanes };
            let expected = reference(&params, b"password", b"somesalt", 32);
            let input = Input { password: b"password", salt: b"somesalt", secret: &[], ad: &[] };
            let mut region = std::vec![0u8; params.memory_bytes().unwrap() as usize];
            let mut out = [0u8; 32];
            argon2_with(&params, &input, &mut out, &mut region, &Threads).unwrap();
            assert_eq!(out[..], expected[..], "{variant:?}");
        }
    }

    #[test]
    fn blake2b_matches_rfc_7693_abc() {
        let mut out = [0u8; 64];
        let mut h = Blake2b::new(64);
        h.update(b"abc");
        h.finish(&mut out);
        assert_eq!(out[..8], [0xba, 0x80, 0xa5, 0x3f, 0x98, 0x1c, 0x4d, 0x0d]);
        assert_eq!(out[56..], [0xb9, 0x23, 0x86, 0xed, 0xd4, 0x00, 0x99, 0x23]);
    }

    #[test]
    fn refuses_too_little_memory_and_bad_costs() {
        let params = Params { variant: Variant::Argon2id, time: 1, memory_kib: 8, lanes: 1 };
        let mut region = [0u8; 8 * 1024 - 1];
        let r = argon2(&params, b"pw", b"saltsalt", &mut [0; 32], &mut region);
        assert_eq!(r, Err(Argon2Error::MemoryTooSmall { needed: 8192 }));
        let bad = Params { lanes: 2, ..params };
        assert_eq!(bad.memory_bytes(), None);
        let r = argon2(&params, b"pw", b"short", &mut [0; 32], &mut [0u8; 8192]);
        assert_eq!(r, Err(Argon2Error::Params));
    }
}
