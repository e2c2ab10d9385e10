//! Channel ends: typed ([`Sender`], [`Receiver`], [`Message`]) over raw byte
//! ends ([`RawSender`], [`RawReceiver`], [`RawMessage`]).
//!
//! A sender owns the producer end of one ring, a receiver the consumer end of
//! another; both hold an `Arc` of the segment's [`Attachment`](crate::attachment::Attachment)
//! so the mapping outlives them. Ends are `Send` (serve each channel from its
//! own thread) but not `Clone` or `Sync`: each ring has exactly one producer
//! and one consumer.
//!
//! Closing: dropping a sender marks its ring closed; the receiver drains
//! every committed message, then gets `Disconnected`. Dropping a receiver
//! makes the peer's sends fail with `Disconnected`.

mod copy;
mod raw_receiver;
mod raw_sender;
mod receiver;
mod sender;
mod slot;

pub(crate) use raw_receiver::Delivered;
pub(crate) use raw_receiver::RecvEnd;
pub use raw_receiver::{RawMessage, RawReceiver, ReceiveMode};
pub use raw_sender::RawSender;
pub(crate) use raw_sender::SendEnd;
pub use receiver::{Message, Receiver};
pub(crate) use sender::FRAME_PREFIX;
pub use sender::{DEFAULT_SCRATCH, Sender};
pub use slot::Slot;

pub(crate) use crate::wait::Deadline;
