//! PBKDF2 (RFC 8018) with HMAC over any [`HashAlg`], writing into the caller's buffer.

use super::hash::with_hash;
use super::{Error, HashAlg};

/// Derives `out.len()` bytes from `password` and `salt` with `iterations` rounds of HMAC-`hash`.
pub fn pbkdf2(hash: HashAlg, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) -> Result<(), Error> {
    if iterations == 0 {
        return Err(Error::ZeroIterations);
    }
    with_hash!(hash, D => ::pbkdf2::pbkdf2_hmac::<D>(password, salt, iterations, out));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> std::vec::Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn check(hash: HashAlg, p: &[u8], s: &[u8], c: u32, expect: &str) {
        let want = hex(expect);
        let mut out = std::vec![0u8; want.len()];
        pbkdf2(hash, p, s, c, &mut out).unwrap();
        assert_eq!(out, want, "{hash} c={c}");
    }

    #[test]
    fn rfc6070_sha1_vectors() {
        check(HashAlg::Sha1, b"password", b"salt", 1, "0c60c80f961f0e71f3a9b524af6012062fe037a6");
        check(HashAlg::Sha1, b"password", b"salt", 2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
        check(HashAlg::Sha1, b"password", b"salt", 4096, "4b007901b765489abead49d926f721d065a429c1");
        check(
            HashAlg::Sha1,
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038",
        );
        check(HashAlg::Sha1, b"pass\0word", b"sa\0lt", 4096, "56fa6aa75548099dcc37d7f03425e0c3");
    }

    #[test]
    fn rfc7914_sha256_vectors() {
        check(
            HashAlg::Sha256,
            b"passwd",
            b"salt",
            1,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
             49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
        );
        check(
            HashAlg::Sha256,
            b"Password",
            b"NaCl",
            80000,
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56\
             a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d",
        );
    }

    #[test]
    fn other_hashes_match_python_hashlib() {
        check(
            HashAlg::Ripemd160,
            b"password",
            b"salt",
            2,
            "768dcc27b7bfdef794a1ff9d935090fcf598555e66913180b9ce363c615e9ed9",
        );
        check(
            HashAlg::Sha512,
            b"password",
            b"salt",
            2,
            "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53cf76cab2868a39b9f7840edce4fef5a82\
             be67335c77a6068e04112754f27ccf4e473e311ad827b68945f4e2dddb204c78",
        );
    }

    #[test]
    fn zero_iterations_are_refused() {
        assert_eq!(pbkdf2(HashAlg::Sha256, b"p", b"s", 0, &mut [0u8; 32]), Err(Error::ZeroIterations));
    }
}
