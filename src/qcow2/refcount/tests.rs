//! Unit tests of the metadata layer over in-memory images, checked by a small reference
//! checker (what `qemu-img check` counts: header, L1, L2 tables, data, refcount table and
//! blocks) and by crash replays of the logged writes.

use super::super::be32;
use super::super::l2_entry::{L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED};
use super::super::table_write::{get_refcount, refcount_pos, set_refcount};
use super::*;
use crate::io::{MemIo, MemIoError};
use std::vec;
use std::vec::Vec;

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

fn get64(b: &[u8], off: u64) -> u64 {
    be64(b, off as usize)
}

/// A v3 image of `file_len` bytes: header in cluster 0, a one-cluster refcount table in
/// cluster 1, one refcount block in cluster 2, the L1 table in cluster 3 (clusters 0..=3 have
/// refcount 1), virtual size `size`.
fn image(cluster_bits: u32, refcount_order: u32, size: u64, file_len: usize) -> Vec<u8> {
    let cs = 1usize << cluster_bits;
    let mut img = vec![0u8; file_len];
    put(&mut img, 0, b"QFI\xfb");
    put(&mut img, 4, &3u32.to_be_bytes());
    put(&mut img, 20, &cluster_bits.to_be_bytes());
    put(&mut img, 24, &size.to_be_bytes());
    let l1_shift = cluster_bits + (cluster_bits - 3);
    let l1_size = size.div_ceil(1 << l1_shift) as u32;
    assert!(l1_size as usize * 8 <= cs);
    put(&mut img, 36, &l1_size.to_be_bytes());
    put(&mut img, 40, &(3 * cs as u64).to_be_bytes());
    put(&mut img, 48, &(cs as u64).to_be_bytes());
    put(&mut img, 56, &1u32.to_be_bytes());
    put(&mut img, 96, &refcount_order.to_be_bytes());
    put(&mut img, 100, &104u32.to_be_bytes());
    put(&mut img, cs, &(2 * cs as u64).to_be_bytes());
    for c in 0..4u64 {
        let (at, shift) = refcount_pos(refcount_order, c);
        set_refcount(&mut img[2 * cs..3 * cs], at as usize, shift, refcount_order, 1);
    }
    img
}

/// What the reference checker found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Check {
    /// Clusters whose refcount is below their references (or 0 while referenced).
    corruptions: Vec<(u64, u64, u64)>,
    /// Clusters whose refcount is above their references.
    leaks: u64,
    /// COPIED flags that disagree with refcount == 1 (active tables).
    copied_mismatch: u64,
}

fn refcount_on_disk(img: &[u8], cluster: u64) -> u64 {
    let h = Header::parse(img).unwrap();
    let cb = h.cluster_bits;
    let bb = cb + 3 - h.refcount_order;
    let index = cluster >> bb;
    if index >= u64::from(h.refcount_table_clusters) << (cb - 3) {
        return 0;
    }
    let block = get64(img, h.refcount_table_offset + index * 8) & REFT_OFFSET_MASK;
    if block == 0 || block as usize >= img.len() {
        return 0;
    }
    let (at, shift) = refcount_pos(h.refcount_order, cluster & ((1 << bb) - 1));
    get_refcount(img, (block + at) as usize, shift, h.refcount_order)
}

use super::super::header::Header;

