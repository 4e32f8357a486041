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
            let mut measured: Vec<(HashAlg, usize)> = Vec::new();
            for claim in claims {
                let what = (claim.hash, claim.out_len);
                if claim.iterations > UNMEASURED_ITERATIONS && !measured.contains(&what) {
                    measured.push(what);
                    limit = limit.min(iterations_per_minute(claim.hash, claim.out_len));
                }
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
        n *= 2;
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
            return crate::luks2_info::pbkdf2_claims(file).unwrap_or_default();
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
        self.passphrase_file.is_some() || self.passphrase_env.is_some()
    }

    /// The passphrase, prompting with `prompt` when no file or variable was given.
    pub fn get(&self, prompt: &str) -> Result<Passphrase, Box<dyn Error>> {
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
        return Err("a passphrase is needed: use --passphrase-file, --passphrase-env or a terminal".into());
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
