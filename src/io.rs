//! The I/O seam: [`BlockIo`], a positional block device, and its adapters.
//!
//! Everything qluks reads or writes goes through this trait. It is positional (no cursor),
//! allocation-free and has its own error type, so it maps directly onto UEFI's
//! `EFI_BLOCK_IO_PROTOCOL`, a virtio queue, `pread`/`pwrite` or a byte slice.
//!
//! **Read-only devices** implement only [`BlockIo::read_at`] and [`BlockIo::size`]: the
//! default [`BlockIo::write_at`] and [`BlockIo::flush`] fail with [`ReadOnly`], converted into
//! the device's error type (which is why [`BlockIo::Error`] is `From<ReadOnly>`: one `impl`
//! line, or a `ReadOnly` variant). The read engines (qcow2, qcow, chains, [`Image`]) never
//! write; only creating or writing a LUKS volume does.
//!
//! ```
//! use qluks::io::{BlockIo, ReadOnly};
//!
//! /// A firmware disk that moves whole 512-byte blocks (here: a byte array).
//! struct Disk<'a>(&'a [u8]);
//!
//! #[derive(Debug)]
//! enum DiskError {
//!     OutOfRange,
//!     ReadOnly,
//! }
//! impl core::fmt::Display for DiskError {
//!     fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
//!         write!(f, "{self:?}")
//!     }
//! }
//! impl From<ReadOnly> for DiskError {
//!     fn from(_: ReadOnly) -> Self {
//!         DiskError::ReadOnly
//!     }
//! }
//!
//! impl BlockIo for Disk<'_> {
//!     type Error = DiskError;
//!     fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
//!         let start = usize::try_from(offset).map_err(|_| DiskError::OutOfRange)?;
//!         let src = self.0.get(start..start + buf.len()).ok_or(DiskError::OutOfRange)?;
//!         buf.copy_from_slice(src);
//!         Ok(())
//!     }
//!     fn size(&mut self) -> Result<u64, DiskError> {
//!         Ok(self.0.len() as u64)
//!     }
//!     // The engines read their own metadata in whole aligned blocks of this size.
//!     fn block_size(&self) -> usize {
//!         512
//!     }
//! }
//!
//! let bytes = [7u8; 1024];
//! let mut disk = Disk(&bytes);
//! assert!(matches!(disk.write_at(0, &[1]), Err(DiskError::ReadOnly)));
//! ```
//!
//! [`Image`]: crate::image::Image

use core::fmt;

/// A positional, byte-addressed block device.
///
/// Reads and writes are exact: `read_at` fills the whole buffer or fails (a read that runs
/// past [`BlockIo::size`] is an error, never a short read). Offsets and lengths need not be
/// aligned; an implementation whose device has alignment requirements handles them itself and
/// may advertise its preference through [`BlockIo::io_align`] and [`BlockIo::block_size`] so
/// that engines issue aligned, block-sized requests when they can.
pub trait BlockIo {
    /// The device's error. `From<ReadOnly>`: the default [`BlockIo::write_at`] and
    /// [`BlockIo::flush`] of a read-only device return [`ReadOnly`] through it.
    type Error: fmt::Debug + fmt::Display + From<ReadOnly>;

    /// Reads exactly `buf.len()` bytes starting at byte `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes all of `buf` starting at byte `offset`. Writing past the current end grows the
    /// device where the device can grow (files), and fails where it cannot. Default: the
    /// device is read-only ([`ReadOnly`]).
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), Self::Error> {
        let _ = (offset, buf);
        Err(ReadOnly.into())
    }

    /// Makes previous writes durable. Default: the device is read-only ([`ReadOnly`]).
    fn flush(&mut self) -> Result<(), Self::Error> {
        Err(ReadOnly.into())
    }

    /// The device's size in bytes.
    fn size(&mut self) -> Result<u64, Self::Error>;

    /// Buffer alignment in bytes the device needs (a power of two; 1 = none), like UEFI's
    /// `IoAlign`: the engines pass it only buffers whose address is a multiple of it (they
    /// bounce the rest, see [`read_aligned`]).
    fn io_align(&self) -> usize {
        1
    }

    /// The device's request granularity in bytes (a power of two; 1 = any byte range, the
    /// default), like UEFI's `BlockSize`. When it is more than 1 (at most [`MAX_BLOCK_SIZE`])
    /// the engines read only whole aligned blocks (offset and length multiples of it): their
    /// own metadata in whole blocks, guest data straight into the caller's buffer when it is
    /// aligned and through a one-block bounce buffer at unaligned heads and tails
    /// ([`read_aligned`]). The device's size is then a whole number of blocks.
    fn block_size(&self) -> usize {
        1
    }
}

