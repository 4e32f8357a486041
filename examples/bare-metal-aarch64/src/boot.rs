//! Entry code: from reset state to Rust, and the exception vectors.
//!
//! `_start` runs with the MMU and caches off, on whatever core the loader started, at EL2 or EL1.
//! It parks every core but core 0, drops from EL2 to EL1 if needed, enables FP/SIMD (the compiler
//! uses NEON registers everywhere, even for copies, so this must come before any Rust code),
//! installs the vectors, turns on the MMU with an identity map, zeroes `.bss`, sets the stack and
//! calls [`crate::main`].
//!
//! Why the MMU is on: with it off every data access is Device-nGnRnE, where any unaligned
//! access faults whatever `SCTLR_EL1.A` says and nothing is cached. The target already compiles
//! with `+strict-align`, but on real hardware uncached RAM is ~100x slower, and an identity map
//! costs two small tables. RAM is Normal write-back; the low gigabyte (flash, GIC, UART,
//! virtio-mmio) is Device-nGnRnE and never executable; the 2 MiB below the stack are unmapped, a
//! guard that turns a stack overflow into a reported fault (without it, the deep copies of
//! by-value APIs overflow silently into `.bss`).

use core::arch::global_asm;

/// MAIR_EL1: attribute 0 = Device-nGnRnE, attribute 1 = Normal, inner/outer write-back
/// read/write-allocate.
const MAIR: u64 = MAIR_DEVICE_NGNRNE | (MAIR_NORMAL_WRITE_BACK << 8);
const MAIR_DEVICE_NGNRNE: u64 = 0x00;
const MAIR_NORMAL_WRITE_BACK: u64 = 0xff;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;

/// TCR_EL1: 32-bit (4 GiB) input range from TTBR0 (T0SZ = 32, so the walk starts at level 1 with
/// 1 GiB blocks), 4 KiB granule, table walks inner shareable and write-back cacheable, TTBR1
/// walks disabled (EPD1), 32-bit physical addresses (IPS = 0, supported by every core).
const TCR: u64 = 32 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23);

const BLOCK: u64 = 0b01;
const ACCESS_FLAG: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

const TABLE: u64 = 0b11;
const RAM_START: u64 = 0x4000_0000;
const BLOCK_2M: u64 = 2 << 20;
/// The 2 MiB block below the stack, left unmapped so that a stack overflow faults instead of
/// silently overwriting memory (`link.ld` puts the stack right above it).
const STACK_GUARD: u64 = RAM_START;

/// The level-1 table (4 entries of 1 GiB, in the assembly below, because its second entry is
/// the address of the level-2 table, which only the linker knows): `virt` has every device
/// below 1 GiB (Device-nGnRnE, never executable) and RAM from 1 GiB, mapped through
/// [`BOOT_L2_TABLE`]. Only the first GiB of RAM is mapped (the runner gives the guest far less),
/// so an access past it faults visibly.
const L1_DEVICE_ENTRY: u64 = BLOCK | ACCESS_FLAG | ATTR_DEVICE | PXN | UXN;

/// The level-2 table of the first GiB of RAM: 2 MiB blocks of Normal memory, but for the
/// stack guard.
#[repr(C, align(4096))]
struct PageTable([u64; 512]);

#[no_mangle]
static BOOT_L2_TABLE: PageTable = {
    let mut t = [0u64; 512];
    let mut i = 0;
    while i < 512 {
        let address = RAM_START + i as u64 * BLOCK_2M;
        if address != STACK_GUARD {
            t[i] = address | BLOCK | ACCESS_FLAG | ATTR_NORMAL | INNER_SHAREABLE;
        }
        i += 1;
    }
    PageTable(t)
};

/// SCTLR_EL1 bits: M (MMU), C (data cache), I (instruction cache); A (alignment check) cleared.
const SCTLR_SET: u64 = (1 << 0) | (1 << 2) | (1 << 12);
const SCTLR_CLEAR: u64 = 1 << 1;

/// HCR_EL2.RW: EL1 is AArch64.
const HCR_EL2_RW: u64 = 1 << 31;
/// SPSR for the drop to EL1: EL1h, D/A/I/F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// CPTR_EL2 without any trap (TFP cleared), RES1 bits set.
const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;
/// CPACR_EL1.FPEN = 0b11: FP/SIMD usable at EL1 and EL0 without trapping.
const CPACR_FPEN: u64 = 0b11 << 20;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // Only core 0 runs; the others wait forever (QEMU starts one core; real boards start all).
    mrs     x0, mpidr_el1
    and     x0, x0, #0xff
    cbnz    x0, park

    mrs     x0, CurrentEL
    lsr     x0, x0, #2
    cmp     x0, #2
    b.ne    at_el1

    // EL2 (e.g. the Raspberry Pi firmware): give EL1 the counter and FP, then drop to EL1.
    ldr     x0, ={hcr}
    msr     hcr_el2, x0
    mrs     x0, cnthctl_el2
    orr     x0, x0, #3          // EL1PCTEN | EL1PCEN
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    ldr     x0, ={cptr}
    msr     cptr_el2, x0
    ldr     x0, ={spsr}
    msr     spsr_el2, x0
    adr     x0, at_el1
    msr     elr_el2, x0
    eret

