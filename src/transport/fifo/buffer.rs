//! A fixed, 16-aligned, zero-initialised heap buffer: where the FIFO
//! transport builds outgoing frames and reads incoming ones in place.
//!
//! Allocated once per channel end, never grown: the size comes from the
//! channel's largest message, so no peer input can make us allocate.

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ops::Range;
use std::ptr::NonNull;

/// Alignment of the buffer (and of every frame in it): rkyv's requirement.
const ALIGN: usize = 16;

/// An owned, 16-aligned byte buffer.
///
/// Held as a raw allocation rather than a `Box<[u8]>` because received
/// frames are handed out as raw pointers into it (see `Frame`): no unique
/// borrow of the whole buffer is ever asserted while one is outstanding.
#[derive(Debug)]
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value; access goes
// through `&self`/`&mut self` (or raw frame pointers that borrow the owner).
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (`len` > 0, a multiple of 16).
    pub(super) fn new(len: usize) -> AlignedBuf {
        debug_assert!(len > 0 && len.is_multiple_of(ALIGN));
        let layout = Layout::from_size_align(len, ALIGN).expect("buffer size fits in isize");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    /// Length in bytes.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to byte `at` (`at <= len`).
    #[inline]
    pub(super) fn at(&self, at: usize) -> *mut u8 {
        debug_assert!(at <= self.len);
        // SAFETY: `at <= len` keeps the pointer inside the allocation or
        // one past its end.
        unsafe { self.ptr.as_ptr().add(at) }
    }

    /// The bytes in `range`.
    #[inline]
    pub(super) fn bytes(&self, range: Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); the memory is initialised (zeroed at
        // allocation, then only written with bytes) and `&self` keeps it
        // from being written meanwhile.
        unsafe { std::slice::from_raw_parts(self.at(range.start), range.end - range.start) }
    }

    /// The bytes in `range`, writable.
    #[inline]
    pub(super) fn bytes_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked), initialised, and `&mut self` makes
        // this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.at(range.start), range.end - range.start) }
    }

    /// Moves the bytes in `src` to the start of the buffer.
    #[inline]
    pub(super) fn move_to_front(&mut self, src: Range<usize>) {
        let len = src.end - src.start;
        self.bytes_mut(0..self.len).copy_within(src, 0);
        debug_assert!(len <= self.len);
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, ALIGN),
            )
        };
    }
}
