//! The data side of writing (qcow2-write.md §1-§3, §7).
//!
//! Guest range -> per-cluster decision (in place when the entry is NORMAL or ZERO-with-offset
//! and COPIED and its L2 table is unshared; otherwise a new cluster) -> contiguous runs (new
//! clusters from one [`Qcow2::alloc_clusters`] call, or existing clusters at contiguous host
//! offsets): one batch encrypt (IV = the *new* host offset for LUKS, the guest offset for legacy
//! AES) and one `write_at` per run, chunked by the caller's scratch. The untouched parts of a
//! new cluster are copied on write from what the guest reads there before the write (old data
//! decrypted, a compressed cluster, zeros, or the backing chain), and go out in the same write
//! as the data when they border it (QEMU's `merge_cow`). Then the L2 entries (after
//! [`Qcow2::data_barrier`] when copied bytes moved), then the replaced clusters are released.
//!
//! # Scratch memory
//!
//! The write entry points take caller scratch memory of at least
//! [`Qcow2::write_scratch_len`] bytes: one cluster of bounce buffer (copy on write and
//! encryption) plus two clusters for reading a compressed cluster being copied, that is **3 x
//! the cluster size** (1.5 KiB at 512-byte clusters, 192 KiB at 64 KiB, 6 MiB at 2 MiB). Through
//! a [`Chain`], [`Chain::write_scratch_len`] adds what compressed clusters of the backing layers
//! need (3 x their cluster size). Scratch beyond the minimum makes the bounce buffer larger,
//! which makes encrypted runs larger batches (one encrypt and one write per bounce buffer).
//! Unencrypted writes that need no copy on write go straight from the caller's buffer.

use super::backing::{Chain, Layer};
use super::crypt::{Crypt, SECTOR};
use super::error::{Corruption, Error};
use super::l2_entry::{classify, Mapping, L2E_OFFSET_MASK, OFLAG_COPIED, OFLAG_ZERO, SUBCLUSTERS};
use super::Qcow2;
use crate::io::{BlockIo, MAX_BLOCK_SIZE};

/// Extended L2 bitmap: every subcluster reads as zero.
const ALL_ZERO: u64 = 0xffff_ffff_0000_0000;
/// Extended L2 bitmap: every subcluster allocated.
const ALL_ALLOC: u64 = 0x0000_0000_ffff_ffff;

/// Most clusters one run covers (bounds the look-ahead when fewer can be allocated).
const MAX_RUN_CLUSTERS: u64 = 1024;

/// Where the bytes written come from.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// The caller's data (the guest bytes from the write's offset).
    Bytes(&'a [u8]),
    /// Zeros (write-zeroes written as data).
    Zeros,
}

impl Src<'_> {
    /// Copies the source bytes `from..from + out.len()` into `out`.
    fn copy_to(self, from: usize, out: &mut [u8]) {
        match self {
            Src::Bytes(b) => out.copy_from_slice(&b[from..from + out.len()]),
            Src::Zeros => out.fill(0),
        }
    }
}

/// What dropping the old cluster of an entry takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// Nothing (unallocated, zero without offset).
    None,
    /// One reference to this host cluster.
    Cluster(u64),
    /// The clusters these compressed bytes touch.
    Compressed(u64, u64),
}

/// The decision for one guest cluster of a write.
#[derive(Clone, Copy)]
struct Plan {
    /// The host cluster written in place, or `None` for a new cluster.
    in_place: Option<u64>,
    /// The bytes of the cluster written: `lo..hi` (data plus copy on write).
    lo: u64,
    hi: u64,
    /// The cluster is compressed now: copy on write reads it whole.
    compressed: bool,
    old_entry: u64,
    old_bitmap: u64,
    /// The entry after an in-place write (a new cluster's is `host | COPIED`).
    entry_in_place: u64,
    /// The bitmap after the write (extended L2; 0 otherwise).
    new_bitmap: u64,
    /// What replacing the cluster releases.
    release: Release,
}

