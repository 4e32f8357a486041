//! The two jobs: A, a LUKS2 partition of a GPT disk; B, a LUKS qcow2 chain of ESP files.

use core::cell::UnsafeCell;
use core::fmt;

use qluks::io::BlockIo;
use qluks::luks::luks2::{self, Luks2Header};
use qluks::luks::{KdfLimits, LuksVolume};
use qluks::qcow2::backing::{Chain, Layer};
use sha2::{Digest, Sha256};
use uefi::println;
use zeroize::Zeroize;

use crate::args::{Args, Partition};
use crate::console;
use crate::esp::{EspFile, Folder};
use crate::pages::Pages;
use crate::platform::Clock;
use crate::{Hex, Millis, Rate};

/// Cached 4 KiB table slices per qcow2 layer.
const CACHE_SLICES: usize = 16;
/// Layers at most.
const DEPTH: usize = 4;
/// Reads are issued in pieces of this size.
const CHUNK: usize = 1 << 20;
/// The largest LUKS2 header (binary header and JSON area).
const MAX_JSON: usize = (4 << 20) - 4096;

type EspChain = Chain<EspFile, CACHE_SLICES, DEPTH>;

/// A value in `.bss` (large: it must not live on the firmware's stack), lent out once.
struct StaticCell<T> {
    value: UnsafeCell<T>,
    taken: core::sync::atomic::AtomicBool,
}

// SAFETY: a UEFI application runs on one processor (it starts no others), and `take` lends the
// value out at most once.
unsafe impl<T> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    const fn new(value: T) -> Self {
        StaticCell { value: UnsafeCell::new(value), taken: core::sync::atomic::AtomicBool::new(false) }
    }

    #[allow(clippy::mut_from_ref)] // unique: the flag lets the reference out only once
    fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, core::sync::atomic::Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag was clear, so no other reference exists or will.
        Some(unsafe { &mut *self.value.get() })
    }
}

static CHAIN: StaticCell<EspChain> = StaticCell::new(EspChain::new_empty());
static HEADER: StaticCell<Luks2Header> = StaticCell::new(Luks2Header::EMPTY);

/// Why a job stopped (already printed in detail).
pub struct Failed;

fn fail(what: &str, error: impl fmt::Display) -> Failed {
    println!("ERROR: {what}: {error}");
    Failed
}

/// A passphrase from the load options, else from the console.
struct Secret {
    buf: [u8; 256],
    len: usize,
}

