//! Why binding, accepting or connecting to a named service failed.

use std::fmt;
use std::io;

use crate::error::{ChannelError, OpenError};

/// Why [`Service::bind`](crate::Service::bind), an accept, or
/// [`connect_service`](crate::connect_service) failed, or a channel opened
/// at run time could not be (on a [`ServiceConnection`](crate::ServiceConnection),
/// a [`Child`](crate::Child) or a [`Connection`](crate::Connection)).
///
/// ```
/// match remora::connect_service_timeout("surely-nobody-serves-this", std::time::Duration::from_millis(100)) {
///     Err(remora::ServiceError::NoSuchService { name }) => assert_eq!(name, "surely-nobody-serves-this"),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service name is empty, longer than 64 bytes, or holds a byte
    /// other than ASCII letters, digits and `._-:@`.
    InvalidName {
        /// The name given.
        name: String,
    },
    /// Bind: a live process of this user already serves that name (a dead
    /// one's name is gone with it: nothing stale can hold a name).
    NameInUse {
        /// The name given.
        name: String,
    },
    /// Connect: nobody serves that name (in this network namespace).
    NoSuchService {
        /// The name given.
        name: String,
    },
    /// Connect: the server refused our user and group (by default it
    /// admits its own uid only; see
    /// [`ServiceOptions::allow_uid`](crate::ServiceOptions::allow_uid)).
    PermissionDenied,
    /// Connect: the process serving the name runs as another user than
    /// the one whose service we asked for (anyone can bind an abstract
    /// socket name; see
    /// [`ConnectOptions::server_uid`](crate::ConnectOptions::server_uid)).
    UntrustedServer {
        /// The server's uid (`SO_PEERCRED`).
        uid: u32,
    },
    /// The peer speaks another version of the handshake: build both sides
    /// with the same remora.
    VersionMismatch {
        /// The peer's protocol version.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// Connect: the server already has as many clients (and handshakes in
    /// progress) as it admits; retry later.
    ServerFull,
    /// Connect without a timeout: the listening socket's backlog stayed
    /// full for 2 seconds of retries. Either
    /// the server is not accepting, or the name is squatted by a process
    /// that never accepts (any user can bind any abstract name, and a full
    /// backlog keeps us from reaching the [`UntrustedServer`](Self::UntrustedServer)
    /// check). Retry later, or connect with a timeout of your own.
    Busy,
    /// Connect: the server could not create a segment for us (out of
    /// memory or descriptors on its side).
    ServerError,
    /// A `_timeout` form ran out of time (no connection was ready, the
    /// handshake did not finish), or, on connect, the server gave up on
    /// our handshake (its handshake timeout) before confirming it.
    Timeout,
    /// The peer sent something that is not a remora handshake message
    /// (garbage, a short or over-long message, a message out of order), or
    /// closed the connection in the middle of the handshake.
    Protocol {
        /// What was wrong.
        reason: &'static str,
    },
    /// Connect: the server attached more descriptors than fit
    /// (`MSG_CTRUNC`); every descriptor received was closed.
    ControlTruncated,
    /// Connect: the server attached more than the one segment descriptor;
    /// all of them were closed.
    ExtraDescriptors {
        /// How many arrived.
        count: usize,
    },
    /// Connect: the server's welcome carried no segment descriptor.
    MissingDescriptor,
    /// The segment could not be created (server side) or failed its checks
    /// (client side: not a memfd, missing seals, wrong size, bad layout; see
    /// [`OpenError`]).
    Segment(OpenError),
    /// A channel opened at run time was refused by the peer, or could not
    /// be opened here (a name already used on this connection).
    ChannelRefused {
        /// Why: `"limit"` (the peer takes no more run-time channels),
        /// `"duplicate name"`, or `"invalid segment"` (it failed the peer's
        /// checks).
        reason: &'static str,
    },
    /// The ends of a channel opened at run time could not be taken (a type
    /// disagreement with the peer, ...).
    Channel(ChannelError),
    /// The connection's control channel is closed: the peer dropped its
    /// connection, died, or broke the protocol (for a spawned child: the
    /// child exited before connecting, or the child has no control socket,
    /// see [`Child::open_channel`](crate::Child::open_channel)). Channel
    /// ends already taken keep working until they report `Disconnected`
    /// themselves.
    Disconnected,
    /// A system call failed; `op` names it.
    Io {
        /// The failing operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl ServiceError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> ServiceError {
        move |source| ServiceError::Io { op, source }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::InvalidName { name } => write!(
                f,
                "invalid service name {name:?}: 1 to 64 bytes of ASCII letters, digits and ._-:@"
            ),
            ServiceError::NameInUse { name } => {
                write!(
                    f,
                    "service name {name:?} is already served by a live process"
                )
            }
            ServiceError::NoSuchService { name } => write!(f, "no service named {name:?}"),
            ServiceError::PermissionDenied => f.write_str("the service refused our user and group"),
            ServiceError::UntrustedServer { uid } => write!(
                f,
                "the process serving this name runs as uid {uid}, which we do not trust"
            ),
            ServiceError::VersionMismatch { found, expected } => write!(
                f,
                "the peer speaks service protocol version {found}, we speak {expected}: build both sides with the same remora"
            ),
            ServiceError::ServerFull => f.write_str("the service has all the clients it admits"),
            ServiceError::Busy => f.write_str(
                "the service's backlog stayed full: it is not accepting (or the name is squatted)",
            ),
            ServiceError::ServerError => {
                f.write_str("the service could not create a segment for this client")
            }
            ServiceError::Timeout => f.write_str("timed out"),
            ServiceError::Protocol { reason } => write!(f, "bad handshake from the peer: {reason}"),
            ServiceError::ControlTruncated => f.write_str(
                "the server attached too many descriptors (MSG_CTRUNC); all were closed",
            ),
            ServiceError::ExtraDescriptors { count } => write!(
                f,
                "the server attached {count} descriptors instead of one; all were closed"
            ),
            ServiceError::MissingDescriptor => {
                f.write_str("the server's welcome carried no segment descriptor")
            }
            ServiceError::Segment(e) => write!(f, "segment: {e}"),
            ServiceError::ChannelRefused { reason } => {
                write!(f, "the channel was refused: {reason}")
            }
            ServiceError::Channel(e) => write!(f, "channel: {e}"),
            ServiceError::Disconnected => f.write_str("the peer closed the connection"),
            ServiceError::Io { op, source } => write!(f, "{op} failed: {source}"),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Segment(e) => Some(e),
            ServiceError::Channel(e) => Some(e),
            ServiceError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
