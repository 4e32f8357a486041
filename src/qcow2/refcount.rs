//! The metadata side of writing: refcount blocks and table (any `refcount_bits` 1..=64), the
//! first-fit cluster allocator (new self-describing refcount blocks, refcount table
//! relocation), L2 table allocation and copy on write of shared L2 tables (L1 entry without
//! COPIED), L1 entry updates, the write-back table cache's dirty slices, and the write order.
//!
//! # Write order (what a crash after any single write leaves: at worst leaked clusters)
//!
//! - Refcount and L2 slices are changed in the image's table cache ([`L2Cache`], dirty) and
//!   written back later: by [`Qcow2::flush`], or when a load needs the slot (eviction).
//! - A dirty refcount slice may be written at any time: it only ever holds increases, or
//!   decreases whose dropped references are already on disk (see releases below).
//! - Before any dirty L2 slice is written, every dirty refcount slice is written and the device
//!   (and data file) flushed: refcount increases, and data written so far (copy on write that
//!   moved acknowledged bytes), are durable before an L2 entry can reference them.
//! - A new L2 table is written whole (zeros, or a copy of a shared table) and flushed, with its
//!   own refcount, before the L1 entry naming it is written (8 bytes, written through;
//!   read-modify-write on devices with `block_size() > 1`).
//! - A new refcount block is written and flushed before the refcount table entry naming it; a
//!   relocated refcount table is written and flushed before the 12-byte header update at
//!   offset 48 (itself flushed) that switches to it, and only then is the old table freed.
//! - Releases (refcount decreases: replaced data clusters, a copied L2 table) are queued in a
//!   small fixed array; they are applied only after every dirty L2 slice is written and
//!   flushed (so the entries that dropped the references are durable), in one batch per
//!   [`PENDING_CAP`] releases, at a flush, or before an allocation that might reuse them.
//! - [`Qcow2::flush`]: pending releases (refcounts, flush, L2, flush, decreases), then refcounts,
//!   flush, L2 (if any), flush.
//!
//! Refcounts stay exact on disk even with `lazy_refcounts`: the dirty bit is never set.
//!
//! [`L2Cache`]: super::l2_cache::L2Cache

// Called by the data layer (write.rs); until it lands only the tests use some of it.
#![cfg_attr(not(test), allow(dead_code))]

use super::error::{Corruption, Error};
use super::feature::{Incompatible, AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW};
use super::header::{Table, MAX_OFFSET, MAX_REFCOUNT_TABLE_BYTES};
use super::l2_cache::SLICE_BYTES;
use super::l2_entry::{l2_offset, OFLAG_COPIED};
use super::table_write::{get_refcount, refcount_max, refcount_pos, set_refcount, write_aligned, write_zeros};
use super::{be64, Qcow2};
use crate::io::BlockIo;

/// Dirty class of refcount block slices in the table cache.
pub(crate) const CLASS_REFCOUNT: u8 = 1;
/// Dirty class of L2 table slices in the table cache.
pub(crate) const CLASS_L2: u8 = 2;
/// Releases queued before they are applied as one batch (one flush for all of them).
pub const PENDING_CAP: usize = 16;
/// Valid bits of a refcount table entry (the block's offset).
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// Chunk of the small stack buffers used to build new refcount blocks and tables.
const CHUNK: usize = 512;

/// What the write engine keeps between writes (small: the caches are the image's table cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteState {
    /// Whether [`Qcow2::prepare_write`] has accepted this image for writing.
    pub(crate) ready: bool,
    /// First cluster (index) the allocator looks at.
    free_index: u64,
    /// Queued releases: (first cluster index, clusters).
    pending: [(u64, u64); PENDING_CAP],
    pending_len: usize,
    /// Where the refcount blocks are (for the overlap check).
    blocks: Ranges<BLOCK_LIST>,
    /// Bytes of the snapshot table (walked once by [`Qcow2::prepare_write`]).
    snapshot_table_len: u64,
    /// Where the snapshots' L1 tables are.
    snap_l1: Ranges<SNAPSHOT_L1_LIST>,
    /// The refcount table entry looked up last: (index + 1, block offset); 0: none.
    rt_memo: (u64, u64),
    /// The refcount transaction in progress ([`Qcow2::transaction`]).
    shadow: Option<shadow::Shadow>,
}

impl WriteState {
    pub(crate) const NEW: WriteState = WriteState {
        ready: false,
        free_index: 0,
        pending: [(0, 0); PENDING_CAP],
        pending_len: 0,
        blocks: Ranges::NEW,
        snapshot_table_len: 0,
        snap_l1: Ranges::NEW,
        rt_memo: (0, 0),
        shadow: None,
    };
}

/// Runs of refcount blocks listed exactly for the overlap check (more: a window and a table
/// scan). One run per 2 GiB of image at 64 KiB clusters and 16-bit refcounts.
const BLOCK_LIST: usize = 16;
/// Snapshot L1 tables listed exactly for the overlap check (more: a window and a table walk).
const SNAPSHOT_L1_LIST: usize = 4;

/// Up to `K` host ranges known exactly; past that, only the window they span (the caller then
/// looks them up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ranges<const K: usize> {
    list: [(u64, u64); K],
    len: usize,
    overflow: bool,
    lo: u64,
    hi: u64,
}

impl<const K: usize> Ranges<K> {
    const NEW: Self = Ranges { list: [(0, 0); K], len: 0, overflow: false, lo: u64::MAX, hi: 0 };

    fn add(&mut self, start: u64, end: u64) {
        self.lo = self.lo.min(start);
        self.hi = self.hi.max(end);
        if let Some(r) = self.list[..self.len].iter_mut().find(|r| r.1 == start || r.0 == end) {
            // Adjacent to a listed range (consecutive blocks): one range.
            *r = (r.0.min(start), r.1.max(end));
        } else if self.len < K {
            self.list[self.len] = (start, end);
            self.len += 1;
        } else {
            self.overflow = true;
        }
    }

