//! `qluks demo`: the main job on a built-in default, in a few seconds and without setup.
//!
//! 1. every usable crypto backend gives the same AES-256-XTS ciphertext;
//! 2. a LUKS1 round trip in a temporary file: format, write a pattern, re-open with the
//!    passphrase, read back and verify, and a wrong passphrase refused;
//! 3. qluks creates a LUKS-encrypted qcow2 base and a LUKS-encrypted qcow2 overlay on it (one
//!    passphrase each), writes into both (the overlay's partial clusters copied from the base
//!    on write), and verifies every byte through the chain; with qemu-img on PATH, `qemu-img
//!    check` finds both clean and `qemu-img compare` (with their secrets) confirms the content;
//! 4. with qemu-img and qemu-io on PATH: the other way round, a chain made and written by QEMU
//!    read by qluks and compared byte for byte with `qemu-img convert -O raw`;
//! 5. a short AES-256-XTS throughput table.
//!
//! Any mismatch is an error (non-zero exit).
use std::error::Error;
use std::fs::{File, OpenOptions as FileOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::hal::{Backend, Xts};
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::{LuksIoError, LuksVolume};
use qluks::qcow2;
use qluks::qcow2::compressed::Compression;
use qluks::qcow2::create::{Compat, CreateOptions, Encryption, Preallocation};
use qluks::qcow2::file_resolver::{BackingPolicy, FileResolver};

use crate::cmd::bench::{xts_gbps, Cipher, XtsConfig};
use crate::image_open::{open_chain_with, open_chain_writable, Qcow2Disk};
use crate::open::Disk;

/// Keyslot iterations of the demo volume: QEMU calibrates to 2 s of PBKDF2; a fixed, modest
/// count keeps the demo fast.
const DEMO_ITERATIONS: u32 = 100_000;
/// Payload written and read back through the LUKS volume.
const LUKS_PAYLOAD: usize = 8 << 20;
/// Virtual size of the qcow2 chain.
const CHAIN_SIZE: &str = "8M";
/// Virtual size of the qcow2 images qluks creates.
const QCOW2_SIZE: usize = 8 << 20;
const MIB: f64 = (1 << 20) as f64;

pub fn run() -> Result<(), Box<dyn Error>> {
    let dir = ScratchDir::new()?;
    println!("1. Crypto backends: AES-256-XTS encrypt/decrypt, ciphertext compared across backends");
    self_check()?;
    println!();
    println!("2. LUKS1 round trip (aes-256-xts-plain64, sha256; {DEMO_ITERATIONS} PBKDF2 iterations, not QEMU's 2 s)");
    luks_round_trip(&dir.0)?;
    println!();
    println!("3. qluks writes a qcow2+LUKS overlay on a qcow2+LUKS base (aes-256-xts, {DEMO_ITERATIONS} iterations)");
    qcow2_write(&dir.0)?;
    println!();
    println!("4. A qcow2+LUKS chain made by qemu-img and qemu-io, read by qluks");
    if tool_available("qemu-img") && tool_available("qemu-io") {
        qcow2_chain(&dir.0)?;
    } else {
        println!("   skipped: qemu-img and qemu-io are not on PATH (apt-get install qemu-utils)");
    }
    println!();
    println!("5. AES-256-XTS throughput, 4 KiB sectors, 1 MiB batches (qluks bench xts for more)");
    throughput()?;
    Ok(())
}

/// A temporary directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir, Box<dyn Error>> {
        let path = std::env::temp_dir().join(format!("qluks-demo-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes (xorshift64*), different per seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB / d.as_secs_f64().max(1e-9)
}

fn self_check() -> Result<(), Box<dyn Error>> {
    let key: Vec<u8> = (0..64u8).collect();
    let plain = pattern(1, 64 * 1024);
    let mut reference: Option<(Backend, Vec<u8>)> = None;
    let mut names = Vec::new();
    for backend in Backend::available() {
        let xts = Xts::with_backend(&key, backend)?;
        let mut buf = plain.clone();
        xts.encrypt_units(&mut buf, 512, 1 << 32)?;
        let mut back = buf.clone();
        xts.decrypt_units(&mut back, 512, 1 << 32)?;
        if back != plain {
            return Err(format!("{backend}: decrypt(encrypt(x)) != x").into());
        }
        match &reference {
            None => reference = Some((backend, buf)),
            Some((first, r)) if *r != buf => return Err(format!("{backend}: ciphertext differs from {first}").into()),
            Some(_) => {}
        }
        names.push(backend.name());
    }
    println!("   {:<16} {} (64 KiB, 512-byte units): identical ciphertext, round trip ok", "backends", names.join(" "));
    Ok(())
}

fn luks_round_trip(dir: &Path) -> Result<(), Box<dyn Error>> {
    let path = dir.join("demo.luks");
    let passphrase = b"qluks demo passphrase";
    let mut file = FileOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut params = CreateParams {
        cipher: CipherSpec::parse_sized("aes-256-xts-plain64")?,
        hash: HashAlg::Sha256,
        iterations: Iterations::fixed(DEMO_ITERATIONS),
    };
    let start = Instant::now();
    let (header, _key) = luks1::format(&mut file, 0, &mut params, passphrase, &mut OsRng)?;
    file.set_len(header.payload_offset_bytes() + LUKS_PAYLOAD as u64)?;
    let format_time = start.elapsed();
    println!(
        "   {:<16} {:8.1} ms   {} MiB payload at {} bytes, in {}",
        "format",
        ms(format_time),
        LUKS_PAYLOAD >> 20,
        header.payload_offset_bytes(),
        dir.display()
    );

    let data = pattern(2, LUKS_PAYLOAD);
    let mut volume = LuksVolume::open_luks1(file, passphrase, None)?;
    let mut buf = data.clone();
    let start = Instant::now();
    // In place: one encrypt call and one write for the whole pattern.
    volume.write_in_place(0, &mut buf)?;
    volume.flush()?;
    let write_time = start.elapsed();
    println!("   {:<16} {:8.1} ms   {:7.0} MiB/s", "write", ms(write_time), mib_per_s(LUKS_PAYLOAD, write_time));
    drop(volume);

    let file = File::open(&path)?;
    let start = Instant::now();
    let mut volume = LuksVolume::open_luks1(file, passphrase, None)?;
    let unlock_time = start.elapsed();
    println!("   {:<16} {:8.1} ms   re-opened, keyslot 0 ({DEMO_ITERATIONS} iterations)", "unlock", ms(unlock_time));
    let mut back = vec![0u8; LUKS_PAYLOAD];
    let start = Instant::now();
    volume.read_at(0, &mut back)?;
    let read_time = start.elapsed();
    if back != data {
        let at = back.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("LUKS round trip: read-back differs from what was written at offset {at}").into());
    }
    println!(
        "   {:<16} {:8.1} ms   {:7.0} MiB/s   {} MiB identical to what was written",
        "read + verify",
        ms(read_time),
        mib_per_s(LUKS_PAYLOAD, read_time),
        LUKS_PAYLOAD >> 20
    );
    drop(volume);

    let start = Instant::now();
    match LuksVolume::open_luks1(File::open(&path)?, b"not the passphrase", None) {
        Err(LuksIoError::Luks(e @ qluks::luks::LuksError::WrongPassphrase)) => {
            println!("   {:<16} {:8.1} ms   refused: {e}", "wrong passphrase", ms(start.elapsed()))
        }
        Err(e) => return Err(format!("wrong passphrase: unexpected error: {e}").into()),
        Ok(_) => return Err("a wrong passphrase unlocked the volume".into()),
    }
    std::fs::remove_file(&path)?;
    println!("   LUKS1 round trip: ok");
    Ok(())
}

/// Whether `name` runs (`--version` succeeds).
fn tool_available(name: &str) -> bool {
    Command::new(name).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// Runs a tool, failing with its stderr.
fn run_tool(cmd: &mut Command) -> Result<(), Box<dyn Error>> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(())
}

fn qcow2_chain(dir: &Path) -> Result<(), Box<dyn Error>> {
    let (base, top, raw) = (dir.join("base.qcow2"), dir.join("overlay.qcow2"), dir.join("qemu-img.raw"));
    let (base_pw, top_pw) = ("demo base passphrase", "demo overlay passphrase");
    let secrets = [format!("secret,id=s0,data={base_pw}"), format!("secret,id=s1,data={top_pw}")];
    let enc = |id: &str| format!("encrypt.format=luks,encrypt.key-secret={id},encrypt.iter-time=10");
    let p = |p: &Path| p.to_string_lossy().into_owned();
    let start = Instant::now();
    // qemu-img create calibrates PBKDF2 for about a second whatever iter-time says: create both
    // layers at once (-u: the overlay does not wait for its backing file to exist).
    let mut create_base = Command::new("qemu-img");
    create_base
        .args(["create", "-q", "-f", "qcow2", "--object", &secrets[0], "-o", &enc("s0")])
        .args([p(&base), CHAIN_SIZE.into()]);
    let mut create_top = Command::new("qemu-img");
    create_top.args(["create", "-q", "-u", "-f", "qcow2", "--object", &secrets[1], "-o", &enc("s1")]).args([
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &p(&top),
        CHAIN_SIZE,
    ]);
    let (created_base, created_top) = std::thread::scope(|s| {
        let t = s.spawn(|| run_tool(&mut create_top).map_err(|e| e.to_string()));
        (run_tool(&mut create_base).map_err(|e| e.to_string()), t.join().unwrap_or_else(|_| Err("panicked".into())))
    });
    created_base?;
    created_top?;
    let base_opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", p(&base));
    run_tool(Command::new("qemu-io").args(["--object", &secrets[0], "--image-opts", &base_opts]).args([
        "-c",
        "write -P 0x5a 0 4M",
        "-c",
        "write -P 0xa5 5M 1M",
    ]))?;
    let top_opts =
        format!("driver=qcow2,file.filename={},encrypt.key-secret=s1,backing.encrypt.key-secret=s0", p(&top));
    let io_top = |cmd: &mut Command| {
        cmd.args(["--object", &secrets[0], "--object", &secrets[1], "--image-opts", &top_opts]);
    };
    let mut write_top = Command::new("qemu-io");
    io_top(&mut write_top);
    run_tool(write_top.args(["-c", "write -P 0x33 1M 2M", "-c", "write -P 0x44 7M 100k"]))?;
    let setup_time = start.elapsed();
    println!(
        "   {:<16} {:8.1} ms   two {CHAIN_SIZE} layers (mostly qemu-img's own PBKDF2 calibration)",
        "qemu-img, -io",
        ms(setup_time)
    );
    println!("   {:<16} {:>8}      base: 0x5a at 0+4M, 0xa5 at 5M+1M", "patterns", "");
    println!("   {:<16} {:>8}      overlay: 0x33 at 1M+2M, 0x44 at 7M+100k", "", "");

    let start = Instant::now();
    // The default policy: backing files only in the directory of the image naming them.
    let mut resolver =
        FileResolver::with_policy(&top, BackingPolicy::new()).map_err(|e| format!("{}: {e}", top.display()))?;
    resolver.set_passphrase(0, top_pw.as_bytes());
    resolver.set_passphrase(1, base_pw.as_bytes());
    let mut disk = Qcow2Disk::from_chain(open_chain_with(&top, resolver)?);
    let open_time = start.elapsed();
    let size = disk.size() as usize;
    let mut ours = vec![0u8; size];
    let start = Instant::now();
    disk.read_at(0, &mut ours)?;
    let read_time = start.elapsed();
    println!(
        "   {:<16} {:8.1} ms   overlay + base unlocked, each with its own passphrase",
        "qluks open",
        ms(open_time)
    );
    println!(
        "   {:<16} {:8.1} ms   {:7.0} MiB/s   {} MiB virtual disk",
        "qluks read",
        ms(read_time),
        mib_per_s(size, read_time),
        size >> 20
    );

    let start = Instant::now();
    let mut convert = Command::new("qemu-img");
    convert.args(["convert", "--object", &secrets[0], "--object", &secrets[1], "--image-opts", &top_opts, "-O", "raw"]);
    run_tool(convert.arg(&raw))?;
    let convert_time = start.elapsed();
    let theirs = std::fs::read(&raw).map_err(|e| format!("{}: {e}", raw.display()))?;
    println!(
        "   {:<16} {:8.1} ms   (a process: startup, unlock, write of the raw file)",
        "qemu-img convert",
        ms(convert_time)
    );
    if theirs.len() != ours.len() {
        return Err(format!("qcow2 chain: qemu-img gives {} bytes, qluks {}", theirs.len(), ours.len()).into());
    }
    if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        return Err(format!("qcow2 chain: qluks and qemu-img differ at offset {at}").into());
    }
    // The pattern must show through: an all-zero read would compare equal to a broken convert.
    let expect = [
        (0usize, 0x5a),
        (1 << 20, 0x33),
        (3 << 20, 0x5a),
        (4 << 20, 0),
        (6 << 20, 0),
        (5 << 20, 0xa5),
        (7 << 20, 0x44),
    ];
    if let Some((at, _)) = expect.iter().find(|&&(at, v)| ours[at] != v) {
        return Err(format!("qcow2 chain: unexpected byte {:#x} at offset {at}", ours[*at]).into());
    }
    println!("   qcow2+LUKS chain: identical to qemu-img ({} MiB, 2 layers, {} bytes compared)", size >> 20, size);
    Ok(())
}

