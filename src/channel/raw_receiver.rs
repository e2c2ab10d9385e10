//! The receiving end of a raw-bytes channel, and the receive loop typed
//! receivers share.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use super::Deadline;
use crate::error::RecvError;
use crate::link::Link;
use crate::ring::{Consumer, Frame, RingFault, RingRegion};
use crate::sync::Ordering;
use crate::wait::{self, WaitStrategy, Waited};

/// Receives byte messages from one ring of a channel, in place.
///
/// Obtained from [`Segment::raw_channel`](crate::Segment::raw_channel); see
/// [`RawSender`](crate::RawSender) for an example.
#[derive(Debug)]
pub struct RawReceiver {
    consumer: Consumer,
    strategy: WaitStrategy,
    link: Arc<Link>,
}

/// A received byte message, borrowed from the ring. Dropping it releases the
/// space to the sender.
#[derive(Debug)]
pub struct RawMessage<'a> {
    rx: &'a mut RawReceiver,
    frame: Frame,
}

impl RawReceiver {
    /// # Safety
    ///
    /// This must be the only consumer of `region`, in any process, and
    /// `link` must keep the region's memory alive.
    pub(crate) unsafe fn new(
        region: RingRegion,
        link: Arc<Link>,
    ) -> Result<RawReceiver, RingFault> {
        // SAFETY: forwarded to the caller.
        let consumer = unsafe { Consumer::new(region)? };
        Ok(RawReceiver {
            consumer,
            strategy: WaitStrategy::default(),
            link,
        })
    }

    /// Sets how blocking receives wait for data (default
    /// [`WaitStrategy::Adaptive`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The current wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Receives the next message, waiting for one.
    ///
    /// Errors: [`RecvError::Disconnected`] once the sender is gone and
    /// everything it sent was received; [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<RawMessage<'_>, RecvError> {
        let frame = self.next_frame(Deadline::NEVER)?;
        Ok(RawMessage { rx: self, frame })
    }

    /// Receives the next message if one is waiting, else [`RecvError::Empty`].
    pub fn try_recv(&mut self) -> Result<RawMessage<'_>, RecvError> {
        let frame = self.next_frame(Deadline::Now)?;
        Ok(RawMessage { rx: self, frame })
    }

    /// Receives the next message, waiting at most `timeout`, else
    /// [`RecvError::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<RawMessage<'_>, RecvError> {
        let frame = self.next_frame(Deadline::after(timeout))?;
        Ok(RawMessage { rx: self, frame })
    }

    /// The receive loop: the next validated frame, waiting per `deadline`.
    /// Drains every committed frame before reporting `Disconnected`.
    #[inline]
    pub(crate) fn next_frame(&mut self, deadline: Deadline) -> Result<Frame, RecvError> {
        let region = *self.consumer.region();
        let ctrl = region.ctrl();
        loop {
            if let Some(frame) = self.consumer.peek().map_err(RecvError::Corrupted)? {
                return Ok(frame);
            }
            // Acquire: pairs with the sender's Release store on close, so the
            // peek below sees every frame committed before it.
            if ctrl.ends.producer_closed.load(Ordering::Acquire) != 0 || self.link.peer_known_dead()
            {
                return match self.consumer.peek().map_err(RecvError::Corrupted)? {
                    Some(frame) => Ok(frame),
                    None => Err(RecvError::Disconnected),
                };
            }
            let Deadline::At(at) = deadline else {
                return Err(RecvError::Empty);
            };
            let consumer = &mut self.consumer;
            let link = &self.link;
            let waited = wait::wait(
                self.strategy,
                &ctrl.data_bell,
                at,
                || consumer.has_data() || ctrl.ends.producer_closed.load(Ordering::Relaxed) != 0,
                || link.check_peer_gone(),
            );
            if waited == Waited::TimedOut {
                return Err(RecvError::Timeout);
            }
        }
    }

    /// Hands a frame's space back to the sender and wakes it if it waits.
    #[inline]
    pub(crate) fn release(&mut self, frame: Frame) {
        self.consumer.release(frame);
        self.consumer.region().ctrl().space_bell.ring();
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        let ctrl = self.consumer.region().ctrl();
        // Release: orders our last head store before the close flag.
        ctrl.ends.consumer_closed.store(1, Ordering::Release);
        ctrl.space_bell.ring();
    }
}

impl RawMessage<'_> {
    /// The message bytes (also available through `Deref`).
    pub fn bytes(&self) -> &[u8] {
        self
    }
}

impl Deref for RawMessage<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the frame was validated to lie inside the ring data and is
        // ours until released in `drop`; the protocol forbids the sender to
        // write it meanwhile (a peer that breaks this can change the bytes we
        // read but not their bounds: see the README's threat model).
        unsafe { std::slice::from_raw_parts(self.frame.payload, self.frame.len) }
    }
}

impl Drop for RawMessage<'_> {
    fn drop(&mut self) {
        self.rx.release(self.frame);
    }
}
