//! Refcount transactions: operations that must change refcounts and tables the header names
//! *together* (internal snapshot create and delete) do it with one header write.
//!
//! A refcount and the COPIED flag of the L2 entry that names the cluster live in different
//! clusters, so no single write changes both; `qemu-img check` calls a disagreement between
//! them a corruption. Inside a transaction the live structures are only read:
//!
//! - [`Qcow2::transaction`] first allocates a new refcount table in the live structure (a leak
//!   if the transaction never ends), flushes, copies the live table into it and makes it the
//!   table the engine uses (in memory only; the header still names the live one).
//! - A refcount change that meets a live refcount block copies the block to a new cluster
//!   first (copy on write, [`Qcow2::copy_block`]): the copy is counted in the new structure,
//!   the live block and the live table are not (they are freed by the switch).
//! - New clusters are handed out only at or past the *fence*, the end of the file when the
//!   transaction began: clusters freed inside the transaction (the live blocks and table, the
//!   tables the operation replaces) are still live until the switch and are not reused.
//! - The operation writes the tables that change to new clusters as well (never in place),
//!   then [`Qcow2::transaction`] writes everything back, flushes, and switches with one
//!   48-byte header write at offset 24 (virtual size, `l1_size`, `l1_table_offset`,
//!   `refcount_table_offset`, `refcount_table_clusters`, `nb_snapshots`, `snapshots_offset`:
//!   one sector), flushed.
//!
//! A crash before the header write leaves the image as it was plus the leaked new table (and
//! any refcount block the live allocator had to add for it); after it, the operation is
//! complete. An error inside the transaction drops everything it cached and re-reads the
//! live structures at the next write.

use super::super::error::Error;
use super::super::header::{Table, MAX_OFFSET};
use super::super::table_write::write_aligned;
use super::{Free, Qcow2};
use crate::io::BlockIo;
use core::num::NonZeroU64;

/// Block copies a refcount change may nest (a copy's own refcount change can copy another
/// block). Images QEMU writes need 3 at most: their blocks describe themselves or lie in the
/// first block's range.
const MAX_COPY_DEPTH: u8 = 8;

/// A transaction in progress (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shadow {
    /// The refcount table the header names (read only until the switch; never 0: cluster 0
    /// is the header, and the niche keeps `Option<Shadow>` at 32 bytes).
    live_table: NonZeroU64,
    /// First cluster (index) the allocator may hand out.
    pub(super) fence: u64,
    /// Its clusters.
    live_clusters: u32,
    /// The last refcount table index found not to need a copy, + 1 (tables hold at most
    /// 2^20 entries).
    copied_memo: u32,
    /// Block copies in progress (nesting).
    depth: u8,
}

