//! `Qcow2::amend_keyslots` (the embedded LUKS header's keyslots, `qemu-img amend -o encrypt.…`)
//! against qemu-img and qemu-io: keyslots qluks adds open in QEMU and the reverse, erased
//! passphrases stop opening in both, an old phdr copy does not bring an erased key back
//! (iotest 294), QEMU's refusals, and crash injection at every write of an add and an erase.
mod common;

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;

use qluks::crypto::OsRng;
use qluks::io::BlockIo;
use qluks::luks::KdfLimits;
use qluks::qcow2::amend::{AmendError, AmendKeyslots, KeyslotState};
use qluks::qcow2::{Error, Qcow2, Qcow2Image};

const P0: &[u8] = b"first-pass";
const P1: &[u8] = b"second pass";

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

fn opts(path: &Path) -> String {
    format!("driver=qcow2,file.filename={},encrypt.key-secret=sec0", path.display())
}

fn secret(id: &str, pass: &[u8]) -> String {
    format!("secret,id={id},data={}", std::str::from_utf8(pass).unwrap())
}

/// A LUKS qcow2 made by qemu-img (iter-time 10) holding 0x5c over its first MiB.
fn luks_image(dir: &common::TempDir, name: &str) -> std::path::PathBuf {
    luks_image_iter(dir, name, 10)
}

/// [`luks_image`] with `iter_time` ms of PBKDF2 (1: about 4000 iterations, for tests that
/// unlock hundreds of times in a debug build).
fn luks_image_iter(dir: &common::TempDir, name: &str, iter_time: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut c = Command::new("qemu-img");
    c.args(["create", "-f", "qcow2", "--object", &secret("sec0", P0)])
        .args(["-o", &format!("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time={iter_time}")])
        .arg(&p)
        .arg("4M");
    common::run(&mut c);
    common::qemu_io(&[&secret("sec0", P0)], &opts(&p), &["write -P 0x5c 0 1M"]);
    p
}

/// Whether qemu-io opens the image with `pass` and reads the pattern.
fn qemu_opens(path: &Path, pass: &[u8]) -> bool {
    let mut c = Command::new("qemu-io");
    c.args(["--object", &secret("sec0", pass), "--image-opts", &opts(path), "-c", "read -P 0x5c 0 1M"]);
    let out = common::output(&mut c);
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed")
}

/// Whether qluks opens the image with `pass`.
fn qluks_opens(path: &Path, pass: &[u8]) -> bool {
    match Qcow2Image::open(File::open(path).unwrap(), Some(pass)) {
        Ok(mut q) => {
            let mut b = vec![0u8; 1 << 20];
            q.read_at(0, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == 0x5c), "opened with the passphrase but read wrong data");
            true
        }
        Err(e) if e.is_wrong_passphrase() => false,
        Err(e) => panic!("open: {e}"),
    }
}

fn add(keyslot: Option<usize>, new: &[u8]) -> AmendKeyslots<'static> {
    let new: &'static [u8] = Box::leak(new.to_vec().into_boxed_slice());
    AmendKeyslots {
        state: KeyslotState::Active,
        keyslot,
        new_secret: Some(new),
        old_secret: None,
        iterations: Some(1000),
    }
}

