//! `qluks map [--output json] IMAGE`: the allocation map of a qcow2 image and its backing
//! chain, in the shape of `qemu-img map` (start, length, depth, present, zero, data,
//! compressed, offset).
use std::error::Error;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::fs::File;

use clap::Args;
use qluks::qcow2::extent::Extent;

use crate::json::{self, MapEntry};
use crate::open::Format;

use crate::image_open::{open_chain, ChainArgs};
use crate::secret::SecretArgs;

/// `qluks map` arguments.
#[derive(Args)]
pub struct MapArgs {
    /// Output format: human or json.
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    output: String,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// The image.
    image: PathBuf,
}

/// Runs `qluks map`.
pub fn run(args: MapArgs) -> Result<(), Box<dyn Error>> {
    let json = match args.output.as_str() {
        "json" => true,
        "human" => false,
        other => return Err(format!("unknown output format `{other}` (human, json)").into()),
    };
    let entries = map_entries(&args.image, &args.secret, &args.chain)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !json {
        writeln!(out, "{:<20}{:<20}{:<20}File", "Offset", "Length", "Mapped to")?;
    }
    let mut first = true;
    for e in entries {
        let e = e?;
        if json {
            // qemu-img's layout: `[{...},` newline `{...}]`.
            write!(out, "{}{}", if first { "[" } else { ",\n" }, json::map_line(&e))?;
        } else if e.data {
            // Like qemu-img's human output: only ranges with data, and their host offsets.
            let mapped = e.offset.map(|o| format!("{o:#x}")).unwrap_or_else(|| "-".into());
            writeln!(out, "{:<#20x}{:<#20x}{:<20}layer {}", e.start, e.length, mapped, e.depth)?;
        }
        first = false;
    }
    if json {
        writeln!(out, "{}]", if first { "[" } else { "" })?;
    }
    Ok(())
}

/// Map entries as they are read.
pub type Entries = Box<dyn Iterator<Item = Result<MapEntry, Box<dyn Error>>>>;

/// One range of a raw file: start, length, whether it holds data (else a hole).
type RawRange = (u64, u64, bool);

/// The merged map of the image at `path` (any format), as `qemu-img map` reports it.
pub fn map_entries(
    path: &Path,
    secret: &SecretArgs,
    chain: &ChainArgs,
) -> Result<Entries, Box<dyn Error>> {
    let mut probe = File::open(path).map_err(|e| format!("Could not open '{}': {e}", path.display()))?;
    Ok(match crate::open::detect(&mut probe)? {
        Format::Qcow => Box::new(qcow_extents(path, secret, chain)?.into_iter().map(|e| Ok(MapEntry::from(&e)))),
        Format::Raw => Box::new(raw_map(&probe)?.into_iter().map(Ok)),
        Format::Luks => Box::new(luks_map(path, &mut probe)?.into_iter().map(Ok)),
        Format::Qcow2 => {
            let chain = open_chain(path, secret, chain)?;
            Box::new(ChainExtents { chain, next: 0, pending: None }.map(|e| e.map(|e| MapEntry::from(&e))))
        }
    })
}

/// Appends `e` to `out`, merged into the last entry when it continues it (qemu-img map's rule:
/// same depth and flags, contiguous guest and host offsets).
fn push_merged(out: &mut Vec<MapEntry>, e: MapEntry) {
    if let Some(p) = out.last_mut() {
        let offsets = match (p.offset, e.offset) {
            (None, None) => true,
            (Some(a), Some(b)) => a + p.length == b,
            _ => false,
        };
        if p.start + p.length == e.start
            && (p.depth, p.present, p.zero, p.data, p.compressed) == (e.depth, e.present, e.zero, e.data, e.compressed)
            && offsets
        {
            p.length += e.length;
            return;
        }
    }
    out.push(e);
}

/// The map of a raw file as qemu's file driver reports it: data and holes as the filesystem
/// has them (`SEEK_DATA`/`SEEK_HOLE`), every range with its offset.
fn raw_map(file: &File) -> Result<Vec<MapEntry>, Box<dyn Error>> {
    let len = crate::info::sectors_len(file.metadata()?.len());
    let mut out = Vec::new();
    for (start, length, data) in raw_ranges(file, len)? {
        let e = MapEntry {
            start,
            length,
            depth: 0,
            present: true,
            zero: !data,
            data,
            compressed: false,
            offset: Some(start),
        };
        push_merged(&mut out, e);
    }
    Ok(out)
}

