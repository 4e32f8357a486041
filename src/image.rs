//! One entry point for every format: [`Image::open`] detects raw, qcow (v1), qcow2 (with its
//! backing chain) and LUKS from the first bytes and opens it; [`Image::read_at`] reads the
//! guest-visible (decrypted) bytes.
//!
//! Names found in images (backing and data files) and every passphrase go through the
//! caller's [`Resolver`]; memory comes from the caller (`scratch` for qcow's tables and
//! qcow2's compressed clusters, the const generics for the qcow2 caches and chain depth).
//!
//! ```
//! use qluks::image::{detect, Format, Image, MAX_SCRATCH_LEN};
//! use qluks::io::MemIo;
//! use qluks::qcow2::backing::{Chain, NoBacking};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut image = doc_support::qcow2_image();
//! // `image` holds some disk image; its format is found from its first bytes.
//! assert_eq!(detect(&mut MemIo::new(&mut image))?, Format::Qcow2);
//! assert_eq!(detect(&mut MemIo::new(&mut [0u8; 4096]))?, Format::Raw);
//!
//! // Caller memory: the qcow2 chain (here 4 table slices x 1 layer) and the scratch.
//! let mut chain: Chain<MemIo<'_>, 4, 1> = Chain::new_empty();
//! let mut scratch = vec![0u8; MAX_SCRATCH_LEN];
//! // `NoBacking` opens no backing or data file and has no passphrase: implement
//! // `qluks::qcow2::backing::Resolver` for yours (or use `FileResolver` with `std`).
//! let mut disk = Image::open(MemIo::new(&mut image), &mut NoBacking, &mut chain, &mut scratch)?;
//! assert_eq!((disk.format(), disk.size()), (Format::Qcow2, 1 << 20));
//! let mut sector = [0u8; 512];
//! disk.read_at(0, &mut sector)?;
//! assert_eq!(sector, [0x11; 512]);
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

use core::fmt;

use crate::io::BlockIo;
use crate::luks::{LuksIoError, LuksVolume, OpenOptions};
use crate::qcow::Qcow1;
use crate::qcow2::backing::{ChainError, Resolver};
use crate::qcow2::{self, Chain};

/// Scratch memory that suffices for every image: three 2 MiB clusters (qcow2 compressed
/// clusters at the largest cluster size; qcow needs less).
pub const MAX_SCRATCH_LEN: usize = 3 << 21;

/// An image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain bytes.
    Raw,
    /// qcow version 1.
    Qcow,
    /// qcow2 (version 2 or 3).
    Qcow2,
    /// LUKS (version 1 or 2).
    Luks,
}

impl Format {
    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow => "qcow",
            Format::Qcow2 => "qcow2",
            Format::Luks => "luks",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Detects the format from the magic: `QFI\xfb` + version 1 / 2-3, `LUKS\xba\xbe`, else raw.
pub fn detect<I: BlockIo>(io: &mut I) -> Result<Format, I::Error> {
    let mut magic = [0u8; 8];
    if io.size()? < magic.len() as u64 {
        return Ok(Format::Raw);
    }
    crate::io::read_aligned(io, 0, &mut magic)?;
    let version = u32::from_be_bytes([magic[4], magic[5], magic[6], magic[7]]);
    Ok(if magic[..4] == qcow2::header::MAGIC {
        match version {
            1 => Format::Qcow,
            2 | 3 => Format::Qcow2,
            _ => Format::Raw,
        }
    } else if magic[..6] == crate::luks::MAGIC {
        Format::Luks
    } else {
        Format::Raw
    })
}

/// An open image of any format.
///
/// Small: a qcow2 chain (the large part: `DEPTH` layers with `N` cached table slices each)
/// lives in caller memory given to [`Image::open`], so the image itself can be returned and
/// moved cheaply.
// No heap: the qcow and LUKS variants carry their ciphers inline (about 2 KiB), by design.
#[allow(clippy::large_enum_variant)]
pub enum Image<'s, I: BlockIo, const N: usize = { qcow2::DEFAULT_CACHE_SLICES }, const DEPTH: usize = 4> {
    /// Raw bytes.
    Raw {
        /// The device.
        io: I,
        /// Its size.
        size: u64,
    },
    /// qcow v1.
    Qcow(Qcow1<'s, I>),
    /// qcow2 with its backing chain.
    Qcow2 {
        /// The chain (top first), in the caller's memory.
        chain: &'s mut Chain<I, N, DEPTH>,
        /// Memory for compressed clusters.
        scratch: &'s mut [u8],
    },
    /// A LUKS volume.
    Luks(LuksVolume<I>),
}

/// Why an image could not be opened.
#[derive(Debug)]
pub enum OpenError<E, R> {
    /// The device failed.
    Io(E),
    /// qcow v1.
    Qcow(crate::qcow::Error<E>),
    /// qcow v1 images with backing files are not opened through [`Image`].
    QcowBacking,
    /// qcow2 (any layer of the chain, or the resolver).
    Qcow2(ChainError<E, R>),
    /// LUKS.
    Luks(LuksIoError<E>),
    /// An encrypted image and no passphrase from the resolver.
    PassphraseRequired,
}

impl<E: fmt::Display, R: fmt::Display> fmt::Display for OpenError<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "I/O error: {e}"),
            OpenError::Qcow(e) => write!(f, "{e}"),
            OpenError::QcowBacking => write!(f, "qcow images with a backing file are not supported"),
            OpenError::Qcow2(e) => write!(f, "{e}"),
            OpenError::Luks(e) => write!(f, "{e}"),
            OpenError::PassphraseRequired => write!(f, "image is encrypted: a passphrase is required"),
        }
    }
}