    /// Whether one of the ranges meets `start..end`: `None` when only a lookup can tell.
    fn verdict(&self, start: u64, end: u64) -> Option<bool> {
        if self.lo >= end || start >= self.hi {
            return Some(false);
        }
        if self.overflow {
            return None;
        }
        Some(self.list[..self.len].iter().any(|&(a, b)| a < end && start < b))
    }
}

/// What the free-cluster search found.
enum Free {
    /// `clusters` free clusters from cluster `start`, all in ranges with a refcount block.
    Run { start: u64, clusters: u64 },
    /// Cluster `cluster` is free but the refcount block of its range (`index`) is missing.
    NoBlock { index: u64, cluster: u64 },
    /// Every covered cluster from the free index on is used: the table must grow.
    Uncovered,
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Accepts the image for writing (idempotent; called by every write entry point): refuses
    /// an image with the dirty bit (lazy refcounts, not yet repaired), the corrupt bit, a
    /// selected snapshot, or what the engine cannot write yet, with a typed error, before any
    /// byte is written.
    pub(crate) fn prepare_write(&mut self) -> Result<(), Error<I::Error>> {
        if self.io.is_none() {
            return Err(Error::NotOpen);
        }
        if self.snapshot.is_some() {
            return Err(Error::SnapshotSelected);
        }
        if self.write.ready {
            return Ok(());
        }
        let h = self.header;
        if h.incompatible(Incompatible::Dirty) {
            return Err(Error::DirtyImage);
        }
        if h.incompatible(Incompatible::Corrupt) {
            return Err(Error::CorruptImage);
        }
        if h.incompatible(Incompatible::ExternalDataFile) {
            return Err(Error::WriteUnsupported { feature: "an external data file" });
        }
        if h.autoclear_features & (1 << AUTOCLEAR_BITMAPS) != 0 {
            return Err(Error::WriteUnsupported { feature: "persistent dirty bitmaps" });
        }
        if self.is_encrypted() && self.cipher().is_none() {
            return Err(Error::PassphraseRequired);
        }
        let mut st = WriteState::NEW;
        self.scan_refcount_table(&mut st)?;
        self.scan_snapshots(&mut st)?;
        // QEMU clears the autoclear bits it does not know when it opens an image writable.
        let known = (1 << AUTOCLEAR_BITMAPS) | (1 << AUTOCLEAR_DATA_FILE_RAW);
        if h.version >= 3 && h.autoclear_features & !known != 0 {
            let cleared = h.autoclear_features & known;
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            write_aligned(io, 88, &cleared.to_be_bytes()).map_err(Error::Io)?;
            io.flush().map_err(Error::Io)?;
            self.header.autoclear_features = cleared;
        }
        st.ready = true;
        self.write = st;
        Ok(())
    }

