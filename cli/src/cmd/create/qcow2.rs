//! `qluks create -f qcow2 [-o OPTIONS] [-b BACKING -F FMT] IMAGE [SIZE]`: a new qcow2 image
//! with QEMU's layout and qemu-img's option names (`-o help` lists them).
//!
//! The options are parsed into [`Qcow2Options`], which `convert -O qcow2 -o ...` can share:
//! [`parse_options`], then [`Qcow2Options::create`] on an opened file.
use std::error::Error;
use std::fs::File;
use std::path::Path;

use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::luks::luks1::Iterations;
use qluks::qcow2::compressed::Compression;
use qluks::qcow2::create::{self, Compat, CreateOptions, Encryption, Preallocation};

use crate::secret::SecretArgs;
use crate::units::parse_size;

/// What `-o help` prints.
pub const HELP: &str = "Supported qcow2 options (-o KEY=VALUE,...; a comma inside a value is written ,,):
  backing_file=<str>          File name of a base image (same as -b)
  backing_fmt=<str>           Image format of the base image (same as -F)
  cluster_size=<size>         qcow2 cluster size, 512 to 2M (default 64k)
  compat=<str>                Compatibility level (v2 [0.10] or v3 [1.1], default 1.1)
  compression_type=<str>      Compression method of compressed clusters (zlib, zstd)
  extended_l2=<bool (on/off)> Extended L2 tables (subclusters; clusters of 16k or more)
  lazy_refcounts=<bool (on/off)> Postpone refcount updates (compat 1.1)
  preallocation=<str>         Preallocation mode (off, metadata)
  refcount_bits=<num>         Width of a reference count entry in bits (1, 2, 4, ..., 64)
  size=<size>                 Virtual disk size (instead of SIZE)
  encrypt.format=<str>        Encrypt the image: luks, or aes (weak: needs encrypt.i-know-it-is-weak=on)
  encrypt.cipher-alg=<str>    Cipher algorithm (aes-128, aes-192, aes-256; default aes-256)
  encrypt.cipher-mode=<str>   Cipher mode (xts, cbc, ecb; default xts)
  encrypt.ivgen-alg=<str>     IV generator (plain, plain64, essiv; default plain64)
  encrypt.ivgen-hash-alg=<str> Hash of the essiv IV generator (default sha256)
  encrypt.hash-alg=<str>      PBKDF2 and AF hash (sha1, sha224, sha256, sha384, sha512, ripemd160; default sha256)
  encrypt.iter-time=<num>     Time to spend in PBKDF2 in milliseconds (default 2000)
  encrypt.iterations=<num>    Explicit PBKDF2 keyslot iterations instead of iter-time (qluks)
  encrypt.key-secret=<str>    The passphrase: the --object secret with this id (else --passphrase-file/-env or the prompt)
  encrypt.i-know-it-is-weak=<bool (on/off)> Allow encrypt.format=aes (qluks)
";

/// Encryption as named by `encrypt.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptFormat {
    /// LUKS in the image.
    Luks,
    /// Legacy AES (weak).
    Aes,
}

/// The parsed `-o` options of a qcow2 image.
#[derive(Debug, Clone)]
pub struct Qcow2Options {
    /// `cluster_size`.
    pub cluster_size: u64,
    /// `compat`.
    pub compat: Compat,
    /// `refcount_bits`.
    pub refcount_bits: u32,
    /// `extended_l2`.
    pub extended_l2: bool,
    /// `compression_type`.
    pub compression: Compression,
    /// `lazy_refcounts`.
    pub lazy_refcounts: bool,
    /// `preallocation`.
    pub preallocation: Preallocation,
    /// `backing_file`.
    pub backing_file: Option<String>,
    /// `backing_fmt`.
    pub backing_fmt: Option<String>,
    /// `size`.
    pub size: Option<u64>,
    /// `encrypt.format`.
    pub encrypt: Option<EncryptFormat>,
    /// Cipher from `encrypt.cipher-alg`, `-mode`, `ivgen-alg`, `ivgen-hash-alg`.
    pub cipher: CipherSpec,
    /// `encrypt.hash-alg`.
    pub hash: HashAlg,
    /// `encrypt.iter-time`.
    pub iter_time_ms: u32,
    /// `encrypt.iterations`.
    pub iterations: Option<u32>,
    /// `encrypt.i-know-it-is-weak`.
    pub i_know_aes_is_weak: bool,
    /// Whether `-o help` was asked for.
    pub help: bool,
}

