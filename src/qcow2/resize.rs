//! Resizing a qcow2 image (QEMU's `qcow2_co_truncate` without preallocation, as `qemu-img
//! resize [--shrink]` does it).
//!
//! # What is written, in order (a crash after any single write leaves at worst leaks)
//!
//! Grow:
//! 1. Stale mappings past the old end are dropped first (there are none in images QEMU or
//!    qluks made, except after an interrupted shrink: see below), so the new area reads as
//!    zeros.
//! 2. When the new size needs more L1 entries (exact growth, as QEMU's resize): new clusters
//!    for the table (refcounts written and flushed), the table written (old entries, then
//!    zeros) and flushed, one 12-byte header write at offset 36 (`l1_size`,
//!    `l1_table_offset`) flushed, then the old table freed.
//! 3. Over a backing file longer than the old size ([`Chain::resize`]): the new area gets
//!    zero clusters (QEMU's `bdrv_co_truncate`), flushed, so that the backing data stays
//!    hidden (a crash leaves them past the old size, unread).
//! 4. The size: one 8-byte header write at offset 24, flushed.
//!
//! Shrink (`allow_shrink`, qemu-img's `--shrink`): QEMU discards everything past the new end,
//! and so does this, but the size is written first (offset 24, flushed): a crash later leaves
//! the new size with mappings past it, which nothing reads and the next grow drops (step 1).
//! Then the L1 entries whose whole range lies past the new end are zeroed on disk (flushed) and
//! their L2 tables and every cluster they reference released; the clusters past the end in the
//! last L2 table are unmapped one by one (entry 0, cluster released). The L1 table keeps its
//! size and the file its length, as QEMU leaves `l1_size` (QEMU also truncates the file and
//! may shrink the refcount table: `qemu-img check` sees no difference but the image end).
//!
//! # Memory
//!
//! Nothing beyond the image's own table cache: a 512-byte stack buffer for table chunks.

use super::error::{Corruption, Error};
use super::header::{l1_entries_for, Table};
use super::l2_entry::{classify, l2_offset, L2E_OFFSET_MASK};
use super::table_write::{write_aligned, write_zeros};
use super::{be64, Chain, Layer, Mapping, Qcow2};
use crate::io::BlockIo;

/// Why a resize was refused (nothing was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResizeError {
    /// The new size is not a multiple of 512 bytes (qemu-img refuses it for qcow2 too).
    Unaligned {
        /// The size asked for.
        size: u64,
    },
    /// The new size is smaller and shrinking was not allowed (qemu-img's `--shrink`).
    ShrinkNotAllowed {
        /// The current size.
        size: u64,
        /// The size asked for.
        new_size: u64,
    },
    /// A version 2 image with internal snapshots cannot be resized (as QEMU: v2 snapshots do
    /// not record their own disk size).
    V2WithSnapshots,
    /// The new size needs an L1 table over QEMU's limit of 32 MiB.
    TooLarge {
        /// The size asked for.
        size: u64,
    },
    /// The image names a backing file: growing it must go through [`Chain::resize`], which
    /// makes the new area read as zeros where the backing file is longer (as QEMU does).
    BackingChainRequired,
    /// A version 2 image cannot hide a longer backing file's data in the new area (no zero
    /// flag: QEMU fails with "Failed to zero out new clusters" too).
    V2CannotZero,
}

impl core::fmt::Display for ResizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ResizeError::Unaligned { size } => write!(f, "the new size ({size} bytes) must be a multiple of 512"),
            ResizeError::ShrinkNotAllowed { size, new_size } => write!(
                f,
                "the new size ({new_size} bytes) is smaller than the current one ({size} bytes): shrinking deletes \
                 the data past the new end and must be asked for (--shrink)"
            ),
            ResizeError::V2WithSnapshots => {
                write!(f, "a version 2 (compat=0.10) image with snapshots cannot be resized")
            }
            ResizeError::TooLarge { size } => {
                write!(f, "the new size ({size} bytes) needs an L1 table over the 32 MiB limit")
            }
            ResizeError::BackingChainRequired => write!(
                f,
                "the image has a backing file: grow it with its backing chain open (the new area must read as zeros)"
            ),
            ResizeError::V2CannotZero => write!(
                f,
                "a version 2 (compat=0.10) image cannot zero the new area over its longer backing file (no zero flag)"
            ),
        }
    }
}

impl core::error::Error for ResizeError {}

impl<E> From<ResizeError> for Error<E> {
    fn from(e: ResizeError) -> Self {
        Error::Resize(e)
    }
}

