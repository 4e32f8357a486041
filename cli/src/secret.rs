//! Passphrases from the command line: a file (content used as is, like QEMU's `secret,file=`),
//! an environment variable, or a no-echo prompt when stdin is a terminal.
use std::error::Error;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use clap::Args;
use qluks::crypto::HashAlg;
use qluks::io::BlockIo;
use qluks::luks::luks1::{self, Luks1Header};
use qluks::luks::{KdfCost, KdfLimits};
use zeroize::{Zeroize, Zeroizing};

/// A passphrase, wiped from memory on drop.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// Where the passphrase of an existing keyslot comes from, and what unlocking may cost.
#[derive(Args, Clone, Debug, Default)]
pub struct SecretArgs {
    /// Read the passphrase from this file (every byte counts, a trailing newline too).
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_env")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the passphrase from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    #[command(flatten)]
    pub kdf: KdfLimitArgs,
    /// The passphrase an `--object secret` named (`--image-opts …key-secret=ID`,
    /// `-o encrypt.key-secret=ID`): used before the file, the variable or the prompt.
    #[arg(skip)]
    pub key: Option<KeySecret>,
}

/// Limits on the key derivation a header may ask for (checked before any work is done).
#[derive(Args, Clone, Debug, Default)]
pub struct KdfLimitArgs {
    /// Most PBKDF2 iterations per keyslot or digest (default: what this machine computes in
    /// about a minute, measured for the volume's hash).
    #[arg(long, value_name = "N")]
    pub max_kdf_iterations: Option<u32>,
    /// Most Argon2 memory per keyslot, e.g. 2G (default: half of physical memory, at most 4G).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub max_kdf_memory: Option<u64>,
    /// Most Argon2 passes (time cost) per keyslot (default: 64).
    #[arg(long, value_name = "N")]
    pub max_kdf_time: Option<u32>,
}

/// PBKDF2 claims at or below this many iterations are allowed without measuring: no machine
/// qluks runs on needs a minute for them (that would be under 5000 iterations per second).
const UNMEASURED_ITERATIONS: u32 = 300_000;
/// The time budget of the default PBKDF2 limit.
const PBKDF2_SECONDS: u64 = 60;
/// Upper bound of the default Argon2 memory limit (cryptsetup's maximum), in KiB.
const MAX_ARGON2_KIB: u64 = 4 << 20;

impl KdfLimitArgs {
    /// The limits for a volume whose PBKDF2 claims are `claims`: the user's values, or the
    /// defaults (PBKDF2: about a minute at the rate measured here for each claimed hash and
    /// output length; Argon2 memory: half of physical memory and at most 4 GiB; Argon2 time:
    /// the library's default).
    pub fn limits(&self, claims: &[Pbkdf2Claim]) -> KdfLimits {
        let pbkdf2_iterations = self.max_kdf_iterations.unwrap_or_else(|| {
            let mut limit = u32::MAX;
            // One measurement per hash, of its longest claimed output: more output blocks
            // mean more chains per iteration, so that rate is the lowest of the hash's claims
            // (a LUKS1 keyslot's 64 bytes and its 20-byte digest cost one measurement).
            let measured = measurements(claims);
            for &(hash, out_len) in &measured {
                limit = limit.min(iterations_per_minute(hash, out_len));
            }
            if measured.is_empty() {
                UNMEASURED_ITERATIONS
            } else {
                limit.max(UNMEASURED_ITERATIONS)
            }
        });
        let argon2_memory_kib = match self.max_kdf_memory {
            Some(bytes) => u32::try_from(bytes / 1024).unwrap_or(u32::MAX),
            None => (physical_memory_kib().map_or(MAX_ARGON2_KIB, |kib| kib / 2).min(MAX_ARGON2_KIB)) as u32,
        };
        KdfLimits {
            pbkdf2_iterations,
            argon2_time: self.max_kdf_time.unwrap_or(KdfLimits::DEFAULT.argon2_time),
            argon2_memory_kib,
        }
    }
}