/// The largest [`BlockIo::block_size`] (and [`BlockIo::io_align`]) the engines honour: the
/// size of their bounce buffer. Larger values are treated as 1 (any request).
pub const MAX_BLOCK_SIZE: usize = 4096;

/// Reads `buf.len()` bytes at `offset` from `io` in requests `io` accepts: whole aligned
/// blocks of [`BlockIo::block_size`] into buffers aligned to [`BlockIo::io_align`]. The
/// aligned middle goes straight into `buf` (one request, no copy); unaligned heads and tails
/// (and buffers at unaligned addresses) go through a [`MAX_BLOCK_SIZE`] bounce buffer on the
/// stack. A device with neither requirement gets `buf` as is.
pub fn read_aligned<I: BlockIo + ?Sized>(io: &mut I, offset: u64, buf: &mut [u8]) -> Result<(), I::Error> {
    let (bs, align) = granularity(io);
    let start_ok = offset.is_multiple_of(bs as u64) && buf.len().is_multiple_of(bs);
    if start_ok && (buf.as_ptr() as usize).is_multiple_of(align) {
        return io.read_at(offset, buf);
    }
    read_bounced(io, offset, buf, bs, align)
}

fn granularity<I: BlockIo + ?Sized>(io: &I) -> (usize, usize) {
    let valid = |n: usize| n.is_power_of_two() && n <= MAX_BLOCK_SIZE;
    let bs = io.block_size();
    let align = io.io_align();
    (if valid(bs) { bs } else { 1 }, if valid(align) { align } else { 1 })
}

/// One block of bounce memory, aligned for any `io_align` up to [`MAX_BLOCK_SIZE`].
#[repr(C, align(4096))]
struct Bounce([u8; MAX_BLOCK_SIZE]);

#[inline(never)]
fn read_bounced<I: BlockIo + ?Sized>(
    io: &mut I,
    offset: u64,
    buf: &mut [u8],
    bs: usize,
    align: usize,
) -> Result<(), I::Error> {
    let mut bounce = Bounce([0; MAX_BLOCK_SIZE]);
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let within = (pos % bs as u64) as usize;
        let rest = buf.len() - done;
        if within == 0 && rest >= bs {
            let whole = rest / bs * bs;
            let part = &mut buf[done..done + whole];
            if (part.as_ptr() as usize).is_multiple_of(align) {
                io.read_at(pos, part)?;
                done += whole;
            } else {
                let n = whole.min(MAX_BLOCK_SIZE);
                io.read_at(pos, &mut bounce.0[..n])?;
                part[..n].copy_from_slice(&bounce.0[..n]);
                done += n;
            }
            continue;
        }
        // A partial block: read all of it, keep the part asked for.
        io.read_at(pos - within as u64, &mut bounce.0[..bs])?;
        let n = (bs - within).min(rest);
        buf[done..done + n].copy_from_slice(&bounce.0[within..within + n]);
        done += n;
    }
    Ok(())
}

/// The error of writing to a read-only device (what the default [`BlockIo::write_at`] and
/// [`BlockIo::flush`] return, through the device's `From<ReadOnly>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOnly;

impl fmt::Display for ReadOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the device is read-only")
    }
}

impl core::error::Error for ReadOnly {}

impl<T: BlockIo + ?Sized> BlockIo for &mut T {
    type Error = T::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), Self::Error> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        (**self).flush()
    }
    fn size(&mut self) -> Result<u64, Self::Error> {
        (**self).size()
    }
    fn io_align(&self) -> usize {
        (**self).io_align()
    }
    fn block_size(&self) -> usize {
        (**self).block_size()
    }
}

/// Error of [`MemIo`]: an access outside the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Start of the access.
    pub offset: u64,
    /// Length of the access.
    pub len: usize,
    /// Size of the device.
    pub size: u64,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access of {} bytes at {:#x} is outside the device (size {:#x})", self.len, self.offset, self.size)
    }
}

impl core::error::Error for OutOfBounds {}

/// Error of [`MemIo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemIoError {
    /// An access outside the slice.
    OutOfBounds(OutOfBounds),
    /// A write to a read-only [`MemIo`] ([`MemIo::read_only`]).
    ReadOnly,
}