impl<E: core::error::Error + 'static, R: fmt::Debug + fmt::Display + 'static> core::error::Error for OpenError<E, R> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            OpenError::Qcow(e) => Some(e),
            OpenError::Qcow2(e) => Some(e),
            OpenError::Luks(e) => Some(e),
            OpenError::QcowBacking | OpenError::PassphraseRequired => None,
        }
    }
}

impl<E, R> OpenError<E, R> {
    /// Whether the passphrase (of any layer) was wrong.
    pub fn is_wrong_passphrase(&self) -> bool {
        match self {
            OpenError::Qcow2(e) => e.is_wrong_passphrase(),
            OpenError::Luks(e) => matches!(e.luks(), Some(crate::luks::LuksError::WrongPassphrase)),
            _ => false,
        }
    }
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError<E> {
    /// Outside the disk.
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Disk size.
        size: u64,
    },
    /// The device failed (raw).
    Io(E),
    /// qcow v1.
    Qcow(crate::qcow::Error<E>),
    /// qcow2.
    Qcow2(qcow2::Error<E>),
    /// LUKS.
    Luks(LuksIoError<E>),
}

impl<E: fmt::Display> fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::OutOfRange { offset, len, size } => {
                write!(f, "read of {len} bytes at {offset:#x} is outside the disk (size {size:#x})")
            }
            ReadError::Io(e) => write!(f, "I/O error: {e}"),
            ReadError::Qcow(e) => write!(f, "{e}"),
            ReadError::Qcow2(e) => write!(f, "{e}"),
            ReadError::Luks(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for ReadError<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::Qcow(e) => Some(e),
            ReadError::Qcow2(e) => Some(e),
            ReadError::Luks(e) => Some(e),
            ReadError::OutOfRange { .. } => None,
        }
    }
}

impl<'s, I: BlockIo, const N: usize, const DEPTH: usize> Image<'s, I, N, DEPTH> {
    /// Detects the format of `io` and opens it. Passphrases (layer 0 = this image) and
    /// backing/data files come from `resolver`. Memory comes from the caller: `chain` holds a
    /// qcow2 image and its backing layers (opened in place with [`Chain::open_in`]; unused for
    /// the other formats; [`Chain::new_empty`] makes one, const, for a `static`), `scratch`
    /// ([`MAX_SCRATCH_LEN`] suffices) qcow tables and qcow2 compressed clusters.
    pub fn open<R: Resolver<I>>(
        mut io: I,
        resolver: &mut R,
        chain: &'s mut Chain<I, N, DEPTH>,
        scratch: &'s mut [u8],
    ) -> Result<Self, OpenError<I::Error, R::Error>> {
        match detect(&mut io).map_err(OpenError::Io)? {
            Format::Raw => {
                let size = io.size().map_err(OpenError::Io)?;
                Ok(Image::Raw { io, size })
            }
            Format::Qcow2 => {
                chain.open_in(io, resolver).map_err(OpenError::Qcow2)?;
                Ok(Image::Qcow2 { chain, scratch })
            }
            Format::Luks => open_luks(io, resolver),
            Format::Qcow => open_qcow(io, resolver, scratch),
        }
    }
    /// The format.
    pub fn format(&self) -> Format {
        match self {
            Image::Raw { .. } => Format::Raw,
            Image::Qcow(_) => Format::Qcow,
            Image::Qcow2 { .. } => Format::Qcow2,
            Image::Luks(_) => Format::Luks,
        }
    }

