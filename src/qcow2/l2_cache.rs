//! A bounded cache of table slices (parts of L1 and L2 tables), sized by the caller through a
//! const generic: `N` slots of [`SLICE_BYTES`] each, stored inline (no heap).
//!
//! Like QEMU's `l2-cache-entry-size`, the cache holds slices rather than whole tables, so a
//! 2 MiB-cluster image does not need 2 MiB per cached table. Eviction is least recently used.
//!
//! Write-back: a slice changed through [`L2Cache::get_mut`] is *dirty* (with a caller-chosen
//! class, e.g. refcount block or L2 table) and is never evicted silently: [`L2Cache::get`] and
//! [`L2Cache::get_mut`] only take clean or empty slots while one exists, and the engine asks
//! [`L2Cache::dirty_victim`] before a load to write a dirty victim itself, in its own order
//! (refcounts before the L2 entries that reference them), then [`L2Cache::mark_clean`].
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
    /// 0: clean; otherwise the class given to [`L2Cache::get_mut`] (the slice must be written).
    dirty: [u8; N],
    /// Number of dirty slots.
    dirty_count: usize,
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
            dirty: [0; N],
            dirty_count: 0,
            clock: 0,
            unallocated: None,
            uniform: None,
        }
    }

    /// Forgets every clean slice and the hints (after switching to a snapshot's tables). Dirty
    /// slices stay: they are keyed by their table's host offset, valid whatever L1 is in use,
    /// and must still be written ([`L2Cache::clear_all`] drops them too).
    pub fn clear(&mut self) {
        for i in 0..N {
            if self.dirty[i] == 0 {
                self.tags[i] = None;
            }
        }
        self.invalidate_hints();
    }

    /// Forgets everything, dirty slices included (closing the image).
    pub fn clear_all(&mut self) {
        self.tags = [None; N];
        self.dirty = [0; N];
        self.dirty_count = 0;
        self.invalidate_hints();
    }

    /// Forgets the `unallocated` and `uniform` hints (after any table change).
    pub fn invalidate_hints(&mut self) {
        self.unallocated = None;
        self.uniform = None;
    }

    /// Forgets every slice of the table at `table_offset`, dirty ones included (the cluster
    /// was freed, or is about to be rewritten whole).
    pub fn forget(&mut self, table_offset: u64) {
        for i in 0..N {
            if self.tags[i].is_some_and(|t| t.table_offset == table_offset) {
                self.tags[i] = None;
                if self.dirty[i] != 0 {
                    self.dirty[i] = 0;
                    self.dirty_count -= 1;
                }
            }
        }
        self.invalidate_hints();
    }

    /// Number of dirty slices.
    pub fn dirty_count(&self) -> usize {
        self.dirty_count
    }

    /// The first dirty slot of `class` (any dirty class when `class` is 0): its slot number,
    /// table offset and slice index.
    pub fn next_dirty(&self, class: u8) -> Option<(usize, u64, u64)> {
        if self.dirty_count == 0 {
            return None;
        }
        (0..N).find_map(|i| {
            let d = self.dirty[i];
            let t = self.tags[i]?;
            (d != 0 && (class == 0 || d == class)).then_some((i, t.table_offset, t.slice))
        })
    }

    /// The dirty slot (slot, class, table offset, slice index) that loading slice `slice` of
    /// `table_offset` would have to evict: `None` when that slice is cached or a clean or empty
    /// slot is free. The caller writes it and calls [`L2Cache::mark_clean`].
    pub fn dirty_victim(&self, table_offset: u64, slice: u64) -> Option<(usize, u8, u64, u64)> {
        if self.dirty_count < N {
            return None;
        }
        let tag = Tag { table_offset, slice };
        if self.tags.contains(&Some(tag)) {
            return None;
        }
        let i = (0..N).min_by_key(|&i| self.stamps[i])?;
        let t = self.tags[i]?;
        Some((i, self.dirty[i], t.table_offset, t.slice))
    }

    /// The bytes of slot `slot` (for writing a dirty slice back).
    pub fn slot_bytes(&self, slot: usize) -> Option<&[u8; SLICE_BYTES]> {
        self.slices.get(slot)
    }

    /// Marks slot `slot` clean (its slice was written).
    pub fn mark_clean(&mut self, slot: usize) {
        if let Some(d) = self.dirty.get_mut(slot) {
            if *d != 0 {
                *d = 0;
                self.dirty_count -= 1;
            }
        }
    }

    /// The cached slice `slice` of `table_offset`, if cached, for a change that is written
    /// through by the caller (the slice stays clean; the cache keeps agreeing with the disk).
    pub fn cached_mut(&mut self, table_offset: u64, slice: u64) -> Option<&mut [u8; SLICE_BYTES]> {
        let tag = Tag { table_offset, slice };
        let i = self.tags.iter().position(|t| *t == Some(tag))?;
        Some(&mut self.slices[i])
    }

    /// The cached slice `slice` of `table_offset`, if cached (no load, no LRU update).
    pub fn peek(&self, table_offset: u64, slice: u64) -> Option<&[u8; SLICE_BYTES]> {
        let tag = Tag { table_offset, slice };
        let i = self.tags.iter().position(|t| *t == Some(tag))?;
        Some(&self.slices[i])
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
    /// `load` gets the slot to fill; a failed load leaves the slot empty. A miss evicts the
    /// least recently used clean slot (a dirty one only when every slot is dirty: the engine
    /// writes such a victim first, see [`L2Cache::dirty_victim`]).
    pub fn get<E>(
        &mut self,
        table_offset: u64,
        slice: u64,
        load: impl FnOnce(&mut [u8; SLICE_BYTES]) -> Result<(), E>,
    ) -> Result<&[u8; SLICE_BYTES], E> {
        let slot = self.slot_for(table_offset, slice, load)?;
        Ok(&self.slices[slot])
    }

    /// [`L2Cache::get`] for a change: the slice becomes dirty with `class` (not 0), to be
    /// written back by the engine.
    pub fn get_mut<E>(
        &mut self,
        table_offset: u64,
        slice: u64,
        class: u8,
        load: impl FnOnce(&mut [u8; SLICE_BYTES]) -> Result<(), E>,
    ) -> Result<&mut [u8; SLICE_BYTES], E> {
        let slot = self.load_slot(table_offset, slice, class, load)?;
        Ok(&mut self.slices[slot])
    }

    /// [`L2Cache::get_mut`] returning the slot number (see [`L2Cache::slot_bytes`]); `class` 0
    /// leaves the slot's dirty state as it is.
    pub fn load_slot<E>(
        &mut self,
        table_offset: u64,
        slice: u64,
        class: u8,
        load: impl FnOnce(&mut [u8; SLICE_BYTES]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let slot = self.slot_for(table_offset, slice, load)?;
        if class != 0 {
            if self.dirty[slot] == 0 {
                self.dirty_count += 1;
            }
            self.dirty[slot] = class;
        }
        Ok(slot)
    }

    /// The bytes of slot `slot`, for a change (mark it dirty with [`L2Cache::load_slot`]).
    pub fn slot_bytes_mut(&mut self, slot: usize) -> Option<&mut [u8; SLICE_BYTES]> {
        self.slices.get_mut(slot)
    }

    /// The cached slices of the table at `table_offset`: (slice index, bytes, dirty class).
    pub fn cached_of(&self, table_offset: u64) -> impl Iterator<Item = (u64, &[u8; SLICE_BYTES], u8)> + '_ {
        (0..N).filter_map(move |i| {
            let t = self.tags[i]?;
            (t.table_offset == table_offset).then_some((t.slice, &self.slices[i], self.dirty[i]))
        })
    }

    /// The table offsets of the dirty slices of `class`.
    pub fn dirty_tables(&self, class: u8) -> impl Iterator<Item = u64> + '_ {
        (0..N).filter_map(move |i| {
            let t = self.tags[i]?;
            (self.dirty[i] == class && class != 0).then_some(t.table_offset)
        })
    }

    fn slot_for<E>(
        &mut self,
        table_offset: u64,
        slice: u64,
        load: impl FnOnce(&mut [u8; SLICE_BYTES]) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.clock += 1;
        let tag = Tag { table_offset, slice };
        let slot = match self.tags.iter().position(|t| *t == Some(tag)) {
            Some(i) => i,
            None => {
                let victim = match self.tags.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => (0..N)
                        .filter(|&i| self.dirty[i] == 0)
                        .min_by_key(|&i| self.stamps[i])
                        .or_else(|| (0..N).min_by_key(|&i| self.stamps[i]))
                        .unwrap_or(0),
                };
                self.tags[victim] = None;
                if self.dirty[victim] != 0 {
                    self.dirty[victim] = 0;
                    self.dirty_count -= 1;
                }
                load(&mut self.slices[victim])?;
                self.tags[victim] = Some(tag);
                victim
            }
        };
        self.stamps[slot] = self.clock;
        Ok(slot)
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

    #[test]
    fn dirty_slices_are_never_evicted_silently() {
        let mut cache: L2Cache<2> = L2Cache::new();
        let fill = |v: u8| {
            move |b: &mut [u8; SLICE_BYTES]| -> Result<(), ()> {
                b[0] = v;
                Ok(())
            }
        };
        cache.get_mut(0x1000, 0, 1, fill(1)).unwrap()[0] = 11; // dirty, least recently used
        cache.get(0x2000, 0, fill(2)).unwrap();
        assert_eq!(cache.dirty_victim(0x3000, 0), None, "a clean slot is free");
        cache.get(0x3000, 0, fill(3)).unwrap(); // evicts the clean 0x2000, not the dirty 0x1000
        assert_eq!(cache.peek(0x1000, 0).map(|s| s[0]), Some(11));
        assert!(cache.peek(0x2000, 0).is_none());
        cache.get_mut(0x3000, 0, 2, fill(9)).unwrap();
        assert_eq!(cache.dirty_count(), 2);
        // Every slot dirty: a load must first write the least recently used one.
        let (slot, class, table, slice) = cache.dirty_victim(0x4000, 0).unwrap();
        assert_eq!((class, table, slice), (1, 0x1000, 0));
        assert_eq!(cache.dirty_victim(0x3000, 0), None, "a cached slice needs no room");
        assert_eq!(cache.slot_bytes(slot).unwrap()[0], 11);
        cache.mark_clean(slot);
        assert_eq!(cache.dirty_victim(0x4000, 0), None);
        assert_eq!(cache.next_dirty(2).map(|d| d.1), Some(0x3000));
        assert_eq!(cache.next_dirty(1), None);
        // Switching tables keeps dirty slices; closing and freeing drop them.
        cache.clear();
        assert_eq!(cache.peek(0x3000, 0).map(|s| s[0]), Some(3));
        assert!(cache.peek(0x1000, 0).is_none(), "clean slices go");
        cache.forget(0x3000);
        assert_eq!(cache.dirty_count(), 0);
        cache.get_mut(0x5000, 0, 1, fill(5)).unwrap();
        cache.clear_all();
        assert_eq!((cache.dirty_count(), cache.peek(0x5000, 0).is_none()), (0, true));
    }
}
