//! `qluks bench unlock IMAGE`: how long unlocking each active keyslot takes here (LUKS1, LUKS2,
//! or the LUKS header of an encrypted qcow2 image), next to cryptsetup's convention for what a
//! keyslot should cost.
//!
//! Each keyslot is really unlocked with the passphrase (KDF, key material, digest check), as an
//! open does, Argon2 with one thread per lane (at most the CPUs available): a keyslot the
//! passphrase does not open is reported as such and still timed. Wall time and CPU time (this
//! thread plus the lane threads, where Linux reports them) are the medians of `--repeat` runs.
//! The image is only read.
use std::error::Error;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use qluks::luks::luks1::{self, Luks1Header};
use qluks::luks::luks2::metadata::kdf_memory_bytes;
use qluks::luks::luks2::{self, Kdf, Luks2Header};
use qluks::luks::{KdfLimits, LuksError};

use crate::luks2_memory::{KdfMemory, ThreadLanes, MAX_JSON};
use crate::secret::SecretArgs;

/// cryptsetup's (and qemu-img's) default unlock time target for a new keyslot, in ms.
const ITER_TIME_MS: u64 = 2000;
/// cryptsetup's default Argon2 memory cost ceiling, in KiB (1 GiB).
const ARGON2_MEMORY_KIB: u64 = 1 << 20;
/// cryptsetup's default Argon2 lanes ceiling (`--pbkdf-parallel`).
const ARGON2_LANES: u32 = 4;

/// `qluks bench unlock` arguments.
#[derive(Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    /// Timed unlocks per keyslot; the medians are reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Time only this keyslot.
    #[arg(long, value_name = "N")]
    keyslot: Option<usize>,
    /// Output format: a table for people, or one JSON object per line and keyslot.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// The image: a LUKS1 or LUKS2 volume, or a LUKS-encrypted qcow2 image.
    image: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// The LUKS header found in the image.
enum Header {
    /// LUKS1 at `offset` (0, or a qcow2 image's FDE extension), confined to `len` bytes there.
    Luks1 {
        header: Box<Luks1Header>,
        offset: u64,
        len: Option<u64>,
    },
    Luks2(Box<Luks2Header>),
}

/// What one keyslot costs, as the header says.
struct Cost {
    /// `pbkdf2-sha256, 1000000 iterations` or `argon2id, 4 passes, 262144 KiB, 2 lanes`.
    text: String,
    json: String,
    /// cryptsetup's convention for such a keyslot.
    convention: String,
    /// PBKDF2 iterations (for the rate), or `None` for Argon2.
    iterations: Option<u32>,
}

/// One keyslot's timing.
struct Timing {
    wall_s: f64,
    cpu_s: Option<f64>,
    opened: bool,
}

