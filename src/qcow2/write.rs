//! The data side of writing (SKELETON: public entry points; every body is to be written).
//!
//! Guest range -> per-cluster decision (in place when the entry is NORMAL or ZERO-with-offset
//! and COPIED; otherwise a new cluster) -> contiguous runs: one batch encrypt (IV = the *new*
//! host offset for LUKS, the guest offset for legacy AES) and one `write_at` per run, copy on
//! write of the untouched parts of new clusters (from the old data, a compressed cluster, a
//! zero cluster or the backing chain), then the L2 entries, then the old clusters released.

use super::backing::{Chain, Layer};
use super::error::Error;
use super::Qcow2;
use crate::io::BlockIo;

#[allow(dead_code, unused_variables)]
impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Scratch bytes the write entry points need at least (copy on write, encryption bounce,
    /// compressed clusters): a function of the cluster size. More scratch makes larger batches.
    pub fn write_scratch_len(&self) -> usize {
        todo!()
    }

    /// Writes `data` at guest `offset` of this image alone (unallocated ranges of partially
    /// written clusters read as zeros: no backing file; see [`Chain::write_at`]).
    pub fn write_at(&mut self, offset: u64, data: &[u8], scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        todo!()
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
        todo!()
    }

    /// Discards the whole clusters inside `offset..offset + len` (they then read as zero, or
    /// from the backing file on v2) and releases their space.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// The chain-aware writer: `below` fills the untouched parts of new clusters.
    pub(crate) fn write_layered<const M: usize>(
        &mut self,
        offset: u64,
        data: &[u8],
        below: &mut [Option<Layer<I, M>>],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        todo!()
    }
}

#[allow(dead_code, unused_variables)]
impl<I: BlockIo, const N: usize, const DEPTH: usize> Chain<I, N, DEPTH> {
    /// Scratch bytes [`Chain::write_at`] needs at least (the top layer's
    /// [`Qcow2::write_scratch_len`], and compressed clusters of any layer).
    pub fn write_scratch_len(&self) -> usize {
        todo!()
    }

    /// Writes guest bytes into the top layer (which must be qcow2); the untouched parts of
    /// newly allocated clusters come from the backing layers. Backing layers never change.
    pub fn write_at(&mut self, offset: u64, data: &[u8], scratch: &mut [u8]) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// [`Qcow2::write_zeroes`] on the top layer.
    pub fn write_zeroes(
        &mut self,
        offset: u64,
        len: u64,
        unmap: bool,
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// [`Qcow2::discard`] on the top layer.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        todo!()
    }

    /// [`Qcow2::flush`] on the top layer.
    pub fn flush(&mut self) -> Result<(), Error<I::Error>> {
        todo!()
    }
}
