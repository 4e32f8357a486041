//! The hash functions LUKS names in its headers (`hash_spec`, PBKDF2 PRFs, ESSIV, AF diffusion).

use super::{Error, Name};
use digest::Digest;

/// A hash algorithm by its LUKS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    /// `sha1`
    Sha1,
    /// `sha224`
    Sha224,
    /// `sha256`
    Sha256,
    /// `sha384`
    Sha384,
    /// `sha512`
    Sha512,
    /// `ripemd160`
    Ripemd160,
}

/// Runs `$body` with `$d` bound to the RustCrypto type of `$alg`.
macro_rules! with_hash {
    ($alg:expr, $d:ident => $body:expr) => {
        match $alg {
            $crate::crypto::HashAlg::Sha1 => {
                type $d = sha1::Sha1;
                $body
            }
            $crate::crypto::HashAlg::Sha224 => {
                type $d = sha2::Sha224;
                $body
            }
            $crate::crypto::HashAlg::Sha256 => {
                type $d = sha2::Sha256;
                $body
            }
            $crate::crypto::HashAlg::Sha384 => {
                type $d = sha2::Sha384;
                $body
            }
            $crate::crypto::HashAlg::Sha512 => {
                type $d = sha2::Sha512;
                $body
            }
            $crate::crypto::HashAlg::Ripemd160 => {
                type $d = ripemd::Ripemd160;
                $body
            }
        }
    };
}
#[cfg(test)]
pub(crate) use with_hash;

impl HashAlg {
    /// All algorithms, in header-name order.
    pub const ALL: [HashAlg; 6] =
        [HashAlg::Sha1, HashAlg::Sha224, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512, HashAlg::Ripemd160];

    /// Parses a LUKS hash name (`sha256`; ASCII case is ignored).
    pub fn from_name(name: &str) -> Result<HashAlg, Error> {
        HashAlg::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .ok_or(Error::UnsupportedHash { name: Name::new(name.as_bytes()) })
    }

    /// The LUKS name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha224 => "sha224",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Ripemd160 => "ripemd160",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 | HashAlg::Ripemd160 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hashes the concatenation of `parts` into `out[..digest_len]`; returns the digest length.
    pub fn digest_into(self, parts: &[&[u8]], out: &mut [u8; 64]) -> usize {
        with_hash!(self, D => {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            let d = h.finalize();
            out[..d.len()].copy_from_slice(&d);
            d.len()
        })
    }
}

impl core::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lengths_match_the_digests() {
        for h in HashAlg::ALL {
            assert_eq!(HashAlg::from_name(h.name()), Ok(h));
            let mut out = [0u8; 64];
            assert_eq!(h.digest_into(&[b"abc"], &mut out), h.digest_len());
        }
        assert_eq!(HashAlg::from_name("SHA256"), Ok(HashAlg::Sha256));
    }

    #[test]
    fn unknown_hash_is_refused_by_name() {
        let e = HashAlg::from_name("md5").unwrap_err();
        assert_eq!(e, Error::UnsupportedHash { name: Name::new(b"md5") });
        assert!(std::format!("{e}").contains("md5"));
    }

    #[test]
    fn sha256_of_abc_is_the_fips_vector() {
        let mut out = [0u8; 64];
        HashAlg::Sha256.digest_into(&[b"a", b"bc"], &mut out);
        assert_eq!(out[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
