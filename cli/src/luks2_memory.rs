//! LUKS2 in the CLI: the memory an open needs (Argon2 blocks, JSON buffer, allocated here
//! since the CLI has a heap), and the PBKDF2 costs a volume claims (for the KDF limits).
use std::error::Error;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use qluks::crypto::argon2::{LaneRunner, SegmentJob};
use qluks::crypto::HashAlg;
use qluks::luks::luks2::{self, binary_header::HDR_SIZES, Kdf, Luks2Header};
use qluks::luks::{KdfLimits, LuksIoError, LuksVolume};

use crate::secret::Pbkdf2Claim;

/// Largest JSON area any LUKS2 header has (4 MiB header minus the binary header).
pub const MAX_JSON: usize = HDR_SIZES[HDR_SIZES.len() - 1] as usize - 4096;

/// Caller memory for opening a LUKS2 volume in two steps: its header (read once), and Argon2
/// memory in bytes for its most demanding keyslot within the limits.
pub struct Luks2Memory {
    header: Box<Luks2Header>,
    kdf: KdfMemory,
}

impl Luks2Memory {
    /// Reads the volume's metadata to size the memory; `None` for a LUKS1 volume. Argon2
    /// memory is sized for the most demanding keyslot *within `limits`*: a keyslot the limits
    /// refuse costs no allocation (the unlock refuses it before any work).
    pub fn for_volume(file: &mut File, limits: &KdfLimits) -> Result<Option<Luks2Memory>, Box<dyn Error>> {
        let mut version = [0u8; 8];
        qluks::io::BlockIo::read_at(file, 0, &mut version)?;
        if u16::from_be_bytes([version[6], version[7]]) != 2 {
            return Ok(None);
        }
        let mut json = vec![0u8; MAX_JSON];
        let header = luks2::Luks2Header::read(file, &mut json)?;
        let bytes = header.kdf_memory_within(limits, None);
        let bytes = usize::try_from(bytes).map_err(|_| format!("Argon2 needs {bytes} bytes of memory"))?;
        Ok(Some(Luks2Memory { header, kdf: KdfMemory::new(bytes) }))
    }

    /// Unlocks with the header read by [`Luks2Memory::for_volume`] (not read again), within
    /// the KDF `limits` the memory was sized for.
    pub fn open(
        mut self,
        file: File,
        passphrase: &[u8],
        limits: &KdfLimits,
    ) -> Result<LuksVolume<File>, LuksIoError<std::io::Error>> {
        let lanes = ThreadLanes::for_host();
        LuksVolume::open_luks2_header_with(file, &self.header, passphrase, None, self.kdf.bytes(), limits, &lanes)
    }
}

/// Argon2 working memory, zeroed: an anonymous mapping aligned to transparent huge pages, which
/// the kernel is asked to back with them when it has enough of them free. Argon2 reads 1 KiB
/// blocks at random all over its memory: with 4 KiB pages nearly every such read also misses
/// the TLB and walks page tables that are not in cache (measured: a fifth of a 256 MiB unlock),
/// and faulting in the memory takes 512 times fewer faults. When free memory is fragmented,
/// though, each huge page fault first compacts memory, which costs more than it saves (a 256
/// MiB unlock: 0.35 s of system time): so only as many huge pages are asked for as are free,
/// the rest keeps small pages; and none in a virtual machine whose free huge-page blocks go
/// back to the host ([`free_pages_reported`]). A plain vector where the mapping fails.
pub enum KdfMemory {
    /// The mapping and the offset of the first huge-page boundary in it.
    Mapped(memmap2::MmapMut, usize),
    /// Heap memory.
    Heap(Vec<u8>),
}

/// Transparent huge page size on x86-64 and (4 KiB granule) aarch64.
const HUGE_PAGE: usize = 2 << 20;

/// Whether [`KdfMemory`] asks for huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HugePages {
    /// As many as are free, unless free memory goes back to a hypervisor (what unlocks do).
    Auto,
    /// As many as are free.
    Yes,
    /// None.
    No,
}

impl KdfMemory {
    /// `len` zeroed bytes, huge pages as [`HugePages::Auto`] decides.
    pub fn new(len: usize) -> KdfMemory {
        KdfMemory::with_huge_pages(len, HugePages::Auto)
    }

