//! Caller limits on unlock costs: a keyslot or digest that asks for more PBKDF2 iterations,
//! Argon2 passes or Argon2 memory than the caller allows is refused with a typed error naming
//! the slot and the claim, before any KDF work (each refusal is timed against a bound that the
//! claimed work could never meet); an allowed keyslot still opens when a costlier one is
//! skipped. Volumes are made with small costs (qluks, cryptsetup, qemu-img) and their headers
//! then patched to claim more.

mod common;
#[path = "common/luks2_json.rs"]
mod luks2_json;

use luks2_json::replace_once;

use std::fs::File;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::io::{BlockIo, MemIo};
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::luks2;
use qluks::luks::luks2::create::{self as luks2_create, CreateKdf, HDR_SIZE};
use qluks::luks::{KdfCost, KdfLimits, LuksError, LuksIoError, LuksVolume, OpenOptions};

/// A refusal does no KDF work: it returns well within this bound, while every claim in these
/// tests would take far longer to pay.
const REFUSAL_BOUND: Duration = Duration::from_secs(2);
/// The claim patched into headers (minutes of PBKDF2 in a debug build).
const CLAIM: u32 = 5_000_000;
/// The limit the claim exceeds.
const LIMIT: u32 = 100_000;

fn pbkdf2_limit(limit: u32) -> KdfLimits {
    KdfLimits { pbkdf2_iterations: limit, ..KdfLimits::DEFAULT }
}

fn pbkdf2_cost() -> KdfCost {
    KdfCost::Pbkdf2Iterations { iterations: CLAIM, limit: LIMIT }
}

/// Runs `f` on its own thread and fails the test if it does not return within `bound` (the
/// KDF work it would otherwise pay runs on, detached).
fn within<T: Send + 'static>(bound: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let value = rx.recv_timeout(bound).unwrap_or_else(|_| panic!("no answer within {bound:?}: KDF work was done"));
    assert!(start.elapsed() < bound);
    value
}

