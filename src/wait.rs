//! How a blocked call waits: spin, sleep on a doorbell, or both.
//!
//! Every strategy re-checks the caller's condition, honours the caller's
//! deadline, and watches the peer's liveness ([`Liveness`]): spinning
//! phases read the peer's liveness word at every clock read (a load, no
//! system call); sleeps wait on the doorbell and that word at once, so the
//! kernel's death notice wakes them. The thorough check (which may make a
//! system call, e.g. a pidfd poll for a child that never attached) runs at
//! least every [`SLICE`].

use std::time::Duration;

use std::sync::atomic::AtomicU32;

use crate::doorbell::Doorbell;
use crate::sys::clock::MonoTime;

/// How a channel end waits when it cannot proceed.
///
/// The strategy only affects the side that waits; the other side always
/// checks the doorbell after publishing, so the two ends of a channel may use
/// different strategies.
///
/// ```
/// use remora::WaitStrategy;
/// assert_eq!(WaitStrategy::default(), WaitStrategy::Adaptive);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Busy-poll the ring. Lowest latency; burns a core while waiting and
    /// makes no system call. Use only when each side has a core of its own.
    Spin,
    /// Sleep on the futex at once. No CPU while idle; each wake-up costs a
    /// system call on both sides.
    Block,
    /// Spin briefly, then yield, then sleep on the futex: near-`Spin` latency
    /// when the peer answers at once, near-`Block` cost when it does not.
    #[default]
    Adaptive,
}

impl WaitStrategy {
    /// Encoding in the channel directory.
    pub(crate) fn to_hint(self) -> u32 {
        match self {
            WaitStrategy::Adaptive => 0,
            WaitStrategy::Spin => 1,
            WaitStrategy::Block => 2,
        }
    }

    /// Decoding from the channel directory; unknown values fall back to the
    /// default, since the hint is advisory.
    pub(crate) fn from_hint(hint: u32) -> WaitStrategy {
        match hint {
            1 => WaitStrategy::Spin,
            2 => WaitStrategy::Block,
            _ => WaitStrategy::Adaptive,
        }
    }
}

/// How long a call may wait: the `try_`, `_timeout` and blocking forms of
/// every send and receive, for every transport.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    /// `try_*`: do not wait at all.
    Now,
    /// Wait until this time.
    At(MonoTime),
}

impl Deadline {
    pub(crate) const NEVER: Deadline = Deadline::At(MonoTime::NEVER);

    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline::At(MonoTime::after(timeout))
    }
}

/// Period of the thorough liveness check, and the longest sleep when the
/// peer's death cannot be slept on (a peer without a liveness sentinel).
pub(crate) const SLICE: Duration = Duration::from_millis(50);
/// The longest sleep while the kernel watches the peer's death for us (its
/// liveness word, attached): the thorough check then runs this often. A
/// peer that forges its own word (not its sentinel's TID, so the kernel
/// does not mark it at its death) is still seen dead by that check, this
/// much later at most.
pub(crate) const WATCHED_SLICE: Duration = Duration::from_secs(1);
/// How long `Adaptive` busy-polls before yielding.
pub(crate) const ADAPTIVE_SPIN: Duration = Duration::from_micros(20);
/// How long `Adaptive` yields the CPU before sleeping.
const ADAPTIVE_YIELD: Duration = Duration::from_micros(50);

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The condition held, or the peer is gone: the caller re-evaluates.
    Ready,
    /// The deadline passed with the condition still false.
    TimedOut,
}

/// What a waiter may sleep on besides its doorbell.
#[derive(Debug)]
pub(crate) enum PeerSleep<'a> {
    /// The peer's liveness word and the value it holds now (with
    /// `FUTEX_WAITERS` announced, so the kernel wakes us at its death).
    On(&'a AtomicU32, u32),
    /// The peer cannot be slept on: sleep at most one [`SLICE`].
    Unwatched,
    /// The peer is already dead.
    Dead,
}

/// How a wait learns that the peer died.
pub(crate) trait Liveness {
    /// Cheap (no system call; runs in spin loops): is the peer known dead?
    fn dead_now(&self) -> bool;
    /// Thorough (may make a system call; at most once per [`SLICE`]).
    fn dead_checked(&self) -> bool;
    /// Before sleeping: what to sleep on besides the doorbell.
    fn prepare_sleep(&self) -> PeerSleep<'_>;
}

/// Waits until `ready()` is true, the peer is gone, or `deadline` passes,
/// sleeping on `bell` ([`wait_on`] a doorbell).
pub(crate) fn wait(
    strategy: WaitStrategy,
    bell: &Doorbell,
    deadline: MonoTime,
    ready: impl FnMut() -> bool,
    peer: &impl Liveness,
) -> Waited {
    wait_on(strategy, bell, deadline, ready, peer)
}

/// Waits until `ready()` is true, the peer is gone, or `deadline` passes:
/// spins, yields and sleeps on `bell` as `strategy` says.
///
/// `ready` must be cheap (it runs in spin loops): on a ring a load, on a
/// pipe a zero-timeout `poll`, which does not take the pipe's lock.
#[inline]
pub(crate) fn wait_on<S: Sleep>(
    strategy: WaitStrategy,
    bell: &S,
    deadline: MonoTime,
    mut ready: impl FnMut() -> bool,
    peer: &impl Liveness,
) -> Waited {
    match strategy {
        WaitStrategy::Spin => {
            spin_until::<S>(deadline, None, &mut ready, peer).unwrap_or(Waited::TimedOut)
        }
        WaitStrategy::Block => block_until(bell, deadline, &mut ready, peer),
        WaitStrategy::Adaptive => {
            if let Some(w) = spin_until::<S>(deadline, Some(ADAPTIVE_SPIN), &mut ready, peer) {
                return w;
            }
            let yield_end = MonoTime::after(ADAPTIVE_YIELD).min(deadline);
            while MonoTime::now() < yield_end {
                std::thread::yield_now();
                if ready() || peer.dead_now() {
                    return Waited::Ready;
                }
            }
            block_until(bell, deadline, &mut ready, peer)
        }
    }
}