    /// Validates every refcount table entry (read in small chunks, not through the cache) and
    /// notes the window of refcount block offsets.
    fn scan_refcount_table(&mut self, st: &mut WriteState) -> Result<(), Error<I::Error>> {
        let cs = self.header.cluster_size();
        let rt = self.header.refcount_table_offset;
        let len = self.rt_entries() * 8;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let mut buf = [0u8; CHUNK];
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(CHUNK as u64) as usize;
            crate::io::read_aligned(io, rt + pos, &mut buf[..n]).map_err(Error::Io)?;
            for (i, e) in buf[..n].chunks_exact(8).enumerate() {
                let raw = be64(e, 0);
                if raw == 0 {
                    continue;
                }
                let index = pos / 8 + i as u64;
                if raw & !REFT_OFFSET_MASK != 0 || raw & (cs - 1) != 0 || raw >= MAX_OFFSET {
                    return Err(Error::BadRefcountBlock { index, entry: raw });
                }
                st.blocks.add(raw, raw + cs);
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// Walks the snapshot table once: its length and the window of the snapshots' L1 tables.
    fn scan_snapshots(&mut self, st: &mut WriteState) -> Result<(), Error<I::Error>> {
        let mut len = 0u64;
        let cs = self.header.cluster_size();
        for s in self.snapshots() {
            let s = s?;
            len = len.saturating_add(s.entry_len);
            let end = s.l1_table_offset.saturating_add(u64::from(s.l1_size) * 8).next_multiple_of(cs);
            st.snap_l1.add(s.l1_table_offset & !(cs - 1), end);
        }
        st.snapshot_table_len = len;
        Ok(())
    }

    /// Allocates between 1 and `count` contiguous free host clusters (first fit, continuing
    /// after the previous allocation when possible), each with refcount 1 (in the cache, dirty:
    /// on disk before any reference is written). Returns `(host_offset, clusters)`.
    pub(crate) fn alloc_clusters(&mut self, count: u64) -> Result<(u64, u64), Error<I::Error>> {
        self.prepare_write()?;
        let count = count.max(1);
        loop {
            match self.find_free(count)? {
                Free::Run { start, clusters } => {
                    for c in start..start + clusters {
                        self.change_refcount(c, true)?;
                    }
                    self.write.free_index = start + clusters;
                    return Ok((start << self.header.cluster_bits, clusters));
                }
                Free::NoBlock { index, cluster } => self.new_refcount_block(index, cluster)?,
                Free::Uncovered => self.grow_refcount_table()?,
            }
        }
    }

    /// The snapshot table changed (snapshot_write.rs): its length and the snapshots' L1 tables
    /// are noted again for the overlap check.
    pub(crate) fn rescan_snapshots(&mut self) -> Result<(), Error<I::Error>> {
        let mut st = WriteState { snap_l1: Ranges::NEW, snapshot_table_len: 0, ..self.write };
        self.scan_snapshots(&mut st)?;
        self.write.snap_l1 = st.snap_l1;
        self.write.snapshot_table_len = st.snapshot_table_len;
        Ok(())
    }

    /// `count` contiguous new clusters (refcount 1, in the cache) for one table that must not
    /// be split (a grown L1), even across ranges without a refcount block: the run is placed
    /// first fit (clusters of ranges without a block are free), then each missing block is
    /// allocated after the run (described by its own range's block, as QEMU's
    /// `alloc_refcount_block` once the allocator has moved on), written with the run's entries
    /// and flushed before the table entry naming it. Returns the run's host offset.
    pub(crate) fn alloc_contiguous_run(&mut self, count: u64) -> Result<u64, Error<I::Error>> {
        self.prepare_write()?;
        let count = count.max(1);
        let first_free = self.write.free_index;
        let bb = self.block_bits();
        let cb = self.header.cluster_bits;
        let start = loop {
            let covered = self.rt_entries() << bb;
            let mut c = self.write.free_index;
            let mut found = None;
            while c.saturating_add(count) <= covered {
                let mut n = 0;
                while n < count && (self.rt_entry((c + n) >> bb)? == 0 || self.refcount(c + n)? == 0) {
                    n += 1;
                }
                if n == count {
                    found = Some(c);
                    break;
                }
                c += n + 1;
            }
            match found {
                Some(s) => break s,
                None => self.grow_refcount_table()?,
            }
        };
        let end = start + count;
        if end.checked_shl(cb).is_none_or(|e| e > MAX_OFFSET) {
            return Err(Error::ImageFull { host_offset: start << cb });
        }
        // Clusters of ranges without a block count as free: never metadata, even on a
        // corrupt image.
        self.check_data_overlap(start << cb, count << cb)?;
        let mut c = start;
        while c < end {
            self.write.free_index = self.write.free_index.max(end);
            let index = c >> bb;
            let range_end = ((index + 1) << bb).min(end);
            if self.rt_entry(index)? != 0 {
                for x in c..range_end {
                    self.change_refcount(x, true)?;
                }
                c = range_end;
                continue;
            }
            let (block, _) = self.alloc_clusters(1)?;
            if self.rt_entry(index)? != 0 {
                // That allocation gave this range its own block (after the run): use it.
                self.queue_release(block >> cb, 1)?;
                continue;
            }
            self.write_refcounts()?;
            self.write_block(block, index << bb, c, range_end)?;
            self.barrier()?;
            self.hook_block(index, block)?;
            c = range_end;
        }
        // Free runs below the table that were too short stay free for later allocations.
        self.write.free_index = if first_free < start { first_free } else { self.write.free_index.max(end) };
        Ok(start << cb)
    }

    /// The raw L2 entry and subcluster bitmap (0 without extended L2) of the guest cluster that
    /// holds `guest_offset`, with the L1 entry's COPIED flag (whether the L2 table is unshared);
    /// `(0, 0, true)` when no L2 table covers it.
    pub(crate) fn l2_entry_of(&mut self, guest_offset: u64) -> Result<(u64, u64, bool), Error<I::Error>> {
        let h = self.header;
        let l1_index = guest_offset >> self.l1_bits();
        if l1_index >= u64::from(self.l1_size) {
            return Ok((0, 0, true));
        }
        let l1e = self.l1_entry(l1_index)?;
        let l2 = l2_offset(&h, l1_index, l1e)?;
        if l2 == 0 {
            return Ok((0, 0, true));
        }
        let es = h.l2_entry_size();
        let index = (guest_offset >> h.cluster_bits) & (h.l2_entries() - 1);
        let (entry, bitmap) = self.with_slice(Table::L2, l2, h.cluster_size(), index * es, 0, |s, w| {
            (be64(s, w), if es == 16 { be64(s, w + 8) } else { 0 })
        })?;
        Ok((entry, bitmap, l1e & OFLAG_COPIED != 0))
    }

    /// Sets the L2 entry (and bitmap) of the guest cluster that holds `guest_offset`,
    /// allocating a new L2 table (zeroed) or copying a shared one first as needed. Cached
    /// (dirty); [`Qcow2::flush`] or eviction writes it in order.
    pub(crate) fn set_l2_entry(&mut self, guest_offset: u64, entry: u64, bitmap: u64) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        let h = self.header;
        let l1_index = guest_offset >> self.l1_bits();
        if l1_index >= u64::from(self.l1_size) {
            return Err(Error::OutOfRange { offset: guest_offset, len: 0, size: self.size });
        }
        let l1e = self.l1_entry(l1_index)?;
        let l2 = l2_offset(&h, l1_index, l1e)?;
        let table = if l2 == 0 {
            self.new_l2_table(l1_index, None)?
        } else if l1e & OFLAG_COPIED == 0 {
            self.new_l2_table(l1_index, Some(l2))?
        } else {
            l2
        };
        let es = h.l2_entry_size();
        let index = (guest_offset >> h.cluster_bits) & (h.l2_entries() - 1);
        self.with_slice(Table::L2, table, h.cluster_size(), index * es, CLASS_L2, |s, w| {
            s[w..w + 8].copy_from_slice(&entry.to_be_bytes());
            if es == 16 {
                s[w + 8..w + 16].copy_from_slice(&bitmap.to_be_bytes());
            }
        })?;
        self.cache.invalidate_hints();
        Ok(())
    }

    /// A new L2 table for L1 entry `l1_index`: zeros, or a copy of the shared table `old`
    /// (whose reference from this L1 is then released). Written and flushed, with its refcount,
    /// before the L1 entry (with COPIED) is written. Returns its offset.
    fn new_l2_table(&mut self, l1_index: u64, old: Option<u64>) -> Result<u64, Error<I::Error>> {
        let cs = self.header.cluster_size();
        let (table, _) = self.alloc_clusters(1)?;
        self.cache.forget(table);
        match old {
            None => {
                let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                write_zeros(io, table, cs).map_err(Error::Io)?;
            }
            Some(old) => {
                let sb = self.slice_bytes();
                for slice in 0..cs / sb {
                    let slot = self.load_slot(Table::L2, old, cs, slice, 0)?;
                    let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                    let bytes = self.cache.slot_bytes(slot).ok_or(Error::NotOpen)?;
                    write_aligned(io, table + slice * sb, &bytes[..sb as usize]).map_err(Error::Io)?;
                }
            }
        }
        self.note_host_write(table + cs);
        self.write_refcounts()?;
        self.barrier()?;
        self.write_l1_entry(l1_index, table | OFLAG_COPIED)?;
        if let Some(old) = old {
            self.queue_release(old >> self.header.cluster_bits, 1)?;
        }
        Ok(table)
    }

    /// Drops one reference to each of `count` clusters from `host_offset`, whose L2 entries no
    /// longer point at them (their new entries are written and flushed first); a cluster that
    /// reaches 0 becomes free for the allocator.
    pub(crate) fn release_clusters(&mut self, host_offset: u64, count: u64) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        if count == 0 {
            return Ok(());
        }
        self.queue_release(host_offset >> self.header.cluster_bits, count)
    }

