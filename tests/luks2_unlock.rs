//! LUKS2 volumes made by `cryptsetup luksFormat --type luks2` unlock in qluks to the volume
//! key cryptsetup itself dumps, for every KDF LUKS2 uses.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use qluks::luks::luks2;
use qluks::luks::{LuksError, LuksIoError};

const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// Formats a small LUKS2 file with `kdf_args`; returns (image, passphrase file).
fn luks_format(dir: &common::TempDir, name: &str, extra: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let image = dir.join(name);
    let key_file = dir.join("passphrase");
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    File::create(&image).unwrap().set_len(20 << 20).unwrap();
    common::run(
        Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "--batch-mode", "--key-file"])
            .arg(&key_file)
            .args(extra)
            .arg(&image),
    );
    (image, key_file)
}

/// The volume key as `cryptsetup luksDump --dump-volume-key` prints it.
fn dumped_volume_key(image: &Path, key_file: &Path) -> Vec<u8> {
    let out = common::run(
        Command::new("cryptsetup")
            .args(["luksDump", "--dump-volume-key", "--batch-mode", "--key-file"])
            .arg(key_file)
            .arg(image),
    );
    let start = out.find("MK dump:").expect("MK dump in luksDump output") + "MK dump:".len();
    out[start..]
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|w| u8::from_str_radix(w, 16).unwrap())
        .collect()
}

fn qluks_unlock(image: &Path, passphrase: &[u8], memory_blocks: Option<usize>) -> Result<(usize, Vec<u8>), LuksError> {
    let mut file = File::open(image).unwrap();
    let mut json = vec![0u8; luks2::DEFAULT_JSON_BUFFER];
    let header = luks2::Luks2Header::read(&mut file, &mut json).map_err(luks_error)?;
    let bytes = memory_blocks.map_or(header.metadata.kdf_memory() as usize, |blocks| blocks * 1024);
    let mut memory = vec![0u8; bytes];
    let (slot, key) = luks2::unlock(&mut file, &header.metadata, passphrase, None, &mut memory).map_err(luks_error)?;
    Ok((slot, key.as_bytes().to_vec()))
}

fn luks_error(e: LuksIoError<std::io::Error>) -> LuksError {
    match e {
        LuksIoError::Luks(e) => e,
        LuksIoError::Io(e) => panic!("device error: {e}"),
    }
}

fn check_unlocks_to_dumped_key(test: &str, extra: &[&str]) {
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, key_file) = luks_format(&dir, "v.luks2", extra);
    let (slot, key) = qluks_unlock(&image, PASSPHRASE, None).unwrap();
    assert_eq!(slot, 0);
    assert_eq!(key, dumped_volume_key(&image, &key_file));
}

#[test]
fn pbkdf2_keyslot_unlocks_to_cryptsetups_volume_key() {
    check_unlocks_to_dumped_key(
        "pbkdf2_keyslot_unlocks_to_cryptsetups_volume_key",
        &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
    );
}

#[test]
fn pbkdf2_sha512_aes_cbc_essiv_keyslot_unlocks() {
    check_unlocks_to_dumped_key(
        "pbkdf2_sha512_aes_cbc_essiv_keyslot_unlocks",
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--hash",
            "sha512",
            "--cipher",
            "aes-cbc-essiv:sha256",
            "--key-size",
            "256",
        ],
    );
}

#[test]
fn argon2id_keyslot_unlocks_to_cryptsetups_volume_key() {
    check_unlocks_to_dumped_key(
        "argon2id_keyslot_unlocks_to_cryptsetups_volume_key",
        &["--pbkdf", "argon2id", "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"],
    );
}

#[test]
fn argon2i_keyslot_with_two_lanes_unlocks_to_cryptsetups_volume_key() {
    check_unlocks_to_dumped_key(
        "argon2i_keyslot_with_two_lanes_unlocks_to_cryptsetups_volume_key",
        &["--pbkdf", "argon2i", "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2"],
    );
}

#[test]
fn wrong_passphrase_is_refused() {
    let test = "wrong_passphrase_is_refused";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, _) = luks_format(&dir, "v.luks2", &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    let before = std::fs::read(&image).unwrap();
    assert_eq!(qluks_unlock(&image, b"not it", None), Err(LuksError::WrongPassphrase));
    assert_eq!(std::fs::read(&image).unwrap(), before, "a failed unlock writes nothing");
}

#[test]
fn argon2_with_too_little_caller_memory_names_the_need() {
    let test = "argon2_with_too_little_caller_memory_names_the_need";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, _) = luks_format(
        &dir,
        "v.luks2",
        &["--pbkdf", "argon2id", "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"],
    );
    assert_eq!(
        qluks_unlock(&image, PASSPHRASE, Some(63)),
        Err(LuksError::KdfMemoryTooSmall { needed: 64 * 1024, supplied: 63 * 1024 })
    );
}