impl KdfLimitArgs {
    /// [`KdfLimitArgs::limits`] for a qcow2 chain whose top layer claims `top`: its backing
    /// layers are unlocked later, with hashes not known yet, so the PBKDF2 limit is also
    /// measured for QEMU's default (SHA-256 deriving a 64-byte key) and is never the unmeasured
    /// floor.
    pub fn limits_for_chain(&self, top: &[Pbkdf2Claim]) -> KdfLimits {
        let mut claims = top.to_vec();
        claims.push(Pbkdf2Claim { hash: HashAlg::Sha256, iterations: u32::MAX, out_len: 64 });
        self.limits(&claims)
    }
}

/// One PBKDF2 derivation a header asks for: a keyslot's or a digest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pbkdf2Claim {
    /// PRF hash.
    pub hash: HashAlg,
    /// Iterations.
    pub iterations: u32,
    /// Bytes derived (more than one digest length runs several chains).
    pub out_len: usize,
}

/// The (hash, output length) pairs whose rate bounds the limit for `claims`: each hash above
/// the unmeasured floor once, with its longest output.
fn measurements(claims: &[Pbkdf2Claim]) -> Vec<(HashAlg, usize)> {
    let mut measured: Vec<(HashAlg, usize)> = Vec::new();
    for claim in claims.iter().filter(|c| c.iterations > UNMEASURED_ITERATIONS) {
        match measured.iter_mut().find(|(hash, _)| *hash == claim.hash) {
            Some((_, len)) => *len = (*len).max(claim.out_len),
            None => measured.push((claim.hash, claim.out_len)),
        }
    }
    measured
}

/// PBKDF2 iterations of `hash` deriving `out_len` bytes (as the keyslot or digest does) that
/// this thread computes in [`PBKDF2_SECONDS`], measured on its CPU clock for at least 20 ms.
fn iterations_per_minute(hash: HashAlg, out_len: usize) -> u32 {
    let mut clock = crate::cpu_time::calibration_clock();
    let mut out = vec![0u8; out_len.clamp(1, 1024)];
    let mut n = 1024u32;
    loop {
        let start = clock();
        if qluks::crypto::pbkdf2(hash, b"qluks kdf limit", b"calibration salt", n, &mut out).is_err() {
            return u32::MAX;
        }
        let elapsed = clock().saturating_sub(start);
        if elapsed >= 20_000_000 || n >= 1 << 30 {
            let per_minute = u64::from(n) * PBKDF2_SECONDS * 1_000_000_000 / elapsed.max(1);
            return u32::try_from(per_minute).unwrap_or(u32::MAX);
        }
        // Once a run lasts 1 ms, jump straight to about 25 ms (doubling all the way would
        // spend as long again on the shorter runs, at every unlock).
        n = if elapsed >= 1_000_000 {
            (u64::from(n) * 25_000_000 / elapsed).clamp(u64::from(n) * 2, 1 << 30) as u32
        } else {
            n * 2
        };
    }
}

/// Physical memory in KiB (`MemTotal` of /proc/meminfo).
fn physical_memory_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The PBKDF2 claims of the LUKS header in `file`: a LUKS1 or LUKS2 volume,
/// or the LUKS header a qcow2 image embeds. Empty when there is none (or it cannot be read:
/// the open reports that).
pub fn pbkdf2_claims(file: &mut File) -> Vec<Pbkdf2Claim> {
    let mut start = [0u8; 8];
    if BlockIo::size(file).unwrap_or(0) < 8 || BlockIo::read_at(file, 0, &mut start).is_err() {
        return Vec::new();
    }
    if start[..6] == qluks::luks::MAGIC {
        if u16::from_be_bytes([start[6], start[7]]) == 2 {
            return crate::luks2_memory::pbkdf2_claims(file).unwrap_or_default();
        }
        return luks1::Luks1Header::read(file, 0).map(|h| luks1_claims(&h)).unwrap_or_default();
    }
    if let Ok((header, extensions, _)) = qluks::qcow2::read_qcow2_header(file) {
        if header.crypt_method == qluks::qcow2::CryptMethod::Luks {
            if let Some(fde) = extensions.fde {
                return luks1::Luks1Header::read(file, fde.offset).map(|h| luks1_claims(&h)).unwrap_or_default();
            }
        }
    }
    Vec::new()
}