/// Bytes of table read or written at a time.
const CHUNK: usize = 512;

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Changes the virtual size to `new_size` bytes (a multiple of 512), as `qemu-img resize`
    /// does: growing exposes zeros, except (as QEMU) past an old end inside a cluster, whose
    /// old bytes show again after a shrink to that size and a grow (found by the
    /// `qcow2_write_model` fuzz target; `tests/qcow2_resize.rs` asserts QEMU's behaviour);
    /// shrinking (only with `allow_shrink`, qemu-img's `--shrink`) drops and frees every
    /// cluster wholly past the new end. See the module docs for the
    /// write order. Refused with a typed error, before anything is written: unaligned sizes,
    /// shrinking without `allow_shrink`, version 2 images with snapshots, sizes whose L1 table
    /// would pass 32 MiB, and whatever [`Qcow2::write_at`] refuses (dirty or corrupt image,
    /// selected snapshot, encrypted image opened without its passphrase, ...). An image that
    /// names a backing file grows only through [`Chain::resize`]
    /// ([`ResizeError::BackingChainRequired`]).
    pub fn resize(&mut self, new_size: u64, allow_shrink: bool) -> Result<(), Error<I::Error>> {
        if self.extensions.backing_file.is_some() && new_size > self.header.size {
            return Err(ResizeError::BackingChainRequired.into());
        }
        self.resize_layered::<N>(new_size, allow_shrink, None, &mut [], &mut [])
    }

    /// [`Qcow2::resize`] with the backing chain `below` (whose first layer is `backing_size`
    /// bytes long, if open): where the backing file is longer than the old size, the new area
    /// is zeroed (zero flags; the unaligned head copied on write from `below`), as QEMU's
    /// `bdrv_co_truncate`.
    pub(crate) fn resize_layered<const M: usize>(
        &mut self,
        new_size: u64,
        allow_shrink: bool,
        backing_size: Option<u64>,
        below: &mut [Option<Layer<I, M>>],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        if self.io.is_none() {
            return Err(Error::NotOpen);
        }
        if !new_size.is_multiple_of(512) {
            return Err(ResizeError::Unaligned { size: new_size }.into());
        }
        self.prepare_write()?;
        let h = self.header;
        if h.version < 3 && h.nb_snapshots > 0 {
            return Err(ResizeError::V2WithSnapshots.into());
        }
        let old = h.size;
        if new_size < old && !allow_shrink {
            return Err(ResizeError::ShrinkNotAllowed { size: old, new_size }.into());
        }
        let new_l1 = l1_entries_for(&h, new_size).map_err(|_| ResizeError::TooLarge { size: new_size })?;
        if new_size == old {
            return Ok(());
        }
        let zero = new_size > old && backing_size.is_some_and(|b| b > old);
        if zero && h.version < 3 {
            return Err(ResizeError::V2CannotZero.into());
        }
        // Every table on disk as the cache holds it: tables are read from disk below.
        self.flush()?;
        if new_size > old {
            self.drop_mappings_from(old)?;
            self.flush()?;
            if new_l1 > u64::from(self.l1_size) {
                self.grow_l1(new_l1)?;
            }
            if zero {
                // Zero entries past the old end first (a crash leaves them unread: the size
                // is still the old one), then the size.
                self.size = new_size;
                let r = self.write_zeroes_layered(old, new_size - old, false, below, scratch);
                self.size = old;
                r?;
                self.flush()?;
            }
            self.write_size(new_size)
        } else {
            self.write_size(new_size)?;
            self.drop_mappings_from(new_size)?;
            self.flush()
        }
    }

    /// The 8-byte size at header offset 24, flushed.
    fn write_size(&mut self, size: u64) -> Result<(), Error<I::Error>> {
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        write_aligned(io, 24, &size.to_be_bytes()).map_err(Error::Io)?;
        io.flush().map_err(Error::Io)?;
        self.header.size = size;
        self.size = size;
        self.cache.invalidate_hints();
        Ok(())
    }

    /// Replaces the L1 table by one of exactly `new_l1` entries (QEMU's `qcow2_grow_l1_table`
    /// with `exact_size`).
    fn grow_l1(&mut self, new_l1: u64) -> Result<(), Error<I::Error>> {
        let cs = self.header.cluster_size();
        let old_off = self.l1_table_offset;
        let old_bytes = u64::from(self.l1_size) * 8;
        // QEMU writes the table rounded up to 512 bytes, in whole clusters.
        let bytes = (new_l1 * 8).next_multiple_of(512);
        let new_off = self.alloc_contiguous_run(bytes.div_ceil(cs))?;
        // The new clusters' refcounts on disk before anything names them.
        self.flush()?;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let mut buf = [0u8; CHUNK];
        let mut pos = 0u64;
        while pos < bytes {
            if pos >= old_bytes {
                write_zeros(io, new_off + pos, bytes - pos).map_err(Error::Io)?;
                break;
            }
            buf.fill(0);
            let n = (old_bytes - pos).min(CHUNK as u64) as usize;
            crate::io::read_aligned(io, old_off + pos, &mut buf[..n]).map_err(Error::Io)?;
            write_aligned(io, new_off + pos, &buf).map_err(Error::Io)?;
            pos += CHUNK as u64;
        }
        io.flush().map_err(Error::Io)?;
        self.note_host_write(new_off + bytes);
        let mut field = [0u8; 12];
        field[..4].copy_from_slice(&(new_l1 as u32).to_be_bytes());
        field[4..].copy_from_slice(&new_off.to_be_bytes());
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        write_aligned(io, 36, &field).map_err(Error::Io)?;
        io.flush().map_err(Error::Io)?;
        self.header.l1_size = new_l1 as u32;
        self.header.l1_table_offset = new_off;
        self.l1_size = new_l1 as u32;
        self.l1_table_offset = new_off;
        self.cache.forget(old_off);
        // The header no longer names the old table (durably): free it.
        if old_bytes > 0 {
            self.release_clusters(old_off, old_bytes.div_ceil(cs))?;
        }
        self.flush()
    }

    /// Unmaps every guest cluster from `from` (rounded up to a cluster) to the end of the L1
    /// table's range, releasing what the dropped entries referenced.
    fn drop_mappings_from(&mut self, from: u64) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let l1_bits = h.cluster_bits + h.l2_entries().trailing_zeros();
        let first = from.div_ceil(cs).saturating_mul(cs);
        let whole_from = first.div_ceil(1u64 << l1_bits);
        self.drop_l1_entries(whole_from)?;
        let index = first >> l1_bits;
        if first & ((1u64 << l1_bits) - 1) != 0 && index < u64::from(self.l1_size) {
            let end = (index + 1) << l1_bits;
            let mut gc = first;
            while gc < end {
                let (entry, bitmap, _) = self.l2_entry_of(gc)?;
                if (entry, bitmap) != (0, 0) {
                    self.set_l2_entry(gc, 0, 0)?;
                    if entry != 0 {
                        self.release_entry(entry, bitmap)?;
                    }
                }
                gc += cs;
            }
        }
        Ok(())
    }

    /// Zeroes L1 entries `from..l1_size` on disk (a chunk at a time, flushed), then releases
    /// the L2 tables they named and everything those reference.
    fn drop_l1_entries(&mut self, from: u64) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let l1 = self.l1_table_offset;
        let entries = u64::from(self.l1_size);
        let mut index = from;
        let mut buf = [0u8; CHUNK];
        while index < entries {
            let n = ((entries - index) * 8).min(CHUNK as u64) as usize;
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            crate::io::read_aligned(io, l1 + index * 8, &mut buf[..n]).map_err(Error::Io)?;
            if buf[..n].iter().all(|&b| b == 0) {
                index += n as u64 / 8;
                continue;
            }
            for (j, e) in buf[..n].chunks_exact(8).enumerate() {
                l2_offset(&h, index + j as u64, be64(e, 0))?;
            }
            write_zeros(io, l1 + index * 8, n as u64).map_err(Error::Io)?;
            io.flush().map_err(Error::Io)?;
            self.cache.forget(l1);
            for (j, e) in buf[..n].chunks_exact(8).enumerate() {
                let table = l2_offset(&h, index + j as u64, be64(e, 0))?;
                if table != 0 {
                    self.drop_l2_table(table)?;
                }
            }
            index += n as u64 / 8;
        }
        Ok(())
    }

    /// Releases L2 table `table` (no longer named by the L1 table) and every cluster it maps.
    fn drop_l2_table(&mut self, table: u64) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let es = h.l2_entry_size() as usize;
        if table.saturating_add(cs) > self.file_size {
            return Err(Corruption::PastEndOfFile { table: Table::L2, offset: table, file_size: self.file_size }.into());
        }
        let mut buf = [0u8; CHUNK];
        let chunk = (CHUNK as u64).min(cs) as usize;
        let mut pos = 0u64;
        while pos < cs {
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            crate::io::read_aligned(io, table + pos, &mut buf[..chunk]).map_err(Error::Io)?;
            for e in buf[..chunk].chunks_exact(es) {
                let entry = be64(e, 0);
                if entry != 0 {
                    self.release_entry(entry, if es == 16 { be64(e, 8) } else { 0 })?;
                }
            }
            pos += chunk as u64;
        }
        self.release_clusters(table, 1)
    }

    /// Releases what an L2 entry that was dropped referenced (a cluster, or the clusters of
    /// compressed data).
    fn release_entry(&mut self, entry: u64, bitmap: u64) -> Result<(), Error<I::Error>> {
        let (mapping, _) = classify(&self.header, false, entry, bitmap, 0)?;
        match mapping {
            Mapping::Compressed { host_offset, compressed_len } => self.release_compressed(host_offset, compressed_len),
            _ if entry & L2E_OFFSET_MASK != 0 => self.release_clusters(entry & L2E_OFFSET_MASK, 1),
            _ => Ok(()),
        }
    }
}

impl<I: BlockIo, const N: usize, const DEPTH: usize> Chain<I, N, DEPTH> {
    /// Resizes the top layer (qcow2) as `qemu-img resize` does with the chain open: see
    /// [`Qcow2::resize`]. Where the backing file is longer than the old size the new area is
    /// made to read as zeros (zero clusters; version 2 images refused with
    /// [`ResizeError::V2CannotZero`], as QEMU fails). `scratch`: [`Chain::write_scratch_len`]
    /// bytes (used only to zero an unaligned head).
    pub fn resize(&mut self, new_size: u64, allow_shrink: bool, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        let (top, below) = self.split_top()?;
        let backing_size = below.first().and_then(|l| l.as_ref()).map(Layer::size);
        top.resize_layered(new_size, allow_shrink, backing_size, below, scratch)
    }
}
