//! `qluks convert -O qcow2 [-o OPTIONS] SRC DST`: the plaintext of any image qluks reads (raw,
//! LUKS, qcow2 with its backing chain, qcow) into a new qcow2 image, created with qemu-img's
//! `-o` option names (`cluster_size`, `encrypt.format=luks`, `encrypt.cipher-alg`, ...).
//!
//! An encrypted output (`-o encrypt.format=luks`) takes its passphrase from
//! `--target-passphrase-file FILE` or `--target-passphrase-env VAR` (or a prompt, twice;
//! or from the `--object secret` that `-o encrypt.key-secret=ID` names); the
//! source's passphrase is `--passphrase-file` as everywhere else. It gets a new master key: a
//! LUKS qcow2 converted this way is re-encrypted under a new key and passphrase.
//!
//! The copy: a reader thread reads (and decrypts) the source in 4 MiB pieces, skipping what
//! its allocation map says reads as zero; this thread writes each piece's non-zero clusters
//! through the qcow2 write engine (contiguous clusters: one batch encrypt, one `write_at`). The
//! output stays sparse, as qemu-img keeps it: zero clusters are never written. One flush at the
//! end.
use std::error::Error;
use std::path::Path;
use std::sync::mpsc;

use qluks::qcow2::file_resolver::{BackingPolicy, FileResolver};

use crate::image_open::{open_chain_writable, ChainArgs, Qcow2Disk};
use crate::open::{Disk, MapEntry};
use crate::secret::{NewSecretArgs, Passphrase, SecretArgs};

/// Bytes read per piece.
const CHUNK: usize = 4 << 20;
/// Pieces in flight between the reader and the writer.
const BUFFERS: usize = 4;

/// What the output is made of.
pub struct Target<'a> {
    /// The `-o` options.
    pub options: Option<&'a str>,
    /// Where the passphrase of an encrypted output comes from.
    pub secret: &'a NewSecretArgs,
    /// The passphrase `-o encrypt.key-secret=ID` named (before `secret`).
    pub key: Option<Passphrase>,
}

/// Runs `qluks convert -O qcow2`.
pub fn run(
    src: &Path,
    dst: &Path,
    secret: &SecretArgs,
    chain: &ChainArgs,
    target: &Target<'_>,
    progress: crate::progress::Progress,
) -> Result<(), Box<dyn Error>> {
    let options = crate::cmd::create::qcow2::parse_options(target.options)?;
    if options.help {
        print!("{}", crate::cmd::create::qcow2::HELP);
        return Ok(());
    }
    if options.backing_file.is_some() || options.backing_fmt.is_some() {
        return Err("convert -O qcow2: the output holds the whole content; backing_file is not supported".into());
    }
    let given = target.secret.new_passphrase_file.is_some() || target.secret.new_passphrase_env.is_some();
    if options.encrypt.is_none() && given {
        return Err("--target-passphrase-* given, but the output is not encrypted (-o encrypt.format=luks)".into());
    }
    let mut source = crate::open::open_with_chain(src, false, secret, chain)?;
    // qemu-img convert rounds the size up to whole sectors.
    let size = source.size().checked_next_multiple_of(512).ok_or("image size too large")?;
    let map = source.map()?;
    let name = dst.display();
    options.check(size).map_err(|e| format!("{name}: {e}"))?;
    let passphrase = match (&options.encrypt, &target.key) {
        (Some(_), Some(key)) => Some(key.clone()),
        (Some(_), None) => Some(target.secret.get()?),
        (None, _) => None,
    };
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(|e| format!("{name}: {e}"))?;
    if let Err(e) = options.create(&mut file, size, passphrase.as_ref().map(|p| p.as_slice())) {
        drop(file);
        let _ = std::fs::remove_file(dst);
        return Err(format!("{name}: {e}").into());
    }
    drop(file);
    let mut out = open_output(dst, passphrase.as_ref())?;
    drop(passphrase);
    copy(source, map, &mut out, options.cluster_size, &progress, src, dst)?;
    out.flush().map_err(|e| format!("{name}: flush: {e}"))?;
    Ok(())
}

