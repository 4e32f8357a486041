//! `qluks measure [-O FMT] [-o OPTIONS] [--output human|json] [--size SIZE | IMAGE]`: the
//! size a new image would need, with qemu-img's formulas (`qcow2_measure`,
//! `qcow2_calc_prealloc_size`, `qcow2_refcount_metadata_size`, `raw_measure`,
//! `block_crypto_measure` in QEMU's block/) and its `BlockMeasureInfo`.
use std::error::Error;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::image_open::ChainArgs;
use crate::json::{self, BlockMeasureInfo};
use crate::secret::SecretArgs;

/// `qluks measure` arguments.
#[derive(Args)]
pub struct MeasureArgs {
    /// Output format of the image to measure (`qcow2`, `raw`, `luks`).
    #[arg(short = 'O', value_name = "FMT", default_value = "raw")]
    output_format: String,
    /// Creation options of that image, qemu-img's (`cluster_size=`, `compat=`, `refcount_bits=`,
    /// `extended_l2=`, `preallocation=`, `backing_file=`, `encrypt.format=luks`, `encrypt.cipher-alg=`,
    /// ...); repeatable.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Measure a new image of this virtual size (instead of IMAGE's content).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    size: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// The source image's format (detected when not given).
    #[arg(short = 'f', value_name = "FMT")]
    format: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    chain: ChainArgs,
    /// Accepted for qemu-img command lines: qluks takes no image locks to share.
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
    /// The image whose content the new image would hold.
    image: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

/// qcow2 creation options that matter to the measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Qcow2Options {
    cluster_size: u64,
    version: u32,
    refcount_order: u32,
    extended_l2: bool,
    full_prealloc: bool,
    has_backing_file: bool,
    /// Bytes of the LUKS header (`encrypt.format=luks`), before rounding to clusters.
    luks_header: Option<u64>,
}

/// Options qemu-img accepts for qcow2 images (those not affecting the size are accepted and
/// ignored, as qemu does).
const QCOW2_OPTIONS: [&str; 14] = [
    "size",
    "compat",
    "backing_file",
    "backing_fmt",
    "encryption",
    "cluster_size",
    "preallocation",
    "lazy_refcounts",
    "refcount_bits",
    "data_file",
    "data_file_raw",
    "extended_l2",
    "compression_type",
    "encrypt.format",
];

/// `-o` lists split into key/value pairs (`key` alone means `key=on`; `,,` is a literal comma).
fn parse_options(lists: &[String]) -> Result<Vec<(String, String)>, Box<dyn Error>> {
    let mut out = Vec::new();
    for list in lists {
        let mut item = String::new();
        let mut chars = list.chars().peekable();
        let mut items = Vec::new();
        while let Some(c) = chars.next() {
            if c == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                    item.push(',');
                } else {
                    items.push(std::mem::take(&mut item));
                }
            } else {
                item.push(c);
            }
        }
        items.push(item);
        for i in items.into_iter().filter(|i| !i.is_empty()) {
            match i.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), v.to_string())),
                None => out.push((i, "on".into())),
            }
        }
    }
    Ok(out)
}

fn on_off(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(format!("Parameter '{key}' expects 'on' or 'off'")),
    }
}

/// The LUKS header length qemu's `qcrypto_block_calculate_payload_offset` finds for these
/// creation options: 4 KiB of header, then eight keyslots of the key split into 4000 stripes,
/// each rounded up to 4 KiB.
fn luks_header_len(cipher_alg: &str, cipher_mode: &str) -> Result<u64, String> {
    let bits: u64 = cipher_alg
        .rsplit_once('-')
        .and_then(|(_, b)| b.parse().ok())
        .filter(|b| matches!(b, 128 | 192 | 256))
        .ok_or_else(|| format!("Invalid parameter '{cipher_alg}'"))?;
    let key_bytes = match cipher_mode {
        "xts" => bits / 4,
        "cbc" | "ecb" | "ctr" => bits / 8,
        other => return Err(format!("Invalid parameter '{other}'")),
    };
    let split_sectors = (key_bytes * 4000).div_ceil(512).next_multiple_of(8);
    Ok((8 + 8 * split_sectors) * 512)
}

