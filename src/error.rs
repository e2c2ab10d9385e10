//! Error types, one per operation family.
//!
//! Every variant says what went wrong and, where there is one, what to do.

use std::fmt;
use std::io;

pub use crate::ring::RingFault;

/// Why a send failed. Sends borrow the message, so on error it is still the
/// caller's to retry, log or drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// `try_send` only: the ring has no room for the message right now. The
    /// message was not sent.
    Full,
    /// `send_timeout` only: the ring had no room before the deadline. The
    /// message was not sent.
    Timeout,
    /// The message is larger than the largest this channel carries (`max`
    /// bytes encoded, half the ring capacity minus a 16-byte frame header).
    /// Declare the channel with a larger capacity.
    TooLarge {
        /// Largest encoded message the channel accepts.
        max: usize,
    },
    /// The receiving side is gone: its `Receiver` was dropped or its process
    /// exited. Nothing more can be delivered.
    Disconnected,
    /// rkyv failed to serialise the value for a reason other than space,
    /// typically a scratch area too small for its nested collections (see
    /// `Sender::with_scratch_size`).
    Encode,
    /// The channel is poisoned: the peer broke the ring protocol earlier.
    /// Every later call returns this too.
    Corrupted(RingFault),
}

/// Why a receive failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// `try_recv` only: no message is waiting.
    Empty,
    /// `recv_timeout` only: no message arrived before the deadline.
    Timeout,
    /// The sending side is gone and every message it committed has been
    /// received. Nothing more will arrive.
    Disconnected,
    /// The message did not validate as the channel's type (wrong type, or
    /// corrupted bytes). It was skipped; the channel stays usable.
    Invalid {
        /// Length of the rejected message in bytes.
        len: usize,
    },
    /// The channel is poisoned: the peer broke the ring protocol. Every later
    /// call returns this too.
    Corrupted(RingFault),
    /// FIFO transport: the channel is poisoned because the peer wrote
    /// something that is not a valid frame stream (see [`StreamFault`]).
    /// Every later call returns this too.
    Malformed(StreamFault),
    /// FIFO transport: the peer declared a different message type for this
    /// channel (its handshake disagrees with our `In`/`Out` types). Usually
    /// caught when the channel is taken, as
    /// [`ChannelError::TypeMismatch`]; this is the case where both sides
    /// took it at the same moment. Every later call returns this too.
    TypeMismatch {
        /// `"parent-to-child"` or `"child-to-parent"`: the direction whose
        /// types disagree.
        direction: &'static str,
    },
}

/// A protocol violation seen in a FIFO channel's byte stream: the peer (or
/// something else holding the pipe) wrote bytes no correct sender writes.
/// Each is detected from the frame header alone, before any payload is
/// awaited, so it never causes a large allocation or a hang.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamFault {
    /// A frame header has an unknown kind.
    BadKind {
        /// The kind word found.
        kind: u32,
        /// Stream offset of the frame, in bytes.
        offset: u64,
    },
    /// A frame claims more payload than the channel's largest message (or a
    /// handshake has the wrong length).
    BadLength {
        /// The length word found.
        len: u32,
        /// The largest length allowed there.
        max: usize,
        /// Stream offset of the frame, in bytes.
        offset: u64,
    },
    /// The stream ended in the middle of a frame: the peer exited or closed
    /// its end while writing it.
    Truncated {
        /// Bytes of the frame received (header included).
        received: usize,
        /// Bytes the frame needed (header and padding included), or 16 if
        /// even the header was cut.
        expected: usize,
        /// Stream offset of the frame, in bytes.
        offset: u64,
    },
    /// The stream did not start with the handshake frame every remora
    /// sender writes first: the peer is not remora, or a different version.
    NoHandshake,
}

impl fmt::Display for StreamFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StreamFault::BadKind { kind, offset } => {
                write!(f, "frame at stream offset {offset} has unknown kind {kind:#x}")
            }
            StreamFault::BadLength { len, max, offset } => write!(
                f,
                "frame at stream offset {offset} claims {len} bytes, more than the {max} allowed"
            ),
            StreamFault::Truncated {
                received,
                expected,
                offset,
            } => write!(
                f,
                "stream ended inside the frame at offset {offset}: {received} of {expected} bytes"
            ),
            StreamFault::NoHandshake => f.write_str(
                "stream did not start with a remora handshake (peer is not remora, or another version)",
            ),
        }
    }
}