/// The subcluster bits `first..=last` (both below 32).
fn sc_bits(first: u64, last: u64) -> u32 {
    (((1u64 << (last + 1)) - 1) & !((1u64 << first) - 1)) as u32
}

fn align_down(x: u64, a: u64) -> u64 {
    x - x % a
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Scratch bytes the write entry points need at least: 3 x the cluster size (one cluster
    /// of bounce buffer for copy on write and encryption, two for reading a compressed cluster
    /// that is copied). 1.5 KiB at 512-byte clusters, 192 KiB at 64 KiB clusters, 6 MiB at
    /// 2 MiB clusters; plus `io_align() - 1` bytes on a device that wants aligned buffers
    /// ([`BlockIo::io_align`]). More scratch makes larger batches (see the module docs).
    pub fn write_scratch_len(&self) -> usize {
        3 * self.cluster_size() as usize
    }

    /// Writes `data` at guest `offset` of this image alone (unallocated ranges of partially
    /// written clusters read as zeros: no backing file; see [`Chain::write_at`]). An image that
    /// names a backing file is refused with [`Error::BackingRequired`] when a copy on write
    /// would need the backing file's bytes.
    pub fn write_at(&mut self, offset: u64, data: &[u8], scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.write_layered::<N>(offset, data, &mut [], scratch)
    }

    /// Makes `len` guest bytes at `offset` read as zero (zero flag on v3, subcluster zero bits
    /// with extended L2; `unmap` also frees the clusters; unaligned ends are written as zeros).
    pub fn write_zeroes(
        &mut self,
        offset: u64,
        len: u64,
        unmap: bool,
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        self.write_zeroes_layered::<N>(offset, len, unmap, &mut [], scratch)
    }

    /// Discards the whole clusters inside `offset..offset + len` (they then read as zero, or
    /// from the backing file on v2) and releases their space. A partial cluster at either end
    /// is left alone, except the last cluster of the disk when the range reaches its end.
    /// Version 2 images with a backing file are refused ([`Error::WriteUnsupported`]), as QEMU.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        self.check_range(offset, len)?;
        if self.header.version < 3 && self.extensions.backing_file.is_some() {
            return Err(Error::DiscardUnsupported);
        }
        let cs = self.cluster_size();
        let end = offset + len;
        let first = align_up(offset, cs);
        let last = if end == self.size { align_up(end, cs) } else { align_down(end, cs) };
        let mut gc = first;
        while gc < last {
            self.discard_cluster(gc)?;
            gc += cs;
        }
        Ok(())
    }

    /// The chain-aware writer: `below` fills the untouched parts of new clusters.
    pub(crate) fn write_layered<const M: usize>(
        &mut self,
        offset: u64,
        data: &[u8],
        below: &mut [Option<Layer<I, M>>],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        self.check_range(offset, data.len() as u64)?;
        let (bounce, rs) = self.split_scratch(below, scratch)?;
        self.write_src(offset, data.len() as u64, Src::Bytes(data), below, bounce, rs)
    }

    /// [`Qcow2::write_zeroes`] with the backing chain `below` for the unaligned ends.
    pub(crate) fn write_zeroes_layered<const M: usize>(
        &mut self,
        offset: u64,
        len: u64,
        unmap: bool,
        below: &mut [Option<Layer<I, M>>],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        self.prepare_write()?;
        self.check_range(offset, len)?;
        let (bounce, rs) = self.split_scratch(below, scratch)?;
        if len == 0 {
            return Ok(());
        }
        let h = self.header;
        let cs = h.cluster_size();
        let v3 = h.version >= 3;
        if !v3 && self.extensions.backing_file.is_some() {
            // No zero flag, and discarding would show the backing file: zeros as data.
            return self.write_src(offset, len, Src::Zeros, below, bounce, rs);
        }
        let gran = if h.extended_l2() { cs / u64::from(SUBCLUSTERS) } else { cs };
        let end = offset + len;
        let a = align_up(offset, gran);
        // The end of the disk counts as aligned (QEMU zeroes the whole last granule).
        let b = if end == self.size { align_up(end, gran) } else { align_down(end, gran) };
        if a >= b {
            return self.write_src(offset, len, Src::Zeros, below, bounce, rs);
        }
        if offset < a {
            self.write_src(offset, a - offset, Src::Zeros, below, bounce, rs)?;
        }
        let mut gc = align_down(a, cs);
        while gc < b {
            let x = a.max(gc) - gc;
            let y = b.min(gc + cs) - gc;
            let whole = x == 0 && gc + y >= (gc + cs).min(self.size);
            if !v3 {
                // Version 2 without a backing file: a discarded cluster reads as zeros.
                self.discard_cluster(gc)?;
            } else if whole {
                self.zero_cluster(gc, unmap)?;
            } else if !self.zero_subclusters(gc, x / gran, y.div_ceil(gran))? {
                self.write_src(gc + x, y - x, Src::Zeros, below, bounce, rs)?;
            }
            gc += cs;
        }
        if b < end {
            self.write_src(b, end - b, Src::Zeros, below, bounce, rs)?;
        }
        Ok(())
    }

    /// Refuses ranges past the virtual size (no overflow). (What the engine cannot write at
    /// all, e.g. an external data file, [`Qcow2::prepare_write`] refuses first.)
    fn check_range(&self, offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        let size = self.size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange { offset, len: usize::try_from(len).unwrap_or(usize::MAX), size });
        }
        Ok(())
    }

    /// Bytes of scratch kept for the read path while copying on write: a compressed cluster of
    /// this image read whole (two clusters of input), or one of a backing layer read in part.
    fn read_reserve<const M: usize>(&self, below: &[Option<Layer<I, M>>]) -> usize {
        let own = 2 * self.cluster_size() as usize;
        below
            .iter()
            .filter_map(|l| match l {
                Some(Layer::Qcow2(q)) => Some(q.compressed_scratch_len()),
                _ => None,
            })
            .fold(own, usize::max)
    }

    /// Splits the caller's scratch into the bounce buffer (a whole number of clusters, at
    /// least one, starting at an address the device's [`BlockIo::io_align`] accepts) and the
    /// read path's scratch.
    fn split_scratch<'s, const M: usize>(
        &self,
        below: &[Option<Layer<I, M>>],
        scratch: &'s mut [u8],
    ) -> Result<ScratchParts<'s>, Error<I::Error>> {
        let cs = self.cluster_size() as usize;
        let io_align = self.io.as_ref().ok_or(Error::NotOpen)?.io_align();
        let pad = match io_align.is_power_of_two() && io_align <= MAX_BLOCK_SIZE {
            true => (io_align - scratch.as_ptr() as usize % io_align) % io_align,
            false => 0,
        };
        let reserve = self.read_reserve(below);
        let needed = pad + cs + reserve;
        if scratch.len() < needed {
            return Err(Error::ScratchTooSmall { needed, got: scratch.len() });
        }
        let bounce = (scratch.len() - pad - reserve) / cs * cs;
        Ok(scratch[pad..].split_at_mut(bounce))
    }

    /// The alignment of every byte range written: whole encryption sectors, and whole device
    /// blocks when the device asks for them.
    fn write_align(&self) -> Result<u64, Error<I::Error>> {
        let blk = self.io.as_ref().ok_or(Error::NotOpen)?.block_size();
        let blk = if blk.is_power_of_two() && blk <= MAX_BLOCK_SIZE { blk as u64 } else { 1 };
        let align = blk.max(if self.crypt.is_encrypted() { SECTOR } else { 1 });
        if align > self.cluster_size() {
            return Err(Error::WriteUnsupported { feature: "a device block size larger than the cluster size" });
        }
        Ok(align)
    }

    /// Writes `len` bytes of `src` at guest `offset` (range checked), run by run.
    fn write_src<const M: usize>(
        &mut self,
        offset: u64,
        len: u64,
        src: Src<'_>,
        below: &mut [Option<Layer<I, M>>],
        bounce: &mut [u8],
        rs: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        if len == 0 {
            return Ok(());
        }
        if matches!(self.crypt, Crypt::Locked) {
            return Err(Error::PassphraseRequired);
        }
        let align = self.write_align()?;
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            pos = self.write_run(pos, offset, end, src, align, below, bounce, rs)?;
        }
        Ok(())
    }

    /// Decides how guest cluster `gc` is written when the write covers bytes `dlo..dhi` of it.
    fn plan(&mut self, gc: u64, dlo: u64, dhi: u64, align: u64) -> Result<Plan, Error<I::Error>> {
        let h = self.header;
        let cs = h.cluster_size();
        let (entry, bitmap, l1_copied) = self.l2_entry_of(gc)?;
        let (mapping, _) = classify(&h, false, entry, bitmap, 0)?;
        let (compressed, release) = match mapping {
            Mapping::Compressed { host_offset, compressed_len } => {
                (true, Release::Compressed(host_offset, compressed_len))
            }
            _ if entry & L2E_OFFSET_MASK != 0 => (false, Release::Cluster(entry & L2E_OFFSET_MASK)),
            _ => (false, Release::None),
        };
        let host = if compressed { 0 } else { entry & L2E_OFFSET_MASK };
        let in_place = !compressed && host != 0 && entry & OFLAG_COPIED != 0 && l1_copied;
        let mut plan = Plan {
            in_place: in_place.then_some(host),
            lo: 0,
            hi: cs,
            compressed,
            old_entry: entry,
            old_bitmap: bitmap,
            entry_in_place: entry,
            new_bitmap: 0,
            release,
        };
        if !h.extended_l2() {
            if in_place {
                if entry & OFLAG_ZERO != 0 {
                    // Preallocated zero cluster: zeros around the data, the flag cleared.
                    plan.entry_in_place = host | OFLAG_COPIED;
                } else {
                    plan.lo = dlo;
                    plan.hi = dhi;
                }
            }
        } else {
            let sc = cs / u64::from(SUBCLUSTERS);
            let (s0, s1) = (dlo / sc, (dhi - 1) / sc);
            let touched = sc_bits(s0, s1);
            let alloc = bitmap as u32;
            let zero = (bitmap >> 32) as u32;
            let mask = if in_place {
                // Allocated subclusters are overwritten as they are; the touched others get
                // their untouched part copied (zeros or the backing file).
                plan.lo = if alloc & (1 << s0) != 0 { dlo } else { s0 * sc };
                plan.hi = if alloc & (1 << s1) != 0 { dhi } else { (s1 + 1) * sc };
                alloc | touched
            } else if compressed {
                ALL_ALLOC as u32
            } else {
                // A new cluster: the touched subclusters, stretched over the allocated ones
                // (they move with it); unallocated and zero ones outside stay as they are.
                let (mut first, mut last) = (s0, s1);
                if alloc != 0 {
                    first = first.min(u64::from(alloc.trailing_zeros()));
                    last = last.max(u64::from(31 - alloc.leading_zeros()));
                }
                plan.lo = first * sc;
                plan.hi = (last + 1) * sc;
                sc_bits(first, last)
            };
            plan.new_bitmap = (u64::from(zero & !mask) << 32) | u64::from(mask);
        }
        plan.lo = align_down(plan.lo, align);
        plan.hi = align_up(plan.hi, align).min(cs);
        if in_place {
            if host >= self.file_size {
                // Not a cluster of this file: writing there would grow it without bound.
                let file_size = self.file_size;
                return Err(Corruption::DataPastEndOfFile { offset: host, len: cs, file_size }.into());
            }
            self.check_data_overlap(host, cs)?;
        }
        Ok(plan)
    }

    /// Writes the run of clusters that starts at guest `pos` (the write is `offset..end`);
    /// returns where the next run starts.
    #[allow(clippy::too_many_arguments)]
    fn write_run<const M: usize>(
        &mut self,
        pos: u64,
        offset: u64,
        end: u64,
        src: Src<'_>,
        align: u64,
        below: &mut [Option<Layer<I, M>>],
        bounce: &mut [u8],
        rs: &mut [u8],
    ) -> Result<u64, Error<I::Error>> {
        let cs = self.cluster_size();
        let gc0 = align_down(pos, cs);
        let first = self.plan(gc0, pos - gc0, (end - gc0).min(cs), align)?;
        let mut last = first;
        let mut n = 1u64;
        // Whether an in-place cluster after the first needs its entry changed.
        let mut later_changes = false;
        while gc0 + n * cs < end && n < MAX_RUN_CLUSTERS {
            let gc = gc0 + n * cs;
            let p = self.plan(gc, 0, (end - gc).min(cs), align)?;
            let continues = match (first.in_place, p.in_place) {
                (None, None) => true,
                (Some(h0), Some(h)) => h0.checked_add(n * cs) == Some(h),
                _ => false,
            };
            if !continues {
                break;
            }
            later_changes |= (p.entry_in_place, p.new_bitmap) != (p.old_entry, p.old_bitmap);
            last = p;
            n += 1;
        }
        let host0 = match first.in_place {
            Some(h) => h,
            None => {
                let (h, got) = self.alloc_clusters(n)?;
                if got == 0 || got > n || h % cs != 0 {
                    return Err(Error::ImageFull { host_offset: h });
                }
                if got < n {
                    n = got;
                    let gc = gc0 + (n - 1) * cs;
                    last = if n == 1 { first } else { self.plan(gc, 0, (end - gc).min(cs), align)? };
                }
                // Clusters free by refcount are not free when the refcounts are corrupt (a
                // refcount of 0 on the header, a table or an L2 table): as QEMU checks every
                // data write, refuse to write guest data over metadata (the clusters stay
                // allocated, at worst a leak on an image that was corrupt already).
                self.check_data_overlap(h, n * cs)?;
                h
            }
        };
        let gc_last = gc0 + (n - 1) * cs;
        let region = Region {
            host: host0 + first.lo,
            start: gc0 + first.lo,
            end: gc_last + last.hi,
            data_start: pos,
            data_end: end.min(gc0 + n * cs),
            src_base: offset,
            first: (gc0, first.compressed),
            last: (gc_last, last.compressed),
        };
        let cow = match self.write_region(&region, src, below, bounce, rs) {
            Ok(cow) => cow,
            Err(e) => {
                if first.in_place.is_none() {
                    // Never referenced: give them back (best effort; a leak at worst).
                    let _ = self.release_clusters(host0, n);
                }
                return Err(e);
            }
        };
        let changed =
            |p: &Plan| p.in_place.is_none() || (p.entry_in_place, p.new_bitmap) != (p.old_entry, p.old_bitmap);
        if cow && (changed(&first) || changed(&last)) {
            self.data_barrier()?;
        }
        for i in 0..n {
            if first.in_place.is_some() && !later_changes && i > 0 {
                // Overwritten in place, entries unchanged: nothing more to do.
                break;
            }
            let gc = gc0 + i * cs;
            let p = match i {
                0 => first,
                _ if i == n - 1 => last,
                _ => self.plan(gc, 0, cs, align)?,
            };
            let (entry, release) = match first.in_place {
                Some(_) => (p.entry_in_place, Release::None),
                None => ((host0 + i * cs) | OFLAG_COPIED, p.release),
            };
            if (entry, p.new_bitmap) != (p.old_entry, p.old_bitmap) {
                self.set_l2_entry(gc, entry, p.new_bitmap)?;
            }
            self.release(release)?;
        }
        Ok(gc0 + n * cs)
    }

    /// Writes a run's bytes (data and copy on write) to its host clusters, a bounce buffer at
    /// a time (one batch encrypt and one write each), or straight from the caller's buffer
    /// where nothing needs copying or encrypting. Returns whether bytes were copied on write.
    fn write_region<const M: usize>(
        &mut self,
        r: &Region,
        src: Src<'_>,
        below: &mut [Option<Layer<I, M>>],
        bounce: &mut [u8],
        rs: &mut [u8],
    ) -> Result<bool, Error<I::Error>> {
        let cs = self.cluster_size();
        let cow = r.start < r.data_start || r.data_end < r.end;
        let io = self.io.as_ref().ok_or(Error::NotOpen)?;
        let direct_ok = matches!(self.crypt, Crypt::None) && io.block_size() <= 1 && io.io_align() <= 1;
        let bounce_len = bounce.len() as u64;
        let mut a = r.start;
        while a < r.end {
            let fits = r.end - a <= bounce_len;
            if let (true, Src::Bytes(bytes)) = (direct_ok, src) {
                if (!fits || !cow) && a >= r.data_start && a < r.data_end {
                    let stop = if r.data_end < r.end { align_down(r.data_end, cs) } else { r.data_end };
                    if stop > a {
                        let from = (a - r.src_base) as usize;
                        let to = (stop - r.src_base) as usize;
                        self.write_host(r.host + (a - r.start), &bytes[from..to])?;
                        a = stop;
                        continue;
                    }
                }
            }
            let b = if fits { r.end } else { align_down(a + bounce_len, cs).max(align_down(a, cs) + cs).min(r.end) };
            let buf = &mut bounce[..(b - a) as usize];
            self.fill_cow(r, a, b, buf, below, rs)?;
            let x = a.max(r.data_start);
            let y = b.min(r.data_end);
            if x < y {
                src.copy_to((x - r.src_base) as usize, &mut buf[(x - a) as usize..(y - a) as usize]);
            }
            let host = r.host + (a - r.start);
            self.crypt.encrypt(host, a, buf)?;
            self.write_host(host, buf)?;
            a = b;
        }
        Ok(cow)
    }

    /// Fills the copy-on-write parts of the chunk `a..b` of a run into `buf`: what the guest
    /// reads there now. A compressed cluster is read whole into its place (the data is laid
    /// over it afterwards).
    fn fill_cow<const M: usize>(
        &mut self,
        r: &Region,
        a: u64,
        b: u64,
        buf: &mut [u8],
        below: &mut [Option<Layer<I, M>>],
        rs: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let cs = self.cluster_size();
        let mut whole_done = None;
        for (x, y) in [(a, b.min(r.data_start)), (a.max(r.data_end), b)] {
            if x >= y {
                continue;
            }
            let gc = align_down(x, cs);
            let compressed = (gc == r.first.0 && r.first.1) || (gc == r.last.0 && r.last.1);
            if compressed && gc >= a && gc + cs <= b {
                if whole_done != Some(gc) {
                    let at = (gc - a) as usize;
                    self.read_cow(gc, &mut buf[at..at + cs as usize], below, rs)?;
                    whole_done = Some(gc);
                }
            } else {
                self.read_cow(x, &mut buf[(x - a) as usize..(y - a) as usize], below, rs)?;
            }
        }
        Ok(())
    }

    /// Reads what the guest sees at `guest` (zeros past the virtual size), for copy on write.
    fn read_cow<const M: usize>(
        &mut self,
        guest: u64,
        out: &mut [u8],
        below: &mut [Option<Layer<I, M>>],
        rs: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let avail = self.size.saturating_sub(guest).min(out.len() as u64) as usize;
        let (present, past_end) = out.split_at_mut(avail);
        past_end.fill(0);
        if present.is_empty() {
            return Ok(());
        }
        if below.is_empty() && self.extensions.backing_file.is_some() {
            // The image alone would read zeros where its backing file has data.
            let mut done = 0u64;
            while done < avail as u64 {
                let (m, len) = self.mapping_run(guest + done, avail as u64 - done)?;
                if matches!(m, Mapping::Unallocated { .. }) {
                    return Err(Error::BackingRequired { guest_offset: guest + done });
                }
                done += len.max(1);
            }
        }
        self.read_layered(guest, present, below, rs)
    }

    /// Writes guest-data bytes at `host` of the image file.
    fn write_host(&mut self, host: u64, buf: &[u8]) -> Result<(), Error<I::Error>> {
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        io.write_at(host, buf).map_err(Error::Io)?;
        self.note_host_write(host.saturating_add(buf.len() as u64));
        Ok(())
    }

    /// Drops what the old entry of a freed cluster pointed at.
    pub(crate) fn release(&mut self, release: Release) -> Result<(), Error<I::Error>> {
        match release {
            Release::None => Ok(()),
            Release::Cluster(h) => self.release_clusters(h, 1),
            Release::Compressed(h, len) => self.release_compressed(h, len),
        }
    }

    /// The entry, bitmap and what it references (validated) of guest cluster `gc`.
    pub(crate) fn entry_of(&mut self, gc: u64) -> Result<(u64, u64, Release), Error<I::Error>> {
        let (entry, bitmap, _) = self.l2_entry_of(gc)?;
        let (mapping, _) = classify(&self.header, false, entry, bitmap, 0)?;
        let release = match mapping {
            Mapping::Compressed { host_offset, compressed_len } => Release::Compressed(host_offset, compressed_len),
            _ if entry & L2E_OFFSET_MASK != 0 => Release::Cluster(entry & L2E_OFFSET_MASK),
            _ => Release::None,
        };
        Ok((entry, bitmap, release))
    }

    /// Discards guest cluster `gc` (QEMU's `discard_in_l2_slice`, not a full discard).
    fn discard_cluster(&mut self, gc: u64) -> Result<(), Error<I::Error>> {
        let (entry, bitmap, release) = self.entry_of(gc)?;
        let (new_entry, new_bitmap) = if self.extensions.backing_file.is_some() || release != Release::None {
            if self.header.extended_l2() {
                (0, ALL_ZERO)
            } else if self.header.version >= 3 {
                (OFLAG_ZERO, 0)
            } else {
                (0, 0)
            }
        } else {
            (entry, bitmap)
        };
        if (new_entry, new_bitmap) == (entry, bitmap) {
            return Ok(());
        }
        self.set_l2_entry(gc, new_entry, new_bitmap)?;
        self.release(release)
    }

    /// Makes guest cluster `gc` read as zero (v3; QEMU's `zero_in_l2_slice`): the offset is
    /// kept unless `unmap` or the cluster is compressed.
    fn zero_cluster(&mut self, gc: u64, unmap: bool) -> Result<(), Error<I::Error>> {
        let (entry, bitmap, release) = self.entry_of(gc)?;
        let unmap = matches!(release, Release::Compressed(..)) || (unmap && release != Release::None);
        let mut new_entry = if unmap { 0 } else { entry };
        let new_bitmap = if self.header.extended_l2() {
            ALL_ZERO
        } else {
            new_entry |= OFLAG_ZERO;
            0
        };
        if (new_entry, new_bitmap) == (entry, bitmap) {
            return Ok(());
        }
        self.set_l2_entry(gc, new_entry, new_bitmap)?;
        if unmap {
            self.release(release)?;
        }
        Ok(())
    }

    /// Sets the zero bits of subclusters `first..last` of guest cluster `gc` (extended L2);
    /// returns `false` for a compressed cluster, which the caller writes zeros into instead.
    fn zero_subclusters(&mut self, gc: u64, first: u64, last: u64) -> Result<bool, Error<I::Error>> {
        let (entry, bitmap, release) = self.entry_of(gc)?;
        if matches!(release, Release::Compressed(..)) {
            return Ok(false);
        }
        let bits = u64::from(sc_bits(first, last - 1));
        let new_bitmap = (bitmap | (bits << 32)) & !bits;
        if new_bitmap != bitmap {
            self.set_l2_entry(gc, entry, new_bitmap)?;
        }
        Ok(true)
    }
}

