//! [`qluks::io::BlockIo`] over the firmware's `EFI_BLOCK_IO_PROTOCOL`, and a window onto one
//! partition of such a disk.
//!
//! The protocol moves whole blocks (`BlockSize`) into buffers aligned to `IoAlign`. Requests
//! whose offset, length and buffer fit go straight through (one `ReadBlocks` for a whole run);
//! the rest go through page-aligned bounce memory: unaligned heads and tails are read whole
//! and copied out, or read, modified and written back.

use core::fmt;

use qluks::io::{BlockIo, ReadOnly};
use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol};
use uefi::proto::media::block::BlockIO;
use uefi::{Handle, Status};

use crate::pages::{Pages, PAGE};

/// Bounce memory per disk: unaligned requests move through it in runs of this size.
const BOUNCE: usize = 256 * 1024;

#[derive(Debug)]
pub enum DiskError {
    Firmware { op: &'static str, status: Status },
    OutOfRange { offset: u64, len: usize, size: u64 },
    Unsupported(&'static str),
    ReadOnly,
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Firmware { op, status } => write!(f, "{op} failed: {status:?}"),
            DiskError::OutOfRange { offset, len, size } => {
                write!(f, "{len} bytes at {offset} run past the end of the device ({size} bytes)")
            }
            DiskError::Unsupported(what) => f.write_str(what),
            DiskError::ReadOnly => f.write_str("the device is read-only"),
        }
    }
}

impl From<ReadOnly> for DiskError {
    fn from(_: ReadOnly) -> Self {
        DiskError::ReadOnly
    }
}

/// Maps a failed firmware call `op` to [`DiskError::Firmware`].
fn firmware(op: &'static str) -> impl FnOnce(uefi::Error) -> DiskError {
    move |e| DiskError::Firmware { op, status: e.status() }
}

/// A whole disk (or any handle with BlockIO) as a byte-addressed device.
pub struct EfiDisk {
    proto: ScopedProtocol<BlockIO>,
    media_id: u32,
    block: usize,
    size: u64,
    align: usize,
    read_only: bool,
    bounce: Pages,
    /// Requests made to the firmware (reads, writes and flushes).
    pub requests: u64,
}

impl EfiDisk {
    /// Opens BlockIO on `handle` without taking it from the drivers that use it (the ESP's file
    /// system sits on the same kind of protocol).
    pub fn open(handle: Handle) -> Result<EfiDisk, DiskError> {
        let params = OpenProtocolParams { handle, agent: boot::image_handle(), controller: None };
        // SAFETY: GET_PROTOCOL leaves the drivers attached; the program only reads through the
        // protocol while the handle exists (nothing here disconnects or uninstalls it).
        let proto = unsafe { boot::open_protocol::<BlockIO>(params, OpenProtocolAttributes::GetProtocol) }
            .map_err(firmware("OpenProtocol(BlockIO)"))?;
        let media = proto.media();
        if !media.is_media_present() {
            return Err(DiskError::Unsupported("no media present"));
        }
        let block = media.block_size() as usize;
        if !block.is_power_of_two() || block > BOUNCE {
            return Err(DiskError::Unsupported("block size is not a power of two up to 256 KiB"));
        }
        let align = (media.io_align() as usize).max(1);
        if !align.is_power_of_two() || align > PAGE {
            return Err(DiskError::Unsupported("IoAlign is not a power of two up to 4 KiB"));
        }
        let size = (media.last_block() + 1)
            .checked_mul(block as u64)
            .ok_or(DiskError::Unsupported("the disk's size overflows"))?;
        let bounce = Pages::allocate(BOUNCE).map_err(firmware("AllocatePages(bounce)"))?;
        Ok(EfiDisk {
            media_id: media.media_id(),
            read_only: media.is_read_only(),
            proto,
            block,
            size,
            align,
            bounce,
            requests: 0,
        })
    }

    pub fn is_logical_partition(&self) -> bool {
        self.proto.media().is_logical_partition()
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// The firmware's IoAlign for this disk (what the adapter honours).
    pub fn firmware_align(&self) -> usize {
        self.align
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), DiskError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(DiskError::OutOfRange { offset, len, size: self.size }),
        }
    }

    /// Whether `len` bytes at `offset` into `ptr` can go to the firmware as they are.
    fn direct(&self, offset: u64, len: usize, ptr: *const u8) -> bool {
        offset.is_multiple_of(self.block as u64)
            && len.is_multiple_of(self.block)
            && len > 0
            && (ptr as usize).is_multiple_of(self.align)
    }

    fn read_blocks(&mut self, lba: u64, into_bounce: usize) -> Result<(), DiskError> {
        self.requests += 1;
        let media = self.media_id;
        let buf = &mut self.bounce.as_mut_slice()[..into_bounce];
        self.proto.read_blocks(media, lba, buf).map_err(firmware("ReadBlocks"))
    }

    fn write_bounce(&mut self, lba: u64, len: usize) -> Result<(), DiskError> {
        self.requests += 1;
        let media = self.media_id;
        let buf = &self.bounce.as_mut_slice()[..len];
        self.proto.write_blocks(media, lba, buf).map_err(firmware("WriteBlocks"))
    }
}

impl BlockIo for EfiDisk {
    type Error = DiskError;

