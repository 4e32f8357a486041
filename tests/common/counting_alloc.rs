//! A counting global allocator for the no-heap tests. Each such test binary installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: common::counting_alloc::Counting = common::counting_alloc::Counting;
//! ```
//!
//! and wraps the code under test in [`count_allocations`]. Only allocations made by the calling
//! thread while it watches are counted, so the test harness's own threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator and counts allocations of watching threads.
pub struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = WATCHING.try_with(|w| {
        if w.get() {
            let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the number of heap allocations it made on this thread.
pub fn count_allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    WATCHING.with(|w| w.set(true));
    let r = f();
    WATCHING.with(|w| w.set(false));
    (r, ALLOCATIONS.with(Cell::get) - before)
}

/// The positive control of a no-heap test: fails unless the counter sees one allocation made
/// while it watches, so that a broken counter (or a test binary without this global
/// allocator) cannot make a no-heap assertion pass.
pub fn assert_counter_sees_allocations() {
    let (probe, seen) = count_allocations(|| std::hint::black_box(Vec::<u8>::with_capacity(16)));
    assert_eq!(seen, 1, "the counting allocator missed an allocation: is it this binary's global allocator?");
    drop(probe);
}
