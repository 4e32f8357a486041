//! qluks on bare-metal aarch64.
//!
//! Boots on QEMU's `virt` board (`-kernel` with this ELF), finds the disks on virtio-mmio, opens
//! the one named on the command line with qluks (an encrypted qcow2 overlay whose backing file
//! is another disk), unlocks it with the ARMv8 AES backend, reads a range of it, prints the range's
//! SHA-256 and how long the unlock and the read took, and exits 0 only if the digest is the one
//! the host expects. Console, arguments and exit status go through semihosting.
//!
//! There is no heap: no global allocator is defined, so nothing on this path can allocate.
//! Every buffer is a static or on the stack.
#![no_std]
#![no_main]

mod args;
mod boot;
mod cpu;
mod hal_check;
mod image_job;
mod semihosting;
mod static_buf;
mod timer;
mod virtio_blk;

use core::fmt;

use qluks::io::BlockIo;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use args::{Args, Fault, Source};
use static_buf::{StaticBuf, StaticCell};
use timer::Instant;

/// Exit statuses.
pub const EXIT_OK: u32 = 0;
pub const EXIT_DIGEST_MISMATCH: u32 = 1;
pub const EXIT_ERROR: u32 = 2;
pub const EXIT_EXCEPTION: u32 = 3;
pub const EXIT_PANIC: u32 = 4;

/// Reads are issued in chunks of this size (one virtio request each when aligned).
const CHUNK: usize = 1 << 20;
static READ_BUFFER: StaticBuf<CHUNK> = StaticBuf::new();

/// Anything that stops the job, for the console.
enum Failure {
    Args(&'static str),
    NoDisk,
    Cpu(&'static str),
    /// Already printed (errors of the device or the image, whose types vary).
    Reported,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Args(msg) => write!(f, "bad command line: {msg}"),
            Failure::NoDisk => f.write_str("no virtio-blk disk with the serial number given by disk=..."),
            Failure::Cpu(msg) => f.write_str(msg),
            Failure::Reported => f.write_str("stopped"),
        }
    }
}

/// Prints `error` after `what` and turns it into [`Failure::Reported`].
fn report(what: &str, error: impl fmt::Display) -> Failure {
    println!("ERROR: {what}: {error}");
    Failure::Reported
}

/// Called by `boot.rs` on core 0, at EL1, MMU and caches on, `.bss` zeroed.
extern "C" fn main() -> ! {
    println!(
        "qluks bare-metal aarch64: EL{}, generic timer {} Hz, image {} bytes",
        cpu::current_el(),
        timer::counter_hz(),
        cpu::image_size()
    );
    let mut command_line = [0u8; 1024];
    let outcome = job(&mut command_line);
    // The passphrases were in it.
    command_line.zeroize();
    println!("stack used: {} bytes (no heap)", boot::stack_used());
    match outcome {
        Ok((digest, expected)) if digest == expected => {
            println!("digest match: yes");
            semihosting::exit(EXIT_OK)
        }
        Ok((_, expected)) => {
            println!("DIGEST MISMATCH: expected {}", Hex(&expected));
            semihosting::exit(EXIT_DIGEST_MISMATCH)
        }
        Err(Failure::Reported) => semihosting::exit(EXIT_ERROR),
        Err(e) => {
            println!("ERROR: {e}");
            semihosting::exit(EXIT_ERROR)
        }
    }
}

/// Reads the arguments into `command_line` and runs the job; returns the digest of the range
/// and the one expected.
fn job(command_line: &mut [u8]) -> Result<([u8; 32], [u8; 32]), Failure> {
    let line = semihosting::command_line(command_line)
        .ok_or(Failure::Args("the host gave none (run QEMU with -semihosting-config enable=on)"))?;
    let line = core::str::from_utf8(line).map_err(|_| Failure::Args("not UTF-8"))?;
    let args = Args::parse(line).map_err(|e| report("bad command line", e))?;
    Ok((run(&args)?, args.expected_sha256))
}

