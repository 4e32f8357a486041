//! `qluks info --output json` against the peers, field by field, for the same images:
//! `qemu-img info --output json` for qcow2 (v2 and v3, snapshots, backing file, external data
//! file, dirty and corrupt bits, embedded LUKS), qcow v1 and LUKS1; `cryptsetup luksDump` for
//! LUKS1 (text) and LUKS2 (text and `--dump-json-metadata`).
//!
//! qluks prints qemu-img's `ImageInfo`: with its `qluks-…` keys removed, it must equal
//! qemu-img's JSON exactly. Known gaps against cryptsetup: salts and digests (secret-derived,
//! not layout) and LUKS2 token lists.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{run, tool, tools, TempDir};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qluks_info(img: &Path) -> Value {
    let out = run(Command::new(env!("CARGO_BIN_EXE_qluks")).args(["info", "--output", "json", s(img)]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("qluks info is not JSON ({e}): {out}"))
}

/// `v` without qluks's own keys (`qluks-…`), at any depth.
fn strip_qluks(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with("qluks-")).map(|(k, v)| (k.clone(), strip_qluks(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_qluks).collect()),
        other => other.clone(),
    }
}

fn qemu_info(img: &Path) -> Value {
    let out = run(Command::new("qemu-img").args(["info", "--output", "json", s(img)]));
    serde_json::from_str(&out).unwrap()
}

fn qemu_img(args: &[&str]) {
    run(Command::new("qemu-img").args(args));
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(c.arg(img));
}

/// A JSON value as u64 (cryptsetup writes 64-bit numbers as strings).
fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("{s} is not a number")),
        _ => panic!("{v} is not a number"),
    }
}

/// qemu's cipher mode and IV generator as one LUKS mode string (`xts` + `plain64`,
/// `cbc` + `essiv` + `sha256` -> `cbc-essiv:sha256`).
fn qemu_mode(luks: &Value) -> String {
    let mut mode = format!("{}-{}", luks["cipher-mode"].as_str().unwrap(), luks["ivgen-alg"].as_str().unwrap());
    if let Some(h) = luks["ivgen-hash-alg"].as_str() {
        mode = format!("{mode}:{h}");
    }
    mode
}

/// qluks's LUKS data (`ours`: the `encrypt` object of a qcow2, or a LUKS1 volume's
/// `format-specific` data) against qemu's: every key equal, qluks's own keys aside.
fn compare_luks_with_qemu(ours: &Value, theirs: &Value, what: &str) {
    assert_eq!(ours["qluks-luks-version"], 1, "{what}");
    assert_eq!(&strip_qluks(ours), theirs, "{what}: LUKS data");
    let mode = qemu_mode(theirs);
    assert!(mode.starts_with(theirs["cipher-mode"].as_str().unwrap()), "{what}");
    assert_eq!(theirs["slots"].as_array().unwrap().len(), 8, "{what}: keyslot count");
}

/// `qluks info` against `qemu-img info` for a qcow2 image: the same JSON, qluks's own keys
/// aside, and those agreeing with the header.
fn compare_qcow2(img: &Path, what: &str) {
    let (ours, theirs) = (qluks_info(img), qemu_info(img));
    assert_eq!(ours["format"], "qcow2", "{what}");
    assert_eq!(theirs["format"], "qcow2", "{what}");
    assert_eq!(strip_qluks(&ours), theirs, "{what}: qluks info differs from qemu-img info");
    // The image file's length; qemu's "file" child reports it rounded up to whole sectors.
    let file_len = std::fs::metadata(img).unwrap().len();
    assert_eq!(file_len.next_multiple_of(512), num(&ours["children"][0]["info"]["virtual-size"]), "{what}");
    let fs = &theirs["format-specific"]["data"];
    let x = &ours["qluks-qcow2"];
    assert_eq!(x["version"], if fs["compat"] == "0.10" { 2 } else { 3 }, "{what}: version");
    let incompatible = x["incompatible-features"].as_array().unwrap();
    assert_eq!(incompatible.contains(&Value::from("dirty bit")), theirs["dirty-flag"] == true, "{what}: {x}");
    assert_eq!(incompatible.contains(&Value::from("corrupt bit")), fs["corrupt"] == true, "{what}: {x}");
    assert_eq!(incompatible.contains(&Value::from("external data file")), fs.get("data-file").is_some(), "{what}");
    assert_eq!(ours["qluks-backend"].is_string(), theirs.get("encrypted").is_some(), "{what}: backend");
    if let Some(enc) = fs.get("encrypt").filter(|e| e["format"] == "luks") {
        compare_luks_with_qemu(&ours["format-specific"]["data"]["encrypt"], enc, what);
        assert!(x["luks-header"][0].as_u64().unwrap() > 0, "{what}: {x}");
    }
}