/// The bounce buffer and the read path's scratch.
type ScratchParts<'s> = (&'s mut [u8], &'s mut [u8]);

/// The bytes of one run: guest `start..end` at host `host..`, of which `data_start..data_end`
/// come from the source (whose byte 0 is guest `src_base`), the rest copied on write.
struct Region {
    host: u64,
    start: u64,
    end: u64,
    data_start: u64,
    data_end: u64,
    src_base: u64,
    /// First and last guest cluster of the run, and whether each is compressed now.
    first: (u64, bool),
    last: (u64, bool),
}

impl<I: BlockIo, const N: usize, const DEPTH: usize> Chain<I, N, DEPTH> {
    /// Scratch bytes [`Chain::write_at`] needs at least: one cluster of the top layer plus
    /// the larger of two top-layer clusters and [`Qcow2::compressed_scratch_len`] of every
    /// backing layer (3 x the top's cluster size when no backing layer has larger clusters);
    /// 0 when the top layer is not qcow2.
    pub fn write_scratch_len(&self) -> usize {
        let mut layers = self.layers();
        let Some(Layer::Qcow2(top)) = layers.next() else {
            return 0;
        };
        let cs = top.cluster_size() as usize;
        let below = layers
            .filter_map(|l| match l {
                Layer::Qcow2(q) => Some(q.compressed_scratch_len()),
                Layer::Raw { .. } => None,
            })
            .fold(2 * cs, usize::max);
        cs + below
    }

