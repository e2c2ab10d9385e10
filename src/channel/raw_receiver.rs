//! The receiving end of a raw-bytes channel, the receive loop typed
//! receivers share, and the receive mode: where a received message is read.

use std::ops::Deref;
use std::time::Duration;

use super::Deadline;
use super::copy::PrivateBuf;
use crate::error::RecvError;
use crate::transport::Incoming as Frame;
use crate::transport::{FifoReceiver, ShmReceiver};
use crate::wait::WaitStrategy;

/// Where a receiver reads each message: in a private copy, or in place in
/// shared memory.
///
/// Shared memory is the peer's to write at any time. Reading a message in
/// place hands out `&[u8]` / `&Archived<T>` over that memory, so a peer that
/// rewrites a frame after committing it changes data behind a Rust
/// reference: for typed messages that can mean invalid UTF-8 in a `&str` or
/// a relative pointer leading out of the frame (undefined behaviour) even
/// though the archive was validated first. Hence:
///
/// * [`Copy`](ReceiveMode::Copy) (sound whatever the peer does): each frame
///   is copied (volatile reads) into a private buffer allocated once when
///   the end is taken, the ring space is released at once, and typed
///   messages are validated in the copy. One copy per message, no
///   allocation. The default for every end except a spawned child's.
/// * [`InPlace`](ReceiveMode::InPlace) (zero-copy): only through the
///   `unsafe` [`RawReceiver::trust_peer`] /
///   [`Receiver::trust_peer`](crate::Receiver::trust_peer), whose caller asserts the peer never
///   writes a frame after committing it (as `memmap2`'s mapping
///   constructors are `unsafe` because another process may change the
///   file). The default for ends a child gets from
///   [`connect`](crate::connect): the parent that spawned it can write the
///   child's memory anyway (`/proc/<pid>/mem`, `ptrace`).
///
/// Over the FIFO transport every message already lands in a private buffer,
/// so both modes read it there, without a further copy.
///
/// ```
/// use remora::{ChannelConfig, ReceiveMode, Segment};
/// let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
/// let child = Segment::open(parent.name())?;
/// let (mut tx, _) = parent.channel::<String, ()>("c")?;
/// let (_, mut rx) = child.channel::<(), String>("c")?;
/// assert_eq!(rx.receive_mode(), ReceiveMode::Copy); // the default
/// tx.send(&"hi".to_owned())?;
/// assert_eq!(rx.recv()?.as_str(), "hi"); // validated and read in a private copy
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiveMode {
    /// Copy each frame into a private, preallocated, 16-aligned buffer, hand
    /// the ring space back at once, then validate and read the copy. Sound
    /// whatever the peer writes.
    Copy,
    /// Read (and validate) each message where it lies in the ring: zero
    /// copies. Sound only if the peer never writes a frame after committing
    /// it; set with the `unsafe` `trust_peer`.
    InPlace,
}

/// Receives byte messages from one direction of a channel.
///
/// Obtained like a [`RawSender`](crate::RawSender); see there for an
/// example. In the default [`ReceiveMode::Copy`] each message is a private
/// copy; see [`ReceiveMode`] for reading in place.
///
/// A copy can still be *torn*: a peer that rewrites a frame while it is
/// being copied gives you a mix of old and new bytes. The length is the
/// one validated in the frame header (read once, within the largest
/// message), and the bytes no longer change once you have them; checking
/// their content (a checksum, a parser) is up to you.
#[derive(Debug)]
pub struct RawReceiver {
    end: RecvEnd,
    strategy: WaitStrategy,
    mode: ReceiveMode,
    /// The copy buffer: `Some` exactly in [`ReceiveMode::Copy`] over shared
    /// memory (FIFO frames are private copies already).
    private: Option<PrivateBuf>,
}

/// The transport behind a receiver.
#[derive(Debug)]
pub(crate) enum RecvEnd {
    Shm(ShmReceiver),
    Fifo(FifoReceiver),
}

/// A received message's bytes, as a receiver hands them out: a private
/// copy, or a frame still held in the transport.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivered {
    /// First byte (16-aligned): in the private buffer or in the frame.
    pub(crate) payload: *const u8,
    pub(crate) len: usize,
    /// The transport frame to release when the message is dropped (`None`
    /// once copied out and released).
    hold: Option<Frame>,
}

/// A received byte message: a private copy, or (in
/// [`ReceiveMode::InPlace`]) the frame itself. Dropping it releases the
/// frame to the sender (a copied frame was released when copied).
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let child = remora::Segment::open(parent.name())?;
/// # let (mut tx, _) = parent.raw_channel("c")?;
/// # let (_, mut rx) = child.raw_channel("c")?;
/// tx.send(b"abc")?;
/// let msg = rx.recv()?;
/// assert_eq!(msg.bytes(), b"abc");
/// assert_eq!(&msg[1..], b"bc"); // also through Deref<Target = [u8]>
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RawMessage<'a> {
    rx: &'a mut RawReceiver,
    msg: Delivered,
}

