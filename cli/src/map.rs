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
pub fn run(args: MapArgs) -> Result<(), Box<dyn Error>> {
    let json = match args.output.as_str() {
        "json" => true,
        "human" => false,
        other => return Err(format!("unknown output format `{other}` (human, json)").into()),
    };
    let mut chain = open_chain(&args.image, &args.secret, &args.chain)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if !json {
        writeln!(out, "{:<20}{:<20}{:<20}File", "Offset", "Length", "Mapped to")?;
    }
    let mut first = true;
    for e in chain.extents(0) {
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
