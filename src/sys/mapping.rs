//! An owned `MAP_SHARED` mapping with a private guard page in front, unmapped
//! on drop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

use super::robust::entry_to_word;

/// Size of the private page in front of every mapping: it holds this
/// process's robust-list entries for liveness words in the segment's first
/// page (see [`crate::sys::robust`]), where the peer cannot write them. One
/// system page, so the shared part after it stays page-aligned.
fn guard_len() -> usize {
    entry_to_word()
}

/// A read-write shared mapping of a whole file descriptor, preceded by one
/// private anonymous page.
///
/// The mapping is only ever accessed through raw pointers and atomics: the
/// peer process can write any byte of it at any time, so no `&`/`&mut` to its
/// plain bytes is handed out here.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The private guard page; the shared part starts `guard_len()` bytes later.
    guard: NonNull<u8>,
    /// Length of the shared part.
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; all access goes
// through raw pointers and atomics whose synchronisation is the caller's job.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the base pointers and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write, behind a private page.
    pub(crate) fn new(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        let total = len
            .checked_add(guard_len())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh private anonymous reservation at a kernel-chosen
        // address; it aliases no Rust object.
        let guard = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if guard == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let guard = NonNull::new(guard.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // From here on, dropping `mapping` unmaps the whole reservation.
        let mapping = Mapping { guard, len };
        // SAFETY: `MAP_FIXED` replaces pages of our own fresh reservation
        // (nothing else lives there); the fd is open for reading and writing.
        let shared = unsafe {
            libc::mmap(
                mapping.base().cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if shared == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(mapping)
    }

    /// The first byte of the shared mapping (page-aligned).
    pub(crate) fn base(&self) -> *mut u8 {
        // SAFETY: the reservation is `guard_len() + len` bytes long.
        unsafe { self.guard.as_ptr().add(guard_len()) }
    }

    /// The private page in front of the shared mapping: byte `o` of it is
    /// where the robust-list entry of the word at `base() + o` lives.
    pub(crate) fn guard(&self) -> *mut u8 {
        self.guard.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `guard`/`guard_len() + len` are exactly the reservation, and
        // nothing borrows the mapping past the owner's lifetime (channel
        // halves hold an `Arc` to the owner; robust entries in the guard page
        // are unlinked by the owner before this runs).
        unsafe { libc::munmap(self.guard.as_ptr().cast(), guard_len() + self.len) };
    }
}