fn open_header(image: &Path) -> Result<Box<luks2::Luks2Header>, LuksError> {
    let mut json = vec![0u8; luks2::DEFAULT_JSON_BUFFER];
    luks2::Luks2Header::read(&mut File::open(image).unwrap(), &mut json).map_err(luks_error)
}

/// Flips one byte of the JSON area of the copy at `copy_offset`.
fn corrupt_json(image: &Path, copy_offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(image).unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, copy_offset + 4096 + 20).unwrap();
    file.write_all_at(&[b[0] ^ 0x20], copy_offset + 4096 + 20).unwrap();
}

#[test]
fn one_corrupted_header_copy_leaves_the_other_in_use() {
    let test = "one_corrupted_header_copy_leaves_the_other_in_use";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, key_file) = luks_format(&dir, "v.luks2", &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    let key = dumped_volume_key(&image, &key_file);
    let hdr_size = open_header(&image).unwrap().binary.hdr_size;
    let pristine = std::fs::read(&image).unwrap();

    corrupt_json(&image, 0);
    let header = open_header(&image).unwrap();
    assert_eq!(header.primary_fault, Some(luks2::Luks2CopyError::ChecksumMismatch));
    assert_eq!(header.secondary_fault, None);
    assert_eq!(qluks_unlock(&image, PASSPHRASE, None).unwrap().1, key);

    std::fs::write(&image, &pristine).unwrap();
    corrupt_json(&image, hdr_size);
    let header = open_header(&image).unwrap();
    assert_eq!((header.primary_fault, header.secondary_fault), (None, Some(luks2::Luks2CopyError::ChecksumMismatch)));
    assert_eq!(qluks_unlock(&image, PASSPHRASE, None).unwrap().1, key);
}

#[test]
fn both_header_copies_corrupted_is_a_typed_error() {
    let test = "both_header_copies_corrupted_is_a_typed_error";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, _) = luks_format(&dir, "v.luks2", &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    let hdr_size = open_header(&image).unwrap().binary.hdr_size;
    corrupt_json(&image, 0);
    corrupt_json(&image, hdr_size);
    assert_eq!(
        open_header(&image).unwrap_err(),
        LuksError::Luks2(luks2::Luks2Error::NoValidHeader {
            primary: luks2::Luks2CopyError::ChecksumMismatch,
            secondary: luks2::Luks2CopyError::ChecksumMismatch,
        })
    );
    let open = qluks::luks::LuksVolume::open(File::open(&image).unwrap(), PASSPHRASE, Default::default());
    let both = luks2::Luks2Error::NoValidHeader {
        primary: luks2::Luks2CopyError::ChecksumMismatch,
        secondary: luks2::Luks2CopyError::ChecksumMismatch,
    };
    let e = open.unwrap_err();
    assert!(matches!(e, LuksIoError::Luks(LuksError::Luks2(l)) if l == both), "{e:?}");
}

