//! The `-o` options of LUKS volumes (`qluks create -f luks|luks2`): cipher, hash, iterations
//! or iteration time, in qemu-img's and cryptsetup's spellings.
use std::error::Error;

use qluks::crypto::{CipherSpec, HashAlg};

/// The `-o` choices.
pub struct LuksOptions {
    /// Cipher.
    pub cipher: CipherSpec,
    /// Hash.
    pub hash: HashAlg,
    /// Explicit keyslot iterations, or None for `iter_time_ms`.
    pub iterations: Option<u32>,
    /// Target PBKDF2 time.
    pub iter_time_ms: u32,
}

/// Parses `-o` options for LUKS.
pub fn parse_options(options: Option<&str>) -> Result<LuksOptions, Box<dyn Error>> {
    let mut cipher = None;
    let (mut alg, mut mode, mut ivgen, mut ivgen_hash) = ("aes-256", "xts", "plain64", None);
    let mut hash = HashAlg::Sha256;
    let mut iterations = None;
    let mut iter_time_ms = 2000;
    for opt in options.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        let (k, v) = opt.split_once('=').ok_or_else(|| format!("option `{opt}` is not KEY=VALUE"))?;
        match k {
            "cipher" => cipher = Some(CipherSpec::parse_sized(v)?),
            "cipher-alg" => alg = v,
            "cipher-mode" => mode = v,
            "ivgen-alg" => ivgen = v,
            "ivgen-hash-alg" => ivgen_hash = Some(v),
            "hash" | "hash-alg" => hash = HashAlg::from_name(v)?,
            "iter-time" => iter_time_ms = v.parse().map_err(|_| format!("invalid iter-time `{v}`"))?,
            "iterations" => iterations = Some(v.parse().map_err(|_| format!("invalid iterations `{v}`"))?),
            "key-secret" => {}
            _ => return Err(format!("unknown option `{k}`").into()),
        }
    }
    let cipher = match cipher {
        Some(c) => c,
        None => {
            let ivgen = match (ivgen, ivgen_hash) {
                ("essiv", Some(h)) => format!("essiv:{h}"),
                ("essiv", None) => "essiv:sha256".to_string(),
                (iv, _) => iv.to_string(),
            };
            CipherSpec::parse_sized(&format!("{alg}-{mode}-{ivgen}"))?
        }
    };
    if iterations == Some(0) {
        return Err("iterations must be at least 1".into());
    }
    Ok(LuksOptions { cipher, hash, iterations, iter_time_ms })
}
