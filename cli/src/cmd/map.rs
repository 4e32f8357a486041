//! `qluks map [--output json] IMAGE`: the allocation map of a qcow2 image and its backing
//! chain, in the shape of `qemu-img map` (start, length, depth, present, zero, data,
//! compressed, offset).
use std::error::Error;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};

use clap::Args;
use qluks::qcow2::extent::Extent;

use qluks::qcow2::file_resolver::FileResolver;
use qluks::qcow2::Qcow2;

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
    /// The image's format (`qcow2`, `qcow`, `luks`, `raw`); detected when not given.
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    format: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    image_opts: crate::image_opts::ImageOptsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// Accepted for qemu-img command lines: qluks takes no image locks to share.
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// The image.
    image: PathBuf,
}

/// Runs `qluks map`.
pub fn run(mut args: MapArgs) -> Result<(), Box<dyn Error>> {
    args.image_opts.resolve(&mut args.image, &mut args.secret, Some(&mut args.chain))?;
    let json = match args.output.as_str() {
        "json" => true,
        "human" => false,
        other => return Err(format!("unknown output format `{other}` (human, json)").into()),
    };
    let entries = map_entries(&args.image, args.format.as_deref(), &args.secret, &args.chain)?;
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

/// The merged map of the image at `path` (in `format`, else detected), as `qemu-img map`
/// reports it.
pub fn map_entries(
    path: &Path,
    format: Option<&str>,
    secret: &SecretArgs,
    chain: &ChainArgs,
) -> Result<Entries, Box<dyn Error>> {
    let mut probe = File::open(path).map_err(|e| format!("Could not open '{}': {e}", path.display()))?;
    Ok(match crate::open::format_of(&mut probe, format, path)? {
        Format::Qcow => Box::new(qcow_extents(path, secret, chain)?.into_iter().map(|e| Ok(MapEntry::from(&e)))),
        Format::Raw => Box::new(raw_map(&probe)?.into_iter().map(Ok)),
        Format::Luks => Box::new(luks_map(path, &mut probe)?.into_iter().map(Ok)),
        Format::Qcow2 => {
            let files = layer_files(path, chain);
            let chain = open_chain(path, secret, chain)?;
            let entries = ChainExtents { chain, next: 0, pending: None }.map(|e| e.map(|e| MapEntry::from(&e)));
            if files.iter().all(|f| matches!(f, HostFile::None)) {
                // Nothing to refine: streamed, however many entries.
                Box::new(entries)
            } else {
                Box::new(with_host_holes(Box::new(entries), &files)?.into_iter().map(Ok))
            }
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
    let len = crate::open::sectors_len(file.metadata()?.len());
    let mut out = Vec::new();
    for (start, length, data) in raw_ranges(file, 0, len)? {
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
    let info = crate::cmd::info::image_info(&path.display().to_string(), file.try_clone()?, Format::Luks)?;
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

/// The data (`true`) and hole (`false`) ranges of bytes `start..end` of a file, from
/// `lseek(SEEK_DATA/SEEK_HOLE)` like qemu's file-posix driver (past the end of the file,
/// up to qemu's length rounded to sectors: a hole); a filesystem without them reports
/// everything as data (qemu does the same).
fn raw_ranges(file: &File, start: u64, end: u64) -> Result<Vec<RawRange>, Box<dyn Error>> {
    let file_len = crate::open::sectors_len(file.metadata()?.len());
    let seek = |pos: rustix::fs::SeekFrom| rustix::fs::seek(file, pos);
    let mut out = Vec::new();
    let mut offset = start;
    while offset < end {
        if offset >= file_len {
            out.push((offset, end - offset, false));
            break;
        }
        let limit = end.min(file_len);
        let data = match seek(rustix::fs::SeekFrom::Data(offset)) {
            Ok(d) => d.min(limit),
            Err(rustix::io::Errno::NXIO) => limit,
            Err(_) => {
                // No SEEK_DATA: all data, as qemu pretends.
                out.push((offset, limit - offset, true));
                offset = limit;
                continue;
            }
        };
        if data > offset {
            out.push((offset, data - offset, false));
            offset = data;
            continue;
        }
        // Data ends at a hole or at the file's real end (the rest of its last sector reads as
        // zero, past the end).
        let data_end = seek(rustix::fs::SeekFrom::Hole(offset)).unwrap_or(limit).min(limit).max(offset + 1);
        out.push((offset, data_end - offset, true));
        offset = data_end;
    }
    Ok(out)
}

/// What qemu's block status learns from the host file under a layer's data.
enum HostFile {
    /// A raw layer: its file's holes read as zero and hold no data.
    Raw(File),
    /// A qcow2 layer qemu takes for metadata-preallocated: holes of the host file (its data
    /// file, if external) under data clusters read as zero (`"zero": true, "data": true`).
    Preallocated(File),
    /// Nothing (a qcow2 layer qemu does not recurse into, or a file not found).
    None,
}

/// QEMU's `qcow2_detect_metadata_preallocation`: at least `max(real * 10 / 9, real + 2)` of
/// the file's clusters have a non-zero refcount, `real` being the clusters' worth of bytes the
/// filesystem allocated. Reads at most one refcount block at a time, and only within the file.
fn metadata_preallocated(file: &File, h: &qluks::qcow2::Header) -> Result<bool, Box<dyn Error>> {
    let cs = h.cluster_size();
    let meta = file.metadata()?;
    let real = meta.blocks() * 512 / cs;
    let threshold = (real * 10 / 9).max(real + 2);
    let end_cluster = crate::open::sectors_len(meta.len()).div_ceil(cs);
    let bits = u64::from(h.refcount_bits());
    let per_block = cs * 8 / bits;
    let entries = u64::from(h.refcount_table_clusters) * cs / 8;
    let mut block = vec![0u8; cs as usize];
    let (mut count, mut i) = (0u64, 0u64);
    while i < end_cluster && count < threshold {
        let t = i / per_block;
        if t >= entries {
            break;
        }
        let mut entry = [0u8; 8];
        file.read_exact_at(&mut entry, h.refcount_table_offset + t * 8)?;
        let at = u64::from_be_bytes(entry) & 0xffff_ffff_ffff_fe00;
        if at == 0 || at.checked_add(cs).is_none_or(|end| end > meta.len()) {
            i = (t + 1) * per_block;
            continue;
        }
        file.read_exact_at(&mut block, at)?;
        while i < end_cluster && count < threshold && i / per_block == t {
            let j = (i % per_block) as usize;
            let nonzero = match bits {
                1 | 2 | 4 => (block[j * bits as usize / 8] >> (j * bits as usize % 8)) & ((1u8 << bits) - 1) != 0,
                _ => {
                    let w = bits as usize / 8;
                    block[j * w..(j + 1) * w].iter().any(|&b| b != 0)
                }
            };
            count += u64::from(nonzero);
            i += 1;
        }
    }
    Ok(count >= threshold)
}

/// The host file of each layer of the qcow2 chain at `path` (its external data file when it
/// has one; the file itself for a raw layer) where qemu's block status consults it, found
/// under the same policy as the chain.
fn layer_files(path: &Path, chain: &ChainArgs) -> Vec<HostFile> {
    use qluks::qcow2::backing::{BackingRequest, DataFileRequest, Resolver};
    let mut out = Vec::new();
    let Ok(mut resolver) = FileResolver::with_policy(path, chain.policy()) else { return out };
    let Ok(mut file) = File::open(path) else { return out };
    let mut declared: Option<String> = None;
    for depth in 0..crate::image_open::MAX_DEPTH {
        let format = match declared.as_deref() {
            Some("raw") => Format::Raw,
            _ => crate::open::detect(&mut file).unwrap_or(Format::Luks),
        };
        if format == Format::Raw {
            out.push(HostFile::Raw(file));
            break;
        }
        if format != Format::Qcow2 {
            out.push(HostFile::None);
            break;
        }
        let Ok(q) =
            file.try_clone().map_err(|_| ()).and_then(|f| Qcow2::<File>::open_metadata(f, None).map_err(|_| ()))
        else {
            out.push(HostFile::None);
            break;
        };
        let (h, x) = (*q.header(), q.extensions().clone());
        let host = if !metadata_preallocated(&file, &h).unwrap_or(false) {
            HostFile::None
        } else if h.incompatible_features & 4 != 0 {
            let request = DataFileRequest { name: x.data_file.as_ref().map(|n| n.as_bytes()), depth };
            Resolver::<File>::open_data_file(&mut resolver, &request).map_or(HostFile::None, HostFile::Preallocated)
        } else {
            HostFile::Preallocated(file)
        };
        out.push(host);
        let Some(name) = &x.backing_file else { break };
        let format = x.backing_format.as_ref().map(|f| f.as_bytes());
        let request = BackingRequest { name: name.as_bytes(), format, depth: depth + 1 };
        match Resolver::<File>::open_backing(&mut resolver, &request) {
            Ok(opened) => file = opened.io,
            Err(_) => break,
        }
        declared = format.map(|f| String::from_utf8_lossy(f).into_owned());
    }
    out
}

/// qemu's block status asks the host file under a layer's data where it recurses (raw
/// layers; qcow2 layers it takes for metadata-preallocated): what the host file has as a hole
/// (or past its end) reads as zero. Refines `entries` by the hole map of those host `files`.
fn with_host_holes(entries: Entries, files: &[HostFile]) -> Result<Vec<MapEntry>, Box<dyn Error>> {
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let (file, raw) = match files.get(e.depth) {
            Some(HostFile::Raw(f)) => (Some(f), true),
            Some(HostFile::Preallocated(f)) => (Some(f), false),
            _ => (None, false),
        };
        match (e.data, e.offset, file) {
            (true, Some(host), Some(file)) => {
                let end = host.checked_add(e.length).ok_or("host offset overflows")?;
                for (at, length, data) in raw_ranges(file, host, end)? {
                    // A raw layer's hole holds no data; a qcow2 data cluster still does.
                    let piece = MapEntry {
                        start: e.start + (at - host),
                        length,
                        zero: !data,
                        data: data || !raw,
                        offset: Some(at),
                        ..e
                    };
                    push_merged(&mut out, piece);
                }
            }
            _ => push_merged(&mut out, e),
        }
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