/// The qcow2 options from `-o` pairs, checked like qemu's `qcow2_measure` (and its `-o` parser).
fn qcow2_options(pairs: &[(String, String)]) -> Result<Qcow2Options, Box<dyn Error>> {
    let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    for (k, _) in pairs {
        let crypto = k.starts_with("encrypt.")
            && matches!(
                &k["encrypt.".len()..],
                "format"
                    | "key-secret"
                    | "cipher-alg"
                    | "cipher-mode"
                    | "ivgen-alg"
                    | "ivgen-hash-alg"
                    | "hash-alg"
                    | "iter-time"
            );
        if !crypto && !QCOW2_OPTIONS.contains(&k.as_str()) {
            return Err(format!("Invalid parameter '{k}'").into());
        }
    }
    let extended_l2 = get("extended_l2").map(|v| on_off("extended_l2", v)).transpose()?.unwrap_or(false);
    let cluster_size = match get("cluster_size") {
        Some(v) => crate::units::parse_size(v)?,
        None => 65536,
    };
    if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
        return Err(
            format!("Cluster size must be a power of two between 512 and 2048k (cluster_size={cluster_size})").into()
        );
    }
    if extended_l2 && cluster_size < 16384 {
        return Err("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes".into());
    }
    let version = match get("compat") {
        None | Some("1.1") | Some("v3") => 3,
        Some("0.10") | Some("v2") => 2,
        Some(other) => return Err(format!("Invalid parameter '{other}'").into()),
    };
    let refcount_bits: u64 = match get("refcount_bits") {
        Some(v) => v.parse().map_err(|_| format!("Invalid refcount_bits '{v}'"))?,
        None => 16,
    };
    if !refcount_bits.is_power_of_two() || refcount_bits > 64 {
        return Err("Refcount width must be a power of two and may not exceed 64 bits".into());
    }
    if version < 3 && refcount_bits != 16 {
        return Err("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)".into());
    }
    let full_prealloc = match get("preallocation").unwrap_or("off") {
        "off" | "metadata" => false,
        "falloc" | "full" => true,
        other => return Err(format!("Invalid parameter '{other}'").into()),
    };
    let luks = match get("encrypt.format") {
        Some("luks") => true,
        None | Some("aes") => false,
        Some(other) => return Err(format!("Invalid parameter '{other}'").into()),
    };
    let luks_header = if luks {
        Some(luks_header_len(
            get("encrypt.cipher-alg").unwrap_or("aes-256"),
            get("encrypt.cipher-mode").unwrap_or("xts"),
        )?)
    } else {
        None
    };
    Ok(Qcow2Options {
        cluster_size,
        version,
        refcount_order: refcount_bits.trailing_zeros(),
        extended_l2,
        full_prealloc,
        has_backing_file: get("backing_file").is_some(),
        luks_header,
    })
}

/// QEMU's `qcow2_refcount_metadata_size`: refcount blocks and table clusters for `clusters`
/// clusters, refcounts included (the fixed point).
fn refcount_metadata_size(clusters: u64, cluster_size: u64, refcount_order: u32) -> u64 {
    let blocks_per_table_cluster = cluster_size / 8;
    let refcounts_per_block = cluster_size * 8 / (1 << refcount_order);
    let (mut table, mut blocks, mut n) = (0u64, 0u64, 0u64);
    loop {
        let last = n;
        blocks = (clusters + table + blocks).div_ceil(refcounts_per_block);
        table = blocks.div_ceil(blocks_per_table_cluster);
        n = clusters + blocks + table;
        if n == last {
            break;
        }
    }
    (blocks + table) * cluster_size
}

