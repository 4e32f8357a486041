//! Creating (formatting) a LUKS2 volume with cryptsetup's layout: two 16 KiB metadata copies,
//! keyslot 0's area at 32 KiB, the data at `data_offset` (16 MiB by default; 0 for a detached
//! header).
//!
//! Nothing is allocated: the JSON text is written into a fixed 12 KiB area on the stack, key
//! material is split, encrypted and written a few sectors at a time. Key material goes to disk
//! before the metadata, the secondary copy before the primary, so an interrupted format leaves
//! no header that names missing key material.
//!
//! ```
//! use qluks::crypto::HashAlg;
//! use qluks::io::MemIo;
//! use qluks::luks::luks2::create::{format, CreateKdf, CreateParams};
//! use qluks::luks::{LuksIoError, LuksVolume, OpenOptions};
//!
//! # fn main() -> Result<(), LuksIoError<qluks::io::MemIoError>> {
//! # let mut rng = doc_support::Rng(5); // use `qluks::crypto::OsRng` (feature `std`) or your RNG
//! let params = CreateParams {
//!     kdf: CreateKdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1000 }, // or Argon2id
//!     digest_iterations: 1000,
//!     data_offset: 1 << 20, // 1 MiB of metadata and keyslot area, then the data
//!     ..Default::default() // aes-xts-plain64, 512-bit key, 4096-byte sectors
//! };
//! let mut disk = vec![0u8; (1 << 20) + 64 * 1024];
//! let key = format(&mut MemIo::new(&mut disk), &params, b"secret", &mut [], &mut rng)?;
//! assert_eq!(key.len(), 64);
//!
//! let mut volume = LuksVolume::open(MemIo::new(&mut disk), b"secret", OpenOptions::default())?;
//! assert_eq!(volume.size(), 64 * 1024);
//! volume.write_at(4096, &[0xee; 4096])?; // encrypted on the way to the device
//! # let mut back = [0u8; 4096];
//! # volume.read_at(4096, &mut back)?;
//! # assert_eq!(back, [0xee; 4096]);
//! # Ok(())
//! # }
//! # mod doc_support {
//! #     pub struct Rng(pub u64);
//! #     impl rand_core::TryRng for Rng {
//! #         type Error = core::convert::Infallible;
//! #         fn try_next_u32(&mut self) -> Result<u32, Self::Error> { Ok(self.try_next_u64()? as u32) }
//! #         fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
//! #             self.0 ^= self.0 << 13; self.0 ^= self.0 >> 7; self.0 ^= self.0 << 17; Ok(self.0)
//! #         }
//! #         fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
//! #             for b in dst { *b = self.try_next_u64()? as u8; } Ok(())
//! #         }
//! #     }
//! #     impl rand_core::TryCryptoRng for Rng {}
//! #     /// A LUKS2 volume (PBKDF2 keyslot, 16 KiB metadata copies, data at 1 MiB).
//! #     #[allow(dead_code)]
//! #     pub fn luks2_volume(pass: &[u8]) -> Vec<u8> {
//! #         use qluks::luks::luks2::create::{format, CreateKdf, CreateParams};
//! #         let kdf = CreateKdf::Pbkdf2 { hash: qluks::crypto::HashAlg::Sha256, iterations: 1000 };
//! #         let params = CreateParams { kdf, digest_iterations: 1000, data_offset: 1 << 20, ..Default::default() };
//! #         let mut disk = vec![0u8; (1 << 20) + 8192];
//! #         format(&mut qluks::io::MemIo::new(&mut disk), &params, pass, &mut [], &mut Rng(9)).unwrap();
//! #         disk
//! #     }
//! # }
//! ```

use core::fmt::{self, Write as _};

use base64ct::Encoding as _;
use zeroize::Zeroize;

