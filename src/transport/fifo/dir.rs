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
use std::path::{Path, PathBuf};

use super::manifest;
use crate::stale;
use crate::sys::{fd, fifo};

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

/// FIFO directories for the stale sweep: `remora-<pid>-<suffix>`, swept
/// when their manifest says [`manifest::VERSION`] (or there is none yet:
/// the creator locks before writing it) and they are unlocked.
struct StaleDir;

impl stale::Stale for StaleDir {
    fn ours(name: &str) -> bool {
        name.strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, _)| pid.parse::<u32>().is_ok())
    }

    fn open(dir: &Path, name: &str) -> io::Result<OwnedFd> {
        // O_NOFOLLOW | O_DIRECTORY: a symlink or a file named like ours is
        // not ours to take.
        fifo::open_dir(&dir.join(name))
    }

    fn lock_aware(object: &OwnedFd) -> bool {
        let file = match fifo::open_at(object.as_fd(), MANIFEST, libc::O_RDONLY | libc::O_NOFOLLOW)
        {
            Ok(file) => file,
            Err(e) => return e.raw_os_error() == Some(libc::ENOENT),
        };
        let mut head = [0u8; 12];
        fd::pread(file.as_fd(), &mut head, 0).is_ok_and(|n| n == head.len())
            && head[..8] == manifest::MAGIC
            && u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) == manifest::VERSION
    }

    fn remove(dir: &Path, name: &str) {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
}

/// Makes a fresh private directory and takes its creator lock (see
/// `stale`); returns its path and the locked descriptor. Sweeps stale
/// directories of dead creators in the same place first.
pub(super) fn create_locked() -> io::Result<(PathBuf, OwnedFd)> {
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for base in bases() {
        stale::sweep::<StaleDir>(&base);
        let template = base.join(format!("{PREFIX}{}-XXXXXX", std::process::id()));
        let made = stale::create_locked(
            || {
                let path = fifo::mkdtemp(&template)?;
                let fd = fifo::open_dir(&path)?;
                Ok((path, fd))
            },
            |path| fifo::open_dir(path),
        );
        match made {
            Ok(made) => return Ok(made),
            Err(e) => last = e,
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