/// Splits `a=b,c=d,,e` into `("a", "b")`, `("c", "d,e")` (qemu-img's `,,` escape).
fn split_options(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                out.last_mut().unwrap().push(',');
            } else {
                out.push(String::new());
            }
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out.retain(|o| !o.is_empty());
    out
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("option {key}: `{v}` is not on or off")),
    }
}

/// Parses qemu-img's qcow2 `-o` options.
pub fn parse_options(options: Option<&str>) -> Result<Qcow2Options, String> {
    let mut o = Qcow2Options {
        cluster_size: 64 << 10,
        compat: Compat::V1_1,
        refcount_bits: 16,
        extended_l2: false,
        compression: Compression::Deflate,
        lazy_refcounts: false,
        preallocation: Preallocation::Off,
        backing_file: None,
        backing_fmt: None,
        size: None,
        encrypt: None,
        cipher: CipherSpec::DEFAULT,
        hash: HashAlg::Sha256,
        iter_time_ms: 2000,
        iterations: None,
        i_know_aes_is_weak: false,
        help: false,
    };
    let (mut alg, mut mode, mut ivgen, mut ivgen_hash) = (None, None, None, None);
    for opt in split_options(options.unwrap_or("")) {
        if opt == "help" || opt == "?" {
            o.help = true;
            continue;
        }
        let (k, v) = opt.split_once('=').ok_or_else(|| format!("option `{opt}` is not KEY=VALUE"))?;
        let bad = |what: &str| format!("option {k}: invalid value `{v}` ({what})");
        let number = || v.parse::<u32>().map_err(|_| bad("a number"));
        match k {
            "cluster_size" => o.cluster_size = parse_size(v).map_err(|e| format!("option {k}: {e}"))?,
            "compat" => {
                o.compat = match v {
                    "0.10" | "v2" => Compat::V0_10,
                    "1.1" | "v3" => Compat::V1_1,
                    _ => return Err(bad("0.10, v2, 1.1 or v3")),
                }
            }
            "refcount_bits" => o.refcount_bits = number()?,
            "extended_l2" => o.extended_l2 = parse_bool(k, v)?,
            "compression_type" => {
                o.compression = match v {
                    "zlib" => Compression::Deflate,
                    "zstd" => Compression::Zstd,
                    _ => return Err(bad("zlib or zstd")),
                }
            }
            "lazy_refcounts" => o.lazy_refcounts = parse_bool(k, v)?,
            "preallocation" => {
                o.preallocation = match v {
                    "off" => Preallocation::Off,
                    "metadata" => Preallocation::Metadata,
                    _ => return Err(bad("off or metadata; falloc and full are not supported")),
                }
            }
            "backing_file" => o.backing_file = Some(v.to_string()),
            "backing_fmt" => o.backing_fmt = Some(v.to_string()),
            "size" => o.size = Some(parse_size(v).map_err(|e| format!("option {k}: {e}"))?),
            "encrypt.format" => {
                o.encrypt = match v {
                    "luks" => Some(EncryptFormat::Luks),
                    "aes" => Some(EncryptFormat::Aes),
                    _ => return Err(bad("luks or aes")),
                }
            }
            "encrypt.cipher-alg" => {
                if !matches!(v, "aes-128" | "aes-192" | "aes-256") {
                    return Err(bad("aes-128, aes-192 or aes-256"));
                }
                alg = Some(v.to_string());
            }
            "encrypt.cipher-mode" => mode = Some(v.to_string()),
            "encrypt.ivgen-alg" => ivgen = Some(v.to_string()),
            "encrypt.ivgen-hash-alg" => ivgen_hash = Some(v.to_string()),
            "encrypt.hash-alg" => o.hash = HashAlg::from_name(v).map_err(|e| format!("option {k}: {e}"))?,
            "encrypt.iter-time" => o.iter_time_ms = number()?,
            "encrypt.iterations" => {
                let n = number()?;
                if n == 0 {
                    return Err(bad("at least 1"));
                }
                o.iterations = Some(n);
            }
            "encrypt.key-secret" => {}
            "encrypt.i-know-it-is-weak" => o.i_know_aes_is_weak = parse_bool(k, v)?,
            "data_file" | "data_file_raw" | "encryption" | "extent_size_hint" | "nocow" => {
                return Err(format!("option {k} is not supported by qluks"))
            }
            _ => return Err(format!("unknown option `{k}` (-o help lists them)")),
        }
    }
    if alg.is_some() || mode.is_some() || ivgen.is_some() || ivgen_hash.is_some() {
        let mode = mode.as_deref().unwrap_or("xts");
        let ivgen = match (ivgen.as_deref().unwrap_or("plain64"), ivgen_hash.as_deref()) {
            ("essiv", h) => format!("essiv:{}", h.unwrap_or("sha256")),
            (_, Some(_)) => return Err("option encrypt.ivgen-hash-alg needs encrypt.ivgen-alg=essiv".into()),
            (iv, None) => iv.to_string(),
        };
        let spec = format!("{}-{mode}-{ivgen}", alg.as_deref().unwrap_or("aes-256"));
        o.cipher = CipherSpec::parse_sized(&spec)
            .map_err(|e| format!("options encrypt.cipher-alg/encrypt.cipher-mode/encrypt.ivgen-alg: {spec}: {e}"))?;
    }
    Ok(o)
}

