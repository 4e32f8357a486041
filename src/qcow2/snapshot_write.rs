//! Internal snapshots, the write side (formats.md §4, qcow2-write.md §6): create, apply
//! (revert, `qemu-img snapshot -a`) and delete, over the write engine's metadata layer.
//!
//! Refcounts count the L1 tables that reach a cluster: taking a snapshot adds one to every L2
//! table and data cluster the active L1 reaches (every cluster a compressed stream touches,
//! zero clusters that keep their offset too), and the COPIED flag (refcount exactly 1: the
//! cluster may be written in place) is cleared where a count leaves 1. Later writes to the
//! active disk then copy on write to new clusters: on a LUKS image the new data is encrypted
//! at the new host offset, so no IV is ever used for two contents.
//!
//! # Write order (what a crash after any single write leaves)
//!
//! A refcount and the COPIED flag of the entry naming its cluster lie in different clusters,
//! and `qemu-img check` counts any disagreement between them as a corruption. Create and
//! delete change both, so they run as a refcount transaction (`refcount/shadow.rs`): the live
//! refcount blocks, L1 and L2 tables are never written; every refcount block that changes is
//! copied first, every table that changes is written to new clusters, and one 48-byte header
//! write (size, L1, refcount table, snapshot table: one sector) switches to all of it. A crash
//! before that write leaves the image as it was plus a leaked refcount table; after it, the
//! operation is complete. QEMU changes refcounts and flags in place and leaves a COPIED
//! mismatch when it crashes in between; qluks leaves at worst leaks.
//!
//! - **Create**: the active L1 becomes the snapshot's, as it is. The active disk goes on with
//!   a new L1: an L2 table whose COPIED flags stay as they are is shared (+1, and +1 on what
//!   it reaches); one whose data entries carry COPIED is copied to a new cluster with the
//!   flags cleared (the copy unshared, the old one the snapshot's alone, +1 on what it
//!   reaches). Then the new snapshot table (old entries copied, the new one appended).
//! - **Delete**: the snapshot table without the entry; the snapshot's references dropped
//!   (its L2 tables' flags are left alone: nothing reads them again) and its L1 freed; the
//!   active tables whose COPIED flags must be set again (a count back at 1) copied with the
//!   flags right, and a new active L1 if any entry changed.
//! - **Apply** needs no transaction: the snapshot's refcounts are raised (flushed; its tables
//!   are not the active ones, so their flags may change); a new active L1 (the snapshot's,
//!   zero-padded to the larger of both sizes, COPIED cleared where shared) is written to new
//!   clusters and flushed; one 24-byte header write (virtual size, `l1_size`,
//!   `l1_table_offset`: size and table switch together), flushed; then the old active tables'
//!   refcounts are lowered and the old L1 freed. Every table the new active L1 names is
//!   shared with the snapshot, so no count it reaches returns to 1 and no flag of it changes.
//!   QEMU overwrites its L1 in place after a separate resize; a new table switched by one
//!   header write keeps "before or after" true for any crash.
//!
//! `tests/qcow2_snapshot_write.rs` crashes each operation after every single write: `qemu-img
//! check` then finds no corruption (leaks at most) and the image reads as before or as after.
//!
//! # Memory
//!
//! Every operation takes caller scratch of at least [`Qcow2::snapshot_scratch_len`] bytes (one
//! table slice: 4 KiB, or the cluster size when clusters are smaller); tables are walked a
//! slice at a time through it and the image's table cache, never whole on the stack. More
//! scratch makes the table copies go in larger pieces, and more cached slices (`N`) fewer
//! write-back rounds while refcount blocks and L2 tables are walked together. No large array
//! on the stack: create, apply and delete of a LUKS image ran together on a thread with a
//! 12 KiB stack in release (36 KiB debug), with no heap allocation
//! (`tests/qcow2_snapshot_write.rs`).

use super::backing::{Chain, Layer};
use super::error::{Corruption, Error};
use super::header::{check_table, l1_entries_for, Table, MAX_L1_BYTES, MAX_SNAPSHOTS};
use super::l2_cache::SLICE_BYTES;
use super::l2_entry::{classify, l2_offset, Mapping, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED};
use super::refcount::{Switch, CLASS_L2};
use super::snapshot::{Snapshot, MAX_TABLE_BYTES, NAME_CAP};
use super::table_write::{refcount_max, write_aligned, write_zeros};
use super::{be64, Qcow2};
use crate::io::BlockIo;

