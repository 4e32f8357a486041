//! `qluks convert` and `qluks map` on images whose work could grow without bound: mostly empty
//! raw, qcow v1 and LUKS inputs (more zero 4 MiB chunks than convert has buffers), qcow2 images
//! claiming 8 TiB (time bounded by the watchdog), and a crafted qcow2 whose map names millions
//! of clusters (memory bounded by an address-space limit). Outputs are compared with qemu-img's.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{output_within, run, tools, TempDir};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Generous bound for one command on a huge sparse image (qluks takes well under a second).
const HUGE: Duration = Duration::from_secs(60);
const TIB: u64 = 1 << 40;

fn qluks() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qluks"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `cmd` under the watchdog with `limit`, panicking with its output when it fails.
fn run_within(cmd: &mut Command, limit: Duration) -> String {
    let out = output_within(cmd, limit);
    common::check(cmd, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "{} and {} differ in size", a.display(), b.display());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn all_zero_raw_converts_like_qemu_img() {
    const TEST: &str = "all_zero_raw_converts_like_qemu_img";
    if !tools(TEST, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    let (src, ours, theirs) = (dir.join("z.raw"), dir.join("ours.raw"), dir.join("theirs.raw"));
    // 16 zero 4 MiB chunks: more than convert's six buffers.
    std::fs::File::create(&src).unwrap().set_len(64 << 20).unwrap();
    run_within(qluks().args(["convert", "-O", "raw", s(&src), s(&ours)]), HUGE);
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", s(&src), s(&theirs)]));
    assert_same_file(&ours, &theirs);
    // A little data among the zeros: written where it belongs, the rest stays a hole.
    std::fs::OpenOptions::new().write(true).open(&src).unwrap().write_all_at(&[0x5a; 4096], 50 << 20).unwrap();
    run_within(qluks().args(["convert", "-O", "raw", s(&src), s(&ours)]), HUGE);
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", s(&src), s(&theirs)]));
    assert_same_file(&ours, &theirs);
    assert!(std::fs::metadata(&ours).unwrap().blocks() * 512 < 8 << 20, "zero chunks are holes in the output");
}

#[test]
fn sparse_qcow1_converts_and_maps_like_qemu_img() {
    const TEST: &str = "sparse_qcow1_converts_and_maps_like_qemu_img";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    let (img, ours, theirs) = (dir.join("s.qcow"), dir.join("ours.raw"), dir.join("theirs.raw"));
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow", s(&img), "64M"]));
    // An empty image first (every chunk zero), then a few scattered writes.
    run_within(qluks().args(["convert", "-O", "raw", s(&img), s(&ours)]), HUGE);
    run(Command::new("qemu-img").args(["convert", "-O", "raw", s(&img), s(&theirs)]));
    assert_same_file(&ours, &theirs);
    run(Command::new("qemu-io").args([
        "-f",
        "qcow",
        "-c",
        "write -P 0x11 0 4k",
        "-c",
        "write -P 0x22 10M 100k",
        "-c",
        "write -P 0x33 60M 8k",
        s(&img),
    ]));
    run_within(qluks().args(["convert", "-O", "raw", s(&img), s(&ours)]), HUGE);
    run(Command::new("qemu-img").args(["convert", "-O", "raw", s(&img), s(&theirs)]));
    assert_same_file(&ours, &theirs);
    // The holes come from the L1/L2 map: unallocated clusters are not even read.
    assert!(std::fs::metadata(&ours).unwrap().blocks() * 512 < 4 << 20, "unallocated ranges are holes");
    let map = run_within(qluks().args(["map", "--output", "json", s(&img)]), HUGE);
    assert_eq!(map, run(Command::new("qemu-img").args(["map", "--output", "json", s(&img)])));
}

#[test]
fn zero_luks_volume_converts_like_qemu_img() {
    const TEST: &str = "zero_luks_volume_converts_like_qemu_img";
    if !tools(TEST, &["qemu-img"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    let (img, pass, ours, theirs) = (dir.join("z.luks"), dir.join("pw"), dir.join("ours.raw"), dir.join("theirs.raw"));
    std::fs::write(&pass, "zero pw").unwrap();
    // qemu-img writes no data: the payload decrypts to... whatever ciphertext zeros give. Fill
    // the plaintext with zeros through qemu-img convert from a zero raw file instead.
    let zeros = dir.join("zeros.raw");
    std::fs::File::create(&zeros).unwrap().set_len(64 << 20).unwrap();
    run(Command::new("qemu-img").args([
        "convert",
        "-q",
        "--object",
        "secret,id=s0,data=zero pw",
        "-f",
        "raw",
        "-O",
        "luks",
        "-o",
        "key-secret=s0,iter-time=10",
        s(&zeros),
        s(&img),
    ]));
    run_within(qluks().args(["convert", "--passphrase-file", s(&pass), "-O", "raw", s(&img), s(&ours)]), HUGE);
    run(Command::new("qemu-img").args([
        "convert",
        "--object",
        "secret,id=s0,data=zero pw",
        "--image-opts",
        &format!("driver=luks,key-secret=s0,file.filename={}", s(&img)),
        "-O",
        "raw",
        s(&theirs),
    ]));
    assert_same_file(&ours, &theirs);
    assert!(std::fs::read(&ours).unwrap().iter().all(|&b| b == 0), "the plaintext is zeros");
}

/// Fails (or SKIPs without QLUKS_REQUIRE_TOOLS) when `dir`'s file system cannot hold an 8 TiB
/// sparse file.
fn holds_8_tib(test: &str, dir: &TempDir) -> bool {
    let probe = dir.join("probe");
    let ok = std::fs::File::create(&probe).and_then(|f| f.set_len(8 * TIB)).is_ok();
    let _ = std::fs::remove_file(&probe);
    if !ok {
        if std::env::var("QLUKS_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{test}: {} cannot hold an 8 TiB sparse file", dir.path().display());
        }
        println!("SKIP {test}: {} cannot hold an 8 TiB sparse file", dir.path().display());
    }
    ok
}

/// `start`/`length` of the extents of a `map --output json` that hold data.
fn data_ranges(map: &str) -> Vec<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(map).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect()
}

fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    std::fs::File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Reads the big-endian u64 at `offset` of `file`.
fn be64_at(file: &std::fs::File, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, offset).unwrap();
    u64::from_be_bytes(b)
}

/// (L1 table offset, L1 entries) of a qcow2 file.
fn l1_table(file: &std::fs::File) -> (u64, u64) {
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, 36).unwrap();
    (be64_at(file, 40), u64::from(u32::from_be_bytes(b)))
}

