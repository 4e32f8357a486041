//! The qcow2 interoperability matrix (issue 4's acceptance): every image is generated with
//! qemu-img/qemu-io at test time (matrix/mod.rs). For each, through the library (a `Chain` with
//! a directory resolver, or `Qcow1`) and through the binary (`qluks convert -O raw`, `qluks map
//! --output json`): the bytes must be identical to `qemu-img convert -O raw`, and the map must
//! agree with `qemu-img map --output json` on which ranges hold data and which read as zero.
#[path = "../../tests/common/mod.rs"]
mod common;
mod matrix;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use matrix::{Case, Format, MapRange};
use qluks::qcow::{ExtentKind, Qcow1};
use qluks::qcow2::backing::{BackingFormat, BackingRequest, Chain, DataFileRequest, Layer, Opened, Resolver};

/// Test policy for names found in images: plain file names in the image's directory only.
struct DirResolver {
    dir: PathBuf,
    passphrases: Vec<Option<&'static str>>,
    data_file: Option<PathBuf>,
}

impl DirResolver {
    fn for_case(case: &Case) -> DirResolver {
        let mut passphrases = vec![case.passphrase];
        passphrases.extend(case.backing_passphrases.iter().copied());
        DirResolver { dir: case.image.parent().unwrap().to_path_buf(), passphrases, data_file: case.data_file.clone() }
    }

    fn open_name(&self, name: &[u8]) -> Result<(File, u64), String> {
        let name = std::str::from_utf8(name).map_err(|_| "name is not UTF-8".to_string())?;
        let path = Path::new(name);
        let name = if path.is_absolute() && path.parent() == Some(&self.dir) {
            path.file_name().unwrap().to_str().unwrap()
        } else {
            name
        };
        if name.contains('/') || name.starts_with("json:") {
            return Err(format!("refusing backing name {name:?}"));
        }
        let f = File::open(self.dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let ino = f.metadata().map_err(|e| e.to_string())?.ino();
        Ok((f, ino))
    }
}

impl Resolver<File> for DirResolver {
    type Error = String;
    fn open_backing(&mut self, req: &BackingRequest<'_>) -> Result<Opened<File>, String> {
        let (io, ino) = self.open_name(req.name)?;
        let format = req.format.and_then(BackingFormat::from_name);
        Ok(Opened { io, format, identity: Some(ino) })
    }
    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        self.passphrases.get(depth).copied().flatten().map(str::as_bytes)
    }
    fn open_data_file(&mut self, req: &DataFileRequest<'_>) -> Result<File, String> {
        match (&self.data_file, req.name) {
            (Some(path), _) => File::open(path).map_err(|e| e.to_string()),
            (None, Some(name)) => self.open_name(name).map(|(f, _)| f),
            (None, None) => Err("no data file".into()),
        }
    }
}

/// (case, check) pairs whose feature has not landed yet. Checked both ways: a pending pair that
/// starts agreeing with QEMU fails the test until it is taken off this list.
const PENDING: &[(&str, &str)] = &[];

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

/// Passphrase options for the binary: the top layer's file and one file per backing layer
/// (empty for unencrypted layers).
fn passphrase_args(case: &Case, dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    let write = |name: String, secret: &str| {
        let path = dir.join(format!("{}.{name}.pass", case.name));
        std::fs::write(&path, secret).unwrap();
        path.to_str().unwrap().to_string()
    };
    if let Some(p) = case.passphrase {
        args.extend(["--passphrase-file".to_string(), write("top".into(), p)]);
    }
    for (i, p) in case.backing_passphrases.iter().enumerate() {
        args.extend(["--backing-passphrase-file".to_string(), write(format!("b{}", i + 1), p.unwrap_or(""))]);
    }
    args
}

/// `qluks convert -O raw` of the case (of its internal snapshot `snapshot`, if given), read
/// back in its windows.
fn qluks_convert(case: &Case, dir: &Path, snapshot: Option<&str>) -> Result<Vec<u8>, String> {
    let out = dir.join(format!("{}.{}.qluks.raw", case.name, snapshot.unwrap_or("active")));
    let o = common::output(
        qluks()
            .args(["convert", "-O", "raw"])
            .args(snapshot.map(|name| ["-l", name]).into_iter().flatten())
            .args(passphrase_args(case, dir))
            .arg(&case.image)
            .arg(&out),
    );
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    let size = std::fs::metadata(&out).unwrap().len();
    if size != case.size {
        return Err(format!("output is {size} bytes, the disk {}", case.size));
    }
    let bytes = matrix::read_windows(&out, &windows(case));
    let _ = std::fs::remove_file(&out);
    Ok(bytes)
}