/// Bytes of extra data QEMU 10 writes in each entry: `vm_state_size_large`, `disk_size`,
/// `icount`.
const EXTRA: u64 = 24;

/// What a table walk does to each refcount it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delta {
    /// Validate entries and check that +1 cannot overflow: nothing changes.
    Check,
    /// Only fix COPIED flags in the L2 tables.
    Keep,
    /// +1, COPIED cleared where a count leaves 1.
    Raise,
    /// -1, COPIED set where a count returns to 1.
    Lower,
    /// -1, flags untouched (inside a transaction: the tables may be live).
    Drop,
    /// +1, flags untouched (inside a transaction: the tables may be live).
    Add,
    /// Nothing changes: COPIED as [`Delta::Raise`] would leave it.
    PreviewRaise,
}

/// Bytes of L1 entries written at once by [`Qcow2::rewrite_active`].
const L1_CHUNK: usize = 512;

/// An L1 table being written in pieces of [`L1_CHUNK`] bytes.
struct L1Out {
    at: u64,
    buf: [u8; L1_CHUNK],
    /// Bytes written so far.
    start: u64,
    /// Bytes in `buf`.
    len: usize,
}

/// Where one entry lies in the snapshot table.
struct Found {
    /// Byte position of the entry in the table.
    pos: u64,
    /// Its bytes.
    len: u64,
    /// The entry as read.
    snapshot: Snapshot,
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Scratch bytes [`Qcow2::snapshot_create`], [`Qcow2::snapshot_apply`] and
    /// [`Qcow2::snapshot_delete`] need at least: one table slice, 4 KiB (the cluster size when
    /// clusters are smaller).
    pub fn snapshot_scratch_len(&self) -> usize {
        SLICE_BYTES.min(self.cluster_size() as usize)
    }

    /// Takes an internal snapshot of the active disk named `name`, as `qemu-img snapshot -c`:
    /// the id is the largest numeric id + 1, the date is the caller's (`date_sec` seconds since
    /// the epoch and `date_nsec`: the core has no clock), VM clock and VM state size 0, and
    /// the 24 bytes of extra data QEMU writes (VM state size, virtual disk size, icount 0), on
    /// version 2 and 3 images alike. Names may repeat (qemu-img 10 accepts them; lookups take
    /// the first). Refused with a typed error before anything is written: a selected snapshot,
    /// an empty name or one over [`NAME_CAP`] bytes, a full table, an L1 or L2 entry that is
    /// corrupt, and refcounts that would overflow (with `refcount_bits=1` as soon as a cluster
    /// is allocated, where qemu-img fails too). Returns the new entry.
    pub fn snapshot_create(
        &mut self,
        name: &[u8],
        date_sec: u32,
        date_nsec: u32,
        scratch: &mut [u8],
    ) -> Result<Snapshot, Error<I::Error>> {
        self.prepare_write()?;
        self.check_scratch(scratch)?;
        if name.is_empty() || name.len() > NAME_CAP {
            return Err(Error::SnapshotNameInvalid { len: name.len() });
        }
        let nb = self.header.nb_snapshots;
        let mut old_len = 0u64;
        let mut max_id = 0u64;
        for s in self.snapshots() {
            let s = s?;
            old_len += s.entry_len;
            max_id = max_id.max(numeric_id(s.id.as_bytes()));
        }
        let mut id_buf = [0u8; 20];
        let id = decimal(max_id.saturating_add(1), &mut id_buf);
        let entry_len = (40 + EXTRA + id.len() as u64 + name.len() as u64).next_multiple_of(8);
        let new_len = old_len + entry_len;
        if nb >= MAX_SNAPSHOTS || new_len > MAX_TABLE_BYTES {
            return Err(Error::SnapshotTableFull { nb_snapshots: nb });
        }
        self.flush()?;
        let (l1, l1_size) = (self.header.l1_table_offset, self.header.l1_size);
        self.walk(l1, l1_size, Delta::Check, scratch)?;
        let old_table = self.header.snapshots_offset;
        let disk_size = self.header.size;
        self.transaction(|s| {
            // The active L1 becomes the snapshot's as it is; the active disk goes on with a
            // new L1 whose tables are shared (+1) or, where COPIED flags must change, copies.
            let active = s.rewrite_active(Delta::Raise, scratch)?;
            let table = s.alloc_contiguous_run(s.clusters(new_len))?;
            s.copy_bytes(old_table, table, old_len, scratch)?;
            let sn_l1 = if l1_size == 0 { 0 } else { l1 };
            s.write_entry(table + old_len, sn_l1, l1_size, id, name, (date_sec, date_nsec), disk_size, scratch)?;
            if nb > 0 {
                s.free_clusters(old_table, old_len)?;
            }
            Ok(Switch { l1_table_offset: active, nb_snapshots: nb + 1, snapshots_offset: table, ..s.current_switch() })
        })?;
        self.select_active();
        self.rescan_snapshots()?;
        self.find_entry(nb).map(|f| f.snapshot)
    }