/// Points every L1 entry of the qcow2 at `path` except `keep` at the L2 table of entry 0, whose
/// L2 entries become `l2(i)` (entries of a cluster of `entry_bytes` bytes).
fn share_first_l2_table(path: &Path, keep: &[u64], l2: impl Fn(u64) -> u64, entries: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let (l1_offset, l1_size) = l1_table(&file);
    let table = be64_at(&file, l1_offset) & 0x00ff_ffff_ffff_fe00;
    assert_ne!(table, 0, "L1 entry 0 names an L2 table");
    let l2_bytes: Vec<u8> = (0..entries).flat_map(|i| l2(i).to_be_bytes()).collect();
    file.write_all_at(&l2_bytes, table).unwrap();
    let entry = (1u64 << 63 | table).to_be_bytes();
    let l1: Vec<u8> = (0..l1_size)
        .flat_map(|i| if keep.contains(&i) { be64_at(&file, l1_offset + i * 8).to_be_bytes() } else { entry })
        .collect();
    file.write_all_at(&l1, l1_offset).unwrap();
}

#[test]
fn qcow2_claiming_8_tib_maps_and_converts_in_bounded_time() {
    const TEST: &str = "qcow2_claiming_8_tib_maps_and_converts_in_bounded_time";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    if !holds_8_tib(TEST, &dir) {
        return;
    }
    let img = dir.join("big.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", s(&img), "8T"]));
    let writes = [(0x31, 0, "4k"), (0x32, TIB, "12k"), (0x33, 5 * TIB + 4096 * 7, "4k"), (0x34, 8 * TIB - 8192, "8k")];
    let mut io = Command::new("qemu-io");
    io.args(["-f", "qcow2"]);
    for (p, at, len) in writes {
        io.args(["-c", &format!("write -P {p:#x} {at} {len}")]);
    }
    run(io.arg(s(&img)));
    // A top layer over it, with a cluster of its own: unallocated ranges continue below.
    let top = dir.join("top.qcow2");
    run(Command::new("qemu-img").current_dir(dir.path()).args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        "-b",
        "big.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]));
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", &format!("write -P 0x41 {} 4k", 3 * TIB), s(&top)]));

    for image in [&img, &top] {
        let ours = dir.join("ours.raw");
        let theirs = dir.join("theirs.raw");
        let map = run_within(qluks().args(["map", "--output", "json", s(image)]), HUGE);
        assert_eq!(map, run(Command::new("qemu-img").args(["map", "--output", "json", s(image)])), "{image:?}");
        run_within(qluks().args(["convert", "-O", "raw", s(image), s(&ours)]), HUGE);
        run(Command::new("qemu-img").args(["convert", "-O", "raw", s(image), s(&theirs)]));
        assert_eq!(std::fs::metadata(&ours).unwrap().len(), 8 * TIB);
        assert!(std::fs::metadata(&ours).unwrap().blocks() * 512 < 1 << 20, "the output is sparse");
        let ranges = data_ranges(&map);
        assert_eq!(ranges.len(), if image == &img { 4 } else { 5 }, "{map}");
        for (start, len) in ranges {
            // Each data range and 64 KiB of hole on either side.
            let from = start.saturating_sub(65536);
            let n = (start + len + 65536).min(8 * TIB) - from;
            assert_eq!(read_at(&ours, from, n), read_at(&theirs, from, n), "{image:?} around {start:#x}");
        }
        for (p, at, len) in writes {
            let len = len.trim_end_matches('k').parse::<u64>().unwrap() * 1024;
            assert!(read_at(&ours, at, len).iter().all(|&b| b == p), "{image:?}: write at {at:#x}");
        }
        std::fs::remove_file(&ours).unwrap();
        std::fs::remove_file(&theirs).unwrap();
    }
}