/// QEMU's `qcow2_calc_prealloc_size`: header, L1, L2 and refcount metadata plus the data of
/// a fully allocated image.
fn prealloc_size(total_size: u64, cluster_size: u64, refcount_order: u32, extended_l2: bool) -> u64 {
    let aligned = total_size.next_multiple_of(cluster_size);
    let l2e = if extended_l2 { 16 } else { 8 };
    let mut meta = cluster_size;
    let nl2e = (aligned / cluster_size).next_multiple_of(cluster_size / l2e);
    meta += nl2e * l2e;
    let nl1e = (nl2e * l2e / cluster_size).next_multiple_of(cluster_size / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_size((meta + aligned) / cluster_size, cluster_size, refcount_order);
    meta + aligned
}

/// The source image: its virtual size, the clusters of `cluster_size` that hold data, and
/// whether it supports persistent bitmaps (qcow2 v3).
struct Source {
    size: u64,
    data_bytes: u64,
    /// The persistent bitmaps, when the source format supports them.
    bitmaps: Option<Vec<json::Qcow2BitmapInfo>>,
}

/// QEMU's `qcow2_get_persistent_dirty_bitmap_size`: every bitmap fully allocated in clusters of
/// `cluster_size`, its bitmap table, and the directory entries.
fn bitmaps_size(bitmaps: &[json::Qcow2BitmapInfo], virtual_size: u64, cluster_size: u64) -> u64 {
    let mut size = 0;
    let mut dir = 0;
    for b in bitmaps {
        let bytes = virtual_size.div_ceil(b.granularity).div_ceil(8);
        let clusters = bytes.div_ceil(cluster_size);
        size += clusters * cluster_size + (clusters * 8).next_multiple_of(cluster_size);
        dir += (24 + b.name.len() as u64).next_multiple_of(8);
    }
    size + dir.next_multiple_of(cluster_size)
}

/// The source image at `path`, with the bytes of the `cluster_size` clusters touched by data
/// in its map when asked, as `qcow2_measure` counts them from block status (zero and
/// unallocated ranges skipped; each data range extended to whole clusters).
fn source(args: &MeasureArgs, path: &std::path::Path, cluster_size: Option<u64>) -> Result<Source, Box<dyn Error>> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("Could not open '{}': {e}", path.display()))?;
    let format = crate::open::format_of(&mut file, args.format.as_deref(), path)?;
    let detected = crate::open::detect(&mut file)?;
    if format != detected {
        return Err(format!("{}: the image is {}, not {}", path.display(), detected.name(), format.name()).into());
    }
    let info = crate::cmd::info::image_info(&path.display().to_string(), file, format)?;
    // qemu counts persistent bitmaps of qcow2 v3 sources (`bdrv_supports_persistent_dirty_bitmap`).
    let mut bitmaps = None;
    if let Some(json::FormatSpecific::Qcow2(q)) = &info.format_specific {
        if q.compat == "1.1" {
            bitmaps = Some(q.bitmaps.clone().unwrap_or_default());
        }
    }
    let mut data_bytes = 0u64;
    let mut counted_to = 0u64;
    let Some(cluster_size) = cluster_size else { return Ok(Source { size: info.virtual_size, data_bytes, bitmaps }) };
    for e in crate::cmd::map::map_entries(path, args.format.as_deref(), &args.secret, &args.chain)? {
        let e = e?;
        if e.zero || !e.data {
            continue;
        }
        let end = e.start + e.length;
        let first = (e.start / cluster_size * cluster_size).max(counted_to);
        let last = end.next_multiple_of(cluster_size);
        if last > first {
            data_bytes += last - first;
            counted_to = last;
        }
    }
    Ok(Source { size: info.virtual_size, data_bytes, bitmaps })
}