fn luks_err<T, E: std::fmt::Debug>(r: Result<T, LuksIoError<E>>) -> LuksError {
    match r {
        Err(LuksIoError::Luks(e)) => e,
        Err(e) => panic!("device error {e:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

// ---- LUKS1 ----

const PAYLOAD: usize = 64 * 1024;

/// A LUKS1 volume with keyslot 0 (and keyslot 1 when `second` is given) at 1000 iterations.
fn luks1_disk(pass: &[u8], second: Option<&[u8]>) -> Vec<u8> {
    let spec = CipherSpec::DEFAULT;
    let (_, payload_offset) = luks1::layout(spec.key_bytes as u32);
    let mut disk = vec![0u8; payload_offset as usize * 512 + PAYLOAD];
    let mut params = CreateParams { cipher: spec, hash: HashAlg::Sha256, iterations: Iterations::fixed(1000) };
    let key = luks1::format(&mut MemIo::new(&mut disk), 0, &mut params, pass, &mut OsRng).unwrap();
    if let Some(second) = second {
        let mut io = MemIo::new(&mut disk);
        let mut header = luks1::Luks1Header::read(&mut io, 0).unwrap();
        luks1::add_keyslot(&mut io, 0, None, &mut header, &key.1, second, Some(1), 1000, &mut OsRng).unwrap();
    }
    disk
}

fn patch_be32(disk: &mut [u8], at: usize, value: u32) {
    disk[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// The keyslot iteration field of LUKS1 keyslot `k` (relative to the header).
fn luks1_slot_iterations_at(k: usize) -> usize {
    208 + 48 * k + 4
}

/// The master-key digest iteration field.
const LUKS1_DIGEST_ITERATIONS_AT: usize = 164;

fn open_luks1(disk: Vec<u8>, pass: &'static [u8], keyslot: Option<usize>, limits: KdfLimits) -> Result<(), LuksError> {
    within(REFUSAL_BOUND, move || {
        let mut disk = disk;
        let options = OpenOptions { keyslot, kdf_limits: limits, ..OpenOptions::default() };
        LuksVolume::open(MemIo::new(&mut disk), pass, options).map(drop).map_err(|e| luks_err::<(), _>(Err(e)))
    })
}

#[test]
fn luks1_named_keyslot_over_the_iteration_limit_is_refused_before_any_work() {
    let mut disk = luks1_disk(b"pw", None);
    patch_be32(&mut disk, luks1_slot_iterations_at(0), CLAIM);
    let err = open_luks1(disk, b"pw", Some(0), pbkdf2_limit(LIMIT)).unwrap_err();
    assert_eq!(err, LuksError::KeyslotKdfRefused { keyslot: 0, cost: pbkdf2_cost() });
    assert_eq!(
        err.to_string(),
        format!("LUKS keyslot 0 refused: it asks for PBKDF2 with {CLAIM} iterations (limit {LIMIT})")
    );
}

#[test]
fn luks1_costly_keyslots_are_skipped_and_named_when_nothing_else_opens() {
    let mut disk = luks1_disk(b"pw", None);
    patch_be32(&mut disk, luks1_slot_iterations_at(0), CLAIM);
    let err = open_luks1(disk, b"pw", None, pbkdf2_limit(LIMIT)).unwrap_err();
    assert_eq!(err, LuksError::KeyslotsRefused { keyslot: 0, cost: pbkdf2_cost(), refused: 1 });
    assert_ne!(err, LuksError::WrongPassphrase);
}

#[test]
fn luks1_digest_over_the_iteration_limit_is_refused_before_any_work() {
    let mut disk = luks1_disk(b"pw", None);
    patch_be32(&mut disk, LUKS1_DIGEST_ITERATIONS_AT, CLAIM);
    let err = open_luks1(disk, b"pw", None, pbkdf2_limit(LIMIT)).unwrap_err();
    assert_eq!(err, LuksError::DigestKdfRefused { cost: pbkdf2_cost() });
}

#[test]
fn luks1_library_default_refuses_the_largest_claim_the_format_allows() {
    // 2^31 iterations: the most LUKS1 parsing accepts, an hour of PBKDF2 per try.
    let mut disk = luks1_disk(b"pw", Some(b"pw"));
    patch_be32(&mut disk, luks1_slot_iterations_at(0), luks1::MAX_ITERATIONS);
    patch_be32(&mut disk, luks1_slot_iterations_at(1), luks1::MAX_ITERATIONS);
    let err = open_luks1(disk, b"wrong", None, KdfLimits::default()).unwrap_err();
    let cost =
        KdfCost::Pbkdf2Iterations { iterations: luks1::MAX_ITERATIONS, limit: qluks::luks::DEFAULT_PBKDF2_ITERATIONS };
    assert_eq!(err, LuksError::KeyslotsRefused { keyslot: 0, cost, refused: 2 });
}

#[test]
fn luks1_allowed_keyslot_opens_when_a_costlier_one_is_skipped() {
    let mut disk = luks1_disk(b"pw", Some(b"pw"));
    let data = common::pattern(8, 4096);
    LuksVolume::open(MemIo::new(&mut disk), b"pw", OpenOptions::default()).unwrap().write_at(0, &data).unwrap();
    patch_be32(&mut disk, luks1_slot_iterations_at(0), CLAIM);
    let (slot, data_back) = within(REFUSAL_BOUND, move || {
        let mut io = MemIo::new(&mut disk);
        let header = luks1::Luks1Header::read(&mut io, 0).unwrap();
        let (slot, _) =
            luks1::unlock_with_limits(&mut io, 0, None, &header, b"pw", None, &pbkdf2_limit(LIMIT)).unwrap();
        let options = OpenOptions { kdf_limits: pbkdf2_limit(LIMIT), ..OpenOptions::default() };
        let mut volume = LuksVolume::open(MemIo::new(&mut disk), b"pw", options).unwrap();
        let mut back = vec![0u8; 4096];
        volume.read_at(0, &mut back).unwrap();
        (slot, back)
    });
    assert_eq!(slot, 1);
    assert_eq!(data_back, data);
}

#[test]
fn luks1_wrong_passphrase_without_refusals_stays_a_plain_wrong_passphrase() {
    let disk = luks1_disk(b"pw", Some(b"other"));
    assert_eq!(open_luks1(disk, b"wrong", None, pbkdf2_limit(LIMIT)).unwrap_err(), LuksError::WrongPassphrase);
}

#[test]
fn luks1_change_passphrase_honours_the_limits() {
    let mut disk = luks1_disk(b"pw", None);
    patch_be32(&mut disk, luks1_slot_iterations_at(0), CLAIM);
    let err = within(REFUSAL_BOUND, move || {
        let mut io = MemIo::new(&mut disk);
        let mut header = luks1::Luks1Header::read(&mut io, 0).unwrap();
        let limits = pbkdf2_limit(LIMIT);
        luks_err(luks1::change_passphrase_with_limits(
            &mut io,
            0,
            None,
            &mut header,
            b"pw",
            b"new",
            Some(0),
            1000,
            &limits,
            &mut OsRng,
        ))
    });
    assert_eq!(err, LuksError::KeyslotKdfRefused { keyslot: 0, cost: pbkdf2_cost() });
}

// ---- LUKS2 (qluks's own format, patched) ----

const LUKS2_DATA_OFFSET: u64 = 1 << 20;

/// A LUKS2 volume (keyslot 0 with `kdf`, digest at 1000 iterations) in memory.
fn luks2_disk(kdf: CreateKdf) -> Vec<u8> {
    let mut disk = vec![0u8; LUKS2_DATA_OFFSET as usize + PAYLOAD];
    let params = luks2_create::CreateParams {
        cipher: CipherSpec::DEFAULT,
        sector_size: 512,
        kdf,
        digest_iterations: 1000,
        data_offset: LUKS2_DATA_OFFSET,
    };
    let mut memory = vec![0u8; 1024 * 64];
    luks2_create::format(&mut MemIo::new(&mut disk), &params, b"pw", &mut memory, &mut OsRng).unwrap();
    disk
}

fn patch_luks2_json(disk: &mut [u8], edit: impl Fn(&str) -> String) {
    luks2_json::patch(disk, HDR_SIZE as usize, edit)
}

fn open_luks2(disk: Vec<u8>, keyslot: Option<usize>, limits: KdfLimits) -> Result<(), LuksError> {
    within(REFUSAL_BOUND, move || {
        let mut disk = disk;
        // Memory for what the limits admit: a refused Argon2 keyslot gets none.
        let mut json = vec![0u8; 1 << 20];
        let header = luks2::Luks2Header::read(&mut MemIo::new(&mut disk), &mut json).unwrap();
        let bytes = header.kdf_memory_within(&limits, keyslot);
        let mut memory = vec![0u8; bytes as usize];
        let options =
            OpenOptions { keyslot, kdf_limits: limits, kdf_memory: Some(&mut memory), ..OpenOptions::default() };
        LuksVolume::open(MemIo::new(&mut disk), b"pw", options).map(drop).map_err(|e| luks_err::<(), _>(Err(e)))
    })
}

#[test]
fn luks2_pbkdf2_keyslot_and_digest_over_the_limit_are_refused() {
    let kdf = CreateKdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1001 };
    let disk = luks2_disk(kdf);
    // Control: the unpatched volume opens within the limits.
    open_luks2(disk.clone(), None, pbkdf2_limit(LIMIT)).unwrap();

    let mut slot = disk.clone();
    patch_luks2_json(&mut slot, |t| replace_once(t, "\"iterations\":1001", &format!("\"iterations\":{CLAIM}")));
    let err = open_luks2(slot.clone(), Some(0), pbkdf2_limit(LIMIT)).unwrap_err();
    assert_eq!(err, LuksError::KeyslotKdfRefused { keyslot: 0, cost: pbkdf2_cost() });
    let err = open_luks2(slot, None, pbkdf2_limit(LIMIT)).unwrap_err();
    assert_eq!(err, LuksError::KeyslotsRefused { keyslot: 0, cost: pbkdf2_cost(), refused: 1 });

    let mut digest = disk;
    patch_luks2_json(&mut digest, |t| replace_once(t, "\"iterations\":1000", &format!("\"iterations\":{CLAIM}")));
    let err = open_luks2(digest, None, pbkdf2_limit(LIMIT)).unwrap_err();
    assert_eq!(err, LuksError::DigestKdfRefused { cost: pbkdf2_cost() });
}

#[test]
fn luks2_argon2_memory_over_the_limit_is_refused_without_allocating_it() {
    let disk = luks2_disk(CreateKdf::Argon2id { time: 1, memory_kib: 64, cpus: 1 });
    let limits = KdfLimits { argon2_memory_kib: 1 << 20, ..KdfLimits::DEFAULT };
    open_luks2(disk.clone(), None, limits).unwrap();
    let mut patched = disk;
    // 4 GiB, the most the format allows.
    patch_luks2_json(&mut patched, |t| replace_once(t, "\"memory\":64,", "\"memory\":4194304,"));
    let mut json = vec![0u8; 1 << 20];
    let header = luks2::Luks2Header::read(&mut MemIo::new(&mut patched), &mut json).unwrap();
    assert_eq!(header.metadata.kdf_memory(), 4 << 30, "the claim (bytes)");
    assert_eq!(header.metadata.kdf_memory_within(&limits, None), 0, "nothing to allocate");
    let cost = KdfCost::Argon2Memory { kib: 4 << 20, limit_kib: 1 << 20 };
    assert_eq!(
        open_luks2(patched.clone(), Some(0), limits).unwrap_err(),
        LuksError::KeyslotKdfRefused { keyslot: 0, cost }
    );
    assert_eq!(
        open_luks2(patched, None, limits).unwrap_err(),
        LuksError::KeyslotsRefused { keyslot: 0, cost, refused: 1 }
    );
}

#[test]
fn luks2_argon2_time_over_the_limit_is_refused() {
    let disk = luks2_disk(CreateKdf::Argon2id { time: 1, memory_kib: 64, cpus: 1 });
    let mut patched = disk;
    patch_luks2_json(&mut patched, |t| replace_once(t, "\"time\":1,", "\"time\":4000000000,"));
    let limits = KdfLimits { argon2_time: 16, ..KdfLimits::DEFAULT };
    let cost = KdfCost::Argon2Time { time: 4_000_000_000, limit: 16 };
    assert_eq!(
        open_luks2(patched.clone(), Some(0), limits).unwrap_err(),
        LuksError::KeyslotKdfRefused { keyslot: 0, cost }
    );
    // The library default refuses it too.
    let cost = KdfCost::Argon2Time { time: 4_000_000_000, limit: qluks::luks::DEFAULT_ARGON2_TIME };
    assert_eq!(
        open_luks2(patched, None, KdfLimits::default()).unwrap_err(),
        LuksError::KeyslotsRefused { keyslot: 0, cost, refused: 1 }
    );
}

// ---- LUKS2 by cryptsetup: a costly keyslot skipped, a cheap one opens ----

#[test]
fn luks2_allowed_keyslot_opens_when_a_costlier_one_is_skipped() {
    let test = "luks2_allowed_keyslot_opens_when_a_costlier_one_is_skipped";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let image = dir.join("v.luks2");
    let key = dir.join("key");
    std::fs::write(&key, b"pw").unwrap();
    File::create(&image).unwrap().set_len(20 << 20).unwrap();
    let pbkdf2 = |n: &str| ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", n].map(String::from);
    // Keyslot 0 costs 200000 iterations, keyslot 1 (same passphrase) 1000.
    common::run(
        Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "--batch-mode", "--key-file"])
            .arg(&key)
            .args(pbkdf2("200000"))
            .arg(&image),
    );
    common::run(
        Command::new("cryptsetup")
            .args(["luksAddKey", "--batch-mode", "--key-slot", "1", "--key-file"])
            .arg(&key)
            .args(pbkdf2("1000"))
            .arg(&image)
            .arg(&key),
    );
    let unlock = |limits: KdfLimits| {
        let mut file = File::open(&image).unwrap();
        let mut json = vec![0u8; 1 << 20];
        let header = luks2::Luks2Header::read(&mut file, &mut json).unwrap();
        luks2::unlock_with_limits(&mut file, &header.metadata, b"pw", None, &mut [], &limits).map(|(k, _)| k)
    };
    // Control: without a limit keyslot 0 opens first.
    assert_eq!(unlock(KdfLimits::unlimited()).unwrap(), 0);
    let start = Instant::now();
    assert_eq!(unlock(pbkdf2_limit(LIMIT)).unwrap(), 1);
    assert!(start.elapsed() < REFUSAL_BOUND);
}

// ---- qcow2 with an embedded LUKS header ----

#[test]
fn qcow2_luks_keyslot_over_the_limit_is_refused_through_open_and_the_resolver() {
    let test = "qcow2_luks_keyslot_over_the_limit_is_refused_through_open_and_the_resolver";
    if !common::tool(test, "qemu-img") {
        return;
    }
    let dir = common::TempDir::new(test);
    let image = dir.join("enc.qcow2");
    common::run(
        Command::new("qemu-img")
            .args(["create", "-f", "qcow2", "--object", "secret,id=sec0,data=pw"])
            .args(["-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"])
            .arg(&image)
            .arg("1M"),
    );
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&image).unwrap();
    let (_, extensions, _) = qluks::qcow2::read_qcow2_header(&mut file).unwrap();
    let fde = extensions.fde.unwrap().offset;
    BlockIo::write_at(&mut file, fde + luks1_slot_iterations_at(0) as u64, &CLAIM.to_be_bytes()).unwrap();
    drop(file);

    // Control: the library default admits the claim (it is work, not absurd)...
    let header = luks1::Luks1Header::read(&mut File::open(&image).unwrap(), fde).unwrap();
    assert_eq!(header.keyslots[0].iterations, CLAIM);
    // ...a caller limit refuses it at once.
    let open = |limits: KdfLimits| {
        let file = File::open(&image).unwrap();
        within(REFUSAL_BOUND, move || {
            qluks::qcow2::Qcow2::<File>::open_with_kdf_limits(file, None, Some(b"pw"), &limits).map(drop)
        })
    };
    match open(pbkdf2_limit(LIMIT)) {
        Err(qluks::qcow2::Error::Luks(e)) => {
            assert_eq!(e, LuksError::KeyslotsRefused { keyslot: 0, cost: pbkdf2_cost(), refused: 1 })
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Through a chain: the resolver's limits apply.
    struct Limited(KdfLimits);
    impl qluks::qcow2::backing::Resolver<File> for Limited {
        type Error = &'static str;
        fn open_backing(
            &mut self,
            _: &qluks::qcow2::backing::BackingRequest<'_>,
        ) -> Result<qluks::qcow2::backing::Opened<File>, &'static str> {
            Err("no backing")
        }
        fn passphrase(&mut self, _: usize) -> Option<&[u8]> {
            Some(b"pw")
        }
        fn kdf_limits(&mut self, _: usize) -> KdfLimits {
            self.0
        }
        fn open_data_file(&mut self, _: &qluks::qcow2::backing::DataFileRequest<'_>) -> Result<File, &'static str> {
            Err("no data file")
        }
    }
    let file = File::open(&image).unwrap();
    let result = within(REFUSAL_BOUND, move || {
        qluks::qcow2::Chain::<File, 4, 2>::open(file, &mut Limited(pbkdf2_limit(LIMIT)))
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let message = result.unwrap_err();
    assert!(
        message.contains(&format!("keyslot(s) not tried, keyslot 0 asks for PBKDF2 with {CLAIM} iterations")),
        "{message}"
    );
}
