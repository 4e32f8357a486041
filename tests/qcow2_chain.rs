//! Backing chains through the resolver: layered reads against qemu-img, each encrypted layer
//! with its own secret, shorter backings, loops, depth limits and name policy; the allocation
//! map against `qemu-img map --output json`.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use qluks::qcow2::backing::{BackingFormat, ChainError};
use qluks::qcow2::file_resolver::{BackingPolicy, FileResolver, FileResolverError};
use qluks::qcow2::Chain;

fn img(args: &[&str]) {
    common::run(Command::new("qemu-img").args(args));
}

fn io(image_opts: &str, objects: &[String], cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    for o in objects {
        c.arg("--object").arg(o);
    }
    c.args(["--image-opts", image_opts]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    common::run(&mut c);
}

fn qemu_raw(dir: &common::TempDir, objects: &[String], image_opts: &str) -> Vec<u8> {
    let out = dir.join("qemu.raw");
    let mut c = Command::new("qemu-img");
    c.arg("convert");
    for o in objects {
        c.arg("--object").arg(o);
    }
    c.args(["--image-opts", image_opts, "-O", "raw"]).arg(&out);
    common::run(&mut c);
    std::fs::read(out).unwrap()
}

fn open_chain(top: &Path, root: &Path, passphrases: &[&str]) -> Chain<File> {
    let mut r = FileResolver::new(top, root).unwrap();
    for (depth, p) in passphrases.iter().enumerate() {
        r.set_passphrase(depth, p.as_bytes());
    }
    Chain::open(File::open(top).unwrap(), &mut r).unwrap()
}

fn read_all(chain: &mut Chain<File>) -> Vec<u8> {
    let mut buf = vec![0u8; chain.size() as usize];
    let mut scratch = vec![0u8; 3 << 21];
    chain.read_at_with_scratch(0, &mut buf, &mut scratch).unwrap();
    buf
}

#[test]
fn three_deep_chain_with_different_secrets_reads_like_qemu() {
    let t = "three_deep_chain_with_different_secrets_reads_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (base, mid, top) = (dir.join("base.qcow2"), dir.join("mid.qcow2"), dir.join("top.qcow2"));
    let objects: Vec<String> =
        ["base-pw", "mid-pw", "top-pw"].iter().enumerate().map(|(i, p)| format!("secret,id=s{i},data={p}")).collect();
    let o = objects.clone();
    let enc = |secret: &str| format!("encrypt.format=luks,encrypt.key-secret={secret},encrypt.iter-time=10");
    let b = base.to_str().unwrap();
    let m = mid.to_str().unwrap();
    let tp = top.to_str().unwrap();
    img(&["create", "-q", "-f", "qcow2", "--object", &o[0], "-o", &enc("s0"), b, "4M"]);
    // The middle layer is plain, with 4 KiB clusters; the top is encrypted with its own secret.
    img(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", b, "-F", "qcow2", m, "4M"]);
    img(&["create", "-q", "-f", "qcow2", "--object", &o[2], "-o", &enc("s2"), "-b", m, "-F", "qcow2", tp, "5M"]);
    let base_opts = format!("driver=qcow2,file.filename={b},encrypt.key-secret=s0");
    let mid_opts = format!("driver=qcow2,file.filename={m},backing.encrypt.key-secret=s0");
    let top_opts =
        format!("driver=qcow2,file.filename={tp},encrypt.key-secret=s2,backing.backing.encrypt.key-secret=s0");
    io(&base_opts, &o, &["write -P 0xb0 0 1M", "write -P 0xb1 2M 1M"]);
    io(&mid_opts, &o, &["write -P 0x41 64k 8k", "write -z 2M 4k", "write -P 0x42 1M 100k"]);
    io(&top_opts, &o, &["write -P 0x70 96k 64k", "write -P 0x71 3M 512", "write -P 0x72 4M 100k"]);
    let want = qemu_raw(&dir, &o, &top_opts);
    let mut chain = open_chain(&top, dir.path(), &["top-pw", "", "base-pw"]);
    assert_eq!(chain.layers().count(), 3);
    assert_eq!(read_all(&mut chain), want);
    // An odd read straddling layers and the encrypted partial-sector path.
    let mut buf = vec![0u8; 70_001];
    let mut scratch = [];
    chain.read_at_with_scratch(64 * 1024 - 3, &mut buf, &mut scratch).unwrap();
    assert_eq!(buf, want[64 * 1024 - 3..64 * 1024 - 3 + 70_001]);
}

#[test]
fn wrong_backing_passphrase_names_the_layer() {
    let t = "wrong_backing_passphrase_names_the_layer";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (base, top) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    let s = "secret,id=s0,data=right".to_string();
    img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        &s,
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
        base.to_str().unwrap(),
        "1M",
    ]);
    img(&["create", "-q", "-f", "qcow2", "-b", base.to_str().unwrap(), "-F", "qcow2", top.to_str().unwrap()]);
    let mut r = FileResolver::new(&top, dir.path()).unwrap();
    r.set_passphrase(1, b"wrong");
    let e = Chain::<File>::open(File::open(&top).unwrap(), &mut r).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::Layer { depth: 1, error: qluks::qcow2::Error::Luks(qluks::luks::LuksError::WrongPassphrase) }
        ),
        "{e:?}"
    );
    // One question to branch on, the layer in the message, the layer's error as the source,
    // and LUKS's own words for a wrong passphrase.
    assert!(e.is_wrong_passphrase());
    assert_eq!(e.depth(), Some(1));
    assert_eq!(
        e.to_string(),
        "backing layer 1: LUKS header in the image: no keyslot matches the passphrase (wrong passphrase)"
    );
    let source = std::error::Error::source(&e).expect("the layer's error");
    assert_eq!(source.to_string(), "LUKS header in the image: no keyslot matches the passphrase (wrong passphrase)");
}

