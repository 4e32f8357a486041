//! What this CPU is and offers, from its system registers (readable at EL1 on bare metal,
//! where no OS provides HWCAPs).

use core::arch::asm;

/// Crypto extensions from ID_AA64ISAR0_EL1.
pub struct Features {
    /// FEAT_AES: AESE/AESD/AESMC/AESIMC.
    pub aes: bool,
    /// FEAT_PMULL: 64x64 carry-less multiply.
    pub pmull: bool,
    /// FEAT_SHA256: SHA256H/SHA256H2/SHA256SU0/SHA256SU1.
    pub sha256: bool,
}

impl Features {
    pub fn read() -> Features {
        let isar0: u64;
        // SAFETY: ID registers are read-only and have no side effects; EL1 may read them.
        unsafe { asm!("mrs {}, id_aa64isar0_el1", out(reg) isar0, options(nomem, nostack, preserves_flags)) };
        let aes = (isar0 >> 4) & 0xf;
        let sha2 = (isar0 >> 12) & 0xf;
        Features { aes: aes >= 1, pmull: aes >= 2, sha256: sha2 >= 1 }
    }
}

/// The exception level the program runs at.
pub fn current_el() -> u64 {
    let el: u64;
    // SAFETY: CurrentEL is readable at EL1 and above without side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack, preserves_flags)) };
    (el >> 2) & 3
}

/// Bytes from the start of the image to the end of its stacks (code, data, bss, stacks).
pub fn image_size() -> usize {
    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    // Only the addresses of the linker-script symbols are taken, never their contents.
    core::ptr::addr_of!(__image_end) as usize - core::ptr::addr_of!(__image_start) as usize
}
