//! Memory from the firmware's page allocator (`AllocatePages`): the job's big buffers (Argon2
//! blocks, the LUKS2 JSON area, bounce buffers, the read buffer). There is no heap.

use core::ptr::NonNull;

use uefi::boot::{self, AllocateType, MemoryType};
use zeroize::Zeroize;

pub const PAGE: usize = 4096;

/// Pages owned by the program: zeroed when allocated, wiped and freed when dropped (they may
/// have held key material: Argon2 blocks, decrypted sectors).
pub struct Pages {
    ptr: NonNull<u8>,
    len: usize,
}

impl Pages {
    /// At least `bytes` bytes (rounded up to whole pages; at least one page), page aligned.
    pub fn allocate(bytes: usize) -> Result<Pages, uefi::Error> {
        let count = bytes.div_ceil(PAGE).max(1);
        let ptr = boot::allocate_pages(AllocateType::AnyPages, MemoryType::LOADER_DATA, count)?;
        let mut pages = Pages { ptr, len: count * PAGE };
        pages.as_mut_slice().fill(0);
        Ok(pages)
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is the start of `len` bytes the firmware gave this value alone
        // (AllocatePages), mapped and writable, freed only in `drop`; `&mut self` makes the
        // slice the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.as_mut_slice().zeroize();
        // SAFETY: allocated by `allocate_pages` with this page count, and no reference into the
        // pages outlives `self` (every slice borrows it).
        let _ = unsafe { boot::free_pages(self.ptr, self.len / PAGE) };
    }
}
