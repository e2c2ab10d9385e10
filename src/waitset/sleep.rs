//! How a wait set sleeps on all its segments at once: one `futex_waitv`
//! over every segment's aggregate bell and peer liveness word, in chunks of
//! at most 128 words, with relay threads for the chunks beyond the first
//! and for descriptor members (child exits).
//!
//! Per segment, two words: this side's aggregate bell (bumped by the
//! peer's notifiers when a member ring has an armed set, see
//! `doorbell::AggregateBell`) and the peer's liveness word (woken by the
//! kernel at the peer's death). `futex_waitv` takes at most 128 words, so:
//!
//! * up to 128 words and no descriptor member: the calling thread sleeps on
//!   all of them; no other thread is involved.
//! * more, or descriptors as well as segments: the calling thread sleeps on
//!   the first 127 words plus the set's private *set word*. Each further
//!   chunk of 127 words has a relay thread that sleeps on its chunk plus the
//!   *round word*; a descriptor relay `poll`s the descriptors plus an
//!   eventfd. A relay that wakes for its own words bumps and wakes the set
//!   word. The calling thread starts a round (round word odd) before it
//!   sleeps and ends it (round word even, eventfd written) when it wakes,
//!   which sends the relays back to waiting for the next round.
//! * only descriptors: the calling thread `poll`s them itself.
//!
//! Relays are started when members are added (never during a wait), and
//! the arrays are reused: a wait allocates nothing.
//!
//! Without `futex_waitv` (Linux < 5.16, or refused by seccomp) the set
//! sleeps in slices of at most 5 ms on one word and re-scans its members,
//! which bounds its latency (5 ms) and costs up to 200 scans a second.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::attachment::Attachment;
use crate::sys::clock::MonoTime;
use crate::sys::futex::{self, FutexWaitv, WAITV_MAX};
use crate::wait::{Liveness, PeerSleep, SLICE};

/// Longest sleep without `futex_waitv`.
const FALLBACK_SLICE: Duration = Duration::from_millis(5);

/// One segment the set's shared-memory members live in (deduplicated).
#[derive(Debug)]
pub(super) struct Seg {
    pub(super) link: Arc<Attachment>,
    /// How many members live in it.
    pub(super) members: usize,
    /// This side's aggregate bell as it was before arming.
    ticket: u32,
    /// The peer was dead at the current scan's start.
    pub(super) dead: bool,
}

impl Seg {
    pub(super) fn new(link: Arc<Attachment>) -> Seg {
        Seg {
            link,
            members: 0,
            ticket: 0,
            dead: false,
        }
    }
}

/// What a sleep found out.
#[derive(Debug, Default)]
pub(super) struct Slept {
    /// Some peer could not be slept on (not attached yet, or without a
    /// liveness sentinel): the sleep was cut to [`SLICE`].
    pub(super) sliced: bool,
}

/// The reusable arrays and the relays.
#[derive(Debug, Default)]
pub(super) struct Sleeper {
    /// Every word of this sleep, in segment order.
    entries: Vec<FutexWaitv>,
    /// The calling thread's chunk when relays are in use.
    main: Vec<FutexWaitv>,
    /// Descriptors of this sleep.
    pollfds: Vec<libc::pollfd>,
    relays: Option<Relays>,
}

impl Sleeper {
    /// Before arming: takes the tickets (the aggregate bells' values).
    pub(super) fn tickets(&mut self, segs: &mut [Seg]) {
        for seg in segs {
            seg.ticket = seg.link.own_bell().ticket();
        }
    }

