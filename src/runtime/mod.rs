//! Channels opened at run time, between the two sides of any live link: a
//! service connection, or a parent and the child it spawned.
//!
//! * `control.rs`: the control socket's shared state (requests waiting,
//!   answers to ours), read by whichever thread waits.
//! * `channels.rs`: [`RuntimeChannels`] (open, accept, the name and limit
//!   bookkeeping, the peer's uid and death watch) and [`OpenedChannel`].
//! * `peer_process.rs`: [`PeerProcess`], the watch on the peer process
//!   (a pidfd, or `waitid` on a child) that the rendezvous, the control
//!   socket's waiters and the new segments share.
//! * `spawned.rs`: a spawned child's control socket: the `REMORA_CONTROL`
//!   variable, the child's side (the inherited socket, or the parent's
//!   listener when a wrapper closed it) and the parent's lazy rendezvous.
//! * `wire.rs`: the 32-byte messages (the service handshake's too).
//! * `error.rs`: [`ServiceError`], what every run-time channel call returns.
//!
//! Below both users in the layer table: `spawn.rs` and `service/` each
//! hold a [`RuntimeChannels`] and expose the same public calls over it.

mod channels;
mod control;
mod error;
mod peer_process;
mod spawned;
pub(crate) mod wire;

pub use channels::OpenedChannel;
pub(crate) use channels::RuntimeChannels;
#[cfg(test)]
pub(crate) use control::Control;
pub use error::ServiceError;
pub(crate) use peer_process::PeerProcess;
pub(crate) use spawned::{CONTROL_ENV, Rendezvous, child_control, take_control};

/// The instant `timeout` from now; `None` (no deadline) when that is past
/// what an `Instant` can hold (`Duration::MAX` means "never").
pub(crate) fn deadline_after(timeout: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}
