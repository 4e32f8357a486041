//! The LUKS1 variants qluks otherwise checks only against itself (ECB, AES-192, sha224/sha384
//! for PBKDF2 and the AF splitter) against outside tools:
//! - volumes made by `cryptsetup luksFormat --type luks1` unlock to the key `luksDump
//!   --dump-volume-key` prints, and payload written by an outside tool decrypts byte for byte
//!   (`openssl enc` for ECB, which QEMU cannot open; `qemu-io` for CBC);
//! - volumes made by qluks are accepted by cryptsetup (`luksDump` fields, `open
//!   --test-passphrase`, the same dumped key) and their payload decrypts in the outside tool;
//! - volumes made by `qemu-img create -f luks` (AES-192 XTS and CBC with sha224/sha384) read the
//!   same in qluks and QEMU both ways.

mod common;

use common::{run, tool, tools, TempDir};
use qluks::crypto::{CbcIv, CipherMode, CipherSpec, HashAlg, OsRng};
use qluks::luks::luks1::{self, CreateParams, Iterations};
use qluks::luks::{LuksVolume, OpenOptions};
use std::fs::{File, OpenOptions as FileOptions};
use std::path::Path;
use std::process::Command;

const PASS: &[u8] = b"variant pass";
/// Payload bytes of the test volumes.
const PAYLOAD: usize = 1 << 20;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cryptsetup(args: &[&str]) -> Command {
    let mut c = Command::new("cryptsetup");
    c.args(["--batch-mode"]).args(args);
    c
}

fn dumped_volume_key(img: &Path, key_file: &Path) -> Vec<u8> {
    let out = run(cryptsetup(&["luksDump", "--dump-volume-key", "--key-file"]).arg(key_file).arg(img));
    let at = out.find("MK dump:").expect("MK dump in luksDump output");
    let mut key = Vec::new();
    for (i, line) in out[at + "MK dump:".len()..].lines().enumerate() {
        if i > 0 && !line.starts_with('\t') {
            break;
        }
        key.extend(line.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()));
    }
    key
}

/// `field:` of `cryptsetup luksDump` (LUKS1 layout: name, colon, tabs/spaces, value).
fn dump_field(dump: &str, field: &str) -> String {
    let line =
        dump.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("{field} in {dump}"));
    line[field.len() + 1..].trim().to_string()
}

fn open_volume(img: &Path) -> LuksVolume<File> {
    let f = FileOptions::new().read(true).write(true).open(img).unwrap();
    LuksVolume::open(f, PASS, OpenOptions::default()).unwrap()
}

fn qluks_plaintext(img: &Path) -> Vec<u8> {
    let mut vol = open_volume(img);
    let mut all = vec![0u8; vol.size() as usize];
    vol.read_at(0, &mut all).unwrap();
    all
}

/// `openssl enc -aes-N-ecb -nopad` over `data` with `key` (`decrypt`: `-d`).
fn openssl_ecb(dir: &TempDir, key: &[u8], data: &[u8], decrypt: bool) -> Vec<u8> {
    let (input, output) = (dir.join("ecb.in"), dir.join("ecb.out"));
    std::fs::write(&input, data).unwrap();
    let mut c = Command::new("openssl");
    c.args(["enc", &format!("-aes-{}-ecb", key.len() * 8), "-nopad", "-K", &hex(key)]);
    if decrypt {
        c.arg("-d");
    }
    run(c.arg("-in").arg(&input).arg("-out").arg(&output));
    std::fs::read(output).unwrap()
}

fn secret_file(dir: &TempDir) -> std::path::PathBuf {
    let p = dir.join("pass");
    std::fs::write(&p, PASS).unwrap();
    p
}

fn image_opts(img: &Path) -> String {
    format!("driver=luks,key-secret=sec0,file.filename={}", img.display())
}

fn qemu_io(pass: &Path, img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["--object", &format!("secret,id=sec0,file={}", pass.display()), "--image-opts", &image_opts(img)]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = run(&mut c);
    assert!(!out.contains("failed"), "qemu-io: {out}");
}

