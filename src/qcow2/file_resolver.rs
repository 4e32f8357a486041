//! The std [`Resolver`]: backing and data file names found in images, opened only under the
//! caller's [`BackingPolicy`].
//!
//! By default a name must resolve inside the directory of the image that names it (QEMU's rule
//! for relative names): `../` escapes, absolute names pointing elsewhere and symbolic links
//! leading out are refused. [`BackingPolicy::root`] widens the confinement to a directory;
//! [`BackingPolicy::allow_absolute`] follows absolute names wherever they point. Whatever the
//! policy, only regular files are opened (no FIFOs, devices, sockets or directories), opened
//! non-blocking and without following a final symbolic link, and the checks are made again on
//! the opened handle (its type, its device and inode, and on Linux its real path), so a name
//! swapped between the check and the open is caught. `json:` pseudo-names are never followed.
//! The format of a backing file whose image declares none is not probed unless
//! [`BackingPolicy::probe_format`] allows it (see [`Resolver::probe_undeclared_format`]).
//!
//! This module needs the `std` feature. Opening an encrypted overlay whose backing files live
//! anywhere under `/var/lib/images` (the example needs real files, so it is only compiled):
//!
//! ```no_run
//! use std::fs::File;
//! use std::path::Path;
//! use qluks::qcow2::backing::Chain;
//! use qluks::qcow2::file_resolver::{BackingPolicy, FileResolver};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let top = Path::new("/var/lib/images/vm1.qcow2");
//! let policy = BackingPolicy::new().root("/var/lib/images"); // confinement, not `..` escapes
//! let mut resolver = FileResolver::with_policy(top, policy)?;
//! resolver.set_passphrase(0, b"overlay passphrase"); // depth 0 = `top`, 1 = its backing, ...
//!
//! // Up to 4 layers with 4 cached table slices each (83 KiB): boxed, opened in place.
//! let mut chain: Box<Chain<File, 4, 4>> = Box::new(Chain::new_empty());
//! chain.open_in(File::open(top)?, &mut resolver)?;
//! let mut sector = [0u8; 512];
//! chain.read_at(0, &mut sector)?;
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::vec::Vec;

use super::backing::{BackingRequest, DataFileRequest, Opened, Resolver};
use super::UntrustedName;
use crate::io::BlockIo;

/// Where backing and data files named in images may be opened from, and whether undeclared
/// backing formats are probed. The default is the strictest: inside the directory of the image
/// that names the file, no probing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackingPolicy {
    root: Option<PathBuf>,
    allow_absolute: bool,
    probe_format: bool,
}

impl BackingPolicy {
    /// The strict default: names resolve inside the directory of the image naming them.
    pub fn new() -> BackingPolicy {
        BackingPolicy::default()
    }

    /// Widens (or moves) the confinement: names, relative or absolute, may resolve anywhere
    /// inside `dir` (symbolic links followed, then checked). Canonicalized when the resolver is
    /// made.
    pub fn root(mut self, dir: impl Into<PathBuf>) -> BackingPolicy {
        self.root = Some(dir.into());
        self
    }

    /// Follows absolute names wherever they point (inside [`BackingPolicy::root`] if one is
    /// set). Relative names stay confined; only regular files are opened all the same.
    pub fn allow_absolute(mut self, allow: bool) -> BackingPolicy {
        self.allow_absolute = allow;
        self
    }

    /// Probes the format (qcow2 magic, else raw) of a backing file whose image declares none. A
    /// probed qcow2 that names a backing or data file of its own is refused all the same.
    pub fn probe_format(mut self, probe: bool) -> BackingPolicy {
        self.probe_format = probe;
        self
    }

    /// The confinement directory, if widened.
    pub fn root_dir(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Whether absolute names are followed outside the confinement.
    pub fn allows_absolute(&self) -> bool {
        self.allow_absolute
    }

    /// Whether undeclared backing formats are probed.
    pub fn probes_format(&self) -> bool {
        self.probe_format
    }
}

/// Which name of an image was being resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The backing file name.
    Backing,
    /// The external data file name.
    DataFile,
}

impl core::fmt::Display for FileRole {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FileRole::Backing => "backing file",
            FileRole::DataFile => "data file",
        })
    }
}

/// A name as found in an image: which image, which name, the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The image that holds the name.
    pub image: PathBuf,
    /// Backing or data file.
    pub role: FileRole,
    /// The name, as stored (untrusted; shown escaped).
    pub name: Vec<u8>,
}

