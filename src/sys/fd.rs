//! Plain descriptor calls: `pread`/`write`, `fstat` identity checks,
//! descriptor flags. (Pipes: `sys::pipe`.)

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::cvt;

/// A byte count or `-1` as an `io::Result`.
pub(crate) fn sized(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `pread(2)` into `buf` at `offset`.
pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let (ptr, len, at) = (buf.as_mut_ptr().cast(), buf.len(), offset as libc::off_t);
    // SAFETY: `buf` is writable for its length; the descriptor is open.
    sized(unsafe { libc::pread(fd.as_raw_fd(), ptr, len, at) })
}

/// `write(2)`, maybe partial. On a pipe without readers this raises
/// SIGPIPE: callers hold a [`SigpipeBlock`](super::signal::SigpipeBlock).
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` readable bytes for the call.
    sized(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

/// What [`stat`] reports about a descriptor, to check it before trusting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    /// `st_mode`: file type and permission bits.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    /// Device and inode: the file's identity.
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl FileId {
    /// Whether two descriptors refer to the same file.
    pub(crate) fn same_file(&self, other: &FileId) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// `fstat(2)`.
pub(crate) fn stat(fd: BorrowedFd<'_>) -> io::Result<FileId> {
    stat_number(fd.as_raw_fd())
}

/// [`stat`] of whatever descriptor number `fd` is, open or not (`EBADF`):
/// for numbers another process says it handed down, before anything here
/// may treat them as owned or borrowed.
pub(crate) fn stat_number(fd: RawFd) -> io::Result<FileId> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable; fstat reads no memory of ours and on a
    // number that is not open only fails (EBADF).
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    let (mode, uid, dev, ino) = (st.st_mode, st.st_uid, st.st_dev, st.st_ino);
    Ok(FileId {
        mode,
        uid,
        dev,
        ino,
    })
}

/// Sets close-on-exec and `O_NONBLOCK` on `fd` (the latter on its open
/// file description, shared with every copy of it).
pub(crate) fn set_cloexec_nonblock(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on an open descriptor; no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}
