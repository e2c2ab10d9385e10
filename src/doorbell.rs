//! The futex doorbell: how a side that has nothing to do sleeps, and how the
//! other side wakes it without a system call when nobody sleeps.
//!
//! A doorbell lives in shared memory and guards one wait condition ("data
//! available" for the consumer, "space available" for the producer):
//!
//! * `epoch` is the futex word. A notifier bumps it before waking, so a
//!   waiter whose snapshot is stale never goes to sleep.
//! * `waiting` is set by the waiter while it may sleep. A notifier only pays
//!   for the `epoch` bump and the `FUTEX_WAKE` system call when it is set.
//!
//! The protocol is a Dekker-style handshake; the two `SeqCst` fences are what
//! make it free of lost wake-ups:
//!
//! ```text
//! notifier                          waiter
//! publish (Release store)           e = epoch (Acquire)
//! fence(SeqCst)            ─┐  ┌─   waiting = 1
//! if waiting != 0 {         │  │    fence(SeqCst)
//!     epoch += 1            └──┼─   re-check the condition
//!     futex_wake(epoch)        └─   futex_wait(epoch, e)
//! }
//! ```
//!
//! The fences are totally ordered. If the notifier's fence comes first, the
//! waiter's re-check sees the publication and does not sleep. If the
//! waiter's fence comes first, the notifier sees `waiting == 1` and bumps
//! `epoch`: the waiter's `futex_wait` then either finds `epoch != e` and
//! returns at once, or is already asleep and is woken. Fences rather than
//! `SeqCst` loads/stores are used so that loom models exactly this argument.
//!
//! An asymmetric variant (a compiler fence for the notifier, a
//! `membarrier(GLOBAL_EXPEDITED)` for the waiter before it sleeps) was built
//! and measured on the 2-vCPU dev VM: no measurable gain (64 B spin round
//! trip ~700 ns and 64 B streaming ~14.5 M msg/s either way), against a
//! protocol loom cannot check, an RCU grace period at registration and an
//! IPI per sleep. It was removed; the fence stays.

use crate::sync::{AtomicU32, Ordering, fence};
use crate::sys::clock::MonoTime;

/// Longest sleep when the kernel lacks `futex_waitv` (Linux < 5.16, or a
/// seccomp profile that refuses it): how late a peer's death can be seen.
#[cfg(not(loom))]
const FALLBACK_SLICE: std::time::Duration = std::time::Duration::from_millis(5);

/// One wait condition's futex word and waiter flag. Lives in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// The futex word; incremented (wrapping) by every wake-up.
    epoch: AtomicU32,
    /// 1 while the single waiter may be asleep, else 0.
    waiting: AtomicU32,
    /// loom cannot run a real futex; this models one (see `model_futex`).
    #[cfg(loom)]
    model: model_futex::Futex,
}

/// A snapshot of `epoch` taken by [`Doorbell::prepare`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u32);

impl Doorbell {
    /// Notifier side: call after publishing (the Release store of an index or
    /// a close flag). Makes no system call unless the peer is asleep.
    #[inline]
    pub(crate) fn ring(&self) {
        // Orders the caller's publication before the load of `waiting`
        // (pairs with the fence in `prepare`).
        fence(Ordering::SeqCst);
        // Relaxed: the fence above provides the ordering this load needs.
        if self.waiting.load(Ordering::Relaxed) != 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        // Release: a waiter that acquires the new epoch also sees what was
        // published before it (the fence already ensures this; the Release
        // keeps the increment itself from moving up).
        self.epoch.fetch_add(1, Ordering::Release);
        #[cfg(not(loom))]
        crate::sys::futex::wake_all(&self.epoch);
        #[cfg(loom)]
        self.model.wake_all();
    }

    /// Waiter side, step 1: announce that we may sleep. The caller must
    /// re-check its condition after this and before [`Doorbell::sleep`].
    #[inline]
    pub(crate) fn prepare(&self) -> Ticket {
        // Acquire: pairs with the Release increment in `wake`.
        let ticket = Ticket(self.epoch.load(Ordering::Acquire));
        // Relaxed: published by the fence below.
        self.waiting.store(1, Ordering::Relaxed);
        // Orders the `waiting` store before the caller's re-check of the
        // condition (pairs with the fence in `ring`).
        fence(Ordering::SeqCst);
        ticket
    }

    /// Waiter side, step 2: sleep until woken, until `epoch` moves past the
    /// ticket, or until `deadline`. Spurious returns are allowed; the caller
    /// re-checks its condition either way and then calls [`Doorbell::done`].
    pub(crate) fn sleep(&self, ticket: Ticket, deadline: MonoTime) {
        #[cfg(not(loom))]
        crate::sys::futex::wait(&self.epoch, ticket.0, deadline);
        #[cfg(loom)]
        {
            let _ = deadline;
            self.model.wait(&self.epoch, ticket.0);
        }
    }

    /// [`Doorbell::sleep`], also woken when `word` (the peer's liveness
    /// word) no longer holds `expected` or is woken by the kernel at the
    /// peer's death. Where `futex_waitv` is unavailable, sleeps at most
    /// [`FALLBACK_SLICE`] so the caller re-checks the word that often.
    #[cfg(not(loom))]
    pub(crate) fn sleep_or_death(
        &self,
        ticket: Ticket,
        word: &std::sync::atomic::AtomicU32,
        expected: u32,
        deadline: MonoTime,
    ) {
        use crate::sys::futex;
        if futex::wait_two(&self.epoch, ticket.0, word, expected, deadline).is_err() {
            futex::wait(
                &self.epoch,
                ticket.0,
                deadline.min(MonoTime::after(FALLBACK_SLICE)),
            );
        }
    }

    /// The loom model has no liveness words: a plain sleep.
    #[cfg(loom)]
    pub(crate) fn sleep_or_death(
        &self,
        ticket: Ticket,
        _word: &std::sync::atomic::AtomicU32,
        _expected: u32,
        deadline: MonoTime,
    ) {
        self.sleep(ticket, deadline);
    }

    /// Waiter side, step 3: no longer asleep.
    #[inline]
    pub(crate) fn done(&self) {
        // Relaxed: a stale 1 seen by a notifier costs one spare wake-up,
        // never a lost one.
        self.waiting.store(0, Ordering::Relaxed);
    }
}

/// A futex modelled with loom's mutex and condition variable.
///
/// `wait` checks the word under the lock and `wake_all` takes the same lock
/// after the word changed, which is exactly the atomicity a kernel futex
/// gives: a wake-up after the check cannot slip past the sleeper.
#[cfg(loom)]
mod model_futex {
    use loom::sync::{Condvar, Mutex};

    use crate::sync::{AtomicU32, Ordering};

    #[derive(Debug, Default)]
    pub(crate) struct Futex {
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl Futex {
        pub(crate) fn wait(&self, word: &AtomicU32, expected: u32) {
            let guard = self.lock.lock().unwrap();
            // Acquire, under the lock: the kernel's atomic check-and-sleep.
            if word.load(Ordering::Acquire) == expected {
                drop(self.cv.wait(guard).unwrap());
            }
        }

        pub(crate) fn wake_all(&self) {
            let _guard = self.lock.lock().unwrap();
            self.cv.notify_all();
        }
    }
}
