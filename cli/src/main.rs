//! `qluks`: the command line.
use clap::{Parser, Subcommand};

mod bench;
mod bench_pbkdf2;
mod demo;

#[derive(Parser)]
#[command(name = "qluks", version, about = "Open QEMU disk images and LUKS volumes, encrypted ones above all")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Self-check and short throughput table (the main job on a built-in default).
    Demo,
    /// Throughput of the crypto core per backend (`bench xts --help`).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qluks: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
