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
use crate::sector_span::sector_spans;
use zeroize::Zeroize;

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

    /// Reads a run of stored data at `host_offset` (guest bytes from `guest`) into `out` and
    /// decrypts it in place (see [`Qcow2::read_stored`]).
    fn read_data(&mut self, host_offset: u64, guest: u64, out: &mut [u8]) -> Result<(), Error<I::Error>> {
        let external = self.header.incompatible(super::Incompatible::ExternalDataFile);
        match self.data_file.as_mut() {
            Some(d) => read_stored(&self.crypt, d, self.data_file_size, host_offset, guest, out),
            None if external => Err(Error::DataFileRequired),
            None => match self.io.as_mut() {
                Some(io) => read_stored(&self.crypt, io, self.file_size, host_offset, guest, out),
                None => Err(Error::NotOpen),
            },
        }
    }

    /// Reads stored guest data ([`Mapping::Data`] from [`Qcow2::mapping`]) through `io`,
    /// another handle onto the file that holds it (the image file, or the external data file
    /// when the image has one), and decrypts it in place.
    ///
    /// Takes `&self`: once the mapping of a range is known, several workers (each with its own
    /// handle) can read and decrypt different runs in parallel while sharing the image.
    pub fn read_stored<J: BlockIo>(
        &self,
        io: &mut J,
        host_offset: u64,
        guest_offset: u64,
        out: &mut [u8],
    ) -> Result<(), Error<J::Error>> {
        let size = if self.header.incompatible(super::Incompatible::ExternalDataFile) {
            if self.data_file.is_none() {
                return Err(Error::DataFileRequired);
            }
            self.data_file_size
        } else {
            self.file_size
        };
        read_stored(&self.crypt, io, size, host_offset, guest_offset, out)
    }

    /// The mapping of the longest uniform run (at most `max_len` bytes) at `guest_offset` in
    /// this image alone (unallocated ranges are not looked up in a backing file).
    pub fn mapping(&mut self, guest_offset: u64, max_len: u64) -> Result<(Mapping, u64), Error<I::Error>> {
        if guest_offset >= self.size {
            return Err(Error::OutOfRange { offset: guest_offset, len: 0, size: self.size });
        }
        self.mapping_run(guest_offset, max_len.min(self.size - guest_offset))
    }

    /// The image file (`None` when no image is open).
    pub fn io(&self) -> Option<&I> {
        self.io.as_ref()
    }

    /// The external data file, if one was supplied.
    pub fn data_file(&self) -> Option<&D> {
        self.data_file.as_ref()
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
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        crate::io::read_aligned(io, host_offset, input).map_err(Error::Io)?;
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

/// Reads stored bytes at `host_offset` of `io` (`file_size` bytes long) and decrypts them in
/// place: the sector-aligned middle with one I/O and one batch decrypt, partial sectors at the
/// ends through a one-sector bounce buffer.
fn read_stored<J: BlockIo>(
    crypt: &Crypt,
    io: &mut J,
    file_size: u64,
    host_offset: u64,
    guest: u64,
    out: &mut [u8],
) -> Result<(), Error<J::Error>> {
    match crypt {
        Crypt::Locked => return Err(Error::PassphraseRequired),
        Crypt::None => return read_host(io, file_size, host_offset, out),
        _ => {}
    }
    let mut done = 0;
    for span in sector_spans(host_offset, out.len(), SECTOR as usize, usize::MAX) {
        // Host and guest offsets agree within a sector, so one cut serves both.
        let host = host_offset + done as u64 - span.within as u64;
        let guest = guest + done as u64 - span.within as u64;
        let part = &mut out[done..done + span.len];
        if span.is_whole(SECTOR as usize) {
            read_host(io, file_size, host, part)?;
            crypt.decrypt(host, guest, part)?;
        } else {
            sector_part(crypt, io, file_size, host, guest, span.within, part)?;
        }
        done += span.len;
    }
    Ok(())
}

/// Decrypts the whole sector at `host_sector` (guest sector `guest_sector`) and copies
/// `out.len()` bytes from byte `skip` of it.
fn sector_part<J: BlockIo>(
    crypt: &Crypt,
    io: &mut J,
    file_size: u64,
    host_sector: u64,
    guest_sector: u64,
    skip: usize,
    out: &mut [u8],
) -> Result<(), Error<J::Error>> {
    let mut sector = [0u8; SECTOR as usize];
    let r = read_host(io, file_size, host_sector, &mut sector)
        .and_then(|()| Ok(crypt.decrypt(host_sector, guest_sector, &mut sector)?));
    out.copy_from_slice(&sector[skip..skip + out.len()]);
    sector.zeroize();
    r
}

/// Reads stored bytes; like QEMU's file driver, bytes past the end of the file read as zeros.
fn read_host<J: BlockIo>(io: &mut J, file_size: u64, host: u64, out: &mut [u8]) -> Result<(), Error<J::Error>> {
    let avail = file_size.saturating_sub(host).min(out.len() as u64) as usize;
    let (present, past_end) = out.split_at_mut(avail);
    if !present.is_empty() {
        crate::io::read_aligned(io, host, present).map_err(Error::Io)?;
    }
    past_end.fill(0);
    Ok(())
}
