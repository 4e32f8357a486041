//! Crash consistency of the qcow2 write engine: a workload of several hundred writes,
//! write-zeroes, discards and flushes on an image made by qemu-img (512-byte clusters and
//! 64-bit refcounts, so that L2 tables, refcount blocks and a larger refcount table are all
//! allocated; an internal snapshot made by `qemu-img snapshot -c`, so that clusters and L2
//! tables are shared and copied on write), plain and LUKS.
//!
//! The workload runs once on a [`CrashIo`] that records every device write and flush (W
//! writes). The engine is deterministic and a crash only makes later requests fail, so the
//! image left by a crash after write N is the initial image plus the first N recorded writes;
//! for every N in 0..=W (and a torn write N+1, and a power loss after write N keeping only
//! what was flushed plus a seeded subset of the later sector writes) the test
//! - opens the image with qluks (no panic, no error) and reads the whole guest,
//! - runs `qemu-img check` (no corruption: exit 0, or 3 for leaks only),
//! - checks that every byte acknowledged by the last completed `flush` reads back (bytes
//!   written after it may read old or new),
//! - and, for a sample of N, replays the workload for real on a device that dies after write
//!   N (or tears it), proving that the engine's error paths neither panic nor write anything
//!   but the recorded prefix; the snapshot reads as it was made.
mod common;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::crash::{self, after_writes, power_loss, torn, Bytes, CrashError, CrashIo, Event, Fault, Op};
use qluks::qcow2::{Error, Qcow2};

const PASS: &[u8] = b"crash-pw";
const SECRET: &str = "secret,id=s0,data=crash-pw";

/// A crash test configuration.
struct Case {
    name: &'static str,
    luks: bool,
    /// Guest size.
    size: u64,
    /// Workload operations and seed.
    ops: usize,
    seed: u64,
    /// Torn and power-loss variants run at every `stride`-th N (stop at every N).
    stride: u64,
    /// Real replays (dying device) at about this many N.
    replays: u64,
    /// Also prove that the checks can fail (see [`negative_control`]).
    control: bool,
}

const CLUSTER: u64 = 512;

struct Image {
    dir: common::TempDir,
    path: PathBuf,
    luks: bool,
}

impl Image {
    fn opts(&self, path: &Path) -> String {
        let enc = if self.luks { ",encrypt.key-secret=s0" } else { "" };
        format!("driver=qcow2,file.filename={}{enc}", path.display())
    }

    fn qemu_img(&self, args: &[&str], path: &Path) -> Command {
        let mut c = Command::new("qemu-img");
        c.args(args).args(["--object", SECRET, "--image-opts"]).arg(self.opts(path));
        c
    }

