//! Opening a LUKS2 volume (both header copies, JSON metadata, Argon2 unlock), then reading and
//! writing its data, performs no heap allocation: memory comes from the caller.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use qluks::io::MemIo;
use qluks::luks::luks2::{self, Argon2Block};
use qluks::luks::{LuksVolume, OpenOptions};

/// Counts allocations made by the thread that enabled counting.
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if COUNTING.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; counting touches only an atomic and a
// const-initialised thread-local (neither allocates).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.load(Ordering::Relaxed) - before)
}

#[test]
fn luks2_open_read_and_write_allocate_nothing() {
    let test = "luks2_open_read_and_write_allocate_nothing";
    if !common::tool(test, "cryptsetup") {
        return;
    }
    let dir = common::TempDir::new(test);
    let image = dir.join("v.luks2");
    let key_file = dir.join("key");
    std::fs::write(&key_file, b"pw").unwrap();
    std::fs::File::create(&image).unwrap().set_len(17 << 20).unwrap();
    common::run(
        std::process::Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "argon2id", "--pbkdf-memory", "64"])
            .args(["--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1", "--sector-size", "4096", "--key-file"])
            .arg(&key_file)
            .arg(&image),
    );
    let mut disk = std::fs::read(&image).unwrap();
    let mut memory = vec![Argon2Block::default(); 64];
    let mut json = vec![0u8; luks2::DEFAULT_JSON_BUFFER];
    let data = common::pattern(1, 3 * 4096 + 100);
    let mut back = vec![0u8; data.len()];

    let (result, allocations) = allocations_during(|| {
        let options = OpenOptions { kdf_memory: Some(&mut memory), json_buffer: Some(&mut json), ..Default::default() };
        let mut volume = LuksVolume::open(MemIo::new(&mut disk), b"pw", options).map_err(|_| "open")?;
        volume.write_at(1000, &data).map_err(|_| "write")?;
        volume.read_at(1000, &mut back).map_err(|_| "read")?;
        Ok::<(), &str>(())
    });
    result.unwrap();
    assert_eq!(allocations, 0, "heap allocations during open + write + read");
    assert!(back == data);
}
