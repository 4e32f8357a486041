//! PBKDF2 (RFC 8018) with HMAC over any [`HashAlg`], writing into the caller's buffer.

use super::md_state::{self, digest_block, finish, MdHash};
use super::{Error, HashAlg};
use qluks_hal::sha::{Chain, Sha256Variant, Sha512Variant, ShaBackend};
use zeroize::Zeroize;

/// How PBKDF2 runs its HMAC-SHA-256/224, HMAC-SHA-1 and HMAC-SHA-512/384 chains (RIPEMD-160
/// always runs the scalar loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf2Kernel {
    /// The compression function called block by block, every output block's chain advanced in
    /// lockstep (the path of every hash other than SHA-256/224).
    Scalar,
    /// `qluks_hal::sha`: the whole iteration loop in one kernel that keeps the chaining words
    /// in registers and runs two chains interleaved (an unavailable backend runs portably).
    Interleaved(ShaBackend),
}

impl Pbkdf2Kernel {
    /// The fastest kernel here: interleaved on SHA-NI or the ARMv8 SHA2 instructions when the
    /// CPU has them; otherwise the scalar loop (the portable interleaved kernel converts each
    /// digest to bytes for the `sha2` crate's compression function, which costs more than the
    /// lockstep loop's overlap of independent chains gains).
    pub fn best() -> Pbkdf2Kernel {
        match ShaBackend::best() {
            ShaBackend::Portable => Pbkdf2Kernel::Scalar,
            b => Pbkdf2Kernel::Interleaved(b),
        }
    }
}

/// Derives `out.len()` bytes from `password` and `salt` with `iterations` rounds of HMAC-`hash`.
///
/// SHA-256 and SHA-224 run on the interleaved kernels of `qluks_hal::sha` (SHA-NI or the ARMv8
/// SHA2 instructions when present), two output blocks at a time, and so does SHA-1 (on SHA-NI
/// or the ARMv8 SHA1 instructions, up to four output blocks at a time), and SHA-512/384 on the
/// ARMv8.2 SHA512 instructions; otherwise the SHA family runs a loop on the compression
/// functions that advances all output blocks' chains in lockstep; RIPEMD-160 runs HMAC over the `ripemd` crate's hasher. Every intermediate (the
/// padded keys, the keyed inner and outer states, each U and T block, each compression's
/// output state) is wiped before returning; only `out` holds derived bytes.
pub fn pbkdf2(hash: HashAlg, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) -> Result<(), Error> {
    pbkdf2_with(Pbkdf2Kernel::best(), hash, password, salt, iterations, out)
}

/// [`pbkdf2`] on a chosen kernel for SHA-256/224 and SHA-1 (for benchmarks and tests: every kernel
/// gives the same bytes).
pub fn pbkdf2_with(
    kernel: Pbkdf2Kernel,
    hash: HashAlg,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
) -> Result<(), Error> {
    if iterations == 0 {
        return Err(Error::ZeroIterations);
    }
    match (hash, kernel) {
        (HashAlg::Sha256 | HashAlg::Sha224, Pbkdf2Kernel::Interleaved(b)) => {
            interleaved(hash, b, password, iterations, &mut [(salt, out)])
        }
        // SHA-1's interleaved kernels: SHA-NI and ARMv8 (an unavailable one runs portably).
        (HashAlg::Sha1, Pbkdf2Kernel::Interleaved(b)) => interleaved(hash, b, password, iterations, &mut [(salt, out)]),
        // SHA-512/384: interleaved where the backend has its own kernel (ARMv8 with FEAT_SHA512)
        // and on the portable one (for tests); the lockstep loop otherwise.
        (HashAlg::Sha384 | HashAlg::Sha512, Pbkdf2Kernel::Interleaved(b)) if b.sha512_kernel() == b => {
            interleaved(hash, b, password, iterations, &mut [(salt, out)])
        }
        (HashAlg::Sha1, _) => hmac_chains::<md_state::Sha1>(password, salt, iterations, out),
        (HashAlg::Sha224, _) => hmac_chains::<md_state::Sha224>(password, salt, iterations, out),
        (HashAlg::Sha256, _) => hmac_chains::<md_state::Sha256>(password, salt, iterations, out),
        (HashAlg::Sha384, _) => hmac_chains::<md_state::Sha384>(password, salt, iterations, out),
        (HashAlg::Sha512, _) => hmac_chains::<md_state::Sha512>(password, salt, iterations, out),
        (HashAlg::Ripemd160, _) => hmac_ripemd160(password, salt, iterations, out),
    }
    scrub_stack();
    Ok(())
}

