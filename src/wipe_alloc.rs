//! The global allocator: the system's, wiping every block before it is freed.
//!
//! envrun keeps each value in a type that wipes itself ([`crate::secret::Secret`],
//! `Zeroizing`), but libraries make copies it cannot reach: serde_json's scratch buffer for
//! strings with escapes, dotenvy's line buffer and expansion table, a `Vec` or `String` that
//! reallocates while it grows. Wiping in the allocator closes all of these at once: no block
//! of envrun's heap returns to the system allocator with its content, and growth copies into
//! a fresh block and wipes the old one instead of letting `realloc` free it as it is.
//!
//! `explicit_bzero` is glibc's and musl's memset that the compiler may not remove as a dead
//! store before `free`. The cost, measured on the masking benchmark
//! (`scripts/bench-supervise.sh`, 1 GiB through the scrubber), is in the commit that added
//! this module and in `docs/security.md`.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// [`System`], wiping blocks on free and on reallocation.
pub struct Wiping;

/// Overwrites `len` bytes at `ptr` with zeros, in a way the compiler keeps.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    if len > 0 {
        // SAFETY: the caller guarantees `ptr..ptr+len` is writable memory it owns.
        unsafe { libc::explicit_bzero(ptr.cast(), len) };
    }
}

// SAFETY: every method forwards to `System` with the same layouts it was given; `realloc`
// is implemented as alloc + copy + dealloc, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Wiping {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout (non-zero size, as GlobalAlloc requires).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes from `alloc` (the caller's
        // contract); it is wiped, then freed with the layout it was allocated with.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc's contract: `new_size` is non-zero and, rounded up to
        // `layout.align()`, does not overflow isize, so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block for the new layout.
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; the copy stays within both sizes;
            // the old block is then wiped and freed (`dealloc` above).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_content_through_growth_and_are_usable() {
        let w = Wiping;
        let layout = Layout::from_size_align(16, 8).unwrap();
        // SAFETY: a valid non-zero layout; the block is used within its size and freed
        // with the layout of its last (re)allocation.
        unsafe {
            let p = w.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 0xab, 16);
            let q = w.realloc(p, layout, 64);
            assert!(!q.is_null());
            assert!(std::slice::from_raw_parts(q, 16).iter().all(|b| *b == 0xab));
            w.dealloc(q, Layout::from_size_align(64, 8).unwrap());
        }
    }
}