/// A small `qemu-img check` of an image without snapshots.
fn check(img: &[u8]) -> Check {
    let h = Header::parse(img).unwrap();
    let cb = h.cluster_bits;
    let cs = h.cluster_size();
    let clusters = img.len() as u64 >> cb;
    let mut refs = vec![0u64; clusters as usize + 1];
    let mut out = Check::default();
    let inc = |off: u64, len: u64, refs: &mut Vec<u64>| {
        for c in off >> cb..(off + len).div_ceil(cs) {
            match refs.get_mut(c as usize) {
                Some(r) => *r += 1,
                None => refs[clusters as usize] += 1, // past the end: always a corruption
            }
        }
    };
    inc(0, cs, &mut refs);
    inc(h.l1_table_offset, u64::from(h.l1_size) * 8, &mut refs);
    let rt_len = u64::from(h.refcount_table_clusters) << cb;
    inc(h.refcount_table_offset, rt_len, &mut refs);
    for i in 0..rt_len / 8 {
        let b = get64(img, h.refcount_table_offset + i * 8) & REFT_OFFSET_MASK;
        if b != 0 {
            inc(b, cs, &mut refs);
        }
    }
    let mut copied_checks = Vec::new();
    for i in 0..u64::from(h.l1_size) {
        let e = get64(img, h.l1_table_offset + i * 8);
        let l2 = e & L1E_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        inc(l2, cs, &mut refs);
        copied_checks.push((l2, e & OFLAG_COPIED != 0));
        if l2 + cs > img.len() as u64 {
            continue;
        }
        for j in 0..h.l2_entries() {
            let e = get64(img, l2 + j * h.l2_entry_size());
            if e & OFLAG_COMPRESSED != 0 {
                continue;
            }
            let d = e & L2E_OFFSET_MASK;
            if d != 0 {
                inc(d, cs, &mut refs);
                copied_checks.push((d, e & OFLAG_COPIED != 0));
            }
        }
    }
    if refs[clusters as usize] != 0 {
        out.corruptions.push((u64::MAX, 0, refs[clusters as usize]));
    }
    for c in 0..clusters {
        let on_disk = refcount_on_disk(img, c);
        let r = refs[c as usize];
        if on_disk < r {
            out.corruptions.push((c << cb, on_disk, r));
        } else if on_disk > r {
            out.leaks += 1;
        }
    }
    for (off, copied) in copied_checks {
        if (refcount_on_disk(img, off >> cb) == 1) != copied {
            out.copied_mismatch += 1;
        }
    }
    out
}

type Img<'a, const N: usize> = Qcow2<MemIo<'a>, MemIo<'a>, N>;

fn open<const N: usize>(img: &mut [u8]) -> Img<'_, N> {
    Qcow2::open_with_data_file(MemIo::new(img), None, None).unwrap()
}

/// Maps guest cluster `g` to a newly allocated data cluster (as the data layer does).
fn map_new<const N: usize>(q: &mut Img<'_, N>, g: u64) -> u64 {
    let (host, n) = q.alloc_clusters(1).unwrap();
    assert_eq!(n, 1);
    q.set_l2_entry(g * q.cluster_size(), host | OFLAG_COPIED, 0).unwrap();
    host
}

#[test]
fn every_refcount_width_allocates_and_checks_clean() {
    for order in 0..=6u32 {
        let mut img = image(9, order, 1 << 20, 256 << 10);
        let mut q = open::<4>(&mut img);
        let mut hosts = Vec::new();
        for g in [0u64, 1, 2, 100, 1000, 2047] {
            hosts.push(map_new(&mut q, g));
        }
        for (i, g) in [0u64, 1, 2, 100, 1000, 2047].into_iter().enumerate() {
            let (e, _, copied) = q.l2_entry_of(g * 512).unwrap();
            assert_eq!((e, copied), (hosts[i] | OFLAG_COPIED, true), "order {order}");
            assert_eq!(q.refcount_of(hosts[i]).unwrap(), 1);
        }
        q.flush().unwrap();
        drop(q);
        assert_eq!(check(&img), Check::default(), "refcount_order {order}");
        // Read back through a fresh open: every entry is on disk.
        let mut q = open::<2>(&mut img);
        for (i, g) in [0u64, 1, 2, 100, 1000, 2047].into_iter().enumerate() {
            assert_eq!(q.l2_entry_of(g * 512).unwrap().0, hosts[i] | OFLAG_COPIED);
        }
    }
}