#[test]
fn qcow2_info_matches_qemu_img_info() {
    let t = "qcow2_info_vs_qemu_img";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);

    // compat 0.10, 4 KiB clusters, grown, then two snapshots with data between them.
    let v2 = dir.join("v2.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4k", s(&v2), "1M"]);
    qemu_img(&["resize", "-q", s(&v2), "3M"]);
    qemu_io(&v2, &["write -P 1 0 64k"]);
    qemu_img(&["snapshot", "-c", "first", s(&v2)]);
    qemu_io(&v2, &["write -P 2 8k 8k"]);
    qemu_img(&["snapshot", "-c", "second", s(&v2)]);
    compare_qcow2(&v2, "compat 0.10 with snapshots");

    // v3: lazy refcounts, 32-bit refcounts, zstd, 16 KiB clusters, external raw data file.
    let ext = dir.join("ext.qcow2");
    let o =
        "lazy_refcounts=on,refcount_bits=32,compression_type=zstd,cluster_size=16k,data_file=ext.raw,data_file_raw=on";
    // qemu-img creates the data file relative to its working directory: run it in `dir`.
    run(Command::new("qemu-img").current_dir(dir.path()).args(["create", "-q", "-f", "qcow2", "-o", o, s(&ext), "2M"]));
    assert!(dir.join("ext.raw").exists());
    compare_qcow2(&ext, "v3 with an external data file");

    // An encrypted (LUKS, aes-128 cbc-essiv, sha1) top with extended L2 over the v2 base.
    let top = dir.join("top.qcow2");
    let o = "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,\
             encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,\
             encrypt.hash-alg=sha1,extended_l2=on";
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s,data=x",
        "-o",
        o,
        "-b",
        "v2.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    compare_qcow2(&top, "encrypted with a backing file");

    // Default v3 encrypted with qemu's default cipher, and a backing file named without format.
    let enc = dir.join("enc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s,data=x",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10",
        s(&enc),
        "1M",
    ]);
    compare_qcow2(&enc, "encrypted, default cipher");

    // Dirty: lazy refcounts and a qemu-io killed after a write.
    let dirty = dir.join("dirty.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", s(&dirty), "2M"]);
    let _ = common::output(Command::new("qemu-io").args([
        "-f",
        "qcow2",
        "-c",
        "write -P 1 0 64k",
        "-c",
        "sigraise 9",
        s(&dirty),
    ]));
    assert_eq!(qemu_info(&dirty)["dirty-flag"], true, "qemu-io left the image dirty");
    compare_qcow2(&dirty, "dirty");

    // Corrupt: the incompatible bit 1 set by hand.
    let corrupt = dir.join("corrupt.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&corrupt), "1M"]);
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[79] |= 2;
    std::fs::write(&corrupt, &bytes).unwrap();
    assert_eq!(qemu_info(&corrupt)["format-specific"]["data"]["corrupt"], true);
    compare_qcow2(&corrupt, "corrupt");
}

#[test]
fn qcow1_info_matches_qemu_img_info() {
    let t = "qcow1_info_vs_qemu_img";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(t);
    let base = dir.join("base.raw");
    std::fs::write(&base, [0u8; 4096]).unwrap();
    for (name, args) in [
        ("plain.qcow", &["create", "-q", "-f", "qcow"][..]),
        ("backed.qcow", &["create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw"][..]),
    ] {
        let img = dir.join(name);
        qemu_img(&[args, &[s(&img), "3M"]].concat());
        let (ours, theirs) = (qluks_info(&img), qemu_info(&img));
        assert_eq!(theirs["format"], "qcow", "{name}");
        assert_eq!(strip_qluks(&ours), theirs, "{name}: qluks info differs from qemu-img info");
    }
}