impl From<OutOfBounds> for MemIoError {
    fn from(e: OutOfBounds) -> Self {
        MemIoError::OutOfBounds(e)
    }
}

impl From<ReadOnly> for MemIoError {
    fn from(_: ReadOnly) -> Self {
        MemIoError::ReadOnly
    }
}

impl fmt::Display for MemIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemIoError::OutOfBounds(e) => write!(f, "{e}"),
            MemIoError::ReadOnly => write!(f, "{ReadOnly}"),
        }
    }
}

impl core::error::Error for MemIoError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            MemIoError::OutOfBounds(e) => Some(e),
            MemIoError::ReadOnly => None,
        }
    }
}

/// An in-memory device over a byte slice (fixed size): writable over `&mut [u8]`
/// ([`MemIo::new`]), read-only over `&[u8]` ([`MemIo::read_only`]).
#[derive(Debug)]
pub struct MemIo<'a> {
    data: MemData<'a>,
}

#[derive(Debug)]
enum MemData<'a> {
    Mut(&'a mut [u8]),
    Shared(&'a [u8]),
}

impl<'a> MemIo<'a> {
    /// Wraps `data`.
    pub fn new(data: &'a mut [u8]) -> Self {
        MemIo { data: MemData::Mut(data) }
    }

    /// Wraps `data` read-only: writes fail with [`MemIoError::ReadOnly`].
    pub fn read_only(data: &'a [u8]) -> Self {
        MemIo { data: MemData::Shared(data) }
    }

    /// The underlying bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.data {
            MemData::Mut(d) => d,
            MemData::Shared(d) => d,
        }
    }

    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, OutOfBounds> {
        let size = self.as_slice().len();
        let err = OutOfBounds { offset, len, size: size as u64 };
        let start = usize::try_from(offset).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > size {
            return Err(err);
        }
        Ok(start..end)
    }
}

impl BlockIo for MemIo<'_> {
    type Error = MemIoError;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MemIoError> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.as_slice()[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), MemIoError> {
        let r = self.range(offset, buf.len())?;
        match &mut self.data {
            MemData::Mut(d) => d[r].copy_from_slice(buf),
            MemData::Shared(_) => return Err(MemIoError::ReadOnly),
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), MemIoError> {
        Ok(())
    }
    fn size(&mut self) -> Result<u64, MemIoError> {
        Ok(self.as_slice().len() as u64)
    }
}

/// Error of [`EmbeddedIo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddedIoError<E> {
    /// The stream's own error.
    Io(E),
    /// The stream ended before the requested bytes were read (or a write made no progress).
    UnexpectedEof {
        /// Offset of the access.
        offset: u64,
    },
    /// A write or flush on a read-only adapter.
    ReadOnly,
}

impl<E> From<ReadOnly> for EmbeddedIoError<E> {
    fn from(_: ReadOnly) -> Self {
        EmbeddedIoError::ReadOnly
    }
}