#[test]
fn l1_entries_sharing_an_empty_l2_table_are_skipped_whole() {
    // 4 Mi L1 entries of an 8 TiB image with 4 KiB clusters all name one empty L2 table (512
    // entries): walking it entry by entry is 2^31 lookups (minutes); qemu-img takes tens of
    // seconds. The map and the copy must follow the tables, not the claim.
    const TEST: &str = "l1_entries_sharing_an_empty_l2_table_are_skipped_whole";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    if !holds_8_tib(TEST, &dir) {
        return;
    }
    let img = dir.join("shared.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", s(&img), "8T"]));
    run(Command::new("qemu-io").args([
        "-f",
        "qcow2",
        "-c",
        "write -P 0x51 0 4k",
        "-c",
        &format!("write -P 0x52 {} 4k", 4 * TIB),
        s(&img),
    ]));
    // L1 entry 2^21 (4 TiB / 2 MiB) keeps its own table; every other one names the emptied
    // table of entry 0.
    share_first_l2_table(&img, &[1 << 21], |_| 0, 512);
    let map = run_within(qluks().args(["map", "--output", "json", s(&img)]), HUGE);
    let expect = format!(
        "[{{ \"start\": 0, \"length\": {a}, \"depth\": 0, \"present\": false, \"zero\": true, \"data\": false, \
         \"compressed\": false}},\n{{ \"start\": {a}, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": \
         false, \"data\": true, \"compressed\": false, \"offset\": ",
        a = 4 * TIB
    );
    assert!(map.starts_with(&expect), "{map}");
    assert_eq!(data_ranges(&map), [(4 * TIB, 4096)]);
    let out = dir.join("out.raw");
    run_within(qluks().args(["convert", "-O", "raw", s(&img), s(&out)]), HUGE);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 8 * TIB);
    assert_eq!(read_at(&out, 4 * TIB - 4096, 12288), [vec![0; 4096], vec![0x52; 4096], vec![0; 4096]].concat());
    assert_eq!(read_at(&out, 0, 4096), vec![0; 4096], "the emptied table no longer maps cluster 0");
}

#[test]
fn convert_of_millions_of_scattered_clusters_stays_under_256_mib() {
    // A 2.25 GiB claim with 512-byte clusters: 73728 L1 entries all name one L2 table of 64
    // non-contiguous data clusters, 4.7 million stored runs in all. One job record each, built
    // before copying, is more than 256 MiB; convert streams them in bounded rounds instead.
    // The clusters other than the table's first lie past the end of the file: they read as
    // zeros (as in QEMU), so the copy itself stays small and the test fast.
    //
    // The limit is on address space (`ulimit -v`), not resident memory: it also counts thread
    // stacks (convert's workers ask for 256 KiB each) and glibc's per-thread malloc arenas
    // (64 MiB reservations, which glibc does without when the limit refuses them). The job
    // list is what grows with the image; everything else is constant.
    const TEST: &str = "convert_of_millions_of_scattered_clusters_stays_under_256_mib";
    if !tools(TEST, &["qemu-img", "qemu-io", "sh"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    let img = dir.join("scattered.qcow2");
    let size: u64 = 9 << 28;
    run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        s(&img),
        &size.to_string(),
    ]));
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x61 0 512", s(&img)]));
    let file = std::fs::File::open(&img).unwrap();
    let (l1_offset, _) = l1_table(&file);
    let table = be64_at(&file, l1_offset) & 0x00ff_ffff_ffff_fe00;
    let first = be64_at(&file, table) & 0x00ff_ffff_ffff_fe00;
    drop(file);
    let past_end = 1u64 << 40;
    share_first_l2_table(&img, &[], |i| 1 << 63 | if i == 0 { first } else { past_end + 1024 * i }, 64);
    let out = dir.join("out.raw");
    let limit_kib = 256 * 1024;
    let script = format!("ulimit -v {limit_kib} && exec \"$0\" convert -O raw \"$1\" \"$2\"");
    run_within(Command::new("sh").args(["-c", &script, env!("CARGO_BIN_EXE_qluks"), s(&img), s(&out)]), HUGE);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
    // Guest cluster 0 of every L1 range (32 KiB) holds the pattern, the rest reads as zeros.
    for at in [0, 32768, size / 2, size - 32768] {
        let got = read_at(&out, at, 1024);
        assert_eq!(got, [vec![0x61; 512], vec![0; 512]].concat(), "at {at:#x}");
    }
}