/// The PBKDF2 claims of a LUKS1 header: its active keyslots and the master-key digest.
pub fn luks1_claims(header: &Luks1Header) -> Vec<Pbkdf2Claim> {
    let claim = |iterations, out_len| Pbkdf2Claim { hash: header.hash, iterations, out_len };
    let slots = header.keyslots.iter().filter(|s| s.active).map(|s| claim(s.iterations, header.key_bytes as usize));
    slots.chain([claim(header.mk_iterations, luks1::DIGEST_LEN)]).collect()
}

/// How to override the limit that refused `e`, if a KDF limit did: appended to the message.
pub fn kdf_hint(e: &qluks::luks::LuksError) -> String {
    let Some(cost) = e.kdf_cost() else {
        return String::new();
    };
    match cost {
        KdfCost::Pbkdf2Iterations { iterations, .. } => format!(
            "; to allow it, pass --max-kdf-iterations {iterations} (the default limit is what this machine \
             computes in about {PBKDF2_SECONDS} s)"
        ),
        KdfCost::Argon2Memory { kib, .. } => format!(
            "; to allow it, pass --max-kdf-memory {kib}k (the default limit is half of physical memory, at most 4G)"
        ),
        KdfCost::Argon2Time { time, .. } => format!("; to allow it, pass --max-kdf-time {time}"),
    }
}

/// Where a new passphrase comes from (`luks add-key`, `luks change-key`).
#[derive(Args, Clone, Debug, Default)]
pub struct NewSecretArgs {
    /// Read the new passphrase from this file (used as is).
    #[arg(long, value_name = "FILE", conflicts_with = "new_passphrase_env")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Read the new passphrase from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub new_passphrase_env: Option<String>,
}

impl SecretArgs {
    /// Whether a non-interactive source was given.
    pub fn is_given(&self) -> bool {
        self.passphrase_file.is_some() || self.passphrase_env.is_some() || self.key.is_some()
    }

    /// The passphrase, prompting with `prompt` when no file or variable was given.
    pub fn get(&self, prompt: &str) -> Result<Passphrase, Box<dyn Error>> {
        if let Some(key) = &self.key {
            return key.get();
        }
        get(self.passphrase_file.as_ref(), self.passphrase_env.as_deref(), prompt)
    }
}

impl NewSecretArgs {
    /// The new passphrase (prompted twice on a terminal).
    pub fn get(&self) -> Result<Passphrase, Box<dyn Error>> {
        if self.new_passphrase_file.is_none() && self.new_passphrase_env.is_none() {
            let first = prompt("New passphrase: ")?;
            let again = prompt("Repeat new passphrase: ")?;
            if first != again {
                return Err("the passphrases differ".into());
            }
            return Ok(first);
        }
        get(self.new_passphrase_file.as_ref(), self.new_passphrase_env.as_deref(), "New passphrase: ")
    }
}

