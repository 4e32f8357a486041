#![no_main]
//! qcow2 images created in memory with arbitrary CreateOptions (size, cluster size, compat,
//! refcount width, extended L2, compression type, lazy refcounts, backing file and format
//! names, preallocation, LUKS with tiny PBKDF2 counts or legacy AES) on devices of several
//! block sizes. `validate` and `create` must agree; a created image must reopen with what was
//! asked (size, cluster size, version, encryption, names), read as zeros, take writes,
//! write-zeroes and discards that read back as a model says (before and after a reopen), and
//! pass the engine's check with no corruption and no leak.
//!
//! Input: byte 0 = flags (bit 0 compat 0.10, bit 1 extended L2, bit 2 zstd, bit 3 lazy
//! refcounts, bit 4 backing file, bit 5 backing format, bit 6 metadata preallocation, bit 7
//! arbitrary cluster size), byte 1 = cluster bits (9 + n mod 13), byte 2 = refcount width
//! (1 << n mod 7; bit 7: arbitrary), byte 3 = encryption (bits 0-1: none/LUKS/legacy
//! AES/legacy AES without the opt-in; bits 2-7 cipher), byte 4 = size kind and device block
//! size, u64 size, u16 iterations, u64 cluster size, the backing file name (u8 length),
//! the backing format name (u8 length), 4 operations of kind byte + u32 offset + u16 length;
//! the rest is the data written.
use qluks::crypto::{CbcIv, CipherMode, CipherSpec, HashAlg, XtsIv};
use qluks::luks::luks1::Iterations;
use qluks::qcow2::compressed::Compression;
use qluks::qcow2::create::{create, validate, Compat, CreateError, CreateOptions, Encryption, Preallocation};
use qluks::qcow2::{Error, Qcow2Image, Repair};

#[path = "kdf_budget.rs"]
mod kdf_budget;
#[path = "targets_support.rs"]
mod support;

use support::SharedIo;

/// Guest bytes the model covers (operations land here).
const WINDOW: u64 = 4 << 20;

fn cipher(choice: u8) -> CipherSpec {
    let mode = match choice % 6 {
        0 => CipherMode::Xts(XtsIv::Plain64),
        1 => CipherMode::Xts(XtsIv::Plain),
        2 => CipherMode::Cbc(CbcIv::Plain),
        3 => CipherMode::Cbc(CbcIv::Plain64),
        4 => CipherMode::Cbc(CbcIv::Essiv(HashAlg::Sha256)),
        _ => CipherMode::Ecb,
    };
    let sizes = if matches!(mode, CipherMode::Xts(_)) { [32, 48, 64] } else { [16, 24, 32] };
    CipherSpec { mode, key_bytes: sizes[usize::from(choice / 6 % 3)] }
}

fn check_clean(q: &mut Qcow2Image<SharedIo>) {
    let len = q.check_memory_len().expect("check memory");
    let mut memory = vec![0u8; len];
    let mut findings = Vec::new();
    let r = q.check(&mut memory, Repair::None, &mut |f| findings.push(format!("{f}"))).expect("check");
    assert!(r.corruptions == 0 && r.check_errors == 0 && r.leaks == 0, "check: {r:?} {findings:?}");
}

