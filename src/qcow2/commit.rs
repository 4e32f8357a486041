//! Commit: copy what an overlay holds into its backing file, then empty the overlay, as
//! `qemu-img commit` does (without `-d`).
//!
//! Every range the overlay allocates (data, decompressed clusters, zero clusters as zero
//! writes) is read from the overlay (decrypted with its key) and written into the base through
//! the base's own write engine: the base is a separate [`Chain`] whose top is the base opened
//! writable with its own passphrase (LUKS: encrypted at the base's new host offsets with the
//! base's key, QEMU's iotest 198), and whose lower layers serve the base's copy on write. A raw
//! base is written in place. Then the base is flushed, and only then is the overlay emptied
//! (every L2 entry cleared, its clusters released: the overlay reads through to the base).
//! A base smaller than the overlay is grown first (a qcow2 base resized, a raw one extended),
//! as QEMU's commit does.
//!
//! # Crash consistency
//!
//! Until the base is flushed, only the base changes, and only in ranges the overlay covers:
//! the chain reads the same. Clearing the overlay's entries happens after the flush, so any
//! entry already cleared reads through to committed data. A crash at any single write leaves
//! at worst leaked clusters (the write engine's order).
//!
//! # Memory
//!
//! [`commit_scratch_len`]: one overlay cluster of copy buffer, the overlay's compressed scratch
//! (3 x its cluster size) and the base's write scratch ([`Chain::write_scratch_len`]: 3 x the
//! base's cluster size; 0 for a raw base). 448 KiB with 64 KiB clusters on both sides; more
//! scratch makes larger batches (the copy buffer grows, in whole clusters).

use super::backing::{BackingRequest, Chain, DataFileRequest, Layer, Opened, Resolver};
use super::error::Error;
use super::l2_entry::Mapping;
use super::table_write::write_aligned;
use super::Qcow2;
use crate::io::BlockIo;

/// What [`commit`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Guest bytes copied (data and decompressed clusters).
    pub data_bytes: u64,
    /// Guest bytes made zero in the base (zero clusters of the overlay).
    pub zero_bytes: u64,
    /// Overlay clusters cleared afterwards (0 with `keep`).
    pub emptied_clusters: u64,
}

/// Scratch bytes [`commit`] needs at least (see the module docs).
pub fn commit_scratch_len<
    I: BlockIo,
    D: BlockIo<Error = I::Error>,
    const N: usize,
    const M: usize,
    const DEPTH: usize,
>(
    overlay: &Qcow2<I, D, N>,
    base: &Chain<I, M, DEPTH>,
) -> usize {
    overlay.cluster_size() as usize + overlay.compressed_scratch_len() + base.write_scratch_len()
}

/// Commits `overlay` (opened with its passphrase, writable unless `keep`) into `base` (the
/// overlay's backing file opened writable as the top of its own chain, with the base's
/// passphrase and the base's backing layers; or one raw layer). With `keep` the overlay is
/// left as it was (`qemu-img commit -d`). `progress(done, total)` is called after each batch.
///
/// The overlay's in-memory state stays valid; `base`'s layers are written (its top) and
/// flushed. Another open handle on the base (e.g. the overlay's own chain) holds stale
/// cached tables afterwards: reopen it.
pub fn commit<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize, const M: usize, const DEPTH: usize>(
    overlay: &mut Qcow2<I, D, N>,
    base: &mut Chain<I, M, DEPTH>,
    keep: bool,
    scratch: &mut [u8],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CommitStats, Error<I::Error>> {
    if overlay.extensions().backing_file.is_none() || base.layers().next().is_none() {
        return Err(Error::CommitWithoutBase);
    }
    let size = overlay.size();
    let needed = commit_scratch_len(overlay, base);
    if scratch.len() < needed {
        return Err(Error::ScratchTooSmall { needed, got: scratch.len() });
    }
    // Refusals (dirty or corrupt bit, snapshot selected, ...) before the base is touched.
    if !keep {
        overlay.prepare_write()?;
    }
    let cs = overlay.cluster_size() as usize;
    let fixed = overlay.compressed_scratch_len() + base.write_scratch_len();
    let buf_len = (scratch.len() - fixed) / cs * cs;
    let (buf, rest) = scratch.split_at_mut(buf_len);
    let (read_scratch, write_scratch) = rest.split_at_mut(overlay.compressed_scratch_len());
    let mut stats = CommitStats::default();
    // A base smaller than the overlay grows first, as QEMU's commit truncates it up.
    if size > base.size() {
        grow_base(base, size, write_scratch)?;
    }

    let mut off = 0u64;
    while off < size {
        let (mapping, len) = overlay.mapping(off, size - off)?;
        match mapping {
            Mapping::Unallocated { .. } => off += len,
            Mapping::Zero { .. } => {
                zero_base(base, off, len, buf, write_scratch)?;
                stats.zero_bytes += len;
                off += len;
            }
            Mapping::Data { .. } | Mapping::Compressed { .. } => {
                let n = len.min(buf.len() as u64) as usize;
                let chunk = &mut buf[..n];
                overlay.read_at_with_scratch(off, chunk, read_scratch)?;
                write_base(base, off, chunk, write_scratch)?;
                stats.data_bytes += n as u64;
                off += n as u64;
            }
        }
        progress(off, size);
    }
    flush_base(base)?;
    if !keep {
        stats.emptied_clusters = make_empty(overlay)?;
        overlay.flush()?;
    }
    Ok(stats)
}

/// Grows the base to `size`: a qcow2 base by a resize (the new area reads as zeros), a raw
/// one by writing its last byte (a file grows with a hole before it, as QEMU's truncate).
fn grow_base<I: BlockIo, const M: usize, const DEPTH: usize>(
    base: &mut Chain<I, M, DEPTH>,
    size: u64,
    scratch: &mut [u8],
) -> Result<(), Error<I::Error>> {
    match base.layers_mut().first_mut() {
        Some(Some(Layer::Raw { io, size: raw_size })) => {
            write_aligned(io, size - 1, &[0]).map_err(Error::Io)?;
            *raw_size = size;
            Ok(())
        }
        _ => base.resize(size, false, scratch),
    }
}

fn write_base<I: BlockIo, const M: usize, const DEPTH: usize>(
    base: &mut Chain<I, M, DEPTH>,
    off: u64,
    data: &[u8],
    scratch: &mut [u8],
) -> Result<(), Error<I::Error>> {
    match base.layers_mut().first_mut() {
        Some(Some(Layer::Raw { io, .. })) => write_aligned(io, off, data).map_err(Error::Io),
        _ => base.write_at(off, data, scratch),
    }
}

fn zero_base<I: BlockIo, const M: usize, const DEPTH: usize>(
    base: &mut Chain<I, M, DEPTH>,
    off: u64,
    len: u64,
    buf: &mut [u8],
    scratch: &mut [u8],
) -> Result<(), Error<I::Error>> {
    match base.layers_mut().first_mut() {
        Some(Some(Layer::Raw { io, .. })) => {
            buf.fill(0);
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                write_aligned(io, off + done, &buf[..n]).map_err(Error::Io)?;
                done += n as u64;
            }
            Ok(())
        }
        _ => base.write_zeroes(off, len, false, scratch),
    }
}