#[test]
fn the_newer_copy_wins_by_seqid() {
    let test = "the_newer_copy_wins_by_seqid";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, key_file) = luks_format(&dir, "v.luks2", &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    let old = open_header(&image).unwrap();
    let hdr_size = old.binary.hdr_size as usize;
    let old_primary = std::fs::read(&image).unwrap()[..hdr_size].to_vec();

    // A second keyslot raises the seqid of both copies; then the primary is rolled back.
    let second = dir.join("second");
    std::fs::write(&second, b"second passphrase").unwrap();
    common::run(
        Command::new("cryptsetup")
            .args(["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(&key_file)
            .arg(&image)
            .arg(&second),
    );
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[..hdr_size].copy_from_slice(&old_primary);
    std::fs::write(&image, &bytes).unwrap();

    let header = open_header(&image).unwrap();
    assert!(header.binary.seqid > old.binary.seqid);
    assert_eq!(header.binary.hdr_offset, hdr_size as u64, "the secondary copy is in use");
    assert_eq!(header.metadata.keyslots().count(), 2);
    assert_eq!(qluks_unlock(&image, b"second passphrase", None).unwrap().0, 1);
}

#[test]
fn large_metadata_areas_need_a_larger_json_buffer() {
    let test = "large_metadata_areas_need_a_larger_json_buffer";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, key_file) = luks_format(
        &dir,
        "v.luks2",
        &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--luks2-metadata-size", "1m"],
    );
    let mut file = File::open(&image).unwrap();
    let header = luks2::Luks2Header::read(&mut file, &mut [0u8; 64]);
    // The JSON text runs from byte 4096 of the primary copy to its first NUL.
    let bytes = std::fs::read(&image).unwrap();
    let json_len = bytes[4096..].iter().position(|&b| b == 0).unwrap();
    assert!(
        matches!(header, Err(LuksIoError::Luks(LuksError::Luks2(luks2::Luks2Error::JsonTooLarge { len, capacity: 64 }))) if len == json_len),
        "{:?}",
        header.err()
    );
    let header = open_header(&image).unwrap();
    assert_eq!(header.binary.hdr_size, 1 << 20);
    assert_eq!(qluks_unlock(&image, PASSPHRASE, None).unwrap().1, dumped_volume_key(&image, &key_file));
}

#[test]
fn an_unfinished_reencryption_is_refused_by_its_requirement() {
    let test = "an_unfinished_reencryption_is_refused_by_its_requirement";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, key_file) = luks_format(&dir, "v.luks2", &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    common::run(
        Command::new("cryptsetup")
            .args(["reencrypt", "--init-only", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg("--key-file")
            .arg(&key_file)
            .arg(&image),
    );
    // The metadata (with its `reencrypt` keyslot and backup segments) still reads.
    let header = open_header(&image).unwrap();
    assert_eq!(header.metadata.config.requirement.unwrap().as_str(), "online-reencrypt-v2");
    assert_ne!(header.metadata.other_keyslots, 0, "the reencrypt keyslot is recorded");
    assert!(header.metadata.segments().any(|(_, s)| s.backup));
    let open = qluks::luks::LuksVolume::open(File::open(&image).unwrap(), PASSPHRASE, Default::default());
    match open.unwrap_err() {
        LuksIoError::Luks(LuksError::Luks2(luks2::Luks2Error::UnmetRequirement { name })) => {
            assert_eq!(name.as_str(), "online-reencrypt-v2")
        }
        e => panic!("expected UnmetRequirement, got {e}"),
    }
}

#[test]
fn keyslot_choice_and_priority_ignore() {
    let test = "keyslot_choice_and_priority_ignore";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, key_file) = luks_format(&dir, "v.luks2", &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    let volume_key = dumped_volume_key(&image, &key_file);
    common::run(Command::new("cryptsetup").args(["config", "--priority", "ignore", "--key-slot", "0"]).arg(&image));
    let header = open_header(&image).unwrap();
    let mut file = File::open(&image).unwrap();
    let mut unlock =
        |keyslot| luks2::unlock(&mut file, &header.metadata, PASSPHRASE, keyslot, &mut []).map_err(luks_error);
    // An `ignore` keyslot is tried only when chosen (cryptsetup too says no key matches).
    assert_eq!(unlock(None).unwrap_err(), LuksError::WrongPassphrase);
    assert_eq!(unlock(Some(0)).unwrap().1.as_bytes(), &volume_key[..]);
    assert_eq!(unlock(Some(1)).unwrap_err(), LuksError::KeyslotInactive { keyslot: 1 });
    assert_eq!(unlock(Some(32)).unwrap_err(), LuksError::KeyslotOutOfRange { keyslot: 32 });
}

#[test]
fn pbkdf2_keyslots_derived_in_pairs_each_unlock_to_their_keyslot() {
    let test = "pbkdf2_keyslots_derived_in_pairs_each_unlock_to_their_keyslot";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    // 32-byte area keys: two keyslots' PBKDF2-SHA-256 chains fill the interleaving kernel's
    // lanes, so keyslots 0 and 1 (and 2 and 3) are derived together where the CPU has SHA
    // instructions; keyslot 4 has another iteration count and is derived alone.
    let dir = common::TempDir::new(test);
    let pbkdf2 = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
    let (image, key_file) = luks_format(&dir, "v.luks2", &[&pbkdf2[..], &["--key-size", "256"]].concat());
    let passphrases: [&[u8]; 5] = [PASSPHRASE, b"second", b"third", b"fourth", b"fifth"];
    for (k, passphrase) in passphrases.iter().enumerate().skip(1) {
        let new = dir.join(&format!("pass{k}"));
        std::fs::write(&new, passphrase).unwrap();
        let iterations = if k == 4 { "2000" } else { "1000" };
        common::run(
            Command::new("cryptsetup")
                .args(["luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", iterations])
                .arg("--key-file")
                .arg(&key_file)
                .arg(&image)
                .arg(&new),
        );
    }
    let header = open_header(&image).unwrap();
    assert_eq!(header.metadata.keyslots().count(), 5);
    assert!(header.metadata.keyslots().all(|(_, k)| k.area.key_size == 32));
    let sha = qluks_hal::sha::ShaBackend::best() != qluks_hal::sha::ShaBackend::Portable;
    assert_eq!(qluks::crypto::pbkdf2_many_pays(qluks::crypto::HashAlg::Sha256, 32, 2), sha);
    let volume_key = dumped_volume_key(&image, &key_file);
    for (k, passphrase) in passphrases.iter().enumerate() {
        let (slot, key) = qluks_unlock(&image, passphrase, None).unwrap();
        assert_eq!((slot, &key), (k, &volume_key), "passphrase of keyslot {k}");
    }
    assert_eq!(qluks_unlock(&image, b"none of them", None).unwrap_err(), LuksError::WrongPassphrase);
}
