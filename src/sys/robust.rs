//! Robust-futex liveness words: the kernel itself tells the peer that this
//! process died.
//!
//! Each process that maps a segment owns one 32-bit *liveness word* in it,
//! holding the TID of this process's **sentinel** thread. The sentinel is a
//! parked thread that registered its own robust futex list
//! (`set_robust_list(2)`). When the sentinel exits — the process is killed,
//! crashes, exits, or calls `execve` — the kernel walks that list and, for
//! every word still holding the sentinel's TID, sets `FUTEX_OWNER_DIED` and
//! wakes one waiter if `FUTEX_WAITERS` is set. This works across PID
//! namespaces (the word holds the TID as the sentinel's own namespace sees
//! it) and whatever the process tree looks like, unlike `getppid()`.
//!
//! Where the list lives matters: the kernel reads it at exit, so a peer that
//! could write it could cut the walk short and hide our death from every
//! *other* peer. So the list entries never live in shared memory. Every
//! segment is mapped with one private anonymous page just in front of it
//! (see [`crate::sys::mapping`]), and a word at offset `o` of the segment
//! has its list entry at offset `o` of that private page: the list's
//! `futex_offset` is exactly [`ENTRY_TO_WORD`]. The list head is leaked
//! private memory; entries are linked and unlinked under a mutex with
//! single aligned pointer stores, so the kernel sees a consistent list
//! whenever the process dies.
//!
//! glibc keeps registering its own robust lists on every other thread, so
//! robust pthread mutexes keep working; only the sentinel's list is ours.
//!
//! Limits: the kernel walks at most 2048 entries of a list (`ROBUST_LIST_LIMIT`),
//! so a process mapping more segments than that at once is reported dead only
//! to the peers of the first 2048 (the others still see close flags, pidfds
//! or their deadlines). A process `fork`ed without `exec` has no sentinel
//! thread: it starts its own on first use (a `fork` while another thread
//! held the registry lock would leave it locked in the child, as with any
//! mutex). `execve` and the OOM reaper: see the README's "Peer death".

use std::io;
use std::sync::Mutex;
use std::sync::mpsc;

/// Set by a waiter: the kernel wakes one waiter on death only if it is set.
pub(crate) const FUTEX_WAITERS: u32 = 0x8000_0000;
/// Set by the kernel when the owning thread died.
pub(crate) const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// The owner's TID bits.
pub(crate) const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// A liveness word of a process that could not start a sentinel: alive as
/// far as anyone can tell, but its death is only seen by slower means. No
/// TID reaches this value (`pid_max` is at most 2^22).
pub(crate) const NO_SENTINEL: u32 = FUTEX_TID_MASK;

/// From a list entry to its word: one page, the private guard page in front
/// of every segment mapping.
pub(crate) const ENTRY_TO_WORD: usize = 4096;

/// What a liveness word says about its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// 0: nobody has registered yet (an opener that has not attached).
    Absent,
    /// A live sentinel's TID (possibly with `FUTEX_WAITERS`), or
    /// [`NO_SENTINEL`].
    Alive,
    /// `FUTEX_OWNER_DIED`, or the TID bits cleared after a registration.
    Dead,
}

impl Owner {
    /// Decodes a liveness word's value.
    #[inline]
    pub(crate) fn of(word: u32) -> Owner {
        if word == 0 {
            Owner::Absent
        } else if word & FUTEX_OWNER_DIED != 0 || word & FUTEX_TID_MASK == 0 {
            Owner::Dead
        } else {
            Owner::Alive
        }
    }
}

/// `struct robust_list` of the kernel ABI.
#[repr(C)]
struct RobustList {
    next: *mut RobustList,
}

/// `struct robust_list_head` of the kernel ABI.
#[repr(C)]
struct RobustListHead {
    list: RobustList,
    futex_offset: libc::c_long,
    list_op_pending: *mut RobustList,
}

/// This process's sentinel.
struct Sentinel {
    /// The process it belongs to: a child forked without `exec` has no
    /// sentinel thread, only a copy of this record, and starts its own.
    pid: u32,
    /// The sentinel's TID in its own PID namespace (what the kernel compares).
    tid: u32,
    /// The leaked list head the sentinel registered.
    head: *mut RobustListHead,
}

// SAFETY: `head` points to leaked, never-freed memory that is only touched
// under the `SENTINEL` mutex (and read by the kernel at thread exit).
unsafe impl Send for Sentinel {}

static SENTINEL: Mutex<Option<Sentinel>> = Mutex::new(None);

