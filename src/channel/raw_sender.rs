//! The sending end of a raw-bytes channel, and the send loop typed senders
//! share.

use std::time::Duration;

use super::{Deadline, Slot};
use crate::codec::EncodeError;
use crate::error::SendError;
use crate::transport::{FifoSender, ShmSender};
use crate::wait::WaitStrategy;

/// Sends byte messages into one direction of a channel.
///
/// Obtained from [`Segment::raw_channel`](crate::Segment::raw_channel),
/// [`Child::raw_channel`](crate::Child::raw_channel) or
/// [`Connection::raw_channel`](crate::Connection::raw_channel). Over shared
/// memory each message is copied once, into the ring, and the receiver
/// copies it out or reads it in place (see
/// [`ReceiveMode`](crate::ReceiveMode)); over FIFOs it is copied into a
/// frame buffer and written to the pipe.
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
    end: SendEnd,
    strategy: WaitStrategy,
}

/// The transport behind a sender.
#[derive(Debug)]
pub(crate) enum SendEnd {
    Shm(ShmSender),
    Fifo(FifoSender),
}

impl RawSender {
    pub(crate) fn new(end: SendEnd, strategy: WaitStrategy) -> RawSender {
        RawSender { end, strategy }
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
        match &self.end {
            SendEnd::Shm(end) => end.max_message(),
            SendEnd::Fifo(end) => end.max_message(),
        }
    }

    /// Sends `bytes`, waiting for space if the ring is full.
    ///
    /// Errors: [`SendError::TooLarge`], [`SendError::Disconnected`],
    /// [`SendError::Corrupted`].
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::NEVER)
    }

    /// Sends `bytes` if there is room now, else [`SendError::Full`].
    ///
    /// `Full` means the message was not sent (retry it). Over FIFOs, a
    /// message whose frame the pipe takes only in part is accepted (`Ok`)
    /// and its rest goes out first on this sender's next send, or when it is
    /// dropped; see the README's "Transports".
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::Now)
    }

    /// Sends `bytes`, waiting at most `timeout` for space, else
    /// [`SendError::Timeout`].
    ///
    /// `Timeout` means the message was not sent (retry it). Over FIFOs, a
    /// message whose frame the pipe takes only in part is accepted (`Ok`)
    /// and its rest goes out first on this sender's next send, or when it is
    /// dropped; see the README's "Transports".
    pub fn send_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::after(timeout))
    }

    /// Sends a `len`-byte message written in place by `write`, straight into
    /// the ring: no intermediate buffer, one write of each byte. Waits for
    /// space like [`send`](RawSender::send); `write` runs once, when the
    /// space is granted.
    ///
    /// Errors: as [`send`](RawSender::send).
    pub fn send_in_place(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Slot<'_>),
    ) -> Result<(), SendError> {
        let mut write = Some(write);
        self.send_with(len, true, Deadline::NEVER, |dst, cap| {
            debug_assert!(cap >= len);
            // SAFETY: the grant gives `cap >= len` writable bytes at `dst`,
            // reserved for this message until commit.
            let mut slot = unsafe { Slot::new(dst, len) };
            if let Some(write) = write.take() {
                write(&mut slot);
            }
            Ok(len)
        })
    }

    fn send_bytes(&mut self, bytes: &[u8], deadline: Deadline) -> Result<(), SendError> {
        match &mut self.end {
            SendEnd::Shm(end) => {
                end.send_with(bytes.len(), true, deadline, self.strategy, |dst, cap| {
                    debug_assert!(cap >= bytes.len());
                    // SAFETY: the grant gives `cap >= bytes.len()` writable bytes
                    // at `dst` that only we touch until commit; `bytes` is ours.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
                    Ok(bytes.len())
                })
            }
            // No frame buffer needed: the bytes go from here to the pipe.
            SendEnd::Fifo(end) => end.send_bytes(bytes, deadline, self.strategy),
        }
    }

    /// Sends one message: `write` fills the space it is given (at least
    /// `min` bytes) and reports the length; see the transports for how space
    /// is found and waited for. `sized`: `min` is the exact length; if not,
    /// `write` may also be called with zero bytes of space, to measure (it
    /// then reports `EncodeError::Overflow` with the length, or the length).
    #[inline]
    pub(crate) fn send_with(
        &mut self,
        min: usize,
        sized: bool,
        deadline: Deadline,
        write: impl FnMut(*mut u8, usize) -> Result<usize, EncodeError>,
    ) -> Result<(), SendError> {
        match &mut self.end {
            SendEnd::Shm(end) => end.send_with(min, sized, deadline, self.strategy, write),
            SendEnd::Fifo(end) => end.send_with(min, sized, deadline, self.strategy, write),
        }
    }
}
