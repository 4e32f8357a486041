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
    /// Reads entry `index` (`entry_size` 8 or 16 bytes) of the table at `table_offset`
    /// (`table_len` bytes long) through the cache. Returns (first u64, second u64 or 0).
    fn table_entry(
        &mut self,
        table: Table,
        table_offset: u64,
        table_len: u64,
        index: u64,
        entry_size: u64,
    ) -> Result<(u64, u64), Error<I::Error>> {
        let slice_bytes = (SLICE_BYTES as u64).min(self.header.cluster_size());
        let byte = index * entry_size;
        let slice = byte / slice_bytes;
        let within = (byte % slice_bytes) as usize;
        let start = table_offset + slice * slice_bytes;
        let len = slice_bytes.min(table_len - slice * slice_bytes);
        if start + len > self.file_size {
            return Err(Corruption::PastEndOfFile { table, offset: table_offset, file_size: self.file_size }.into());
        }
        let io = self.io.as_mut().ok_or(Error::OutOfRange { offset: 0, len: 0, size: 0 })?;
        let s = self.cache.get(table_offset, slice, |buf| {
            crate::io::read_aligned(io, start, &mut buf[..len as usize]).map_err(Error::Io)
        })?;
        let second = if entry_size == 16 { be64(s, within + 8) } else { 0 };
        Ok((be64(s, within), second))
    }

    /// The mapping of guest byte `guest_offset` and how many bytes of the same (sub)cluster
    /// (or unallocated L2 range) follow it, itself included.
    pub(crate) fn mapping_at(&mut self, guest_offset: u64) -> Result<(Mapping, u64), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let l2_entries = h.l2_entries();
        let l1_shift = h.cluster_bits + l2_entries.trailing_zeros();
        let l1_index = guest_offset >> l1_shift;
        let l1_range_rest = ((l1_index + 1) << l1_shift) - guest_offset;
        let unallocated = (Mapping::Unallocated { host_offset: None }, l1_range_rest);
        if l1_index >= u64::from(self.l1_size) {
            return Ok(unallocated);
        }
        let l1_len = u64::from(self.l1_size) * 8;
        let (l1_entry, _) = self.table_entry(Table::L1, self.l1_table_offset, l1_len, l1_index, 8)?;
        let l2_table = l2_offset(&h, l1_index, l1_entry)?;
        if l2_table == 0 {
            return Ok(unallocated);
        }
        let l2_index = (guest_offset >> h.cluster_bits) & (l2_entries - 1);
        let (entry, bitmap) = self.table_entry(Table::L2, l2_table, cs, l2_index, h.l2_entry_size())?;
        let has_data_file = h.incompatible(Incompatible::ExternalDataFile);
        Ok(classify(&h, has_data_file, entry, bitmap, guest_offset & (cs - 1))?)
    }

    /// The longest run (at most `max_len` bytes) starting at `guest_offset` that maps the same
    /// way with contiguous host offsets.
    pub(crate) fn mapping_run(&mut self, guest_offset: u64, max_len: u64) -> Result<(Mapping, u64), Error<I::Error>> {
        let (first, mut len) = self.mapping_at(guest_offset)?;
        while len < max_len {
            let (next, next_len) = self.mapping_at(guest_offset + len)?;
            if !first.continues(len, next) {
                break;
            }
            len += next_len;
        }
        Ok((first, len.min(max_len)))
    }
}
