//! Time from the ARM generic timer: the virtual counter CNTVCT_EL0 at CNTFRQ_EL0 Hz.

use core::arch::asm;

/// A point in time, in counter ticks.
#[derive(Clone, Copy)]
pub struct Instant(u64);

fn frequency() -> u64 {
    let f: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effect; EL1 (and EL0 here) may read it.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack, preserves_flags)) };
    f
}

impl Instant {
    pub fn now() -> Instant {
        let t: u64;
        // SAFETY: reading the counter has no side effect; the ISB keeps the read from being
        // hoisted above earlier instructions, so a measured span covers what it should.
        unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) t, options(nomem, nostack, preserves_flags)) };
        Instant(t)
    }

    /// Microseconds since `self`.
    pub fn elapsed_us(self) -> u64 {
        let ticks = Instant::now().0.wrapping_sub(self.0);
        let f = frequency().max(1);
        (u128::from(ticks) * 1_000_000 / u128::from(f)) as u64
    }
}

/// The counter frequency in Hz (QEMU `virt`: 62.5 MHz up to QEMU 8, 1 GHz for `-cpu max` later).
pub fn counter_hz() -> u64 {
    frequency()
}
