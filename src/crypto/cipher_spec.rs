//! The typed form of a LUKS cipher specification (`aes` + `xts-plain64` + key bytes).

use super::{Error, HashAlg, Name};

/// IV (tweak) generator of XTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtsIv {
    /// Sector number truncated to 32 bits (LE32).
    Plain,
    /// Sector number as LE64.
    Plain64,
}

/// IV generator of CBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CbcIv {
    /// Sector number truncated to 32 bits (LE32).
    Plain,
    /// Sector number as LE64.
    Plain64,
    /// E_{H(volume key)}(LE64 sector); the hash digest is the ESSIV AES key.
    Essiv(HashAlg),
}

/// Block-cipher mode with its IV generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherMode {
    /// XTS (two AES keys of half the key size each).
    Xts(XtsIv),
    /// CBC per sector.
    Cbc(CbcIv),
    /// ECB (no IV).
    Ecb,
}

/// A complete, supported cipher specification: AES in `mode` with a `key_bytes`-byte key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSpec {
    /// Mode and IV generator.
    pub mode: CipherMode,
    /// Volume key size in bytes (both XTS halves together).
    pub key_bytes: usize,
}

/// Ciphers that LUKS volumes use and qluks does not implement (refused by name).
#[cfg(test)]
const KNOWN_UNSUPPORTED: [&str; 9] =
    ["serpent", "twofish", "cast5", "cast6", "sm4", "camellia", "blowfish", "des3_ede", "des"];

impl CipherSpec {
    /// QEMU's and cryptsetup's default for LUKS1: aes-256-xts-plain64.
    pub const DEFAULT: CipherSpec = CipherSpec { mode: CipherMode::Xts(XtsIv::Plain64), key_bytes: 64 };

    /// Parses LUKS1's separate `cipher_name` and `cipher_mode` fields with the header's key size.
    pub fn parse(cipher_name: &str, cipher_mode: &str, key_bytes: usize) -> Result<CipherSpec, Error> {
        if !cipher_name.eq_ignore_ascii_case("aes") {
            return Err(Error::UnsupportedCipher { name: Name::new(cipher_name.as_bytes()) });
        }
        let bad_mode = || Error::UnsupportedMode { mode: Name::new(cipher_mode.as_bytes()) };
        let (mode, ivgen) = match cipher_mode.split_once('-') {
            Some((m, iv)) => (m, Some(iv)),
            None => (cipher_mode, None),
        };
        let mode = match (mode, ivgen) {
            ("xts", Some("plain64")) => CipherMode::Xts(XtsIv::Plain64),
            ("xts", Some("plain")) => CipherMode::Xts(XtsIv::Plain),
            ("cbc", Some("plain64")) => CipherMode::Cbc(CbcIv::Plain64),
            ("cbc", Some("plain")) => CipherMode::Cbc(CbcIv::Plain),
            ("cbc", Some(iv)) if iv.starts_with("essiv:") => {
                let hash = HashAlg::from_name(&iv["essiv:".len()..])?;
                // The digest becomes an AES key: only 16/24/32-byte digests can work.
                if !matches!(hash.digest_len(), 16 | 24 | 32) {
                    return Err(bad_mode());
                }
                CipherMode::Cbc(CbcIv::Essiv(hash))
            }
            // ECB has no IV; QEMU writes an ivgen name after it anyway.
            ("ecb", _) => CipherMode::Ecb,
            _ => return Err(bad_mode()),
        };
        CipherSpec::new(mode, key_bytes)
    }

    /// Parses LUKS2's combined form, `aes-xts-plain64`.
    pub fn parse_combined(encryption: &str, key_bytes: usize) -> Result<CipherSpec, Error> {
        match encryption.split_once('-') {
            Some((cipher, mode)) => CipherSpec::parse(cipher, mode, key_bytes),
            None => CipherSpec::parse(encryption, "", key_bytes),
        }
    }

    /// Parses the sized form users type, `aes-256-xts-plain64` or `aes-128-cbc-essiv:sha256`
    /// (the size is the AES key size; XTS doubles it).
    pub fn parse_sized(spec: &str) -> Result<CipherSpec, Error> {
        let bad = || Error::UnsupportedCipher { name: Name::new(spec.as_bytes()) };
        let (cipher, rest) = spec.split_once('-').ok_or_else(bad)?;
        let (bits, mode) = rest.split_once('-').ok_or_else(bad)?;
        let aes_bytes = match bits {
            "128" => 16,
            "192" => 24,
            "256" => 32,
            _ => return Err(bad()),
        };
        let key_bytes = if mode.starts_with("xts") { aes_bytes * 2 } else { aes_bytes };
        CipherSpec::parse(cipher, mode, key_bytes)
    }