/// [`pbkdf2`] for several `(salt, out)` jobs with one password and iteration count (LUKS
/// keyslots of one passphrase): with SHA-256/224 (or SHA-1) on SHA-NI or the ARMv8 SHA2 (SHA1)
/// instructions, the output blocks of all jobs share the interleaving kernel's lanes (two
/// 32-byte keys cost about as much as one); otherwise the jobs run one after the other.
pub fn pbkdf2_many(
    hash: HashAlg,
    password: &[u8],
    iterations: u32,
    jobs: &mut [(&[u8], &mut [u8])],
) -> Result<(), Error> {
    if iterations == 0 {
        return Err(Error::ZeroIterations);
    }
    match interleaving(hash) {
        Some(b) => interleaved(hash, b, password, iterations, jobs),
        None => {
            for (salt, out) in jobs.iter_mut() {
                pbkdf2(hash, password, salt, iterations, out)?;
            }
            return Ok(());
        }
    }
    scrub_stack();
    Ok(())
}

/// The interleaved path of `hash` (SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512) on `backend`.
fn interleaved(hash: HashAlg, backend: ShaBackend, password: &[u8], iterations: u32, jobs: &mut [(&[u8], &mut [u8])]) {
    use qluks_hal::sha::{pbkdf2_sha1_chains, pbkdf2_sha256_chains, pbkdf2_sha512_chains};
    match hash {
        HashAlg::Sha384 => hmac_interleaved::<md_state::Sha384, u64>(password, iterations, jobs, |i, o, c, n| {
            pbkdf2_sha512_chains(backend, Sha512Variant::Sha384, i, o, c, n)
        }),
        HashAlg::Sha512 => hmac_interleaved::<md_state::Sha512, u64>(password, iterations, jobs, |i, o, c, n| {
            pbkdf2_sha512_chains(backend, Sha512Variant::Sha512, i, o, c, n)
        }),
        HashAlg::Sha1 => hmac_interleaved::<md_state::Sha1, u32>(password, iterations, jobs, |i, o, c, n| {
            pbkdf2_sha1_chains(backend, i, o, c, n)
        }),
        HashAlg::Sha224 => hmac_interleaved::<md_state::Sha224, u32>(password, iterations, jobs, |i, o, c, n| {
            pbkdf2_sha256_chains(backend, Sha256Variant::Sha224, i, o, c, n)
        }),
        _ => hmac_interleaved::<md_state::Sha256, u32>(password, iterations, jobs, |i, o, c, n| {
            pbkdf2_sha256_chains(backend, Sha256Variant::Sha256, i, o, c, n)
        }),
    }
}

/// Whether [`pbkdf2_many`] derives `jobs` keys of `key_len` bytes in about the time of one:
/// their output blocks together fill no more than the interleaving kernel's lanes.
pub fn pbkdf2_many_pays(hash: HashAlg, key_len: usize, jobs: usize) -> bool {
    interleaving(hash).is_some() && jobs > 1 && jobs * key_len.div_ceil(hash.digest_len()) <= qluks_hal::sha::LANES
}

/// The backend on which [`pbkdf2_many`] interleaves `hash`'s chains here: the best one, for
/// SHA-256/224, and SHA-1 (SHA-512/384) where that backend has its own kernel for it: SHA-NI,
/// ARMv8 (ARMv8 with FEAT_SHA512).
fn interleaving(hash: HashAlg) -> Option<ShaBackend> {
    match (hash, Pbkdf2Kernel::best()) {
        (HashAlg::Sha256 | HashAlg::Sha224, Pbkdf2Kernel::Interleaved(b)) => Some(b),
        (HashAlg::Sha1, Pbkdf2Kernel::Interleaved(b)) if b.sha1_kernel() == b => Some(b),
        (HashAlg::Sha384 | HashAlg::Sha512, Pbkdf2Kernel::Interleaved(b)) if b.sha512_kernel() == b => Some(b),
        _ => None,
    }
}

