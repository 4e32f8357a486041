//! `qluks map [--output json] IMAGE`: the allocation map of a qcow2 image and its backing
//! chain, in the shape of `qemu-img map` (start, length, depth, present, zero, data,
//! compressed, offset).
use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use qluks::qcow2::extent::Extent;

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
    image_opts: crate::image_opts::ImageOptsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// The image.
    image: PathBuf,
}

/// One entry exactly as `qemu-img map --output json` prints it.
pub fn json_entry(e: &Extent) -> String {
    let mut s = format!(
        "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
        e.start,
        e.length,
        e.depth,
        e.present(),
        e.zero(),
        e.data(),
        e.compressed()
    );
    if let Some(o) = e.offset() {
        let _ = write!(s, ", \"offset\": {o}");
    }
    s.push('}');
    s
}

/// Runs `qluks map`.
pub fn run(mut args: MapArgs) -> Result<(), Box<dyn Error>> {
    args.image_opts.resolve(&mut args.image, &mut args.secret, Some(&mut args.chain))?;
    let json = match args.output.as_str() {
        "json" => true,
        "human" => false,
        other => return Err(format!("unknown output format `{other}` (human, json)").into()),
    };
    let mut probe = std::fs::File::open(&args.image).map_err(|e| format!("{}: {e}", args.image.display()))?;
    let extents: Box<dyn Iterator<Item = Result<Extent, Box<dyn Error>>>> =
        if crate::open::detect(&mut probe)? == crate::open::Format::Qcow {
            Box::new(qcow_extents(&args)?.into_iter().map(Ok))
        } else {
            let chain = open_chain(&args.image, &args.secret, &args.chain)?;
            Box::new(ChainExtents { chain, next: 0, pending: None })
        };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !json {
        writeln!(out, "{:<20}{:<20}{:<20}File", "Offset", "Length", "Mapped to")?;
    }
    let mut first = true;
    for e in extents {
        let e = e?;
        if json {
            // qemu-img's layout: `[{...},` newline `{...}]`.
            write!(out, "{}{}", if first { "[" } else { ",\n" }, json_entry(&e))?;
        } else if e.data() {
            // Like qemu-img's human output: only ranges with data, and their host offsets.
            let mapped = e.offset().map(|o| format!("{o:#x}")).unwrap_or_else(|| "-".into());
            writeln!(out, "{:<#20x}{:<#20x}{:<20}layer {}", e.start, e.length, mapped, e.depth)?;
        }
        first = false;
    }
    if json {
        writeln!(out, "{}]", if first { "[" } else { "" })?;
    }
    Ok(())
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
fn qcow_extents(args: &MapArgs) -> Result<Vec<Extent>, Box<dyn Error>> {
    use qluks::qcow::ExtentKind;
    use qluks::qcow2::Mapping;
    let path = &args.image;
    let mut r = crate::image_open::resolver(path, &args.secret, &args.chain)?;
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
