//! The std [`Resolver`]: backing and data file names relative to the directory of the image
//! that names them, confined to a caller-given root, `json:` pseudo-names refused.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::vec::Vec;

use super::backing::{BackingRequest, DataFileRequest, Opened, Resolver};
use crate::io::BlockIo;

/// Why the [`FileResolver`] refused or failed to open a name.
#[derive(Debug)]
pub enum FileResolverError {
    /// `json:{...}` names describe arbitrary block graphs; never followed.
    JsonName,
    /// The name is not valid for a path (NUL byte, empty).
    BadName,
    /// The name resolves outside the allowed root.
    OutsideRoot {
        /// The resolved path.
        path: PathBuf,
    },
    /// The image needs a data file but names none.
    NoDataFileName,
    /// Opening failed.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

impl core::fmt::Display for FileResolverError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FileResolverError::JsonName => write!(f, "json: backing names are not followed"),
            FileResolverError::BadName => write!(f, "backing file name is not a usable path"),
            FileResolverError::OutsideRoot { path } => {
                write!(f, "{} is outside the allowed directory", path.display())
            }
            FileResolverError::NoDataFileName => write!(f, "image needs an external data file but names none"),
            FileResolverError::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for FileResolverError {}

/// Opens backing and data files from the file system under a root directory.
pub struct FileResolver {
    root: PathBuf,
    /// Directory of the image at each depth (0 = top).
    dirs: Vec<PathBuf>,
    top_identity: Option<u64>,
    passphrases: Vec<Option<Vec<u8>>>,
    kdf_limits: crate::luks::KdfLimits,
}

impl core::fmt::Debug for FileResolver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileResolver").field("root", &self.root).field("dirs", &self.dirs).finish_non_exhaustive()
    }
}

impl FileResolver {
    /// A resolver for the image at `top_image`; names must resolve (symlinks followed) inside
    /// `root`.
    pub fn new(top_image: &Path, root: &Path) -> std::io::Result<FileResolver> {
        let root = root.canonicalize()?;
        let top = top_image.canonicalize()?;
        let dir = top.parent().map(Path::to_path_buf).unwrap_or_else(|| root.clone());
        let top_identity = std::fs::metadata(&top).ok().map(|m| identity(&m));
        Ok(FileResolver {
            root,
            dirs: std::vec![dir],
            top_identity,
            passphrases: Vec::new(),
            kdf_limits: Default::default(),
        })
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

    /// Sets the KDF limits for unlocking every layer (default: [`crate::luks::KdfLimits::DEFAULT`]).
    pub fn set_kdf_limits(&mut self, limits: crate::luks::KdfLimits) {
        self.kdf_limits = limits;
    }

    fn resolve(&self, name: &[u8], base_depth: usize) -> Result<PathBuf, FileResolverError> {
        use std::os::unix::ffi::OsStrExt;
        if name.starts_with(b"json:") {
            return Err(FileResolverError::JsonName);
        }
        if name.is_empty() || name.contains(&0) {
            return Err(FileResolverError::BadName);
        }
        let rel = Path::new(std::ffi::OsStr::from_bytes(name));
        let base = self.dirs.get(base_depth).unwrap_or(&self.root);
        let joined = base.join(rel);
        let path = joined.canonicalize().map_err(|error| FileResolverError::Io { path: joined.clone(), error })?;
        if !path.starts_with(&self.root) {
            return Err(FileResolverError::OutsideRoot { path });
        }
        Ok(path)
    }

    fn open(path: &Path) -> Result<File, FileResolverError> {
        File::open(path).map_err(|error| FileResolverError::Io { path: path.to_path_buf(), error })
    }
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
        let path = self.resolve(request.name, request.depth - 1)?;
        let file = Self::open(&path)?;
        let meta = file.metadata().map_err(|error| FileResolverError::Io { path: path.clone(), error })?;
        self.dirs.truncate(request.depth);
        self.dirs.push(path.parent().map(Path::to_path_buf).unwrap_or_else(|| self.root.clone()));
        Ok(Opened { io: file, format: None, identity: Some(identity(&meta)) })
    }

    fn open_data_file(&mut self, request: &DataFileRequest<'_>) -> Result<File, FileResolverError> {
        let name = request.name.ok_or(FileResolverError::NoDataFileName)?;
        let path = self.resolve(name, request.depth)?;
        Self::open(&path)
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
}

/// Device and inode folded into one number.
fn identity(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.dev().rotate_left(32) ^ meta.ino()
}

// `File` must be a BlockIo for the resolver to be useful.
const _: fn() = || {
    fn is_block_io<T: BlockIo>() {}
    is_block_io::<File>();
};
