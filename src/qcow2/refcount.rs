//! The metadata side of writing (SKELETON: the contract between the metadata layer and the data
//! layer of the write engine; every body is to be written).
//!
//! Owns: refcount blocks and table (any `refcount_bits` 1..=64), the first-fit cluster allocator
//! (new self-describing refcount blocks, refcount table relocation), L2 table allocation and copy
//! on write of shared L2 tables (L1 entry without COPIED), L1 entry updates, the write-back table
//! cache's dirty slices, and the write order (formats.md / qcow2-write.md §1):
//! refcount increases on disk (and flushed) before any reference to them; data before the L2
//! entry that points at it (flushed first when the entry replaces acknowledged data: COW);
//! L2 before L1; refcount decreases only after the entry that dropped the reference is on disk.

use super::error::Error;
use super::Qcow2;
use crate::io::BlockIo;

/// What the write engine keeps between writes (small: the caches are the image's table cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteState {
    /// Whether [`Qcow2::prepare_write`] has accepted this image for writing.
    pub(crate) ready: bool,
}

impl WriteState {
    pub(crate) const NEW: WriteState = WriteState { ready: false };
}

#[allow(dead_code, unused_variables)]
impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Accepts the image for writing (idempotent; called by every write entry point): refuses
    /// an image with the dirty bit (lazy refcounts, not yet repaired), the corrupt bit, a
    /// selected snapshot, or what the engine cannot write yet, with a typed error, before any
    /// byte is written.
    pub(crate) fn prepare_write(&mut self) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// Allocates between 1 and `count` contiguous free host clusters (first fit, continuing
    /// after the previous allocation when possible), each with refcount 1 (in the cache, dirty:
    /// on disk before any reference is written). Returns `(host_offset, clusters)`.
    pub(crate) fn alloc_clusters(&mut self, count: u64) -> Result<(u64, u64), Error<I::Error>> {
        todo!()
    }

    /// The raw L2 entry and subcluster bitmap (0 without extended L2) of the guest cluster that
    /// holds `guest_offset`, with the L1 entry's COPIED flag (whether the L2 table is unshared);
    /// `(0, 0, true)` when no L2 table covers it.
    pub(crate) fn l2_entry_of(&mut self, guest_offset: u64) -> Result<(u64, u64, bool), Error<I::Error>> {
        todo!()
    }

    /// Sets the L2 entry (and bitmap) of the guest cluster that holds `guest_offset`,
    /// allocating a new L2 table (zeroed) or copying a shared one first as needed. Cached
    /// (dirty); [`Qcow2::flush`] or eviction writes it in order.
    pub(crate) fn set_l2_entry(&mut self, guest_offset: u64, entry: u64, bitmap: u64) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// Drops one reference to each of `count` clusters from `host_offset`, whose L2 entries no
    /// longer point at them (their new entries are written and flushed first); a cluster that
    /// reaches 0 becomes free for the allocator.
    pub(crate) fn release_clusters(&mut self, host_offset: u64, count: u64) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// Drops one reference to every cluster the compressed bytes `host_offset..+len` touch.
    pub(crate) fn release_compressed(&mut self, host_offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// The refcount of the cluster holding `host_offset`.
    pub(crate) fn refcount_of(&mut self, host_offset: u64) -> Result<u64, Error<I::Error>> {
        todo!()
    }

    /// Data written before this call must be durable before any L2 entry set after it is
    /// written (copy on write moved acknowledged data).
    pub(crate) fn data_barrier(&mut self) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// Refuses an in-place data write that would land on metadata (header, L1, refcount
    /// table/blocks, L2 tables, snapshot table, LUKS header area), as QEMU's overlap check.
    pub(crate) fn check_data_overlap(&mut self, host_offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// Writes back every dirty table slice in the safe order and flushes the device (and the
    /// data file): everything written before returns from a crash after this.
    pub fn flush(&mut self) -> Result<(), Error<I::Error>> {
        todo!()
    }
}
