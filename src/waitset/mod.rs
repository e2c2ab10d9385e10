//! Waiting on many channel ends and children at once: [`WaitSet`].
//!
//! A set holds cheap *probes* of its members (see `member.rs`), never the
//! ends themselves, because a [`Message`](crate::Message) borrows its
//! receiver mutably: the set says *which* member is ready, and you receive
//! from that end yourself. Shared-memory members cost no file descriptor:
//! the set sleeps on one aggregate bell and one liveness word per segment
//! (see `sleep.rs` and `doorbell::AggregateBell`).

mod member;
mod sleep;

use std::fmt;
use std::sync::atomic::fence;
use std::time::Duration;

use crate::sync::Ordering;
use crate::sys::clock::MonoTime;
use crate::wait::{ADAPTIVE_SPIN, Deadline, SLICE, WaitStrategy};

use member::Member;
pub use member::{ProbeOf, Watchable};
use sleep::{Seg, Sleeper};

/// How long `Adaptive` yields between scans before sleeping.
const ADAPTIVE_YIELD: Duration = Duration::from_micros(50);
/// Scans between clock reads while spinning.
const SCANS_PER_CLOCK_READ: u32 = 16;

/// Names a member of a [`WaitSet`]: returned by [`WaitSet::add`], carried
/// by every [`Event`], taken by [`WaitSet::remove`]. A key of a removed
/// member never names a later one.
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let (_tx, rx) = parent.raw_channel("c")?;
/// let mut set = remora::WaitSet::new();
/// let key = set.add(&rx)?;
/// assert!(set.remove(key));
/// assert!(!set.remove(key)); // gone
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    index: u32,
    generation: u32,
}

/// What happened to a member.
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let child = remora::Segment::open(parent.name())?;
/// let (tx, _) = child.raw_channel("c")?;
/// let (_, rx) = parent.raw_channel("c")?;
/// let mut set = remora::WaitSet::new();
/// set.add(&rx)?;
/// drop(tx); // the sender hangs up, nothing was sent
/// assert_eq!(set.wait()?.kind(), remora::EventKind::Disconnected);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A receiver has at least one committed message: `try_recv` it.
    Readable,
    /// A sender's ring has at least a quarter of its capacity free: `try_send`
    /// (a message larger than that may still find it `Full`).
    Writable,
    /// The member's channel is finished: for a receiver, its sender hung
    /// up or its process died *and* every committed message was received;
    /// or the receiver itself failed for good (its `try_recv` returns the
    /// error, e.g. [`RecvError::Corrupted`](crate::RecvError::Corrupted))
    /// or was dropped. For a sender, its receiver hung up or died. Reported
    /// once; the member is no longer watched (remove it at leisure).
    Disconnected,
    /// A child exited (reap it with [`Child::wait`](crate::Child::wait)).
    /// Reported once; the member is no longer watched.
    Exited,
}

/// A member that is ready, and how.
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let child = remora::Segment::open(parent.name())?;
/// # let (mut tx, _) = parent.raw_channel("c")?;
/// # let (_, rx) = child.raw_channel("c")?;
/// let mut set = remora::WaitSet::new();
/// let key = set.add(&rx)?;
/// tx.send(b"x")?;
/// let ev = set.wait()?;
/// assert_eq!((ev.key(), ev.kind()), (key, remora::EventKind::Readable));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    key: Key,
    kind: EventKind,
}

impl Event {
    /// The member.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = child.raw_channel("c")?;
    /// # let (_, rx) = parent.raw_channel("c")?;
    /// let mut set = remora::WaitSet::new();
    /// let key = set.add(&rx)?;
    /// tx.send(b"x")?;
    /// assert_eq!(set.wait()?.key(), key);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> Key {
        self.key
    }

    /// What happened.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = child.raw_channel("c")?;
    /// # let (_, rx) = parent.raw_channel("c")?;
    /// let mut set = remora::WaitSet::new();
    /// set.add(&rx)?;
    /// tx.send(b"x")?;
    /// assert_eq!(set.wait()?.kind(), remora::EventKind::Readable);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kind(&self) -> EventKind {
        self.kind
    }
}

