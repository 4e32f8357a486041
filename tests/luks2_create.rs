//! LUKS2 volumes created by qluks are accepted by cryptsetup: `luksDump` reads them,
//! `open --test-passphrase` unlocks them, the dumped volume key is qluks's, and data qluks
//! writes decrypts with cryptsetup's offline `reencrypt --decrypt` (detached header).

mod common;

use std::fs::{File, OpenOptions as FileOptions};
use std::path::Path;
use std::process::Command;

use qluks::crypto::{CipherSpec, HashAlg, OsRng};
use qluks::luks::luks2;
use qluks::luks::luks2::create::{format, CreateKdf, CreateParams};
use qluks::luks::{LuksVolume, OpenOptions};

const PASSPHRASE: &[u8] = b"made by qluks";

fn dumped_volume_key(image: &Path, key_file: &Path, header: Option<&Path>) -> Vec<u8> {
    let mut cmd = Command::new("cryptsetup");
    cmd.args(["luksDump", "--dump-volume-key", "--batch-mode", "--key-file"]).arg(key_file);
    if let Some(h) = header {
        cmd.arg("--header").arg(h);
    }
    let out = common::run(cmd.arg(image));
    let start = out.find("MK dump:").expect("MK dump") + "MK dump:".len();
    out[start..]
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|w| u8::from_str_radix(w, 16).unwrap())
        .collect()
}

fn check_created_volume_opens_in_cryptsetup(test: &str, params: CreateParams, memory_blocks: usize) {
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let image = dir.join("created.luks2");
    let key_file = dir.join("key");
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    let mut file = FileOptions::new().read(true).write(true).create(true).truncate(true).open(&image).unwrap();
    file.set_len(params.data_offset + (1 << 20)).unwrap();
    let mut memory = vec![0u8; 1024 * memory_blocks];
    let key = format(&mut file, &params, PASSPHRASE, &mut memory, &mut OsRng).unwrap();
    drop(file);

    let dump = common::run(Command::new("cryptsetup").arg("luksDump").arg(&image));
    assert!(dump.contains("Version:       \t2"), "{dump}");
    common::run(
        Command::new("cryptsetup").args(["open", "--test-passphrase", "--key-file"]).arg(&key_file).arg(&image),
    );
    assert_eq!(dumped_volume_key(&image, &key_file, None), key.as_bytes());

    // qluks reads its own metadata back and opens the volume.
    let mut volume = LuksVolume::open(
        File::open(&image).unwrap(),
        PASSPHRASE,
        OpenOptions { kdf_memory: Some(&mut memory), ..Default::default() },
    )
    .unwrap();
    assert_eq!(volume.segment().sector_size, params.sector_size as usize);
    assert_eq!(volume.size(), 1 << 20);
    let mut sector = [0u8; 512];
    volume.read_at(0, &mut sector).unwrap();
}

#[test]
fn created_pbkdf2_volume_opens_in_cryptsetup() {
    let params = CreateParams {
        kdf: CreateKdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1000 },
        digest_iterations: 1000,
        ..Default::default()
    };
    check_created_volume_opens_in_cryptsetup("created_pbkdf2_volume_opens_in_cryptsetup", params, 0);
}

#[test]
fn created_argon2id_aes128_cbc_essiv_volume_opens_in_cryptsetup() {
    let params = CreateParams {
        cipher: CipherSpec::parse_sized("aes-128-cbc-essiv:sha256").unwrap(),
        sector_size: 512,
        kdf: CreateKdf::Argon2id { time: 4, memory_kib: 64, cpus: 2 },
        digest_iterations: 1000,
        ..Default::default()
    };
    check_created_volume_opens_in_cryptsetup(
        "created_argon2id_aes128_cbc_essiv_volume_opens_in_cryptsetup",
        params,
        64,
    );
}

#[test]
fn data_written_to_a_created_detached_volume_decrypts_with_cryptsetup() {
    let test = "data_written_to_a_created_detached_volume_decrypts_with_cryptsetup";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let header = dir.join("header");
    let data = dir.join("data");
    let key_file = dir.join("key");
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    let params = CreateParams {
        kdf: CreateKdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1000 },
        digest_iterations: 1000,
        data_offset: 0,
        ..Default::default()
    };
    let mut header_file = FileOptions::new().read(true).write(true).create(true).truncate(true).open(&header).unwrap();
    header_file.set_len(luks2::create::DEFAULT_DATA_OFFSET).unwrap();
    let key = format(&mut header_file, &params, PASSPHRASE, &mut [], &mut OsRng).unwrap();
    assert_eq!(dumped_volume_key(&data, &key_file, Some(&header)), key.as_bytes());

    let plain = common::pattern(21, 1 << 20);
    std::fs::write(&data, vec![0u8; plain.len()]).unwrap();
    let mut json = vec![0u8; luks2::DEFAULT_JSON_BUFFER];
    let hdr = luks2::Luks2Header::read(&mut header_file, &mut json).unwrap();
    let segment = luks2::data_segment(&hdr.metadata, &key).unwrap();
    let data_file = FileOptions::new().read(true).write(true).open(&data).unwrap();
    let mut volume = LuksVolume::new(data_file, segment).unwrap();
    volume.write_at(0, &plain).unwrap();
    volume.flush().unwrap();
    drop(volume);

    common::run(
        Command::new("cryptsetup")
            .args(["reencrypt", "--decrypt", "--force-offline-reencrypt", "--batch-mode", "--key-file"])
            .arg(&key_file)
            .arg("--header")
            .arg(&header)
            .arg(&data),
    );
    assert!(std::fs::read(&data).unwrap() == plain, "cryptsetup's decryption differs from what qluks wrote");
}