use super::binary_header::{
    Checksum, ChecksumAlg, BINARY_HEADER_SIZE, CSUM_LEN, MAGIC_PRIMARY, MAGIC_SECONDARY, OFF_CSUM,
};
use super::kdf::derive;
use super::metadata::{Argon2Variant, Kdf, AF_STRIPES};
use super::text::{Bytes, Name};
use crate::crypto::{pbkdf2, AfSplit, CipherSpec, HashAlg, SectorCipher, VolumeKey};
use crate::io::BlockIo;
use crate::luks::{LuksError, LuksIoError, SECTOR};

/// Header size (binary header + JSON area) of each copy, cryptsetup's default.
pub const HDR_SIZE: u64 = 0x4000;
/// Where keyslot areas start: after both copies.
pub const KEYSLOTS_OFFSET: u64 = 2 * HDR_SIZE;
/// cryptsetup's default data offset (and so keyslots area end).
pub const DEFAULT_DATA_OFFSET: u64 = 16 << 20;
const JSON_AREA: usize = HDR_SIZE as usize - BINARY_HEADER_SIZE;

/// The keyslot's KDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKdf {
    /// PBKDF2 with `hash`.
    Pbkdf2 {
        /// PRF hash.
        hash: HashAlg,
        /// Iterations.
        iterations: u32,
    },
    /// Argon2id (cryptsetup's default), working in the caller's memory.
    Argon2id {
        /// Passes.
        time: u32,
        /// Memory in KiB.
        memory_kib: u32,
        /// Lanes.
        cpus: u32,
    },
}

/// What to create.
#[derive(Debug, Clone, Copy)]
pub struct CreateParams {
    /// Data and keyslot-area cipher (default aes-xts-plain64, 512-bit key).
    pub cipher: CipherSpec,
    /// Encryption sector size: 512, 1024, 2048 or 4096.
    pub sector_size: u32,
    /// Luks2Keyslot 0's KDF.
    pub kdf: CreateKdf,
    /// Luks2Digest (PBKDF2-SHA256) iterations, at least 1000.
    pub digest_iterations: u32,
    /// Data offset in bytes (a multiple of 4096, room for the keyslot after 32 KiB), or 0 for a
    /// detached header, whose keyslots area then takes cryptsetup's default size (the header
    /// device needs [`DEFAULT_DATA_OFFSET`] bytes, as cryptsetup checks).
    pub data_offset: u64,
}

impl Default for CreateParams {
    fn default() -> Self {
        CreateParams {
            cipher: CipherSpec::DEFAULT,
            sector_size: 4096,
            kdf: CreateKdf::Argon2id { time: 4, memory_kib: 1 << 20, cpus: 4 },
            digest_iterations: 100_000,
            data_offset: DEFAULT_DATA_OFFSET,
        }
    }
}

/// Writes into a byte slice, failing when it is full.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).filter(|&e| e <= self.buf.len()).ok_or(fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn random<R: rand_core::TryCryptoRng + ?Sized>(rng: &mut R, out: &mut [u8]) -> Result<(), LuksError> {
    rng.try_fill_bytes(out).map_err(|_| LuksError::Crypto(crate::crypto::Error::Random))
}

/// Standard padded base64 of up to 64 bytes.
struct Base64<'a>(&'a [u8]);

impl fmt::Display for Base64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 88];
        f.write_str(base64ct::Base64::encode(self.0, &mut out).map_err(|_| fmt::Error)?)
    }
}

