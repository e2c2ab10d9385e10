//! Pipe calls for the FIFO transport: `pipe2`, non-blocking `read`,
//! `poll`/`ppoll` readiness, `FIONREAD`, pipe buffer sizes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::clock::MonoTime;
use super::fd::sized;
use super::{cvt, socket};

/// `pipe2(O_CLOEXEC | O_NONBLOCK)`: `(read end, write end)`, both at
/// numbers above 2 ([`above_stdio`]).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd` itself if its number is above 2, else a close-on-exec copy at 3
/// or above (`F_DUPFD_CLOEXEC`; the low number is closed). In a process
/// started with stdin, stdout or stderr closed, a new descriptor takes the
/// free low number, and the next `println!` (or a child that inherits its
/// stdio) would write into a channel's pipe.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; no pointers.
    let n = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// `read(2)`: `Ok(0)` is end of file; `EAGAIN`/`EINTR` are errors.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes that we own for the call.
    sized(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
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
    // A negative number is ignored.
    let watch = watch.map_or(-1, |w| w.as_raw_fd());
    let mut fds = [pollfd(fd.as_raw_fd(), events), pollfd(watch, libc::POLLIN)];
    let left = deadline
        .as_nanos()
        .saturating_sub(MonoTime::now().as_nanos());
    let woken = socket::poll(&mut fds, Some(Duration::from_nanos(left)));
    woken.is_ok_and(|n| n > 0) && fds[1].revents != 0
}

/// The events of `events` (plus `POLLERR`/`POLLHUP`) that `fd` has now (0
/// if `poll` fails). Does not take the pipe's lock, so spinning on it does
/// not slow the peer's `read`/`write`.
/// (`poll` with a zero timeout: a little cheaper than `ppoll`'s timespec,
/// and this runs in spin loops.)
pub(crate) fn revents(fd: BorrowedFd<'_>, events: i16) -> i16 {
    let mut pfd = pollfd(fd.as_raw_fd(), events);
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n > 0 { pfd.revents } else { 0 }
}

fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Bytes queued in the pipe behind `fd` (`FIONREAD`); 0 on failure.
pub(crate) fn queued(fd: BorrowedFd<'_>) -> usize {
    queued_checked(fd).unwrap_or(0)
}

/// Bytes queued in the pipe behind `fd` (`FIONREAD`); `None` on failure.
pub(crate) fn queued_checked(fd: BorrowedFd<'_>) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the valid pointer.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    (ret == 0).then_some(n.max(0) as usize)
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
