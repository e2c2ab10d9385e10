//! One side of a service connection: its own segment, its peer's
//! credentials, and the same channel API as a [`Segment`].

use crate::channel::{RawReceiver, RawSender, Receiver, Sender};
use crate::codec::{Decode, Encode};
use crate::error::ChannelError;
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
/// ends as `Disconnected`, as for spawned children.
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
}

impl ServiceConnection {
    pub(crate) fn new(segment: Segment, peer: PeerCred) -> ServiceConnection {
        ServiceConnection { segment, peer }
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
