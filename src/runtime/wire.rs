//! The control messages of a service connection and of a spawned child's
//! control socket (one wire format for both).
//!
//! Every message is one 32-byte `SOCK_SEQPACKET` packet, little-endian:
//!
//! ```text
//!  0  magic    [u8; 4]  "RMSV"
//!  4  version  u32      PROTOCOL_VERSION (first 8 bytes fixed in every version)
//!  8  kind     u32      1 welcome, 2 refused, 3 attached, 4 open,
//!                       5 open-accepted, 6 open-refused, 7 confirmed,
//!                       8 hello (spawned child)
//! 12  detail   u32      welcome: channel count; refused: the reason
//! 16  size     u64      welcome: segment size in bytes (== fstat of the memfd)
//! 24  reserved u64      0
//! ```
//!
//! Server → client: `welcome` with the sealed segment memfd attached
//! (`SCM_RIGHTS`, exactly one descriptor), or `refused`. Client → server,
//! after it has checked, mapped and claimed the segment: `attached`, no
//! descriptor; the server answers `confirmed` once it has taken the
//! connection (a client it gave up on, past its handshake timeout, sees
//! the socket closed instead).
//!
//! Then, either way, channels opened at run time: `open` (detail: a
//! request id, size: the new segment's size, one sealed memfd attached),
//! answered by `open-accepted` (detail: the id) once the peer claimed it,
//! or `open-refused` (detail: the id, size: the reason).
//!
//! A spawned child's control socket starts with the child's `hello`
//! (kind 8, detail 0, bytes 16..32: the 16-byte token from
//! `REMORA_CONTROL`), then carries the same `open` / `open-accepted` /
//! `open-refused` messages.

use super::error::ServiceError;

/// The handshake's version; a peer with another is
/// [`ServiceError::VersionMismatch`].
pub(crate) const PROTOCOL_VERSION: u32 = 1;

const MAGIC: [u8; 4] = *b"RMSV";

/// Length of every handshake message.
pub(crate) const MESSAGE_LEN: usize = 32;

/// Why a server refused a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Permission = 1,
    Full = 2,
    ServerError = 3,
}

/// Why a channel opened at run time was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelRefusal {
    /// The accepting side has all the run-time channels it takes.
    Limit = 1,
    /// A channel of that name exists on the connection already.
    Duplicate = 2,
    /// The segment failed the accepting side's checks.
    Invalid = 3,
}

/// One handshake or control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Welcome {
        channels: u32,
        size: u64,
    },
    Refused(Refusal),
    Attached,
    /// The server took the client's `attached`: the connection is live.
    Confirmed,
    /// A channel opened at run time: request `id`, a sealed one-channel
    /// segment of `size` bytes attached.
    Open {
        id: u32,
        size: u64,
    },
    /// The peer took the segment of request `id`.
    OpenAccepted {
        id: u32,
    },
    /// The peer refused request `id`.
    OpenRefused {
        id: u32,
        why: ChannelRefusal,
    },
    /// A spawned child's first message on its control socket, with the
    /// token its parent put in `REMORA_CONTROL`.
    Hello {
        token: [u8; TOKEN_LEN],
    },
}

/// Length of a spawned child's control token.
pub(crate) const TOKEN_LEN: usize = 16;

impl Message {
    pub(crate) fn encode(self) -> [u8; MESSAGE_LEN] {
        let (kind, detail, size) = match self {
            Message::Welcome { channels, size } => (1u32, channels, size),
            Message::Refused(r) => (2, r as u32, 0),
            Message::Attached => (3, 0, 0),
            Message::Confirmed => (7, 0, 0),
            Message::Open { id, size } => (4, id, size),
            Message::OpenAccepted { id } => (5, id, 0),
            Message::OpenRefused { id, why } => (6, id, why as u64),
            Message::Hello { .. } => (8, 0, 0),
        };
        let mut out = [0u8; MESSAGE_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&kind.to_le_bytes());
        out[12..16].copy_from_slice(&detail.to_le_bytes());
        out[16..24].copy_from_slice(&size.to_le_bytes());
        if let Message::Hello { token } = self {
            out[16..32].copy_from_slice(&token);
        }
        out
    }

    /// Decodes a received message of `bytes.len()` bytes. The version is
    /// checked right after the magic, so a peer of another version gets
    /// `VersionMismatch` whatever the rest of its message looks like.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Message, ServiceError> {
        let protocol = |reason| Err(ServiceError::Protocol { reason });
        if bytes.len() < 8 || bytes[0..4] != MAGIC {
            return protocol("not a remora service handshake");
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let version = word(4);
        if version != PROTOCOL_VERSION {
            return Err(ServiceError::VersionMismatch {
                found: version,
                expected: PROTOCOL_VERSION,
            });
        }
        if bytes.len() != MESSAGE_LEN {
            return protocol("handshake message of the wrong length");
        }
        // A hello's token fills bytes 16..32 (no reserved word).
        if word(8) == 8 {
            return match word(12) {
                0 => Ok(Message::Hello {
                    token: bytes[16..32].try_into().expect("16 bytes"),
                }),
                _ => protocol("malformed hello"),
            };
        }
        if bytes[24..32] != [0; 8] {
            return protocol("reserved handshake bytes are not zero");
        }
        let size = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        match (word(8), word(12)) {
            (1, channels) => Ok(Message::Welcome { channels, size }),
            (2, 1) if size == 0 => Ok(Message::Refused(Refusal::Permission)),
            (2, 2) if size == 0 => Ok(Message::Refused(Refusal::Full)),
            (2, 3) if size == 0 => Ok(Message::Refused(Refusal::ServerError)),
            (3, 0) if size == 0 => Ok(Message::Attached),
            (7, 0) if size == 0 => Ok(Message::Confirmed),
            (4, id) => Ok(Message::Open { id, size }),
            (5, id) if size == 0 => Ok(Message::OpenAccepted { id }),
            (6, id) => {
                let why = match size {
                    1 => ChannelRefusal::Limit,
                    2 => ChannelRefusal::Duplicate,
                    3 => ChannelRefusal::Invalid,
                    _ => return protocol("unknown channel refusal"),
                };
                Ok(Message::OpenRefused { id, why })
            }
            _ => protocol("unknown handshake message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::Welcome {
                channels: 3,
                size: 1 << 20,
            },
            Message::Refused(Refusal::Permission),
            Message::Refused(Refusal::Full),
            Message::Refused(Refusal::ServerError),
            Message::Attached,
            Message::Confirmed,
            Message::Open { id: 7, size: 8192 },
            Message::OpenAccepted { id: 7 },
            Message::OpenRefused {
                id: 7,
                why: ChannelRefusal::Duplicate,
            },
            Message::Hello { token: [0xa5; 16] },
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn garbage_and_versions_are_told_apart() {
        assert!(matches!(
            Message::decode(b"garbage, not a handshake at all."),
            Err(ServiceError::Protocol { .. })
        ));
        let mut m = Message::Attached.encode();
        m[4] = 9;
        assert!(matches!(
            Message::decode(&m),
            Err(ServiceError::VersionMismatch { found: 9, .. })
        ));
        let m = Message::Attached.encode();
        assert!(matches!(
            Message::decode(&m[..31]),
            Err(ServiceError::Protocol { .. })
        ));
        let mut m = Message::Attached.encode();
        m[8] = 99; // no such kind
        assert!(matches!(
            Message::decode(&m),
            Err(ServiceError::Protocol { .. })
        ));
    }
}