    /// Guest-visible size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Image::Raw { size, .. } => *size,
            Image::Qcow(q) => q.size(),
            Image::Qcow2 { chain, .. } => chain.size(),
            Image::Luks(v) => v.size(),
        }
    }

    /// Reads guest-visible bytes (decrypted, backing layers resolved); qcow2 compressed
    /// clusters decompress into the scratch memory given at open.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError<I::Error>> {
        self.read_impl(offset, buf, None)
    }

    /// [`Image::read_at`] with other scratch memory for qcow2 compressed clusters (the same
    /// shape as [`Qcow2::read_at_with_scratch`](crate::qcow2::Qcow2::read_at_with_scratch) and
    /// [`Chain::read_at_with_scratch`]; qcow keeps using the memory given at open).
    pub fn read_at_with_scratch(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<(), ReadError<I::Error>> {
        self.read_impl(offset, buf, Some(scratch))
    }

    fn read_impl(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        scratch: Option<&mut [u8]>,
    ) -> Result<(), ReadError<I::Error>> {
        let size = self.size();
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > size) {
            return Err(ReadError::OutOfRange { offset, len: buf.len(), size });
        }
        match self {
            Image::Raw { io, .. } => crate::io::read_aligned(io, offset, buf).map_err(ReadError::Io),
            Image::Qcow(q) => q.read_at(offset, buf).map_err(ReadError::Qcow),
            Image::Qcow2 { chain, scratch: own } => {
                let scratch = match scratch {
                    Some(s) => s,
                    None => &mut **own,
                };
                chain.read_at_with_scratch(offset, buf, scratch).map_err(ReadError::Qcow2)
            }
            Image::Luks(v) => v.read_at(offset, buf).map_err(ReadError::Luks),
        }
    }
}

// The formats' open paths are not inlined into `Image::open`: its frame would otherwise hold
// the largest locals of every format at once.
#[inline(never)]
fn open_luks<'s, I: BlockIo, const N: usize, const DEPTH: usize, R: Resolver<I>>(
    io: I,
    resolver: &mut R,
) -> Result<Image<'s, I, N, DEPTH>, OpenError<I::Error, R::Error>> {
    let kdf_limits = resolver.kdf_limits(0);
    let pass = resolver.passphrase(0).ok_or(OpenError::PassphraseRequired)?;
    let options = OpenOptions { kdf_limits, ..OpenOptions::default() };
    Ok(Image::Luks(LuksVolume::open(io, pass, options).map_err(OpenError::Luks)?))
}

#[inline(never)]
fn open_qcow<'s, I: BlockIo, const N: usize, const DEPTH: usize, R: Resolver<I>>(
    mut io: I,
    resolver: &mut R,
    scratch: &'s mut [u8],
) -> Result<Image<'s, I, N, DEPTH>, OpenError<I::Error, R::Error>> {
    let mut raw = [0u8; crate::qcow::header::HEADER_LEN];
    crate::io::read_aligned(&mut io, 0, &mut raw).map_err(OpenError::Io)?;
    let header = crate::qcow::QcowHeader::parse(&raw).map_err(|e| OpenError::Qcow(crate::qcow::Error::from(e)))?;
    if header.backing_file_offset != 0 {
        return Err(OpenError::QcowBacking);
    }
    let pass = match header.crypt_method {
        crate::qcow::CryptMethod::None => None,
        _ => Some(resolver.passphrase(0).ok_or(OpenError::PassphraseRequired)?),
    };
    Ok(Image::Qcow(Qcow1::open(io, scratch, pass).map_err(OpenError::Qcow)?))
}
