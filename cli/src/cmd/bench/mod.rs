//! `qluks bench`: throughput of the crypto core, per backend.
//!
//! `bench xts` times the XTS batch API (`Xts::encrypt_units_step` / `decrypt_units_step`, tweak
//! step 1 unless `--tweak-step` says otherwise) in place over one warm buffer, repeated for a
//! fixed wall-clock time, and reports the median of ten equal slices
//! of that time in GB/s (10^9 bytes per second), which keeps one noisy slice on a shared machine
//! from moving the figure. Throughput is per second of CPU time of the benchmarking thread where
//! Linux reports it (`/proc/thread-self/schedstat`), as `openssl speed` divides by CPU time, so
//! that time slices lost to other processes do not count against the code; the wall-clock figure
//! is reported next to it.

pub mod argon2;
pub mod pbkdf2;
pub mod unlock;
use std::fmt::Write as _;
use std::hint::black_box;
use std::num::NonZeroU128;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use qluks::hal::{Backend, Xts};

/// `qluks bench` arguments.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// AES-XTS with plain64 tweaks over consecutive sectors (the disk encryption hot path).
    Xts(XtsArgs),
    /// PBKDF2-HMAC iterations per second (the work of unlocking a LUKS keyslot).
    Pbkdf2(crate::cmd::bench::pbkdf2::Pbkdf2Args),
    /// One Argon2 derivation per BlaMka kernel (the work of unlocking a LUKS2 keyslot).
    Argon2(crate::cmd::bench::argon2::Argon2Args),
    /// How long unlocking each keyslot of a LUKS volume (or LUKS-encrypted qcow2) takes here.
    Unlock(crate::cmd::bench::unlock::UnlockArgs),
}

#[derive(Args)]
struct XtsArgs {
    /// Block cipher (the XTS key is twice its key size).
    #[arg(long, value_enum, default_value_t = Cipher::Aes256)]
    cipher: Cipher,
    /// Data unit (sector) size in bytes: a power of two in 512..=4096.
    #[arg(long, default_value_t = 4096)]
    sector_size: usize,
    /// Bytes per call of the batch API (a multiple of the sector size).
    #[arg(long, default_value_t = 1 << 20)]
    batch: usize,
    /// `auto` = the backend qluks would choose here, `all` = every backend usable here, or
    /// one of soft, aesni, vaes256, vaes512, armv8.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Time decryption instead of encryption.
    #[arg(long)]
    decrypt: bool,
    /// Output format: a table for people, or one JSON object per line and backend.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// Seconds to time each backend for.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Tweak step between consecutive sectors (`Xts::decrypt_units_step`): 1 = plain64 over
    /// consecutive sector numbers, 8 = a LUKS2 volume's 4096-byte sectors (IVs in 512-byte units).
    #[arg(long, default_value_t = 1)]
    tweak_step: u64,
    /// Time the LUKS volume data path instead (`LuksVolume::read_at`, or `write_in_place` for
    /// encryption, over an in-memory payload; IV sectors step by sector-size / 512 as in LUKS2),
    /// on the backend qluks chooses.
    #[arg(long, conflicts_with = "tweak_step")]
    volume: bool,
}

/// The block ciphers XTS can be benchmarked with.
#[derive(Clone, Copy, ValueEnum)]
pub enum Cipher {
    /// AES-128 (XTS key 32 bytes).
    #[value(name = "aes-128")]
    Aes128,
    /// AES-192 (XTS key 48 bytes).
    #[value(name = "aes-192")]
    Aes192,
    /// AES-256 (XTS key 64 bytes).
    #[value(name = "aes-256")]
    Aes256,
}

