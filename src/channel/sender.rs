//! The typed sending end: rkyv-serialises straight into the ring.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::time::Duration;

use super::{Deadline, RawSender};
use crate::codec::{self, Encode};
use crate::error::SendError;
use crate::wait::WaitStrategy;

/// Default size of a sender's rkyv scratch area (for nested collections).
pub const DEFAULT_SCRATCH: usize = 4096;

/// Sends `T` messages over one direction of a channel.
///
/// Each message is serialised by rkyv directly into the ring (one write of
/// each byte, no intermediate buffer, no heap allocation). Sends borrow the
/// value, so on error it is still the caller's.
///
/// ```
/// use remora::{ChannelConfig, Segment};
///
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Request { id: u32, body: String }
///
/// let parent = Segment::create(&[ChannelConfig::new("rpc")])?;
/// let child = Segment::open(parent.name())?;
/// let (mut tx, _) = parent.channel::<Request, ()>("rpc")?;
/// let (_, mut rx) = child.channel::<(), Request>("rpc")?;
///
/// tx.send(&Request { id: 7, body: "hi".into() })?;
/// let req = rx.recv()?;
/// assert_eq!(req.id, 7);
/// assert_eq!(req.body, "hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sender<T> {
    raw: RawSender,
    scratch: Box<[MaybeUninit<u8>]>,
    _type: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl<T: Encode> Sender<T> {
    pub(crate) fn from_raw(raw: RawSender) -> Self {
        Sender {
            raw,
            scratch: Box::new_uninit_slice(DEFAULT_SCRATCH),
            _type: PhantomData,
        }
    }

    /// The raw end, for a wait set's probe.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn raw(&self) -> &RawSender {
        &self.raw
    }

    /// Replaces the rkyv scratch area with one of `bytes` bytes (default
    /// [`DEFAULT_SCRATCH`]). Types with large nested collections may need
    /// more; a too-small area shows up as [`SendError::Encode`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (tx, _) = parent.channel::<Vec<String>, ()>("c")?;
    /// let mut tx = tx.with_scratch_size(64 * 1024);
    /// tx.send(&vec!["many".to_owned(); 100])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_scratch_size(mut self, bytes: usize) -> Self {
        self.scratch = Box::new_uninit_slice(bytes);
        self
    }

    /// Sets how blocking sends wait for space (default
    /// [`WaitStrategy::Adaptive`]).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// tx.set_wait_strategy(remora::WaitStrategy::Block); // sleep at once when full
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.raw.set_wait_strategy(strategy);
    }

    /// The current wait strategy.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// assert_eq!(tx.wait_strategy(), remora::WaitStrategy::Adaptive);
    /// tx.set_wait_strategy(remora::WaitStrategy::Block);
    /// assert_eq!(tx.wait_strategy(), remora::WaitStrategy::Block);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.raw.wait_strategy()
    }

    /// The largest encoded message this channel carries, in bytes.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (tx, _) = parent.channel::<Vec<u8>, ()>("c")?;
    /// assert_eq!(tx.max_message(), 4096 / 2 - 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_message(&self) -> usize {
        self.raw.max_message()
    }

    /// The capacity of this direction in bytes; see
    /// [`RawSender::capacity`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (tx, _) = parent.channel::<u64, ()>("c")?;
    /// assert_eq!(tx.capacity(), 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// Bytes sent and not yet taken by the receiver: archives with their
    /// frame headers and padding, exactly as [`RawSender::len`] counts
    /// them. Not a message count (messages vary in size).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// tx.send(&1)?;
    /// tx.send(&2)?;
    /// assert_eq!(tx.len(), 2 * 32); // each: 16-byte header + 8 bytes padded to 16
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether everything sent has been taken by the receiver; see
    /// [`RawSender::is_empty`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (tx, _) = parent.channel::<u64, ()>("c")?;
    /// assert!(tx.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether there is no room for even the smallest frame; see
    /// [`RawSender::is_full`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(64)])?;
    /// let (mut tx, _) = parent.channel::<(), ()>("c")?;
    /// while tx.try_send(&()).is_ok() {} // `()` archives to 0 bytes
    /// assert!(tx.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.raw.is_full()
    }

    /// Whether sends can no longer succeed (receiver gone, peer process
    /// dead); see [`RawSender::is_disconnected`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (tx, _) = parent.channel::<u64, ()>("c")?;
    /// let (_, rx) = child.channel::<(), u64>("c")?;
    /// drop(rx);
    /// assert!(tx.is_disconnected());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_disconnected(&self) -> bool {
        self.raw.is_disconnected()
    }

    /// Sends `value`, waiting for space if the ring is full.
    ///
    /// Errors: [`SendError::TooLarge`], [`SendError::Disconnected`],
    /// [`SendError::Encode`], [`SendError::Corrupted`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.channel::<String, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), String>("c")?;
    /// let text = "still mine after the send".to_owned();
    /// tx.send(&text)?;
    /// assert_eq!(rx.recv()?.as_str(), text);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, value: &T) -> Result<(), SendError> {
        self.send_until(value, Deadline::NEVER)
    }

    /// Sends `value` if there is room now, else [`SendError::Full`].
    ///
    /// `Full` means the message was not sent (retry it). Over FIFOs, a
    /// message whose frame the pipe takes only in part is accepted (`Ok`)
    /// and its rest goes out first on this sender's next send, or when it is
    /// dropped; see the README's "Transports".
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// while tx.try_send(&1).is_ok() {} // nobody receives
    /// assert_eq!(tx.try_send(&1), Err(remora::SendError::Full));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send(&mut self, value: &T) -> Result<(), SendError> {
        self.send_until(value, Deadline::Now)
    }

    /// Sends `value`, waiting at most `timeout` for space, else
    /// [`SendError::Timeout`].
    ///
    /// `Timeout` means the message was not sent (retry it). Over FIFOs, a
    /// message whose frame the pipe takes only in part is accepted (`Ok`)
    /// and its rest goes out first on this sender's next send, or when it is
    /// dropped; see the README's "Transports".
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// while tx.try_send(&1).is_ok() {}
    /// let waited = tx.send_timeout(&1, std::time::Duration::from_millis(1));
    /// assert_eq!(waited, Err(remora::SendError::Timeout));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<(), SendError> {
        self.send_until(value, Deadline::after(timeout))
    }

    #[inline]
    fn send_until(&mut self, value: &T, deadline: Deadline) -> Result<(), SendError> {
        let scratch = &mut self.scratch;
        self.raw.send_with(0, false, deadline, |dst, cap| {
            // SAFETY: the grant is `cap` writable, 16-aligned bytes at a
            // non-null `dst` that only we touch until commit (`cap` may be
            // 0: then `encode` only measures).
            unsafe { codec::encode(value, dst, cap, scratch) }
        })
    }
}

