//! The typed receiving end: validates archives (in a private copy, or in
//! place for a trusted peer) and hands out `&Archived<T>`.

use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use rkyv::Archived;

use super::{Deadline, RawMessage, RawReceiver, ReceiveMode};
use crate::codec::{self, Decode};
use crate::error::RecvError;
use crate::wait::WaitStrategy;

/// Receives `T` messages from one direction of a channel.
///
/// [`recv`](Receiver::recv) returns a [`Message`] that dereferences to the
/// archived value: no deserialisation, no allocation. Each message is
/// validated (bytecheck) before it is handed out. By default (see
/// [`ReceiveMode`]) the frame is first copied into a private buffer, so
/// nothing the peer writes can change what you read; a trusted peer's
/// messages can be read in place, zero-copy, after the `unsafe`
/// [`trust_peer`](Receiver::trust_peer) (the default for a spawned child's
/// ends). [`recv_unchecked`](Receiver::recv_unchecked) also skips
/// validation. See [`Sender`](crate::Sender) for an example.
pub struct Receiver<T> {
    raw: RawReceiver,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

/// A received message. Dereferences to `Archived<T>`, validated: in the
/// receiver's private copy ([`ReceiveMode::Copy`]) or in the frame
/// ([`ReceiveMode::InPlace`]). Dropping it releases a frame held in place to
/// the sender (a copied frame was released when copied).
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let child = remora::Segment::open(parent.name())?;
/// # let (mut tx, _) = parent.channel::<(u32, String), ()>("c")?;
/// # let (_, mut rx) = child.channel::<(), (u32, String)>("c")?;
/// tx.send(&(7, "seven".to_owned()))?;
/// let msg = rx.recv()?;
/// assert_eq!(msg.0, 7);
/// assert_eq!(msg.1, "seven");
/// assert!(!msg.bytes().is_empty()); // the archive itself
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Message<'a, T: rkyv::Archive> {
    /// The bytes: a private copy or a held frame; released on drop.
    raw: RawMessage<'a>,
    /// The validated archive's root, inside `raw`'s bytes.
    archived: *const Archived<T>,
}

impl<T: Decode> Receiver<T> {
    pub(crate) fn from_raw(raw: RawReceiver) -> Self {
        Receiver {
            raw,
            _type: PhantomData,
        }
    }

