//! Keyslots of the LUKS header inside a qcow2 image (`qemu-img amend -o encrypt.state=…,
//! encrypt.keyslot=…, encrypt.new-secret=…, encrypt.old-secret=…, encrypt.iter-time=…`, QEMU's
//! `qcrypto_block_luks_amend_options`; iotests 293/294).
//!
//! Everything stays inside the header area the FDE extension names (offset and length): no
//! cluster is allocated and no refcount changes.
//!
//! # Write order (a crash after any single write leaves the old or the new passphrase set)
//!
//! - Adding: the key material of the free keyslot is written and flushed, then the phdr with
//!   the keyslot active is written and flushed.
//! - Erasing: the phdr with the keyslot inactive (iterations and salt cleared) is written and
//!   flushed first, then the key material is overwritten with random bytes and flushed (as
//!   QEMU's `qcrypto_block_luks_erase_key`), so that an old copy of the phdr cannot bring the
//!   passphrase back (iotest 294). QEMU overwrites 40 times; one pass of fresh random bytes
//!   leaves nothing to recover on a file or a block device.
//!
//! # Memory
//!
//! Stack only: 4 KiB of key material at a time (zeroized), the phdr (592 bytes) and a copy.

use super::error::{Error, HeaderError};
use super::header::CryptMethod;
use super::table_write::write_aligned;
use super::Qcow2;
use crate::io::BlockIo;
use crate::luks::luks1::{self, Luks1Header, KEYSLOTS};
use crate::luks::{KdfLimits, LuksError, LuksIoError, SECTOR};
use zeroize::Zeroize;

/// What to change (qemu-img amend's `encrypt.*` options).
#[derive(Clone, Copy)]
pub struct AmendKeyslots<'a> {
    /// `encrypt.state`: add a keyslot (active) or erase keyslots (inactive).
    pub state: KeyslotState,
    /// `encrypt.keyslot`: the keyslot to fill or erase (default: the first free one; for
    /// erasing, the keyslots `old_secret` opens).
    pub keyslot: Option<usize>,
    /// `encrypt.new-secret`: the passphrase of the new keyslot (required to add, refused when
    /// erasing).
    pub new_secret: Option<&'a [u8]>,
    /// `encrypt.old-secret`: erase the keyslots this passphrase opens (refused when adding).
    pub old_secret: Option<&'a [u8]>,
    /// PBKDF2 iterations of the new keyslot (QEMU's `encrypt.iter-time` measured on this
    /// machine: see [`keyslot_iterations`]); refused when erasing.
    pub iterations: Option<u32>,
}

impl core::fmt::Debug for AmendKeyslots<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the secrets.
        f.debug_struct("AmendKeyslots")
            .field("state", &self.state)
            .field("keyslot", &self.keyslot)
            .field("new_secret", &self.new_secret.map(|_| "…"))
            .field("old_secret", &self.old_secret.map(|_| "…"))
            .field("iterations", &self.iterations)
            .finish()
    }
}

/// `encrypt.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyslotState {
    /// Add a keyslot.
    Active,
    /// Erase keyslots.
    Inactive,
}

/// Why an amend was refused (nothing was written), with QEMU's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AmendError {
    /// The image is not LUKS-encrypted (no embedded header to amend).
    NotLuks,
    /// Adding a keyslot needs `new-secret`.
    NewSecretRequired,
    /// `old-secret` was given while adding a keyslot.
    OldSecretWhileAdding,
    /// `new-secret` or `iter-time` was given while erasing.
    NewSecretWhileErasing,
    /// The keyslot number is not 0..=7.
    KeyslotOutOfRange {
        /// The number given.
        keyslot: usize,
    },
    /// Every keyslot is in use.
    NoFreeKeyslot,
    /// The keyslot to fill is active (erase it first).
    KeyslotActive {
        /// The keyslot.
        keyslot: usize,
    },
    /// The keyslot to erase is already inactive.
    KeyslotInactive {
        /// The keyslot.
        keyslot: usize,
    },
    /// The keyslot to erase does not hold `old-secret`.
    KeyslotNotOldSecret {
        /// The keyslot.
        keyslot: usize,
    },
    /// No keyslot holds `old-secret`.
    NoKeyslotMatches,
    /// Erasing would leave no active keyslot (the data would be lost for good).
    LastKeyslot,
    /// Erasing needs a keyslot or `old-secret`.
    EraseWhat,
}