impl Secret {
    fn get(given: Option<&[u8]>, prompt: &str) -> Result<Secret, Failed> {
        let mut s = Secret { buf: [0; 256], len: 0 };
        match given {
            Some(p) => {
                if p.len() > s.buf.len() {
                    return Err(fail("passphrase", "longer than 256 bytes"));
                }
                s.buf[..p.len()].copy_from_slice(p);
                s.len = p.len();
            }
            None => {
                s.len = console::read_secret(prompt, &mut s.buf).ok_or_else(|| fail("passphrase", "not entered"))?
            }
        }
        Ok(s)
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// Reads `length` bytes at `offset` through `read` in pieces, hashes them; prints the time.
fn hash_range<E: fmt::Display>(
    clock: &Clock,
    offset: u64,
    length: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<[u8; 32], Failed> {
    let mut buffer = Pages::allocate(CHUNK).map_err(|e| fail("AllocatePages(read buffer)", e.status()))?;
    let buffer = buffer.as_mut_slice();
    let mut hasher = Sha256::new();
    let (mut read_us, mut hash_us, mut done) = (0, 0, 0u64);
    while done < length {
        let n = (length - done).min(CHUNK as u64) as usize;
        let t = clock.now();
        read(offset + done, &mut buffer[..n]).map_err(|e| fail("read", e))?;
        read_us += clock.us_since(t);
        let t = clock.now();
        hasher.update(&buffer[..n]);
        hash_us += clock.us_since(t);
        done += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    println!("read time: {} ({length} bytes at {offset:#x}, {})", Millis(read_us), Rate(length, read_us));
    println!("hash time: {} ({})", Millis(hash_us), Rate(length, hash_us));
    println!("sha256: {}", Hex(&digest));
    Ok(digest)
}

/// Job A: the LUKS2 partition.
pub fn luks2_partition(args: &Args<'_>, clock: &Clock) -> Result<[u8; 32], Failed> {
    let want = args.partition.ok_or_else(|| fail("arguments", "no partition named"))?;
    let (mut window, found) = crate::gpt::find_partition(want).map_err(|e| fail("GPT", e))?;
    match want {
        Partition::Guid(_) => {}
        Partition::Label(label) => println!("partition label: {label}"),
    }
    println!(
        "partition: GUID {}, LBA {}..={} ({} byte blocks), found among {} disks",
        found.guid, found.first_lba, found.last_lba, found.block, found.disks
    );

    let header = HEADER.take().ok_or_else(|| fail("header", "already in use"))?;
    let mut json = Pages::allocate(MAX_JSON).map_err(|e| fail("AllocatePages(JSON)", e.status()))?;
    header.read_into(&mut window, json.as_mut_slice()).map_err(|e| fail("LUKS2 header", e))?;
    drop(json);

    // Argon2 memory: sized from the keyslots' own claims, each checked against the limit.
    let limit_kib = args.argon2_max_mib.saturating_mul(1024);
    let limits = KdfLimits { argon2_memory_kib: limit_kib, ..KdfLimits::DEFAULT };
    for (index, slot) in header.metadata.keyslots() {
        let claim = luks2::metadata::kdf_memory_bytes(&slot.kdf);
        let refused = claim > u64::from(limit_kib) * 1024;
        println!(
            "keyslot {index}: {}, {} KiB of memory{}",
            slot.kdf.name(),
            claim / 1024,
            if refused { " (over argon2-max-mib: refused)" } else { "" }
        );
    }
    let need = header.kdf_memory_within(&limits, None);
    if header.metadata.keyslots().all(|(_, s)| luks2::metadata::kdf_memory_bytes(&s.kdf) > u64::from(limit_kib) * 1024)
    {
        return Err(fail(
            "unlock",
            format_args!("every keyslot claims more Argon2 memory than argon2-max-mib={}", args.argon2_max_mib),
        ));
    }
    let need = usize::try_from(need).map_err(|_| fail("Argon2", "the memory claim does not fit in usize"))?;
    let mut memory = Pages::allocate(need).map_err(|e| fail("AllocatePages(Argon2)", e.status()))?;
    println!("argon2 memory: {} KiB from AllocatePages", memory.len() / 1024);

    let secret = Secret::get(args.passphrase, "Passphrase for the LUKS2 partition:")?;
    let t = clock.now();
    let volume = LuksVolume::open_luks2_header(window, header, secret.bytes(), None, memory.as_mut_slice(), &limits);
    let unlock_us = clock.us_since(t);
    drop(secret);
    drop(memory); // wiped
    let mut volume = volume.map_err(|e| fail("unlock", e))?;
    println!("hal backend: {}", volume.segment().cipher.backend());
    println!("unlock time: {} (LUKS2 keyslot, Argon2 and digest)", Millis(unlock_us));
    println!("volume: {} bytes, {} byte sectors", volume.size(), volume.segment().sector_size);
    let requests = volume.io_mut().disk.requests;
    let digest = hash_range(clock, args.offset, args.length, |o, b| volume.read_at(o, b))?;
    println!("BlockIO requests for the read: {}", volume.io_mut().disk.requests - requests);
    Ok(digest)
}

/// Job B: the qcow2 chain in an ESP folder.
pub fn qcow2_chain(args: &Args<'_>, clock: &Clock) -> Result<[u8; 32], Failed> {
    let mut folder = Folder::open(args.folder).map_err(|e| fail("ESP folder", e))?;
    let (top, _) = folder.file(args.image.as_bytes()).map_err(|e| fail(args.image, e))?;
    println!("image: {}\\{} ({} bytes)", args.folder.trim_end_matches('\\'), args.image, {
        let mut t = top;
        let size = t.size().unwrap_or(0);
        drop(t);
        size
    });
    let (top, _) = folder.file(args.image.as_bytes()).map_err(|e| fail(args.image, e))?;
    let overlay = Secret::get(args.passphrase, "Passphrase for the image:")?;
    let backing = match args.backing_passphrase {
        Some(p) => Some(Secret::get(Some(p), "")?),
        None if args.passphrase.is_none() => Some(Secret::get(None, "Passphrase for its backing images:")?),
        None => None,
    };
    folder.passphrase = Some(overlay.bytes());
    folder.backing_passphrase = backing.as_ref().map(Secret::bytes);
    folder.argon2_limit_kib = args.argon2_max_mib.saturating_mul(1024);

    let chain = CHAIN.take().ok_or_else(|| fail("chain", "already in use"))?;
    let t = clock.now();
    let opened = chain.open_in(top, &mut folder);
    let unlock_us = clock.us_since(t);
    folder.passphrase = None;
    folder.backing_passphrase = None;
    drop(overlay);
    drop(backing);
    if let Err(e) = opened {
        chain.close(); // layers opened before the error hold keys
        return Err(fail("open", e));
    }
    let layers = chain.layers().count();
    match chain.top() {
        Some(Layer::Qcow2(q)) => match q.cipher() {
            Some(c) => println!("hal backend: {}", c.backend()),
            None => println!("hal backend: none (the image is not encrypted)"),
        },
        _ => println!("hal backend: none"),
    }
    println!("unlock time: {} ({layers} layers opened, passphrases checked)", Millis(unlock_us));
    println!("chain: {} bytes virtual", chain.size());
    let mut scratch =
        Pages::allocate(chain.compressed_scratch_len()).map_err(|e| fail("AllocatePages(scratch)", e.status()))?;
    let scratch = scratch.as_mut_slice();
    let digest = hash_range(clock, args.offset, args.length, |o, b| chain.read_at_with_scratch(o, b, scratch));
    // The chain lives in `.bss`, which the firmware frees without wiping when the program
    // ends: closing it drops the layers' keys (their round keys wipe themselves on drop).
    chain.close();
    digest
}

/// The writes of [`disk_write`]: (offset, length, byte, buffer misalignment). Partial blocks at
/// either end, a write across one block boundary, an aligned write from an aligned buffer (the
/// direct path), an aligned write from a misaligned buffer, and one longer than the bounce
/// memory. `run.sh` applies the same list to its copy of the partition.
pub const WRITES: [(u64, usize, u8, usize); 6] = [
    (1, 100, 0x11, 0),
    (511, 2, 0x22, 0),
    (1000, 3000, 0x33, 0),
    (4096, 8192, 0x55, 0),
    (16384, 4096, 0x66, 3),
    (70001, 600_000, 0x44, 1),
];

/// A test of the BlockIO adapter's write path: [`WRITES`] into a scratch partition, flushed
/// (`FlushBlocks`), then the whole partition read back and hashed.
pub fn disk_write(args: &Args<'_>, clock: &Clock) -> Result<[u8; 32], Failed> {
    let want = args.partition.ok_or_else(|| fail("arguments", "no partition named"))?;
    let (mut window, found) = crate::gpt::find_partition(want).map_err(|e| fail("GPT", e))?;
    let size = window.size().map_err(|e| fail("size", e))?;
    println!(
        "scratch partition: LBA {}..={}, {size} bytes, IoAlign {}",
        found.first_lba,
        found.last_lba,
        window.disk.firmware_align()
    );
    let mut source = Pages::allocate(1 << 20).map_err(|e| fail("AllocatePages(source)", e.status()))?;
    let source = source.as_mut_slice();
    let requests = window.disk.requests;
    let t = clock.now();
    for (offset, len, byte, skew) in WRITES {
        let data = &mut source[skew..skew + len];
        data.fill(byte);
        window.write_at(offset, data).map_err(|e| fail("write", e))?;
    }
    window.flush().map_err(|e| fail("flush", e))?;
    println!(
        "disk write: {} writes and a flush in {} ({} BlockIO requests)",
        WRITES.len(),
        Millis(clock.us_since(t)),
        window.disk.requests - requests
    );
    for (offset, len, byte, _) in WRITES {
        let back = &mut source[..len];
        window.read_at(offset, back).map_err(|e| fail("read back", e))?;
        if let Some(i) = back.iter().position(|&b| b != byte) {
            return Err(fail("read back", format_args!("byte {} of the write at {offset} reads {:#04x}", i, back[i])));
        }
    }
    hash_range(clock, 0, size, |o, b| window.read_at(o, b))
}