    /// `len` zeroed bytes, huge pages as `huge` says.
    pub fn with_huge_pages(len: usize, huge: HugePages) -> KdfMemory {
        if len < HUGE_PAGE {
            return KdfMemory::Heap(vec![0u8; len]);
        }
        match memmap2::MmapMut::map_anon(len + HUGE_PAGE) {
            Ok(map) => {
                let skip = (map.as_ptr() as usize).wrapping_neg() % HUGE_PAGE;
                #[cfg(target_os = "linux")]
                if huge == HugePages::Yes
                    || huge == HugePages::Auto && !free_pages_reported(std::path::Path::new("/sys/bus/virtio/devices"))
                {
                    advise_huge_pages(&map, skip, len);
                }
                KdfMemory::Mapped(map, skip)
            }
            Err(_) => KdfMemory::Heap(vec![0u8; len]),
        }
    }

    /// The memory (`len` bytes).
    pub fn bytes(&mut self) -> &mut [u8] {
        match self {
            KdfMemory::Mapped(map, skip) => {
                let len = map.len() - HUGE_PAGE;
                &mut map[*skip..*skip + len]
            }
            KdfMemory::Heap(v) => v,
        }
    }
}

/// Asks for huge pages over `len` bytes at `skip` in `map`, as many as are free (spread evenly,
/// so that every lane gets its share): more would be compacted at fault time.
#[cfg(target_os = "linux")]
fn advise_huge_pages(map: &memmap2::MmapMut, skip: usize, len: usize) {
    let pages = (len / HUGE_PAGE) as u64;
    let free = free_huge_pages().unwrap_or(0).min(pages);
    if free == pages {
        let _ = map.advise_range(memmap2::Advice::HugePage, skip, pages as usize * HUGE_PAGE);
        return;
    }
    for i in 0..pages {
        // Page i is advised when the running share i * free / pages steps up.
        if (i + 1) * free / pages != i * free / pages {
            let _ = map.advise_range(memmap2::Advice::HugePage, skip + i as usize * HUGE_PAGE, HUGE_PAGE);
        }
    }
}

/// Whether a virtio balloon under `devices` (`/sys/bus/virtio/devices`) negotiated free page
/// reporting (feature bit 5, `VIRTIO_BALLOON_F_REPORTING`). The guest kernel then hands every
/// free block of huge-page size (`page_reporting_order`) to the host, which drops its backing;
/// small pages come first from blocks too small to be reported, huge pages only from reported
/// ones, so each huge page costs a host fault per small page on first touch. Measured on such a
/// machine, a 256 MiB unlock after a few idle seconds: 0.56-0.75 s with huge pages (0.4-0.7 s
/// of system time zeroing them), 0.41-0.44 s with small pages.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn free_pages_reported(devices: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(devices) else { return false };
    entries.flatten().any(|dev| {
        let read = |name: &str| std::fs::read_to_string(dev.path().join(name)).unwrap_or_default();
        read("device").trim() == "0x0005" && read("features").as_bytes().get(5) == Some(&b'1')
    })
}

/// Free memory in whole huge pages (`/proc/buddyinfo`: free blocks of order 9 and up, in 2 MiB
/// units), which huge page faults take without compacting.
#[cfg(target_os = "linux")]
fn free_huge_pages() -> Option<u64> {
    huge_pages_in(&std::fs::read_to_string("/proc/buddyinfo").ok()?)
}

/// [`free_huge_pages`] of a `/proc/buddyinfo` text.
fn huge_pages_in(buddyinfo: &str) -> Option<u64> {
    let mut total = 0u64;
    for line in buddyinfo.lines() {
        // "Node 0, zone   Normal   7535   1224 ..." : free blocks of order 0, 1, ...
        let counts = line.split_once("zone")?.1.split_whitespace().skip(1);
        for (order, count) in counts.enumerate().skip(9) {
            total = total.saturating_add(count.parse::<u64>().ok()?.checked_shl(order as u32 - 9)?);
        }
    }
    Some(total)
}

/// Runs the lanes of each Argon2 slice at once, on as many threads as there are lanes, at
/// most the CPUs available (this thread is one of them). Threads are scoped to one slice:
/// their stacks hold only the per-lane work blocks, the memory stays the caller's.
pub struct ThreadLanes {
    threads: usize,
    /// CPU time of the helper threads (not this one), in nanoseconds, where Linux reports it.
    helper_cpu_ns: AtomicU64,
}

