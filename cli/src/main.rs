//! `qluks`: the command line.
#![forbid(unsafe_code)]
use clap::{Parser, Subcommand};

mod cmd;
mod cpu_time;
mod escape;
mod image_open;
mod image_opts;
mod json;
mod luks2_memory;
mod open;
mod progress;
mod secret;
mod units;

use cmd::{amend, bench, check, commit, compare, convert, create, dd, demo, info, io as io_cmd, luks as luks_cmd};
use cmd::{map, measure, rebase, resize, snapshot};

#[derive(Parser)]
#[command(name = "qluks", version, about = "Open QEMU disk images and LUKS volumes, encrypted ones above all")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on a built-in default: self-check, LUKS round trip, qcow2+LUKS chain vs qemu-img.
    Demo,
    /// Throughput of the crypto core per backend (`bench xts --help`).
    Bench(bench::BenchArgs),
    /// Describe an image (format, cipher, keyslots) without unlocking it.
    Info(info::InfoArgs),
    /// Copy an image's plaintext to a raw file or a new qcow2 image (-O qcow2 -o OPTIONS).
    Convert(convert::ConvertArgs),
    /// Create an image (`-f qcow2` with qemu-img's `-o` options, or LUKS1/LUKS2 volumes).
    Create(create::CreateArgs),
    /// Read and write an image's plaintext, qemu-io style (`-c 'read -P 0xab 0 64k'`).
    Io(io_cmd::IoArgs),
    /// LUKS keyslot management.
    Luks(luks_cmd::LuksArgs),
    /// Allocation map of a qcow2 image and its backing chain (like `qemu-img map`).
    Map(map::MapArgs),
    /// Internal snapshots of a qcow2 image (`-l` lists, `-c` creates, `-a` applies, `-d` deletes).
    Snapshot(snapshot::SnapshotArgs),
    /// Compare the guest-visible content of two images.
    Compare(compare::CompareArgs),
    /// Check a qcow2 image's refcounts and repair them (like `qemu-img check [-r leaks|all]`).
    Check(check::CheckArgs),
    /// Commit a qcow2 overlay into its backing file (like `qemu-img commit`).
    Commit(commit::CommitArgs),
    /// Change the backing file of a qcow2 image (like `qemu-img rebase`; `-u`: header only).
    Rebase(rebase::RebaseArgs),
    /// Change the virtual size of a qcow2 (or raw) image (`--shrink` to make it smaller).
    Resize(resize::ResizeArgs),
    /// Add or erase keyslots of a LUKS-encrypted qcow2 image (`-o encrypt.state=...`).
    Amend(amend::AmendArgs),
    /// Copy an image's plaintext, dd style (like `qemu-img dd bs=N count=N skip=N if=IN of=OUT`).
    Dd(dd::DdArgs),
    /// Size a new image would need (like `qemu-img measure`).
    Measure(measure::MeasureArgs),
}

/// A usage error as one line, qemu-img's words where it has them:
/// `qluks info: unrecognized option '-x' (try 'qluks info --help')`.
fn usage_error(e: &clap::Error, args: &[String]) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    // The (sub)command the arguments name: `qluks`, `qluks info`, `qluks luks add-key`.
    let mut name = String::from("qluks");
    let mut cmd = Cli::command();
    for a in args.iter().filter(|a| !a.starts_with('-')) {
        match cmd.find_subcommand(a) {
            Some(sub) => {
                name = format!("{name} {}", sub.get_name());
                cmd = sub.clone();
            }
            None => break,
        }
    }
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(", "),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let what = match e.kind() {
        ErrorKind::UnknownArgument => {
            let arg = context(ContextKind::InvalidArg);
            let arg = arg.split_once('=').filter(|_| arg.starts_with("--")).map_or(arg.as_str(), |(a, _)| a);
            format!("unrecognized option '{arg}'")
        }
        ErrorKind::InvalidSubcommand => format!("Command not found: {}", context(ContextKind::InvalidSubcommand)),
        ErrorKind::MissingRequiredArgument => format!("missing argument {}", context(ContextKind::InvalidArg)),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "Not enough arguments: a command is needed".to_string()
        }
        // Other kinds: clap's own first line, without its `error: ` prefix.
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        }
    };
    format!("{name}: {what} (try '{name} --help')")
}

fn main() -> std::process::ExitCode {
    // Usage errors exit with 1, as qemu-img's do (help and version: 0).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            let args: Vec<String> = std::env::args().skip(1).collect();
            eprintln!("{}", usage_error(&e, &args));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(args),
        Command::Info(args) => info::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Create(args) => create::run(args),
        Command::Io(args) => io_cmd::run(args),
        Command::Luks(args) => luks_cmd::run(args),
        Command::Map(args) => map::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Compare(args) => return compare::run(args),
        Command::Check(args) => return check::run(args),
        Command::Commit(args) => commit::run(args),
        Command::Rebase(args) => rebase::run(args),
        Command::Resize(args) => resize::run(args),
        Command::Amend(args) => amend::run(args),
        Command::Dd(args) => dd::run(args),
        Command::Measure(args) => measure::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qluks: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
