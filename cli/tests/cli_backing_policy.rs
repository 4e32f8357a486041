//! The backing policy through the binary: `convert`, `map`, `compare` and `io` refuse backing
//! and data file names that lead out of the image's directory, FIFOs (without blocking),
//! devices and undeclared formats, with a message naming the image, the name, the reason and
//! the option that allows it; `--backing-root`, `--backing-allow-absolute` and
//! `--backing-probe` allow what the user means. `info` opens nothing.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{output, output_within, run, tools, TempDir};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `qluks ARGS`, expecting a failure; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = output(qluks().args(args));
    assert!(!out.status.success(), "qluks {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `/etc/passwd`'s first bytes appear nowhere in `path` (if it exists at all).
fn has_no_passwd_bytes(path: &Path) {
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let needle = &passwd[..passwd.len().min(32)];
    if let Ok(bytes) = std::fs::read(path) {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds /etc/passwd bytes", path.display());
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
fn etc_passwd_as_backing_file_is_refused_by_every_command() {
    let t = "cli_etc_passwd_as_backing_file_is_refused_by_every_command";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (img, out) = (dir.join("e.qcow2"), dir.join("o.raw"));
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", s(&img), "1M"]);
    let err = refused(&["convert", "-O", "raw", s(&img), s(&out)]);
    for want in [s(&img), "backing file name \"/etc/passwd\"", "outside", "--backing-allow-absolute", "--backing-root"]
    {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    has_no_passwd_bytes(&out);
    let out2 = dir.join("o.qcow2");
    refused(&["convert", "-O", "qcow2", s(&img), s(&out2)]);
    has_no_passwd_bytes(&out2);
    let err = refused(&["map", "--output", "json", s(&img)]);
    assert!(err.contains("\"/etc/passwd\""), "{err}");
    std::fs::write(&out, vec![0u8; 1 << 20]).unwrap();
    let err = refused(&["compare", s(&img), s(&out)]);
    assert!(err.contains("\"/etc/passwd\""), "{err}");
    let err = refused(&["compare", s(&out), s(&img)]);
    assert!(err.contains("\"/etc/passwd\""), "{err}");
    let err = refused(&["io", "-c", "read 0 4k", s(&img)]);
    assert!(err.contains("\"/etc/passwd\""), "{err}");
    // A root that does not hold it changes nothing.
    let err = refused(&["convert", "--backing-root", s(dir.path()), "-O", "raw", s(&img), s(&out)]);
    assert!(err.contains("outside") && err.contains("--backing-root"), "{err}");

    // When the user means it: either option follows the name.
    for opt in [&["--backing-allow-absolute"][..], &["--backing-root", "/etc"][..]] {
        let _ = std::fs::remove_file(&out);
        run(qluks().arg("convert").args(opt).args(["-O", "raw", s(&img), s(&out)]));
        let passwd = std::fs::read("/etc/passwd").unwrap();
        let got = std::fs::read(&out).unwrap();
        let n = passwd.len().min(got.len());
        assert_eq!(got[..n], passwd[..n], "{opt:?}");
    }
    // info opens nothing and shows the name.
    let info = run(qluks().args(["info", "--output", "json", s(&img)]));
    assert!(info.contains("/etc/passwd"), "{info}");
}

#[test]
fn etc_passwd_as_data_file_is_refused() {
    let t = "cli_etc_passwd_as_data_file_is_refused";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (img, out) = (dir.join("d.qcow2"), dir.join("o.raw"));
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&dir.join("d.raw"))), s(&img), "1M"]);
    qemu_img(&["amend", "-f", "qcow2", "-o", "data_file=/etc/passwd", s(&img)]);
    let err = refused(&["convert", "-O", "raw", s(&img), s(&out)]);
    for want in [s(&img), "data file name \"/etc/passwd\"", "outside", "--backing-allow-absolute"] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    has_no_passwd_bytes(&out);
    let err = refused(&["map", "--output", "json", s(&img)]);
    assert!(err.contains("data file name \"/etc/passwd\""), "{err}");
    let err = refused(&["io", "-c", "read 0 4k", s(&img)]);
    assert!(err.contains("data file name \"/etc/passwd\""), "{err}");
}

#[test]
fn a_fifo_backing_file_is_refused_without_blocking() {
    let t = "cli_a_fifo_backing_file_is_refused_without_blocking";
    if !tools(t, &["qemu-img", "mkfifo"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (img, out) = (dir.join("f.qcow2"), dir.join("o.raw"));
    run(Command::new("mkfifo").arg(dir.join("pipe")));
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "pipe", "-F", "raw", s(&img), "1M"]);
    let limit = Duration::from_secs(10);
    for args in [
        &["convert", "-O", "raw", s(&img), s(&out)][..],
        &["map", "--output", "json", s(&img)][..],
        &["io", "-c", "read 0 4k", s(&img)][..],
    ] {
        let o = output_within(qluks().args(args), limit);
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains("\"pipe\"") && err.contains("named pipe"), "{err}");
    }
    // info opens nothing: it shows the name and returns.
    let o = output_within(qluks().args(["info", s(&img)]), limit);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("pipe"), "{}", stderr(&o));
    // Whatever the options.
    let path = dir.join("pipe").canonicalize().unwrap();
    qemu_img(&["rebase", "-u", "-b", s(&path), "-F", "raw", s(&img)]);
    let o = output_within(qluks().args(["convert", "--backing-allow-absolute", "-O", "raw", s(&img), s(&out)]), limit);
    assert!(!o.status.success() && stderr(&o).contains("named pipe"), "{}", stderr(&o));
}