    /// The raw end, for a wait set's probe.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn raw(&self) -> &RawReceiver {
        &self.raw
    }

    /// Sets how blocking receives wait for data (default
    /// [`WaitStrategy::Adaptive`]).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, mut rx) = parent.channel::<(), u64>("c")?;
    /// rx.set_wait_strategy(remora::WaitStrategy::Spin);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.raw.set_wait_strategy(strategy);
    }

    /// The current wait strategy.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.channel::<(), u64>("c")?;
    /// assert_eq!(rx.wait_strategy(), remora::WaitStrategy::Adaptive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.raw.wait_strategy()
    }

    /// The largest encoded message this channel carries, in bytes.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.channel::<(), u64>("c")?;
    /// assert_eq!(rx.max_message(), 4096 / 2 - 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_message(&self) -> usize {
        self.raw.max_message()
    }

    /// The capacity of this direction in bytes; see
    /// [`RawReceiver::capacity`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.channel::<(), u64>("c")?;
    /// assert_eq!(rx.capacity(), 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// Bytes sent to this end and not yet received: archives with their
    /// frame headers and padding, exactly as [`RawReceiver::len`] counts
    /// them. Not a message count.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), u64>("c")?;
    /// tx.send(&7)?;
    /// assert_eq!(rx.len(), 32);
    /// assert_eq!(*rx.recv()?, 7);
    /// assert_eq!(rx.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether no message is waiting; see [`RawReceiver::is_empty`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.channel::<(), u64>("c")?;
    /// assert!(rx.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether the sender has no room for even the smallest frame; see
    /// [`RawReceiver::is_full`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.channel::<(), u64>("c")?;
    /// assert!(!rx.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.raw.is_full()
    }

    /// Whether nothing more will be sent (sender gone, peer process dead).
    /// Messages sent before may still be waiting; see
    /// [`RawReceiver::is_disconnected`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), u64>("c")?;
    /// tx.send(&1)?;
    /// drop(tx);
    /// assert!(rx.is_disconnected());
    /// assert_eq!(*rx.recv()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_disconnected(&self) -> bool {
        self.raw.is_disconnected()
    }

    /// Reads every later message in place, in shared memory: validated
    /// there, zero copies. See [`ReceiveMode`] and
    /// [`RawReceiver::trust_peer`].
    ///
    /// # Safety
    ///
    /// The caller asserts that the peer never writes a frame after
    /// committing it (until this end released it). A peer that does can
    /// rewrite a message between its validation and your reads: invalid
    /// UTF-8 in a `&str`, an invalid enum tag or `bool`, a relative pointer
    /// or length leading outside the frame. Each of these is undefined
    /// behaviour. Promise this only for a peer you trust completely.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.channel::<String, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), String>("c")?;
    /// // SAFETY: the sender is in this very process and runs our own code:
    /// // it never writes a frame after sending it.
    /// unsafe { rx.trust_peer() };
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::InPlace);
    /// # tx.send(&"x".to_owned())?;
    /// assert_eq!(rx.recv()?.as_str(), "x"); // read in the ring
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn trust_peer(&mut self) {
        // SAFETY: forwarded to the caller.
        unsafe { self.raw.trust_peer() };
    }

    /// Copies every later message into a private buffer, then validates and
    /// reads the copy ([`ReceiveMode::Copy`], the default except for a
    /// spawned child's ends). Allocates the buffer (the channel's largest
    /// message) here, if this end has none yet; never per message.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, mut rx) = parent.channel::<(), u64>("c")?;
    /// rx.distrust_peer(); // already the default here: a no-op
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn distrust_peer(&mut self) {
        self.raw.distrust_peer();
    }

    /// The current receive mode.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// let (_, rx) = parent.channel::<(), u64>("c")?;
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_mode(&self) -> ReceiveMode {
        self.raw.receive_mode()
    }

    /// Receives the next message, waiting for one.
    ///
    /// Errors: [`RecvError::Disconnected`] once the sender is gone and every
    /// message it sent was received; [`RecvError::Invalid`] for a message
    /// that does not validate (skipped); [`RecvError::Corrupted`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// # let (_, mut rx) = child.channel::<(), u64>("c")?;
    /// tx.send(&5)?;
    /// assert_eq!(*rx.recv()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&mut self) -> Result<Message<'_, T>, RecvError> {
        self.recv_until(Deadline::NEVER)
    }

    /// Receives the next message if one is waiting, else [`RecvError::Empty`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (_tx, _) = parent.channel::<u64, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), u64>("c")?;
    /// assert!(matches!(rx.try_recv(), Err(remora::RecvError::Empty)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Message<'_, T>, RecvError> {
        self.recv_until(Deadline::Now)
    }

    /// Receives the next message, waiting at most `timeout`, else
    /// [`RecvError::Timeout`].
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (_tx, _) = parent.channel::<u64, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), u64>("c")?;
    /// let waited = rx.recv_timeout(std::time::Duration::from_millis(1));
    /// assert!(matches!(waited, Err(remora::RecvError::Timeout)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_, T>, RecvError> {
        self.recv_until(Deadline::after(timeout))
    }

    /// Hands every message already waiting to `f` as `&Archived<T>`,
    /// without blocking, and returns how many it handled: the `for_each` of
    /// a receiver (a [`Message`] borrows its receiver, so there is no
    /// iterator).
    ///
    /// Each message is received and validated as by
    /// [`try_recv`](Receiver::try_recv), and released as soon as `f` returns
    /// (also if `f` panics). No allocation.
    ///
    /// Stops when no message is waiting (`Ok(n)`, possibly 0), and after at
    /// most `capacity / 16` messages (what a full ring can hold), so a
    /// sender that keeps refilling the ring cannot keep it from returning.
    /// Errors:
    /// * a message that fails validation stops it with
    ///   [`RecvError::Invalid`] whatever came before (the message is
    ///   skipped; the ones before it were handed to `f`; the next call goes
    ///   on with the one after it);
    /// * any other error ([`RecvError::Disconnected`],
    ///   [`RecvError::Corrupted`], ...) is returned if no message was
    ///   handled yet; after at least one, `drain` returns `Ok(n)` and the
    ///   error (which lasts) comes from the next call.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), u64>("c")?;
    /// for i in 1..=4 {
    ///     tx.send(&i)?;
    /// }
    /// let mut sum = 0;
    /// assert_eq!(rx.drain(|n| sum += n.to_native())?, 4);
    /// assert_eq!(sum, 10);
    /// assert_eq!(rx.drain(|_| unreachable!())?, 0); // nothing waiting: no wait
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drain(&mut self, mut f: impl FnMut(&Archived<T>)) -> Result<usize, RecvError> {
        let limit = self.raw.drain_limit();
        let mut handled = 0;
        while handled < limit {
            match self.recv_until(Deadline::Now) {
                Ok(msg) => {
                    f(&msg);
                    handled += 1;
                }
                Err(RecvError::Empty) => break,
                Err(e @ RecvError::Invalid { .. }) => return Err(e),
                Err(e) if handled == 0 => return Err(e),
                // Lasting errors: the next call reports them.
                Err(_) => break,
            }
        }
        Ok(handled)
    }

    /// Receives the next message without validating it: from a private
    /// copy or in place, per the receive mode.
    ///
    /// # Safety
    ///
    /// The peer must be trusted to send only valid archives of `T`: an
    /// invalid one is undefined behaviour when read. In
    /// [`ReceiveMode::InPlace`] the promise made to
    /// [`trust_peer`](Receiver::trust_peer) must hold too; in
    /// [`ReceiveMode::Copy`] a rewrite after the copy cannot reach the
    /// message, but a frame rewritten *during* the copy is as unchecked as
    /// any other.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.channel::<u64, ()>("c")?;
    /// # let (_, mut rx) = child.channel::<(), u64>("c")?;
    /// tx.send(&9)?;
    /// // SAFETY: the sender is in this process and sends only `u64`s.
    /// assert_eq!(*unsafe { rx.recv_unchecked() }?, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn recv_unchecked(&mut self) -> Result<Message<'_, T>, RecvError> {
        let msg = self.raw.next(Deadline::NEVER)?;
        // SAFETY: `msg` is from `next`, and the message built below keeps
        // the receiver borrowed (and unused) for as long as the bytes are.
        let bytes = unsafe { msg.bytes() };
        // SAFETY: the bytes lie in a private copy or in a frame held for the
        // message's life; their validity as a `T` archive (and, in place,
        // their stability) is the caller's promise.
        let archived = unsafe { codec::access_unchecked::<T>(bytes) } as *const _;
        Ok(Message {
            raw: RawMessage::new(&mut self.raw, msg),
            archived,
        })
    }

    #[inline]
    fn recv_until(&mut self, deadline: Deadline) -> Result<Message<'_, T>, RecvError> {
        let mut msg = self.raw.next(deadline)?;
        // SAFETY: `msg` is from `next`; the bytes are used only until the
        // message built below (which borrows the receiver) is dropped, or
        // until `release_held` on the error path, after the last use.
        let bytes = unsafe { msg.bytes() };
        match codec::access::<T>(bytes) {
            Ok(archived) => Ok(Message {
                archived: archived as *const _,
                raw: RawMessage::new(&mut self.raw, msg),
            }),
            Err(_) => {
                let len = msg.len;
                self.raw.release_held(&mut msg);
                Err(RecvError::Invalid { len })
            }
        }
    }
}

