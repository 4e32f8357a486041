//! Static buffers handed out once: the program's memory, without a heap.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// `N` bytes in `.bss`, 4 KiB aligned, lent out as `&'static mut` at most once.
#[repr(C, align(4096))]
pub struct StaticBuf<const N: usize> {
    data: UnsafeCell<[u8; N]>,
    taken: AtomicBool,
}

// SAFETY: `take` gives out the only reference, once; the flag is atomic.
unsafe impl<const N: usize> Sync for StaticBuf<N> {}

impl<const N: usize> StaticBuf<N> {
    pub const fn new() -> Self {
        StaticBuf { data: UnsafeCell::new([0; N]), taken: AtomicBool::new(false) }
    }

    /// The buffer, the first time; `None` afterwards.
    #[allow(clippy::mut_from_ref)] // unique: the atomic flag lets the reference out only once
    pub fn take(&'static self) -> Option<&'static mut [u8; N]> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag was clear, so no other reference to the data exists or will.
        Some(unsafe { &mut *self.data.get() })
    }
}

/// A value in `.bss` (built by a `const` constructor), lent out as `&'static mut` at most once:
/// where the program keeps its large structs (the qcow2 chain), off the stack.
pub struct StaticCell<T> {
    value: UnsafeCell<T>,
    taken: AtomicBool,
}

// SAFETY: `take` gives out the only reference, once; the flag is atomic.
unsafe impl<T: Send> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    pub const fn new(value: T) -> Self {
        StaticCell { value: UnsafeCell::new(value), taken: AtomicBool::new(false) }
    }

    /// The value, the first time; `None` afterwards.
    #[allow(clippy::mut_from_ref)] // unique: the atomic flag lets the reference out only once
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag was clear, so no other reference to the value exists or will.
        Some(unsafe { &mut *self.value.get() })
    }
}