impl std::error::Error for StreamFault {}

/// Why creating or opening a segment, or the FIFO transport's pipes,
/// failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// A system call failed; `op` names it (e.g. `"shm_open"`,
    /// `"posix_fallocate"`, `"pipe2"`). `ENOSPC` from `posix_fallocate`
    /// means /dev/shm is full; `EACCES`/`EPERM` usually mean shared memory
    /// is forbidden here (try [`Transport::Fifo`](crate::Transport::Fifo)).
    Io {
        /// The failing operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// No segment of that name exists: it was never
    /// created, or was already removed after another process attached.
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// The segment does not start with remora's
    /// magic number: not remora's.
    BadMagic {
        /// The first 8 bytes found.
        found: u64,
    },
    /// The segment was made by an incompatible remora version.
    VersionMismatch {
        /// Layout version in the segment.
        found: u32,
        /// Layout version this build speaks.
        expected: u32,
    },
    /// The object's size does not match the size its header records, or is
    /// too small to hold a header.
    BadSize {
        /// Size of the object.
        actual: u64,
        /// Size the header claims (0 if the object is too small for one).
        recorded: u64,
    },
    /// The segment belongs to
    /// another user: refusing to trust it.
    WrongOwner {
        /// Owner of the object.
        owner: u32,
        /// Our effective uid.
        expected: u32,
    },
    /// The creator had not finished initialising the segment.
    NotReady,
    /// The channel directory is inconsistent (overlapping or out-of-bounds
    /// rings, bad capacity or name), or a memfd handed over is write-sealed.
    BadLayout {
        /// What is wrong.
        reason: &'static str,
    },
    /// Another process already attached to this segment or FIFO set (e.g. a
    /// grandchild that inherited `REMORA_CHANNEL`). Each serves exactly one
    /// child.
    AlreadyClaimed,
    /// The requested configuration is not possible (capacity not a power of
    /// two, too many channels, duplicate or over-long names).
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A segment handed over by descriptor is not a memory file that can
    /// carry seals (a memfd): a pipe, a socket, a directory, or a file on
    /// a disk or in `/dev/shm`. Refused before it is mapped.
    NotMemfd {
        /// What the descriptor is instead.
        reason: &'static str,
    },
    /// A segment handed over by descriptor lacks seals that keep its size
    /// fixed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): its sender could
    /// shrink it under our mapping (SIGBUS). Refused before it is mapped.
    MissingSeals {
        /// The seals it carries (`F_GET_SEALS`).
        found: u32,
        /// The seals remora requires.
        required: u32,
    },
    /// A spawned child found neither a descriptor its parent handed down
    /// (the sealed segment, a pipe of the FIFO transport) nor, in its
    /// place, the parent's `/proc/<pid>/fd/<n>`: a wrapper closed the
    /// inherited descriptor (`sudo` closes all above 2), and the parent's
    /// `/proc` entry is out of reach (another PID namespace, another user)
    /// or the parent gave it up (it saw the child attach or die).
    HandOverLost {
        /// Where the descriptor was looked for last.
        path: String,
        /// Why that failed.
        source: io::Error,
    },
}

