//! The I/O seam: [`BlockIo`], a positional block device, and its adapters.
//!
//! Everything qluks reads or writes goes through this trait. It is positional (no cursor),
//! allocation-free and has its own error type, so it maps directly onto UEFI's
//! `EFI_BLOCK_IO_PROTOCOL`, a virtio queue, `pread`/`pwrite` or a byte slice.

use core::fmt;

/// A positional, byte-addressed block device.
///
/// Reads and writes are exact: `read_at` fills the whole buffer or fails (a read that runs
/// past [`BlockIo::size`] is an error, never a short read). Offsets and lengths need not be
/// aligned; an implementation whose device has alignment requirements handles them itself and
/// may advertise its preference through [`BlockIo::io_align`] and [`BlockIo::block_size`] so
/// that engines issue aligned, block-sized requests when they can.
pub trait BlockIo {
    /// The device's error.
    type Error: fmt::Debug + fmt::Display;

    /// Reads exactly `buf.len()` bytes starting at byte `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes all of `buf` starting at byte `offset`. Writing past the current end grows the
    /// device where the device can grow (files), and fails where it cannot.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), Self::Error>;

    /// Makes previous writes durable.
    fn flush(&mut self) -> Result<(), Self::Error>;

    /// The device's size in bytes.
    fn size(&mut self) -> Result<u64, Self::Error>;

    /// Preferred buffer alignment in bytes (a power of two; 1 = none), like UEFI's `IoAlign`.
    fn io_align(&self) -> usize {
        1
    }

    /// The device's block size in bytes (a power of two), a hint for request sizes.
    fn block_size(&self) -> usize {
        512
    }
}

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

/// An in-memory device over a mutable byte slice (fixed size).
#[derive(Debug)]
pub struct MemIo<'a> {
    data: &'a mut [u8],
}

impl<'a> MemIo<'a> {
    /// Wraps `data`.
    pub fn new(data: &'a mut [u8]) -> Self {
        MemIo { data }
    }

    /// The underlying bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.data
    }

    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, OutOfBounds> {
        let err = OutOfBounds { offset, len, size: self.data.len() as u64 };
        let start = usize::try_from(offset).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > self.data.len() {
            return Err(err);
        }
        Ok(start..end)
    }
}

impl BlockIo for MemIo<'_> {
    type Error = OutOfBounds;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), OutOfBounds> {
        let r = self.range(offset, buf.len())?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), OutOfBounds> {
        Ok(())
    }
    fn size(&mut self) -> Result<u64, OutOfBounds> {
        Ok(self.data.len() as u64)
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
}

impl<E: fmt::Debug> fmt::Display for EmbeddedIoError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbeddedIoError::Io(e) => write!(f, "I/O error: {e:?}"),
            EmbeddedIoError::UnexpectedEof { offset } => write!(f, "unexpected end of device at {offset:#x}"),
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
    use super::BlockIo;
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
        fn block_size(&self) -> usize {
            4096
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
        assert_eq!(io.read_at(60, &mut b), Err(OutOfBounds { offset: 60, len: 5, size: 64 }));
        assert_eq!(io.write_at(u64::MAX, &[0]), Err(OutOfBounds { offset: u64::MAX, len: 1, size: 64 }));
    }
}
