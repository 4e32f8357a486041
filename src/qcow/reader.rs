//! [`Qcow1`]: reads the virtual disk of a qcow v1 image over a [`BlockIo`], allocation-free.
//!
//! Mapping is two-level: the L1 entry (a plain host offset, 0 = unallocated) names an L2 table of
//! `2^l2_bits` entries; an L2 entry is 0 (unallocated: backing file or zeros), a host offset of
//! a data cluster, or, with bit 63 set, a compressed cluster whose byte length sits in the bits
//! above `63 - cluster_bits` (QEMU's `qcow.c`; unlike qcow2 the length is exact, in bytes).
//! Compressed clusters are never encrypted; data clusters of an AES image are AES-128-CBC with
//! the plain64 IV of the **guest** sector.
//!
//! The caller's scratch holds one L2 table, one decompressed cluster and its compressed input
//! ([`Qcow1::scratch_len`], at most 192 KiB); the engine keeps the last L2 table and the last
//! decompressed cluster cached there.

use super::error::Error;
use super::header::{CryptMethod, QcowHeader, HEADER_LEN, L2_COMPRESSED, MAX_BACKING_FILE_NAME};
use crate::crypto::{CbcIv, CipherMode, CipherSpec, SectorCipher};
use crate::io::BlockIo;
use crate::qcow2::compressed::{decompress_cluster, Compression};
use crate::sector_span::sector_spans;
use zeroize::Zeroize;

const SECTOR: u64 = 512;

/// L1 entries read at once when skipping unallocated L1 ranges (512 bytes of stack).
const L1_SCAN_ENTRIES: usize = 64;

/// What backs a guest range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Not allocated here: reads from the backing file, or zeros without one.
    Unallocated,
    /// Stored in the file at `host_offset` (the extent's first byte); encrypted when the image is.
    Data {
        /// Host offset of the extent's first byte.
        host_offset: u64,
    },
    /// A deflate-compressed cluster (one cluster per extent).
    Compressed {
        /// Host offset of the compressed bytes.
        host_offset: u64,
        /// Their length.
        len: u64,
    },
}

/// A guest range with one kind of storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Guest offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Its storage.
    pub kind: ExtentKind,
}

/// One L2 entry, decoded.
#[derive(Debug, Clone, Copy)]
enum ClusterEntry {
    Unallocated,
    Data(u64),
    Compressed { host_offset: u64, len: u64 },
}

/// A qcow v1 image opened for reading.
pub struct Qcow1<'s, I: BlockIo> {
    io: I,
    header: QcowHeader,
    file_size: u64,
    cipher: Option<SectorCipher>,
    l2_table: &'s mut [u8],
    /// L1 index of the table in `l2_table`, or of an unallocated L1 entry (`l2_present` false).
    l2_cached: Option<u64>,
    l2_present: bool,
    cluster: &'s mut [u8],
    compressed_input: &'s mut [u8],
    /// Host offset of the compressed cluster decompressed in `cluster`.
    cluster_cached: Option<u64>,
    backing_file: [u8; MAX_BACKING_FILE_NAME],
    backing_file_len: Option<usize>,
}

impl<I: BlockIo> core::fmt::Debug for Qcow1<'_, I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Qcow1").field("header", &self.header).field("file_size", &self.file_size).finish()
    }
}

impl<'s, I: BlockIo> Qcow1<'s, I> {
    /// Scratch bytes [`Qcow1::open`] needs for an image with this header.
    pub fn scratch_len(header: &QcowHeader) -> usize {
        header.l2_table_len() + 2 * header.cluster_size()
    }

    /// Scratch bytes that suffice for every valid qcow image (64 KiB L2 + two 64 KiB clusters).
    pub const MAX_SCRATCH_LEN: usize = 3 * 64 * 1024;

