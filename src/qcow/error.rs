//! Errors of the qcow v1 engine.

use core::fmt;

use super::header::HeaderError;
use crate::qcow2::compressed::CompressedError;

/// Why a qcow v1 image could not be opened or read. `E` is the device's error.
#[derive(Debug)]
pub enum Error<E> {
    /// The device failed.
    Io(E),
    /// The header is invalid.
    Header(HeaderError),
    /// The caller's scratch memory is smaller than [`super::Qcow1::scratch_len`].
    ScratchTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The image is AES-encrypted and no password was given.
    PasswordRequired,
    /// A password was given for an image that is not encrypted (QEMU refuses this too).
    NotEncrypted,
    /// The L1 table runs past the end of the file (or its end overflows).
    L1TablePastEnd {
        /// Table offset.
        offset: u64,
        /// Table length in bytes.
        len: u64,
        /// File size.
        file_size: u64,
    },
    /// The backing file name runs past the end of the file.
    BackingFileNamePastEnd {
        /// Name offset.
        offset: u64,
        /// Name length.
        len: u32,
        /// File size.
        file_size: u64,
    },
    /// An L2 table runs past the end of the file.
    L2TablePastEnd {
        /// L1 index naming the table.
        l1_index: u64,
        /// Table offset.
        offset: u64,
        /// File size.
        file_size: u64,
    },
    /// A data cluster's host offset is not sector-aligned (QEMU fails such reads).
    ClusterMisaligned {
        /// Guest offset being read.
        guest_offset: u64,
        /// The L2 entry's host offset.
        host_offset: u64,
    },
    /// A data cluster lies (partly) past the end of the file.
    ClusterPastEnd {
        /// Guest offset being read.
        guest_offset: u64,
        /// The L2 entry's host offset.
        host_offset: u64,
        /// File size.
        file_size: u64,
    },
    /// A compressed cluster's bytes lie (partly) past the end of the file.
    CompressedPastEnd {
        /// Guest offset being read.
        guest_offset: u64,
        /// Host offset of the compressed bytes.
        host_offset: u64,
        /// Their length.
        len: u64,
        /// File size.
        file_size: u64,
    },
    /// A compressed cluster does not decompress to exactly one cluster.
    Compressed {
        /// Guest offset of the cluster.
        guest_offset: u64,
        /// What went wrong.
        error: CompressedError,
    },
    /// A read past the virtual size.
    ReadPastEnd {
        /// Start of the read.
        offset: u64,
        /// Its length.
        len: usize,
        /// The virtual size.
        size: u64,
    },
    /// The cipher could not be set up or used.
    Crypto(crate::crypto::Error),
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Header(e) => write!(f, "invalid qcow header: {e}"),
            Error::ScratchTooSmall { needed, got } => {
                write!(f, "scratch memory of {got} bytes is too small for this qcow image ({needed} needed)")
            }
            Error::PasswordRequired => f.write_str("qcow image is AES-encrypted: a password is required"),
            Error::NotEncrypted => f.write_str("a password was given but the qcow image is not encrypted"),
            Error::L1TablePastEnd { offset, len, file_size } => {
                write!(f, "L1 table at {offset:#x} ({len} bytes) extends past end of file (size {file_size:#x})")
            }
            Error::BackingFileNamePastEnd { offset, len, file_size } => write!(
                f,
                "backing file name at {offset:#x} ({len} bytes) extends past end of file (size {file_size:#x})"
            ),
            Error::L2TablePastEnd { l1_index, offset, file_size } => {
                write!(f, "L2 table {l1_index} at {offset:#x} extends past end of file (size {file_size:#x})")
            }
            Error::ClusterMisaligned { guest_offset, host_offset } => {
                write!(f, "cluster for guest offset {guest_offset:#x} has unaligned host offset {host_offset:#x}")
            }
            Error::ClusterPastEnd { guest_offset, host_offset, file_size } => write!(
                f,
                "cluster for guest offset {guest_offset:#x} at {host_offset:#x} extends past end of file (size \
                 {file_size:#x})"
            ),
            Error::CompressedPastEnd { guest_offset, host_offset, len, file_size } => write!(
                f,
                "compressed cluster for guest offset {guest_offset:#x} ({len} bytes at {host_offset:#x}) extends \
                 past end of file (size {file_size:#x})"
            ),
            Error::Compressed { guest_offset, error } => {
                write!(f, "compressed cluster for guest offset {guest_offset:#x}: {error}")
            }
            Error::ReadPastEnd { offset, len, size } => {
                write!(f, "read of {len} bytes at {offset:#x} is past the virtual size {size:#x}")
            }
            Error::Crypto(e) => write!(f, "encryption: {e}"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Header(e) => Some(e),
            Error::Compressed { error, .. } => Some(error),
            Error::Crypto(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> From<HeaderError> for Error<E> {
    fn from(e: HeaderError) -> Self {
        Error::Header(e)
    }
}

impl<E> From<crate::crypto::Error> for Error<E> {
    fn from(e: crate::crypto::Error) -> Self {
        Error::Crypto(e)
    }
}
