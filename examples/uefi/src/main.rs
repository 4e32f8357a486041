//! qluks as a UEFI application: unlocks a LUKS2 partition found in a GPT (job A) or an
//! encrypted qcow2 chain stored as files on the ESP (job B), reads a range, and checks its
//! SHA-256 — on the firmware's own stack, with memory from `AllocatePages` and no heap.
//!
//! Output is on the console (`ConOut`); the status is the application's return status, and
//! with `exit=qemu` it also reaches QEMU's exit status (see `platform::exit_qemu`). See
//! `args.rs` for the arguments and `run.sh` for how the example is booted.
#![no_std]
#![no_main]

mod args;
mod console;
mod disk;
mod esp;
mod gpt;
mod jobs;
mod pages;
mod platform;

use core::fmt;

use uefi::mem::memory_map::MemoryMap;
use uefi::prelude::*;
use uefi::println;
use zeroize::Zeroize;

use args::{Args, Job, MAX_LINE};
use platform::{Clock, EXIT_DIGEST_MISMATCH, EXIT_ERROR, EXIT_OK, EXIT_PANIC};

#[entry]
fn main() -> Status {
    let entry_sp = platform::stack_pointer();
    let mut line = [0u8; MAX_LINE];
    let (code, exit_qemu) = run(&mut line, entry_sp);
    // The passphrases may have been in it.
    line.zeroize();
    println!("exit status: {code}");
    if exit_qemu {
        platform::exit_qemu(code);
    }
    match code {
        EXIT_OK => Status::SUCCESS,
        EXIT_DIGEST_MISMATCH => Status::CRC_ERROR,
        _ => Status::ABORTED,
    }
}

fn run(line: &mut [u8; MAX_LINE], entry_sp: usize) -> (u32, bool) {
    println!(
        "qluks UEFI ({}): firmware {} rev {:#x}, UEFI {}",
        if cfg!(target_arch = "x86_64") { "x86_64" } else { "aarch64" },
        uefi::system::firmware_vendor(),
        uefi::system::firmware_revision(),
        uefi::system::uefi_revision()
    );
    let image = match boot::open_protocol_exclusive::<uefi::proto::loaded_image::LoadedImage>(boot::image_handle()) {
        Ok(image) => image,
        Err(e) => {
            println!("ERROR: LoadedImage: {:?}", e.status());
            return (EXIT_ERROR, false);
        }
    };
    let text = match image.load_options_as_cstr16() {
        Ok(options) => args::narrow(options, line),
        Err(_) => Err("no load options (run from the shell: qluks-uefi.efi job=... ; see args.rs)"),
    };
    drop(image);
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            println!("ERROR: arguments: {e}");
            return (EXIT_ERROR, false);
        }
    };
    let exit_qemu = text.split_ascii_whitespace().any(|w| w == "exit=qemu");
    let args = match Args::parse(text) {
        Ok(args) => args,
        Err(e) => {
            println!("ERROR: arguments: {e}");
            return (EXIT_ERROR, exit_qemu);
        }
    };
    (job(&args, entry_sp), exit_qemu)
}

/// How many bytes below `sp` the firmware's memory map says are this program's: the extent of
/// the allocation holding the stack.
fn stack_room(sp: usize) -> Option<(usize, uefi::boot::MemoryType)> {
    let map = boot::memory_map(boot::MemoryType::LOADER_DATA).ok()?;
    let sp = sp as u64;
    map.entries().find_map(|d| {
        let end = d.phys_start + d.page_count * 4096;
        (d.phys_start <= sp && sp < end).then(|| ((sp - d.phys_start) as usize, d.ty))
    })
}