impl Cipher {
    fn name(self) -> &'static str {
        match self {
            Cipher::Aes128 => "aes-128",
            Cipher::Aes192 => "aes-192",
            Cipher::Aes256 => "aes-256",
        }
    }

    /// XTS key length: two AES keys.
    fn xts_key_len(self) -> usize {
        match self {
            Cipher::Aes128 => 32,
            Cipher::Aes192 => 48,
            Cipher::Aes256 => 64,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// What one XTS measurement times.
pub struct XtsConfig {
    /// Block cipher.
    pub cipher: Cipher,
    /// Data unit size in bytes.
    pub sector_size: usize,
    /// Bytes per batch call.
    pub batch: usize,
    /// Decrypt instead of encrypt.
    pub decrypt: bool,
    /// Wall-clock time to spend.
    pub time: Duration,
}

/// One throughput measurement.
#[derive(Clone, Copy)]
pub struct Throughput {
    /// GB per second of the benchmarking thread's CPU time (wall clock where that is unknown).
    pub gbps: f64,
    /// GB per second of wall-clock time.
    pub gbps_wall: f64,
}

/// CPU time consumed by the calling thread so far, where the OS reports it (Linux).
fn thread_cpu_time() -> Option<Duration> {
    // "<ns on cpu> <ns waiting> <slices>": the first field is exact, unlike the tick-based stat.
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    (rates[(n - 1) / 2] + rates[n / 2]) / 2.0
}

/// Times `config` on `backend` and returns the median throughput of ten slices.
pub fn xts_gbps(backend: Backend, config: &XtsConfig) -> Result<Throughput, Box<dyn std::error::Error>> {
    xts_gbps_step(backend, config, NonZeroU128::MIN)
}

/// [`xts_gbps`] with tweaks advancing by `step` per sector.
fn xts_gbps_step(
    backend: Backend,
    config: &XtsConfig,
    step: NonZeroU128,
) -> Result<Throughput, Box<dyn std::error::Error>> {
    // A fixed, public benchmark key: speed does not depend on its value.
    let key: Vec<u8> = (0..config.cipher.xts_key_len()).map(|i| (i as u8).wrapping_mul(37).wrapping_add(11)).collect();
    let xts = Xts::with_backend(&key, backend)?;
    let mut buf: Vec<u8> = (0..config.batch).map(|i| (i * 131 + 7) as u8).collect();
    let mut first_unit = 1u128 << 20;
    let units = (config.batch / config.sector_size) as u128;
    let pass = |buf: &mut [u8]| -> Result<(), Box<dyn std::error::Error>> {
        let r = if config.decrypt {
            xts.decrypt_units_step(black_box(buf), config.sector_size, first_unit, step)
        } else {
            xts.encrypt_units_step(black_box(buf), config.sector_size, first_unit, step)
        };
        first_unit = first_unit.wrapping_add(units.wrapping_mul(step.get()));
        Ok(r?)
    };
    time_passes(config, &mut buf, pass)
}

/// Times `LuksVolume::read_at` (decryption) or `write_in_place` (encryption) of `config.batch`
/// bytes at a time over an in-memory LUKS payload of four batches, read or written in turn:
/// the volume's data path (device copy, IV sectors in 512-byte units as LUKS2 counts them,
/// the cipher call) on the backend qluks chooses.
fn volume_gbps(config: &XtsConfig) -> Result<Throughput, Box<dyn std::error::Error>> {
    use qluks::crypto::{CipherSpec, SectorCipher};
    use qluks::io::MemIo;
    use qluks::luks::{DataSegment, LuksVolume};
    let key: Vec<u8> = (0..config.cipher.xts_key_len()).map(|i| (i as u8).wrapping_mul(37).wrapping_add(11)).collect();
    let spec = CipherSpec::parse("aes", "xts-plain64", key.len())?;
    let cipher = SectorCipher::new(spec, &key)?;
    let sector_size = config.sector_size;
    let mut device: Vec<u8> = (0..4 * config.batch).map(|i| (i * 131 + 7) as u8).collect();
    let segment = DataSegment { offset: 0, size: None, sector_size, iv_tweak: 0, cipher };
    let mut volume = LuksVolume::new(MemIo::new(&mut device), segment)?;
    let mut buf: Vec<u8> = vec![0x5a; config.batch];
    let mut at = 0u64;
    let pass = |buf: &mut [u8]| -> Result<(), Box<dyn std::error::Error>> {
        if config.decrypt {
            volume.read_at(at, black_box(buf))?;
        } else {
            volume.write_in_place(at, black_box(buf))?;
        }
        at = (at + config.batch as u64) % (4 * config.batch as u64);
        Ok(())
    };
    time_passes(config, &mut buf, pass)
}

/// Times the device copy of [`volume_gbps`] alone (`MemIo::read_at` of `config.batch` bytes
/// over the same four-batch payload, no cipher): the part of the volume path that is not
/// decryption.
fn device_copy_gbps(config: &XtsConfig) -> Result<Throughput, Box<dyn std::error::Error>> {
    use qluks::io::{BlockIo, MemIo};
    let mut device: Vec<u8> = (0..4 * config.batch).map(|i| (i * 131 + 7) as u8).collect();
    let mut io = MemIo::new(&mut device);
    let mut buf: Vec<u8> = vec![0x5a; config.batch];
    let mut at = 0u64;
    let pass = |buf: &mut [u8]| -> Result<(), Box<dyn std::error::Error>> {
        io.read_at(at, black_box(buf)).map_err(|e| format!("{e:?}"))?;
        at = (at + config.batch as u64) % (4 * config.batch as u64);
        Ok(())
    };
    time_passes(config, &mut buf, pass)
}

/// Runs `pass` over `buf` for `config.time` after a warm-up; the median of ten slices.
fn time_passes(
    config: &XtsConfig,
    buf: &mut [u8],
    mut pass: impl FnMut(&mut [u8]) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<Throughput, Box<dyn std::error::Error>> {
    // Warm the caches, the page mappings and the clock frequency.
    let warm_until = Instant::now() + config.time / 10;
    while Instant::now() < warm_until {
        pass(buf)?;
    }
    let slice = config.time / 10;
    let (mut cpu_rates, mut wall_rates) = (Vec::with_capacity(10), Vec::with_capacity(10));
    for _ in 0..10 {
        let (start, cpu_start) = (Instant::now(), thread_cpu_time());
        let mut bytes = 0u64;
        loop {
            pass(buf)?;
            bytes += config.batch as u64;
            let elapsed = start.elapsed();
            if elapsed >= slice {
                wall_rates.push(bytes as f64 / elapsed.as_secs_f64() / 1e9);
                if let (Some(a), Some(b)) = (cpu_start, thread_cpu_time()) {
                    cpu_rates.push(bytes as f64 / (b - a).as_secs_f64().max(1e-9) / 1e9);
                }
                break;
            }
        }
    }
    black_box(buf);
    let gbps_wall = median(&mut wall_rates);
    let gbps = if cpu_rates.len() == wall_rates.len() { median(&mut cpu_rates) } else { gbps_wall };
    Ok(Throughput { gbps, gbps_wall })
}

/// Runs `qluks bench ...`.
pub fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.what {
        BenchWhat::Xts(args) => run_xts(args),
        BenchWhat::Pbkdf2(args) => crate::cmd::bench::pbkdf2::run(args),
        BenchWhat::Argon2(args) => crate::cmd::bench::argon2::run(args),
        BenchWhat::Unlock(args) => crate::cmd::bench::unlock::run(args),
    }
}

fn run_xts(args: XtsArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !args.sector_size.is_power_of_two() || !(512..=4096).contains(&args.sector_size) {
        return Err(format!("--sector-size {} is not a power of two in 512..=4096", args.sector_size).into());
    }
    if args.batch == 0 || !args.batch.is_multiple_of(args.sector_size) {
        return Err(format!(
            "--batch {} is not a positive multiple of the sector size {}",
            args.batch, args.sector_size
        )
        .into());
    }
    let step = NonZeroU128::new(args.tweak_step.into()).ok_or("--tweak-step 0: the step must be at least 1")?;
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        return Err(format!("--seconds {} is not in (0, 600]", args.seconds).into());
    }
    if args.volume && args.backend != "auto" {
        return Err("--volume runs on the backend qluks chooses (--backend auto)".into());
    }
    let backends: Vec<Backend> = match args.backend.as_str() {
        "auto" => vec![Backend::best()],
        "all" => Backend::available().collect(),
        name => {
            let backend = Backend::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = Backend::ALL.iter().map(|b| b.name()).collect();
                format!("unknown backend {name:?} (auto, all, {})", names.join(", "))
            })?;
            if !backend.is_available() {
                return Err(format!("backend {backend} is not available on this CPU").into());
            }
            vec![backend]
        }
    };
    let config = XtsConfig {
        cipher: args.cipher,
        sector_size: args.sector_size,
        batch: args.batch,
        decrypt: args.decrypt,
        time: Duration::from_secs_f64(args.seconds),
    };
    let direction = if args.decrypt { "decrypt" } else { "encrypt" };
    if args.output == Output::Human {
        println!(
            "{}-XTS {direction}, {}-byte sectors, {}-byte batches, {}",
            args.cipher.name().to_uppercase(),
            args.sector_size,
            args.batch,
            if args.volume { "through a LUKS volume".to_string() } else { format!("tweak step {}", args.tweak_step) }
        );
    }
    for backend in backends {
        let Throughput { gbps, gbps_wall } =
            if args.volume { volume_gbps(&config)? } else { xts_gbps_step(backend, &config, step)? };
        match args.output {
            Output::Human => {
                println!("{:8} {gbps:7.2} GB/s   (wall clock {gbps_wall:.2})", backend.name());
                if args.volume && args.decrypt {
                    // The two parts of the path, timed alone in the same run: the cipher (the
                    // hal's batch call, IV sectors stepping as the volume's do) and the copy.
                    let step = NonZeroU128::new(args.sector_size as u128 / 512).unwrap_or(NonZeroU128::MIN);
                    let cipher = xts_gbps_step(backend, &config, step)?.gbps;
                    let copy = device_copy_gbps(&config)?.gbps;
                    let bound = 1.0 / (1.0 / cipher + 1.0 / copy);
                    println!(
                        "         cipher alone {cipher:.2} GB/s (tweak step {step}), device copy alone {copy:.2} GB/s: \
                         one after the other at most {bound:.2} GB/s; the volume reaches {:.0}% of that",
                        100.0 * gbps / bound
                    );
                }
            }
            Output::Json => {
                let mut line = String::new();
                write!(
                    line,
                    r#"{{"bench":"xts","backend":"{}","cipher":"{}","sector_size":{},"batch":{},"tweak_step":{},"volume":{},"direction":"{direction}","gbps":{gbps:.3},"gbps_wall":{gbps_wall:.3}}}"#,
                    backend.name(),
                    args.cipher.name(),
                    args.sector_size,
                    args.batch,
                    if args.volume { args.sector_size as u64 / 512 } else { args.tweak_step },
                    args.volume
                )?;
                println!("{line}");
            }
        }
    }
    Ok(())
}