/// Why a wait returned no event.
///
/// ```
/// let mut set = remora::WaitSet::new();
/// assert_eq!(set.try_wait(), Err(remora::WaitError::NoMembers));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitError {
    /// [`WaitSet::try_wait`]: no member is ready.
    Empty,
    /// [`WaitSet::wait_timeout`]: no member became ready in time.
    Timeout,
    /// Nothing is watched: the set is empty, or every member reported its
    /// final event. Waiting would never end.
    NoMembers,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::Empty => "no member is ready",
            WaitError::Timeout => "timed out waiting for a member",
            WaitError::NoMembers => "the wait set watches no member",
        })
    }
}

impl std::error::Error for WaitError {}

/// Why a member could not be added.
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let (_tx, rx) = parent.raw_channel("c")?;
/// let mut set = remora::WaitSet::new();
/// let added: Result<remora::Key, remora::WatchError> = set.add(&rx);
/// assert!(added.is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchError {
    /// The end cannot be watched by a set: a FIFO-transport sender (not
    /// supported yet), a FIFO receiver that already failed for good, or a
    /// child without a pidfd (Linux < 5.3).
    Unsupported,
    /// A system call failed (duplicating a pidfd, starting a relay thread).
    Io(std::io::Error),
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::Unsupported => f.write_str("this end cannot join a wait set"),
            WatchError::Io(e) => write!(f, "adding to the wait set failed: {e}"),
        }
    }
}

impl std::error::Error for WatchError {}

/// Waits until any of many receivers has a message, a sender has room, a
/// channel disconnects or a child exits: one thread can serve many
/// children.
///
/// Add [`Receiver`](crate::Receiver)s and [`RawReceiver`](crate::RawReceiver)s
/// (and, optionally, [`Sender`](crate::Sender)s / [`RawSender`](crate::RawSender)s
/// for room to send, and [`Child`](crate::Child)ren for their exit), from
/// any number of segments, then [`wait`](WaitSet::wait) (or
/// [`try_wait`](WaitSet::try_wait), [`wait_timeout`](WaitSet::wait_timeout)).
/// The set keeps only a probe of each end, so you keep using the end
/// itself: on a [`Readable`](EventKind::Readable) event, `try_recv` from it.
///
/// * **Which events.** A member is reported when it has committed data (or
///   room) *and* its ring moved since it was last reported: new data
///   arrived, or you received (sent) some. So drain what you want, then
///   wait again; an event you ignore is not reported again until the
///   ring moves, and does not make the set spin. A report can be spurious
///   (e.g. a peer scribbling its indices): `try_recv` then returns
///   `Empty` or the ring's error.
/// * **Disconnects and exits** are reported once per member, after its
///   committed messages were reported; the member is then no longer
///   watched, and the rest of the set keeps working.
/// * **Fair.** Each wait starts scanning after the member reported last,
///   so a member that always has data cannot starve the others.
/// * **Cost.** Shared-memory members use no file descriptor. Waiting
///   follows the set's [`WaitStrategy`] (default `Adaptive`: scan for
///   20 µs, yield for 50 µs, then sleep); asleep, it costs nothing: it
///   sleeps in `futex_waitv` on one word per segment side, which senders
///   bump only while a set is asleep on their ring, and on each peer's
///   liveness word, so a peer's death wakes it. Sets over more than 64
///   segments, and sets mixing children and channels, use relay threads
///   (started by `add`). Without `futex_waitv` (Linux < 5.16) the set
///   re-scans every 5 ms while asleep.
/// * **FIFO transport.** FIFO receivers can join (their pipe is polled, a
///   relay thread does it when the set also has segments); FIFO senders
///   cannot yet. A FIFO member whose event you ignore is re-examined every
///   50 ms rather than polled.
/// * **No allocation** per wait once members are added.
///
/// ```
/// use remora::{ChannelConfig, EventKind, Segment, WaitSet};
/// let parent = Segment::create(&[ChannelConfig::new("a"), ChannelConfig::new("b")])?;
/// let child = Segment::open(parent.name())?;
/// let (mut tx_a, _) = child.raw_channel("a")?;
/// let (mut tx_b, _) = child.raw_channel("b")?;
/// let (_, mut rx_a) = parent.raw_channel("a")?;
/// let (_, mut rx_b) = parent.raw_channel("b")?;
///
/// let mut set = WaitSet::new();
/// let a = set.add(&rx_a)?;
/// let b = set.add(&rx_b)?;
/// tx_b.send(b"to b")?;
/// drop(tx_a); // a hangs up
///
/// let mut seen = Vec::new();
/// while seen.len() < 2 {
///     let ev = set.wait()?;
///     match ev.kind() {
///         EventKind::Readable if ev.key() == b => {
///             while let Ok(msg) = rx_b.try_recv() {
///                 seen.push(msg.to_vec());
///             }
///         }
///         EventKind::Disconnected if ev.key() == a => seen.push(b"a gone".to_vec()),
///         other => unreachable!("{other:?}"),
///     }
/// }
/// assert!(seen.contains(&b"to b".to_vec()) && seen.contains(&b"a gone".to_vec()));
/// # let _ = &mut rx_a;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct WaitSet {
    /// First, so it drops first: its relay threads are joined before the
    /// members' segments may be unmapped.
    sleeper: Sleeper,
    slots: Vec<Slot>,
    /// Free slot indices, reused by `add`.
    free: Vec<u32>,
    segs: Vec<Seg>,
    /// Where the next scan starts: just after the member reported last.
    next: usize,
    /// Members not yet `done`.
    live: usize,
    /// Descriptors the members may poll (child exits, FIFO receivers).
    fds: usize,
    /// FIFO receivers among the members.
    fifos: usize,
    strategy: WaitStrategy,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    member: Option<Member>,
}

