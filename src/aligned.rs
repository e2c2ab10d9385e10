//! The 16-aligned private buffer a receiver reads frames in (rkyv's and
//! the ring's frame alignment): the copy of a shared-memory frame
//! (`channel::copy`), the FIFO transport's receive and send buffers.

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ops::Range;
use std::ptr::NonNull;

/// A fixed, 16-aligned, zeroed heap buffer, allocated once and never
/// grown (zeroed, so large buffers are lazily backed by the kernel).
///
/// Raw rather than a `Box<[u8]>`: received frames are handed out as raw
/// pointers into it (borrowing its owner), so no unique borrow of the
/// whole buffer is ever asserted while one is outstanding.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory owned by this value; access goes through `&self` /
// `&mut self` (or raw frame pointers that borrow the owner).
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// `len` > 0, a multiple of 16.
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, 16).expect("buffer size fits in isize");
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) });
        let Some(ptr) = ptr else {
            handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to byte `at` (`at <= len`).
    #[inline]
    pub(crate) fn at(&self, at: usize) -> *mut u8 {
        assert!(at <= self.len);
        // SAFETY: in the allocation or one past its end.
        unsafe { self.ptr.as_ptr().add(at) }
    }

    #[inline]
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked), initialised (zeroed, then only
        // written with bytes), and `&self` keeps it from being written.
        unsafe { std::slice::from_raw_parts(self.at(range.start), range.len()) }
    }

    #[inline]
    pub(crate) fn bytes_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked), initialised, and `&mut self` makes
        // this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.at(range.start), range.len()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, 16),
            )
        };
    }
}