fn read_window(q: &mut Qcow2Image<SharedIo>, len: u64) -> Vec<u8> {
    let mut scratch = vec![0u8; q.compressed_scratch_len()];
    let mut buf = vec![0u8; len as usize];
    q.read_at_with_scratch(0, &mut buf, &mut scratch).expect("reading the created image");
    buf
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = support::Reader::new(data);
    let (flags, bits, rc, enc, kind) = (r.u8(), r.u8(), r.u8(), r.u8(), r.u8());
    let (raw_size, iterations, raw_cluster) = (r.u64(), u32::from(r.u16()), r.u64());
    let backing_len = usize::from(r.u8());
    let backing = r.take(backing_len).to_vec();
    let format_len = usize::from(r.u8());
    let format = r.take(format_len).to_vec();
    let ops: Vec<(u8, u64, u64)> = (0..4).map(|_| (r.u8(), u64::from(r.u32()), u64::from(r.u16()))).collect();
    let content = r.rest();

    let mut options = CreateOptions::new(0);
    options.size = match kind & 3 {
        0 => (raw_size % (WINDOW / 512 + 1)) * 512,
        1 => (raw_size % (1 << 21)) * 512, // up to 1 GiB
        2 => raw_size % (WINDOW + 1),      // unaligned too
        _ => raw_size,
    };
    options.cluster_size = if flags & 0x80 != 0 { raw_cluster } else { 1 << (9 + bits % 13) };
    options.compat = if flags & 1 != 0 { Compat::V0_10 } else { Compat::V1_1 };
    options.refcount_bits = if rc & 0x80 != 0 { u32::from(rc & 0x7f) } else { 1 << (rc % 7) };
    options.extended_l2 = flags & 2 != 0;
    options.compression = if flags & 4 != 0 { Compression::Zstd } else { Compression::Deflate };
    options.lazy_refcounts = flags & 8 != 0;
    options.backing_file = (flags & 16 != 0).then_some(&backing[..]);
    options.backing_format = (flags & 32 != 0).then_some(&format[..]);
    options.preallocation = if flags & 64 != 0 { Preallocation::Metadata } else { Preallocation::Off };
    options.encryption = match enc & 3 {
        0 => Encryption::None,
        1 => Encryption::Luks {
            passphrase: b"pw",
            cipher: cipher(enc >> 2),
            hash: HashAlg::ALL[usize::from(bits >> 4) % HashAlg::ALL.len()],
            iterations: Iterations::Fixed { keyslot: iterations % 2048, digest: 1 + iterations % 1024 },
        },
        2 => Encryption::LegacyAes { passphrase: b"pw", i_know_it_is_weak: true },
        _ => Encryption::LegacyAes { passphrase: b"pw", i_know_it_is_weak: false },
    };
    let encrypted = enc & 3 != 0;
    let block = [1, 512, 4096, 1][usize::from(kind >> 6)];

    let valid = validate(&options);
    // Keep executions small: no multi-GiB metadata (validate has already seen those options).
    let cs = options.cluster_size;
    if valid.is_ok()
        && (options.size > 1 << 30 || (options.preallocation == Preallocation::Metadata && options.size > WINDOW))
    {
        return;
    }
    let mut io = SharedIo::new(Vec::new());
    io.block = block;
    let mut rng = support::Rng(0x2545_F491_4F6C_DD1D ^ raw_size);
    let created = create(&mut io, &mut options, &mut rng);
    match (&valid, &created) {
        (Err(v), Err(Error::Create(c))) => assert_eq!(v, c, "validate and create disagree"),
        (Err(v), c) => panic!("validate refused ({v:?}), create gave {c:?}"),
        (Ok(()), Err(Error::Create(CreateError::DeviceBlockSize { .. }))) => assert!(block as u64 > cs),
        (Ok(()), Err(e)) => panic!("validate accepted, create failed: {e:?}"),
        (Ok(()), Ok(())) => {}
    }
    if created.is_err() {
        return;
    }

    let open = |io: SharedIo| Qcow2Image::open_with_kdf_limits(io, None, Some(b"pw"), &kdf_budget::LIMITS);
    let mut q = open(io.clone()).expect("opening a created image");
    assert_eq!((q.size(), q.cluster_size()), (options.size, cs));
    assert_eq!(q.header().version, if flags & 1 != 0 { 2 } else { 3 });
    assert_eq!(q.is_encrypted(), encrypted);
    assert_eq!(
        q.extensions().backing_file.as_ref().map(|n| n.as_bytes().to_vec()),
        options.backing_file.map(<[u8]>::to_vec)
    );
    assert_eq!(
        q.extensions().backing_format.as_ref().map(|n| n.as_bytes().to_vec()),
        options.backing_format.map(<[u8]>::to_vec)
    );
    check_clean(&mut q);
    let window = options.size.min(WINDOW);
    let mut model = read_window(&mut q, window);
    assert!(model.iter().all(|&b| b == 0), "a new image does not read as zeros");
    if window == 0 || options.backing_file.is_some() {
        return; // copy on write would need the backing file (see qcow2_chain)
    }

    let mut scratch = vec![0u8; q.write_scratch_len()];
    for (i, &(op, at, len)) in ops.iter().enumerate() {
        let at = at % window;
        let len = (len * if op & 4 != 0 { 64 } else { 1 }).min(window - at);
        let (s, e) = (at as usize, (at + len) as usize);
        match op & 3 {
            0 | 1 => {
                let bytes = support::fill(len as usize, i as u8, content);
                q.write_at(at, &bytes, &mut scratch).unwrap_or_else(|e| panic!("write at {at:#x} len {len}: {e:?}"));
                model[s..e].copy_from_slice(&bytes);
            }
            2 => {
                q.write_zeroes(at, len, op & 8 != 0, &mut scratch)
                    .unwrap_or_else(|e| panic!("write_zeroes at {at:#x} len {len}: {e:?}"));
                model[s..e].fill(0);
            }
            _ => {
                q.discard(at, len).unwrap_or_else(|e| panic!("discard at {at:#x} len {len}: {e:?}"));
                // Whole clusters inside the range read as zeros; so does the disk's last
                // (partial) cluster when the range reaches the end.
                let first = at.next_multiple_of(cs);
                let end = if at + len == options.size { at + len } else { (at + len) / cs * cs };
                if first < end {
                    model[first as usize..end as usize].fill(0);
                }
            }
        }
    }
    assert!(read_window(&mut q, window) == model, "the image differs from the model");
    q.flush().expect("flush");
    check_clean(&mut q);
    drop(q);
    let mut q = open(io).expect("reopening");
    assert!(read_window(&mut q, window) == model, "the image differs from the model after a reopen");
    check_clean(&mut q);
});
