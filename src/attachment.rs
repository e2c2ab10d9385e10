//! This process's attachment to one segment: what every channel end of the
//! segment shares (each holds an `Arc`), namely the mapping, this side's
//! registered liveness word, the peer's word and the watch on the peer
//! process, and (creator side) the segment's name and locked descriptor.
//!
//! Peer death is read from the peer's robust liveness word in the segment
//! header (see `sys::robust`): a plain load, no system call, so spinning
//! waits and `try_` forms check it every time; blocked waits sleep on it and
//! on their doorbell at once (`futex_waitv`), and the kernel wakes them when
//! the peer dies.

use std::os::fd::OwnedFd;
use std::sync::Mutex;

use crate::doorbell::AggregateBell;
use crate::layout::{CREATOR_BELL, OPENER_BELL, OPENER_WORD};
use crate::peer::{Peer, PeerWatch};
use crate::sys::futex;
use crate::sys::mapping::Mapping;
use crate::sys::robust::{self, FUTEX_WAITERS, NO_SENTINEL, Owner, Sentinel};
use crate::wait::{Liveness, PeerSleep};
use std::sync::atomic::{AtomicU32, Ordering};

/// The shared state behind a segment's channel ends.
#[derive(Debug)]
pub(crate) struct Attachment {
    /// This side's sentinel (see `sys::robust`); declared before `mapping`
    /// so that it detaches (deregisters its list entry in the guard page)
    /// before the mapping goes.
    _sentinel: Option<Sentinel>,
    mapping: Mapping,
    peer: Peer,
    /// Creator side: the segment name, until unlinked (`None` after).
    name: Mutex<Option<String>>,
    /// Creator side: the segment's descriptor, holding an exclusive `flock`
    /// for as long as the segment is ours: the stale sweep takes a segment
    /// whose lock it can get as one whose creator is dead.
    lock: Option<OwnedFd>,
    /// Offset of the peer's liveness word in the mapping.
    peer_word: usize,
}

/// This side's liveness word, registered by [`register_liveness`].
#[derive(Debug)]
pub(crate) struct OwnWord {
    /// The value the word must hold: our sentinel's TID, or
    /// [`NO_SENTINEL`] when no sentinel could be started.
    pub(crate) value: u32,
    /// The sentinel watching it, if one could be started.
    sentinel: Option<Sentinel>,
}

/// Starts a sentinel for the word at `offset` of `mapping` and returns the
/// value to store there. Without a sentinel (no thread, or
/// `set_robust_list` refused), the value is [`NO_SENTINEL`]: the peer then
/// sees this side as alive and learns of its death only by slower means.
pub(crate) fn register_liveness(mapping: &Mapping, offset: usize) -> OwnWord {
    debug_assert!(offset.is_multiple_of(8) && offset + 8 <= crate::layout::PAGE);
    // SAFETY: the entry lies in the mapping's private guard page, 8-aligned
    // (`offset` is), and the word one guard page later is the segment's
    // word at `offset`; both stay mapped until the sentinel is dropped,
    // which `Attachment` (field order) and `OwnWord::abandon` do first.
    match unsafe { robust::register(mapping.guard().add(offset)) } {
        Ok((tid, sentinel)) => OwnWord {
            value: tid,
            sentinel: Some(sentinel),
        },
        Err(_) => OwnWord {
            value: NO_SENTINEL,
            sentinel: None,
        },
    }
}

impl OwnWord {
    /// Detaches the sentinel when the word will not be used after all (a
    /// lost claim), before the mapping goes.
    pub(crate) fn abandon(self) {
        drop(self.sentinel);
    }
}

impl Attachment {
    /// `own` is this side's registered liveness word, `peer_word` the offset
    /// of the peer's; `name` is the segment name this side must unlink
    /// (creator), if any, and `lock` the creator's locked descriptor.
    pub(crate) fn new(
        mapping: Mapping,
        own: OwnWord,
        peer_word: usize,
        name: Option<String>,
        lock: Option<OwnedFd>,
    ) -> Attachment {
        Attachment {
            mapping,
            peer: Peer::default(),
            name: Mutex::new(name),
            lock,
            peer_word,
            _sentinel: own.sentinel,
        }
    }

