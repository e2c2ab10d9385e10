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

/// Receives `T` messages from one direction of a channel, in place.
///
/// [`recv`](Receiver::recv) returns a [`Message`] that dereferences to the
/// archived value inside the ring: no copy, no deserialisation, no
/// allocation. Each message is validated (bytecheck) before it is handed out;
/// [`recv_unchecked`](Receiver::recv_unchecked) skips that for trusted peers.
/// See [`Sender`](crate::Sender) for an example.
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

/// A received message, read in place. Dereferences to `Archived<T>`;
/// dropping it releases its space in the ring to the sender.
pub struct Message<'a, T: rkyv::Archive> {
    rx: &'a mut RawReceiver,
    frame: Frame,
    archived: *const Archived<T>,
}

impl<T: Decode> Receiver<T> {
    pub(crate) fn from_raw(raw: RawReceiver) -> Self {
        Receiver {
            raw,
            _type: PhantomData,
        }
    }

    /// Sets how blocking receives wait for data (default
    /// [`WaitStrategy::Adaptive`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.raw.set_wait_strategy(strategy);
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

    /// Receives the next message without validating it.
    ///
    /// # Safety
    ///
    /// The peer must be trusted to send only valid archives of `T`: an
    /// invalid one is undefined behaviour when read.
    pub unsafe fn recv_unchecked(&mut self) -> Result<Message<'_, T>, RecvError> {
        let frame = self.raw.next_frame(Deadline::NEVER)?;
        // SAFETY: the frame lies inside the ring and is ours until released;
        // its validity as a `T` archive is the caller's promise.
        let archived = unsafe { codec::access_unchecked::<T>(frame_bytes(&frame)) } as *const _;
        Ok(Message {
            rx: &mut self.raw,
            frame,
            archived,
        })
    }

    #[inline]
    fn recv_until(&mut self, deadline: Deadline) -> Result<Message<'_, T>, RecvError> {
        let frame = self.raw.next_frame(deadline)?;
        match codec::access::<T>(frame_bytes(&frame)) {
            Ok(archived) => {
                let archived = archived as *const _;
                Ok(Message {
                    rx: &mut self.raw,
                    frame,
                    archived,
                })
            }
            Err(_) => {
                self.raw.release(frame);
                Err(RecvError::Invalid { len: frame.len })
            }
        }
    }
}

/// The payload of a frame the receiver currently owns.
#[inline]
fn frame_bytes(frame: &Frame) -> &[u8] {
    // SAFETY: a validated frame lies inside the ring data and stays ours
    // until released; the sender does not write it meanwhile (protocol).
    unsafe { std::slice::from_raw_parts(frame.payload, frame.len) }
}

impl<T: rkyv::Archive> Deref for Message<'_, T> {
    type Target = Archived<T>;

    fn deref(&self) -> &Archived<T> {
        // SAFETY: `archived` points into the frame, validated (or vouched for
        // by `recv_unchecked`'s caller) and not released until `self` drops.
        unsafe { &*self.archived }
    }
}

impl<T: rkyv::Archive> Message<'_, T> {
    /// The raw archived bytes of this message.
    pub fn bytes(&self) -> &[u8] {
        frame_bytes(&self.frame)
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
        self.rx.release(self.frame);
    }
}
