//! `qemu-img check` for qcow2: every reference recounted into caller memory, compared with the
//! on-disk refcounts, classified as QEMU's `qcow2_check_refcounts` does, and repaired on
//! request (`-r leaks`, `-r all`: QEMU's `rebuild_refcount_structure` included).
//!
//! # What is counted
//!
//! The header cluster; the active L1 table, its L2 tables and their data clusters (a
//! compressed cluster: every host cluster its bytes touch); every snapshot's L1/L2/data; the
//! snapshot table; the refcount table and every refcount block (each must end at exactly 1);
//! the LUKS header area (FDE offset and length); the bitmap directory, bitmap tables and
//! bitmap data when the bitmaps autoclear bit is set. Counts saturate at the image's refcount
//! width (QEMU counts at that width too: a reference past it is an "overflow" corruption).
//!
//! # Classification (as QEMU)
//!
//! - on disk > counted: a leak (`Leaked cluster N refcount=A reference=B`), fixed by
//!   [`Repair::Leaks`] and [`Repair::All`];
//! - on disk < counted, on disk > 0: a corruption, fixed by [`Repair::All`] (raised);
//! - on disk 0, counted > 0, a refcount block not counted exactly 1, a bad refcount table
//!   entry: a corruption that needs the refcount structures rebuilt ([`Repair::All`];
//!   [`Repair::Leaks`] stops with [`Error::CheckNeedsRebuild`], exit 1 in `qemu-img`);
//! - COPIED flags of the active L1/L2 entries that disagree with the on-disk refcount,
//!   reserved bits, unaligned entries, bad subcluster bitmaps, compressed entries with COPIED,
//!   a referenced region reaching a cluster or more past the end of the file (one corruption,
//!   not counted: [`Finding::PastEnd`]): corruptions. An L2 entry pointing into metadata shows
//!   as a refcount too low (the cluster is counted twice).
//! - A repair write that would land on metadata (QEMU's overlap check, active L2 tables
//!   aside) fails the check with [`Error::MetadataOverlap`] (`qemu-img`: "Check failed").
//!
//! Divergence: for a refcount block past the end of the file, `qemu-img check -r all` grows
//! the file up to it (gigabytes for a garbage offset); this rebuilds the refcount structures
//! instead.
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::qcow2::{Finding, Qcow2Image, Repair};
//!
//! # fn main() -> Result<(), qluks::qcow2::Error<qluks::io::MemIoError>> {
//! # let mut image = doc_support::leaky_image();
//! // `image`: 4 KiB clusters; cluster 4 has refcount 1 but nothing references it.
//! let mut disk = Qcow2Image::open_metadata(MemIo::new(&mut image), None)?;
//! let mut memory = vec![0u8; disk.check_memory_len()?]; // any caller memory will do
//! let mut found = Vec::new();
//! let result = disk.check(&mut memory, Repair::None, &mut |f| found.push(*f))?;
//! assert_eq!((result.leaks, result.corruptions), (1, 0));
//! assert_eq!(found[0], Finding::Refcount { cluster: 4, on_disk: 1, counted: 0, repairing: false });
//! assert_eq!(found[0].to_string(), "Leaked cluster 4 refcount=1 reference=0"); // qemu-img's words
//!
//! let fixed = disk.check(&mut memory, Repair::Leaks, &mut |_| {})?;
//! assert_eq!(fixed.leaks_fixed, 1);
//! let again = disk.check(&mut memory, Repair::None, &mut |_| {})?;
//! assert_eq!((again.leaks, again.corruptions, again.image_end_offset), (0, 0, 4 * 4096));
//! # Ok(())
//! # }
//! # mod doc_support {
//! #     fn put(b: &mut [u8], off: usize, v: &[u8]) { b[off..off + v.len()].copy_from_slice(v) }
//! #     /// Header, refcount table, refcount block, L1 table (empty), and a leaked cluster.
//! #     pub fn leaky_image() -> Vec<u8> {
//! #         let mut img = vec![0u8; 5 * 4096];
//! #         put(&mut img, 0, b"QFI\xfb");
//! #         put(&mut img, 4, &3u32.to_be_bytes());
//! #         put(&mut img, 20, &12u32.to_be_bytes());
//! #         put(&mut img, 24, &(1u64 << 20).to_be_bytes());
//! #         put(&mut img, 36, &1u32.to_be_bytes()); // l1_size
//! #         put(&mut img, 40, &0x3000u64.to_be_bytes()); // L1
//! #         put(&mut img, 48, &0x1000u64.to_be_bytes()); // refcount table
//! #         put(&mut img, 56, &1u32.to_be_bytes());
//! #         put(&mut img, 96, &4u32.to_be_bytes()); // 16-bit refcounts
//! #         put(&mut img, 100, &104u32.to_be_bytes());
//! #         put(&mut img, 0x1000, &0x2000u64.to_be_bytes()); // refcount block
//! #         for cluster in 0..5 {
//! #             put(&mut img, 0x2000 + 2 * cluster, &1u16.to_be_bytes());
//! #         }
//! #         img
//! #     }
//! # }
//! ```
//!
//! # Memory
//!
//! [`Qcow2::check_memory_len`] bytes, a function of the host FILE's size (never of a header
//! field): one refcount entry of the image's width per cluster of the file, plus room for the
//! refcount blocks and table a rebuild may append, plus the new refcount table's entries
//! (8 bytes per refcount block). At 64 KiB clusters and 16-bit refcounts that is 2 bytes per
//! 64 KiB of file (32 KiB per GiB); at 512-byte clusters and 64-bit refcounts 8 bytes per
//! 512 bytes. Tables are walked a chunk at a time through buffers of at most 4 KiB on the
//! stack; nothing is allocated.
//!
//! # Crash safety of repairs
//!
//! Leak fixes only lower refcounts that nothing references (one write per changed refcount
//! chunk); corruption fixes only raise them. A rebuild writes the new refcount blocks and
//! table into clusters no reference uses (free or leaked, or past the end of the file), flushes,
//! switches the header (one 12-byte write at offset 48, flushed), then lowers the refcounts of
//! the old structures (now leaks). A crash after any single write leaves the image as it was,
//! or with leaks.

use super::error::Error;
use super::extension::BitmapsExt;
use super::feature::{Incompatible, AUTOCLEAR_BITMAPS};
use super::header::{CryptMethod, MAX_L1_BYTES};
use super::l2_entry::{L1E_OFFSET_MASK, L1E_RESERVED_MASK, L2E_OFFSET_MASK, L2E_RESERVED_MASK};
use super::l2_entry::{OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use super::refcount::WriteState;
use super::table_write::{get_refcount, refcount_max, refcount_pos, set_refcount, write_aligned, write_zeros};
use super::{be32, be64, Qcow2};
use crate::io::{read_aligned, BlockIo};

/// Valid bits of a refcount table entry.
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// Reserved bits of a refcount table entry.
const REFT_RESERVED_MASK: u64 = 0x1ff;
/// Bitmap table entry: offset bits, reserved bits, "all ones" flag.
const BME_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const BME_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
const BME_ALL_ONES: u64 = 1;
/// Extended L2: all allocation bits of a subcluster bitmap.
const BITMAP_ALL_ALLOC: u64 = 0xffff_ffff;
/// Stack buffer of table walks and refcount chunks.
const BUF: usize = 4096;
/// Small stack buffer (L1 and refcount table chunks).
const SMALL: usize = 512;

/// What `check` may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Nothing: report only (`qemu-img check`).
    None,
    /// Lower refcounts that are too high (`-r leaks`).
    Leaks,
    /// Everything: leaks, refcounts too low, the refcount structures rebuilt when needed,
    /// COPIED flags (`-r all`).
    All,
}