#[test]
fn refcount_overflow_is_a_typed_error_at_every_width() {
    for order in 0..=6u32 {
        let mut img = image(9, order, 1 << 20, 64 << 10);
        let mut q = open::<4>(&mut img);
        let (host, _) = q.alloc_clusters(1).unwrap();
        let c = host >> 9;
        // Up to max - 1 directly in the cached block, then through the increase.
        let (byte, shift) = refcount_pos(order, c);
        let max = refcount_max(order);
        q.with_slice(Table::Refcount, 1024, 512, byte, CLASS_REFCOUNT, |s, w| {
            set_refcount(s, w, shift, order, max - 1)
        })
        .unwrap();
        q.change_refcount(c, true).unwrap();
        assert_eq!(q.refcount_of(host).unwrap(), refcount_max(order));
        assert!(matches!(
            q.change_refcount(c, true),
            Err(Error::RefcountOverflow { host_offset, refcount_bits }) if host_offset == host && refcount_bits == 1 << order
        ));
        assert_eq!(q.refcount_of(host).unwrap(), refcount_max(order), "unchanged by the refused increase");
    }
}

#[test]
fn allocation_is_first_fit_contiguous_and_reuses_released_clusters() {
    let mut img = image(12, 4, 16 << 20, 1 << 20);
    let mut q = open::<4>(&mut img);
    let (a, n) = q.alloc_clusters(8).unwrap();
    assert_eq!((a, n), (4 << 12, 8), "right after the metadata, one contiguous run");
    let (b, _) = q.alloc_clusters(1).unwrap();
    assert_eq!(b, 12 << 12, "continues after the previous run");
    q.release_clusters(a + 2 * 4096, 3).unwrap();
    assert_eq!(q.refcount_of(a + 2 * 4096).unwrap(), 1, "a release waits for the entries to be durable");
    q.flush().unwrap();
    assert_eq!(q.refcount_of(a + 2 * 4096).unwrap(), 0);
    let (c, n) = q.alloc_clusters(5).unwrap();
    assert_eq!((c, n), (a + 2 * 4096, 3), "first fit: the freed hole, as far as it goes");
    // Compressed bytes straddling two clusters release both.
    q.release_compressed(a + 4096 - 100, 300).unwrap();
    q.flush().unwrap();
    assert_eq!((q.refcount_of(a).unwrap(), q.refcount_of(a + 4096).unwrap()), (0, 0));
    assert_eq!(q.refcount_of(a + 2 * 4096).unwrap(), 1);
}

#[test]
fn a_new_refcount_block_describes_itself() {
    // 512-byte clusters, 64-bit refcounts: a block covers 64 clusters (32 KiB).
    let mut img = image(9, 6, 1 << 20, 256 << 10);
    let mut q = open::<4>(&mut img);
    let mut last = 0;
    while last < 70 << 9 {
        last = q.alloc_clusters(7).unwrap().0;
    }
    q.flush().unwrap();
    drop(q);
    let block = get64(&img, 512 + 8) & REFT_OFFSET_MASK;
    assert_eq!(block, 64 << 9, "the first cluster of the new range");
    assert_eq!(refcount_on_disk(&img, 64), 1, "its own entry");
    // The allocated clusters are leaks here (no L2 entry names them), nothing is corrupt.
    let c = check(&img);
    assert!(c.corruptions.is_empty() && c.copied_mismatch == 0, "{c:?}");
}

