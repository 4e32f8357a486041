//! `qluks bench pbkdf2`: PBKDF2-HMAC iterations per second, as `cryptsetup benchmark --pbkdf
//! pbkdf2` reports them: iterations per second deriving a 256-bit key (hashes with a shorter
//! digest run more than one chain per iteration), per second of CPU time of the measuring
//! thread, as cryptsetup (getrusage) and QEMU (RUSAGE_THREAD) count it, so that a loaded
//! machine does not skew the comparison. Where the thread's CPU time is unavailable, wall time.
use std::time::Instant;

fn thread_cpu_seconds() -> Option<f64> {
    crate::cpu_time::thread_cpu_ns().map(|ns| ns as f64 / 1e9)
}

use clap::{Args, ValueEnum};
use qluks::crypto::{pbkdf2, HashAlg};

/// `qluks bench pbkdf2` arguments.
#[derive(Args)]
pub struct Pbkdf2Args {
    /// Hash of the HMAC PRF (sha1, sha224, sha256, sha384, sha512, ripemd160), or `all`.
    #[arg(long, default_value = "sha256")]
    hash: String,
    /// Derived key length in bytes (cryptsetup's benchmark uses 32).
    #[arg(long, default_value_t = 32)]
    key_bytes: usize,
    /// Seconds per timed run; the median of three runs is reported.
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// PBKDF2 iterations per second for `hash` deriving `key_bytes` bytes: the median of three runs
/// of about `seconds` each.
pub fn iterations_per_second(hash: HashAlg, key_bytes: usize, seconds: f64) -> Result<f64, qluks::crypto::Error> {
    let mut out = vec![0u8; key_bytes];
    let time = |iterations: u32, out: &mut [u8]| -> Result<f64, qluks::crypto::Error> {
        let (cpu, wall) = (thread_cpu_seconds(), Instant::now());
        pbkdf2(hash, b"qluks benchmark passphrase", &[0x5a; 32], iterations, out)?;
        Ok(match (cpu, thread_cpu_seconds()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall.elapsed().as_secs_f64(),
        })
    };
    // Calibrate the count to the requested duration.
    let mut iterations = 10_000u32;
    let mut t = time(iterations, &mut out)?;
    while t < 0.05 {
        iterations *= 4;
        t = time(iterations, &mut out)?;
    }
    let iterations = ((iterations as f64 * seconds / t) as u32).max(1000);
    let mut rates = [0f64; 3];
    for r in &mut rates {
        *r = iterations as f64 / time(iterations, &mut out)?;
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

/// Runs `qluks bench pbkdf2`.
pub fn run(args: Pbkdf2Args) -> Result<(), Box<dyn std::error::Error>> {
    let hashes: Vec<HashAlg> =
        if args.hash == "all" { HashAlg::ALL.to_vec() } else { vec![HashAlg::from_name(&args.hash)?] };
    for hash in hashes {
        let rate = iterations_per_second(hash, args.key_bytes, args.seconds)?;
        match args.output {
            Output::Human => println!(
                "PBKDF2-{:9} {:>10.0} iterations per second for {}-bit key",
                hash.name(),
                rate,
                args.key_bytes * 8
            ),
            Output::Json => println!(
                "{{\"kdf\":\"pbkdf2\",\"hash\":\"{}\",\"key_bytes\":{},\"iterations_per_second\":{:.0}}}",
                hash.name(),
                args.key_bytes,
                rate
            ),
        }
    }
    Ok(())
}
