//! Argon2i and Argon2id (RFC 9106, version 0x13) working in a caller-supplied byte region.
//!
//! LUKS2 keyslots derive their area key with Argon2, which is memory-hard: cryptsetup asks for
//! up to 1 GiB. The memory comes from the caller as a plain `&mut [u8]` of any alignment
//! (firmware hands over a raw region without `unsafe`): each 1 KiB block is loaded into a
//! stack copy as little-endian words, compressed, and stored back, so no aligned view of the
//! region is ever needed. The stack holds four 1 KiB blocks. The region is wiped afterwards: it
//! holds passphrase-derived state.

use blake2::digest::block_api::{UpdateCore, VariableOutputCore};
use blake2::digest::block_buffer::LazyBuffer;
use blake2::digest::Digest;
use blake2::{Blake2b512, Blake2bVarCore};
use zeroize::Zeroize;

/// The shortest salt Argon2 accepts.
pub const MIN_SALT_LEN: usize = 8;
/// Bytes in one Argon2 block.
pub const BLOCK_BYTES: usize = 1024;
const WORDS: usize = BLOCK_BYTES / 8;
const SYNC_POINTS: usize = 4;
const VERSION: u32 = 0x13;

/// Which Argon2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Data-independent addressing.
    Argon2i,
    /// Data-independent for the first half pass, then data-dependent (cryptsetup's default).
    Argon2id,
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

/// H' of RFC 9106 (variable-length BLAKE2b) of the concatenation of `inputs` into `out`
/// (1..=1024 bytes here).
fn blake2b_long(inputs: &[&[u8]], out: &mut [u8]) {
    let len = (out.len() as u32).to_le_bytes();
    if let Ok(mut core) = Blake2bVarCore::new(out.len()) {
        let mut buf = LazyBuffer::new(&len);
        for input in inputs {
            buf.digest_blocks(input, |blocks| core.update_blocks(blocks));
        }
        let mut full = Default::default();
        core.finalize_variable_core(&mut buf, &mut full);
        out.copy_from_slice(&full[..out.len()]);
        full.zeroize();
        return;
    }
    let mut h = Blake2b512::new();
    h.update(len);
    for input in inputs {
        h.update(input);
    }
    let mut v = h.finalize();
    let (first, mut rest) = out.split_at_mut(32);
    first.copy_from_slice(&v[..32]);
    while rest.len() > 64 {
        v = Blake2b512::digest(v);
        let (chunk, tail) = rest.split_at_mut(32);
        chunk.copy_from_slice(&v[..32]);
        rest = tail;
    }
    let mut core = Blake2bVarCore::new(rest.len()).unwrap_or_else(|_| unreachable!("1..=64 bytes"));
    let mut buf = LazyBuffer::new(&v);
    let mut full = Default::default();
    core.finalize_variable_core(&mut buf, &mut full);
    rest.copy_from_slice(&full[..rest.len()]);
    full.zeroize();
    v.zeroize();
}

type Block = [u64; WORDS];

