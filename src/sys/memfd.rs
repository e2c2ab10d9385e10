//! Anonymous memory files (`memfd_create`) and their seals.
//!
//! A sealed memfd is how a segment crosses to a process that must not be
//! able to resize it: once `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` are
//! set, nobody (its creator included) can change its size again, so a
//! mapping of it can never raise SIGBUS by a truncation. Seals are only
//! ever added, never removed, so a receiver that has checked them may rely
//! on them for as long as it holds the descriptor.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, retry_eintr};

/// The seals a segment must carry before anyone maps it.
pub(crate) const REQUIRED_SEALS: u32 =
    (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL) as u32;

/// Seals that would make a shared writable mapping impossible (the receiver
/// reports them rather than failing in `mmap`).
pub(crate) const WRITE_SEALS: u32 = (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) as u32;

/// `MFD_NOEXEC_SEAL` (Linux 6.3): the file can never be made executable.
/// Older kernels reject the flag with `EINVAL`; we then create without it.
const MFD_NOEXEC_SEAL: libc::c_uint = 0x0008;

/// Creates an empty memfd that accepts seals, close-on-exec, mode 0600.
///
/// `name` only shows in `/proc/<pid>/fd` links (`/memfd:<name>`); it names
/// nothing anyone can open.
pub(crate) fn create(name: &CStr) -> io::Result<OwnedFd> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let raw = match memfd_create(name, base | MFD_NOEXEC_SEAL) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => memfd_create(name, base)?,
        other => other?,
    };
    // SAFETY: memfd_create returned a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // A memfd starts 0777. Its only path is `/proc/<pid>/fd/<n>`, guarded
    // by ptrace access rules, but 0600 keeps even that to our user.
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })?;
    Ok(fd)
}

fn memfd_create(name: &CStr, flags: libc::c_uint) -> io::Result<libc::c_int> {
    // SAFETY: `name` is NUL-terminated; the call takes no other pointers.
    retry_eintr(|| unsafe { libc::memfd_create(name.as_ptr(), flags) })
}

/// Adds `seals` (`F_ADD_SEALS`).
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor; no pointers involved.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) }).map(drop)
}

/// Whether `fd`'s file lives on tmpfs/shmem (`fstatfs`), where every
/// memfd made without `MFD_HUGETLB` lives. A hugetlbfs memfd accepts the
/// same seals, yet its owner can still punch holes in it
/// (`FALLOC_FL_PUNCH_HOLE`), and touching a hole raises SIGBUS in every
/// mapping when no huge page is free; on shmem a punched hole reads back
/// as fresh zero pages (bad data, which the receivers already survive).
pub(crate) fn on_tmpfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is writable for one struct statfs.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) })?;
    // The field's type differs between targets (the casts are no-ops on
    // some); the magic fits in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let on_tmpfs = fs.f_type as i64 == libc::TMPFS_MAGIC as i64;
    Ok(on_tmpfs)
}

/// The seals set on `fd` (`F_GET_SEALS`). `EINVAL` means the file cannot
/// carry seals at all: it is not a memfd (or other shmem file).
pub(crate) fn seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: fcntl on an open descriptor; no pointers involved.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) }).map(|s| s as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn seals_are_added_and_stick() {
        let fd = create(c"remora-test").unwrap();
        // SAFETY: plain syscall on a descriptor we own.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 8192) }, 0);
        assert_eq!(seals(fd.as_fd()).unwrap() & REQUIRED_SEALS, 0);
        add_seals(fd.as_fd(), REQUIRED_SEALS).unwrap();
        assert_eq!(seals(fd.as_fd()).unwrap() & REQUIRED_SEALS, REQUIRED_SEALS);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) }, -1);
        // F_SEAL_SEAL: no further seals.
        assert!(add_seals(fd.as_fd(), libc::F_SEAL_WRITE as u32).is_err());
    }

    #[test]
    fn a_pipe_cannot_carry_seals() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors we own.
        let (r, _w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        assert_eq!(
            seals(r.as_fd()).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