/// The counts `qemu-img check` reports (QEMU's `BdrvCheckResult`, `ImageCheck` in JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckResult {
    /// Internal errors (a refcount that cannot be read, a repair write refused).
    pub check_errors: u64,
    /// Corruptions found and not repaired.
    pub corruptions: u64,
    /// Leaked clusters found and not repaired.
    pub leaks: u64,
    /// Corruptions repaired.
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    pub leaks_fixed: u64,
    /// End of the last cluster in use (by refcount or reference).
    pub image_end_offset: u64,
    /// Clusters of the virtual disk.
    pub total_clusters: u64,
    /// Allocated guest clusters of the active disk (compressed included).
    pub allocated_clusters: u64,
    /// Allocated guest clusters not contiguous with the previous one of their L2 table
    /// (compressed clusters always count).
    pub fragmented_clusters: u64,
    /// Compressed guest clusters of the active disk.
    pub compressed_clusters: u64,
}

/// One thing `check` found or did, in the order QEMU prints it (`Display` gives QEMU's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// The on-disk refcount of `cluster` is not the number of references counted.
    Refcount {
        /// Cluster index.
        cluster: u64,
        /// Refcount on disk.
        on_disk: u64,
        /// References counted.
        counted: u64,
        /// Being repaired.
        repairing: bool,
    },
    /// The refcount of `cluster` cannot be read (its refcount block offset is unaligned).
    RefcountUnreadable {
        /// Cluster index.
        cluster: u64,
    },
    /// More references to the cluster at `offset` than the refcount width holds.
    Overflow {
        /// Host offset.
        offset: u64,
    },
    /// An L1 entry with reserved bits.
    L1Reserved {
        /// The entry.
        entry: u64,
    },
    /// An L2 table offset not cluster aligned.
    L2TableUnaligned {
        /// The offset.
        offset: u64,
    },
    /// An L2 entry with reserved bits.
    L2Reserved {
        /// The entry.
        entry: u64,
    },
    /// A compressed L2 entry with COPIED.
    CompressedCopied {
        /// Host offset of the compressed bytes.
        offset: u64,
    },
    /// A compressed cluster in an image with an external data file.
    CompressedWithDataFile {
        /// L2 index.
        index: u64,
        /// The entry.
        entry: u64,
    },
    /// A compressed cluster with a subcluster bitmap.
    CompressedBitmap {
        /// L2 index.
        index: u64,
        /// The entry.
        entry: u64,
    },
    /// An allocated cluster whose subcluster bitmap marks subclusters allocated and zero.
    SubclusterBitmap {
        /// Host offset.
        offset: u64,
    },
    /// An unallocated cluster with allocated subclusters.
    UnallocatedBitmap,
    /// A data cluster offset not cluster aligned.
    DataUnaligned {
        /// The offset.
        offset: u64,
    },
    /// A preallocated zero cluster offset not cluster aligned (repaired: made a plain zero
    /// entry).
    PreallocUnaligned {
        /// The offset.
        offset: u64,
        /// Being repaired.
        repairing: bool,
    },
    /// A refcount table entry with reserved bits.
    ReftableReserved {
        /// Index in the refcount table.
        index: u64,
    },
    /// A refcount block offset not cluster aligned.
    RefblockUnaligned {
        /// Index in the refcount table.
        index: u64,
    },
    /// A refcount block past the end of the file.
    RefblockOutside {
        /// Index in the refcount table.
        index: u64,
    },
    /// A refcount block referenced other than exactly once.
    RefblockRefcount {
        /// Index in the refcount table.
        index: u64,
        /// References counted.
        refcount: u64,
    },
    /// A snapshot's L1 table offset not cluster aligned.
    SnapshotL1Unaligned {
        /// Snapshot index.
        index: u32,
        /// The offset.
        offset: u64,
    },
    /// A snapshot's L1 table larger than QEMU's limit.
    SnapshotL1TooLarge {
        /// Snapshot index.
        index: u32,
        /// Its entries.
        l1_size: u32,
    },
    /// Snapshots in an image with an external data file.
    SnapshotsWithDataFile {
        /// Number of snapshots.
        count: u32,
    },
    /// A region referenced that reaches a cluster or more past the end of the file (not
    /// counted).
    PastEnd {
        /// Host offset.
        offset: u64,
        /// Bytes.
        size: u64,
    },
    /// A bitmap table entry that is invalid.
    BitmapEntry {
        /// The entry.
        entry: u64,
    },
    /// The COPIED flag of an active L1 entry disagrees with its L2 table's refcount.
    CopiedL2 {
        /// L1 index.
        l1_index: u64,
        /// The entry.
        l1_entry: u64,
        /// On-disk refcount.
        refcount: u64,
        /// Being repaired.
        repairing: bool,
    },
    /// The COPIED flag of an active L2 entry disagrees with its data cluster's refcount.
    CopiedData {
        /// The entry.
        l2_entry: u64,
        /// On-disk refcount.
        refcount: u64,
        /// Being repaired.
        repairing: bool,
    },
    /// The refcount structures are being rebuilt.
    Rebuilding,
    /// The refcount structures need a rebuild, which this repair mode does not do.
    RebuildNeeded,
    /// After a rebuild, a cluster still has refcount 0 and references.
    StillBroken,
}

