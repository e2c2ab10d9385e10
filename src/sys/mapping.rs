//! An owned `MAP_SHARED` mapping, unmapped on drop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

/// A read-write shared mapping of a whole file descriptor.
///
/// The mapping is only ever accessed through raw pointers and atomics: the
/// peer process can write any byte of it at any time, so no `&`/`&mut` to its
/// plain bytes is handed out here.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; all access goes
// through raw pointers and atomics whose synchronisation is the caller's job.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the base pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write.
    pub(crate) fn new(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping at a kernel-chosen address; it aliases no
        // Rust object. The fd is open for reading and writing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte of the mapping (page-aligned).
    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and nothing
        // borrows the mapping past the owner's lifetime (channel halves hold
        // an `Arc` to the owner).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