#[test]
fn device_nodes_and_directories_are_refused() {
    let t = "cli_device_nodes_and_directories_are_refused";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (img, out) = (dir.join("z.qcow2"), dir.join("o.raw"));
    for dev in ["/dev/zero", "/dev/null"] {
        qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", dev, "-F", "raw", s(&img), "1M"]);
        let err = refused(&["convert", "-O", "raw", s(&img), s(&out)]);
        assert!(err.contains("outside"), "{err}");
        for opt in [&["--backing-allow-absolute"][..], &["--backing-root", "/dev"][..]] {
            let err = refused(&[&["convert"], opt, &["-O", "raw", s(&img), s(&out)]].concat());
            assert!(err.contains(&format!("\"{dev}\"")) && err.contains("character device"), "{err}");
        }
        std::fs::remove_file(&img).unwrap();
    }
    std::fs::create_dir(dir.join("sub")).unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "sub", "-F", "raw", s(&img), "1M"]);
    let err = refused(&["convert", "-O", "raw", s(&img), s(&out)]);
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn symlinks_escapes_and_the_widening_options() {
    let t = "cli_symlinks_escapes_and_the_widening_options";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let outer = TempDir::new(t);
    let root = outer.join("root");
    let sub = root.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let pattern = common::pattern(11, 1 << 20);
    std::fs::write(sub.join("base.raw"), &pattern).unwrap();
    std::fs::write(root.join("up.raw"), &pattern).unwrap();
    std::fs::write(outer.join("secret.raw"), vec![0x5e; 1 << 20]).unwrap();
    let (img, out) = (sub.join("top.qcow2"), outer.join("o.raw"));
    let converted = |opts: &[&str]| {
        let _ = std::fs::remove_file(&out);
        run(qluks().arg("convert").args(opts).args(["-O", "raw", s(&img), s(&out)]));
        std::fs::read(&out).unwrap()
    };

    // A link in the image's directory to a file in it works, one leading out does not.
    std::os::unix::fs::symlink("base.raw", sub.join("in-link")).unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "in-link", "-F", "raw", s(&img), "1M"]);
    assert_eq!(converted(&[]), pattern);
    std::os::unix::fs::symlink(outer.join("secret.raw"), sub.join("out-link")).unwrap();
    qemu_img(&["rebase", "-u", "-b", "out-link", "-F", "raw", s(&img)]);
    let err = refused(&["convert", "-O", "raw", s(&img), s(&out)]);
    assert!(err.contains("\"out-link\"") && err.contains("secret.raw") && err.contains("outside"), "{err}");
    let err = refused(&["convert", "--backing-root", s(&root), "-O", "raw", s(&img), s(&out)]);
    assert!(err.contains("outside"), "{err}");
    assert_eq!(converted(&["--backing-root", s(outer.path())]), vec![0x5e; 1 << 20]);

    // `../`: refused by default (and with absolute names allowed), followed under a root.
    qemu_img(&["rebase", "-u", "-b", "../up.raw", "-F", "raw", s(&img)]);
    let err = refused(&["convert", "-O", "raw", s(&img), s(&out)]);
    assert!(err.contains("\"../up.raw\"") && err.contains("outside"), "{err}");
    refused(&["convert", "--backing-allow-absolute", "-O", "raw", s(&img), s(&out)]);
    assert_eq!(converted(&["--backing-root", s(&root)]), pattern);
    run(qluks().args(["compare", "--backing-root", s(&root), s(&img), s(&sub.join("base.raw"))]));

    // An absolute name elsewhere: --backing-allow-absolute or a root that holds it.
    let up = root.join("up.raw");
    qemu_img(&["rebase", "-u", "-b", s(&up), "-F", "raw", s(&img)]);
    refused(&["convert", "-O", "raw", s(&img), s(&out)]);
    assert_eq!(converted(&["--backing-allow-absolute"]), pattern);
    assert_eq!(converted(&["--backing-root", s(&root)]), pattern);
    let o = output(qluks().args(["map", "--output", "json", "--backing-allow-absolute", s(&img)]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = output(qluks().args(["io", "--backing-allow-absolute", "-c", "read 0 4k", s(&img)]));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn undeclared_backing_formats_need_backing_probe_and_never_probe_into_named_files() {
    let t = "cli_undeclared_backing_formats_need_backing_probe";
    if !tools(t, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(t);
    let (img, disk, out) = (dir.join("top.qcow2"), dir.join("disk.raw"), dir.join("o.raw"));
    std::fs::write(&disk, common::pattern(13, 1 << 20)).unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "disk.raw", "-F", "raw", s(&img), "1M"]);
    drop_backing_format(&img);
    let err = refused(&["convert", "-O", "raw", s(&img), s(&out)]);
    assert!(
        err.contains(s(&img)) && err.contains("declares no backing format") && err.contains("--backing-probe"),
        "{err}"
    );
    let _ = std::fs::remove_file(&out);
    run(qluks().args(["convert", "--backing-probe", "-O", "raw", s(&img), s(&out)]));
    assert_eq!(std::fs::read(&out).unwrap(), common::pattern(13, 1 << 20));

    // The guest's raw disk now holds a qcow2 header naming a sibling file, or /etc/passwd.
    std::fs::write(dir.join("secret.raw"), vec![0x5e; 1 << 20]).unwrap();
    for name in ["secret.raw", "/etc/passwd"] {
        qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", s(&disk), "1M"]);
        let _ = std::fs::remove_file(&out);
        let args = ["convert", "--backing-probe", "--backing-allow-absolute", "-O", "raw", s(&img), s(&out)];
        let err = refused(&args);
        assert!(err.contains("probed as qcow2") && err.contains("backing file of its own"), "{err}");
        has_no_passwd_bytes(&out);
        if let Ok(bytes) = std::fs::read(&out) {
            assert!(!bytes.windows(64).any(|w| w == [0x5e; 64]), "secret.raw reached the output");
        }
    }
}
