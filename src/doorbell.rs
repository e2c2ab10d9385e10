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
//! # Wait sets: the aggregate bell
//!
//! A `WaitSet` sleeps on many rings at once without a descriptor per ring:
//! each segment side has one [`AggregateBell`] in the segment header
//! ("something arrived for the creator / opener"). The set's waiter adds
//! [`SET`] to `waiting` of every member's doorbell (`arm`), after taking a
//! ticket of each aggregate bell; the notifier's cold path bumps and wakes
//! the aggregate bell when it sees any armed set. The same Dekker argument
//! holds, with the set's single fence after all its `arm`s:
//!
//! ```text
//! notifier                          set waiter
//! publish (Release store)           t = aggregate (Acquire), per segment
//! fence(SeqCst)            ─┐  ┌─   waiting += SET, per member
//! if waiting & !DIRECT {    │  │    fence(SeqCst)
//!     aggregate += 1        └──┼─   re-check every member
//!     futex_wake(aggregate)    └─   futex_waitv(aggregates, t; liveness words)
//! }                                 waiting -= SET, per member
//! ```
//!
//! If the notifier's fence comes first, the re-check sees its publication;
//! otherwise the notifier sees the armed count and bumps the aggregate,
//! which the set either finds changed (`futex_waitv` returns at once) or is
//! woken from. `loom_waitset_no_lost_wakeup` models it. Direct waiters and
//! sets share `waiting` through RMWs (`fetch_or`/`fetch_and` of bit 0,
//! `fetch_add`/`fetch_sub` of [`SET`]), so neither clears the other.
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

/// `Doorbell::waiting` bit of the end's own (direct) waiter.
const DIRECT: u32 = 1;
/// `Doorbell::waiting` unit of one armed wait set.
const SET: u32 = 2;

/// One wait condition's futex word and waiter flag. Lives in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// The futex word; incremented (wrapping) by every wake-up.
    epoch: AtomicU32,
    /// Bit 0 ([`DIRECT`]): the end's own waiter may be asleep on `epoch`.
    /// Bits 1.. : the number of wait sets armed on this doorbell, in units
    /// of [`SET`], each asleep on its side's [`AggregateBell`].
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
    /// a close flag). Makes no system call unless someone is asleep.
    ///
    /// `aggregate` names the bell of the side that waits on this doorbell
    /// (the peer's [`AggregateBell`] in the segment header); it is only
    /// evaluated on the cold path, when `waiting` is non-zero, so the hot
    /// path stays one fence and one load.
    #[inline]
    pub(crate) fn ring_with<'a>(&self, aggregate: impl FnOnce() -> &'a AggregateBell) {
        // Orders the caller's publication before the load of `waiting`
        // (pairs with the fence in `prepare`, and with the wait set's fence
        // after `arm`).
        fence(Ordering::SeqCst);
        // Relaxed: the fence above provides the ordering this load needs.
        let waiting = self.waiting.load(Ordering::Relaxed);
        if waiting != 0 {
            self.wake(waiting, aggregate());
        }
    }

    /// The cold path: bit 0 is a direct waiter (sleeping on `epoch`); the
    /// bits above count armed wait sets (sleeping on the side's aggregate
    /// bell). The peer can write `waiting`: any value costs at most spare
    /// wake-ups of the peer's own segment.
    #[cold]
    fn wake(&self, waiting: u32, aggregate: &AggregateBell) {
        if waiting & DIRECT != 0 {
            // Release: a waiter that acquires the new epoch also sees what
            // was published before it (the fence already ensures this; the
            // Release keeps the increment itself from moving up).
            self.epoch.fetch_add(1, Ordering::Release);
            #[cfg(not(loom))]
            crate::sys::futex::wake_all(&self.epoch);
            #[cfg(loom)]
            self.model.wake_all();
        }
        if waiting & !DIRECT != 0 {
            aggregate.bump();
        }
    }

    /// Wait-set side: announce one more armed set (see
    /// [`AggregateBell`]). The caller issues `fence(SeqCst)` after arming all
    /// its members and before re-checking them.
    #[inline]
    pub(crate) fn arm(&self) {
        // Relaxed: published by the caller's fence, as in `prepare`.
        self.waiting.fetch_add(SET, Ordering::Relaxed);
    }

    /// Wait-set side: one armed set fewer, so a busy notifier stops paying
    /// for wake-ups nobody waits for.
    #[inline]
    pub(crate) fn disarm(&self) {
        // Relaxed: a stale count seen by a notifier costs one spare wake-up,
        // never a lost one.
        self.waiting.fetch_sub(SET, Ordering::Relaxed);
    }

    /// Waiter side, step 1: announce that we may sleep. The caller must
    /// re-check its condition after this and before [`Doorbell::sleep`].
    #[inline]
    pub(crate) fn prepare(&self) -> Ticket {
        // Acquire: pairs with the Release increment in `wake`.
        let ticket = Ticket(self.epoch.load(Ordering::Acquire));
        // Relaxed: published by the fence below. An RMW, not a store: the
        // bits above are armed wait sets' and must survive.
        self.waiting.fetch_or(DIRECT, Ordering::Relaxed);
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
        self.waiting.fetch_and(!DIRECT, Ordering::Relaxed);
    }
}

/// The aggregate bell of one segment side: a futex word bumped by the
/// other side's notifiers whenever they see an armed wait set (see the
/// module docs). Lives in the segment header; the peer can write it (that
/// only causes spare wake-ups of sets watching this segment).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct AggregateBell {
    word: AtomicU32,
    /// loom cannot run a real futex; this models one (see `model_futex`).
    #[cfg(loom)]
    model: model_futex::Futex,
}

impl AggregateBell {
    /// Set side: the snapshot to sleep on, taken before arming.
    #[inline]
    pub(crate) fn ticket(&self) -> u32 {
        // Acquire: pairs with the Release increment in `bump`.
        self.word.load(Ordering::Acquire)
    }

    /// Notifier side (cold): something arrived for this side.
    fn bump(&self) {
        // Release: as in `Doorbell::wake`.
        self.word.fetch_add(1, Ordering::Release);
        #[cfg(not(loom))]
        crate::sys::futex::wake_all(&self.word);
        #[cfg(loom)]
        self.model.wake_all();
    }

    /// The futex word, for `futex_waitv`.
    #[cfg(not(loom))]
    pub(crate) fn word(&self) -> &std::sync::atomic::AtomicU32 {
        &self.word
    }

    /// loom: sleeps until the word moves past `ticket` (the model futex).
    #[cfg(loom)]
    pub(crate) fn sleep(&self, ticket: u32) {
        self.model.wait(&self.word, ticket);
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