fn load(bytes: &[u8], out: &mut Block) {
    for (w, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
}

fn block(memory: &[u8], index: usize) -> &[u8] {
    &memory[index * BLOCK_BYTES..(index + 1) * BLOCK_BYTES]
}

#[inline(always)]
fn fblamka(x: u64, y: u64) -> u64 {
    x.wrapping_add(y).wrapping_add(2u64.wrapping_mul(x & 0xffff_ffff).wrapping_mul(y & 0xffff_ffff))
}

#[inline(always)]
fn gb(v: &mut Block, a: usize, b: usize, c: usize, d: usize) {
    v[a] = fblamka(v[a], v[b]);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = fblamka(v[c], v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = fblamka(v[a], v[b]);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = fblamka(v[c], v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

/// The permutation P on the 16 words at positions `i`.
#[inline(always)]
fn permute(v: &mut Block, i: [usize; 16]) {
    gb(v, i[0], i[4], i[8], i[12]);
    gb(v, i[1], i[5], i[9], i[13]);
    gb(v, i[2], i[6], i[10], i[14]);
    gb(v, i[3], i[7], i[11], i[15]);
    gb(v, i[0], i[5], i[10], i[15]);
    gb(v, i[1], i[6], i[11], i[12]);
    gb(v, i[2], i[7], i[8], i[13]);
    gb(v, i[3], i[4], i[9], i[14]);
}

/// P applied to the eight rows, then to the eight columns, of `r`.
fn compress_rows_columns(r: &mut Block) {
    for row in 0..8 {
        let b = row * 16;
        permute(r, core::array::from_fn(|k| b + k));
    }
    for col in 0..8 {
        let b = col * 2;
        permute(r, core::array::from_fn(|k| b + (k / 2) * 16 + (k % 2)));
    }
}

/// G(x, y) into `out`: `out` = P(x ^ y) ^ (x ^ y) [^ `out` when `xor`].
fn compress(x: &Block, y: &Block, out: &mut Block, tmp: &mut Block, xor: bool) {
    for k in 0..WORDS {
        let r = x[k] ^ y[k];
        tmp[k] = r;
        out[k] = if xor { out[k] ^ r } else { r };
    }
    compress_rows_columns(tmp);
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

/// Derives `out` from `password` and `salt` with `params`, working in `memory` (at least
/// [`Params::memory_bytes`] bytes, any alignment; wiped afterwards).
pub fn argon2(params: &Params, password: &[u8], salt: &[u8], out: &mut [u8], memory: &mut [u8]) -> Result<(), Argon2Error> {
    let needed = params.memory_bytes().ok_or(Argon2Error::Params)?;
    if salt.len() < MIN_SALT_LEN || out.len() < 4 || out.len() > u32::MAX as usize || password.len() > u32::MAX as usize {
        return Err(Argon2Error::Params);
    }
    let Some(memory) = usize::try_from(needed).ok().and_then(|n| memory.get_mut(..n)) else {
        return Err(Argon2Error::MemoryTooSmall { needed });
    };
    let y: u32 = match params.variant {
        Variant::Argon2i => 1,
        Variant::Argon2id => 2,
    };
    let mut h = Blake2b512::new();
    for v in [params.lanes, out.len() as u32, params.memory_kib, params.time, VERSION, y, password.len() as u32] {
        h.update(v.to_le_bytes());
    }
    h.update(password);
    h.update((salt.len() as u32).to_le_bytes());
    h.update(salt);
    // No secret, no associated data.
    h.update([0u8; 8]);
    let mut h0 = [0u8; 64];
    h0.copy_from_slice(&h.finalize());
    let mut w = Work { prev: [0; WORDS], refb: [0; WORDS], cur: [0; WORDS], tmp: [0; WORDS] };
    fill(params, y, &h0, memory, &mut w);
    h0.zeroize();
    // Final block: xor of every lane's last block.
    let lanes = params.lanes as usize;
    let lane_len = params.block_count() / lanes;
    load(block(memory, lane_len - 1), &mut w.cur);
    for lane in 1..lanes {
        load(block(memory, lane * lane_len + lane_len - 1), &mut w.refb);
        for k in 0..WORDS {
            w.cur[k] ^= w.refb[k];
        }
    }
    let mut bytes = [0u8; BLOCK_BYTES];
    for (b, word) in bytes.chunks_exact_mut(8).zip(w.cur.iter()) {
        b.copy_from_slice(&word.to_le_bytes());
    }
    blake2b_long(&[&bytes], out);
    bytes.zeroize();
    w.zeroize();
    memory.zeroize();
    Ok(())
}

fn fill(params: &Params, y: u32, h0: &[u8; 64], memory: &mut [u8], w: &mut Work) {
    let lanes = params.lanes as usize;
    let block_count = params.block_count();
    let lane_len = block_count / lanes;
    let segment_len = lane_len / SYNC_POINTS;
    let passes = params.time as usize;

    // The first two blocks of each lane.
    let mut bytes = [0u8; BLOCK_BYTES];
    for lane in 0..lanes {
        for i in 0..2u32 {
            blake2b_long(&[h0, &i.to_le_bytes(), &(lane as u32).to_le_bytes()], &mut bytes);
            memory[(lane * lane_len + i as usize) * BLOCK_BYTES..][..BLOCK_BYTES].copy_from_slice(&bytes);
        }
    }
    bytes.zeroize();

    let mut address = [0u64; WORDS];
    let mut input = [0u64; WORDS];
    let zero = [0u64; WORDS];
    for pass in 0..passes {
        for slice in 0..SYNC_POINTS {
            for lane in 0..lanes {
                let independent = params.variant == Variant::Argon2i || (pass == 0 && slice < SYNC_POINTS / 2);
                if independent {
                    input = [0; WORDS];
                    input[..6].copy_from_slice(&[pass as u64, lane as u64, slice as u64, block_count as u64, passes as u64, y as u64]);
                }
                let start = if pass == 0 && slice == 0 {
                    if independent {
                        next_addresses(&mut address, &mut input, &zero, &mut w.tmp);
                    }
                    2
                } else {
                    0
                };
                let mut cur = lane * lane_len + slice * segment_len + start;
                let prev = if cur % lane_len == 0 { cur + lane_len - 1 } else { cur - 1 };
                load(block(memory, prev), &mut w.prev);
                // Within a segment the previous block is the one just computed (kept in
                // `w.prev`).
                for i in start..segment_len {
                    let pseudo = if independent {
                        if i % WORDS == 0 {
                            next_addresses(&mut address, &mut input, &zero, &mut w.tmp);
                        }
                        address[i % WORDS]
                    } else {
                        w.prev[0]
                    };
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
                    let ref_index = (begin as u64 + rel) as usize % lane_len;
                    load(block(memory, ref_lane * lane_len + ref_index), &mut w.refb);
                    let xor = pass != 0;
                    if xor {
                        load(block(memory, cur), &mut w.cur);
                    }
                    compress(&w.prev, &w.refb, &mut w.cur, &mut w.tmp, xor);
                    let dst = &mut memory[cur * BLOCK_BYTES..(cur + 1) * BLOCK_BYTES];
                    for (b, word) in dst.chunks_exact_mut(8).zip(w.cur.iter()) {
                        b.copy_from_slice(&word.to_le_bytes());
                    }
                    core::mem::swap(&mut w.prev, &mut w.cur);
                    cur += 1;
                }
            }
        }
    }
    address.zeroize();
    input.zeroize();
}

fn next_addresses(address: &mut Block, input: &mut Block, zero: &Block, tmp: &mut Block) {
    input[6] += 1;
    compress(zero, input, address, tmp, false);
    let a = *address;
    compress(zero, &a, address, tmp, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(params: &Params, password: &[u8], salt: &[u8], out_len: usize) -> std::vec::Vec<u8> {
        let algorithm = match params.variant {
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
        let hex: std::string::String = out.iter().map(|b| std::format!("{b:02x}")).collect();
        assert_eq!(hex, "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7");
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
