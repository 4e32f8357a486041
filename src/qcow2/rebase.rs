//! Rebase: point an overlay at another backing file, as `qemu-img rebase` does.
//!
//! Safe ([`rebase`]): wherever the overlay allocates nothing and the old backing chain and the
//! new one read differently, the old backing's data is written into the overlay (whole
//! overlay clusters that differ, as QEMU 8.2+ does to avoid partial copy on write; the
//! untouched parts of a new cluster copy on write from the old backing, which is what the
//! guest saw there). Then the overlay is flushed, and only then is the header rewritten with
//! the new name and format ([`Qcow2::set_backing_file`]). Unsafe (`-u`): the header only.
//! An empty name removes the backing file (safe: everything the old backing provides is
//! copied).
//!
//! # Crash consistency
//!
//! Until the header write the overlay still names the old backing file, and every cluster
//! written holds what the old chain read there: the chain reads the same. The header is one
//! write of cluster 0's used prefix; after it, the overlay over the new backing reads what it
//! read over the old one. At worst clusters leak (the write engine's order).
//!
//! # Memory
//!
//! [`rebase_scratch_len`]: two overlay clusters (old and new backing data) plus the largest
//! of the overlay's write scratch ([`Chain::write_scratch_len`]), the new chain's compressed
//! scratch and the header area (the overlay's cluster size, at most [`HEADER_AREA`]): 5 x the
//! overlay's cluster size when the layers share it (320 KiB at 64 KiB clusters). More scratch
//! makes larger batches (both buffers grow, in whole clusters).

use super::backing::{read_below, Chain, Layer};
use super::error::Error;
use super::extension::EXT_BACKING_FORMAT;
use super::header::MAX_BACKING_NAME;
use super::l2_entry::Mapping;
use super::table_write::write_aligned;
use super::{be32, Qcow2, HEADER_AREA};
use crate::io::BlockIo;

/// What [`rebase`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RebaseStats {
    /// Guest bytes compared (unallocated in the overlay).
    pub compared_bytes: u64,
    /// Guest bytes copied from the old backing into the overlay.
    pub copied_bytes: u64,
}

/// Scratch bytes [`rebase`] needs at least (see the module docs).
pub fn rebase_scratch_len<I: BlockIo, const N: usize, const D: usize, const M: usize, const E: usize>(
    chain: &Chain<I, N, D>,
    new_backing: Option<&Chain<I, M, E>>,
) -> usize {
    let cs = top_cluster_size(chain) as usize;
    let new = new_backing.map_or(0, |c| c.compressed_scratch_len());
    2 * cs + chain.write_scratch_len().max(new).max(cs.min(HEADER_AREA))
}

fn top_cluster_size<I: BlockIo, const N: usize, const D: usize>(chain: &Chain<I, N, D>) -> u64 {
    match chain.top() {
        Some(Layer::Qcow2(q)) => q.cluster_size(),
        _ => 0,
    }
}