/// Why a channel could not be taken from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// No channel of that name was declared; `declared` lists those that were.
    Unknown {
        /// The requested name.
        name: String,
        /// The names the segment declares.
        declared: Vec<String>,
    },
    /// This side already took that channel's sender and receiver.
    AlreadyTaken {
        /// The channel name.
        name: String,
    },
    /// The two sides declared different message types for one direction of
    /// the channel (compare the `Out`/`In` type parameters on both sides).
    TypeMismatch {
        /// The channel name.
        name: String,
        /// `"parent-to-child"` or `"child-to-parent"`.
        direction: &'static str,
    },
    /// The channel's ring indices are already inconsistent.
    Corrupted(RingFault),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full => f.write_str("channel is full; retry later or use send()"),
            SendError::Timeout => f.write_str("timed out waiting for room in the channel"),
            SendError::TooLarge { max } => write!(
                f,
                "message exceeds the channel's largest message of {max} bytes; declare a larger capacity"
            ),
            SendError::Disconnected => f.write_str("receiver is gone (dropped or its process exited)"),
            SendError::Encode => f.write_str(
                "rkyv could not serialise the message (scratch area too small?); see Sender::with_scratch_size",
            ),
            SendError::Corrupted(fault) => write!(f, "channel poisoned by a protocol violation: {fault}"),
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => f.write_str("no message waiting"),
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
            RecvError::Disconnected => {
                f.write_str("sender is gone and every message it sent was received")
            }
            RecvError::Invalid { len } => write!(
                f,
                "a {len}-byte message failed validation as the channel's type (wrong type or corrupt); it was skipped"
            ),
            RecvError::Corrupted(fault) => {
                write!(f, "channel poisoned by a protocol violation: {fault}")
            }
            RecvError::Malformed(fault) => {
                write!(f, "channel poisoned by a malformed frame stream: {fault}")
            }
            RecvError::TypeMismatch { direction } => write!(
                f,
                "the two sides declared different message types for the {direction} direction (compare the Out/In type parameters on both sides)"
            ),
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io { op, source } => write!(f, "{op} failed: {source}"),
            OpenError::NotFound { name } => write!(
                f,
                "no remora segment named {name:?} (never created, or already attached and removed)"
            ),
            OpenError::BadMagic { found } => write!(
                f,
                "not a remora segment (magic {found:#018x})"
            ),
            OpenError::VersionMismatch { found, expected } => write!(
                f,
                "channel layout version {found}, this remora speaks {expected}: build both sides with the same remora"
            ),
            OpenError::BadSize { actual, recorded } => {
                write!(f, "segment is {actual} bytes but its header records {recorded}")
            }
            OpenError::WrongOwner { owner, expected } => {
                write!(f, "the segment is owned by uid {owner}, not by us (uid {expected}); refusing it")
            }
            OpenError::NotReady => f.write_str("segment is not initialised yet"),
            OpenError::BadLayout { reason } => {
                write!(f, "channel directory is corrupt or unsafe: {reason}")
            }
            OpenError::AlreadyClaimed => f.write_str(
                "segment or FIFO set already claimed by another process (was REMORA_CHANNEL inherited by a grandchild?)",
            ),
            OpenError::InvalidConfig { reason } => write!(f, "invalid channel configuration: {reason}"),
            OpenError::NotMemfd { reason } => {
                write!(f, "the segment descriptor is not a sealable memfd: {reason}")
            }
            OpenError::MissingSeals { found, required } => write!(
                f,
                "the segment memfd is not sealed against resizing (seals {found:#x}, need {required:#x}); refusing to map it"
            ),
            OpenError::HandOverLost { path, source } => write!(
                f,
                "the descriptor the parent handed down is not inherited (did a wrapper such as sudo close it?) and {path} failed ({source}): let the wrapper keep descriptors (sudo -C / closefrom_override), or run the child as the parent's user in its PID namespace"
            ),
        }
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Unknown { name, declared } => {
                write!(
                    f,
                    "no channel named {name:?}; declared channels: {declared:?}"
                )
            }
            ChannelError::AlreadyTaken { name } => {
                write!(f, "channel {name:?} was already taken on this side")
            }
            ChannelError::TypeMismatch { name, direction } => write!(
                f,
                "channel {name:?}: the two sides declared different message types for the {direction} direction"
            ),
            ChannelError::Corrupted(fault) => write!(f, "channel is corrupt: {fault}"),
        }
    }
}

/// Why [`Spawner::spawn`](crate::Spawner::spawn) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// The shared-memory segment could not be created (see [`OpenError`]):
    /// with [`Transport::Shm`](crate::Transport::Shm), or with `Auto` for a
    /// reason the FIFO transport would share (e.g. an invalid configuration).
    Segment(OpenError),
    /// The FIFO transport could not be set up (with
    /// [`Transport::Fifo`](crate::Transport::Fifo)).
    Fifo(OpenError),
    /// `Auto`: shared memory is unusable here and the FIFO fallback failed
    /// too. Both reasons are given.
    NoTransport {
        /// Why the segment could not be created.
        shm: OpenError,
        /// Why the FIFOs could not be set up.
        fifo: OpenError,
    },
    /// `REMORA_TRANSPORT` holds something other than `auto`, `shm` or
    /// `fifo`. Fix or unset the variable.
    InvalidTransport(ParseTransportError),
    /// The child process could not be started (program not found, not
    /// executable, ...).
    Spawn(io::Error),
}