    /// Reverts the active disk to `snapshot` (from [`Qcow2::snapshots`] or
    /// [`Qcow2::find_snapshot`] of this image), as `qemu-img snapshot -a`: its tables become
    /// the active ones (shared: the next writes copy on write) and its virtual disk size the
    /// disk's; the L1 table keeps the larger of both sizes. Refused before anything is
    /// written when the entry is not in the table any more, its L1 table or an entry it
    /// reaches is corrupt, or refcounts would overflow.
    pub fn snapshot_apply(&mut self, snapshot: &Snapshot, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        self.check_scratch(scratch)?;
        let sn = self.current_entry(snapshot)?.snapshot;
        let size = self.validate_snapshot_l1(&sn)?;
        self.flush()?;
        self.walk(sn.l1_table_offset, sn.l1_size, Delta::Check, scratch)?;
        self.walk(sn.l1_table_offset, sn.l1_size, Delta::Raise, scratch)?;
        self.flush()?;

        // The new active L1: the snapshot's entries (COPIED from the refcounts now on disk),
        // then zeros.
        let (old_l1, old_size) = (self.header.l1_table_offset, self.header.l1_size);
        let new_size = old_size.max(sn.l1_size);
        let new_bytes = u64::from(new_size) * 8;
        // Both tables empty (a disk of size 0): the header keeps its (empty) table's offset.
        let new_l1 = if new_bytes == 0 { old_l1 } else { self.alloc_contiguous_run(self.clusters(new_bytes))? };
        self.write_l1_copy(&sn, new_l1, new_size, scratch)?;
        self.flush()?;
        // One header write switches the size and the table.
        let mut field = [0u8; 24];
        field[..8].copy_from_slice(&size.to_be_bytes());
        let crypt_method: u32 = match self.header.crypt_method {
            super::CryptMethod::None => 0,
            super::CryptMethod::Aes => 1,
            super::CryptMethod::Luks => 2,
        };
        field[8..12].copy_from_slice(&crypt_method.to_be_bytes());
        field[12..16].copy_from_slice(&new_size.to_be_bytes());
        field[16..].copy_from_slice(&new_l1.to_be_bytes());
        self.header_write(24, &field)?;
        self.header.size = size;
        self.header.l1_size = new_size;
        self.header.l1_table_offset = new_l1;
        self.select_active();
        self.cache.forget(old_l1);

        // The old active tables lose their reference (an empty table stays where it was).
        self.walk(old_l1, old_size, Delta::Lower, scratch)?;
        if new_l1 != old_l1 {
            self.free_clusters(old_l1, u64::from(old_size) * 8)?;
        }
        self.cache.forget(old_l1);
        self.flush()?;
        self.fix_copied(scratch)
    }

