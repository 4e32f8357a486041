//! Backend identity, detection and choice.

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

    /// Whether this backend can run here.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Soft => true,
            // Temporary: only the soft path exists until the hal issue lands its backends.
            _ => false,
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