    /// The top layer (qcow2) and the layers below it.
    #[allow(clippy::type_complexity)]
    pub(crate) fn split_top(&mut self) -> Result<(&mut Qcow2<I, I, N>, &mut [Option<Layer<I, N>>]), Error<I::Error>> {
        match self.layers_mut().split_first_mut() {
            Some((Some(Layer::Qcow2(q)), below)) => Ok((q, below)),
            Some((Some(Layer::Raw { .. }), _)) => {
                Err(Error::WriteUnsupported { feature: "a raw top layer (only qcow2 is written)" })
            }
            _ => Err(Error::NotOpen),
        }
    }

    /// Writes guest bytes into the top layer (which must be qcow2); the untouched parts of
    /// newly allocated clusters come from the backing layers. Backing layers never change.
    pub fn write_at(&mut self, offset: u64, data: &[u8], scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        let (top, below) = self.split_top()?;
        top.write_layered(offset, data, below, scratch)
    }

    /// [`Qcow2::write_zeroes`] on the top layer (unaligned ends copy on write from the
    /// backing layers).
    pub fn write_zeroes(
        &mut self,
        offset: u64,
        len: u64,
        unmap: bool,
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let (top, below) = self.split_top()?;
        top.write_zeroes_layered(offset, len, unmap, below, scratch)
    }

    /// [`Qcow2::discard`] on the top layer.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        self.split_top()?.0.discard(offset, len)
    }

    /// [`Qcow2::flush`] on the top layer.
    pub fn flush(&mut self) -> Result<(), Error<I::Error>> {
        self.split_top()?.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::{align_up, sc_bits};

    #[test]
    fn subcluster_masks_cover_first_to_last_inclusive() {
        assert_eq!(sc_bits(0, 0), 1);
        assert_eq!(sc_bits(1, 3), 0b1110);
        assert_eq!(sc_bits(0, 31), u32::MAX);
        assert_eq!(sc_bits(31, 31), 1 << 31);
    }

    #[test]
    fn align_up_saturates_instead_of_overflowing() {
        assert_eq!(align_up(1, 512), 512);
        assert_eq!(align_up(u64::MAX - 3, 512), u64::MAX);
    }
}