#[test]
fn a_full_refcount_table_is_relocated_and_the_old_one_freed() {
    // 512-byte clusters, 64-bit refcounts: the one-cluster table (64 entries) covers 4096
    // clusters (2 MiB). Leaked bulk allocations fill most of it, guest mappings the rest.
    let mut img = image(9, 6, 2 << 20, 4 << 20);
    let mut q = open::<4>(&mut img);
    let mut taken = 0;
    while taken < 3900 {
        taken += q.alloc_clusters(64).unwrap().1;
    }
    let mut g = 0u64;
    while q.header.refcount_table_offset == 512 {
        map_new(&mut q, g);
        g += 1;
    }
    let new = q.header.refcount_table_offset;
    let clusters = q.header.refcount_table_clusters;
    assert_eq!(new % 512, 0);
    assert!(new >= 2 << 20, "placed past the old coverage");
    assert!(clusters >= 2, "1.5x the entries needed");
    for _ in 0..64 {
        map_new(&mut q, g);
        g += 1;
    }
    q.flush().unwrap();
    drop(q);
    assert_eq!(get64(&img, 48), new);
    assert_eq!(be32(&img, 56), clusters);
    let c = check(&img);
    assert!(c.corruptions.is_empty() && c.copied_mismatch == 0 && c.leaks >= 3900, "{c:?}");
    // The old table was freed at once: its cluster was the first free one for the next
    // allocation, which mapped a guest cluster there.
    let mut q = open::<4>(&mut img);
    let mut reused = false;
    for i in 0..g {
        let e = q.l2_entry_of(i * 512).unwrap().0;
        assert_ne!(e, 0);
        reused |= e & L2E_OFFSET_MASK == 512;
    }
    assert!(reused, "the old table's cluster was reused");
    assert_eq!(q.refcount_of(512).unwrap(), 1);
    // More refcount blocks than the overlap check lists: found by a scan of the table.
    q.prepare_write().unwrap();
    assert!(q.write.blocks.overflow);
    let rt = q.header.refcount_table_offset;
    let block = get64(&read8(&mut q, rt + 30 * 8), 0);
    assert!(matches!(q.check_data_overlap(block + 8, 8), Err(Error::MetadataOverlap { what: "refcount block", .. })));
    let (e, _, _) = q.l2_entry_of(0).unwrap();
    q.check_data_overlap(e & L2E_OFFSET_MASK, 512).unwrap();
}

/// Eight bytes of the image at `offset`, read through the engine's device.
fn read8<const N: usize>(q: &mut Img<'_, N>, offset: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    let io = q.io.as_mut().unwrap();
    io.read_at(offset, &mut b).unwrap();
    b
}

#[test]
fn a_shared_l2_table_is_copied_and_its_old_reference_released() {
    let mut img = image(12, 4, 16 << 20, 1 << 20);
    let mut q = open::<4>(&mut img);
    let d0 = map_new(&mut q, 0);
    let d1 = map_new(&mut q, 1);
    q.flush().unwrap();
    drop(q);
    // Make the L2 table look shared (as a snapshot does): refcount 2, no COPIED in L1.
    let l1 = 3 * 4096usize;
    let old = get64(&img, l1 as u64) & L1E_OFFSET_MASK;
    put(&mut img, l1, &old.to_be_bytes());
    let (at, _) = refcount_pos(4, old >> 12);
    put(&mut img, 2 * 4096 + at as usize, &2u16.to_be_bytes());
    let mut q = open::<4>(&mut img);
    assert_eq!(q.l2_entry_of(4096).unwrap(), (d1 | OFLAG_COPIED, 0, false));
    let (d2, _) = q.alloc_clusters(1).unwrap();
    q.set_l2_entry(4096, d2 | OFLAG_COPIED, 0).unwrap();
    let (e, _, unshared) = q.l2_entry_of(4096).unwrap();
    assert_eq!((e, unshared), (d2 | OFLAG_COPIED, true));
    assert_eq!(q.l2_entry_of(0).unwrap(), (d0 | OFLAG_COPIED, 0, true), "the other entries copied");
    q.flush().unwrap();
    assert_eq!(q.refcount_of(old).unwrap(), 1, "old table: the snapshot's reference remains");
    drop(q);
    let new = get64(&img, l1 as u64);
    assert_eq!(new & OFLAG_COPIED, OFLAG_COPIED);
    assert_ne!(new & L1E_OFFSET_MASK, old);
    assert_eq!(get64(&img, old + 8), d1 | OFLAG_COPIED, "the shared table is untouched");
}

