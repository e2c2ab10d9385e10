//! Descriptors a spawned child inherits, and only that child.
//!
//! Everything remora opens is close-on-exec, so no other program this
//! process starts meanwhile (another thread's `Command::spawn`) inherits a
//! segment, a pipe or a socket meant for one child. The spawner lists the
//! descriptors the next child must keep in an [`InheritList`]; a
//! `pre_exec` hook clears their close-on-exec flag in the forked child
//! only, between `fork` and `exec`.
//!
//! The child finds a descriptor with [`take_handed`]: the inherited
//! number if it survived, else the parent's `/proc/<pid>/fd/<n>`, checked
//! to be that very file, of the right type, either way. Every inherited
//! number taken (the control socket's too) is recorded once per process
//! ([`own_inherited`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use super::fd;

/// The most descriptors one child inherits: a sealed segment and the
/// control socket (FIFO pipe ends come over the control socket), with
/// room to spare.
pub(crate) const MAX_INHERITED: usize = 4;

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

/// A descriptor a parent hands to the child it spawns: its number in the
/// parent (and in the child, if inherited), the file's identity, and the
/// type it must have (`S_IFIFO` for a pipe end, `S_IFREG` for a memfd), so
/// that no other kind of file with a known identity (the control socket)
/// is ever taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handed {
    pub(crate) fd: RawFd,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// `st_mode & S_IFMT`.
    pub(crate) kind: u32,
}

impl Handed {
    /// Describes `fd`, open in this process, for a child.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> io::Result<Handed> {
        let id = fd::stat(fd)?;
        Ok(Handed {
            fd: fd.as_raw_fd(),
            dev: id.dev,
            ino: id.ino,
            kind: id.mode & libc::S_IFMT,
        })
    }

    /// Whether `fd` is this very file, of this type.
    pub(crate) fn is(&self, fd: BorrowedFd<'_>) -> bool {
        self.describes(fd::stat(fd))
    }

    /// Whether the number itself (`self.fd`, open or not) is that file.
    fn is_open_here(&self) -> bool {
        self.describes(fd::stat_number(self.fd))
    }

    fn describes(&self, id: std::io::Result<fd::FileId>) -> bool {
        id.is_ok_and(|s| {
            s.dev == self.dev && s.ino == self.ino && s.mode & libc::S_IFMT == self.kind
        })
    }
}

/// Why [`take_handed`] failed.
#[derive(Debug)]
pub(crate) enum TakeError {
    /// This process already took its hand-over (an earlier or racing
    /// `connect`): the numbers are owned elsewhere, or the peer's claim
    /// would refuse us anyway.
    Taken,
    /// Not inherited (closed, or another file at that number), and the
    /// parent's `/proc/<pid>/fd/<n>` could not be opened or is another file.
    Lost { path: String, source: io::Error },
}

/// Set by the first [`take_handed`] that takes its descriptor: one take
/// per process, whichever threads race to `connect()`.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Every inherited number this process took ownership of (the control
/// socket's, the memfd's), whoever took it: one record, so that no
/// variable can make two owners of one descriptor (a `REMORA_CHANNEL`
/// naming the control socket's number and identity).
static OWNED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Takes ownership of inherited number `h.fd` if it is open here, is that
/// very file of that type ([`Handed::is`]), is above 2, and no one in
/// this process took it before (the record above). `None` otherwise.
pub(crate) fn own_inherited(h: &Handed) -> Option<OwnedFd> {
    if h.fd <= 2 {
        return None;
    }
    let mut owned = OWNED.lock().unwrap_or_else(|p| p.into_inner());
    if owned.contains(&h.fd) || !h.is_open_here() {
        return None;
    }
    owned.push(h.fd);
    // SAFETY: the number is open and is the handed file (checked above),
    // inherited for us alone (no other owner in this process knows of it),
    // and the record (checked and updated under its lock) lets only one
    // caller ever take it.
    Some(unsafe { OwnedFd::from_raw_fd(h.fd) })
}

