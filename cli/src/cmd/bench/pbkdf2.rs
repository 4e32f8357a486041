//! `qluks bench pbkdf2`: PBKDF2-HMAC iterations per second, as `cryptsetup benchmark --pbkdf
//! pbkdf2` reports them: iterations per second deriving a 256-bit key (hashes with a shorter
//! digest run more than one chain per iteration), per second of CPU time of the measuring
//! thread, as cryptsetup (getrusage) and QEMU (RUSAGE_THREAD) count it, so that a loaded
//! machine does not skew the comparison. Where the thread's CPU time is unavailable, wall time.
//!
//! Next to that single-chain rate it reports the rate of a 64-byte derivation (the volume key
//! of aes-256-xts: two SHA-256 output blocks, whose chains the interleaved kernel runs
//! together) and the time of one million such iterations. `--kernel all` measures every
//! kernel this CPU has in the same run, the repeats of the kernels taken in turn so that a
//! change of load hits them alike.
use std::time::Instant;

fn thread_cpu_seconds() -> Option<f64> {
    crate::cpu_time::thread_cpu_ns().map(|ns| ns as f64 / 1e9)
}

use clap::{Args, ValueEnum};
use qluks::crypto::{pbkdf2_with, HashAlg, Pbkdf2Kernel};
use qluks_hal::sha::ShaBackend;

