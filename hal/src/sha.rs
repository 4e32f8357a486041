//! PBKDF2-HMAC-SHA-256 (and SHA-224) inner loops with several chains in flight.
//!
//! PBKDF2 spends all its time in `U_j = HMAC(P, U_{j-1})`: two compressions per iteration of a
//! block whose shape never changes (the previous digest, then the constant padding of a
//! 32-byte message after the 64-byte HMAC pad). The kernels here run that loop directly on
//! the hash's chaining words: the keyed inner and outer states are loaded once, the padding
//! words and their round constants are loop constants, and each digest feeds the next block
//! in registers, with no byte conversion (a digest word *is* the message word that carries
//! it). Several independent chains (the output blocks of one derivation, or the derivations
//! of several keyslots for the same passphrase) are advanced in lockstep in one instruction
//! stream, so that the latency of one chain's rounds is filled with another's.
//!
//! # Kernels
//! - `portable`: RustCrypto's `sha2::block_api::compress256` (which itself uses SHA-NI or the
//!   ARMv8 SHA2 instructions when the `sha2` crate detects them), one block at a time.
//! - `shani`: x86-64 SHA extensions (`sha256rnds2`, `sha256msg1/2`), two chains interleaved.
//! - `armv8`: aarch64 FEAT_SHA256 (`sha256h/h2/su0/su1`), two chains interleaved.
//!
//! HMAC-SHA-1 ([`pbkdf2_sha1_chains`]) has a SHA-NI kernel too (`sha1rnds4`, `sha1nexte`,
//! `sha1msg1/2`) and an ARMv8 one (FEAT_SHA1: `sha1c/p/m`, `sha1h`, `sha1su0/1`, which come
//! with FEAT_SHA256 in the same `sha2` feature); on the portable backend it runs the portable
//! loop.
//!
//! HMAC-SHA-512 and SHA-384 ([`pbkdf2_sha512_chains`]) have an ARMv8.2 kernel (FEAT_SHA512:
//! `sha512h/h2/su0/su1`, Rust's `sha3` feature, detected apart from the rest of armv8 as
//! [`ShaBackend::sha512_kernel`]); elsewhere they run the portable loop.
//!
//! Detection as for the AES backends: `is_*_feature_detected!` with `std`, CPUID without it on
//! x86-64, the `sha2` (and, for SHA-512, `sha3`) target feature on bare-metal aarch64. Not
//! compiled on the soft-float `x86_64-unknown-none` target, where no SIMD code can be lowered.
use zeroize::Zeroize;

#[cfg(target_arch = "aarch64")]
mod armv8;
#[cfg(target_arch = "aarch64")]
mod armv8_1;
#[cfg(target_arch = "aarch64")]
mod armv8_512;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod shani;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod shani1;

/// The SHA-256 round constants (of the SIMD kernels).
#[cfg(any(target_arch = "aarch64", all(target_arch = "x86_64", target_feature = "sse2")))]
pub(crate) const K32: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// A SHA-256 compression implementation. All give identical results; only speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShaBackend {
    /// The `sha2` crate's compression function, one block per call.
    Portable,
    /// x86-64 SHA extensions (SHA-NI), two chains interleaved.
    ShaNi,
    /// aarch64 ARMv8 SHA2 instructions (FEAT_SHA256, and FEAT_SHA1 for SHA-1), two chains
    /// interleaved (four for SHA-1); SHA-512/384 where the CPU has FEAT_SHA512 too.
    Armv8,
}

impl ShaBackend {
    /// Every backend, slowest first.
    pub const ALL: [ShaBackend; 3] = [ShaBackend::Portable, ShaBackend::ShaNi, ShaBackend::Armv8];