at_el1:
    ldr     x0, ={cpacr}
    msr     cpacr_el1, x0
    isb

    adrp    x0, exception_vectors
    add     x0, x0, :lo12:exception_vectors
    msr     vbar_el1, x0

    ldr     x0, ={mair}
    msr     mair_el1, x0
    ldr     x0, ={tcr}
    msr     tcr_el1, x0
    adrp    x0, boot_l1_table
    add     x0, x0, :lo12:boot_l1_table
    msr     ttbr0_el1, x0
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    mrs     x0, sctlr_el1
    ldr     x1, ={sctlr_set}
    orr     x0, x0, x1
    bic     x0, x0, #{sctlr_clear}
    msr     sctlr_el1, x0
    isb

    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:
    // Paint the stack, so that `stack_used` can tell how deep it ever got.
    adrp    x0, __stack_bottom
    add     x0, x0, :lo12:__stack_bottom
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    ldr     x2, ={paint}
3:  cmp     x0, x1
    b.hs    4f
    stp     x2, x2, [x0], #16
    b       3b
4:
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    bl      {main}

park:
    wfe
    b       park

    .section .stack, "aw", %nobits
    .balign 16
    .space  {stack_size}

    .section .exception_stack, "aw", %nobits
    .balign 16
    .space  {exception_stack_size}

    .section .rodata.boot_l1_table, "a"
    .balign 4096
boot_l1_table:
    .quad   {l1_device}
    .quad   BOOT_L2_TABLE + {table}
    .quad   0
    .quad   0

    // VBAR_EL1 needs 2 KiB alignment; 16 entries of 0x80 bytes: (current EL with SP0, current EL
    // with SPx, lower EL AArch64, lower EL AArch32) x (synchronous, IRQ, FIQ, SError).
    .section .text.vectors, "ax"
    .balign 0x800
exception_vectors:
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 0x80
    mov     x0, #\kind
    b       exception_common
    .endr

exception_common:
    // A fresh stack: the fault may be a stack overflow.
    adrp    x4, __exception_stack_top
    add     x4, x4, :lo12:__exception_stack_top
    mov     sp, x4
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    bl      {on_exception}
    b       park
"#,
    hcr = const HCR_EL2_RW,
    cptr = const CPTR_EL2_NO_TRAPS,
    spsr = const SPSR_EL1H_MASKED,
    cpacr = const CPACR_FPEN,
    mair = const MAIR,
    tcr = const TCR,
    sctlr_set = const SCTLR_SET,
    sctlr_clear = const SCTLR_CLEAR,
    paint = const STACK_PAINT,
    stack_size = const STACK_SIZE,
    exception_stack_size = const EXCEPTION_STACK_SIZE,
    l1_device = const L1_DEVICE_ENTRY,
    table = const TABLE,
    main = sym crate::main,
    on_exception = sym on_exception,
);

/// The stack: qluks's budget. The chain of images (its layers and table caches) is a static
/// opened in place, not on the stack; the job's deepest use is about 37 KB (`stack used`).
const STACK_SIZE: usize = 64 << 10;
/// The exception handler's own stack (the fault may be a stack overflow).
const EXCEPTION_STACK_SIZE: usize = 16 << 10;

/// What an untouched stack word holds.
const STACK_PAINT: u64 = 0x5354_4143_4b21_5354;

/// The deepest the stack has been so far, in bytes (from the paint left by `_start`).
pub fn stack_used() -> usize {
    extern "C" {
        static __stack_bottom: u64;
        static __stack_top: u64;
    }
    let bottom = core::ptr::addr_of!(__stack_bottom);
    let top = core::ptr::addr_of!(__stack_top) as usize;
    let mut p = bottom;
    // SAFETY: [bottom, top) is the stack region of the linker script, mapped and 8-byte aligned;
    // volatile reads of words below the current stack pointer.
    while (p as usize) < top && unsafe { core::ptr::read_volatile(p) } == STACK_PAINT {
        p = p.wrapping_add(1);
    }
    top - p as usize
}

const VECTOR_NAMES: [&str; 16] = [
    "synchronous (current EL, SP0)",
    "IRQ (current EL, SP0)",
    "FIQ (current EL, SP0)",
    "SError (current EL, SP0)",
    "synchronous",
    "IRQ",
    "FIQ",
    "SError",
    "synchronous (lower EL, AArch64)",
    "IRQ (lower EL, AArch64)",
    "FIQ (lower EL, AArch64)",
    "SError (lower EL, AArch64)",
    "synchronous (lower EL, AArch32)",
    "IRQ (lower EL, AArch32)",
    "FIQ (lower EL, AArch32)",
    "SError (lower EL, AArch32)",
];

/// What ESR_EL1.EC means, for the classes a bug here can raise.
fn exception_class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x07 => "FP/SIMD access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x18 => "system register access trapped",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Reports an exception and stops with exit status 3. Never returns.
extern "C" fn on_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    let ec = (esr >> 26) & 0x3f;
    let name = VECTOR_NAMES.get(kind as usize).copied().unwrap_or("?");
    if (0x24..=0x25).contains(&ec) && (STACK_GUARD..STACK_GUARD + BLOCK_2M).contains(&far) {
        crate::println!("EXCEPTION: stack overflow (access at {far:#x}, in the guard below the stack)");
    }
    crate::println!(
        "EXCEPTION: {name}: EC={ec:#04x} ({}) ESR_EL1={esr:#x} ELR_EL1={elr:#x} FAR_EL1={far:#x}",
        exception_class_name(ec)
    );
    crate::semihosting::exit(crate::EXIT_EXCEPTION)
}