    /// `qemu-img check`: Ok for exit 0 or 3 (leaks only), Err(report) otherwise.
    fn check(&self, path: &Path) -> Result<(), String> {
        let out = common::output(&mut self.qemu_img(&["check"], path));
        match out.status.code() {
            Some(0) | Some(3) => Ok(()),
            code => Err(format!(
                "qemu-img check exit {code:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    /// The guest as qemu sees it (`-l snapshot.name=NAME` for a snapshot).
    fn qemu_guest(&self, path: &Path, snapshot: Option<&str>) -> Vec<u8> {
        let raw = self.dir.join("guest.raw");
        let mut c = Command::new("qemu-img");
        c.args(["convert", "--object", SECRET]);
        if let Some(s) = snapshot {
            c.args(["-l", &format!("snapshot.name={s}")]);
        }
        c.args(["--image-opts", &self.opts(path), "-O", "raw"]).arg(&raw);
        common::run(&mut c);
        fs::read(raw).unwrap()
    }
}

/// Creates the image: qemu-img, data written by qemu-io in several places, an internal
/// snapshot of it, then more qemu-io data (so that some L2 tables are shared and some not).
fn prepare(t: &str, case: &Case) -> Image {
    let dir = common::TempDir::new(t);
    let path = dir.join("base.qcow2");
    let img = Image { path: path.clone(), dir, luks: case.luks };
    let mut o = format!("cluster_size={CLUSTER},refcount_bits=64");
    if case.luks {
        o.push_str(",encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10");
    }
    common::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "--object", SECRET, "-o", &o])
            .arg(&path)
            .arg(case.size.to_string()),
    );
    let io = |cmds: &[String]| {
        let mut c = Command::new("qemu-io");
        c.args(["--object", SECRET, "--image-opts", &img.opts(&path)]);
        for cmd in cmds {
            c.arg("-c").arg(cmd);
        }
        common::run(&mut c);
    };
    let s = case.size;
    io(&[
        format!("write -P 0x11 0 {}", s / 8),
        format!("write -P 0x22 {} {}", s / 4, s / 16),
        format!("write -P 0x33 {} 5000", s / 2 + 700),
    ]);
    common::run(&mut img.qemu_img(&["snapshot", "-c", "snap"], &path));
    io(&[format!("write -P 0x44 {} 3000", s / 16 + 100), format!("write -P 0x55 {} {}", s - s / 16, s / 32)]);
    img
}

type Q = Qcow2<CrashIo>;

fn open(io: CrashIo, luks: bool) -> Result<Q, Error<CrashError>> {
    Qcow2::open(io, luks.then_some(PASS))
}

fn apply(q: &mut Q, op: &Op, scratch: &mut [u8]) -> Result<(), Error<CrashError>> {
    match op {
        Op::Write { offset, data } => q.write_at(*offset, data, scratch),
        Op::Zero { offset, len, unmap } => q.write_zeroes(*offset, *len, *unmap, scratch),
        Op::Discard { offset, len } => q.discard(*offset, *len),
        Op::Flush => q.flush(),
    }
}

fn read_guest(q: &mut Q) -> Vec<u8> {
    let mut buf = vec![0u8; q.size() as usize];
    q.read_at(0, &mut buf).unwrap();
    buf
}

/// The recorded run: the log and, per operation, the log length before and after it.
struct Recorded {
    log: Vec<Event>,
    spans: Vec<(usize, usize)>,
    final_bytes: Vec<u8>,
}

/// Runs the whole workload on a perfect device, recording; the guest is compared with the
/// model after every flush (read back through the same image).
fn record(initial: &[u8], guest: &[u8], ops: &[Op], luks: bool) -> Recorded {
    let io = CrashIo::new(initial.to_vec(), Fault::None);
    let mut q = open(io.clone(), luks).expect("open for writing");
    let mut scratch = vec![0u8; q.write_scratch_len().max(64 << 10)];
    let mut model = guest.to_vec();
    let mut spans = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let before = io.events();
        apply(&mut q, op, &mut scratch).unwrap_or_else(|e| panic!("op {i} {}: {e}", describe(op)));
        spans.push((before, io.events()));
        op.apply(&mut model, CLUSTER);
        if *op == Op::Flush {
            assert!(read_guest(&mut q) == model, "guest differs from the model after op {i} (flush)");
        }
    }
    drop(q);
    Recorded { log: io.log(), spans, final_bytes: io.bytes() }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Write { offset, data } => format!("write {offset:#x}+{}", data.len()),
        other => format!("{other:?}"),
    }
}

/// Replays the workload on a device with `fault`: returns the bytes and the index of the
/// operation that failed (None if none did). Panics (with the context) if the engine panics.
fn replay(initial: &[u8], ops: &[Op], luks: bool, fault: Fault) -> (Vec<u8>, Option<usize>) {
    let io = CrashIo::new(initial.to_vec(), fault);
    let handle = io.clone();
    let failed = catch_unwind(AssertUnwindSafe(move || {
        let mut q = open(io, luks).expect("open (reads only) succeeds");
        let mut scratch = vec![0u8; q.write_scratch_len().max(64 << 10)];
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = apply(&mut q, op, &mut scratch) {
                assert!(
                    matches!(e, Error::Io(CrashError::Crashed)),
                    "op {i} {} failed with {e:?}, not the device's error",
                    describe(op)
                );
                return Some(i);
            }
            if *op == Op::Flush {
                // The same reads as the recorded run: they fill the table cache the same way.
                read_guest(&mut q);
            }
        }
        None
    }))
    .unwrap_or_else(|_| panic!("the engine panicked on a dying device ({fault:?})"));
    let bytes = handle.bytes();
    (bytes, failed)
}

