//! Thin, safe wrappers over the libc calls remora needs.
//!
//! Everything that touches `libc` lives under this module so the layers above
//! (segment, ring, doorbell, channel) stay free of raw system calls. Each
//! wrapper turns a failing call into an [`std::io::Error`] carrying `errno`.

pub(crate) mod clock;
pub(crate) mod fd;
pub(crate) mod futex;
pub(crate) mod inherit;
pub(crate) mod lock;
pub(crate) mod mapping;
pub(crate) mod memfd;
pub(crate) mod pipe;
pub(crate) mod process;
pub(crate) mod random;
pub(crate) mod robust;
pub(crate) mod shm;
pub(crate) mod signal;
pub(crate) mod socket;

use std::io;

/// Converts a `-1`-on-failure libc return value into an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries `f` while it fails with `EINTR`.
pub(crate) fn retry_eintr(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
