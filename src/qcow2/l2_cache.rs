//! A bounded cache of table slices (parts of L1 and L2 tables), sized by the caller through a
//! const generic: `N` slots of [`SLICE_BYTES`] each, stored inline (no heap).
//!
//! Like QEMU's `l2-cache-entry-size`, the cache holds slices rather than whole tables, so a
//! 2 MiB-cluster image does not need 2 MiB per cached table. Eviction is least recently used.
//!
//! The engine fills slices from the image; here the loader only counts its calls:
//!
//! ```
//! use qluks::qcow2::l2_cache::{L2Cache, SLICE_BYTES};
//!
//! # fn main() -> Result<(), &'static str> {
//! let mut cache = L2Cache::<2>::new(); // 2 x 4 KiB inline: put it in a static or a box
//! let mut loads = 0;
//! let mut load = |slot: &mut [u8; SLICE_BYTES], fill: u8| {
//!     loads += 1;
//!     slot.fill(fill); // the engine reads the table slice from the device here
//!     Ok::<(), &'static str>(())
//! };
//! assert_eq!(cache.get(0x3_0000, 0, |s| load(s, 1))?[0], 1); // miss
//! assert_eq!(cache.get(0x4_0000, 0, |s| load(s, 2))?[0], 2); // miss
//! assert_eq!(cache.get(0x3_0000, 0, |s| load(s, 9))?[0], 1); // hit: not reloaded
//! cache.get(0x5_0000, 1, |s| load(s, 3))?; // miss: evicts the least recently used (0x4_0000)
//! assert_eq!(cache.get(0x3_0000, 0, |s| load(s, 9))?[0], 1); // still cached
//! assert_eq!(loads, 3);
//! # Ok(())
//! # }
//! ```

use super::l2_entry::Mapping;

/// Bytes per cached slice (or the whole table when clusters are smaller).
pub const SLICE_BYTES: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Tag {
    table_offset: u64,
    slice: u64,
}

/// `N` cached table slices.
pub struct L2Cache<const N: usize> {
    tags: [Option<Tag>; N],
    stamps: [u64; N],
    slices: [[u8; SLICE_BYTES]; N],
    clock: u64,
    /// A guest range last found unallocated (no L2 entry, in this layer): a chain asks the
    /// same layer again for every run of its backing inside such a range, and the answer is
    /// kept here instead of scanning the tables again each time.
    unallocated: Option<(u64, u64)>,
    /// An L2 table (its offset) last found to map every (sub)cluster the same way, with no
    /// host offset (all unallocated, or all zero): L1 entries that share it are skipped whole.
    uniform: Option<(u64, Mapping)>,
}

impl<const N: usize> Default for L2Cache<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for L2Cache<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("L2Cache").field("slots", &N).finish_non_exhaustive()
    }
}

impl<const N: usize> L2Cache<N> {
    /// An empty cache.
    pub const fn new() -> Self {
        const { assert!(N > 0, "an L2 cache needs at least one slot") };
        L2Cache {
            tags: [None; N],
            stamps: [0; N],
            slices: [[0; SLICE_BYTES]; N],
            clock: 0,
            unallocated: None,
            uniform: None,
        }
    }

    /// Forgets everything (after switching to a snapshot's tables).
    pub fn clear(&mut self) {
        self.tags = [None; N];
        self.unallocated = None;
        self.uniform = None;
    }

    /// Remembers that every (sub)cluster of the L2 table at `table_offset` maps as `mapping`.
    pub fn note_uniform_table(&mut self, table_offset: u64, mapping: Mapping) {
        self.uniform = Some((table_offset, mapping));
    }

    /// How every (sub)cluster of the L2 table at `table_offset` maps, if that is known.
    pub fn uniform_table(&self, table_offset: u64) -> Option<Mapping> {
        self.uniform.and_then(|(t, m)| (t == table_offset).then_some(m))
    }

    /// Remembers that guest bytes `start..end` are unallocated (replacing what was known).
    pub fn note_unallocated(&mut self, start: u64, end: u64) {
        self.unallocated = Some((start, end));
    }

    /// Where the remembered unallocated range that holds `offset` ends, if one does.
    pub fn unallocated_until(&self, offset: u64) -> Option<u64> {
        self.unallocated.and_then(|(start, end)| (start..end).contains(&offset).then_some(end))
    }

    /// The cached slice `slice` of the table at `table_offset`, filled by `load` on a miss.
    /// `load` gets the slot to fill; a failed load leaves the slot empty.
    pub fn get<E>(
        &mut self,
        table_offset: u64,
        slice: u64,
        load: impl FnOnce(&mut [u8; SLICE_BYTES]) -> Result<(), E>,
    ) -> Result<&[u8; SLICE_BYTES], E> {
        self.clock += 1;
        let tag = Tag { table_offset, slice };
        let slot = match self.tags.iter().position(|t| *t == Some(tag)) {
            Some(i) => i,
            None => {
                let victim = match self.tags.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => (0..N).min_by_key(|&i| self.stamps[i]).unwrap_or(0),
                };
                self.tags[victim] = None;
                load(&mut self.slices[victim])?;
                self.tags[victim] = Some(tag);
                victim
            }
        };
        self.stamps[slot] = self.clock;
        Ok(&self.slices[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_do_not_reload_and_the_least_recently_used_slice_is_evicted() {
        let mut cache: L2Cache<2> = L2Cache::new();
        let mut loads = 0;
        let load = |tag: u8| {
            move |b: &mut [u8; SLICE_BYTES]| -> Result<(), ()> {
                b[0] = tag;
                Ok(())
            }
        };
        for (table, want) in [(1u64, 1u8), (2, 2), (1, 1), (3, 3), (1, 1), (2, 2)] {
            let s = cache
                .get(table << 16, 0, |b| {
                    loads += 1;
                    load(table as u8)(b)
                })
                .unwrap();
            assert_eq!(s[0], want);
        }
        // 1, 2 miss; 1 hits; 3 evicts 2 (least recent); 1 hits; 2 misses again.
        assert_eq!(loads, 4);
    }

    #[test]
    fn a_failed_load_leaves_nothing_cached() {
        let mut cache: L2Cache<1> = L2Cache::new();
        assert_eq!(cache.get(0x10000, 0, |_| Err("device error")), Err("device error"));
        let mut loaded = false;
        cache
            .get(0x10000, 0, |_| {
                loaded = true;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert!(loaded, "the slice is read again, not served from the failed slot");
    }
}
