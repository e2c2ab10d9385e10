//! One side of a service connection: its own segment, its peer's
//! credentials, and the same channel API as a [`Segment`].

use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::control::Control;
use super::error::ServiceError;
use super::wire::ChannelRefusal;
use crate::channel::{RawReceiver, RawSender, Receiver, Sender};
use crate::codec::{Decode, Encode};
use crate::config::ChannelConfig;
use crate::error::ChannelError;
use crate::segment::Segment;
use crate::sys::{shm, socket::PeerCred};

/// Run-time channels a connection accepts from its peer by default.
pub(crate) const DEFAULT_CHANNEL_LIMIT: usize = 32;

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
    /// A pidfd on the peer, when one could be had: every segment of the
    /// connection watches a copy (see `ServiceConnection::new`).
    peer_pidfd: Option<OwnedFd>,
    control: Control,
    runtime: Mutex<Runtime>,
}

/// The run-time channels of a connection, both ways.
#[derive(Debug)]
struct Runtime {
    /// Names opened by either side (reserved while an open is in flight).
    names: Vec<String>,
    /// Channels accepted from the peer so far, and the most we take.
    accepted: usize,
    limit: usize,
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
        let conn = ServiceConnection {
            segment,
            peer,
            peer_pidfd,
            control: Control::new(sock),
            runtime: Mutex::new(Runtime {
                names: Vec::new(),
                accepted: 0,
                limit: DEFAULT_CHANNEL_LIMIT,
            }),
        };
        conn.watch_peer(&conn.segment);
        conn
    }

    /// Makes `segment`'s ends watch the peer's pidfd (a copy of it).
    fn watch_peer(&self, segment: &Segment) {
        // Without a copy (out of descriptors) the liveness word remains.
        if let Some(fd) = self.peer_pidfd.as_ref().and_then(|f| f.try_clone().ok()) {
            segment.watch_process(fd);
        }
    }

    fn runtime(&self) -> MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(|p| p.into_inner())
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
        let segment = self.open_segment(config, None)?;
        segment
            .channel(&self.last_name(&segment))
            .map_err(ServiceError::Channel)
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
        let segment = self.open_segment(config, super::deadline_after(timeout))?;
        segment
            .channel(&self.last_name(&segment))
            .map_err(ServiceError::Channel)
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
        let segment = self.open_segment(config, None)?;
        segment
            .raw_channel(&self.last_name(&segment))
            .map_err(ServiceError::Channel)
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
        self.accept_until(None)
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
        match self.accept_until(Some(Instant::now())) {
            Ok(opened) => Ok(Some(opened)),
            Err(ServiceError::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
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
        self.accept_until(super::deadline_after(timeout))
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
        self.runtime().limit = limit;
    }

    /// The name of the one channel of a run-time segment.
    fn last_name(&self, segment: &Segment) -> String {
        segment
            .channel_names()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Builds, sends and waits for the peer to take a one-channel segment.
    fn open_segment(
        &self,
        config: ChannelConfig,
        deadline: Option<Instant>,
    ) -> Result<Segment, ServiceError> {
        let name = config.name().to_owned();
        {
            let mut runtime = self.runtime();
            if self.segment.channel_names().any(|n| n == name) || runtime.names.contains(&name) {
                return Err(ServiceError::ChannelRefused {
                    reason: "duplicate name",
                });
            }
            runtime.names.push(name.clone());
        }
        let result = self.open_reserved(config, deadline);
        if result.is_err() {
            self.runtime().names.retain(|n| *n != name);
        }
        result
    }

    fn open_reserved(
        &self,
        config: ChannelConfig,
        deadline: Option<Instant>,
    ) -> Result<Segment, ServiceError> {
        let (segment, memfd) = Segment::create_sealed(&[config]).map_err(ServiceError::Segment)?;
        self.watch_peer(&segment);
        let size = shm::stat(&memfd).map_err(ServiceError::io("fstat"))?.size;
        let id = self.control.send_open(&memfd, size)?;
        drop(memfd);
        match self.control.wait_answer(id, deadline)? {
            // The peer claims before it answers (`accept_channel`): an
            // answer without a claim would leave our ends blind to its
            // death (no liveness word to watch).
            Ok(()) if segment.is_claimed() => Ok(segment),
            Ok(()) => Err(ServiceError::Protocol {
                reason: "the peer accepted a channel without claiming its segment",
            }),
            Err(why) => Err(ServiceError::ChannelRefused {
                reason: match why {
                    ChannelRefusal::Limit => "limit",
                    ChannelRefusal::Duplicate => "duplicate name",
                    ChannelRefusal::Invalid => "invalid segment",
                },
            }),
        }
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<OpenedChannel, ServiceError> {
        loop {
            let (id, fd, size) = self
                .control
                .wait(deadline, |state| state.waiting.pop_front())?;
            match self.check_opened(fd, size) {
                Ok(opened) => {
                    self.control.answer(id, Ok(()));
                    return Ok(opened);
                }
                Err(why) => self.control.answer(id, Err(why)),
            }
        }
    }

    /// Checks a segment the peer opened, claims it and records its name.
    fn check_opened(&self, fd: OwnedFd, size: u64) -> Result<OpenedChannel, ChannelRefusal> {
        let full = {
            let runtime = self.runtime();
            runtime.accepted >= runtime.limit
        };
        if full {
            return Err(ChannelRefusal::Limit);
        }
        let segment = Segment::open_sealed(fd, Some(size), Some(self.peer.uid))
            .map_err(|_| ChannelRefusal::Invalid)?;
        self.watch_peer(&segment);
        let names: Vec<String> = segment.channel_names().map(str::to_owned).collect();
        let [name] = <[String; 1]>::try_from(names).map_err(|_| ChannelRefusal::Invalid)?;
        let mut runtime = self.runtime();
        if runtime.accepted >= runtime.limit {
            return Err(ChannelRefusal::Limit);
        }
        if self.segment.channel_names().any(|n| n == name) || runtime.names.contains(&name) {
            return Err(ChannelRefusal::Duplicate);
        }
        runtime.names.push(name.clone());
        runtime.accepted += 1;
        Ok(OpenedChannel { segment, name })
    }
}

/// A channel the peer opened at run time, accepted with
/// [`ServiceConnection::accept_channel`]: take its ends once.
///
/// ```no_run
/// # let conn = remora::connect_service("svc")?;
/// let opened = conn.accept_channel()?;
/// println!("the peer opened {:?}", opened.name());
/// let (tx, rx) = opened.channel::<u64, String>()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OpenedChannel {
    segment: Segment,
    name: String,
}

impl OpenedChannel {
    /// The channel's name, as the peer declared it.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// assert!(!conn.accept_channel()?.name().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This side's typed ends (a sender of `Out`, a receiver of `In`;
    /// the opener's types swapped); receivers copy.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let (mut tx, mut rx) = conn.accept_channel()?.channel::<u64, u64>()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel<Out: Encode, In: Decode>(
        &self,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        self.segment.channel(&self.name)
    }

    /// This side's raw byte ends.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let (mut tx, mut rx) = conn.accept_channel()?.raw_channel()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_channel(&self) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.segment.raw_channel(&self.name)
    }
}
