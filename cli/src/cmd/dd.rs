//! `qluks dd [-f FMT] [-O raw|qcow2] [-o OPTIONS] [bs=N] [count=N] [skip=N] if=IN of=OUT`:
//! qemu-img dd's copy, with its sizes: the input is read up to `count * bs` bytes (or its
//! end), from `skip * bs`, into a new output of exactly that many bytes (empty, with a
//! warning, when `skip` is past the end), rounded up to whole 512-byte sectors as qemu-img
//! creates it. The input may be any image qluks reads, unlocked
//! with secrets in either spelling (`--passphrase-file`/`--object` + `--image-opts`); the
//! output is raw or qcow2 (`-o` takes qemu-img create's qcow2 options, `encrypt.format=luks`
//! with `encrypt.key-secret=ID` for a LUKS-encrypted one: a qluks extension, qemu-img dd has
//! no `-o`).
//!
//! The output is written under a temporary name in its directory and renamed at the end.
use std::error::Error;
use std::fs::File;
use std::path::PathBuf;

use clap::Args;

use crate::cmd::convert::Staged;
use crate::image_open::ChainArgs;
use crate::image_opts::ImageOptsArgs;
use crate::open::Disk;
use crate::secret::{NewSecretArgs, SecretArgs};

/// `qluks dd` arguments.
#[derive(Args)]
pub struct DdArgs {
    /// Input format (probed when not given; a different format is refused).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<String>,
    /// Output format: raw (default) or qcow2.
    #[arg(short = 'O', value_name = "OUTPUT_FMT", default_value = "raw")]
    output_format: String,
    /// Options of a qcow2 output, as for `qluks create -f qcow2` (qluks only).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Option<String>,
    /// Open the input without taking a lock (qemu-img's -U; qluks takes none).
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// Show progress on stderr (qluks only; hidden when stderr is not a terminal).
    #[arg(short = 'p')]
    progress: bool,
    /// Quiet: no progress.
    #[arg(short = 'q')]
    quiet: bool,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: ImageOptsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// Passphrase of an encrypted output, from this file (used as is).
    #[arg(long, value_name = "FILE", conflicts_with = "target_passphrase_env")]
    target_passphrase_file: Option<PathBuf>,
    /// Passphrase of an encrypted output, from this environment variable.
    #[arg(long, value_name = "VAR")]
    target_passphrase_env: Option<String>,
    /// Operands: bs=BLOCK_SIZE count=BLOCKS skip=BLOCKS if=INPUT of=OUTPUT.
    #[arg(value_name = "OPERAND")]
    operands: Vec<String>,
}

/// The operands, as qemu-img dd reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operands {
    /// Block size (default 512).
    pub bs: u64,
    /// Blocks to copy at most.
    pub count: Option<u64>,
    /// Blocks of the input to skip.
    pub skip: Option<u64>,
    /// Input.
    pub input: String,
    /// Output.
    pub output: String,
}

/// Parses the operands with qemu-img's checks and messages.
pub fn parse_operands(operands: &[String]) -> Result<Operands, String> {
    let (mut bs, mut count, mut skip, mut input, mut output) = (512u64, None, None, None, None);
    let blocks = |what: &str, v: &str| -> Result<u64, String> {
        let n: i64 = v.parse().map_err(|_| format!("Invalid {what} specified: '{v}'."))?;
        u64::try_from(n).map_err(|_| format!("Invalid {what} specified. Must be between 0 and {}.", i64::MAX))
    };
    for op in operands {
        let Some((k, v)) = op.split_once('=') else {
            return Err(format!("unrecognized operand {op}"));
        };
        match k {
            "bs" => {
                bs = crate::units::parse_size(v)
                    .ok()
                    .filter(|&n| (1..=i32::MAX as u64).contains(&n))
                    .ok_or_else(|| format!("Invalid bs specified. Must be between 1 and {}.", i32::MAX))?
            }
            "count" => count = Some(blocks("count", v)?),
            "skip" => skip = Some(blocks("skip", v)?),
            "if" => input = Some(v.to_string()),
            "of" => output = Some(v.to_string()),
            _ => return Err(format!("unrecognized operand {k}")),
        }
    }
    match (input, output) {
        (Some(input), Some(output)) => Ok(Operands { bs, count, skip, input, output }),
        _ => Err("Must specify both input and output files".into()),
    }
}