/// The plaintext of the whole volume as QEMU sees it.
fn qemu_plaintext(dir: &TempDir, pass: &Path, img: &Path) -> Vec<u8> {
    let raw = dir.join("qemu-view.raw");
    run(Command::new("qemu-img")
        .args(["convert", "--object", &format!("secret,id=sec0,file={}", pass.display()), "--image-opts"])
        .arg(image_opts(img))
        .args(["-O", "raw"])
        .arg(&raw));
    std::fs::read(raw).unwrap()
}

/// The payload (ciphertext) of a LUKS1 volume file.
fn payload(img: &Path) -> (u64, Vec<u8>) {
    let mut f = File::open(img).unwrap();
    let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    let at = header.payload_offset_bytes();
    (at, std::fs::read(img).unwrap()[at as usize..].to_vec())
}

/// cryptsetup's (cipher, mode, key bits, hash) of each variant.
const CRYPTSETUP_VARIANTS: [(&str, &str, usize, HashAlg); 6] = [
    ("aes", "ecb", 128, HashAlg::Sha224),
    ("aes", "ecb", 192, HashAlg::Sha384),
    ("aes", "ecb", 256, HashAlg::Sha224),
    ("aes", "cbc-plain64", 192, HashAlg::Sha224),
    ("aes", "cbc-essiv:sha256", 192, HashAlg::Sha384),
    ("aes", "cbc-plain", 192, HashAlg::Sha384),
];

/// Sectors the CBC check encrypts and decrypts with openssl: the first, ones past 255 and
/// 65535 (where the IV's byte order shows) and the last.
const CBC_SECTORS: [u64; 5] = [0, 1, 300, 1000, (PAYLOAD / 512 - 1) as u64];

/// The CBC IVs of `sectors`, computed outside qluks: the sector number as LE32 (`plain`) or
/// LE64 (`plain64`), or for ESSIV that block encrypted (`openssl enc -aes-256-ecb`) under the
/// SHA-256 of the volume key (`openssl dgst -sha256`).
fn cbc_ivs(dir: &TempDir, iv: CbcIv, key: &[u8], sectors: &[u64]) -> Vec<[u8; 16]> {
    let blocks: Vec<[u8; 16]> = sectors
        .iter()
        .map(|&s| {
            let mut b = [0u8; 16];
            match iv {
                CbcIv::Plain => b[..4].copy_from_slice(&(s as u32).to_le_bytes()),
                CbcIv::Plain64 | CbcIv::Essiv(_) => b[..8].copy_from_slice(&s.to_le_bytes()),
            }
            b
        })
        .collect();
    let CbcIv::Essiv(hash) = iv else { return blocks };
    assert_eq!(hash, HashAlg::Sha256, "the test computes ESSIV with sha256 only");
    let key_file = dir.join("essiv.key");
    std::fs::write(&key_file, key).unwrap();
    let salt = run(Command::new("openssl").args(["dgst", "-sha256", "-r"]).arg(&key_file));
    let salt = salt.split_whitespace().next().unwrap().to_string();
    let (input, output) = (dir.join("essiv.in"), dir.join("essiv.out"));
    std::fs::write(&input, blocks.concat()).unwrap();
    run(Command::new("openssl")
        .args(["enc", "-aes-256-ecb", "-nopad", "-K", &salt, "-in"])
        .arg(&input)
        .arg("-out")
        .arg(&output));
    std::fs::read(output).unwrap().chunks(16).map(|c| c.try_into().unwrap()).collect()
}

/// One 512-byte sector through `openssl enc -aes-N-cbc -nopad` with `iv`.
fn openssl_cbc_sector(dir: &TempDir, key: &[u8], iv: &[u8; 16], data: &[u8], decrypt: bool) -> Vec<u8> {
    let (input, output) = (dir.join("cbc.in"), dir.join("cbc.out"));
    std::fs::write(&input, data).unwrap();
    let mut c = Command::new("openssl");
    c.args(["enc", &format!("-aes-{}-cbc", key.len() * 8), "-nopad", "-K", &hex(key), "-iv", &hex(iv)]);
    if decrypt {
        c.arg("-d");
    }
    run(c.arg("-in").arg(&input).arg("-out").arg(&output));
    std::fs::read(output).unwrap()
}

