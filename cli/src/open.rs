//! Opening an image path as a [`Disk`]: the format is detected from the file's first bytes.
//! Each format is one variant of [`Format`] and one `Disk` implementation.
use std::error::Error;
use std::fs::{File, OpenOptions as FileOptions};
use std::path::Path;

use qluks::io::BlockIo;
use qluks::luks::{LuksVolume, OpenOptions};

use crate::image_open::{ChainArgs, Qcow2Disk, QcowDisk};
use crate::secret::SecretArgs;

/// A guest-visible disk: its plaintext bytes.
pub trait Disk: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>>;
    /// Writes `buf` at `offset`; `buf` may be overwritten (encrypted in place).
    fn write_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>>;
    /// Whether [`Disk::write_at`] leaves its buffer as it was (else it may encrypt in place).
    fn keeps_buffer(&self) -> bool {
        false
    }
    /// Makes `len` bytes at `offset` read as zero (`unmap`: the format may free their space);
    /// by default by writing zeros.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<(), Box<dyn Error>> {
        let _ = unmap;
        let mut zeros = vec![0u8; len.min(ZERO_PIECE) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_PIECE) as usize;
            zeros[..n].fill(0);
            self.write_at(offset.checked_add(done).ok_or("offset overflows")?, &mut zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }
    /// Discards `len` bytes at `offset` (the format decides what they then read as).
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), Box<dyn Error>> {
        let _ = (offset, len);
        Err("discard is supported on qcow2 images only".into())
    }
    /// Makes writes durable.
    fn flush(&mut self) -> Result<(), Box<dyn Error>>;
    /// Which ranges read as zero without holding data, when the format knows (`None`: unknown).
    fn map(&mut self) -> Result<Option<Vec<MapEntry>>, Box<dyn Error>> {
        Ok(None)
    }
}

/// Zeros written per call by the default [`Disk::write_zeroes`].
const ZERO_PIECE: u64 = 4 << 20;

/// One range of a disk's allocation map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// Guest offset.
    pub start: u64,
    /// Length.
    pub length: u64,
    /// Reads as zero and holds no data (a hole in a sparse copy).
    pub zero: bool,
}

/// Image formats `open` recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LUKS1 or LUKS2 (`LUKS\xba\xbe`).
    Luks,
    /// qcow2 (`QFI\xfb`, version 2 or 3).
    Qcow2,
    /// qcow version 1.
    Qcow,
    /// Anything else: the file's bytes are the disk.
    Raw,
}

impl Format {
    /// The name users see.
    pub fn name(self) -> &'static str {
        match self {
            Format::Luks => "luks",
            Format::Qcow2 => "qcow2",
            Format::Qcow => "qcow",
            Format::Raw => "raw",
        }
    }
}

/// Detects the format from the first bytes of `file`.
pub fn detect(file: &mut File) -> Result<Format, Box<dyn Error>> {
    let mut magic = [0u8; 8];
    let size = BlockIo::size(file)?;
    if size >= magic.len() as u64 {
        BlockIo::read_at(file, 0, &mut magic)?;
        if magic[..6] == qluks::luks::MAGIC {
            return Ok(Format::Luks);
        }
        match qluks::image::detect(file)? {
            qluks::image::Format::Qcow2 => return Ok(Format::Qcow2),
            qluks::image::Format::Qcow => return Ok(Format::Qcow),
            _ => {}
        }
    }
    Ok(Format::Raw)
}

/// Opens `path` (read-write when `writable`), unlocking it with `secret` when it is encrypted,
/// with the passphrases and policy for qcow2 backing layers.
pub fn open_with_chain(
    path: &Path,
    writable: bool,
    secret: &SecretArgs,
    chain: &ChainArgs,
) -> Result<Box<dyn Disk>, Box<dyn Error>> {
    let mut file = FileOptions::new().read(true).write(writable).open(path).map_err(|e| {
        let why = if writable { " (opened read-write: a command writes)" } else { "" };
        format!("{}: {e}{why}", path.display())
    })?;
    match detect(&mut file)? {
        Format::Luks => {
            let passphrase = secret.get(&format!("Passphrase for {}: ", path.display()))?;
            let limits = secret.kdf.limits(&crate::secret::pbkdf2_claims(&mut file));
            let luks2_memory = crate::luks2_memory::Luks2Memory::for_volume(&mut file, &limits)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let opened = match luks2_memory {
                Some(memory) => memory.open(file, &passphrase, &limits),
                None => {
                    LuksVolume::open(file, &passphrase, OpenOptions { kdf_limits: limits, ..OpenOptions::default() })
                }
            };
            let volume = opened.map_err(|e| {
                let hint = e.luks().map(crate::secret::kdf_hint).unwrap_or_default();
                format!("{}: {e}{hint}", path.display())
            })?;
            Ok(Box::new(LuksDisk(volume)))
        }
        Format::Qcow2 if writable => Ok(Box::new(Qcow2Disk::open_writable(path, secret, chain)?)),
        Format::Qcow2 => Ok(Box::new(Qcow2Disk::open(path, secret, chain)?)),
        Format::Qcow => Ok(Box::new(QcowDisk::open(path, secret)?)),
        Format::Raw => {
            let size = BlockIo::size(&mut file)?;
            Ok(Box::new(RawDisk { file, size }))
        }
    }
}

struct LuksDisk(LuksVolume<File>);

impl Disk for LuksDisk {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        Ok(self.0.read_at(offset, buf)?)
    }
    fn write_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        Ok(self.0.write_in_place(offset, buf)?)
    }
    fn flush(&mut self) -> Result<(), Box<dyn Error>> {
        Ok(self.0.flush()?)
    }
}

struct RawDisk {
    file: File,
    size: u64,
}

impl Disk for RawDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        check(offset, buf.len(), self.size)?;
        Ok(BlockIo::read_at(&mut self.file, offset, buf)?)
    }
    fn write_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        check(offset, buf.len(), self.size)?;
        Ok(BlockIo::write_at(&mut self.file, offset, buf)?)
    }
    fn keeps_buffer(&self) -> bool {
        true
    }
    fn flush(&mut self) -> Result<(), Box<dyn Error>> {
        Ok(BlockIo::flush(&mut self.file)?)
    }
}

fn check(offset: u64, len: usize, size: u64) -> Result<(), String> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(format!("access of {len} bytes at {offset:#x} is outside the disk (size {size:#x})")),
    }
}

/// The format named by `-f` or a backing format, or detected from the file.
pub fn format_of(file: &mut File, name: Option<&str>, path: &Path) -> Result<Format, Box<dyn Error>> {
    match name {
        None => detect(file),
        Some("qcow2") => Ok(Format::Qcow2),
        Some("luks") => Ok(Format::Luks),
        Some("raw") | Some("file") => Ok(Format::Raw),
        Some("qcow") => Ok(Format::Qcow),
        Some(other) => Err(format!("{}: unknown format '{}'", path.display(), crate::escape::shown(other)).into()),
    }
}

/// qemu's length of a file: its size rounded up to whole 512-byte sectors.
pub fn sectors_len(len: u64) -> u64 {
    len.div_ceil(512).saturating_mul(512)
}
