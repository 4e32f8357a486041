//! Commit and rebase (issue 11, items 5 and 6) against QEMU: the same chains (made by qemu-img
//! and qemu-io) are copied; one copy is committed / rebased by qluks, the other by qemu-img;
//! `qemu-img compare` must find them identical and `qemu-img check` the qluks copies clean.
//! Crash injection: every write after the N-th fails (both files of a commit count), for every
//! N; then `qemu-img check` shows no corruption and the chain reads as before.
mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use qluks::io::BlockIo;
use qluks::qcow2::backing::{BackingFormat, BackingRequest, DataFileRequest, Opened, Resolver};
use qluks::qcow2::commit::{commit, commit_scratch_len, Shifted};
use qluks::qcow2::rebase::{rebase, rebase_scratch_len, rebase_within};
use qluks::qcow2::{Chain, Layer, Qcow2};

/// A file whose writes fail once a shared budget is spent (a crash: nothing after it lands).
struct Dev {
    file: File,
    budget: Arc<AtomicU64>,
}

impl BlockIo for Dev {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        BlockIo::read_at(&mut self.file, offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        match self.budget.load(Ordering::Relaxed) {
            0 => Err(std::io::Error::other("injected crash")),
            n => {
                self.budget.store(n - 1, Ordering::Relaxed);
                BlockIo::write_at(&mut self.file, offset, buf)
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.budget.load(Ordering::Relaxed) == 0 {
            return Err(std::io::Error::other("injected crash"));
        }
        BlockIo::flush(&mut self.file)
    }
    fn size(&mut self) -> std::io::Result<u64> {
        BlockIo::size(&mut self.file)
    }
}

/// Opens names inside one directory; passphrases by file name (the layer at each depth is
/// known once opened).
struct Files {
    dir: PathBuf,
    secrets: HashMap<String, Vec<u8>>,
    by_depth: Vec<String>,
    budget: Arc<AtomicU64>,
}

impl Files {
    fn new(dir: &Path, top: &str, secrets: &[(&str, &str)], budget: u64) -> Files {
        Files {
            dir: dir.to_path_buf(),
            secrets: secrets.iter().map(|(n, s)| (n.to_string(), s.as_bytes().to_vec())).collect(),
            by_depth: vec![top.to_string()],
            budget: Arc::new(AtomicU64::new(budget)),
        }
    }
    fn dev(&self, name: &str) -> Dev {
        let file = OpenOptions::new().read(true).write(true).open(self.dir.join(name)).unwrap();
        Dev { file, budget: self.budget.clone() }
    }
    fn secret(&self, name: &str) -> Option<&[u8]> {
        self.secrets.get(name).map(|s| s.as_slice())
    }
}

impl Resolver<Dev> for Files {
    type Error = String;
    fn open_backing(&mut self, req: &BackingRequest<'_>) -> Result<Opened<Dev>, String> {
        let name = String::from_utf8(req.name.to_vec()).map_err(|e| e.to_string())?;
        self.by_depth.truncate(req.depth);
        self.by_depth.push(name.clone());
        Ok(Opened { io: self.dev(&name), format: None, identity: None })
    }
    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        let name = self.by_depth.get(depth)?;
        self.secrets.get(name).map(|s| s.as_slice())
    }
    fn open_data_file(&mut self, _: &DataFileRequest<'_>) -> Result<Dev, String> {
        Err("no data files".into())
    }
}

type TestChain = Chain<Dev, 4, 4>;

fn open_chain(dir: &Path, top: &str, secrets: &[(&str, &str)], budget: u64) -> (Box<TestChain>, Files) {
    let mut r = Files::new(dir, top, secrets, budget);
    let mut chain = Box::new(TestChain::new_empty());
    chain.open_in(r.dev(top), &mut r).unwrap_or_else(|e| panic!("open {top}: {e}"));
    (chain, r)
}

/// The guest content of the chain whose top is `top`, read by qluks.
fn read_chain(dir: &Path, top: &str, secrets: &[(&str, &str)]) -> Vec<u8> {
    let (mut chain, _) = open_chain(dir, top, secrets, u64::MAX);
    let mut out = vec![0; chain.size() as usize];
    let mut scratch = vec![0; chain.compressed_scratch_len().max(1)];
    chain.read_at_with_scratch(0, &mut out, &mut scratch).unwrap();
    out
}

/// Commits `top` into its backing file by qluks; writes fail after `budget` of them.
fn qluks_commit(dir: &Path, top: &str, secrets: &[(&str, &str)], budget: u64) -> (Result<(), String>, u64) {
    let mut r = Files::new(dir, top, secrets, budget);
    let mut overlay: Box<Qcow2<Dev, Dev, 4>> = Box::new(Qcow2::new_empty());
    overlay.open_in(r.dev(top), r.secret(top)).unwrap();
    let name = String::from_utf8(overlay.extensions().backing_file.as_ref().unwrap().as_bytes().to_vec()).unwrap();
    let format = overlay.extensions().backing_format.as_ref().map(|f| f.as_bytes().to_vec());
    let opened =
        r.open_backing(&BackingRequest { name: name.as_bytes(), format: format.as_deref(), depth: 1 }).unwrap();
    let mut base = Box::new(TestChain::new_empty());
    match BackingFormat::from_name(format.as_deref().unwrap()).unwrap() {
        BackingFormat::Raw => {
            let mut io = opened.io;
            let size = io.size().unwrap();
            base.push_backing(Layer::Raw { io, size }).ok().unwrap();
        }
        BackingFormat::Qcow2 => base.open_in(opened.io, &mut Shifted::new(&mut r, 1)).unwrap(),
    }
    // A small batch buffer: more batches, more write points.
    let mut scratch = vec![0; commit_scratch_len(&*overlay, &*base) + 64 * 1024];
    let result = commit(&mut *overlay, &mut *base, false, &mut scratch, &mut |_, _| {}).map_err(|e| e.to_string());
    drop(overlay);
    drop(base);
    (result.map(|_| ()), r.budget.load(Ordering::Relaxed))
}

/// Rebases `top` onto layer `depth` of its own chain, named `new`, by qluks
/// ([`rebase_within`]); writes fail after `budget`.
fn qluks_rebase_within(dir: &Path, top: &str, depth: usize, new: &str, budget: u64) -> (Result<(), String>, u64) {
    let (mut chain, r) = open_chain(dir, top, &[], budget);
    let mut scratch = vec![0; rebase_scratch_len::<Dev, 4, 4, 4, 4>(&*chain, None) + 64 * 1024];
    let result = rebase_within(&mut *chain, depth, new.as_bytes(), Some(b"qcow2"), &mut scratch, &mut |_, _| {})
        .map_err(|e| e.to_string());
    drop(chain);
    (result.map(|_| ()), r.budget.load(Ordering::Relaxed))
}

/// Rebases `top` onto `new` (empty: none) by qluks (safe); writes fail after `budget`.
fn qluks_rebase(
    dir: &Path,
    top: &str,
    new: &str,
    format: &str,
    secrets: &[(&str, &str)],
    budget: u64,
) -> (Result<(), String>, u64) {
    let (mut chain, mut r) = open_chain(dir, top, secrets, budget);
    let mut new_chain = Box::new(TestChain::new_empty());
    if !new.is_empty() {
        let opened = r.open_backing(&BackingRequest { name: new.as_bytes(), format: None, depth: 1 }).unwrap();
        match format {
            "raw" => {
                let mut io = opened.io;
                let size = io.size().unwrap();
                new_chain.push_backing(Layer::Raw { io, size }).ok().unwrap();
            }
            _ => new_chain.open_in(opened.io, &mut Shifted::new(&mut r, 1)).unwrap(),
        }
    }
    let new_ref = (!new.is_empty()).then_some(&mut *new_chain);
    let len = rebase_scratch_len(&*chain, new_ref.as_deref()) + 64 * 1024;
    let mut scratch = vec![0; len];
    let fmt = (!new.is_empty()).then_some(format.as_bytes());
    let result =
        rebase(&mut *chain, new_ref, new.as_bytes(), fmt, &mut scratch, &mut |_, _| {}).map_err(|e| e.to_string());
    drop(chain);
    drop(new_chain);
    (result.map(|_| ()), r.budget.load(Ordering::Relaxed))
}

fn objects(secrets: &[(&str, &str)]) -> Vec<String> {
    secrets
        .iter()
        .enumerate()
        .flat_map(|(i, (_, s))| ["--object".to_string(), format!("secret,id=sec{i},data={s}")])
        .collect()
}

/// `--image-opts` for the chain from `top` down `layers` (file names), with each encrypted
/// layer's secret.
fn image_opts(dir: &Path, layers: &[&str], secrets: &[(&str, &str)]) -> String {
    let mut o = format!("driver=qcow2,file.filename={}", dir.join(layers[0]).display());
    let mut prefix = String::new();
    for name in layers {
        if let Some(i) = secrets.iter().position(|(n, _)| n == name) {
            o.push_str(&format!(",{prefix}encrypt.key-secret=sec{i}"));
        }
        prefix.push_str("backing.");
    }
    o
}

fn qemu(args: &[&str], secrets: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("qemu-img");
    c.arg(args[0]).args(objects(secrets)).args(&args[1..]);
    common::output(&mut c)
}

fn qemu_ok(args: &[&str], secrets: &[(&str, &str)]) {
    let out = qemu(args, secrets);
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `qemu-img check` of `layers[0]` (opts for its chain): no corruption; `clean` = no leak either.
fn check(dir: &Path, layers: &[&str], secrets: &[(&str, &str)], clean: bool) {
    let opts = image_opts(dir, layers, secrets);
    let out = qemu(&["check", "--image-opts", &opts], secrets);
    let code = out.status.code();
    let ok = if clean { code == Some(0) } else { matches!(code, Some(0) | Some(3)) };
    assert!(
        ok,
        "qemu-img check {}: {code:?}\n{}\n{}",
        layers[0],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compare(dir: &Path, a: &[&str], b: &[&str], secrets: &[(&str, &str)]) {
    let (oa, ob) = (image_opts(dir, a, secrets), image_opts(dir, b, secrets));
    let out = qemu(&["compare", "--image-opts", &oa, &ob], secrets);
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}\n{}",
        a[0],
        b[0],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_io(dir: &Path, layers: &[&str], secrets: &[(&str, &str)], cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(objects(secrets)).args(["--image-opts", &image_opts(dir, layers, secrets)]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    common::run(&mut c);
}

fn copy(dir: &Path, names: &[&str], suffix: &str) {
    for n in names {
        std::fs::copy(dir.join(n), dir.join(format!("{n}{suffix}"))).unwrap();
    }
}

fn luks_opts(secret_index: usize) -> String {
    format!("encrypt.format=luks,encrypt.key-secret=sec{secret_index},encrypt.iter-time=10")
}

/// A chain `top -> base` made by QEMU: `opts` per layer (qemu-img create -o), base data
/// everywhere, overlay data, zeros and a compressed cluster over parts of it.
fn make_commit_chain(dir: &Path, base_fmt: &str, base_opts: &str, top_opts: &str, secrets: &[(&str, &str)]) {
    let base = dir.join("base");
    if base_fmt == "raw" {
        std::fs::write(&base, common::pattern(7, 2 << 20)).unwrap();
    } else {
        let mut c = Command::new("qemu-img");
        c.arg("create").args(objects(secrets)).args(["-f", "qcow2", "-o", base_opts]).arg(&base).arg("2M");
        common::run(&mut c);
        qemu_io(dir, &["base"], secrets, &["write -P 0x11 0 2M", "write -z 1M 64k"]);
    }
    let mut c = Command::new("qemu-img");
    c.arg("create").args(objects(secrets)).args(["-f", "qcow2", "-o", top_opts, "-b", "base", "-F", base_fmt]);
    c.arg(dir.join("top")).arg("2M");
    c.current_dir(dir);
    common::run(&mut c);
    let layers: &[&str] = &["top", "base"];
    let mut cmds =
        vec!["write -P 0x22 4k 8k", "write -P 0x33 200k 300k", "write -z 600k 128k", "write -P 0x44 1500k 4k"];
    if !top_opts.contains("encrypt") {
        cmds.push("write -c -P 0x55 1664k 64k");
    }
    qemu_io(dir, layers, secrets, &cmds);
}

fn commit_case(t: &str, base_fmt: &str, base_opts: &str, top_opts: &str, secrets: &[(&str, &str)]) {
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = common::TempDir::new(t);
    let dir = d.path();
    make_commit_chain(dir, base_fmt, base_opts, top_opts, secrets);
    let before = read_chain(dir, "top", secrets);
    let base_layers: &[&str] = if base_fmt == "raw" { &[] } else { &["base"] };
    // The names stay "top" -> "base": each copy lives in its own directory.
    let qdir = common::TempDir::new(&format!("{t}-qemu"));
    std::fs::copy(dir.join("top"), qdir.join("top")).unwrap();
    std::fs::copy(dir.join("base"), qdir.join("base")).unwrap();
    copy(dir, &["top", "base"], ".orig");

    let (r, _) = qluks_commit(dir, "top", secrets, u64::MAX);
    r.unwrap();
    let opts = image_opts(qdir.path(), &["top", "base"], secrets);
    qemu_ok(&["commit", "--image-opts", &opts], secrets);

    // The base after commit, the (emptied) overlay over it, and the qluks copies clean.
    if base_fmt == "raw" {
        assert!(
            std::fs::read(dir.join("base")).unwrap() == std::fs::read(qdir.join("base")).unwrap(),
            "raw bases differ"
        );
    } else {
        let a = image_opts(dir, &["base"], secrets);
        let b = image_opts(qdir.path(), &["base"], secrets);
        let out = qemu(&["compare", "--image-opts", &a, &b], secrets);
        assert!(out.status.success(), "compare bases: {}", String::from_utf8_lossy(&out.stdout));
        check(dir, &["base"], secrets, true);
    }
    let a = image_opts(dir, &["top", "base"], secrets);
    let b = image_opts(qdir.path(), &["top", "base"], secrets);
    let out = qemu(&["compare", "--image-opts", &a, &b], secrets);
    assert!(out.status.success(), "compare overlays: {}", String::from_utf8_lossy(&out.stdout));
    check(dir, &["top", "base"], secrets, true);
    same(&read_chain(dir, "top", secrets), &before, "the chain reads the same after the commit");
    // The overlay is empty: qemu-img map shows nothing allocated in it.
    let map = qemu(&["map", "--output=json", "--image-opts", &a], secrets);
    let map = String::from_utf8_lossy(&map.stdout).to_string();
    assert!(!map.contains("\"depth\": 0"), "overlay still allocates: {map}");
    let _ = base_layers;

    // Crash at every write.
    let (_, left) = {
        copy_back(dir);
        qluks_commit(dir, "top", secrets, 1 << 40)
    };
    let total = (1u64 << 40) - left;
    assert!(total > 3, "{total} writes");
    for n in 0..total {
        copy_back(dir);
        let (r, _) = qluks_commit(dir, "top", secrets, n);
        assert!(r.is_err(), "commit with {n} of {total} writes succeeded");
        if base_fmt != "raw" {
            check(dir, &["base"], secrets, false);
        }
        check(dir, &["top", "base"], secrets, false);
        same(&read_chain(dir, "top", secrets), &before, &format!("after a crash at write {n} of {total}"));
    }
}

/// Compares guest contents, naming the first differing offset (not dumping megabytes).
fn same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!("{what}: content differs (lengths {} / {}, first difference at {at:?})", got.len(), want.len());
    }
}

fn copy_back(dir: &Path) {
    for n in ["top", "base"] {
        std::fs::copy(dir.join(format!("{n}.orig")), dir.join(n)).unwrap();
    }
}

#[test]
fn commit_plain_matches_qemu_and_survives_crashes() {
    commit_case("commit-plain", "qcow2", "cluster_size=64k", "cluster_size=64k", &[]);
}

#[test]
fn commit_luks_into_luks_with_another_key_matches_qemu_iotest_198() {
    let secrets = [("top", "top-secret"), ("base", "base-secret")];
    commit_case("commit-luks", "qcow2", &luks_opts(1), &luks_opts(0), &secrets);
}

#[test]
fn commit_extended_l2_matches_qemu() {
    let o = "cluster_size=64k,extended_l2=on";
    commit_case("commit-xl2", "qcow2", o, o, &[]);
}

#[test]
fn commit_into_raw_base_matches_qemu() {
    commit_case("commit-raw", "raw", "", "cluster_size=64k", &[]);
}

#[test]
fn commit_into_a_base_with_its_own_backing_copies_on_write_from_it() {
    let t = "commit-3";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = common::TempDir::new(t);
    let dir = d.path();
    for (name, backing) in [("b0", None), ("base", Some("b0")), ("top", Some("base"))] {
        let mut c = Command::new("qemu-img");
        c.args(["create", "-f", "qcow2"]).current_dir(dir);
        if let Some(b) = backing {
            c.args(["-b", b, "-F", "qcow2"]);
        }
        c.args([name, "1M"]);
        common::run(&mut c);
    }
    qemu_io(dir, &["b0"], &[], &["write -P 0x01 0 1M"]);
    qemu_io(dir, &["base"], &[], &["write -P 0x02 64k 64k"]);
    qemu_io(dir, &["top"], &[], &["write -P 0x03 1000 1000", "write -P 0x04 300k 10k"]);
    let before = read_chain(dir, "top", &[]);
    let qdir = common::TempDir::new("commit-3-qemu");
    for n in ["b0", "base", "top"] {
        std::fs::copy(dir.join(n), qdir.join(n)).unwrap();
    }
    qluks_commit(dir, "top", &[], u64::MAX).0.unwrap();
    qemu_ok(&["commit", "-f", "qcow2", qdir.join("top").to_str().unwrap()], &[]);
    let out = qemu(&["compare", dir.join("base").to_str().unwrap(), qdir.join("base").to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    check(dir, &["base"], &[], true);
    check(dir, &["top"], &[], true);
    same(&read_chain(dir, "top", &[]), &before, "after");
}

/// A three-layer chain b0 <- mid <- top with data in every layer (and LUKS with three
/// different secrets when `luks`).
fn make_rebase_chain(dir: &Path, secrets: &[(&str, &str)], xl2: bool) {
    for (name, backing) in [("b0", None), ("mid", Some("b0")), ("top", Some("mid"))] {
        let mut o = String::from("cluster_size=64k");
        if let Some(i) = secrets.iter().position(|(n, _)| *n == name) {
            o.push(',');
            o.push_str(&luks_opts(i));
        }
        if xl2 {
            o.push_str(",extended_l2=on");
        }
        let mut c = Command::new("qemu-img");
        c.arg("create").args(objects(secrets)).args(["-f", "qcow2", "-o", &o]).current_dir(dir);
        if let Some(b) = backing {
            c.args(["-b", b, "-F", "qcow2"]);
        }
        c.args([name, "1M"]);
        common::run(&mut c);
    }
    qemu_io(dir, &["b0"], secrets, &["write -P 0x01 0 1M"]);
    qemu_io(dir, &["mid", "b0"], secrets, &["write -P 0x02 100k 200k", "write -z 512k 64k", "write -P 0x05 900k 4k"]);
    qemu_io(dir, &["top", "mid", "b0"], secrets, &["write -P 0x03 128k 8k", "write -P 0x04 700k 64k"]);
}

#[test]
fn rebase_safe_unsafe_and_no_backing_match_qemu_and_survive_crashes() {
    let t = "rebase-plain";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    for xl2 in [false, true] {
        let d = common::TempDir::new(t);
        let dir = d.path();
        make_rebase_chain(dir, &[], xl2);
        let before = read_chain(dir, "top", &[]);
        copy(dir, &["top"], ".orig");

        // Safe, onto b0: the top now holds mid's data where it differs from b0.
        let (r, left) = qluks_rebase(dir, "top", "b0", "qcow2", &[], 1 << 40);
        r.unwrap();
        let total = (1u64 << 40) - left;
        std::fs::copy(dir.join("top.orig"), dir.join("top.q")).unwrap();
        let mut c = Command::new("qemu-img");
        c.args(["rebase", "-f", "qcow2", "-b", "b0", "-F", "qcow2", "top.q"]).current_dir(dir);
        common::run(&mut c);
        compare(dir, &["top"], &["top.q"], &[]);
        check(dir, &["top"], &[], true);
        same(&read_chain(dir, "top", &[]), &before, "after");
        let info = common::run(Command::new("qemu-img").args(["info", "--output=json"]).arg(dir.join("top")));
        assert!(
            info.contains("\"backing-filename\": \"b0\"") && info.contains("\"backing-filename-format\": \"qcow2\""),
            "{info}"
        );

        // The same onto b0 as a layer of the old chain (only what mid allocates is compared).
        std::fs::copy(dir.join("top"), dir.join("top.safe")).unwrap();
        std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
        let (r, left) = qluks_rebase_within(dir, "top", 2, "b0", 1 << 40);
        r.unwrap();
        let within_total = (1u64 << 40) - left;
        compare(dir, &["top"], &["top.q"], &[]);
        check(dir, &["top"], &[], true);
        same(&read_chain(dir, "top", &[]), &before, "after rebase_within");
        for n in 0..within_total {
            std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
            let (r, _) = qluks_rebase_within(dir, "top", 2, "b0", n);
            assert!(r.is_err(), "rebase_within with {n} of {within_total} writes succeeded");
            check(dir, &["top"], &[], false);
            same(&read_chain(dir, "top", &[]), &before, &format!("after a crash at write {n} of {within_total}"));
        }
        std::fs::copy(dir.join("top.safe"), dir.join("top")).unwrap();

        // Crash at every write: the top reads as before (through mid, or through b0 once the
        // header switched).
        for n in 0..total {
            std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
            let (r, _) = qluks_rebase(dir, "top", "b0", "qcow2", &[], n);
            assert!(r.is_err(), "rebase with {n} of {total} writes succeeded");
            check(dir, &["top"], &[], false);
            same(&read_chain(dir, "top", &[]), &before, &format!("after a crash at write {n} of {total}"));
        }

        // -b "": everything the old chain provides lands in the top.
        std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
        qluks_rebase(dir, "top", "", "", &[], u64::MAX).0.unwrap();
        std::fs::copy(dir.join("top.orig"), dir.join("top.q")).unwrap();
        let mut c = Command::new("qemu-img");
        c.args(["rebase", "-f", "qcow2", "-b", "", "top.q"]).current_dir(dir);
        common::run(&mut c);
        let out = qemu(&["compare", dir.join("top").to_str().unwrap(), dir.join("top.q").to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        check(dir, &["top"], &[], true);
        same(&read_chain(dir, "top", &[]), &before, "after");
        let info = common::run(Command::new("qemu-img").args(["info", "--output=json"]).arg(dir.join("top")));
        assert!(!info.contains("backing-filename"), "{info}");

        // Unsafe: the header only, byte for byte what qemu-img writes in cluster 0's prefix.
        std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
        std::fs::copy(dir.join("top.orig"), dir.join("top.q")).unwrap();
        {
            let mut r = Files::new(dir, "top", &[], u64::MAX);
            let mut q: Box<Qcow2<Dev, Dev, 4>> = Box::new(Qcow2::new_empty());
            q.open_metadata_in(r.dev("top"), None).unwrap();
            let mut scratch = vec![0; 64 * 1024];
            q.set_backing_file(b"b0", Some(b"qcow2"), &mut scratch).unwrap();
            assert_eq!(q.extensions().backing_file.as_ref().unwrap().as_bytes(), b"b0");
            let _ = &mut r;
        }
        let mut c = Command::new("qemu-img");
        c.args(["rebase", "-u", "-f", "qcow2", "-b", "b0", "-F", "qcow2", "top.q"]).current_dir(dir);
        common::run(&mut c);
        let (a, b) = (std::fs::read(dir.join("top")).unwrap(), std::fs::read(dir.join("top.q")).unwrap());
        assert!(a[..4096] == b[..4096], "cluster 0 after rebase -u differs from qemu-img's");
        compare(dir, &["top"], &["top.q"], &[]);
        check(dir, &["top"], &[], true);
    }
}

#[test]
fn rebase_luks_chain_onto_its_bottom_layer_reads_the_same() {
    let t = "rebase-luks";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let d = common::TempDir::new(t);
    let dir = d.path();
    let secrets = [("top", "s-top"), ("mid", "s-mid"), ("b0", "s-b0")];
    make_rebase_chain(dir, &secrets, false);
    let before = read_chain(dir, "top", &secrets);
    copy(dir, &["top"], ".orig");
    let (r, left) = qluks_rebase(dir, "top", "b0", "qcow2", &secrets, 1 << 40);
    r.unwrap();
    let total = (1u64 << 40) - left;
    same(&read_chain(dir, "top", &secrets), &before, "after");
    // QEMU reads the rebased top over b0 as the old chain: compare against the original.
    let secrets_q = [("top", "s-top"), ("b0", "s-b0"), ("mid", "s-mid")];
    let a = image_opts(dir, &["top", "b0"], &secrets_q);
    let b = image_opts(dir, &["top.orig", "mid", "b0"], &[("top.orig", "s-top"), ("b0", "s-b0"), ("mid", "s-mid")]);
    let out = qemu(&["compare", "--image-opts", &a, &b], &secrets_q);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    check(dir, &["top", "b0"], &secrets_q, true);
    for n in (0..total).step_by(((total / 12) as usize).max(1)) {
        std::fs::copy(dir.join("top.orig"), dir.join("top")).unwrap();
        let (r, _) = qluks_rebase(dir, "top", "b0", "qcow2", &secrets, n);
        assert!(r.is_err());
        same(&read_chain(dir, "top", &secrets), &before, &format!("after a crash at write {n} of {total}"));
    }
}

#[test]
fn a_backing_name_that_does_not_fit_is_refused_before_anything_is_written() {
    let t = "rebase-long";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let d = common::TempDir::new(t);
    let dir = d.path();
    let mut c = Command::new("qemu-img");
    c.args(["create", "-f", "qcow2", "-o", "cluster_size=512", "top", "1M"]).current_dir(dir);
    common::run(&mut c);
    let orig = std::fs::read(dir.join("top")).unwrap();
    let r = Files::new(dir, "top", &[], u64::MAX);
    let mut q: Box<Qcow2<Dev, Dev, 4>> = Box::new(Qcow2::new_empty());
    q.open_in(r.dev("top"), None).unwrap();
    let mut scratch = vec![0; 512];
    let name = vec![b'a'; 500];
    let e = q.set_backing_file(&name, Some(b"qcow2"), &mut scratch).unwrap_err();
    assert!(matches!(e, qluks::qcow2::Error::BackingNameTooLong { room: 512, .. }), "{e}");
    let e = q.set_backing_file(&[b'a'; 1024], None, &mut scratch).unwrap_err();
    assert!(matches!(e, qluks::qcow2::Error::BackingNameTooLong { .. }), "{e}");
    drop(q);
    assert!(std::fs::read(dir.join("top")).unwrap() == orig, "file changed");
}

/// The engine's stack: commit (LUKS into LUKS) and a safe rebase (LUKS, three layers) run on a
/// thread with 64 KiB of stack (128 KiB in debug builds), the large structs (images, chains,
/// scratch) in caller memory made on the main thread. `QLUKS_STACK_KIB` overrides it (to
/// bisect the minimum again).
#[test]
fn commit_and_rebase_run_in_64_kib_of_stack() {
    let t = "commit-stack";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let kib = std::env::var("QLUKS_STACK_KIB").ok().and_then(|s| s.parse().ok()).unwrap_or(if cfg!(debug_assertions) {
        128
    } else {
        64
    });
    let d = common::TempDir::new(t);
    let dir = d.path().to_path_buf();
    let secrets = [("top", "top-secret"), ("base", "base-secret")];
    make_commit_chain(&dir, "qcow2", &luks_opts(1), &luks_opts(0), &secrets);
    let before = read_chain(&dir, "top", &secrets);
    let mut overlay: Box<Qcow2<Dev, Dev, 4>> = Box::new(Qcow2::new_empty());
    let mut base = Box::new(TestChain::new_empty());
    let mut r = Files::new(&dir, "top", &secrets, u64::MAX);
    let mut scratch = vec![0u8; 1 << 20];
    let stats = std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(move || {
            overlay.open_in(r.dev("top"), r.secret("top")).unwrap();
            let opened = r.open_backing(&BackingRequest { name: b"base", format: Some(b"qcow2"), depth: 1 }).unwrap();
            base.open_in(opened.io, &mut Shifted::new(&mut r, 1)).unwrap();
            let stats = commit(&mut *overlay, &mut *base, false, &mut scratch, &mut |_, _| {}).unwrap();
            overlay.close();
            base.close();
            stats
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(stats.data_bytes > 0 && stats.zero_bytes > 0 && stats.emptied_clusters > 0, "{stats:?}");
    same(&read_chain(&dir, "top", &secrets), &before, "after");

    let d = common::TempDir::new(t);
    let dir = d.path().to_path_buf();
    let secrets = [("top", "s-top"), ("mid", "s-mid"), ("b0", "s-b0")];
    make_rebase_chain(&dir, &secrets, false);
    let before = read_chain(&dir, "top", &secrets);
    let mut chain = Box::new(TestChain::new_empty());
    let mut new_chain = Box::new(TestChain::new_empty());
    let mut r = Files::new(&dir, "top", &secrets, u64::MAX);
    let mut scratch = vec![0u8; 1 << 20];
    let stats = std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(move || {
            chain.open_in(r.dev("top"), &mut r).unwrap();
            let opened = r.open_backing(&BackingRequest { name: b"b0", format: Some(b"qcow2"), depth: 1 }).unwrap();
            new_chain.open_in(opened.io, &mut Shifted::new(&mut r, 1)).unwrap();
            let stats = rebase(&mut *chain, Some(&mut *new_chain), b"b0", Some(b"qcow2"), &mut scratch, &mut |_, _| {})
                .unwrap();
            chain.close();
            new_chain.close();
            stats
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(stats.copied_bytes > 0, "{stats:?}");
    same(&read_chain(&dir, "top", &secrets), &before, "after");
}

/// A base smaller than the overlay grows first, as `qemu-img commit` grows it: a raw base and
/// a qcow2 base, each committed by qluks and by qemu-img on copies; the bases must match
/// (raw: byte for byte, the same length; qcow2: the same virtual size and content, check
/// clean).
#[test]
fn commit_into_a_smaller_base_grows_it_as_qemu_does() {
    let t = "commit-small";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    for base_fmt in ["raw", "qcow2"] {
        let d = common::TempDir::new(&format!("{t}-{base_fmt}"));
        let dir = d.path();
        if base_fmt == "raw" {
            std::fs::write(dir.join("base"), common::pattern(3, 1 << 20)).unwrap();
        } else {
            qemu_ok(&["create", "-q", "-f", "qcow2", dir.join("base").to_str().unwrap(), "1M"], &[]);
            qemu_io(dir, &["base"], &[], &["write -P 0x11 0 1M"]);
        }
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", "qcow2", "-b", "base", "-F", base_fmt, "top", "2M"]).current_dir(dir);
        common::run(&mut c);
        qemu_io(dir, &["top"], &[], &["write -P 0x22 64k 64k", "write -P 0x33 1536k 4k"]);
        let before = read_chain(dir, "top", &[]);
        let qd = common::TempDir::new(&format!("{t}-{base_fmt}-qemu"));
        let qdir = qd.path();
        for n in ["base", "top"] {
            std::fs::copy(dir.join(n), qdir.join(n)).unwrap();
        }
        qemu_ok(&["commit", "-q", qdir.join("top").to_str().unwrap()], &[]);
        qluks_commit(dir, "top", &[], u64::MAX).0.unwrap();
        same(&read_chain(dir, "top", &[]), &before, "the chain after the commit");
        if base_fmt == "raw" {
            let (ours, theirs) = (std::fs::read(dir.join("base")).unwrap(), std::fs::read(qdir.join("base")).unwrap());
            assert_eq!(ours.len(), 2 << 20, "the raw base grew to the overlay's size");
            same(&ours, &theirs, "raw base vs qemu-img's");
        } else {
            let base: qluks::qcow2::Qcow2Image<File> =
                Qcow2::open(File::open(dir.join("base")).unwrap(), None).unwrap();
            assert_eq!(base.size(), 2 << 20, "the qcow2 base grew to the overlay's size");
            drop(base);
            check(dir, &["base"], &[], true);
            compare(dir, &["base"], &[qdir.join("base").to_str().unwrap()], &[]);
        }
    }
}
