//! The FIFO fallback transport: the ring's frames over two named pipes per
//! channel, for hosts where shared memory is unusable. Same API and
//! guarantees as shared memory; each message crosses the kernel. Design
//! and trade-offs: ARCHITECTURE.md, "The FIFO transport".
//!
//! * [`dir`]: the directory, its manifest, the stale sweep;
//! * [`set`]: creating (parent) and opening (child) a set, taking channels;
//! * [`link`]: the parent's placeholders, the watch on the child, waiting;
//! * [`wire`], [`sender`], [`receiver`]: frames and their I/O.

mod dir;
mod link;
mod receiver;
mod sender;
mod set;
mod wire;

pub(crate) use receiver::FifoReceiver;
#[cfg(not(loom))]
pub(crate) use receiver::FifoWatch;
pub(crate) use sender::FifoSender;
pub(crate) use set::FifoSet;