fn get(file: Option<&PathBuf>, env: Option<&str>, prompt_text: &str) -> Result<Passphrase, Box<dyn Error>> {
    if let Some(path) = file {
        let bytes = std::fs::read(path).map_err(|e| format!("passphrase file {}: {e}", path.display()))?;
        return Ok(Zeroizing::new(bytes));
    }
    if let Some(var) = env {
        let value = std::env::var_os(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
        return Ok(Zeroizing::new(value.into_encoded_bytes()));
    }
    prompt(prompt_text)
}

/// Longest passphrase the prompt accepts (cryptsetup's limit for interactive entry is 512).
const MAX_PROMPT_LEN: usize = 4096;

/// Reads one line from the terminal with echo off (the line end is not part of the passphrase).
///
/// The bytes go straight from the terminal (`/dev/stdin`, no `std` buffer in between) into one
/// buffer allocated once at [`MAX_PROMPT_LEN`] and never grown, so that no copy of the
/// passphrase is left behind unwiped; a longer line is refused.
fn prompt(text: &str) -> Result<Passphrase, Box<dyn Error>> {
    if !std::io::stdin().is_terminal() {
        // `Passphrase for disk.qcow2: ` → `Passphrase for disk.qcow2 is needed: …`.
        let what = text.trim_end().trim_end_matches(':');
        return Err(format!("{what} is needed: use --passphrase-file, --passphrase-env or a terminal").into());
    }
    eprint!("{text}");
    std::io::stderr().flush()?;
    let stty = |arg: &str| Command::new("stty").arg(arg).stdin(Stdio::inherit()).status();
    let echo_off = stty("-echo").map(|s| s.success()).unwrap_or(false);
    let read = File::open("/dev/stdin").and_then(|mut tty| read_line_into(&mut tty));
    if echo_off {
        let _ = stty("echo");
    }
    eprintln!();
    Ok(read?)
}

/// Reads up to a line end from `input`, a byte at a time, into a fixed-capacity wiped buffer.
fn read_line_into(input: &mut impl Read) -> std::io::Result<Passphrase> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_PROMPT_LEN));
    let mut byte = [0u8; 1];
    let result = loop {
        match input.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) if line.len() == MAX_PROMPT_LEN => {
                break Err(std::io::Error::other(format!("passphrase longer than {MAX_PROMPT_LEN} bytes")))
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    byte.zeroize();
    result?;
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// A passphrase named by the id of an `--object secret`: its value, or the id no object has
/// (reported when the passphrase is needed, as qemu-img does). Never printed.
#[derive(Clone)]
pub enum KeySecret {
    /// The secret's value.
    Found(Passphrase),
    /// No `--object secret` has this id.
    Missing(String),
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySecret::Found(_) => f.write_str("KeySecret(<redacted>)"),
            KeySecret::Missing(id) => write!(f, "KeySecret(missing {id})"),
        }
    }
}

impl KeySecret {
    /// The value, or the error for an unknown id.
    pub fn get(&self) -> Result<Passphrase, Box<dyn Error>> {
        match self {
            KeySecret::Found(p) => Ok(p.clone()),
            KeySecret::Missing(id) => Err(format!("No secret with id '{id}' (no --object secret,id={id})").into()),
        }
    }
}

/// qemu-img's `--object` option (repeatable): `secret,id=ID,data=TEXT|file=PATH
/// [,format=raw|base64]`.
#[derive(Args, Clone, Default)]
pub struct ObjectArgs {
    /// A secret as qemu-img takes it: `secret,id=ID,data=TEXT` or `secret,id=ID,file=PATH`,
    /// optionally `,format=base64` (repeatable; named by key-secret options).
    #[arg(long = "object", value_name = "OBJECT")]
    pub objects: Vec<String>,
}

impl Drop for ObjectArgs {
    /// The option texts hold `data=` secrets: wiped with the arguments.
    fn drop(&mut self) {
        for o in &mut self.objects {
            o.zeroize();
        }
    }
}

impl std::fmt::Debug for ObjectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectArgs({} objects)", self.objects.len())
    }
}

/// The `--object secret` values by id (wiped on drop).
#[derive(Default)]
pub struct Secrets(Vec<(String, Passphrase)>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Secrets(ids {ids:?}, values redacted)")
    }
}

impl Secrets {
    /// The secret with this id.
    pub fn get(&self, id: &str) -> Option<&Passphrase> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, p)| p)
    }

    /// The secret with this id as a [`KeySecret`].
    pub fn key(&self, id: &str) -> KeySecret {
        match self.get(id) {
            Some(p) => KeySecret::Found(p.clone()),
            None => KeySecret::Missing(id.to_string()),
        }
    }

    /// The secret with this id, or qemu-img's error for an unknown one.
    pub fn lookup(&self, id: &str) -> Result<Passphrase, Box<dyn Error>> {
        self.key(id).get()
    }
}

