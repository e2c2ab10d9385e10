//! One side of a service connection: its own segment, its peer's
//! credentials, and the same channel API as a [`Segment`].

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::{OpenedChannel, ServiceError};
use crate::channel::{RawReceiver, RawSender, ReceiveMode, Receiver, Sender};
use crate::codec::{Decode, Encode};
use crate::config::ChannelConfig;
use crate::error::ChannelError;
use crate::runtime::{PeerProcess, RuntimeChannels};
use crate::segment::Segment;
use crate::sys::socket::PeerCred;

/// A connection between a service and one client: what
/// [`Service::accept`](crate::Service::accept) returns on the server and
/// [`connect_service`](crate::connect_service) on the client.
///
/// Each connection has a segment of its own (a sealed memfd), never shared
/// with another client. Take channel ends with the same calls as on a
/// [`Segment`] or a [`Child`](crate::Child): typed [`channel`](Self::channel),
/// [`raw_channel`](Self::raw_channel), and the one-way takes. The two
/// processes are unrelated, so neither trusts the other: every receiver
/// starts in [`ReceiveMode::Copy`](crate::ReceiveMode::Copy) on both sides.
///
/// Channel ends keep the segment mapped, so the connection may be dropped
/// while they are in use. Either process's death is reported to the other's
/// ends as `Disconnected`, as for spawned children: through the peer's
/// liveness word in the segment, and failing that (a peer that claimed with
/// a word the kernel never marks) through a pidfd taken when it connected.
///
/// ```
/// use remora::{ChannelConfig, Service};
///
/// let mut service = Service::bind("doc-connection", &[ChannelConfig::new("echo").capacity(4096)])?;
/// let client = std::thread::spawn(|| -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
///     let conn = remora::connect_service("doc-connection")?;
///     let (mut tx, mut rx) = conn.channel::<u64, u64>("echo")?;
///     tx.send(&41)?;
///     Ok(rx.recv()?.to_native())
/// });
/// let conn = service.accept()?;
/// assert_eq!(conn.peer_uid(), unsafe { libc::geteuid() });
/// let (mut tx, mut rx) = conn.channel::<u64, u64>("echo")?;
/// let n = rx.recv()?.to_native();
/// tx.send(&(n + 1))?;
/// assert_eq!(client.join().unwrap().unwrap(), 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ServiceConnection {
    segment: Segment,
    peer: PeerCred,
    /// The control socket and run-time channels; holds the peer's pidfd,
    /// when one could be had, which every segment of the connection
    /// watches a copy of (see `ServiceConnection::new`).
    runtime: RuntimeChannels,
}

impl ServiceConnection {
    /// `peer_pidfd` (from `socket::peer_pidfd`, taken while the socket was
    /// connected) is the fallback death watch of every segment of the
    /// connection: a peer that claims with a liveness word the kernel never
    /// marks (a fake value, or `NO_SENTINEL`) is still seen dead.
    pub(crate) fn new(
        segment: Segment,
        peer: PeerCred,
        sock: OwnedFd,
        peer_pidfd: Option<OwnedFd>,
    ) -> ServiceConnection {
        let first = segment.channel_names().map(str::to_owned).collect();
        let watch = peer_pidfd.map_or(PeerProcess::Unknown, PeerProcess::Pidfd);
        // Unrelated processes: neither trusts the other (receivers copy).
        let runtime =
            RuntimeChannels::connected(Some(sock), Some(peer.uid), first, watch, ReceiveMode::Copy);
        runtime.watch_peer(&segment);
        ServiceConnection {
            segment,
            peer,
            runtime,
        }
    }

    /// Takes this side's ends of channel `name`: a sender of `Out` and a
    /// receiver of `In` (the peer declares the types swapped); see
    /// [`Segment::channel`]. The receiver copies (`ReceiveMode::Copy`).
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let (mut tx, mut rx) = conn.channel::<String, u32>("lengths")?;
    /// tx.send(&"four".to_owned())?;
    /// assert_eq!(*rx.recv()?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel<Out: Encode, In: Decode>(
        &self,
        name: &str,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        self.segment.channel(name)
    }

    /// Takes this side's ends of channel `name` as raw byte channels; see
    /// [`Segment::raw_channel`].
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let (mut tx, mut rx) = conn.raw_channel("bytes")?;
    /// tx.send(b"ping")?;
    /// let reply = rx.recv()?; // a private copy
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_channel(&self, name: &str) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.segment.raw_channel(name)
    }

    /// Takes only this side's sender of channel `name`; see
    /// [`Segment::sender`].
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let mut log = conn.sender::<String>("log")?;
    /// log.send(&"hello".to_owned())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sender<T: Encode>(&self, name: &str) -> Result<Sender<T>, ChannelError> {
        self.segment.sender(name)
    }

    /// Takes only this side's receiver of channel `name`; see
    /// [`Segment::receiver`].
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let mut log = conn.receiver::<String>("log")?;
    /// while let Ok(line) = log.recv() {
    ///     println!("{}", line.as_str());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver<T: Decode>(&self, name: &str) -> Result<Receiver<T>, ChannelError> {
        self.segment.receiver(name)
    }

    /// [`ServiceConnection::sender`] for raw bytes.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// conn.raw_sender("log")?.send(b"hello")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_sender(&self, name: &str) -> Result<RawSender, ChannelError> {
        self.segment.raw_sender(name)
    }

    /// [`ServiceConnection::receiver`] for raw bytes.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let first = conn.raw_receiver("log")?.recv()?.to_vec();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_receiver(&self, name: &str) -> Result<RawReceiver, ChannelError> {
        self.segment.raw_receiver(name)
    }

    /// The channels the service declared, in declaration order.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let names: Vec<&str> = conn.channel_names().collect();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.segment.channel_names()
    }

    /// The peer's process id when it connected (`SO_PEERCRED`, as seen from
    /// this PID namespace; 0 if not visible from it). Informational: the
    /// process may have exited since, and its pid been reused.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// println!("served by pid {}", conn.peer_pid());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_pid(&self) -> i32 {
        self.peer.pid
    }

    /// The peer's user id (`SO_PEERCRED`, checked when admitted).
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// assert_eq!(conn.peer_uid(), unsafe { libc::geteuid() });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_uid(&self) -> u32 {
        self.peer.uid
    }

    /// The peer's group id (`SO_PEERCRED`).
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// println!("peer gid {}", conn.peer_gid());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_gid(&self) -> u32 {
        self.peer.gid
    }
}