/// qemu-img's measurement for `args`.
fn measure(args: &MeasureArgs) -> Result<BlockMeasureInfo, Box<dyn Error>> {
    let pairs = parse_options(&args.options)?;
    let size_opt =
        pairs.iter().rev().find(|(k, _)| k == "size").map(|(_, v)| crate::units::parse_size(v)).transpose()?;
    let size = match (&args.image, args.size.or(size_opt)) {
        (None, None) => return Err("Either --size N or one filename must be specified.".into()),
        (Some(_), Some(_)) => return Err("--size N cannot be used together with a filename.".into()),
        (_, size) => size,
    };
    match args.output_format.as_str() {
        "raw" => {
            if let Some((k, _)) = pairs.iter().find(|(k, _)| k != "size" && k != "preallocation") {
                return Err(format!("Invalid parameter '{k}'").into());
            }
            let required = match &args.image {
                Some(path) => source(args, path, None)?.size,
                None => size.unwrap_or(0).next_multiple_of(512),
            };
            Ok(BlockMeasureInfo { required, fully_allocated: required, bitmaps: None })
        }
        "luks" => {
            let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            for (k, _) in &pairs {
                let known = [
                    "size",
                    "key-secret",
                    "cipher-alg",
                    "cipher-mode",
                    "ivgen-alg",
                    "ivgen-hash-alg",
                    "hash-alg",
                    "iter-time",
                    "preallocation",
                    "detached-header",
                ];
                if !known.contains(&k.as_str()) {
                    return Err(format!("Invalid parameter '{k}'").into());
                }
            }
            let header = luks_header_len(get("cipher-alg").unwrap_or("aes-256"), get("cipher-mode").unwrap_or("xts"))?;
            let size = match &args.image {
                Some(path) => source(args, path, None)?.size.next_multiple_of(512),
                None => size.unwrap_or(0),
            };
            let total = header + size;
            Ok(BlockMeasureInfo { required: total, fully_allocated: total, bitmaps: None })
        }
        "qcow2" => {
            let o = qcow2_options(&pairs)?;
            let cs = o.cluster_size;
            let mut virtual_size = size.unwrap_or(0).next_multiple_of(cs);
            let l2e = if o.extended_l2 { 16 } else { 8 };
            let l2_tables = (virtual_size / cs).div_ceil(cs / l2e);
            if l2_tables.saturating_mul(8) > 32 << 20 {
                return Err("The image size is too large (try using a larger cluster size)".into());
            }
            let mut required = 0;
            let mut bitmaps = None;
            if let Some(path) = &args.image {
                let src = source(args, path, Some(cs))?;
                virtual_size = src.size.next_multiple_of(cs);
                required = if o.has_backing_file { virtual_size } else { src.data_bytes };
                bitmaps = src.bitmaps.map(|b| bitmaps_size(&b, src.size, cs));
            }
            if o.full_prealloc {
                required = virtual_size;
            }
            let luks = o.luks_header.map_or(0, |h| h.next_multiple_of(cs));
            let fully_allocated = luks + prealloc_size(virtual_size, cs, o.refcount_order, o.extended_l2);
            Ok(BlockMeasureInfo {
                required: fully_allocated - virtual_size + required,
                fully_allocated,
                bitmaps: bitmaps.filter(|_| o.version >= 3),
            })
        }
        other => Err(format!("Image format driver '{other}' does not support measure (qcow2, raw, luks)").into()),
    }
}

/// Runs `qluks measure`.
pub fn run(args: MeasureArgs) -> Result<(), Box<dyn Error>> {
    let info = measure(&args)?;
    match args.output {
        Output::Json => print!("{}", json::pretty(&info)),
        Output::Human => {
            println!("required size: {}", info.required);
            println!("fully allocated size: {}", info.fully_allocated);
            if let Some(b) = info.bitmaps {
                println!("bitmaps size: {b}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_give_qemu_img_numbers() {
        // `qemu-img measure -O qcow2 --size 64M`: 67436544 fully allocated, 327680 required.
        assert_eq!(prealloc_size(64 << 20, 65536, 4, false), 67436544);
        // `qemu-img measure -O qcow2 --size 1G -o encrypt.format=luks`: 1076232192.
        assert_eq!(luks_header_len("aes-256", "xts"), Ok(2068480));
        assert_eq!(2068480u64.next_multiple_of(65536) + prealloc_size(1 << 30, 65536, 4, false), 1076232192);
        // One refcount block and one table cluster cover a few clusters; none for none.
        assert_eq!(refcount_metadata_size(3, 65536, 4), 2 * 65536);
        assert_eq!(refcount_metadata_size(0, 65536, 4), 0);
        // 1-bit refcounts: 524288 per 64 KiB block.
        assert_eq!(refcount_metadata_size(524288, 65536, 0), 3 * 65536);
    }

    #[test]
    fn options_are_checked_like_qemu() {
        let p = parse_options(&["cluster_size=4k,extended_l2=on".into()]).unwrap();
        assert!(qcow2_options(&p).is_err());
        let p = parse_options(&["compat=0.10,refcount_bits=8".into()]).unwrap();
        assert!(qcow2_options(&p).is_err());
        let p = parse_options(&["bogus=1".into()]).unwrap();
        assert!(qcow2_options(&p).is_err());
        let p = parse_options(&["cluster_size=2M,refcount_bits=1,lazy_refcounts".into()]).unwrap();
        let o = qcow2_options(&p).unwrap();
        assert_eq!((o.cluster_size, o.refcount_order), (2 << 20, 0));
    }
}
