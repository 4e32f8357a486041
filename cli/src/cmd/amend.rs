//! `qluks amend -o encrypt.state=active|inactive,encrypt.keyslot=N,encrypt.new-secret=ID,
//! encrypt.old-secret=ID,encrypt.iter-time=MS [--object secret,id=ID,data=…|file=…] IMAGE`:
//! the keyslots of the LUKS header inside a qcow2 image, like `qemu-img amend`.
//!
//! Secrets come as in qemu-img (`--object secret,id=ID,data=TEXT` or `file=PATH`, named by the
//! `encrypt.*-secret` options; `encrypt.key-secret=ID` unlocks) or from files and variables:
//! `--passphrase-file/-env` (unlocks), `--new-passphrase-file/-env`, `--old-passphrase-file`.
use std::error::Error;
use std::fs::OpenOptions;
use std::path::PathBuf;

use clap::Args;
use qluks::crypto::OsRng;
use qluks::qcow2::amend::{keyslot_iterations, AmendKeyslots, KeyslotState};
use qluks::qcow2::Qcow2Image;
use zeroize::Zeroizing;

use crate::secret::{NewSecretArgs, Passphrase, SecretArgs};

/// `qluks amend` arguments.
#[derive(Args)]
pub struct AmendArgs {
    /// Options, comma separated: encrypt.state, encrypt.keyslot, encrypt.new-secret,
    /// encrypt.old-secret, encrypt.key-secret, encrypt.iter-time (`-o help` lists them).
    #[arg(short = 'o', value_name = "OPTIONS", required = true)]
    options: Vec<String>,
    /// Image format (only qcow2).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<String>,
    /// Quiet: no line saying which keyslots changed.
    #[arg(short = 'q')]
    quiet: bool,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    /// Read the old passphrase (encrypt.old-secret) from this file.
    #[arg(long, value_name = "FILE")]
    old_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    new_secret: NewSecretArgs,
    /// The image.
    image: Option<PathBuf>,
}

const HELP: &str = "Supported options (qcow2 with LUKS encryption):
  encrypt.state=<active|inactive>  add a keyslot (active) or erase keyslots (inactive)
  encrypt.keyslot=<0..7>           the keyslot to fill or erase
  encrypt.new-secret=<id>          the new keyslot's passphrase (an --object secret)
  encrypt.old-secret=<id>          erase the keyslots holding this passphrase
  encrypt.key-secret=<id>          the passphrase that unlocks the image (to add a keyslot)
  encrypt.iter-time=<ms>           PBKDF2 time of the new keyslot (default 2000)
";

/// Runs `qluks amend`.
pub fn run(mut args: AmendArgs) -> Result<(), Box<dyn Error>> {
    if args.options.iter().any(|o| o == "help" || o == "?") {
        print!("{HELP}");
        return Ok(());
    }
    let mut image = args.image.clone().ok_or("an image is required")?;
    args.image_opts.resolve(&mut image, &mut args.secret, None)?;
    let path = &image;
    let name = path.display();
    if let Some(f) = args.format.as_deref().filter(|f| *f != "qcow2") {
        return Err(format!("{name}: amend supports qcow2 only, not `{f}`").into());
    }
    let objects = args.image_opts.objects.secrets()?;
    let lookup = |id: &str, what: &str| -> Result<Passphrase, Box<dyn Error>> {
        objects.lookup(id).map_err(|e| format!("{what}: {e}").into())
    };
    let mut state = None;
    let mut keyslot = None;
    let mut new: Option<Passphrase> = None;
    let mut old: Option<Passphrase> = None;
    let mut key: Option<Passphrase> = None;
    let mut iter_time = None;
    for opt in args.options.iter().flat_map(|o| o.split(',')) {
        let (k, v) = opt.split_once('=').ok_or_else(|| format!("option `{opt}`: expected name=value"))?;
        match k {
            "encrypt.state" => {
                state = Some(match v {
                    "active" => KeyslotState::Active,
                    "inactive" => KeyslotState::Inactive,
                    _ => return Err(format!("encrypt.state: `{v}` is not active or inactive").into()),
                })
            }
            "encrypt.keyslot" => {
                keyslot = Some(v.parse::<usize>().map_err(|_| format!("encrypt.keyslot: `{v}` is not a number"))?)
            }
            "encrypt.new-secret" => new = Some(lookup(v, "encrypt.new-secret")?),
            "encrypt.old-secret" => old = Some(lookup(v, "encrypt.old-secret")?),
            "encrypt.key-secret" => key = Some(lookup(v, "encrypt.key-secret")?),
            "encrypt.iter-time" => {
                iter_time =
                    Some(v.parse::<u32>().map_err(|_| format!("encrypt.iter-time: `{v}` is not a number of ms"))?)
            }
            _ => return Err(format!("option `{k}` is not supported by amend (-o help lists them)").into()),
        }
    }
    let state = state.ok_or("encrypt.state=active|inactive is required")?;
    if new.is_none() && (args.new_secret.new_passphrase_file.is_some() || args.new_secret.new_passphrase_env.is_some())
    {
        new = Some(args.new_secret.get()?);
    }
    if let Some(f) = &args.old_passphrase_file {
        let bytes = std::fs::read(f).map_err(|e| format!("old passphrase file {}: {e}", f.display()))?;
        old = Some(Zeroizing::new(bytes));
    }
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{name}: {e}"))?;
    let mut q = Qcow2Image::open_metadata(file, None).map_err(|e| format!("{name}: {e}"))?;
    let header = q.luks_header().map_err(|e| format!("{name}: {e}"))?;
    if state == KeyslotState::Active {
        if new.is_none() {
            new = Some(args.new_secret.get()?);
        }
        if key.is_none() {
            key = Some(args.secret.get(&format!("Passphrase for {name}: "))?);
        }
    }
    let iterations = match (state, iter_time) {
        (KeyslotState::Active, t) => {
            let mut clock = crate::cpu_time::calibration_clock();
            Some(keyslot_iterations(&header, t.unwrap_or(2000), &mut clock).map_err(|e| format!("{name}: {e}"))?)
        }
        (KeyslotState::Inactive, Some(_)) => Some(0),
        (KeyslotState::Inactive, None) => None,
    };
    let opts = AmendKeyslots {
        state,
        keyslot,
        new_secret: new.as_deref().map(|v| v.as_slice()),
        old_secret: old.as_deref().map(|v| v.as_slice()),
        iterations,
    };
    let mut claims = crate::secret::luks1_claims(&header);
    claims.retain(|c| c.iterations > 0);
    let limits = args.secret.kdf.limits(&claims);
    let changed = q
        .amend_keyslots(key.as_deref().map(|v| v.as_slice()), &opts, &limits, &mut OsRng)
        .map_err(|e| format!("{name}: {e}"))?;
    q.flush().map_err(|e| format!("{name}: {e}"))?;
    let list: Vec<String> = (0..8).filter(|k| changed & (1 << k) != 0).map(|k| k.to_string()).collect();
    let verb = if state == KeyslotState::Active { "added" } else { "erased" };
    if !args.quiet {
        eprintln!("{name}: keyslot {} {verb}", list.join(", "));
    }
    Ok(())
}
