//! POSIX shared-memory objects: create, open, size, reserve, unlink.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, retry_eintr};

/// Creates a new shared-memory object, failing if `name` exists.
///
/// `O_EXCL` makes a name collision (or a squatter who guessed the name) an
/// error instead of a silent attach; mode 0600 keeps other users out.
pub(crate) fn create(name: &str) -> io::Result<OwnedFd> {
    let cname = c_name(name)?;
    let fd = retry_eintr(|| {
        // SAFETY: `cname` is a valid NUL-terminated string.
        unsafe {
            libc::shm_open(
                cname.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::mode_t,
            )
        }
    })?;
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an existing shared-memory object read-write.
pub(crate) fn open(name: &str) -> io::Result<OwnedFd> {
    let cname = c_name(name)?;
    let fd = retry_eintr(|| {
        // SAFETY: `cname` is a valid NUL-terminated string.
        unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) }
    })?;
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the object's size and reserves its pages now.
///
/// `ftruncate` alone leaves a sparse object: a full `/dev/shm` would then
/// surface as SIGBUS on first touch. `posix_fallocate` makes it an `ENOSPC`
/// error here instead.
pub(crate) fn size_and_reserve(fd: &OwnedFd, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    retry_eintr(|| {
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::ftruncate(fd.as_raw_fd(), len) }
    })?;
    loop {
        // SAFETY: plain syscall on a descriptor we own.
        let err = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) };
        match err {
            0 => return Ok(()),
            libc::EINTR => continue,
            // Some filesystems cannot fallocate; the ftruncate size stands.
            libc::EOPNOTSUPP => return Ok(()),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// What [`stat`] reports about an object before it is trusted.
pub(crate) struct ObjectInfo {
    pub(crate) size: u64,
    pub(crate) owner_uid: u32,
    pub(crate) mode: u32,
}

/// `fstat` of an open object.
pub(crate) fn stat(fd: &OwnedFd) -> io::Result<ObjectInfo> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and the descriptor is open.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(ObjectInfo {
        size: st.st_size as u64,
        owner_uid: st.st_uid,
        mode: st.st_mode,
    })
}

/// Removes the name; existing mappings stay valid.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    let cname = c_name(name)?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    cvt(unsafe { libc::shm_unlink(cname.as_ptr()) }).map(drop)
}

/// The effective user id of this process.
pub(crate) fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
