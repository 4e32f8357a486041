//! LUKS volumes over a device that moves only whole aligned blocks (a firmware block driver):
//! the engine reads its headers, key material and data in whole aligned blocks
//! (`BlockIo::block_size()` / `io_align()`), so cryptsetup's LUKS2 (512- and 4096-byte
//! sectors) and QEMU's LUKS1 open and read through 512- and 4096-byte-block devices, odd
//! offsets included, with the same plaintext as through a file.
mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use common::blocks::Blocks;
use qluks::io::BlockIo;
use qluks::luks::{LuksVolume, OpenOptions};

const PASSPHRASE: &[u8] = b"block passphrase";
const PLAIN_LEN: usize = 1 << 20;

/// Reads through `volume` at offsets that split sectors and blocks, and all of the first MiB.
fn reads<I: BlockIo>(volume: &mut LuksVolume<I>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (offset, len) in [(0u64, PLAIN_LEN), (1, 511), (4095, 5000), (65_537, 70_000), (PLAIN_LEN as u64 - 3, 3)] {
        let mut buf = vec![0u8; len];
        volume.read_at(offset, &mut buf).unwrap();
        out.push(buf);
    }
    out
}

fn check<const BLOCK: u64>(image: &Path, plain: &[u8]) {
    let mut by_file = LuksVolume::open(File::open(image).unwrap(), PASSPHRASE, OpenOptions::default()).unwrap();
    let expected = reads(&mut by_file);
    assert!(expected[0] == plain, "{}: the file path itself decrypts wrongly", image.display());
    let mut by_blocks = LuksVolume::open(Blocks::<BLOCK>::open(image), PASSPHRASE, OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: open through {BLOCK}-byte blocks: {e}", image.display()));
    assert!(reads(&mut by_blocks) == expected, "{}: {BLOCK}-byte-block reads differ", image.display());
    assert!(by_blocks.io_mut().requests > 0);
}

#[test]
fn cryptsetup_luks2_reads_through_whole_blocks() {
    const TEST: &str = "cryptsetup_luks2_reads_through_whole_blocks";
    if !common::tool(TEST, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let key = dir.join("key");
    std::fs::write(&key, PASSPHRASE).unwrap();
    for sector_size in ["512", "4096"] {
        let plain = common::pattern(sector_size.len() as u64, PLAIN_LEN);
        let image = dir.join(&format!("v{sector_size}.luks2"));
        let mut content = plain.clone();
        content.resize(PLAIN_LEN + (2 << 20), 0);
        std::fs::write(&image, &content).unwrap();
        common::run(
            Command::new("cryptsetup")
                .args(["reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size", "2M", "--batch-mode"])
                .args(["--sector-size", sector_size, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
                .args(["--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m", "--key-file"])
                .arg(&key)
                .arg(&image),
        );
        check::<512>(&image, &plain);
        check::<4096>(&image, &plain);
    }
}

#[test]
fn qemu_luks1_reads_through_whole_blocks() {
    const TEST: &str = "qemu_luks1_reads_through_whole_blocks";
    if !common::tools(TEST, &["qemu-img"]) {
        return;
    }
    let dir = common::TempDir::new(TEST);
    let plain = common::pattern(1, PLAIN_LEN);
    let raw = dir.join("plain.raw");
    std::fs::write(&raw, &plain).unwrap();
    let image = dir.join("v.luks");
    let secret = format!("secret,id=s0,data={}", std::str::from_utf8(PASSPHRASE).unwrap());
    common::run(
        Command::new("qemu-img")
            .args(["convert", "-q", "--object", &secret, "-f", "raw", "-O", "luks"])
            .args(["-o", "key-secret=s0,iter-time=10"])
            .arg(&raw)
            .arg(&image),
    );
    check::<512>(&image, &plain);
    check::<4096>(&image, &plain);
}