/// What qemu-img dd copies from an input of `input_size` bytes: (first input byte, bytes),
/// and whether `skip` points past the end (a warning; the output is then empty).
pub fn plan(ops: &Operands, input_size: u64) -> (u64, u64, bool) {
    let mut size = input_size;
    if let Some(count) = ops.count {
        if let Some(n) = count.checked_mul(ops.bs).filter(|&n| n < size) {
            size = n;
        }
    }
    match ops.skip {
        Some(skip) => match skip.checked_mul(ops.bs).filter(|&n| n <= size) {
            Some(start) => (start, size - start, false),
            None => (size, 0, true),
        },
        None => (0, size, false),
    }
}

/// Bytes read per piece.
const CHUNK: usize = 4 << 20;

/// Runs `qluks dd`.
pub fn run(mut args: DdArgs) -> Result<(), Box<dyn Error>> {
    let _ = args.force_share;
    let ops = parse_operands(&args.operands)?;
    let options = match args.output_format.as_str() {
        "raw" if args.options.is_some() => return Err("-o applies to -O qcow2 only".into()),
        "raw" => None,
        "qcow2" => Some(crate::cmd::create::qcow2::parse_options(args.options.as_deref())?),
        f => return Err(format!("Unknown file format '{f}' (dd writes raw and qcow2)").into()),
    };
    if let Some(o) = &options {
        if o.help {
            print!("{}", crate::cmd::create::qcow2::HELP);
            return Ok(());
        }
        if o.backing_file.is_some() || o.backing_fmt.is_some() {
            return Err("dd -O qcow2: the output holds the whole content; backing_file is not supported".into());
        }
    }
    let mut input = PathBuf::from(&ops.input);
    args.image_opts.resolve(&mut input, &mut args.secret, Some(&mut args.chain))?;
    if let Some(f) = &args.format {
        let mut file = File::open(&input).map_err(|e| format!("Could not open '{}': {e}", input.display()))?;
        let detected = crate::open::detect(&mut file)?;
        if f != detected.name() {
            return Err(format!("{}: -f {f} given, but the image is {}", input.display(), detected.name()).into());
        }
    }
    let mut src = crate::open::open_with_chain(&input, false, &args.secret, &args.chain)?;
    let (start, len, past_end) = plan(&ops, src.size());
    let dst = PathBuf::from(&ops.output);
    let staged = Staged::new(&dst)?;
    let tmp = staged.path().to_path_buf();
    let name = dst.display();
    let mut out: Box<dyn Disk> = match &options {
        None => {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| format!("{name}: error while creating output image: {e}"))?;
            // qemu-img creates whole 512-byte sectors (zero past the copy).
            let size = len.checked_next_multiple_of(512).ok_or("image size too large")?;
            file.set_len(size).map_err(|e| format!("{name}: {e}"))?;
            Box::new(RawOut { file, size })
        }
        Some(options) => {
            let size = len.checked_next_multiple_of(512).ok_or("image size too large")?;
            options.check(size).map_err(|e| format!("{name}: {e}"))?;
            let objects = args.image_opts.objects.secrets()?;
            let given = args.target_passphrase_file.is_some() || args.target_passphrase_env.is_some();
            let id = crate::secret::key_secret_option(args.options.as_deref(), &["encrypt.key-secret"])
                .filter(|id| objects.get(id).is_some() || !given);
            let passphrase = match (&options.encrypt, id) {
                (None, _) => None,
                (Some(_), Some(id)) => Some(objects.lookup(&id)?),
                (Some(_), None) => Some(
                    NewSecretArgs {
                        new_passphrase_file: args.target_passphrase_file.clone(),
                        new_passphrase_env: args.target_passphrase_env.clone(),
                    }
                    .get()?,
                ),
            };
            let mut file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| format!("{name}: error while creating output image: {e}"))?;
            options
                .create(&mut file, size, passphrase.as_ref().map(|p| p.as_slice()))
                .map_err(|e| format!("{name}: error while creating output image: {e}"))?;
            drop(file);
            Box::new(crate::cmd::convert::to_qcow2::open_output(&tmp, passphrase.as_ref())?)
        }
    };
    if past_end {
        eprintln!("qluks: {}: cannot skip to specified offset", ops.input);
    }
    let grain = options.as_ref().map_or(4096, |o| o.cluster_size);
    let progress = crate::progress::Progress::new(args.progress, args.quiet);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        let at = start + done;
        src.read_at(at, &mut buf[..n])
            .map_err(|e| format!("error while reading from input image file {}: at offset {at}: {e}", ops.input))?;
        crate::cmd::convert::to_qcow2::write_nonzero(out.as_mut(), done, &mut buf[..n], grain)
            .map_err(|e| format!("error while writing to output image file {name}: at offset {done}: {e}"))?;
        done += n as u64;
        progress.set(done, len);
    }
    progress.finish();
    out.flush().map_err(|e| format!("{name}: flush: {e}"))?;
    drop(out);
    staged.commit().map_err(|e| format!("{name}: {e}"))?;
    Ok(())
}