#[test]
fn qcow1_claiming_8_tib_maps_and_converts_from_its_tables() {
    // qcow v1 convert takes its holes from the L1/L2 map (reading 8 TiB of zeros would take
    // hours); unallocated L1 entries are skipped a block at a time. qemu-img map walks such an
    // image for many minutes, so the map is checked against what qemu-io wrote.
    const TEST: &str = "qcow1_claiming_8_tib_maps_and_converts_from_its_tables";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    if !holds_8_tib(TEST, &dir) {
        return;
    }
    let img = dir.join("big.qcow");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow", s(&img), "8T"]));
    run(Command::new("qemu-io").args([
        "-f",
        "qcow",
        "-c",
        "write -P 0x11 0 4k",
        "-c",
        &format!("write -P 0x22 {} 8k", 3 * TIB),
        s(&img),
    ]));
    let map = run_within(qluks().args(["map", "--output", "json", s(&img)]), HUGE);
    assert_eq!(data_ranges(&map), [(0, 4096), (3 * TIB, 8192)], "{map}");
    assert_eq!(map.lines().count(), 4, "data and holes alternate: {map}");
    let out = dir.join("out.raw");
    run_within(qluks().args(["convert", "-O", "raw", s(&img), s(&out)]), HUGE);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 8 * TIB);
    assert!(std::fs::metadata(&out).unwrap().blocks() * 512 < 1 << 20, "the output is sparse");
    assert_eq!(read_at(&out, 0, 8192), [vec![0x11; 4096], vec![0; 4096]].concat());
    assert_eq!(read_at(&out, 3 * TIB - 4096, 16384), [vec![0; 4096], vec![0x22; 8192], vec![0; 4096]].concat());
}

#[test]
fn shared_zero_flag_tables_map_like_qemu_img_through_a_chain() {
    // L1 entries sharing one L2 table of zero-flag entries (reads as zero, allocated), around
    // entries with tables of their own; then an overlay on top. The skipped tables must map
    // exactly as qemu-img maps them, at every depth.
    const TEST: &str = "shared_zero_flag_tables_map_like_qemu_img_through_a_chain";
    if !tools(TEST, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(TEST);
    let base = dir.join("base.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", s(&base), "64G"]));
    // L1 entries cover 2 MiB: entry 0 gets a table, entries 5 and 9 keep theirs.
    run(Command::new("qemu-io").args([
        "-f",
        "qcow2",
        "-c",
        "write -P 0x71 0 4k",
        "-c",
        "write -P 0x72 10M 8k",
        "-c",
        "write -P 0x73 18M 4k",
        s(&base),
    ]));
    share_first_l2_table(&base, &[5, 9], |_| 1, 512);
    let top = dir.join("top.qcow2");
    run(Command::new("qemu-img").current_dir(dir.path()).args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=64k",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        "top.qcow2",
    ]));
    run(Command::new("qemu-io").args([
        "-f",
        "qcow2",
        "-c",
        "write -P 0x74 1G 64k",
        "-c",
        "write -P 0x75 11M 4k",
        s(&top),
    ]));
    for image in [&base, &top] {
        let map = run_within(qluks().args(["map", "--output", "json", s(image)]), HUGE);
        assert_eq!(map, run(Command::new("qemu-img").args(["map", "--output", "json", s(image)])), "{image:?}");
        let (ours, theirs) = (dir.join("ours.raw"), dir.join("theirs.raw"));
        run_within(qluks().args(["convert", "-O", "raw", s(image), s(&ours)]), HUGE);
        run(Command::new("qemu-img").args(["convert", "-O", "raw", s(image), s(&theirs)]));
        let ranges = data_ranges(&map);
        assert!(ranges.len() >= 2, "{map}");
        for (start, len) in ranges {
            let from = start.saturating_sub(65536);
            let n = (start + len + 65536).min(64 << 30) - from;
            assert_eq!(read_at(&ours, from, n), read_at(&theirs, from, n), "{image:?} around {start:#x}");
        }
        std::fs::remove_file(&ours).unwrap();
        std::fs::remove_file(&theirs).unwrap();
    }
}
