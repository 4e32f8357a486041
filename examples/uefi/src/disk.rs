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

/// One firmware request of a byte request (see `EfiDisk::next_piece`).
enum Piece {
    /// `len` bytes (whole blocks) from block `lba` straight to or from the caller's buffer.
    Direct { lba: u64, len: usize },
    /// Blocks `lba..` filling `span` bytes of the bounce memory, of which `len` bytes from
    /// `within` are the request's.
    Bounce { lba: u64, within: usize, span: usize, len: usize },
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

    /// The next piece of a request of `remaining` bytes at `offset` from or into `ptr`: the whole
    /// blocks that can go to the firmware as they are (offset and buffer aligned), or else whole
    /// blocks through the bounce memory covering as much of the request as it holds.
    fn next_piece(&self, offset: u64, remaining: usize, ptr: *const u8) -> Piece {
        let lba = offset / self.block as u64;
        let within = (offset % self.block as u64) as usize;
        let whole = remaining / self.block * self.block;
        if within == 0 && whole > 0 && (ptr as usize).is_multiple_of(self.align) {
            return Piece::Direct { lba, len: whole };
        }
        let span = (within + remaining).next_multiple_of(self.block).min(BOUNCE);
        Piece::Bounce { lba, within, span, len: (span - within).min(remaining) }
    }

    /// Reads blocks from `lba` into bytes `from..to` of the bounce memory.
    fn read_bounce(&mut self, lba: u64, from: usize, to: usize) -> Result<(), DiskError> {
        self.requests += 1;
        let media = self.media_id;
        let buf = &mut self.bounce.as_mut_slice()[from..to];
        self.proto.read_blocks(media, lba, buf).map_err(firmware("ReadBlocks"))
    }

    fn read_blocks(&mut self, lba: u64, into_bounce: usize) -> Result<(), DiskError> {
        self.read_bounce(lba, 0, into_bounce)
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
        while !buf.is_empty() {
            let n = match self.next_piece(offset, buf.len(), buf.as_ptr()) {
                Piece::Direct { lba, len } => {
                    self.requests += 1;
                    self.proto.read_blocks(self.media_id, lba, &mut buf[..len]).map_err(firmware("ReadBlocks"))?;
                    len
                }
                Piece::Bounce { lba, within, span, len } => {
                    self.read_blocks(lba, span)?;
                    buf[..len].copy_from_slice(&self.bounce.as_mut_slice()[within..within + len]);
                    len
                }
            };
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }

    fn write_at(&mut self, mut offset: u64, mut buf: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        self.check(offset, buf.len())?;
        while !buf.is_empty() {
            let n = match self.next_piece(offset, buf.len(), buf.as_ptr()) {
                Piece::Direct { lba, len } => {
                    self.requests += 1;
                    self.proto.write_blocks(self.media_id, lba, &buf[..len]).map_err(firmware("WriteBlocks"))?;
                    len
                }
                Piece::Bounce { lba, within, span, len } => {
                    // Read-modify-write of the partial blocks at either end of this piece.
                    let head_partial = within != 0;
                    if head_partial {
                        self.read_bounce(lba, 0, self.block)?;
                    }
                    let last = span - self.block;
                    let tail_partial = !(within + len).is_multiple_of(self.block);
                    // (A one-block piece's tail block is its head block, already read.)
                    let tail_is_head = head_partial && last == 0;
                    if tail_partial && !tail_is_head {
                        self.read_bounce(lba + (last / self.block) as u64, last, span)?;
                    }
                    self.bounce.as_mut_slice()[within..within + len].copy_from_slice(&buf[..len]);
                    self.write_bounce(lba, span)?;
                    len
                }
            };
            buf = &buf[n..];
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