/// Test hook: counts the calls that took ownership of inherited numbers.
#[cfg(test)]
pub(crate) static INHERITED_TAKES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Test hook: a fresh "process", in which nothing was taken yet.
#[cfg(test)]
pub(crate) fn reset_taken() {
    // SeqCst: test set-up before the threads that race on these start
    // (their spawn orders it anyway).
    TAKEN.store(false, Ordering::SeqCst);
    INHERITED_TAKES.store(0, Ordering::SeqCst);
    OWNED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Child side: takes the descriptor `h` that parent `pid` handed down
/// (with access mode `O_RDONLY`, `O_WRONLY` or `O_RDWR`), close-on-exec
/// and non-blocking.
///
/// It is the inherited number if [`own_inherited`] takes it. Else the
/// parent's `/proc/<pid>/fd/<n>` ([`open_in_proc`]), for wrappers that
/// close inherited descriptors (`sudo` closes all above 2).
///
/// One call per process takes ([`TakeError::Taken`] after); a failed one
/// (the parent's `/proc` out of reach) can be tried again.
pub(crate) fn take_handed(pid: u32, h: Handed, access: libc::c_int) -> Result<OwnedFd, TakeError> {
    // AcqRel: exactly one caller in the process sees `false` and goes on;
    // the others see its take.
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(TakeError::Taken);
    }
    let taken = match own_inherited(&h) {
        Some(fd) => {
            // Relaxed: a test counter, read after the threads joined.
            #[cfg(test)]
            INHERITED_TAKES.fetch_add(1, Ordering::Relaxed);
            fd::set_cloexec_nonblock(fd.as_fd())
                .map(|()| fd)
                .map_err(|source| TakeError::Lost {
                    path: format!("inherited descriptor {}", h.fd),
                    source,
                })
        }
        None => open_in_proc(pid, h, access),
    };
    if taken.is_err() {
        // Release: a later caller may try again.
        TAKEN.store(false, Ordering::Release);
    }
    taken
}

/// Opens the parent's `/proc/<pid>/fd/<n>` if it is the handed file, of
/// the handed type, close-on-exec and non-blocking: the kernel lets only
/// the parent's own user (or root) open it; its identity is checked with
/// `stat` before the open (never open, with whatever side effects opening
/// a device has, a file that is not the one handed over) and again on the
/// descriptor (the number may be reused in between). A write-only pipe
/// end whose readers are all gone cannot be opened (`ENXIO`): it comes
/// back as a pipe end without readers, which is what the handed one
/// would have been (writes fail with `EPIPE`).
pub(crate) fn open_in_proc(pid: u32, h: Handed, access: libc::c_int) -> Result<OwnedFd, TakeError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = format!("/proc/{pid}/fd/{}", h.fd);
    let lost = |source| TakeError::Lost {
        path: path.clone(),
        source,
    };
    let other = || lost(io::Error::other("another file has that number now"));
    let meta = std::fs::metadata(&path).map_err(lost)?;
    if meta.dev() != h.dev || meta.ino() != h.ino || meta.mode() & libc::S_IFMT != h.kind {
        return Err(other());
    }
    let opened = std::fs::OpenOptions::new()
        .read(access != libc::O_WRONLY)
        .write(access != libc::O_RDONLY)
        // std adds O_CLOEXEC.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path);
    let fd = match opened {
        Ok(file) => OwnedFd::from(file),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) && access == libc::O_WRONLY => {
            let (_, write) = io::pipe().map_err(lost)?;
            return Ok(write.into());
        }
        Err(e) => return Err(lost(e)),
    };
    match h.is(fd.as_fd()) {
        true => Ok(fd),
        false => Err(other()),
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
        // Relaxed: one thread here; `set` stored these on it.
        let held: Vec<i32> = list.fds.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        assert_eq!(&held[..2], &[7, -1]);
        list.clear();
        assert!(list.fds.iter().all(|s| s.load(Ordering::Relaxed) == -1));
        let too_many = vec![3; MAX_INHERITED + 1];
        assert!(list.set(&too_many).is_err());
    }
}