/// The HMAC key's inner and outer chaining states (after the `0x36` and `0x5c` pad blocks).
fn keyed_states<H: MdHash>(password: &[u8]) -> (H::State, H::State) {
    // HMAC key block: the password, or its digest when longer than a block.
    let mut key = H::ZERO;
    if password.len() > H::BLOCK {
        let mut digest = finish::<H>(H::IV, 0, &[password]);
        H::write_digest(&digest, &mut key.as_mut()[..H::OUT]);
        digest.zeroize();
    } else {
        key.as_mut()[..password.len()].copy_from_slice(password);
    }
    let mut pad = key;
    pad.as_mut().iter_mut().for_each(|b| *b ^= 0x36);
    let mut inner = H::IV;
    H::compress(&mut inner, &pad);
    pad = key;
    pad.as_mut().iter_mut().for_each(|b| *b ^= 0x5c);
    let mut outer = H::IV;
    H::compress(&mut outer, &pad);
    pad.zeroize();
    key.zeroize();
    (inner, outer)
}

/// Output blocks per call of the interleaving kernel (which runs them two by two).
const CHAINS: usize = 4;

/// A chaining word of the hashes with interleaved kernels: `u32` (SHA-1, SHA-256/224) or
/// `u64` (SHA-512/384).
trait Word: Copy + Default + Zeroize {
    /// Bytes per word.
    const BYTES: usize;
    /// Writes the word big-endian into `out` (`BYTES` long).
    fn put(self, out: &mut [u8]);
}

impl Word for u32 {
    const BYTES: usize = 4;
    fn put(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_be_bytes());
    }
}

impl Word for u64 {
    const BYTES: usize = 8;
    fn put(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_be_bytes());
    }
}

/// PBKDF2-HMAC-SHA-256/224/SHA-1/SHA-512/384 on a `qluks_hal::sha` chain `kernel` for every
/// `(salt, out)` job (one password, one iteration count): `U_1` of each output block is
/// computed here, the remaining `iterations - 1` rounds of up to [`CHAINS`] blocks (of any
/// jobs) in one kernel call.
#[inline(never)]
fn hmac_interleaved<H: MdHash, W: Word>(
    password: &[u8],
    iterations: u32,
    jobs: &mut [(&[u8], &mut [u8])],
    kernel: impl Fn(&H::State, &H::State, &mut [Chain<W>], u32),
) where
    H::State: AsRef<[W]>,
{
    let (mut inner, mut outer) = keyed_states::<H>(password);
    // The next output block to start: job `j`, block `b`.
    let (mut j, mut b) = (0usize, 0usize);
    loop {
        let mut at = [(0usize, 0usize); CHAINS];
        let mut lanes = 0;
        while lanes < CHAINS && j < jobs.len() {
            if b * H::OUT >= jobs[j].1.len() {
                (j, b) = (j + 1, 0);
                continue;
            }
            at[lanes] = (j, b);
            lanes += 1;
            b += 1;
        }
        if lanes == 0 {
            break;
        }
        let mut chains = [Chain::<W>::default(); CHAINS];
        let mut v = digest_block::<H>();
        for (chain, &(job, block)) in chains.iter_mut().zip(&at[..lanes]) {
            let index = (block as u32 + 1).to_be_bytes();
            let mut first = finish::<H>(inner, H::BLOCK as u64, &[jobs[job].0, &index]);
            H::write_digest(&first, &mut v.as_mut()[..H::OUT]);
            let mut u1 = H::compress_copy(outer, &v);
            // Only the digest words are the message of the next block (SHA-224: 7 of 8).
            let n = H::OUT / W::BYTES;
            chain.u[..n].copy_from_slice(&u1.as_ref()[..n]);
            chain.t = chain.u;
            first.zeroize();
            u1.zeroize();
        }
        kernel(&inner, &outer, &mut chains[..lanes], iterations - 1);
        for (chain, &(job, block)) in chains.iter().zip(&at[..lanes]) {
            for (bytes, w) in v.as_mut()[..H::OUT].chunks_exact_mut(W::BYTES).zip(&chain.t) {
                w.put(bytes);
            }
            let out = &mut jobs[job].1[block * H::OUT..];
            let n = out.len().min(H::OUT);
            out[..n].copy_from_slice(&v.as_ref()[..n]);
        }
        chains.zeroize();
        v.zeroize();
    }
    inner.zeroize();
    outer.zeroize();
}

