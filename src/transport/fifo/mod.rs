//! The FIFO fallback transport: the ring's frames over two pipes per
//! channel, handed to the child, for hosts where shared memory is
//! unusable. Same API and guarantees as shared memory; each message
//! crosses the kernel. Design and trade-offs: ARCHITECTURE.md, "The FIFO
//! transport".
//!
//! * [`set`]: creating (parent) and opening (child) a set, taking channels;
//! * [`handover`]: the `pipes:` variable, the control-socket message, the
//!   `/proc` fallback, the claim;
//! * [`link`]: the parent's kept copies, the watch on the child, waiting;
//! * [`wire`], [`sender`], [`receiver`]: frames and their I/O.

mod handover;
mod link;
mod receiver;
mod sender;
mod set;
mod wire;

pub(crate) use handover::HandOver;
pub(crate) use receiver::FifoReceiver;
#[cfg(not(loom))]
pub(crate) use receiver::FifoWatch;
pub(crate) use sender::FifoSender;
pub(crate) use set::FifoSet;