/// A LUKS volume's map as qemu reports it: all data, no host offsets (encrypted).
fn luks_map(path: &Path, file: &mut File) -> Result<Vec<MapEntry>, Box<dyn Error>> {
    let info = crate::info::image_info(&path.display().to_string(), file.try_clone()?, Format::Luks)?;
    let length = info.virtual_size;
    Ok(if length == 0 {
        Vec::new()
    } else {
        vec![MapEntry {
            start: 0,
            length,
            depth: 0,
            present: true,
            zero: false,
            data: true,
            compressed: false,
            offset: None,
        }]
    })
}

/// The data (`true`) and hole (`false`) ranges of the first `len` bytes of a file, from
/// `lseek(SEEK_DATA/SEEK_HOLE)` like qemu's file-posix driver; a filesystem without them
/// reports everything as data (qemu does the same).
fn raw_ranges(file: &File, len: u64) -> Result<Vec<RawRange>, Box<dyn Error>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: libc::c_int| -> Option<u64> {
        let offset = libc::off_t::try_from(offset).ok()?;
        // SAFETY: lseek on a file descriptor this `File` owns and keeps open; it only moves the
        // descriptor's position (no other reads depend on it: all I/O here is positional).
        let r = unsafe { libc::lseek(fd, offset, whence) };
        u64::try_from(r).ok()
    };
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < len {
        let data = match seek(offset, libc::SEEK_DATA) {
            Some(d) => d.min(len),
            None if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => len,
            None => {
                // No SEEK_DATA: all data, as qemu pretends.
                out.push((offset, len - offset, true));
                break;
            }
        };
        if data > offset {
            out.push((offset, data - offset, false));
            offset = data;
            continue;
        }
        let hole = seek(offset, libc::SEEK_HOLE).unwrap_or(len).min(len).max(offset + 1);
        // qemu rounds a data range up to whole sectors.
        let end = hole.div_ceil(512).saturating_mul(512).min(len);
        out.push((offset, end - offset, true));
        offset = end;
    }
    Ok(out)
}

/// The merged extents of a boxed chain (owning it, unlike `Chain::extents`).
struct ChainExtents {
    chain: Box<crate::image_open::CliChain>,
    next: u64,
    pending: Option<Extent>,
}

impl Iterator for ChainExtents {
    type Item = Result<Extent, Box<dyn Error>>;
    fn next(&mut self) -> Option<Self::Item> {
        let size = self.chain.size();
        while self.next < size {
            let e = match self.chain.extent_at(self.next, 1 << 40) {
                Ok(e) => e,
                Err(err) => {
                    self.next = size;
                    return Some(Err(err.into()));
                }
            };
            self.next += e.length;
            match &mut self.pending {
                Some(p) if p.continues_with(&e) => p.length += e.length,
                Some(p) => return Some(Ok(std::mem::replace(p, e))),
                None => self.pending = Some(e),
            }
        }
        self.pending.take().map(Ok)
    }
}

/// The map of a qcow (v1) image in qemu's terms: data with its host offset (none when
/// encrypted), compressed clusters, unallocated ranges reading as zero; merged like qemu-img.
fn qcow_extents(path: &Path, secret: &SecretArgs, chain: &ChainArgs) -> Result<Vec<Extent>, Box<dyn Error>> {
    use qluks::qcow::ExtentKind;
    use qluks::qcow2::Mapping;
    let mut r = crate::image_open::resolver(path, secret, chain)?;
    let mut scratch = vec![0u8; qluks::image::MAX_SCRATCH_LEN];
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut chain = Box::<qluks::qcow2::Chain<std::fs::File>>::default();
    let image: qluks::image::Image<'_, std::fs::File> =
        qluks::image::Image::open(file, &mut r, &mut chain, &mut scratch)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    let qluks::image::Image::Qcow(mut q) = image else { return Err("not a qcow image".into()) };
    let encrypted = q.is_encrypted();
    let mut out: Vec<Extent> = Vec::new();
    let mut offset = 0;
    while offset < q.size() {
        let e = q.extent_at(offset).map_err(|e| format!("{}: {e}", path.display()))?;
        let mapping = match e.kind {
            ExtentKind::Unallocated => Mapping::Unallocated { host_offset: None },
            ExtentKind::Data { host_offset } => Mapping::Data { host_offset },
            ExtentKind::Compressed { host_offset, len } => Mapping::Compressed { host_offset, compressed_len: len },
        };
        let ext = Extent { start: e.offset, length: e.len, depth: 0, mapping, encrypted, raw: false };
        match out.last_mut() {
            Some(p) if p.continues_with(&ext) => p.length += ext.length,
            _ => out.push(ext),
        }
        offset += e.len;
    }
    Ok(out)
}