impl WaitSet {
    /// An empty set waiting with [`WaitStrategy::Adaptive`].
    ///
    /// ```
    /// let set = remora::WaitSet::new();
    /// assert!(set.is_empty());
    /// ```
    pub fn new() -> WaitSet {
        WaitSet::default()
    }

    /// Sets how [`wait`](WaitSet::wait) and
    /// [`wait_timeout`](WaitSet::wait_timeout) wait: `Spin` scans without
    /// sleeping, `Block` sleeps at once, `Adaptive` (default) scans, yields,
    /// then sleeps.
    ///
    /// ```
    /// let mut set = remora::WaitSet::new();
    /// set.set_wait_strategy(remora::WaitStrategy::Block);
    /// assert_eq!(set.wait_strategy(), remora::WaitStrategy::Block);
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The current [`WaitStrategy`].
    ///
    /// ```
    /// assert_eq!(remora::WaitSet::new().wait_strategy(), remora::WaitStrategy::Adaptive);
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Number of members (including those whose final event was reported
    /// and that were not removed yet).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let (_tx, rx) = parent.raw_channel("c")?;
    /// let mut set = remora::WaitSet::new();
    /// set.add(&rx)?;
    /// assert_eq!(set.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether the set has no member.
    ///
    /// ```
    /// assert!(remora::WaitSet::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a member: any channel end or a [`Child`](crate::Child) (see
    /// [`Watchable`]). The set keeps a probe, not a borrow: keep using the
    /// end. Adding the same end twice gives two members. Allocates (and,
    /// for sets over more than 64 segments or mixing children with
    /// channels, may start relay threads); waits do not.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (tx, rx) = parent.channel::<u32, u32>("c")?;
    /// let mut set = remora::WaitSet::new();
    /// let key = set.add(&rx)?;
    /// # let _ = (tx, key);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add<W: Watchable + ?Sized>(&mut self, end: &W) -> Result<Key, WatchError> {
        let ProbeOf(probe) = end.probe()?;
        let mut member = Member::new(probe);
        let new_seg = match member.link() {
            Some(link) => match self
                .segs
                .iter()
                .position(|s| std::sync::Arc::ptr_eq(&s.link, link))
            {
                Some(i) => {
                    member.seg = i;
                    false
                }
                None => {
                    member.seg = self.segs.len();
                    true
                }
            },
            None => false,
        };
        let segs = self.segs.len() + usize::from(new_seg);
        let fds = self.fds + member.fd_count();
        self.sleeper.reserve(segs, fds).map_err(WatchError::Io)?;
        if new_seg {
            let link = std::sync::Arc::clone(member.link().expect("a segment member"));
            self.segs.push(Seg::new(link));
        }
        if let Some(seg) = self.segs.get_mut(member.seg) {
            seg.members += 1;
        }
        self.fds = fds;
        self.fifos += usize::from(member.fd_count() == 2);
        self.live += 1;
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    member: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.member = Some(member);
        Ok(Key {
            index: index as u32,
            generation: slot.generation,
        })
    }

