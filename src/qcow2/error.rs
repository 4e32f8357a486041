//! Errors of the qcow2 layer: [`HeaderError`] (pure header/extension validation),
//! [`Corruption`] (bad metadata met while mapping) and [`Error`] (the engine, generic over the
//! device's I/O error).

use core::fmt;

use super::feature::FeatureName;
use super::header::Table;

/// A header or header extension that cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// Not `QFI\xfb`.
    BadMagic,
    /// A qcow (version 1) image, a different format.
    QcowVersion1,
    /// Version other than 2 or 3.
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// cluster_bits outside 9..=21.
    ClusterBits {
        /// The field.
        cluster_bits: u32,
    },
    /// crypt_method other than 0, 1, 2.
    CryptMethod {
        /// The field.
        method: u32,
    },
    /// header_length below 104, not a multiple of 8, or past cluster 0.
    HeaderLength {
        /// The field.
        header_length: u32,
    },
    /// compression_type other than 0 (deflate) or 1 (zstd).
    CompressionType {
        /// The field.
        compression_type: u8,
    },
    /// The compression type incompatible bit disagrees with the compression type field.
    CompressionTypeBit,
    /// Incompatible feature bits this reader does not know (named by the engine).
    UnknownIncompatibleFeatures {
        /// The unknown bits.
        bits: u64,
    },
    /// refcount_order above 6.
    RefcountOrder {
        /// The field.
        refcount_order: u32,
    },
    /// Extended L2 entries need clusters of at least 16 KiB.
    ExtendedL2ClusterSize {
        /// The field.
        cluster_bits: u32,
    },
    /// Backing file name longer than 1023 bytes.
    BackingNameTooLong {
        /// Its length.
        len: u32,
    },
    /// Backing file name not inside cluster 0, after the header.
    BackingNameOutsideCluster0 {
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u32,
    },
    /// The virtual size needs an L1 table beyond QEMU's limit.
    SizeTooLarge {
        /// The virtual size.
        size: u64,
    },
    /// The L1 table does not cover the virtual size.
    L1TooSmall {
        /// Entries present.
        l1_size: u32,
        /// Entries needed.
        needed: u64,
    },
    /// The L1 table exceeds 32 MiB.
    L1TooLarge {
        /// Entries.
        l1_size: u32,
    },
    /// No refcount table.
    RefcountTableEmpty,
    /// Refcount table above 8 MiB.
    RefcountTableTooLarge {
        /// Clusters.
        clusters: u32,
    },
    /// More than 65536 snapshots.
    TooManySnapshots {
        /// The field.
        nb_snapshots: u32,
    },
    /// A table offset that is misaligned, in cluster 0 or overflowing.
    BadTableOffset {
        /// Which table.
        table: Table,
        /// Its offset.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A header extension runs past cluster 0.
    ExtensionPastCluster {
        /// Extension type.
        ext_type: u32,
        /// Offset of its header.
        offset: u64,
        /// Its length.
        len: u32,
    },
    /// Extensions run past the part of cluster 0 this reader reads.
    ExtensionAreaTooLarge {
        /// Offset reached.
        offset: u64,
        /// Bytes read.
        readable: usize,
    },
    /// A known extension appears twice.
    DuplicateExtension {
        /// Extension type.
        ext_type: u32,
    },
    /// A known extension with the wrong length.
    BadExtensionLength {
        /// Extension type.
        ext_type: u32,
        /// Its length.
        len: u32,
    },
    /// A name extension longer than 1023 bytes.
    NameTooLong {
        /// Extension type.
        ext_type: u32,
        /// Its length.
        len: u32,
    },
    /// Bitmaps extension with a bad directory.
    BadBitmapsExtension,
    /// Full disk encryption extension with crypt_method other than LUKS.
    FdeWithoutLuks,
    /// Full disk encryption extension misaligned, empty or overflowing.
    BadFdeExtension {
        /// Its offset.
        offset: u64,
        /// Its length.
        length: u64,
    },
    /// crypt_method 2 (LUKS) without the full disk encryption extension.
    LuksWithoutFde,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HeaderError::*;
        match *self {
            Truncated { needed, got } => write!(f, "qcow2 header truncated: need {needed} bytes, have {got}"),
            BadMagic => write!(f, "not a qcow2 image (bad magic)"),
            QcowVersion1 => write!(f, "qcow version 1 image, not qcow2"),
            UnsupportedVersion { version } => write!(f, "unsupported qcow2 version {version} (2 and 3 are known)"),
            ClusterBits { cluster_bits } => write!(f, "cluster_bits {cluster_bits} outside 9..=21"),
            CryptMethod { method } => write!(f, "unknown crypt_method {method}"),
            HeaderLength { header_length } => {
                write!(f, "bad header_length {header_length} (>= 104, multiple of 8, inside cluster 0)")
            }
            CompressionType { compression_type } => write!(f, "unknown compression_type {compression_type}"),
            CompressionTypeBit => write!(f, "compression type feature bit disagrees with the compression_type field"),
            UnknownIncompatibleFeatures { bits } => write!(f, "unknown incompatible feature bits {bits:#x}"),
            RefcountOrder { refcount_order } => write!(f, "refcount_order {refcount_order} above 6"),
            ExtendedL2ClusterSize { cluster_bits } => {
                write!(f, "extended L2 entries need 16 KiB clusters or larger (cluster_bits {cluster_bits})")
            }
            BackingNameTooLong { len } => write!(f, "backing file name of {len} bytes is longer than 1023"),
            BackingNameOutsideCluster0 { offset, len } => {
                write!(f, "backing file name ({len} bytes at {offset:#x}) is not inside cluster 0")
            }
            SizeTooLarge { size } => write!(f, "virtual size {size} needs an L1 table above 32 MiB"),
            L1TooSmall { l1_size, needed } => {
                write!(f, "L1 table of {l1_size} entries is too small for the virtual size ({needed} needed)")
            }
            L1TooLarge { l1_size } => write!(f, "L1 table of {l1_size} entries exceeds 32 MiB"),
            RefcountTableEmpty => write!(f, "image has no refcount table"),
            RefcountTableTooLarge { clusters } => write!(f, "refcount table of {clusters} clusters exceeds 8 MiB"),
            TooManySnapshots { nb_snapshots } => write!(f, "{nb_snapshots} snapshots exceed 65536"),
            BadTableOffset { table, offset, reason } => write!(f, "{table} at {offset:#x}: {reason}"),
            ExtensionPastCluster { ext_type, offset, len } => {
                write!(f, "header extension {ext_type:#x} at {offset:#x} ({len} bytes) runs past cluster 0")
            }
            ExtensionAreaTooLarge { offset, readable } => {
                write!(f, "header extensions reach {offset:#x}, past the {readable} bytes this reader reads")
            }
            DuplicateExtension { ext_type } => write!(f, "header extension {ext_type:#x} appears twice"),
            BadExtensionLength { ext_type, len } => write!(f, "header extension {ext_type:#x} has bad length {len}"),
            NameTooLong { ext_type, len } => write!(f, "name in header extension {ext_type:#x} is {len} bytes long"),
            BadBitmapsExtension => write!(f, "bitmaps extension has a bad directory offset or size"),
            FdeWithoutLuks => write!(f, "full disk encryption header extension present but crypt_method is not LUKS"),
            BadFdeExtension { offset, length } => {
                write!(f, "full disk encryption header at {offset:#x} ({length} bytes) is misaligned or invalid")
            }
            LuksWithoutFde => {
                write!(f, "crypt_method is LUKS but the full disk encryption header extension is missing")
            }
        }
    }
}

