//! Internal snapshots: the table as qemu-img writes it, and the disk as it was at each
//! snapshot compared byte for byte with `qemu-img convert -l`.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use qluks::qcow2::{Corruption, Error, Qcow2};

fn qemu_img(args: &[&str]) -> String {
    common::run(Command::new("qemu-img").args(args))
}

fn qemu_io(img: &Path, cmd: &str) {
    common::run(Command::new("qemu-io").args(["-f", "qcow2", "-c", cmd]).arg(img));
}

fn read_all(q: &mut Qcow2<File>) -> Vec<u8> {
    let mut buf = vec![0u8; q.size() as usize];
    q.read_at(0, &mut buf).unwrap();
    buf
}

#[test]
fn snapshots_list_and_read_as_they_were() {
    let t = "snapshots_list_and_read_as_they_were";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("s.qcow2");
    let p = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", p, "1M"]);
    qemu_io(&img, "write -P 0xa1 0 64k");
    qemu_img(&["snapshot", "-c", "first", p]);
    qemu_io(&img, "write -P 0xa2 32k 64k");
    qemu_img(&["resize", "-q", p, "2M"]);
    qemu_io(&img, "write -P 0xa3 1536k 4k");
    qemu_img(&["snapshot", "-c", "second one", p]);
    qemu_io(&img, "write -z 0 1M");

    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), None).unwrap();
    let list: Vec<_> = q.snapshots().map(Result::unwrap).collect();
    let ids: Vec<_> = list.iter().map(|s| (s.id.to_string(), s.name.to_string())).collect();
    assert_eq!(ids, [("1".to_string(), "first".to_string()), ("2".into(), "second one".into())]);
    assert_eq!(list[0].disk_size, Some(1 << 20));
    assert_eq!(list[1].disk_size, Some(2 << 20));
    assert!(list.iter().all(|s| s.vm_state_size == 0 && s.date_sec > 1_600_000_000));

    for (which, snap) in [("first", &list[0]), ("2", &list[1])] {
        let out = dir.join("snap.raw");
        qemu_img(&["convert", "-l", &format!("snapshot.id={}", snap.id), "-O", "raw", p, out.to_str().unwrap()]);
        let want = std::fs::read(&out).unwrap();
        let found = q.find_snapshot(which.as_bytes()).unwrap();
        assert_eq!(found.index, snap.index, "lookup by id or name: {which}");
        q.select_snapshot(&found).unwrap();
        // The disk as it was: the snapshot's own size (what `qemu-img snapshot -a` restores);
        // `qemu-img convert -l` keeps the current size and reads zeros past the snapshot's.
        assert_eq!(q.size(), snap.disk_size.unwrap());
        let got = read_all(&mut q);
        assert_eq!(got, want[..got.len()], "snapshot {which}");
        assert!(want[got.len()..].iter().all(|&b| b == 0));
    }
    q.select_active();
    let out = dir.join("active.raw");
    qemu_img(&["convert", "-O", "raw", p, out.to_str().unwrap()]);
    assert_eq!(read_all(&mut q), std::fs::read(&out).unwrap());
    assert!(matches!(q.find_snapshot(b"third"), Err(Error::NoSuchSnapshot)));
}

#[test]
fn snapshot_l1_table_outside_the_file_is_refused() {
    let t = "snapshot_l1_table_outside_the_file_is_refused";
    if !common::tools(t, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("s.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    qemu_img(&["snapshot", "-c", "s", img.to_str().unwrap()]);
    let mut q: Qcow2<File> = Qcow2::open(File::open(&img).unwrap(), None).unwrap();
    let mut s = q.snapshots().next().unwrap().unwrap();
    let bad = |reason| Corruption::BadSnapshot { index: 0, reason };
    s.l1_table_offset = 1 << 40;
    let r = q.select_snapshot(&s);
    assert!(matches!(r, Err(Error::Corrupt(c)) if c == bad("L1 table past the end of the file")), "{r:?}");
    s.l1_table_offset = 0x10001;
    let r = q.select_snapshot(&s);
    assert!(matches!(r, Err(Error::Corrupt(c)) if c == bad("L1 table offset invalid")), "{r:?}");
}
