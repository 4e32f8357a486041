//! `qluks check [-r leaks|all] [--output human|json] IMAGE`: `qemu-img check` for qcow2
//! images, with its words, its JSON (`ImageCheck`) and its exit codes: 0 clean, 1 check errors
//! or the image cannot be opened, 2 corruptions, 3 leaks only, 63 a format without checks.
//!
//! Only metadata is read: an encrypted image is checked (and repaired) without its passphrase.
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use qluks::qcow2::{CheckResult, Qcow2, Repair};

use crate::json::{self, ImageCheck};
use crate::open::Format;

/// `qluks check` arguments.
#[derive(Args)]
pub struct CheckArgs {
    /// Repair: `leaks` (refcounts too high) or `all` (everything, the refcount structures
    /// rebuilt if needed).
    #[arg(short = 'r', long = "repair", value_enum)]
    repair: Option<RepairArg>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    /// The image's format (`qcow2`; others have no checks); detected when not given.
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<String>,
    /// Accepted for qemu-img command lines: qluks takes no image locks to share.
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// The image.
    image: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RepairArg {
    Leaks,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// Runs `qluks check`; the exit code is qemu-img's.
pub fn run(args: CheckArgs) -> ExitCode {
    match check(&args) {
        Ok(code) => ExitCode::from(code),
        Err((code, msg)) => {
            eprintln!("qluks: {msg}");
            ExitCode::from(code)
        }
    }
}

fn check(args: &CheckArgs) -> Result<u8, (u8, String)> {
    let path = &args.image_opts.path(&args.image).map_err(|e| (1u8, e.to_string()))?;
    let repair = match args.repair {
        None => Repair::None,
        Some(RepairArg::Leaks) => Repair::Leaks,
        Some(RepairArg::All) => Repair::All,
    };
    let open_err = |e: &dyn std::fmt::Display| (1u8, format!("Could not open '{}': {e}", path.display()));
    let mut file = OpenOptions::new().read(true).write(repair != Repair::None).open(path).map_err(|e| open_err(&e))?;
    match crate::open::format_of(&mut file, args.format.as_deref(), path).map_err(|e| open_err(&e))? {
        Format::Qcow2 => {}
        _ => return Err((63, format!("{}: This image format does not support checks", path.display()))),
    }
    let mut q: Qcow2<File> = Qcow2::open_metadata(file, None).map_err(|e| open_err(&e))?;
    let len = q.check_memory_len().map_err(|e| open_err(&e))?;
    let mut memory = vec![0u8; len];
    let mut print = |f: &qluks::qcow2::Finding| eprintln!("{f}");
    let failed = |e: &dyn std::fmt::Display| (1u8, format!("{}: Check failed: {e}", path.display()));
    let mut result = q.check(&mut memory, repair, &mut print).map_err(|e| failed(&e))?;
    if result.corruptions_fixed != 0 || result.leaks_fixed != 0 {
        if args.output == Output::Human {
            println!(
                "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} \
                 corruptions\n\nDouble checking the fixed image now...",
                result.leaks_fixed, result.corruptions_fixed
            );
        }
        let (leaks_fixed, corruptions_fixed) = (result.leaks_fixed, result.corruptions_fixed);
        let len = q.check_memory_len().map_err(|e| failed(&e))?;
        memory = vec![0u8; len];
        result = q.check(&mut memory, Repair::None, &mut print).map_err(|e| failed(&e))?;
        result.leaks_fixed = leaks_fixed;
        result.corruptions_fixed = corruptions_fixed;
    }
    match args.output {
        Output::Human => print!("{}", human(&result)),
        Output::Json => print!("{}", json::pretty(&image_check(path, &result))),
    }
    if result.check_errors != 0 {
        eprintln!("qluks: {}: Check failed", path.display());
        return Ok(1);
    }
    Ok(if result.corruptions != 0 {
        2
    } else if result.leaks != 0 {
        3
    } else {
        0
    })
}

/// qemu-img's `dump_human_image_check`.
fn human(r: &CheckResult) -> String {
    let mut s = String::new();
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        s.push_str("No errors were found on the image.\n");
    } else {
        if r.corruptions != 0 {
            s += &format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may \
                 corrupt it.\n",
                r.corruptions
            );
        }
        if r.leaks != 0 {
            s += &format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                r.leaks
            );
        }
        if r.check_errors != 0 {
            s += &format!("\n{} internal errors have occurred during the check.\n", r.check_errors);
        }
    }
    if r.total_clusters != 0 && r.allocated_clusters != 0 {
        let a = r.allocated_clusters as f64;
        s += &format!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
            r.allocated_clusters,
            r.total_clusters,
            a * 100.0 / r.total_clusters as f64,
            r.fragmented_clusters as f64 * 100.0 / a,
            r.compressed_clusters as f64 * 100.0 / a
        );
    }
    if r.image_end_offset != 0 {
        s += &format!("Image end offset: {}\n", r.image_end_offset);
    }
    s
}

/// qemu-img's `ImageCheck`.
fn image_check(path: &Path, r: &CheckResult) -> ImageCheck {
    ImageCheck {
        filename: path.display().to_string(),
        format: "qcow2".into(),
        check_errors: r.check_errors,
        image_end_offset: r.image_end_offset,
        corruptions: r.corruptions,
        leaks: r.leaks,
        corruptions_fixed: r.corruptions_fixed,
        leaks_fixed: r.leaks_fixed,
        total_clusters: r.total_clusters,
        allocated_clusters: r.allocated_clusters,
        fragmented_clusters: r.fragmented_clusters,
        compressed_clusters: r.compressed_clusters,
    }
}
