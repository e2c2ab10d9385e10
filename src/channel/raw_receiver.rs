//! The receiving end of a raw-bytes channel, and the receive loop typed
//! receivers share.

use std::ops::Deref;
use std::time::Duration;

use super::Deadline;
use crate::error::RecvError;
use crate::ring::Frame;
use crate::transport::{FifoReceiver, ShmReceiver};
use crate::wait::WaitStrategy;

/// Receives byte messages from one direction of a channel, in place (in
/// the ring, or in the FIFO transport's receive buffer).
///
/// Obtained like a [`RawSender`](crate::RawSender); see there for an
/// example.
#[derive(Debug)]
pub struct RawReceiver {
    end: RecvEnd,
    strategy: WaitStrategy,
}

/// The transport behind a receiver.
#[derive(Debug)]
pub(crate) enum RecvEnd {
    Shm(ShmReceiver),
    Fifo(FifoReceiver),
}

/// A received byte message, borrowed from the ring. Dropping it releases the
/// space to the sender.
#[derive(Debug)]
pub struct RawMessage<'a> {
    rx: &'a mut RawReceiver,
    frame: Frame,
}

impl RawReceiver {
    pub(crate) fn new(end: RecvEnd, strategy: WaitStrategy) -> RawReceiver {
        RawReceiver { end, strategy }
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

    /// The largest message this channel carries, in bytes.
    pub fn max_message(&self) -> usize {
        match &self.end {
            RecvEnd::Shm(end) => end.max_message(),
            RecvEnd::Fifo(end) => end.max_message(),
        }
    }

    /// Receives the next message, waiting for one.
    ///
    /// Errors: [`RecvError::Disconnected`] once the sender is gone and
    /// everything it sent was received; [`RecvError::Corrupted`] /
    /// [`RecvError::Malformed`] when the peer broke the protocol;
    /// [`RecvError::TypeMismatch`] (FIFO transport, see there).
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

    /// The next validated frame, waiting per `deadline`; every committed
    /// frame is delivered before `Disconnected`.
    #[inline]
    pub(crate) fn next_frame(&mut self, deadline: Deadline) -> Result<Frame, RecvError> {
        match &mut self.end {
            RecvEnd::Shm(end) => end.next_frame(deadline, self.strategy),
            RecvEnd::Fifo(end) => end.next_frame(deadline, self.strategy),
        }
    }

    /// Hands a frame back to the transport (and its space to the sender).
    #[inline]
    pub(crate) fn release(&mut self, frame: Frame) {
        match &mut self.end {
            RecvEnd::Shm(end) => end.release(frame),
            RecvEnd::Fifo(end) => end.release(frame),
        }
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
        // SAFETY: the frame was validated to lie inside the ring data (or the
        // FIFO receive buffer) and is ours until released in `drop`; the
        // protocol forbids the sender to write a ring frame meanwhile (a peer
        // that breaks this can change the bytes we read but not their bounds:
        // see the README's threat model), and a FIFO buffer is private.
        unsafe { std::slice::from_raw_parts(self.frame.payload, self.frame.len) }
    }
}

impl Drop for RawMessage<'_> {
    fn drop(&mut self) {
        self.rx.release(self.frame);
    }
}
