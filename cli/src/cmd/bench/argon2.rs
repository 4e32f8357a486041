//! `qluks bench argon2`: the time of one Argon2 derivation at given costs (by default
//! cryptsetup's LUKS2 argon2id at 256 MiB, 4 passes, 2 lanes), per BlaMka kernel, with the
//! lanes of each slice on threads as `qluks` unlocks them (`--threads 1`: one thread).
//!
//! The memory is allocated once as for an unlock (huge pages where free) and faulted in by an
//! untimed first derivation, so the figures are the compute of the fill; an unlock also pays
//! for faulting in fresh memory (`qluks bench unlock` and `/usr/bin/time` on `qluks io` show
//! that). Reported: the median wall time of `--repeats` derivations, the CPU time of all
//! threads over the same runs, and the fill rate (memory x passes per wall second). `--kernel
//! all` measures every kernel of this CPU in the same run, the repeats of the kernels in turn.
use std::time::Instant;

use clap::{Args, ValueEnum};
use qluks::crypto::argon2::{argon2_with_kernel, Input, Params, Variant};
use qluks_hal::blamka::BlamkaBackend;

use crate::luks2_memory::{HugePages, KdfMemory, ThreadLanes};

/// `qluks bench argon2` arguments.
#[derive(Args)]
pub struct Argon2Args {
    /// Argon2 variant.
    #[arg(long, value_enum, default_value_t = VariantArg::Argon2id)]
    variant: VariantArg,
    /// Memory cost in KiB (cryptsetup's --pbkdf-memory).
    #[arg(long, default_value_t = 262_144)]
    memory_kib: u32,
    /// Passes (cryptsetup's --pbkdf-force-iterations for Argon2).
    #[arg(long, default_value_t = 4)]
    passes: u32,
    /// Lanes (cryptsetup's --pbkdf-parallel).
    #[arg(long, default_value_t = 2)]
    lanes: u32,
    /// Threads for the lanes of a slice (0: as many as the CPUs available, as an unlock does).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// BlaMka kernel: `best`, `all` (every one available, same run), or one of portable, avx2,
    /// avx512vl, neon.
    #[arg(long, default_value = "best")]
    kernel: String,
    /// Timed derivations per kernel; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=99))]
    repeats: u32,
    /// Huge pages for the memory: `auto` as an unlock decides (none where free memory goes back
    /// to a hypervisor), `yes` as many as are free, `no` none.
    #[arg(long, value_enum, default_value_t = HugePages::Auto)]
    huge_pages: HugePages,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    Argon2i,
    Argon2id,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

fn kernels(name: &str) -> Result<Vec<BlamkaBackend>, Box<dyn std::error::Error>> {
    Ok(match name {
        "best" => vec![BlamkaBackend::best()],
        "all" => BlamkaBackend::available().collect(),
        other => match BlamkaBackend::from_name(other) {
            Some(b) if b.is_available() => vec![b],
            Some(b) => return Err(format!("--kernel {b}: this CPU lacks the instructions of that kernel").into()),
            None => {
                return Err(
                    format!("--kernel {other}: unknown kernel (best, all, portable, avx2, avx512vl, neon)").into()
                )
            }
        },
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One timed derivation: (wall seconds, CPU seconds of this thread and the lane threads).
fn derive(
    params: &Params,
    memory: &mut [u8],
    lanes: &ThreadLanes,
    kernel: BlamkaBackend,
) -> Result<(f64, Option<f64>), Box<dyn std::error::Error>> {
    let input = Input { password: b"qluks benchmark passphrase", salt: &[0x5a; 32], secret: &[], ad: &[] };
    let mut out = [0u8; 64];
    let (cpu, helpers, wall) = (crate::cpu_time::thread_cpu_ns(), lanes.helper_cpu_ns(), Instant::now());
    argon2_with_kernel(params, &input, &mut out, memory, lanes, kernel).map_err(|e| format!("argon2: {e:?}"))?;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = match (cpu, crate::cpu_time::thread_cpu_ns()) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a) + lanes.helper_cpu_ns().saturating_sub(helpers)) as f64 / 1e9),
        _ => None,
    };
    Ok((wall, cpu))
}

/// Runs `qluks bench argon2`.
pub fn run(args: Argon2Args) -> Result<(), Box<dyn std::error::Error>> {
    let variant = match args.variant {
        VariantArg::Argon2i => Variant::Argon2i,
        VariantArg::Argon2id => Variant::Argon2id,
    };
    let params = Params { variant, time: args.passes, memory_kib: args.memory_kib, lanes: args.lanes };
    let bytes = params.memory_bytes().ok_or("invalid Argon2 costs (passes >= 1, lanes >= 1, 8 KiB per lane)")?;
    let bytes = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes of memory do not fit in memory"))?;
    let kernels = kernels(&args.kernel)?;
    let lanes = if args.threads == 0 { ThreadLanes::for_host() } else { ThreadLanes::new(args.threads) };
    let threads = lanes.threads().min(args.lanes as usize);
    let mut memory = KdfMemory::with_huge_pages(bytes, args.huge_pages);
    derive(&params, memory.bytes(), &lanes, kernels[0])?;
    let mut walls = vec![Vec::new(); kernels.len()];
    let mut cpus = vec![Vec::new(); kernels.len()];
    for _ in 0..args.repeats {
        for (i, &k) in kernels.iter().enumerate() {
            let (wall, cpu) = derive(&params, memory.bytes(), &lanes, k)?;
            walls[i].push(wall);
            cpus[i].extend(cpu);
        }
    }
    let name = match variant {
        Variant::Argon2i => "argon2i",
        _ => "argon2id",
    };
    for (i, &k) in kernels.iter().enumerate() {
        let wall = median(walls[i].clone());
        let cpu = (!cpus[i].is_empty()).then(|| median(cpus[i].clone()));
        let rate = bytes as f64 * f64::from(args.passes) / wall / (1u64 << 20) as f64;
        match args.output {
            Output::Human => println!(
                "{name} {} KiB, {} passes, {} lanes on {threads} thread(s): {:.3} s ({} CPU), {:.0} MiB/s filled  \
                 [{k}, median of {}]",
                args.memory_kib,
                args.passes,
                args.lanes,
                wall,
                cpu.map_or("no".to_string(), |c| format!("{c:.3} s")),
                rate,
                args.repeats
            ),
            Output::Json => println!(
                "{{\"kdf\":\"{name}\",\"memory_kib\":{},\"passes\":{},\"lanes\":{},\"threads\":{threads},\
                 \"kernel\":\"{k}\",\"seconds\":{wall:.4},\"cpu_seconds\":{},\"mib_per_second\":{rate:.1},\"repeats\":{}}}",
                args.memory_kib,
                args.passes,
                args.lanes,
                cpu.map_or("null".to_string(), |c| format!("{c:.4}")),
                args.repeats
            ),
        }
    }
    Ok(())
}
