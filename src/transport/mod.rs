//! Transports: how frames move between the two processes.
//!
//! * [`shm`]: the shared-memory rings (default): zero-copy both ways, futex
//!   wake-ups, no system call on a busy channel.
//! * [`fifo`]: the fallback where shared memory is unusable: the same frames
//!   over two named pipes per channel.
//!
//! [`Transport`] picks one at spawn. Channel ends
//! ([`RawSender`](crate::RawSender), [`RawReceiver`](crate::RawReceiver))
//! dispatch over the transports with an enum: no `dyn`, no boxing.

mod choice;
pub(crate) mod fifo;
pub(crate) mod shm;

pub(crate) use choice::shm_unusable;
pub use choice::{ParseTransportError, TRANSPORT_ENV, Transport};
pub(crate) use fifo::{FifoReceiver, FifoSender, FifoSet};
pub(crate) use shm::{ShmReceiver, ShmSender};
