//! The typed receiving end: validates archives in place.

use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use rkyv::Archived;

use super::{Deadline, RawReceiver};
use crate::codec::{self, Decode};
use crate::error::RecvError;
use crate::ring::Frame;
use crate::wait::WaitStrategy;

/// How a [`Receiver`] reads each message.
///
/// ```
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let child = remora::Segment::open(parent.name())?;
/// # let (mut tx, _) = parent.channel::<String, ()>("c")?;
/// let (_, mut rx) = child.channel::<(), String>("c")?;
/// rx.set_receive_mode(remora::ReceiveMode::Untrusted); // allocates the private buffer now
/// # tx.send(&"hi".to_owned())?;
/// assert_eq!(rx.recv()?.as_str(), "hi"); // validated and read from a private copy
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReceiveMode {
    /// Validate the archive where it lies in the ring, then read it there:
    /// zero copies. Protects against bugs and corruption, not against a peer
    /// that rewrites a frame while it is being read (see the README's threat
    /// model).
    #[default]
    InPlace,
    /// Copy the frame into a private, preallocated, 16-aligned buffer, hand
    /// the ring space back at once, then validate and read the copy. One copy
    /// per message, no allocation; also protects against a peer rewriting the
    /// frame while it is read.
    Untrusted,
}

/// Receives `T` messages from one direction of a channel, in place.
///
/// [`recv`](Receiver::recv) returns a [`Message`] that dereferences to the
/// archived value inside the ring: no copy, no deserialisation, no
/// allocation. Each message is validated (bytecheck) before it is handed out;
/// [`recv_unchecked`](Receiver::recv_unchecked) skips that for trusted peers,
/// and [`ReceiveMode::Untrusted`] copies first for peers you do not trust.
/// See [`Sender`](crate::Sender) for an example.
pub struct Receiver<T> {
    raw: RawReceiver,
    /// `Some` in [`ReceiveMode::Untrusted`]: room for the largest message.
    private: Option<Box<[u128]>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("raw", &self.raw)
            .field("untrusted", &self.private.is_some())
            .finish_non_exhaustive()
    }
}

/// A received message. Dereferences to `Archived<T>`; dropping it releases
/// its space in the ring to the sender (in [`ReceiveMode::Untrusted`] that
/// happened already, when it was copied).
pub struct Message<'a, T: rkyv::Archive> {
    rx: &'a mut RawReceiver,
    /// The ring frame to release on drop (`None` once copied out).
    frame: Option<Frame>,
    /// The validated archive: in the frame, or in the receiver's private
    /// buffer (borrowed for `'a` like `rx`).
    bytes: *const u8,
    len: usize,
    archived: *const Archived<T>,
}

impl<T: Decode> Receiver<T> {
    pub(crate) fn from_raw(raw: RawReceiver) -> Self {
        Receiver {
            raw,
            private: None,
            _type: PhantomData,
        }
    }

