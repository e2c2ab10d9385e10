//! The call wire format: a 16-byte prefix before each request and reply
//! archive, and the marker types that name a call channel's directions.
//!
//! ```text
//! offset 0   id      u64 LE   the caller's correlation id (slot | generation << 32)
//!        8   status  u32 LE   requests: 0; replies: OK, ERR, REJECTED, ABANDONED
//!       12   reserved u32     0 (ignored on receipt)
//!       16   rkyv archive     Req (requests), Resp (OK) or E (ERR); none otherwise
//! ```
//!
//! The archive starts at offset 16 of a 16-aligned frame, so it keeps
//! rkyv's alignment and is read in place like any typed message.

use std::marker::PhantomData;

use crate::channel::FRAME_PREFIX;

/// Marker type naming a channel direction that carries requests of `Req`
/// in the call framing: take a call channel's ends as
/// `channel::<Requests<Req>, Replies<Resp, E>>` (client side) or
/// `channel::<Replies<Resp, E>, Requests<Req>>` (server side), or let
/// [`Client::new`](crate::Client::new) / [`Server::new`](crate::Server::new)
/// infer it. The channel's type fingerprint then covers `Req`, `Resp` and
/// `E`, and differs from a plain channel's of the same types, so a
/// mismatched peer is refused when it takes the channel
/// ([`ChannelError::TypeMismatch`](crate::ChannelError::TypeMismatch)).
/// No value of it is ever sent.
///
/// ```
/// use remora::{ChannelConfig, Replies, Requests, Segment};
/// let parent = Segment::create(&[ChannelConfig::new("calls").capacity(4096)])?;
/// let (tx, rx) = parent.channel::<Requests<u64>, Replies<u64, ()>>("calls")?;
/// let client = remora::Client::new((tx, rx));
/// assert_eq!(client.in_flight(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct Requests<Req>(PhantomData<fn() -> Req>);

/// Marker type naming a channel direction that carries replies: `Resp` on
/// success, `E` for a handler's error. See [`Requests`].
///
/// ```
/// use remora::{ChannelConfig, Replies, Requests, Segment};
/// let parent = Segment::create(&[ChannelConfig::new("calls").capacity(4096)])?;
/// let (tx, rx) = parent.channel::<Replies<String, u32>, Requests<String>>("calls")?;
/// let server = remora::Server::new((tx, rx));
/// # drop(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct Replies<Resp, E>(PhantomData<fn() -> (Resp, E)>);

/// The status word of a request.
pub(crate) const REQUEST: u32 = 0;
/// Reply: the handler's `Ok`; an archived `Resp` follows.
pub(crate) const OK: u32 = 1;
/// Reply: the handler's `Err`; an archived `E` follows.
pub(crate) const ERR: u32 = 2;
/// Reply: the server could not read the request (no archive follows).
pub(crate) const REJECTED: u32 = 3;
/// Reply: the server dropped the call unanswered (no archive follows).
pub(crate) const ABANDONED: u32 = 4;

/// Builds a prefix.
#[inline]
pub(crate) fn prefix(id: u64, status: u32) -> [u8; FRAME_PREFIX] {
    let mut p = [0u8; FRAME_PREFIX];
    p[..8].copy_from_slice(&id.to_le_bytes());
    p[8..12].copy_from_slice(&status.to_le_bytes());
    p
}

/// Reads a prefix: `(id, status)`, or `None` if the message is shorter.
#[inline]
pub(crate) fn parse(bytes: &[u8]) -> Option<(u64, u32)> {
    let id = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let status = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    if bytes.len() < FRAME_PREFIX {
        return None;
    }
    Some((id, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trips_and_short_frames_are_refused() {
        let p = prefix(0x0123_4567_89ab_cdef, ERR);
        assert_eq!(parse(&p), Some((0x0123_4567_89ab_cdef, ERR)));
        assert_eq!(parse(&p[..15]), None);
        assert_eq!(parse(&[]), None);
    }
}