/// cryptsetup's `luksDump` text as (field, value) lines, with the keyslot each belongs to.
fn luks_dump(img: &Path) -> String {
    run(Command::new("cryptsetup").arg("luksDump").arg(img))
}

/// The value of `field:` in the part of a LUKS1 dump before the keyslots (`slot` None) or in
/// keyslot `slot`'s section.
fn luks1_dump_field(dump: &str, slot: Option<usize>, field: &str) -> Option<String> {
    let section: &str = match slot {
        None => &dump[..dump.find("Key Slot 0:").unwrap()],
        Some(k) => {
            let start = dump.find(&format!("Key Slot {k}:")).unwrap();
            let end = dump[start + 1..].find("Key Slot ").map_or(dump.len(), |e| start + 1 + e);
            &dump[start..end]
        }
    };
    section.lines().map(str::trim).find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
}

fn compare_luks1_with_cryptsetup(img: &Path, what: &str) {
    let info = qluks_info(img);
    let ours = &info["format-specific"]["data"];
    let dump = luks_dump(img);
    let field = |f: &str| luks1_dump_field(&dump, None, f).unwrap_or_else(|| panic!("{f} in {dump}"));
    assert_eq!(info["format"], "luks", "{what}");
    assert_eq!(info["format-specific"]["type"], "luks", "{what}");
    assert_eq!(ours["qluks-luks-version"], 1, "{what}");
    assert_eq!(field("Version"), "1", "{what}");
    // qemu's split form: cipher-alg aes-N, cipher-mode + ivgen-alg (+ ivgen-hash-alg).
    let alg = ours["cipher-alg"].as_str().unwrap();
    let (name, bits) = alg.split_once('-').unwrap();
    assert_eq!(name, field("Cipher name"), "{what}: cipher name");
    assert_eq!(qemu_mode(ours), field("Cipher mode"), "{what}: cipher mode");
    assert_eq!(ours["hash-alg"], field("Hash spec"), "{what}: hash");
    assert_eq!(num(&ours["payload-offset"]), field("Payload offset").parse::<u64>().unwrap() * 512, "{what}");
    // aes-N: N bits per AES key, two keys for XTS.
    let keys = if ours["cipher-mode"] == "xts" { 2 } else { 1 };
    assert_eq!(bits.parse::<u64>().unwrap() * keys, field("MK bits").parse::<u64>().unwrap(), "{what}: key size");
    assert_eq!(ours["master-key-iters"].to_string(), field("MK iterations"), "{what}: MK iterations");
    assert_eq!(ours["uuid"], field("UUID"), "{what}: uuid");
    assert_eq!(ours["detached-header"], false, "{what}");
    let file_len = std::fs::metadata(img).unwrap().len();
    assert_eq!(num(&info["virtual-size"]), file_len - num(&ours["payload-offset"]), "{what}: virtual size");
    let slots = ours["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 8, "{what}");
    for (k, slot) in slots.iter().enumerate() {
        let state = dump.lines().find_map(|l| l.strip_prefix(&format!("Key Slot {k}: "))).unwrap();
        assert_eq!(slot["active"], state == "ENABLED", "{what}: keyslot {k} {state}");
        if state != "ENABLED" {
            assert_eq!((slot.get("iters"), slot.get("stripes")), (None, None), "{what}: keyslot {k}");
            continue;
        }
        let f = |name: &str| luks1_dump_field(&dump, Some(k), name).unwrap_or_else(|| panic!("{name} in {dump}"));
        assert_eq!(slot["iters"].to_string(), f("Iterations"), "{what}: keyslot {k} iterations");
        assert_eq!(num(&slot["key-offset"]), f("Key material offset").parse::<u64>().unwrap() * 512, "{what}: {k}");
        assert_eq!(slot["stripes"].to_string(), f("AF stripes"), "{what}: keyslot {k} stripes");
    }
}

#[test]
fn luks1_info_matches_qemu_img_info_and_cryptsetup_luks_dump() {
    let t = "luks1_info_vs_peers";
    if !tools(t, &["qemu-img", "cryptsetup"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pass = dir.join("pass");
    std::fs::write(&pass, b"pw").unwrap();
    let secret = format!("secret,id=s,file={}", s(&pass));

    // Made by qemu-img: default, and aes-128 cbc-essiv:sha256 with sha1.
    for (name, o) in [
        ("q-default.luks", ""),
        ("q-cbc.luks", ",cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1"),
    ] {
        let img = dir.join(name);
        let o = format!("key-secret=s,iter-time=10{o}");
        qemu_img(&["create", "-q", "-f", "luks", "--object", &secret, "-o", &o, s(&img), "1M"]);
        let (ours, theirs) = (qluks_info(&img), qemu_info(&img));
        assert_eq!(theirs["format-specific"]["type"], "luks", "{name}");
        assert_eq!(strip_qluks(&ours), theirs, "{name}: qluks info differs from qemu-img info");
        compare_luks_with_qemu(&ours["format-specific"]["data"], &theirs["format-specific"]["data"], name);
        compare_luks1_with_cryptsetup(&img, name);
    }

    // Made by cryptsetup, with a second keyslot in slot 5.
    let img = dir.join("cs.luks");
    std::fs::File::create(&img).unwrap().set_len(4 << 20).unwrap();
    run(Command::new("cryptsetup")
        .args(["luksFormat", "--batch-mode", "--type", "luks1", "--pbkdf-force-iterations", "1000"])
        .args([
            "--cipher",
            "aes-cbc-plain64",
            "--key-size",
            "256",
            "--hash",
            "sha512",
            "--key-file",
            s(&pass),
            s(&img),
        ]));
    let second = dir.join("second");
    std::fs::write(&second, b"second").unwrap();
    run(Command::new("cryptsetup")
        .args(["luksAddKey", "--batch-mode", "--pbkdf-force-iterations", "2000", "--key-slot", "5"])
        .args(["--key-file", s(&pass), s(&img), s(&second)]));
    compare_luks1_with_cryptsetup(&img, "cryptsetup-made");
    let (ours, theirs) = (qluks_info(&img), qemu_info(&img));
    assert_eq!(strip_qluks(&ours), theirs, "cryptsetup-made: qluks info differs from qemu-img info");
    compare_luks_with_qemu(&ours["format-specific"]["data"], &theirs["format-specific"]["data"], "cryptsetup-made");
}

/// `name: value` of a LUKS2 text dump's header part.
fn luks2_dump_field(dump: &str, field: &str) -> String {
    let head = &dump[..dump.find("Keyslots:").unwrap_or(dump.len())];
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{field} in {dump}"))
}

#[test]
fn luks2_info_matches_cryptsetup_luks_dump() {
    let t = "luks2_info_vs_cryptsetup";
    if !tool(t, "cryptsetup") {
        return;
    }
    let dir = TempDir::new(t);
    let pass = dir.join("pass");
    std::fs::write(&pass, b"pw").unwrap();
    let img = dir.join("v.luks2");
    std::fs::File::create(&img).unwrap().set_len(20 << 20).unwrap();
    run(Command::new("cryptsetup")
        .args(["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "64"])
        .args(["--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2", "--sector-size", "4096"])
        .args(["--label", "data disk", "--subsystem", "tests", "--luks2-metadata-size", "32k"])
        .args(["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--key-file", s(&pass), s(&img)]));
    let second = dir.join("second");
    std::fs::write(&second, b"second").unwrap();
    run(Command::new("cryptsetup")
        .args(["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
        .args(["--hash", "sha512", "--key-slot", "3", "--key-file", s(&pass), s(&img), s(&second)]));
    run(Command::new("cryptsetup").args([
        "config",
        "--batch-mode",
        "--priority",
        "prefer",
        "--key-slot",
        "3",
        s(&img),
    ]));
    compare_luks2_with_cryptsetup(&img);
}

/// Every field of `qluks info` for a LUKS2 volume against `cryptsetup luksDump` (text) and
/// `luksDump --dump-json-metadata`.
fn compare_luks2_with_cryptsetup(img: &Path) {
    let info = qluks_info(img);
    let ours = &info["qluks-luks2"];
    let qemu = &info["format-specific"]["data"];
    let text = luks_dump(img);
    let json: Value =
        serde_json::from_str(&run(Command::new("cryptsetup").args(["luksDump", "--dump-json-metadata"]).arg(img)))
            .unwrap();

    assert_eq!(info["format"], "luks");
    assert_eq!(qemu["qluks-luks-version"], 2);
    assert_eq!(ours["version"].to_string(), luks2_dump_field(&text, "Version"));
    assert_eq!(qemu["uuid"], luks2_dump_field(&text, "UUID"));
    // cryptsetup shows an empty label or subsystem as "(no label)" / "(no subsystem)".
    let text_or_empty = |field: &str, none: &str| Some(luks2_dump_field(&text, field)).filter(|v| v != none);
    assert_eq!(ours["label"], text_or_empty("Label", "(no label)").unwrap_or_default());
    assert_eq!(ours["subsystem"], text_or_empty("Subsystem", "(no subsystem)").unwrap_or_default());
    assert_eq!(ours["seqid"].to_string(), luks2_dump_field(&text, "Epoch"));
    assert_eq!(format!("{} [bytes]", ours["hdr-size"]), luks2_dump_field(&text, "Metadata area"));
    assert_eq!(format!("{} [bytes]", ours["keyslots-size"]), luks2_dump_field(&text, "Keyslots area"));
    assert_eq!(num(&ours["keyslots-size"]), num(&json["config"]["keyslots_size"]));
    assert_eq!(num(&ours["hdr-size"]), num(&json["config"]["json_size"]) + 4096, "binary header + JSON area");

    // Segments.
    let segments = json["segments"].as_object().unwrap();
    let ours_segments = ours["segments"].as_array().unwrap();
    assert_eq!(ours_segments.len(), segments.len());
    for o in ours_segments {
        let t = &segments[&o["id"].to_string()];
        assert_eq!(o["type"], t["type"]);
        assert_eq!(num(&o["offset"]), num(&t["offset"]), "segment offset");
        assert_eq!(o["size"], t["size"], "segment size");
        assert_eq!(o["encryption"], t["encryption"]);
        assert_eq!(o["sector-size"], t["sector_size"]);
        assert_eq!(num(&o["iv-tweak"]), num(&t["iv_tweak"]));
    }
    let seg0 = &segments["0"];
    assert_eq!(num(&qemu["payload-offset"]), num(&seg0["offset"]));
    assert_eq!(ours["cipher"], seg0["encryption"]);
    assert_eq!(ours["sector-size"], seg0["sector_size"]);
    let file_len = std::fs::metadata(img).unwrap().len();
    assert_eq!(num(&info["virtual-size"]), file_len - num(&seg0["offset"]), "a dynamic segment runs to the end");
    // qemu's names for the cipher: aes-N, mode, IV generator.
    let enc = seg0["encryption"].as_str().unwrap();
    assert_eq!(
        format!("aes-{}-{}", qemu["cipher-mode"].as_str().unwrap(), qemu_mode(qemu).split_once('-').unwrap().1),
        enc
    );

    // Keyslots.
    let keyslots = json["keyslots"].as_object().unwrap();
    let ours_keyslots = ours["keyslots"].as_array().unwrap();
    assert_eq!(ours_keyslots.len(), keyslots.len());
    for o in ours_keyslots {
        let t = &keyslots[&o["index"].to_string()];
        let k = &o["index"];
        assert_eq!(o["type"], t["type"], "keyslot {k}");
        assert_eq!(o["key-size"], t["key_size"], "keyslot {k}");
        // cryptsetup omits the priority when it is normal (1); 2 is "prefer", 0 "ignore".
        let priority = match t.get("priority").map(num) {
            None | Some(1) => "normal",
            Some(2) => "high",
            Some(0) => "ignore",
            Some(p) => panic!("priority {p}"),
        };
        assert_eq!(o["priority"], priority, "keyslot {k}");
        assert_eq!(o["af-hash"], t["af"]["hash"], "keyslot {k}");
        assert_eq!(o["stripes"], t["af"]["stripes"], "keyslot {k}");
        assert_eq!(o["area-encryption"], t["area"]["encryption"], "keyslot {k}");
        assert_eq!(num(&o["area-offset"]), num(&t["area"]["offset"]), "keyslot {k}");
        assert_eq!(num(&o["area-size"]), num(&t["area"]["size"]), "keyslot {k}");
        let (ok, tk) = (&o["kdf"], &t["kdf"]);
        assert_eq!(ok["type"], tk["type"], "keyslot {k}");
        for f in ["time", "memory", "cpus", "hash", "iterations"] {
            assert_eq!(ok.get(f), tk.get(f), "keyslot {k} kdf {f}");
        }
        // qemu's slot fields: key-offset is the area, iters the PBKDF2 iterations or Argon2 time.
        let slot = qemu["slots"].as_array().unwrap().iter().find(|s| s["key-offset"] == o["area-offset"]).unwrap();
        assert_eq!(slot["active"], true, "keyslot {k}");
        assert_eq!(slot["stripes"], t["af"]["stripes"], "keyslot {k}");
        assert_eq!(Some(&slot["iters"]), tk.get("iterations").or(tk.get("time")), "keyslot {k}");
    }
    assert_eq!(qemu["slots"].as_array().unwrap().len(), keyslots.len());

    // Digests.
    let digests = json["digests"].as_object().unwrap();
    let ours_digests = ours["digests"].as_array().unwrap();
    assert_eq!(ours_digests.len(), digests.len());
    for o in ours_digests {
        let t = &digests[&o["id"].to_string()];
        assert_eq!(o["type"], t["type"]);
        assert_eq!(o["hash"], t["hash"]);
        assert_eq!(o["iterations"], t["iterations"]);
        let ids = |v: &Value| v.as_array().unwrap().iter().map(num).collect::<Vec<_>>();
        assert_eq!(ids(&o["keyslots"]), ids(&t["keyslots"]));
        assert_eq!(ids(&o["segments"]), ids(&t["segments"]));
    }
    // qemu's master-key-iters and hash-alg: the volume key digest's.
    let d0 = digests.values().next().unwrap();
    assert_eq!(qemu["master-key-iters"], d0["iterations"]);
    assert_eq!(qemu["hash-alg"], d0["hash"]);
}

#[test]
fn info_of_qluks_made_volumes_matches_the_peers() {
    let t = "qluks_made_info_vs_peers";
    if !tools(t, &["qemu-img", "cryptsetup"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pass = dir.join("pass");
    std::fs::write(&pass, b"pw").unwrap();
    let qluks_create = |format: &str, opts: &str, img: &Path| {
        run(Command::new(env!("CARGO_BIN_EXE_qluks")).args([
            "create",
            "-f",
            format,
            "--passphrase-file",
            s(&pass),
            "-o",
            opts,
            s(img),
            "1M",
        ]));
    };
    for (name, opts) in [
        ("default.luks", "iterations=1000"),
        ("cbc.luks", "iterations=1000,cipher=aes-128-cbc-essiv:sha256,hash=sha1"),
        ("sha384.luks", "iterations=1000,cipher=aes-256-cbc-plain64,hash=sha384"),
    ] {
        let img = dir.join(name);
        qluks_create("luks", opts, &img);
        let (ours, theirs) = (qluks_info(&img), qemu_info(&img));
        assert_eq!(strip_qluks(&ours), theirs, "{name}: qluks info differs from qemu-img info");
        compare_luks_with_qemu(&ours["format-specific"]["data"], &theirs["format-specific"]["data"], name);
        compare_luks1_with_cryptsetup(&img, name);
    }
    for (name, opts) in
        [("pbkdf2.luks2", "pbkdf=pbkdf2"), ("argon2.luks2", "pbkdf=argon2id,time=4,memory=64,cpus=2,sector-size=4096")]
    {
        let img = dir.join(name);
        qluks_create("luks2", opts, &img);
        compare_luks2_with_cryptsetup(&img);
    }
}
