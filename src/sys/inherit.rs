//! Descriptors a spawned child inherits, and only that child.
//!
//! Everything remora opens is close-on-exec, so no other program this
//! process starts meanwhile (another thread's `Command::spawn`) inherits a
//! segment, a pipe or a socket meant for one child. The spawner lists the
//! descriptors the next child must keep in an [`InheritList`]; a
//! `pre_exec` hook clears their close-on-exec flag in the forked child
//! only, between `fork` and `exec`.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// The most descriptors one child inherits: a segment or control socket,
/// plus two pipes for each of 32 FIFO channels, with room to spare.
pub(crate) const MAX_INHERITED: usize = 80;

/// The descriptors the next spawned child inherits (-1: an empty slot).
///
/// A fixed array of atomics: the `pre_exec` hook runs in a forked copy of
/// a possibly multi-threaded process, where it may neither allocate nor
/// take a lock.
#[derive(Debug)]
pub(crate) struct InheritList {
    fds: [AtomicI32; MAX_INHERITED],
}

impl InheritList {
    /// An empty list, shared with the hook [`InheritList::hook`] makes.
    pub(crate) fn new() -> Arc<InheritList> {
        Arc::new(InheritList {
            fds: std::array::from_fn(|_| AtomicI32::new(-1)),
        })
    }

    /// Makes `fds` the descriptors the next child inherits. More than
    /// [`MAX_INHERITED`] is an error (`EMFILE`), checked before anything is
    /// stored.
    pub(crate) fn set(&self, fds: &[RawFd]) -> io::Result<()> {
        if fds.len() > MAX_INHERITED {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        for (slot, fd) in self
            .fds
            .iter()
            .zip(fds.iter().copied().chain(std::iter::repeat(-1)))
        {
            // Relaxed: read by the hook in the child that `Command::spawn`
            // forks later on this same thread (fork orders it).
            slot.store(fd, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Empties the list (after a spawn: later children inherit nothing).
    pub(crate) fn clear(&self) {
        let _ = self.set(&[]);
    }

    /// The `pre_exec` hook: clears close-on-exec on every listed
    /// descriptor. Async-signal-safe: atomic loads and `fcntl` only.
    pub(crate) fn hook(list: Arc<InheritList>) -> impl FnMut() -> io::Result<()> + Send + Sync {
        move || {
            for slot in &list.fds {
                // Relaxed: stored before the fork on the forking thread.
                let fd = slot.load(Ordering::Relaxed);
                if fd < 0 {
                    continue;
                }
                // SAFETY: fcntl is async-signal-safe and has no memory
                // preconditions; F_SETFD on a number that is not open
                // fails harmlessly with EBADF (reported below).
                if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_and_clear_empties() {
        let list = InheritList::new();
        list.set(&[5, 6]).unwrap();
        list.set(&[7]).unwrap();
        let held: Vec<i32> = list.fds.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        assert_eq!(&held[..2], &[7, -1]);
        list.clear();
        assert!(list.fds.iter().all(|s| s.load(Ordering::Relaxed) == -1));
        let too_many = vec![3; MAX_INHERITED + 1];
        assert!(list.set(&too_many).is_err());
    }
}
