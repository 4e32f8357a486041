//! A device that moves only whole 512-byte blocks into 16-byte-aligned buffers (what a
//! firmware block driver offers): the engines honour `block_size()`/`io_align()`, so a LUKS
//! qcow2 image and an encrypted chain open and read through it, reads at odd offsets included.
mod common;

use qluks::qcow2::backing::{BackingFormat, BackingRequest, Chain, DataFileRequest, Opened, Resolver};
use qluks::qcow2::Qcow2;

use common::blocks::Blocks;

use common::{qemu_img, qemu_io, qemu_raw};

fn luks_opts(secret: &str) -> String {
    format!("encrypt.format=luks,encrypt.key-secret={secret},encrypt.iter-time=10")
}

/// Odd reads: partial sectors at both ends, a single byte, a whole-cluster-crossing run.
const ODD: &[(u64, usize)] = &[(1, 1), (511, 2), (69_999, 5_003), (65_536 - 3, 70_001), (100, 4096)];

#[test]
fn luks_qcow2_opens_and_reads_through_a_512_byte_block_device() {
    let t = "luks_qcow2_opens_and_reads_through_a_512_byte_block_device";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let img = dir.join("luks.qcow2");
    let sec = "secret,id=s0,data=pw";
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", sec, "-o", &luks_opts("s0"), img.to_str().unwrap(), "1M"]);
    let opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", img.display());
    qemu_io(&[sec], &opts, &["write -P 0x5a 0 64k", "write -P 0x21 70000 5000", "write -P 0x7e 900k 3000"]);
    let want = qemu_raw(&dir, &[sec], &opts);
    let mut q: Box<Qcow2<Blocks>> = Box::default();
    q.open_in(Blocks::open(&img), Some(b"pw")).unwrap();
    let mut buf = vec![0u8; q.size() as usize];
    q.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, want);
    for &(off, len) in ODD {
        let mut part = vec![0u8; len + 1];
        // At an odd address too: the device needs 16-byte-aligned buffers.
        q.read_at(off, &mut part[1..]).unwrap();
        assert_eq!(part[1..], want[off as usize..off as usize + len], "{len} at {off}");
    }
    assert!(q.io().unwrap().requests > 0);
}

/// Hands out pre-opened block devices by name and per-layer passphrases.
struct Devices {
    files: Vec<(Vec<u8>, Option<Blocks>)>,
    passphrases: Vec<Vec<u8>>,
}

impl Resolver<Blocks> for Devices {
    type Error = &'static str;
    fn open_backing(&mut self, req: &BackingRequest<'_>) -> Result<Opened<Blocks>, &'static str> {
        let (i, f) = self.files.iter_mut().enumerate().find(|(_, (n, _))| n == req.name).ok_or("unknown name")?;
        let io = f.1.take().ok_or("opened twice")?;
        Ok(Opened { io, format: Some(BackingFormat::Qcow2), identity: Some(i as u64 + 1) })
    }
    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        self.passphrases.get(depth).map(Vec::as_slice)
    }
    fn open_data_file(&mut self, _: &DataFileRequest<'_>) -> Result<Blocks, &'static str> {
        Err("no data files")
    }
}

#[test]
fn encrypted_chain_opens_and_reads_through_a_512_byte_block_device() {
    let t = "encrypted_chain_opens_and_reads_through_a_512_byte_block_device";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let objs = ["secret,id=s0,data=base-pw", "secret,id=s1,data=top-pw"];
    let (b, tp) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    let (bs, ts) = (b.to_str().unwrap(), tp.to_str().unwrap());
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", objs[0], "-o", &luks_opts("s0"), bs, "1M"]);
    let o1 = format!("{},cluster_size=4k", luks_opts("s1"));
    qemu_img(&["create", "-q", "-f", "qcow2", "--object", objs[1], "-o", &o1, "-b", "base.qcow2", "-F", "qcow2", ts]);
    let base_opts = format!("driver=qcow2,file.filename={bs},encrypt.key-secret=s0");
    let top_opts = format!("driver=qcow2,file.filename={ts},encrypt.key-secret=s1,backing.encrypt.key-secret=s0");
    qemu_io(&objs, &base_opts, &["write -P 0xb0 0 256k", "write -P 0xb1 512k 100k"]);
    qemu_io(&objs, &top_opts, &["write -P 0x70 96k 64k", "write -P 0x71 700k 513"]);
    let want = qemu_raw(&dir, &objs, &top_opts);
    let mut r = Devices {
        files: vec![(b"base.qcow2".to_vec(), Some(Blocks::open(&b)))],
        passphrases: vec![b"top-pw".to_vec(), b"base-pw".to_vec()],
    };
    let mut chain: Box<Chain<Blocks, 4, 2>> = Box::default();
    chain.open_in(Blocks::open(&tp), &mut r).unwrap();
    assert_eq!(chain.layers().count(), 2);
    let mut buf = vec![0u8; chain.size() as usize];
    chain.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, want);
    for &(off, len) in ODD {
        let mut part = vec![0u8; len + 1];
        chain.read_at(off, &mut part[1..]).unwrap();
        assert_eq!(part[1..], want[off as usize..off as usize + len], "{len} at {off}");
    }
}

#[test]
fn image_opens_qcow_and_qcow2_through_a_512_byte_block_device() {
    let t = "image_opens_qcow_and_qcow2_through_a_512_byte_block_device";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    for format in ["qcow", "qcow2"] {
        let img = dir.join(format);
        qemu_img(&["create", "-q", "-f", format, img.to_str().unwrap(), "1M"]);
        let opts = format!("driver={format},file.filename={}", img.display());
        qemu_io(&[], &opts, &["write -P 0x5a 0 64k", "write -P 0x21 70000 5000"]);
        let want = qemu_raw(&dir, &[], &opts);
        let mut r = Devices { files: vec![], passphrases: vec![] };
        let mut chain: Box<Chain<Blocks>> = Box::default();
        let mut scratch = vec![0u8; 3 << 16];
        let mut image = qluks::image::Image::open(Blocks::open(&img), &mut r, &mut chain, &mut scratch).unwrap();
        let mut buf = vec![0u8; image.size() as usize];
        image.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, want, "{format}");
        for &(off, len) in ODD {
            let mut part = vec![0u8; len + 1];
            image.read_at(off, &mut part[1..]).unwrap();
            assert_eq!(part[1..], want[off as usize..off as usize + len], "{format}: {len} at {off}");
        }
    }
}
