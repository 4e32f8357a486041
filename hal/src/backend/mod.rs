//! Backend identity, detection, choice and dispatch.
//!
//! Each backend lives in its own file and provides the kernels of the internal contract
//! (notes/hal-contract.md). The dispatch functions here take a [`Backend`] that is available
//! (guaranteed because a `crate::Aes` is only constructed for an available backend) and call its
//! kernel; whatever a backend does not provide is served by the next one of its family
//! (vaes512/vaes256 -> aesni).
use crate::key::RoundKeys;
use crate::BLOCK;

pub(crate) mod soft;

// The x86 SIMD backends, compiled where the target has SSE2. On the soft-float
// x86_64-unknown-none target LLVM cannot lower any vector code, not even inside
// `#[target_feature(enable = "aes,sse2")]` functions ("Do not know how to split the result of
// this operator"), so there only the soft backend exists; a bare-metal x86 kernel that wants
// AES-NI uses a target with SSE enabled (then CPUID + XGETBV detection below applies).
// hal-vaes owns vaes256.rs and vaes512.rs; each exports
// `const READY: bool`, and a VAES backend is offered only once its file says it is ready
// (until then its kernels route to aesni and it stays out of `Backend::available()`).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod aesni;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod vaes256;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod vaes512;

#[cfg(target_arch = "aarch64")]
mod armv8;

/// An implementation of the AES primitives. All give bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Portable constant-time software.
    Soft,
    /// x86-64 AES-NI (+ PCLMULQDQ), 128-bit lanes.
    Aesni,
    /// x86-64 VAES + AVX2, 256-bit lanes.
    Vaes256,
    /// x86-64 VAES + AVX-512 + VPCLMULQDQ, 512-bit lanes.
    Vaes512,
    /// aarch64 ARMv8 Crypto Extensions (AESE/AESMC).
    Armv8,
}

impl Backend {
    /// Every backend, slowest first.
    pub const ALL: [Backend; 5] = [Backend::Soft, Backend::Aesni, Backend::Vaes256, Backend::Vaes512, Backend::Armv8];

