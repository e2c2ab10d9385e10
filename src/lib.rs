//! # remora
//!
//! Zero-copy IPC between a parent process and the dedicated child it spawns.
//!
//! Each named duplex channel is a pair of lock-free single-producer /
//! single-consumer rings in a POSIX shared-memory segment. Messages are
//! rkyv-archived straight into the ring.
//! A side with nothing to do sleeps on a futex in the segment; a busy channel
//! makes no system calls. Where shared memory is unusable, the same API runs
//! over named pipes ([`Transport`]).
//!
//! A parent declares channels on a [`Spawner`] and gets a [`Child`]; the
//! child calls [`connect`]. [`Segment`] gives the same channels between any
//! two processes without the spawner.
//!
//! [`Client`] and [`Server`] make typed calls over a channel: correlation
//! ids, pipelining with a bounded number of calls in flight, timeouts, and
//! each reply routed to the call it answers.
//!
//! ```
//! use remora::{ChannelConfig, Segment};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize)]
//! struct Ping { seq: u64 }
//!
//! let parent = Segment::create(&[ChannelConfig::new("ping")])?;
//! let child = Segment::open(parent.name())?; // normally in the child process
//! let (mut tx, _) = parent.channel::<Ping, Ping>("ping")?;
//! let (_, mut rx) = child.channel::<Ping, Ping>("ping")?;
//! tx.send(&Ping { seq: 1 })?;
//! assert_eq!(rx.recv()?.seq, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Trust
//!
//! No safe call lets the peer cause undefined behaviour, whatever it writes
//! into shared memory and whenever. By default a receiver copies each
//! message once (volatile reads) into a private buffer allocated when the
//! end is taken, then validates and reads the copy ([`ReceiveMode::Copy`]):
//! the parent's ends ([`Child::channel`]) and both sides of a [`Segment`]
//! work this way. Reading in place, zero-copy, takes an `unsafe`
//! declaration that the peer never writes a frame after committing it
//! ([`Receiver::trust_peer`], [`RawReceiver::trust_peer`]), except for a
//! spawned child's ends ([`Connection::channel`]), which trust the parent
//! that spawned them: it can write the child's memory anyway.
//!
//! ```
//! # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
//! # let child = remora::Segment::open(parent.name())?;
//! # let (mut tx, _) = parent.channel::<String, ()>("c")?;
//! let (_, mut rx) = child.channel::<(), String>("c")?;
//! assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
//! // SAFETY: the sender is in this process and never rewrites a frame.
//! unsafe { rx.trust_peer() }; // zero-copy from here on
//! # tx.send(&"in place".to_owned())?;
//! assert_eq!(rx.recv()?.as_str(), "in place");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `ARCHITECTURE.md` for the layers and the shared-memory layout, and
//! the README's threat model for the limits.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod aligned;
mod attachment;
mod call;
mod channel;
mod codec;
mod config;
mod doorbell;
mod error;
mod layout;
mod peer;
mod ring;
mod runtime;
mod segment;
mod service;
mod side;
mod spawn;
mod stale;
mod sync;
mod sys;
mod transport;
mod wait;
#[cfg(not(loom))]
mod waitset;

pub use call::{
    CallError, Client, DEFAULT_IN_FLIGHT, Incoming, Replies, Reply, ReplyError, ReplyHandle,
    Requests, Server, Ticket,
};
pub use channel::{
    DEFAULT_SCRATCH, Message, RawMessage, RawReceiver, RawSender, ReceiveMode, Receiver, Sender,
    Slot,
};
pub use codec::{Decode, Encode, FrameSerializer, FrameValidator, FrameWriter};
pub use config::{ChannelConfig, DEFAULT_CAPACITY};
pub use error::{
    ChannelError, ConnectError, OpenError, ParseTransportError, RecvError, RingFault, SendError,
    SpawnError, StreamFault,
};
pub use segment::Segment;
pub use service::{
    ConnectOptions, OpenedChannel, Service, ServiceConnection, ServiceError, ServiceOptions,
    connect_service, connect_service_timeout,
};
pub use spawn::{CHANNEL_ENV, Child, Connection, Spawner, connect, set_parent_death_signal};
pub use transport::{TRANSPORT_ENV, Transport};
pub use wait::WaitStrategy;
#[cfg(not(loom))]
pub use waitset::{Event, EventKind, Key, ProbeOf, WaitError, WaitSet, WatchError, Watchable};

#[cfg(all(test, loom))]
mod loom_tests;

/// The README's code blocks, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