impl RawReceiver {
    /// A receiver over `end` reading in `mode` (the copy buffer, if any, is
    /// allocated here).
    pub(crate) fn new(end: RecvEnd, strategy: WaitStrategy, mode: ReceiveMode) -> RawReceiver {
        let mut rx = RawReceiver {
            end,
            strategy,
            mode,
            private: None,
        };
        rx.set_mode(mode);
        rx
    }

    /// The transport end, for a wait set's probe.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn end(&self) -> &RecvEnd {
        &self.end
    }

    /// Switches modes; allocates or frees the copy buffer.
    fn set_mode(&mut self, mode: ReceiveMode) {
        self.mode = mode;
        match (mode, &self.end) {
            (ReceiveMode::Copy, RecvEnd::Shm(end)) => {
                if self.private.is_none() {
                    self.private = Some(PrivateBuf::new(end.max_message()));
                }
            }
            _ => self.private = None,
        }
    }

    /// Sets how blocking receives wait for data (default
    /// [`WaitStrategy::Adaptive`]).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// rx.set_wait_strategy(remora::WaitStrategy::Block);
    /// assert_eq!(rx.wait_strategy(), remora::WaitStrategy::Block);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// The current wait strategy.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.raw_channel("c")?;
    /// assert_eq!(rx.wait_strategy(), remora::WaitStrategy::Adaptive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Reads every later message in place, in shared memory: zero copies.
    ///
    /// A spawned child's ends ([`connect`](crate::connect)) start this way;
    /// see [`ReceiveMode`].
    ///
    /// # Safety
    ///
    /// The caller asserts that the peer never writes a frame after
    /// committing it (until this end released it): a peer that does changes
    /// the bytes behind the `&[u8]` this end hands out, which is undefined
    /// behaviour. Frame bounds stay safe either way (headers are validated
    /// once), but the contents do not. Promise this only for a peer you
    /// trust completely, e.g. a child of your own running your own code
    /// (and note that any process of your user can attach a debugger to it).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// // SAFETY: the sender is in this very process and runs our own code:
    /// // it never writes a frame after sending it.
    /// unsafe { rx.trust_peer() };
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::InPlace);
    /// # tx.send(b"x")?;
    /// # assert_eq!(&*rx.recv()?, b"x");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn trust_peer(&mut self) {
        self.set_mode(ReceiveMode::InPlace);
    }

    /// Copies every later message into a private buffer before handing it
    /// out ([`ReceiveMode::Copy`], the default except for a spawned child's
    /// ends). Allocates the buffer (the channel's largest message) here, if
    /// this end has none yet.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// // SAFETY: (for the example) the sender is in this process.
    /// unsafe { rx.trust_peer() };
    /// rx.distrust_peer();
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn distrust_peer(&mut self) {
        self.set_mode(ReceiveMode::Copy);
    }

    /// The current receive mode.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.raw_channel("c")?;
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_mode(&self) -> ReceiveMode {
        self.mode
    }

    /// The largest message this channel carries, in bytes.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.raw_channel("c")?;
    /// assert_eq!(rx.max_message(), 4096 / 2 - 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_message(&self) -> usize {
        match &self.end {
            RecvEnd::Shm(end) => end.max_message(),
            RecvEnd::Fifo(end) => end.max_message(),
        }
    }

    /// The capacity of this direction in bytes, as declared (see
    /// [`RawSender::capacity`](crate::RawSender::capacity)).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.raw_channel("c")?;
    /// assert_eq!(rx.capacity(), 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(&self) -> usize {
        match &self.end {
            RecvEnd::Shm(end) => end.capacity(),
            RecvEnd::Fifo(end) => end.capacity(),
        }
    }

    /// Bytes sent to this end and not yet received, framing included.
    ///
    /// * Shared memory: the ring bytes in use, counted as for
    ///   [`RawSender::len`](crate::RawSender::len) (a 16-byte header per
    ///   message, lengths rounded up to 16, bytes skipped at the ring's
    ///   end). No system call: a load of the sender's index, which is
    ///   validated (a garbage value is ignored here and reported by the
    ///   next receive as [`RecvError::Corrupted`]), and at a skip point up
    ///   to three loads of frame stamps.
    /// * FIFOs: the bytes still in the pipe (`ioctl(FIONREAD)`, one system
    ///   call) plus those already read into this end's buffer, less the
    ///   peer's handshake frame while it is unread. A frame the sender has
    ///   written only in part counts with the part that arrived.
    ///
    /// So `len() > 0` means at least one message, or the start of one, is
    /// waiting. A snapshot: the sender may add more at any moment.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send(&[0; 20])?;
    /// tx.send(&[])?;
    /// assert_eq!(rx.len(), (16 + 32) + 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        match &self.end {
            RecvEnd::Shm(end) => end.in_flight(),
            RecvEnd::Fifo(end) => end.in_flight(),
        }
    }

    /// Whether no message is waiting ([`len`](RawReceiver::len) is 0).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// assert!(rx.is_empty());
    /// tx.send(b"x")?;
    /// assert!(!rx.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the sender has no room for even the smallest frame.
    /// Shared memory: the ring is completely in use (no system call).
    /// FIFOs: the pipe holds at least its buffer size (two system calls; as
    /// for [`RawSender::is_full`](crate::RawSender::is_full), a pipe whose
    /// pages are only partly used can be full with fewer bytes, which this
    /// does not see).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(64)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// while tx.try_send(&[]).is_ok() {}
    /// assert!(rx.is_full());
    /// drop(rx.recv()?);
    /// assert!(!rx.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        match &self.end {
            RecvEnd::Shm(end) => end.in_flight() >= end.capacity(),
            RecvEnd::Fifo(end) => end.is_full(),
        }
    }

    /// Whether nothing more will be sent: the sender was dropped, or the
    /// peer process died (or this end failed for good). Messages sent
    /// before may still be waiting: receives deliver them, then report
    /// [`RecvError::Disconnected`] (as crossbeam-channel's
    /// `is_disconnected`, this does not mean "empty").
    ///
    /// How it is checked, and its limits, are as for
    /// [`RawSender::is_disconnected`](crate::RawSender::is_disconnected):
    /// no system call over shared memory; over FIFOs a `poll` (no writer
    /// left) and a rate-limited pidfd check.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send(b"last words")?;
    /// drop(tx);
    /// assert!(rx.is_disconnected());
    /// assert_eq!(&*rx.recv()?, b"last words"); // still delivered
    /// assert!(matches!(rx.recv(), Err(remora::RecvError::Disconnected)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_disconnected(&self) -> bool {
        match &self.end {
            RecvEnd::Shm(end) => end.is_disconnected(),
            RecvEnd::Fifo(end) => end.is_disconnected(),
        }
    }

    /// Receives the next message, waiting for one.
    ///
    /// Errors: [`RecvError::Disconnected`] once the sender is gone and
    /// everything it sent was received; [`RecvError::Corrupted`] /
    /// [`RecvError::Malformed`] when the peer broke the protocol;
    /// [`RecvError::TypeMismatch`] (FIFO transport, see there).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.raw_channel("c")?;
    /// # let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send(b"ping")?;
    /// assert_eq!(&*rx.recv()?, b"ping");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn recv(&mut self) -> Result<RawMessage<'_>, RecvError> {
        let msg = self.next(Deadline::NEVER)?;
        Ok(RawMessage { rx: self, msg })
    }

    /// Receives the next message if one is waiting, else [`RecvError::Empty`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (_tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// assert!(matches!(rx.try_recv(), Err(remora::RecvError::Empty)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<RawMessage<'_>, RecvError> {
        let msg = self.next(Deadline::Now)?;
        Ok(RawMessage { rx: self, msg })
    }

    /// Receives the next message, waiting at most `timeout`, else
    /// [`RecvError::Timeout`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (_tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// let waited = rx.recv_timeout(std::time::Duration::from_millis(1));
    /// assert!(matches!(waited, Err(remora::RecvError::Timeout)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<RawMessage<'_>, RecvError> {
        let msg = self.next(Deadline::after(timeout))?;
        Ok(RawMessage { rx: self, msg })
    }

    /// Hands every message already waiting to `f`, without blocking, and
    /// returns how many it handled. The `for_each` of a receiver: a
    /// [`RawMessage`] borrows its receiver, so there is no iterator.
    ///
    /// Each message is received as by [`try_recv`](RawReceiver::try_recv)
    /// (a private copy, or in place when trusted) and released as soon as
    /// `f` returns (also if `f` panics). No allocation.
    ///
    /// Stops when no message is waiting (`Ok(n)`, possibly 0), and after at
    /// most `capacity / 16` messages (what a full ring can hold), so a
    /// sender that keeps refilling the ring cannot keep it from returning.
    /// Errors: if it stops at an error before handling any message, it
    /// returns it ([`RecvError::Disconnected`], [`RecvError::Corrupted`],
    /// ...); after at least one message it returns `Ok(n)` instead, and
    /// the error (which lasts) comes from the next call.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.raw_channel("c")?;
    /// let (_, mut rx) = child.raw_channel("c")?;
    /// for word in [&b"to"[..], b"be", b"or"] {
    ///     tx.send(word)?;
    /// }
    /// drop(tx);
    /// let mut total = 0;
    /// assert_eq!(rx.drain(|bytes| total += bytes.len())?, 3);
    /// assert_eq!(total, 6);
    /// // The sender is gone and everything was received.
    /// assert!(matches!(rx.drain(|_| ()), Err(remora::RecvError::Disconnected)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> Result<usize, RecvError> {
        let limit = self.drain_limit();
        let mut handled = 0;
        while handled < limit {
            match self.next(Deadline::Now) {
                Ok(msg) => {
                    // Released when dropped, also on unwinding out of `f`.
                    let msg = RawMessage::new(self, msg);
                    f(&msg);
                    handled += 1;
                }
                Err(RecvError::Empty) => break,
                Err(e) if handled == 0 => return Err(e),
                // Lasting errors: the next call reports them.
                Err(_) => break,
            }
        }
        Ok(handled)
    }

    /// The most messages one `drain` call handles: what a full ring holds.
    pub(crate) fn drain_limit(&self) -> usize {
        (self.capacity() / crate::ring::FRAME_HEADER).max(1)
    }

    /// The next message per the receive mode: copied out of its frame (and
    /// the frame released) in [`ReceiveMode::Copy`] over shared memory,
    /// else the frame itself, held until [`RawReceiver::release_held`].
    #[inline(always)]
    pub(crate) fn next(&mut self, deadline: Deadline) -> Result<Delivered, RecvError> {
        let frame = match &mut self.end {
            RecvEnd::Shm(end) => end.next_frame(deadline, self.strategy)?,
            RecvEnd::Fifo(end) => end.next_frame(deadline, self.strategy)?,
        };
        if let (Some(buf), RecvEnd::Shm(end)) = (&mut self.private, &mut self.end) {
            // SAFETY: a frame from `next_frame` is validated: 16-aligned,
            // its payload padded to 16 inside the ring data, which the
            // receiver's link keeps mapped; its length is at most the
            // channel's largest message, the buffer's size.
            let payload = unsafe { buf.copy_from_shared(frame.payload, frame.len) };
            end.release(frame);
            return Ok(Delivered {
                payload,
                len: frame.len,
                hold: None,
            });
        }
        Ok(Delivered {
            payload: frame.payload,
            len: frame.len,
            hold: Some(frame),
        })
    }

    /// Hands a delivered message's frame (if still held) back to the
    /// transport, and its space to the sender.
    #[inline]
    pub(crate) fn release_held(&mut self, msg: &mut Delivered) {
        if let Some(frame) = msg.hold.take() {
            match &mut self.end {
                RecvEnd::Shm(end) => end.release(frame),
                RecvEnd::Fifo(end) => end.release(frame),
            }
        }
    }
}