impl core::fmt::Display for Finding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use Finding::*;
        let tag = |r: bool| if r { "Repairing" } else { "ERROR" };
        match *self {
            Refcount { cluster, on_disk, counted, repairing } => {
                let what = if repairing {
                    "Repairing"
                } else if on_disk < counted {
                    "ERROR"
                } else {
                    "Leaked"
                };
                write!(f, "{what} cluster {cluster} refcount={on_disk} reference={counted}")
            }
            RefcountUnreadable { cluster } => {
                write!(f, "Can't get refcount for cluster {cluster}: Input/output error")
            }
            Overflow { offset } => write!(f, "ERROR: overflow cluster offset={offset:#x}"),
            L1Reserved { entry } => write!(f, "ERROR found L1 entry with reserved bits set: {entry:x}"),
            L2TableUnaligned { offset } => {
                write!(f, "ERROR l2_offset={offset:x}: Table is not cluster aligned; L1 entry corrupted")
            }
            L2Reserved { entry } => write!(f, "ERROR found l2 entry with reserved bits set: {entry:x}"),
            CompressedCopied { offset } => {
                write!(f, "ERROR: coffset={offset:#x}: copied flag must never be set for compressed clusters")
            }
            CompressedWithDataFile { index, entry } => {
                write!(f, "ERROR compressed cluster {index} with data file, entry={entry:#x}")
            }
            CompressedBitmap { index, entry } => write!(
                f,
                "ERROR compressed cluster {index} with non-zero subcluster allocation bitmap, entry={entry:#x}"
            ),
            SubclusterBitmap { offset } => {
                write!(f, "ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap")
            }
            UnallocatedBitmap => write!(f, "ERROR: Unallocated cluster has non-zero subcluster allocation map"),
            DataUnaligned { offset } => {
                write!(f, "ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted.")
            }
            PreallocUnaligned { offset, repairing } => write!(
                f,
                "{} offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.",
                tag(repairing)
            ),
            ReftableReserved { index } => write!(f, "ERROR refcount table entry {index} has reserved bits set"),
            RefblockUnaligned { index } => {
                write!(f, "ERROR refcount block {index} is not cluster aligned; refcount table entry corrupted")
            }
            RefblockOutside { index } => write!(f, "ERROR refcount block {index} is outside image"),
            RefblockRefcount { index, refcount } => write!(f, "ERROR refcount block {index} refcount={refcount}"),
            SnapshotL1Unaligned { index, offset } => write!(
                f,
                "ERROR snapshot {index} l1_offset={offset:#x}: L1 table is not cluster aligned; snapshot table \
                 entry corrupted"
            ),
            SnapshotL1TooLarge { index, l1_size } => write!(
                f,
                "ERROR snapshot {index} l1_size={l1_size:#x}: L1 table is too large; snapshot table entry corrupted"
            ),
            SnapshotsWithDataFile { count } => write!(f, "ERROR {count} snapshots in image with data file"),
            PastEnd { offset, size } => write!(
                f,
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset \
                 {offset:#x} size {size:#x}"
            ),
            BitmapEntry { entry } => write!(f, "ERROR bitmap table entry {entry:#x} is invalid"),
            CopiedL2 { l1_index, l1_entry, refcount, repairing } => write!(
                f,
                "{} OFLAG_COPIED L2 cluster: l1_index={l1_index} l1_entry={l1_entry:x} refcount={refcount}",
                tag(repairing)
            ),
            CopiedData { l2_entry, refcount, repairing } => {
                write!(f, "{} OFLAG_COPIED data cluster: l2_entry={l2_entry:x} refcount={refcount}", tag(repairing))
            }
            Rebuilding => write!(f, "Rebuilding refcount structure"),
            RebuildNeeded => write!(f, "ERROR need to rebuild refcount structures"),
            StillBroken => write!(f, "ERROR rebuilt refcount structure is still broken"),
        }
    }
}

/// Where the check memory's parts are, for an image of `file_size` bytes.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Refcount entries held (the file's clusters plus room for a rebuild).
    cap: u64,
    /// Bytes of the entries.
    count_bytes: usize,
    /// Bytes of the new refcount table's entries (8 per refcount block covering `cap`).
    table_bytes: usize,
}

fn layout(cluster_bits: u32, refcount_order: u32, file_size: u64) -> Option<Layout> {
    let cs = 1u64 << cluster_bits;
    let per_block = 1u64 << (cluster_bits + 3 - refcount_order);
    let file_clusters = file_size.div_ceil(cs);
    // Room for the blocks and the table a rebuild may place past the end of the file.
    let mut margin = 0u64;
    let cap = loop {
        let cap = file_clusters.checked_add(margin)?;
        let blocks = cap.div_ceil(per_block).max(1);
        let need = blocks + (blocks * 8).div_ceil(cs) + 2;
        if need <= margin {
            break cap;
        }
        margin = need;
    };
    let count_bytes = usize::try_from((cap.checked_mul(1 << refcount_order)?).div_ceil(64) * 8).ok()?;
    let table_bytes = usize::try_from(cap.div_ceil(per_block).checked_mul(8)?).ok()?;
    Some(Layout { cap, count_bytes, table_bytes })
}

/// References counted, one entry of the image's refcount width per cluster.
struct Counts<'m> {
    mem: &'m mut [u8],
    order: u32,
    cap: u64,
    file_clusters: u64,
    /// Highest cluster referenced + 1 (at most `cap`).
    max_ref: u64,
}

impl Counts<'_> {
    fn get(&self, i: u64) -> u64 {
        if i >= self.cap {
            return 0;
        }
        let (at, shift) = refcount_pos(self.order, i);
        get_refcount(self.mem, at as usize, shift, self.order)
    }

    fn set(&mut self, i: u64, v: u64) {
        let (at, shift) = refcount_pos(self.order, i);
        set_refcount(self.mem, at as usize, shift, self.order, v);
    }

    /// Clusters compared with the on-disk refcounts: the file's, and any referenced past it.
    fn range(&self) -> u64 {
        self.file_clusters.max(self.max_ref)
    }

    fn reset(&mut self, file_clusters: u64) {
        self.mem.fill(0);
        self.file_clusters = file_clusters;
        self.max_ref = 0;
    }

    /// First fit of `n` unreferenced clusters from `*first` (QEMU's `alloc_clusters_imrt`),
    /// counted 1 each. `None`: the memory holds no such run.
    fn alloc(&mut self, n: u64, first: &mut u64) -> Option<u64> {
        let mut start = *first;
        loop {
            if start.checked_add(n)? > self.cap {
                return None;
            }
            match (0..n).find(|&k| self.get(start + k) != 0) {
                None => break,
                Some(k) => start += k + 1,
            }
        }
        for k in start..start + n {
            self.set(k, 1);
        }
        self.max_ref = self.max_ref.max(start + n);
        *first = start;
        Some(start)
    }
}

/// One refcount chunk kept for the COPIED pass's lookups.
struct Lookup {
    /// The refcount table entry read last: (index, raw entry).
    rt: (u64, u64),
    chunk_at: u64,
    buf: [u8; BUF],
}