/// Safe rebase of the overlay at the top of `chain` (opened writable, with its old backing
/// layers) onto `new_backing` (the new backing file opened as its own chain through the
/// caller's resolver policy, e.g. with [`Shifted`](super::commit::Shifted); `None` = no
/// backing: reads as zeros), then names `name` (empty: no backing file) with `format` in the
/// header. `progress(done, total)` is called after each batch.
///
/// Afterwards the chain still holds the old backing layers below the overlay: reopen it to
/// read through the new backing.
pub fn rebase<I: BlockIo, const N: usize, const D: usize, const M: usize, const E: usize>(
    chain: &mut Chain<I, N, D>,
    new_backing: Option<&mut Chain<I, M, E>>,
    name: &[u8],
    format: Option<&[u8]>,
    scratch: &mut [u8],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebaseStats, Error<I::Error>> {
    rebase_impl(chain, new_backing, None, name, format, scratch, progress)
}

/// [`rebase`] onto a layer of the old chain itself: layer `depth` (1 = the current backing;
/// the caller knows it is the same file, e.g. by its identity), named `name`. Ranges that no
/// layer above it allocates read through to it already and are skipped without reading (QEMU
/// does the same); the rest is compared and copied as by [`rebase`].
pub fn rebase_within<I: BlockIo, const N: usize, const D: usize>(
    chain: &mut Chain<I, N, D>,
    depth: usize,
    name: &[u8],
    format: Option<&[u8]>,
    scratch: &mut [u8],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebaseStats, Error<I::Error>> {
    if depth == 0 || depth >= chain.layers().count() {
        return Err(Error::NotOpen);
    }
    rebase_impl::<I, N, D, N, 1>(chain, None, Some(depth), name, format, scratch, progress)
}

fn rebase_impl<I: BlockIo, const N: usize, const D: usize, const M: usize, const E: usize>(
    chain: &mut Chain<I, N, D>,
    mut new_backing: Option<&mut Chain<I, M, E>>,
    within: Option<usize>,
    name: &[u8],
    format: Option<&[u8]>,
    scratch: &mut [u8],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebaseStats, Error<I::Error>> {
    let needed = rebase_scratch_len(chain, new_backing.as_deref());
    if scratch.len() < needed {
        return Err(Error::ScratchTooSmall { needed, got: scratch.len() });
    }
    let (top, below) = match chain.layers_mut().split_first_mut() {
        Some((Some(Layer::Qcow2(q)), below)) => (q, below),
        Some((Some(Layer::Raw { .. }), _)) => {
            return Err(Error::WriteUnsupported { feature: "a raw top layer (only qcow2 is rebased)" })
        }
        _ => return Err(Error::NotOpen),
    };
    check_name(name, format)?;
    top.prepare_write()?;
    let cs = top.cluster_size();
    let fixed = needed - 2 * cs as usize;
    let half = ((scratch.len() - fixed) / 2) as u64 / cs * cs;
    let (old, rest) = scratch.split_at_mut(half as usize);
    let (new, rest) = rest.split_at_mut(half as usize);
    let size = top.size();
    let mut stats = RebaseStats::default();
    let mut off = 0u64;
    while off < size {
        let (mapping, len) = top.mapping(off, size - off)?;
        if !matches!(mapping, Mapping::Unallocated { .. }) {
            off += len;
            continue;
        }
        if let Some(depth) = within {
            let skip = passes_through(&mut below[..depth - 1], off, len)?;
            if skip > 0 {
                off += skip;
                progress(off, size);
                continue;
            }
        }
        // A batch: at most `half` bytes, ending on a cluster boundary when it can.
        let end = (off + len).min(off - off % cs + half);
        let n = (end - off) as usize;
        read_below(off, &mut old[..n], below, rest)?;
        match (within, new_backing.as_deref_mut()) {
            (Some(depth), _) => read_below(off, &mut new[..n], &mut below[depth - 1..], rest)?,
            (None, Some(c)) => read_below(off, &mut new[..n], c.layers_mut(), rest)?,
            (None, None) => new[..n].fill(0),
        }
        stats.compared_bytes += n as u64;
        // Runs of differing clusters (clipped to the batch), each written in one call.
        let mut pos = off;
        let mut dirty: Option<u64> = None;
        while pos < end {
            let next = (pos - pos % cs + cs).min(end);
            let (a, b) = ((pos - off) as usize, (next - off) as usize);
            let differs = old[a..b] != new[a..b];
            match (differs, dirty) {
                (true, None) => dirty = Some(pos),
                (false, Some(start)) => {
                    write_old(top, below, off, start, pos, old, rest)?;
                    stats.copied_bytes += pos - start;
                    dirty = None;
                }
                _ => {}
            }
            pos = next;
        }
        if let Some(start) = dirty {
            write_old(top, below, off, start, end, old, rest)?;
            stats.copied_bytes += end - start;
        }
        off = end;
        progress(off, size);
    }
    top.flush()?;
    top.set_backing_file(name, format, rest)?;
    Ok(stats)
}

/// How many bytes from `off` (at most `max`) no layer of `layers` allocates, within each
/// layer's size (past a shorter layer's end the chain reads zeros: not passing through).
fn passes_through<I: BlockIo, const N: usize>(
    layers: &mut [Option<Layer<I, N>>],
    off: u64,
    max: u64,
) -> Result<u64, Error<I::Error>> {
    let mut len = max;
    for layer in layers.iter_mut() {
        match layer {
            Some(Layer::Qcow2(q)) if off < q.size() => {
                let (mapping, l) = q.mapping(off, len.min(q.size() - off))?;
                if !matches!(mapping, Mapping::Unallocated { .. }) {
                    return Ok(0);
                }
                len = len.min(l);
            }
            _ => return Ok(0),
        }
    }
    Ok(len)
}

fn write_old<I: BlockIo, const N: usize>(
    top: &mut Qcow2<I, I, N>,
    below: &mut [Option<Layer<I, N>>],
    batch: u64,
    start: u64,
    end: u64,
    old: &[u8],
    scratch: &mut [u8],
) -> Result<(), Error<I::Error>> {
    let data = &old[(start - batch) as usize..(end - batch) as usize];
    top.write_layered(start, data, below, scratch)
}

fn check_name<E>(name: &[u8], format: Option<&[u8]>) -> Result<(), Error<E>> {
    if name.len() > MAX_BACKING_NAME as usize {
        return Err(Error::BackingNameTooLong { needed: name.len(), room: MAX_BACKING_NAME as usize });
    }
    if let Some(f) = format {
        if f.len() > super::extension::MAX_FORMAT_NAME {
            return Err(Error::BackingNameTooLong { needed: f.len(), room: super::extension::MAX_FORMAT_NAME });
        }
    }
    Ok(())
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Names `name` (empty: none) as this image's backing file, with `format` (QEMU's backing
    /// format extension; dropped with the name), as QEMU's `qcow2_update_header` does: the
    /// header and its other extensions are kept, the extension area is rewritten with the new
    /// format first, then the other extensions, the end marker, then the name, in cluster 0 (refused with
    /// [`Error::BackingNameTooLong`] when it would not fit in the cluster, or in
    /// [`HEADER_AREA`] bytes). Pending writes are flushed first; the header is written in one
    /// write and flushed, then read back. No data is copied: this alone is `rebase -u`.
    /// `scratch`: the cluster size, at most [`HEADER_AREA`] bytes.
    pub fn set_backing_file(
        &mut self,
        name: &[u8],
        format: Option<&[u8]>,
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        if self.io.is_none() {
            return Err(Error::NotOpen);
        }
        check_name(name, format)?;
        self.flush()?;
        let room = (self.cluster_size() as usize).min(HEADER_AREA);
        if scratch.len() < room {
            return Err(Error::ScratchTooSmall { needed: room, got: scratch.len() });
        }
        let area = &mut scratch[..room];
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let n = (room as u64).min(self.file_size) as usize;
        crate::io::read_aligned(io, 0, &mut area[..n]).map_err(Error::Io)?;
        area[n..].fill(0);
        // The extensions (validated at open), compacted without the backing format.
        let start = self.header.header_length as usize;
        let (mut r, mut w) = (start, start);
        while r + 8 <= room {
            let ty = be32(area, r);
            let len = be32(area, r + 4) as usize;
            if ty == 0 {
                r += 8;
                break;
            }
            let total = 8usize.saturating_add(pad8(len));
            if r.saturating_add(total) > room {
                break;
            }
            if ty != EXT_BACKING_FORMAT {
                area.copy_within(r..r + total, w);
                w += total;
            }
            r += total;
        }
        let old_name_end =
            (self.header.backing_file_offset as usize).saturating_add(self.header.backing_file_size as usize);
        let old_end = r.max(if self.header.backing_file_offset != 0 { old_name_end.min(room) } else { 0 });
        let format = format.filter(|_| !name.is_empty());
        let ext_len = format.map_or(0, |f| 8 + pad8(f.len()));
        let needed = w + ext_len + 8 + name.len();
        if needed > room {
            return Err(Error::BackingNameTooLong { needed, room });
        }
        if let Some(f) = format {
            // First, as QEMU orders them: the other extensions move up.
            area.copy_within(start..w, start + ext_len);
            let e = &mut area[start..start + ext_len];
            e.fill(0);
            e[..4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            e[4..8].copy_from_slice(&(f.len() as u32).to_be_bytes());
            e[8..8 + f.len()].copy_from_slice(f);
            w += ext_len;
        }
        area[w..w + 8].fill(0);
        w += 8;
        let (name_offset, name_len) = if name.is_empty() { (0u64, 0u32) } else { (w as u64, name.len() as u32) };
        area[w..w + name.len()].copy_from_slice(name);
        w += name.len();
        let end = w.max(old_end);
        area[w..end].fill(0);
        area[8..16].copy_from_slice(&name_offset.to_be_bytes());
        area[16..20].copy_from_slice(&name_len.to_be_bytes());
        let len = end.div_ceil(512).saturating_mul(512).min(room);
        write_aligned(io, 0, &area[..len]).map_err(Error::Io)?;
        io.flush().map_err(Error::Io)?;
        self.file_size = self.file_size.max(len as u64);
        let file_size = super::read_header_into(io, &mut self.header, &mut self.extensions)?;
        self.file_size = self.file_size.max(file_size);
        Ok(())
    }
}