/// Chains computed together (a 64-byte key with SHA-1 needs four).
const LANES: usize = 4;

// Not inlined: its frame (and those of the functions it calls) must lie below `pbkdf2`'s,
// where `scrub_stack` reaches.
#[inline(never)]
fn hmac_chains<H: MdHash>(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    // The same key setup as `keyed_states`, written out here on purpose: with the call, the
    // code generated for the loop below made PBKDF2-SHA-1 45% slower (measured with `qluks
    // bench pbkdf2`).
    // HMAC key block: the password, or its digest when longer than a block.
    let mut key = H::ZERO;
    if password.len() > H::BLOCK {
        let mut digest = finish::<H>(H::IV, 0, &[password]);
        H::write_digest(&digest, &mut key.as_mut()[..H::OUT]);
        digest.zeroize();
    } else {
        key.as_mut()[..password.len()].copy_from_slice(password);
    }
    let mut pad = key;
    pad.as_mut().iter_mut().for_each(|b| *b ^= 0x36);
    let mut inner = H::IV;
    H::compress(&mut inner, &pad);
    pad = key;
    pad.as_mut().iter_mut().for_each(|b| *b ^= 0x5c);
    let mut outer = H::IV;
    H::compress(&mut outer, &pad);
    pad.zeroize();
    key.zeroize();

    let mut index = 1u32;
    for group in out.chunks_mut(H::OUT * LANES) {
        let lanes = group.len().div_ceil(H::OUT);
        // u[l]: the running U_j of lane l inside its inner-hash block; v[l]: the outer block.
        let mut u = [digest_block::<H>(); LANES];
        let mut v = [digest_block::<H>(); LANES];
        let mut t = [[0u8; 64]; LANES];
        for l in 0..lanes {
            let mut first = finish::<H>(inner, H::BLOCK as u64, &[salt, &(index + l as u32).to_be_bytes()]);
            H::write_digest(&first, &mut v[l].as_mut()[..H::OUT]);
            let mut u1 = H::compress_copy(outer, &v[l]);
            H::write_digest(&u1, &mut u[l].as_mut()[..H::OUT]);
            t[l][..H::OUT].copy_from_slice(&u[l].as_ref()[..H::OUT]);
            first.zeroize();
            u1.zeroize();
        }
        // The states of the hot loop stay in registers (or spill slots): storing them for an
        // explicit wipe costs 5 % here; `scrub_stack` below overwrites any spill instead.
        for _ in 1..iterations {
            for l in 0..lanes {
                let s = H::compress_copy(inner, &u[l]);
                H::write_digest(&s, &mut v[l].as_mut()[..H::OUT]);
            }
            for l in 0..lanes {
                let s = H::compress_copy(outer, &v[l]);
                H::write_digest(&s, &mut u[l].as_mut()[..H::OUT]);
                for (t, u) in t[l][..H::OUT].iter_mut().zip(&u[l].as_ref()[..H::OUT]) {
                    *t ^= u;
                }
            }
        }
        for (l, chunk) in group.chunks_mut(H::OUT).enumerate() {
            chunk.copy_from_slice(&t[l][..chunk.len()]);
        }
        u.zeroize();
        v.zeroize();
        t.zeroize();
        index += lanes as u32;
    }
    inner.zeroize();
    outer.zeroize();
}

/// Bytes of stack [`scrub_stack`] overwrites: more than the frames of `hmac_chains` and the
/// compression functions it calls (about 10 KiB unoptimized, under 2 KiB optimized).
const SCRUB_LEN: usize = if cfg!(debug_assertions) { 16 * 1024 } else { 4 * 1024 };

/// Overwrites the stack just below the caller's frame, where the PBKDF2 loop (and the
/// compression functions under it) kept their temporaries: whatever state the compiler spilled
/// there is wiped without slowing the loop.
#[inline(never)]
fn scrub_stack() {
    let mut area = [0u64; SCRUB_LEN / 8];
    area.zeroize();
    core::hint::black_box(&area);
}