/// Replaces the payload of `img` (after its header) with `cipher`.
fn set_payload(img: &Path, at: u64, offset: usize, cipher: &[u8]) {
    let mut bytes = std::fs::read(img).unwrap();
    bytes[at as usize + offset..at as usize + offset + cipher.len()].copy_from_slice(cipher);
    std::fs::write(img, &bytes).unwrap();
}

/// Checks that the payload of `img` as qluks reads it is what an outside tool computes, and
/// that what qluks writes is what the outside tool decrypts: `openssl enc` with the volume key
/// `key` (given by cryptsetup) for ECB and CBC, QEMU for XTS or when there is no `key`.
fn check_payload_against_outside_tool(dir: &TempDir, pass: &Path, img: &Path, key: Option<&[u8]>, what: &str) {
    let mut f = File::open(img).unwrap();
    let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
    drop(f);
    let at = header.payload_offset_bytes();
    match (header.cipher.mode, key) {
        (CipherMode::Ecb, Some(key)) => {
            // Outside ciphertext in, plaintext out.
            let plain = common::pattern(11, PAYLOAD);
            let cipher = openssl_ecb(dir, key, &plain, false);
            assert_ne!(cipher, plain);
            set_payload(img, at, 0, &cipher);
            assert!(qluks_plaintext(img) == plain, "{what}: qluks does not decrypt openssl's ECB ciphertext");
            // qluks ciphertext in, openssl's plaintext out (unaligned, across sectors).
            let data = common::pattern(12, 70_001);
            open_volume(img).write_at(4097, &data).unwrap();
            let mut expected = plain;
            expected[4097..4097 + data.len()].copy_from_slice(&data);
            let (_, cipher) = payload(img);
            assert!(openssl_ecb(dir, key, &cipher, true) == expected, "{what}: openssl does not decrypt qluks's ECB");
        }
        (CipherMode::Cbc(iv), Some(key)) => {
            let ivs = cbc_ivs(dir, iv, key, &CBC_SECTORS);
            // Sectors encrypted by openssl decrypt in qluks.
            let plain = common::pattern(14, PAYLOAD);
            for (&s, iv) in CBC_SECTORS.iter().zip(&ivs) {
                let sector = &plain[s as usize * 512..][..512];
                let cipher = openssl_cbc_sector(dir, key, iv, sector, false);
                set_payload(img, at, s as usize * 512, &cipher);
            }
            let mut vol = open_volume(img);
            for &s in &CBC_SECTORS {
                let mut back = [0u8; 512];
                vol.read_at(s * 512, &mut back).unwrap();
                assert!(back[..] == plain[s as usize * 512..][..512], "{what}: sector {s} of openssl's CBC");
            }
            // Sectors qluks writes (whole, then a piece straddling two sectors) decrypt in openssl.
            let mut expected = common::pattern(15, PAYLOAD);
            for &s in &CBC_SECTORS {
                vol.write_at(s * 512, &expected[s as usize * 512..][..512]).unwrap();
            }
            let piece = common::pattern(16, 100);
            vol.write_at(512 - 40, &piece).unwrap();
            expected[512 - 40..512 + 60].copy_from_slice(&piece);
            drop(vol);
            let (_, cipher) = payload(img);
            for (&s, iv) in CBC_SECTORS.iter().zip(&ivs) {
                let sector = &cipher[s as usize * 512..][..512];
                let back = openssl_cbc_sector(dir, key, iv, sector, true);
                assert!(back[..] == expected[s as usize * 512..][..512], "{what}: openssl decrypts sector {s}");
            }
        }
        (CipherMode::Xts(_), _) | (_, None) => {
            qemu_io(pass, img, &["write -P 0xab 0 64k", "write -P 0x5c 300000 12345", "write -P 0x01 1048064 512"]);
            let ours = qluks_plaintext(img);
            assert!(ours[..65536].iter().all(|&b| b == 0xab), "{what}");
            assert!(ours[300000..312345].iter().all(|&b| b == 0x5c), "{what}");
            assert!(ours == qemu_plaintext(dir, pass, img), "{what}: qluks and qemu disagree on the plaintext");
            let data = common::pattern(13, 70_001);
            open_volume(img).write_at(4097, &data).unwrap();
            let theirs = qemu_plaintext(dir, pass, img);
            assert_eq!(theirs[4097..4097 + data.len()], data[..], "{what}: qemu does not read qluks's data");
            assert!(theirs == qluks_plaintext(img), "{what}");
        }
    }
}