    /// Short lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            ShaBackend::Portable => "portable",
            ShaBackend::ShaNi => "shani",
            ShaBackend::Armv8 => "armv8",
        }
    }

    /// Parses a name given by [`ShaBackend::name`].
    pub fn from_name(name: &str) -> Option<ShaBackend> {
        ShaBackend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this backend can run here (detected once, then cached).
    pub fn is_available(self) -> bool {
        match self {
            ShaBackend::Portable => true,
            ShaBackend::ShaNi => features() & F_SHANI != 0,
            ShaBackend::Armv8 => features() & F_ARMV8 != 0,
        }
    }

    /// The backends usable here, slowest first.
    pub fn available() -> impl Iterator<Item = ShaBackend> {
        ShaBackend::ALL.into_iter().filter(|b| b.is_available())
    }

    /// The fastest backend usable here.
    pub fn best() -> ShaBackend {
        ShaBackend::available().last().unwrap_or(ShaBackend::Portable)
    }

    /// The kernel that [`pbkdf2_sha512_chains`] runs on this backend: ARMv8 where the CPU also
    /// has FEAT_SHA512, otherwise [`ShaBackend::Portable`]. The dispatch follows this.
    pub fn sha512_kernel(self) -> ShaBackend {
        match self {
            ShaBackend::Armv8 if features() & F_ARMV8_SHA512 != 0 => self,
            _ => ShaBackend::Portable,
        }
    }

    /// The kernel that [`pbkdf2_sha1_chains`] runs on this backend: itself where it has an
    /// HMAC-SHA-1 kernel and is available here (SHA-NI, ARMv8), otherwise
    /// [`ShaBackend::Portable`]. The dispatch follows this, so it tells which code runs.
    pub fn sha1_kernel(self) -> ShaBackend {
        match self {
            ShaBackend::ShaNi | ShaBackend::Armv8 if self.is_available() => self,
            _ => ShaBackend::Portable,
        }
    }
}

impl core::fmt::Display for ShaBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

const F_SHANI: u8 = 1;
const F_ARMV8: u8 = 2;
/// FEAT_SHA512 (with FEAT_SHA3: Rust's `sha3`), besides [`F_ARMV8`].
const F_ARMV8_SHA512: u8 = 4;
static FEATURES: crate::cpu::Detected = crate::cpu::Detected::new();