    /// Sets how blocking receives wait for data (default
    /// [`WaitStrategy::Adaptive`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.raw.set_wait_strategy(strategy);
    }

    /// Sets how messages are read (default [`ReceiveMode::InPlace`]).
    /// Switching to [`ReceiveMode::Untrusted`] allocates a private buffer
    /// of the channel's largest message size, once, here.
    pub fn set_receive_mode(&mut self, mode: ReceiveMode) {
        self.private = match mode {
            ReceiveMode::InPlace => None,
            ReceiveMode::Untrusted => self.private.take().or_else(|| {
                Some(vec![0u128; self.raw.max_message().div_ceil(16)].into_boxed_slice())
            }),
        };
    }

    /// The current receive mode.
    pub fn receive_mode(&self) -> ReceiveMode {
        match self.private {
            Some(_) => ReceiveMode::Untrusted,
            None => ReceiveMode::InPlace,
        }
    }

    /// Receives the next message, waiting for one.
    ///
    /// Errors: [`RecvError::Disconnected`] once the sender is gone and every
    /// message it sent was received; [`RecvError::Invalid`] for a message
    /// that does not validate (skipped); [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<Message<'_, T>, RecvError> {
        self.recv_until(Deadline::NEVER)
    }

    /// Receives the next message if one is waiting, else [`RecvError::Empty`].
    pub fn try_recv(&mut self) -> Result<Message<'_, T>, RecvError> {
        self.recv_until(Deadline::Now)
    }

    /// Receives the next message, waiting at most `timeout`, else
    /// [`RecvError::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_, T>, RecvError> {
        self.recv_until(Deadline::after(timeout))
    }

    /// Receives the next message without validating it (in place, whatever
    /// the receive mode).
    ///
    /// # Safety
    ///
    /// The peer must be trusted to send only valid archives of `T`: an
    /// invalid one is undefined behaviour when read.
    pub unsafe fn recv_unchecked(&mut self) -> Result<Message<'_, T>, RecvError> {
        let frame = self.raw.next_frame(Deadline::NEVER)?;
        // SAFETY: the frame lies inside the transport's memory and is ours
        // until released; its validity as a `T` archive is the caller's
        // promise.
        let archived = unsafe { codec::access_unchecked::<T>(frame_bytes(&frame)) } as *const _;
        Ok(Message {
            rx: &mut self.raw,
            bytes: frame.payload,
            len: frame.len,
            frame: Some(frame),
            archived,
        })
    }

    #[inline]
    fn recv_until(&mut self, deadline: Deadline) -> Result<Message<'_, T>, RecvError> {
        let frame = self.raw.next_frame(deadline)?;
        let (bytes, keep) = match &mut self.private {
            None => (frame_bytes(&frame), Some(frame)),
            Some(buf) => {
                let copy = copy_out(&frame, buf);
                self.raw.release(frame);
                (copy, None)
            }
        };
        match codec::access::<T>(bytes) {
            Ok(archived) => Ok(Message {
                archived: archived as *const _,
                bytes: bytes.as_ptr(),
                len: bytes.len(),
                rx: &mut self.raw,
                frame: keep,
            }),
            Err(_) => {
                let len = bytes.len();
                if let Some(frame) = keep {
                    self.raw.release(frame);
                }
                Err(RecvError::Invalid { len })
            }
        }
    }
}

/// The payload of a frame the receiver currently owns.
#[inline]
fn frame_bytes(frame: &Frame) -> &[u8] {
    // SAFETY: a validated frame lies inside the transport's memory and stays
    // ours until released; the sender does not write it meanwhile (protocol).
    unsafe { std::slice::from_raw_parts(frame.payload, frame.len) }
}

/// Copies a frame's payload into `buf` with volatile word reads (the peer may
/// be writing it: each word is read exactly once and the copy is what gets
/// validated). Returns the copy.
fn copy_out<'b>(frame: &Frame, buf: &'b mut [u128]) -> &'b [u8] {
    let words = frame.len.div_ceil(16);
    assert!(
        words <= buf.len(),
        "frame longer than the channel's largest message"
    );
    let src = frame.payload.cast::<u128>();
    for (i, word) in buf[..words].iter_mut().enumerate() {
        // SAFETY: the payload is 16-aligned and its frame is padded to a
        // multiple of 16 bytes inside the transport's memory, so every word
        // up to `words` is in bounds; volatile because the peer can write it.
        *word = unsafe { src.add(i).read_volatile() };
    }
    // SAFETY: `buf` holds at least `words * 16 >= frame.len` initialised
    // bytes; u8 has no alignment or validity requirements.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), frame.len) }
}

impl<T: rkyv::Archive> Deref for Message<'_, T> {
    type Target = Archived<T>;

    fn deref(&self) -> &Archived<T> {
        // SAFETY: `archived` points into the validated bytes (or ones vouched
        // for by `recv_unchecked`'s caller), which stay valid while `self`
        // borrows the receiver: the frame is released only on drop, and the
        // private buffer is only rewritten by the next receive.
        unsafe { &*self.archived }
    }
}

impl<T: rkyv::Archive> Message<'_, T> {
    /// The raw archived bytes of this message.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: as in `deref`: `bytes..bytes + len` stays valid while
        // `self` lives.
        unsafe { std::slice::from_raw_parts(self.bytes, self.len) }
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

impl<T: rkyv::Archive> Drop for Message<'_, T> {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            self.rx.release(frame);
        }
    }
}
