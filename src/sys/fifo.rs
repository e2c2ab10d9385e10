//! Directory and FIFO nodes for the FIFO transport. Everything inside the
//! transport's directory is reached through its descriptor (`*at` calls,
//! never following symlinks), so once the directory is checked no path
//! component can be swapped under us.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::{cvt, retry_eintr};

/// A path as a C string (`EINVAL` if it holds a NUL byte).
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `mkdtemp(3)` from `template` (ending in `XXXXXX`): the new directory.
pub(crate) fn mkdtemp(template: &Path) -> io::Result<PathBuf> {
    let mut bytes = c_path(template)?.into_bytes_with_nul();
    // SAFETY: `bytes` is a writable NUL-terminated buffer; mkdtemp only
    // rewrites the trailing X's in place.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    bytes.pop(); // the NUL
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

/// Opens a directory for `*at` calls, refusing a symlink.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let cpath = c_path(path)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `cpath` is a valid NUL-terminated string.
    let fd = retry_eintr(|| unsafe { libc::open(cpath.as_ptr(), flags) })?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkfifoat(2)` (the mode is filtered by the umask: callers `fchmod`).
pub(crate) fn mkfifo_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string; `dir` is open.
    cvt(unsafe { libc::mkfifoat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `openat(2)` of `name` in `dir` with `flags | O_CLOEXEC | O_NOFOLLOW`
/// (and `mode`, with `O_CREAT`).
fn open_at_mode(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let fd = retry_eintr(|| {
        // SAFETY: `name` is a valid NUL-terminated string; `dir` is open.
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::mode_t) }
    })?;
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(2)` of an existing `name` in `dir`.
pub(crate) fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    open_at_mode(dir, name, flags, 0)
}

/// Creates regular file `name` in `dir` for writing, failing if it exists.
pub(crate) fn create_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<OwnedFd> {
    open_at_mode(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        mode,
    )
}

/// Removes `name` from `dir`.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string; `dir` is open.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// Whether `path` exists (`access(F_OK)`; errors but `ENOENT` say yes).
pub(crate) fn exists(path: &CStr) -> bool {
    // SAFETY: `path` is a valid NUL-terminated string.
    let ret = unsafe { libc::access(path.as_ptr(), libc::F_OK) };
    ret == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}
