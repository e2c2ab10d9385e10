//! Robust-futex liveness words: the kernel itself tells the peer that this
//! process died.
//!
//! Each process that maps a segment owns one 32-bit *liveness word* in it,
//! holding the TID of a **sentinel** thread: a parked thread that
//! registered its own robust futex list (`set_robust_list(2)`) with exactly
//! one entry, for that word. When the sentinel exits because the process is
//! killed, crashes, exits or calls `execve`, the kernel walks the list and,
//! since the word still holds the sentinel's TID, sets `FUTEX_OWNER_DIED`
//! on it and wakes one waiter if `FUTEX_WAITERS` is set. This works across
//! PID namespaces (the word holds the TID as the sentinel's own namespace
//! sees it) and whatever the process tree looks like, unlike `getppid()`.
//!
//! **One sentinel per word**, not one per process: the kernel abandons a
//! list walk at the first entry it cannot read, and a peer can make its own
//! segment's word unreadable by truncating the segment. With one list per
//! segment, that peer hides our death only from itself, never from the
//! peers of our other segments. A sentinel costs a parked thread (64 KiB
//! stack, no CPU) per mapped segment.
//!
//! **The list lives in private memory.** The kernel reads it at exit, so it
//! never lives in shared memory the peer could rewrite. Every segment is
//! mapped with one private anonymous page just in front of it (see
//! [`crate::sys::mapping`]), and the word at offset `o` of the segment has
//! its list entry at offset `o` of that private page: `futex_offset` is one
//! page. The list head is the sentinel's own heap allocation; before the
//! sentinel exits on request it deregisters the list (`set_robust_list` with
//! a null head), so an orderly detach marks nothing and its memory can go.
//!
//! glibc keeps registering its own robust lists on every other thread, so
//! robust pthread mutexes keep working; only the sentinels' lists are ours.
//!
//! Limits: a process `fork`ed without `exec` has no sentinels (the kernel
//! clears a child's robust lists): its copies of our words are never marked
//! by its death, nor do they hide ours. `execve` and the OOM reaper: see the
//! README's "Peer death".

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// From a list entry to its word: one page (the private guard page in front
/// of every segment mapping), as the kernel counts pages here.
pub(crate) fn entry_to_word() -> usize {
    page_size()
}

/// The system's page size (`sysconf(_SC_PAGESIZE)`): 4 KiB on x86_64, but
/// 16 or 64 KiB on some arm64 and ppc64 kernels.
pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

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

/// A running sentinel for one word. Dropping it detaches the word: the
/// sentinel deregisters its list and exits, and the word is never marked.
#[derive(Debug)]
pub(crate) struct Sentinel {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The list entry's address, as a number (raw pointers are not `Send`).
struct EntryAddr(usize);

/// Starts a sentinel for the word at `entry + entry_to_word()`, whose robust
/// list holds the single entry at `entry`. Returns the value the word must
/// hold (the sentinel's TID) and the sentinel.
///
/// # Safety
///
/// `entry` must be 8-aligned, private to this process, writable, used by no
/// other sentinel, and stay mapped until the returned `Sentinel` is dropped
/// (its drop waits for the list to be deregistered); `entry +
/// entry_to_word()` must be a 4-aligned u32 word that stays mapped as long.
pub(crate) unsafe fn register(entry: *mut u8) -> io::Result<(u32, Sentinel)> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<u32>>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = Arc::clone(&stop);
    let entry = EntryAddr(entry as usize);
    let thread = std::thread::Builder::new()
        .name("remora-liveness".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let entry = entry.0 as *mut RobustList;
            let mut head = Box::new(RobustListHead {
                list: RobustList { next: entry },
                futex_offset: entry_to_word() as libc::c_long,
                list_op_pending: std::ptr::null_mut(),
            });
            let head_ptr: *mut RobustListHead = &mut *head;
            // SAFETY: `entry` is valid per `register`'s contract; a
            // one-entry list points back at the head.
            unsafe {
                entry.write_volatile(RobustList {
                    next: &raw mut (*head_ptr).list,
                })
            };
            // SAFETY: `head` is a valid robust_list_head that outlives this
            // thread's registration (deregistered below before it is freed).
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_set_robust_list,
                    head_ptr,
                    size_of::<RobustListHead>(),
                )
            };
            if ret != 0 {
                let _ = tx.send(Err(io::Error::last_os_error()));
                return;
            }
            // SAFETY: gettid has no preconditions.
            let _ = tx.send(Ok(unsafe { libc::gettid() } as u32));
            // Parked until detached; if the process dies first, this
            // thread's exit is the signal.
            // Acquire: pairs with the Release in `Sentinel::drop`.
            while !stop_flag.load(Ordering::Acquire) {
                std::thread::park();
            }
            // Orderly detach: forget the list so our exit marks nothing, and
            // so that neither the head nor the entry is read after this.
            // SAFETY: a null head is accepted and means "no list".
            unsafe {
                libc::syscall(
                    libc::SYS_set_robust_list,
                    std::ptr::null::<RobustListHead>(),
                    size_of::<RobustListHead>(),
                )
            };
            drop(head);
        })?;
    let tid = rx
        .recv()
        .map_err(|_| io::Error::other("the liveness sentinel thread died at start"))??;
    Ok((
        tid,
        Sentinel {
            stop,
            thread: Some(thread),
        },
    ))
}

impl Drop for Sentinel {
    /// Detaches: waits until the sentinel has deregistered its list (after
    /// which its entry and word may be unmapped) and exited.
    fn drop(&mut self) {
        // Release: the sentinel's Acquire load sees it and stops.
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