impl core::fmt::Display for Found {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} name \"{}\" in {}",
            self.role,
            UntrustedName(&self.name),
            UntrustedName(self.image.as_os_str().as_bytes())
        )
    }
}

/// What a refused name points at, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe (opening it could block forever).
    Fifo,
    /// A socket.
    Socket,
    /// A character device (`/dev/zero`, a terminal, ...).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A symbolic link (at open time: the name was swapped).
    Symlink,
    /// Anything else.
    Other,
}

impl FileKind {
    fn of(meta: &Metadata) -> Option<FileKind> {
        let t = meta.file_type();
        Some(if t.is_file() {
            return None;
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else if t.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }
}

impl core::fmt::Display for FileKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a named pipe (FIFO)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Symlink => "a symbolic link",
            FileKind::Other => "not a regular file",
        })
    }
}

/// Why the [`FileResolver`] refused or failed to open a name.
#[derive(Debug)]
pub enum FileResolverError {
    /// `json:{...}` names describe arbitrary block graphs; never followed.
    JsonName {
        /// The name and where it was found.
        found: Found,
    },
    /// The name is not valid for a path (NUL byte, empty).
    BadName {
        /// The name and where it was found.
        found: Found,
    },
    /// The name resolves (lexically, or through symbolic links) outside the directory it must
    /// stay in.
    OutsideRoot {
        /// The name and where it was found.
        found: Found,
        /// Where it leads (lexically normalized, or the real path).
        path: PathBuf,
        /// The directory it must stay in.
        root: PathBuf,
        /// Whether `root` is the widened root of the policy (else the image's directory).
        widened: bool,
    },
    /// The name leads to something that is not a regular file.
    NotRegularFile {
        /// The name and where it was found.
        found: Found,
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// The file opened is not the one checked (the name was changed meanwhile, or the handle's
    /// real path is outside the allowed directory).
    Changed {
        /// The name and where it was found.
        found: Found,
        /// The path checked.
        path: PathBuf,
    },
    /// The image needs a data file but names none.
    NoDataFileName {
        /// The image.
        image: PathBuf,
    },
    /// Resolving or opening failed.
    Io {
        /// The name and where it was found.
        found: Found,
        /// The path.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

impl FileResolverError {
    /// The name and where it was found (none for [`FileResolverError::NoDataFileName`]).
    pub fn found(&self) -> Option<&Found> {
        match self {
            FileResolverError::JsonName { found }
            | FileResolverError::BadName { found }
            | FileResolverError::OutsideRoot { found, .. }
            | FileResolverError::NotRegularFile { found, .. }
            | FileResolverError::Changed { found, .. }
            | FileResolverError::Io { found, .. } => Some(found),
            FileResolverError::NoDataFileName { .. } => None,
        }
    }
}

fn shown(p: &Path) -> UntrustedName<'_> {
    UntrustedName(p.as_os_str().as_bytes())
}

impl core::fmt::Display for FileResolverError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FileResolverError::JsonName { found } => write!(f, "{found}: json: names are never followed"),
            FileResolverError::BadName { found } => write!(f, "{found}: not a usable path"),
            FileResolverError::OutsideRoot { found, path, root, widened } => {
                let (which, how) = if *widened {
                    ("the allowed root", "widen the allowed root")
                } else {
                    ("the directory of the image that names it", "widen the allowed root or allow absolute names")
                };
                write!(
                    f,
                    "{found}: refused: it leads to {}, outside {} ({which}); if you trust this image, {how}",
                    shown(path),
                    shown(root)
                )
            }
            FileResolverError::NotRegularFile { found, path, kind } => {
                write!(f, "{found}: refused: {} is {kind}, not a regular file", shown(path))
            }
            FileResolverError::Changed { found, path } => {
                write!(f, "{found}: refused: {} changed while it was opened", shown(path))
            }
            FileResolverError::NoDataFileName { image } => {
                write!(f, "{}: image needs an external data file but names none", shown(image))
            }
            FileResolverError::Io { found, path, error } => write!(f, "{found}: {}: {error}", shown(path)),
        }
    }
}

impl std::error::Error for FileResolverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileResolverError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Opens backing and data files from the file system under a [`BackingPolicy`].
pub struct FileResolver {
    policy: BackingPolicy,
    /// Real path of the image at each depth (0 = top).
    images: Vec<PathBuf>,
    top_identity: Option<u64>,
    passphrases: Vec<Option<Vec<u8>>>,
    kdf_limits: crate::luks::KdfLimits,
}

impl core::fmt::Debug for FileResolver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileResolver")
            .field("policy", &self.policy)
            .field("images", &self.images)
            .finish_non_exhaustive()
    }
}