    /// Makes sure relays exist for `segs` segments and `fds` descriptors,
    /// and the arrays have room: called when members are added, so that
    /// waits never allocate. May start threads.
    pub(super) fn reserve(&mut self, segs: usize, fds: usize) -> std::io::Result<()> {
        let words = 2 * segs;
        self.entries
            .reserve(words.saturating_sub(self.entries.len()));
        self.pollfds.reserve(fds.saturating_sub(self.pollfds.len()));
        let needs_relays = words > WAITV_MAX || (fds > 0 && segs > 0);
        if !needs_relays {
            return Ok(());
        }
        let chunks = words.saturating_sub(WAITV_MAX - 1).div_ceil(WAITV_MAX - 1);
        let have = self
            .relays
            .as_ref()
            .map_or((0, 0), |r| (r.chunks, r.fd_capacity));
        if self.relays.is_some() && have.0 >= chunks && have.1 >= fds {
            return Ok(());
        }
        // Grow: stop the old relays (idle between waits) and start anew.
        self.relays = None;
        self.main.reserve(WAITV_MAX);
        self.relays = Some(Relays::start(chunks.max(have.0), fds.max(have.1).max(1))?);
        Ok(())
    }

    /// Sleeps until a bell or a liveness word moves, a descriptor is ready,
    /// or `until`. The caller armed its members and re-checked them after a
    /// `SeqCst` fence since [`Sleeper::tickets`].
    pub(super) fn sleep(
        &mut self,
        segs: &[Seg],
        fds: impl Iterator<Item = RawFd>,
        until: MonoTime,
    ) -> Slept {
        let mut slept = Slept::default();
        self.entries.clear();
        for seg in segs {
            self.entries
                .push(FutexWaitv::new(seg.link.own_bell().word(), seg.ticket));
            match seg.link.prepare_sleep() {
                // 0: the peer has not attached; its claim wakes the word,
                // but a death before that shows only to the slow check.
                PeerSleep::On(word, value) => {
                    slept.sliced |= value == 0;
                    self.entries.push(FutexWaitv::new(word, value));
                }
                PeerSleep::Unwatched => slept.sliced = true,
                // Dead at the scan already: its members were checked with
                // the death and found nothing more to report; nothing to
                // sleep on.
                PeerSleep::Dead if seg.dead => {}
                // Died since the scan: nothing in this sleep would ever
                // report it (the kernel's wake-up is gone), so do not
                // sleep; the caller re-scans and reports it, as
                // `wait::block_until` does.
                PeerSleep::Dead => return slept,
            }
        }
        self.pollfds.clear();
        self.pollfds.extend(fds.map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        let until = if slept.sliced {
            until.min(MonoTime::after(SLICE))
        } else {
            until
        };
        if self.entries.is_empty() {
            poll(&mut self.pollfds, until);
        } else if self.pollfds.is_empty() && self.entries.len() <= WAITV_MAX {
            // SAFETY: every word lies in a segment whose `Arc<Attachment>`
            // `segs` holds for the duration of the call.
            if unsafe { futex::wait_many(&self.entries, until) }.is_err() {
                self.fallback(until);
            }
        } else {
            self.relayed(until);
        }
        slept
    }

    /// No `futex_waitv`: a short sleep on the first word only.
    fn fallback(&mut self, until: MonoTime) {
        let until = until.min(MonoTime::after(FALLBACK_SLICE));
        if self.pollfds.is_empty() {
            // The first entry is the first segment's bell; its ticket is in
            // the entry. Other segments are seen at the next scan.
            // SAFETY: as in `sleep`.
            unsafe { futex::wait_entry(&self.entries[0], until) };
        } else {
            poll(&mut self.pollfds, until);
        }
    }

    /// The calling thread's chunk plus the set word; relays for the rest.
    fn relayed(&mut self, until: MonoTime) {
        let Some(relays) = self.relays.as_ref() else {
            // `reserve` failed to start relays: watch what fits, in slices.
            self.entries.truncate(WAITV_MAX);
            let until = until.min(MonoTime::after(FALLBACK_SLICE));
            // SAFETY: as in `sleep`.
            if unsafe { futex::wait_many(&self.entries, until) }.is_err() {
                self.fallback(until);
            }
            return;
        };
        let shared = &relays.shared;
        // Acquire: pairs with the relays' Release bump.
        let set_ticket = shared.set_word.load(Ordering::Acquire);
        let split = self.entries.len().min(WAITV_MAX - 1);
        let (mine, rest) = self.entries.split_at(split);
        for (i, chunk) in shared.chunks.iter().enumerate() {
            let mut slot = chunk.lock().unwrap_or_else(|p| p.into_inner());
            slot.clear();
            let from = (i * (WAITV_MAX - 1)).min(rest.len());
            let to = ((i + 1) * (WAITV_MAX - 1)).min(rest.len());
            slot.extend_from_slice(&rest[from..to]);
        }
        {
            let mut fds = shared.fds.lock().unwrap_or_else(|p| p.into_inner());
            fds.clear();
            fds.extend_from_slice(&self.pollfds);
        }
        self.main.clear();
        self.main.extend_from_slice(mine);
        self.main
            .push(FutexWaitv::new(&shared.set_word, set_ticket));
        relays.begin_round();
        // SAFETY: as in `sleep`; the set word lives in `shared`, which we
        // hold.
        let ok = unsafe { futex::wait_many(&self.main, until) }.is_ok();
        relays.end_round();
        if !ok {
            let until = until.min(MonoTime::after(FALLBACK_SLICE));
            let left = until.as_nanos().saturating_sub(MonoTime::now().as_nanos());
            std::thread::sleep(Duration::from_nanos(left));
        }
    }
}

/// `poll(2)` on `fds` until one is ready or `until`.
fn poll(fds: &mut [libc::pollfd], until: MonoTime) {
    let left = until.as_nanos().saturating_sub(MonoTime::now().as_nanos());
    let ms = (left / 1_000_000).min(i32::MAX as u64 - 1) as i32;
    // Round up so a sub-millisecond remainder does not spin.
    let ms = if until == MonoTime::NEVER { -1 } else { ms + 1 };
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries that we
    // own for the call.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

/// The relay threads and what they share with the calling thread.
#[derive(Debug)]
struct Relays {
    shared: Arc<RelayShared>,
    threads: Vec<JoinHandle<()>>,
    chunks: usize,
    fd_capacity: usize,
}

#[derive(Debug)]
struct RelayShared {
    /// Bumped (and woken) by a relay whose words or descriptors fired.
    set_word: AtomicU32,
    /// Odd while a round is on. Relays sleep on it between rounds and
    /// include it in their `futex_waitv`, so ending a round wakes them.
    round: AtomicU32,
    /// Set once, just before the round word's last move: relays exit.
    quit: AtomicBool,
    /// Each futex relay's words for the current round.
    chunks: Vec<Mutex<Vec<FutexWaitv>>>,
    /// The descriptor relay's descriptors for the current round.
    fds: Mutex<Vec<libc::pollfd>>,
    /// Written when a round ends, to wake the descriptor relay's `poll`.
    cancel: OwnedFd,
}

impl Relays {
    fn start(chunks: usize, fd_capacity: usize) -> std::io::Result<Relays> {
        let shared = RelayShared::new(chunks, fd_capacity)?;
        let mut relays = Relays {
            shared,
            threads: Vec::new(),
            chunks,
            fd_capacity,
        };
        for i in 0..chunks {
            let shared = Arc::clone(&relays.shared);
            relays.threads.push(spawn(move || futex_relay(&shared, i))?);
        }
        let shared = Arc::clone(&relays.shared);
        relays
            .threads
            .push(spawn(move || fd_relay(&shared, fd_capacity))?);
        Ok(relays)
    }

    fn begin_round(&self) {
        // Release: the chunks written before are seen by a relay that
        // acquires the new round (they are also behind their mutexes).
        self.shared.round.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.shared.round);
    }

    fn end_round(&self) {
        self.shared.end_round();
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.shared.tell_quit();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl RelayShared {
    fn new(chunks: usize, fd_capacity: usize) -> std::io::Result<Arc<RelayShared>> {
        // SAFETY: plain eventfd creation; the result is checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let cancel = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Arc::new(RelayShared {
            set_word: AtomicU32::new(0),
            round: AtomicU32::new(0),
            quit: AtomicBool::new(false),
            chunks: (0..chunks)
                .map(|_| Mutex::new(Vec::with_capacity(WAITV_MAX)))
                .collect(),
            fds: Mutex::new(Vec::with_capacity(fd_capacity)),
            cancel,
        }))
    }

