//! Every LUKS unlock + read path runs on a thread with a 64 KiB stack (firmware threads get
//! little more; 32 KiB in release builds, which need under 16 KiB): LUKS1, LUKS2 with PBKDF2
//! and LUKS2 with Argon2id, through `LuksVolume::open`, the two-step LUKS2 open and the
//! lower-level unlock functions. A stack overflow aborts the test process, so a regression (a
//! 16 KiB array on the unlock path, a large value returned by value) fails `cargo test`
//! (checked: debug builds need 50-55 KiB). `QLUKS_STACK_KIB` overrides the stack size, to
//! measure the minimum by bisection.

use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::io::MemIo;
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::luks2::{self, create::CreateKdf};
use qluks::luks::{KdfLimits, LuksVolume, OpenOptions};

const PASSPHRASE: &[u8] = b"stack budget";
const DATA_AT: u64 = 3 * 4096 + 100;
const DATA_LEN: usize = 2 * 4096 + 200;

fn stack_size() -> usize {
    let budget = if cfg!(debug_assertions) { 64 } else { 32 };
    std::env::var("QLUKS_STACK_KIB").ok().and_then(|v| v.parse().ok()).unwrap_or(budget) * 1024
}

/// Runs `f` on a thread with [`stack_size`] bytes of stack.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(stack_size()).spawn(f).unwrap().join().unwrap()
}

fn pattern() -> Vec<u8> {
    (0..DATA_LEN).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn luks1_image() -> Vec<u8> {
    let mut disk = vec![0u8; 2 << 20];
    let mut params =
        CreateParams { cipher: CipherSpec::DEFAULT, hash: HashAlg::Sha256, iterations: Iterations::fixed(1000) };
    let (header, _) = luks1::format(&mut MemIo::new(&mut disk), 0, &mut params, PASSPHRASE, &mut OsRng).unwrap();
    let mut volume = LuksVolume::open_luks1(MemIo::new(&mut disk), PASSPHRASE, None).unwrap();
    volume.write_at(DATA_AT, &pattern()).unwrap();
    assert!(header.payload_offset > 0);
    disk
}

fn luks2_image(kdf: CreateKdf) -> Vec<u8> {
    let mut disk = vec![0u8; 17 << 20];
    let params = luks2::create::CreateParams { kdf, digest_iterations: 1000, ..Default::default() };
    let mut memory = vec![0u8; 256 * 1024];
    luks2::create::format(&mut MemIo::new(&mut disk), &params, PASSPHRASE, &mut memory, &mut OsRng).unwrap();
    let options = OpenOptions { kdf_memory: Some(&mut memory), ..Default::default() };
    let mut volume = LuksVolume::open(MemIo::new(&mut disk), PASSPHRASE, options).unwrap();
    volume.write_at(DATA_AT, &pattern()).unwrap();
    disk
}

const PBKDF2: CreateKdf = CreateKdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1000 };
const ARGON2ID: CreateKdf = CreateKdf::Argon2id { time: 1, memory_kib: 256, cpus: 2 };

fn read_back<I: qluks::io::BlockIo>(volume: &mut LuksVolume<I>) -> bool
where
    I::Error: core::fmt::Debug,
{
    let mut back = vec![0u8; DATA_LEN];
    volume.read_at(DATA_AT, &mut back).unwrap();
    back == pattern()
}

#[test]
fn luks1_open_and_read_fit_in_64_kib() {
    let mut disk = luks1_image();
    assert!(on_small_stack(move || {
        let mut volume = LuksVolume::open(MemIo::new(&mut disk), PASSPHRASE, OpenOptions::default()).unwrap();
        read_back(&mut volume)
    }));
}

