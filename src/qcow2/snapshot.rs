//! Internal snapshots (formats.md §4): listing the snapshot table and reading the disk as it
//! was when a snapshot was taken (its own L1 table and size).
//!
//! Entries are read one at a time through a small fixed buffer; names longer than
//! [`NAME_CAP`] bytes are kept truncated (with their full length reported).
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::qcow2::Qcow2Image;
//!
//! # fn main() -> Result<(), qluks::qcow2::Error<qluks::io::MemIoError>> {
//! # let mut image = doc_support::qcow2_image();
//! // `image` has one internal snapshot, "before" (`qemu-img snapshot -c before`).
//! let mut disk = Qcow2Image::open(MemIo::new(&mut image), None)?;
//! for snapshot in disk.snapshots() {
//!     let snapshot = snapshot?;
//!     assert_eq!((snapshot.id.as_bytes(), snapshot.name.as_bytes()), (&b"1"[..], &b"before"[..]));
//!     assert_eq!(snapshot.disk_size, Some(1 << 20));
//! }
//! let mut now = [0u8; 512];
//! disk.read_at(0, &mut now)?;
//!
//! let before = disk.find_snapshot(b"before")?; // by name or id
//! disk.select_snapshot(&before)?; // reads now see the disk as it was
//! let mut then = [0u8; 512];
//! disk.read_at(0, &mut then)?;
//! assert_eq!((now[0], then[0]), (0x11, 0x22));
//! disk.select_active();
//! # Ok(())
//! # }
//! # mod doc_support {
//! #     fn put(b: &mut [u8], off: usize, v: &[u8]) { b[off..off + v.len()].copy_from_slice(v) }
//! #     /// A 1 MiB qcow2 v3 image, 4 KiB clusters: guest cluster 0 holds 0x11, cluster 1 is a
//! #     /// zero cluster, the rest unallocated; snapshot "before" saw 0x22 in cluster 0.
//! #     pub fn qcow2_image() -> Vec<u8> {
//! #         let mut img = vec![0u8; 9 * 4096];
//! #         put(&mut img, 0, b"QFI\xfb");
//! #         put(&mut img, 4, &3u32.to_be_bytes());
//! #         put(&mut img, 20, &12u32.to_be_bytes());
//! #         put(&mut img, 24, &(1u64 << 20).to_be_bytes());
//! #         put(&mut img, 36, &1u32.to_be_bytes()); // l1_size
//! #         put(&mut img, 40, &0x2000u64.to_be_bytes()); // L1
//! #         put(&mut img, 48, &0x1000u64.to_be_bytes()); // refcount table
//! #         put(&mut img, 56, &1u32.to_be_bytes());
//! #         put(&mut img, 60, &1u32.to_be_bytes()); // nb_snapshots
//! #         put(&mut img, 64, &0x8000u64.to_be_bytes()); // snapshot table
//! #         put(&mut img, 96, &4u32.to_be_bytes());
//! #         put(&mut img, 100, &104u32.to_be_bytes());
//! #         let copied = 1u64 << 63;
//! #         put(&mut img, 0x2000, &(copied | 0x3000).to_be_bytes()); // L1[0] -> L2
//! #         put(&mut img, 0x3000, &(copied | 0x4000).to_be_bytes()); // L2[0] -> data
//! #         put(&mut img, 0x3008, &1u64.to_be_bytes()); // L2[1]: zero cluster
//! #         img[0x4000..0x5000].fill(0x11);
//! #         put(&mut img, 0x5000, &0x6000u64.to_be_bytes()); // snapshot L1[0] -> L2
//! #         put(&mut img, 0x6000, &0x7000u64.to_be_bytes()); // snapshot L2[0] -> data
//! #         img[0x7000..0x8000].fill(0x22);
//! #         put(&mut img, 0x8000, &0x5000u64.to_be_bytes()); // snapshot: L1 offset
//! #         put(&mut img, 0x8008, &1u32.to_be_bytes()); // l1_size
//! #         put(&mut img, 0x800c, &1u16.to_be_bytes()); // id length
//! #         put(&mut img, 0x800e, &6u16.to_be_bytes()); // name length
//! #         put(&mut img, 0x8024, &16u32.to_be_bytes()); // extra data: vm state, disk size
//! #         put(&mut img, 0x8030, &(1u64 << 20).to_be_bytes());
//! #         put(&mut img, 0x8038, b"1before");
//! #         img
//! #     }
//! # }
//! ```

