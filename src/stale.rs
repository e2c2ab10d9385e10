//! Creator locks and the stale sweep of named objects (the named
//! shared-memory segments; the FIFO transport has none since it hands over
//! inherited pipes).
//!
//! A creator holds an exclusive `flock` on its object for as long as it owns
//! it; the kernel drops the lock when the creator's last descriptor closes,
//! i.e. when it dies. The sweep takes an object only if it can get that lock:
//! no pid is trusted, so a live creator in another PID namespace (where its
//! pid means nothing) never loses its object. Only objects whose format says
//! their creator locks them are swept: an older remora's live object would
//! look abandoned.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::sys::{fd, lock, shm};

/// How one kind of object is named, opened, recognised and removed.
pub(crate) trait Stale {
    /// Whether `name` is in the pattern this kind's creators use.
    fn ours(name: &str) -> bool;
    /// Opens object `name` in `dir` without following symlinks.
    fn open(dir: &Path, name: &str) -> io::Result<OwnedFd>;
    /// Whether the object's format promises a creator lock.
    fn lock_aware(object: &OwnedFd) -> bool;
    /// Removes object `name` from `dir` (best effort); `object` is the
    /// descriptor `open` gave, whose lock the sweep now holds.
    fn remove(dir: &Path, name: &str, object: &OwnedFd);
}

/// Removes the objects in `dir` of kind `K`, owned by our uid, whose
/// creators are dead. Best effort: errors are ignored.
pub(crate) fn sweep<K: Stale>(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let uid = shm::current_uid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| K::ours(n)) else {
            continue;
        };
        let Ok(object) = K::open(dir, name) else {
            continue;
        };
        let mine = fd::stat(object.as_fd()).is_ok_and(|id| id.uid == uid);
        if mine
            && K::lock_aware(&object)
            && lock::try_lock_exclusive(object.as_fd()).unwrap_or(false)
        {
            K::remove(dir, name, &object);
        }
    }
}

/// Creates an object with `create` and takes its creator lock. Between the
/// creation and the lock another process's sweep may take the unlocked
/// object for a stale one and remove it: then the name, reopened with
/// `reopen`, no longer leads to our object (or the sweep holds the lock),
/// and we start again, up to three times.
pub(crate) fn create_locked<T>(
    mut create: impl FnMut() -> io::Result<(T, OwnedFd)>,
    mut reopen: impl FnMut(&T) -> io::Result<OwnedFd>,
) -> io::Result<(T, OwnedFd)> {
    for _attempt in 0..3 {
        let (name, object) = create()?;
        let locked = lock::try_lock_exclusive(object.as_fd())?;
        let still_ours = locked
            && reopen(&name).is_ok_and(|again| {
                match (fd::stat(object.as_fd()), fd::stat(again.as_fd())) {
                    (Ok(a), Ok(b)) => a.same_file(&b),
                    _ => false,
                }
            });
        if still_ours {
            return Ok((name, object));
        }
    }
    Err(io::Error::from_raw_os_error(libc::EWOULDBLOCK))
}
