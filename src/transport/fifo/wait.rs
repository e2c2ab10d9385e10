//! How a FIFO channel end waits for its descriptor to become ready.
//!
//! The descriptors are non-blocking; a call that would block asks a
//! [`Waiter`] what to do next, then retries its `read`/`write`:
//!
//! * `Spin` polls readiness without sleeping (a zero-timeout `poll` per
//!   try: a system call, but one that does not take the pipe's lock), then
//!   retries;
//! * `Adaptive` does that for a few microseconds, yielding the CPU between
//!   checks (the peer may need it to answer), then sleeps in `ppoll`;
//! * `Block` sleeps in `ppoll` at once.
//!
//! A sleep ends when the descriptor is ready, when the peer's pidfd becomes
//! readable (parent side: the child died), at the caller's deadline, or
//! after [`SLICE`] at most: then the waiter checks the peer (getppid on the
//! child side) and settles the parent's placeholder, so a dead or detached
//! peer ends every wait within one slice.

use std::time::Duration;

use super::link::Pipe;
use crate::sys::clock::MonoTime;
use crate::sys::fd;
use crate::wait::{ADAPTIVE_SPIN, SLICE, WaitStrategy};

/// What the caller should do after [`Waiter::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Try the I/O again.
    Retry,
    /// The deadline passed (the last try before it found nothing).
    TimedOut,
    /// The peer process is gone.
    PeerGone,
}

/// The state of one blocked call.
#[derive(Debug)]
pub(super) struct Waiter {
    deadline: MonoTime,
    /// Retry without sleeping until then.
    spin_until: MonoTime,
    /// `Adaptive`: yield the CPU between checks (the peer may be waiting
    /// for it); `Spin` keeps it.
    yield_between: bool,
    /// Next liveness check and placeholder settle.
    next_check: MonoTime,
}

impl Waiter {
    pub(super) fn new(strategy: WaitStrategy, deadline: MonoTime) -> Waiter {
        let spin_until = match strategy {
            WaitStrategy::Spin => MonoTime::NEVER,
            WaitStrategy::Adaptive => MonoTime::after(ADAPTIVE_SPIN),
            WaitStrategy::Block => MonoTime::after(Duration::ZERO),
        };
        Waiter {
            deadline,
            spin_until,
            yield_between: strategy == WaitStrategy::Adaptive,
            next_check: MonoTime::after(SLICE),
        }
    }

    /// Called after an I/O attempt on `pipe` would have blocked; waits for
    /// `events` (`POLLIN`/`POLLOUT`) as the strategy says.
    pub(super) fn wait(&mut self, pipe: &mut Pipe, events: i16) -> Outcome {
        loop {
            let now = MonoTime::now();
            if now >= self.deadline {
                return Outcome::TimedOut;
            }
            if now >= self.next_check {
                self.next_check = MonoTime::after(SLICE);
                pipe.settle();
                if pipe.link.check_peer_gone() {
                    return Outcome::PeerGone;
                }
            }
            if now >= self.spin_until {
                break;
            }
            // Spin on a lock-free readiness check, not on the I/O itself.
            if pipe.fd().is_none_or(|fd| fd::revents(fd, events) != 0) {
                return Outcome::Retry;
            }
            if self.yield_between {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let until = self.deadline.min(self.next_check);
        // A closed end has nothing to wait for: the retry reports it.
        let Some(own) = pipe.fd() else {
            return Outcome::Retry;
        };
        let peer_fd_ready = fd::poll(own, events, pipe.link.peer_fd(), until);
        if peer_fd_ready && pipe.link.check_peer_gone() {
            return Outcome::PeerGone;
        }
        Outcome::Retry
    }
}