/// Busy-polls until ready, deadline (`Some(TimedOut)`), peer gone, or
/// `spin_for` has passed (`None`: hand over to the next phase).
///
/// The clock is first read after [`Sleep::POLLS_PER_CLOCK_READ`] polls,
/// not on entry: a peer that answers within that burst (the common case of
/// a spinning round trip) costs no clock read at all. The spin phase and
/// the liveness period count from that first read.
fn spin_until<S: Sleep>(
    deadline: MonoTime,
    spin_for: Option<Duration>,
    ready: &mut impl FnMut() -> bool,
    peer: &impl Liveness,
) -> Option<Waited> {
    // (give up, next thorough liveness check), set at the first clock read.
    let mut times: Option<(MonoTime, MonoTime)> = None;
    loop {
        for _ in 0..S::POLLS_PER_CLOCK_READ {
            if ready() {
                return Some(Waited::Ready);
            }
            std::hint::spin_loop();
        }
        if peer.dead_now() {
            return Some(Waited::Ready);
        }
        let now = MonoTime::now();
        let (give_up, next_check) = times.get_or_insert_with(|| {
            let give_up = spin_for.map_or(MonoTime::NEVER, |d| now.plus(d));
            (give_up, now.plus(SLICE))
        });
        if now >= deadline {
            return Some(if ready() {
                Waited::Ready
            } else {
                Waited::TimedOut
            });
        }
        if now >= *give_up {
            return None;
        }
        if now >= *next_check {
            if peer.dead_checked() {
                return Some(Waited::Ready);
            }
            *next_check = now.plus(SLICE);
        }
    }
}

/// What a blocked call sleeps on once it stops spinning: the ring's
/// doorbell, or (the FIFO transport) a pipe end.
pub(crate) trait Sleep {
    /// `ready()` polls between clock reads (and liveness-word reads) while
    /// spinning: many when a poll is a load, one when it is a system call
    /// (else a deadline would be overshot by the whole burst).
    const POLLS_PER_CLOCK_READ: u32;

    /// Sleeps once, at most until `until` (or the next wake-up); whether
    /// to stop waiting (`ready()` held, or the peer is gone).
    fn sleep_once(
        &self,
        deadline: MonoTime,
        until: MonoTime,
        ready: &mut impl FnMut() -> bool,
        peer: &impl Liveness,
    ) -> bool;
}

/// Sleeps on `sleeper` until ready, deadline, or peer gone, checking the
/// peer thoroughly every [`SLICE`].
fn block_until(
    sleeper: &impl Sleep,
    deadline: MonoTime,
    ready: &mut impl FnMut() -> bool,
    peer: &impl Liveness,
) -> Waited {
    let mut next_check = MonoTime::after(SLICE);
    loop {
        if ready() || peer.dead_now() {
            return Waited::Ready;
        }
        let now = MonoTime::now();
        if now >= deadline {
            return Waited::TimedOut;
        }
        if now >= next_check {
            if peer.dead_checked() {
                return Waited::Ready;
            }
            next_check = MonoTime::after(SLICE);
        }
        if sleeper.sleep_once(deadline, deadline.min(next_check), ready, peer) {
            return Waited::Ready;
        }
    }
}

impl Sleep for Doorbell {
    const POLLS_PER_CLOCK_READ: u32 = 128;

    /// Sleeps on the doorbell and the peer's liveness word.
    fn sleep_once(
        &self,
        deadline: MonoTime,
        until: MonoTime,
        ready: &mut impl FnMut() -> bool,
        peer: &impl Liveness,
    ) -> bool {
        let ticket = self.prepare();
        // The re-check after announcing ourselves: see `doorbell` for why
        // this cannot miss a publication.
        if ready() {
            self.done();
            return true;
        }
        match peer.prepare_sleep() {
            // An attached peer's death wakes this sleep (the kernel's
            // robust-futex notice on its word), so the thorough check need
            // not cut it short: an idle receiver wakes once per
            // WATCHED_SLICE, not 20 times a second. Before the peer
            // attaches (`value` 0), the slice stays: only the thorough
            // check (a pidfd) sees a child that dies before attaching.
            PeerSleep::On(word, value) if value != 0 => {
                let until = deadline.min(MonoTime::after(WATCHED_SLICE));
                self.sleep_or_death(ticket, word, value, until)
            }
            PeerSleep::On(word, value) => self.sleep_or_death(ticket, word, value, until),
            PeerSleep::Unwatched => self.sleep(ticket, until),
            PeerSleep::Dead => {
                self.done();
                return true;
            }
        }
        self.done();
        // Whatever woke us, read the peer's word now, before `ready()` can
        // end the wait: the kernel wakes only one waiter at a death, and the
        // one it woke must latch the death and wake this process's other
        // waiters on the word (`dead_now` does), even if its own condition
        // happens to hold.
        peer.dead_now()
    }
}
