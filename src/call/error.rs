//! Why a call, or a wait for a reply, failed.

use std::fmt;

use super::Ticket;
use crate::error::{RecvError, SendError};

/// Why a call failed, or why no reply was delivered.
///
/// Errors naming a `ticket` end that call (its slot is free again); the
/// others end no call unless the method's documentation says so
/// ([`Client::call_timeout`](crate::Client::call_timeout) abandons its own
/// call on `Timeout`).
///
/// ```
/// # use remora::{ChannelConfig, Segment, Client, CallError};
/// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
/// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
/// // Nothing was started, so there is nothing to wait for.
/// assert!(matches!(client.try_recv_reply(), Err(CallError::Idle)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The in-flight table is full: collect a reply (or
    /// [`abandon`](crate::Client::abandon) a call) before starting another.
    /// The bound on calls in flight is the client's back-pressure. Also
    /// when every slot holds an abandoned call whose slot was already
    /// reused once: its late reply must come first (see
    /// [`Client::abandoned`](crate::Client::abandoned)).
    TableFull,
    /// [`call`](crate::Client::call) while pipelined calls are in flight:
    /// their replies may come first and would have nowhere to go. Collect
    /// them with [`recv_reply`](crate::Client::recv_reply) first.
    Busy,
    /// A reply was waited for with no call in flight: none can come.
    Idle,
    /// `try_recv_reply`: no reply is waiting.
    Empty,
    /// The time ran out. From `call_timeout` the call is abandoned (its
    /// late reply will be discarded); from `start_timeout` nothing was
    /// sent; from `recv_reply_timeout` every call stays in flight.
    Timeout,
    /// The server is gone (its process died, or it dropped its ends) and
    /// every reply it sent has been received: every call still in flight
    /// has failed, all at once, and the table is empty.
    Disconnected,
    /// The server could not read this call's request (it did not validate
    /// as the request type).
    Rejected {
        /// The failed call.
        ticket: Ticket,
    },
    /// The server dropped this call without answering it.
    Abandoned {
        /// The failed call.
        ticket: Ticket,
    },
    /// This call's reply did not validate as the reply type (or had an
    /// unknown status): the call is over, without a reply.
    InvalidReply {
        /// The failed call.
        ticket: Ticket,
        /// The reply's length in bytes, prefix included.
        len: usize,
    },
    /// The peer broke the call protocol: a reply whose correlation id was
    /// never issued, is out of range, or was already answered (a repeat or
    /// a replay), or a message too short for the prefix. It was discarded
    /// and given to no call; every call in flight stays in flight (except
    /// `call`'s own, which it abandons: see there).
    Protocol {
        /// The id the message carried (0 if it was too short for one).
        id: u64,
        /// The message's length in bytes.
        len: usize,
    },
    /// Sending the request failed (request too large for the channel,
    /// serialisation failure, a corrupted ring, or `try_start` finding no
    /// room: [`SendError::Full`]). Nothing was sent.
    Send(SendError),
    /// Receiving failed for good ([`RecvError::Corrupted`],
    /// [`RecvError::Malformed`], ...).
    Recv(RecvError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::TableFull => write!(f, "too many calls in flight"),
            CallError::Busy => write!(f, "pipelined calls are in flight"),
            CallError::Idle => write!(f, "no call in flight"),
            CallError::Empty => write!(f, "no reply waiting"),
            CallError::Timeout => write!(f, "call timed out"),
            CallError::Disconnected => write!(f, "the server is gone"),
            CallError::Rejected { ticket } => {
                write!(
                    f,
                    "call {} rejected: the server could not read it",
                    ticket.slot()
                )
            }
            CallError::Abandoned { ticket } => {
                write!(f, "call {} abandoned by the server", ticket.slot())
            }
            CallError::InvalidReply { ticket, len } => {
                write!(f, "call {}: invalid {len}-byte reply", ticket.slot())
            }
            CallError::Protocol { id, len } => {
                write!(
                    f,
                    "protocol violation: {len}-byte reply with unknown id {id:#x}"
                )
            }
            CallError::Send(e) => write!(f, "sending the request failed: {e}"),
            CallError::Recv(e) => write!(f, "receiving the reply failed: {e}"),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Send(e) => Some(e),
            CallError::Recv(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SendError> for CallError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Disconnected => CallError::Disconnected,
            SendError::Timeout => CallError::Timeout,
            e => CallError::Send(e),
        }
    }
}

impl From<RecvError> for CallError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => CallError::Disconnected,
            RecvError::Timeout => CallError::Timeout,
            RecvError::Empty => CallError::Empty,
            e => CallError::Recv(e),
        }
    }
}

/// A reply that could not be sent; the handle comes back so the call can be
/// answered again (for instance with an error instead of a too-large
/// reply) or [`abandon`](crate::Server::abandon)ed.
///
/// ```
/// # use remora::{ChannelConfig, Segment, Client, Server, SendError};
/// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
/// # let child = Segment::open(parent.name())?;
/// let mut client: Client<u32, Vec<u8>, String> = Client::new(parent.channel("c")?);
/// let mut server: Server<u32, Vec<u8>, String> = Server::new(child.channel("c")?);
/// let ticket = client.start(&1)?;
/// let handle = server.recv()?.defer();
/// let huge = vec![0u8; 10_000];
/// let failed = server.reply(handle, Ok(&huge)).unwrap_err();
/// assert!(matches!(failed.error, SendError::TooLarge { .. }));
/// server.reply(failed.handle, Err(&"too large".to_owned()))?;
/// let reply = client.recv_reply()?;
/// assert_eq!(reply.ticket(), ticket);
/// assert_eq!(reply.result().unwrap_err().as_str(), "too large");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReplyError {
    /// The call, still unanswered.
    pub handle: super::ReplyHandle,
    /// Why sending failed.
    pub error: SendError,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sending the reply failed: {}", self.error)
    }
}

impl std::error::Error for ReplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
