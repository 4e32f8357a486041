//! The permutation of Argon2's compression function (RFC 9106 section 3.6): BLAKE2b's round
//! with the BlaMka multiply (`a + b + 2 * lo32(a) * lo32(b)`), applied to the eight rows and
//! then the eight columns of a 1 KiB block seen as 8 x 8 pairs of 64-bit words.
//!
//! This is where Argon2 spends its time: a LUKS2 unlock with cryptsetup's default costs runs
//! it a million times. The core (`qluks::crypto::argon2`) does the rest of the block step (the
//! xors with the previous, reference and overwritten blocks) and calls [`permute`] here.
//!
//! # Kernels
//! - `portable`: 64-bit scalar code.
//! - `avx2`: x86-64 AVX2, four words per vector; two rows (or two column pairs) in flight.
//! - `avx512vl`: the AVX2 kernel with AVX-512VL's 64-bit rotates (`vprorq`) in place of byte
//!   shuffles and shift pairs.
//! - `neon`: aarch64 Advanced SIMD, two words per vector; not the default (see
//!   [`BlamkaBackend::best`]).
//!
//! All give identical results (tested against each other and, through the core, against the
//! RFC 9106 vectors and the `argon2` crate); none branches or indexes memory on the data.
//! Detection as for the AES backends: `is_*_feature_detected!` with `std`, CPUID and XGETBV
//! without it on x86-64; NEON is part of every aarch64 target that has a vector unit.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod avx2;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon;

/// 64-bit words in an Argon2 block.
pub const WORDS: usize = 128;

/// An Argon2 block as little-endian 64-bit words.
pub type Block = [u64; WORDS];

/// An implementation of [`permute`]. All give identical results; only speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlamkaBackend {
    /// 64-bit scalar code, any CPU.
    Portable,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX2 with the AVX-512VL rotates.
    Avx512Vl,
    /// aarch64 Advanced SIMD (NEON).
    Neon,
}

impl BlamkaBackend {
    /// Every backend, the x86 ones slowest first.
    pub const ALL: [BlamkaBackend; 4] =
        [BlamkaBackend::Portable, BlamkaBackend::Neon, BlamkaBackend::Avx2, BlamkaBackend::Avx512Vl];

    /// Short lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            BlamkaBackend::Portable => "portable",
            BlamkaBackend::Avx2 => "avx2",
            BlamkaBackend::Avx512Vl => "avx512vl",
            BlamkaBackend::Neon => "neon",
        }
    }

    /// Parses a name given by [`BlamkaBackend::name`].
    pub fn from_name(name: &str) -> Option<BlamkaBackend> {
        BlamkaBackend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this backend can run here (detected once, then cached).
    pub fn is_available(self) -> bool {
        match self {
            BlamkaBackend::Portable => true,
            BlamkaBackend::Avx2 => features() & F_AVX2 != 0,
            BlamkaBackend::Avx512Vl => features() & F_AVX512VL != 0,
            BlamkaBackend::Neon => features() & F_NEON != 0,
        }
    }

    /// The backends usable here, in the order of [`BlamkaBackend::ALL`].
    pub fn available() -> impl Iterator<Item = BlamkaBackend> {
        BlamkaBackend::ALL.into_iter().filter(|b| b.is_available())
    }

    /// The backend Argon2 uses by default: the fastest measured one usable here. On x86-64
    /// the AVX2 kernels (1.6x the portable one on Zen 4); on aarch64 the portable one, because
    /// the NEON kernel has not been timed on Arm hardware yet (only checked for correctness
    /// under user-mode QEMU, whose emulation says nothing about speed). Pick
    /// [`BlamkaBackend::Neon`] by name to measure it (`qluks bench argon2 --kernel all`).
    pub fn best() -> BlamkaBackend {
        BlamkaBackend::available().filter(|&b| b != BlamkaBackend::Neon).last().unwrap_or(BlamkaBackend::Portable)
    }
}

impl core::fmt::Display for BlamkaBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Applies Argon2's permutation to `block`: P to each row (words `16r..16r + 16`), then P to
/// each column (words `16k + 2c` and `16k + 2c + 1` of every row `k`), with `backend` (the
/// portable code when `backend` cannot run here). The kernels keep their working values in
/// registers and in `block` only; the caller wipes `block` when it holds secrets.
pub fn permute(backend: BlamkaBackend, block: &mut Block) {
    match backend {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        BlamkaBackend::Avx2 if backend.is_available() => avx2::permute(block),
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        BlamkaBackend::Avx512Vl if backend.is_available() => avx2::permute_vl(block),
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        BlamkaBackend::Neon if backend.is_available() => neon::permute(block),
        _ => permute_portable(block),
    }
}

/// Asks the CPU to start loading `bytes` (an Argon2 block needed soon) into its caches, every
/// 64-byte line at once. A hint only: it never faults and changes no data.
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint: it does not fault on any address and writes nothing;
        // the address is inside `bytes` anyway.
        unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(target_arch = "aarch64")]
    for line in bytes.chunks(64) {
        // SAFETY: PRFM is a hint: it does not fault on any address, writes no register or
        // memory and leaves the flags alone; the address is inside `bytes` anyway.
        unsafe {
            core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) line.as_ptr(), options(nostack, readonly, preserves_flags))
        };
    }
    #[cfg(not(any(all(target_arch = "x86_64", target_feature = "sse"), target_arch = "aarch64")))]
    let _ = bytes;
}

/// Bytes in an Argon2 block.
pub const BLOCK_BYTES: usize = 8 * WORDS;

