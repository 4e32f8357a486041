//! Creating qcow2 images (SKELETON: the public contract; bodies to be written).
//!
//! QEMU's layout (qcow2-write.md §4): cluster 0 header, then the refcount table, one refcount
//! block and the L1 table, every cluster refcounted; with LUKS the header area (whole clusters,
//! zero-filled) after them, named by the full disk encryption extension; qemu-img's option names.

use super::error::Error;
use crate::crypto::{CipherSpec, HashAlg};
use crate::io::BlockIo;
use crate::luks::luks1::Iterations;

/// qcow2 version (qemu-img's `compat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// `compat=0.10`: version 2.
    V0_10,
    /// `compat=1.1`: version 3 (default).
    V1_1,
}

/// `preallocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// `off` (default): nothing beyond the metadata QEMU always writes.
    Off,
    /// `metadata`: every L2 table and data cluster allocated (and refcounted) up front.
    Metadata,
}

/// How guest data is encrypted.
pub enum Encryption<'a> {
    /// Not encrypted.
    None,
    /// LUKS in the full disk encryption header extension (`encrypt.format=luks`).
    Luks {
        /// Passphrase of keyslot 0.
        passphrase: &'a [u8],
        /// Cipher and IV generator (`encrypt.cipher-alg`, `encrypt.cipher-mode`,
        /// `encrypt.ivgen-alg`, `encrypt.ivgen-hash-alg`); QEMU's default aes-256-xts-plain64.
        cipher: CipherSpec,
        /// `encrypt.hash-alg` (default sha256).
        hash: HashAlg,
        /// `encrypt.iter-time` or explicit counts.
        iterations: Iterations<'a>,
    },
    /// Legacy AES-128-CBC (`encrypt.format=aes`): weak (the passphrase is the key, IVs are
    /// guessable); only for compatibility tests, and only when `i_know_it_is_weak` is true.
    LegacyAes {
        /// The key string.
        passphrase: &'a [u8],
        /// The explicit opt-in.
        i_know_it_is_weak: bool,
    },
}

/// What to create (qemu-img's `-o` options).
pub struct CreateOptions<'a> {
    /// Virtual size in bytes.
    pub size: u64,
    /// `cluster_size`: a power of two, 512 B..=2 MiB (default 64 KiB).
    pub cluster_size: u64,
    /// `compat`.
    pub compat: Compat,
    /// `refcount_bits`: 1, 2, 4, ..., 64 (default 16; above 16 needs compat 1.1).
    pub refcount_bits: u32,
    /// `extended_l2` (compat 1.1, clusters of 16 KiB or more).
    pub extended_l2: bool,
    /// `compression_type` (zstd needs compat 1.1).
    pub compression: super::compressed::Compression,
    /// `lazy_refcounts` (compat 1.1).
    pub lazy_refcounts: bool,
    /// `backing_file` (`-b`), as stored in the image.
    pub backing_file: Option<&'a [u8]>,
    /// `backing_fmt` (`-F`).
    pub backing_format: Option<&'a [u8]>,
    /// `preallocation`.
    pub preallocation: Preallocation,
    /// `encrypt.format` and its options.
    pub encryption: Encryption<'a>,
}

/// Creates a qcow2 image on `io` (expected empty; it is written from offset 0 and grown as
/// needed). Randomness (LUKS keys and salts) comes from `rng`.
#[allow(unused_variables)]
pub fn create<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    options: &mut CreateOptions<'_>,
    rng: &mut R,
) -> Result<(), Error<I::Error>> {
    todo!()
}
