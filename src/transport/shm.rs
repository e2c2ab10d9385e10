//! The shared-memory transport's channel ends: the send and receive loops
//! over a ring, its doorbells and its close flags.

use std::sync::Arc;
use std::time::Duration;

use crate::attachment::Attachment;
use crate::codec::EncodeError;
use crate::error::{RecvError, SendError};
use crate::ring::{Consumer, Producer, ReserveError, RingFault};
use crate::sync::Ordering;
use crate::sys::clock::MonoTime;
use crate::transport::{Incoming, ReleaseToken};
use crate::wait::Deadline;
use crate::wait::{self, WaitStrategy, Waited};

/// A blocking `Spin`/`Adaptive` send that finds the ring full and, re-reading
/// the head, sees less than `capacity / REFILL_DIVISOR` free, waits (once per
/// send, at most [`REFILL_PATIENCE`]) until that much is free.
///
/// Why: taking room one frame at a time from a full ring puts both ends in
/// lockstep on the `head` line: every release by the receiver then pays a
/// cross-core transfer under its doorbell fence, and every send a cache miss
/// re-reading `head`. Refilling in batches roughly doubles 64 B streaming
/// (`pingpong --rows throughput`: 9.5 to 20 M msg/s on a 128 KiB ring).
///
/// Bound: a send waits at most [`REFILL_PATIENCE`] longer than it otherwise
/// would, and never past its deadline. `try_send` and `Block` (whose every
/// wake-up is a system call) take any room the frame fits in.
const REFILL_DIVISOR: u64 = 4;
/// The longest a send waits for a batch of free space. It must stay below
/// `Adaptive`'s spin phase, so the batch condition never keeps a sleeping
/// sender asleep.
const REFILL_PATIENCE: Duration = Duration::from_micros(10);
const _: () = assert!(REFILL_PATIENCE.as_nanos() < wait::ADAPTIVE_SPIN.as_nanos());
/// While waiting for a batch, the head is re-read only every this many
/// polls: re-reading it at full rate would be the very lockstep batching
/// avoids.
const REFILL_POLLS_PER_HEAD_READ: u32 = 16;

/// What a wait set watches of one shared-memory end: the ring (its control
/// block, capacity and frame stamps), kept mapped by the attachment (see
/// `waitset`).
#[cfg_attr(loom, allow(dead_code))]
#[derive(Debug, Clone)]
pub(crate) struct ShmWatch {
    pub(crate) link: Arc<Attachment>,
    /// Valid for as long as `link` keeps the mapping.
    pub(crate) region: crate::ring::RingRegion,
}

/// The producing end of one ring.
#[derive(Debug)]
pub(crate) struct ShmSender {
    producer: Producer,
    link: Arc<Attachment>,
}

/// The consuming end of one ring.
#[derive(Debug)]
pub(crate) struct ShmReceiver {
    consumer: Consumer,
    link: Arc<Attachment>,
}

impl ShmSender {
    /// Wraps a producer; from here on, dropping the sender closes the ring.
    /// Taking the ring's ends ([`Producer::new`], [`Consumer::new`]) has no
    /// side effects, so a caller taking several ends takes them all before
    /// wrapping any: a failure then leaves every ring as it was.
    ///
    /// # Safety
    ///
    /// `link` must keep the producer's region mapped for as long as the
    /// sender lives.
    pub(crate) unsafe fn new(producer: Producer, link: Arc<Attachment>) -> ShmSender {
        ShmSender { producer, link }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.producer.region().max_payload()
    }