impl Qcow2Options {
    /// Creates the image on `file` (empty) with virtual size `size`; `passphrase` is needed
    /// when `encrypt.format` is set. Checks everything before writing: see [`Self::check`].
    pub fn create(&self, file: &mut File, size: u64, passphrase: Option<&[u8]>) -> Result<(), Box<dyn Error>> {
        let mut clock = crate::cpu_time::calibration_clock();
        let mut options = self.core(size, passphrase, &mut clock)?;
        create::create(file, &mut options, &mut OsRng).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Checks the options for an image of `size` bytes without writing anything.
    pub fn check(&self, size: u64) -> Result<(), Box<dyn Error>> {
        let mut clock = || 0;
        let options = self.core(size, Some(b"-"), &mut clock)?;
        create::validate(&options).map_err(|e| match e {
            create::CreateError::LegacyAesWeak => format!("{e} with -o encrypt.i-know-it-is-weak=on"),
            e => e.to_string(),
        })?;
        Ok(())
    }

    fn core<'a>(
        &'a self,
        size: u64,
        passphrase: Option<&'a [u8]>,
        clock: &'a mut dyn FnMut() -> u64,
    ) -> Result<CreateOptions<'a>, String> {
        let mut o = CreateOptions::new(size);
        o.cluster_size = self.cluster_size;
        o.compat = self.compat;
        o.refcount_bits = self.refcount_bits;
        o.extended_l2 = self.extended_l2;
        o.compression = self.compression;
        o.lazy_refcounts = self.lazy_refcounts;
        o.preallocation = self.preallocation;
        o.backing_file = self.backing_file.as_deref().map(str::as_bytes);
        o.backing_format = self.backing_fmt.as_deref().map(str::as_bytes);
        let need = || passphrase.ok_or_else(|| "an encrypted image needs a passphrase".to_string());
        o.encryption = match self.encrypt {
            None => Encryption::None,
            Some(EncryptFormat::Aes) => {
                Encryption::LegacyAes { passphrase: need()?, i_know_it_is_weak: self.i_know_aes_is_weak }
            }
            Some(EncryptFormat::Luks) => Encryption::Luks {
                passphrase: need()?,
                cipher: self.cipher,
                hash: self.hash,
                iterations: match self.iterations {
                    Some(n) => Iterations::fixed(n),
                    None => Iterations::IterTime { ms: self.iter_time_ms, clock_ns: clock },
                },
            },
        };
        Ok(o)
    }
}

