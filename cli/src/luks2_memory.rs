//! LUKS2 in the CLI: the memory an open needs (Argon2 blocks, JSON buffer, allocated here
//! since the CLI has a heap), and the PBKDF2 costs a volume claims (for the KDF limits).
use std::error::Error;
use std::fs::File;

use qluks::crypto::HashAlg;
use qluks::luks::luks2::{self, binary_header::HDR_SIZES, Kdf, Luks2Header};
use qluks::luks::{KdfLimits, LuksIoError, LuksVolume};

use crate::secret::Pbkdf2Claim;

/// Largest JSON area any LUKS2 header has (4 MiB header minus the binary header).
pub const MAX_JSON: usize = HDR_SIZES[HDR_SIZES.len() - 1] as usize - 4096;

/// Caller memory for opening a LUKS2 volume in two steps: its header (read once), and Argon2
/// memory in bytes for its most demanding keyslot within the limits.
pub struct Luks2Memory {
    header: Box<Luks2Header>,
    kdf: Vec<u8>,
}

impl Luks2Memory {
    /// Reads the volume's metadata to size the memory; `None` for a LUKS1 volume. Argon2
    /// memory is sized for the most demanding keyslot *within `limits`*: a keyslot the limits
    /// refuse costs no allocation (the unlock refuses it before any work).
    pub fn for_volume(file: &mut File, limits: &KdfLimits) -> Result<Option<Luks2Memory>, Box<dyn Error>> {
        let mut version = [0u8; 8];
        qluks::io::BlockIo::read_at(file, 0, &mut version)?;
        if u16::from_be_bytes([version[6], version[7]]) != 2 {
            return Ok(None);
        }
        let mut json = vec![0u8; MAX_JSON];
        let header = luks2::Luks2Header::read(file, &mut json)?;
        let bytes = header.kdf_memory_within(limits, None);
        let bytes = usize::try_from(bytes).map_err(|_| format!("Argon2 needs {bytes} bytes of memory"))?;
        Ok(Some(Luks2Memory { header, kdf: vec![0u8; bytes] }))
    }

    /// Unlocks with the header read by [`Luks2Memory::for_volume`] (not read again), within
    /// the KDF `limits` the memory was sized for.
    pub fn open(
        mut self,
        file: File,
        passphrase: &[u8],
        limits: &KdfLimits,
    ) -> Result<LuksVolume<File>, LuksIoError<std::io::Error>> {
        LuksVolume::open_luks2_header(file, &self.header, passphrase, None, &mut self.kdf, limits)
    }
}

/// The PBKDF2 claims of the LUKS2 volume in `file`: its PBKDF2 keyslots and digests (a hash
/// qluks does not know is left out: the unlock refuses it).
pub fn pbkdf2_claims(file: &mut File) -> Result<Vec<Pbkdf2Claim>, Box<dyn Error>> {
    let mut json = vec![0u8; MAX_JSON];
    let header = luks2::Luks2Header::read(file, &mut json)?;
    let m = &header.metadata;
    let slots = m.keyslots().filter_map(|(_, k)| match &k.kdf {
        Kdf::Pbkdf2 { hash, iterations, .. } => Some((hash.as_str(), *iterations, k.area.key_size as usize)),
        Kdf::Argon2 { .. } => None,
    });
    let digests = m.digests().map(|(_, d)| (d.hash.as_str(), d.iterations, d.digest.as_slice().len()));
    let claim = |(name, iterations, out_len): (&str, u32, usize)| {
        Some(Pbkdf2Claim { hash: HashAlg::from_name(name).ok()?, iterations, out_len })
    };
    Ok(slots.chain(digests).filter_map(claim).collect())
}