    /// Ends the calling thread's round: moves the round word (even), wakes
    /// the relays sleeping on it, and wakes the descriptor relay's `poll`.
    fn end_round(&self) {
        // Release: as in `begin_round`, and for `tell_quit`'s flag.
        self.round.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.round);
        let one = 1u64.to_ne_bytes();
        use std::os::fd::AsFd;
        let _ = crate::sys::fd::write(self.cancel.as_fd(), &one);
    }

    /// Tells every relay to quit (the set is dropped or grows).
    fn tell_quit(&self) {
        // Release: a relay that acquires the round word moved below sees
        // the flag (see `next_round_with`).
        self.quit.store(true, Ordering::Release);
        // Moves the round word and wakes every relay, whether it sleeps
        // between rounds (on the round word) or in a round's `futex_waitv`
        // or `poll` (the round word is in it; the eventfd wakes `poll`).
        self.end_round();
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("remora-waitset".into())
        .stack_size(64 * 1024)
        .spawn(f)
}

/// Waits for the next round after `seen`; `None` when told to quit.
fn next_round(shared: &RelayShared, seen: u32) -> Option<u32> {
    next_round_with(shared, seen, || {})
}

/// [`next_round`], with `between` run between its two loads (tests use it
/// to put a `Drop` exactly there).
///
/// The round word is read *before* the quit flag: `Drop` stores the flag
/// and then moves the round word (Release), so a relay whose Acquire load
/// sees the moved round also sees the flag. Read the other way round, a
/// relay could read `quit == false` just before `Drop`'s store and the
/// round just after its `end_round`, take that for a new round (it is
/// odd), and sleep on its old chunk and a round word that never moves
/// again: `Drop` would hang joining it.
fn next_round_with(shared: &RelayShared, seen: u32, mut between: impl FnMut()) -> Option<u32> {
    loop {
        // Acquire: pairs with `begin_round`'s and `Drop`'s Release; seeing
        // the round `Drop` moved implies seeing its quit flag below.
        let round = shared.round.load(Ordering::Acquire);
        between();
        // Acquire: pairs with `Drop`'s Release store (and the round load
        // above is Acquire too, so this load cannot be reordered before it).
        if shared.quit.load(Ordering::Acquire) {
            return None;
        }
        if round % 2 == 1 && round != seen {
            return Some(round);
        }
        // Returns at once if the round moved since the load above (`Drop`
        // moves it after setting the flag, and wakes every relay).
        futex::wait(&shared.round, round, MonoTime::NEVER);
    }
}

