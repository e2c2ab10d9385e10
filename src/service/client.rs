//! The client's side: connect by name, check the server and its segment,
//! claim, say so.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::ServiceError;
use super::connection::ServiceConnection;
use super::wire::{self, MESSAGE_LEN, Message, Refusal};
use crate::segment::Segment;
use crate::sys::{shm, socket};

/// How [`ConnectOptions::connect`] connects: a time limit, and whose
/// service to reach.
///
/// ```no_run
/// use std::time::Duration;
/// let conn = remora::ConnectOptions::new()
///     .timeout(Duration::from_secs(2))
///     .server_uid(0) // a service run by root (which must admit our uid)
///     .connect("system-metrics")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    timeout: Option<Duration>,
    server_uid: Option<u32>,
}

impl ConnectOptions {
    /// No time limit; the service of our own effective uid.
    ///
    /// ```
    /// let options = remora::ConnectOptions::new();
    /// ```
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Gives up with [`ServiceError::Timeout`] after `timeout`: connecting
    /// (retried while the server's backlog is full) and the handshake
    /// together. Without a timeout, a full backlog is retried for 2 s,
    /// then reported as [`ServiceError::Busy`]; the handshake itself has
    /// no limit.
    ///
    /// ```
    /// let options = remora::ConnectOptions::new().timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Connects to the service of that name run by user `uid` (default:
    /// our own effective uid), and trusts a server of that uid only.
    /// Services of different users never share a name (the uid is part of
    /// the address), and since any local user can bind any abstract socket
    /// name, a server whose `SO_PEERCRED` uid is not `uid` is refused with
    /// [`ServiceError::UntrustedServer`]. The server must admit our uid
    /// ([`ServiceOptions::allow_uid`](crate::ServiceOptions::allow_uid)).
    ///
    /// ```
    /// let options = remora::ConnectOptions::new().server_uid(0);
    /// ```
    pub fn server_uid(mut self, uid: u32) -> ConnectOptions {
        self.server_uid = Some(uid);
        self
    }

    /// Connects to the service `name` with these options; see
    /// [`connect_service`].
    ///
    /// ```no_run
    /// let conn = remora::ConnectOptions::new().connect("my-service")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(&self, name: &str) -> Result<ServiceConnection, ServiceError> {
        let deadline = self.timeout.and_then(super::deadline_after);
        let uid = self.server_uid.unwrap_or_else(shm::current_uid);
        let address = wire::address(name, uid)?;
        let sock = connect_retrying(&address, name, deadline)?;
        let server = socket::peer_cred(sock.as_fd()).map_err(ServiceError::io("SO_PEERCRED"))?;
        if server.uid != uid {
            return Err(ServiceError::UntrustedServer { uid: server.uid });
        }
        // Taken while connected (see `socket::peer_pidfd`).
        let server_pidfd = socket::peer_pidfd(sock.as_fd(), &server);
        wait_readable(&sock, deadline)?;
        // One byte more than a message: a longer one shows as truncated.
        let mut buf = [0u8; MESSAGE_LEN + 1];
        let got =
            socket::recv(sock.as_fd(), &mut buf, true).map_err(ServiceError::io("recvmsg"))?;
        // Every descriptor received is in `got.fds` and closed on any
        // return below but the one that maps it.
        if got.control_truncated {
            return Err(ServiceError::ControlTruncated);
        }
        if got.len == 0 && !got.truncated {
            return Err(ServiceError::Protocol {
                reason: "the server closed the connection before its welcome",
            });
        }
        let len = if got.truncated { buf.len() } else { got.len };
        let (channels, size) = match Message::decode(&buf[..len])? {
            Message::Welcome { channels, size } => (channels, size),
            Message::Refused(Refusal::Permission) => return Err(ServiceError::PermissionDenied),
            Message::Refused(Refusal::Full) => return Err(ServiceError::ServerFull),
            Message::Refused(Refusal::ServerError) => return Err(ServiceError::ServerError),
            _ => {
                return Err(ServiceError::Protocol {
                    reason: "the server sent something other than a welcome",
                });
            }
        };
        let mut fds = got.fds;
        if fds.len() > 1 {
            return Err(ServiceError::ExtraDescriptors { count: fds.len() });
        }
        let fd = fds.pop().ok_or(ServiceError::MissingDescriptor)?;
        let segment = Segment::open_sealed(fd, Some(size), Some(server.uid))
            .map_err(ServiceError::Segment)?;
        if segment.channel_names().count() != channels as usize {
            return Err(ServiceError::Protocol {
                reason: "the welcome's channel count disagrees with the segment",
            });
        }
        // Claimed: tell the server, and wait until it has taken us. A
        // server that gave up on us (its handshake timeout) has closed the
        // socket: the send fails, or the confirmation never comes.
        let gave_up = |_| ServiceError::Timeout;
        socket::send(sock.as_fd(), &Message::Attached.encode(), &[]).map_err(gave_up)?;
        wait_readable(&sock, deadline)?;
        let got = socket::recv(sock.as_fd(), &mut buf, true).map_err(gave_up)?;
        let confirmed = !got.truncated
            && !got.control_truncated
            && got.fds.is_empty()
            && matches!(Message::decode(&buf[..got.len]), Ok(Message::Confirmed));
        if !confirmed {
            return Err(if got.len == 0 && got.fds.is_empty() {
                // End of stream: the server dropped the handshake.
                ServiceError::Timeout
            } else {
                ServiceError::Protocol {
                    reason: "the server did not confirm the connection",
                }
            });
        }
        Ok(ServiceConnection::new(segment, server, sock, server_pidfd))
    }
}