/// `qluks map --output json` of the case.
fn cli_map(case: &Case) -> Result<Vec<MapRange>, String> {
    let dir = case.image.parent().unwrap();
    let o = common::output(qluks().args(["map", "--output", "json"]).args(passphrase_args(case, dir)).arg(&case.image));
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    Ok(matrix::parse_map_json(&String::from_utf8_lossy(&o.stdout)))
}

/// The guest windows to compare: the whole disk unless the case names windows.
fn windows(case: &Case) -> Vec<(u64, u64)> {
    case.windows.clone().unwrap_or_else(|| vec![(0, case.size)])
}

/// What qluks reads from the case's windows (concatenated), and its map of the whole disk.
fn qluks_read(case: &Case) -> (Vec<u8>, Vec<MapRange>) {
    let mut out = Vec::new();
    let mut map = Vec::new();
    match case.format {
        Format::Qcow2 => {
            let mut resolver = DirResolver::for_case(case);
            let mut chain: Chain<File, 8, 4> = Chain::open(File::open(&case.image).unwrap(), &mut resolver)
                .unwrap_or_else(|e| panic!("{}: open: {e}", case.name));
            assert_eq!(chain.size(), case.size, "{}: virtual size", case.name);
            let mut scratch = vec![0u8; 3 * (2 << 20)];
            for (off, len) in windows(case) {
                let mut buf = vec![0u8; len as usize];
                chain
                    .read_at_with_scratch(off, &mut buf, &mut scratch)
                    .unwrap_or_else(|e| panic!("{}: read: {e}", case.name));
                out.extend_from_slice(&buf);
            }
            // Each internal snapshot's disk, whole, after the active disk.
            for name in &case.snapshots {
                let Some(Some(Layer::Qcow2(q))) = chain.layers_mut().first_mut() else { panic!("qcow2 top layer") };
                let s =
                    q.find_snapshot(name.as_bytes()).unwrap_or_else(|e| panic!("{}: snapshot {name}: {e}", case.name));
                q.select_snapshot(&s).unwrap_or_else(|e| panic!("{}: select {name}: {e}", case.name));
                let mut buf = vec![0u8; q.size() as usize];
                chain
                    .read_at_with_scratch(0, &mut buf, &mut scratch)
                    .unwrap_or_else(|e| panic!("{}: read {name}: {e}", case.name));
                out.extend_from_slice(&buf);
            }
            if let Some(Some(Layer::Qcow2(q))) = chain.layers_mut().first_mut() {
                q.select_active();
            }
            for e in chain.extents(0) {
                let e = e.unwrap_or_else(|e| panic!("{}: map: {e}", case.name));
                map.push(MapRange { start: e.start, length: e.length, data: e.data(), zero: e.zero() });
            }
        }
        Format::Qcow => {
            let mut scratch = vec![0u8; Qcow1::<File>::MAX_SCRATCH_LEN];
            let password = case.passphrase.map(str::as_bytes);
            let mut q = Qcow1::open(File::open(&case.image).unwrap(), &mut scratch, password)
                .unwrap_or_else(|e| panic!("{}: open: {e}", case.name));
            assert_eq!(q.size(), case.size, "{}: virtual size", case.name);
            for (off, len) in windows(case) {
                let mut buf = vec![0u8; len as usize];
                q.read_at(off, &mut buf).unwrap_or_else(|e| panic!("{}: read: {e}", case.name));
                out.extend_from_slice(&buf);
            }
            let mut off = 0;
            while off < q.size() {
                let e = q.extent_at(off).unwrap_or_else(|e| panic!("{}: map: {e}", case.name));
                let data = !matches!(e.kind, ExtentKind::Unallocated);
                map.push(MapRange { start: e.offset, length: e.len, data, zero: !data });
                off += e.len;
            }
        }
    }
    (out, matrix::merge(map))
}