impl<T> Sender<T> {
    /// Sends one frame of `head` (16 bytes) followed, at offset 16, by the
    /// archive of `body` (none if `None`): the call layer's framing. The
    /// archive keeps rkyv's 16-byte alignment because frames start
    /// 16-aligned. Waits per `deadline`; errors as [`Sender::send`].
    #[inline]
    pub(crate) fn send_framed<U: Encode>(
        &mut self,
        head: &[u8; FRAME_PREFIX],
        body: Option<&U>,
        deadline: Deadline,
    ) -> Result<(), SendError> {
        let scratch = &mut self.scratch;
        self.raw.send_with(0, false, deadline, |dst, cap| {
            let Some(body) = body else {
                if cap < FRAME_PREFIX {
                    return Err(codec::EncodeError::Overflow {
                        needed: FRAME_PREFIX,
                    });
                }
                // SAFETY: the grant is `cap >= 16` writable bytes at `dst`,
                // only ours until commit; `head` is local memory.
                unsafe { std::ptr::copy_nonoverlapping(head.as_ptr(), dst, FRAME_PREFIX) };
                return Ok(FRAME_PREFIX);
            };
            if cap < FRAME_PREFIX {
                // Only measure: `cap == 0` writes nothing (16-aligned,
                // non-null `dst` as the grant's contract gives).
                // SAFETY: as for `Sender::send_until`, with no byte written.
                let len = match unsafe { codec::encode(body, dst, 0, scratch) } {
                    Ok(len) | Err(codec::EncodeError::Overflow { needed: len }) => len,
                    Err(e) => return Err(e),
                };
                return Err(codec::EncodeError::Overflow {
                    needed: FRAME_PREFIX + len,
                });
            }
            // SAFETY: the grant is `cap >= 16` writable bytes at `dst`,
            // only ours until commit; `head` is local memory.
            unsafe { std::ptr::copy_nonoverlapping(head.as_ptr(), dst, FRAME_PREFIX) };
            // SAFETY: `dst + 16 .. dst + cap` is inside the grant, 16-aligned
            // (frames are) and non-null; only we touch it until commit.
            match unsafe { codec::encode(body, dst.add(FRAME_PREFIX), cap - FRAME_PREFIX, scratch) }
            {
                Ok(len) => Ok(FRAME_PREFIX + len),
                Err(codec::EncodeError::Overflow { needed }) => Err(codec::EncodeError::Overflow {
                    needed: FRAME_PREFIX + needed,
                }),
                Err(e) => Err(e),
            }
        })
    }
}

/// Bytes before the archive in a framed message (see
/// [`Sender::send_framed`]): a multiple of 16, so the archive stays
/// 16-aligned.
pub(crate) const FRAME_PREFIX: usize = 16;
