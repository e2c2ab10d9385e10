//! The server's side: bind a name, admit clients, hand each its own sealed
//! segment, and never let one client hold up another.
//!
//! Accepting is a small event loop over the listening socket and the
//! handshakes in progress. A new client is checked (`SO_PEERCRED`, the
//! bound on clients), given its segment in one non-blocking send (the
//! welcome and the memfd: a fresh socket always has room for it, and a
//! client that never reads cannot block a send that does not wait), and
//! put on the pending list. It becomes a connection when its `attached`
//! message arrives and the segment is really claimed; garbage, a
//! descriptor, a hang-up or the handshake timeout drop it instead. A
//! client never gets a second chance, and no step waits on one client.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::ServiceError;
use super::connection::ServiceConnection;
use super::wire::{self, MESSAGE_LEN, Message, Refusal};
use crate::config::ChannelConfig;
use crate::segment::{Segment, SlotWatch};
use crate::sys::shm;
use crate::sys::socket::{self, PeerCred};

/// How a [`Service`] admits clients.
///
/// ```
/// use std::time::Duration;
/// let options = remora::ServiceOptions::new()
///     .max_clients(16)
///     .handshake_timeout(Duration::from_millis(500))
///     .allow_gid(100);
/// ```
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    max_clients: usize,
    handshake_timeout: Duration,
    same_uid: bool,
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Default for ServiceOptions {
    fn default() -> ServiceOptions {
        ServiceOptions {
            max_clients: 64,
            handshake_timeout: Duration::from_secs(1),
            same_uid: true,
            uids: Vec::new(),
            gids: Vec::new(),
        }
    }
}

impl ServiceOptions {
    /// The defaults: at most 64 clients, a 1 s handshake timeout, clients of
    /// our own effective uid only.
    ///
    /// ```
    /// let options = remora::ServiceOptions::new();
    /// ```
    pub fn new() -> ServiceOptions {
        ServiceOptions::default()
    }

    /// At most `n` clients at once (at least 1), handshakes in progress
    /// included; one more is refused with [`ServiceError::ServerFull`]. A
    /// slot frees when the server has dropped the connection and every end
    /// taken from it, when the client's process dies, or when the client
    /// has hung up every channel (dropped its ends and its connection).
    ///
    /// ```
    /// let options = remora::ServiceOptions::new().max_clients(1);
    /// ```
    pub fn max_clients(mut self, n: usize) -> ServiceOptions {
        self.max_clients = n.max(1);
        self
    }

    /// How long a client has, from its connect being accepted, to check,
    /// map and claim its segment and say so. A client that takes longer is
    /// dropped (its slot freed); it never delays other clients. A timeout
    /// too long for an `Instant` (`Duration::MAX`) means none: a silent
    /// client then holds its slot until it hangs up.
    ///
    /// ```
    /// let options = remora::ServiceOptions::new().handshake_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> ServiceOptions {
        self.handshake_timeout = timeout;
        self
    }

    /// Also admits clients running as `uid` (`SO_PEERCRED`).
    ///
    /// ```
    /// let options = remora::ServiceOptions::new().allow_uid(1001);
    /// ```
    pub fn allow_uid(mut self, uid: u32) -> ServiceOptions {
        self.uids.push(uid);
        self
    }

    /// Also admits clients whose primary group is `gid` (`SO_PEERCRED`).
    ///
    /// ```
    /// let options = remora::ServiceOptions::new().allow_gid(100);
    /// ```
    pub fn allow_gid(mut self, gid: u32) -> ServiceOptions {
        self.gids.push(gid);
        self
    }

    /// Whether clients of our own effective uid are admitted (default
    /// `true`). With `false`, only the uids and gids allowed explicitly are.
    ///
    /// ```
    /// // Only uid 1001's clients.
    /// let options = remora::ServiceOptions::new().same_uid(false).allow_uid(1001);
    /// ```
    pub fn same_uid(mut self, admit: bool) -> ServiceOptions {
        self.same_uid = admit;
        self
    }

    fn admits(&self, peer: &PeerCred, own_uid: u32) -> bool {
        (self.same_uid && peer.uid == own_uid)
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
    }
}

