//! `qluks`: the command line.
use clap::{Parser, Subcommand};

mod amend;
mod bench;
mod bench_pbkdf2;
mod check;
mod commit;
mod compare;
mod convert;
mod convert_qcow2;
mod convert_to_qcow2;
mod cpu_time;
mod create;
mod create_qcow2;
mod dd;
mod demo;
mod escape;
mod image_open;
mod image_opts;
mod info;
mod io_cmd;
mod luks2_create;
mod luks2_info;
mod luks_cmd;
mod map;
mod open;
mod progress;
mod qcow2_info;
mod rebase;
mod resize;
mod secret;
mod snapshot;
mod units;

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
}

fn main() -> std::process::ExitCode {
    // Usage errors exit with 1, as qemu-img's do (help and version: 0).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS };
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qluks: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
