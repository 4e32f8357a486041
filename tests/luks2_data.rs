//! LUKS2 data: what cryptsetup encrypts (offline `reencrypt --encrypt` of a known plaintext)
//! qluks decrypts byte for byte, for 512- and 4096-byte sectors; what qluks writes,
//! cryptsetup's offline `reencrypt --decrypt` turns back into the expected plaintext.
//!
//! Offline recipes that work here without device-mapper (cryptsetup 2.6):
//! - in place, header in the file: `reencrypt --encrypt --type luks2 --reduce-device-size 2M
//!   FILE` shifts the data behind a new header (the last 2 MiB of the file are given up);
//! - detached header: `reencrypt --encrypt --type luks2 --header HDR FILE` (data offset 0).
//!   Only this form can be decrypted offline: `reencrypt --decrypt --header HDR
//!   --force-offline-reencrypt FILE` (LUKS2 decryption needs a detached header in 2.6).

mod common;

use std::fs::{File, OpenOptions as FileOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use qluks::luks::luks2;
use qluks::luks::{LuksVolume, OpenOptions};
use sha2::Digest as _;

const PASSPHRASE: &[u8] = b"data passphrase";
const PLAIN_LEN: usize = 1 << 20;
const REDUCE: usize = 2 << 20;

fn cryptsetup(args: &[&str], key_file: &Path, rest: &[&Path]) {
    let mut cmd = Command::new("cryptsetup");
    cmd.args(args).arg("--batch-mode").arg("--key-file").arg(key_file).args(rest);
    common::run(&mut cmd);
}

const FAST_KDF: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const SMALL_HEADER: [&str; 4] = ["--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m"];

/// A file of PLAIN_LEN known bytes encrypted in place (header in the file) by cryptsetup.
fn encrypt_in_place(dir: &common::TempDir, sector_size: &str) -> (std::path::PathBuf, Vec<u8>) {
    let plain = common::pattern(sector_size.len() as u64 + 7, PLAIN_LEN);
    let image = dir.join("volume.luks2");
    let mut content = plain.clone();
    content.resize(PLAIN_LEN + REDUCE, 0);
    std::fs::write(&image, &content).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    let mut args = vec!["reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size", "2M"];
    args.extend(["--sector-size", sector_size]);
    args.extend(FAST_KDF);
    args.extend(SMALL_HEADER);
    cryptsetup(&args, &key_file, &[&image]);
    (image, plain)
}

fn read_all(volume: &mut LuksVolume<File>, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    volume.read_at(0, &mut out).unwrap();
    out
}

fn check_reencrypted_data_decrypts(test: &str, sector_size: &str) {
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, plain) = encrypt_in_place(&dir, sector_size);
    let file = File::open(&image).unwrap();
    let mut volume = LuksVolume::open(file, PASSPHRASE, OpenOptions::default()).unwrap();
    assert_eq!(volume.segment().sector_size, sector_size.parse::<usize>().unwrap());
    assert!(volume.size() >= PLAIN_LEN as u64);
    assert!(read_all(&mut volume, PLAIN_LEN) == plain, "decrypted data differs from the plaintext");
    // Unaligned reads go through the partial-sector path.
    let mut piece = vec![0u8; 5000];
    volume.read_at(4095, &mut piece).unwrap();
    assert!(piece == plain[4095..4095 + 5000]);
}

#[test]
fn reencrypted_data_with_512_byte_sectors_decrypts_byte_for_byte() {
    check_reencrypted_data_decrypts("reencrypted_data_with_512_byte_sectors_decrypts_byte_for_byte", "512");
}

#[test]
fn reencrypted_data_with_4096_byte_sectors_decrypts_byte_for_byte() {
    check_reencrypted_data_decrypts("reencrypted_data_with_4096_byte_sectors_decrypts_byte_for_byte", "4096");
}