/// Why [`connect`](crate::connect) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// `REMORA_CHANNEL` is not set: this process was not started by a
    /// remora `Spawner`.
    NotSpawned,
    /// `REMORA_CHANNEL` is set but names neither a remora segment
    /// (`shm:/remora-...`) nor FIFO pipes (`pipes:<pid>:...`), or is malformed.
    BadVariable {
        /// The variable's value.
        value: String,
    },
    /// The segment or FIFO set could not be opened: it is gone (another
    /// process, e.g. a sibling or grandchild that inherited the variable,
    /// already attached), or it failed validation.
    Open(OpenError),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Segment(e) => write!(f, "cannot create the channel segment: {e}"),
            SpawnError::Fifo(e) => write!(f, "cannot set up the FIFO transport: {e}"),
            SpawnError::NoTransport { shm, fifo } => write!(
                f,
                "no usable transport: shared memory failed ({shm}) and the FIFO fallback failed ({fifo})"
            ),
            SpawnError::InvalidTransport(e) => write!(f, "REMORA_TRANSPORT: {e}"),
            SpawnError::Spawn(e) => write!(f, "cannot start the child process: {e}"),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NotSpawned => f.write_str(
                "REMORA_CHANNEL is not set: this process was not started by a remora Spawner",
            ),
            ConnectError::BadVariable { value } => {
                write!(
                    f,
                    "REMORA_CHANNEL={value:?} names no remora channels: expected an inherited sealed segment (memfd:<pid>:<fd>:<size>:<dev>:<ino>), a named segment (shm:/remora-...) or inherited FIFO pipes (pipes:<pid>:...)"
                )
            }
            ConnectError::Open(e) => write!(f, "cannot attach to the parent's channels: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Segment(e) | SpawnError::Fifo(e) => Some(e),
            SpawnError::NoTransport { fifo, .. } => Some(fifo),
            SpawnError::InvalidTransport(e) => Some(e),
            SpawnError::Spawn(e) => Some(e),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Open(e) => Some(e),
            _ => None,
        }
    }
}

impl std::error::Error for SendError {}
impl std::error::Error for RecvError {}
impl std::error::Error for ChannelError {}
impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } | OpenError::HandOverLost { source, .. } => Some(source),
            _ => None,
        }
    }
}
impl std::error::Error for RingFault {}

impl From<crate::sys::inherit::TakeError> for OpenError {
    fn from(e: crate::sys::inherit::TakeError) -> OpenError {
        use crate::sys::inherit::TakeError;
        match e {
            TakeError::Taken => OpenError::AlreadyClaimed,
            TakeError::Lost { path, source } => OpenError::HandOverLost { path, source },
        }
    }
}

impl ChannelError {
    /// The index of channel `name` among `declared`, or [`ChannelError::Unknown`]
    /// listing them.
    pub(crate) fn position<'a>(
        declared: impl Iterator<Item = &'a str> + Clone,
        name: &str,
    ) -> Result<usize, ChannelError> {
        declared
            .clone()
            .position(|d| d == name)
            .ok_or_else(|| ChannelError::Unknown {
                name: name.to_owned(),
                declared: declared.map(str::to_owned).collect(),
            })
    }
}

impl OpenError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> OpenError {
        move |source| OpenError::Io { op, source }
    }
}

/// A [`TRANSPORT_ENV`](crate::TRANSPORT_ENV) value that is not `auto`, `shm` or `fifo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseTransportError {
    pub(crate) value: String,
}

impl std::fmt::Display for ParseTransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown transport {:?}: expected \"auto\", \"shm\" or \"fifo\"",
            self.value
        )
    }
}

impl std::error::Error for ParseTransportError {}
