//! `qluks create -f luks2 IMAGE SIZE`: a new LUKS2 volume with cryptsetup's layout (16 KiB
//! metadata copies, data at 16 MiB).
//!
//! `-o` takes the LUKS options of `-f luks` (`cipher=`, `hash=` for PBKDF2, `iter-time=MS`,
//! `iterations=N`) plus `pbkdf=argon2id|pbkdf2` (default argon2id), `time=N`, `memory=KiB`
//! (default 262144), `cpus=N` (default: up to 4, as the machine has) and `sector-size=512..4096`
//! (default 4096). The digest gets PBKDF2-SHA256 iterations for an eighth of `iter-time`.
use std::error::Error;
use std::fs::OpenOptions as FileOptions;
use std::path::Path;

use qluks::crypto::OsRng;
use qluks::luks::luks1::Iterations;
use qluks::luks::luks2::create::{format, CreateKdf, CreateParams, DEFAULT_DATA_OFFSET};

use crate::secret::SecretArgs;
use crate::units::parse_size;

/// Runs `qluks create -f luks2`.
pub fn run(image: &Path, size: &str, options: Option<&str>, secret: &SecretArgs) -> Result<(), Box<dyn Error>> {
    let mut argon2 = true;
    let mut time = 4u32;
    let mut memory_kib = 256 * 1024u32;
    let mut cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32);
    let mut sector_size = 4096u32;
    let mut shared = Vec::new();
    for opt in options.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        let (k, v) = opt.split_once('=').ok_or_else(|| format!("option `{opt}` is not KEY=VALUE"))?;
        let number = || v.parse::<u32>().map_err(|_| format!("invalid {k} `{v}`"));
        match k {
            "pbkdf" => {
                argon2 = match v {
                    "argon2id" => true,
                    "pbkdf2" => false,
                    _ => return Err(format!("pbkdf `{v}` is not supported (argon2id, pbkdf2)").into()),
                }
            }
            "time" => time = number()?,
            "memory" => memory_kib = number()?,
            "cpus" => cpus = number()?,
            "sector-size" => sector_size = number()?,
            _ => shared.push(opt),
        }
    }
    let opts = super::luks_options::parse_options(Some(&shared.join(",")))?;
    let size = parse_size(size)?.next_multiple_of(u64::from(sector_size.max(512)));
    let passphrase = secret.get("Passphrase for the new volume: ")?;
    let mut clock = crate::cpu_time::calibration_clock();
    let mut iterations = match opts.iterations {
        Some(n) => Iterations::fixed(n),
        None => Iterations::IterTime { ms: opts.iter_time_ms, clock_ns: &mut clock },
    };
    let (keyslot_iterations, digest_iterations) = iterations.resolve(opts.hash, opts.cipher.key_bytes)?;
    let kdf = if argon2 {
        CreateKdf::Argon2id { time, memory_kib, cpus }
    } else {
        CreateKdf::Pbkdf2 { hash: opts.hash, iterations: keyslot_iterations }
    };
    let params = CreateParams { cipher: opts.cipher, sector_size, kdf, digest_iterations, ..Default::default() };
    let mut file = FileOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    file.set_len(DEFAULT_DATA_OFFSET + size)?;
    let blocks = if argon2 { memory_kib as usize } else { 0 };
    let mut memory = vec![0u8; 1024 * blocks];
    format(&mut file, &params, &passphrase, &mut memory, &mut OsRng)?;
    file.sync_all()?;
    Ok(())
}
