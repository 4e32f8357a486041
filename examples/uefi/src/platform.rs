//! What differs between the two architectures: a clock, the stack pointer, stack painting, and
//! how a status reaches QEMU.

use core::arch::asm;

/// Exit statuses.
pub const EXIT_OK: u32 = 0;
pub const EXIT_DIGEST_MISMATCH: u32 = 1;
pub const EXIT_ERROR: u32 = 2;
pub const EXIT_PANIC: u32 = 4;

/// The byte the unused stack is painted with.
const PAINT: u8 = 0xa5;
/// Bytes just below the stack pointer left alone while painting (the painting code's own use).
const MARGIN: usize = 256;

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: copies the stack pointer into a register; no memory is touched.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    unsafe {
        asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

/// Fills `len` bytes of the unused stack below the current stack pointer (less a small margin)
/// with [`PAINT`]; returns the painted range `(bottom, top)`.
///
/// # Safety
/// `len` bytes below the stack pointer must be this program's stack and unused: the caller
/// checks the firmware's memory map (the stack lies in one allocation) first. Neither UEFI
/// target has a red zone, so nothing lives below the stack pointer.
#[inline(never)]
pub unsafe fn paint_stack(len: usize) -> (usize, usize) {
    let top = stack_pointer() - MARGIN;
    let bottom = top - (len - MARGIN);
    // SAFETY (of the writes): [bottom, top) lies below the stack pointer, inside the stack the
    // caller vouched for; the asm itself pushes nothing.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        asm!("cld", "rep stosb", inout("rdi") bottom => _, inout("rcx") top - bottom => _, in("al") PAINT,
             options(nostack))
    };
    #[cfg(target_arch = "aarch64")]
    unsafe {
        asm!("2:", "strb {pat:w}, [{p}], #1", "cmp {p}, {end}", "b.lo 2b",
             p = inout(reg) bottom => _, end = in(reg) top, pat = in(reg) u32::from(PAINT),
             options(nostack))
    };
    (bottom, top)
}

/// The deepest byte of `(bottom, top)` no longer holding the paint: how far below `entry` (the
/// stack pointer when the job began) the job reached. `None` if the paint is gone at the very
/// bottom (the job may have gone deeper than the painted range).
pub fn stack_reach(painted: (usize, usize), entry: usize) -> Option<usize> {
    let (bottom, top) = painted;
    let mut p = bottom;
    while p < top {
        // SAFETY: reads painted stack memory (mapped, below every live frame of the caller
        // except those that overwrote the paint, which are gone by now).
        let b = unsafe { core::ptr::read_volatile(p as *const u8) };
        if b != PAINT {
            break;
        }
        p += 1;
    }
    if p == bottom {
        return None;
    }
    Some(entry - p)
}

/// A clock: the TSC on x86 (calibrated against the firmware's `Stall`), the generic timer's
/// virtual counter on Arm.
pub struct Clock {
    hz: u64,
}

impl Clock {
    pub fn new() -> Clock {
        #[cfg(target_arch = "x86_64")]
        {
            let t0 = ticks();
            uefi::boot::stall(core::time::Duration::from_millis(50));
            let t1 = ticks();
            Clock { hz: (t1 - t0).max(1) * 20 }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let f: u64;
            // SAFETY: reading CNTFRQ_EL0 has no side effect.
            unsafe { asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack, preserves_flags)) };
            Clock { hz: f.max(1) }
        }
    }

    pub fn hz(&self) -> u64 {
        self.hz
    }

    pub fn now(&self) -> u64 {
        ticks()
    }

    /// Microseconds since `start` (a [`Clock::now`] value).
    pub fn us_since(&self, start: u64) -> u64 {
        (u128::from(ticks().wrapping_sub(start)) * 1_000_000 / u128::from(self.hz)) as u64
    }
}

fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads the time-stamp counter; no memory is touched.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let t: u64;
        // SAFETY: reading the counter has no side effect; the ISB orders it after earlier work.
        unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) t, options(nomem, nostack, preserves_flags)) };
        t
    }
}

