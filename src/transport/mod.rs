//! Transports: how frames move between the two processes.
//!
//! * [`shm`]: the shared-memory rings (default): zero-copy both ways, futex
//!   wake-ups, no system call on a busy channel.
//!
//! Channel ends ([`RawSender`](crate::RawSender),
//! [`RawReceiver`](crate::RawReceiver)) dispatch over the transports with an
//! enum: no `dyn`, no boxing.

pub(crate) mod shm;

pub(crate) use shm::{ShmReceiver, ShmSender};
