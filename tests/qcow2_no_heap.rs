//! Opening and reading a LUKS-encrypted qcow2 overlay on a LUKS-encrypted base performs no
//! heap allocation: a counting global allocator watches this thread while qluks works.
mod common;

use std::fs::File;
use std::process::Command;

use qluks::qcow2::backing::{BackingRequest, DataFileRequest, Opened, Resolver};
use qluks::qcow2::{Chain, Qcow2};

#[global_allocator]
static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;

/// Hands out the one pre-opened base file and per-layer passphrases (no allocation).
struct PreOpened {
    base: Option<File>,
    passphrases: [&'static [u8]; 2],
}

impl Resolver<File> for PreOpened {
    type Error = &'static str;
    fn open_backing(&mut self, _: &BackingRequest<'_>) -> Result<Opened<File>, &'static str> {
        Ok(Opened { io: self.base.take().ok_or("opened twice")?, format: None, identity: Some(1) })
    }
    fn open_data_file(&mut self, _: &DataFileRequest<'_>) -> Result<File, &'static str> {
        Err("no data files")
    }
    fn passphrase(&mut self, depth: usize) -> Option<&[u8]> {
        self.passphrases.get(depth).copied()
    }
}

#[test]
fn open_and_read_of_luks_qcow2_chain_allocates_nothing() {
    let t = "open_and_read_of_luks_qcow2_chain_allocates_nothing";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = common::TempDir::new(t);
    let (base, top) = (dir.join("base.qcow2"), dir.join("top.qcow2"));
    let objects = ["secret,id=s0,data=base-pw", "secret,id=s1,data=top-pw"];
    let luks = |s: &str| format!("encrypt.format=luks,encrypt.key-secret={s},encrypt.iter-time=10");
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "--object", objects[0], "-o", &luks("s0")])
            .arg(&base)
            .arg("1M"),
    );
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "--object", objects[1], "-o", &luks("s1"), "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&top),
    );
    let base_opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", base.display());
    let top_opts =
        format!("driver=qcow2,file.filename={},encrypt.key-secret=s1,backing.encrypt.key-secret=s0", top.display());
    common::run(Command::new("qemu-io").args([
        "--object",
        objects[0],
        "--image-opts",
        &base_opts,
        "-c",
        "write -P 0xba 0 128k",
    ]));
    common::run(Command::new("qemu-io").args([
        "--object",
        objects[0],
        "--object",
        objects[1],
        "--image-opts",
        &top_opts,
        "-c",
        "write -P 0x70 64k 4k",
    ]));

    // The counter itself works.
    let (boxed, n) = common::counting_alloc::count_allocations(|| std::hint::black_box(Box::new(7u64)));
    assert_eq!((*boxed, n), (7, 1));

    // Everything the OS side needs is made before watching: files opened, buffers reserved.
    let single = File::open(&top).unwrap();
    let (top_file, base_file) = (File::open(&top).unwrap(), File::open(&base).unwrap());
    let mut buf = [0u8; 8192];

    let (first, n) = common::counting_alloc::count_allocations(|| {
        let mut q: Qcow2<File> = Qcow2::open(single, Some(b"top-pw")).unwrap();
        q.read_at(60 * 1024, &mut buf).unwrap();
        buf[4096]
    });
    assert_eq!(n, 0, "Qcow2::open + read_at allocated {n} times");
    assert_eq!(first, 0x70);

    let (bytes, n) = common::counting_alloc::count_allocations(|| {
        let mut resolver = PreOpened { base: Some(base_file), passphrases: [b"top-pw", b"base-pw"] };
        let mut chain: Chain<File, 2, 2> = Chain::open(top_file, &mut resolver).unwrap();
        chain.read_at(60 * 1024, &mut buf).unwrap();
        (buf[0], buf[4096])
    });
    assert_eq!(n, 0, "Chain::open + read_at allocated {n} times");
    assert_eq!(bytes, (0xba, 0x70), "base data below, overlay data above");
}
