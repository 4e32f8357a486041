//! `qluks info`: what an image is, without unlocking it. `--output json` prints qemu-img's
//! `ImageInfo` (`--backing-chain`: an array of them, top image first).

pub mod common;
pub mod luks2;
pub mod qcow2;
use std::error::Error;
use std::fmt::Write as _;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use qluks::io::BlockIo;
use qluks::luks::luks1::{self, Luks1Header};
use qluks::qcow2::file_resolver::FileResolver;

use crate::escape::shown;
use crate::image_open::ChainArgs;
use crate::json::{self, ChildInfo, FileSpecific, FormatSpecific, ImageInfo};
use crate::open::{detect, format_of, sectors_len, Format};
use common::luks1_specific;

/// `qluks info` arguments.
#[derive(Args)]
pub struct InfoArgs {
    /// Output format (`--output json` prints qemu-img's `ImageInfo`).
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    /// The image's format (`qcow2`, `luks`, `raw`, `qcow`); detected when not given.
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<String>,
    /// Describe the whole backing chain (JSON: an array, top image first).
    #[arg(long)]
    backing_chain: bool,
    /// Where backing files may be opened from (with --backing-chain).
    #[command(flatten)]
    chain: ChainArgs,
    /// Accepted for qemu-img command lines: qluks takes no image locks to share.
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// The image.
    image: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// Runs `qluks info`.
pub fn run(args: InfoArgs) -> Result<(), Box<dyn Error>> {
    let path = &args.image_opts.path(&args.image)?;
    let mut file = File::open(path).map_err(|e| format!("Could not open '{}': {e}", path.display()))?;
    let format = format_of(&mut file, args.format.as_deref(), path)?;
    if args.output == Output::Json {
        let top = image_info(&path.display().to_string(), file, format)?;
        if args.backing_chain {
            print!("{}", json::pretty(&backing_chain(path, top, &args.chain)?));
        } else {
            print!("{}", json::pretty(&top));
        }
        return Ok(());
    }
    if args.backing_chain {
        return Err("--backing-chain needs --output json".into());
    }
    let file_size = BlockIo::size(&mut file)?;
    let text = match format {
        Format::Luks => match luks_version(&mut file)? {
            1 => {
                let header = luks1::Luks1Header::read(&mut file, 0).map_err(|e| format!("{}: {e}", path.display()))?;
                luks1_info(&header, file_size)
            }
            2 => crate::cmd::info::luks2::info(&mut file, file_size).map_err(|e| format!("{}: {e}", path.display()))?,
            version => return Err(format!("{}: LUKS version {version} is not supported", path.display()).into()),
        },
        Format::Qcow2 => crate::cmd::info::qcow2::qcow2_info(path, file)?,
        Format::Qcow => crate::cmd::info::qcow2::qcow_info(path, file)?,
        Format::Raw => format!("format: {}\nvirtual size: {file_size}\n", Format::Raw.name()),
    };
    print!("{text}");
    Ok(())
}

fn luks_version(file: &mut File) -> Result<u16, Box<dyn Error>> {
    let mut v = [0u8; 8];
    BlockIo::read_at(file, 0, &mut v)?;
    Ok(u16::from_be_bytes([v[6], v[7]]))
}

/// The protocol node qemu shows as an image's `file` child.
fn file_child(filename: &str, meta: &Metadata) -> ChildInfo {
    ChildInfo {
        name: "file".into(),
        info: ImageInfo {
            virtual_size: sectors_len(meta.len()),
            filename: filename.into(),
            format: "file".into(),
            actual_size: Some(meta.blocks() * 512),
            format_specific: Some(FormatSpecific::File(FileSpecific {})),
            ..ImageInfo::default()
        },
    }
}

/// qemu-img's `ImageInfo` of the image in `file`, opened by the name `filename`, in `format`.
pub fn image_info(filename: &str, mut file: File, format: Format) -> Result<ImageInfo, Box<dyn Error>> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", shown(filename));
    let meta = file.metadata().map_err(|e| at(&e))?;
    let mut info = ImageInfo {
        children: vec![file_child(filename, &meta)],
        virtual_size: sectors_len(meta.len()),
        filename: filename.into(),
        format: format.name().into(),
        actual_size: Some(meta.blocks() * 512),
        ..ImageInfo::default()
    };
    match format {
        Format::Raw => {}
        Format::Qcow2 => crate::cmd::info::qcow2::qcow2_image_info(filename, file, &mut info)?,
        Format::Qcow => crate::cmd::info::qcow2::qcow_image_info(filename, file, &mut info)?,
        Format::Luks => {
            let (specific, virtual_size) = match luks_version(&mut file).map_err(|e| at(&e))? {
                1 => {
                    let h = luks1::Luks1Header::read(&mut file, 0).map_err(|e| at(&e))?;
                    (luks1_specific(&h), sectors_len(meta.len()).saturating_sub(h.payload_offset_bytes()))
                }
                2 => {
                    let (specific, virtual_size, extra) =
                        crate::cmd::info::luks2::image_info(&mut file, sectors_len(meta.len())).map_err(|e| at(&e))?;
                    info.qluks_luks2 = Some(extra);
                    (specific, virtual_size)
                }
                v => return Err(at(&format!("LUKS version {v} is not supported")).into()),
            };
            info.virtual_size = virtual_size;
            info.format_specific = Some(FormatSpecific::Luks(specific));
            info.encrypted = Some(true);
            info.qluks_backend = Some(qluks_hal::Backend::best().name().into());
        }
    }
    Ok(info)
}