impl<T: rkyv::Archive> Deref for Message<'_, T> {
    type Target = Archived<T>;

    #[inline]
    fn deref(&self) -> &Archived<T> {
        // SAFETY: `archived` points into the validated bytes (or ones vouched
        // for by `recv_unchecked`'s caller) held by `raw`, which stay
        // unchanged while `self` lives: a private copy is only rewritten by
        // the receiver's next receive, which `raw`'s borrow prevents; a frame
        // read in place is released only on drop, and its stability is
        // `trust_peer`'s promise (FIFO frames are private).
        unsafe { &*self.archived }
    }
}

impl<T: rkyv::Archive> Message<'_, T> {
    /// The raw archived bytes of this message (the private copy, or the
    /// frame in place).
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.channel::<u32, ()>("c")?;
    /// # let (_, mut rx) = child.channel::<(), u32>("c")?;
    /// tx.send(&0x0102_0304)?;
    /// assert_eq!(rx.recv()?.bytes(), 0x0102_0304u32.to_le_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes(&self) -> &[u8] {
        self.raw.bytes()
    }

    /// Deserialises the message into an owned `T` (rkyv's
    /// [`deserialize`](rkyv::deserialize)), for callers who want a value
    /// that outlives the message. Unlike reading the archive, this
    /// allocates (a `T` with `String`s or `Vec`s needs heap memory for
    /// them). The archive was validated when received, so the only errors
    /// are those of `T`'s own `Deserialize` implementation (none for
    /// derived ones), reported as rkyv's [`rancor::Error`](rkyv::rancor::Error).
    ///
    /// ```
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    /// struct Job { id: u32, args: Vec<String> }
    ///
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// let (mut tx, _) = parent.channel::<Job, ()>("c")?;
    /// let (_, mut rx) = child.channel::<(), Job>("c")?;
    /// let job = Job { id: 1, args: vec!["-v".into()] };
    /// tx.send(&job)?;
    /// let owned: Job = rx.recv()?.deserialize()?; // the message is released here
    /// assert_eq!(owned, job);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deserialize(&self) -> Result<T, rkyv::rancor::Error>
    where
        Archived<T>: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        rkyv::deserialize::<T, rkyv::rancor::Error>(&**self)
    }
}

impl<T: rkyv::Archive> std::fmt::Debug for Message<'_, T>
where
    Archived<T>: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> Receiver<T> {
    /// The raw end underneath, for layers that frame their own messages
    /// (calls).
    pub(crate) fn raw_mut(&mut self) -> &mut RawReceiver {
        &mut self.raw
    }
}