fn features() -> u8 {
    FEATURES.get(detect)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2", feature = "std"))]
fn detect() -> u8 {
    use std::is_x86_feature_detected as has;
    if has!("sha") && has!("sse2") && has!("ssse3") && has!("sse4.1") {
        F_SHANI
    } else {
        0
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2", not(feature = "std")))]
fn detect() -> u8 {
    detect_cpuid()
}

/// SHA-NI through CPUID (leaf 7 EBX bit 29; SSSE3 and SSE4.1 in leaf 1 ECX bits 9 and 19):
/// the SHA instructions work on xmm registers only, whose state every x86-64 OS saves.
/// Compiled (and tested against the std detection) with std too.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) fn detect_cpuid() -> u8 {
    use crate::cpu::bit;
    let crate::cpu::Cpuid { l1, l7, .. } = crate::cpu::Cpuid::read();
    let Some(l7) = l7 else { return 0 };
    if bit(l7.ebx, 29) && bit(l1.ecx, 9) && bit(l1.ecx, 19) && bit(l1.edx, 26) {
        F_SHANI
    } else {
        0
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> u8 {
    #[cfg(feature = "std")]
    if std::arch::is_aarch64_feature_detected!("sha2") {
        // std reports `sha3` only with `sha2`'s FEAT_SHA1 and FEAT_SHA256.
        return F_ARMV8 | if std::arch::is_aarch64_feature_detected!("sha3") { F_ARMV8_SHA512 } else { 0 };
    }
    if cfg!(target_feature = "sha2") {
        return F_ARMV8 | if cfg!(target_feature = "sha3") { F_ARMV8_SHA512 } else { 0 };
    }
    0
}

#[cfg(not(any(all(target_arch = "x86_64", target_feature = "sse2"), target_arch = "aarch64")))]
fn detect() -> u8 {
    0
}

/// One PBKDF2 chain: `u` holds the running `U_j`, `t` the running `T = U_1 ^ ... ^ U_j`, both
/// as SHA-256 chaining words (the digest bytes are their big-endian encodings). For SHA-224,
/// only words 0..7 are digest words; word 7 of both is unspecified on return. With `W = u64`,
/// the chaining words of SHA-512 (SHA-384: words 0..6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Zeroize)]
pub struct Chain<W = u32> {
    /// `U_j` as digest words.
    pub u: [W; 8],
    /// `T_j` as digest words.
    pub t: [W; 8],
}

/// The hash of the HMAC: SHA-256 or SHA-224 (the same compression, a 28-byte digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha256Variant {
    /// SHA-224: the message block holds 7 digest words.
    Sha224,
    /// SHA-256: the message block holds 8 digest words.
    Sha256,
}

/// Chains run together by the interleaving kernels.
pub const LANES: usize = 2;

/// Advances every chain of `chains` by `iterations` PBKDF2 iterations of HMAC-SHA-256 (or
/// SHA-224): `u <- H(outer || H(inner || u))`, `t ^= u`, where `inner` and `outer` are the
/// chaining states after the keyed pads (`K ^ 0x36..`, `K ^ 0x5c..`) of the HMAC key (one key
/// for all chains). Chains are run [`LANES`] at a time, the rest one by one.
///
/// An unavailable `backend` runs as [`ShaBackend::Portable`] (results are identical).
/// Nothing is left in memory here except the updated chains; the callers wipe those, and
/// whatever the compiler spilled lies in the stack below their frame.
pub fn pbkdf2_sha256_chains(
    backend: ShaBackend,
    variant: Sha256Variant,
    inner: &[u32; 8],
    outer: &[u32; 8],
    chains: &mut [Chain],
    iterations: u32,
) {
    if iterations == 0 || chains.is_empty() {
        return;
    }
    let backend = if backend.is_available() { backend } else { ShaBackend::Portable };
    let sha224 = variant == Sha256Variant::Sha224;
    let mut pairs = chains.chunks_exact_mut(LANES);
    for pair in &mut pairs {
        let pair: &mut [Chain; LANES] = pair.try_into().expect("chunks_exact");
        run::<LANES>(backend, sha224, inner, outer, pair, iterations);
    }
    for one in pairs.into_remainder().chunks_exact_mut(1) {
        let one: &mut [Chain; 1] = one.try_into().expect("chunks_exact");
        run::<1>(backend, sha224, inner, outer, one, iterations);
    }
}

fn run<const N: usize>(
    backend: ShaBackend,
    sha224: bool,
    inner: &[u32; 8],
    outer: &[u32; 8],
    chains: &mut [Chain; N],
    iterations: u32,
) {
    match backend {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        // SAFETY: `backend` is available (checked by the caller), so the CPU has SHA-NI,
        // SSE2, SSSE3 and SSE4.1.
        ShaBackend::ShaNi => unsafe {
            if sha224 {
                shani::chains::<N, true>(inner, outer, chains, iterations)
            } else {
                shani::chains::<N, false>(inner, outer, chains, iterations)
            }
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `backend` is available (checked by the caller), so the CPU has FEAT_SHA256.
        ShaBackend::Armv8 => unsafe {
            if sha224 {
                armv8::chains::<N, true>(inner, outer, chains, iterations)
            } else {
                armv8::chains::<N, false>(inner, outer, chains, iterations)
            }
        },
        _ => portable(sha224, inner, outer, chains, iterations),
    }
}

/// The message words 8..16 of a block holding a digest after the 64-byte HMAC pad: the
/// padding and the length (64 + 32, resp. 64 + 28, bytes in bits). For SHA-224, word 7 is
/// the padding's 0x80 byte, [`SHA224_W7`].
pub(crate) const fn pad_words(sha224: bool) -> [u32; 8] {
    if sha224 {
        [0, 0, 0, 0, 0, 0, 0, (64 + 28) * 8]
    } else {
        [0x8000_0000, 0, 0, 0, 0, 0, 0, (64 + 32) * 8]
    }
}

/// Word 7 of a SHA-224 digest block (the 0x80 padding byte after 28 digest bytes).
pub(crate) const SHA224_W7: u32 = 0x8000_0000;

/// One compression of the digest block `msg` (words 0..8; the padding follows) from `state`.
fn compress_digest(state: &[u32; 8], msg: &[u32; 8], sha224: bool, block: &mut [u8; 64]) -> [u32; 8] {
    for (chunk, w) in block.chunks_exact_mut(4).zip(msg.iter().chain(pad_words(sha224).iter())) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    if sha224 {
        block[28..32].copy_from_slice(&SHA224_W7.to_be_bytes());
    }
    let mut s = *state;
    sha2::block_api::compress256(&mut s, core::slice::from_ref(block));
    s
}

fn portable<const N: usize>(
    sha224: bool,
    inner: &[u32; 8],
    outer: &[u32; 8],
    chains: &mut [Chain; N],
    iterations: u32,
) {
    let mut block = [0u8; 64];
    for _ in 0..iterations {
        for c in chains.iter_mut() {
            let mut v = compress_digest(inner, &c.u, sha224, &mut block);
            c.u = compress_digest(outer, &v, sha224, &mut block);
            v.zeroize();
            for (t, u) in c.t.iter_mut().zip(&c.u) {
                *t ^= u;
            }
        }
    }
    block.zeroize();
}

/// [`pbkdf2_sha256_chains`] for HMAC-SHA-1: the states are five words, and so are the digest
/// words of `u` and `t` (words 5..8 are unspecified on return). Interleaved on SHA-NI and on
/// the ARMv8 SHA1 instructions, four chains at a time (four pay on SHA-NI: 1.18x the
/// throughput of two pairs on Zen 4), then two, then one; the portable backend (and an
/// unavailable one) runs [`ShaBackend::Portable`]'s loop.
pub fn pbkdf2_sha1_chains(
    backend: ShaBackend,
    inner: &[u32; 5],
    outer: &[u32; 5],
    chains: &mut [Chain],
    iterations: u32,
) {
    if iterations == 0 || chains.is_empty() {
        return;
    }
    let mut quads = chains.chunks_exact_mut(4);
    for quad in &mut quads {
        let quad: &mut [Chain; 4] = quad.try_into().expect("chunks_exact");
        run_sha1::<4>(backend, inner, outer, quad, iterations);
    }
    let mut pairs = quads.into_remainder().chunks_exact_mut(LANES);
    for pair in &mut pairs {
        let pair: &mut [Chain; LANES] = pair.try_into().expect("chunks_exact");
        run_sha1::<LANES>(backend, inner, outer, pair, iterations);
    }
    for one in pairs.into_remainder().chunks_exact_mut(1) {
        let one: &mut [Chain; 1] = one.try_into().expect("chunks_exact");
        run_sha1::<1>(backend, inner, outer, one, iterations);
    }
}

fn run_sha1<const N: usize>(
    backend: ShaBackend,
    inner: &[u32; 5],
    outer: &[u32; 5],
    chains: &mut [Chain; N],
    iterations: u32,
) {
    match backend.sha1_kernel() {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        // SAFETY: `sha1_kernel` returns SHA-NI only where it is available, so the CPU has SHA,
        // SSE2, SSSE3, SSE4.1.
        ShaBackend::ShaNi => unsafe { shani1::chains::<N>(inner, outer, chains, iterations) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `sha1_kernel` returns armv8 only where it is available, so the CPU has
        // FEAT_SHA1 (Rust's `sha2` feature is detected only with both FEAT_SHA1 and FEAT_SHA256).
        ShaBackend::Armv8 => unsafe { armv8_1::chains::<N>(inner, outer, chains, iterations) },
        _ => portable_sha1(inner, outer, chains, iterations),
    }
}

/// One SHA-1 compression of the digest block `msg` (words 0..5; the padding follows).
fn compress_sha1_digest(state: &[u32; 5], msg: &[u32], block: &mut [u8; 64]) -> [u32; 5] {
    block.fill(0);
    for (chunk, w) in block.chunks_exact_mut(4).zip(&msg[..5]) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    block[20] = 0x80;
    block[56..].copy_from_slice(&(((64 + 20) * 8) as u64).to_be_bytes());
    let mut s = *state;
    sha1::block_api::compress(&mut s, core::slice::from_ref(block));
    s
}

fn portable_sha1<const N: usize>(inner: &[u32; 5], outer: &[u32; 5], chains: &mut [Chain; N], iterations: u32) {
    let mut block = [0u8; 64];
    for _ in 0..iterations {
        for c in chains.iter_mut() {
            let mut v = compress_sha1_digest(inner, &c.u, &mut block);
            let u = compress_sha1_digest(outer, &v, &mut block);
            v.zeroize();
            c.u[..5].copy_from_slice(&u);
            for (t, u) in c.t.iter_mut().zip(&u) {
                *t ^= u;
            }
        }
    }
    block.zeroize();
}

/// The hash of an HMAC on the SHA-512 compression: SHA-512 or SHA-384 (a 48-byte digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha512Variant {
    /// SHA-384: the message block holds 6 digest words.
    Sha384,
    /// SHA-512: the message block holds 8 digest words.
    Sha512,
}

/// [`pbkdf2_sha256_chains`] for HMAC-SHA-512 (or SHA-384): the states and the digest words of
/// `u` and `t` are 64-bit (SHA-384: words 0..6; words 6..8 are unspecified on return).
/// Interleaved on the ARMv8 SHA512 instructions, [`LANES`] chains at a time, then one; every
/// other backend (and armv8 without FEAT_SHA512) runs [`ShaBackend::Portable`]'s loop.
pub fn pbkdf2_sha512_chains(
    backend: ShaBackend,
    variant: Sha512Variant,
    inner: &[u64; 8],
    outer: &[u64; 8],
    chains: &mut [Chain<u64>],
    iterations: u32,
) {
    if iterations == 0 || chains.is_empty() {
        return;
    }
    let sha384 = variant == Sha512Variant::Sha384;
    let mut pairs = chains.chunks_exact_mut(LANES);
    for pair in &mut pairs {
        let pair: &mut [Chain<u64>; LANES] = pair.try_into().expect("chunks_exact");
        run_sha512::<LANES>(backend, sha384, inner, outer, pair, iterations);
    }
    for one in pairs.into_remainder().chunks_exact_mut(1) {
        let one: &mut [Chain<u64>; 1] = one.try_into().expect("chunks_exact");
        run_sha512::<1>(backend, sha384, inner, outer, one, iterations);
    }
}

fn run_sha512<const N: usize>(
    backend: ShaBackend,
    sha384: bool,
    inner: &[u64; 8],
    outer: &[u64; 8],
    chains: &mut [Chain<u64>; N],
    iterations: u32,
) {
    match backend.sha512_kernel() {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `sha512_kernel` returns armv8 only where the CPU has FEAT_SHA512 (Rust's
        // `sha3` feature, detected at run time or enabled at compile time).
        ShaBackend::Armv8 => unsafe {
            if sha384 {
                armv8_512::chains::<N, true>(inner, outer, chains, iterations)
            } else {
                armv8_512::chains::<N, false>(inner, outer, chains, iterations)
            }
        },
        _ => portable_sha512(sha384, inner, outer, chains, iterations),
    }
}

/// The message words 6..16 of a block holding a SHA-512 (SHA-384) digest after the 128-byte
/// HMAC pad: for SHA-512, words 6 and 7 are digest words (given as zero here); then the
/// padding bit and the length (128 + 64, resp. 128 + 48, bytes in bits).
pub(crate) const fn pad_words64(sha384: bool) -> [u64; 10] {
    if sha384 {
        [1 << 63, 0, 0, 0, 0, 0, 0, 0, 0, (128 + 48) * 8]
    } else {
        [0, 0, 1 << 63, 0, 0, 0, 0, 0, 0, (128 + 64) * 8]
    }
}

fn portable_sha512<const N: usize>(
    sha384: bool,
    inner: &[u64; 8],
    outer: &[u64; 8],
    chains: &mut [Chain<u64>; N],
    iterations: u32,
) {
    let digest = if sha384 { 6 } else { 8 };
    let mut block = [0u8; 128];
    for (chunk, w) in block[48..].chunks_exact_mut(8).zip(pad_words64(sha384)) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    let compress = |state: &[u64; 8], msg: &[u64; 8], block: &mut [u8; 128]| {
        for (chunk, w) in block.chunks_exact_mut(8).zip(&msg[..digest]) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        let mut s = *state;
        sha2::block_api::compress512(&mut s, core::slice::from_ref(block));
        s
    };
    for _ in 0..iterations {
        for c in chains.iter_mut() {
            let mut v = compress(inner, &c.u, &mut block);
            c.u = compress(outer, &v, &mut block);
            v.zeroize();
            for (t, u) in c.t.iter_mut().zip(&c.u) {
                *t ^= u;
            }
        }
    }
    block.zeroize();
}
