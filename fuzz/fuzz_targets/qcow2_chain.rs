#![no_main]
//! Backing chains of arbitrary layers: up to five named in-memory files, opened through a
//! resolver that looks up the names the images hold (backing file and external data file
//! names) among the files' names, with fuzz-chosen formats (declared, raw, qcow2), identities
//! (loop detection on or off) and probing. Then reads through the whole chain (first 512 KiB
//! in odd pieces, last sector, reads past the end refused) and, when every file is opened once,
//! a write to the top layer that must read back, while (on a top layer that checks clean) the
//! bytes around it keep what they read before (copy on write from the backing layers) and the
//! engine check stays clean. Every failure must be a typed error.
//!
//! Input: byte 0 = flags (bit 0: fall back to the file at the request's depth when no name
//! matches; bits 1-2: the format the resolver reports: declared/raw/qcow2/declared; bit 3: no
//! identities; bit 4: probing allowed; bit 5: write; bits 6-7: device block size 1/512/4096/1),
//! byte 1 = files (mod 5, plus 1), then per file: name length (u8), name, length (u24 LE),
//! bytes; then the write: offset (u64 LE), length (u16 LE).
use qluks::luks::KdfLimits;
use qluks::qcow2::backing::{BackingFormat, BackingRequest, DataFileRequest, Layer, Opened, Resolver};
use qluks::qcow2::{Chain, Repair};

#[path = "kdf_budget.rs"]
mod kdf_budget;
#[path = "targets_support.rs"]
mod support;

use support::SharedIo;

struct Files {
    files: Vec<(Vec<u8>, SharedIo)>,
    flags: u8,
    /// How often each file was handed out (the top counts once).
    opened: Vec<u32>,
}

impl Files {
    fn find(&mut self, name: Option<&[u8]>, depth: usize) -> Result<usize, &'static str> {
        let i = name
            .and_then(|n| self.files.iter().position(|(f, _)| f == n))
            .or((self.flags & 1 != 0).then_some(depth))
            .filter(|&i| i < self.files.len())
            .ok_or("no such file")?;
        self.opened[i] += 1;
        Ok(i)
    }
}