/// Starts this process's sentinel thread, once per process.
fn start_sentinel() -> io::Result<Sentinel> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<(u32, usize)>>(1);
    std::thread::Builder::new()
        .name("remora-liveness".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let head: &'static mut RobustListHead = Box::leak(Box::new(RobustListHead {
                list: RobustList {
                    next: std::ptr::null_mut(),
                },
                futex_offset: ENTRY_TO_WORD as libc::c_long,
                list_op_pending: std::ptr::null_mut(),
            }));
            // An empty list points at itself.
            head.list.next = &raw mut head.list;
            let head: *mut RobustListHead = head;
            // SAFETY: `head` is a valid, leaked robust_list_head that outlives
            // this thread; the kernel reads it only when this thread exits.
            let ret = unsafe {
                libc::syscall(libc::SYS_set_robust_list, head, size_of::<RobustListHead>())
            };
            let result = if ret == 0 {
                // SAFETY: gettid has no preconditions.
                Ok((unsafe { libc::gettid() } as u32, head as usize))
            } else {
                Err(io::Error::last_os_error())
            };
            let ok = result.is_ok();
            let _ = tx.send(result);
            if ok {
                // Parked for the life of the process: its exit is the signal.
                loop {
                    std::thread::park();
                }
            }
        })?;
    let (tid, head) = rx
        .recv()
        .map_err(|_| io::Error::other("the liveness sentinel thread died at start"))??;
    Ok(Sentinel {
        pid: std::process::id(),
        tid,
        head: head as *mut RobustListHead,
    })
}

/// Set to this process's pid once starting its sentinel failed, so later
/// segments do not try (and spawn a thread) again.
static FAILED_FOR_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The sentinel of this process, started on first use.
fn sentinel(slot: &mut Option<Sentinel>) -> io::Result<&mut Sentinel> {
    use std::sync::atomic::Ordering::Relaxed;
    let pid = std::process::id();
    if slot.as_ref().is_none_or(|s| s.pid != pid) {
        // Relaxed: read and written under the `SENTINEL` lock.
        if FAILED_FOR_PID.load(Relaxed) == pid {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        match start_sentinel() {
            Ok(started) => *slot = Some(started),
            Err(e) => {
                FAILED_FOR_PID.store(pid, Relaxed);
                return Err(e);
            }
        }
    }
    Ok(slot.as_mut().expect("just set"))
}

/// Links the list entry at `entry` into the sentinel's robust list and
/// returns the value the matching word must hold (the sentinel's TID). The
/// kernel will mark the word at `entry + ENTRY_TO_WORD` when this process
/// dies, provided it still holds that value.
///
/// # Safety
///
/// `entry` must be 8-aligned, private to this process, writable, not
/// registered already, and stay mapped until [`unregister`] is called with
/// it; `entry + ENTRY_TO_WORD` must be a 4-aligned u32 word that stays
/// mapped as long.
pub(crate) unsafe fn register(entry: *mut u8) -> io::Result<u32> {
    let mut slot = SENTINEL.lock().unwrap_or_else(|p| p.into_inner());
    let sentinel = sentinel(&mut slot)?;
    let entry = entry.cast::<RobustList>();
    // SAFETY: `head` is the leaked head of our live sentinel; `entry` is
    // valid per the contract. Linking at the front is one aligned pointer
    // store, after the new entry already points at the rest: a death at any
    // moment lets the kernel walk a consistent list.
    unsafe {
        let head = &raw mut (*sentinel.head).list;
        entry.write_volatile(RobustList {
            next: (&raw const (*head).next).read_volatile(),
        });
        (&raw mut (*head).next).write_volatile(entry);
    }
    Ok(sentinel.tid)
}

/// Unlinks an entry linked by [`register`]. A no-op for an entry that is not
/// in this process's list (e.g. registered before a `fork`).
///
/// # Safety
///
/// `entry` must still be mapped (it is read if it is in the list).
pub(crate) unsafe fn unregister(entry: *mut u8) {
    let mut slot = SENTINEL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sentinel) = slot.as_mut().filter(|s| s.pid == std::process::id()) else {
        return;
    };
    let entry = entry.cast::<RobustList>();
    // SAFETY: every node in the list is a live entry (contract of
    // `register`/`unregister`) or the leaked head; the walk ends at the head.
    // Unlinking is one aligned pointer store.
    unsafe {
        let head = &raw mut (*sentinel.head).list;
        let mut prev = head;
        loop {
            let next = (&raw const (*prev).next).read_volatile();
            if next == head {
                return;
            }
            if next == entry {
                let after = (&raw const (*entry).next).read_volatile();
                (&raw mut (*prev).next).write_volatile(after);
                return;
            }
            prev = next;
        }
    }
}
