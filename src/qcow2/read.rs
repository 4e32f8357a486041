//! The read engine: guest range -> runs -> one I/O per run straight into the caller's buffer,
//! one batch decrypt per run in place; zeros, backing layers and compressed clusters as the
//! mapping says.

use super::backing::Layer;
use super::compressed::decompress_cluster;
use super::crypt::{Crypt, SECTOR};
use super::error::{Corruption, Error};
use super::l2_entry::Mapping;
use super::Qcow2;
use crate::io::BlockIo;

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// Reads guest bytes; unallocated ranges come from `below` (the backing chain, first
    /// element = direct backing; `None` or empty = zeros).
    pub(crate) fn read_layered<const M: usize>(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        below: &mut [Option<Layer<I, M>>],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let size = self.size;
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange { offset, len: buf.len(), size });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let guest = offset + done as u64;
            let (mapping, len) = self.mapping_run(guest, (buf.len() - done) as u64)?;
            let out = &mut buf[done..done + len as usize];
            match mapping {
                Mapping::Data { host_offset } => self.read_data(host_offset, guest, out)?,
                Mapping::Zero { .. } => out.fill(0),
                Mapping::Unallocated { .. } => super::backing::read_below(guest, out, below, scratch)?,
                Mapping::Compressed { host_offset, compressed_len } => {
                    self.read_compressed(guest, host_offset, compressed_len, out, scratch)?
                }
            }
            done += len as usize;
        }
        Ok(())
    }

    /// Reads a run of stored data at `host_offset` (guest bytes from `guest`) into `out`, and
    /// decrypts it in place. Partial sectors at the ends go through a one-sector bounce buffer;
    /// the aligned middle is one I/O and one decrypt call.
    fn read_data(&mut self, host_offset: u64, guest: u64, out: &mut [u8]) -> Result<(), Error<I::Error>> {
        if matches!(self.crypt, Crypt::Locked) {
            return Err(Error::PassphraseRequired);
        }
        if !self.crypt.is_encrypted() {
            return self.read_host(host_offset, out);
        }
        let mut host = host_offset;
        let mut guest = guest;
        let mut done = 0usize;
        let head = (host % SECTOR) as usize;
        if head != 0 || out.len() < SECTOR as usize {
            let take = (SECTOR as usize - head).min(out.len());
            self.read_sector_part(host - head as u64, guest - head as u64, head, &mut out[..take])?;
            done = take;
            host += take as u64;
            guest += take as u64;
        }
        let middle = (out.len() - done) / SECTOR as usize * SECTOR as usize;
        if middle > 0 {
            let run = &mut out[done..done + middle];
            self.read_host(host, run)?;
            self.crypt.decrypt(host, guest, run)?;
            done += middle;
            host += middle as u64;
            guest += middle as u64;
        }
        if done < out.len() {
            self.read_sector_part(host, guest, 0, &mut out[done..])?;
        }
        Ok(())
    }

    /// Decrypts the whole sector at `host_sector` (guest sector `guest_sector`) and copies
    /// `out.len()` bytes from byte `skip` of it.
    fn read_sector_part(
        &mut self,
        host_sector: u64,
        guest_sector: u64,
        skip: usize,
        out: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let mut sector = [0u8; SECTOR as usize];
        self.read_host(host_sector, &mut sector)?;
        self.crypt.decrypt(host_sector, guest_sector, &mut sector)?;
        out.copy_from_slice(&sector[skip..skip + out.len()]);
        Ok(())
    }

    /// Reads stored bytes from the image file or the external data file. Like QEMU's file
    /// driver, bytes past the end of the file read as zeros.
    fn read_host(&mut self, host: u64, out: &mut [u8]) -> Result<(), Error<I::Error>> {
        let external = self.header.incompatible(super::Incompatible::ExternalDataFile);
        let (io, file_size): (&mut dyn BlockIoDyn<I::Error>, u64) = match self.data_file.as_mut() {
            Some(d) => (d, self.data_file_size),
            None if external => return Err(Error::DataFileRequired),
            None => (&mut self.io, self.file_size),
        };
        let avail = file_size.saturating_sub(host).min(out.len() as u64) as usize;
        let (present, past_end) = out.split_at_mut(avail);
        if !present.is_empty() {
            io.read_dyn(host, present).map_err(Error::Io)?;
        }
        past_end.fill(0);
        Ok(())
    }

    /// Decompresses the cluster holding `guest` and copies the requested part of it.
    fn read_compressed(
        &mut self,
        guest: u64,
        host_offset: u64,
        compressed_len: u64,
        out: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<(), Error<I::Error>> {
        let cs = self.cluster_size() as usize;
        let whole = out.len() == cs;
        let needed = compressed_len as usize + if whole { 0 } else { cs };
        if scratch.len() < needed {
            return Err(Error::ScratchTooSmall { needed: self.compressed_scratch_len(), got: scratch.len() });
        }
        if host_offset.saturating_add(compressed_len) > self.file_size {
            // QEMU reads the sectors the descriptor names; a stream cut by the end of the file
            // is only acceptable when the part past the end was never needed, so read what is
            // there and let the decompressor decide.
            if host_offset >= self.file_size {
                return Err(Corruption::DataPastEndOfFile {
                    offset: host_offset,
                    len: compressed_len,
                    file_size: self.file_size,
                }
                .into());
            }
        }
        let (input, rest) = scratch.split_at_mut(compressed_len as usize);
        let avail = (self.file_size - host_offset).min(compressed_len) as usize;
        let input = &mut input[..avail];
        self.io.read_at(host_offset, input).map_err(Error::Io)?;
        let cluster_start = guest & !(cs as u64 - 1);
        let kind = self.header.compression_type;
        let fail = |error| Error::Decompress { guest_offset: cluster_start, error };
        if whole {
            decompress_cluster(kind, input, out).map_err(fail)?;
        } else {
            let cluster = &mut rest[..cs];
            decompress_cluster(kind, input, cluster).map_err(fail)?;
            let skip = (guest - cluster_start) as usize;
            out.copy_from_slice(&cluster[skip..skip + out.len()]);
        }
        Ok(())
    }
}

/// Object-safe view of the two devices (image file or data file) with one error type.
trait BlockIoDyn<E> {
    fn read_dyn(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), E>;
}

impl<T: BlockIo> BlockIoDyn<T::Error> for T {
    fn read_dyn(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), T::Error> {
        self.read_at(offset, buf)
    }
}