    /// Removes the segment name from /dev/shm if this side owns it and it is
    /// still there. Idempotent.
    pub(crate) fn unlink_name(&self) -> std::io::Result<()> {
        let name = self.name.lock().unwrap_or_else(|p| p.into_inner()).take();
        match name.map(|n| crate::sys::shm::unlink(&n)) {
            Some(Err(e)) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Whether the segment still has at least `len` bytes, as far as this
    /// side can tell (creator: `fstat` of its descriptor; opener: assumed).
    /// A segment shrunk behind our back would raise SIGBUS on access.
    pub(crate) fn size_at_least(&self, len: usize) -> bool {
        match &self.lock {
            Some(fd) => crate::sys::shm::stat(fd).is_ok_and(|info| info.size >= len as u64),
            None => true,
        }
    }

    /// Starts watching the peer process (first call wins).
    pub(crate) fn watch(&self, watch: PeerWatch) {
        self.peer.watch(watch);
    }

    /// The aggregate bell the peer's wait sets sleep on: what this side's
    /// notifiers bump (see `doorbell::AggregateBell`).
    #[inline]
    pub(crate) fn peer_bell(&self) -> &AggregateBell {
        self.bell(if self.peer_word == OPENER_WORD {
            OPENER_BELL
        } else {
            CREATOR_BELL
        })
    }

    /// The aggregate bell this side's wait sets sleep on.
    #[cfg_attr(loom, allow(dead_code))]
    #[inline]
    pub(crate) fn own_bell(&self) -> &AggregateBell {
        self.bell(if self.peer_word == OPENER_WORD {
            CREATOR_BELL
        } else {
            OPENER_BELL
        })
    }

    fn bell(&self, offset: usize) -> &AggregateBell {
        // SAFETY: `offset` is one of the header's two aligned bells (fixed
        // offsets, checked by `layout`), inside the live mapping; a bell is
        // a single atomic, so a shared reference is sound although the
        // peer writes it.
        unsafe { &*self.mapping.base().add(offset).cast::<AggregateBell>() }
    }

    /// The peer's liveness word.
    #[inline]
    fn peer_word(&self) -> &AtomicU32 {
        // SAFETY: `peer_word` is one of the header's aligned atomic words
        // (fixed offsets, checked by `layout`), inside the live mapping.
        unsafe { &*self.mapping.base().add(self.peer_word).cast::<AtomicU32>() }
    }

    /// Whether the peer is already known dead (the latch): what the busy
    /// send/receive path checks, at no cost beyond a private load.
    #[inline]
    pub(crate) fn peer_known_dead(&self) -> bool {
        self.peer.known_dead()
    }

    /// Whether the peer is dead: the latch, or its liveness word. One load
    /// of a shared line that nobody writes while both sides live; no system
    /// call. Latches a death it sees.
    #[inline]
    pub(crate) fn peer_dead_now(&self) -> bool {
        if self.peer.known_dead() {
            return true;
        }
        // Acquire: a death the kernel recorded is seen with everything the
        // peer published before it (callers re-read the ring after this).
        if Owner::of(self.peer_word().load(Ordering::Acquire)) == Owner::Dead {
            self.on_peer_death();
            return true;
        }
        false
    }

    /// For calls about to report `Empty`, `Full` or `Timeout`: the liveness
    /// word every time, and the descriptor-based watch (a spawned child
    /// that has not attached) at a bounded rate (see [`Peer::poll_gone`]).
    pub(crate) fn poll_peer_gone(&self) -> bool {
        self.peer_dead_now() || self.peer.poll_gone(|| self.on_peer_death())
    }

    /// Checks whether the peer process is gone (may make a system call).
    pub(crate) fn check_peer_gone(&self) -> bool {
        self.peer_dead_now() || self.peer.check_gone(|| self.on_peer_death())
    }

    /// Runs once, when the peer's death is first seen by any means.
    fn on_peer_death(&self) {
        self.peer.latch(|| {
            // The kernel wakes only one waiter on the word: wake the rest of
            // this process's waiters (other threads' ends on this segment).
            futex::wake_all(self.peer_word());
            // A dead child can no longer attach: drop the name now.
            let _ = self.unlink_name();
        });
    }
}

impl Liveness for Attachment {
    #[inline]
    fn dead_now(&self) -> bool {
        self.peer_dead_now()
    }

    fn dead_checked(&self) -> bool {
        self.check_peer_gone()
    }

    fn prepare_sleep(&self) -> PeerSleep<'_> {
        let word = self.peer_word();
        // Acquire: as in `peer_dead_now`.
        let mut value = word.load(Ordering::Acquire);
        // Bounded: a peer that keeps rewriting its word must not keep us
        // from sleeping (or from our deadline).
        for _ in 0..4 {
            match Owner::of(value) {
                Owner::Dead => return PeerSleep::Dead,
                // Not attached yet: sleep on the word as it is; the opener
                // wakes it when it claims the segment.
                Owner::Absent => return PeerSleep::On(word, 0),
                Owner::Alive if value == NO_SENTINEL => return PeerSleep::Unwatched,
                Owner::Alive if value & FUTEX_WAITERS != 0 => return PeerSleep::On(word, value),
                Owner::Alive => {}
            }
            // The kernel wakes a waiter at the owner's death only if
            // FUTEX_WAITERS is set. It is never cleared again.
            // Relaxed: the word carries no data; `peer_dead_now` re-reads
            // it with Acquire after every wake-up.
            match word.compare_exchange(
                value,
                value | FUTEX_WAITERS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return PeerSleep::On(word, value | FUTEX_WAITERS),
                Err(now) => value = now,
            }
        }
        PeerSleep::Unwatched
    }
}

impl Drop for Attachment {
    /// The creator's last handle is gone: nobody will serve an opener that
    /// has not attached yet, so the name goes too.
    fn drop(&mut self) {
        let _ = self.unlink_name();
        // Then the fields: the sentinel detaches before the mapping goes.
    }
}