impl ObjectArgs {
    /// Parses every `--object`. Errors name the property, never a secret's value.
    pub fn secrets(&self) -> Result<Secrets, Box<dyn Error>> {
        let mut out = Secrets::default();
        for o in &self.objects {
            let (id, value) = parse_object(o).map_err(|e| format!("--object: {e}"))?;
            if out.get(&id).is_some() {
                return Err(format!("--object: duplicate secret id '{id}'").into());
            }
            out.0.push((id, value));
        }
        Ok(out)
    }
}

/// One `--object secret,…`: its id and value.
fn parse_object(text: &str) -> Result<(String, Passphrase), String> {
    // Split like QemuOpts (`,,` is a literal comma) without copies left unwiped: the pieces
    // that may hold secret bytes live in wiped buffers.
    let mut parts: Vec<Zeroizing<String>> = Vec::new();
    let mut cur = Zeroizing::new(String::new());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' && chars.peek() != Some(&',') {
            parts.push(std::mem::replace(&mut cur, Zeroizing::new(String::new())));
        } else {
            if c == ',' {
                chars.next();
            }
            cur.push(c);
        }
    }
    parts.push(cur);
    let mut parts = parts.into_iter();
    let first = parts.next().unwrap_or_default();
    let kind = first.strip_prefix("qom-type=").unwrap_or(&first);
    if kind != "secret" {
        return Err(format!("object type '{kind}' is not supported (qluks takes secret objects only)"));
    }
    let (mut id, mut data, mut file, mut base64) = (None, None, None, false);
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            return Err(format!("property '{}' has no value", p.as_str()));
        };
        match k {
            "id" => id = Some(v.to_string()),
            "data" => data = Some(Zeroizing::new(v.as_bytes().to_vec())),
            "file" => file = Some(PathBuf::from(v)),
            "format" => match v {
                "raw" => base64 = false,
                "base64" => base64 = true,
                _ => return Err(format!("secret property 'format' does not accept value '{v}' (raw, base64)")),
            },
            "keyid" | "iv" => return Err(format!("secret property '{k}' (encrypted secrets) is not supported")),
            _ => return Err(format!("secret property '{k}' is unexpected (id, data, file, format)")),
        }
    }
    let id = id.ok_or("secret: property 'id' is missing")?;
    let raw = match (data, file) {
        (Some(_), Some(_)) => return Err(format!("secret '{id}': 'file' and 'data' are mutually exclusive")),
        (None, None) => return Err(format!("secret '{id}': either 'file' or 'data' must be provided")),
        (Some(d), None) => d,
        (None, Some(f)) => Zeroizing::new(
            std::fs::read(&f).map_err(|e| format!("secret '{id}': unable to read {}: {e}", f.display()))?,
        ),
    };
    let value = if base64 {
        base64_decode(&raw).ok_or_else(|| format!("secret '{id}': base64 data contains invalid characters"))?
    } else {
        raw
    };
    Ok((id, value))
}

/// Decodes standard base64 (padding optional; nothing else allowed, as qemu's `qbase64_decode`)
/// into a wiped buffer.
pub fn base64_decode(text: &[u8]) -> Option<Passphrase> {
    let body = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"=")).unwrap_or(text);
    if body.len() % 4 == 1 || (body.len() != text.len() && !text.len().is_multiple_of(4)) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() / 4 * 3 + 2));
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    acc.zeroize();
    Some(out)
}

/// The id in a `-o` option string for `names` (e.g. `encrypt.key-secret`), if any.
pub fn key_secret_option(options: Option<&str>, names: &[&str]) -> Option<String> {
    let pairs = crate::image_opts::split_opts(options?).ok()?;
    pairs.into_iter().rev().find(|(k, _)| names.contains(&k.as_str())).map(|(_, v)| v)
}