type Report<'r> = &'r mut dyn FnMut(&Finding);

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Bytes of memory [`Qcow2::check`] needs for this image: a function of the image FILE's
    /// size (its clusters, at the image's refcount width, plus room for a rebuilt refcount
    /// structure; see the module docs), whatever the header claims.
    pub fn check_memory_len(&mut self) -> Result<usize, Error<I::Error>> {
        let file_size = self.io.as_mut().ok_or(Error::NotOpen)?.size().map_err(Error::Io)?;
        let l = self.check_layout(file_size)?;
        Ok(l.count_bytes + l.table_bytes)
    }

    fn check_layout(&self, file_size: u64) -> Result<Layout, Error<I::Error>> {
        layout(self.header.cluster_bits, self.header.refcount_order, file_size)
            .ok_or(Error::CheckMemoryTooSmall { needed: usize::MAX, got: 0 })
    }

    /// Checks the image as `qemu-img check` does, repairing what `repair` allows, with
    /// `memory` (at least [`Qcow2::check_memory_len`] bytes) for the counted references.
    /// `report` sees every finding (QEMU's messages through `Display`). The result is the one
    /// pass's: `qemu-img check -r` then checks again without repairing (do the same to see
    /// what is left). With a repair and no corruption left, the dirty and corrupt bits are
    /// cleared. Fails with [`Error::CheckNeedsRebuild`] when [`Repair::Leaks`] meets what only a
    /// rebuild repairs.
    pub fn check(
        &mut self,
        memory: &mut [u8],
        repair: Repair,
        report: &mut dyn FnMut(&Finding),
    ) -> Result<CheckResult, Error<I::Error>> {
        if self.io.is_none() {
            return Err(Error::NotOpen);
        }
        if self.write.ready {
            self.flush()?;
        }
        self.cache.clear_all();
        self.write = WriteState::NEW;
        let r = self.check_inner(memory, repair, report);
        // Repairs wrote around the cache and the allocator: start both afresh.
        self.cache.clear_all();
        self.write = WriteState::NEW;
        if let Some(io) = self.io.as_mut() {
            if let Ok(size) = io.size() {
                self.file_size = size;
            }
        }
        r
    }

    /// Repairs an image with the dirty bit (lazy refcounts after a crash) as QEMU does when it
    /// opens one for writing: `check` with [`Repair::All`], which clears the bit when no
    /// corruption is left. Call it before writing to an image that [`Error::DirtyImage`]
    /// refused. Returns the repair's result; fails if corruptions or check errors remain.
    pub fn repair_dirty(&mut self, memory: &mut [u8]) -> Result<CheckResult, Error<I::Error>> {
        let r = self.check(memory, Repair::All, &mut |_| {})?;
        if r.check_errors != 0 || r.corruptions != 0 || self.header.incompatible(Incompatible::Dirty) {
            return Err(Error::CheckRepairFailed { corruptions: r.corruptions, check_errors: r.check_errors });
        }
        Ok(r)
    }

    fn check_inner(
        &mut self,
        memory: &mut [u8],
        repair: Repair,
        report: Report<'_>,
    ) -> Result<CheckResult, Error<I::Error>> {
        let cs = self.header.cluster_size();
        let file_size = self.io.as_mut().ok_or(Error::NotOpen)?.size().map_err(Error::Io)?;
        self.file_size = file_size;
        let l = self.check_layout(file_size)?;
        let needed = l.count_bytes + l.table_bytes;
        if memory.len() < needed {
            return Err(Error::CheckMemoryTooSmall { needed, got: memory.len() });
        }
        let (count_mem, rest) = memory.split_at_mut(l.count_bytes);
        let table_mem = &mut rest[..l.table_bytes];
        let mut c = Counts {
            mem: count_mem,
            order: self.header.refcount_order,
            cap: l.cap,
            file_clusters: file_size.div_ceil(cs),
            max_ref: 0,
        };
        c.reset(c.file_clusters);
        let mut res = CheckResult { total_clusters: self.header.size.div_ceil(cs), ..CheckResult::default() };
        let mut rebuild = false;
        self.calculate(&mut c, &mut res, repair, true, &mut rebuild, report)?;
        let pre_compare = res;
        let mut highest = 0u64;
        self.compare(&c, &mut res, Repair::None, &mut rebuild, &mut highest, report)?;

        if rebuild && repair == Repair::All {
            let old = res;
            report(&Finding::Rebuilding);
            self.rebuild(&mut c, table_mem)?;
            // The header names the new structure: count again (the old one is now leaked).
            let file_size = self.io.as_mut().ok_or(Error::NotOpen)?.size().map_err(Error::Io)?;
            self.file_size = file_size;
            c.reset(file_size.div_ceil(cs));
            let mut again = CheckResult::default();
            let mut rebuild2 = false;
            self.calculate(&mut c, &mut again, Repair::None, false, &mut rebuild2, &mut |_| {})?;
            res.corruptions = again.corruptions;
            res.leaks = 0;
            res.check_errors += again.check_errors;
            let mut fresh = CheckResult::default();
            self.compare(&c, &mut fresh, Repair::Leaks, &mut rebuild2, &mut highest, report)?;
            if rebuild2 {
                report(&Finding::StillBroken);
            }
            if res.corruptions < old.corruptions {
                res.corruptions_fixed += old.corruptions - res.corruptions;
            }
            res.leaks_fixed += old.leaks;
            // As QEMU: what this pass finds besides leaks shows in the double check.
            res.leaks += fresh.leaks;
        } else if repair != Repair::None {
            if rebuild {
                report(&Finding::RebuildNeeded);
                return Err(Error::CheckNeedsRebuild);
            }
            if res.leaks != 0 || res.corruptions != 0 {
                res = pre_compare;
                self.compare(&c, &mut res, repair, &mut rebuild, &mut highest, report)?;
            }
        }

        self.check_copied(&mut res, repair, report)?;
        res.image_end_offset = (highest + 1) * cs;

        if repair != Repair::None && res.check_errors == 0 && res.corruptions == 0 {
            self.mark_clean()?;
        }
        Ok(res)
    }

    /// Clears the dirty and corrupt bits (QEMU's `qcow2_mark_clean` and `_consistent`).
    fn mark_clean(&mut self) -> Result<(), Error<I::Error>> {
        let bits = (1u64 << Incompatible::Dirty as u32) | (1u64 << Incompatible::Corrupt as u32);
        let h = &mut self.header;
        if h.version < 3 || h.incompatible_features & bits == 0 {
            return Ok(());
        }
        let new = h.incompatible_features & !bits;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        io.flush().map_err(Error::Io)?;
        write_aligned(io, 72, &new.to_be_bytes()).map_err(Error::Io)?;
        io.flush().map_err(Error::Io)?;
        self.header.incompatible_features = new;
        Ok(())
    }

    // ---- counting ----

    /// QEMU's `qcow2_inc_refcounts_imrt`: one more reference to each cluster of
    /// `offset..offset + size`.
    fn inc(&self, c: &mut Counts<'_>, res: &mut CheckResult, offset: u64, size: u64, report: Report<'_>) {
        if size == 0 {
            return;
        }
        let cb = self.header.cluster_bits;
        let first = offset >> cb;
        let last = offset.saturating_add(size - 1) >> cb;
        let max = refcount_max(c.order);
        // QEMU: a region past the end of the file by a cluster or more is one corruption,
        // not counted (the last cluster may be partly allocated).
        if offset.saturating_add(size).saturating_sub(self.file_size) >= (1u64 << cb) {
            report(&Finding::PastEnd { offset, size });
            res.corruptions += 1;
            return;
        }
        for k in first..=last.min(c.cap.saturating_sub(1)) {
            let v = c.get(k);
            if v == max {
                report(&Finding::Overflow { offset: k << cb });
                res.corruptions += 1;
                continue;
            }
            c.set(k, v + 1);
            c.max_ref = c.max_ref.max(k + 1);
        }
    }

    /// Reads `buf.len()` bytes at `offset`; bytes past the end of the file read as zeros (as
    /// QEMU's file driver).
    fn read_clamped(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error<I::Error>> {
        let n = self.file_size.saturating_sub(offset).min(buf.len() as u64) as usize;
        buf[n..].fill(0);
        if n > 0 {
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            read_aligned(io, offset, &mut buf[..n]).map_err(Error::Io)?;
        }
        Ok(())
    }

    /// QEMU's `calculate_refcounts` (and `check_refblocks`).
    fn calculate(
        &mut self,
        c: &mut Counts<'_>,
        res: &mut CheckResult,
        repair: Repair,
        frag_info: bool,
        rebuild: &mut bool,
        report: Report<'_>,
    ) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        self.inc(c, res, 0, cs, report);
        self.count_l1(c, res, h.l1_table_offset, h.l1_size, frag_info, repair, report)?;
        let data_file = h.incompatible(Incompatible::ExternalDataFile);
        if data_file && h.nb_snapshots > 0 {
            report(&Finding::SnapshotsWithDataFile { count: h.nb_snapshots });
            res.corruptions += 1;
        }
        let mut offset = h.snapshots_offset;
        let mut table_len = 0u64;
        for index in 0..h.nb_snapshots {
            let s = self.read_snapshot_entry(index, offset)?;
            offset = offset.saturating_add(s.entry_len);
            table_len = table_len.saturating_add(s.entry_len);
            if s.l1_table_offset & (cs - 1) != 0 {
                report(&Finding::SnapshotL1Unaligned { index, offset: s.l1_table_offset });
                res.corruptions += 1;
                continue;
            }
            if u64::from(s.l1_size) > MAX_L1_BYTES / 8 {
                report(&Finding::SnapshotL1TooLarge { index, l1_size: s.l1_size });
                res.corruptions += 1;
                continue;
            }
            self.count_l1(c, res, s.l1_table_offset, s.l1_size, false, repair, report)?;
        }
        self.inc(c, res, h.snapshots_offset, table_len, report);
        let rt_entries = u64::from(h.refcount_table_clusters) << (h.cluster_bits - 3);
        self.inc(c, res, h.refcount_table_offset, rt_entries * 8, report);
        if h.crypt_method == CryptMethod::Luks {
            if let Some(fde) = self.extensions.fde {
                self.inc(c, res, fde.offset, fde.length, report);
            }
        }
        if h.autoclear_features & (1 << AUTOCLEAR_BITMAPS) != 0 {
            if let Some(b) = self.extensions.bitmaps.filter(|b| b.nb_bitmaps > 0) {
                self.count_bitmaps(c, res, b, report)?;
            }
        }
        self.check_refblocks(c, res, repair, rebuild, report)
    }

    /// QEMU's `check_refcounts_l1`.
    #[allow(clippy::too_many_arguments)]
    fn count_l1(
        &mut self,
        c: &mut Counts<'_>,
        res: &mut CheckResult,
        l1_offset: u64,
        l1_size: u32,
        frag_info: bool,
        repair: Repair,
        report: Report<'_>,
    ) -> Result<(), Error<I::Error>> {
        if l1_size == 0 {
            return Ok(());
        }
        let bytes = u64::from(l1_size) * 8;
        self.inc(c, res, l1_offset, bytes, report);
        let cs = self.header.cluster_size();
        let mut buf = [0u8; SMALL];
        let mut pos = 0u64;
        while pos < bytes {
            let n = (bytes - pos).min(SMALL as u64) as usize;
            self.read_clamped(l1_offset + pos, &mut buf[..n])?;
            for e in buf[..n].chunks_exact(8) {
                let entry = be64(e, 0);
                if entry == 0 {
                    continue;
                }
                if entry & L1E_RESERVED_MASK != 0 {
                    report(&Finding::L1Reserved { entry });
                    res.corruptions += 1;
                }
                let l2 = entry & L1E_OFFSET_MASK;
                self.inc(c, res, l2, cs, report);
                if l2 & (cs - 1) != 0 {
                    report(&Finding::L2TableUnaligned { offset: l2 });
                    res.corruptions += 1;
                }
                self.count_l2(c, res, l2, frag_info, repair, report)?;
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// QEMU's `check_refcounts_l2`.
    fn count_l2(
        &mut self,
        c: &mut Counts<'_>,
        res: &mut CheckResult,
        l2_offset: u64,
        frag_info: bool,
        repair: Repair,
        report: Report<'_>,
    ) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let es = h.l2_entry_size() as usize;
        let sub = h.extended_l2();
        let data_file = h.incompatible(Incompatible::ExternalDataFile);
        let x = 62 - (h.cluster_bits - 8);
        let mut next_contiguous = 0u64;
        if l2_offset >= self.file_size {
            // Reads as zeros (as in QEMU): no entry.
            return Ok(());
        }
        let mut buf = [0u8; BUF];
        let chunk = (BUF as u64).min(cs);
        let mut pos = 0u64;
        while pos < cs {
            self.read_clamped(l2_offset + pos, &mut buf[..chunk as usize])?;
            for i in 0..chunk as usize / es {
                let mut entry = be64(&buf, i * es);
                let bitmap = if sub { be64(&buf, i * es + 8) } else { 0 };
                let index = (pos as usize / es + i) as u64;
                if entry & OFLAG_COMPRESSED != 0 {
                    let offset = entry & ((1u64 << x) - 1);
                    if entry & OFLAG_COPIED != 0 {
                        report(&Finding::CompressedCopied { offset });
                        entry &= !OFLAG_COPIED;
                        res.corruptions += 1;
                    }
                    if data_file {
                        report(&Finding::CompressedWithDataFile { index, entry });
                        res.corruptions += 1;
                        continue;
                    }
                    if bitmap != 0 {
                        report(&Finding::CompressedBitmap { index, entry });
                        res.corruptions += 1;
                        continue;
                    }
                    let sectors = ((entry >> x) & ((1u64 << (h.cluster_bits - 8)) - 1)) + 1;
                    let len = sectors * 512 - (offset & 511);
                    self.inc(c, res, offset, len, report);
                    if frag_info {
                        res.allocated_clusters += 1;
                        res.compressed_clusters += 1;
                        res.fragmented_clusters += 1;
                    }
                    continue;
                }
                if entry & L2E_RESERVED_MASK != 0 {
                    report(&Finding::L2Reserved { entry });
                    res.corruptions += 1;
                }
                let offset = entry & L2E_OFFSET_MASK;
                let zero = entry & OFLAG_ZERO != 0 && !sub;
                let normal = offset != 0 || (data_file && entry & OFLAG_COPIED != 0);
                if zero && !normal {
                    continue;
                }
                if !normal {
                    if bitmap & BITMAP_ALL_ALLOC != 0 {
                        report(&Finding::UnallocatedBitmap);
                        res.corruptions += 1;
                    }
                    continue;
                }
                if (bitmap >> 32) & bitmap != 0 {
                    report(&Finding::SubclusterBitmap { offset });
                    res.corruptions += 1;
                }
                if offset & (cs - 1) != 0 {
                    res.corruptions += 1;
                    let has_data = if sub { bitmap & BITMAP_ALL_ALLOC != 0 } else { entry & OFLAG_ZERO == 0 };
                    if has_data {
                        report(&Finding::DataUnaligned { offset });
                    } else {
                        let fixing = repair == Repair::All;
                        report(&Finding::PreallocUnaligned { offset, repairing: fixing });
                        if fixing {
                            let at = l2_offset + pos + (i * es) as u64;
                            if let Some(what) = self.overlaps_metadata(at, es as u64)? {
                                return Err(Error::MetadataOverlap { what, host_offset: at, len: es as u64 });
                            }
                            // QEMU's fix_l2_entry_by_zero: a plain zero cluster (allocated
                            // subclusters become zero ones).
                            let new = if sub { 0 } else { OFLAG_ZERO };
                            buf[i * es..i * es + 8].copy_from_slice(&new.to_be_bytes());
                            if sub {
                                let zeros = (bitmap | bitmap << 32) & !BITMAP_ALL_ALLOC;
                                buf[i * es + 8..i * es + 16].copy_from_slice(&zeros.to_be_bytes());
                            }
                            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                            write_aligned(io, at, &buf[i * es..(i + 1) * es]).map_err(Error::Io)?;
                            io.flush().map_err(Error::Io)?;
                            res.corruptions -= 1;
                            res.corruptions_fixed += 1;
                            continue;
                        }
                    }
                }
                if frag_info {
                    res.allocated_clusters += 1;
                    if next_contiguous != 0 && offset != next_contiguous {
                        res.fragmented_clusters += 1;
                    }
                    next_contiguous = offset.wrapping_add(cs);
                }
                if !data_file {
                    self.inc(c, res, offset, cs, report);
                }
            }
            pos += chunk;
        }
        Ok(())
    }

    /// QEMU's `qcow2_check_bitmaps_refcounts`: the directory, each bitmap's table and data.
    fn count_bitmaps(
        &mut self,
        c: &mut Counts<'_>,
        res: &mut CheckResult,
        b: BitmapsExt,
        report: Report<'_>,
    ) -> Result<(), Error<I::Error>> {
        let cs = self.header.cluster_size();
        let dir = b.bitmap_directory_offset;
        let dir_len = b.bitmap_directory_size;
        self.inc(c, res, dir, dir_len, report);
        let bad = Error::CheckFailed { what: "bitmap directory" };
        let mut pos = 0u64;
        for _ in 0..b.nb_bitmaps {
            let mut e = [0u8; 24];
            if pos + 24 > dir_len {
                res.corruptions += 1;
                return Err(bad);
            }
            self.read_clamped(dir + pos, &mut e)?;
            let table = be64(&e, 0);
            let table_size = u64::from(be32(&e, 8));
            let name_len = u64::from(u16::from_be_bytes([e[18], e[19]]));
            let extra = u64::from(be32(&e, 20));
            pos = (pos + 24 + extra + name_len).next_multiple_of(8);
            self.inc(c, res, table, table_size * 8, report);
            let mut buf = [0u8; SMALL];
            let mut at = 0u64;
            while at < table_size * 8 && table.saturating_add(at) < self.file_size {
                let n = (table_size * 8 - at).min(SMALL as u64) as usize;
                self.read_clamped(table + at, &mut buf[..n])?;
                for w in buf[..n].chunks_exact(8) {
                    let entry = be64(w, 0);
                    let off = entry & BME_OFFSET_MASK;
                    let invalid = entry & BME_RESERVED_MASK != 0
                        || (off != 0 && (entry & BME_ALL_ONES != 0 || off & (cs - 1) != 0));
                    if invalid {
                        report(&Finding::BitmapEntry { entry });
                        res.corruptions += 1;
                        continue;
                    }
                    if off != 0 {
                        self.inc(c, res, off, cs, report);
                    }
                }
                at += n as u64;
            }
        }
        Ok(())
    }

    /// QEMU's `check_refblocks`: every refcount block counted, and each must be counted once.
    fn check_refblocks(
        &mut self,
        c: &mut Counts<'_>,
        res: &mut CheckResult,
        repair: Repair,
        rebuild: &mut bool,
        report: Report<'_>,
    ) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let rt = h.refcount_table_offset;
        let entries = u64::from(h.refcount_table_clusters) << (h.cluster_bits - 3);
        let mut buf = [0u8; SMALL];
        let mut pos = 0u64;
        while pos < entries * 8 {
            let n = (entries * 8 - pos).min(SMALL as u64) as usize;
            self.read_clamped(rt + pos, &mut buf[..n])?;
            for (k, e) in buf[..n].chunks_exact(8).enumerate() {
                let index = pos / 8 + k as u64;
                let raw = be64(e, 0);
                let offset = raw & REFT_OFFSET_MASK;
                let cluster = offset >> h.cluster_bits;
                if raw & REFT_RESERVED_MASK != 0 {
                    report(&Finding::ReftableReserved { index });
                    res.corruptions += 1;
                    *rebuild = true;
                    continue;
                }
                if offset & (cs - 1) != 0 {
                    report(&Finding::RefblockUnaligned { index });
                    res.corruptions += 1;
                    *rebuild = true;
                    continue;
                }
                if offset != 0 && cluster >= c.range() {
                    // QEMU grows the file to hold the block (-r all); a rebuild does instead.
                    report(&Finding::RefblockOutside { index });
                    res.corruptions += 1;
                    *rebuild |= repair == Repair::All;
                    continue;
                }
                if offset != 0 {
                    self.inc(c, res, offset, cs, report);
                    let refcount = c.get(cluster);
                    if refcount != 1 {
                        report(&Finding::RefblockRefcount { index, refcount });
                        res.corruptions += 1;
                        *rebuild = true;
                    }
                }
            }
            pos += n as u64;
        }
        Ok(())
    }

    // ---- comparing ----

    /// The refcount table entry `index` (0 past the table).
    fn reftable_entry(&mut self, index: u64) -> Result<u64, Error<I::Error>> {
        let h = self.header;
        let entries = u64::from(h.refcount_table_clusters) << (h.cluster_bits - 3);
        if index >= entries {
            return Ok(0);
        }
        let mut e = [0u8; 8];
        self.read_clamped(h.refcount_table_offset + index * 8, &mut e)?;
        Ok(be64(&e, 0))
    }

    /// QEMU's `compare_refcounts`, one refcount chunk at a time; with `fix`, leaks (and, with
    /// [`Repair::All`], refcounts too low but not 0) are repaired: one write per changed chunk.
    fn compare(
        &mut self,
        c: &Counts<'_>,
        res: &mut CheckResult,
        fix: Repair,
        rebuild: &mut bool,
        highest: &mut u64,
        report: Report<'_>,
    ) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let order = h.refcount_order;
        let bb = h.cluster_bits + 3 - order;
        let range = c.range();
        let chunk = (BUF as u64).min(cs);
        let per_chunk = (chunk * 8) >> order;
        let mut buf = [0u8; BUF];
        *highest = 0;
        let mut block_index = 0u64;
        while block_index << bb < range {
            let first = block_index << bb;
            let end = (first + (1 << bb)).min(range);
            let raw = self.reftable_entry(block_index)?;
            let block = raw & REFT_OFFSET_MASK;
            if block & (cs - 1) != 0 {
                for cluster in first..end {
                    report(&Finding::RefcountUnreadable { cluster });
                    res.check_errors += 1;
                }
                block_index += 1;
                continue;
            }
            let mut at = first;
            while at < end {
                let chunk_first = at;
                let chunk_end = (at + per_chunk).min(end);
                let byte = ((chunk_first - first) << order) / 8;
                if block != 0 {
                    self.read_clamped(block + byte, &mut buf[..chunk as usize])?;
                } else {
                    buf.fill(0);
                }
                let mut changed = false;
                for cluster in chunk_first..chunk_end {
                    let (b, shift) = refcount_pos(order, cluster - first);
                    let w = (b - byte) as usize;
                    let on_disk = if block != 0 { get_refcount(&buf, w, shift, order) } else { 0 };
                    let counted = c.get(cluster);
                    if on_disk > 0 || counted > 0 {
                        *highest = cluster;
                    }
                    if on_disk == counted {
                        continue;
                    }
                    let fixing = if on_disk == 0 {
                        *rebuild = true;
                        false
                    } else if on_disk > counted {
                        fix != Repair::None
                    } else {
                        fix == Repair::All
                    };
                    report(&Finding::Refcount { cluster, on_disk, counted, repairing: fixing });
                    if fixing {
                        set_refcount(&mut buf, w, shift, order, counted);
                        changed = true;
                        if on_disk > counted {
                            res.leaks_fixed += 1;
                        } else {
                            res.corruptions_fixed += 1;
                        }
                    } else if on_disk < counted {
                        res.corruptions += 1;
                    } else {
                        res.leaks += 1;
                    }
                }
                if changed {
                    // The chunk lies inside the file (a block past it reads 0: rebuild).
                    let n = (chunk_end - chunk_first).saturating_mul(1 << order).div_ceil(8) as usize;
                    let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                    write_aligned(io, block + byte, &buf[..n.max(1)]).map_err(Error::Io)?;
                }
                at = chunk_end;
            }
            block_index += 1;
        }
        if fix != Repair::None {
            self.io.as_mut().ok_or(Error::NotOpen)?.flush().map_err(Error::Io)?;
        }
        Ok(())
    }

    /// The on-disk refcount of `cluster`; `None` when its block offset is unaligned.
    fn on_disk_refcount(&mut self, lk: &mut Lookup, cluster: u64) -> Result<Option<u64>, Error<I::Error>> {
        let h = self.header;
        let order = h.refcount_order;
        let bb = h.cluster_bits + 3 - order;
        let index = cluster >> bb;
        if lk.rt.0 != index {
            lk.rt = (index, self.reftable_entry(index)?);
        }
        let block = lk.rt.1 & REFT_OFFSET_MASK;
        if block == 0 {
            return Ok(Some(0));
        }
        if block & (h.cluster_size() - 1) != 0 {
            return Ok(None);
        }
        let (byte, shift) = refcount_pos(order, cluster & ((1 << bb) - 1));
        let at = block + byte / BUF as u64 * BUF as u64;
        if lk.chunk_at != at {
            lk.chunk_at = u64::MAX;
            self.read_clamped(at, &mut lk.buf)?;
            lk.chunk_at = at;
        }
        Ok(Some(get_refcount(&lk.buf, (byte % BUF as u64) as usize, shift, order)))
    }

    /// QEMU's `check_oflag_copied`: COPIED of the active L1 and L2 entries against the on-disk
    /// refcounts (repaired with [`Repair::All`], or [`Repair::Leaks`] when nothing else is
    /// wrong).
    fn check_copied(&mut self, res: &mut CheckResult, fix: Repair, report: Report<'_>) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let es = h.l2_entry_size() as usize;
        let data_file = h.incompatible(Incompatible::ExternalDataFile);
        let repair = match fix {
            Repair::All => true,
            Repair::Leaks => res.check_errors == 0 && res.corruptions == 0 && res.leaks == 0,
            Repair::None => false,
        };
        let mut lk = Lookup { rt: (u64::MAX, 0), chunk_at: u64::MAX, buf: [0; BUF] };
        let bytes = u64::from(h.l1_size) * 8;
        let mut l1buf = [0u8; SMALL];
        let mut l2buf = [0u8; BUF];
        let chunk = (BUF as u64).min(cs);
        let mut pos = 0u64;
        while pos < bytes {
            let n = (bytes - pos).min(SMALL as u64) as usize;
            self.read_clamped(h.l1_table_offset + pos, &mut l1buf[..n])?;
            for k in 0..n / 8 {
                let l1_index = pos / 8 + k as u64;
                let l1_entry = be64(&l1buf, k * 8);
                let l2 = l1_entry & L1E_OFFSET_MASK;
                if l2 == 0 {
                    continue;
                }
                let Some(refcount) = self.on_disk_refcount(&mut lk, l2 >> h.cluster_bits)? else {
                    continue;
                };
                if (refcount == 1) != (l1_entry & OFLAG_COPIED != 0) {
                    res.corruptions += 1;
                    report(&Finding::CopiedL2 { l1_index, l1_entry, refcount, repairing: repair });
                    if repair {
                        let new = if refcount == 1 { l1_entry | OFLAG_COPIED } else { l1_entry & !OFLAG_COPIED };
                        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                        write_aligned(io, h.l1_table_offset + l1_index * 8, &new.to_be_bytes()).map_err(Error::Io)?;
                        res.corruptions -= 1;
                        res.corruptions_fixed += 1;
                    }
                }
                let mut at = 0u64;
                while at < cs {
                    self.read_clamped(l2 + at, &mut l2buf[..chunk as usize])?;
                    let mut dirty = 0u64;
                    for i in 0..chunk as usize / es {
                        let entry = be64(&l2buf, i * es);
                        let offset = entry & L2E_OFFSET_MASK;
                        if entry & OFLAG_COMPRESSED != 0 {
                            continue;
                        }
                        let normal = offset != 0 || (data_file && entry & OFLAG_COPIED != 0);
                        if !normal {
                            continue;
                        }
                        let refcount = if data_file {
                            1
                        } else {
                            match self.on_disk_refcount(&mut lk, offset >> h.cluster_bits)? {
                                Some(r) => r,
                                None => continue,
                            }
                        };
                        if (refcount == 1) != (entry & OFLAG_COPIED != 0) {
                            res.corruptions += 1;
                            report(&Finding::CopiedData { l2_entry: entry, refcount, repairing: repair });
                            if repair {
                                let new = if refcount == 1 { entry | OFLAG_COPIED } else { entry & !OFLAG_COPIED };
                                l2buf[i * es..i * es + 8].copy_from_slice(&new.to_be_bytes());
                                dirty += 1;
                            }
                        }
                    }
                    if dirty > 0 {
                        // QEMU's overlap check (the active L2 tables aside): the check fails.
                        if let Some(what) = self.overlaps_metadata(l2, cs)? {
                            return Err(Error::MetadataOverlap { what, host_offset: l2, len: cs });
                        }
                        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
                        write_aligned(io, l2 + at, &l2buf[..chunk as usize]).map_err(Error::Io)?;
                        res.corruptions -= dirty;
                        res.corruptions_fixed += dirty;
                    }
                    at += chunk;
                }
            }
            pos += n as u64;
        }
        if repair {
            self.io.as_mut().ok_or(Error::NotOpen)?.flush().map_err(Error::Io)?;
        }
        Ok(())
    }

    /// QEMU's `qcow2_check_metadata_overlap` for a repair write of `len` bytes at `start`
    /// (active L2 tables aside): the header, the active L1 table, the refcount table and
    /// blocks, the snapshot table and the snapshots' L1 tables.
    fn overlaps_metadata(&mut self, start: u64, len: u64) -> Result<Option<&'static str>, Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        if start < cs {
            return Ok(Some("qcow2_header"));
        }
        let first = start & !(cs - 1);
        let end = start.saturating_add(len).next_multiple_of(cs);
        let hits = |off: u64, n: u64| n != 0 && off < end && first < off.saturating_add(n);
        if hits(h.l1_table_offset, u64::from(h.l1_size) * 8) {
            return Ok(Some("active L1 table"));
        }
        let rt_entries = u64::from(h.refcount_table_clusters) << (h.cluster_bits - 3);
        if hits(h.refcount_table_offset, rt_entries * 8) {
            return Ok(Some("refcount table"));
        }
        let mut offset = h.snapshots_offset;
        let mut table_len = 0u64;
        for index in 0..h.nb_snapshots {
            let s = self.read_snapshot_entry(index, offset)?;
            offset = offset.saturating_add(s.entry_len);
            table_len = table_len.saturating_add(s.entry_len);
            if hits(s.l1_table_offset, u64::from(s.l1_size) * 8) {
                return Ok(Some("inactive L1 table"));
            }
        }
        if hits(h.snapshots_offset, table_len) {
            return Ok(Some("snapshot table"));
        }
        let mut buf = [0u8; SMALL];
        let mut pos = 0u64;
        while pos < rt_entries * 8 {
            let n = (rt_entries * 8 - pos).min(SMALL as u64) as usize;
            self.read_clamped(h.refcount_table_offset + pos, &mut buf[..n])?;
            if buf[..n].chunks_exact(8).any(|e| {
                let b = be64(e, 0) & REFT_OFFSET_MASK;
                b != 0 && hits(b, cs)
            }) {
                return Ok(Some("refcount block"));
            }
            pos += n as u64;
        }
        Ok(None)
    }

    // ---- rebuilding ----

    /// QEMU's `rebuild_refcount_structure`: refcount blocks (slices of the counted entries)
    /// and a table written to unreferenced clusters, flushed, then the header switched
    /// (12 bytes at offset 48, flushed).
    fn rebuild(&mut self, c: &mut Counts<'_>, table: &mut [u8]) -> Result<(), Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        table.fill(0);
        let mut entries = 0u64;
        let range = c.range();
        let grown = self.write_refblocks(c, table, &mut entries, 0, range)?;
        debug_assert!(grown || range == 0);
        let (table_at, table_clusters) = loop {
            let table_clusters = (entries * 8).div_ceil(cs).max(1);
            let mut first = 0u64;
            let start =
                c.alloc(table_clusters, &mut first).ok_or(Error::ImageFull { host_offset: c.cap << h.cluster_bits })?;
            let grown = self.write_refblocks(c, table, &mut entries, start, start + table_clusters)?;
            if !grown {
                break (start << h.cluster_bits, table_clusters);
            }
            // The table needs more room: give this place back (the blocks that counted it
            // already on disk then hold leaks, repaired after the switch).
            for k in start..start + table_clusters {
                c.set(k, 0);
            }
        };
        // The table: the entries held, then zeros to its end.
        let held = (entries * 8).min(table.len() as u64) as usize;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        write_aligned(io, table_at, &table[..held]).map_err(Error::Io)?;
        let total = table_clusters * cs;
        if (held as u64) < total {
            write_zeros(io, table_at + held as u64, total - held as u64).map_err(Error::Io)?;
        }
        io.flush().map_err(Error::Io)?;
        let mut field = [0u8; 12];
        field[..8].copy_from_slice(&table_at.to_be_bytes());
        field[8..].copy_from_slice(&(table_clusters as u32).to_be_bytes());
        write_aligned(io, 48, &field).map_err(Error::Io)?;
        io.flush().map_err(Error::Io)?;
        self.header.refcount_table_offset = table_at;
        self.header.refcount_table_clusters = table_clusters as u32;
        Ok(())
    }

    /// QEMU's `rebuild_refcounts_write_refblocks`: for each block range from `first` to `end`
    /// holding counted clusters, a block (allocated at or after the range's start if new)
    /// written whole from the counted entries. Returns whether the table grew.
    fn write_refblocks(
        &mut self,
        c: &mut Counts<'_>,
        table: &mut [u8],
        entries: &mut u64,
        first: u64,
        end: u64,
    ) -> Result<bool, Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let cb = h.cluster_bits;
        let bb = cb + 3 - h.refcount_order;
        let full = Error::ImageFull { host_offset: c.cap << cb };
        let mut first_free = 0u64;
        let mut grown = false;
        let mut end = end;
        let mut cluster = first;
        while cluster < end {
            if c.get(cluster) == 0 {
                cluster += 1;
                continue;
            }
            let index = cluster >> bb;
            let start = index << bb;
            let slot = (index * 8) as usize;
            if slot + 8 > table.len() {
                return Err(full);
            }
            let existing = be64(table, slot);
            let block = if index < *entries && existing != 0 {
                existing
            } else {
                first_free = first_free.max(start);
                let b = c.alloc(1, &mut first_free).ok_or(Error::ImageFull { host_offset: c.cap << cb })?;
                if b >= end {
                    end = b + 1;
                }
                if *entries <= index {
                    *entries = ((index + 1) * 8).next_multiple_of(cs) / 8;
                    grown = true;
                }
                table[slot..slot + 8].copy_from_slice(&(b << cb).to_be_bytes());
                b << cb
            };
            // The block: bytes index * cs.. of the counted entries (zeros past them).
            let from = (index * cs) as usize;
            let held = c.mem.len().saturating_sub(from).min(cs as usize);
            let io = self.io.as_mut().ok_or(Error::NotOpen)?;
            if held > 0 {
                write_aligned(io, block, &c.mem[from..from + held]).map_err(Error::Io)?;
            }
            if (held as u64) < cs {
                write_zeros(io, block + held as u64, cs - held as u64).map_err(Error::Io)?;
            }
            cluster = start + (1 << bb);
        }
        Ok(grown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_follows_the_file_not_the_header() {
        // 64 KiB clusters, 16-bit refcounts, a 1 GiB file: 16384 clusters, 2 bytes each.
        let l = layout(16, 4, 1 << 30).unwrap();
        assert!(l.cap >= 16384 && l.cap < 16384 + 8);
        assert_eq!(l.count_bytes as u64, (l.cap * 16).div_ceil(64) * 8);
        assert_eq!(l.table_bytes, 8);
        // 512-byte clusters, 64-bit refcounts: 8 bytes a cluster, a block per 64 clusters.
        let l = layout(9, 6, 512 * 1000).unwrap();
        assert!(l.cap > 1000 + 16);
        assert_eq!(l.table_bytes as u64, l.cap.div_ceil(64) * 8);
        // An empty file still has room for one block and a table.
        let l = layout(16, 4, 0).unwrap();
        assert!(l.cap >= 2);
    }
}
