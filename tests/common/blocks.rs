//! A device that moves only whole blocks into aligned buffers (what a firmware block driver
//! offers) and panics on any other request, for tests that the engines honour
//! `BlockIo::block_size()` / `io_align()`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use qluks::io::BlockIo;

/// Buffer alignment the device demands.
pub const ALIGN: usize = 16;

/// Whole `BLOCK`-byte blocks at block-aligned offsets into 16-byte-aligned buffers, or a
/// panic. Its size is the file's rounded up to whole blocks (zeros past the file's end), as a
/// disk's would be.
pub struct Blocks<const BLOCK: u64 = 512> {
    file: File,
    /// Requests served.
    pub requests: u64,
}

impl<const BLOCK: u64> Blocks<BLOCK> {
    /// The device over the file at `path` (read-only).
    pub fn open(path: &Path) -> Self {
        Blocks { file: File::open(path).unwrap(), requests: 0 }
    }
}

impl<const BLOCK: u64> BlockIo for Blocks<BLOCK> {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.requests += 1;
        let whole = offset.is_multiple_of(BLOCK) && (buf.len() as u64).is_multiple_of(BLOCK);
        if !whole || !(buf.as_ptr() as usize).is_multiple_of(ALIGN) {
            let addr = buf.as_ptr() as usize;
            panic!(
                "request of {} bytes at {offset:#x} into {addr:#x} is not whole aligned {BLOCK}-byte blocks",
                buf.len()
            );
        }
        let len = self.file.metadata()?.len();
        buf.fill(0);
        let have = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.file.read_exact_at(&mut buf[..have], offset)
    }
    fn size(&mut self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len().next_multiple_of(BLOCK))
    }
    fn block_size(&self) -> usize {
        BLOCK as usize
    }
    fn io_align(&self) -> usize {
        ALIGN
    }
}