/// `--backing-chain`: the top image's info, then each backing file's, opened under the
/// caller's policy for names found in images.
fn backing_chain(path: &Path, top: ImageInfo, chain: &ChainArgs) -> Result<Vec<ImageInfo>, Box<dyn Error>> {
    use qluks::qcow2::backing::{BackingRequest, Resolver};
    let mut resolver =
        FileResolver::with_policy(path, chain.policy()).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = vec![top];
    while let Some(last) = out.last().filter(|i| i.backing_filename.is_some()) {
        let depth = out.len();
        if depth > crate::image_open::MAX_DEPTH {
            return Err(
                format!("{}: backing chain deeper than {}", path.display(), crate::image_open::MAX_DEPTH).into()
            );
        }
        let name = last.backing_filename.clone().unwrap_or_default();
        let declared = last.backing_filename_format.clone();
        let full = last.full_backing_filename.clone().unwrap_or_else(|| name.clone());
        let request = BackingRequest { name: name.as_bytes(), format: declared.as_deref().map(str::as_bytes), depth };
        let opened = Resolver::<File>::open_backing(&mut resolver, &request)
            .map_err(|e| format!("Could not open backing image '{}': {e}", shown(&full)))?;
        let mut file = opened.io;
        let format = match declared.as_deref() {
            Some(f) => format_of(&mut file, Some(f), Path::new(&full))?,
            None if chain.backing_probe => detect(&mut file)?,
            None => {
                return Err(format!(
                    "{}: the backing file '{}' declares no format (--backing-probe probes it)",
                    path.display(),
                    shown(&full)
                )
                .into())
            }
        };
        out.push(image_info(&full, file, format)?);
    }
    Ok(out)
}

fn luks1_info(h: &Luks1Header, file_size: u64) -> String {
    let payload = h.payload_offset_bytes();
    let virtual_size = file_size.saturating_sub(payload) / 512 * 512;
    let mut s = String::new();
    let _ = writeln!(s, "format: luks\nversion: 1\ncipher: {}", h.cipher);
    let _ = writeln!(s, "cipher name: {}\ncipher mode: {}", h.cipher.cipher_name(), h.cipher.mode_name());
    let _ = writeln!(s, "hash: {}\nkey bytes: {}", h.hash, h.key_bytes);
    let _ = writeln!(s, "payload offset: {payload} ({} sectors)", h.payload_offset);
    let _ = writeln!(s, "virtual size: {virtual_size}\nuuid: {}", shown(h.uuid_str()));
    let _ = writeln!(s, "mk iterations: {}\nkeyslots:", h.mk_iterations);
    for (i, k) in h.keyslots.iter().enumerate() {
        let at = k.key_offset as u64 * 512;
        if k.active {
            let _ = writeln!(s, "  {i}: active, iterations {}, key material at {at}", k.iterations);
        } else {
            let _ = writeln!(s, "  {i}: inactive");
        }
    }
    s
}