    /// What a wait set watches of this end (room to send).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn watch(&self) -> ShmWatch {
        let region = self.producer.region();
        ShmWatch {
            link: Arc::clone(&self.link),
            region: *region,
        }
    }

    /// Ring capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.producer.region().capacity() as usize
    }

    /// Bytes committed and not yet released by the receiver (validated
    /// head; see [`Producer::in_flight`]). No system call.
    pub(crate) fn in_flight(&self) -> usize {
        self.producer.in_flight() as usize
    }

    /// Whether no send can ever succeed again: the receiver closed, the
    /// peer process is dead (its liveness word; no system call except,
    /// once, the wake-up of this process's other waiters), or this end is
    /// poisoned.
    pub(crate) fn is_disconnected(&self) -> bool {
        // Acquire: pairs with the receiver's Release store on close.
        self.producer.fault().is_some()
            || self
                .producer
                .region()
                .ctrl()
                .ends
                .consumer_closed
                .load(Ordering::Acquire)
                != 0
            || self.link.peer_dead_now()
    }

    /// The send loop: reserve at least `min` bytes, let `write` fill the
    /// grant and report the length, commit, ring the doorbell. On overflow,
    /// ask for as much space as the message needs; when there is none, wait
    /// per `deadline`.
    ///
    /// `sized`: `min` is the message's exact length (raw sends). Otherwise
    /// (typed sends) it is only a lower bound, and before waiting for space
    /// `write` is called once with a zero-length frame at a dangling,
    /// 16-aligned pointer to measure the message: one that can never fit is
    /// `TooLarge` at once, not after waiting for a full-size grant.
    #[inline]
    pub(crate) fn send_with(
        &mut self,
        mut min: usize,
        mut sized: bool,
        deadline: Deadline,
        strategy: WaitStrategy,
        mut write: impl FnMut(*mut u8, usize) -> Result<usize, EncodeError>,
    ) -> Result<(), SendError> {
        let region = *self.producer.region();
        let ctrl = region.ctrl();
        let max = region.max_payload();
        let mut refill = match (deadline, strategy) {
            (Deadline::At(_), WaitStrategy::Spin | WaitStrategy::Adaptive) => {
                region.capacity() / REFILL_DIVISOR
            }
            _ => 0,
        };
        loop {
            // A poisoned end reports its fault on every call, before anything
            // else (even a closed peer).
            if let Some(fault) = self.producer.fault() {
                return Err(SendError::Corrupted(fault));
            }
            // Acquire: pairs with the receiver's Release store on close.
            if ctrl.ends.consumer_closed.load(Ordering::Acquire) != 0 || self.link.peer_known_dead()
            {
                return Err(SendError::Disconnected);
            }
            // An unsized (typed) send expects about the last message's size,
            // so big messages rewind to index 0 on an empty ring as sized
            // ones do.
            let expect = if sized {
                min
            } else {
                self.producer.last_len().max(min)
            };
            match self.producer.reserve_expecting(min, refill, expect) {
                Ok(grant) => match write(grant.payload, grant.len) {
                    Ok(len) => {
                        self.producer.commit(grant, len);
                        ctrl.data_bell.ring_with(|| self.link.peer_bell());
                        return Ok(());
                    }
                    Err(EncodeError::Overflow { needed }) if needed > max => {
                        return Err(SendError::TooLarge { max });
                    }
                    // The grant was what fit contiguously; ask for what the
                    // message needs.
                    Err(EncodeError::Overflow { needed }) => {
                        min = needed.max(grant.len + 1);
                        sized = true;
                    }
                    Err(EncodeError::Other) => return Err(SendError::Encode),
                },
                Err(ReserveError::TooLarge) => return Err(SendError::TooLarge { max }),
                Err(ReserveError::Fault(f)) => return Err(SendError::Corrupted(f)),
                Err(ReserveError::Full) => {
                    if !sized {
                        // Measure before reporting `Full` or waiting: a
                        // message that can never fit must not wait for room.
                        sized = true;
                        let dangling = std::ptr::NonNull::<u128>::dangling().as_ptr().cast();
                        match write(dangling, 0) {
                            Ok(len) => min = min.max(len),
                            Err(EncodeError::Overflow { needed }) if needed > max => {
                                return Err(SendError::TooLarge { max });
                            }
                            Err(EncodeError::Overflow { needed }) => min = min.max(needed),
                            Err(EncodeError::Other) => return Err(SendError::Encode),
                        }
                    }
                    let Deadline::At(at) = deadline else {
                        return Err(if self.link.poll_peer_gone() {
                            SendError::Disconnected
                        } else {
                            SendError::Full
                        });
                    };
                    // One batch wait per send; afterwards any room will do.
                    let batch = std::mem::take(&mut refill);
                    let patience_end = match batch {
                        0 => MonoTime::NEVER,
                        _ => MonoTime::after(REFILL_PATIENCE).min(at),
                    };
                    let mut polls = 0u32;
                    let producer = &mut self.producer;
                    let link = &self.link;
                    let waited = wait::wait(
                        strategy,
                        &ctrl.space_bell,
                        at,
                        || {
                            // Relaxed: only ends the wait; the loop re-reads
                            // the flag with Acquire before acting on it.
                            if ctrl.ends.consumer_closed.load(Ordering::Relaxed) != 0 {
                                return true;
                            }
                            // Re-reads the head only while the frame does
                            // not fit; true once poisoned.
                            if !producer.has_space(min) {
                                return false;
                            }
                            if batch == 0 || producer.fault().is_some() {
                                return true;
                            }
                            if MonoTime::now() >= patience_end {
                                return true;
                            }
                            polls += 1;
                            polls.is_multiple_of(REFILL_POLLS_PER_HEAD_READ)
                                && (producer.refreshed_free() >= batch
                                    || producer.fault().is_some())
                        },
                        link.as_ref(),
                    );
                    if waited == Waited::TimedOut && !self.link.poll_peer_gone() {
                        return Err(SendError::Timeout);
                    }
                }
            }
        }
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        let ctrl = self.producer.region().ctrl();
        // Release: every commit before this is visible to a receiver that
        // Acquire-loads the flag, so it can drain before disconnecting.
        ctrl.ends.producer_closed.store(1, Ordering::Release);
        ctrl.data_bell.ring_with(|| self.link.peer_bell());
        // A wait set of ours watching this sender (armed on the space
        // bell) sleeps on our own aggregate bell: wake it to report the
        // close (the peer rings nothing for it).
        ctrl.space_bell.ring_with(|| self.link.own_bell());
    }
}