/// What a crash leaves acknowledged when the first `death` events of the log succeed and the
/// rest fail: (index of the first operation that did not complete, index one past the last
/// completed flush).
fn crash_window(rec: &Recorded, death: usize, ops: &[Op]) -> (usize, usize) {
    let failed = rec.spans.iter().position(|&(_, end)| end > death).unwrap_or(ops.len());
    let flushed = ops[..failed].iter().rposition(|op| *op == Op::Flush).map_or(0, |i| i + 1);
    (failed, flushed)
}

/// Checks one crash image; returns a failure description.
fn verify(
    img: &Image,
    bytes: &[u8],
    flushed: &[u8],
    window: &[Op],
    full_open: bool,
    resume_too: bool,
) -> Result<(), String> {
    let path = img.dir.join("crash.qcow2");
    fs::write(&path, bytes).unwrap();
    let got = catch_unwind(AssertUnwindSafe(|| -> Result<Option<Vec<u8>>, String> {
        if img.luks && !full_open {
            // The KDF costs seconds in a debug build: the metadata only, data through qemu.
            Qcow2::<CrashIo>::open_metadata(crash::plain(bytes.to_vec()), None)
                .map_err(|e| format!("qluks cannot reopen the metadata: {e}"))?;
            return Ok(None);
        }
        let mut q = open(crash::plain(bytes.to_vec()), img.luks).map_err(|e| format!("qluks cannot reopen: {e}"))?;
        let mut buf = vec![0u8; q.size() as usize];
        q.read_at(0, &mut buf).map_err(|e| format!("qluks cannot read the guest: {e}"))?;
        Ok(Some(buf))
    }))
    .map_err(|_| "qluks panicked reopening the image".to_string())??;
    img.check(&path)?;
    let got = match got {
        Some(g) => g,
        None => img.qemu_guest(&path, None),
    };
    crash::crash_consistent(&got, flushed, window, CLUSTER)?;
    if resume_too {
        resume(img, bytes, &got)?;
    }
    Ok(())
}

/// Writing goes on after a crash: a short workload on the crashed image (whatever it leaked,
/// half-grown tables included) reads back right and leaves `qemu-img check` content.
fn resume(img: &Image, bytes: &[u8], guest: &[u8]) -> Result<(), String> {
    let io = crash::plain(bytes.to_vec());
    let ops = crash::workload(guest.len() as u64 ^ 0xa5a5, guest.len() as u64, CLUSTER, 25, Bytes::Random);
    let mut model = guest.to_vec();
    catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let mut q = open(io.clone(), img.luks).map_err(|e| format!("reopen to resume: {e}"))?;
        let mut scratch = vec![0u8; q.write_scratch_len()];
        for (i, op) in ops.iter().enumerate() {
            apply(&mut q, op, &mut scratch).map_err(|e| format!("resumed op {i} {}: {e}", describe(op)))?;
            op.apply(&mut model, CLUSTER);
        }
        if read_guest(&mut q) != model {
            return Err("after resuming, the guest differs from the model".into());
        }
        Ok(())
    }))
    .map_err(|_| "qluks panicked writing on after the crash".to_string())??;
    let path = img.dir.join("resumed.qcow2");
    fs::write(&path, io.bytes()).unwrap();
    img.check(&path).map_err(|e| format!("after resuming: {e}"))
}