/// Index of the first differing byte, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Checks one case through the library and the binary: (progress notes, failures).
fn check_case(case: &Case, dir: &Path) -> (Vec<String>, Vec<String>) {
    let case_start = std::time::Instant::now();
    let mut notes = Vec::new();
    let mut failures = Vec::new();
    let mut expected = case.qemu_raw(dir);
    let map = case.qemu_map();
    matrix::check_generated(case, &map, &expected);
    for name in &case.snapshots {
        let snapshot = case.qemu_raw_snapshot(dir, name);
        assert_ne!(snapshot[..], expected[..snapshot.len()], "{}: snapshot {name} differs from now", case.name);
        expected.extend(snapshot);
    }
    // A panic in the library path is a failure of this case, not of the whole matrix.
    let ours = std::panic::catch_unwind(|| qluks_read(case));
    let library = match ours {
        Err(_) => Err(format!("{}: library: qluks failed (see the panic above)", case.name)),
        Ok((ours, our_map)) => match first_difference(&ours, &expected) {
            Some(at) => Err(format!("{}: library: first difference at byte {at:#x} of the windows", case.name)),
            None => matrix::compare_maps(&our_map, &map).map_err(|e| format!("{}: library map: {e}", case.name)),
        },
    };
    let active_len = windows(case).iter().map(|&(_, l)| l as usize).sum::<usize>();
    let mut cli_convert =
        qluks_convert(case, dir, None).and_then(|ours| match first_difference(&ours, &expected[..active_len]) {
            Some(at) => Err(format!("first difference at byte {at:#x} of the windows")),
            None => Ok(()),
        });
    let mut at = active_len;
    for name in &case.snapshots {
        let snapshot_len = case.size as usize;
        let want = &expected[at..at + snapshot_len];
        at += snapshot_len;
        if cli_convert.is_ok() {
            cli_convert = qluks_convert(case, dir, Some(name)).and_then(|ours| match first_difference(&ours, want) {
                Some(at) => Err(format!("snapshot {name}: first difference at byte {at:#x}")),
                None => Ok(()),
            });
        }
    }
    let cli_map = cli_map(case).and_then(|ours| matrix::compare_maps(&ours, &map));
    for (what, outcome) in [
        ("library", library),
        ("qluks convert", cli_convert.map_err(|e| format!("{}: qluks convert: {e}", case.name))),
        ("qluks map", cli_map.map_err(|e| format!("{}: qluks map: {e}", case.name))),
    ] {
        let pending = PENDING.contains(&(case.name.as_str(), what));
        match (outcome, pending) {
            (Ok(()), false) => {}
            (Err(e), true) => notes.push(format!("pending {e}")),
            (Err(e), false) => failures.push(e),
            (Ok(()), true) => {
                failures.push(format!("{} ({what}) now agrees with QEMU: take it off PENDING", case.name))
            }
        }
    }
    notes.push(format!("checked {} ({:?})", case.name, case_start.elapsed()));
    (notes, failures)
}

#[test]
fn matrix_images_read_like_qemu() {
    let t = "matrix_images_read_like_qemu";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let start = std::time::Instant::now();
    let cases = matrix::build(dir.path());
    println!("generated {} images in {:?}", cases.len(), start.elapsed());
    // Cases are checked by a few workers at once: much of each check is spent waiting for
    // qemu-img (process start, its own PBKDF2 for LUKS images).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut reports: Vec<(usize, Vec<String>, Vec<String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(64 << 20)
                    .spawn_scoped(s, || {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(case) = cases.get(i) else { return done };
                            let (notes, failures) = check_case(case, dir.path());
                            done.push((i, notes, failures));
                        }
                    })
                    .unwrap()
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("matrix worker panicked")).collect()
    });
    reports.sort_by_key(|r| r.0);
    let mut failures = Vec::new();
    for (_, notes, case_failures) in reports {
        notes.iter().for_each(|n| println!("{n}"));
        failures.extend(case_failures);
    }
    println!("matrix done in {:?}", start.elapsed());
    assert!(failures.is_empty(), "qluks disagrees with QEMU:\n{}", failures.join("\n"));
}
