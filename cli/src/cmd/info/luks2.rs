//! `qluks info` for LUKS2 volumes.
use std::error::Error;
use std::fmt::Write as _;
use std::fs::File;

use qluks::luks::luks2::{
    self,
    metadata::{Priority, SegmentType},
    Kdf, Luks2Header,
};

use serde_json::{json, Value};

use crate::escape::shown;
use crate::json::{LuksSlot, LuksSpecific};

use crate::luks2_memory::MAX_JSON;

/// `qluks info` text for the LUKS2 volume in `file`.
pub fn info(file: &mut File, file_size: u64) -> Result<String, Box<dyn Error>> {
    let mut buf = vec![0u8; MAX_JSON];
    let header = luks2::Luks2Header::read(file, &mut buf)?;
    Ok(info_human(&header, file_size))
}

/// `qluks info --output json` for the LUKS2 volume in `file` (of qemu's length `file_len`):
/// qemu's `QCryptoBlockInfoLUKS` fields filled from the LUKS2 metadata (qemu itself reads only
/// LUKS1), the virtual size, and the LUKS2 metadata qemu has no fields for (`qluks-luks2`).
pub fn image_info(file: &mut File, file_len: u64) -> Result<(LuksSpecific, u64, Value), Box<dyn Error>> {
    let mut buf = vec![0u8; MAX_JSON];
    let header = luks2::Luks2Header::read(file, &mut buf)?;
    let m = &header.metadata;
    let (offset, virtual_size, encryption) = match payload(&header, file_len) {
        Some((offset, size, segment)) => (offset, size, text(segment.encryption.as_str().as_bytes())),
        None => (0, 0, String::new()),
    };
    let key_bytes = m.keyslots().map(|(_, k)| k.key_size as usize).next().unwrap_or(0);
    let (cipher, mode) = encryption.split_once('-').unwrap_or((encryption.as_str(), ""));
    let (cipher_mode, ivgen_alg, ivgen_hash_alg) = crate::cmd::info::common::cipher_parts(mode);
    let bits = match qluks::crypto::CipherSpec::parse_combined(&encryption, key_bytes) {
        Ok(spec) => spec.aes_bits(),
        Err(_) if cipher_mode == "xts" => key_bytes * 4,
        Err(_) => key_bytes * 8,
    };
    let digest = m.digests().map(|(_, d)| d).next();
    let specific = LuksSpecific {
        cipher_alg: format!("{cipher}-{bits}"),
        cipher_mode,
        ivgen_alg,
        ivgen_hash_alg,
        hash_alg: digest.map(|d| text(d.hash.as_str().as_bytes())).unwrap_or_default(),
        detached_header: false,
        payload_offset: offset,
        master_key_iters: digest.map_or(0, |d| d.iterations.into()),
        uuid: text(header.binary.uuid_text()),
        slots: m
            .keyslots()
            .map(|(_, k)| LuksSlot {
                active: true,
                iters: Some(match &k.kdf {
                    Kdf::Pbkdf2 { iterations, .. } => (*iterations).into(),
                    Kdf::Argon2 { time, .. } => (*time).into(),
                }),
                stripes: Some(k.af.stripes.into()),
                key_offset: k.area.offset,
            })
            .collect(),
        qluks_luks_version: Some(2),
    };
    Ok((specific, virtual_size, luks2_json(&header, file_len)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kdf_human(kdf: &Kdf) -> String {
    match kdf {
        Kdf::Pbkdf2 { hash, iterations, .. } => format!("pbkdf2 ({}, {iterations} iterations)", shown(hash.as_str())),
        Kdf::Argon2 { time, memory_kib, cpus, .. } => {
            format!("{} (time {time}, memory {memory_kib} KiB, cpus {cpus})", kdf.name())
        }
    }
}

fn kdf_json(kdf: &Kdf) -> Value {
    match kdf {
        Kdf::Pbkdf2 { hash, iterations, .. } => {
            json!({"type": "pbkdf2", "hash": text(hash.as_str().as_bytes()), "iterations": iterations})
        }
        Kdf::Argon2 { time, memory_kib, cpus, .. } => {
            json!({"type": kdf.name(), "time": time, "memory": memory_kib, "cpus": cpus})
        }
    }
}

/// The data segment's offset and plaintext size.
fn payload(header: &Luks2Header, file_size: u64) -> Option<(u64, u64, &luks2::Luks2Segment)> {
    let (_, segment) = header.metadata.data_segment()?;
    let sector = u64::from(segment.sector_size);
    let size = segment.size.unwrap_or_else(|| file_size.saturating_sub(segment.offset) / sector * sector);
    Some((segment.offset, size, segment))
}

fn copy_state(fault: Option<luks2::Luks2CopyError>) -> String {
    match fault {
        None => "valid".into(),
        Some(e) => format!("invalid ({e})"),
    }
}

fn info_human(header: &Luks2Header, file_size: u64) -> String {
    let b = &header.binary;
    let m = &header.metadata;
    let mut s = String::new();
    let _ = writeln!(s, "format: luks\nversion: 2\nuuid: {}", shown(b.uuid_text()));
    let _ = writeln!(s, "label: {}\nsubsystem: {}", shown(b.label_text()), shown(b.subsystem_text()));
    let _ = writeln!(s, "seqid: {}\nheader size: {}\nchecksum: {}", b.seqid, b.hdr_size, b.checksum_alg.name());
    let _ = writeln!(s, "primary header: {}", copy_state(header.primary_fault));
    let _ = writeln!(s, "secondary header: {}", copy_state(header.secondary_fault));
    let _ = writeln!(s, "keyslots area: {} bytes", m.config.keyslots_size);
    if let Some(requirement) = &m.config.requirement {
        let _ = writeln!(s, "requirement: {}", shown(requirement.as_str()));
    }
    if let Some((offset, size, segment)) = payload(header, file_size) {
        let _ = writeln!(s, "cipher: {}\nsector size: {}", shown(segment.encryption.as_str()), segment.sector_size);
        let _ = writeln!(s, "payload offset: {offset}\nvirtual size: {size}");
    }
    let _ = writeln!(s, "segments:");
    for (id, seg) in m.segments() {
        let size = seg.size.map_or("dynamic".to_string(), |n| n.to_string());
        match seg.segment_type {
            SegmentType::Crypt => {
                let _ = writeln!(
                    s,
                    "  {id}: crypt, offset {}, size {size}, {}, sector {}, iv_tweak {}{}",
                    seg.offset,
                    shown(seg.encryption.as_str()),
                    seg.sector_size,
                    seg.iv_tweak,
                    if seg.backup { ", backup" } else { "" }
                );
            }
            SegmentType::Linear => {
                let _ = writeln!(s, "  {id}: linear, offset {}, size {size}", seg.offset);
            }
        }
    }
    let _ = writeln!(s, "keyslots:");
    for (id, k) in m.keyslots() {
        let _ = writeln!(
            s,
            "  {id}: luks2, key {} bits, priority {}, kdf {}, af {} stripes {}, area {} at {} ({} bytes)",
            k.key_size * 8,
            priority(k.priority),
            kdf_human(&k.kdf),
            shown(k.af.hash.as_str()),
            k.af.stripes,
            shown(k.area.encryption.as_str()),
            k.area.offset,
            k.area.size
        );
    }
    let _ = writeln!(s, "digests:");
    for (id, d) in m.digests() {
        let _ = writeln!(
            s,
            "  {id}: pbkdf2 ({}, {} iterations), keyslots {:?}, segments {:?}",
            shown(d.hash.as_str()),
            d.iterations,
            bits(d.keyslots),
            bits(u32::from(d.segments))
        );
    }
    s
}

fn priority(p: Priority) -> &'static str {
    match p {
        Priority::Ignore => "ignore",
        Priority::Normal => "normal",
        Priority::High => "high",
    }
}

fn bits(mask: u32) -> Vec<u32> {
    (0..32).filter(|i| mask & (1 << i) != 0).collect()
}

/// The LUKS2 metadata qemu has no fields for (`qluks-luks2`).
fn luks2_json(header: &Luks2Header, file_size: u64) -> Value {
    let b = &header.binary;
    let m = &header.metadata;
    let mut v = json!({
        "version": 2,
        "label": text(b.label_text()),
        "subsystem": text(b.subsystem_text()),
        "seqid": b.seqid,
        "hdr-size": b.hdr_size,
        "checksum-alg": b.checksum_alg.name(),
        "primary-header-valid": header.primary_fault.is_none(),
        "secondary-header-valid": header.secondary_fault.is_none(),
        "keyslots-size": m.config.keyslots_size,
    });
    if let Some((_, _, segment)) = payload(header, file_size) {
        v["cipher"] = json!(text(segment.encryption.as_str().as_bytes()));
        v["sector-size"] = json!(segment.sector_size);
    }
    v["segments"] = m
        .segments()
        .map(|(id, seg)| {
            let kind = match seg.segment_type {
                SegmentType::Crypt => "crypt",
                SegmentType::Linear => "linear",
            };
            json!({
                "id": id,
                "type": kind,
                "offset": seg.offset,
                "size": seg.size.map_or(json!("dynamic"), |n| json!(n)),
                "encryption": text(seg.encryption.as_str().as_bytes()),
                "sector-size": seg.sector_size,
                "iv-tweak": seg.iv_tweak,
            })
        })
        .collect();
    v["keyslots"] = m
        .keyslots()
        .map(|(id, k)| {
            json!({
                "index": id,
                "type": "luks2",
                "key-size": k.key_size,
                "priority": priority(k.priority),
                "kdf": kdf_json(&k.kdf),
                "af-hash": text(k.af.hash.as_str().as_bytes()),
                "stripes": k.af.stripes,
                "area-encryption": text(k.area.encryption.as_str().as_bytes()),
                "area-offset": k.area.offset,
                "area-size": k.area.size,
            })
        })
        .collect();
    v["digests"] = m
        .digests()
        .map(|(id, d)| {
            json!({
                "id": id,
                "type": "pbkdf2",
                "hash": text(d.hash.as_str().as_bytes()),
                "iterations": d.iterations,
                "keyslots": bits(d.keyslots),
                "segments": bits(u32::from(d.segments)),
            })
        })
        .collect();
    v
}