impl core::fmt::Display for AmendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AmendError::NotLuks => write!(f, "the image is not LUKS-encrypted: no keyslots to amend"),
            AmendError::NewSecretRequired => write!(f, "encrypt.new-secret is required to activate a keyslot"),
            AmendError::OldSecretWhileAdding => {
                write!(f, "encrypt.old-secret must not be given when activating keyslots")
            }
            AmendError::NewSecretWhileErasing => {
                write!(f, "encrypt.new-secret and encrypt.iter-time must not be given when erasing keyslots")
            }
            AmendError::KeyslotOutOfRange { keyslot } => {
                write!(f, "invalid keyslot {keyslot}: must be between 0 and {}", KEYSLOTS - 1)
            }
            AmendError::NoFreeKeyslot => write!(f, "cannot add a keyslot: all keyslots are in use"),
            AmendError::KeyslotActive { keyslot } => {
                write!(f, "refusing to overwrite active keyslot {keyslot}: erase it first")
            }
            AmendError::KeyslotInactive { keyslot } => write!(f, "keyslot {keyslot} is already erased (inactive)"),
            AmendError::KeyslotNotOldSecret { keyslot } => {
                write!(f, "keyslot {keyslot} does not hold the given old passphrase")
            }
            AmendError::NoKeyslotMatches => write!(f, "no keyslot holds the given old passphrase"),
            AmendError::LastKeyslot => {
                write!(f, "erasing would leave no active keyslot and make the data unreadable for good: refused")
            }
            AmendError::EraseWhat => {
                write!(f, "to erase keyslots, give encrypt.keyslot or encrypt.old-secret (the passphrase they hold)")
            }
        }
    }
}

impl core::error::Error for AmendError {}

impl<E> From<AmendError> for Error<E> {
    fn from(e: AmendError) -> Self {
        Error::Amend(e)
    }
}

/// PBKDF2 iterations that take about `iter_time_ms` here for a keyslot of `header` (QEMU's
/// `encrypt.iter-time`, default 2000), at least 1000, measured with `clock_ns`.
pub fn keyslot_iterations(
    header: &Luks1Header,
    iter_time_ms: u32,
    clock_ns: &mut dyn FnMut() -> u64,
) -> Result<u32, LuksError> {
    let per_sec = luks1::calibrate(header.hash, header.key_bytes as usize, clock_ns)?;
    let n = per_sec.saturating_mul(u64::from(iter_time_ms)) / 1000;
    Ok(n.clamp(u64::from(luks1::MIN_ITERATIONS), u64::from(u32::MAX / 2)) as u32)
}

fn luks_err<E>(e: LuksIoError<E>) -> Error<E> {
    match e {
        LuksIoError::Io(e) => Error::Io(e),
        LuksIoError::Luks(e) => Error::Luks(e),
    }
}

impl<I: BlockIo, D: BlockIo<Error = I::Error>, const N: usize> Qcow2<I, D, N> {
    /// The embedded LUKS header (read from the image), or why there is none.
    pub fn luks_header(&mut self) -> Result<Luks1Header, Error<I::Error>> {
        let (offset, _) = self.luks_area()?;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        Luks1Header::read(io, offset).map_err(luks_err)
    }