impl core::error::Error for HeaderError {}

/// Bad metadata met while mapping guest offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Reserved bits set in an L1 entry.
    L1ReservedBits {
        /// Index.
        l1_index: u64,
        /// Entry.
        entry: u64,
    },
    /// L2 table offset not cluster-aligned.
    L2TableUnaligned {
        /// Index.
        l1_index: u64,
        /// Offset.
        offset: u64,
    },
    /// An L2 table (or other metadata) past the end of the file.
    PastEndOfFile {
        /// Which table.
        table: Table,
        /// Offset.
        offset: u64,
        /// File size.
        file_size: u64,
    },
    /// An L2 table at cluster 0 (the header).
    TableInCluster0 {
        /// Which table.
        table: Table,
    },
    /// Reserved bits set in an L2 entry.
    L2ReservedBits {
        /// Entry.
        entry: u64,
    },
    /// Data cluster offset not cluster-aligned.
    DataUnaligned {
        /// Offset.
        offset: u64,
    },
    /// A compressed cluster with the COPIED flag.
    CompressedCopied {
        /// Entry.
        entry: u64,
    },
    /// A compressed cluster with a non-zero subcluster bitmap.
    CompressedBitmap {
        /// Bitmap.
        bitmap: u64,
    },
    /// Compressed clusters cannot live in an external data file.
    CompressedWithDataFile,
    /// A subcluster both allocated and zero.
    SubclusterAllocAndZero {
        /// Bitmap.
        bitmap: u64,
    },
    /// Allocated subclusters in an unallocated cluster.
    SubclusterAllocWithoutCluster {
        /// Bitmap.
        bitmap: u64,
    },
    /// Data past the end of the file (or data file).
    DataPastEndOfFile {
        /// Host offset.
        offset: u64,
        /// Length.
        len: u64,
        /// File size.
        file_size: u64,
    },
    /// Data at cluster 0 of the image file (the header).
    DataInCluster0,
    /// A snapshot table entry that is malformed.
    BadSnapshot {
        /// Index of the snapshot.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Corruption::*;
        match *self {
            L1ReservedBits { l1_index, entry } => write!(f, "L1 entry {l1_index} ({entry:#x}) has reserved bits set"),
            L2TableUnaligned { l1_index, offset } => {
                write!(f, "L1 entry {l1_index}: L2 table offset {offset:#x} is not cluster-aligned")
            }
            PastEndOfFile { table, offset, file_size } => {
                write!(f, "{table} at {offset:#x} is past the end of the file (size {file_size:#x})")
            }
            TableInCluster0 { table } => write!(f, "{table} points at cluster 0 (the header)"),
            L2ReservedBits { entry } => write!(f, "L2 entry {entry:#x} has reserved bits set"),
            DataUnaligned { offset } => write!(f, "data cluster offset {offset:#x} is not cluster-aligned"),
            CompressedCopied { entry } => write!(f, "compressed L2 entry {entry:#x} has the COPIED flag"),
            CompressedBitmap { bitmap } => write!(f, "compressed cluster has subcluster bitmap {bitmap:#x}"),
            CompressedWithDataFile => write!(f, "compressed cluster in an image with an external data file"),
            SubclusterAllocAndZero { bitmap } => {
                write!(f, "subcluster bitmap {bitmap:#x} marks subclusters both allocated and zero")
            }
            SubclusterAllocWithoutCluster { bitmap } => {
                write!(f, "subcluster bitmap {bitmap:#x} allocates subclusters of an unallocated cluster")
            }
            DataPastEndOfFile { offset, len, file_size } => {
                write!(f, "{len} data bytes at {offset:#x} are past the end of the file (size {file_size:#x})")
            }
            DataInCluster0 => write!(f, "guest data mapped onto cluster 0 (the header)"),
            BadSnapshot { index, reason } => write!(f, "snapshot {index}: {reason}"),
        }
    }
}

