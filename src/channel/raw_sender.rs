//! The sending end of a raw-bytes channel, and the send loop typed senders
//! share.

use std::sync::Arc;
use std::time::Duration;

use super::Deadline;
use crate::codec::EncodeError;
use crate::error::SendError;
use crate::link::Link;
use crate::ring::{Producer, ReserveError, RingFault, RingRegion};
use crate::sync::Ordering;
use crate::wait::{self, WaitStrategy, Waited};

/// Sends byte messages into one ring of a channel.
///
/// Obtained from [`Segment::raw_channel`](crate::Segment::raw_channel). Each
/// message is copied once, into the ring; the receiver reads it in place.
///
/// ```
/// use remora::{ChannelConfig, Segment};
/// let parent = Segment::create(&[ChannelConfig::new("bytes").capacity(4096)])?;
/// let child = Segment::open(parent.name())?;
/// let (mut tx, _) = parent.raw_channel("bytes")?;
/// let (_, mut rx) = child.raw_channel("bytes")?;
/// tx.send(b"hello")?;
/// assert_eq!(&*rx.recv()?, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RawSender {
    producer: Producer,
    strategy: WaitStrategy,
    link: Arc<Link>,
}

impl RawSender {
    /// # Safety
    ///
    /// This must be the only producer of `region`, in any process, and
    /// `link` must keep the region's memory alive.
    pub(crate) unsafe fn new(region: RingRegion, link: Arc<Link>) -> Result<RawSender, RingFault> {
        // SAFETY: forwarded to the caller.
        let producer = unsafe { Producer::new(region)? };
        Ok(RawSender {
            producer,
            strategy: WaitStrategy::default(),
            link,
        })
    }

    /// Sets how blocking sends wait for space (default
    /// [`WaitStrategy::Adaptive`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The current wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// The largest message this channel carries, in bytes.
    pub fn max_message(&self) -> usize {
        self.producer.region().max_payload()
    }

    /// Sends `bytes`, waiting for space if the ring is full.
    ///
    /// Errors: [`SendError::TooLarge`], [`SendError::Disconnected`],
    /// [`SendError::Corrupted`].
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::NEVER)
    }

    /// Sends `bytes` if there is room now, else [`SendError::Full`].
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::Now)
    }

    /// Sends `bytes`, waiting at most `timeout` for space, else
    /// [`SendError::Timeout`].
    pub fn send_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::after(timeout))
    }

    fn send_bytes(&mut self, bytes: &[u8], deadline: Deadline) -> Result<(), SendError> {
        self.send_with(bytes.len(), deadline, |dst, cap| {
            debug_assert!(cap >= bytes.len());
            // SAFETY: the grant gives `cap >= bytes.len()` writable bytes at
            // `dst` that only we touch until commit; `bytes` is our memory.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
            Ok(bytes.len())
        })
    }

    /// The send loop: reserve at least `min` bytes, let `write` fill the
    /// grant and report the length, commit, ring the doorbell. On overflow,
    /// ask for more space; when there is none, wait per `deadline`.
    #[inline]
    pub(crate) fn send_with(
        &mut self,
        mut min: usize,
        deadline: Deadline,
        mut write: impl FnMut(*mut u8, usize) -> Result<usize, EncodeError>,
    ) -> Result<(), SendError> {
        let region = *self.producer.region();
        let ctrl = region.ctrl();
        let max = region.max_payload();
        loop {
            // Acquire: pairs with the receiver's Release store on close.
            if ctrl.ends.consumer_closed.load(Ordering::Acquire) != 0 || self.link.peer_known_dead()
            {
                return Err(SendError::Disconnected);
            }
            match self.producer.reserve(min) {
                Ok(grant) => match write(grant.payload, grant.len) {
                    Ok(len) => {
                        self.producer.commit(grant, len);
                        ctrl.data_bell.ring();
                        return Ok(());
                    }
                    Err(EncodeError::Overflow) if grant.len >= max => {
                        return Err(SendError::TooLarge { max });
                    }
                    // The grant was what fit contiguously; ask for more.
                    Err(EncodeError::Overflow) => min = grant.len + 1,
                    Err(EncodeError::Other) => return Err(SendError::Encode),
                },
                Err(ReserveError::TooLarge) => return Err(SendError::TooLarge { max }),
                Err(ReserveError::Fault(f)) => return Err(SendError::Corrupted(f)),
                Err(ReserveError::Full) => {
                    let Deadline::At(at) = deadline else {
                        return Err(SendError::Full);
                    };
                    let producer = &mut self.producer;
                    let link = &self.link;
                    let waited = wait::wait(
                        self.strategy,
                        &ctrl.space_bell,
                        at,
                        || {
                            producer.has_space(min)
                                || ctrl.ends.consumer_closed.load(Ordering::Relaxed) != 0
                        },
                        || link.check_peer_gone(),
                    );
                    if waited == Waited::TimedOut {
                        return Err(SendError::Timeout);
                    }
                }
            }
        }
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        let ctrl = self.producer.region().ctrl();
        // Release: every commit before this is visible to a receiver that
        // Acquire-loads the flag, so it can drain before disconnecting.
        ctrl.ends.producer_closed.store(1, Ordering::Release);
        ctrl.data_bell.ring();
    }
}