/// Rewrites the JSON text of both header copies with `edit` and re-checksums them (sha256).
fn edit_metadata(image: &Path, edit: impl Fn(&str) -> String) {
    let mut bytes = std::fs::read(image).unwrap();
    let hdr_size = u64::from_be_bytes(bytes[8..16].try_into().unwrap()) as usize;
    for at in [0, hdr_size] {
        let copy = &mut bytes[at..at + hdr_size];
        let json_len = copy[4096..].iter().position(|&b| b == 0).unwrap();
        let json = std::str::from_utf8(&copy[4096..4096 + json_len]).unwrap().to_owned();
        let edited = edit(&json);
        assert_eq!(edited.len(), json.len(), "edits keep the length");
        copy[4096..4096 + json_len].copy_from_slice(edited.as_bytes());
        copy[448..512].fill(0);
        let sum = sha2::Sha256::digest(&*copy);
        copy[448..480].copy_from_slice(&sum);
    }
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn iv_tweak_is_added_to_the_512_byte_iv_sector() {
    let test = "iv_tweak_is_added_to_the_512_byte_iv_sector";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let (image, plain) = encrypt_in_place(&dir, "4096");
    // Start the segment one 4096-byte sector later: its data keeps decrypting only if the IV
    // of the new first sector (iv_tweak + 0) is the old IV sector 8.
    let shift = 4096;
    edit_metadata(&image, |json| {
        let m = json.find(r#""segments":{"0":{"type":"crypt","offset":""#).unwrap();
        let start = m + r#""segments":{"0":{"type":"crypt","offset":""#.len();
        let end = start + json[start..].find('"').unwrap();
        let offset: u64 = json[start..end].parse().unwrap();
        let new_offset = format!("{}", offset + shift);
        assert_eq!(new_offset.len(), end - start, "same digit count in this layout");
        let out = format!("{}{}{}", &json[..start], new_offset, &json[end..]);
        out.replacen(r#""iv_tweak":"0""#, r#""iv_tweak":"8""#, 1)
    });
    let mut volume = LuksVolume::open(File::open(&image).unwrap(), PASSPHRASE, OpenOptions::default()).unwrap();
    assert_eq!(volume.segment().iv_tweak, 8);
    let len = PLAIN_LEN - shift as usize;
    assert!(read_all(&mut volume, len) == plain[shift as usize..], "iv_tweak shifts the IVs");
}

/// `data` (holding `plain`) encrypted by cryptsetup's offline `reencrypt --encrypt` with a
/// detached header; returns the paths of the header, the data and the key file.
fn encrypt_detached(dir: &common::TempDir, sector_size: &str, plain: &[u8]) -> (PathBuf, PathBuf, PathBuf) {
    let (header, data, key_file) = (dir.join("header"), dir.join("data"), dir.join("key"));
    std::fs::write(&key_file, PASSPHRASE).unwrap();
    std::fs::write(&data, plain).unwrap();
    let mut cmd = Command::new("cryptsetup");
    cmd.args(["reencrypt", "--encrypt", "--type", "luks2", "--sector-size", sector_size, "--batch-mode"])
        .args(FAST_KDF)
        .args(SMALL_HEADER)
        .arg("--key-file")
        .arg(&key_file)
        .arg("--header")
        .arg(&header)
        .arg(&data);
    common::run(&mut cmd);
    (header, data, key_file)
}

/// Unlocks the detached `header`, then opens the data device on its own.
fn open_detached(header: &Path, data: &Path) -> LuksVolume<File> {
    let mut header_file = File::open(header).unwrap();
    let mut json = vec![0u8; luks2::DEFAULT_JSON_BUFFER];
    let hdr = luks2::Luks2Header::read(&mut header_file, &mut json).unwrap();
    let mut memory = vec![0u8; hdr.metadata.kdf_memory() as usize];
    let (_, key) = luks2::unlock(&mut header_file, &hdr.metadata, PASSPHRASE, None, &mut memory).unwrap();
    let segment = luks2::data_segment(&hdr.metadata, &key).unwrap();
    let data_file = FileOptions::new().read(true).write(true).open(data).unwrap();
    LuksVolume::new(data_file, segment).unwrap()
}

/// cryptsetup's offline decryption of `data` (detached `header`) must give `expected`.
fn assert_cryptsetup_decrypts_to(key_file: &Path, header: &Path, data: &Path, expected: &[u8]) {
    let mut cmd = Command::new("cryptsetup");
    cmd.args(["reencrypt", "--decrypt", "--force-offline-reencrypt", "--batch-mode", "--key-file"])
        .arg(key_file)
        .arg("--header")
        .arg(header)
        .arg(data);
    common::run(&mut cmd);
    assert!(std::fs::read(data).unwrap() == expected, "cryptsetup's decryption differs from what qluks wrote");
}

#[test]
fn data_written_by_qluks_decrypts_with_cryptsetup() {
    let test = "data_written_by_qluks_decrypts_with_cryptsetup";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let mut expected = common::pattern(3, PLAIN_LEN);
    let (header, data, key_file) = encrypt_detached(&dir, "4096", &expected);

    // Detached header: unlock from the header file, then the data device on its own.
    let mut volume = open_detached(&header, &data);
    assert!(read_all(&mut volume, PLAIN_LEN) == expected);

    for (offset, len, seed) in [(1000usize, 10_000usize, 11u64), (65536, 8192, 12), (PLAIN_LEN - 100, 100, 13)] {
        let patch = common::pattern(seed, len);
        volume.write_at(offset as u64, &patch).unwrap();
        expected[offset..offset + len].copy_from_slice(&patch);
    }
    volume.flush().unwrap();
    drop(volume);
    assert_cryptsetup_decrypts_to(&key_file, &header, &data, &expected);
}

/// Long runs of sectors (one read or write of hundreds of sectors, so one hal batch call with
/// IV sectors stepping by sector_size / 512) at aligned and unaligned offsets: qluks reads what
/// cryptsetup encrypted, and cryptsetup decrypts what qluks wrote, byte for byte.
fn check_long_runs(test: &str, sector_size: &str) {
    if !common::tool(test, "cryptsetup") {
        return;
    }
    const LEN: usize = 4 << 20;
    let dir = common::TempDir::new(test);
    let mut expected = common::pattern(41 + sector_size.len() as u64, LEN);
    let (header, data, key_file) = encrypt_detached(&dir, sector_size, &expected);
    let mut volume = open_detached(&header, &data);
    assert_eq!(volume.segment().sector_size, sector_size.parse::<usize>().unwrap());

    // The whole volume in one read (1024 or 8192 sectors in one run), then pieces that start
    // and end anywhere.
    assert!(read_all(&mut volume, LEN) == expected, "one read of the whole volume");
    for (offset, len) in
        [(0, 4096 * 17), (4096 * 5, 4096 * 300), (4095, 4096 * 33 + 2), (1 << 20, 3 << 20), (777, 1_000_000)]
    {
        let mut piece = vec![0u8; len];
        volume.read_at(offset as u64, &mut piece).unwrap();
        assert!(piece == expected[offset..offset + len], "read {len} at {offset}");
    }

    // Long writes: in place (one encrypt of the aligned middle), and through the stack chunk.
    for (offset, len, seed, in_place) in
        [(4096 * 7 + 100, (1 << 20) + 3000, 51u64, true), (2 << 20, 200 * 1024, 52, false), (0, 4096 * 40, 53, true)]
    {
        let patch = common::pattern(seed, len);
        if in_place {
            volume.write_in_place(offset as u64, &mut patch.clone()).unwrap();
        } else {
            volume.write_at(offset as u64, &patch).unwrap();
        }
        expected[offset..offset + len].copy_from_slice(&patch);
    }
    assert!(read_all(&mut volume, LEN) == expected, "qluks reads back what it wrote");
    volume.flush().unwrap();
    drop(volume);
    assert_cryptsetup_decrypts_to(&key_file, &header, &data, &expected);
}

#[test]
fn long_runs_of_4096_byte_sectors_match_cryptsetup_both_ways() {
    check_long_runs("long_runs_of_4096_byte_sectors_match_cryptsetup_both_ways", "4096");
}

#[test]
fn long_runs_of_2048_byte_sectors_match_cryptsetup_both_ways() {
    check_long_runs("long_runs_of_2048_byte_sectors_match_cryptsetup_both_ways", "2048");
}

#[test]
fn long_runs_of_512_byte_sectors_match_cryptsetup_both_ways() {
    check_long_runs("long_runs_of_512_byte_sectors_match_cryptsetup_both_ways", "512");
}
