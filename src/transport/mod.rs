//! Transports: how frames move between the two processes.
//!
//! * [`shm`]: the shared-memory rings (default): zero-copy both ways, futex
//!   wake-ups, no system call on a busy channel.
//! * [`fifo`]: the fallback where shared memory is unusable: the same frames
//!   over two inherited pipes per channel.
//!
//! [`Transport`] picks one at spawn. Channel ends
//! ([`RawSender`](crate::RawSender), [`RawReceiver`](crate::RawReceiver))
//! dispatch over the transports with an enum: no `dyn`, no boxing.

mod choice;
pub(crate) mod fifo;
pub(crate) mod shm;

pub(crate) use choice::shm_unusable;
pub use choice::{TRANSPORT_ENV, Transport};
pub(crate) use fifo::{FifoReceiver, FifoSender, FifoSet, HandOver};
pub(crate) use shm::{ShmReceiver, ShmSender};

use crate::ring::RingFrame;

/// A received message frame as the channel layer sees it: a validated
/// payload, borrowed from its transport until handed back with the
/// transport's `release`.
///
/// Each transport keeps what it needs to release the frame in `token`: the
/// ring's own frame for shared memory, the end offset in the receive buffer
/// for FIFOs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Incoming {
    /// First payload byte (16-aligned).
    pub(crate) payload: *const u8,
    /// Exact payload length.
    pub(crate) len: usize,
    /// Transport-private release information.
    pub(crate) token: ReleaseToken,
}

/// How a transport finds an [`Incoming`] frame again when it is released.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReleaseToken {
    /// A frame peeked from a shared-memory ring.
    Ring(RingFrame),
    /// A frame in a private receive buffer, ending at this offset.
    Buffer {
        /// Buffer offset just past the frame (padding included).
        end: usize,
    },
}

impl Incoming {
    /// A frame peeked from a ring.
    #[inline]
    pub(crate) fn from_ring(frame: RingFrame) -> Incoming {
        Incoming {
            payload: frame.payload,
            len: frame.len,
            token: ReleaseToken::Ring(frame),
        }
    }

    /// A frame of `len` payload bytes at `payload` inside a receive buffer,
    /// whose padded end is at buffer offset `end`.
    #[inline]
    pub(crate) fn in_buffer(payload: *const u8, len: usize, end: usize) -> Incoming {
        Incoming {
            payload,
            len,
            token: ReleaseToken::Buffer { end },
        }
    }
}