    /// Drops one reference to every cluster the compressed bytes `host_offset..+len` touch.
    pub(crate) fn release_compressed(&mut self, host_offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        if len == 0 {
            return Ok(());
        }
        let cb = self.header.cluster_bits;
        let first = host_offset >> cb;
        let last = host_offset.saturating_add(len - 1) >> cb;
        self.queue_release(first, last - first + 1)
    }

    /// The refcount of the cluster holding `host_offset` (as the cache holds it: pending
    /// releases not applied yet still count).
    pub(crate) fn refcount_of(&mut self, host_offset: u64) -> Result<u64, Error<I::Error>> {
        self.refcount(host_offset >> self.header.cluster_bits)
    }

    /// Data written before this call must be durable before any L2 entry set after it is
    /// written (copy on write moved acknowledged data). Every write-back of L2 slices starts
    /// with a flush of the device and data file (see the module docs), so this only checks that
    /// the image is open: the barrier is always in place.
    pub(crate) fn data_barrier(&mut self) -> Result<(), Error<I::Error>> {
        if self.io.is_none() {
            return Err(Error::NotOpen);
        }
        Ok(())
    }

    /// Refuses an in-place data write that would land on metadata (header, L1, refcount
    /// table/blocks, L2 tables, snapshot table, LUKS header area), as QEMU's overlap check.
    pub(crate) fn check_data_overlap(&mut self, host_offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        if len == 0 {
            return Ok(());
        }
        let fail = |what| Err(Error::MetadataOverlap { what, host_offset, len });
        let Some(end) = host_offset.checked_add(len) else {
            return fail("end of the address space");
        };
        let h = self.header;
        let cs = h.cluster_size();
        // Whole clusters: a table's cluster holds nothing else.
        let hits = |start: u64, n: u64| {
            let first = start & !(cs - 1);
            let last = start.saturating_add(n).next_multiple_of(cs);
            n != 0 && first < end && host_offset < last
        };
        if hits(0, cs) {
            return fail("header");
        }
        if hits(h.l1_table_offset, u64::from(h.l1_size) * 8) {
            return fail("active L1 table");
        }
        if hits(h.refcount_table_offset, self.rt_entries() * 8) {
            return fail("refcount table");
        }
        if h.nb_snapshots > 0 && hits(h.snapshots_offset, self.write.snapshot_table_len.max(1)) {
            return fail("snapshot table");
        }
        if let Some(fde) = self.extensions.fde {
            if hits(fde.offset, fde.length.next_multiple_of(cs)) {
                return fail("LUKS header area");
            }
        }
        if let Some(b) = self.extensions.bitmaps {
            if hits(b.bitmap_directory_offset, b.bitmap_directory_size) {
                return fail("bitmap directory");
            }
        }
        // L2 tables the cache knows: entries of cached active L1 slices, and dirty L2 slices.
        let sb = self.slice_bytes();
        let mut l2_hit = false;
        for (slice, bytes, _) in self.cache.cached_of(h.l1_table_offset) {
            let first = slice * sb;
            let n = (u64::from(h.l1_size) * 8).saturating_sub(first).min(sb) as usize;
            l2_hit |= bytes[..n].chunks_exact(8).any(|e| {
                let off = be64(e, 0) & super::l2_entry::L1E_OFFSET_MASK;
                off != 0 && hits(off, cs)
            });
        }
        l2_hit |= self.cache.dirty_tables(CLASS_L2).any(|t| hits(t, cs));
        if l2_hit {
            return fail("L2 table");
        }
        let blocks = match self.write.blocks.verdict(host_offset, end) {
            Some(hit) => hit,
            None => self.hits_refcount_block(host_offset, end)?,
        };
        if blocks {
            return fail("refcount block");
        }
        let snap_l1 = match self.write.snap_l1.verdict(host_offset, end) {
            Some(hit) => hit,
            None => self.hits_snapshot_l1(host_offset, end)?,
        };
        if snap_l1 {
            return fail("snapshot L1 table");
        }
        Ok(())
    }