    /// Checks that `key_bytes` fits `mode`.
    pub fn new(mode: CipherMode, key_bytes: usize) -> Result<CipherSpec, Error> {
        let ok = match mode {
            CipherMode::Xts(_) => matches!(key_bytes, 32 | 48 | 64),
            CipherMode::Cbc(_) | CipherMode::Ecb => matches!(key_bytes, 16 | 24 | 32),
        };
        if ok {
            Ok(CipherSpec { mode, key_bytes })
        } else {
            Err(Error::KeyLength { key_bytes })
        }
    }

    /// The LUKS1 `cipher_name`.
    pub fn cipher_name(&self) -> &'static str {
        "aes"
    }

    /// AES key size in bits (per XTS half).
    pub fn aes_bits(&self) -> usize {
        match self.mode {
            CipherMode::Xts(_) => self.key_bytes * 4,
            _ => self.key_bytes * 8,
        }
    }

    /// The LUKS1 `cipher_mode` (`xts-plain64`, `cbc-essiv:sha256`, ...).
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            CipherMode::Xts(XtsIv::Plain64) => "xts-plain64",
            CipherMode::Xts(XtsIv::Plain) => "xts-plain",
            CipherMode::Cbc(CbcIv::Plain64) => "cbc-plain64",
            CipherMode::Cbc(CbcIv::Plain) => "cbc-plain",
            CipherMode::Cbc(CbcIv::Essiv(h)) => match h {
                HashAlg::Sha1 => "cbc-essiv:sha1",
                HashAlg::Sha224 => "cbc-essiv:sha224",
                HashAlg::Sha256 => "cbc-essiv:sha256",
                HashAlg::Sha384 => "cbc-essiv:sha384",
                HashAlg::Sha512 => "cbc-essiv:sha512",
                HashAlg::Ripemd160 => "cbc-essiv:ripemd160",
            },
            CipherMode::Ecb => "ecb",
        }
    }
}

impl core::fmt::Display for CipherSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}-{}-{}", self.cipher_name(), self.aes_bits(), self.mode_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luks1_fields_parse_into_typed_specs() {
        assert_eq!(CipherSpec::parse("aes", "xts-plain64", 64), Ok(CipherSpec::DEFAULT));
        assert_eq!(
            CipherSpec::parse("aes", "cbc-essiv:sha256", 16).unwrap().mode,
            CipherMode::Cbc(CbcIv::Essiv(HashAlg::Sha256))
        );
        assert_eq!(CipherSpec::parse("aes", "cbc-plain", 32).unwrap().mode, CipherMode::Cbc(CbcIv::Plain));
        assert_eq!(CipherSpec::parse("aes", "xts-plain", 32).unwrap().mode, CipherMode::Xts(XtsIv::Plain));
        assert_eq!(CipherSpec::parse("aes", "ecb", 16).unwrap().mode, CipherMode::Ecb);
    }

    #[test]
    fn unimplemented_ciphers_are_refused_by_name() {
        for c in KNOWN_UNSUPPORTED {
            match CipherSpec::parse(c, "xts-plain64", 64) {
                Err(Error::UnsupportedCipher { name }) => assert_eq!(name.as_bytes(), c.as_bytes()),
                other => panic!("{c}: {other:?}"),
            }
        }
    }

    #[test]
    fn unsupported_modes_are_refused_by_name() {
        for m in ["ctr-plain64", "xts", "cbc-essiv:sha1", "cbc-benbi", "xts-essiv:sha256", ""] {
            assert!(
                matches!(
                    CipherSpec::parse("aes", m, 32),
                    Err(Error::UnsupportedMode { .. } | Error::UnsupportedHash { .. })
                ),
                "{m}"
            );
        }
    }

    #[test]
    fn key_bytes_must_fit_the_mode() {
        assert_eq!(CipherSpec::parse("aes", "xts-plain64", 16), Err(Error::KeyLength { key_bytes: 16 }));
        assert_eq!(CipherSpec::parse("aes", "cbc-plain64", 64), Err(Error::KeyLength { key_bytes: 64 }));
        assert_eq!(CipherSpec::parse("aes", "xts-plain64", 0), Err(Error::KeyLength { key_bytes: 0 }));
    }

    #[test]
    fn sized_and_combined_names_round_trip() {
        let s = CipherSpec::parse_sized("aes-128-xts-plain64").unwrap();
        assert_eq!(s.key_bytes, 32);
        assert_eq!(std::format!("{s}"), "aes-128-xts-plain64");
        let s = CipherSpec::parse_sized("aes-256-cbc-essiv:sha256").unwrap();
        assert_eq!((s.key_bytes, s.mode_name()), (32, "cbc-essiv:sha256"));
        assert_eq!(CipherSpec::parse_combined("aes-xts-plain64", 64), Ok(CipherSpec::DEFAULT));
    }
}