    /// Offset and length of the LUKS header area (checked inside the file).
    fn luks_area(&mut self) -> Result<(u64, u64), Error<I::Error>> {
        if self.io.is_none() {
            return Err(Error::NotOpen);
        }
        if self.header.crypt_method != CryptMethod::Luks {
            return Err(AmendError::NotLuks.into());
        }
        let fde = self.extensions.fde.ok_or(Error::Header(HeaderError::LuksWithoutFde))?;
        if fde.offset.saturating_add(fde.length) > self.file_size {
            return Err(Error::Corrupt(super::Corruption::PastEndOfFile {
                table: super::header::Table::Fde,
                offset: fde.offset,
                file_size: self.file_size,
            }));
        }
        Ok((fde.offset, fde.length))
    }

    /// Adds or erases keyslots of the embedded LUKS header as `qemu-img amend -o encrypt.…`
    /// does (QEMU's rules and refusals, [`AmendError`]); see the module docs for the write
    /// order. `passphrase` (any active keyslot's; QEMU's `encrypt.key-secret` the image is
    /// opened with) unlocks the volume key a new keyslot stores; erasing does not need it.
    /// Unlocking obeys `limits` (see [`luks1::unlock_with_limits`]). Returns the keyslots
    /// changed (bit `k` for keyslot `k`). The image may be opened with
    /// [`Qcow2::open_metadata`]; an image with the corrupt bit is refused.
    pub fn amend_keyslots<R: rand_core::TryCryptoRng + ?Sized>(
        &mut self,
        passphrase: Option<&[u8]>,
        opts: &AmendKeyslots<'_>,
        limits: &KdfLimits,
        rng: &mut R,
    ) -> Result<u8, Error<I::Error>> {
        let (area, area_len) = self.luks_area()?;
        if self.header.incompatible(super::Incompatible::Corrupt) {
            return Err(Error::CorruptImage);
        }
        let header = self.luks_header()?;
        match opts.state {
            KeyslotState::Active => self.add_keyslot(area, area_len, header, passphrase, opts, limits, rng),
            KeyslotState::Inactive => self.erase_keyslots(area, area_len, header, opts, limits, rng),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_keyslot<R: rand_core::TryCryptoRng + ?Sized>(
        &mut self,
        area: u64,
        area_len: u64,
        header: Luks1Header,
        passphrase: Option<&[u8]>,
        opts: &AmendKeyslots<'_>,
        limits: &KdfLimits,
        rng: &mut R,
    ) -> Result<u8, Error<I::Error>> {
        let new = opts.new_secret.ok_or(AmendError::NewSecretRequired)?;
        if opts.old_secret.is_some() {
            return Err(AmendError::OldSecretWhileAdding.into());
        }
        let k = match opts.keyslot {
            Some(k) if k >= KEYSLOTS => return Err(AmendError::KeyslotOutOfRange { keyslot: k }.into()),
            Some(k) => k,
            None => header.keyslots.iter().position(|s| !s.active).ok_or(AmendError::NoFreeKeyslot)?,
        };
        if header.keyslots[k].active {
            return Err(AmendError::KeyslotActive { keyslot: k }.into());
        }
        let end = header.keyslots[k].material_range(header.key_bytes).end;
        if end > area_len {
            return Err(Error::Luks(LuksError::KeyMaterialOutsideArea { keyslot: k, end, area_len }));
        }
        let passphrase = passphrase.ok_or(Error::PassphraseRequired)?;
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        let (_, key) =
            luks1::unlock_with_limits(io, area, Some(area_len), &header, passphrase, None, limits).map_err(luks_err)?;
        let iterations = match opts.iterations {
            Some(n) => n,
            // QEMU's floor; callers measure iter-time (`keyslot_iterations`).
            None => luks1::MIN_ITERATIONS,
        };
        let mut updated = header.clone();
        luks1::write_keyslot(io, area, &mut updated, k, new, &key, iterations, rng).map_err(luks_err)?;
        drop(key);
        updated.validate().map_err(Error::Luks)?;
        // The key material is durable before the phdr names it.
        io.flush().map_err(Error::Io)?;
        write_aligned(io, area, &updated.to_bytes()).map_err(Error::Io)?;
        io.flush().map_err(Error::Io)?;
        Ok(1 << k)
    }

    fn erase_keyslots<R: rand_core::TryCryptoRng + ?Sized>(
        &mut self,
        area: u64,
        area_len: u64,
        header: Luks1Header,
        opts: &AmendKeyslots<'_>,
        limits: &KdfLimits,
        rng: &mut R,
    ) -> Result<u8, Error<I::Error>> {
        if opts.new_secret.is_some() || opts.iterations.is_some() {
            return Err(AmendError::NewSecretWhileErasing.into());
        }
        let active = header.active_keyslots().fold(0u8, |m, k| m | 1 << k);
        let io = self.io.as_mut().ok_or(Error::NotOpen)?;
        // Whether `old` opens keyslot `k`.
        let opens = |io: &mut I, k: usize, old: &[u8]| match luks1::unlock_with_limits(
            io,
            area,
            Some(area_len),
            &header,
            old,
            Some(k),
            limits,
        ) {
            Ok(_) => Ok(true),
            Err(LuksIoError::Luks(e)) if e.is_wrong_passphrase() => Ok(false),
            Err(e) => Err(luks_err(e)),
        };
        let erase = match (opts.keyslot, opts.old_secret) {
            (Some(k), _) if k >= KEYSLOTS => return Err(AmendError::KeyslotOutOfRange { keyslot: k }.into()),
            (Some(k), old) => {
                if active & (1 << k) == 0 {
                    return Err(AmendError::KeyslotInactive { keyslot: k }.into());
                }
                if let Some(old) = old {
                    if !opens(io, k, old)? {
                        return Err(AmendError::KeyslotNotOldSecret { keyslot: k }.into());
                    }
                }
                1u8 << k
            }
            (None, Some(old)) => {
                let mut m = 0u8;
                for k in header.active_keyslots() {
                    if opens(io, k, old)? {
                        m |= 1 << k;
                    }
                }
                if m == 0 {
                    return Err(AmendError::NoKeyslotMatches.into());
                }
                m
            }
            (None, None) => return Err(AmendError::EraseWhat.into()),
        };
        if erase == active {
            return Err(AmendError::LastKeyslot.into());
        }
        let mut updated = header;
        for k in (0..KEYSLOTS).filter(|k| erase & (1 << k) != 0) {
            let end = updated.keyslots[k].material_range(updated.key_bytes).end;
            if end > area_len {
                return Err(Error::Luks(LuksError::KeyMaterialOutsideArea { keyslot: k, end, area_len }));
            }
            let slot = &mut updated.keyslots[k];
            slot.active = false;
            slot.iterations = 0;
            slot.salt = [0; 32];
            updated.validate().map_err(Error::Luks)?;
            write_aligned(io, area, &updated.to_bytes()).map_err(Error::Io)?;
            io.flush().map_err(Error::Io)?;
            wipe_material(io, area, &updated, k, rng)?;
        }
        Ok(erase)
    }
}

/// Overwrites keyslot `k`'s key material with random bytes and flushes.
fn wipe_material<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    area: u64,
    header: &Luks1Header,
    k: usize,
    rng: &mut R,
) -> Result<(), Error<I::Error>> {
    let range = header.keyslots[k].material_range(header.key_bytes);
    let mut buf = [0u8; 8 * SECTOR];
    let mut at = range.start;
    let mut result = Ok(());
    while at < range.end {
        let n = ((range.end - at) as usize).min(buf.len());
        if rng.try_fill_bytes(&mut buf[..n]).is_err() {
            result = Err(Error::Crypto(crate::crypto::Error::Random));
            break;
        }
        if let Err(e) = write_aligned(io, area + at, &buf[..n]) {
            result = Err(Error::Io(e));
            break;
        }
        at += n as u64;
    }
    buf.zeroize();
    result?;
    io.flush().map_err(Error::Io)
}