    /// Whether a refcount block lies in `start..end` (the refcount table read in small chunks).
    fn hits_refcount_block(&mut self, start: u64, end: u64) -> Result<bool, Error<I::Error>> {
        let cs = self.header.cluster_size();
        let rt = self.header.refcount_table_offset;
        let len = self.rt_entries() * 8;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let mut buf = [0u8; CHUNK];
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(CHUNK as u64) as usize;
            crate::io::read_aligned(io, rt + pos, &mut buf[..n]).map_err(Error::Io)?;
            let hit = buf[..n].chunks_exact(8).any(|e| {
                let b = be64(e, 0) & REFT_OFFSET_MASK;
                b != 0 && b < end && start < b + cs
            });
            if hit {
                return Ok(true);
            }
            pos += n as u64;
        }
        Ok(false)
    }

    /// Whether a snapshot's L1 table lies in `start..end`.
    fn hits_snapshot_l1(&mut self, start: u64, end: u64) -> Result<bool, Error<I::Error>> {
        for s in self.snapshots() {
            let s = s?;
            let n = u64::from(s.l1_size) * 8;
            if n != 0 && s.l1_table_offset < end && start < s.l1_table_offset.saturating_add(n) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes back every dirty table slice in the safe order and flushes the device (and the
    /// data file): everything written before returns from a crash after this.
    pub fn flush(&mut self) -> Result<(), Error<I::Error>> {
        if self.io.is_none() {
            return Err(Error::NotOpen);
        }
        if !self.write.ready {
            // Nothing was written through this image.
            return Ok(());
        }
        self.apply_releases()?;
        self.write_refcounts()?;
        if self.cache.next_dirty(CLASS_L2).is_some() {
            self.barrier()?;
            self.write_dirty(CLASS_L2)?;
        }
        self.barrier()
    }

    /// The data layer reports that it wrote host bytes up to `end` (the file may have grown:
    /// reads of the new bytes must not be cut at the old end of file).
    pub(crate) fn note_host_write(&mut self, end: u64) {
        self.file_size = self.file_size.max(end);
    }

    // ---- geometry ----

    pub(crate) fn slice_bytes(&self) -> u64 {
        (SLICE_BYTES as u64).min(self.header.cluster_size())
    }

    /// log2 of the guest bytes one L1 entry covers.
    fn l1_bits(&self) -> u32 {
        self.header.cluster_bits + self.header.l2_entries().trailing_zeros()
    }

    /// Entries of the refcount table.
    fn rt_entries(&self) -> u64 {
        u64::from(self.header.refcount_table_clusters) << (self.header.cluster_bits - 3)
    }

    /// log2 of the entries of one refcount block.
    fn block_bits(&self) -> u32 {
        self.header.cluster_bits + 3 - self.header.refcount_order
    }

    // ---- cached table access ----

    /// Loads slice `slice` of the table at `table_offset` (`table_len` bytes) into the cache
    /// (writing a dirty victim first, in order) and returns its slot; `class` != 0 marks it
    /// dirty.
    fn load_slot(
        &mut self,
        table: Table,
        table_offset: u64,
        table_len: u64,
        slice: u64,
        class: u8,
    ) -> Result<usize, Error<I::Error>> {
        let sb = self.slice_bytes();
        let start = table_offset.saturating_add(slice * sb);
        let len = sb.min(table_len.saturating_sub(slice * sb));
        if start.saturating_add(len) > self.file_size {
            return Err(Corruption::PastEndOfFile { table, offset: table_offset, file_size: self.file_size }.into());
        }
        self.make_room(table_offset, slice)?;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        self.cache.load_slot(table_offset, slice, class, |buf| {
            crate::io::read_aligned(io, start, &mut buf[..len as usize]).map_err(Error::Io)
        })
    }

    /// Runs `f` on the cached slice of the table at `table_offset` that holds byte `byte`
    /// (with the position of `byte` in it); `class` != 0 marks the slice dirty.
    pub(crate) fn with_slice<R>(
        &mut self,
        table: Table,
        table_offset: u64,
        table_len: u64,
        byte: u64,
        class: u8,
        f: impl FnOnce(&mut [u8], usize) -> R,
    ) -> Result<R, Error<I::Error>> {
        let sb = self.slice_bytes();
        let slice = byte / sb;
        let within = (byte % sb) as usize;
        let len = sb.min(table_len.saturating_sub(slice * sb)) as usize;
        let slot = self.load_slot(table, table_offset, table_len, slice, class)?;
        let bytes = self.cache.slot_bytes_mut(slot).ok_or(Error::NotOpen)?;
        Ok(f(&mut bytes[..len], within))
    }

    /// Makes sure loading slice `slice` of `table_offset` evicts no dirty slice: writes the
    /// victim back first (an L2 victim after every dirty refcount slice and a flush).
    pub(crate) fn make_room(&mut self, table_offset: u64, slice: u64) -> Result<(), Error<I::Error>> {
        while let Some((slot, class, victim, vslice)) = self.cache.dirty_victim(table_offset, slice) {
            if class == CLASS_L2 {
                self.write_refcounts()?;
                self.barrier()?;
                self.write_dirty(CLASS_L2)?;
            } else {
                self.write_slot(slot, victim, vslice)?;
            }
        }
        Ok(())
    }

    /// Writes the dirty slice in `slot` (slice `slice` of the table at `table_offset`).
    fn write_slot(&mut self, slot: usize, table_offset: u64, slice: u64) -> Result<(), Error<I::Error>> {
        let sb = self.slice_bytes();
        let at = table_offset + slice * sb;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let bytes = self.cache.slot_bytes(slot).ok_or(Error::NotOpen)?;
        write_aligned(io, at, &bytes[..sb as usize]).map_err(Error::Io)?;
        self.cache.mark_clean(slot);
        self.note_host_write(at + sb);
        Ok(())
    }

    /// Writes every dirty slice of `class`.
    fn write_dirty(&mut self, class: u8) -> Result<(), Error<I::Error>> {
        while let Some((slot, table_offset, slice)) = self.cache.next_dirty(class) {
            self.write_slot(slot, table_offset, slice)?;
        }
        Ok(())
    }

    /// Writes every dirty refcount slice (always allowed: see the module docs).
    fn write_refcounts(&mut self) -> Result<(), Error<I::Error>> {
        self.write_dirty(CLASS_REFCOUNT)
    }

    /// Flushes the data file (if any) and the image file.
    pub(crate) fn barrier(&mut self) -> Result<(), Error<I::Error>> {
        if let Some(d) = self.data_file.as_mut() {
            d.flush().map_err(Error::Io)?;
        }
        self.io.as_mut().ok_or(Error::NotOpen)?.flush().map_err(Error::Io)
    }

    // ---- L1 ----

    fn l1_entry(&mut self, l1_index: u64) -> Result<u64, Error<I::Error>> {
        let len = u64::from(self.l1_size) * 8;
        self.with_slice(Table::L1, self.l1_table_offset, len, l1_index * 8, 0, |s, w| be64(s, w))
    }

    /// Writes L1 entry `l1_index` through (8 bytes) and updates the cached slice.
    fn write_l1_entry(&mut self, l1_index: u64, value: u64) -> Result<(), Error<I::Error>> {
        let l1 = self.l1_table_offset;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        write_aligned(io, l1 + l1_index * 8, &value.to_be_bytes()).map_err(Error::Io)?;
        let sb = self.slice_bytes();
        let byte = l1_index * 8;
        if let Some(s) = self.cache.cached_mut(l1, byte / sb) {
            let w = (byte % sb) as usize;
            s[w..w + 8].copy_from_slice(&value.to_be_bytes());
        }
        self.cache.invalidate_hints();
        Ok(())
    }

    // ---- refcounts ----

    /// The refcount block offset of refcount table entry `index` (0: none, also past the
    /// table's end).
    fn rt_entry(&mut self, index: u64) -> Result<u64, Error<I::Error>> {
        if self.write.rt_memo.0 == index + 1 {
            return Ok(self.write.rt_memo.1);
        }
        let entries = self.rt_entries();
        if index >= entries {
            return Ok(0);
        }
        let rt = self.header.refcount_table_offset;
        let raw = self.with_slice(Table::Refcount, rt, entries * 8, index * 8, 0, |s, w| be64(s, w))?;
        let cs = self.header.cluster_size();
        if raw & !REFT_OFFSET_MASK != 0 || raw & (cs - 1) != 0 || raw >= MAX_OFFSET {
            return Err(Error::BadRefcountBlock { index, entry: raw });
        }
        self.write.rt_memo = (index + 1, raw);
        Ok(raw)
    }

    /// The refcount of cluster `cluster` (0 when no refcount block covers it).
    pub(crate) fn refcount(&mut self, cluster: u64) -> Result<u64, Error<I::Error>> {
        let bb = self.block_bits();
        let block = self.rt_entry(cluster >> bb)?;
        if block == 0 {
            return Ok(0);
        }
        let order = self.header.refcount_order;
        let (byte, shift) = refcount_pos(order, cluster & ((1 << bb) - 1));
        let cs = self.header.cluster_size();
        self.with_slice(Table::Refcount, block, cs, byte, 0, |s, w| get_refcount(s, w, shift, order))
    }

    /// Raises (or lowers) the refcount of cluster `cluster` by one in its (existing) refcount
    /// block, in the cache. A cluster that drops to 0 is free again: its cached slices are
    /// forgotten and the allocator's index moves down to it.
    pub(crate) fn change_refcount(&mut self, cluster: u64, increase: bool) -> Result<u64, Error<I::Error>> {
        let h = self.header;
        let host_offset = cluster << h.cluster_bits;
        let bb = self.block_bits();
        let block = self.rt_entry(cluster >> bb)?;
        if block == 0 {
            return Err(if increase {
                Error::ImageFull { host_offset }
            } else {
                Error::RefcountUnderflow { host_offset }
            });
        }
        // Inside a transaction a live block is copied before its first change.
        let block = self.writable_block(cluster >> bb, block)?;
        let order = h.refcount_order;
        let (byte, shift) = refcount_pos(order, cluster & ((1 << bb) - 1));
        let max = refcount_max(order);
        let value = self.with_slice(Table::Refcount, block, h.cluster_size(), byte, CLASS_REFCOUNT, |s, w| {
            let old = get_refcount(s, w, shift, order);
            let new = match increase {
                true if old < max => old + 1,
                false if old > 0 => old - 1,
                _ => return Err(old),
            };
            set_refcount(s, w, shift, order, new);
            Ok(new)
        })?;
        match value {
            Ok(0) => {
                self.cache.forget(host_offset);
                // Not below a transaction's fence: what it frees is live until its switch.
                let fence = self.write.shadow.map_or(0, |s| s.fence);
                self.write.free_index = self.write.free_index.min(cluster).max(fence);
                Ok(0)
            }
            Ok(v) => Ok(v),
            Err(_) if increase => Err(Error::RefcountOverflow { host_offset, refcount_bits: h.refcount_bits() }),
            Err(_) => Err(Error::RefcountUnderflow { host_offset }),
        }
    }

    /// First fit from the free index: a run of up to `count` free clusters that all have a
    /// refcount block (the run stops before a range without one, and at the table's coverage).
    fn find_free(&mut self, count: u64) -> Result<Free, Error<I::Error>> {
        let bb = self.block_bits();
        let cb = self.header.cluster_bits;
        let covered = self.rt_entries() << bb;
        // Clusters at or past this one would lie at or past 2^56.
        let limit = MAX_OFFSET >> cb;
        let mut c = self.write.free_index;
        while c < covered {
            let index = c >> bb;
            if c >= limit {
                return Err(Error::ImageFull { host_offset: MAX_OFFSET });
            }
            if self.rt_entry(index)? == 0 {
                return Ok(Free::NoBlock { index, cluster: c });
            }
            match self.first_free_in_slice(c)? {
                Ok(free) => c = free,
                Err(next) => {
                    c = next;
                    continue;
                }
            }
            let mut n = 1;
            while n < count && c + n < covered {
                let next = c + n;
                if next >> bb != (next - 1) >> bb && self.rt_entry(next >> bb)? == 0 {
                    break;
                }
                if self.refcount(next)? != 0 {
                    break;
                }
                n += 1;
            }
            let n = n.min(limit - c);
            return Ok(Free::Run { start: c, clusters: n });
        }
        Ok(Free::Uncovered)
    }

    /// From cluster `c` (whose refcount block exists), the first cluster with refcount 0 in
    /// the same cached slice of that block (`Ok`), or the first cluster of the next slice
    /// (`Err`): one slice lookup per slice of used clusters, not one per cluster.
    fn first_free_in_slice(&mut self, c: u64) -> Result<Result<u64, u64>, Error<I::Error>> {
        let bb = self.block_bits();
        let block = self.rt_entry(c >> bb)?;
        let order = self.header.refcount_order;
        let cs = self.header.cluster_size();
        let sb = self.slice_bytes();
        let per_slice = (sb * 8) >> order;
        let index = c & ((1 << bb) - 1);
        let slice_start = c - index % per_slice;
        let (byte, _) = refcount_pos(order, index);
        let found = self.with_slice(Table::Refcount, block, cs, byte, 0, |s, _| {
            (index % per_slice..per_slice).find(|&i| {
                let (at, shift) = refcount_pos(order, i);
                get_refcount(s, at as usize, shift, order) == 0
            })
        })?;
        Ok(match found {
            Some(i) => Ok(slice_start + i),
            None => Err(slice_start + per_slice),
        })
    }

    /// Creates the refcount block of table entry `index` at free cluster `at`, the first free
    /// cluster the search met (first fit: every free cluster before it lies in a range that has
    /// a block, and there are none). `at` lies in the block's own range, so the block describes
    /// itself (its own entry is 1, as QEMU's `alloc_refcount_block` does). Written and flushed
    /// before the table entry naming it (8 bytes, written through).
    fn new_refcount_block(&mut self, index: u64, at: u64) -> Result<(), Error<I::Error>> {
        let bb = self.block_bits();
        if at >> bb != index {
            return Err(Error::BadRefcountBlock { index, entry: at << self.header.cluster_bits });
        }
        // A range without a block calls its clusters free; on a corrupt image that can be
        // where the header or a table lies: refused, never written over.
        self.check_data_overlap(at << self.header.cluster_bits, self.header.cluster_size())?;
        self.write_block(at << self.header.cluster_bits, index << bb, at, at + 1)?;
        self.barrier()?;
        self.hook_block(index, at << self.header.cluster_bits)
    }

    /// Writes a whole refcount block at `offset` describing clusters from `first`: entries of
    /// clusters `mark_start..mark_end` are 1, all others 0 (chunks from a small buffer).
    fn write_block(&mut self, offset: u64, first: u64, mark_start: u64, mark_end: u64) -> Result<(), Error<I::Error>> {
        let cs = self.header.cluster_size();
        let order = self.header.refcount_order;
        self.cache.forget(offset);
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        // Clusters described by bytes `pos..pos + len` of the block.
        let clusters = |pos: u64, len: u64| (first + ((pos * 8) >> order), first + (((pos + len) * 8) >> order));
        let marked = |(a, b): (u64, u64)| a < mark_end && mark_start < b;
        let mut pos = 0u64;
        while pos < cs {
            let big = (cs - pos).min(crate::io::MAX_BLOCK_SIZE as u64);
            if !marked(clusters(pos, big)) {
                write_zeros(io, offset + pos, big).map_err(Error::Io)?;
                pos += big;
                continue;
            }
            let n = (cs - pos).min(CHUNK as u64);
            let mut buf = [0u8; CHUNK];
            let (a, b) = clusters(pos, n);
            for c in a.max(mark_start)..b.min(mark_end) {
                let (byte, shift) = refcount_pos(order, c - first);
                set_refcount(&mut buf, (byte - pos) as usize, shift, order, 1);
            }
            write_aligned(io, offset + pos, &buf[..n as usize]).map_err(Error::Io)?;
            pos += n;
        }
        self.note_host_write(offset + cs);
        Ok(())
    }

    /// Points refcount table entry `index` at the block at `block` (8 bytes written through).
    fn hook_block(&mut self, index: u64, block: u64) -> Result<(), Error<I::Error>> {
        let rt = self.header.refcount_table_offset;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        write_aligned(io, rt + index * 8, &block.to_be_bytes()).map_err(Error::Io)?;
        let sb = self.slice_bytes();
        if let Some(s) = self.cache.cached_mut(rt, index * 8 / sb) {
            let w = (index * 8 % sb) as usize;
            s[w..w + 8].copy_from_slice(&block.to_be_bytes());
        }
        self.write.rt_memo = (0, 0);
        let cs = self.header.cluster_size();
        self.write.blocks.add(block, block + cs);
        Ok(())
    }

    /// Relocates the full refcount table (QEMU's `qcow2_refcount_area`): at the first cluster
    /// the table does not cover, new refcount blocks (describing themselves and the new table)
    /// and a table 1.5x the needed size with the old entries and the new blocks; blocks and
    /// table written and flushed, then the 12-byte header update at offset 48 (flushed), then
    /// the old table freed.
    fn grow_refcount_table(&mut self) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let bb = self.block_bits();
        let old_entries = self.rt_entries();
        let area = old_entries << bb;
        let full = Error::ImageFull { host_offset: area.min(MAX_OFFSET >> cb) << cb };
        // Blocks (nb) and table clusters (nt): the blocks cover the whole area.
        let mut nb = 1u64;
        let nt = loop {
            let need = old_entries + nb;
            let nt = (need + need.div_ceil(2)).saturating_mul(8).div_ceil(cs);
            let nb2 = (nb + nt).div_ceil(1 << bb);
            if nb2 <= nb {
                break nt;
            }
            nb = nb2;
        };
        let clusters = area.saturating_add(nb).saturating_add(nt);
        if nt.saturating_mul(cs) > MAX_REFCOUNT_TABLE_BYTES || clusters > MAX_OFFSET >> cb {
            return Err(full);
        }
        let end = clusters << cb;
        // The new area lies past every cluster the table covers: on a corrupt image a table
        // can lie there; refused, never written over.
        self.check_data_overlap(area << cb, (nb + nt) << cb)?;
        for k in 0..nb {
            self.write_block((area + k) << cb, (old_entries + k) << bb, area, area + nb + nt)?;
        }
        let old = h.refcount_table_offset;
        let new = (area + nb) << cb;
        self.cache.forget(new);
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let mut buf = [0u8; CHUNK];
        let table_bytes = nt * cs;
        let used = (old_entries + nb) * 8;
        let mut pos = 0u64;
        while pos < table_bytes {
            if pos >= used {
                write_zeros(io, new + pos, table_bytes - pos).map_err(Error::Io)?;
                break;
            }
            let n = (table_bytes - pos).min(CHUNK as u64) as usize;
            buf.fill(0);
            let from_old = (old_entries * 8).saturating_sub(pos).min(n as u64) as usize;
            crate::io::read_aligned(io, old + pos, &mut buf[..from_old]).map_err(Error::Io)?;
            for i in 0..n / 8 {
                let index = pos / 8 + i as u64;
                if (old_entries..old_entries + nb).contains(&index) {
                    let block = (area + index - old_entries) << cb;
                    buf[i * 8..i * 8 + 8].copy_from_slice(&block.to_be_bytes());
                }
            }
            write_aligned(io, new + pos, &buf[..n]).map_err(Error::Io)?;
            pos += n as u64;
        }
        self.note_host_write(end);
        self.barrier()?;
        // Inside a transaction the table is not live: its switch names the new one.
        if self.write.shadow.is_none() {
            let mut field = [0u8; 12];
            field[..8].copy_from_slice(&new.to_be_bytes());
            field[8..].copy_from_slice(&(nt as u32).to_be_bytes());
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            write_aligned(io, 48, &field).map_err(Error::Io)?;
            self.barrier()?;
        }
        let old_clusters = u64::from(h.refcount_table_clusters);
        self.header.refcount_table_offset = new;
        self.header.refcount_table_clusters = nt as u32;
        self.write.rt_memo = (0, 0);
        self.cache.forget(old);
        for k in 0..nb {
            self.write.blocks.add((area + k) << cb, (area + k + 1) << cb);
        }
        // The header no longer names the old table (durably): free it.
        for c in old >> cb..(old >> cb) + old_clusters {
            self.change_refcount(c, false)?;
        }
        Ok(())
    }

    // ---- releases ----

    fn queue_release(&mut self, first: u64, count: u64) -> Result<(), Error<I::Error>> {
        let w = &mut self.write;
        if w.pending_len > 0 {
            let last = &mut w.pending[w.pending_len - 1];
            if last.0.checked_add(last.1) == Some(first) {
                last.1 += count;
                return Ok(());
            }
        }
        if w.pending_len == PENDING_CAP {
            self.apply_releases()?;
        }
        let w = &mut self.write;
        w.pending[w.pending_len] = (first, count);
        w.pending_len += 1;
        Ok(())
    }

    /// Applies the queued releases once the entries that dropped them are durable: dirty
    /// refcounts, flush, dirty L2 slices, flush, then the decreases (in the cache).
    fn apply_releases(&mut self) -> Result<(), Error<I::Error>> {
        if self.write.pending_len == 0 {
            return Ok(());
        }
        self.write_refcounts()?;
        self.barrier()?;
        self.write_dirty(CLASS_L2)?;
        self.barrier()?;
        let pending = self.write.pending;
        let n = self.write.pending_len;
        // Taken before applying: a failure half-way leaks the rest instead of applying twice.
        self.write.pending_len = 0;
        for &(first, count) in &pending[..n] {
            for c in first..first.saturating_add(count) {
                self.change_refcount(c, false)?;
            }
        }
        Ok(())
    }
}

/// Hooks that drive the metadata layer alone, for integration tests against qemu-img (not
/// API: the data layer's `write_at` is the way to write).
#[doc(hidden)]
impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Points the guest cluster holding `guest_offset` at a newly allocated cluster (L2 entry
    /// `host | COPIED`, the replaced cluster released) and returns the new host offset; the
    /// caller writes the cluster's data (through another handle) before [`Qcow2::flush`].
    pub fn debug_map_new_cluster(&mut self, guest_offset: u64) -> Result<u64, Error<I::Error>> {
        let (old, _, _) = self.l2_entry_of(guest_offset)?;
        let (host, _) = self.alloc_clusters(1)?;
        self.note_host_write(host + self.header.cluster_size());
        self.set_l2_entry(guest_offset, host | OFLAG_COPIED, 0)?;
        let old_host = old & super::l2_entry::L2E_OFFSET_MASK;
        if old & super::l2_entry::OFLAG_COMPRESSED == 0 && old_host != 0 {
            self.release_clusters(old_host, 1)?;
        }
        Ok(host)
    }

    /// [`Qcow2::refcount_of`] for tests.
    pub fn debug_refcount_of(&mut self, host_offset: u64) -> Result<u64, Error<I::Error>> {
        self.refcount_of(host_offset)
    }
}

mod shadow;
#[cfg(test)]
mod tests;

pub(crate) use shadow::Switch;