/// Connects to the service `name` run by our own user, waiting as long as
/// the server takes to answer. Returns this client's connection: its own
/// segment, checked (a sealed memfd of the announced size) and claimed.
///
/// Errors: [`ServiceError::NoSuchService`], [`ServiceError::PermissionDenied`],
/// [`ServiceError::ServerFull`], [`ServiceError::Busy`] (the backlog
/// stayed full for 2 s: a server not accepting, or a squatter on the
/// name), [`ServiceError::VersionMismatch`],
/// [`ServiceError::UntrustedServer`], and for a server that misbehaves
/// [`ServiceError::Protocol`], [`ServiceError::ControlTruncated`],
/// [`ServiceError::ExtraDescriptors`], [`ServiceError::MissingDescriptor`]
/// or [`ServiceError::Segment`].
///
/// ```no_run
/// let conn = remora::connect_service("my-service")?;
/// let (mut tx, mut rx) = conn.raw_channel("echo")?;
/// tx.send(b"hi")?;
/// assert_eq!(&*rx.recv()?, b"hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect_service(name: &str) -> Result<ServiceConnection, ServiceError> {
    ConnectOptions::new().connect(name)
}

/// [`connect_service`] giving up after `timeout` with
/// [`ServiceError::Timeout`].
///
/// ```no_run
/// let conn = remora::connect_service_timeout("my-service", std::time::Duration::from_secs(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect_service_timeout(
    name: &str,
    timeout: Duration,
) -> Result<ServiceConnection, ServiceError> {
    ConnectOptions::new().timeout(timeout).connect(name)
}

/// How long a connect without a timeout retries while the backlog is full
/// before it reports [`ServiceError::Busy`]: a squatter that never accepts
/// must not hang us for ever.
const BUSY_LIMIT: Duration = Duration::from_secs(2);

/// Connects, retrying while the server's backlog is full (`EAGAIN`): until
/// `deadline` ([`ServiceError::Timeout`]), or without one for
/// [`BUSY_LIMIT`] ([`ServiceError::Busy`]).
fn connect_retrying(
    address: &[u8],
    name: &str,
    deadline: Option<Instant>,
) -> Result<std::os::fd::OwnedFd, ServiceError> {
    let busy_until = Instant::now() + BUSY_LIMIT;
    loop {
        match socket::connect(address) {
            Ok(sock) => return Ok(sock),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                return Err(ServiceError::NoSuchService {
                    name: name.to_owned(),
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                let now = Instant::now();
                match deadline {
                    Some(d) if now >= d => return Err(ServiceError::Timeout),
                    None if now >= busy_until => return Err(ServiceError::Busy),
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(ServiceError::io("connect")(e)),
        }
    }
}

/// Waits until `sock` has a message (or hung up), or `deadline` passes.
fn wait_readable(
    sock: &std::os::fd::OwnedFd,
    deadline: Option<Instant>,
) -> Result<(), ServiceError> {
    use std::os::fd::AsRawFd;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut pfd = [libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if socket::poll(&mut pfd, left).map_err(ServiceError::io("poll"))? > 0 {
            return Ok(());
        }
        if left.is_some_and(|l| l.is_zero()) {
            return Err(ServiceError::Timeout);
        }
    }
}
