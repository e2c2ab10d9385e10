//! Named services: unrelated processes connect to a server by name, and
//! each client gets its own sealed shared-memory segment.
//!
//! * `listener.rs`: [`Service`] (bind, the accept loop, admission, the
//!   bound on clients, handshake timeouts) and [`ServiceOptions`].
//! * `client.rs`: [`connect_service`] and [`ConnectOptions`] (connect,
//!   check the server's uid, receive and check the segment, claim it).
//! * `connection.rs`: [`ServiceConnection`], either side's channels, and
//!   channels opened at run time (over `runtime::RuntimeChannels`, shared
//!   with spawned children).
//! * `wire.rs`: the socket address (the messages are `runtime/wire.rs`).
//!
//! [`ServiceError`] and [`OpenedChannel`] live in `runtime/` (spawned
//! children's run-time channels return them too) and are re-exported here.
//!
//! The rendezvous is a `SOCK_SEQPACKET` socket in the abstract namespace
//! (`\0remora.<uid>.<name>`), so nothing exists on a filesystem to outlive
//! a crash; the segment is a memfd sealed against resizing (see
//! `segment/sealed.rs`), so a peer can never shrink it under a mapping.
//! See ARCHITECTURE.md, "Named services", for the choices.

mod client;
mod connection;
mod listener;
#[cfg(test)]
mod tests;
mod wire;

pub(crate) use crate::runtime::deadline_after;
pub use crate::runtime::{OpenedChannel, ServiceError};
pub use client::{ConnectOptions, connect_service, connect_service_timeout};
pub use connection::ServiceConnection;
pub use listener::{Service, ServiceOptions};
