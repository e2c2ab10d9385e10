//! The FIFO fallback transport: the ring's frames over two named pipes per
//! channel, for hosts where shared memory is unusable.
//!
//! Same API and guarantees as the shared-memory transport; what differs is
//! the cost (each message crosses the kernel: one `write` and, batched, a
//! share of one `read`) and how each guarantee is met:
//!
//! | guarantee | how |
//! |---|---|
//! | no open-order deadlock | non-blocking opens, the parent's `O_RDWR` placeholder ([`set`], [`pipe`]) |
//! | read in place, aligned | 16-aligned receive buffer, frames padded to 16 ([`wire`], [`buffer`]) |
//! | no allocation per message | fixed send and receive buffers, sized from the largest message |
//! | `TooLarge` as on a ring | largest message `capacity / 2 - 16` |
//! | bad peer input is an error | header checked before the payload is awaited ([`receiver`]) |
//! | type mismatch caught | a HELLO frame with both fingerprints opens each direction |
//! | drain, then `Disconnected` | EOF after the buffered frames; `EPIPE` on send |
//! | peer death within 100 ms | EOF/`EPIPE`, the child's pidfd in every `ppoll`, 50 ms slices ([`wait`]) |
//! | no torn frames | the rest of a started frame is kept and written first by the next send or on drop ([`sender`]) |
//! | SIGPIPE never kills | blocked around each frame write ([`crate::sys::signal`]) |
//! | nothing left behind | directory removed at attach, drop, wait, peer death; stale sweep ([`dir`]) |

mod buffer;
mod dir;
mod link;
mod manifest;
mod pipe;
mod plan;
mod receiver;
mod sender;
mod set;
mod wait;
mod wire;

pub(crate) use receiver::FifoReceiver;
pub(crate) use sender::FifoSender;
pub(crate) use set::FifoSet;