impl core::error::Error for Corruption {}

/// An error of the qcow2 engine; `E` is the device's I/O error.
#[derive(Debug)]
pub enum Error<E> {
    /// The device failed.
    Io(E),
    /// The header cannot be opened.
    Header(HeaderError),
    /// An incompatible feature this reader does not know, named from the feature name table.
    UnknownIncompatibleFeature {
        /// Bit number.
        bit: u32,
        /// Name from the image's feature name table (empty if absent).
        name: FeatureName,
    },
    /// Metadata is corrupt.
    Corrupt(Corruption),
    /// A read beyond the virtual disk.
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Virtual size.
        size: u64,
    },
    /// The image keeps its data in an external data file but none was supplied.
    DataFileRequired,
    /// The image was used before it was opened ([`crate::qcow2::Qcow2::new_empty`] without a
    /// successful `open_in`, or after `into_inner`).
    NotOpen,
    /// An encrypted image opened without a passphrase.
    PassphraseRequired,
    /// The LUKS header inside the image refused: the passphrase opens no keyslot
    /// ([`crate::luks::LuksError::WrongPassphrase`], see [`Error::is_wrong_passphrase`]), a
    /// keyslot costs more than the KDF limits allow, or the header cannot be used.
    Luks(crate::luks::LuksError),
    /// A compressed cluster could not be decompressed into exactly one cluster.
    Decompress {
        /// Guest offset of the cluster.
        guest_offset: u64,
        /// Why.
        error: super::compressed::CompressedError,
    },
    /// Reading a compressed cluster, or writing (copy on write, encryption bounce), needs
    /// more caller scratch memory.
    ScratchTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The cipher could not be built or used.
    Crypto(crate::crypto::Error),
    /// No such snapshot.
    NoSuchSnapshot,
    /// Options that cannot be created ([`super::create::create`]), refused before anything
    /// is written.
    Create(super::create::CreateError),
    /// Writing refused: the dirty bit (incompatible bit 0) is set, so refcounts may be stale
    /// (lazy refcounts after a crash) until the image is repaired (`qemu-img check -r all`).
    DirtyImage,
    /// Writing refused: the corrupt bit (incompatible bit 1) is set.
    CorruptImage,
    /// Writing refused: a snapshot is selected (writes go to the active disk only).
    SnapshotSelected,
    /// Writing refused: the image uses a feature the write engine does not maintain.
    WriteUnsupported {
        /// The feature (e.g. "persistent bitmaps").
        feature: &'static str,
    },
    /// A refcount would exceed its width (`refcount_bits`).
    RefcountOverflow {
        /// Host offset of the cluster.
        host_offset: u64,
        /// The refcount width.
        refcount_bits: u32,
    },
    /// A refcount would drop below 0 (the metadata is inconsistent).
    RefcountUnderflow {
        /// Host offset of the cluster.
        host_offset: u64,
    },
    /// A refcount table entry that is not a valid refcount block offset.
    BadRefcountBlock {
        /// Index in the refcount table.
        index: u64,
        /// The raw entry.
        entry: u64,
    },
    /// The image cannot grow: the refcount table would exceed 8 MiB or offsets 2^56.
    ImageFull {
        /// Host offset that could not be covered.
        host_offset: u64,
    },
    /// A data write would land on metadata (QEMU's overlap check).
    MetadataOverlap {
        /// What it would overwrite (e.g. "refcount table").
        what: &'static str,
        /// Host offset of the write.
        host_offset: u64,
        /// Its length.
        len: u64,
    },
    /// Discard on a version 2 image with a backing file (QEMU refuses it too: without the zero
    /// flag, a discarded cluster would show the backing file's data).
    DiscardUnsupported,
    /// A write through the image alone would copy on write from the backing file it names
    /// (it would read as zeros here): write through a [`crate::qcow2::Chain`] holding the
    /// backing layers.
    BackingRequired {
        /// Guest offset of the bytes that come from the backing file.
        guest_offset: u64,
    },
    /// [`crate::qcow2::Qcow2::check`] needs more memory for the counted references (see
    /// [`crate::qcow2::Qcow2::check_memory_len`]).
    CheckMemoryTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// `check -r leaks` met refcounts that only a rebuild of the refcount structures repairs
    /// (`-r all`).
    CheckNeedsRebuild,
    /// A repair left corruptions or check errors (or met references it cannot represent).
    CheckRepairFailed {
        /// Corruptions left.
        corruptions: u64,
        /// Check errors.
        check_errors: u64,
    },
    /// The check could not go on: a structure it walks is unreadable.
    CheckFailed {
        /// Which structure.
        what: &'static str,
    },
    /// A new snapshot's name is empty or longer than
    /// [`NAME_CAP`](crate::qcow2::snapshot::NAME_CAP) bytes (what lookups compare).
    SnapshotNameInvalid {
        /// Its length in bytes.
        len: usize,
    },
    /// The snapshot table is full: QEMU's limits of 65536 snapshots and 64 MiB of table.
    SnapshotTableFull {
        /// Snapshots in the table.
        nb_snapshots: u32,
    },
    /// Commit: the image has no backing layer to commit into, or the base is not writable
    /// here (a raw base smaller than its device claims, an empty chain).
    CommitWithoutBase,
    /// Rebase: the header, its extensions, the backing format extension and the backing file
    /// name do not fit in the header area (cluster 0, at most [`super::HEADER_AREA`] bytes),
    /// or the name is longer than 1023 bytes.
    BackingNameTooLong {
        /// Bytes the header area would need.
        needed: usize,
        /// Bytes it may use.
        room: usize,
    },
    /// A resize was refused ([`Qcow2::resize`](crate::qcow2::Qcow2::resize)).
    Resize(super::resize::ResizeError),
    /// A LUKS keyslot change was refused
    /// ([`Qcow2::amend_keyslots`](crate::qcow2::Qcow2::amend_keyslots)).
    Amend(super::amend::AmendError),
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