    fn read_at(&mut self, mut offset: u64, mut buf: &mut [u8]) -> Result<(), DiskError> {
        self.check(offset, buf.len())?;
        let block = self.block as u64;
        while !buf.is_empty() {
            let within = (offset % block) as usize;
            let whole = buf.len() / self.block * self.block;
            if within == 0 && self.direct(offset, whole, buf.as_ptr()) {
                // The aligned run, straight into the caller's buffer.
                self.requests += 1;
                let (now, rest) = buf.split_at_mut(whole);
                self.proto.read_blocks(self.media_id, offset / block, now).map_err(firmware("ReadBlocks"))?;
                buf = rest;
                offset += whole as u64;
                continue;
            }
            // Through the bounce memory: whole blocks covering (part of) the request.
            let span = (within + buf.len()).next_multiple_of(self.block).min(BOUNCE);
            self.read_blocks(offset / block, span)?;
            let n = (span - within).min(buf.len());
            let (now, rest) = buf.split_at_mut(n);
            now.copy_from_slice(&self.bounce.as_mut_slice()[within..within + n]);
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }

    fn write_at(&mut self, mut offset: u64, mut buf: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        self.check(offset, buf.len())?;
        let block = self.block as u64;
        while !buf.is_empty() {
            let within = (offset % block) as usize;
            let whole = buf.len() / self.block * self.block;
            if within == 0 && self.direct(offset, whole, buf.as_ptr()) {
                self.requests += 1;
                let (now, rest) = buf.split_at(whole);
                self.proto.write_blocks(self.media_id, offset / block, now).map_err(firmware("WriteBlocks"))?;
                buf = rest;
                offset += whole as u64;
                continue;
            }
            let span = (within + buf.len()).next_multiple_of(self.block).min(BOUNCE);
            let n = (span - within).min(buf.len());
            // Read-modify-write of the partial blocks at either end of this piece.
            let head_partial = within != 0;
            let tail_partial = !(within + n).is_multiple_of(self.block);
            if head_partial || tail_partial {
                if head_partial {
                    self.requests += 1;
                    let media = self.media_id;
                    let b = &mut self.bounce.as_mut_slice()[..self.block];
                    self.proto.read_blocks(media, offset / block, b).map_err(firmware("ReadBlocks"))?;
                }
                if tail_partial {
                    let last = span - self.block;
                    if !(head_partial && last == 0) {
                        self.requests += 1;
                        let media = self.media_id;
                        let (lba, b) =
                            (offset / block + (last / self.block) as u64, &mut self.bounce.as_mut_slice()[last..span]);
                        self.proto.read_blocks(media, lba, b).map_err(firmware("ReadBlocks"))?;
                    }
                }
            }
            let (now, rest) = buf.split_at(n);
            self.bounce.as_mut_slice()[within..within + n].copy_from_slice(now);
            self.write_bounce(offset / block, span)?;
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.requests += 1;
        self.proto.flush_blocks().map_err(firmware("FlushBlocks"))
    }

    fn size(&mut self) -> Result<u64, DiskError> {
        Ok(self.size)
    }

    /// 1: the adapter aligns buffers itself (through its 256 KiB bounce memory), so the engines
    /// need not bounce misaligned buffers block by block (with IoAlign 8, a read into a buffer
    /// at an odd address would otherwise become one request per 4 KiB).
    fn io_align(&self) -> usize {
        1
    }

    fn block_size(&self) -> usize {
        self.block
    }
}

/// The disk as `gpt_disk_io` sees it, to read the partition table (read-only).
pub struct GptView<'d>(pub &'d mut EfiDisk);

impl gpt_disk_io::BlockIo for GptView<'_> {
    type Error = DiskError;

    fn block_size(&self) -> gpt_disk_io::gpt_disk_types::BlockSize {
        gpt_disk_io::gpt_disk_types::BlockSize::from_usize(self.0.block)
            .unwrap_or(gpt_disk_io::gpt_disk_types::BlockSize::BS_512)
    }

    fn num_blocks(&mut self) -> Result<u64, DiskError> {
        Ok(self.0.size / self.0.block as u64)
    }

    fn read_blocks(&mut self, start_lba: gpt_disk_io::gpt_disk_types::Lba, dst: &mut [u8]) -> Result<(), DiskError> {
        let offset = start_lba.0.checked_mul(self.0.block as u64).ok_or(DiskError::Unsupported("LBA overflows"))?;
        BlockIo::read_at(self.0, offset, dst)
    }

    fn write_blocks(&mut self, _start_lba: gpt_disk_io::gpt_disk_types::Lba, _src: &[u8]) -> Result<(), DiskError> {
        Err(DiskError::Unsupported("the partition table is never written"))
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }
}

/// Bytes `start..start + len` of a disk (a partition) as a device of its own.
pub struct Window {
    pub disk: EfiDisk,
    start: u64,
    len: u64,
}

impl Window {
    pub fn new(disk: EfiDisk, start: u64, len: u64) -> Result<Window, DiskError> {
        match start.checked_add(len) {
            Some(end) if end <= disk.size => Ok(Window { disk, start, len }),
            _ => Err(DiskError::Unsupported("the partition lies outside the disk")),
        }
    }

    fn at(&self, offset: u64, len: usize) -> Result<u64, DiskError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(self.start + offset),
            _ => Err(DiskError::OutOfRange { offset, len, size: self.len }),
        }
    }
}

impl BlockIo for Window {
    type Error = DiskError;

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let at = self.at(offset, buf.len())?;
        self.disk.read_at(at, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        let at = self.at(offset, buf.len())?;
        self.disk.write_at(at, buf)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.disk.flush()
    }

    fn size(&mut self) -> Result<u64, DiskError> {
        Ok(self.len)
    }

    fn io_align(&self) -> usize {
        self.disk.io_align()
    }

    fn block_size(&self) -> usize {
        // A partition starts on a block boundary, so the disk's blocks are the window's.
        self.disk.block
    }
}
