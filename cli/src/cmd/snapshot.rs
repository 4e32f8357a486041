//! `qluks snapshot -l|-c|-a|-d IMAGE`: the internal snapshots of a qcow2 image, with
//! qemu-img's spellings: list (`-l`), create (`-c NAME`), apply = revert (`-a ID_OR_NAME`),
//! delete (`-d NAME_OR_ID`).
use std::error::Error;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use clap::Args;
use qluks::qcow2::{CryptMethod, Qcow2};
use serde_json::{json, Value};

use crate::escape::shown;
use crate::secret::SecretArgs;

/// `qluks snapshot` arguments.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["list", "create", "apply", "delete"])))]
pub struct SnapshotArgs {
    /// List the snapshots.
    #[arg(short = 'l', long = "list")]
    list: bool,
    /// Create a snapshot named NAME of the active disk (ids are numbered as QEMU does).
    #[arg(short = 'c', value_name = "NAME")]
    create: Option<String>,
    /// Apply (revert to) the snapshot with this id, or else this name.
    #[arg(short = 'a', value_name = "SNAPSHOT")]
    apply: Option<String>,
    /// Delete the snapshot with this name (as qemu-img), or else this id.
    #[arg(short = 'd', value_name = "SNAPSHOT")]
    delete: Option<String>,
    /// Quiet (qemu-img's spelling; nothing is printed on success anyway).
    #[arg(short = 'q')]
    quiet: bool,
    /// Print JSON instead of a table (`-l`).
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    output: String,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    /// The image.
    image: PathBuf,
}

/// Runs `qluks snapshot`.
pub fn run(mut args: SnapshotArgs) -> Result<(), Box<dyn Error>> {
    args.image_opts.resolve(&mut args.image, &mut args.secret, None)?;
    let _ = args.quiet;
    if let Some(name) = &args.create {
        return change(&args, Change::Create(name));
    }
    if let Some(name) = &args.apply {
        return change(&args, Change::Apply(name));
    }
    if let Some(name) = &args.delete {
        return change(&args, Change::Delete(name));
    }
    list(&args)
}