use super::error::{Corruption, Error};
use super::header::{check_table, l1_entries_for, Table, MAX_L1_BYTES};
use super::{be16, be32, be64, Qcow2};
use crate::io::BlockIo;

/// QEMU's limit on a snapshot entry's extra data.
pub const MAX_EXTRA: u32 = 1024;
/// QEMU's limit on the whole snapshot table.
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
/// Bytes of an id or name kept.
pub const NAME_CAP: usize = 128;

/// A snapshot id or name (first [`NAME_CAP`] bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotName {
    bytes: heapless::Vec<u8, NAME_CAP>,
    /// The length on disk (more than [`NAME_CAP`] when truncated).
    len: u16,
}

impl SnapshotName {
    /// The stored bytes (truncated to [`NAME_CAP`] when [`SnapshotName::is_truncated`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Full length on disk.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the name is longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        usize::from(self.len) > NAME_CAP
    }
}

impl core::fmt::Debug for SnapshotName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", super::UntrustedName(self.as_bytes()))
    }
}

impl core::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", super::UntrustedName(self.as_bytes()))
    }
}

/// One snapshot table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Position in the table.
    pub index: u32,
    /// Its L1 table.
    pub l1_table_offset: u64,
    /// Entries of its L1 table.
    pub l1_size: u32,
    /// Unique id (QEMU numbers them "1", "2", ...).
    pub id: SnapshotName,
    /// Name.
    pub name: SnapshotName,
    /// Creation time, seconds since the epoch.
    pub date_sec: u32,
    /// Creation time, nanoseconds part.
    pub date_nsec: u32,
    /// Guest clock at the snapshot, nanoseconds.
    pub vm_clock_nsec: u64,
    /// Size of the saved VM state (0 = disk-only snapshot).
    pub vm_state_size: u64,
    /// Virtual disk size at the snapshot (from the extra data; v2 entries may lack it).
    pub disk_size: Option<u64>,
    /// Instruction count (icount) at the snapshot, if recorded.
    pub icount: Option<u64>,
    /// Bytes of the entry in the table (for walking it).
    pub(crate) entry_len: u64,
}