/// Ends the QEMU run with `status`: isa-debug-exit at port 0xf4 on x86 (QEMU exits with
/// `status * 2 + 1`), semihosting SYS_EXIT on Arm (QEMU exits with `status`). Only called with
/// `exit=qemu`: real firmware has neither device.
pub fn exit_qemu(status: u32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: an I/O port write; with exit=qemu the caller says QEMU's isa-debug-exit device is
    // there (on real hardware port 0xf4 is unassigned and the write is ignored).
    unsafe {
        asm!("out dx, al", in("dx") 0xf4u16, in("al") status as u8, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    {
        const SYS_EXIT: u64 = 0x18;
        const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
        let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
        // SAFETY: the semihosting trap reads the two-word block, alive across the call; with
        // exit=qemu the caller says QEMU runs with -semihosting.
        unsafe { asm!("hlt #0xf000", inout("x0") SYS_EXIT => _, in("x1") block.as_ptr(), options(nostack)) };
    }
}

/// Crypto extensions of an aarch64 CPU, from ID_AA64ISAR0_EL1 (UEFI runs at EL1 or EL2, where
/// it is readable).
#[cfg(target_arch = "aarch64")]
pub fn armv8_aes() -> bool {
    let isar0: u64;
    // SAFETY: ID registers are read-only and have no side effects.
    unsafe { asm!("mrs {}, id_aa64isar0_el1", out(reg) isar0, options(nomem, nostack, preserves_flags)) };
    (isar0 >> 4) & 0xf >= 1
}

/// The AVX register state (XCR0) as the firmware left it, when [`enable_avx_state`] changed it.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub struct AvxState {
    cr4: u64,
    xcr0: u64,
}

/// Enables the AVX (and, where the CPU has them, AVX-512) register state when the firmware did
/// not, so that the hal can use VAES: sets CR4.OSXSAVE and adds the YMM (and opmask/ZMM) bits the
/// CPU supports to XCR0. Returns what to restore, or `None` when nothing was changed (the state
/// was already on, or the CPU has no XSAVE/AVX).
///
/// Sound for this program: firmware code is built without SSE/AVX and its interrupt entry saves
/// the legacy FX state, which leaves the upper halves of the vector registers alone; only this
/// program uses them, and [`restore_avx_state`] puts CR4 and XCR0 back before it returns.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub fn enable_avx_state() -> Option<AvxState> {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaves 1 and 0xD exist where XSAVE does (checked first); it reads ID registers.
    let leaf1 = unsafe { __cpuid(1) };
    let (xsave, avx, osxsave) = (leaf1.ecx >> 26 & 1 == 1, leaf1.ecx >> 28 & 1 == 1, leaf1.ecx >> 27 & 1 == 1);
    if !xsave || !avx || osxsave {
        return None;
    }
    #[allow(unused_unsafe)]
    // SAFETY: as above (leaf 0xD: the XCR0 bits the CPU supports).
    let supported = u64::from(unsafe { __cpuid_count(0xd, 0) }.eax);
    // x87, SSE, AVX; then opmask, ZMM_Hi256, Hi16_ZMM only as a set.
    let mut want = 0b111 & supported;
    if supported & 0b1110_0000 == 0b1110_0000 {
        want |= 0b1110_0000;
    }
    let cr4: u64;
    // SAFETY: reads CR4 (the application runs at ring 0 under UEFI).
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags)) };
    let xcr0_lo: u32;
    let xcr0_hi: u32;
    // SAFETY: sets CR4.OSXSAVE (bit 18), which the CPU supports (CPUID.1:ECX.XSAVE), then reads
    // XCR0 (valid once OSXSAVE is set) and writes it with bits the CPU reports as supported.
    unsafe {
        asm!("mov cr4, {}", in(reg) cr4 | 1 << 18, options(nostack, preserves_flags));
        asm!("xgetbv", in("ecx") 0u32, out("eax") xcr0_lo, out("edx") xcr0_hi, options(nomem, nostack, preserves_flags));
    }
    let xcr0 = u64::from(xcr0_hi) << 32 | u64::from(xcr0_lo);
    let new = xcr0 | want;
    // SAFETY: `new` holds x87 (always set) and only bits CPUID leaf 0xD reports as supported,
    // with the AVX-512 bits as a complete set: a valid XCR0 value.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") new as u32, in("edx") (new >> 32) as u32, options(nostack, preserves_flags))
    };
    Some(AvxState { cr4, xcr0 })
}

/// Puts XCR0 and CR4 back as [`enable_avx_state`] found them.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub fn restore_avx_state(saved: AvxState) {
    // SAFETY: writes back the values read before (XCR0 first, while OSXSAVE is still set).
    unsafe {
        asm!("vzeroupper", "xsetbv", in("ecx") 0u32, in("eax") saved.xcr0 as u32, in("edx") (saved.xcr0 >> 32) as u32,
             options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) saved.cr4, options(nostack, preserves_flags));
    }
}