/// [`kdf_hint`] for an error opening a qcow2 chain (a layer's embedded LUKS header).
pub fn chain_hint<E, R>(e: &qluks::qcow2::backing::ChainError<E, R>) -> String {
    match e {
        qluks::qcow2::backing::ChainError::Layer { error: qluks::qcow2::Error::Luks(e), .. } => kdf_hint(e),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_limits_are_measured_even_when_the_top_layer_claims_little() {
        let args = KdfLimitArgs::default();
        let cheap = [Pbkdf2Claim { hash: HashAlg::Sha256, iterations: 1000, out_len: 64 }];
        assert_eq!(args.limits(&cheap).pbkdf2_iterations, UNMEASURED_ITERATIONS);
        // Backing layers may claim more than the floor: a minute's worth is measured.
        assert!(args.limits_for_chain(&cheap).pbkdf2_iterations > UNMEASURED_ITERATIONS);
        let given = KdfLimitArgs { max_kdf_iterations: Some(5), ..Default::default() };
        assert_eq!(given.limits_for_chain(&cheap).pbkdf2_iterations, 5);
    }

    #[test]
    fn each_hash_is_measured_once_at_its_longest_output() {
        let claim = |hash, iterations, out_len| Pbkdf2Claim { hash, iterations, out_len };
        let luks1 = [claim(HashAlg::Sha256, 2_000_000, 20), claim(HashAlg::Sha256, 8_000_000, 64)];
        assert_eq!(measurements(&luks1), [(HashAlg::Sha256, 64)]);
        let mixed = [
            claim(HashAlg::Sha1, 2_000_000, 32),
            claim(HashAlg::Sha256, 1000, 64), // under the floor: not measured
            claim(HashAlg::Sha256, 2_000_000, 20),
            claim(HashAlg::Sha1, 2_000_000, 20),
        ];
        assert_eq!(measurements(&mixed), [(HashAlg::Sha1, 32), (HashAlg::Sha256, 20)]);
    }

    #[test]
    fn objects_parse_like_qemu() {
        let args = |v: &[&str]| ObjectArgs { objects: v.iter().map(|s| s.to_string()).collect() };
        let s = args(&["secret,id=a,data=x,,y", "secret,id=b,data=YWJj,format=base64", "qom-type=secret,id=c,data=z"])
            .secrets()
            .unwrap();
        assert_eq!(&s.get("a").unwrap()[..], b"x,y");
        assert_eq!(&s.get("b").unwrap()[..], b"abc");
        assert_eq!(&s.get("c").unwrap()[..], b"z");
        assert!(s.lookup("d").unwrap_err().to_string().contains("'d'"));
        for bad in [
            "foo,id=a",
            "secret,data=x",
            "secret,id=a",
            "secret,id=a,data=x,file=/f",
            "secret,id=a,data=x,format=hex",
            "secret,id=a,data=@@,format=base64",
            "secret,id=a,data=hunter2,bogus=1",
        ] {
            let e = args(&[bad]).secrets().unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(args(&["secret,id=a,data=x", "secret,id=a,data=y"]).secrets().is_err());
    }

    #[test]
    fn base64_matches_the_alphabet() {
        assert_eq!(&base64_decode(b"").unwrap()[..], b"");
        assert_eq!(&base64_decode(b"YQ==").unwrap()[..], b"a");
        assert_eq!(&base64_decode(b"YWI=").unwrap()[..], b"ab");
        assert_eq!(&base64_decode(b"YWJj").unwrap()[..], b"abc");
        assert_eq!(&base64_decode(b"YWJjZA").unwrap()[..], b"abcd");
        assert_eq!(&base64_decode(b"+/8=").unwrap()[..], [0xfb, 0xff]);
        assert!(base64_decode(b"YWJj\n").is_none());
        assert!(base64_decode(b"Y").is_none());
    }

    #[test]
    fn prompt_lines_fill_one_buffer_that_never_grows() {
        let mut input: &[u8] = b"secret\r\nnext line";
        let line = read_line_into(&mut input).unwrap();
        assert_eq!(&line[..], b"secret");
        assert_eq!(line.capacity(), MAX_PROMPT_LEN);
        assert_eq!(input, b"next line", "nothing past the line end is consumed");
        let long = vec![b'a'; MAX_PROMPT_LEN + 1];
        assert!(read_line_into(&mut &long[..]).is_err());
        let exact = vec![b'a'; MAX_PROMPT_LEN];
        assert_eq!(read_line_into(&mut &exact[..]).unwrap().capacity(), MAX_PROMPT_LEN);
    }
}