fn flush_base<I: BlockIo, const M: usize, const DEPTH: usize>(
    base: &mut Chain<I, M, DEPTH>,
) -> Result<(), Error<I::Error>> {
    match base.layers_mut().first_mut() {
        Some(Some(Layer::Raw { io, .. })) => io.flush().map_err(Error::Io),
        _ => base.flush(),
    }
}

/// Clears every L2 entry of `q` (QEMU's `qcow2_make_empty`, a full discard: the clusters read
/// through to the backing file again) and releases what they referenced. Returns the number
/// of entries cleared. The write engine orders it: entries written and flushed before the
/// releases.
pub(crate) fn make_empty<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize>(
    q: &mut Qcow2<I, D, N>,
) -> Result<u64, Error<I::Error>> {
    q.prepare_write()?;
    let size = q.size();
    let cs = q.cluster_size();
    let mut cleared = 0;
    let mut off = 0u64;
    while off < size {
        let (mapping, len) = q.mapping(off, size - off)?;
        if let Mapping::Unallocated { host_offset: None } = mapping {
            off += len;
            continue;
        }
        let gc = off - off % cs;
        let (entry, bitmap, release) = q.entry_of(gc)?;
        if (entry, bitmap) != (0, 0) {
            q.set_l2_entry(gc, 0, 0)?;
            q.release(release)?;
            cleared += 1;
        }
        off = gc + cs;
    }
    Ok(cleared)
}

/// A resolver seen from a layer below the top: depths are shifted by `by` (the base of a
/// commit, or the new backing of a rebase, is layer 1 of the overlay's chain: its chain asks
/// for depth 0 and gets the caller's depth-1 passphrase and policy).
pub struct Shifted<'a, R> {
    inner: &'a mut R,
    by: usize,
}

impl<'a, R> Shifted<'a, R> {
    /// `inner` with depths shifted by `by`.
    pub fn new(inner: &'a mut R, by: usize) -> Self {
        Shifted { inner, by }
    }
}

impl<I: BlockIo, R: Resolver<I>> Resolver<I> for Shifted<'_, R> {
    type Error = R::Error;

    fn open_backing(&mut self, request: &BackingRequest<'_>) -> Result<Opened<I>, R::Error> {
        let shifted = BackingRequest { name: request.name, format: request.format, depth: request.depth + self.by };
        self.inner.open_backing(&shifted)
    }

    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        self.inner.passphrase(depth + self.by)
    }

    fn kdf_limits(&mut self, depth: usize) -> crate::luks::KdfLimits {
        self.inner.kdf_limits(depth + self.by)
    }

    fn top_identity(&mut self) -> Option<u64> {
        self.inner.top_identity()
    }

    fn probe_undeclared_format(&mut self, request: &BackingRequest<'_>) -> bool {
        let shifted = BackingRequest { name: request.name, format: request.format, depth: request.depth + self.by };
        self.inner.probe_undeclared_format(&shifted)
    }

    fn open_data_file(&mut self, request: &DataFileRequest<'_>) -> Result<I, R::Error> {
        self.inner.open_data_file(&DataFileRequest { name: request.name, depth: request.depth + self.by })
    }
}