#[test]
fn writes_are_refused_with_typed_errors_before_anything_is_written() {
    for (bit, want) in [(0u32, "dirty"), (1, "corrupt")] {
        let mut img = image(12, 4, 1 << 20, 64 << 10);
        put(&mut img, 72, &(1u64 << bit).to_be_bytes());
        let before = img.clone();
        let mut q = open::<4>(&mut img);
        let e = q.alloc_clusters(1).unwrap_err();
        match want {
            "dirty" => assert!(matches!(e, Error::DirtyImage)),
            _ => assert!(matches!(e, Error::CorruptImage)),
        }
        assert!(q.set_l2_entry(0, 0, 0).is_err());
        drop(q);
        assert_eq!(img, before);
    }
    let mut img = image(12, 4, 1 << 20, 64 << 10);
    put(&mut img, 88, &1u64.to_be_bytes()); // autoclear: bitmaps
    let before = img.clone();
    let mut q = open::<4>(&mut img);
    assert!(matches!(q.alloc_clusters(1), Err(Error::WriteUnsupported { .. })));
    drop(q);
    assert_eq!(img, before);
    // A read-only device is found out by the first write.
    let img = image(12, 4, 1 << 20, 64 << 10);
    let mut q: Qcow2<MemIo<'_>, MemIo<'_>, 4> = Qcow2::open_with_data_file(MemIo::read_only(&img), None, None).unwrap();
    q.alloc_clusters(1).unwrap();
    assert!(matches!(q.set_l2_entry(0, 4 << 12, 0), Err(Error::Io(MemIoError::ReadOnly))));
}

#[test]
fn unknown_autoclear_bits_are_cleared_on_the_first_write() {
    let mut img = image(12, 4, 1 << 20, 64 << 10);
    put(&mut img, 88, &(1u64 << 7 | 1 << 1).to_be_bytes());
    let mut q = open::<4>(&mut img);
    q.alloc_clusters(1).unwrap();
    q.flush().unwrap();
    drop(q);
    assert_eq!(get64(&img, 88), 1 << 1);
}

#[test]
fn the_overlap_check_refuses_metadata() {
    let mut img = image(12, 4, 16 << 20, 1 << 20);
    let mut q = open::<4>(&mut img);
    let d = map_new(&mut q, 0);
    let l2 = d + 4096; // the L2 table was allocated after the data cluster
    for (off, what) in [(0, "header"), (4096, "refcount table"), (8192, "refcount block"), (12288, "active L1 table")] {
        assert!(
            matches!(q.check_data_overlap(off + 100, 10), Err(Error::MetadataOverlap { what: w, .. }) if w == what),
            "{what}"
        );
    }
    assert!(matches!(q.check_data_overlap(l2, 4096), Err(Error::MetadataOverlap { what: "L2 table", .. })));
    q.check_data_overlap(d, 4096).unwrap();
    assert!(q.check_data_overlap(u64::MAX, 2).is_err());
}

/// A device that logs every write (with its bytes) and flush.
struct LogIo<'a> {
    inner: MemIo<'a>,
    log: Vec<Event>,
}

#[derive(Clone)]
enum Event {
    Write(u64, Vec<u8>),
    Flush,
}

impl BlockIo for LogIo<'_> {
    type Error = MemIoError;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MemIoError> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), MemIoError> {
        self.log.push(Event::Write(offset, buf.to_vec()));
        self.inner.write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), MemIoError> {
        self.log.push(Event::Flush);
        Ok(())
    }
    fn size(&mut self) -> Result<u64, MemIoError> {
        self.inner.size()
    }
}

