//! Named services: unrelated processes connect to a server by name, and
//! each client gets its own sealed shared-memory segment.
//!
//! * `listener.rs`: [`Service`] (bind, the accept loop, admission, the
//!   bound on clients, handshake timeouts) and [`ServiceOptions`].
//! * `client.rs`: [`connect_service`] and [`ConnectOptions`] (connect,
//!   check the server's uid, receive and check the segment, claim it).
//! * `connection.rs`: [`ServiceConnection`], either side's channels, and
//!   channels opened at run time ([`OpenedChannel`]).
//! * `control.rs`: the connection's control socket (run-time channels).
//! * `wire.rs`: the handshake messages and the socket address.
//! * `error.rs`: [`ServiceError`].
//!
//! The rendezvous is a `SOCK_SEQPACKET` socket in the abstract namespace
//! (`\0remora.<uid>.<name>`), so nothing exists on a filesystem to outlive
//! a crash; the segment is a memfd sealed against resizing (see
//! `segment/sealed.rs`), so a peer can never shrink it under a mapping.
//! See ARCHITECTURE.md, "Named services", for the choices.

mod client;
mod connection;
mod control;
mod error;
mod listener;
#[cfg(test)]
mod tests;
mod wire;

pub use client::{ConnectOptions, connect_service, connect_service_timeout};
pub use connection::{OpenedChannel, ServiceConnection};
pub use error::ServiceError;
pub use listener::{Service, ServiceOptions};

/// The instant `timeout` from now; `None` (no deadline) when that is past
/// what an `Instant` can hold (`Duration::MAX` means "never").
pub(crate) fn deadline_after(timeout: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}