    /// Deletes `snapshot` (from [`Qcow2::snapshots`] or [`Qcow2::find_snapshot`] of this
    /// image), as `qemu-img snapshot -d`: the table is rewritten without it first (a crash
    /// after that only leaks), then its refcounts are lowered, its L1 table freed, and COPIED
    /// set again on active entries whose count returned to 1.
    pub fn snapshot_delete(&mut self, snapshot: &Snapshot, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        self.check_scratch(scratch)?;
        let found = self.current_entry(snapshot)?;
        let sn = found.snapshot;
        self.validate_snapshot_l1(&sn)?;
        let nb = self.header.nb_snapshots;
        let old_len = self.table_len()?;
        self.flush()?;

        let old_table = self.header.snapshots_offset;
        let new_len = old_len - found.len;
        self.transaction(|s| {
            let table = if nb > 1 {
                let table = s.alloc_contiguous_run(s.clusters(new_len))?;
                s.copy_bytes(old_table, table, found.pos, scratch)?;
                let after = found.pos + found.len;
                s.copy_bytes(old_table + after, table + found.pos, old_len - after, scratch)?;
                table
            } else {
                0
            };
            s.free_clusters(old_table, old_len)?;
            // The snapshot's references go (its tables' flags stay: nothing reads them again).
            s.walk(sn.l1_table_offset, sn.l1_size, Delta::Drop, scratch)?;
            s.free_clusters(sn.l1_table_offset, u64::from(sn.l1_size) * 8)?;
            s.cache.forget(sn.l1_table_offset);
            // COPIED set again where a count returned to 1, on copies of the active tables.
            let active = s.rewrite_active(Delta::Keep, scratch)?;
            Ok(Switch { l1_table_offset: active, nb_snapshots: nb - 1, snapshots_offset: table, ..s.current_switch() })
        })?;
        self.select_active();
        self.rescan_snapshots()
    }

    // ---- steps ----

    fn check_scratch(&self, scratch: &[u8]) -> Result<(), Error<I::Error>> {
        let needed = self.snapshot_scratch_len();
        if scratch.len() < needed {
            return Err(Error::ScratchTooSmall { needed, got: scratch.len() });
        }
        Ok(())
    }