impl ThreadLanes {
    /// As many threads as `std::thread::available_parallelism` reports (1 when unknown).
    pub fn for_host() -> ThreadLanes {
        ThreadLanes::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// At most `threads` threads (at least 1: this one).
    pub fn new(threads: usize) -> ThreadLanes {
        ThreadLanes { threads: threads.max(1), helper_cpu_ns: AtomicU64::new(0) }
    }

    /// Threads used at most.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// CPU time the helper threads have run so far, in nanoseconds (0 where unknown).
    pub fn helper_cpu_ns(&self) -> u64 {
        self.helper_cpu_ns.load(Ordering::Relaxed)
    }
}

impl LaneRunner for ThreadLanes {
    fn run(&self, jobs: &mut [SegmentJob<'_>]) {
        let threads = self.threads.min(jobs.len());
        if threads <= 1 {
            jobs.iter_mut().for_each(SegmentJob::run);
            return;
        }
        let per_thread = jobs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut chunks = jobs.chunks_mut(per_thread);
            let own = chunks.next();
            for chunk in chunks {
                let cpu = &self.helper_cpu_ns;
                // A thread that cannot start leaves its jobs unrun: the fill runs them itself.
                let _ = std::thread::Builder::new().name("argon2-lane".into()).spawn_scoped(scope, move || {
                    let start = crate::cpu_time::thread_cpu_ns();
                    chunk.iter_mut().for_each(SegmentJob::run);
                    if let (Some(a), Some(b)) = (start, crate::cpu_time::thread_cpu_ns()) {
                        cpu.fetch_add(b.saturating_sub(a), Ordering::Relaxed);
                    }
                });
            }
            own.into_iter().flatten().for_each(SegmentJob::run);
        });
    }
}

/// The PBKDF2 claims of the LUKS2 volume in `file`: its PBKDF2 keyslots and digests (a hash
/// qluks does not know is left out: the unlock refuses it).
pub fn pbkdf2_claims(file: &mut File) -> Result<Vec<Pbkdf2Claim>, Box<dyn Error>> {
    let mut json = vec![0u8; MAX_JSON];
    let header = luks2::Luks2Header::read(file, &mut json)?;
    let m = &header.metadata;
    let slots = m.keyslots().filter_map(|(_, k)| match &k.kdf {
        Kdf::Pbkdf2 { hash, iterations, .. } => Some((hash.as_str(), *iterations, k.area.key_size as usize)),
        Kdf::Argon2 { .. } => None,
    });
    let digests = m.digests().map(|(_, d)| (d.hash.as_str(), d.iterations, d.digest.as_slice().len()));
    let claim = |(name, iterations, out_len): (&str, u32, usize)| {
        Some(Pbkdf2Claim { hash: HashAlg::from_name(name).ok()?, iterations, out_len })
    };
    Ok(slots.chain(digests).filter_map(claim).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_huge_pages_count_blocks_of_order_9_and_up() {
        let text = "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 \n\
                    Node 0, zone    DMA32      1     24    441    587    336    126     32     12      4     40     18 \n\
                    Node 0, zone   Normal   7535   1224   1103    528    143      6      0      1      1      8      0 \n";
        // DMA 1 + 3*2, DMA32 40 + 18*2, Normal 8.
        assert_eq!(huge_pages_in(text), Some(7 + 76 + 8));
        assert_eq!(huge_pages_in("garbage"), None);
    }

    #[test]
    fn free_page_reporting_is_a_balloon_with_feature_bit_5() {
        let dir = std::env::temp_dir().join(format!("qluks-virtio-{}", std::process::id()));
        let device = |name: &str, id: &str, features: &str| {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("device"), format!("{id}\n")).unwrap();
            std::fs::write(d.join("features"), format!("{features}\n")).unwrap();
        };
        assert!(!free_pages_reported(&dir), "no directory");
        // A block device with bit 5 set, a balloon without reporting.
        device("virtio1", "0x0002", "0010011001");
        device("virtio0", "0x0005", "0110000101");
        assert!(!free_pages_reported(&dir));
        device("virtio0", "0x0005", "0110010101");
        assert!(free_pages_reported(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kdf_memory_is_zeroed_and_as_long_as_asked() {
        for (len, huge) in [0, 4096, HUGE_PAGE, 3 * HUGE_PAGE + 1024]
            .into_iter()
            .zip([HugePages::Auto, HugePages::Yes, HugePages::No].into_iter().cycle())
        {
            let mut m = KdfMemory::with_huge_pages(len, huge);
            let bytes = m.bytes();
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(0xa5);
        }
    }
}