    /// Reads and validates the header and opens the image. `password` is required for AES
    /// images (its first 16 bytes, zero padded, are the key, as QEMU does) and refused for others.
    pub fn open(mut io: I, scratch: &'s mut [u8], password: Option<&[u8]>) -> Result<Self, Error<I::Error>> {
        let file_size = io.size().map_err(Error::Io)?;
        let mut raw = [0u8; HEADER_LEN];
        let n = (file_size.min(HEADER_LEN as u64)) as usize;
        crate::io::read_aligned(&mut io, 0, &mut raw[..n]).map_err(Error::Io)?;
        let header = QcowHeader::parse(&raw[..n])?;

        let l1_len = header.l1_table_len();
        if header.l1_table_offset.checked_add(l1_len).is_none_or(|end| end > file_size) {
            return Err(Error::L1TablePastEnd { offset: header.l1_table_offset, len: l1_len, file_size });
        }

        let needed = Self::scratch_len(&header);
        if scratch.len() < needed {
            return Err(Error::ScratchTooSmall { needed, got: scratch.len() });
        }
        let (l2_table, rest) = scratch.split_at_mut(header.l2_table_len());
        let (cluster, rest) = rest.split_at_mut(header.cluster_size());
        let compressed_input = &mut rest[..header.cluster_size()];

        let cipher = match (header.crypt_method, password) {
            (CryptMethod::None, None) => None,
            (CryptMethod::None, Some(_)) => return Err(Error::NotEncrypted),
            (CryptMethod::Aes, None) => return Err(Error::PasswordRequired),
            (CryptMethod::Aes, Some(password)) => Some(legacy_aes_cipher(password)?),
        };

        let mut backing_file = [0u8; MAX_BACKING_FILE_NAME];
        let mut backing_file_len = None;
        if header.backing_file_offset != 0 {
            let len = header.backing_file_size;
            if header.backing_file_offset.checked_add(u64::from(len)).is_none_or(|end| end > file_size) {
                return Err(Error::BackingFileNamePastEnd { offset: header.backing_file_offset, len, file_size });
            }
            crate::io::read_aligned(&mut io, header.backing_file_offset, &mut backing_file[..len as usize])
                .map_err(Error::Io)?;
            backing_file_len = Some(len as usize);
        }

        Ok(Qcow1 {
            io,
            header,
            file_size,
            cipher,
            l2_table,
            l2_cached: None,
            l2_present: false,
            cluster,
            compressed_input,
            cluster_cached: None,
            backing_file,
            backing_file_len,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &QcowHeader {
        &self.header
    }

    /// The virtual disk size in bytes (whole sectors, as QEMU sees it).
    pub fn size(&self) -> u64 {
        self.header.virtual_size()
    }

    /// Whether the data clusters are AES-encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.header.crypt_method == CryptMethod::Aes
    }

    /// The backing file name as stored (not NUL-terminated, not interpreted): the caller decides
    /// whether and how to open it.
    pub fn backing_file(&self) -> Option<&[u8]> {
        self.backing_file_len.map(|n| &self.backing_file[..n])
    }

    /// The underlying device.
    pub fn into_inner(self) -> I {
        self.io
    }

    /// Reads guest bytes; unallocated ranges read as zeros (as without a backing file).
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error<I::Error>> {
        self.read_impl(offset, buf, None::<&mut NoBacking<I::Error>>)
    }

    /// Reads guest bytes, taking unallocated ranges from `backing` (zeros past its end).
    pub fn read_at_backed<B>(&mut self, offset: u64, buf: &mut [u8], backing: &mut B) -> Result<(), Error<I::Error>>
    where
        B: BlockIo<Error = I::Error>,
    {
        self.read_impl(offset, buf, Some(backing))
    }

    /// The extent that starts at guest `offset`: how far the storage stays of one kind and,
    /// for data, host-contiguous. A data or unallocated run inside an L2 table ends at the end
    /// of that table's range; a run of unallocated L1 entries is one extent, found by scanning
    /// the L1 table a block of entries at a time, so mapping a sparse image costs what its
    /// tables hold, not what its header claims. Ends at the virtual size.
    pub fn extent_at(&mut self, offset: u64) -> Result<Extent, Error<I::Error>> {
        let size = self.size();
        if offset >= size {
            return Err(Error::ReadPastEnd { offset, len: 0, size });
        }
        let cs = self.header.cluster_size() as u64;
        let in_cluster = offset % cs;
        let first = self.entry(offset)?;
        let table_span = (self.header.l2_entries() as u64) << self.header.cluster_bits;
        let table_end = (offset / table_span + 1) * table_span;
        if matches!(first, ClusterEntry::Unallocated) && !self.l2_present {
            // No L2 table here: skip this and every following unallocated L1 entry at once.
            let end = self.unallocated_l1_end(offset / table_span + 1)?.saturating_mul(table_span);
            return Ok(Extent { offset, len: end.min(size) - offset, kind: ExtentKind::Unallocated });
        }
        let mut len = cs - in_cluster;
        let kind = match first {
            ClusterEntry::Unallocated => ExtentKind::Unallocated,
            ClusterEntry::Data(host) => ExtentKind::Data { host_offset: host + in_cluster },
            ClusterEntry::Compressed { host_offset, len: clen } => {
                let len = len.min(size - offset);
                return Ok(Extent { offset, len, kind: ExtentKind::Compressed { host_offset, len: clen } });
            }
        };
        while offset + len < size.min(table_end) {
            let next = self.entry(offset + len)?;
            let same = match (first, next) {
                (ClusterEntry::Unallocated, ClusterEntry::Unallocated) => true,
                (ClusterEntry::Data(a), ClusterEntry::Data(b)) => b == a + (offset + len - (offset - in_cluster)),
                _ => false,
            };
            if !same {
                break;
            }
            len += cs;
        }
        Ok(Extent { offset, len: len.min(size - offset), kind })
    }

    /// The first L1 index at or after `from` whose entry names an L2 table (or the L1 size):
    /// reads the L1 table in blocks of [`L1_SCAN_ENTRIES`] entries.
    fn unallocated_l1_end(&mut self, from: u64) -> Result<u64, Error<I::Error>> {
        let l1_size = self.header.l1_size;
        let mut block = [0u8; L1_SCAN_ENTRIES * 8];
        let mut index = from;
        while index < l1_size {
            let n = (l1_size - index).min(L1_SCAN_ENTRIES as u64) as usize;
            let raw = &mut block[..n * 8];
            // Inside the file: the L1 table was checked against the file size at open.
            self.io.read_at(self.header.l1_table_offset + index * 8, raw).map_err(Error::Io)?;
            match raw.chunks_exact(8).position(|e| e.iter().any(|&b| b != 0)) {
                Some(i) => return Ok(index + i as u64),
                None => index += n as u64,
            }
        }
        Ok(l1_size)
    }

    fn read_impl<B>(&mut self, offset: u64, buf: &mut [u8], mut backing: Option<&mut B>) -> Result<(), Error<I::Error>>
    where
        B: BlockIo<Error = I::Error>,
    {
        let size = self.size();
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > size) {
            return Err(Error::ReadPastEnd { offset, len: buf.len(), size });
        }
        let cs = self.header.cluster_size() as u64;
        let mut guest = offset;
        let mut buf = buf;
        while !buf.is_empty() {
            let in_cluster = guest % cs;
            let first = (cs - in_cluster).min(buf.len() as u64) as usize;
            let n = match self.entry(guest)? {
                ClusterEntry::Unallocated => {
                    let (part, _) = buf.split_at_mut(first);
                    read_backing(backing.as_deref_mut(), guest, part)?;
                    first
                }
                ClusterEntry::Compressed { host_offset, len } => {
                    self.load_compressed(guest, host_offset, len)?;
                    let s = in_cluster as usize;
                    buf[..first].copy_from_slice(&self.cluster[s..s + first]);
                    first
                }
                ClusterEntry::Data(host) => {
                    // Extend the run over following clusters that are stored right after it.
                    let mut run = first;
                    while run < buf.len() {
                        match self.entry(guest + run as u64)? {
                            ClusterEntry::Data(h) if h == host + in_cluster + run as u64 => {
                                run += (cs as usize).min(buf.len() - run);
                            }
                            _ => break,
                        }
                    }
                    self.read_data(guest, host + in_cluster, &mut buf[..run])?;
                    run
                }
            };
            guest += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    /// Reads a host-contiguous run of data clusters and decrypts it in place.
    fn read_data(&mut self, guest: u64, host: u64, buf: &mut [u8]) -> Result<(), Error<I::Error>> {
        let Some(cipher) = &self.cipher else {
            return crate::io::read_aligned(&mut self.io, host, buf).map_err(Error::Io);
        };
        // Whole sectors are decrypted in place in `buf`; a partial first or last sector goes
        // through one sector of stack. Host offsets are sector-aligned, so host and guest sector
        // boundaries coincide.
        let mut done = 0;
        for span in sector_spans(guest, buf.len(), SECTOR as usize, usize::MAX) {
            let host = host + done as u64 - span.within as u64;
            let part = &mut buf[done..done + span.len];
            if span.is_whole(SECTOR as usize) {
                crate::io::read_aligned(&mut self.io, host, part).map_err(Error::Io)?;
                cipher.decrypt_sectors(part, SECTOR as usize, span.sector)?;
            } else {
                let mut sector = [0u8; SECTOR as usize];
                let r = crate::io::read_aligned(&mut self.io, host, &mut sector).map_err(Error::Io);
                let r = r.and_then(|()| Ok(cipher.decrypt_sectors(&mut sector, SECTOR as usize, span.sector)?));
                part.copy_from_slice(&sector[span.within..span.within + span.len]);
                sector.zeroize();
                r?;
            }
            done += span.len;
        }
        Ok(())
    }

    fn load_compressed(&mut self, guest: u64, host_offset: u64, len: u64) -> Result<(), Error<I::Error>> {
        if self.cluster_cached == Some(host_offset) {
            return Ok(());
        }
        self.cluster_cached = None;
        let input = &mut self.compressed_input[..len as usize];
        crate::io::read_aligned(&mut self.io, host_offset, input).map_err(Error::Io)?;
        let cluster_start = guest & !(self.header.cluster_size() as u64 - 1);
        decompress_cluster(Compression::Deflate, input, self.cluster)
            .map_err(|error| Error::Compressed { guest_offset: cluster_start, error })?;
        self.cluster_cached = Some(host_offset);
        Ok(())
    }

    /// The L2 entry of the cluster holding guest `offset` (< virtual size), validated.
    fn entry(&mut self, offset: u64) -> Result<ClusterEntry, Error<I::Error>> {
        let h = self.header;
        let l1_index = offset >> (u32::from(h.cluster_bits) + u32::from(h.l2_bits));
        if self.l2_cached != Some(l1_index) {
            self.load_l2(l1_index)?;
        }
        if !self.l2_present {
            return Ok(ClusterEntry::Unallocated);
        }
        let l2_index = ((offset >> h.cluster_bits) as usize) & (h.l2_entries() - 1);
        let raw = &self.l2_table[l2_index * 8..l2_index * 8 + 8];
        let entry = u64::from_be_bytes([raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]]);
        let cs = h.cluster_size() as u64;
        let file_size = self.file_size;
        if entry == 0 {
            return Ok(ClusterEntry::Unallocated);
        }
        if entry & L2_COMPRESSED != 0 {
            let shift = 63 - u32::from(h.cluster_bits);
            let host_offset = entry & ((1u64 << shift) - 1);
            let len = (entry >> shift) & (cs - 1);
            if host_offset.checked_add(len).is_none_or(|end| end > file_size) {
                return Err(Error::CompressedPastEnd { guest_offset: offset, host_offset, len, file_size });
            }
            return Ok(ClusterEntry::Compressed { host_offset, len });
        }
        if !entry.is_multiple_of(SECTOR) {
            return Err(Error::ClusterMisaligned { guest_offset: offset, host_offset: entry });
        }
        if entry.checked_add(cs).is_none_or(|end| end > file_size) {
            return Err(Error::ClusterPastEnd { guest_offset: offset, host_offset: entry, file_size });
        }
        Ok(ClusterEntry::Data(entry))
    }

    fn load_l2(&mut self, l1_index: u64) -> Result<(), Error<I::Error>> {
        self.l2_cached = None;
        let mut raw = [0u8; 8];
        // l1_index < l1_size because offset < size, and the L1 table lies inside the file.
        crate::io::read_aligned(&mut self.io, self.header.l1_table_offset + l1_index * 8, &mut raw)
            .map_err(Error::Io)?;
        let l2_offset = u64::from_be_bytes(raw);
        if l2_offset == 0 {
            self.l2_present = false;
        } else {
            let len = self.l2_table.len() as u64;
            if l2_offset.checked_add(len).is_none_or(|end| end > self.file_size) {
                return Err(Error::L2TablePastEnd { l1_index, offset: l2_offset, file_size: self.file_size });
            }
            crate::io::read_aligned(&mut self.io, l2_offset, self.l2_table).map_err(Error::Io)?;
            self.l2_present = true;
        }
        self.l2_cached = Some(l1_index);
        Ok(())
    }
}

/// QEMU's qcow/qcow2 legacy key: the first 16 bytes of the password, zero padded, as AES-128.
fn legacy_aes_cipher(password: &[u8]) -> Result<SectorCipher, crate::crypto::Error> {
    let mut key = zeroize::Zeroizing::new([0u8; 16]);
    let n = password.len().min(16);
    key[..n].copy_from_slice(&password[..n]);
    SectorCipher::new(CipherSpec { mode: CipherMode::Cbc(CbcIv::Plain64), key_bytes: 16 }, &key[..])
}

fn read_backing<B: BlockIo>(backing: Option<&mut B>, guest: u64, buf: &mut [u8]) -> Result<(), Error<B::Error>> {
    let Some(backing) = backing else {
        buf.fill(0);
        return Ok(());
    };
    let size = backing.size().map_err(Error::Io)?;
    let avail = size.saturating_sub(guest).min(buf.len() as u64) as usize;
    let (inside, past) = buf.split_at_mut(avail);
    if !inside.is_empty() {
        backing.read_at(guest, inside).map_err(Error::Io)?;
    }
    past.fill(0);
    Ok(())
}

/// The backing type of [`Qcow1::read_at`]: uninhabited, so never constructed.
#[allow(dead_code)]
enum NoBacking<E> {
    Never(core::convert::Infallible, core::marker::PhantomData<E>),
}

impl<E: core::fmt::Debug + core::fmt::Display + From<crate::io::ReadOnly>> BlockIo for NoBacking<E> {
    type Error = E;
    fn read_at(&mut self, _: u64, _: &mut [u8]) -> Result<(), E> {
        match *self {
            NoBacking::Never(never, _) => match never {},
        }
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> Result<(), E> {
        match *self {
            NoBacking::Never(never, _) => match never {},
        }
    }
    fn flush(&mut self) -> Result<(), E> {
        match *self {
            NoBacking::Never(never, _) => match never {},
        }
    }
    fn size(&mut self) -> Result<u64, E> {
        match *self {
            NoBacking::Never(never, _) => match never {},
        }
    }
}
