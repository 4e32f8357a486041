#![no_main]
//! Internal snapshots of any bytes opened as a qcow2 image (passphrase `pw` for LUKS and
//! legacy AES images, LUKS under the tiny KDF limits of kdf_budget.rs): list the snapshot
//! table, find each snapshot by id and by name, select each one and read the disk as it was
//! (its first 256 KiB in odd pieces, its last sector, and reads past its size, which must be
//! refused), then back to the active disk. Every failure must be a typed error.
//!
//! Input: byte 0 = flags (bit 0: open the metadata only, without a passphrase), then the
//! image.
use qluks::io::MemIo;
use qluks::qcow2::{Error, Qcow2Image, Snapshot};

#[path = "kdf_budget.rs"]
mod kdf_budget;

/// Snapshots listed (and selected) at most: a table of thousands of tiny entries is possible.
const MAX_LISTED: usize = 32;
/// Of those, looked up by id and name (each lookup walks the table again).
const MAX_FOUND: usize = 8;

fn read_disk(q: &mut Qcow2Image<MemIo>, buf: &mut [u8], scratch: &mut [u8]) {
    let size = q.size();
    let mut off = 0u64;
    let mut piece = 3 * 512 + 7;
    while off < size.min(256 << 10) {
        let len = (size - off).min(piece as u64) as usize;
        if q.read_at_with_scratch(off, &mut buf[..len], scratch).is_err() {
            break;
        }
        off += len as u64;
        piece = (piece * 5 / 2) % buf.len() + 1;
    }
    let tail = size.min(512);
    let _ = q.read_at_with_scratch(size - tail, &mut buf[..tail as usize], scratch);
    // Past the end: refused whatever the tables say.
    for (at, len) in [(size, 1), (size.saturating_sub(1), 2), (u64::MAX - 1, 2)] {
        if at.checked_add(len as u64).is_none_or(|end| end > size) {
            let r = q.read_at_with_scratch(at, &mut buf[..len], scratch);
            assert!(r.is_err(), "read at {at:#x} len {len} past the size {size:#x} accepted");
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, image)) = data.split_first() else { return };
    let mut image = image.to_vec();
    let io = MemIo::new(&mut image);
    let opened = if flags & 1 != 0 {
        Qcow2Image::open_metadata(io, None)
    } else {
        Qcow2Image::open_with_kdf_limits(io, None, Some(b"pw"), &kdf_budget::LIMITS)
    };
    let Ok(mut q) = opened else { return };
    let active_size = q.size();
    let mut scratch = vec![0u8; q.compressed_scratch_len()];
    let mut buf = vec![0u8; 70_000];

    let mut snapshots: Vec<Snapshot> = Vec::new();
    for s in q.snapshots().take(MAX_LISTED) {
        match s {
            Ok(s) => snapshots.push(s),
            Err(_) => break,
        }
    }
    for (i, s) in snapshots.iter().enumerate() {
        assert_eq!(s.index as usize, i, "snapshots out of table order");
        if i >= MAX_FOUND {
            continue;
        }
        // By id: the first snapshot with that id (QEMU's lookup order); by name: one with
        // that id, else the first with that name.
        if !s.id.is_truncated() {
            let found = q.find_snapshot(s.id.as_bytes()).expect("a listed snapshot's id is found");
            assert!(found.index <= s.index && found.id == s.id, "find by id {:?} gave {found:?}", s.id);
        }
        if !s.name.is_truncated() {
            // The whole table is walked for an id first: an entry past the listed ones may be
            // unreadable.
            match q.find_snapshot(s.name.as_bytes()) {
                Ok(found) => assert!(
                    found.id == s.name || (found.name == s.name && found.index <= s.index),
                    "find by name {:?} gave {found:?}",
                    s.name
                ),
                Err(Error::Corrupt(_)) => {}
                Err(e) => panic!("find by name {:?}: {e:?}", s.name),
            }
        }
    }
    for s in &snapshots {
        match q.select_snapshot(s) {
            Ok(()) => {
                assert_eq!(q.selected_snapshot(), Some(s.index));
                assert_eq!(q.size(), s.disk_size.unwrap_or(active_size), "snapshot {} size", s.index);
                read_disk(&mut q, &mut buf, &mut scratch);
            }
            Err(Error::Corrupt(_)) => {}
            Err(e) => panic!("selecting snapshot {}: untyped refusal {e:?}", s.index),
        }
        q.select_active();
        assert_eq!((q.selected_snapshot(), q.size()), (None, active_size));
    }
    read_disk(&mut q, &mut buf, &mut scratch);
    assert!(matches!(q.find_snapshot(b"\xffno such snapshot\xff"), Err(_)));
});