impl FileResolver {
    /// A resolver for the image at `top_image` whose backing and data files may resolve
    /// anywhere inside `root` (symbolic links followed, then checked): the same as
    /// [`FileResolver::with_policy`] with [`BackingPolicy::root`].
    pub fn new(top_image: &Path, root: &Path) -> std::io::Result<FileResolver> {
        FileResolver::with_policy(top_image, BackingPolicy::new().root(root))
    }

    /// A resolver for the image at `top_image` under `policy` (its root, if any, must exist).
    pub fn with_policy(top_image: &Path, mut policy: BackingPolicy) -> std::io::Result<FileResolver> {
        if let Some(root) = &policy.root {
            policy.root = Some(root.canonicalize()?);
        }
        let top = top_image.canonicalize()?;
        let top_identity = std::fs::metadata(&top).ok().map(|m| identity(&m));
        Ok(FileResolver {
            policy,
            images: std::vec![top],
            top_identity,
            passphrases: Vec::new(),
            kdf_limits: Default::default(),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &BackingPolicy {
        &self.policy
    }

    /// Sets the KDF limits for unlocking every layer (default: [`crate::luks::KdfLimits::DEFAULT`]).
    pub fn set_kdf_limits(&mut self, limits: crate::luks::KdfLimits) {
        self.kdf_limits = limits;
    }

    /// Sets the passphrase of the layer at `depth` (0 = top).
    pub fn set_passphrase(&mut self, depth: usize, passphrase: &[u8]) {
        if self.passphrases.len() <= depth {
            self.passphrases.resize_with(depth + 1, || None);
        }
        if let Some(old) = self.passphrases[depth].as_mut() {
            zeroize::Zeroize::zeroize(old.as_mut_slice());
        }
        self.passphrases[depth] = Some(passphrase.to_vec());
    }

    /// Resolves `name`, found in the image at `base_depth`, and opens it under the policy.
    fn open_name(
        &self,
        name: &[u8],
        role: FileRole,
        base_depth: usize,
    ) -> Result<(File, PathBuf, Metadata), FileResolverError> {
        let image = self.images.get(base_depth).or(self.images.last()).expect("the top image is known");
        let found = || Found { image: image.clone(), role, name: name.to_vec() };
        if name.starts_with(b"json:") {
            return Err(FileResolverError::JsonName { found: found() });
        }
        if name.is_empty() || name.contains(&0) {
            return Err(FileResolverError::BadName { found: found() });
        }
        let rel = Path::new(OsStr::from_bytes(name));
        // The image path is real (canonical), so its directory is too.
        let dir = image.parent().unwrap_or(Path::new("/"));
        let (allowed, widened) = match &self.policy.root {
            Some(root) => (Some(root.as_path()), true),
            None if rel.is_absolute() && self.policy.allow_absolute => (None, false),
            None => (Some(dir), false),
        };
        let outside = |path: PathBuf, root: &Path| FileResolverError::OutsideRoot {
            found: found(),
            path,
            root: root.to_path_buf(),
            widened,
        };
        // First without touching the file system: `../` escapes and absolute names elsewhere.
        let lexical = normalize(&dir.join(rel));
        if let Some(root) = allowed {
            if !lexical.starts_with(root) {
                return Err(outside(lexical, root));
            }
        }
        // Then the real path, symbolic links followed: a link leading out is refused.
        let io = |path: &Path, error| FileResolverError::Io { found: found(), path: path.to_path_buf(), error };
        let path = lexical.canonicalize().map_err(|e| io(&lexical, e))?;
        if let Some(root) = allowed {
            if !path.starts_with(root) {
                return Err(outside(path, root));
            }
        }
        // The real path ends in no symbolic link: its own metadata, checked before opening, so
        // a FIFO or a device is never opened.
        let checked = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        if let Some(kind) = FileKind::of(&checked) {
            return Err(FileResolverError::NotRegularFile { found: found(), path, kind });
        }
        // Non-blocking (a FIFO swapped in cannot block the open), not following a final link
        // swapped in.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // And again on the handle: a regular file, the very one checked, really inside.
        let opened = file.metadata().map_err(|e| io(&path, e))?;
        match verify_handle(&file, &opened, &checked, allowed) {
            Ok(()) => Ok((file, path, opened)),
            Err(Some(kind)) => Err(FileResolverError::NotRegularFile { found: found(), path, kind }),
            Err(None) => Err(FileResolverError::Changed { found: found(), path }),
        }
    }
}

/// Checks an opened `file` (its metadata `opened`) against what was checked by name: a regular
/// file (else `Err(Some(kind))`), the same device and inode as `checked`, and, where the kernel
/// tells the handle's path, inside `allowed` (else `Err(None)`).
fn verify_handle(
    file: &File,
    opened: &Metadata,
    checked: &Metadata,
    allowed: Option<&Path>,
) -> Result<(), Option<FileKind>> {
    if let Some(kind) = FileKind::of(opened) {
        return Err(Some(kind));
    }
    if (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        return Err(None);
    }
    if let (Some(root), Some(real)) = (allowed, handle_path(file)) {
        if !real.starts_with(root) {
            return Err(None);
        }
    }
    Ok(())
}

/// The path the kernel has for an open file (Linux: `/proc/self/fd/N`), if it can tell.
fn handle_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(std::format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    // Deleted or otherwise unreachable files are shown with a suffix: no path to compare.
    link.is_absolute().then_some(link)
}

/// `path` with `.` dropped and `..` applied lexically (never above `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl Drop for FileResolver {
    fn drop(&mut self) {
        for p in self.passphrases.iter_mut().flatten() {
            zeroize::Zeroize::zeroize(p.as_mut_slice());
        }
    }
}

impl Resolver<File> for FileResolver {
    type Error = FileResolverError;

    fn open_backing(&mut self, request: &BackingRequest<'_>) -> Result<Opened<File>, FileResolverError> {
        let (file, path, meta) = self.open_name(request.name, FileRole::Backing, request.depth - 1)?;
        self.images.truncate(request.depth);
        self.images.push(path);
        Ok(Opened { io: file, format: None, identity: Some(identity(&meta)) })
    }

    fn open_data_file(&mut self, request: &DataFileRequest<'_>) -> Result<File, FileResolverError> {
        let Some(name) = request.name else {
            let image = self.images.get(request.depth).or(self.images.last()).cloned().unwrap_or_default();
            return Err(FileResolverError::NoDataFileName { image });
        };
        self.open_name(name, FileRole::DataFile, request.depth).map(|(file, _, _)| file)
    }

    fn top_identity(&mut self) -> Option<u64> {
        self.top_identity
    }

    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        self.passphrases.get(depth)?.as_deref()
    }

    fn kdf_limits(&mut self, _depth: usize) -> crate::luks::KdfLimits {
        self.kdf_limits
    }

    fn probe_undeclared_format(&mut self, _request: &BackingRequest<'_>) -> bool {
        self.policy.probe_format
    }
}

/// Device and inode folded into one number.
fn identity(meta: &Metadata) -> u64 {
    meta.dev().rotate_left(32) ^ meta.ino()
}

// `File` must be a BlockIo for the resolver to be useful.
const _: fn() = || {
    fn is_block_io<T: BlockIo>() {}
    is_block_io::<File>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory for this module's tests, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(std::format!("qluks-file-resolver-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d.canonicalize().unwrap())
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_opened_handle_is_checked_not_the_name() {
        let d = Dir::new("handle");
        let (inside, other) = (d.0.join("in"), d.0.join("other"));
        std::fs::write(&inside, b"a").unwrap();
        std::fs::write(&other, b"b").unwrap();
        let file = File::open(&inside).unwrap();
        let opened = file.metadata().unwrap();
        assert_eq!(verify_handle(&file, &opened, &std::fs::metadata(&inside).unwrap(), Some(&d.0)), Ok(()));
        // Another file than the one checked by name (swapped in meanwhile).
        assert_eq!(verify_handle(&file, &opened, &std::fs::metadata(&other).unwrap(), Some(&d.0)), Err(None));
        // The handle's real path outside the allowed directory.
        if handle_path(&file).is_some() {
            let elsewhere = d.0.join("sub");
            assert_eq!(verify_handle(&file, &opened, &opened, Some(&elsewhere)), Err(None));
            assert_eq!(verify_handle(&file, &opened, &opened, None), Ok(()));
        }
        // Not a regular file.
        let dir = File::open(&d.0).unwrap();
        let meta = dir.metadata().unwrap();
        assert_eq!(verify_handle(&dir, &meta, &meta, None), Err(Some(FileKind::Directory)));
    }

    #[test]
    fn normalize_applies_dot_dot_lexically_and_never_above_the_root() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("/a/../../../etc/passwd")), Path::new("/etc/passwd"));
        assert_eq!(normalize(Path::new("/a/b/../../b2")), Path::new("/b2"));
    }
}