/// Channels opened at run time, by either side of a live connection.
///
/// The opening side builds a segment holding just the new channel (its own
/// capacity and wait strategy), sealed like the first one, and sends it
/// over the connection's socket; the other side takes it with
/// [`accept_channel`](ServiceConnection::accept_channel), which checks it
/// exactly as the first segment was checked (memfd, seals, size, layout)
/// and claims it. The new channel has the same liveness (either process's
/// death reaches its ends) and the same trust rules (receivers copy).
impl ServiceConnection {
    /// Opens a new channel on this live connection and waits until the
    /// peer accepts it; returns this side's ends (a sender of `Out`, a
    /// receiver of `In`; the peer takes them swapped).
    ///
    /// Errors: [`ServiceError::ChannelRefused`] (the peer is at its limit,
    /// the name is taken on this connection, or the segment failed the
    /// peer's checks), [`ServiceError::Disconnected`] (the peer is gone, or
    /// broke the protocol, e.g. answered a request this side never sent),
    /// [`ServiceError::Segment`] for an invalid `config`,
    /// [`ServiceError::Channel`] if the ends cannot be taken,
    /// [`ServiceError::Protocol`] if the peer accepted without claiming the
    /// new segment.
    ///
    /// ```
    /// use remora::{ChannelConfig, Service};
    /// let mut service = Service::bind("doc-open-channel", &[ChannelConfig::new("main").capacity(4096)])?;
    /// let client = std::thread::spawn(|| {
    ///     let conn = remora::connect_service("doc-open-channel").unwrap();
    ///     let extra = conn.accept_channel().unwrap(); // the server opened one
    ///     assert_eq!(extra.name(), "extra");
    ///     let (_tx, mut rx) = extra.channel::<(), String>().unwrap();
    ///     assert_eq!(rx.recv().unwrap().as_str(), "opened at run time");
    /// });
    /// let conn = service.accept()?;
    /// let (mut tx, _rx) = conn.open_channel::<String, ()>(ChannelConfig::new("extra").capacity(4096))?;
    /// tx.send(&"opened at run time".to_owned())?;
    /// client.join().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_channel<Out: Encode, In: Decode>(
        &self,
        config: ChannelConfig,
    ) -> Result<(Sender<Out>, Receiver<In>), ServiceError> {
        self.runtime.open(config, None)
    }

    /// [`ServiceConnection::open_channel`] giving up after `timeout` with
    /// [`ServiceError::Timeout`] (the peer did not accept in time; if it
    /// accepts later, its ends report `Disconnected`).
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// use std::time::Duration;
    /// let (tx, rx) = conn.open_channel_timeout::<u64, u64>(remora::ChannelConfig::new("x"), Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_channel_timeout<Out: Encode, In: Decode>(
        &self,
        config: ChannelConfig,
        timeout: Duration,
    ) -> Result<(Sender<Out>, Receiver<In>), ServiceError> {
        self.runtime.open(config, super::deadline_after(timeout))
    }

    /// [`ServiceConnection::open_channel`] with raw byte ends.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let (mut tx, rx) = conn.open_raw_channel(remora::ChannelConfig::new("bulk").capacity(1 << 24))?;
    /// tx.send(b"bytes")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_raw_channel(
        &self,
        config: ChannelConfig,
    ) -> Result<(RawSender, RawReceiver), ServiceError> {
        self.runtime.open_raw(config, None)
    }

    /// Waits for the peer to open a channel, checks and claims it, and
    /// returns it (take its ends with [`OpenedChannel::channel`]). Requests
    /// beyond [`ServiceConnection::set_channel_limit`], of a name already
    /// used on this connection, or whose segment fails the checks are
    /// refused (the opener gets [`ServiceError::ChannelRefused`]) and the
    /// wait goes on.
    ///
    /// Errors: [`ServiceError::Disconnected`] once the peer is gone.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let opened = conn.accept_channel()?;
    /// let (tx, rx) = opened.raw_channel()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_channel(&self) -> Result<OpenedChannel, ServiceError> {
        self.runtime.accept(None)
    }

    /// [`ServiceConnection::accept_channel`] without waiting: `Ok(None)`
    /// when the peer has opened nothing.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// if let Some(opened) = conn.try_accept_channel()? {
    ///     println!("the peer opened {}", opened.name());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_accept_channel(&self) -> Result<Option<OpenedChannel>, ServiceError> {
        self.runtime.try_accept()
    }

    /// [`ServiceConnection::accept_channel`] giving up after `timeout` with
    /// [`ServiceError::Timeout`].
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let opened = conn.accept_channel_timeout(std::time::Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_channel_timeout(&self, timeout: Duration) -> Result<OpenedChannel, ServiceError> {
        self.runtime.accept(super::deadline_after(timeout))
    }

    /// How many channels this side accepts from the peer over the
    /// connection's life (default 32); requests beyond are refused.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// conn.set_channel_limit(4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_channel_limit(&self, limit: usize) {
        self.runtime.set_limit(limit);
    }
}
