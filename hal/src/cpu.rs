//! CPU feature detection shared by the hal's modules: a cached set of feature bits per module,
//! and on x86-64 the CPUID leaves and the OS-enabled register state (XCR0) that the no-std
//! detection reads.
use core::sync::atomic::{AtomicU8, Ordering};

/// Marks a [`Detected`] value as computed (modules use bits 0..7 for their features).
pub(crate) const DETECTED: u8 = 0x80;

/// A module's feature bits, computed on first use by its detection function, then cached.
/// Racing first calls compute the same value, so a plain load/store is enough.
pub(crate) struct Detected(AtomicU8);

impl Detected {
    pub(crate) const fn new() -> Detected {
        Detected(AtomicU8::new(0))
    }

    /// The bits (with [`DETECTED`] set), running `detect` the first time.
    pub(crate) fn get(&self, detect: fn() -> u8) -> u8 {
        let f = self.0.load(Ordering::Relaxed);
        if f & DETECTED != 0 {
            return f;
        }
        let f = detect() | DETECTED;
        self.0.store(f, Ordering::Relaxed);
        f
    }

    /// The cached bits (0 before the first [`Detected::get`]).
    #[cfg(test)]
    pub(crate) fn cached(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// CPUID leaves 1 and 7 (sub-leaf 0; `None` where the CPU has no leaf 7), and whether the OS
/// saves the ymm state (XCR0 bits 1, 2: AVX usable) and the zmm state (also bits 5, 6, 7:
/// AVX-512 usable), read with XGETBV only after CPUID reported OSXSAVE.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) struct Cpuid {
    pub l1: core::arch::x86_64::CpuidResult,
    pub l7: Option<core::arch::x86_64::CpuidResult>,
    pub ymm: bool,
    pub zmm: bool,
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[cfg_attr(feature = "std", allow(dead_code))]
impl Cpuid {
    pub(crate) fn read() -> Cpuid {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        // `__cpuid` is a safe fn in newer Rust; the block keeps the MSRV (1.89) compiling.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID is present on every x86-64 CPU; leaf 7 is only read when leaf 0
        // reports it.
        let (l1, l7) = unsafe {
            let max_leaf = __cpuid(0).eax;
            let l1 = __cpuid(1);
            let l7 = if max_leaf >= 7 { Some(__cpuid_count(7, 0)) } else { None };
            (l1, l7)
        };
        let (osxsave, avx) = (bit(l1.ecx, 27), bit(l1.ecx, 28));
        let xcr0 = if osxsave { xgetbv0() } else { 0 };
        let ymm = avx && xcr0 & 0x6 == 0x6;
        let zmm = ymm && xcr0 & 0xE0 == 0xE0;
        Cpuid { l1, l7, ymm, zmm }
    }
}

/// Bit `n` of a CPUID register.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) fn bit(reg: u32, n: u32) -> bool {
    reg >> n & 1 == 1
}

/// XCR0, read only after CPUID reported OSXSAVE.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[cfg_attr(feature = "std", allow(dead_code))]
fn xgetbv0() -> u64 {
    #[target_feature(enable = "xsave")]
    unsafe fn read() -> u64 {
        // SAFETY: the caller checked CPUID.1:ECX.OSXSAVE, so XGETBV is enabled.
        unsafe { core::arch::x86_64::_xgetbv(0) }
    }
    // SAFETY: only called when CPUID reported OSXSAVE (XGETBV usable, XSAVE present).
    unsafe { read() }
}