/// A workload over 512-byte clusters and 64-bit refcounts (a block covers 64 clusters, the
/// one-cluster table 4096) with an `N`-slot cache (1: every change is evicted at once, the
/// most write-backs; more: dirty slices linger and are evicted in mixed order): bulk allocations fill most of the table's coverage, then rounds of guest
/// cluster (re)mapping with releases make new refcount blocks and relocate the table.
fn workload<const N: usize>(img: &mut [u8]) -> Vec<Event> {
    let io = LogIo { inner: MemIo::new(img), log: Vec::new() };
    let mut q: Qcow2<LogIo<'_>, LogIo<'_>, N> = Qcow2::open_with_data_file(io, None, None).unwrap();
    let mut taken = 0;
    while taken < 3950 {
        taken += q.alloc_clusters(16).unwrap().1;
    }
    q.flush().unwrap();
    let before = q.header.refcount_table_offset;
    for round in 0..4u64 {
        // Rounds 1 and 3 remap what rounds 0 and 2 mapped: every mapping releases a cluster.
        for g in 0..50u64 {
            let g = (g * 7 + round / 2) % 300;
            let (old, _, _) = q.l2_entry_of(g * 512).unwrap();
            let (host, _) = q.alloc_clusters(1).unwrap();
            q.data_barrier().unwrap();
            q.set_l2_entry(g * 512, host | OFLAG_COPIED, 0).unwrap();
            if old & L2E_OFFSET_MASK != 0 {
                q.release_clusters(old & L2E_OFFSET_MASK, 1).unwrap();
            }
        }
        q.flush().unwrap();
    }
    assert_ne!(q.header.refcount_table_offset, before, "the table was relocated");
    q.into_inner().0.unwrap().log
}

#[test]
fn refcount_writes_are_flushed_before_any_l2_write_and_l2_before_decreases() {
    crash_replay::<1>();
}

#[test]
fn crash_replay_with_a_larger_cache() {
    crash_replay::<3>();
}

fn crash_replay<const N: usize>() {
    let mut img = image(9, 6, 1 << 20, 3 << 20);
    let base = img.clone();
    let log = workload::<N>(&mut img);
    let c = check(&img);
    assert!(c.corruptions.is_empty() && c.copied_mismatch == 0, "{c:?}");
    let h = Header::parse(&img).unwrap();
    // Classify by the final image: which clusters are L2 tables and refcount blocks.
    let mut l2_tables = Vec::new();
    for i in 0..u64::from(h.l1_size) {
        let t = get64(&img, h.l1_table_offset + i * 8) & L1E_OFFSET_MASK;
        if t != 0 {
            l2_tables.push(t);
        }
    }
    let mut blocks = Vec::new();
    for i in 0..(u64::from(h.refcount_table_clusters) << 6) {
        let b = get64(&img, h.refcount_table_offset + i * 8) & REFT_OFFSET_MASK;
        if b != 0 {
            blocks.push(b);
        }
    }
    assert!(blocks.len() > 60, "the workload made new refcount blocks");
    let in_any = |set: &[u64], off: u64| set.iter().any(|&t| (t..t + 512).contains(&off));
    let mut rc_unflushed = false;
    let mut l2_writes = 0;
    for e in &log {
        match e {
            Event::Flush => rc_unflushed = false,
            Event::Write(off, _) if in_any(&blocks, *off) => rc_unflushed = true,
            Event::Write(off, data) if in_any(&l2_tables, *off) && data.iter().any(|&b| b != 0) => {
                assert!(!rc_unflushed, "an L2 write at {off:#x} follows an unflushed refcount write");
                l2_writes += 1;
            }
            _ => {}
        }
    }
    assert!(l2_writes > 10);
    // Crash after every write: the image as of that write (prefix), and the image as of the
    // last flush plus that write alone (unflushed writes reordered): never a corruption.
    let mut state = base.clone();
    let mut flushed = base;
    for (k, e) in log.iter().enumerate() {
        match e {
            Event::Flush => flushed.clone_from(&state),
            Event::Write(off, data) => {
                let r = *off as usize..*off as usize + data.len();
                state[r.clone()].copy_from_slice(data);
                let c = check(&state);
                assert!(c.corruptions.is_empty(), "crash after write {k} (prefix): {c:?}");
                let saved = flushed[r.clone()].to_vec();
                flushed[r.clone()].copy_from_slice(data);
                let c = check(&flushed);
                assert!(c.corruptions.is_empty(), "crash after write {k} (alone since the flush): {c:?}");
                flushed[r].copy_from_slice(&saved);
            }
        }
    }
}

