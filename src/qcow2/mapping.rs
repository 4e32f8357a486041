//! Guest offset -> [`Mapping`]: L1 entry, L2 entry, classification; table slices come through
//! the inline cache. Runs of consecutive (sub)clusters with the same kind and contiguous host
//! offsets are merged so that the read engine issues one I/O per run.

use super::error::{Corruption, Error};
use super::header::Table;
use super::l2_cache::SLICE_BYTES;
use super::l2_entry::{classify, l2_offset, Mapping};
use super::{be64, Incompatible, Qcow2};
use crate::io::BlockIo;

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// The cached slice of the table at `table_offset` (`table_len` bytes long) that holds byte
    /// `byte` of it: returns the slice's valid bytes and the position of `byte` in them.
    fn table_slice(
        &mut self,
        table: Table,
        table_offset: u64,
        table_len: u64,
        byte: u64,
    ) -> Result<(&[u8], usize), Error<I::Error>> {
        let slice_bytes = (SLICE_BYTES as u64).min(self.header.cluster_size());
        let slice = byte / slice_bytes;
        let within = (byte % slice_bytes) as usize;
        let start = table_offset + slice * slice_bytes;
        let len = slice_bytes.min(table_len - slice * slice_bytes);
        if start + len > self.file_size {
            return Err(Corruption::PastEndOfFile { table, offset: table_offset, file_size: self.file_size }.into());
        }
        self.make_room(table_offset, slice)?;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let s = self.cache.get(table_offset, slice, |buf| {
            crate::io::read_aligned(io, start, &mut buf[..len as usize]).map_err(Error::Io)
        })?;
        Ok((&s[..len as usize], within))
    }

    /// log2 of the guest bytes one L1 entry covers.
    fn l1_shift(&self) -> u32 {
        self.header.cluster_bits + self.header.l2_entries().trailing_zeros()
    }

    /// The L2 table offset of L1 entry `l1_index` (0: none, also past the L1 table's end).
    fn l2_table_of(&mut self, l1_index: u64) -> Result<u64, Error<I::Error>> {
        if l1_index >= u64::from(self.l1_size) {
            return Ok(0);
        }
        let h = self.header;
        let l1_len = u64::from(self.l1_size) * 8;
        let (s, within) = self.table_slice(Table::L1, self.l1_table_offset, l1_len, l1_index * 8)?;
        Ok(l2_offset(&h, l1_index, be64(s, within))?)
    }

    /// The mapping of guest byte `guest_offset` and how many bytes of the same (sub)cluster
    /// (or unallocated L1 range) follow it, itself included.
    pub(crate) fn mapping_at(&mut self, guest_offset: u64) -> Result<(Mapping, u64), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let l1_shift = self.l1_shift();
        let l1_index = guest_offset >> l1_shift;
        let l2_table = self.l2_table_of(l1_index)?;
        if l2_table == 0 {
            let l1_range_rest = ((l1_index + 1) << l1_shift) - guest_offset;
            return Ok((Mapping::Unallocated { host_offset: None }, l1_range_rest));
        }
        let l2_index = (guest_offset >> h.cluster_bits) & (h.l2_entries() - 1);
        let entry_size = h.l2_entry_size();
        let (s, within) = self.table_slice(Table::L2, l2_table, cs, l2_index * entry_size)?;
        let bitmap = if entry_size == 16 { be64(s, within + 8) } else { 0 };
        let has_data_file = h.incompatible(Incompatible::ExternalDataFile);
        Ok(classify(&h, has_data_file, be64(s, within), bitmap, guest_offset & (cs - 1))?)
    }

    /// The longest run (at most `max_len` bytes) starting at `guest_offset` that maps the same
    /// way with contiguous host offsets.
    ///
    /// Tables are read a cached slice at a time: each step classifies the entries of one L2
    /// slice, or skips the unallocated L1 entries of one L1 slice at once, so the cost follows
    /// the tables the image holds, not its virtual size.
    pub(crate) fn mapping_run(&mut self, guest_offset: u64, max_len: u64) -> Result<(Mapping, u64), Error<I::Error>> {
        const UNALLOCATED: Mapping = Mapping::Unallocated { host_offset: None };
        let (first, mut len) = match self.cache.unallocated_until(guest_offset) {
            Some(end) => (UNALLOCATED, end - guest_offset),
            None => self.mapping_at(guest_offset)?,
        };
        while len < max_len {
            let step = self.run_step(first, len, guest_offset + len, max_len - len)?;
            if step == 0 {
                break;
            }
            len += step;
        }
        if first == UNALLOCATED {
            // Every byte of `len` was looked up (steps may pass `max_len`).
            self.cache.note_unallocated(guest_offset, guest_offset.saturating_add(len));
        }
        Ok((first, len.min(max_len)))
    }

    /// How many bytes from `offset` (a (sub)cluster boundary, `len` bytes after the start of a
    /// run that began as `first`) continue that run, looking at one table slice (at least one
    /// (sub)cluster when the run continues, 0 when it does not).
    fn run_step(&mut self, first: Mapping, len: u64, offset: u64, limit: u64) -> Result<u64, Error<I::Error>> {
        let h = self.header;
        let l1_shift = self.l1_shift();
        let l1_index = offset >> l1_shift;
        let l2_table = self.l2_table_of(l1_index)?;
        if l2_table == 0 {
            if first != (Mapping::Unallocated { host_offset: None }) {
                return Ok(0);
            }
            // Unallocated L1 entries: skip the rest of this L1 slice's zero entries at once.
            let end = self.unallocated_l1_end(l1_index)?;
            let bytes = end.saturating_mul(1u64 << l1_shift).saturating_sub(offset);
            return Ok(bytes.min(limit));
        }
        let cs = h.cluster_size();
        let table_start = l1_index << l1_shift;
        let table_end = table_start + (1u64 << l1_shift);
        // A run of no host offsets (unallocated, or zero) may cross whole L2 tables: one known
        // to map every (sub)cluster that way (several L1 entries may name it) is skipped whole.
        let uniform = matches!(first, Mapping::Unallocated { host_offset: None } | Mapping::Zero { host_offset: None });
        if uniform && offset == table_start && self.cache.uniform_table(l2_table) == Some(first) {
            return Ok((table_end - offset).min(limit));
        }
        let entry_size = h.l2_entry_size();
        let has_data_file = h.incompatible(Incompatible::ExternalDataFile);
        let l2_index = (offset >> h.cluster_bits) & (h.l2_entries() - 1);
        let (s, within) = self.table_slice(Table::L2, l2_table, cs, l2_index * entry_size)?;
        let mut done = 0u64;
        let mut in_cluster = offset & (cs - 1);
        for e in s[within..].chunks_exact(entry_size as usize) {
            let bitmap = if entry_size == 16 { be64(e, 8) } else { 0 };
            let entry = be64(e, 0);
            while in_cluster < cs {
                if done >= limit {
                    return Ok(done);
                }
                let (next, n) = classify(&h, has_data_file, entry, bitmap, in_cluster)?;
                if !first.continues(len + done, next) {
                    return Ok(done);
                }
                done += n;
                in_cluster += n;
            }
            in_cluster = 0;
        }
        if uniform && offset + done == table_end && offset - len <= table_start {
            // The run covered this whole table.
            self.cache.note_uniform_table(l2_table, first);
        }
        Ok(done)
    }

    /// From L1 entry `from` (which has no L2 table), the index of the first entry of the same
    /// L1 slice that has one, or the end of that slice (the L1 size past the table's end).
    fn unallocated_l1_end(&mut self, from: u64) -> Result<u64, Error<I::Error>> {
        let l1_size = u64::from(self.l1_size);
        if from >= l1_size {
            // Past the L1 table (a snapshot's disk larger than its table covers): unallocated.
            return Ok(u64::MAX >> self.l1_shift());
        }
        let h = self.header;
        let l1_len = l1_size * 8;
        let (s, within) = self.table_slice(Table::L1, self.l1_table_offset, l1_len, from * 8)?;
        let mut index = from;
        for e in s[within..].chunks_exact(8) {
            if l2_offset(&h, index, be64(e, 0))? != 0 {
                break;
            }
            index += 1;
        }
        Ok(index)
    }
}
