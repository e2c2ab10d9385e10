//! The FIFO directory: where it is made, what is in it, how it goes away.
//!
//! `mkdtemp` makes `remora-<pid>-XXXXXX` (mode 0700) under
//! `$XDG_RUNTIME_DIR` when that is set, absolute and writable (it is private
//! to the user and cleaned at logout), else under the temp dir. Inside:
//!
//! ```text
//! manifest        channel names, capacities, wait hints (see manifest.rs)
//! <i>.p2c         FIFO, parent to child, channel index i (mode 0600)
//! <i>.c2p         FIFO, child to parent
//! claim           created (O_EXCL) by the child that attaches
//! ```
//!
//! The child removes the directory once it has opened its FIFOs; the parent
//! removes it if the child dies or never attaches (on `Child` drop, wait, or
//! when it sees the child gone). A parent killed before either happens
//! leaves it behind: the next FIFO set created by the same user sweeps
//! `remora-<pid>-*` directories whose pid is dead, as segments are swept.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::manifest;
use crate::sys::{fd, fifo, lock, shm};

/// Prefix of every FIFO directory name.
pub(super) const PREFIX: &str = "remora-";
/// The manifest's file name.
pub(super) const MANIFEST: &CStr = c"manifest";
/// The claim file's name.
pub(super) const CLAIM: &CStr = c"claim";

/// Which FIFO of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    ParentToChild,
    ChildToParent,
}

impl Direction {
    /// As the error messages spell it.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Direction::ParentToChild => "parent-to-child",
            Direction::ChildToParent => "child-to-parent",
        }
    }
}

/// The FIFO's name inside the directory: indices only, never user names.
pub(super) fn fifo_name(index: usize, direction: Direction) -> CString {
    let suffix = match direction {
        Direction::ParentToChild => "p2c",
        Direction::ChildToParent => "c2p",
    };
    CString::new(format!("{index}.{suffix}")).expect("no NUL in a formatted index")
}

/// Where FIFO directories may go, best first.
fn bases() -> Vec<PathBuf> {
    let mut bases = Vec::with_capacity(2);
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if xdg.is_absolute() && xdg.is_dir() && fifo::writable_dir(&xdg) {
            bases.push(xdg);
        }
    }
    bases.push(std::env::temp_dir());
    bases
}

/// Whether the directory was made by a remora that holds a creator lock:
/// its manifest says [`manifest::VERSION`], or it has none yet (its creator
/// holds the lock from before the manifest is written). An older remora's
/// live directory would otherwise look abandoned.
fn lock_aware(dir: BorrowedFd<'_>) -> bool {
    let file = match fifo::open_at(dir, MANIFEST, libc::O_RDONLY | libc::O_NOFOLLOW) {
        Ok(file) => file,
        Err(e) => return e.raw_os_error() == Some(libc::ENOENT),
    };
    let mut head = [0u8; 12];
    fd::pread(file.as_fd(), &mut head, 0).is_ok_and(|n| n == head.len())
        && head[..8] == manifest::MAGIC
        && u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) == manifest::VERSION
}

/// Makes a fresh private directory and takes its creator lock; returns its
/// path and the locked descriptor. Sweeps stale directories of dead
/// processes in the same place first. Between `mkdtemp` and `flock` another
/// process's sweep may take the unlocked directory for a stale one and
/// remove it: then the path no longer leads to our directory, and we start
/// again.
pub(super) fn create_locked() -> io::Result<(PathBuf, OwnedFd)> {
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for base in bases() {
        sweep_stale(&base);
        for _attempt in 0..3 {
            let template = base.join(format!("{PREFIX}{}-XXXXXX", std::process::id()));
            let path = match fifo::mkdtemp(&template) {
                Ok(path) => path,
                Err(e) => {
                    last = e;
                    break;
                }
            };
            let fd = fifo::open_dir(&path)?;
            let locked = lock::try_lock_exclusive(fd.as_fd())?;
            let still_ours = locked
                && fifo::open_dir(&path).is_ok_and(|again| {
                    match (fd::stat(fd.as_fd()), fd::stat(again.as_fd())) {
                        (Ok(a), Ok(b)) => a.same_file(&b),
                        _ => false,
                    }
                });
            if still_ours {
                return Ok((path, fd));
            }
            last = io::Error::from_raw_os_error(libc::EWOULDBLOCK);
        }
    }
    Err(last)
}

/// Removes what a FIFO set of `channels` channels puts in the directory
/// `path` (open as `dir`), then the directory. Best effort: errors are
/// ignored (a later sweep retries once our pid is gone).
pub(super) fn remove(path: &CStr, dir: BorrowedFd<'_>, channels: usize) {
    let _ = fifo::unlink_at(dir, MANIFEST);
    let _ = fifo::unlink_at(dir, CLAIM);
    for i in 0..channels {
        for d in [Direction::ParentToChild, Direction::ChildToParent] {
            let _ = fifo::unlink_at(dir, &fifo_name(i, d));
        }
    }
    if fifo::rmdir(path).is_err() {
        // Something unexpected is inside; it is our private directory, so
        // remove it all (std's remove_dir_all does not follow symlinks).
        let path = Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Removes `remora-<pid>-*` directories in `base` owned by us whose creator
/// is dead. A live creator holds an exclusive `flock` on its directory (see
/// `sys::lock`), so a directory whose lock we get is stale, whatever PID
/// namespace its creator ran in. (A creator caught between `mkdtemp` and
/// `flock` notices that its directory is gone and starts again.)
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = shm::current_uid();
    for entry in entries.flatten() {
        // Only names we make: `remora-<pid>-<suffix>`.
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, _)| pid.parse::<u32>().is_ok());
        if !ours {
            continue;
        }
        // symlink_metadata: a symlink named like ours is not ours to follow.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let Ok(fd) = fifo::open_dir(&entry.path()) else {
            continue;
        };
        if lock_aware(fd.as_fd()) && lock::try_lock_exclusive(fd.as_fd()).unwrap_or(false) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