/// What one header write switches to at the end of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Switch {
    pub(crate) size: u64,
    pub(crate) l1_size: u32,
    pub(crate) l1_table_offset: u64,
    pub(crate) nb_snapshots: u32,
    pub(crate) snapshots_offset: u64,
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// The header fields a [`Switch`] replaces, as they are now.
    pub(crate) fn current_switch(&self) -> Switch {
        let h = &self.header;
        Switch {
            size: h.size,
            l1_size: h.l1_size,
            l1_table_offset: h.l1_table_offset,
            nb_snapshots: h.nb_snapshots,
            snapshots_offset: h.snapshots_offset,
        }
    }

    /// Runs `op` as a refcount transaction (module docs): every refcount change `op` makes goes
    /// to copies, every table it changes must be written to new clusters, and the [`Switch`]
    /// it returns is written with the new refcount table in one header write. On an error the
    /// image stays as it was on disk (the transaction's clusters leak at worst).
    pub(crate) fn transaction(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<Switch, Error<I::Error>>,
    ) -> Result<(), Error<I::Error>> {
        self.begin_transaction()?;
        let result = op(self).and_then(|switch| self.commit_transaction(switch));
        if result.is_err() {
            self.abort_transaction();
        }
        result
    }

    fn begin_transaction(&mut self) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        self.flush()?;
        let clusters = u64::from(self.header.refcount_table_clusters);
        // In the live structure (it may relocate the live table: read the header after).
        let table = self.alloc_contiguous_run(clusters)?;
        self.flush()?;
        let h = self.header;
        let cb = h.cluster_bits;
        let bytes = u64::from(h.refcount_table_clusters) << cb;
        let fence = self.file_size.div_ceil(h.cluster_size()).max((table >> cb) + clusters);
        self.copy_cached(Table::Refcount, h.refcount_table_offset, bytes, table)?;
        self.cache.forget(table);
        self.header.refcount_table_offset = table;
        self.write.rt_memo = (0, 0);
        self.write.free_index = fence;
        let live_table =
            NonZeroU64::new(h.refcount_table_offset).ok_or(Error::BadRefcountBlock { index: 0, entry: 0 })?;
        self.write.shadow =
            Some(Shadow { live_table, live_clusters: h.refcount_table_clusters, fence, depth: 0, copied_memo: 0 });
        // The new structure does not name the live table.
        let first = h.refcount_table_offset >> cb;
        for c in first..first + u64::from(h.refcount_table_clusters) {
            self.change_refcount(c, false)?;
        }
        Ok(())
    }

    /// Writes everything back, then the one header write (flushed) that switches to the new
    /// refcount table and `switch`.
    fn commit_transaction(&mut self, switch: Switch) -> Result<(), Error<I::Error>> {
        self.flush()?;
        let h = self.header;
        let crypt_method: u32 = match h.crypt_method {
            super::super::CryptMethod::None => 0,
            super::super::CryptMethod::Aes => 1,
            super::super::CryptMethod::Luks => 2,
        };
        let mut field = [0u8; 48];
        field[..8].copy_from_slice(&switch.size.to_be_bytes());
        field[8..12].copy_from_slice(&crypt_method.to_be_bytes());
        field[12..16].copy_from_slice(&switch.l1_size.to_be_bytes());
        field[16..24].copy_from_slice(&switch.l1_table_offset.to_be_bytes());
        field[24..32].copy_from_slice(&h.refcount_table_offset.to_be_bytes());
        field[32..36].copy_from_slice(&h.refcount_table_clusters.to_be_bytes());
        field[36..40].copy_from_slice(&switch.nb_snapshots.to_be_bytes());
        field[40..48].copy_from_slice(&switch.snapshots_offset.to_be_bytes());
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        write_aligned(io, 24, &field).map_err(Error::Io)?;
        self.barrier()?;
        self.header.size = switch.size;
        self.header.l1_size = switch.l1_size;
        self.header.l1_table_offset = switch.l1_table_offset;
        self.header.nb_snapshots = switch.nb_snapshots;
        self.header.snapshots_offset = switch.snapshots_offset;
        self.write.shadow = None;
        // Everything the transaction freed may be reused now; the block list is rebuilt.
        self.write.free_index = 0;
        self.write.rt_memo = (0, 0);
        let mut st = super::WriteState::NEW;
        self.scan_refcount_table(&mut st)?;
        self.write.blocks = st.blocks;
        Ok(())
    }

    /// Forgets the transaction: the live table again, nothing it cached, and the write state
    /// rebuilt from the live structures at the next write.
    fn abort_transaction(&mut self) {
        if let Some(sh) = self.write.shadow.take() {
            self.header.refcount_table_offset = sh.live_table.get();
            self.header.refcount_table_clusters = sh.live_clusters;
        }
        self.cache.clear_all();
        self.write = super::WriteState::NEW;
    }

    /// Inside a transaction: copies the refcount block of table entry `index` (at `block`) to
    /// a new cluster if it is still the live one, before a change to it. Returns the block to
    /// change.
    pub(super) fn writable_block(&mut self, index: u64, block: u64) -> Result<u64, Error<I::Error>> {
        let Some(sh) = self.write.shadow else {
            return Ok(block);
        };
        if block == 0 || u64::from(sh.copied_memo) == index + 1 {
            return Ok(block);
        }
        let live_entries = u64::from(sh.live_clusters) << (self.header.cluster_bits - 3);
        let live = if index < live_entries {
            let len = live_entries * 8;
            self.with_slice(Table::Refcount, sh.live_table.get(), len, index * 8, 0, |s, w| super::super::be64(s, w))?
        } else {
            0
        };
        if live != block {
            self.set_copied_memo(index);
            return Ok(block);
        }
        self.copy_block(index, block)?;
        self.set_copied_memo(index);
        self.rt_entry(index)
    }

    /// Copies the `len` bytes of the table at `from` to `to`, a slice at a time through the
    /// table cache (the slices' own memory: no buffer on the stack).
    fn copy_cached(&mut self, table: Table, from: u64, len: u64, to: u64) -> Result<(), Error<I::Error>> {
        let sb = self.slice_bytes();
        for slice in 0..len.div_ceil(sb) {
            let slot = self.load_slot(table, from, len, slice, 0)?;
            let n = sb.min(len - slice * sb) as usize;
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            let bytes = self.cache.slot_bytes(slot).ok_or(Error::NotOpen)?;
            write_aligned(io, to + slice * sb, &bytes[..n]).map_err(Error::Io)?;
        }
        self.note_host_write(to + len);
        Ok(())
    }

    fn set_copied_memo(&mut self, index: u64) {
        if let Some(sh) = self.write.shadow.as_mut() {
            sh.copied_memo = u32::try_from(index + 1).unwrap_or(0);
        }
    }

    /// Copies live refcount block `index` (at `block`) to a free cluster at or past the fence,
    /// names the copy in the new table, counts it and stops counting the live block.
    fn copy_block(&mut self, index: u64, block: u64) -> Result<(), Error<I::Error>> {
        let depth = self.write.shadow.map_or(0, |s| s.depth);
        if depth >= MAX_COPY_DEPTH {
            return Err(Error::BadRefcountBlock { index, entry: block });
        }
        if let Some(sh) = self.write.shadow.as_mut() {
            sh.depth += 1;
        }
        let cb = self.header.cluster_bits;
        let at = loop {
            match self.find_free(1)? {
                Free::Run { start, .. } => break start,
                Free::NoBlock { index, cluster } => self.new_refcount_block(index, cluster)?,
                Free::Uncovered => self.grow_refcount_table()?,
            }
        };
        if at.checked_shl(cb).is_none_or(|o| o >= MAX_OFFSET) {
            return Err(Error::ImageFull { host_offset: MAX_OFFSET });
        }
        self.write.free_index = at + 1;
        // The live block has no dirty slice (flushed when the transaction began, never
        // changed since).
        let cs = self.header.cluster_size();
        self.copy_cached(Table::Refcount, block, cs, at << cb)?;
        self.cache.forget(block);
        self.cache.forget(at << cb);
        self.hook_block(index, at << cb)?;
        self.set_copied_memo(index);
        self.change_refcount(at, true)?;
        self.change_refcount(block >> cb, false)?;
        if let Some(sh) = self.write.shadow.as_mut() {
            sh.depth -= 1;
        }
        Ok(())
    }
}
