//! Directory and FIFO nodes for the FIFO transport: `mkdtemp`, `mkfifoat`,
//! `openat` (never following symlinks), `unlinkat`, `rmdir`.
//!
//! Everything inside the transport's directory is reached through a
//! directory descriptor (`*at` calls) so that, once the directory itself is
//! checked, no path component can be swapped under us.

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

/// `mkdtemp(3)`: creates a fresh directory, mode 0700, from `template`
/// (which must end in `XXXXXX`) and returns its path.
pub(crate) fn mkdtemp(template: &Path) -> io::Result<PathBuf> {
    let mut bytes = c_path(template)?.into_bytes_with_nul();
    // SAFETY: `bytes` is a writable NUL-terminated buffer; mkdtemp only
    // rewrites the trailing X's in place.
    let ret = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    if ret.is_null() {
        return Err(io::Error::last_os_error());
    }
    bytes.pop(); // the NUL
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

/// Opens a directory for `*at` calls, refusing a symlink in the last
/// component.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let cpath = c_path(path)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = retry_eintr(|| {
        // SAFETY: `cpath` is a valid NUL-terminated string.
        unsafe { libc::open(cpath.as_ptr(), flags) }
    })?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkfifoat(2)` with `mode` (further restricted by the umask; callers
/// `fchmod` the opened FIFO to the exact mode).
pub(crate) fn mkfifo_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string; `dir` is open.
    cvt(unsafe { libc::mkfifoat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// `openat(2)` of `name` in `dir` with `flags`, plus `O_CLOEXEC` (so no
/// other child inherits it) and `O_NOFOLLOW`.
pub(crate) fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let fd = retry_eintr(|| {
        // SAFETY: `name` is a valid NUL-terminated string; `dir` is open;
        // without O_CREAT the mode argument is ignored.
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0 as libc::mode_t) }
    })?;
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates regular file `name` in `dir` for writing, failing if it exists.
pub(crate) fn create_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<OwnedFd> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let fd = retry_eintr(|| {
        // SAFETY: `name` is a valid NUL-terminated string; `dir` is open.
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::mode_t) }
    })?;
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes `name` from `dir`; a missing entry is not an error.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string; `dir` is open.
    match cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}

/// Removes the empty directory `path`; a missing one is not an error.
pub(crate) fn rmdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string.
    match cvt(unsafe { libc::rmdir(path.as_ptr()) }) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}

/// Whether `path` exists (`access(F_OK)`). Errors other than `ENOENT` count
/// as "exists": the caller then keeps waiting rather than assume it gone.
pub(crate) fn exists(path: &CStr) -> bool {
    // SAFETY: `path` is a valid NUL-terminated string.
    let ret = unsafe { libc::access(path.as_ptr(), libc::F_OK) };
    ret == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

/// Whether the calling process may create entries in directory `path`.
pub(crate) fn writable_dir(path: &Path) -> bool {
    let Ok(cpath) = c_path(path) else {
        return false;
    };
    // SAFETY: `cpath` is a valid NUL-terminated string.
    unsafe { libc::access(cpath.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The bytes of a path, for the `REMORA_CHANNEL` value.
pub(crate) fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}