#[test]
fn luks1_unlock_and_read_fit_in_64_kib() {
    let mut disk = luks1_image();
    assert!(on_small_stack(move || {
        let mut io = MemIo::new(&mut disk);
        let header = qluks::luks::Luks1Header::read(&mut io, 0).unwrap();
        let (_, key) =
            luks1::unlock_with_limits(&mut io, 0, None, &header, PASSPHRASE, None, &KdfLimits::DEFAULT).unwrap();
        let cipher = qluks::crypto::SectorCipher::new(header.cipher, key.as_bytes()).unwrap();
        let segment = qluks::luks::DataSegment {
            offset: header.payload_offset_bytes(),
            size: None,
            sector_size: 512,
            iv_tweak: 0,
            cipher,
        };
        let mut volume = LuksVolume::new(io, segment).unwrap();
        read_back(&mut volume)
    }));
}

/// Caller storage for the LUKS2 header and JSON text, made outside the small stack (firmware
/// would use a static or its own struct).
fn storage() -> (Box<luks2::Luks2Header>, Vec<u8>) {
    (Box::new(luks2::Luks2Header::EMPTY), vec![0u8; luks2::DEFAULT_JSON_BUFFER])
}

/// `LuksVolume::open` with caller storage for the header, the JSON text and Argon2.
fn luks2_open(mut disk: Vec<u8>) -> bool {
    let (mut header, mut json) = storage();
    let mut memory = vec![0u8; 256 * 1024];
    on_small_stack(move || {
        let options = OpenOptions {
            kdf_memory: Some(&mut memory),
            json_buffer: Some(&mut json),
            header: Some(&mut header),
            ..Default::default()
        };
        let mut volume = LuksVolume::open(MemIo::new(&mut disk), PASSPHRASE, options).unwrap();
        read_back(&mut volume)
    })
}

/// The two-step open: header read once into caller storage, Argon2 sized from it in bytes,
/// then `open_luks2_header`.
fn luks2_two_step(mut disk: Vec<u8>) -> bool {
    let (mut header, mut json) = storage();
    on_small_stack(move || {
        let mut io = MemIo::new(&mut disk);
        header.read_into(&mut io, &mut json).unwrap();
        let mut memory = vec![0u8; header.kdf_memory_within(&KdfLimits::DEFAULT, None) as usize];
        let mut volume =
            LuksVolume::open_luks2_header(io, &header, PASSPHRASE, None, &mut memory, &KdfLimits::DEFAULT).unwrap();
        read_back(&mut volume)
    })
}

/// The lower-level functions: `luks2::unlock_with_limits`, `data_segment`, `LuksVolume::new`.
fn luks2_unlock(mut disk: Vec<u8>) -> bool {
    let (mut header, mut json) = storage();
    on_small_stack(move || {
        let mut io = MemIo::new(&mut disk);
        header.read_into(&mut io, &mut json).unwrap();
        let mut memory = vec![0u8; header.metadata.kdf_memory() as usize];
        let (_, key) =
            luks2::unlock_with_limits(&mut io, &header.metadata, PASSPHRASE, None, &mut memory, &KdfLimits::DEFAULT)
                .unwrap();
        let segment = luks2::data_segment(&header.metadata, &key).unwrap();
        let mut volume = LuksVolume::new(io, segment).unwrap();
        read_back(&mut volume)
    })
}

#[test]
fn luks2_pbkdf2_open_and_read_fit_in_64_kib() {
    assert!(luks2_open(luks2_image(PBKDF2)));
}

#[test]
fn luks2_pbkdf2_unlock_and_read_fit_in_64_kib() {
    assert!(luks2_unlock(luks2_image(PBKDF2)));
}

#[test]
fn luks2_argon2id_open_and_read_fit_in_64_kib() {
    assert!(luks2_open(luks2_image(ARGON2ID)));
}

#[test]
fn luks2_argon2id_unlock_and_read_fit_in_64_kib() {
    assert!(luks2_unlock(luks2_image(ARGON2ID)));
}

#[test]
fn luks2_pbkdf2_two_step_open_and_read_fit_in_64_kib() {
    assert!(luks2_two_step(luks2_image(PBKDF2)));
}

#[test]
fn luks2_argon2id_two_step_open_and_read_fit_in_64_kib() {
    assert!(luks2_two_step(luks2_image(ARGON2ID)));
}
