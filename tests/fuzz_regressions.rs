//! Regression tests for what the model-based fuzz targets (`fuzz/fuzz_targets/
//! qcow2_write_model.rs`, `luks_volume_model.rs`) found, each reduced to a few operations on an
//! image created in memory.
mod common;

use common::crash::plain;
use qluks::qcow2::create::{create, CreateOptions};
use qluks::qcow2::{Error, Qcow2};

/// A deterministic RNG for `create` (no encryption here: it is not used).
struct Rng(u64);
impl rand_core::TryRng for Rng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = common::crash::mix(self.0);
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.try_next_u64()? as u8;
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Rng {}

/// qcow2_write_model found it (8 KiB clusters, LUKS, 23 operations; reduced here): a shrink to
/// a size inside a cluster keeps that cluster whole, and a later grow showed its bytes past
/// the old end (what the guest had written there before the shrink) instead of zeros. With a
/// snapshot holding the cluster, the grow copies on write: the snapshot keeps its bytes.
#[test]
fn grow_after_unaligned_shrink_reads_zeros() {
    for snapshot in [false, true] {
        let io = plain(Vec::new());
        let mut options = CreateOptions::new(64 << 10);
        options.cluster_size = 4096;
        create(&mut io.clone(), &mut options, &mut Rng(1)).unwrap();
        let mut q = Qcow2::open(io.clone(), None).unwrap();
        let mut scratch = vec![0u8; q.write_scratch_len().max(q.snapshot_scratch_len())];
        q.write_at(0, &[0xab; 64 << 10], &mut scratch).unwrap();
        if snapshot {
            q.snapshot_create(b"before", 0, 0, &mut scratch).unwrap();
        }
        // 6 KiB: inside the second cluster.
        q.resize(6144, true).unwrap();
        q.resize_with_scratch(64 << 10, false, &mut scratch).unwrap();
        let mut back = vec![0u8; 64 << 10];
        q.read_at(0, &mut back).unwrap();
        assert!(back[..6144].iter().all(|&b| b == 0xab), "snapshot {snapshot}: the data kept");
        let stale = back[6144..].iter().position(|&b| b != 0).map(|i| i + 6144);
        assert_eq!(stale, None, "snapshot {snapshot}: the grown area shows old data");
        if snapshot {
            let sn = q.find_snapshot(b"before").unwrap();
            q.select_snapshot(&sn).unwrap();
            q.read_at(0, &mut back).unwrap();
            assert!(back.iter().all(|&b| b == 0xab), "the snapshot keeps its bytes");
            q.select_active();
        }
        q.flush().unwrap();
        drop(q);
        // And on disk, after reopening.
        let mut q = Qcow2::open(io, None).unwrap();
        q.read_at(0, &mut back).unwrap();
        assert!(back[6144..].iter().all(|&b| b == 0), "snapshot {snapshot}: after reopening");
    }
}

/// [`Qcow2::resize`] has no scratch: the grow above is refused before anything is written
/// (and works where the last cluster is not partly past the end).
#[test]
fn grow_without_scratch_after_unaligned_shrink_is_refused() {
    let io = plain(Vec::new());
    let mut options = CreateOptions::new(64 << 10);
    options.cluster_size = 4096;
    create(&mut io.clone(), &mut options, &mut Rng(1)).unwrap();
    let mut q = Qcow2::open(io.clone(), None).unwrap();
    let mut scratch = vec![0u8; q.write_scratch_len()];
    q.write_at(0, &[0xab; 64 << 10], &mut scratch).unwrap();
    q.resize(6144, true).unwrap();
    q.flush().unwrap();
    let before = io.bytes();
    assert!(matches!(q.resize(64 << 10, false), Err(Error::ScratchTooSmall { .. })));
    assert_eq!(q.size(), 6144);
    assert!(io.bytes() == before, "a refused resize wrote");
    q.resize(4096, true).unwrap();
    q.resize(64 << 10, false).unwrap();
    let mut back = vec![0u8; 64 << 10];
    q.read_at(0, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0xab) && back[4096..].iter().all(|&b| b == 0));
}