#[test]
fn raw_backing_shorter_than_the_overlay_reads_zeros_past_its_end() {
    let t = "raw_backing_shorter_than_the_overlay_reads_zeros_past_its_end";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (base, top) = (dir.join("base.raw"), dir.join("top.qcow2"));
    std::fs::write(&base, common::pattern(7, 1_000_000)).unwrap(); // not a multiple of 512
    img(&["create", "-q", "-f", "qcow2", "-b", base.to_str().unwrap(), "-F", "raw", top.to_str().unwrap(), "3M"]);
    let opts = format!("driver=qcow2,file.filename={}", top.display());
    io(&opts, &[], &["write -P 0x33 512k 4k"]);
    let want = qemu_raw(&dir, &[], &opts);
    let mut chain = open_chain(&top, dir.path(), &[]);
    let got = read_all(&mut chain);
    assert!(got[1_000_000..].iter().all(|&b| b == 0));
    assert_eq!(got, want);
}

#[test]
fn backing_format_is_probed_when_the_image_names_none_and_the_caller_allows_it() {
    let t = "backing_format_is_probed_when_the_image_names_none_and_the_caller_allows_it";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (base, top) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    img(&["create", "-q", "-f", "qcow2", "-b", base.to_str().unwrap(), "-F", "qcow2", top.to_str().unwrap()]);
    // Drop the format extension (qemu-img insists on one): turn it into an unknown extension.
    let mut bytes = std::fs::read(&top).unwrap();
    let at = bytes[..4096].windows(4).position(|w| w == [0xe2, 0x79, 0x2a, 0xca]).expect("format extension");
    bytes[at + 3] = 0;
    std::fs::write(&top, &bytes).unwrap();
    // Not without the caller's consent.
    let mut r = FileResolver::new(&top, dir.path()).unwrap();
    let e = Chain::<File>::open(File::open(&top).unwrap(), &mut r).unwrap_err();
    assert!(matches!(e, ChainError::UndeclaredFormat { depth: 1 }), "{e:?}");
    let policy = BackingPolicy::new().root(dir.path()).probe_format(true);
    let mut r = FileResolver::with_policy(&top, policy).unwrap();
    let mut chain = Chain::<File>::open(File::open(&top).unwrap(), &mut r).unwrap();
    let formats: Vec<_> = chain
        .layers()
        .map(|l| match l {
            qluks::qcow2::Layer::Qcow2(_) => BackingFormat::Qcow2,
            qluks::qcow2::Layer::Raw { .. } => BackingFormat::Raw,
        })
        .collect();
    assert_eq!(formats, [BackingFormat::Qcow2, BackingFormat::Qcow2]);
    assert_eq!(read_all(&mut chain), vec![0u8; 1 << 20]);
}

