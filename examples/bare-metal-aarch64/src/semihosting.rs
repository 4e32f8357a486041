//! ARM semihosting: console output, the command line and the exit status, served by the host
//! (QEMU with `-semihosting-config enable=on,target=native`).
//!
//! A call is `HLT #0xF000` with the operation in `w0` and a pointer to its parameter block in
//! `x1`; the result comes back in `x0`. Nothing else of the host is used: the disks come through
//! virtio-blk, like on a real machine.

use core::arch::asm;
use core::fmt;

const SYS_WRITE0: u64 = 0x04;
const SYS_GET_CMDLINE: u64 = 0x15;
const SYS_EXIT: u64 = 0x18;
/// SYS_EXIT reason: the program finished; the second word of the block is its exit status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

fn call(op: u64, block: *const u64) -> u64 {
    let ret: u64;
    // SAFETY: the semihosting trap only reads/writes the parameter block and the memory it
    // points to, all of which the callers keep alive across the call.
    unsafe { asm!("hlt #0xf000", inout("x0") op => ret, in("x1") block, options(nostack)) };
    ret
}

/// Ends the program; the host (QEMU) exits with `status`.
pub fn exit(status: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    call(SYS_EXIT, block.as_ptr());
    // Only reached if the host ignored the request.
    loop {
        core::hint::spin_loop();
    }
}

/// Copies the command line (`-append`, after the kernel's file name) into `buf`; returns the
/// part that was filled, or `None` if the host refused.
pub fn command_line(buf: &mut [u8]) -> Option<&[u8]> {
    let mut block = [buf.as_mut_ptr() as u64, buf.len() as u64];
    if call(SYS_GET_CMDLINE, block.as_mut_ptr()) != 0 {
        return None;
    }
    let len = (block[1] as usize).min(buf.len());
    Some(&buf[..len])
}

/// Console output, buffered into lines of at most 255 bytes (SYS_WRITE0 writes a NUL-terminated
/// string, so each flush appends the NUL).
pub struct Console {
    buf: [u8; 256],
    len: usize,
}

impl Console {
    pub const fn new() -> Console {
        Console { buf: [0; 256], len: 0 }
    }

    pub fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        self.buf[self.len] = 0;
        call(SYS_WRITE0, self.buf.as_ptr() as *const u64);
        self.len = 0;
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            // A NUL would end the string early on the host side.
            self.buf[self.len] = if b == 0 { b'?' } else { b };
            self.len += 1;
            if b == b'\n' || self.len == self.buf.len() - 1 {
                self.flush();
            }
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Prints a line on the host's console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut console = $crate::semihosting::Console::new();
        let _ = writeln!(console, $($arg)*);
    }};
}
