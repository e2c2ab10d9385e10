//! Plain descriptor calls: non-blocking `read`/`write`, `poll`/`ppoll`,
//! `fstat` identity checks, pipe buffer sizes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::clock::MonoTime;
use super::cvt;

/// A byte count or `-1` as an `io::Result`.
fn sized(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `read(2)`: `Ok(0)` is end of file; `EAGAIN`/`EINTR` are errors.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes that we own for the call.
    sized(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
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

/// Waits until `fd` has one of `events` (or an error/hang-up), `watch`
/// becomes readable, or `deadline` passes; returns whether `watch` (a
/// pidfd) is readable. `EINTR` counts as a wake-up.
pub(crate) fn poll(
    fd: BorrowedFd<'_>,
    events: i16,
    watch: Option<BorrowedFd<'_>>,
    deadline: MonoTime,
) -> bool {
    let pfd = |fd, events| libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let mut fds = [
        pfd(fd.as_raw_fd(), events),
        pfd(watch.map_or(-1, |w| w.as_raw_fd()), libc::POLLIN),
    ];
    let left = deadline
        .as_nanos()
        .saturating_sub(MonoTime::now().as_nanos());
    let timeout = libc::timespec {
        tv_sec: (left / 1_000_000_000) as libc::time_t,
        tv_nsec: (left % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: two valid pollfds (a negative fd is ignored); `timeout`
    // outlives the call; a null sigmask leaves the mask alone.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &timeout, std::ptr::null()) };
    n > 0 && fds[1].revents != 0
}

/// The events of `events` (plus `POLLERR`/`POLLHUP`) that `fd` has now (0
/// if `poll` fails). Does not take the pipe's lock, so spinning on it does
/// not slow the peer's `read`/`write`.
pub(crate) fn revents(fd: BorrowedFd<'_>, events: i16) -> i16 {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n > 0 { pfd.revents } else { 0 }
}

/// Bytes queued in the pipe behind `fd` (`FIONREAD`); 0 on failure.
pub(crate) fn queued(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the valid pointer.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if ret == 0 { n.max(0) as usize } else { 0 }
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
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and the descriptor is open.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    let (mode, uid, dev, ino) = (st.st_mode, st.st_uid, st.st_dev, st.st_ino);
    Ok(FileId {
        mode,
        uid,
        dev,
        ino,
    })
}

/// `fchmod(2)`.
pub(crate) fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// Asks for a pipe buffer of `bytes` (`F_SETPIPE_SZ`); best effort:
/// unprivileged users are capped by `pipe-max-size` and a page budget.
pub(crate) fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a pipe descriptor we hold; no pointers.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
}

/// The pipe's buffer size (`F_GETPIPE_SZ`; 64 KiB if the call fails).
pub(crate) fn pipe_size(fd: BorrowedFd<'_>) -> usize {
    // SAFETY: fcntl on a pipe descriptor we hold; no pointers.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if n > 0 { n as usize } else { 1 << 16 }
}