/// The virtual size of the backing file `name` (relative names resolve against the new
/// image's directory, as qemu-img does) in format `fmt`: qcow2/qcow header, LUKS payload,
/// or the raw file's length.
fn backing_size(image: &Path, name: &str, fmt: Option<&str>) -> Result<u64, Box<dyn Error>> {
    let path = match Path::new(name) {
        p if p.is_absolute() => p.to_path_buf(),
        p => image.parent().unwrap_or(Path::new(".")).join(p),
    };
    let err = |e: &dyn std::fmt::Display| format!("backing file {}: {e}", path.display());
    let mut file = File::open(&path).map_err(|e| err(&e))?;
    let len = file.metadata().map_err(|e| err(&e))?.len();
    // The header, whole (qcow2 headers are at most a cluster; 64 KiB holds any of QEMU's).
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 64 << 10), &mut head).map_err(|e| err(&e))?;
    let n = head.len();
    let probed = match &head[..n.min(6)] {
        [b'Q', b'F', b'I', 0xfb, ..] => "qcow2",
        b"LUKS\xba\xbe" => "luks",
        _ => "raw",
    };
    match fmt.unwrap_or(probed) {
        // qcow v1 (qemu's "qcow"): the size field is at the same offset.
        "qcow" | "qcow2" if probed == "qcow2" && head.get(4..8) == Some(&[0, 0, 0, 1][..]) => match head.get(24..32) {
            Some(b) => Ok(u64::from_be_bytes(b.try_into().unwrap())),
            None => Err(err(&format!("qcow header truncated: need 32 bytes, have {n}")).into()),
        },
        "qcow" | "qcow2" if probed == "qcow2" => {
            Ok(qluks::qcow2::header::Header::parse(&head).map_err(|e| err(&e))?.size)
        }
        "luks" if probed == "luks" => {
            let header = qluks::luks::luks1::Luks1Header::read(&mut file, 0).map_err(|e| err(&e))?;
            Ok(len.saturating_sub(header.payload_offset_bytes()))
        }
        "raw" => Ok(len),
        f if f == "qcow2" || f == "luks" || f == "qcow" => {
            Err(err(&format!("not a {f} image (it reads as {probed})")).into())
        }
        f => Err(err(&format!("cannot read the size of a `{f}` image (give SIZE)")).into()),
    }
}

/// Runs `qluks create -f qcow2`.
pub fn run(
    image: &Path,
    size: Option<&str>,
    options: Option<&str>,
    backing: Option<&str>,
    backing_fmt: Option<&str>,
    secret: &SecretArgs,
) -> Result<(), Box<dyn Error>> {
    let mut o = parse_options(options)?;
    if backing.is_some() {
        o.backing_file = backing.map(str::to_string);
    }
    if backing_fmt.is_some() {
        o.backing_fmt = backing_fmt.map(str::to_string);
    }
    let size = match (size.map(parse_size).transpose()?.or(o.size), &o.backing_file) {
        // qemu-img rounds the size up to whole sectors.
        (Some(size), _) => size.checked_next_multiple_of(512).ok_or("image size too large")?,
        (None, Some(b)) => backing_size(image, b, o.backing_fmt.as_deref())?,
        (None, None) => return Err("SIZE is required (or -b BACKING to take the backing file's size)".into()),
    };
    let name = image.display();
    o.check(size).map_err(|e| format!("{name}: {e}"))?;
    let passphrase = match o.encrypt {
        Some(_) => Some(secret.get("Passphrase for the new image: ")?),
        None => None,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(|e| format!("{name}: {e}"))?;
    let r = o.create(&mut file, size, passphrase.as_ref().map(|p| p.as_slice()));
    if let Err(e) = r {
        drop(file);
        let _ = std::fs::remove_file(image);
        return Err(format!("{name}: {e}").into());
    }
    file.sync_all().map_err(|e| format!("{name}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_qemu_img_names_and_escapes() {
        let o = parse_options(Some(
            "cluster_size=4k,compat=v2,refcount_bits=8,backing_file=a,,b.img,encrypt.format=luks,\
             encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,\
             encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha1,encrypt.iterations=1234",
        ))
        .unwrap();
        assert_eq!(o.cluster_size, 4096);
        assert_eq!(o.compat, Compat::V0_10);
        assert_eq!(o.refcount_bits, 8);
        assert_eq!(o.backing_file.as_deref(), Some("a,b.img"));
        assert_eq!(o.cipher, CipherSpec::parse_sized("aes-128-cbc-essiv:sha256").unwrap());
        assert_eq!(o.hash, HashAlg::Sha1);
        assert_eq!(o.iterations, Some(1234));
        for (bad, names) in [
            ("cluster_size=1Q", "cluster_size"),
            ("compat=2", "compat"),
            ("extended_l2=maybe", "extended_l2"),
            ("preallocation=full", "preallocation"),
            ("frobnicate=1", "frobnicate"),
            ("encrypt.cipher-alg=twofish-256", "encrypt.cipher-alg"),
            ("encrypt.cipher-mode=ctr", "encrypt.cipher-mode"),
            ("encrypt.iterations=0", "encrypt.iterations"),
        ] {
            let e = parse_options(Some(bad)).unwrap_err();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }
}