/// One step of Argon2's fill (RFC 9106 section 3.2): with `R = prev ^ ref`, the new block is
/// `P(R) ^ R`, xored into the block it replaces (`dst`) when `xor` (passes after the first).
/// The new block is written to `dst` (little-endian words, any alignment) and to `prev` (for
/// the next step); `tmp` is scratch. `ref` and `dst` are the memory's bytes, loaded and stored
/// by the kernel itself so that it can start on the first rows of `ref` while the rest is
/// still on its way from memory. The kernels keep their working values in registers and in
/// `prev` and `tmp` only; the caller wipes those.
pub fn fill_block(
    backend: BlamkaBackend,
    prev: &mut Block,
    refb: &[u8; BLOCK_BYTES],
    dst: &mut [u8; BLOCK_BYTES],
    xor: bool,
    tmp: &mut Block,
) {
    match backend {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        BlamkaBackend::Avx2 if backend.is_available() => avx2::fill(prev, refb, dst, xor, tmp),
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        BlamkaBackend::Avx512Vl if backend.is_available() => avx2::fill_vl(prev, refb, dst, xor, tmp),
        _ => {
            for ((p, t), b) in prev.iter_mut().zip(tmp.iter_mut()).zip(refb.chunks_exact(8)) {
                let r = *p ^ u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                *p = r;
                *t = r;
            }
            permute(backend, tmp);
            for ((p, t), b) in prev.iter_mut().zip(tmp.iter()).zip(dst.chunks_exact_mut(8)) {
                let mut v = *p ^ *t;
                if xor {
                    v ^= u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                }
                *p = v;
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

// Inlined when optimizing (the hot loop); separate small frames in debug builds, where
// inlining every G of a round would make an 8 KiB frame.
#[cfg_attr(not(debug_assertions), inline(always))]
fn fblamka(x: u64, y: u64) -> u64 {
    x.wrapping_add(y).wrapping_add(2u64.wrapping_mul(x & 0xffff_ffff).wrapping_mul(y & 0xffff_ffff))
}

#[cfg_attr(not(debug_assertions), inline(always))]
fn gb(v: &mut [u64; 16], a: usize, b: usize, c: usize, d: usize) {
    v[a] = fblamka(v[a], v[b]);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = fblamka(v[c], v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = fblamka(v[a], v[b]);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = fblamka(v[c], v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

/// The permutation P on 16 words (constant indices: no bounds checks once inlined).
#[cfg_attr(not(debug_assertions), inline(always))]
fn p16(v: &mut [u64; 16]) {
    gb(v, 0, 4, 8, 12);
    gb(v, 1, 5, 9, 13);
    gb(v, 2, 6, 10, 14);
    gb(v, 3, 7, 11, 15);
    gb(v, 0, 5, 10, 15);
    gb(v, 1, 6, 11, 12);
    gb(v, 2, 7, 8, 13);
    gb(v, 3, 4, 9, 14);
}

/// The portable kernel.
fn permute_portable(r: &mut Block) {
    for row in r.chunks_exact_mut(16) {
        let row: &mut [u64; 16] = row.try_into().unwrap_or_else(|_| unreachable!());
        p16(row);
    }
    let mut v = [0u64; 16];
    for col in 0..8 {
        for k in 0..8 {
            v[2 * k] = r[16 * k + 2 * col];
            v[2 * k + 1] = r[16 * k + 2 * col + 1];
        }
        p16(&mut v);
        for k in 0..8 {
            r[16 * k + 2 * col] = v[2 * k];
            r[16 * k + 2 * col + 1] = v[2 * k + 1];
        }
    }
    zeroize::Zeroize::zeroize(&mut v);
}

const F_AVX2: u8 = 1;
const F_AVX512VL: u8 = 2;
const F_NEON: u8 = 4;
static FEATURES: crate::cpu::Detected = crate::cpu::Detected::new();

fn features() -> u8 {
    FEATURES.get(detect)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2", feature = "std"))]
fn detect() -> u8 {
    use std::is_x86_feature_detected as has;
    let mut f = 0;
    if has!("avx2") {
        f |= F_AVX2;
        // std checks that the OS saves the zmm state (XCR0) before reporting AVX-512.
        if has!("avx512f") && has!("avx512vl") {
            f |= F_AVX512VL;
        }
    }
    f
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2", not(feature = "std")))]
fn detect() -> u8 {
    detect_cpuid()
}

/// AVX2 and AVX-512VL through CPUID (leaf 7 EBX bits 5, 16 and 31), usable only when the OS
/// saves the ymm (XCR0 bits 1, 2), resp. also the zmm state (bits 5, 6, 7). Compiled (and
/// tested against the std detection) with std too.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) fn detect_cpuid() -> u8 {
    use crate::cpu::bit;
    let crate::cpu::Cpuid { l7, ymm, zmm, .. } = crate::cpu::Cpuid::read();
    let Some(l7) = l7 else { return 0 };
    let mut f = 0;
    if ymm && bit(l7.ebx, 5) {
        f |= F_AVX2;
        if zmm && bit(l7.ebx, 16) && bit(l7.ebx, 31) {
            f |= F_AVX512VL;
        }
    }
    f
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
fn detect() -> u8 {
    F_NEON
}

#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "sse2"),
    all(target_arch = "aarch64", target_feature = "neon")
)))]
fn detect() -> u8 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2", feature = "std"))]
    #[test]
    fn cpuid_and_xgetbv_detection_agrees_with_std() {
        assert_eq!(detect_cpuid(), detect());
    }

    #[test]
    fn detection_is_cached_and_portable_always_runs() {
        let _ = BlamkaBackend::best();
        assert_ne!(FEATURES.cached() & crate::cpu::DETECTED, 0);
        assert!(BlamkaBackend::Portable.is_available());
        for b in BlamkaBackend::ALL {
            assert_eq!(BlamkaBackend::from_name(b.name()), Some(b));
        }
    }
}