/// A client that was sent its segment and has not confirmed yet.
#[derive(Debug)]
struct Pending {
    sock: OwnedFd,
    segment: Segment,
    peer: PeerCred,
    /// The client's pidfd (see `socket::peer_pidfd`).
    pidfd: Option<OwnedFd>,
    /// `None`: no handshake timeout (`Duration::MAX`).
    deadline: Option<Instant>,
}

/// A named service: any number of unrelated processes connect to it by
/// name, each getting a connection of its own.
///
/// The name lives in the abstract Unix-socket namespace (as
/// `remora.<uid>.<name>`): nothing is created on any filesystem, the name
/// vanishes with the process holding it (even after `kill -9`), and a
/// stale name can never block a new server. Each client gets its own
/// segment, created in a memfd sealed against resizing and passed with
/// `SCM_RIGHTS`.
///
/// ```
/// use remora::{ChannelConfig, Service};
///
/// let mut service = Service::bind("doc-service", &[ChannelConfig::new("echo").capacity(4096)])?;
/// let client = std::thread::spawn(|| {
///     let conn = remora::connect_service("doc-service").unwrap();
///     let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
///     tx.send(b"ping").unwrap();
///     assert_eq!(&*rx.recv().unwrap(), b"pong");
/// });
/// let conn = service.accept()?;
/// let (mut tx, mut rx) = conn.raw_channel("echo")?;
/// assert_eq!(&*rx.recv()?, b"ping");
/// tx.send(b"pong")?;
/// client.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Service {
    name: String,
    listener: OwnedFd,
    channels: Vec<ChannelConfig>,
    options: ServiceOptions,
    uid: u32,
    pending: Vec<Pending>,
    ready: VecDeque<ServiceConnection>,
    live: Vec<SlotWatch>,
}

/// Connections accepted from the backlog per round of the loop, so a
/// connect flood cannot keep pending clients from being served.
const ACCEPTS_PER_ROUND: usize = 64;