/// Formats a LUKS2 volume in `io` with keyslot 0 for `passphrase`; returns the new volume key.
/// Argon2id works in `kdf_memory` (at least the KDF's memory). The data area itself is not
/// touched, and sizing the device for it is the caller's business.
pub fn format<I: BlockIo, R: rand_core::TryCryptoRng + ?Sized>(
    io: &mut I,
    params: &CreateParams,
    passphrase: &[u8],
    kdf_memory: &mut [u8],
    rng: &mut R,
) -> Result<VolumeKey, LuksIoError<I::Error>> {
    let spec = params.cipher;
    let key_size = spec.key_bytes;
    let s = params.sector_size;
    if !s.is_power_of_two() || !(512..=4096).contains(&s) {
        return Err(LuksError::SectorSize { sector_size: s as usize }.into());
    }
    if params.digest_iterations < 1000 || params.digest_iterations > crate::luks::luks1::MAX_ITERATIONS {
        return Err(LuksError::DigestIterations { iterations: params.digest_iterations }.into());
    }
    let material_len = (key_size as u64 * u64::from(AF_STRIPES)).div_ceil(SECTOR as u64) * SECTOR as u64;
    let area_size = material_len.next_multiple_of(4096);
    let keyslots_size = match params.data_offset {
        0 => DEFAULT_DATA_OFFSET - KEYSLOTS_OFFSET,
        offset if offset.is_multiple_of(4096) && offset >= KEYSLOTS_OFFSET + area_size => offset - KEYSLOTS_OFFSET,
        offset => return Err(LuksError::PayloadOffset { payload_offset: (offset / SECTOR as u64) as u32 }.into()),
    };

    let key = VolumeKey::random(key_size, rng)?;
    let mut kdf_salt = [0u8; 32];
    let mut digest_salt = [0u8; 32];
    random(rng, &mut kdf_salt)?;
    random(rng, &mut digest_salt)?;
    let salt = Bytes::new(&kdf_salt).ok_or(LuksError::Crypto(crate::crypto::Error::Random))?;
    let kdf = match params.kdf {
        CreateKdf::Pbkdf2 { hash, iterations } => {
            if iterations == 0 || iterations > crate::luks::luks1::MAX_ITERATIONS {
                return Err(LuksError::KeyslotIterations { keyslot: 0, iterations }.into());
            }
            Kdf::Pbkdf2 { hash: Name::truncated(hash.name()), iterations, salt }
        }
        CreateKdf::Argon2id { time, memory_kib, cpus } => {
            let params = crate::crypto::argon2::Params {
                variant: crate::crypto::argon2::Variant::Argon2id,
                time,
                memory_kib,
                lanes: cpus,
            };
            if params.memory_bytes().is_none() || key_size < 4 {
                return Err(super::Luks2Error::Argon2Failed.into());
            }
            Kdf::Argon2 { variant: Argon2Variant::Argon2id, time, memory_kib, cpus, salt }
        }
    };

    // Luks2Keyslot 0: area key from the passphrase, key material split and encrypted into the area.
    let mut area_key = VolumeKey::zeroed(key_size)?;
    derive(&kdf, passphrase, area_key.as_mut_bytes(), kdf_memory)?;
    let cipher = SectorCipher::new(spec, area_key.as_bytes())?;
    drop(area_key);
    let mut split = AfSplit::new(HashAlg::Sha256, &key, AF_STRIPES)?;
    let mut buf = [0u8; 8 * SECTOR];
    let mut done = 0u64;
    let mut result = Ok(());
    while done < area_size {
        let n = ((area_size - done) as usize).min(buf.len());
        let chunk = &mut buf[..n];
        // Past the key material the splitter yields zeros; encrypted they wipe the area's tail.
        let step = split
            .fill(chunk, rng)
            .map_err(LuksIoError::from)
            .and_then(|()| Ok(cipher.encrypt_sectors(chunk, SECTOR, done / SECTOR as u64)?))
            .and_then(|()| io.write_at(KEYSLOTS_OFFSET + done, chunk).map_err(LuksIoError::Io));
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        done += n as u64;
    }
    buf.zeroize();
    result?;

    let mut digest = [0u8; 32];
    pbkdf2(HashAlg::Sha256, key.as_bytes(), &digest_salt, params.digest_iterations, &mut digest)?;

    let mut json = [0u8; JSON_AREA];
    let mut w = SliceWriter { buf: &mut json, len: 0 };
    let encryption = EncryptionName(spec);
    let kdf_json = KdfJson(&kdf);
    let written = write!(
        w,
        "{{\"keyslots\":{{\"0\":{{\"type\":\"luks2\",\"key_size\":{key_size},\
         \"af\":{{\"type\":\"luks1\",\"stripes\":{AF_STRIPES},\"hash\":\"sha256\"}},\
         \"area\":{{\"type\":\"raw\",\"offset\":\"{KEYSLOTS_OFFSET}\",\"size\":\"{area_size}\",\
         \"encryption\":\"{encryption}\",\"key_size\":{key_size}}},\"kdf\":{kdf_json}}}}},\
         \"tokens\":{{}},\
         \"segments\":{{\"0\":{{\"type\":\"crypt\",\"offset\":\"{}\",\"size\":\"dynamic\",\"iv_tweak\":\"0\",\
         \"encryption\":\"{encryption}\",\"sector_size\":{s}}}}},\
         \"digests\":{{\"0\":{{\"type\":\"pbkdf2\",\"keyslots\":[\"0\"],\"segments\":[\"0\"],\"hash\":\"sha256\",\
         \"iterations\":{},\"salt\":\"{}\",\"digest\":\"{}\"}}}},\
         \"config\":{{\"json_size\":\"{JSON_AREA}\",\"keyslots_size\":\"{keyslots_size}\"}}}}",
        params.data_offset,
        params.digest_iterations,
        Base64(&digest_salt),
        Base64(&digest),
    );
    // The text is under a KiB; a 12 KiB area cannot overflow.
    written.map_err(|_| super::Luks2Error::JsonTooLarge { len: JSON_AREA, capacity: JSON_AREA })?;
    debug_assert_eq!(super::metadata::Metadata::parse(&w.buf[..w.len], HDR_SIZE).err(), None);

    let uuid = crate::luks::luks1::uuid_v4(rng)?;
    for (offset, magic) in [(HDR_SIZE, MAGIC_SECONDARY), (0, MAGIC_PRIMARY)] {
        let mut bin = [0u8; BINARY_HEADER_SIZE];
        bin[..6].copy_from_slice(&magic);
        bin[6..8].copy_from_slice(&2u16.to_be_bytes());
        bin[8..16].copy_from_slice(&HDR_SIZE.to_be_bytes());
        bin[16..24].copy_from_slice(&1u64.to_be_bytes());
        bin[72..78].copy_from_slice(b"sha256");
        random(rng, &mut bin[104..168])?;
        bin[168..208].copy_from_slice(&uuid);
        bin[256..264].copy_from_slice(&offset.to_be_bytes());
        let mut sum = Checksum::new(ChecksumAlg::Sha256);
        sum.update(&bin);
        sum.update(&json);
        bin[OFF_CSUM..OFF_CSUM + CSUM_LEN].copy_from_slice(&sum.finish());
        io.write_at(offset + BINARY_HEADER_SIZE as u64, &json).map_err(LuksIoError::Io)?;
        io.write_at(offset, &bin).map_err(LuksIoError::Io)?;
    }
    io.flush().map_err(LuksIoError::Io)?;
    digest.zeroize();
    Ok(key)
}

/// The LUKS2 `encryption` string of a spec: `aes-xts-plain64`.
struct EncryptionName(CipherSpec);

impl fmt::Display for EncryptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0.cipher_name(), self.0.mode_name())
    }
}

/// The `kdf` object of a keyslot.
struct KdfJson<'a>(&'a Kdf);

impl fmt::Display for KdfJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Kdf::Pbkdf2 { hash, iterations, salt } => write!(
                f,
                "{{\"type\":\"pbkdf2\",\"hash\":\"{hash}\",\"iterations\":{iterations},\"salt\":\"{}\"}}",
                Base64(salt.as_slice())
            ),
            Kdf::Argon2 { time, memory_kib, cpus, salt, .. } => write!(
                f,
                "{{\"type\":\"{}\",\"time\":{time},\"memory\":{memory_kib},\"cpus\":{cpus},\"salt\":\"{}\"}}",
                self.0.name(),
                Base64(salt.as_slice())
            ),
        }
    }
}