    /// Clusters that `bytes` bytes of a table take.
    fn clusters(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.cluster_size()).max(1)
    }

    /// The snapshot's size, after checking its L1 table as [`Qcow2::select_snapshot`] does.
    fn validate_snapshot_l1(&self, sn: &Snapshot) -> Result<u64, Error<I::Error>> {
        let bad = |reason| Error::Corrupt(Corruption::BadSnapshot { index: sn.index, reason });
        let size = sn.disk_size.unwrap_or(self.header.size);
        let l1_bytes = u64::from(sn.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(bad("L1 table larger than 32 MiB"));
        }
        let needed = l1_entries_for(&self.header, size).map_err(|_| bad("disk size too large"))?;
        if u64::from(sn.l1_size) < needed {
            return Err(bad("L1 table too small for the disk size"));
        }
        check_table(&self.header, Table::L1, sn.l1_table_offset, l1_bytes)
            .map_err(|_| bad("L1 table offset invalid"))?;
        if sn.l1_table_offset.saturating_add(l1_bytes) > self.file_size {
            return Err(bad("L1 table past the end of the file"));
        }
        Ok(size)
    }

    /// Entry `index` of the table and where it lies.
    fn find_entry(&mut self, index: u32) -> Result<Found, Error<I::Error>> {
        let mut pos = 0u64;
        for s in self.snapshots() {
            let s = s?;
            if s.index == index {
                return Ok(Found { pos, len: s.entry_len, snapshot: s });
            }
            pos += s.entry_len;
        }
        Err(Error::NoSuchSnapshot)
    }

    /// `snapshot` as the table holds it now (refused if it changed since it was read).
    fn current_entry(&mut self, snapshot: &Snapshot) -> Result<Found, Error<I::Error>> {
        let found = self.find_entry(snapshot.index)?;
        if found.snapshot != *snapshot {
            return Err(Error::NoSuchSnapshot);
        }
        Ok(found)
    }

    /// Bytes of the snapshot table.
    fn table_len(&mut self) -> Result<u64, Error<I::Error>> {
        let mut len = 0;
        for s in self.snapshots() {
            len += s?.entry_len;
        }
        Ok(len)
    }

    /// Copies `len` bytes from `from` to `to` through `scratch`.
    fn copy_bytes(&mut self, from: u64, to: u64, len: u64, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(scratch.len() as u64) as usize;
            crate::io::read_aligned(io, from + done, &mut scratch[..n]).map_err(Error::Io)?;
            write_aligned(io, to + done, &scratch[..n]).map_err(Error::Io)?;
            done += n as u64;
        }
        self.note_host_write(to + len);
        Ok(())
    }

    /// Writes a new snapshot table entry at `at` (as QEMU 10's `qcow2_write_snapshots`).
    #[allow(clippy::too_many_arguments)]
    fn write_entry(
        &mut self,
        at: u64,
        l1: u64,
        l1_size: u32,
        id: &[u8],
        name: &[u8],
        (date_sec, date_nsec): (u32, u32),
        disk_size: u64,
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let len = (40 + EXTRA as usize + id.len() + name.len()).next_multiple_of(8);
        let mut fixed = [0u8; 40 + EXTRA as usize];
        fixed[..8].copy_from_slice(&l1.to_be_bytes());
        fixed[8..12].copy_from_slice(&l1_size.to_be_bytes());
        fixed[12..14].copy_from_slice(&(id.len() as u16).to_be_bytes());
        fixed[14..16].copy_from_slice(&(name.len() as u16).to_be_bytes());
        fixed[16..20].copy_from_slice(&date_sec.to_be_bytes());
        fixed[20..24].copy_from_slice(&date_nsec.to_be_bytes());
        // vm_clock_nsec 0, vm_state_size 0.
        fixed[36..40].copy_from_slice(&(EXTRA as u32).to_be_bytes());
        // Extra: vm_state_size_large 0, disk_size, icount 0.
        fixed[48..56].copy_from_slice(&disk_size.to_be_bytes());
        // The whole entry goes out in one write when it fits the scratch (names are short).
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        if len <= scratch.len() {
            let buf = &mut scratch[..len];
            buf.fill(0);
            buf[..fixed.len()].copy_from_slice(&fixed);
            buf[fixed.len()..fixed.len() + id.len()].copy_from_slice(id);
            let n = fixed.len() + id.len();
            buf[n..n + name.len()].copy_from_slice(name);
            write_aligned(io, at, buf).map_err(Error::Io)?;
        } else {
            let mut pos = at;
            for part in [&fixed[..], id, name] {
                write_aligned(io, pos, part).map_err(Error::Io)?;
                pos += part.len() as u64;
            }
            write_zeros(io, pos, at + len as u64 - pos).map_err(Error::Io)?;
        }
        self.note_host_write(at + len as u64);
        Ok(())
    }

    /// One header write, flushed.
    fn header_write(&mut self, offset: u64, field: &[u8]) -> Result<(), Error<I::Error>> {
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        write_aligned(io, offset, field).map_err(Error::Io)?;
        self.barrier()
    }

    /// Drops one reference to each cluster of the table of `bytes` bytes at `offset` (no
    /// longer named by anything on disk).
    fn free_clusters(&mut self, offset: u64, bytes: u64) -> Result<(), Error<I::Error>> {
        if bytes == 0 || offset == 0 {
            return Ok(());
        }
        let cb = self.header.cluster_bits;
        for c in offset >> cb..(offset >> cb) + self.clusters(bytes) {
            self.change_refcount(c, false)?;
        }
        Ok(())
    }

    /// Writes the active L1 made from `sn`'s: its entries with COPIED as the (raised)
    /// refcounts say, then zeros up to `size` entries.
    fn write_l1_copy(&mut self, sn: &Snapshot, to: u64, size: u32, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cb = h.cluster_bits;
        let sn_bytes = u64::from(sn.l1_size) * 8;
        let chunk = (scratch.len() / 8 * 8) as u64;
        let mut done = 0u64;
        while done < sn_bytes {
            let n = (sn_bytes - done).min(chunk) as usize;
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            crate::io::read_aligned(io, sn.l1_table_offset + done, &mut scratch[..n]).map_err(Error::Io)?;
            for k in (0..n).step_by(8) {
                let e = be64(scratch, k);
                let index = (done + k as u64) / 8;
                let t = l2_offset(&h, index, e)?;
                let v = if t == 0 {
                    e & !OFLAG_COPIED
                } else if self.refcount(t >> cb)? == 1 {
                    e | OFLAG_COPIED
                } else {
                    e & !OFLAG_COPIED
                };
                scratch[k..k + 8].copy_from_slice(&v.to_be_bytes());
            }
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            write_aligned(io, to + done, &scratch[..n]).map_err(Error::Io)?;
            done += n as u64;
        }
        let total = u64::from(size) * 8;
        if total > sn_bytes {
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            write_zeros(io, to + sn_bytes, total - sn_bytes).map_err(Error::Io)?;
        }
        self.note_host_write(to + total);
        Ok(())
    }

    /// COPIED as the refcounts say on every active entry: L2 slices (written after the
    /// refcounts, flushed), then L1 entries (written through).
    fn fix_copied(&mut self, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        let (l1, l1_size) = (self.header.l1_table_offset, self.header.l1_size);
        self.walk(l1, l1_size, Delta::Keep, scratch)?;
        self.flush()?;
        self.fix_active_l1(scratch)?;
        self.flush()
    }

    /// COPIED on the active L1 entries as their L2 tables' refcounts say: the table is read
    /// and written back in pieces of `scratch` (one write per piece that changes, as QEMU
    /// writes its L1 in one piece), its cached slices dropped.
    fn fix_active_l1(&mut self, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let l1 = h.l1_table_offset;
        let bytes = u64::from(h.l1_size) * 8;
        let chunk = (scratch.len() / 8 * 8) as u64;
        let mut done = 0u64;
        while done < bytes {
            let n = (bytes - done).min(chunk) as usize;
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            crate::io::read_aligned(io, l1 + done, &mut scratch[..n]).map_err(Error::Io)?;
            let mut changed = false;
            for k in (0..n).step_by(8) {
                let e = be64(scratch, k);
                let t = l2_offset(&h, (done + k as u64) / 8, e)?;
                if t == 0 {
                    continue;
                }
                let rc = self.refcount(t >> h.cluster_bits)?;
                let want = if rc == 1 { e | OFLAG_COPIED } else { e & !OFLAG_COPIED };
                if want != e {
                    scratch[k..k + 8].copy_from_slice(&want.to_be_bytes());
                    changed = true;
                }
            }
            if changed {
                let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                write_aligned(io, l1 + done, &scratch[..n]).map_err(Error::Io)?;
            }
            done += n as u64;
        }
        // Its slices are clean (L1 entries are written through): read again when needed.
        self.cache.forget(l1);
        Ok(())
    }

    /// Applies `delta` to every L2 table and data cluster the L1 table at `l1` (`l1_size`
    /// entries) reaches, and sets the COPIED flags of the L2 entries as the counts say (the
    /// changed slices marked dirty in the cache). One L2 slice at a time through `scratch`.
    fn walk(&mut self, l1: u64, l1_size: u32, delta: Delta, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let sb = self.slice_bytes();
        let l1_bytes = u64::from(l1_size) * 8;
        // The cluster (+ 1) the last compressed stream touched, and how many streams before
        // it in a row touched it too (raised by this walk before the refcount is looked at).
        let mut shared = (0u64, 0u64);
        for index in 0..u64::from(l1_size) {
            let e = self.with_slice(Table::L1, l1, l1_bytes, index * 8, 0, |s, w| be64(s, w))?;
            let t = l2_offset(&h, index, e)?;
            if t == 0 {
                continue;
            }
            if t < cs {
                return Err(Corruption::TableInCluster0 { table: Table::L2 }.into());
            }
            for slice in 0..cs / sb {
                let n = self.read_slice(t, slice, scratch)?;
                if self.entries(&mut scratch[..n], delta, &mut shared)? {
                    self.with_slice(Table::L2, t, cs, slice * sb, CLASS_L2, |s, _| {
                        let len = s.len();
                        s.copy_from_slice(&scratch[..len]);
                    })?;
                    self.cache.invalidate_hints();
                }
            }
            self.bump(t >> cb, delta, 0)?;
        }
        Ok(())
    }

    /// Slice `slice` of the L2 table at `t` into `scratch` (through the cache); its length.
    fn read_slice(&mut self, t: u64, slice: u64, scratch: &mut [u8]) -> Result<usize, Error<I::Error>> {
        let cs = self.header.cluster_size();
        let sb = self.slice_bytes();
        self.with_slice(Table::L2, t, cs, slice * sb, 0, |s, _| {
            scratch[..s.len()].copy_from_slice(s);
            s.len()
        })
    }

    /// Applies `delta` to the clusters the L2 entries in `buf` reach and sets their COPIED
    /// flags in `buf` as the counts say (not for `Check`, `Add`, `Drop`); whether a flag
    /// changed. `shared`: see [`Qcow2::walk`].
    fn entries(&mut self, buf: &mut [u8], delta: Delta, shared: &mut (u64, u64)) -> Result<bool, Error<I::Error>> {
        let h = self.header;
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let es = h.l2_entry_size() as usize;
        let mut changed = false;
        for k in (0..buf.len()).step_by(es) {
            let entry = be64(buf, k);
            let bitmap = if es == 16 { be64(buf, k + 8) } else { 0 };
            let (mapping, _) = classify(&h, false, entry, bitmap, 0)?;
            if let Mapping::Compressed { host_offset, compressed_len } = mapping {
                let last = host_offset.saturating_add(compressed_len.max(1) - 1) >> cb;
                for c in host_offset >> cb..=last {
                    // Streams packed into one cluster follow each other: each adds one.
                    let before = if shared.0 == c + 1 { shared.1 + 1 } else { 0 };
                    *shared = (c + 1, before);
                    self.bump(c, delta, before)?;
                }
                continue;
            }
            let host = entry & L2E_OFFSET_MASK;
            if entry & OFLAG_COMPRESSED != 0 || host == 0 {
                continue;
            }
            if host < cs {
                return Err(Corruption::DataInCluster0.into());
            }
            let rc = self.bump(host >> cb, delta, 0)?;
            if matches!(delta, Delta::Check | Delta::Add | Delta::Drop) {
                continue;
            }
            let want = if rc == 1 { entry | OFLAG_COPIED } else { entry & !OFLAG_COPIED };
            if want != entry {
                buf[k..k + 8].copy_from_slice(&want.to_be_bytes());
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Inside a transaction ([`Qcow2::transaction`]): the active tables as they must be after
    /// `delta` (`Raise`: a snapshot takes the active L1 and adds one reference to everything it
    /// reaches; `Keep`: the counts as they are now), never written in place (they are live).
    /// An L2 table none of whose COPIED flags change is kept (`Raise`: +1, shared with the
    /// snapshot); one whose flags change is copied to a new cluster with the flags right (the
    /// copy unshared; `Keep`: the active's reference to the old one dropped). The L1 entries
    /// go to a new table; returns its offset, or the active one's when `Keep` changed nothing
    /// (the new one freed). `Keep` frees the old L1 when it is replaced; `Raise` leaves it to
    /// the snapshot.
    fn rewrite_active(&mut self, delta: Delta, scratch: &mut [u8]) -> Result<u64, Error<I::Error>> {
        let h = self.header;
        let cb = h.cluster_bits;
        let cs = h.cluster_size();
        let sb = self.slice_bytes();
        let (l1, l1_size) = (h.l1_table_offset, h.l1_size);
        let l1_bytes = u64::from(l1_size) * 8;
        if l1_bytes == 0 {
            return Ok(l1);
        }
        let (preview, copy, keep) = match delta {
            Delta::Raise => (Delta::PreviewRaise, Delta::Raise, Delta::Add),
            _ => (Delta::Keep, Delta::Keep, Delta::Keep),
        };
        let new_l1 = self.alloc_contiguous_run(self.clusters(l1_bytes))?;
        let mut out = L1Out { at: new_l1, buf: [0; L1_CHUNK], start: 0, len: 0 };
        let mut changed = false;
        let mut shared = (0u64, 0u64);
        for index in 0..u64::from(l1_size) {
            let e = self.with_slice(Table::L1, l1, l1_bytes, index * 8, 0, |s, w| be64(s, w))?;
            let t = l2_offset(&h, index, e)?;
            let new = if t == 0 {
                e & !OFLAG_COPIED
            } else {
                if t < cs {
                    return Err(Corruption::TableInCluster0 { table: Table::L2 }.into());
                }
                let mut flips = false;
                for slice in 0..cs / sb {
                    let n = self.read_slice(t, slice, scratch)?;
                    if self.entries(&mut scratch[..n], preview, &mut (0, 0))? {
                        flips = true;
                        break;
                    }
                }
                if flips {
                    let (copy_at, _) = self.alloc_clusters(1)?;
                    for slice in 0..cs / sb {
                        let n = self.read_slice(t, slice, scratch)?;
                        self.entries(&mut scratch[..n], copy, &mut shared)?;
                        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                        write_aligned(io, copy_at + slice * sb, &scratch[..n]).map_err(Error::Io)?;
                    }
                    self.note_host_write(copy_at + cs);
                    if delta != Delta::Raise {
                        self.change_refcount(t >> cb, false)?;
                    }
                    copy_at | OFLAG_COPIED
                } else {
                    if delta == Delta::Raise {
                        for slice in 0..cs / sb {
                            let n = self.read_slice(t, slice, scratch)?;
                            self.entries(&mut scratch[..n], keep, &mut shared)?;
                        }
                        self.change_refcount(t >> cb, true)?;
                    }
                    let rc = self.refcount(t >> cb)?;
                    if rc == 1 {
                        t | OFLAG_COPIED
                    } else {
                        t
                    }
                }
            };
            changed |= new != e;
            self.push_l1(&mut out, new)?;
        }
        self.push_l1(&mut out, u64::MAX)?;
        if delta == Delta::Raise {
            return Ok(new_l1);
        }
        if changed {
            self.free_clusters(l1, l1_bytes)?;
            Ok(new_l1)
        } else {
            self.free_clusters(new_l1, l1_bytes)?;
            Ok(l1)
        }
    }

    /// Adds `entry` to the L1 table being written (`u64::MAX`: writes what is left).
    fn push_l1(&mut self, out: &mut L1Out, entry: u64) -> Result<(), Error<I::Error>> {
        if entry != u64::MAX {
            out.buf[out.len..out.len + 8].copy_from_slice(&entry.to_be_bytes());
            out.len += 8;
        }
        if out.len == L1_CHUNK || (entry == u64::MAX && out.len > 0) {
            let at = out.at + out.start;
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            write_aligned(io, at, &out.buf[..out.len]).map_err(Error::Io)?;
            self.note_host_write(at + out.len as u64);
            out.start += out.len as u64;
            out.len = 0;
        }
        Ok(())
    }

    /// One reference more or less (or none) to cluster `c`; returns its refcount after.
    /// `Check`: whether one more fits after `before` increases of this walk.
    fn bump(&mut self, c: u64, delta: Delta, before: u64) -> Result<u64, Error<I::Error>> {
        match delta {
            Delta::Raise | Delta::Add => self.change_refcount(c, true),
            Delta::Lower | Delta::Drop => self.change_refcount(c, false),
            Delta::Keep => self.refcount(c),
            Delta::PreviewRaise => Ok(self.refcount(c)?.saturating_add(1)),
            Delta::Check => {
                let rc = self.refcount(c)?.saturating_add(before);
                if rc >= refcount_max(self.header.refcount_order) {
                    return Err(Error::RefcountOverflow {
                        host_offset: c << self.header.cluster_bits,
                        refcount_bits: self.header.refcount_bits(),
                    });
                }
                Ok(rc)
            }
        }
    }
}

impl<I: BlockIo, const N: usize, const DEPTH: usize> Chain<I, N, DEPTH> {
    /// [`Qcow2::snapshot_create`] on the top layer (qcow2), as `qemu-img snapshot -c` on an
    /// overlay: the snapshot holds the overlay's own clusters; what it does not hold still
    /// reads from the backing layers, which never change.
    pub fn snapshot_create(
        &mut self,
        name: &[u8],
        date_sec: u32,
        date_nsec: u32,
        scratch: &mut [u8],
    ) -> Result<Snapshot, Error<I::Error>> {
        self.split_top()?.0.snapshot_create(name, date_sec, date_nsec, scratch)
    }

    /// [`Qcow2::snapshot_apply`] on the top layer (qcow2): the chain then reads as it did when
    /// the snapshot was taken (its size too).
    pub fn snapshot_apply(&mut self, snapshot: &Snapshot, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.split_top()?.0.snapshot_apply(snapshot, scratch)
    }

    /// [`Qcow2::snapshot_delete`] on the top layer (qcow2).
    pub fn snapshot_delete(&mut self, snapshot: &Snapshot, scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.split_top()?.0.snapshot_delete(snapshot, scratch)
    }

    /// [`Qcow2::find_snapshot`] in the top layer (qcow2).
    pub fn find_snapshot(&mut self, id_or_name: &[u8]) -> Result<Snapshot, Error<I::Error>> {
        self.split_top()?.0.find_snapshot(id_or_name)
    }

    /// [`Qcow2::snapshot_scratch_len`] of the top layer (0 when it is not qcow2).
    pub fn snapshot_scratch_len(&self) -> usize {
        match self.top() {
            Some(Layer::Qcow2(q)) => q.snapshot_scratch_len(),
            _ => 0,
        }
    }
}

/// The number an id starts with (QEMU's `strtoul`: leading decimal digits, 0 without).
fn numeric_id(id: &[u8]) -> u64 {
    id.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, &b| n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbered_as_qemu() {
        assert_eq!(numeric_id(b"12"), 12);
        assert_eq!(numeric_id(b"7abc"), 7);
        assert_eq!(numeric_id(b"abc"), 0);
        assert_eq!(numeric_id(b"99999999999999999999999"), u64::MAX);
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
