//! Files on the ESP (the file system this program was loaded from) as [`BlockIo`] devices, and
//! the backing-file policy of job B: every name an image holds is a file in one folder.

use core::fmt;

use qluks::io::{BlockIo, ReadOnly};
use qluks::qcow2::backing::{BackingFormat, BackingRequest, DataFileRequest, Opened, Resolver};
use uefi::proto::media::file::{Directory, File, FileAttribute, FileMode, RegularFile};
use uefi::{CStr16, Status};

#[derive(Debug)]
pub enum EspError {
    Firmware { op: &'static str, status: Status },
    Short { offset: u64, len: usize },
    Name(&'static str),
    ReadOnly,
}

impl fmt::Display for EspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EspError::Firmware { op, status } => write!(f, "{op} failed: {status:?}"),
            EspError::Short { offset, len } => write!(f, "{len} bytes at {offset} run past the end of the file"),
            EspError::Name(why) => f.write_str(why),
            EspError::ReadOnly => f.write_str("the file is open read-only"),
        }
    }
}

impl From<ReadOnly> for EspError {
    fn from(_: ReadOnly) -> Self {
        EspError::ReadOnly
    }
}

fn firmware(op: &'static str) -> impl FnOnce(uefi::Error) -> EspError {
    move |e| EspError::Firmware { op, status: e.status() }
}

/// A regular file, read (and written) at byte offsets.
pub struct EspFile {
    file: RegularFile,
    size: u64,
    /// Calls into the file protocol (positions, reads, writes).
    pub requests: u64,
}

impl EspFile {
    fn new(mut file: RegularFile) -> Result<EspFile, EspError> {
        file.set_position(RegularFile::END_OF_FILE).map_err(firmware("SetPosition(end)"))?;
        let size = file.get_position().map_err(firmware("GetPosition"))?;
        Ok(EspFile { file, size, requests: 0 })
    }
}

impl BlockIo for EspFile {
    type Error = EspError;

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), EspError> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => return Err(EspError::Short { offset, len: buf.len() }),
        }
        self.requests += 1;
        self.file.set_position(offset).map_err(firmware("SetPosition"))?;
        let mut done = 0;
        while done < buf.len() {
            self.requests += 1;
            let n = self.file.read(&mut buf[done..]).map_err(firmware("Read"))?;
            if n == 0 {
                return Err(EspError::Short { offset, len: buf.len() });
            }
            done += n;
        }
        Ok(())
    }

    fn size(&mut self) -> Result<u64, EspError> {
        Ok(self.size)
    }
}

/// Whether `name` is a plain file name: no folder part, no `.`/`..`, printable ASCII.
fn plain_name(name: &[u8]) -> Result<&str, EspError> {
    let name = core::str::from_utf8(name).map_err(|_| EspError::Name("the file name is not UTF-8"))?;
    if name.is_empty() || name.len() > 255 {
        return Err(EspError::Name("the file name is empty or longer than 255 bytes"));
    }
    if name == "." || name == ".." {
        return Err(EspError::Name("the file name is . or .."));
    }
    if name.bytes().any(|b| matches!(b, b'/' | b'\\' | b':') || !(0x20..0x7f).contains(&b)) {
        return Err(EspError::Name(
            "the file name has a folder part, a drive or a non-printable character: backing files must lie in the image's folder",
        ));
    }
    Ok(name)
}

/// FNV-1a of the name, ASCII case folded (FAT names are case-insensitive): the file's identity
/// for the chain's loop check.
fn identity(name: &str) -> u64 {
    name.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x100_0000_01b3))
}

/// One folder of the ESP: the image and its backing files.
pub struct Folder<'p> {
    dir: Directory,
    pub passphrase: Option<&'p [u8]>,
    pub backing_passphrase: Option<&'p [u8]>,
    pub argon2_limit_kib: u32,
}

impl<'p> Folder<'p> {
    /// Opens `path` (a folder, `\` for the root) on the file system this program came from.
    pub fn open(path: &str) -> Result<Folder<'p>, EspError> {
        let mut fs =
            uefi::boot::get_image_file_system(uefi::boot::image_handle()).map_err(firmware("the ESP's file system"))?;
        let mut root = fs.open_volume().map_err(firmware("OpenVolume"))?;
        if path == "\\" || path.is_empty() {
            return Ok(Folder { dir: root, passphrase: None, backing_passphrase: None, argon2_limit_kib: 0 });
        }
        let mut buf = [0u16; 256];
        let name = CStr16::from_str_with_buf(path, &mut buf).map_err(|_| EspError::Name("folder= is too long"))?;
        let dir = root
            .open(name, FileMode::Read, FileAttribute::empty())
            .map_err(firmware("Open(folder)"))?
            .into_directory()
            .ok_or(EspError::Name("folder= is not a folder"))?;
        Ok(Folder { dir, passphrase: None, backing_passphrase: None, argon2_limit_kib: 0 })
    }

    /// Opens the file `name` of this folder for reading.
    pub fn file(&mut self, name: &[u8]) -> Result<(EspFile, u64), EspError> {
        let name = plain_name(name)?;
        let mut buf = [0u16; 256];
        let name16 =
            CStr16::from_str_with_buf(name, &mut buf).map_err(|_| EspError::Name("the file name is too long"))?;
        let file = self
            .dir
            .open(name16, FileMode::Read, FileAttribute::empty())
            .map_err(firmware("Open(file)"))?
            .into_regular_file()
            .ok_or(EspError::Name("the name is a folder, not a file"))?;
        Ok((EspFile::new(file)?, identity(name)))
    }
}

impl Resolver<EspFile> for Folder<'_> {
    type Error = EspError;

    fn open_backing(&mut self, request: &BackingRequest<'_>) -> Result<Opened<EspFile>, EspError> {
        let (io, identity) = self.file(request.name)?;
        // The format the image declares; an undeclared one is not guessed from the file's
        // first bytes (which a guest could have written).
        let format = request.format.and_then(BackingFormat::from_name);
        Ok(Opened { io, format, identity: Some(identity) })
    }

    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        if depth == 0 {
            self.passphrase
        } else {
            self.backing_passphrase.or(self.passphrase)
        }
    }

    fn kdf_limits(&mut self, _depth: usize) -> qluks::luks::KdfLimits {
        qluks::luks::KdfLimits { argon2_memory_kib: self.argon2_limit_kib, ..qluks::luks::KdfLimits::DEFAULT }
    }

    fn open_data_file(&mut self, _request: &DataFileRequest<'_>) -> Result<EspFile, EspError> {
        Err(EspError::Name("external data files are not supported by this program"))
    }
}