    /// Short lowercase name, as used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Soft => "soft",
            Backend::Aesni => "aesni",
            Backend::Vaes256 => "vaes256",
            Backend::Vaes512 => "vaes512",
            Backend::Armv8 => "armv8",
        }
    }

    /// Parses a name given by [`Backend::name`].
    pub fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this backend can run here (CPU features detected once, then cached).
    pub fn is_available(self) -> bool {
        let f = cpu_features();
        match self {
            Backend::Soft => true,
            Backend::Aesni => f & F_AESNI != 0,
            Backend::Vaes256 => f & F_VAES256 != 0 && vaes_ready(Backend::Vaes256),
            Backend::Vaes512 => f & F_VAES512 != 0 && vaes_ready(Backend::Vaes512),
            Backend::Armv8 => f & F_ARMV8 != 0 || armv8_asserted(),
        }
    }

    /// The backends usable here, slowest first.
    pub fn available() -> impl Iterator<Item = Backend> {
        Backend::ALL.into_iter().filter(|b| b.is_available())
    }

    /// The fastest backend usable here.
    pub fn best() -> Backend {
        Backend::available().last().unwrap_or(Backend::Soft)
    }
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a VAES backend's kernels have landed (hal-vaes flips `READY` in its file).
fn vaes_ready(b: Backend) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        match b {
            Backend::Vaes256 => vaes256::READY,
            Backend::Vaes512 => vaes512::READY,
            _ => false,
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        let _ = b;
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Detection

const F_AESNI: u8 = 1;
const F_VAES256: u8 = 2;
const F_VAES512: u8 = 4;
const F_ARMV8: u8 = 8;

/// Detected CPU features (`F_*` bits).
static CPU_FEATURES: crate::cpu::Detected = crate::cpu::Detected::new();

fn cpu_features() -> u8 {
    CPU_FEATURES.get(detect)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2", feature = "std"))]
fn detect() -> u8 {
    detect_std()
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2", not(feature = "std")))]
fn detect() -> u8 {
    detect_cpuid()
}

/// x86 detection through std (which also checks the OS-enabled register state).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2", feature = "std"))]
fn detect_std() -> u8 {
    use std::is_x86_feature_detected as has;
    let mut f = 0;
    if has!("aes") && has!("pclmulqdq") && has!("sse2") {
        f |= F_AESNI;
        if has!("vaes") && has!("vpclmulqdq") && has!("avx2") {
            f |= F_VAES256;
        }
        // std checks that the OS saves the zmm state (XCR0) before reporting AVX-512.
        if has!("vaes") && has!("vpclmulqdq") && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
            f |= F_VAES512;
        }
    }
    f
}

/// x86 detection without std: CPUID for the instructions, XGETBV for the register state the OS
/// saves. Compiled (and tested against [`detect_std`]) with std too.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[cfg_attr(feature = "std", allow(dead_code))]
fn detect_cpuid() -> u8 {
    use crate::cpu::bit;
    let crate::cpu::Cpuid { l1, l7, ymm, zmm } = crate::cpu::Cpuid::read();
    let mut f = 0;
    let aes = bit(l1.ecx, 25);
    let pclmulqdq = bit(l1.ecx, 1);
    let sse2 = bit(l1.edx, 26);
    if !(aes && pclmulqdq && sse2) {
        return 0;
    }
    f |= F_AESNI;
    let Some(l7) = l7 else { return f };
    let avx2 = bit(l7.ebx, 5);
    let avx512f = bit(l7.ebx, 16);
    let avx512bw = bit(l7.ebx, 30);
    let avx512vl = bit(l7.ebx, 31);
    let vaes = bit(l7.ecx, 9);
    let vpclmulqdq = bit(l7.ecx, 10);
    if ymm && avx2 && vaes && vpclmulqdq {
        f |= F_VAES256;
    }
    if zmm && avx512f && avx512bw && avx512vl && vaes && vpclmulqdq {
        f |= F_VAES512;
    }
    f
}

#[cfg(target_arch = "aarch64")]
fn detect() -> u8 {
    #[cfg(feature = "std")]
    if std::arch::is_aarch64_feature_detected!("aes") {
        return F_ARMV8;
    }
    if cfg!(target_feature = "aes") {
        return F_ARMV8;
    }
    0
}

#[cfg(not(any(all(target_arch = "x86_64", target_feature = "sse2"), target_arch = "aarch64")))]
fn detect() -> u8 {
    0
}

#[cfg(target_arch = "aarch64")]
static ARMV8_ASSERTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn armv8_asserted() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        ARMV8_ASSERTED.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

#[cfg(target_arch = "aarch64")]
impl Backend {
    /// Declares that this aarch64 CPU implements the ARMv8 Cryptography Extensions
    /// (FEAT_AES: AESE, AESD, AESMC, AESIMC; and FEAT_PMULL, which the XTS tweak arithmetic
    /// uses), making [`Backend::Armv8`] available. For bare metal without `std`, where this
    /// crate cannot ask the OS, and builds without the `aes` target feature. A boot loader at
    /// EL1 can check ID_AA64ISAR0_EL1.AES >= 0b0010 (AES and PMULL) before calling this.
    ///
    /// # Safety
    /// Every core that will run qluks-hal must implement FEAT_AES and FEAT_PMULL; otherwise the
    /// armv8 backend executes undefined instructions.
    pub unsafe fn assert_armv8_aes() {
        ARMV8_ASSERTED.store(true, core::sync::atomic::Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch. Preconditions (checked by the callers in key.rs, xts.rs, cbc.rs): lengths as
// documented per function, and `b` is available (an `Aes` exists for it).

/// The IVs of consecutive CBC chains (sectors).
pub(crate) type ChainIvs<'a> = &'a [[u8; BLOCK]];

/// Which implementation serves the non-XTS-batch operations of a backend.
#[derive(Clone, Copy)]
enum Family {
    Soft,
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    Aesni,
    #[cfg(target_arch = "aarch64")]
    Armv8,
}

fn family(b: Backend) -> Family {
    debug_assert!(b.is_available());
    match b {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        Backend::Aesni | Backend::Vaes256 | Backend::Vaes512 => Family::Aesni,
        #[cfg(target_arch = "aarch64")]
        Backend::Armv8 => Family::Armv8,
        _ => Family::Soft,
    }
}

/// Runs `$call` on the family's module, with the SAFETY argument shared by all dispatches.
macro_rules! on_family {
    ($b:expr, $m:ident => $call:expr) => {
        match family($b) {
            Family::Soft => {
                use soft as $m;
                $call
            }
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            // SAFETY: the family is Aesni only for an available aesni/vaes backend, and
            // `detect_*` report VAES only together with AES-NI, PCLMULQDQ and SSE2.
            Family::Aesni => unsafe {
                use aesni as $m;
                $call
            },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: the family is Armv8 only when the armv8 backend is available (detected,
            // compiled in, or asserted by the caller of `Backend::assert_armv8_aes`).
            Family::Armv8 => unsafe {
                use armv8 as $m;
                $call
            },
        }
    };
}

/// ECB encryption; `data.len()` is a multiple of 16.
pub(crate) fn ecb_encrypt(b: Backend, keys: &RoundKeys, data: &mut [u8]) {
    on_family!(b, m => m::ecb_encrypt(keys, data))
}

/// ECB decryption; `data.len()` is a multiple of 16.
pub(crate) fn ecb_decrypt(b: Backend, keys: &RoundKeys, data: &mut [u8]) {
    on_family!(b, m => m::ecb_decrypt(keys, data))
}

/// CBC encryption of one chain; `data.len()` is a multiple of 16.
pub(crate) fn cbc_encrypt(b: Backend, keys: &RoundKeys, data: &mut [u8], iv: &[u8; BLOCK]) {
    on_family!(b, m => m::cbc_encrypt(keys, data, iv))
}

/// CBC decryption of one chain; `data.len()` is a multiple of 16.
pub(crate) fn cbc_decrypt(b: Backend, keys: &RoundKeys, data: &mut [u8], iv: &[u8; BLOCK]) {
    on_family!(b, m => m::cbc_decrypt(keys, data, iv))
}

/// CBC encryption of consecutive sectors; `sector_size` is a non-zero multiple of 16 and
/// `data.len() == ivs.len() * sector_size`.
pub(crate) fn cbc_encrypt_sectors(b: Backend, keys: &RoundKeys, data: &mut [u8], sector_size: usize, ivs: ChainIvs) {
    debug_assert_eq!(data.len(), ivs.len() * sector_size);
    on_family!(b, m => m::cbc_encrypt_sectors(keys, data, sector_size, ivs))
}

/// CBC decryption of consecutive sectors; as [`cbc_encrypt_sectors`].
pub(crate) fn cbc_decrypt_sectors(b: Backend, keys: &RoundKeys, data: &mut [u8], sector_size: usize, ivs: ChainIvs) {
    debug_assert_eq!(data.len(), ivs.len() * sector_size);
    on_family!(b, m => m::cbc_decrypt_sectors(keys, data, sector_size, ivs))
}

/// One XTS unit of `data.len() >= 16` bytes with an arbitrary tweak (ciphertext stealing).
pub(crate) fn xts_unit(b: Backend, dk: &RoundKeys, tk: &RoundKeys, data: &mut [u8], tweak: &[u8; BLOCK], enc: bool) {
    debug_assert!(data.len() >= BLOCK);
    on_family!(b, m => m::xts_unit(dk, tk, data, tweak, enc))
}

/// XTS over consecutive units: the contract's batch kernels. `unit_size` is a power of two in
/// 512..=4096 and `data.len()` a multiple of it; unit `i` has tweak LE128(`first + i * step`)
/// (mod 2^128; every kernel takes any step, 1 for consecutive units).
#[allow(clippy::too_many_arguments)]
pub(crate) fn xts_units(
    b: Backend,
    dk: &RoundKeys,
    tk: &RoundKeys,
    data: &mut [u8],
    unit: usize,
    first: u128,
    step: u128,
    enc: bool,
) {
    debug_assert!(unit.is_power_of_two() && (512..=4096).contains(&unit) && data.len().is_multiple_of(unit));
    debug_assert!(b.is_available());
    if data.is_empty() {
        return;
    }
    match b {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        // SAFETY: Vaes512 is available, so the CPU and OS support its features (see detect).
        Backend::Vaes512 if vaes512::READY => unsafe {
            if enc {
                vaes512::xts_encrypt_units(dk, tk, data, unit, first, step)
            } else {
                vaes512::xts_decrypt_units(dk, tk, data, unit, first, step)
            }
        },
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        // SAFETY: Vaes256 is available, so the CPU and OS support its features (see detect).
        Backend::Vaes256 if vaes256::READY => unsafe {
            if enc {
                vaes256::xts_encrypt_units(dk, tk, data, unit, first, step)
            } else {
                vaes256::xts_decrypt_units(dk, tk, data, unit, first, step)
            }
        },
        _ => on_family!(b, m => if enc {
            m::xts_encrypt_units(dk, tk, data, unit, first, step)
        } else {
            m::xts_decrypt_units(dk, tk, data, unit, first, step)
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the backends (public data only: lengths, and tweak arithmetic that is
// branch-free).

/// Multiplies an XTS tweak by x in GF(2^128) (little-endian, polynomial x^128+x^7+x^2+x+1),
/// without branching on its bits.
#[inline(always)]
pub(crate) fn gf_double(t: &mut [u8; BLOCK]) {
    let v = u128::from_le_bytes(*t);
    let carry = 0u128.wrapping_sub(v >> 127) & 0x87;
    *t = ((v << 1) ^ carry).to_le_bytes();
}

/// The number of leading bytes of an XTS unit of `len >= 16` bytes processed as whole blocks;
/// the rest (one block plus 1..=15 bytes) goes through [`steal_tail`].
pub(crate) fn xts_whole_blocks(len: usize) -> usize {
    if len.is_multiple_of(BLOCK) {
        len
    } else {
        (len / BLOCK - 1) * BLOCK
    }
}

/// IEEE 1619 ciphertext stealing over the last full block and the partial one (`tail` holds
/// 17..=31 bytes, or nothing). `t` is the tweak of the last full block (index m-1);
/// `xex(block, tweak)` encrypts or decrypts one block under a tweak.
pub(crate) fn steal_tail(
    tail: &mut [u8],
    t: [u8; BLOCK],
    enc: bool,
    mut xex: impl FnMut(&mut [u8; BLOCK], &[u8; BLOCK]),
) {
    if tail.is_empty() {
        return;
    }
    let rest = tail.len() - BLOCK;
    let mut t_next = t;
    gf_double(&mut t_next);
    // Encryption uses T_{m-1} then T_m; decryption the other way round.
    let (first, second) = if enc { (t, t_next) } else { (t_next, t) };
    let mut cc: [u8; BLOCK] = tail[..BLOCK].try_into().expect("one block");
    xex(&mut cc, &first);
    let mut pp = cc;
    pp[..rest].copy_from_slice(&tail[BLOCK..]);
    tail[BLOCK..].copy_from_slice(&cc[..rest]);
    xex(&mut pp, &second);
    tail[..BLOCK].copy_from_slice(&pp);
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2", feature = "std"))]
    #[test]
    fn cpuid_and_xgetbv_detection_agrees_with_std() {
        assert_eq!(super::detect_cpuid(), super::detect_std());
    }

    #[test]
    fn detection_is_cached() {
        let first = super::cpu_features();
        assert_ne!(first & crate::cpu::DETECTED, 0);
        assert_eq!(super::CPU_FEATURES.cached(), first);
        assert_eq!(super::cpu_features(), first);
    }
}