/// Opens the image just created, read-write, unlocked with `passphrase`.
pub fn open_output(dst: &Path, passphrase: Option<&Passphrase>) -> Result<Qcow2Disk, Box<dyn Error>> {
    let mut r = FileResolver::with_policy(dst, BackingPolicy::new()).map_err(|e| format!("{}: {e}", dst.display()))?;
    if let Some(p) = passphrase {
        r.set_passphrase(0, p);
    }
    // The keyslot was made here, at the cost the options asked for.
    r.set_kdf_limits(qluks::luks::KdfLimits { pbkdf2_iterations: u32::MAX, ..qluks::luks::KdfLimits::DEFAULT });
    Ok(Qcow2Disk::from_writable_chain(open_chain_writable(dst, r)?))
}

/// Whether `bytes` are all zero (vectorizes: no early exit inside a 64-byte block).
fn is_zero(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    let tail = blocks.remainder().iter().fold(0, |a, &b| a | b);
    tail == 0 && blocks.all(|c| c.iter().fold(0, |a, &b| a | b) == 0)
}

/// Writes the parts of `buf` (guest bytes at `offset`) that are not zero, in runs of whole
/// `grain`-aligned pieces: a fresh image without a backing file reads as zero elsewhere.
pub fn write_nonzero(out: &mut dyn Disk, offset: u64, buf: &mut [u8], grain: u64) -> Result<(), Box<dyn Error>> {
    let end = offset + buf.len() as u64;
    let mut run: Option<u64> = None;
    let mut at = offset;
    while at < end {
        let next = (at / grain + 1).saturating_mul(grain).min(end);
        let piece = &buf[(at - offset) as usize..(next - offset) as usize];
        let zero = is_zero(piece);
        match (run, zero) {
            (None, false) => run = Some(at),
            (Some(start), true) => {
                out.write_at(start, &mut buf[(start - offset) as usize..(at - offset) as usize])?;
                run = None;
            }
            _ => {}
        }
        at = next;
    }
    if let Some(start) = run {
        out.write_at(start, &mut buf[(start - offset) as usize..])?;
    }
    Ok(())
}

/// Copies the guest bytes of `source` that may not be zero into `out`.
fn copy(
    mut source: Box<dyn Disk>,
    map: Option<Vec<MapEntry>>,
    out: &mut Qcow2Disk,
    grain: u64,
    progress: &crate::progress::Progress,
    src: &Path,
    dst: &Path,
) -> Result<(), Box<dyn Error>> {
    let size = source.size();
    let ranges: Vec<(u64, u64)> = match map {
        Some(map) => map.iter().filter(|m| !m.zero).map(|m| (m.start, m.length)).collect(),
        None => vec![(0, size)],
    };
    std::thread::scope(|s| -> Result<(), Box<dyn Error>> {
        let (to_writer, from_reader) = mpsc::sync_channel::<(u64, Vec<u8>, usize)>(BUFFERS - 1);
        let (to_reader, free) = mpsc::channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            to_reader.send(vec![0u8; CHUNK])?;
        }
        let reader = s.spawn(move || -> Result<(), String> {
            for (start, length) in ranges {
                let end = start + length;
                let mut at = start;
                while at < end {
                    let n = ((end - at) as usize).min(CHUNK);
                    // The writer stopped (its error is reported): stop too.
                    let Ok(mut buf) = free.recv() else { return Ok(()) };
                    source.read_at(at, &mut buf[..n]).map_err(|e| format!("at offset {at}: {e}"))?;
                    if to_writer.send((at, buf, n)).is_err() {
                        return Ok(());
                    }
                    at += n as u64;
                }
            }
            Ok(())
        });
        let mut written = Ok(());
        while let Ok((at, mut buf, n)) = from_reader.recv() {
            written = write_nonzero(out, at, &mut buf[..n], grain)
                .map_err(|e| format!("{}: at offset {at}: {e}", dst.display()));
            if written.is_err() {
                break;
            }
            progress.set(at + n as u64, size);
            let _ = to_reader.send(buf);
        }
        drop(from_reader);
        drop(to_reader);
        let read = reader.join().map_err(|_| "the reader thread panicked")?;
        progress.finish();
        read.map_err(|e| format!("{}: {e}", src.display()))?;
        written?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_every_byte() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            let mut b = vec![0u8; len];
            assert!(is_zero(&b));
            for i in 0..len {
                b[i] = 1;
                assert!(!is_zero(&b), "len {len}, byte {i}");
                b[i] = 0;
            }
        }
    }
}
