//! `qluks luks add-key|remove-key|change-key`: keyslot management of a LUKS1 volume.
use std::error::Error;
use std::fs::{File, OpenOptions as FileOptions};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use qluks::crypto::OsRng;
use qluks::luks::luks1::{self, Iterations, Luks1Header};
use qluks::luks::LuksIoError;

use crate::secret::{luks1_claims, NewSecretArgs, SecretArgs};

/// `qluks luks` arguments.
#[derive(Args)]
pub struct LuksArgs {
    #[command(subcommand)]
    what: LuksCmd,
}

#[derive(Subcommand)]
// The subcommand names (add-key, remove-key, change-key) follow cryptsetup's verbs.
#[allow(clippy::enum_variant_names)]
enum LuksCmd {
    /// Add a passphrase in a free keyslot (an existing passphrase unlocks the volume key).
    AddKey {
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        new: NewSecretArgs,
        /// Keyslot for the new passphrase (default: the first free one).
        #[arg(long)]
        slot: Option<usize>,
        #[command(flatten)]
        iterations: IterationArgs,
        /// The volume.
        image: PathBuf,
    },
    /// Remove a keyslot, overwriting its key material: `--slot N`, or the keyslot the given
    /// passphrase opens.
    RemoveKey {
        #[command(flatten)]
        secret: SecretArgs,
        /// Keyslot to remove (no passphrase needed).
        #[arg(long)]
        slot: Option<usize>,
        /// Allow removing the last active keyslot (the data becomes unreadable).
        #[arg(long)]
        force: bool,
        /// The volume.
        image: PathBuf,
    },
    /// Replace a passphrase with a new one.
    ChangeKey {
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        new: NewSecretArgs,
        /// Only try this keyslot for the old passphrase.
        #[arg(long)]
        slot: Option<usize>,
        #[command(flatten)]
        iterations: IterationArgs,
        /// The volume.
        image: PathBuf,
    },
}

/// PBKDF2 cost of a new keyslot.
#[derive(Args)]
struct IterationArgs {
    /// Target unlock time in milliseconds (QEMU's iter-time).
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    iter_time: u32,
    /// Explicit iteration count (overrides --iter-time).
    #[arg(long, value_name = "N")]
    iterations: Option<u32>,
}

impl IterationArgs {
    fn keyslot_iterations(&self, header: &Luks1Header) -> Result<u32, Box<dyn Error>> {
        if let Some(n) = self.iterations {
            return Ok(n);
        }
        let mut clock = crate::cpu_time::calibration_clock();
        let mut it = Iterations::IterTime { ms: self.iter_time, clock_ns: &mut clock };
        Ok(it.resolve(header.hash, header.key_bytes as usize)?.0)
    }
}

fn open(path: &Path) -> Result<(File, Luks1Header), Box<dyn Error>> {
    let mut file =
        FileOptions::new().read(true).write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let header = luks1::Luks1Header::read(&mut file, 0).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((file, header))
}

/// A LUKS error with the volume's name and, for a refused KDF cost, how to allow it.
fn with_hint(path: &Path, e: LuksIoError<std::io::Error>) -> String {
    let hint = e.luks().map(crate::secret::kdf_hint).unwrap_or_default();
    format!("{}: {e}{hint}", path.display())
}

/// Runs `qluks luks ...`.
pub fn run(args: LuksArgs) -> Result<(), Box<dyn Error>> {
    match args.what {
        LuksCmd::AddKey { secret, new, slot, iterations, image } => {
            let (mut file, mut header) = open(&image)?;
            let old = secret.get("Existing passphrase: ")?;
            let limits = secret.kdf.limits(&luks1_claims(&header));
            let (_, key) = luks1::unlock_with_limits(&mut file, 0, None, &header, &old, None, &limits)
                .map_err(|e| with_hint(&image, e))?;
            let new = new.get()?;
            let n = iterations.keyslot_iterations(&header)?;
            let k = luks1::add_keyslot(&mut file, 0, None, &mut header, &key, &new, slot, n, &mut OsRng)?;
            println!("added keyslot {k}");
        }
        LuksCmd::RemoveKey { secret, slot, force, image } => {
            let (mut file, mut header) = open(&image)?;
            let k = match slot {
                Some(k) if !secret.is_given() => k,
                _ => {
                    let pass = secret.get("Passphrase to remove: ")?;
                    let limits = secret.kdf.limits(&luks1_claims(&header));
                    luks1::unlock_with_limits(&mut file, 0, None, &header, &pass, slot, &limits)
                        .map_err(|e| with_hint(&image, e))?
                        .0
                }
            };
            luks1::remove_keyslot(&mut file, 0, None, &mut header, k, force, &mut OsRng)?;
            println!("removed keyslot {k}");
        }
        LuksCmd::ChangeKey { secret, new, slot, iterations, image } => {
            let (mut file, mut header) = open(&image)?;
            let old = secret.get("Old passphrase: ")?;
            let new = new.get()?;
            let n = iterations.keyslot_iterations(&header)?;
            let limits = secret.kdf.limits(&luks1_claims(&header));
            let k = luks1::change_passphrase_with_limits(
                &mut file,
                0,
                None,
                &mut header,
                &old,
                &new,
                slot,
                n,
                &limits,
                &mut OsRng,
            )
            .map_err(|e| with_hint(&image, e))?;
            println!("passphrase now in keyslot {k}");
        }
    }
    Ok(())
}