/// Runs `qluks bench unlock`.
pub fn run(mut args: UnlockArgs) -> Result<(), Box<dyn Error>> {
    if !(1..=100).contains(&args.repeat) {
        return Err(format!("--repeat {} is not in 1..=100", args.repeat).into());
    }
    args.image_opts.resolve(&mut args.image, &mut args.secret, None)?;
    let path = args.image.as_path();
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut file = File::open(path).map_err(|e| format!("Could not open '{}': {e}", path.display()))?;
    let header = read_header(&mut file, path)?;
    let passphrase = args.secret.get(&format!("Passphrase for {}: ", path.display()))?;
    let limits = args.secret.kdf.limits(&crate::secret::pbkdf2_claims(&mut file));
    let lanes = ThreadLanes::for_host();
    let slots = active_keyslots(&header);
    if let Some(k) = args.keyslot {
        if !slots.contains(&k) {
            return Err(format!("{}: keyslot {k} is not active (active: {slots:?})", path.display()).into());
        }
    }
    if args.output == Output::Human {
        println!("{}: {}, {} thread(s) for Argon2 lanes", path.display(), describe(&header), lanes.threads());
    }
    for k in slots.into_iter().filter(|&k| args.keyslot.is_none_or(|want| want == k)) {
        let cost = cost(&header, k);
        if let Some(refused) = refused(&header, k, &limits) {
            match args.output {
                Output::Human => println!("keyslot {k}: {}: not timed: {refused}", cost.text),
                Output::Json => {
                    println!(r#"{{"bench":"unlock","keyslot":{k},{},"refused":{}}}"#, cost.json, quoted(&refused))
                }
            }
            continue;
        }
        let mut runs = Vec::with_capacity(args.repeat);
        for _ in 0..args.repeat {
            runs.push(time_unlock(&mut file, &header, k, &passphrase, &limits, &lanes).map_err(|e| at(&e))?);
        }
        let mut walls: Vec<f64> = runs.iter().map(|t| t.wall_s).collect();
        let mut cpus: Vec<f64> = runs.iter().filter_map(|t| t.cpu_s).collect();
        let wall = median(&mut walls);
        let cpu = (cpus.len() == runs.len()).then(|| median(&mut cpus));
        let opened = runs.iter().all(|t| t.opened);
        print_slot(args.output, k, &cost, wall, cpu, opened);
    }
    Ok(())
}

fn print_slot(output: Output, k: usize, cost: &Cost, wall: f64, cpu: Option<f64>, opened: bool) {
    // PBKDF2: the keyslot's iterations over the time they took here give this machine's rate,
    // and the iteration count cryptsetup's default target would pick here.
    let rate = cost.iterations.map(|n| n as f64 / cpu.unwrap_or(wall).max(1e-9));
    match output {
        Output::Human => {
            let cpu_text = cpu.map(|c| format!("{c:.3} s CPU")).unwrap_or_else(|| "CPU time unknown".into());
            let verdict = if opened { "opened by the passphrase" } else { "not opened by the passphrase" };
            println!("keyslot {k}: {}: {wall:.3} s wall, {cpu_text}, {verdict}", cost.text);
            let mut line = format!("  cryptsetup convention: {}", cost.convention);
            if let Some(rate) = rate {
                let ms = cost.iterations.unwrap_or(0) as f64 / rate * 1000.0;
                let _ = write!(
                    line,
                    "; this keyslot is --iter-time {ms:.0} ms at {rate:.0} iterations/s here \
                     ({:.0} iterations for {ITER_TIME_MS} ms)",
                    rate * ITER_TIME_MS as f64 / 1000.0
                );
            }
            println!("{line}");
        }
        Output::Json => {
            let mut line = format!(r#"{{"bench":"unlock","keyslot":{k},{},"wall_s":{wall:.6}"#, cost.json);
            if let Some(cpu) = cpu {
                let _ = write!(line, r#","cpu_s":{cpu:.6}"#);
            }
            if let Some(rate) = rate {
                let _ = write!(line, r#","iterations_per_s":{rate:.0}"#);
            }
            let _ = write!(line, r#","opened":{opened},"convention":{}}}"#, quoted(&cost.convention));
            println!("{line}");
        }
    }
}

/// The LUKS header of `file`: a LUKS volume's, or the one a qcow2 image embeds.
fn read_header(file: &mut File, path: &Path) -> Result<Header, Box<dyn Error>> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    match crate::open::detect(file)? {
        crate::open::Format::Luks => {
            let mut version = [0u8; 8];
            qluks::io::BlockIo::read_at(file, 0, &mut version)?;
            if u16::from_be_bytes([version[6], version[7]]) == 2 {
                let mut json = vec![0u8; MAX_JSON];
                Ok(Header::Luks2(luks2::Luks2Header::read(file, &mut json).map_err(|e| at(&e))?))
            } else {
                let header = Luks1Header::read(file, 0).map_err(|e| at(&e))?;
                Ok(Header::Luks1 { header: Box::new(header), offset: 0, len: None })
            }
        }
        crate::open::Format::Qcow2 => {
            let (header, extensions, _) = qluks::qcow2::read_qcow2_header(file).map_err(|e| at(&e))?;
            if header.crypt_method != qluks::qcow2::CryptMethod::Luks {
                return Err(format!("{}: the qcow2 image is not LUKS-encrypted", path.display()).into());
            }
            let fde = extensions.fde.ok_or_else(|| {
                format!(
                    "{}: crypt_method is LUKS but the full disk encryption header extension is missing",
                    path.display()
                )
            })?;
            let luks = Luks1Header::read(file, fde.offset)
                .map_err(|e| format!("{} (LUKS header at {:#x}): {e}", path.display(), fde.offset))?;
            Ok(Header::Luks1 { header: Box::new(luks), offset: fde.offset, len: Some(fde.length) })
        }
        other => Err(format!(
            "{}: a {} image has no keyslots (LUKS volumes and LUKS-encrypted qcow2 images have)",
            path.display(),
            other.name()
        )
        .into()),
    }
}

fn describe(header: &Header) -> String {
    match header {
        Header::Luks1 { header, offset: 0, .. } => {
            format!("LUKS1, master-key digest pbkdf2-{} {} iterations", header.hash.name(), header.mk_iterations)
        }
        Header::Luks1 { header, offset, .. } => format!(
            "qcow2 with a LUKS1 header at {offset:#x}, master-key digest pbkdf2-{} {} iterations",
            header.hash.name(),
            header.mk_iterations
        ),
        Header::Luks2(h) => {
            let m = &h.metadata;
            let digest = m.data_segment().and_then(|(s, _)| m.digest_for_segment(s)).map(|(_, d)| d);
            match digest {
                Some(d) => format!("LUKS2, digest pbkdf2-{} {} iterations", d.hash.as_str(), d.iterations),
                None => "LUKS2".into(),
            }
        }
    }
}

fn active_keyslots(header: &Header) -> Vec<usize> {
    match header {
        Header::Luks1 { header, .. } => header.active_keyslots().collect(),
        Header::Luks2(h) => h.metadata.keyslots().map(|(k, _)| usize::from(k)).collect(),
    }
}

fn cost(header: &Header, k: usize) -> Cost {
    let pbkdf2 = |hash: &str, iterations: u32| Cost {
        text: format!("pbkdf2-{hash}, {iterations} iterations"),
        json: format!(r#""kdf":"pbkdf2","hash":{},"iterations":{iterations}"#, quoted(hash)),
        convention: format!(
            "cryptsetup and qemu-img calibrate PBKDF2 keyslots to --iter-time {ITER_TIME_MS} ms on the formatting \
             machine; this one is --pbkdf-force-iterations {iterations}"
        ),
        iterations: Some(iterations),
    };
    match header {
        Header::Luks1 { header, .. } => pbkdf2(header.hash.name(), header.keyslots[k].iterations),
        Header::Luks2(h) => match h.metadata.keyslots[k].as_ref().map(|s| &s.kdf) {
            Some(Kdf::Pbkdf2 { hash, iterations, .. }) => pbkdf2(hash.as_str(), *iterations),
            Some(kdf @ Kdf::Argon2 { time, memory_kib, cpus, .. }) => {
                let name = kdf.name();
                Cost {
                    text: format!("{name}, {time} passes, {memory_kib} KiB, {cpus} lanes"),
                    json: format!(r#""kdf":"{name}","time":{time},"memory_kib":{memory_kib},"lanes":{cpus}"#),
                    convention: format!(
                        "cryptsetup calibrates Argon2 keyslots to --iter-time {ITER_TIME_MS} ms with up to \
                         {ARGON2_MEMORY_KIB} KiB (1 GiB) and up to {ARGON2_LANES} lanes; this one is \
                         --pbkdf-force-iterations {time} --pbkdf-memory {memory_kib} --pbkdf-parallel {cpus}"
                    ),
                    iterations: None,
                }
            }
            None => Cost {
                text: "inactive".into(),
                json: r#""kdf":null"#.into(),
                convention: String::new(),
                iterations: None,
            },
        },
    }
}

/// Why the KDF limits refuse keyslot `k` (as an open would), if they do.
fn refused(header: &Header, k: usize, limits: &KdfLimits) -> Option<String> {
    let cost = match header {
        Header::Luks1 { header, .. } => limits.check_pbkdf2(header.keyslots[k].iterations).err(),
        Header::Luks2(h) => h.metadata.keyslots[k].as_ref().and_then(|s| limits.check(&s.kdf).err()),
    }?;
    let e = LuksError::KeyslotKdfRefused { keyslot: k, cost };
    Some(format!("{e}{}", crate::secret::kdf_hint(&e)))
}

/// One full unlock of keyslot `k` (KDF, key material, digest), timed.
fn time_unlock(
    file: &mut File,
    header: &Header,
    k: usize,
    passphrase: &[u8],
    limits: &KdfLimits,
    lanes: &ThreadLanes,
) -> Result<Timing, Box<dyn Error>> {
    let cpu_start = crate::cpu_time::thread_cpu_ns();
    let helpers_start = lanes.helper_cpu_ns();
    let start = Instant::now();
    let result = match header {
        Header::Luks1 { header, offset, len } => {
            luks1::unlock_with_limits(file, *offset, *len, header, passphrase, Some(k), limits).map(drop)
        }
        Header::Luks2(h) => {
            let bytes = h.metadata.keyslots[k].as_ref().map_or(0, |s| kdf_memory_bytes(&s.kdf));
            let bytes = usize::try_from(bytes).map_err(|_| format!("Argon2 needs {bytes} bytes of memory"))?;
            let mut memory = KdfMemory::new(bytes);
            luks2::keyslot::unlock_with_runner(file, &h.metadata, passphrase, Some(k), memory.bytes(), limits, lanes)
                .map(drop)
        }
    };
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_s = match (cpu_start, crate::cpu_time::thread_cpu_ns()) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a) + lanes.helper_cpu_ns() - helpers_start) as f64 / 1e9),
        _ => None,
    };
    let opened = match result {
        Ok(()) => true,
        Err(e) if e.luks() == Some(&LuksError::WrongPassphrase) => false,
        Err(e) => {
            let hint = e.luks().map(crate::secret::kdf_hint).unwrap_or_default();
            return Err(format!("keyslot {k}: {e}{hint}").into());
        }
    };
    Ok(Timing { wall_s, cpu_s, opened })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

/// `s` as a JSON string.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