/// `qluks bench pbkdf2` arguments.
#[derive(Args)]
pub struct Pbkdf2Args {
    /// Hash of the HMAC PRF (sha1, sha224, sha256, sha384, sha512, ripemd160), or `all`.
    #[arg(long, default_value = "sha256")]
    hash: String,
    /// Derived key length in bytes of the single-chain rate (cryptsetup's benchmark uses 32).
    #[arg(long, default_value_t = 32)]
    key_bytes: usize,
    /// PBKDF2 kernel for SHA-256/224 (and SHA-1 on shani/armv8, SHA-512/384 on armv8 with FEAT_SHA512): `best` (interleaved on the fastest SHA backend),
    /// `scalar` (one compression call per block, chains in lockstep), `portable`, `shani`,
    /// `armv8` (interleaved on that backend), or `all` (every one available, same run).
    #[arg(long, default_value = "best")]
    kernel: String,
    /// Seconds per timed run.
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// Timed runs per figure; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=99))]
    repeats: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// Seconds (thread CPU time where available) of one `key_bytes` derivation of `iterations`.
fn time(kernel: Pbkdf2Kernel, hash: HashAlg, iterations: u32, out: &mut [u8]) -> Result<f64, qluks::crypto::Error> {
    let (cpu, wall) = (thread_cpu_seconds(), Instant::now());
    pbkdf2_with(kernel, hash, b"qluks benchmark passphrase", &[0x5a; 32], iterations, out)?;
    Ok(match (cpu, thread_cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall.elapsed().as_secs_f64(),
    })
}

/// An iteration count that takes about `seconds` for a `key_bytes` derivation.
fn calibrate(kernel: Pbkdf2Kernel, hash: HashAlg, key_bytes: usize, seconds: f64) -> Result<u32, qluks::crypto::Error> {
    let mut out = vec![0u8; key_bytes];
    let mut iterations = 10_000u32;
    let mut t = time(kernel, hash, iterations, &mut out)?;
    while t < 0.05 && iterations < u32::MAX / 4 {
        iterations *= 4;
        t = time(kernel, hash, iterations, &mut out)?;
    }
    Ok(((iterations as f64 * seconds / t).min(u32::MAX as f64) as u32).max(1000))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn kernel_name(k: Pbkdf2Kernel) -> String {
    match k {
        Pbkdf2Kernel::Scalar => "scalar".into(),
        Pbkdf2Kernel::Interleaved(b) => format!("interleaved-{b}"),
    }
}

fn kernels(name: &str) -> Result<Vec<Pbkdf2Kernel>, Box<dyn std::error::Error>> {
    Ok(match name {
        "best" => vec![Pbkdf2Kernel::best()],
        "scalar" => vec![Pbkdf2Kernel::Scalar],
        "all" => std::iter::once(Pbkdf2Kernel::Scalar)
            .chain(ShaBackend::available().map(Pbkdf2Kernel::Interleaved))
            .collect(),
        other => match ShaBackend::from_name(other) {
            Some(b) if b.is_available() => vec![Pbkdf2Kernel::Interleaved(b)],
            Some(b) => return Err(format!("--kernel {b}: this CPU lacks the instructions of that SHA backend").into()),
            None => {
                return Err(
                    format!("--kernel {other}: unknown kernel (best, scalar, portable, shani, armv8, all)").into()
                )
            }
        },
    })
}

/// Runs `qluks bench pbkdf2`.
pub fn run(args: Pbkdf2Args) -> Result<(), Box<dyn std::error::Error>> {
    let hashes: Vec<HashAlg> =
        if args.hash == "all" { HashAlg::ALL.to_vec() } else { vec![HashAlg::from_name(&args.hash)?] };
    if args.key_bytes == 0 {
        return Err("--key-bytes must be at least 1".into());
    }
    let kernels = kernels(&args.kernel)?;
    for hash in hashes {
        // The kernel matters for SHA-256/224 (every SHA backend), SHA-1 and SHA-512/384 (the
        // backends with a kernel for them); RIPEMD-160 runs the scalar loop.
        let kernels: Vec<Pbkdf2Kernel> = kernels
            .iter()
            .copied()
            .filter(|k| match (hash, k) {
                (_, Pbkdf2Kernel::Scalar) | (HashAlg::Sha256 | HashAlg::Sha224, _) => true,
                (HashAlg::Sha1, Pbkdf2Kernel::Interleaved(b)) => b.sha1_kernel() == *b,
                (HashAlg::Sha512 | HashAlg::Sha384, Pbkdf2Kernel::Interleaved(b)) => b.sha512_kernel() == *b,
                _ => false,
            })
            .collect();
        if kernels.is_empty() {
            return Err(format!("--kernel {}: no such kernel for PBKDF2-{}", args.kernel, hash.name()).into());
        }
        // One iteration count per key length for every kernel (calibrated on the first), so
        // that the kernels do the same work.
        let single_n = calibrate(kernels[0], hash, args.key_bytes, args.seconds)?;
        let key64_n = calibrate(kernels[0], hash, 64, args.seconds)?;
        let mut single = vec![Vec::new(); kernels.len()];
        let mut key64 = vec![Vec::new(); kernels.len()];
        let mut out = vec![0u8; args.key_bytes.max(64)];
        for _ in 0..args.repeats {
            for (i, &k) in kernels.iter().enumerate() {
                single[i].push(time(k, hash, single_n, &mut out[..args.key_bytes])?);
                key64[i].push(time(k, hash, key64_n, &mut out[..64])?);
            }
        }
        for (i, &k) in kernels.iter().enumerate() {
            let rate = single_n as f64 / median(single[i].clone());
            let rate64 = key64_n as f64 / median(key64[i].clone());
            let ms_per_million = 1e9 / rate64;
            match args.output {
                Output::Human => println!(
                    "PBKDF2-{:9} {:>10.0} iterations per second for {}-bit key; 512-bit key: {:>10.0} \
                     iterations per second, {:.1} ms per million iterations  [{}, median of {}]",
                    hash.name(),
                    rate,
                    args.key_bytes * 8,
                    rate64,
                    ms_per_million,
                    kernel_name(k),
                    args.repeats
                ),
                Output::Json => println!(
                    "{{\"kdf\":\"pbkdf2\",\"hash\":\"{}\",\"kernel\":\"{}\",\"key_bytes\":{},\
                     \"iterations_per_second\":{:.0},\"key64_iterations_per_second\":{:.0},\
                     \"key64_ms_per_million_iterations\":{:.2},\"repeats\":{}}}",
                    hash.name(),
                    kernel_name(k),
                    args.key_bytes,
                    rate,
                    rate64,
                    ms_per_million,
                    args.repeats
                ),
            }
        }
    }
    Ok(())
}
