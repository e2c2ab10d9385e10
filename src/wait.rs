//! How a blocked call waits: spin, sleep on a doorbell, or both.
//!
//! Every strategy re-checks the caller's condition, honours the caller's
//! deadline, and polls the caller's "peer gone" check at least every
//! [`SLICE`], so a dead or closed peer ends any wait promptly.

use std::time::Duration;

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

/// Longest single futex sleep, and the period of the peer-liveness check.
pub(crate) const SLICE: Duration = Duration::from_millis(50);
/// How long `Adaptive` busy-polls before yielding.
pub(crate) const ADAPTIVE_SPIN: Duration = Duration::from_micros(20);
/// How long `Adaptive` yields the CPU before sleeping.
const ADAPTIVE_YIELD: Duration = Duration::from_micros(50);
/// Spin iterations between clock reads.
const SPINS_PER_CLOCK_READ: u32 = 128;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The condition held, or the peer is gone: the caller re-evaluates.
    Ready,
    /// The deadline passed with the condition still false.
    TimedOut,
}

/// Waits until `ready()` is true, `gone()` is true, or `deadline` passes.
///
/// `ready` must be cheap and make no system call (it runs in spin loops);
/// `gone` may make one (a pidfd poll) and runs at most once per [`SLICE`].
pub(crate) fn wait(
    strategy: WaitStrategy,
    bell: &Doorbell,
    deadline: MonoTime,
    mut ready: impl FnMut() -> bool,
    mut gone: impl FnMut() -> bool,
) -> Waited {
    let mut next_liveness_check = MonoTime::after(SLICE);
    match strategy {
        WaitStrategy::Spin => {
            spin_until(deadline, MonoTime::NEVER, &mut ready, &mut gone).unwrap_or(Waited::TimedOut)
        }
        WaitStrategy::Block => block_until(
            bell,
            deadline,
            &mut next_liveness_check,
            &mut ready,
            &mut gone,
        ),
        WaitStrategy::Adaptive => {
            let spin_end = MonoTime::after(ADAPTIVE_SPIN);
            if let Some(w) = spin_until(deadline, spin_end, &mut ready, &mut gone) {
                return w;
            }
            let yield_end = MonoTime::after(ADAPTIVE_YIELD).min(deadline);
            while MonoTime::now() < yield_end {
                std::thread::yield_now();
                if ready() {
                    return Waited::Ready;
                }
            }
            block_until(
                bell,
                deadline,
                &mut next_liveness_check,
                &mut ready,
                &mut gone,
            )
        }
    }
}

/// Busy-polls until ready, deadline (`Some(TimedOut)`), peer gone, or
/// `give_up` (`None`: hand over to the next phase).
fn spin_until(
    deadline: MonoTime,
    give_up: MonoTime,
    ready: &mut impl FnMut() -> bool,
    gone: &mut impl FnMut() -> bool,
) -> Option<Waited> {
    let mut next_liveness_check = MonoTime::after(SLICE);
    loop {
        for _ in 0..SPINS_PER_CLOCK_READ {
            if ready() {
                return Some(Waited::Ready);
            }
            std::hint::spin_loop();
        }
        let now = MonoTime::now();
        if now >= deadline {
            return Some(if ready() {
                Waited::Ready
            } else {
                Waited::TimedOut
            });
        }
        if now >= give_up {
            return None;
        }
        if now >= next_liveness_check {
            if gone() {
                return Some(Waited::Ready);
            }
            next_liveness_check = MonoTime::after(SLICE);
        }
    }
}

/// Sleeps on `bell` in slices until ready, deadline, or peer gone.
fn block_until(
    bell: &Doorbell,
    deadline: MonoTime,
    next_liveness_check: &mut MonoTime,
    ready: &mut impl FnMut() -> bool,
    gone: &mut impl FnMut() -> bool,
) -> Waited {
    loop {
        if ready() {
            return Waited::Ready;
        }
        let now = MonoTime::now();
        if now >= deadline {
            return Waited::TimedOut;
        }
        if now >= *next_liveness_check {
            if gone() {
                return Waited::Ready;
            }
            *next_liveness_check = MonoTime::after(SLICE);
        }
        let ticket = bell.prepare();
        // The re-check after announcing ourselves: see `doorbell` for why
        // this cannot miss a publication.
        if ready() {
            bell.done();
            return Waited::Ready;
        }
        bell.sleep(ticket, deadline.min(*next_liveness_check));
        bell.done();
    }
}
