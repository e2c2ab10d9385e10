//! Frames on the wire, and the aligned buffer they are built and read in.
//!
//! ```text
//! frame   = header payload padding   (padding: to the next 16 bytes)
//! header  = len: u32 | kind: u32 | 8 reserved bytes   (native order)
//! HELLO   = the first frame of each direction, kind "HEL1", payload: the
//!           sender's outgoing then incoming type fingerprint (u64 each)
//! ```
//!
//! The header is the ring's; padding keeps every payload 16-aligned in the
//! receiver's 16-aligned buffer, so rkyv can read archives in place.

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ops::Range;
use std::ptr::NonNull;

use crate::ring::{FRAME_HEADER, KIND_MSG, frame_size};

pub(super) const HEADER: usize = FRAME_HEADER;
pub(super) const MSG: u32 = KIND_MSG;
pub(super) const HELLO: u32 = u32::from_le_bytes(*b"HEL1");
pub(super) const HELLO_LEN: usize = 16;
pub(super) const HELLO_FRAME: usize = HEADER + HELLO_LEN;

/// Bytes a frame with a `len`-byte payload takes on the wire.
#[inline]
pub(super) fn wire_size(len: usize) -> usize {
    frame_size(len as u64) as usize
}

#[inline]
pub(super) fn header(len: u32, kind: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&len.to_ne_bytes());
    h[4..8].copy_from_slice(&kind.to_ne_bytes());
    h
}

/// The `at`-th native-endian `u32` and `u64` word readers, for headers
/// (`(len, kind)` = `(u32_at(0), u32_at(4))`) and HELLO payloads.
#[inline]
pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// A fixed, 16-aligned, zeroed heap buffer, allocated once per channel end
/// and never grown. Raw rather than a `Box<[u8]>` because received frames
/// are handed out as raw pointers into it: no unique borrow of the whole
/// buffer is asserted while one is outstanding.
#[derive(Debug)]
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory owned by this value; access goes through `&self` /
// `&mut self` (or raw frame pointers that borrow the owner).
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// `len` > 0, a multiple of 16.
    pub(super) fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, 16).expect("buffer size fits in isize");
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) });
        let Some(ptr) = ptr else {
            handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to byte `at` (`at <= len`).
    #[inline]
    pub(super) fn at(&self, at: usize) -> *mut u8 {
        assert!(at <= self.len);
        // SAFETY: in the allocation or one past its end.
        unsafe { self.ptr.as_ptr().add(at) }
    }

    #[inline]
    pub(super) fn bytes(&self, range: Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked), initialised (zeroed, then only
        // written with bytes), and `&self` keeps it from being written.
        unsafe { std::slice::from_raw_parts(self.at(range.start), range.len()) }
    }

    #[inline]
    pub(super) fn bytes_mut(&mut self, range: Range<usize>) -> &mut [u8] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_sizes() {
        let h = header(1234, MSG);
        assert_eq!((u32_at(&h, 0), u32_at(&h, 4)), (1234, MSG));
        assert_eq!(
            [wire_size(0), wire_size(1), wire_size(16), wire_size(17)],
            [16, 32, 32, 48]
        );
        assert_eq!(HELLO_FRAME, wire_size(HELLO_LEN));
    }
}
