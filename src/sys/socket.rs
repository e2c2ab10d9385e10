//! Unix `SOCK_SEQPACKET` sockets in the abstract namespace: listen, connect,
//! accept, peer credentials, and messages carrying descriptors
//! (`SCM_RIGHTS`).
//!
//! Every socket here is non-blocking and close-on-exec. Sequenced packets
//! keep message boundaries, so one `recv` is one handshake message: a
//! short or over-long message is a protocol error, never a partial read to
//! resume.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{cvt, retry_eintr};

/// The credentials the kernel recorded for a socket's peer when it
/// connected (`SO_PEERCRED`): the pid is as seen from our PID namespace (0
/// if the peer's is not visible from ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerCred {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `sockaddr_un` for the abstract name `name` (a leading NUL is added:
/// abstract names live in no filesystem and vanish with their socket).
fn abstract_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_un is a valid value of this C struct.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: the abstract namespace.
    if name.is_empty() || name.len() + 1 > addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (dst, &src) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket() -> io::Result<OwnedFd> {
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain syscall; no pointers involved.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, kind, 0) })?;
    // SAFETY: socket returned a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening socket bound to abstract name `name`. `EADDRINUSE` means a
/// live process holds the name (a dead one's name is gone with it).
pub(crate) fn listen(name: &[u8], backlog: i32) -> io::Result<OwnedFd> {
    let (addr, len) = abstract_addr(name)?;
    let fd = seqpacket()?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) })?;
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Connects to abstract name `name`, without blocking. `ECONNREFUSED`:
/// nobody listens there; `EAGAIN`: the listener's backlog is full (retry).
pub(crate) fn connect(name: &[u8]) -> io::Result<OwnedFd> {
    let (addr, len) = abstract_addr(name)?;
    let fd = seqpacket()?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    retry_eintr(|| unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) })?;
    Ok(fd)
}

/// Accepts one pending connection (non-blocking, close-on-exec);
/// `EAGAIN` when none is waiting.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: null address pointers are allowed (we do not want the address).
    let fd = retry_eintr(|| unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags,
        )
    })?;
    // SAFETY: accept4 returned a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The peer's credentials (`SO_PEERCRED`).
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    // SAFETY: an all-zero ucred is a valid value of this C struct.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable for `len` bytes; the kernel writes at most that.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// `SO_PEERPIDFD` (Linux 6.5), asm-generic value (x86, arm, riscv, ...);
/// mips, sparc, parisc and alpha number it differently and use the
/// `pidfd_open` fallback (`None`).
const SO_PEERPIDFD: Option<libc::c_int> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "s390x",
    target_arch = "powerpc64"
)) {
    Some(77)
} else {
    None
};

/// A pidfd for the process at the other end of connected socket `fd`,
/// whose credentials were `cred`: `SO_PEERPIDFD` where the kernel has it
/// (the very process that connected, never a reused pid), else
/// `pidfd_open(cred.pid)` while the socket is still connected (the usual
/// approach: the pid could only have been reused if the peer already
/// died). `None` when neither works (old kernel, peer in a PID namespace
/// we cannot see: pid 0).
pub(crate) fn peer_pidfd(fd: BorrowedFd<'_>, cred: &PeerCred) -> Option<OwnedFd> {
    if let Some(option) = SO_PEERPIDFD {
        let mut raw: libc::c_int = -1;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `raw` is writable for `len` bytes; the kernel writes at
        // most that.
        let got = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw mut raw).cast(),
                &mut len,
            )
        };
        if got == 0 && raw >= 0 && len as usize == size_of::<libc::c_int>() {
            // SAFETY: the kernel installed a fresh pidfd (O_CLOEXEC) for us.
            return Some(unsafe { OwnedFd::from_raw_fd(raw) });
        }
    }
    let pid = u32::try_from(cred.pid).ok().filter(|&p| p > 0)?;
    super::process::pidfd_open(pid).ok()
}

/// Room for this many descriptors in one received message: one more than
/// any remora message carries, so a peer sending two is seen as such
/// (`fds.len() == 2`) rather than as a truncation.
pub(crate) const MAX_RECEIVED_FDS: usize = 4;