/// PBKDF2-HMAC-RIPEMD-160 on the `ripemd` block-level core: the keyed inner and outer states
/// are computed once, and each HMAC restarts a working state from them (a state wipes itself
/// when replaced or dropped: the crate's `zeroize` feature); the message buffer and the blocks
/// kept here are wiped explicitly.
#[inline(never)]
fn hmac_ripemd160(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    use ripemd::block_api::Ripemd160Core;
    use ripemd::digest::block_api::{Block, Buffer, FixedOutputCore, UpdateCore};
    use ripemd::digest::Output;
    const BLOCK: usize = 64;
    const OUT: usize = 20;

    let mut buffer = Buffer::<Ripemd160Core>::default();
    let mut digest = Output::<Ripemd160Core>::default();
    // HMAC of `message` (absorbed after the keyed `start` state) into `digest`.
    let mut work = Ripemd160Core::default();
    let mut hmac =
        |work: &mut Ripemd160Core, start: &Ripemd160Core, message: &[&[u8]], digest: &mut Output<Ripemd160Core>| {
            *work = start.clone();
            buffer.reset();
            for part in message {
                buffer.digest_blocks(part, |blocks| work.update_blocks(blocks));
            }
            work.finalize_fixed_core(&mut buffer, digest);
        };

    let mut key = [0u8; BLOCK];
    if password.len() > BLOCK {
        hmac(&mut work, &Ripemd160Core::default(), &[password], &mut digest);
        key[..OUT].copy_from_slice(&digest);
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let mut pad = Block::<Ripemd160Core>::from(key.map(|b| b ^ 0x36));
    let mut inner = Ripemd160Core::default();
    inner.update_blocks(core::slice::from_ref(&pad));
    pad = Block::<Ripemd160Core>::from(key.map(|b| b ^ 0x5c));
    let mut outer = Ripemd160Core::default();
    outer.update_blocks(core::slice::from_ref(&pad));
    pad.as_mut_slice().zeroize();
    key.zeroize();

    let mut u = [0u8; OUT];
    let mut t = [0u8; OUT];
    for (i, chunk) in out.chunks_mut(OUT).enumerate() {
        hmac(&mut work, &inner, &[salt, &(i as u32 + 1).to_be_bytes()], &mut digest);
        u.copy_from_slice(&digest);
        hmac(&mut work, &outer, &[&u], &mut digest);
        u.copy_from_slice(&digest);
        t = u;
        for _ in 1..iterations {
            hmac(&mut work, &inner, &[&u], &mut digest);
            u.copy_from_slice(&digest);
            hmac(&mut work, &outer, &[&u], &mut digest);
            u.copy_from_slice(&digest);
            t.iter_mut().zip(u.iter()).for_each(|(t, u)| *t ^= u);
        }
        chunk.copy_from_slice(&t[..chunk.len()]);
    }
    u.zeroize();
    t.zeroize();
    digest.as_mut_slice().zeroize();
    // `buffer` and the three states wipe themselves on drop.
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::hash::with_hash;

    pub(crate) fn hex(s: &str) -> std::vec::Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn check(hash: HashAlg, p: &[u8], s: &[u8], c: u32, expect: &str) {
        let want = hex(expect);
        let mut out = std::vec![0u8; want.len()];
        pbkdf2(hash, p, s, c, &mut out).unwrap();
        assert_eq!(out, want, "{hash} c={c}");
    }

    #[test]
    fn rfc6070_sha1_vectors() {
        check(HashAlg::Sha1, b"password", b"salt", 1, "0c60c80f961f0e71f3a9b524af6012062fe037a6");
        check(HashAlg::Sha1, b"password", b"salt", 2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
        check(HashAlg::Sha1, b"password", b"salt", 4096, "4b007901b765489abead49d926f721d065a429c1");
        check(
            HashAlg::Sha1,
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038",
        );
        check(HashAlg::Sha1, b"pass\0word", b"sa\0lt", 4096, "56fa6aa75548099dcc37d7f03425e0c3");
    }

    #[test]
    fn rfc7914_sha256_vectors() {
        check(
            HashAlg::Sha256,
            b"passwd",
            b"salt",
            1,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
             49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
        );
        check(
            HashAlg::Sha256,
            b"Password",
            b"NaCl",
            80000,
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56\
             a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d",
        );
    }

    #[test]
    fn other_hashes_match_python_hashlib() {
        check(
            HashAlg::Ripemd160,
            b"password",
            b"salt",
            2,
            "768dcc27b7bfdef794a1ff9d935090fcf598555e66913180b9ce363c615e9ed9",
        );
        check(
            HashAlg::Sha512,
            b"password",
            b"salt",
            2,
            "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53cf76cab2868a39b9f7840edce4fef5a82\
             be67335c77a6068e04112754f27ccf4e473e311ad827b68945f4e2dddb204c78",
        );
    }

    /// RIPEMD-160 runs on the `pbkdf2` crate itself, so comparing it with that crate (as below
    /// for the SHA family) proves nothing: these vectors come from two outside implementations,
    /// computed once and recorded here. Each was produced by Python's
    /// `hashlib.pbkdf2_hmac("ripemd160", password, salt, c, len)` (Python 3.11.7 on OpenSSL
    /// 3.0.19) and agrees with `openssl kdf -keylen LEN -kdfopt digest:RIPEMD160 -kdfopt
    /// pass:... -kdfopt salt:... -kdfopt iter:C PBKDF2` (OpenSSL 3.0.19, default provider).
    /// `tests/pbkdf2_oracle.rs` recomputes such vectors with both tools at test time.
    #[test]
    fn ripemd160_matches_python_hashlib_and_openssl() {
        // A 200-byte password (longer than the 64-byte block: hashed first), 8 output blocks.
        check(
            HashAlg::Ripemd160,
            &[b'a'; 200],
            b"salt",
            3,
            "34c60124ba5490fe5544c558d029220488f144c11fcf3f5f471a9f327c393d26b6a3ca5408f29c52f837f930\
             71adfaa9e13d78a75fd0699bf84d1ad6d83bb5a68e6f528b79002897f61c1e699149cda3b92e7b19d5cb1602\
             8a7b133ec89d0d25f95e6364fec7a0f68be8c926e9c1750bab7261c108985564c34411729b2461e274fe3222\
             f428215ba5dd11b5cd3c0b16b04c93b264b9",
        );
        // A salt longer than a block, 4 output blocks (the last one partial).
        check(
            HashAlg::Ripemd160,
            b"pw",
            &[7u8; 80],
            5,
            "f0dc478b9c1f07a02a4ac241884e84785a7e645399699541ccd58f774e420959\
             075db0e3ecbc7af644278b8dc3d343f6e6cdafec2419edb3cafdaf451cd05575",
        );
        check(HashAlg::Ripemd160, b"", b"", 1, "39");
        check(
            HashAlg::Ripemd160,
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "503b9a069633b261b2d3e4f21c5d0cafeb3f5008aec25ed214",
        );
    }

    /// The SHA family's lockstep loop against the `pbkdf2` crate (an independent implementation
    /// for these hashes; RIPEMD-160 is left out because it *is* the crate, see above).
    #[test]
    fn long_passwords_and_many_chains_match_the_pbkdf2_crate() {
        let long = [0x61u8; 200];
        for hash in HashAlg::ALL.into_iter().filter(|&h| h != HashAlg::Ripemd160) {
            for (password, salt, c, len) in
                [(&long[..], &b"salt"[..], 3, 150), (&b"pw"[..], &[7u8; 80][..], 5, 64), (&b""[..], &b""[..], 1, 1)]
            {
                let mut ours = std::vec![0u8; len];
                pbkdf2(hash, password, salt, c, &mut ours).unwrap();
                let mut theirs = std::vec![0u8; len];
                with_hash!(hash, D => ::pbkdf2::pbkdf2_hmac::<D>(password, salt, c, &mut theirs));
                assert_eq!(ours, theirs, "{hash} len={len}");
            }
        }
    }

    /// Every kernel this CPU can run: the scalar loop and the interleaved one on each
    /// available `qluks_hal::sha` backend (SHA-NI on x86-64, the ARMv8 SHA2 instructions).
    fn kernels() -> std::vec::Vec<Pbkdf2Kernel> {
        let mut k = std::vec![Pbkdf2Kernel::Scalar];
        k.extend(ShaBackend::available().map(Pbkdf2Kernel::Interleaved));
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if cfg!(target_arch = "x86_64") && cpuinfo.split_whitespace().any(|w| w == "sha_ni") {
            assert!(k.contains(&Pbkdf2Kernel::Interleaved(ShaBackend::ShaNi)), "sha_ni listed but not used");
        }
        if cfg!(target_arch = "aarch64") && armv8_required() {
            assert!(k.contains(&Pbkdf2Kernel::Interleaved(ShaBackend::Armv8)), "armv8 required but not used");
        }
        k
    }

    /// Whether CI requires the armv8 backends (under qemu-aarch64 -cpu max).
    fn armv8_required() -> bool {
        std::env::var("QLUKS_REQUIRE_BACKENDS").unwrap_or_default().contains("armv8")
    }

    /// SHA-1 keys share the interleaving kernel's lanes where the best backend has its own
    /// SHA-1 kernel (SHA-NI, ARMv8): there `pbkdf2_many` interleaves them.
    #[test]
    fn many_pays_for_sha1_on_the_sha1_kernels() {
        let best = Pbkdf2Kernel::best();
        if cfg!(target_arch = "aarch64") && armv8_required() {
            assert_eq!(best, Pbkdf2Kernel::Interleaved(ShaBackend::Armv8));
        }
        let has_kernel = matches!(best, Pbkdf2Kernel::Interleaved(ShaBackend::ShaNi | ShaBackend::Armv8));
        assert_eq!(pbkdf2_many_pays(HashAlg::Sha1, 20, 2), has_kernel, "{best:?}");
        assert_eq!(pbkdf2_many_pays(HashAlg::Sha256, 32, 2), best != Pbkdf2Kernel::Scalar, "{best:?}");
        // Three output blocks do not fit the two lanes; one job gains nothing.
        assert!(!pbkdf2_many_pays(HashAlg::Sha1, 20, 3));
        assert!(!pbkdf2_many_pays(HashAlg::Sha1, 40, 2));
        assert!(!pbkdf2_many_pays(HashAlg::Sha1, 20, 1));
        assert!(!pbkdf2_many_pays(HashAlg::Ripemd160, 20, 2));
    }

    /// SHA-512/384 keys share the lanes where the best backend has a SHA-512 kernel (ARMv8
    /// with FEAT_SHA512, which qemu-aarch64 -cpu max has).
    #[test]
    fn many_pays_for_sha512_on_the_sha512_kernel() {
        let best = Pbkdf2Kernel::best();
        let has_kernel = matches!(best, Pbkdf2Kernel::Interleaved(b) if b.sha512_kernel() == b);
        if cfg!(target_arch = "aarch64") && armv8_required() {
            assert!(has_kernel, "{best:?}");
        }
        assert_eq!(pbkdf2_many_pays(HashAlg::Sha512, 64, 2), has_kernel, "{best:?}");
        assert_eq!(pbkdf2_many_pays(HashAlg::Sha384, 48, 2), has_kernel, "{best:?}");
        assert!(!pbkdf2_many_pays(HashAlg::Sha512, 65, 2));
        assert!(!pbkdf2_many_pays(HashAlg::Sha512, 64, 3));
    }

    /// Every hash on every kernel against the `pbkdf2` crate (over RustCrypto's `hmac`): output
    /// lengths 1..=200 (1 to 10 output blocks, partial last blocks) at 1..=3 iterations, and a
    /// few longer runs; passwords shorter and longer than a block.
    #[test]
    fn every_hash_and_kernel_matches_the_pbkdf2_crate() {
        let long = [0x61u8; 200];
        for kernel in kernels() {
            for hash in HashAlg::ALL {
                let mut ours = [0u8; 200];
                let mut theirs = [0u8; 200];
                for len in 1..=200 {
                    for c in 1..=3 {
                        let password: &[u8] = if len % 2 == 0 { b"password" } else { &long[..len % 150] };
                        let salt = &long[..len % 37];
                        pbkdf2_with(kernel, hash, password, salt, c, &mut ours[..len]).unwrap();
                        with_hash!(hash, D => ::pbkdf2::pbkdf2_hmac::<D>(password, salt, c, &mut theirs[..len]));
                        assert_eq!(ours[..len], theirs[..len], "{kernel:?} {hash} len={len} c={c}");
                    }
                }
                for (len, c) in [(64, 1000), (32, 4097), (20, 777), (100, 129)] {
                    pbkdf2_with(kernel, hash, b"pw", b"NaCl", c, &mut ours[..len]).unwrap();
                    with_hash!(hash, D => ::pbkdf2::pbkdf2_hmac::<D>(b"pw", b"NaCl", c, &mut theirs[..len]));
                    assert_eq!(ours[..len], theirs[..len], "{kernel:?} {hash} len={len} c={c}");
                }
            }
        }
    }

    /// The RFC vectors on every kernel (the `check` tests above run the default one).
    #[test]
    fn rfc_vectors_on_every_kernel() {
        for kernel in kernels() {
            let mut out = [0u8; 64];
            pbkdf2_with(kernel, HashAlg::Sha256, b"Password", b"NaCl", 80000, &mut out).unwrap();
            assert_eq!(
                out[..],
                hex("4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56\
                     a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d")[..],
                "{kernel:?}"
            );
            pbkdf2_with(kernel, HashAlg::Sha1, b"password", b"salt", 4096, &mut out[..20]).unwrap();
            assert_eq!(out[..20], hex("4b007901b765489abead49d926f721d065a429c1")[..], "{kernel:?}");
            // Python's hashlib.pbkdf2_hmac("sha512", b"password", b"salt", 4096) (and "sha384").
            pbkdf2_with(kernel, HashAlg::Sha512, b"password", b"salt", 4096, &mut out).unwrap();
            assert_eq!(
                out[..],
                hex("d197b1b33db0143e018b12f3d1d1479e6cdebdcc97c5c0f87f6902e072f457b5\
                     143f30602641b3d55cd335988cb36b84376060ecd532e039b742a239434af2d5")[..],
                "{kernel:?}"
            );
            pbkdf2_with(kernel, HashAlg::Sha384, b"password", b"salt", 4096, &mut out).unwrap();
            assert_eq!(
                out[..],
                hex("559726be38db125bc85ed7895f6e3cf574c7a01c080c3447db1e8a76764deb3c\
                     307b94853fbe424f6488c5f4f12896261d1eb430353c769ee2a77a26fd0a2347")[..],
                "{kernel:?}"
            );
        }
    }

    /// Several jobs in one call give what one call per job gives, for every hash and for
    /// keys of one and of several output blocks.
    #[test]
    fn many_jobs_match_one_derivation_each() {
        for hash in HashAlg::ALL {
            for len in [20, 32, 64, 70] {
                let salts: [&[u8]; 3] = [b"salt one", b"", &[9u8; 40]];
                let mut outs = [[0u8; 70]; 3];
                {
                    let [a, b, c] = &mut outs;
                    let mut jobs = [(salts[0], &mut a[..len]), (salts[1], &mut b[..len]), (salts[2], &mut c[..len])];
                    pbkdf2_many(hash, b"pw", 5, &mut jobs).unwrap();
                }
                for (salt, out) in salts.iter().zip(&outs) {
                    // The scalar loop: independent of the interleaving kernels `pbkdf2_many` uses.
                    let mut want = [0u8; 70];
                    pbkdf2_with(Pbkdf2Kernel::Scalar, hash, b"pw", salt, 5, &mut want[..len]).unwrap();
                    assert_eq!(out[..len], want[..len], "{hash} len={len}");
                    assert!(out[len..].iter().all(|&b| b == 0), "{hash} len={len}: wrote past the key");
                }
            }
        }
        assert_eq!(pbkdf2_many(HashAlg::Sha256, b"p", 0, &mut []), Err(Error::ZeroIterations));
    }

    #[test]
    fn zero_iterations_are_refused() {
        assert_eq!(pbkdf2(HashAlg::Sha256, b"p", b"s", 0, &mut [0u8; 32]), Err(Error::ZeroIterations));
    }
}