#[test]
fn backing_loops_are_detected() {
    let t = "backing_loops_are_detected";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (a, b) = (dir.join("a.qcow2"), dir.join("b.qcow2"));
    img(&["create", "-q", "-f", "qcow2", a.to_str().unwrap(), "1M"]);
    img(&["create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b.to_str().unwrap()]);
    img(&["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a.to_str().unwrap()]);
    let mut r = FileResolver::new(&b, dir.path()).unwrap();
    let e = Chain::<File>::open(File::open(&b).unwrap(), &mut r).unwrap_err();
    assert!(matches!(e, ChainError::Loop { depth: 2 }), "{e:?}");
}

#[test]
fn chains_deeper_than_the_storage_are_refused() {
    let t = "chains_deeper_than_the_storage_are_refused";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    img(&["create", "-q", "-f", "qcow2", dir.join("l0.qcow2").to_str().unwrap(), "1M"]);
    for i in 1..4 {
        let below = format!("l{}.qcow2", i - 1);
        img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &below,
            "-F",
            "qcow2",
            dir.join(&format!("l{i}.qcow2")).to_str().unwrap(),
        ]);
    }
    let top = dir.join("l3.qcow2");
    let mut r = FileResolver::new(&top, dir.path()).unwrap();
    let e = Chain::<File, 2, 3>::open(File::open(&top).unwrap(), &mut r).unwrap_err();
    assert!(matches!(e, ChainError::TooDeep { limit: 3 }), "{e:?}");
    let mut r = FileResolver::new(&top, dir.path()).unwrap();
    assert_eq!(Chain::<File, 2, 4>::open(File::open(&top).unwrap(), &mut r).unwrap().layers().count(), 4);
}

#[test]
fn json_names_and_escapes_from_the_root_are_refused() {
    let t = "json_names_and_escapes_from_the_root_are_refused";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let outer = common::TempDir::new(t);
    let root = outer.join("root");
    std::fs::create_dir(&root).unwrap();
    img(&["create", "-q", "-f", "qcow2", outer.join("outside.qcow2").to_str().unwrap(), "1M"]);
    let top = root.join("top.qcow2");
    img(&["create", "-q", "-f", "qcow2", "-b", "../outside.qcow2", "-F", "qcow2", top.to_str().unwrap()]);
    let mut r = FileResolver::new(&top, &root).unwrap();
    let e = Chain::<File>::open(File::open(&top).unwrap(), &mut r).unwrap_err();
    assert!(matches!(e, ChainError::Resolver { depth: 1, error: FileResolverError::OutsideRoot { .. } }), "{e:?}");
    let json = r#"json:{"driver":"qcow2","file":{"driver":"file","filename":"/etc/passwd"}}"#;
    img(&["rebase", "-u", "-b", json, "-F", "qcow2", top.to_str().unwrap()]);
    let mut r = FileResolver::new(&top, &root).unwrap();
    let e = Chain::<File>::open(File::open(&top).unwrap(), &mut r).unwrap_err();
    assert!(matches!(e, ChainError::Resolver { depth: 1, error: FileResolverError::JsonName { .. } }), "{e:?}");
}

/// `qemu-img map --output json` entries as (start, length, depth, present, zero, data, offset).
type MapRow = (u64, u64, u64, bool, bool, bool, Option<u64>);

fn qemu_map(top: &Path) -> Vec<MapRow> {
    let out = common::run(Command::new("qemu-img").args(["map", "--output", "json"]).arg(top));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["depth"].as_u64().unwrap(),
                e["present"].as_bool().unwrap(),
                e["zero"].as_bool().unwrap(),
                e["data"].as_bool().unwrap(),
                e.get("offset").and_then(|o| o.as_u64()),
            )
        })
        .collect()
}

#[test]
fn extents_match_qemu_img_map() {
    let t = "extents_match_qemu_img_map";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (base, top) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "4M"]);
    let bo = format!("driver=qcow2,file.filename={}", base.display());
    io(&bo, &[], &["write -P 1 0 128k", "write -z 1M 64k", "write -P 3 3M 64k"]);
    img(&["create", "-q", "-f", "qcow2", "-b", base.to_str().unwrap(), "-F", "qcow2", top.to_str().unwrap(), "6M"]);
    let to = format!("driver=qcow2,file.filename={}", top.display());
    io(&to, &[], &["write -P 2 64k 64k", "write -z 2M 64k", "write -P 4 5M 4k", "write -P 5 3M 64k"]);
    let mut chain = open_chain(&top, dir.path(), &[]);
    let ours: Vec<MapRow> = chain
        .extents(0)
        .map(|e| {
            let e = e.unwrap();
            (e.start, e.length, e.depth as u64, e.present(), e.zero(), e.data(), e.offset())
        })
        .collect();
    assert_eq!(ours, qemu_map(&top));
}