/// Sends one message, with descriptor `fd` attached if given, without
/// blocking (`MSG_DONTWAIT`: a peer that never reads cannot stall us; a
/// fresh socket always has room for one small message) and without SIGPIPE
/// (`MSG_NOSIGNAL`: a peer that already closed is `EPIPE`).
pub(crate) fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    debug_assert!(fds.len() <= 253, "SCM_MAX_FD");
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = (raw.len() * size_of::<RawFd>()) as libc::c_uint;
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    // u64 words: cmsghdr alignment.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is a valid value of this C struct.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `control` is `space` bytes, aligned for cmsghdr, and holds
        // exactly one header with `payload` bytes of data (CMSG_SPACE), so
        // the first header and its data are inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `msg` points at `iov` and `control`, both live for the call.
    let sent = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != data.len() {
        // Sequenced packets are sent whole or not at all.
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// One received message.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes of the message copied into the buffer.
    pub(crate) len: usize,
    /// Every descriptor the kernel installed for us (close-on-exec; closed
    /// when dropped), whatever the message said.
    pub(crate) fds: Vec<OwnedFd>,
    /// The message was longer than the buffer (`MSG_TRUNC`).
    pub(crate) truncated: bool,
    /// The ancillary data did not fit (`MSG_CTRUNC`): the peer sent more
    /// descriptors than [`MAX_RECEIVED_FDS`] (the kernel closed the rest).
    pub(crate) control_truncated: bool,
}

/// Receives one message without blocking (`EAGAIN` if none is queued;
/// `Ok` with `len == 0` and no descriptors at end of stream). With
/// `accept_fds` false no room is given for descriptors: the kernel
/// discards any the peer attached (a descriptor flood costs us nothing)
/// and reports them as `control_truncated`.
pub(crate) fn recv(sock: BorrowedFd<'_>, buf: &mut [u8], accept_fds: bool) -> io::Result<Received> {
    recv_fds(sock, buf, if accept_fds { MAX_RECEIVED_FDS } else { 0 })
}

/// The most descriptors [`recv_fds`] makes room for: a FIFO set's
/// hand-over (the claim end, two per channel for 32 channels).
pub(crate) const MAX_HANDED_FDS: usize = 1 + 2 * 32;

/// [`recv`] with room for up to `max_fds` descriptors (at most
/// [`MAX_HANDED_FDS`]); more is `control_truncated`, the rest closed by
/// the kernel.
pub(crate) fn recv_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<Received> {
    let accept_fds = max_fds > 0;
    let max_fds = max_fds.min(MAX_HANDED_FDS);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let payload = (max_fds * size_of::<RawFd>()) as libc::c_uint;
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    // Room for MAX_HANDED_FDS: CMSG_SPACE(264) is 280 bytes.
    let mut control = [0u64; 40];
    assert!(space <= size_of::<[u64; 40]>());
    // SAFETY: an all-zero msghdr is a valid value of this C struct.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if accept_fds {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
    }
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: `msg` points at `iov` (over `buf`) and `control`, both live
    // and writable for the call.
    let n = retry_eintr(|| unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) } as i32)?;
    let mut fds = Vec::new();
    if accept_fds {
        // SAFETY: the kernel filled `msg_controllen` bytes of `control`
        // with well-formed headers; CMSG_FIRSTHDR/NXTHDR stay inside that
        // length, and each SCM_RIGHTS header's data holds
        // `(cmsg_len - CMSG_LEN(0)) / 4` descriptors installed for us,
        // read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let bytes =
                        ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..bytes / size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    Ok(Received {
        len: n as usize,
        fds,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        control_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Waits until one of `fds` has one of its events, or `timeout` passes
/// (`None`: no limit). Returns how many have events; `EINTR` counts as a
/// wake-up with none.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: `fds` is a valid array of pollfds for its length; `ts`
    // outlives the call; a null sigmask leaves the mask alone.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(n as usize)
}

/// A connected pair of `SOCK_SEQPACKET` sockets (close-on-exec,
/// non-blocking): a spawned child's control socket and the parent's end.
/// Non-blocking is a property of each end's open file, so the child's
/// end stays non-blocking after it is handed down (every call here passes
/// `MSG_DONTWAIT` anyway).
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) })?;
    // SAFETY: socketpair returned two fresh descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether `fd` is a `SOCK_SEQPACKET` socket (`SO_TYPE`): what a peer
/// hands over as a control socket must be one.
pub(crate) fn is_seqpacket(fd: BorrowedFd<'_>) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` is writable for `len` bytes; the kernel writes at most
    // that (and fails with ENOTSOCK on anything but a socket).
    let ok = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut kind).cast(),
            &mut len,
        )
    } == 0;
    ok && kind == libc::SOCK_SEQPACKET
}