fn run(args: &Args) -> Result<[u8; 32], Failure> {
    let features = cpu::Features::read();
    println!("cpu: aes={} pmull={} sha256={}", features.aes, features.pmull, features.sha256);
    // The sha2 crate is compiled with `+sha2` (see .cargo/config.toml); without the instructions
    // the first hash would end in an undefined-instruction exception.
    if !features.sha256 {
        return Err(Failure::Cpu("this CPU lacks the SHA-256 instructions this build uses"));
    }
    if features.aes && !args.soft_only {
        // SAFETY: ID_AA64ISAR0_EL1 says this CPU implements FEAT_AES, all that the hal's armv8
        // backend needs, and only this core runs; without an OS there is nothing else to ask.
        unsafe { qluks_hal::Backend::assert_armv8_aes() };
    }

    match args.fault {
        Some(Fault::DataAbort) => {
            // Outside the identity map (see boot.rs): a translation fault the vectors report.
            // SAFETY: deliberately invalid; the exception handler ends the program.
            let v = unsafe { core::ptr::read_volatile(0x8000_0000 as *const u64) };
            println!("read {v:#x} from an unmapped address?!");
        }
        Some(Fault::StackOverflow) => println!("recursed {} times?!", recurse(0)),
        Some(Fault::Panic) => panic!("panic requested on the command line"),
        None => {}
    }

    let hal = hal_check::check().map_err(Failure::Cpu)?;
    println!(
        "hal self-check: {} == soft on {} KiB of AES-256-XTS; {} {}, soft {}",
        hal.backend,
        hal.bytes >> 10,
        hal.backend,
        Rate(hal.bytes as u64, hal.chosen_us),
        Rate(hal.bytes as u64, hal.portable_us)
    );

    let (disks, count) = virtio_blk::discover();
    for disk in disks.iter().take(count).flatten() {
        println!(
            "virtio-blk at {:#x}: {} transport, serial {:?}, {} bytes",
            disk.base(),
            if disk.version() == 2 { "modern" } else { "legacy" },
            Ascii(disk.serial()),
            disk.capacity()
        );
    }
    let mut disks =
        image_job::Disks { disks, passphrase: args.passphrase, backing_passphrase: args.backing_passphrase };
    let mut top = disks.take(args.disk).ok_or(Failure::NoDisk)?;
    let buffer = READ_BUFFER.take().ok_or(Failure::Args("read buffer already in use"))?;

    match args.source {
        Source::Raw => hash_range(args.offset, args.length, buffer, |offset, buf| top.read_at(offset, buf)),
        Source::Image => {
            let requests = virtio_blk::requests();
            let t = Instant::now();
            // The chain (its layers and their table caches) lives in `.bss`, opened in place.
            let chain = CHAIN.take().ok_or(Failure::Args("chain already in use"))?;
            chain.open_in(top, &mut disks).map_err(|e| report("open", e))?;
            let unlock_us = t.elapsed_us();
            let layers = chain.layers().count();
            match image_job::top_backend(chain) {
                Some(backend) => println!("hal backend: {backend}"),
                None => println!("hal backend: none (the image is not encrypted)"),
            }
            println!(
                "unlock time: {} ({layers} layers opened, passphrases checked, {} virtio requests)",
                Millis(unlock_us),
                virtio_blk::requests() - requests
            );
            let scratch = SCRATCH.take().ok_or(Failure::Args("scratch buffer already in use"))?;
            hash_range(args.offset, args.length, buffer, |offset, buf| chain.read_at_with_scratch(offset, buf, scratch))
        }
    }
}

/// The qcow2 chain: `DEPTH` layers with `CACHE_SLICES` cached table slices each, in `.bss`.
static CHAIN: StaticCell<image_job::DiskChain> = StaticCell::new(image_job::DiskChain::new_empty());

/// Unbounded recursion with a 4 KiB frame: runs into the stack guard.
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth as u8; 4096]);
    if depth == u64::MAX {
        return 0;
    }
    core::hint::black_box(recurse(depth + 1)) + u64::from(frame[0])
}

/// Scratch memory for compressed clusters (`compressed_scratch_len`: three clusters), enough
/// for clusters up to 1 MiB. Encrypted images have none; unencrypted ones may.
static SCRATCH: StaticBuf<{ 3 << 20 }> = StaticBuf::new();

/// Reads `length` bytes from `offset` in chunks through `read`, hashes them, prints the timings.
fn hash_range<E: fmt::Display>(
    offset: u64,
    length: u64,
    buffer: &mut [u8],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<[u8; 32], Failure> {
    let mut hasher = Sha256::new();
    let mut read_us = 0;
    let mut hash_us = 0;
    let mut done = 0u64;
    let requests = virtio_blk::requests();
    while done < length {
        let n = (length - done).min(buffer.len() as u64) as usize;
        let t = Instant::now();
        read(offset + done, &mut buffer[..n]).map_err(|e| report("read", e))?;
        read_us += t.elapsed_us();
        let t = Instant::now();
        hasher.update(&buffer[..n]);
        hash_us += t.elapsed_us();
        done += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    println!(
        "read time: {} ({length} bytes at {offset:#x}, {}, {} virtio requests)",
        Millis(read_us),
        Rate(length, read_us),
        virtio_blk::requests() - requests
    );
    println!("hash time: {} ({})", Millis(hash_us), Rate(length, hash_us));
    println!("sha256: {}", Hex(&digest));
    Ok(digest)
}

/// Microseconds shown as milliseconds with three decimals.
struct Millis(u64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} ms", self.0 / 1000, self.0 % 1000)
    }
}

/// Bytes over microseconds, in MiB/s.
struct Rate(u64, u64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_s = u128::from(self.0) * 1_000_000 / u128::from(self.1.max(1));
        let centi_mib = per_s * 100 / (1 << 20);
        write!(f, "{}.{:02} MiB/s", centi_mib / 100, centi_mib % 100)
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

struct Ascii<'a>(&'a [u8]);

impl fmt::Debug for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("PANIC: {info}");
    semihosting::exit(EXIT_PANIC)
}