enum Change<'a> {
    Create(&'a str),
    Apply(&'a str),
    Delete(&'a str),
}

/// Table slices the snapshot commands cache (4 KiB each): refcount blocks and L2 tables are
/// walked together, and a larger cache writes them back in fewer rounds (each round is a
/// refcount write, a flush, then the L2 slices).
const CACHE_SLICES: usize = 64;

/// The image as the snapshot commands open it (boxed: its cache is 256 KiB).
type Image = Box<Qcow2<File, File, CACHE_SLICES>>;

/// Opens the image for writing (the passphrase is asked only when it is encrypted).
fn open_rw(path: &Path, secret: &SecretArgs) -> Result<Image, Box<dyn Error>> {
    let shown_path = path.display();
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{shown_path}: {e}"))?;
    let (header, _, _) = qluks::qcow2::read_qcow2_header(&mut file).map_err(|e| format!("{shown_path}: {e}"))?;
    let passphrase = match header.crypt_method {
        CryptMethod::None => None,
        _ => Some(secret.get(&format!("Passphrase for {shown_path}: "))?),
    };
    let limits = secret.kdf.limits(&crate::secret::pbkdf2_claims(&mut file));
    let mut q: Image = Box::default();
    q.open_in_with(file, None, passphrase.as_ref().map(|p| p.as_slice()), &limits)
        .map_err(|e| format!("{shown_path}: {e}"))?;
    Ok(q)
}

fn change(args: &SnapshotArgs, change: Change<'_>) -> Result<(), Box<dyn Error>> {
    let path = &args.image;
    let mut q = open_rw(path, &args.secret)?;
    // More than the minimum: table copies go in larger pieces.
    let mut scratch = vec![0u8; q.snapshot_scratch_len().max(64 << 10)];
    let fail = |verb: &str, name: &str, e: &dyn std::fmt::Display| {
        format!("{}: could not {verb} snapshot '{}': {e}", path.display(), shown(name))
    };
    match change {
        Change::Create(name) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let secs = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
            q.snapshot_create(name.as_bytes(), secs, now.subsec_nanos(), &mut scratch)
                .map_err(|e| fail("create", name, &e))?;
        }
        Change::Apply(name) => {
            let s = q.find_snapshot(name.as_bytes()).map_err(|e| fail("apply", name, &e))?;
            q.snapshot_apply(&s, &mut scratch).map_err(|e| fail("apply", name, &e))?;
        }
        Change::Delete(name) => {
            let s = find_by_name_then_id(&mut q, name).map_err(|e| fail("delete", name, &e))?;
            q.snapshot_delete(&s, &mut scratch).map_err(|e| fail("delete", name, &e))?;
        }
    }
    q.flush().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// qemu-img's `-d` lookup (the first snapshot with this name), then by id.
fn find_by_name_then_id(
    q: &mut Qcow2<File, File, CACHE_SLICES>,
    name: &str,
) -> Result<qluks::qcow2::Snapshot, qluks::qcow2::Error<std::io::Error>> {
    let mut by_id = None;
    for s in q.snapshots() {
        let s = s?;
        if !s.name.is_truncated() && s.name.as_bytes() == name.as_bytes() {
            return Ok(s);
        }
        if by_id.is_none() && !s.id.is_truncated() && s.id.as_bytes() == name.as_bytes() {
            by_id = Some(s);
        }
    }
    by_id.ok_or(qluks::qcow2::Error::NoSuchSnapshot)
}

fn list(args: &SnapshotArgs) -> Result<(), Box<dyn Error>> {
    let path = &args.image;
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut q: Qcow2<File> = Qcow2::open_metadata(file, None).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for s in q.snapshots() {
        let s = s.map_err(|e| format!("{}: {e}", path.display()))?;
        rows.push(json!({
            "id": String::from_utf8_lossy(s.id.as_bytes()),
            "name": String::from_utf8_lossy(s.name.as_bytes()),
            "date_sec": s.date_sec,
            "date_nsec": s.date_nsec,
            "vm_clock_nsec": s.vm_clock_nsec,
            "vm_state_size": s.vm_state_size,
            "disk_size": s.disk_size,
            "icount": s.icount,
        }));
    }
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "human" => {
            if !rows.is_empty() {
                print!("Snapshot list:\n{}", table(&rows));
            }
        }
        other => return Err(format!("unknown output format `{other}` (human, json)").into()),
    }
    Ok(())
}

/// qemu-img's snapshot table (dates in UTC).
pub fn table(rows: &[Value]) -> String {
    let mut s = format!("{:<9} {:<16} {:>10} {:>19} {:>15}\n", "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK");
    for r in rows {
        let clock_ns = r["vm_clock_nsec"].as_u64().unwrap_or(0);
        let secs = clock_ns / 1_000_000_000;
        let clock =
            format!("{:04}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, clock_ns / 1_000_000 % 1000);
        let _ = writeln!(
            s,
            "{:<9} {:<16} {:>10} {:>19} {:>15}",
            shown(r["id"].as_str().unwrap_or("")),
            shown(r["name"].as_str().unwrap_or("")),
            format_size(r["vm_state_size"].as_u64().unwrap_or(0)),
            utc(r["date_sec"].as_u64().unwrap_or(0)),
            clock
        );
    }
    s
}

/// qemu's size display: `0 B`, `512 B`, `1.5 MiB`.
fn format_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.3} {}", UNITS[i]).replace(".000 ", " ")
}

/// `YYYY-MM-DD hh:mm:ss` of a Unix time (UTC; Howard Hinnant's days-to-civil).
fn utc(t: u64) -> String {
    let days = (t / 86400) as i64;
    let rem = t % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates_follow_the_civil_calendar() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_764_141_296), "2025-11-26 07:14:56");
    }
}