impl ShmReceiver {
    /// Wraps a consumer; from here on, dropping the receiver closes the
    /// ring (see [`ShmSender::new`]).
    ///
    /// # Safety
    ///
    /// `link` must keep the consumer's region mapped for as long as the
    /// receiver lives.
    pub(crate) unsafe fn new(consumer: Consumer, link: Arc<Attachment>) -> ShmReceiver {
        ShmReceiver { consumer, link }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.consumer.region().max_payload()
    }

    /// What a wait set watches of this end (data to receive).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn watch(&self) -> ShmWatch {
        let region = self.consumer.region();
        ShmWatch {
            link: Arc::clone(&self.link),
            region: *region,
        }
    }

    /// Ring capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.consumer.region().capacity() as usize
    }

    /// Bytes committed by the sender and not yet released by us (validated
    /// tail; see [`Consumer::in_flight`]). No system call.
    pub(crate) fn in_flight(&self) -> usize {
        self.consumer.in_flight() as usize
    }

    /// Whether nothing will be committed any more: the sender closed, the
    /// peer process is dead (as for [`ShmSender::is_disconnected`]), or
    /// this end is poisoned. Frames committed before may still be waiting.
    pub(crate) fn is_disconnected(&self) -> bool {
        // Acquire: pairs with the sender's Release store on close.
        self.consumer.fault().is_some()
            || self
                .consumer
                .region()
                .ctrl()
                .ends
                .producer_closed
                .load(Ordering::Acquire)
                != 0
            || self.link.peer_dead_now()
    }

    /// The receive loop: the next validated frame, waiting per `deadline`.
    /// Drains every committed frame before reporting `Disconnected`.
    #[inline(always)]
    pub(crate) fn next_frame(
        &mut self,
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<Incoming, RecvError> {
        let region = *self.consumer.region();
        let ctrl = region.ctrl();
        loop {
            if let Some(frame) = self.consumer.peek().map_err(|f| self.fail(f))? {
                return Ok(Incoming::from_ring(frame));
            }
            // Acquire: pairs with the sender's Release store on close, so the
            // peek below sees every frame committed before it.
            if ctrl.ends.producer_closed.load(Ordering::Acquire) != 0 || self.link.peer_known_dead()
            {
                return match self.consumer.peek().map_err(|f| self.fail(f))? {
                    Some(frame) => Ok(Incoming::from_ring(frame)),
                    None => Err(RecvError::Disconnected),
                };
            }
            let Deadline::At(at) = deadline else {
                if self.link.poll_peer_gone() {
                    continue; // drains, then reports Disconnected
                }
                return Err(RecvError::Empty);
            };
            let consumer = &mut self.consumer;
            let link = &self.link;
            // Relaxed in the condition: it only ends the wait; the loop
            // re-reads the close flag with Acquire before acting on it.
            let waited = wait::wait(
                strategy,
                &ctrl.data_bell,
                at,
                || consumer.has_data() || ctrl.ends.producer_closed.load(Ordering::Relaxed) != 0,
                link.as_ref(),
            );
            if waited == Waited::TimedOut && !self.link.poll_peer_gone() {
                return Err(RecvError::Timeout);
            }
        }
    }

    /// This end is poisoned for good: close it now, as dropping it would,
    /// so a sender blocked on the full ring (or about to block) gets
    /// `Disconnected` instead of waiting for space that never comes.
    #[cold]
    fn fail(&self, fault: RingFault) -> RecvError {
        let ctrl = self.consumer.region().ctrl();
        // Release: as in `drop`.
        ctrl.ends.consumer_closed.store(1, Ordering::Release);
        ctrl.space_bell.ring_with(|| self.link.peer_bell());
        // A wait set of ours watching this receiver (armed on the data
        // bell) sleeps on our own aggregate bell: wake it to report the
        // close.
        ctrl.data_bell.ring_with(|| self.link.own_bell());
        RecvError::Corrupted(fault)
    }

    /// Hands a frame's space back to the sender and wakes it if it waits.
    #[inline]
    pub(crate) fn release(&mut self, frame: Incoming) {
        // Only frames from `next_frame` come back here, so the token is
        // always a ring frame; anything else is ignored rather than trusted.
        if let ReleaseToken::Ring(frame) = frame.token {
            self.consumer.release(frame);
            let link = &self.link;
            (self.consumer.region().ctrl().space_bell).ring_with(|| link.peer_bell());
        } else {
            debug_assert!(false, "a non-ring frame released to a ring");
        }
    }
}

impl Drop for ShmReceiver {
    fn drop(&mut self) {
        let ctrl = self.consumer.region().ctrl();
        // Release: orders our last head store before the close flag.
        ctrl.ends.consumer_closed.store(1, Ordering::Release);
        ctrl.space_bell.ring_with(|| self.link.peer_bell());
        // As in `fail`: wake a wait set of ours watching this receiver.
        ctrl.data_bell.ring_with(|| self.link.own_bell());
    }
}