/// A device that accepts only whole aligned 512-byte blocks (what a firmware disk moves).
struct Blocks<'a>(MemIo<'a>);

impl BlockIo for Blocks<'_> {
    type Error = MemIoError;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MemIoError> {
        assert!(offset.is_multiple_of(512) && buf.len().is_multiple_of(512), "unaligned read at {offset:#x}");
        self.0.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), MemIoError> {
        assert!(offset.is_multiple_of(512) && buf.len().is_multiple_of(512), "unaligned write at {offset:#x}");
        self.0.write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), MemIoError> {
        Ok(())
    }
    fn size(&mut self) -> Result<u64, MemIoError> {
        self.0.size()
    }
    fn block_size(&self) -> usize {
        512
    }
}

#[test]
fn a_512_byte_block_device_gets_whole_blocks_only() {
    // 4 KiB clusters: L1 entries, refcount table entries and the header are 8- and 12-byte
    // changes, written as read-modify-write of their block; 512-byte clusters with 64-bit
    // refcounts make new blocks and relocate the table.
    for (cb, order, file) in [(12u32, 4u32, 1usize << 20), (9, 6, 3 << 20)] {
        let mut img = image(cb, order, 1 << 20, file);
        let mut q: Qcow2<Blocks<'_>, Blocks<'_>, 2> =
            Qcow2::open_with_data_file(Blocks(MemIo::new(&mut img)), None, None).unwrap();
        let cs = q.cluster_size();
        if cb == 9 {
            let mut taken = 0;
            while taken < 4000 {
                taken += q.alloc_clusters(64).unwrap().1;
            }
        }
        for g in (0..(1u64 << 20) / cs).step_by(3) {
            let (host, _) = q.alloc_clusters(1).unwrap();
            q.set_l2_entry(g * cs, host | OFLAG_COPIED, 0).unwrap();
        }
        q.flush().unwrap();
        let moved = q.header.refcount_table_offset != cs;
        drop(q);
        assert_eq!(moved, cb == 9);
        let c = check(&img);
        assert!(c.corruptions.is_empty() && c.copied_mismatch == 0, "{c:?}");
    }
}

#[test]
fn dropping_a_written_image_writes_its_metadata_back() {
    let mut img = image(12, 4, 16 << 20, 1 << 20);
    let mut q = open::<4>(&mut img);
    let d = map_new(&mut q, 5);
    drop(q); // no flush: the dirty slices are written by the drop
    assert_eq!(check(&img), Check::default());
    let mut q = open::<4>(&mut img);
    assert_eq!(q.l2_entry_of(5 << 12).unwrap().0, d | OFLAG_COPIED);
    // into_inner and close do the same.
    let d = map_new(&mut q, 6);
    let (io, _) = q.into_inner();
    assert!(io.is_some());
    let mut q = open::<4>(&mut img);
    assert_eq!(q.l2_entry_of(6 << 12).unwrap().0, d | OFLAG_COPIED);
    let d = map_new(&mut q, 7);
    q.close();
    drop(q);
    let mut q = open::<4>(&mut img);
    assert_eq!(q.l2_entry_of(7 << 12).unwrap().0, d | OFLAG_COPIED);
    drop(q);
    assert_eq!(check(&img), Check::default());
}