fn name_from(raw: &[u8], full_len: u16) -> SnapshotName {
    let keep = raw.len().min(NAME_CAP);
    SnapshotName { bytes: heapless::Vec::from_slice(&raw[..keep]).unwrap_or_default(), len: full_len }
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Reads snapshot entry `index` located at `offset` in the table.
    pub(crate) fn read_snapshot_entry(&mut self, index: u32, offset: u64) -> Result<Snapshot, Error<I::Error>> {
        let bad = |reason| Error::Corrupt(Corruption::BadSnapshot { index, reason });
        let table_end = self.header.snapshots_offset + MAX_TABLE_BYTES;
        let mut fixed = [0u8; 40];
        self.read_meta(offset, &mut fixed, table_end).map_err(|e| e.unwrap_or(bad("entry past the table limit")))?;
        let extra_len = be32(&fixed, 36);
        if extra_len > MAX_EXTRA {
            return Err(bad("extra data larger than 1024 bytes"));
        }
        let id_len = be16(&fixed, 12);
        let name_len = be16(&fixed, 14);
        let mut extra = [0u8; 24];
        let keep = (extra_len as usize).min(24);
        self.read_meta(offset + 40, &mut extra[..keep], table_end)
            .map_err(|e| e.unwrap_or(bad("entry past the table limit")))?;
        let mut raw = [0u8; NAME_CAP];
        let id_at = offset + 40 + u64::from(extra_len);
        let k = usize::from(id_len).min(NAME_CAP);
        self.read_meta(id_at, &mut raw[..k], table_end).map_err(|e| e.unwrap_or(bad("id past the table limit")))?;
        let id = name_from(&raw[..k], id_len);
        let name_at = id_at + u64::from(id_len);
        let k = usize::from(name_len).min(NAME_CAP);
        self.read_meta(name_at, &mut raw[..k], table_end).map_err(|e| e.unwrap_or(bad("name past the table limit")))?;
        let name = name_from(&raw[..k], name_len);
        let entry_len = (40 + u64::from(extra_len) + u64::from(id_len) + u64::from(name_len)).next_multiple_of(8);
        let vm_state_small = u64::from(be32(&fixed, 32));
        Ok(Snapshot {
            index,
            l1_table_offset: be64(&fixed, 0),
            l1_size: be32(&fixed, 8),
            id,
            name,
            date_sec: be32(&fixed, 16),
            date_nsec: be32(&fixed, 20),
            vm_clock_nsec: be64(&fixed, 24),
            vm_state_size: if extra_len >= 8 { be64(&extra, 0) } else { vm_state_small },
            disk_size: (extra_len >= 16).then(|| be64(&extra, 8)),
            icount: (extra_len >= 24).then(|| be64(&extra, 16)).filter(|&c| c != u64::MAX),
            entry_len,
        })
    }

    /// Reads metadata bytes that must lie before `limit` and inside the file (`Err(None)`
    /// when they do not, for the caller to describe).
    fn read_meta(&mut self, offset: u64, buf: &mut [u8], limit: u64) -> Result<(), Option<Error<I::Error>>> {
        let end = offset.checked_add(buf.len() as u64).ok_or(None)?;
        if end > limit || end > self.file_size {
            return Err(None);
        }
        if !buf.is_empty() {
            let io = self.io.as_mut().ok_or(None)?;
            crate::io::read_aligned(io, offset, buf).map_err(|e| Some(Error::Io(e)))?;
        }
        Ok(())
    }

    /// The snapshots, in table order.
    pub fn snapshots(&mut self) -> Snapshots<'_, I, D, N> {
        let offset = self.header.snapshots_offset;
        Snapshots { image: self, index: 0, offset }
    }

    /// The first snapshot whose id is `id_or_name`, else the first whose name is (QEMU's
    /// lookup order for `-l` / `snapshot.name`).
    pub fn find_snapshot(&mut self, id_or_name: &[u8]) -> Result<Snapshot, Error<I::Error>> {
        let mut by_name = None;
        for s in self.snapshots() {
            let s = s?;
            if !s.id.is_truncated() && s.id.as_bytes() == id_or_name {
                return Ok(s);
            }
            if by_name.is_none() && !s.name.is_truncated() && s.name.as_bytes() == id_or_name {
                by_name = Some(s);
            }
        }
        by_name.ok_or(Error::NoSuchSnapshot)
    }

    /// Reads the disk as it was at `snapshot` from now on: its L1 table and its disk size
    /// (what `qemu-img snapshot -a` restores; `qemu-img convert -l` instead keeps the current
    /// size and reads zeros past the snapshot's). The snapshot's L1 table is validated first.
    pub fn select_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error<I::Error>> {
        let bad = |reason| Error::Corrupt(Corruption::BadSnapshot { index: snapshot.index, reason });
        let size = snapshot.disk_size.unwrap_or(self.header.size);
        let l1_bytes = u64::from(snapshot.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(bad("L1 table larger than 32 MiB"));
        }
        let needed = l1_entries_for(&self.header, size).map_err(|_| bad("disk size too large"))?;
        if u64::from(snapshot.l1_size) < needed {
            return Err(bad("L1 table too small for the disk size"));
        }
        check_table(&self.header, Table::L1, snapshot.l1_table_offset, l1_bytes)
            .map_err(|_| bad("L1 table offset invalid"))?;
        if snapshot.l1_table_offset.saturating_add(l1_bytes) > self.file_size {
            return Err(bad("L1 table past the end of the file"));
        }
        self.l1_table_offset = snapshot.l1_table_offset;
        self.l1_size = snapshot.l1_size;
        self.size = size;
        self.snapshot = Some(snapshot.index);
        self.cache.clear();
        Ok(())
    }

    /// Back to the active disk.
    pub fn select_active(&mut self) {
        self.l1_table_offset = self.header.l1_table_offset;
        self.l1_size = self.header.l1_size;
        self.size = self.header.size;
        self.snapshot = None;
        self.cache.clear();
    }
}

/// Iterator over the snapshot table (see [`Qcow2::snapshots`]).
pub struct Snapshots<'a, I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> {
    image: &'a mut Qcow2<I, D, N>,
    index: u32,
    offset: u64,
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Iterator for Snapshots<'_, I, D, N> {
    type Item = Result<Snapshot, Error<I::Error>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.image.header.nb_snapshots {
            return None;
        }
        match self.image.read_snapshot_entry(self.index, self.offset) {
            Ok(s) => {
                self.index += 1;
                self.offset += s.entry_len;
                Some(Ok(s))
            }
            Err(e) => {
                // Stop after an error: the next entry's position is unknown.
                self.index = u32::MAX;
                Some(Err(e))
            }
        }
    }
}