/// A new raw output file (zero where not written: it was just sized).
struct RawOut {
    file: File,
    size: u64,
}

impl Disk for RawOut {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        Ok(std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)?)
    }
    fn write_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
        Ok(std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)?)
    }
    fn keeps_buffer(&self) -> bool {
        true
    }
    fn flush(&mut self) -> Result<(), Box<dyn Error>> {
        Ok(self.file.sync_data()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(v: &[&str]) -> Result<Operands, String> {
        parse_operands(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn operands_are_checked_like_qemu_img() {
        let o = ops(&["bs=4k", "count=8", "skip=16", "if=a", "of=b"]).unwrap();
        assert_eq!((o.bs, o.count, o.skip), (4096, Some(8), Some(16)));
        assert_eq!(ops(&["if=a"]).unwrap_err(), "Must specify both input and output files");
        assert_eq!(ops(&["foo=1", "if=a", "of=b"]).unwrap_err(), "unrecognized operand foo");
        assert_eq!(ops(&["xx", "if=a", "of=b"]).unwrap_err(), "unrecognized operand xx");
        assert!(ops(&["bs=0", "if=a", "of=b"]).unwrap_err().contains("Invalid bs"));
        assert!(ops(&["bs=4G", "if=a", "of=b"]).unwrap_err().contains("Invalid bs"));
        assert_eq!(ops(&["count=1k", "if=a", "of=b"]).unwrap_err(), "Invalid count specified: '1k'.");
        assert!(ops(&["count=-1", "if=a", "of=b"]).unwrap_err().contains("Must be between 0"));
    }

    #[test]
    fn sizes_follow_qemu_img() {
        let o = |count, skip| Operands { bs: 4096, count, skip, input: String::new(), output: String::new() };
        assert_eq!(plan(&o(None, None), 1 << 20), (0, 1 << 20, false));
        // count bounds the input's end, not the bytes after skip (qemu-img's arithmetic).
        assert_eq!(plan(&o(Some(8), Some(16)), 1 << 20), (32768, 0, true));
        assert_eq!(plan(&o(Some(100), Some(16)), 1 << 20), (65536, 409600 - 65536, false));
        assert_eq!(plan(&o(None, Some(256)), 1 << 20), (1 << 20, 0, false));
        assert_eq!(plan(&o(None, Some(300)), 1 << 20), (1 << 20, 0, true));
        assert_eq!(plan(&o(Some(u64::MAX), None), 1 << 20), (0, 1 << 20, false));
        assert_eq!(plan(&o(None, Some(u64::MAX)), 1 << 20), (1 << 20, 0, true));
    }
}