impl Resolver<SharedIo> for Files {
    type Error = &'static str;
    fn open_backing(&mut self, request: &BackingRequest<'_>) -> Result<Opened<SharedIo>, &'static str> {
        let i = self.find(Some(request.name), request.depth)?;
        let format = match self.flags >> 1 & 3 {
            1 => Some(BackingFormat::Raw),
            2 => Some(BackingFormat::Qcow2),
            _ => None,
        };
        let identity = (self.flags & 8 == 0).then_some(i as u64);
        Ok(Opened { io: self.files[i].1.clone(), format, identity })
    }
    fn passphrase(&mut self, _: usize) -> Option<&[u8]> {
        Some(b"pw")
    }
    fn kdf_limits(&mut self, _: usize) -> KdfLimits {
        kdf_budget::LIMITS
    }
    fn top_identity(&mut self) -> Option<u64> {
        (self.flags & 8 == 0).then_some(0)
    }
    fn probe_undeclared_format(&mut self, _: &BackingRequest<'_>) -> bool {
        self.flags & 16 != 0
    }
    fn open_data_file(&mut self, request: &DataFileRequest<'_>) -> Result<SharedIo, &'static str> {
        let i = self.find(request.name, request.depth)?;
        Ok(self.files[i].1.clone())
    }
}

fn read(
    chain: &mut Chain<SharedIo>,
    at: u64,
    len: usize,
    scratch: &mut [u8],
) -> Result<Vec<u8>, qluks::qcow2::Error<support::SharedIoError>> {
    let mut buf = vec![0u8; len];
    chain.read_at_with_scratch(at, &mut buf, scratch).map(|()| buf)
}

fn check_clean(chain: &mut Chain<SharedIo>) -> Option<bool> {
    let Some(Some(Layer::Qcow2(top))) = chain.layers_mut().first_mut() else { return None };
    let len = top.check_memory_len().ok()?;
    if len > 64 << 20 {
        return None;
    }
    let mut memory = vec![0u8; len];
    let r = top.check(&mut memory, Repair::None, &mut |_| {}).ok()?;
    Some(r.corruptions == 0 && r.check_errors == 0)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = support::Reader::new(data);
    let (flags, count) = (r.u8(), usize::from(r.u8() % 5) + 1);
    let block = [1, 512, 4096, 1][usize::from(flags >> 6)];
    let mut files = Vec::new();
    for _ in 0..count {
        let name_len = usize::from(r.u8());
        let name = r.take(name_len).to_vec();
        let [a, b, c] = r.bytes();
        let len = u32::from_le_bytes([a, b, c, 0]) as usize;
        let mut io = SharedIo::new(r.take(len).to_vec());
        io.block = block;
        files.push((name, io));
    }
    let (write_at, write_len) = (r.u64(), usize::from(r.u16()));
    let top = files[0].1.clone();
    let mut resolver = Files { files, flags, opened: vec![0; count] };
    resolver.opened[0] = 1;
    let mut chain = Box::<Chain<SharedIo>>::default();
    if chain.open_in(top, &mut resolver).is_err() {
        return;
    }
    let size = chain.size();
    let mut scratch = vec![0u8; chain.compressed_scratch_len().max(chain.write_scratch_len())];
    let mut off = 0u64;
    let mut piece = 4097usize;
    while off < size.min(512 << 10) {
        let len = (size - off).min(piece as u64) as usize;
        if read(&mut chain, off, len, &mut scratch).is_err() {
            break;
        }
        off += len as u64;
        piece = piece * 3 % 70_000 + 1;
    }
    let tail = size.min(512);
    let _ = read(&mut chain, size - tail, tail as usize, &mut scratch);
    for (at, len) in [(size, 1), (size.saturating_sub(1), 2), (u64::MAX, 1)] {
        if at.checked_add(len as u64).is_none_or(|end| end > size) {
            assert!(read(&mut chain, at, len, &mut scratch).is_err(), "read at {at:#x} len {len} past {size:#x}");
        }
    }

    // A write, when no file is opened twice (else the write may change a layer below or the
    // metadata under the data, as the caller asked).
    if flags & 32 == 0 || size == 0 || resolver.opened.iter().any(|&n| n > 1) {
        return;
    }
    let clean_before = check_clean(&mut chain);
    let at = write_at % size;
    let len = write_len.min((size - at) as usize).min(16 << 10);
    let lo = at.saturating_sub(4096);
    let hi = (at + len as u64 + 4096).min(size);
    let Ok(before) = read(&mut chain, lo, (hi - lo) as usize, &mut scratch) else { return };
    let bytes = support::fill(len, flags, r.rest());
    if chain.write_at(at, &bytes, &mut scratch).is_err() {
        return;
    }
    let after = read(&mut chain, lo, (hi - lo) as usize, &mut scratch)
        .unwrap_or_else(|e| panic!("reading {lo:#x}..{hi:#x} around a write at {at:#x} len {len}: {e:?}"));
    let (w0, w1) = ((at - lo) as usize, (at - lo) as usize + len);
    assert!(after[w0..w1] == bytes[..], "a write at {at:#x} len {len} does not read back");
    // On a corrupt image the neighbours may change as they do under QEMU (an L2 entry that
    // points at a cluster whose refcount says free: the write's new clusters take it; see
    // tests/fuzz_regressions_targets.rs, qcow2_write_into_a_corrupt_image_does_what_qemu_does).
    if clean_before == Some(true) {
        assert!(
            after[..w0] == before[..w0] && after[w1..] == before[w1..],
            "a write at {at:#x} len {len} changed its neighbours"
        );
    }
    if chain.flush().is_err() {
        return;
    }
    if clean_before == Some(true) {
        assert_eq!(check_clean(&mut chain), Some(true), "a write made a clean top layer unclean");
    }
});
