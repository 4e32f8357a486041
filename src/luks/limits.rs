//! Caller limits on what unlocking may cost: a header names its own KDF costs (PBKDF2
//! iterations, Argon2 passes and memory), so a hostile or merely old header could make an unlock
//! take hours or ask for gigabytes. Every keyslot and digest claim is checked against
//! [`KdfLimits`] before any KDF work is done.

use core::fmt;

use super::luks2::Kdf;

/// The most work and memory one unlock may spend per keyslot (and per digest check).
///
/// [`KdfLimits::default`] (= [`KdfLimits::DEFAULT`]) admits what cryptsetup and QEMU create
/// with their default settings on current machines and refuses the absurd:
/// - PBKDF2: at most [`DEFAULT_PBKDF2_ITERATIONS`] (2^24, about 16.8 million) iterations per
///   keyslot, LUKS1 master-key digest or LUKS2 digest; cryptsetup's 2 s `--iter-time` gives a
///   few million on a fast CPU;
/// - Argon2: at most [`DEFAULT_ARGON2_TIME`] passes and [`DEFAULT_ARGON2_MEMORY_KIB`] KiB
///   (1 GiB, cryptsetup's default maximum for new keyslots).
///
/// [`KdfLimits::unlimited`] lifts every limit (only the format's own bounds remain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    /// Most PBKDF2 iterations of one keyslot, LUKS1 master-key digest or LUKS2 digest.
    pub pbkdf2_iterations: u32,
    /// Most Argon2 passes (`time`) of one keyslot.
    pub argon2_time: u32,
    /// Most Argon2 memory of one keyslot, in KiB.
    pub argon2_memory_kib: u32,
}

/// [`KdfLimits::DEFAULT`] PBKDF2 iterations (2^24).
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 1 << 24;
/// [`KdfLimits::DEFAULT`] Argon2 passes.
pub const DEFAULT_ARGON2_TIME: u32 = 64;
/// [`KdfLimits::DEFAULT`] Argon2 memory in KiB (1 GiB).
pub const DEFAULT_ARGON2_MEMORY_KIB: u32 = 1 << 20;

impl KdfLimits {
    /// The library default (see the type's documentation).
    pub const DEFAULT: KdfLimits = KdfLimits {
        pbkdf2_iterations: DEFAULT_PBKDF2_ITERATIONS,
        argon2_time: DEFAULT_ARGON2_TIME,
        argon2_memory_kib: DEFAULT_ARGON2_MEMORY_KIB,
    };

    /// No limits: every claim the format allows is paid.
    pub const fn unlimited() -> KdfLimits {
        KdfLimits { pbkdf2_iterations: u32::MAX, argon2_time: u32::MAX, argon2_memory_kib: u32::MAX }
    }

    /// Whether `iterations` of PBKDF2 are allowed; the refused claim otherwise.
    pub fn check_pbkdf2(&self, iterations: u32) -> Result<(), KdfCost> {
        if iterations > self.pbkdf2_iterations {
            return Err(KdfCost::Pbkdf2Iterations { iterations, limit: self.pbkdf2_iterations });
        }
        Ok(())
    }

    /// Whether a LUKS2 keyslot KDF is allowed; the first refused claim otherwise.
    pub fn check(&self, kdf: &Kdf) -> Result<(), KdfCost> {
        match *kdf {
            Kdf::Pbkdf2 { iterations, .. } => self.check_pbkdf2(iterations),
            Kdf::Argon2 { time, memory_kib, .. } => {
                if memory_kib > self.argon2_memory_kib {
                    return Err(KdfCost::Argon2Memory { kib: memory_kib, limit_kib: self.argon2_memory_kib });
                }
                if time > self.argon2_time {
                    return Err(KdfCost::Argon2Time { time, limit: self.argon2_time });
                }
                Ok(())
            }
        }
    }
}

impl Default for KdfLimits {
    fn default() -> Self {
        KdfLimits::DEFAULT
    }
}

/// A KDF claim over the caller's limit: what the header asks for and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfCost {
    /// PBKDF2 iterations.
    Pbkdf2Iterations {
        /// Iterations the header asks for.
        iterations: u32,
        /// The limit.
        limit: u32,
    },
    /// Argon2 passes.
    Argon2Time {
        /// Passes the keyslot asks for.
        time: u32,
        /// The limit.
        limit: u32,
    },
    /// Argon2 memory.
    Argon2Memory {
        /// KiB the keyslot asks for.
        kib: u32,
        /// The limit in KiB.
        limit_kib: u32,
    },
}

impl fmt::Display for KdfCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KdfCost::Pbkdf2Iterations { iterations, limit } => {
                write!(f, "PBKDF2 with {iterations} iterations (limit {limit})")
            }
            KdfCost::Argon2Time { time, limit } => write!(f, "Argon2 with time cost {time} (limit {limit})"),
            KdfCost::Argon2Memory { kib, limit_kib } => {
                write!(f, "Argon2 with {kib} KiB of memory (limit {limit_kib} KiB)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_compare_inclusively() {
        let l = KdfLimits { pbkdf2_iterations: 1000, argon2_time: 4, argon2_memory_kib: 64 };
        assert_eq!(l.check_pbkdf2(1000), Ok(()));
        assert_eq!(l.check_pbkdf2(1001), Err(KdfCost::Pbkdf2Iterations { iterations: 1001, limit: 1000 }));
        assert_eq!(KdfLimits::unlimited().check_pbkdf2(u32::MAX), Ok(()));
        assert_eq!(KdfLimits::default(), KdfLimits::DEFAULT);
    }
}
