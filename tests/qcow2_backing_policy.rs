//! The policy for names found in images ([`FileResolver`] with a [`BackingPolicy`]): backing
//! and data files only inside the naming image's directory by default, absolute names and a
//! wider root only when the caller allows them, regular files only (FIFOs refused without
//! blocking, devices, sockets, directories refused), symbolic links checked by where they lead,
//! and no format probing unless allowed, never into a qcow2 that names files of its own.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qluks::qcow2::backing::ChainError;
use qluks::qcow2::file_resolver::{BackingPolicy, FileKind, FileResolver, FileResolverError, FileRole};
use qluks::qcow2::Chain;

type Error = ChainError<std::io::Error, FileResolverError>;

fn img(args: &[&str]) {
    common::run(Command::new("qemu-img").args(args));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open(top: &Path, policy: BackingPolicy) -> Result<Chain<File, 2, 4>, Error> {
    let mut r = FileResolver::with_policy(top, policy).unwrap();
    Chain::open(File::open(top).unwrap(), &mut r)
}

fn read_all(chain: &mut Chain<File, 2, 4>) -> Vec<u8> {
    let mut buf = vec![0u8; chain.size() as usize];
    chain.read_at(0, &mut buf).unwrap();
    buf
}

/// The resolver's refusal at `depth`, or a panic naming what happened instead.
fn refusal(r: Result<Chain<File, 2, 4>, Error>, depth: usize) -> FileResolverError {
    match r {
        Err(ChainError::Resolver { depth: d, error }) if d == depth => error,
        Err(e) => panic!("expected a refusal at layer {depth}, got {e:?}"),
        Ok(_) => panic!("expected a refusal at layer {depth}, the chain opened"),
    }
}

/// Removes the backing format extension (qemu-img insists on writing one).
fn drop_backing_format(image: &Path) {
    let mut bytes = std::fs::read(image).unwrap();
    let at = bytes[..4096].windows(4).position(|w| w == [0xe2, 0x79, 0x2a, 0xca]).expect("format extension");
    bytes[at + 3] = 0;
    std::fs::write(image, &bytes).unwrap();
}

#[test]
fn an_absolute_backing_name_outside_the_image_directory_is_refused() {
    let t = "lib_absolute_backing_name_outside_the_image_directory_is_refused";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(t);
    let top = dir.join("e.qcow2");
    img(&["create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", s(&top), "1M"]);
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    match &e {
        FileResolverError::OutsideRoot { found, path, root, widened: false } => {
            assert_eq!(found.role, FileRole::Backing);
            assert_eq!(found.name, b"/etc/passwd");
            assert_eq!(found.image, top.canonicalize().unwrap());
            assert_eq!(path, Path::new("/etc/passwd"));
            assert_eq!(root, &dir.path().canonicalize().unwrap());
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("\"/etc/passwd\"") && msg.contains(s(&top)) && msg.contains("allow absolute"), "{msg}");
    // A widened root that does not hold it refuses it too.
    let e = refusal(open(&top, BackingPolicy::new().root(dir.path())), 1);
    assert!(matches!(e, FileResolverError::OutsideRoot { widened: true, .. }), "{e:?}");
    // Allowed on purpose, it is followed (the name is what reaches the file).
    let mut chain = open(&top, BackingPolicy::new().allow_absolute(true)).unwrap();
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let got = read_all(&mut chain);
    assert_eq!(&got[..passwd.len().min(got.len())], &passwd[..passwd.len().min(got.len())]);
    // So is a root that holds it.
    assert!(open(&top, BackingPolicy::new().root("/etc")).is_ok());
}

#[test]
fn an_absolute_data_file_name_outside_the_image_directory_is_refused() {
    let t = "lib_absolute_data_file_name_outside_the_image_directory_is_refused";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(t);
    let top = dir.join("d.qcow2");
    img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&dir.join("d.raw"))), s(&top), "1M"]);
    // The data file in the image's own directory, named absolutely: fine.
    assert!(open(&top, BackingPolicy::new()).is_ok());
    img(&["amend", "-f", "qcow2", "-o", "data_file=/etc/passwd", s(&top)]);
    let e = refusal(open(&top, BackingPolicy::new()), 0);
    match &e {
        FileResolverError::OutsideRoot { found, path, widened: false, .. } => {
            assert_eq!((found.role, found.name.as_slice()), (FileRole::DataFile, &b"/etc/passwd"[..]));
            assert_eq!(path, Path::new("/etc/passwd"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("data file name \"/etc/passwd\""), "{e}");
    let e = refusal(open(&top, BackingPolicy::new().root(dir.path())), 0);
    assert!(matches!(e, FileResolverError::OutsideRoot { widened: true, .. }), "{e:?}");
}

#[test]
fn a_fifo_backing_name_is_refused_without_blocking() {
    let t = "lib_a_fifo_backing_name_is_refused_without_blocking";
    if !common::tools(t, &["qemu-img", "mkfifo"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (fifo, top) = (dir.join("pipe"), dir.join("f.qcow2"));
    common::run(Command::new("mkfifo").arg(&fifo));
    img(&["create", "-q", "-f", "qcow2", "-u", "-b", "pipe", "-F", "raw", s(&top), "1M"]);
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let t2 = top.clone();
    let worker = std::thread::spawn(move || {
        let r = open(&t2, BackingPolicy::new()).map(|_| ());
        let _ = tx.send(r.map_err(|e| e.to_string()).and_then(|_| Err("opened".to_string())));
    });
    let result = rx.recv_timeout(Duration::from_secs(10));
    if result.is_err() {
        // Release the blocked open before failing.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        let _ = worker.join();
        panic!("opening a chain whose backing file is a FIFO blocked");
    }
    worker.join().unwrap();
    let msg = result.unwrap().unwrap_err();
    assert!(msg.contains("named pipe") && msg.contains("\"pipe\""), "{msg}");
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    assert!(matches!(e, FileResolverError::NotRegularFile { kind: FileKind::Fifo, .. }), "{e:?}");
}

#[test]
fn devices_directories_and_sockets_are_refused() {
    let t = "lib_devices_directories_and_sockets_are_refused";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(t);
    let top = dir.join("t.qcow2");
    img(&["create", "-q", "-f", "qcow2", "-u", "-b", "/dev/zero", "-F", "raw", s(&top), "1M"]);
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    assert!(matches!(e, FileResolverError::OutsideRoot { .. }), "{e:?}");
    for policy in [BackingPolicy::new().allow_absolute(true), BackingPolicy::new().root("/dev")] {
        let e = refusal(open(&top, policy), 1);
        assert!(matches!(e, FileResolverError::NotRegularFile { kind: FileKind::CharDevice, .. }), "{e:?}");
        assert!(e.to_string().contains("character device"), "{e}");
    }
    img(&["rebase", "-u", "-b", "/dev/null", "-F", "raw", s(&top)]);
    let e = refusal(open(&top, BackingPolicy::new().allow_absolute(true)), 1);
    assert!(matches!(e, FileResolverError::NotRegularFile { kind: FileKind::CharDevice, .. }), "{e:?}");

    std::fs::create_dir(dir.join("sub")).unwrap();
    img(&["rebase", "-u", "-b", "sub", "-F", "raw", s(&top)]);
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    assert!(matches!(e, FileResolverError::NotRegularFile { kind: FileKind::Directory, .. }), "{e:?}");

    let _listener = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
    img(&["rebase", "-u", "-b", "sock", "-F", "raw", s(&top)]);
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    assert!(matches!(e, FileResolverError::NotRegularFile { kind: FileKind::Socket, .. }), "{e:?}");
}

#[test]
fn symlinks_are_judged_by_where_they_lead_and_escapes_are_refused() {
    let t = "lib_symlinks_are_judged_by_where_they_lead_and_escapes_are_refused";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let outer = common::TempDir::new(t);
    let root = outer.join("root");
    let sub = root.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let pattern = common::pattern(3, 1 << 20);
    std::fs::write(sub.join("base.raw"), &pattern).unwrap();
    std::fs::write(root.join("up.raw"), &pattern).unwrap();
    std::fs::write(outer.join("secret.raw"), vec![0x5e; 1 << 20]).unwrap();
    let top = sub.join("top.qcow2");

    // A link inside the directory to a file inside it: followed.
    std::os::unix::fs::symlink("base.raw", sub.join("inside-link")).unwrap();
    img(&["create", "-q", "-f", "qcow2", "-u", "-b", "inside-link", "-F", "raw", s(&top), "1M"]);
    assert_eq!(read_all(&mut open(&top, BackingPolicy::new()).unwrap()), pattern);

    // A link inside the directory to a file outside it: refused, naming where it leads.
    std::os::unix::fs::symlink(outer.join("secret.raw"), sub.join("outside-link")).unwrap();
    img(&["rebase", "-u", "-b", "outside-link", "-F", "raw", s(&top)]);
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    match &e {
        FileResolverError::OutsideRoot { path, .. } => {
            assert_eq!(path, &outer.join("secret.raw").canonicalize().unwrap())
        }
        other => panic!("{other:?}"),
    }
    // ... also with a root that holds the link but not its target.
    let e = refusal(open(&top, BackingPolicy::new().root(&root)), 1);
    assert!(matches!(e, FileResolverError::OutsideRoot { widened: true, .. }), "{e:?}");
    // A link to /dev/zero: refused by where it leads, then by what it is.
    std::os::unix::fs::symlink("/dev/zero", sub.join("zero-link")).unwrap();
    img(&["rebase", "-u", "-b", "zero-link", "-F", "raw", s(&top)]);
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    assert!(matches!(e, FileResolverError::OutsideRoot { .. }), "{e:?}");
    let e = refusal(open(&top, BackingPolicy::new().root("/")), 1);
    assert!(matches!(e, FileResolverError::NotRegularFile { kind: FileKind::CharDevice, .. }), "{e:?}");

    // `../` escapes: refused by default and with allow_absolute (a relative name), followed
    // with a root that holds the target.
    img(&["rebase", "-u", "-b", "../up.raw", "-F", "raw", s(&top)]);
    for policy in [BackingPolicy::new(), BackingPolicy::new().allow_absolute(true)] {
        let e = refusal(open(&top, policy), 1);
        assert!(matches!(e, FileResolverError::OutsideRoot { widened: false, .. }), "{e:?}");
    }
    assert_eq!(read_all(&mut open(&top, BackingPolicy::new().root(&root)).unwrap()), pattern);
    img(&["rebase", "-u", "-b", "../../secret.raw", "-F", "raw", s(&top)]);
    let e = refusal(open(&top, BackingPolicy::new().root(&root)), 1);
    assert!(matches!(e, FileResolverError::OutsideRoot { widened: true, .. }), "{e:?}");
    // An escape that comes back in is still inside.
    img(&["rebase", "-u", "-b", "../sub/./base.raw", "-F", "raw", s(&top)]);
    assert_eq!(read_all(&mut open(&top, BackingPolicy::new()).unwrap()), pattern);
}

#[test]
fn each_layer_is_confined_to_its_own_directory() {
    let t = "lib_each_layer_is_confined_to_its_own_directory";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let outer = common::TempDir::new(t);
    let (a, b) = (outer.join("a"), outer.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("base.raw"), common::pattern(9, 1 << 20)).unwrap();
    std::fs::write(a.join("base.raw"), vec![0xaa; 1 << 20]).unwrap();
    img(&["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", s(&b.join("mid.qcow2")), "1M"]);
    let top = a.join("top.qcow2");
    img(&["create", "-q", "-f", "qcow2", "-u", "-b", s(&b.join("mid.qcow2")), "-F", "qcow2", s(&top), "1M"]);
    // The top's absolute name is refused by default, followed when allowed; the middle layer's
    // relative name then resolves in its own directory (b/, not a/).
    let e = refusal(open(&top, BackingPolicy::new()), 1);
    assert!(matches!(e, FileResolverError::OutsideRoot { .. }), "{e:?}");
    let mut chain = open(&top, BackingPolicy::new().allow_absolute(true)).unwrap();
    assert_eq!(read_all(&mut chain), common::pattern(9, 1 << 20));
    // And a relative escape from the middle layer stays refused with absolute names allowed.
    img(&["rebase", "-u", "-b", "../a/base.raw", "-F", "raw", s(&b.join("mid.qcow2"))]);
    let e = refusal(open(&top, BackingPolicy::new().allow_absolute(true)), 2);
    assert!(matches!(e, FileResolverError::OutsideRoot { widened: false, .. }), "{e:?}");
    assert!(e.to_string().contains(s(&b.join("mid.qcow2"))), "{e}");
}

#[test]
fn undeclared_backing_formats_are_probed_only_with_consent() {
    let t = "lib_undeclared_backing_formats_are_probed_only_with_consent";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(t);
    let (base, top) = (dir.join("base.raw"), dir.join("top.qcow2"));
    std::fs::write(&base, common::pattern(5, 1 << 20)).unwrap();
    img(&["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", s(&top), "1M"]);
    drop_backing_format(&top);
    let r = open(&top, BackingPolicy::new());
    assert!(matches!(r, Err(ChainError::UndeclaredFormat { depth: 1 })), "{r:?}");
    let msg = r.err().unwrap().to_string();
    assert!(msg.contains("declares no backing format"), "{msg}");
    let mut chain = open(&top, BackingPolicy::new().probe_format(true)).unwrap();
    assert_eq!(read_all(&mut chain), common::pattern(5, 1 << 20));
}

#[test]
fn a_raw_backing_file_holding_a_qcow2_header_that_names_files_is_never_probed_into_qcow2() {
    let t = "lib_a_raw_backing_file_holding_a_qcow2_header_that_names_files_is_never_probed";
    if !common::tool(t, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(t);
    let (disk, top) = (dir.join("guest-disk.raw"), dir.join("top.qcow2"));
    std::fs::write(dir.join("secret.raw"), vec![0x5e; 1 << 20]).unwrap();
    img(&["create", "-q", "-f", "qcow2", "-u", "-b", "guest-disk.raw", "-F", "raw", s(&top), "1M"]);
    drop_backing_format(&top);
    let policy = || BackingPolicy::new().probe_format(true).allow_absolute(true);
    // What a guest could write to its raw disk: a qcow2 header naming a sibling file, then
    // /etc/passwd, then an external data file.
    for (name, data_file) in [("secret.raw", false), ("/etc/passwd", false)] {
        img(&["create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", s(&disk), "1M"]);
        let r = open(&top, policy());
        assert!(matches!(r, Err(ChainError::ProbedNamesFile { depth: 1, data_file: d }) if d == data_file), "{r:?}");
        // Declared raw, it is read as the raw bytes it is.
        img(&["rebase", "-u", "-b", "guest-disk.raw", "-F", "raw", s(&top)]);
        let mut chain = open(&top, BackingPolicy::new()).unwrap();
        let bytes = std::fs::read(&disk).unwrap();
        assert_eq!(read_all(&mut chain)[..bytes.len()], bytes[..]);
        drop_backing_format(&top);
    }
    std::fs::remove_file(&disk).unwrap();
    img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&dir.join("secret.raw"))), s(&disk), "1M"]);
    let r = open(&top, policy());
    assert!(matches!(r, Err(ChainError::ProbedNamesFile { depth: 1, data_file: true })), "{r:?}");
    assert!(r.err().unwrap().to_string().contains("probed"));
    // A probed qcow2 that names nothing is fine.
    std::fs::remove_file(&disk).unwrap();
    img(&["create", "-q", "-f", "qcow2", s(&disk), "1M"]);
    assert_eq!(open(&top, policy()).unwrap().layers().count(), 2);
}