impl Service {
    /// Binds the service `name` with the default [`ServiceOptions`]; each
    /// client's segment declares `channels`.
    ///
    /// Errors: [`ServiceError::InvalidName`], [`ServiceError::NameInUse`]
    /// (a live process serves it), [`ServiceError::Segment`] for an invalid
    /// channel configuration.
    ///
    /// ```
    /// let service = remora::Service::bind("doc-bind", &[remora::ChannelConfig::new("c")])?;
    /// assert_eq!(service.name(), "doc-bind");
    /// assert!(matches!(
    ///     remora::Service::bind("doc-bind", &[remora::ChannelConfig::new("c")]),
    ///     Err(remora::ServiceError::NameInUse { .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind(name: &str, channels: &[ChannelConfig]) -> Result<Service, ServiceError> {
        Service::bind_with(name, channels, ServiceOptions::new())
    }

    /// [`Service::bind`] with explicit options.
    ///
    /// ```
    /// use remora::{ChannelConfig, Service, ServiceOptions};
    /// let service = Service::bind_with(
    ///     "doc-bind-with",
    ///     &[ChannelConfig::new("c")],
    ///     ServiceOptions::new().max_clients(4),
    /// )?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind_with(
        name: &str,
        channels: &[ChannelConfig],
        options: ServiceOptions,
    ) -> Result<Service, ServiceError> {
        crate::config::validate(channels).map_err(ServiceError::Segment)?;
        let uid = shm::current_uid();
        let address = wire::address(name, uid)?;
        let backlog = i32::try_from(options.max_clients)
            .unwrap_or(i32::MAX)
            .clamp(16, 4096);
        let listener = socket::listen(&address, backlog).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                ServiceError::NameInUse {
                    name: name.to_owned(),
                }
            } else {
                ServiceError::io("bind")(e)
            }
        })?;
        Ok(Service {
            name: name.to_owned(),
            listener,
            channels: channels.to_vec(),
            options,
            uid,
            pending: Vec::new(),
            ready: VecDeque::new(),
            live: Vec::new(),
        })
    }

    /// The service name.
    ///
    /// ```
    /// let service = remora::Service::bind("doc-name", &[remora::ChannelConfig::new("c")])?;
    /// assert_eq!(service.name(), "doc-name");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Clients holding a slot: connections not yet released plus
    /// handshakes in progress (see [`ServiceOptions::max_clients`]).
    /// Handshakes past their timeout are dropped here too.
    ///
    /// ```
    /// let mut service = remora::Service::bind("doc-clients", &[remora::ChannelConfig::new("c")])?;
    /// assert_eq!(service.clients(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clients(&mut self) -> usize {
        self.expire_pending();
        self.live.retain(|w| !w.released());
        // A ready connection (handshake done, not yet returned by `accept`)
        // already has its watch in `live`: counting `ready` as well held
        // its slot twice, and for ever once its client died.
        self.live.len() + self.pending.len()
    }

    /// Waits for the next client to finish its handshake and returns its
    /// connection. Clients that misbehave (garbage, descriptors, silence
    /// past the handshake timeout) are dropped without an error.
    ///
    /// Errors: [`ServiceError::Segment`] when no segment can be created for
    /// a client (out of memory or descriptors; that client is refused with
    /// [`ServiceError::ServerError`]), [`ServiceError::Io`] when the
    /// listening socket fails. The service stays usable after either.
    ///
    /// ```no_run
    /// let mut service = remora::Service::bind("my-service", &[remora::ChannelConfig::new("echo")])?;
    /// loop {
    ///     let conn = service.accept()?;
    ///     std::thread::spawn(move || {
    ///         let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
    ///         while let Ok(msg) = rx.recv() {
    ///             let reply = msg.to_vec();
    ///             drop(msg);
    ///             if tx.send(&reply).is_err() { break; }
    ///         }
    ///     });
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept(&mut self) -> Result<ServiceConnection, ServiceError> {
        self.accept_until(None)?.ok_or(ServiceError::Timeout)
    }

    /// [`Service::accept`] without waiting: `Ok(None)` when no client is
    /// ready. Still moves every handshake forward that it can.
    ///
    /// ```
    /// let mut service = remora::Service::bind("doc-try-accept", &[remora::ChannelConfig::new("c")])?;
    /// assert!(service.try_accept()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_accept(&mut self) -> Result<Option<ServiceConnection>, ServiceError> {
        self.accept_until(Some(Instant::now()))
    }

    /// [`Service::accept`] giving up after `timeout` with
    /// [`ServiceError::Timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut service = remora::Service::bind("doc-accept-timeout", &[remora::ChannelConfig::new("c")])?;
    /// assert!(matches!(
    ///     service.accept_timeout(Duration::from_millis(10)),
    ///     Err(remora::ServiceError::Timeout)
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_timeout(&mut self, timeout: Duration) -> Result<ServiceConnection, ServiceError> {
        self.accept_until(super::deadline_after(timeout))?
            .ok_or(ServiceError::Timeout)
    }

    /// The accept loop: `Ok(None)` once `deadline` passed with no client
    /// ready (`None`: no deadline).
    fn accept_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<ServiceConnection>, ServiceError> {
        loop {
            // The last look at expired handshakes may make a connection
            // ready: before the ready check, never after it.
            self.expire_pending();
            if let Some(conn) = self.ready.pop_front() {
                return Ok(Some(conn));
            }
            let now = Instant::now();
            // Sleep until the caller's deadline or the next handshake
            // timeout, whichever is first.
            let wake = self
                .pending
                .iter()
                .filter_map(|p| p.deadline)
                .chain(deadline)
                .min();
            let mut fds: Vec<libc::pollfd> = std::iter::once(&self.listener)
                .chain(self.pending.iter().map(|p| &p.sock))
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let timeout = wake.map(|w| w.saturating_duration_since(now));
            socket::poll(&mut fds, timeout).map_err(ServiceError::io("poll"))?;
            // Pending clients first (back to front, so removal keeps the
            // indices of those not yet visited), then new ones.
            for i in (0..self.pending.len()).rev() {
                if fds[i + 1].revents != 0 {
                    let _still_pending = self.finish_handshake(i);
                }
            }
            let accepted = if fds[0].revents != 0 {
                self.admit_new()
            } else {
                Ok(())
            };
            if let Some(conn) = self.ready.pop_front() {
                // A segment error for another client waits for the next call.
                return Ok(Some(conn));
            }
            accepted?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Accepts what is waiting in the backlog (up to a round's worth).
    fn admit_new(&mut self) -> Result<(), ServiceError> {
        for _ in 0..ACCEPTS_PER_ROUND {
            let sock = match socket::accept(self.listener.as_fd()) {
                Ok(sock) => sock,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
                // The client gave up while in the backlog: not our problem.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {
                    continue;
                }
                // Out of descriptors or memory for the moment: the caller
                // hears of it; the backlog keeps the rest for later.
                Err(e) => return Err(ServiceError::io("accept")(e)),
            };
            self.welcome(sock)?;
        }
        Ok(())
    }

    /// Checks a new client and sends it its segment, or its refusal.
    fn welcome(&mut self, sock: OwnedFd) -> Result<(), ServiceError> {
        let refuse = |sock: &OwnedFd, why| {
            // Best effort: a client that already left needs no reason.
            let _ = socket::send(sock.as_fd(), &Message::Refused(why).encode(), &[]);
        };
        let Ok(peer) = socket::peer_cred(sock.as_fd()) else {
            return Ok(());
        };
        if !self.options.admits(&peer, self.uid) {
            refuse(&sock, Refusal::Permission);
            return Ok(());
        }
        if self.clients() >= self.options.max_clients {
            refuse(&sock, Refusal::Full);
            return Ok(());
        }
        let (segment, memfd) = match Segment::create_sealed(&self.channels) {
            Ok(created) => created,
            Err(e) => {
                refuse(&sock, Refusal::ServerError);
                return Err(ServiceError::Segment(e));
            }
        };
        let size = crate::sys::shm::stat(&memfd)
            .map_err(ServiceError::io("fstat"))?
            .size;
        let welcome = Message::Welcome {
            channels: self.channels.len() as u32,
            size,
        };
        // Never waits (see `socket::send`): a client that is gone or does
        // not read is simply not served.
        if socket::send(sock.as_fd(), &welcome.encode(), &[memfd.as_fd()]).is_ok() {
            // Taken now, while the client is connected: its pid cannot
            // have been reused unless it already died.
            let pidfd = socket::peer_pidfd(sock.as_fd(), &peer);
            self.pending.push(Pending {
                sock,
                segment,
                peer,
                pidfd,
                deadline: super::deadline_after(self.options.handshake_timeout),
            });
        }
        // Our copy of the memfd goes here: the mapping keeps the memory.
        Ok(())
    }

    /// Drops the handshakes past their timeout, after a last look at each:
    /// an answer already queued still counts (the loop may not have read
    /// it yet only because it was busy).
    fn expire_pending(&mut self) {
        let now = Instant::now();
        for i in (0..self.pending.len()).rev() {
            if self.pending[i].deadline.is_some_and(|d| d <= now) && self.finish_handshake(i) {
                self.pending.swap_remove(i);
            }
        }
    }

    /// Reads pending client `index`'s answer: it becomes a connection if
    /// it is `attached` and the segment is claimed, and is told so
    /// (`confirmed`); anything else (a hang-up, garbage, an attached
    /// descriptor) drops it. Returns whether the client is still pending
    /// (nothing to read yet).
    fn finish_handshake(&mut self, index: usize) -> bool {
        let mut buf = [0u8; MESSAGE_LEN + 1];
        // No room for descriptors: any the client attaches are discarded by
        // the kernel (never installed here) and flagged as truncation.
        let got = socket::recv(self.pending[index].sock.as_fd(), &mut buf, false);
        let ok = match got {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return true,
            Err(_) => false,
            Ok(got) => {
                !got.truncated
                    && !got.control_truncated
                    && got.fds.is_empty()
                    && matches!(Message::decode(&buf[..got.len]), Ok(Message::Attached))
                    && self.pending[index].segment.is_claimed()
            }
        };
        let pending = self.pending.swap_remove(index);
        // Never waits (see `welcome`); a client that cannot take it has
        // left, and its connection reports that.
        if ok && socket::send(pending.sock.as_fd(), &Message::Confirmed.encode(), &[]).is_ok() {
            self.live.push(pending.segment.slot_watch());
            self.ready.push_back(ServiceConnection::new(
                pending.segment,
                pending.peer,
                pending.sock,
                pending.pidfd,
            ));
        }
        false
    }
}