fn erase(keyslot: Option<usize>, old: Option<&'static [u8]>) -> AmendKeyslots<'static> {
    AmendKeyslots { state: KeyslotState::Inactive, keyslot, new_secret: None, old_secret: old, iterations: None }
}

fn amend(path: &Path, pass: Option<&[u8]>, o: &AmendKeyslots<'_>) -> Result<u8, Error<std::io::Error>> {
    let mut q = Qcow2Image::open_metadata(open_rw(path), None)?;
    q.amend_keyslots(pass, o, &KdfLimits::DEFAULT, &mut OsRng)
}

fn check_clean(path: &Path, pass: &[u8]) {
    let mut c = Command::new("qemu-img");
    c.args(["check", "--object", &secret("sec0", pass), "--image-opts", &opts(path)]);
    common::run(&mut c);
}

fn active_slots(path: &Path) -> Vec<usize> {
    let mut q = Qcow2Image::open_metadata(File::open(path).unwrap(), None).unwrap();
    q.luks_header().unwrap().active_keyslots().collect()
}

#[test]
fn qemu_opens_keyslots_qluks_adds_and_not_those_it_erases() {
    if !common::tools("qemu_opens_keyslots_qluks_adds", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("amend-add");
    let a = luks_image(&dir, "a.qcow2");
    assert_eq!(amend(&a, Some(P0), &add(None, P1)).unwrap(), 1 << 1);
    assert_eq!(active_slots(&a), [0, 1]);
    assert!(qemu_opens(&a, P1) && qemu_opens(&a, P0));
    assert!(qluks_opens(&a, P1));
    check_clean(&a, P1);
    // Erase by passphrase: the keyslots P0 opens.
    assert_eq!(amend(&a, None, &erase(None, Some(P0))).unwrap(), 1 << 0);
    assert_eq!(active_slots(&a), [1]);
    assert!(!qemu_opens(&a, P0), "qemu opens with the erased passphrase");
    assert!(!qluks_opens(&a, P0));
    assert!(qemu_opens(&a, P1));
    check_clean(&a, P1);
    // A chosen keyslot, then erased by number.
    assert_eq!(amend(&a, Some(P1), &add(Some(5), b"five")).unwrap(), 1 << 5);
    assert!(qemu_opens(&a, b"five"));
    assert_eq!(amend(&a, None, &erase(Some(1), None)).unwrap(), 1 << 1);
    assert!(!qemu_opens(&a, P1) && qemu_opens(&a, b"five"));
}

#[test]
fn qluks_opens_keyslots_qemu_img_amend_adds_and_agrees_with_its_layout() {
    if !common::tools("qluks_opens_keyslots_qemu_img_amend_adds", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("amend-qemu");
    let a = luks_image(&dir, "a.qcow2");
    let b = dir.join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    // qemu-img amend: keyslot 3 for P1.
    let mut c = Command::new("qemu-img");
    c.args(["amend", "--object", &secret("sec0", P0), "--object", &secret("sec1", P1), "--image-opts", &opts(&b)])
        .args(["-o", "encrypt.state=active,encrypt.keyslot=3,encrypt.new-secret=sec1,encrypt.iter-time=10"]);
    common::run(&mut c);
    assert!(qluks_opens(&b, P1));
    // qluks, the same on the other copy: the same keyslots, the same data, the same key.
    amend(&a, Some(P0), &add(Some(3), P1)).unwrap();
    assert_eq!(active_slots(&a), active_slots(&b));
    let (ha, hb) = {
        let mut qa = Qcow2Image::open_metadata(File::open(&a).unwrap(), None).unwrap();
        let mut qb = Qcow2Image::open_metadata(File::open(&b).unwrap(), None).unwrap();
        (qa.luks_header().unwrap(), qb.luks_header().unwrap())
    };
    for k in 0..8 {
        assert_eq!(ha.keyslots[k].key_offset, hb.keyslots[k].key_offset);
        assert_eq!(ha.keyslots[k].stripes, hb.keyslots[k].stripes);
        assert_eq!(ha.keyslots[k].active, hb.keyslots[k].active);
    }
    assert_eq!((ha.mk_digest, ha.uuid), (hb.mk_digest, hb.uuid));
    let mut c = Command::new("qemu-img");
    c.args(["compare", "--object", &secret("sec0", P1), "--image-opts", &opts(&a), &opts(&b)]);
    common::run(&mut c);
    // qemu-img erases keyslot 0 by passphrase; qluks no longer opens with it.
    let mut c = Command::new("qemu-img");
    c.args(["amend", "--object", &secret("sec0", P1), "--object", &secret("sec1", P0), "--image-opts", &opts(&b)])
        .args(["-o", "encrypt.state=inactive,encrypt.old-secret=sec1"]);
    common::run(&mut c);
    assert!(!qluks_opens(&b, P0) && qluks_opens(&b, P1));
    // qluks erases what qemu-img added.
    amend(&a, None, &erase(Some(3), Some(P1))).unwrap();
    assert!(!qemu_opens(&a, P1) && qemu_opens(&a, P0));
}

#[test]
fn an_old_phdr_copy_does_not_bring_an_erased_key_back() {
    // iotest 294.
    if !common::tools("an_old_phdr_copy_does_not_bring_an_erased_key_back", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("amend-294");
    let a = luks_image(&dir, "a.qcow2");
    amend(&a, Some(P0), &add(None, P1)).unwrap();
    let fde = Qcow2Image::open_metadata(File::open(&a).unwrap(), None).unwrap().extensions().fde.unwrap();
    let saved = std::fs::read(&a).unwrap()[fde.offset as usize..(fde.offset + fde.length) as usize].to_vec();
    amend(&a, None, &erase(Some(1), None)).unwrap();
    let after = std::fs::read(&a).unwrap();
    let area = &after[fde.offset as usize..(fde.offset + fde.length) as usize];
    assert_ne!(saved[592..], area[592..], "the key material was not overwritten");
    // Restore the phdr only: keyslot 1 looks active again, but its key material is gone.
    let mut f = open_rw(&a);
    f.write_at(fde.offset, &saved[..592]).unwrap();
    drop(f);
    assert_eq!(active_slots(&a), [0, 1]);
    assert!(!qluks_opens(&a, P1), "an old phdr brought the erased passphrase back");
    assert!(!qemu_opens(&a, P1), "qemu opens with the erased passphrase");
    assert!(qluks_opens(&a, P0) && qemu_opens(&a, P0));
}

#[test]
fn refusals_are_qemus_and_write_nothing() {
    if !common::tools("refusals_are_qemus_and_write_nothing", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("amend-refuse");
    let a = luks_image(&dir, "a.qcow2");
    let before = std::fs::read(&a).unwrap();
    let refused = |o: AmendKeyslots<'_>, pass: Option<&[u8]>| amend(&a, pass, &o).unwrap_err();
    let amend_err = |e: Error<std::io::Error>| match e {
        Error::Amend(e) => e,
        e => panic!("not an amend error: {e}"),
    };
    assert_eq!(amend_err(refused(erase(Some(0), None), None)), AmendError::LastKeyslot);
    assert_eq!(amend_err(refused(erase(None, Some(P0)), None)), AmendError::LastKeyslot);
    assert_eq!(amend_err(refused(add(Some(0), P1), Some(P0))), AmendError::KeyslotActive { keyslot: 0 });
    assert_eq!(amend_err(refused(add(Some(8), P1), Some(P0))), AmendError::KeyslotOutOfRange { keyslot: 8 });
    assert_eq!(amend_err(refused(erase(Some(2), None), None)), AmendError::KeyslotInactive { keyslot: 2 });
    assert_eq!(amend_err(refused(erase(Some(0), Some(b"nope")), None)), AmendError::KeyslotNotOldSecret { keyslot: 0 });
    assert_eq!(amend_err(refused(erase(None, Some(b"nope")), None)), AmendError::NoKeyslotMatches);
    assert_eq!(amend_err(refused(erase(None, None), None)), AmendError::EraseWhat);
    let mut o = add(None, P1);
    o.new_secret = None;
    assert_eq!(amend_err(refused(o, Some(P0))), AmendError::NewSecretRequired);
    let mut o = add(None, P1);
    o.old_secret = Some(P0);
    assert_eq!(amend_err(refused(o, Some(P0))), AmendError::OldSecretWhileAdding);
    let mut o = erase(Some(0), None);
    o.new_secret = Some(P1);
    assert_eq!(amend_err(refused(o, None)), AmendError::NewSecretWhileErasing);
    assert!(matches!(refused(add(None, P1), None), Error::PassphraseRequired));
    assert!(refused(add(None, P1), Some(b"wrong")).is_wrong_passphrase());
    assert!(std::fs::read(&a).unwrap() == before, "a refused amend wrote");
    // QEMU refuses the last keyslot too.
    let mut c = Command::new("qemu-img");
    c.args(["amend", "--object", &secret("sec0", P0), "--image-opts", &opts(&a)])
        .args(["-o", "encrypt.state=inactive,encrypt.keyslot=0"]);
    assert!(!common::output(&mut c).status.success());
    // A plain image has no keyslots.
    let p = dir.join("plain.qcow2");
    common::qemu_img(&["create", "-f", "qcow2", p.to_str().unwrap(), "1M"]);
    let e = amend(&p, Some(P0), &add(None, P1)).unwrap_err();
    assert!(matches!(e, Error::Amend(AmendError::NotLuks)), "{e}");
}

/// A file whose writes fail after `left` of them (a crash: what was written stays).
struct Crashy {
    file: File,
    left: Option<usize>,
    writes: usize,
}

impl BlockIo for Crashy {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if self.left == Some(0) {
            return Err(std::io::Error::other("injected crash"));
        }
        self.left = self.left.map(|n| n - 1);
        self.writes += 1;
        self.file.write_at(offset, buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&mut self) -> std::io::Result<u64> {
        self.file.size()
    }
}

fn crashy_amend(orig: &Path, work: &Path, pass: Option<&[u8]>, o: &AmendKeyslots<'_>, left: Option<usize>) -> usize {
    std::fs::copy(orig, work).unwrap();
    let dev = Crashy { file: open_rw(work), left, writes: 0 };
    let mut q: Qcow2<Crashy> = Qcow2::open_metadata(dev, None).unwrap();
    let r = q.amend_keyslots(pass, o, &KdfLimits::DEFAULT, &mut OsRng);
    if left.is_none() {
        r.unwrap();
    }
    let (dev, _) = q.into_inner();
    dev.unwrap().writes
}

/// After a crash at every write: `qemu-img check` clean, and the passphrases that open are
/// the old set or the new set (`before` and `after`: which of P0, P1 open).
fn crash_every_write(
    name: &str,
    orig: &Path,
    pass: Option<&[u8]>,
    o: &AmendKeyslots<'_>,
    before: [bool; 2],
    after: [bool; 2],
) {
    let work = orig.with_file_name(format!("{name}-work.qcow2"));
    let total = crashy_amend(orig, &work, pass, o, None);
    println!("{name}: {total} writes, a crash after each");
    assert!(total > 2);
    let mut seen = [false; 2];
    for n in 0..total {
        crashy_amend(orig, &work, pass, o, Some(n));
        let opens = [qluks_opens(&work, P0), qluks_opens(&work, P1)];
        assert!(opens == before || opens == after, "{name}: crash after {n} of {total}: opens {opens:?}");
        // No keyslot is active without its key material (each passphrase is in one keyslot).
        let active = active_slots(&work).len();
        assert_eq!(
            active,
            opens.iter().filter(|&&o| o).count(),
            "{name}: crash after {n}: active keyslots that open with nothing"
        );
        seen[usize::from(opens == after)] = true;
        let open_with = if opens[0] { P0 } else { P1 };
        check_clean(&work, open_with);
    }
    assert!(seen[0], "{name}: no crash point left the old state");
}

#[test]
fn crash_at_every_write_of_an_add_and_an_erase() {
    if !common::tools("crash_at_every_write_of_an_add_and_an_erase", &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new("amend-crash");
    let a = luks_image_iter(&dir, "a.qcow2", 1);
    crash_every_write("add", &a, Some(P0), &add(None, P1), [true, false], [true, true]);
    amend(&a, Some(P0), &add(None, P1)).unwrap();
    crash_every_write("erase", &a, None, &erase(None, Some(P0)), [true, true], [false, true]);
    crash_every_write("erase-slot", &a, None, &erase(Some(1), None), [true, true], [true, false]);
}
