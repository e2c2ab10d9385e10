//! Plain descriptor I/O for the FIFO transport: non-blocking `read`/`write`,
//! `ppoll` with an absolute deadline, `fstat` identity checks, and pipe
//! buffer sizes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::clock::MonoTime;
use super::cvt;

/// `read(2)` into `buf`. `Ok(0)` is end of file; `EAGAIN` and `EINTR` come
/// back as errors for the caller to handle.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes that we own for the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `pread(2)` into `buf` at `offset`.
pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length; the descriptor is open.
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `write(2)` of `buf`; may write only part of it. Errors (`EAGAIN`,
/// `EPIPE`, `EINTR`) come back for the caller to handle. On a pipe without
/// readers this raises SIGPIPE: callers hold a
/// [`SigpipeBlock`](super::signal::SigpipeBlock).
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` readable bytes for the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits until `fd` has one of `events` (or an error/hang-up), `watch`
/// becomes readable, or `deadline` passes; returns whether `watch` (a
/// pidfd) is readable. `EINTR` counts as a wake-up: callers re-check
/// everything anyway.
pub(crate) fn poll(
    fd: BorrowedFd<'_>,
    events: i16,
    watch: Option<BorrowedFd<'_>>,
    deadline: MonoTime,
) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: watch.map_or(-1, |w| w.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let timeout = remaining(deadline);
    // SAFETY: `fds` is an array of two valid pollfds (a negative fd is
    // ignored by the kernel); `timeout` outlives the call; a null sigmask
    // leaves the signal mask alone.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &timeout, std::ptr::null()) };
    n > 0 && fds[1].revents != 0
}

/// The events of `events` (plus `POLLERR`/`POLLHUP`) that `fd` has right
/// now: one `poll` with a zero timeout (0 if it fails).
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

/// Bytes queued in the pipe behind `fd` (either end), `ioctl(FIONREAD)`;
/// 0 if the call fails.
pub(crate) fn queued(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid
    // for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if ret == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Time left until `deadline` as a relative `timespec` (zero if past).
fn remaining(deadline: MonoTime) -> libc::timespec {
    let nanos = |t: libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
    let left = (nanos(deadline.to_timespec()) - nanos(MonoTime::now().to_timespec())).max(0);
    libc::timespec {
        tv_sec: (left / 1_000_000_000) as libc::time_t,
        tv_nsec: (left % 1_000_000_000) as libc::c_long,
    }
}

/// What [`stat`] reports about a descriptor, to check it before trusting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    /// `st_mode`: file type and permission bits.
    pub(crate) mode: u32,
    /// Owner uid.
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
    Ok(FileId {
        mode: st.st_mode,
        uid: st.st_uid,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// `fchmod(2)`.
pub(crate) fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// Asks for a pipe buffer of `bytes` (`F_SETPIPE_SZ`); best effort, since
/// unprivileged users are capped by `/proc/sys/fs/pipe-max-size` and a
/// per-user page budget. Returns the size in effect afterwards.
pub(crate) fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> usize {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a pipe descriptor we hold; no pointers.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    pipe_size(fd)
}

/// The pipe's buffer size (`F_GETPIPE_SZ`); the Linux default of 64 KiB if
/// the call fails.
pub(crate) fn pipe_size(fd: BorrowedFd<'_>) -> usize {
    // SAFETY: fcntl on a pipe descriptor we hold; no pointers.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if n > 0 { n as usize } else { 1 << 16 }
}

/// `pipe2(O_CLOEXEC | O_NONBLOCK)`: `(read end, write end)`.
pub(crate) fn anonymous_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