/// Signals the calling thread: this relay's words or descriptors fired.
fn relay_fired(shared: &RelayShared, round: u32) {
    // Relaxed: a stale round only costs a spurious wake-up.
    if shared.round.load(Ordering::Relaxed) == round {
        // Release: pairs with the Acquire ticket of the set word.
        shared.set_word.fetch_add(1, Ordering::Release);
        futex::wake_all(&shared.set_word);
    }
}

fn futex_relay(shared: &RelayShared, index: usize) {
    let mut local = Vec::with_capacity(WAITV_MAX);
    let mut seen = 0;
    while let Some(round) = next_round(shared, seen) {
        seen = round;
        local.clear();
        local.extend_from_slice(
            &shared.chunks[index]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if local.is_empty() {
            continue;
        }
        local.truncate(WAITV_MAX - 1);
        local.push(FutexWaitv::new(&shared.round, round));
        // SAFETY: the words were the calling thread's during its round; a
        // round that ended since (the segment may be gone) is caught by the
        // round word, and `futex_waitv` only reads the addresses (an
        // unmapped one is `EFAULT`, a spurious return).
        let ok = unsafe { futex::wait_many(&local, MonoTime::NEVER) }.is_ok();
        if ok {
            relay_fired(shared, round);
        } else {
            // No futex_waitv: the calling thread sleeps in slices anyway.
            let _ = next_round(shared, round);
        }
    }
}

fn fd_relay(shared: &RelayShared, capacity: usize) {
    let mut local: Vec<libc::pollfd> = Vec::with_capacity(capacity + 1);
    let cancel = shared.cancel.as_raw_fd();
    let mut seen = 0;
    while let Some(round) = next_round(shared, seen) {
        seen = round;
        local.clear();
        local.extend_from_slice(&shared.fds.lock().unwrap_or_else(|p| p.into_inner()));
        if local.is_empty() {
            continue;
        }
        local.push(libc::pollfd {
            fd: cancel,
            events: libc::POLLIN,
            revents: 0,
        });
        loop {
            poll(&mut local, MonoTime::NEVER);
            let mut drained = [0u8; 8];
            // SAFETY: reading 8 bytes into our own buffer from the eventfd.
            unsafe { libc::read(cancel, drained.as_mut_ptr().cast(), 8) };
            // Relaxed: only decides whether this round is still on.
            if shared.round.load(Ordering::Relaxed) != round {
                break;
            }
            let n = local.len() - 1;
            if local[..n].iter().any(|p| p.revents != 0) {
                relay_fired(shared, round);
                break;
            }
            // A stale cancel from an earlier round: poll again.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelConfig, Segment};
    use std::time::Instant;

    /// Issue: a relay that read `quit` just before `Drop` set it and the
    /// round word just after `Drop` moved it took that for a new round and
    /// slept for good, so `Drop` hung joining it. Here `Drop`'s signal runs
    /// exactly between the relay's two loads.
    #[test]
    fn a_relay_told_to_quit_between_its_loads_quits() {
        let shared = RelayShared::new(1, 1).unwrap();
        // A round (1) came and went: the relay saw round 1, the set is
        // between rounds (2), and is now dropped.
        // Relaxed: single-threaded test set-up; the relay under test runs
        // on this thread.
        shared.round.store(2, Ordering::Relaxed);
        let mut told = false;
        let got = next_round_with(&shared, 1, || {
            if !std::mem::replace(&mut told, true) {
                shared.tell_quit();
            }
        });
        assert_eq!(got, None, "the relay took the quit for a new round");
    }

    /// Issue: a peer that died after the set's last scan and before its
    /// sleep was not slept on (its word already says dead, so the kernel's
    /// wake-up is gone) and was reported only at the deadline.
    #[test]
    fn a_peer_dead_since_the_scan_cuts_the_sleep() {
        let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
        let child = Segment::open(parent.name()).unwrap();
        let (_tx, _) = child.raw_channel("c").unwrap();
        let (_, rx) = parent.raw_channel("c").unwrap();
        let crate::channel::RecvEnd::Shm(end) = rx.end() else {
            panic!("not shared memory");
        };
        let link = end.watch().link;
        let mut segs = vec![Seg::new(link)];
        // The scan saw the peer alive.
        assert!(!segs[0].link.peer_dead_now());
        let mut sleeper = Sleeper::default();
        sleeper.reserve(1, 0).unwrap();
        sleeper.tickets(&mut segs);
        // Then it died: its liveness word says so (as the kernel writes it).
        forge_opener_word(parent.name(), crate::sys::robust::FUTEX_OWNER_DIED);
        let t0 = Instant::now();
        sleeper.sleep(
            &segs,
            std::iter::empty(),
            MonoTime::after(Duration::from_secs(3)),
        );
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "slept {took:?} past a death"
        );
    }

    /// Writes the opener's liveness word through a second mapping of the
    /// segment, as the kernel (or a hostile peer) would.
    fn forge_opener_word(name: &str, value: u32) {
        let fd = crate::sys::shm::open(name).unwrap();
        let len = std::mem::size_of::<crate::layout::SegmentHeader>();
        // SAFETY: a fresh shared mapping of the object's first bytes (the
        // header), unmapped below; nothing else uses this address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: `OPENER_WORD` is an aligned atomic word of the header,
        // inside the mapping.
        let word = unsafe {
            &*base
                .cast::<u8>()
                .add(crate::layout::OPENER_WORD)
                .cast::<AtomicU32>()
        };
        // Relaxed: the sleep under test re-reads it with Acquire.
        word.store(value, Ordering::Relaxed);
        // SAFETY: unmaps exactly the mapping made above; `word` is dead.
        unsafe { libc::munmap(base, len) };
    }
}