#[test]
fn cryptsetup_made_variants_unlock_to_the_dumped_key_and_decrypt_outside_data() {
    let t = "cryptsetup_luks1_variants";
    if !tools(t, &["cryptsetup", "openssl", "qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pass = secret_file(&dir);
    for (cipher, mode, bits, hash) in CRYPTSETUP_VARIANTS {
        let what = format!("{cipher}-{mode} {bits} {hash}");
        let img = dir.join("cs.img");
        File::create(&img).unwrap().set_len(8 << 20).unwrap();
        run(cryptsetup(&["luksFormat", "--type", "luks1", "--pbkdf-force-iterations", "1000"])
            .args(["--cipher", &format!("{cipher}-{mode}"), "--key-size", &bits.to_string(), "--hash", hash.name()])
            .arg("--key-file")
            .arg(&pass)
            .arg(&img));
        let mut f = FileOptions::new().read(true).write(true).open(&img).unwrap();
        let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
        f.set_len(header.payload_offset_bytes() + PAYLOAD as u64).unwrap();
        assert_eq!(header.cipher, CipherSpec::parse(cipher, mode, bits / 8).unwrap(), "{what}");
        assert_eq!(header.hash, hash, "{what}");
        let key = luks1::unlock(&mut f, 0, None, &header, PASS).unwrap();
        let dumped = dumped_volume_key(&img, &pass);
        assert_eq!(dumped.len(), bits / 8);
        assert_eq!(key.as_bytes(), &dumped[..], "{what}: qluks unlocks to another key than cryptsetup's");
        drop(f);
        assert_eq!(open_volume(&img).size(), PAYLOAD as u64, "{what}");
        check_payload_against_outside_tool(&dir, &pass, &img, Some(&dumped), &what);
    }
}

#[test]
fn qluks_made_variants_are_accepted_by_cryptsetup_and_decrypt_in_outside_tools() {
    let t = "qluks_luks1_variants";
    if !tools(t, &["cryptsetup", "openssl", "qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pass = secret_file(&dir);
    for (cipher, mode, bits, hash) in CRYPTSETUP_VARIANTS {
        let what = format!("{cipher}-{mode} {bits} {hash}");
        let img = dir.join("q.img");
        let spec = CipherSpec::parse(cipher, mode, bits / 8).unwrap();
        let mut f = FileOptions::new().read(true).write(true).create(true).truncate(true).open(&img).unwrap();
        let mut params = CreateParams { cipher: spec, hash, iterations: Iterations::fixed(1000) };
        let (header, key) = luks1::format(&mut f, 0, &mut params, PASS, &mut OsRng).unwrap();
        f.set_len(header.payload_offset_bytes() + PAYLOAD as u64).unwrap();
        drop(f);
        let dump = run(cryptsetup(&["luksDump"]).arg(&img));
        assert_eq!(dump_field(&dump, "Version"), "1", "{what}");
        assert_eq!(dump_field(&dump, "Cipher name"), cipher, "{what}");
        assert_eq!(dump_field(&dump, "Cipher mode"), mode, "{what}");
        assert_eq!(dump_field(&dump, "Hash spec"), hash.name(), "{what}");
        assert_eq!(dump_field(&dump, "MK bits"), bits.to_string(), "{what}");
        assert_eq!(dump_field(&dump, "MK iterations"), header.mk_iterations.to_string(), "{what}");
        assert_eq!(dump_field(&dump, "Payload offset"), header.payload_offset.to_string(), "{what}");
        let ok = common::output(cryptsetup(&["open", "--test-passphrase", "--key-file"]).arg(&pass).arg(&img));
        assert!(ok.status.success(), "{what}: cryptsetup refuses the passphrase: {ok:?}");
        let dumped = dumped_volume_key(&img, &pass);
        assert_eq!(key.as_bytes(), &dumped[..], "{what}: cryptsetup unlocks to another key");
        check_payload_against_outside_tool(&dir, &pass, &img, Some(&dumped), &what);
    }
}

#[test]
fn qemu_made_aes_192_and_sha224_sha384_volumes_read_the_same_both_ways() {
    let t = "qemu_luks1_variants";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pass = secret_file(&dir);
    // QEMU 10 aborts on LUKS1 volumes with 192-bit CBC or ECB keys (their 96000 bytes of key
    // material are not whole sectors), so AES-192 is XTS here; cryptsetup 2.6 here cannot
    // open XTS with a 384-bit key, so it checks the CBC volumes only.
    for (opts, spec, hash, cryptsetup) in [
        ("cipher-alg=aes-192,cipher-mode=xts,hash-alg=sha224", "aes-192-xts-plain64", HashAlg::Sha224, false),
        ("cipher-alg=aes-192,cipher-mode=xts,hash-alg=sha384", "aes-192-xts-plain64", HashAlg::Sha384, false),
        (
            "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=plain64,hash-alg=sha384",
            "aes-256-cbc-plain64",
            HashAlg::Sha384,
            true,
        ),
        (
            "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha224",
            "aes-128-cbc-essiv:sha256",
            HashAlg::Sha224,
            true,
        ),
    ] {
        let img = dir.join("v.luks");
        let _ = std::fs::remove_file(&img);
        let o = format!("key-secret=sec0,iter-time=10,{opts}");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "luks", "--object", &format!("secret,id=sec0,file={}", pass.display())])
            .args(["-o", &o])
            .arg(&img)
            .arg(PAYLOAD.to_string()));
        let mut f = File::open(&img).unwrap();
        let header = luks1::Luks1Header::read(&mut f, 0).unwrap();
        assert_eq!(header.cipher, CipherSpec::parse_sized(spec).unwrap(), "{opts}");
        assert_eq!(header.hash, hash, "{opts}");
        drop(f);
        check_payload_against_outside_tool(&dir, &pass, &img, None, opts);
        if cryptsetup && tool(t, "cryptsetup") {
            // The key qluks unlocks is cryptsetup's too.
            let mut f = File::open(&img).unwrap();
            let key = luks1::unlock(&mut f, 0, None, &header, PASS).unwrap();
            assert_eq!(key.as_bytes(), &dumped_volume_key(&img, &pass)[..], "{opts}");
        }
    }
}

#[test]
fn qluks_made_aes_192_xts_volumes_with_sha224_sha384_read_the_same_in_qemu() {
    let t = "qluks_xts192_qemu";
    if !tools(t, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = TempDir::new(t);
    let pass = secret_file(&dir);
    for hash in [HashAlg::Sha224, HashAlg::Sha384] {
        let img = dir.join("x.luks");
        let spec = CipherSpec::parse_sized("aes-192-xts-plain64").unwrap();
        let mut f = FileOptions::new().read(true).write(true).create(true).truncate(true).open(&img).unwrap();
        let mut params = CreateParams { cipher: spec, hash, iterations: Iterations::fixed(1000) };
        let (header, _) = luks1::format(&mut f, 0, &mut params, PASS, &mut OsRng).unwrap();
        f.set_len(header.payload_offset_bytes() + PAYLOAD as u64).unwrap();
        drop(f);
        // QEMU's view of the header (its keyslot PBKDF2 and AF with this hash open the volume).
        let info = run(Command::new("qemu-img").args(["info", "--output", "json"]).arg(&img));
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        let data = &info["format-specific"]["data"];
        assert_eq!((data["cipher-alg"].as_str(), data["hash-alg"].as_str()), (Some("aes-192"), Some(hash.name())));
        check_payload_against_outside_tool(&dir, &pass, &img, None, &format!("qluks aes-192-xts {hash}"));
    }
}