    /// Removes a member; returns whether `key` named one. Its key is never
    /// reused.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let (_tx, rx) = parent.raw_channel("c")?;
    /// let mut set = remora::WaitSet::new();
    /// let key = set.add(&rx)?;
    /// assert!(set.remove(key));
    /// assert!(set.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&mut self, key: Key) -> bool {
        let Some(slot) = self.slots.get_mut(key.index as usize) else {
            return false;
        };
        if slot.generation != key.generation || slot.member.is_none() {
            return false;
        }
        let member = slot.member.take().expect("checked");
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        if !member.done {
            self.live -= 1;
        }
        self.fds -= member.fd_count();
        self.fifos -= usize::from(member.fd_count() == 2);
        if let Some(seg) = self.segs.get_mut(member.seg) {
            seg.members -= 1;
            if seg.members == 0 {
                let gone = member.seg;
                self.segs.swap_remove(gone);
                let moved = self.segs.len();
                for m in self.slots.iter_mut().filter_map(|s| s.member.as_mut()) {
                    if m.seg == moved {
                        m.seg = gone;
                    }
                }
            }
        }
        true
    }

    /// Waits until a member has an event.
    ///
    /// # Errors
    ///
    /// [`WaitError::NoMembers`] if nothing is watched.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.raw_channel("c")?;
    /// # let (_, mut rx) = child.raw_channel("c")?;
    /// let mut set = remora::WaitSet::new();
    /// set.add(&rx)?;
    /// std::thread::spawn(move || tx.send(b"later"));
    /// set.wait()?;
    /// assert_eq!(&*rx.try_recv()?, b"later");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&mut self) -> Result<Event, WaitError> {
        self.wait_until(Deadline::NEVER)
    }

    /// Returns a ready member's event without waiting.
    ///
    /// # Errors
    ///
    /// [`WaitError::Empty`] if no member is ready, [`WaitError::NoMembers`]
    /// if nothing is watched.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let (_tx, rx) = parent.raw_channel("c")?;
    /// let mut set = remora::WaitSet::new();
    /// set.add(&rx)?;
    /// assert_eq!(set.try_wait(), Err(remora::WaitError::Empty));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_wait(&mut self) -> Result<Event, WaitError> {
        self.wait_until(Deadline::Now)
    }

    /// Waits at most `timeout` for a member's event.
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`], or [`WaitError::NoMembers`] if nothing is
    /// watched.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let (_tx, rx) = parent.raw_channel("c")?;
    /// let mut set = remora::WaitSet::new();
    /// set.add(&rx)?;
    /// let waited = set.wait_timeout(std::time::Duration::from_millis(5));
    /// assert_eq!(waited, Err(remora::WaitError::Timeout));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Event, WaitError> {
        self.wait_until(Deadline::after(timeout))
    }

    fn wait_until(&mut self, deadline: Deadline) -> Result<Event, WaitError> {
        if let Some(ev) = self.scan(true) {
            return Ok(ev);
        }
        if self.live == 0 {
            return Err(WaitError::NoMembers);
        }
        let Deadline::At(at) = deadline else {
            return Err(WaitError::Empty);
        };
        let sleep_after = match self.strategy {
            WaitStrategy::Block => return self.block(at),
            WaitStrategy::Spin => None,
            WaitStrategy::Adaptive => Some(MonoTime::after(ADAPTIVE_SPIN)),
        };
        if let Some(ev) = self.spin(at, sleep_after)? {
            return Ok(ev);
        }
        if self.strategy == WaitStrategy::Adaptive {
            let yield_end = MonoTime::after(ADAPTIVE_YIELD).min(at);
            while MonoTime::now() < yield_end {
                std::thread::yield_now();
                if let Some(ev) = self.scan(false) {
                    return Ok(ev);
                }
            }
        }
        self.block(at)
    }

    /// Scans until an event, the deadline (`Err(Timeout)`) or `give_up`
    /// (`Ok(None)`; never for `None`). Descriptor members and the slow
    /// liveness checks are scanned every [`SLICE`].
    fn spin(
        &mut self,
        at: MonoTime,
        give_up: Option<MonoTime>,
    ) -> Result<Option<Event>, WaitError> {
        let mut next_thorough = MonoTime::after(SLICE);
        loop {
            for _ in 0..SCANS_PER_CLOCK_READ {
                if let Some(ev) = self.scan(false) {
                    return Ok(Some(ev));
                }
                std::hint::spin_loop();
            }
            let now = MonoTime::now();
            if now >= next_thorough {
                if let Some(ev) = self.scan(true) {
                    return Ok(Some(ev));
                }
                next_thorough = now.plus(SLICE);
            }
            if self.live == 0 {
                return Err(WaitError::NoMembers);
            }
            if now >= at {
                return Err(WaitError::Timeout);
            }
            if give_up.is_some_and(|g| now >= g) {
                return Ok(None);
            }
        }
    }

    /// Sleeps (see `sleep.rs`) until an event or the deadline.
    fn block(&mut self, at: MonoTime) -> Result<Event, WaitError> {
        loop {
            if let Some(ev) = self.scan(true) {
                return Ok(ev);
            }
            if self.live == 0 {
                return Err(WaitError::NoMembers);
            }
            if MonoTime::now() >= at {
                return Err(WaitError::Timeout);
            }
            self.sleeper.tickets(&mut self.segs);
            // Members stay armed across sleeps until they report an event
            // (see `scan`): an idle member costs nothing per wait, and a
            // busy one is disarmed so its sender stops paying wake-ups.
            for m in self.members_mut() {
                m.arm();
            }
            // Orders every `arm` before the re-check below (pairs with the
            // notifiers' fence in `Doorbell::ring_with`): see the Dekker
            // argument in `doorbell`.
            fence(Ordering::SeqCst);
            let found = self.scan(false);
            if found.is_none() {
                let fds = self
                    .slots
                    .iter()
                    .filter_map(|s| s.member.as_ref())
                    .flat_map(Member::fds)
                    .flatten();
                // FIFO members whose event was ignored are not polled (their
                // pipe stays readable): re-scan them every SLICE instead.
                let until = if self.fifos > 0 {
                    at.min(MonoTime::after(SLICE))
                } else {
                    at
                };
                self.sleeper.sleep(&self.segs, fds, until);
            }
            if let Some(ev) = found {
                return Ok(ev);
            }
            // Whatever woke us, read every peer's word now: the kernel wakes
            // one waiter at a death, and that one must latch it and wake
            // this process's other waiters on the word.
            for seg in &self.segs {
                seg.link.peer_dead_now();
            }
        }
    }

    fn members_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.slots.iter_mut().filter_map(|s| s.member.as_mut())
    }

    /// One pass over the members, starting after the one reported last.
    /// `thorough`: also the checks that cost a system call (descriptor
    /// members; the rate-limited slow liveness check, once per segment,
    /// whose finding the members then see in the latch).
    fn scan(&mut self, thorough: bool) -> Option<Event> {
        for seg in &mut self.segs {
            // One read of each peer's liveness word per scan (it latches a
            // death and wakes this process's other waiters on the word),
            // not one per member.
            seg.dead = if thorough {
                seg.link.poll_peer_gone()
            } else {
                seg.link.peer_dead_now()
            };
        }
        let n = self.slots.len();
        for i in 0..n {
            let index = (self.next + i) % n;
            let slot = &mut self.slots[index];
            let Some(member) = slot.member.as_mut() else {
                continue;
            };
            let dead = self.segs.get(member.seg).is_some_and(|s| s.dead);
            if let Some(kind) = member.check(thorough, dead) {
                member.disarm();
                if member.done {
                    self.live -= 1;
                }
                self.next = index + 1;
                return Some(Event {
                    key: Key {
                        index: index as u32,
                        generation: slot.generation,
                    },
                    kind,
                });
            }
        }
        None
    }
}
