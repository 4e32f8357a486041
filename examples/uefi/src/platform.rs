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