/// Creates a LUKS qcow2 image at `path` through qluks (64 KiB clusters, aes-256-xts-plain64).
fn create_luks_qcow2(path: &Path, passphrase: &[u8], backing: Option<&str>) -> Result<(), Box<dyn Error>> {
    let mut file = FileOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut options = CreateOptions {
        size: QCOW2_SIZE as u64,
        cluster_size: 64 << 10,
        compat: Compat::V1_1,
        refcount_bits: 16,
        extended_l2: false,
        compression: Compression::Deflate,
        lazy_refcounts: false,
        backing_file: backing.map(str::as_bytes),
        backing_format: backing.map(|_| b"qcow2".as_slice()),
        preallocation: Preallocation::Off,
        encryption: Encryption::Luks {
            passphrase,
            cipher: CipherSpec::parse_sized("aes-256-xts-plain64")?,
            hash: HashAlg::Sha256,
            iterations: Iterations::fixed(DEMO_ITERATIONS),
        },
    };
    qcow2::create::create(&mut file, &mut options, &mut OsRng).map_err(|e| format!("{}: {e}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

/// Opens the qcow2 image at `path` through qluks (read-write when `writable`), each layer
/// unlocked with its passphrase (top first).
fn open_qcow2(path: &Path, passphrases: &[&[u8]], writable: bool) -> Result<Qcow2Disk, Box<dyn Error>> {
    // The default policy: backing files only in the directory of the image naming them.
    let mut resolver =
        FileResolver::with_policy(path, BackingPolicy::new()).map_err(|e| format!("{}: {e}", path.display()))?;
    for (depth, p) in passphrases.iter().enumerate() {
        resolver.set_passphrase(depth, p);
    }
    Ok(if writable {
        Qcow2Disk::from_writable_chain(open_chain_writable(path, resolver)?)
    } else {
        Qcow2Disk::from_chain(open_chain_with(path, resolver)?)
    })
}

/// Writes `(offset, length, byte)` patterns through `disk` and into `model`.
fn write_patterns(disk: &mut Qcow2Disk, model: &mut [u8], writes: &[(usize, usize, u8)]) -> Result<(), Box<dyn Error>> {
    for &(at, len, byte) in writes {
        let mut buf = vec![byte; len];
        disk.write_at(at as u64, &mut buf)?;
        model[at..at + len].fill(byte);
    }
    disk.flush()
}

/// Reads the whole disk through qluks and compares it with `model`.
fn verify(disk: &mut Qcow2Disk, model: &[u8], what: &str) -> Result<(), Box<dyn Error>> {
    let mut back = vec![0u8; model.len()];
    disk.read_at(0, &mut back)?;
    if let Some(at) = back.iter().zip(model).position(|(a, b)| a != b) {
        return Err(format!("{what}: byte {at} reads {:#04x}, {:#04x} was written", back[at], model[at]).into());
    }
    Ok(())
}

fn qcow2_write(dir: &Path) -> Result<(), Box<dyn Error>> {
    let (base, top) = (dir.join("w-base.qcow2"), dir.join("w-overlay.qcow2"));
    let (base_pw, top_pw) = (b"demo base passphrase".as_slice(), b"demo overlay passphrase".as_slice());
    let start = Instant::now();
    create_luks_qcow2(&base, base_pw, None)?;
    create_luks_qcow2(&top, top_pw, Some("w-base.qcow2"))?;
    println!(
        "   {:<16} {:8.1} ms   base + overlay ({} MiB, 64 KiB clusters), each its own passphrase",
        "qluks create",
        ms(start.elapsed()),
        QCOW2_SIZE >> 20
    );
    // Unaligned and straddling clusters: the overlay's partial clusters are filled from the
    // base (decrypted, re-encrypted at the overlay's host offsets).
    let base_writes = [(0, 4 << 20, 0x5a), (5 << 20, 1 << 20, 0xa5)];
    let top_writes = [(1_000_000, 2 << 20, 0x33), ((7 << 20) + 4321, 100_000, 0x44), (4_194_000, 1_000, 0x00)];
    let mut base_model = vec![0u8; QCOW2_SIZE];
    let start = Instant::now();
    let mut disk = open_qcow2(&base, &[base_pw], true)?;
    write_patterns(&mut disk, &mut base_model, &base_writes)?;
    drop(disk);
    let mut model = base_model.clone();
    let mut disk = open_qcow2(&top, &[top_pw, base_pw], true)?;
    write_patterns(&mut disk, &mut model, &top_writes)?;
    drop(disk);
    println!("   {:<16} {:8.1} ms   base: 0x5a at 0+4M, 0xa5 at 5M+1M", "qluks write", ms(start.elapsed()));
    println!("   {:<16} {:>8}      overlay: 0x33 at 1000000+2M, 0x44 at 7M+4321+100000, 0x00 at 4194000+1000", "", "");
    let start = Instant::now();
    verify(&mut open_qcow2(&base, &[base_pw], false)?, &base_model, "base")?;
    verify(&mut open_qcow2(&top, &[top_pw, base_pw], false)?, &model, "overlay")?;
    println!("   {:<16} {:8.1} ms   every byte of both, re-opened: as written", "qluks verify", ms(start.elapsed()));
    if !tool_available("qemu-img") {
        println!("   qemu-img check/compare skipped: qemu-img is not on PATH (apt-get install qemu-utils)");
        return Ok(());
    }
    let p = |p: &Path| p.to_string_lossy().into_owned();
    let to_str = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let secrets = [format!("secret,id=s0,data={}", to_str(base_pw)), format!("secret,id=s1,data={}", to_str(top_pw))];
    let base_opts = format!("driver=qcow2,file.filename={},encrypt.key-secret=s0", p(&base));
    let top_opts =
        format!("driver=qcow2,file.filename={},encrypt.key-secret=s1,backing.encrypt.key-secret=s0", p(&top));
    let start = Instant::now();
    for opts in [&base_opts, &top_opts] {
        let out = Command::new("qemu-img")
            .args(["check", "--object", &secrets[0], "--object", &secrets[1], "--image-opts", opts])
            .output()
            .map_err(|e| format!("qemu-img check: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "qemu-img check {opts}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
    }
    let expected = dir.join("w-expected.raw");
    std::fs::write(&expected, &model).map_err(|e| format!("{}: {e}", expected.display()))?;
    let out = Command::new("qemu-img")
        .args(["compare", "--object", &secrets[0], "--object", &secrets[1], "--image-opts", &top_opts])
        .arg(format!("driver=raw,file.filename={}", p(&expected)))
        .output()
        .map_err(|e| format!("qemu-img compare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img compare of the overlay with what was written: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    println!(
        "   {:<16} {:8.1} ms   check: no errors in either image; compare: overlay identical to what was written",
        "qemu-img",
        ms(start.elapsed())
    );
    println!("   qcow2+LUKS writes: verified by qluks and by qemu-img");
    Ok(())
}

fn throughput() -> Result<(), Box<dyn Error>> {
    let best = Backend::best();
    let backends: Vec<Backend> = if best == Backend::Soft { vec![Backend::Soft] } else { vec![Backend::Soft, best] };
    for backend in backends {
        let config = |decrypt| XtsConfig {
            cipher: Cipher::Aes256,
            sector_size: 4096,
            batch: 1 << 20,
            decrypt,
            time: Duration::from_millis(100),
        };
        let (enc, dec) = (xts_gbps(backend, &config(false))?.gbps, xts_gbps(backend, &config(true))?.gbps);
        let label = if backend == best { format!("{} (best)", backend.name()) } else { backend.name().to_string() };
        println!("   {label:<16} encrypt {enc:6.2} GB/s   decrypt {dec:6.2} GB/s");
    }
    Ok(())
}