fn job(args: &Args<'_>, entry_sp: usize) -> u32 {
    let clock = Clock::new();
    println!("clock: {} Hz", clock.hz());
    #[cfg(target_arch = "aarch64")]
    {
        let aes = platform::armv8_aes();
        println!("cpu: ARMv8 AES instructions: {}", if aes { "yes" } else { "no" });
        if aes && !args.soft {
            // SAFETY: ID_AA64ISAR0_EL1 says this CPU implements FEAT_AES, all that the hal's
            // armv8 backend needs; the application runs on this one processor.
            unsafe { qluks_hal::Backend::assert_armv8_aes() };
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(unused_unsafe)] // CPUID is a safe intrinsic in newer Rust
        // SAFETY: CPUID leaves 1 and 7 exist on every x86_64 CPU; it only reads ID registers.
        let (leaf1, leaf7) = unsafe { (core::arch::x86_64::__cpuid(1), core::arch::x86_64::__cpuid_count(7, 0)) };
        let bit = |reg: u32, n: u32| if reg >> n & 1 == 1 { "yes" } else { "no" };
        println!(
            "cpu: AES-NI {}, AVX2 {}, VAES {}, VPCLMULQDQ {}, AVX-512F {}, AVX state enabled by the firmware (OSXSAVE) {}",
            bit(leaf1.ecx, 25),
            bit(leaf7.ebx, 5),
            bit(leaf7.ecx, 9),
            bit(leaf7.ecx, 10),
            bit(leaf7.ebx, 16),
            bit(leaf1.ecx, 27)
        );
    }
    // (Not asked through `Backend::best`, which caches its answer: the AVX state comes first.)
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if args.soft {
        println!("ERROR: backend=soft: on x86 the backend follows the build (the soft-float build has only soft)");
        return EXIT_ERROR;
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    let avx_state = platform::enable_avx_state();
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if avx_state.is_some() {
        println!("cpu: AVX state enabled for this program (CR4.OSXSAVE, XCR0); restored when it ends");
    }
    println!("best hal backend here: {}", qluks_hal::Backend::best());

    // Paint the free stack below here (within the allocation the stack lies in), run the job,
    // and see how deep it went.
    let sp = platform::stack_pointer();
    let room = stack_room(sp);
    let paint = match room {
        Some((below, ty)) => {
            println!("stack: {} KiB below the stack pointer in a {:?} region", below / 1024, ty);
            // A page is left alone at the bottom (a guard page may follow).
            (args.paint_kib * 1024).min(below.saturating_sub(4096))
        }
        None => {
            println!("stack: not found in the memory map; not painted");
            0
        }
    };
    // SAFETY: `paint` bytes below the stack pointer lie inside the allocation that holds the
    // stack (the memory map says so) and hold no live data (no red zone on UEFI targets).
    let painted = (paint > 4096).then(|| unsafe { platform::paint_stack(paint) });

    let outcome = run_job(args, &clock);

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if let Some(saved) = avx_state {
        platform::restore_avx_state(saved);
    }
    match painted {
        Some(range) => match platform::stack_reach(range, entry_sp) {
            Some(used) => println!(
                "stack used: {used} bytes below the entry point's stack pointer (painted {} KiB)",
                paint / 1024
            ),
            None => println!("stack used: more than the {} KiB painted", paint / 1024),
        },
        None => println!("stack used: not measured"),
    }
    match outcome {
        Ok(digest) if digest == args.expected_sha256 => {
            println!("digest match: yes");
            EXIT_OK
        }
        Ok(_) => {
            println!("DIGEST MISMATCH: expected {}", Hex(&args.expected_sha256));
            EXIT_DIGEST_MISMATCH
        }
        Err(jobs::Failed) => EXIT_ERROR,
    }
}

#[inline(never)]
fn run_job(args: &Args<'_>, clock: &Clock) -> Result<[u8; 32], jobs::Failed> {
    match args.job {
        Job::Luks2 => jobs::luks2_partition(args, clock),
        Job::Qcow2 => jobs::qcow2_chain(args, clock),
        Job::DiskWrite => jobs::disk_write(args, clock),
    }
}

/// Microseconds shown as milliseconds with three decimals.
pub struct Millis(pub u64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} ms", self.0 / 1000, self.0 % 1000)
    }
}

/// Bytes over microseconds, in MiB/s.
pub struct Rate(pub u64, pub u64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_s = u128::from(self.0) * 1_000_000 / u128::from(self.1.max(1));
        let centi_mib = per_s * 100 / (1 << 20);
        write!(f, "{}.{:02} MiB/s", centi_mib / 100, centi_mib % 100)
    }
}

pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("PANIC: {info}");
    platform::exit_qemu(EXIT_PANIC);
    loop {
        core::hint::spin_loop();
    }
}