impl<E> From<Corruption> for Error<E> {
    fn from(e: Corruption) -> Self {
        Error::Corrupt(e)
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Header(e) => write!(f, "{e}"),
            Error::UnknownIncompatibleFeature { bit, name } if name.is_empty() => {
                write!(f, "unsupported incompatible feature bit {bit}")
            }
            Error::UnknownIncompatibleFeature { bit, name } => {
                write!(f, "unsupported incompatible feature bit {bit}: {name}")
            }
            Error::Corrupt(c) => write!(f, "corrupt image: {c}"),
            Error::OutOfRange { offset, len, size } => {
                write!(f, "access of {len} bytes at {offset:#x} is outside the virtual disk (size {size:#x})")
            }
            Error::DataFileRequired => write!(f, "image uses an external data file and none was supplied"),
            Error::NotOpen => write!(f, "the qcow2 image is not open"),
            Error::PassphraseRequired => write!(f, "image is encrypted: a passphrase is required"),
            // The same words as LUKS's own wrong-passphrase error.
            Error::Luks(e) => write!(f, "LUKS header in the image: {e}"),
            Error::Decompress { guest_offset, error } => {
                write!(f, "compressed cluster at guest offset {guest_offset:#x}: {error}")
            }
            Error::ScratchTooSmall { needed, got } => {
                write!(f, "{needed} bytes of scratch memory needed (compressed clusters, copy on write), {got} given")
            }
            Error::Crypto(e) => write!(f, "{e}"),
            Error::NoSuchSnapshot => write!(f, "no such snapshot"),
            Error::Create(e) => write!(f, "{e}"),
            Error::DirtyImage => write!(
                f,
                "image has the dirty bit set (refcounts may be stale): refusing to write; repair it first (qemu-img check -r all)"
            ),
            Error::CorruptImage => write!(f, "image has the corrupt bit set: refusing to write"),
            Error::SnapshotSelected => write!(f, "a snapshot is selected: only the active disk can be written"),
            Error::WriteUnsupported { feature } => write!(f, "writing images with {feature} is not supported"),
            Error::RefcountOverflow { host_offset, refcount_bits } => {
                write!(f, "refcount of the cluster at {host_offset:#x} would exceed {refcount_bits} bits")
            }
            Error::RefcountUnderflow { host_offset } => {
                write!(f, "corrupt image: refcount of the cluster at {host_offset:#x} would drop below 0")
            }
            Error::BadRefcountBlock { index, entry } => {
                write!(f, "corrupt image: refcount table entry {index} ({entry:#x}) is not a valid refcount block offset")
            }
            Error::ImageFull { host_offset } => write!(
                f,
                "image cannot grow to cover host offset {host_offset:#x} (refcount table limit of 8 MiB or offset limit of 2^56)"
            ),
            Error::MetadataOverlap { what, host_offset, len } => {
                write!(f, "write of {len} bytes at host offset {host_offset:#x} would overwrite the {what}: refused")
            }
            Error::DiscardUnsupported => {
                write!(f, "discard is not supported on a version 2 image with a backing file (use write-zeroes)")
            }
            Error::BackingRequired { guest_offset } => write!(
                f,
                "copy on write at guest offset {guest_offset:#x} needs the backing file's data: write through the \
                 backing chain"
            ),
            Error::CheckMemoryTooSmall { needed, got } => {
                write!(f, "check needs {needed} bytes of memory for the counted references, {got} given")
            }
            Error::CheckNeedsRebuild => {
                write!(f, "the refcount structures need a rebuild (repair with -r all)")
            }
            Error::CheckRepairFailed { corruptions, check_errors } => write!(
                f,
                "repair failed: {corruptions} corruptions and {check_errors} check errors left"
            ),
            Error::CheckFailed { what } => write!(f, "check failed: the {what} is corrupt"),
            Error::SnapshotNameInvalid { len } => write!(
                f,
                "snapshot name of {len} bytes: names are 1 to {} bytes long",
                crate::qcow2::snapshot::NAME_CAP
            ),
            Error::SnapshotTableFull { nb_snapshots } => write!(
                f,
                "snapshot table full ({nb_snapshots} snapshots; at most 65536 and 64 MiB of table)"
            ),
            Error::CommitWithoutBase => write!(f, "the image has no backing file to commit into"),
            Error::BackingNameTooLong { needed, room } => write!(
                f,
                "the backing file name and format do not fit in the image header: {needed} bytes needed, {room} available"
            ),
            Error::Resize(e) => write!(f, "{e}"),
            Error::Amend(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Header(e) => Some(e),
            Error::Corrupt(e) => Some(e),
            Error::Luks(e) => Some(e),
            Error::Decompress { error, .. } => Some(error),
            Error::Crypto(e) => Some(e),
            Error::Create(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> Error<E> {
    /// Whether the passphrase was wrong (no LUKS keyslot opens with it): the one question
    /// callers branch on to ask again.
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(self, Error::Luks(e) if e.is_wrong_passphrase())
    }

    /// The device's error, if this is one.
    pub fn io(&self) -> Option<&E> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}