impl Delivered {
    /// The message bytes.
    ///
    /// # Safety
    ///
    /// `self` must come from [`RawReceiver::next`] on a receiver that is
    /// neither used again (the next receive overwrites the copy; a release
    /// hands the frame back) nor dropped while the slice lives.
    #[inline]
    pub(crate) unsafe fn bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: `payload..payload + len` is either the receiver's private
        // copy (written by the receive, rewritten only by the next one) or
        // a validated frame that stays ours until released: in-place over
        // shared memory only under `trust_peer`'s promise that the peer
        // does not write it, and FIFO buffers are private. The caller keeps
        // the receiver borrowed and unused for `'a`.
        unsafe { std::slice::from_raw_parts(self.payload, self.len) }
    }
}

impl<'a> RawMessage<'a> {
    /// A message delivered by `rx.next`.
    #[inline]
    pub(crate) fn new(rx: &'a mut RawReceiver, msg: Delivered) -> RawMessage<'a> {
        RawMessage { rx, msg }
    }

    /// The message bytes (also available through `Deref`).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.raw_channel("c")?;
    /// # let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send(&[1, 2, 3])?;
    /// assert_eq!(rx.recv()?.bytes(), [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes(&self) -> &[u8] {
        self
    }
}

impl Deref for RawMessage<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `msg` came from `rx.next`, and `self` keeps `rx` borrowed
        // and unused until it is dropped; the slice borrows `self`.
        unsafe { self.msg.bytes() }
    }
}

impl Drop for RawMessage<'_> {
    // Inline: the release (a store of `head`, the doorbell fence) is on the
    // round trip's critical path; a call here cost ~1.5 ns of ~22 per
    // in-process send + receive.
    #[inline]
    fn drop(&mut self) {
        self.rx.release_held(&mut self.msg);
    }
}
