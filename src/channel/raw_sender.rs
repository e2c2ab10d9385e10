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

    /// The transport end, for a wait set's probe.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn end(&self) -> &SendEnd {
        &self.end
    }

    /// Sets how blocking sends wait for space (default
    /// [`WaitStrategy::Adaptive`]).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// tx.set_wait_strategy(remora::WaitStrategy::Spin); // busy-poll a full ring
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The current wait strategy.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (tx, _) = parent.raw_channel("c")?;
    /// assert_eq!(tx.wait_strategy(), remora::WaitStrategy::Adaptive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// The largest message this channel carries, in bytes: half the
    /// capacity less the 16-byte frame header.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// assert_eq!(tx.max_message(), 2032);
    /// assert_eq!(tx.send(&[0; 2033]), Err(remora::SendError::TooLarge { max: 2032 }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_message(&self) -> usize {
        match &self.end {
            SendEnd::Shm(end) => end.max_message(),
            SendEnd::Fifo(end) => end.max_message(),
        }
    }

    /// The capacity of this direction in bytes, as declared with
    /// [`ChannelConfig::capacity`](crate::ChannelConfig::capacity): the
    /// ring's size over shared memory. Over FIFOs the pipe's kernel buffer
    /// was asked for this size (in whole pages, within 4 KiB to 1 MiB), so
    /// it may hold somewhat more or less.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (tx, _) = parent.raw_channel("c")?;
    /// assert_eq!(tx.capacity(), 4096);
    /// assert_eq!(tx.max_message(), 4096 / 2 - 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(&self) -> usize {
        match &self.end {
            SendEnd::Shm(end) => end.capacity(),
            SendEnd::Fifo(end) => end.capacity(),
        }
    }

    /// Bytes sent and not yet taken by the receiver, framing included.
    ///
    /// * Shared memory: the ring bytes in use. Each message takes a 16-byte
    ///   frame header plus its length rounded up to 16 (a 5-byte message
    ///   counts 32). A message that went back to the ring's start (it did
    ///   not fit before the ring's end, or the ring rewound) also counts
    ///   the bytes it skipped there until the receiver has taken every
    ///   message before them. A frame counts until the
    ///   receiver releases it: when it receives it (the default
    ///   [`ReceiveMode::Copy`](crate::ReceiveMode::Copy)) or when it drops
    ///   the message (`InPlace`). No system call: one load of the
    ///   receiver's index, which is validated (a garbage value is ignored
    ///   here and reported by the next send as
    ///   [`SendError::Corrupted`]).
    /// * FIFOs: the bytes in the pipe (`ioctl(FIONREAD)`, one system call),
    ///   framed the same way, plus the unwritten rest of a frame the pipe
    ///   took only in part. Bytes the receiver has already read into its
    ///   own buffer are not seen from here, and the 32-byte handshake each
    ///   direction opens with counts until the receiver reads it.
    ///
    /// A snapshot: the receiver may take more at any moment.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send(b"hello")?;
    /// assert_eq!(tx.len(), 32); // 16-byte header + 5 bytes padded to 16
    /// drop(rx.recv()?);
    /// assert_eq!(tx.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        match &self.end {
            SendEnd::Shm(end) => end.in_flight(),
            SendEnd::Fifo(end) => end.in_flight(),
        }
    }

    /// Whether everything sent has been taken by the receiver
    /// ([`len`](RawSender::len) is 0; see there for what counts).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// assert!(tx.is_empty());
    /// tx.send(b"x")?;
    /// assert!(!tx.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether there is no room for even the smallest frame (an empty
    /// message): a [`try_send`](RawSender::try_send) of anything would
    /// report [`SendError::Full`] now. `false` does not promise room for a
    /// particular message. Shared memory: the ring is completely in use
    /// (no system call). FIFOs: the pipe holds at least its buffer size
    /// (`FIONREAD` and `F_GETPIPE_SZ`, two system calls); the kernel can
    /// refuse writes to a pipe with fewer bytes in it when its pages are
    /// only partly used, which this does not see (then `try_send` reports
    /// `Full` while this says `false`).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(64)])?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// while tx.try_send(&[]).is_ok() {} // 64 bytes hold four empty frames
    /// assert!(tx.is_full());
    /// assert_eq!(tx.len(), tx.capacity());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        match &self.end {
            SendEnd::Shm(end) => end.in_flight() >= end.capacity(),
            SendEnd::Fifo(end) => end.is_full(),
        }
    }

    /// Whether sends can no longer succeed: the receiver was dropped (or
    /// failed for good and closed its end), or the peer process died. Then
    /// every send reports [`SendError::Disconnected`]; this end being
    /// poisoned ([`SendError::Corrupted`]) also counts.
    ///
    /// Shared memory: reads the receiver's close flag and the peer's
    /// liveness word (the kernel marks it when the process dies), no system
    /// call (except once, when it first sees the death: a wake-up of this
    /// process's other waiters). A spawned child that dies before it
    /// attaches has no word yet: the next send sees that (through its
    /// pidfd), not this. FIFOs: `poll` of the pipe (no reader left) and a
    /// rate-limited check of the child's pidfd; on the parent's side, until
    /// its first send after the child attached, this end holds a stand-in
    /// reader for the child (see the README's "Transports"), so a receiver
    /// the child dropped shows only after that send.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, rx) = child.raw_channel("c")?;
    /// assert!(!tx.is_disconnected());
    /// drop(rx);
    /// assert!(tx.is_disconnected());
    /// assert_eq!(tx.send(b"x"), Err(remora::SendError::Disconnected));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_disconnected(&self) -> bool {
        match &self.end {
            SendEnd::Shm(end) => end.is_disconnected(),
            SendEnd::Fifo(end) => end.is_disconnected(),
        }
    }

    /// Sends `bytes`, waiting for space if the ring is full.
    ///
    /// Errors: [`SendError::TooLarge`], [`SendError::Disconnected`],
    /// [`SendError::Corrupted`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send(b"ping")?;
    /// assert_eq!(&*rx.recv()?, b"ping");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::NEVER)
    }

    /// Sends `bytes` if there is room now, else [`SendError::Full`].
    ///
    /// `Full` means the message was not sent (retry it). Over FIFOs, a
    /// message whose frame the pipe takes only in part is accepted (`Ok`)
    /// and its rest goes out first on this sender's next send, or when it is
    /// dropped; see the README's "Transports".
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let mut sent = 0;
    /// while tx.try_send(&[0; 100]).is_ok() {
    ///     sent += 1; // nobody receives: the ring fills up
    /// }
    /// assert!(sent > 0);
    /// assert_eq!(tx.try_send(&[0; 100]), Err(remora::SendError::Full));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// while tx.try_send(&[0; 100]).is_ok() {}
    /// let waited = tx.send_timeout(&[0; 100], std::time::Duration::from_millis(1));
    /// assert_eq!(waited, Err(remora::SendError::Timeout));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_bytes(bytes, Deadline::after(timeout))
    }

    /// Sends a `len`-byte message written in place by `write`, straight into
    /// the ring: no intermediate buffer, one write of each byte. Waits for
    /// space like [`send`](RawSender::send); `write` runs once, when the
    /// space is granted.
    ///
    /// Errors: as [`send`](RawSender::send).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send_in_place(8, |slot| {
    ///     slot.write_at(0, b"head");
    ///     slot.write_at(4, b"tail");
    /// })?;
    /// assert_eq!(&*rx.recv()?, b"headtail");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
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
