//! Allocation map of a chain, like `qemu-img map`: which guest ranges hold data, read as
//! zero, are compressed or unallocated, at which depth and host offset.
//!
//! The rules follow QEMU's block status: an unallocated range is looked up in the backing
//! layer (depth + 1); past the end of a shorter backing, or in the bottom layer, it is "not
//! present, reads as zero" at that depth. Host offsets are reported only where QEMU reports
//! them: unencrypted layers' (sub)clusters that have one; raw layers map 1:1.
//!
//! ```
//! use qluks::io::MemIo;
//! use qluks::qcow2::backing::{Chain, NoBacking};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut image = doc_support::qcow2_image();
//! // `image`: 1 MiB, 4 KiB clusters; cluster 0 holds data, cluster 1 is a zero cluster.
//! let mut chain: Chain<MemIo<'_>, 4, 1> = Chain::open(MemIo::new(&mut image), &mut NoBacking)?;
//! let mut map = chain.extents(0);
//!
//! let data = map.next().expect("an extent")?;
//! assert_eq!((data.start, data.length, data.depth), (0, 4096, 0));
//! assert!(data.data() && data.offset() == Some(0x4000)); // host offset in the file
//!
//! let zero = map.next().expect("an extent")?;
//! assert!(zero.present() && zero.zero() && zero.start == 4096);
//!
//! let rest = map.next().expect("an extent")?; // unallocated: reads as zero
//! assert!(!rest.present() && rest.zero() && rest.start + rest.length == 1 << 20);
//! assert!(map.next().is_none());
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

use super::backing::{Chain, Layer};
use super::error::Error;
use super::l2_entry::Mapping;
use crate::io::BlockIo;

/// One stretch of the guest disk with a uniform status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// Layer it comes from (0 = top).
    pub depth: usize,
    /// What that layer says about it (host offsets of the first byte).
    pub mapping: Mapping,
    /// Whether that layer is encrypted (its host offsets are not reported).
    pub encrypted: bool,
    /// Whether the layer is raw (all data, host offset = guest offset).
    pub raw: bool,
}

impl Extent {
    /// Allocated at `depth` (data or zero flag): QEMU's `present`.
    pub fn present(&self) -> bool {
        !matches!(self.mapping, Mapping::Unallocated { .. })
    }

    /// Reads as zero without reading data.
    pub fn zero(&self) -> bool {
        matches!(self.mapping, Mapping::Zero { .. } | Mapping::Unallocated { .. })
    }

    /// Holds data (stored or compressed).
    pub fn data(&self) -> bool {
        matches!(self.mapping, Mapping::Data { .. } | Mapping::Compressed { .. })
    }

    /// Compressed.
    pub fn compressed(&self) -> bool {
        matches!(self.mapping, Mapping::Compressed { .. })
    }

    /// Host offset of the first byte, where QEMU would report one.
    pub fn offset(&self) -> Option<u64> {
        if self.encrypted {
            return None;
        }
        // QEMU reports the host offset of every (sub)cluster with one: stored data, preallocated
        // zeros, and unallocated subclusters of an allocated cluster (extended L2).
        match self.mapping {
            Mapping::Data { host_offset } => Some(host_offset),
            Mapping::Zero { host_offset } | Mapping::Unallocated { host_offset } => host_offset,
            Mapping::Compressed { .. } => None,
        }
    }

    /// Whether `next` continues this extent with the same status (and contiguous offsets):
    /// `qemu-img map`'s merge rule.
    pub fn continues_with(&self, next: &Extent) -> bool {
        self.start + self.length == next.start
            && self.depth == next.depth
            && self.present() == next.present()
            && self.zero() == next.zero()
            && self.data() == next.data()
            && self.compressed() == next.compressed()
            && match (self.offset(), next.offset()) {
                (None, None) => true,
                (Some(a), Some(b)) => a + self.length == b,
                _ => false,
            }
    }
}

impl<I: BlockIo, const N: usize, const DEPTH: usize> Chain<I, N, DEPTH> {
    /// The status of the longest uniform run (at most `max_len` bytes) at `offset`.
    pub fn extent_at(&mut self, offset: u64, max_len: u64) -> Result<Extent, Error<I::Error>> {
        let size = self.size();
        if offset >= size {
            return Err(Error::OutOfRange { offset, len: 0, size });
        }
        let mut len = max_len.min(size - offset);
        let layers = self.layers_mut();
        let mut depth = 0;
        loop {
            let has_below = layers.get(depth + 1).is_some_and(Option::is_some);
            let layer = layers[depth].as_mut().expect("depth stays within the chain");
            let (mapping, run, encrypted, raw) = match layer {
                Layer::Raw { .. } => (Mapping::Data { host_offset: offset }, len, false, true),
                Layer::Qcow2(q) => {
                    let (m, run) = q.mapping_run(offset, len)?;
                    (m, run, q.is_encrypted(), false)
                }
            };
            len = run;
            if let Mapping::Unallocated { .. } = mapping {
                if has_below {
                    let below_size = layers[depth + 1].as_ref().map_or(0, Layer::size);
                    if offset < below_size {
                        len = len.min(below_size - offset);
                        depth += 1;
                        continue;
                    }
                }
            }
            return Ok(Extent { start: offset, length: len, depth, mapping, encrypted, raw });
        }
    }

    /// The allocation map from `start` to the end, merged like `qemu-img map`: extents with
    /// the same status join when their reported offsets are contiguous, so for encrypted
    /// layers (no offsets reported) an extent's `mapping` describes only its first run. Use
    /// [`Chain::extent_at`] for runs with contiguous host offsets.
    pub fn extents(&mut self, start: u64) -> Extents<'_, I, N, DEPTH> {
        Extents { chain: self, next: start, pending: None, failed: false }
    }
}

/// Iterator of merged extents (see [`Chain::extents`]).
pub struct Extents<'a, I: BlockIo, const N: usize, const DEPTH: usize> {
    chain: &'a mut Chain<I, N, DEPTH>,
    next: u64,
    pending: Option<Extent>,
    failed: bool,
}

/// Upper bound of one lookup step (keeps each step's work small on huge unallocated disks).
const STEP: u64 = 1 << 40;

impl<I: BlockIo, const N: usize, const DEPTH: usize> Iterator for Extents<'_, I, N, DEPTH> {
    type Item = Result<Extent, Error<I::Error>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let size = self.chain.size();
        while self.next < size {
            let e = match self.chain.extent_at(self.next, STEP) {
                Ok(e) => e,
                Err(err) => {
                    self.failed = true;
                    return Some(Err(err));
                }
            };
            self.next += e.length;
            match &mut self.pending {
                Some(p) if p.continues_with(&e) => p.length += e.length,
                Some(p) => {
                    let out = *p;
                    self.pending = Some(e);
                    return Some(Ok(out));
                }
                None => self.pending = Some(e),
            }
        }
        self.pending.take().map(Ok)
    }
}