fn header_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn run_case(t: &str, case: Case) {
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let started = std::time::Instant::now();
    let img = prepare(t, &case);
    let initial = fs::read(&img.path).unwrap();
    let guest = img.qemu_guest(&img.path, None);
    let ops = crash::workload(case.seed, case.size, CLUSTER, case.ops, Bytes::Random);
    let rec = record(&initial, &guest, &ops, case.luks);
    let w = crash::write_count(&rec.log);
    let flushes = rec.log.iter().filter(|e| **e == Event::Flush).count();
    println!("{}: {} operations, {w} device writes, {flushes} device flushes", case.name, ops.len());

    // The workload did what it is for.
    let end = img.dir.join("end.qcow2");
    fs::write(&end, &rec.final_bytes).unwrap();
    img.check(&end).unwrap_or_else(|e| panic!("after the whole workload: {e}"));
    assert!(
        header_u64(&rec.final_bytes, 48) != header_u64(&initial, 48),
        "the workload must grow (move) the refcount table"
    );
    let mut model = guest.clone();
    ops.iter().for_each(|op| op.apply(&mut model, CLUSTER));
    assert!(img.qemu_guest(&end, None) == model, "qemu reads the workload's result");
    let snapshot = img.qemu_guest(&img.path, Some("snap"));
    assert!(img.qemu_guest(&end, Some("snap")) == snapshot, "the snapshot is unchanged");

    let mut failures = Vec::new();
    let mut flushed = guest.clone();
    let mut applied = 0usize;
    let sample = (w / case.replays.max(1)).max(1);
    let mut checked = 0u64;
    let mut stop = initial.clone();
    let mut events = 0usize;
    for n in 0..=w {
        // The image after write n: the previous one plus write n.
        let death = crash::events_before_death(&rec.log, n);
        for e in &rec.log[events..death] {
            if let Event::Write { offset, data } = e {
                crash::put(&mut stop, *offset, data);
            }
        }
        events = death;
        // LUKS: the KDF of a full opening costs seconds in a debug build; plain: always.
        let full_open = !case.luks || n % sample == 0 || n == w;
        // (what, events that succeed, image), in the order of the events that succeed.
        let mut variants = vec![("stop", death, Some(stop.clone()))];
        if n % case.stride == case.seed % case.stride {
            variants.push(("power loss", death, Some(power_loss(&initial, &rec.log, n, case.seed ^ n))));
            // The device tears write n + 1 (flushes between write n and it succeed).
            let before = crash::events_before_write(&rec.log, n);
            variants.push(("torn", before, torn(&initial, &rec.log, n, case.seed ^ n)));
        }
        for (what, death, bytes) in variants {
            let Some(bytes) = bytes else { continue };
            let (failed, upto) = crash_window(&rec, death, &ops);
            while applied < upto {
                ops[applied].apply(&mut flushed, CLUSTER);
                applied += 1;
            }
            let window = &ops[upto..(failed + 1).min(ops.len())];
            checked += 1;
            let resume_too = n % sample == 0 && what == "stop";
            if let Err(e) = verify(&img, &bytes, &flushed, window, full_open || resume_too, resume_too) {
                failures.push(format!("{what} after write {n} of {w} (op {failed}): {e}"));
            }
        }
        if n % sample == 0 && n < w {
            // The real thing: a device that dies after write n (and one that tears write n+1).
            let (failed, _) = crash_window(&rec, death, &ops);
            let (bytes, failed_op) = replay(&initial, &ops, case.luks, Fault::StopAfter(n));
            if bytes != stop || failed_op != Some(failed) {
                failures.push(format!(
                    "replay stopped after write {n}: bytes {} the recorded prefix, failed op {failed_op:?} (recorded {failed})",
                    if bytes == stop { "match" } else { "differ from" }
                ));
            }
            let (bytes, _) = replay(&initial, &ops, case.luks, Fault::TearAfter { n, seed: case.seed ^ n });
            let want =
                torn(&initial, &rec.log, n, case.seed ^ n).unwrap_or_else(|| after_writes(&initial, &rec.log, n + 1));
            if bytes != want {
                failures.push(format!("replay tearing write {}: bytes differ from the recorded prefix", n + 1));
            }
        }
        if failures.len() > 20 {
            break;
        }
    }
    println!("{}: {checked} crash images checked in {:.1} s", case.name, started.elapsed().as_secs_f64());
    if case.control && failures.is_empty() {
        negative_control(&img, &initial, &guest, &ops, &rec);
    }
    assert!(
        failures.is_empty(),
        "{} (seed {}): {} failures:\n{}",
        case.name,
        case.seed,
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn plain_image_survives_a_crash_after_every_write() {
    run_case(
        "plain_image_survives_a_crash_after_every_write",
        Case {
            name: "plain",
            luks: false,
            size: 4 << 20,
            ops: 300,
            seed: 0x5eed_0001,
            stride: 3,
            replays: 6,
            control: true,
        },
    );
}

#[test]
fn luks_image_survives_a_crash_after_every_write() {
    run_case(
        "luks_image_survives_a_crash_after_every_write",
        Case {
            name: "luks",
            luks: true,
            size: 4 << 20,
            ops: 300,
            seed: 0x5eed_0002,
            stride: 12,
            replays: 2,
            control: false,
        },
    );
}

// The harness itself (no engine): the faults do what the crash tests rely on.

#[test]
fn crash_io_stops_after_write_n() {
    use qluks::io::BlockIo;
    let mut io = CrashIo::new(vec![0; 8], Fault::StopAfter(2));
    io.write_at(0, &[1]).unwrap();
    io.flush().unwrap();
    io.write_at(1, &[2]).unwrap();
    assert_eq!(io.write_at(2, &[3]), Err(CrashError::Crashed));
    assert_eq!(io.flush(), Err(CrashError::Crashed), "flushes after write n fail too");
    assert_eq!(io.bytes(), [1, 2, 0, 0, 0, 0, 0, 0]);
    assert_eq!((io.writes(), io.flushes()), (2, 1));
    let mut dead = CrashIo::new(vec![0; 4], Fault::StopAfter(0));
    assert_eq!(dead.write_at(0, &[1]), Err(CrashError::Crashed));
    assert_eq!(dead.bytes(), [0; 4]);
}

#[test]
fn crash_io_tears_at_a_sector_boundary_inside_the_write() {
    use qluks::io::BlockIo;
    for seed in 0..50 {
        let mut io = CrashIo::new(vec![0; 4096], Fault::TearAfter { n: 1, seed });
        io.write_at(0, &[9; 10]).unwrap();
        assert_eq!(io.write_at(100, &[7; 2000]), Err(CrashError::Crashed));
        let b = io.bytes();
        let kept = b[100..2100].iter().take_while(|&&x| x == 7).count() as u64;
        assert!([412, 924, 1436, 1948].contains(&kept), "torn at {}", 100 + kept);
        assert!(b[100 + kept as usize..].iter().all(|&x| x == 0));
        assert_eq!(io.write_at(3000, &[1]), Err(CrashError::Crashed));
        assert_eq!(crash::torn(&[0; 4096], &io.log()[..1], 1, seed), None, "no write 2 in that log");
    }
    assert_eq!(crash::tear_len(512, 512, 3), None, "one whole sector cannot tear");
}

#[test]
fn power_loss_keeps_flushed_writes_and_a_subset_of_the_rest() {
    let log = vec![
        Event::Write { offset: 0, data: vec![1; 1024] },
        Event::Flush,
        Event::Write { offset: 1024, data: vec![2; 4096] },
        Event::Write { offset: 0, data: vec![3; 10] },
        Event::Flush,
        Event::Write { offset: 0, data: vec![4; 10] },
    ];
    let mut kept = [false; 9];
    for seed in 0..64 {
        let b = power_loss(&[0; 8192], &log, 3, seed);
        assert!(b[..10].iter().all(|&x| x == 1 || x == 3));
        assert!(b[10..1024].iter().all(|&x| x == 1), "flushed before");
        for s in 0..8 {
            let sector = &b[1024 + s * 512..1024 + (s + 1) * 512];
            assert!(sector.iter().all(|&x| x == sector[0]), "a sector is kept or lost whole");
            kept[s] |= sector[0] == 2;
        }
        kept[8] |= b[0] == 3;
        // After the second flush, the first 3 writes are durable.
        assert!(power_loss(&[0; 8192], &log, 4, seed)[1024..5120].iter().all(|&x| x == 2));
    }
    assert!(kept.iter().all(|&k| k), "every unflushed sector is sometimes kept");
    assert_eq!(after_writes(&[0; 4], &log, 0), [0; 4]);
    assert_eq!(crash::events_before_death(&log, 3), 4);
}

#[test]
fn crash_model_accepts_old_or_new_bytes_only_after_the_last_flush() {
    let flushed = vec![5u8; 2048];
    let window = [Op::Write { offset: 100, data: vec![6; 50] }, Op::Discard { offset: 0, len: 1500 }];
    let mut got = flushed.clone();
    got[120] = 6;
    got[0..512].fill(0);
    assert!(crash::crash_consistent(&got, &flushed, &window, 512).is_ok());
    got[1100] = 0; // inside the discarded range but not a whole cluster: not allowed
    assert!(crash::crash_consistent(&got, &flushed, &window, 512).is_err());
}

/// The checks can fail: the same recorded writes on a device that ignores flushes (power loss
/// keeps any subset of everything written) must break the image or lose flushed bytes at some
/// crash point, otherwise the test would not be able to see a missing barrier.
fn negative_control(img: &Image, initial: &[u8], guest: &[u8], ops: &[Op], rec: &Recorded) {
    let no_flush: Vec<Event> = rec.log.iter().filter(|e| **e != Event::Flush).cloned().collect();
    let w = crash::write_count(&no_flush);
    let mut flushed = guest.to_vec();
    let mut applied = 0;
    let mut caught = 0;
    for n in (0..=w).step_by(20) {
        let (failed, upto) = crash_window(rec, crash::events_before_death(rec.log.as_slice(), n), ops);
        while applied < upto {
            ops[applied].apply(&mut flushed, CLUSTER);
            applied += 1;
        }
        let window = &ops[upto..(failed + 1).min(ops.len())];
        let bytes = power_loss(initial, &no_flush, n, n);
        if verify(img, &bytes, &flushed, window, true, false).is_err() {
            caught += 1;
        }
    }
    println!("negative control: {caught} broken images without flushes");
    assert!(caught > 0, "without flushes no crash point broke the image: the crash checks cannot fail");
}

/// Reproduces one crash point of the plain case and prints what happened there:
/// `QLUKS_CRASH_N=331 cargo test -p qluks --test qcow2_crash -- --ignored one_crash_point --nocapture`.
#[test]
#[ignore = "a debugging aid: run one crash point by hand"]
fn one_crash_point() {
    let t = "one_crash_point";
    if !common::tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let n: u64 = std::env::var("QLUKS_CRASH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let case = Case {
        name: "plain",
        luks: false,
        size: 4 << 20,
        ops: 300,
        seed: 0x5eed_0001,
        stride: 1,
        replays: 0,
        control: false,
    };
    let img = prepare(t, &case);
    let initial = fs::read(&img.path).unwrap();
    let guest = img.qemu_guest(&img.path, None);
    let ops = crash::workload(case.seed, case.size, CLUSTER, case.ops, Bytes::Random);
    let rec = record(&initial, &guest, &ops, false);
    let death = crash::events_before_death(&rec.log, n);
    let (failed, upto) = crash_window(&rec, death, &ops);
    let mut flushed = guest.clone();
    ops[..upto].iter().for_each(|op| op.apply(&mut flushed, CLUSTER));
    let window = &ops[upto..(failed + 1).min(ops.len())];
    println!("crash after write {n}: op {failed} interrupted, last completed flush before op {upto}");
    for (i, op) in ops.iter().enumerate().take(failed + 3).skip(upto) {
        println!("  op {i}: {} (events {:?})", describe(op), rec.spans[i]);
    }
    for (i, e) in rec.log.iter().enumerate().skip(death.saturating_sub(6)).take(10) {
        let mark = if i == death { ">>" } else { "  " };
        match e {
            Event::Write { offset, data } => println!("{mark} event {i}: write {offset:#x}+{:#x}", data.len()),
            Event::Flush => println!("{mark} event {i}: flush"),
        }
    }
    let stop = after_writes(&initial, &rec.log, n);
    let (replayed, failed_op) = replay(&initial, &ops, false, Fault::StopAfter(n));
    println!("replay: failed op {failed_op:?}; bytes {}", if replayed == stop { "as recorded" } else { "DIFFER" });
    if replayed != stop {
        let diff: Vec<usize> =
            (0..replayed.len().max(stop.len())).filter(|&i| replayed.get(i) != stop.get(i)).collect();
        println!(
            "  {} bytes differ, {:#x}..={:#x}; lengths {} / {}",
            diff.len(),
            diff[0],
            diff[diff.len() - 1],
            replayed.len(),
            stop.len()
        );
    }
    println!("stop: {:?}", verify(&img, &stop, &flushed, window, true, false));
    let before = crash::events_before_write(&rec.log, n);
    let (failed, upto) = crash_window(&rec, before, &ops);
    let mut flushed = guest.clone();
    ops[..upto].iter().for_each(|op| op.apply(&mut flushed, CLUSTER));
    if let Some(bytes) = torn(&initial, &rec.log, n, case.seed ^ n) {
        let window = &ops[upto..(failed + 1).min(ops.len())];
        println!("torn (op {failed} interrupted): {:?}", verify(&img, &bytes, &flushed, window, true, false));
    }
}