impl<E: fmt::Debug> fmt::Display for EmbeddedIoError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbeddedIoError::Io(e) => write!(f, "I/O error: {e:?}"),
            EmbeddedIoError::UnexpectedEof { offset } => write!(f, "unexpected end of device at {offset:#x}"),
            EmbeddedIoError::ReadOnly => write!(f, "{ReadOnly}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for EmbeddedIoError<E> {}

/// Adapts any `embedded_io` `Read + Write + Seek` stream to [`BlockIo`] (seek, then read/write).
#[derive(Debug)]
pub struct EmbeddedIo<S> {
    inner: S,
}

impl<S> EmbeddedIo<S> {
    /// Wraps a stream.
    pub fn new(inner: S) -> Self {
        EmbeddedIo { inner }
    }
    /// Returns the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> BlockIo for EmbeddedIo<S>
where
    S: embedded_io::Read + embedded_io::Write + embedded_io::Seek,
{
    type Error = EmbeddedIoError<S::Error>;

    fn read_at(&mut self, offset: u64, mut buf: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.seek(embedded_io::SeekFrom::Start(offset)).map_err(EmbeddedIoError::Io)?;
        while !buf.is_empty() {
            match self.inner.read(buf).map_err(EmbeddedIoError::Io)? {
                0 => return Err(EmbeddedIoError::UnexpectedEof { offset }),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, mut buf: &[u8]) -> Result<(), Self::Error> {
        self.inner.seek(embedded_io::SeekFrom::Start(offset)).map_err(EmbeddedIoError::Io)?;
        while !buf.is_empty() {
            match self.inner.write(buf).map_err(EmbeddedIoError::Io)? {
                0 => return Err(EmbeddedIoError::UnexpectedEof { offset }),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush().map_err(EmbeddedIoError::Io)
    }

    fn size(&mut self) -> Result<u64, Self::Error> {
        self.inner.seek(embedded_io::SeekFrom::End(0)).map_err(EmbeddedIoError::Io)
    }
}

#[cfg(feature = "std")]
mod file {
    use super::{BlockIo, ReadOnly};

    impl From<ReadOnly> for std::io::Error {
        fn from(e: ReadOnly) -> Self {
            std::io::Error::new(std::io::ErrorKind::ReadOnlyFilesystem, e)
        }
    }
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    /// `std::fs::File` through `pread`/`pwrite` (no cursor, no seek).
    impl BlockIo for File {
        type Error = std::io::Error;
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            FileExt::read_exact_at(self, buf, offset)
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
            FileExt::write_all_at(self, buf, offset)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.sync_data()
        }
        fn size(&mut self) -> std::io::Result<u64> {
            Ok(self.metadata()?.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_io_reads_and_writes_exactly() {
        let mut backing = [0u8; 64];
        let mut io = MemIo::new(&mut backing);
        io.write_at(60, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        io.read_at(60, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(io.size().unwrap(), 64);
    }

    #[test]
    fn mem_io_refuses_access_past_end() {
        let mut backing = [0u8; 64];
        let mut io = MemIo::new(&mut backing);
        let mut b = [0u8; 5];
        assert_eq!(io.read_at(60, &mut b), Err(MemIoError::OutOfBounds(OutOfBounds { offset: 60, len: 5, size: 64 })));
        assert_eq!(
            io.write_at(u64::MAX, &[0]),
            Err(MemIoError::OutOfBounds(OutOfBounds { offset: u64::MAX, len: 1, size: 64 }))
        );
    }

    /// A device that implements only `read_at` and `size`.
    struct ReadOnlyDev;

    impl BlockIo for ReadOnlyDev {
        type Error = MemIoError;
        fn read_at(&mut self, _: u64, buf: &mut [u8]) -> Result<(), MemIoError> {
            buf.fill(1);
            Ok(())
        }
        fn size(&mut self) -> Result<u64, MemIoError> {
            Ok(512)
        }
    }

    /// A 512-byte-block device that fails any request that is not whole aligned blocks.
    struct Blocks<'a>(MemIo<'a>);

    impl BlockIo for Blocks<'_> {
        type Error = MemIoError;
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MemIoError> {
            if !offset.is_multiple_of(512) || !buf.len().is_multiple_of(512) {
                return Err(MemIoError::OutOfBounds(OutOfBounds { offset, len: buf.len(), size: 0 }));
            }
            self.0.read_at(offset, buf)
        }
        fn size(&mut self) -> Result<u64, MemIoError> {
            self.0.size()
        }
        fn block_size(&self) -> usize {
            512
        }
    }

    #[test]
    fn read_aligned_reads_any_range_from_a_block_device() {
        let mut data: [u8; 2048] = core::array::from_fn(|i| (i * 7) as u8);
        let want = data;
        let mut dev = Blocks(MemIo::new(&mut data));
        for (off, len) in [(0usize, 512usize), (1, 1), (511, 2), (100, 1500), (512, 1024), (3, 2045), (0, 2048)] {
            let mut buf = [0u8; 2048];
            read_aligned(&mut dev, off as u64, &mut buf[..len]).unwrap();
            assert_eq!(buf[..len], want[off..off + len], "{len} at {off}");
            // At an odd address too.
            read_aligned(&mut dev, off as u64, &mut buf[1..1 + len.min(2047)]).unwrap();
        }
        assert!(dev.read_at(1, &mut [0u8; 1]).is_err(), "the device itself refuses partial blocks");
    }

    #[test]
    fn read_only_devices_refuse_writes_with_a_typed_error() {
        assert_eq!(ReadOnlyDev.write_at(0, &[1]), Err(MemIoError::ReadOnly));
        assert_eq!(ReadOnlyDev.flush(), Err(MemIoError::ReadOnly));
        let data = [5u8; 8];
        let mut io = MemIo::read_only(&data);
        assert_eq!(io.write_at(0, &[1]), Err(MemIoError::ReadOnly));
        let mut b = [0u8; 2];
        io.read_at(6, &mut b).unwrap();
        assert_eq!(b, [5, 5]);
    }
}
