//! A spawned child's control socket: how parent and child find it.
//!
//! At spawn the parent makes a `SOCK_SEQPACKET` socketpair and hands one
//! end down (the child inherits it, like the segment's memfd). Since a
//! socket cannot be reopened through `/proc` when a wrapper closed the
//! inherited descriptor (`sudo` closes all above 2), the parent also
//! listens on an abstract socket with a random name. [`CONTROL_ENV`]
//! tells the child both, plus a random 16-byte token and who the parent
//! is: `<fd>:<dev>:<ino>:<name>:<token hex>:<pid>:<euid>` (name empty
//! when the listener could not be bound).
//!
//! The child ([`take_control`], first thing in `connect()`) takes the
//! inherited number if it is open and is that very socket (device and
//! inode), and makes it close-on-exec at once; else it connects to the
//! name and checks the listener's `SO_PEERCRED` against the parent's pid
//! and uid before it sends anything (abstract names carry no permissions:
//! once the parent's listener is gone, anyone may bind the name). Once
//! per process, whichever way. Once its first channels are attached
//! ([`child_control`]) it speaks first: a `hello` carrying the token and
//! a fresh socketpair end that only the child holds; both sides move the
//! control channel to it. Every process between parent and child (a
//! wrapper like `sh -c 'app; cleanup'`, a helper the child started before
//! `connect()`) inherited a copy of the first socket, which would keep it
//! from hanging up when the child dies or drops it; nobody else has the
//! fresh one.
//!
//! The parent resolves lazily, at its first run-time channel call
//! ([`Rendezvous::step`]): a hello on its socketpair end, or an accepted
//! connection from our uid (or root) whose first message is a hello with
//! the token. The listener is non-blocking and bounded (a few connections
//! awaiting their hello, each for [`HELLO_TIMEOUT`] at most; each one's
//! hello is read as it is accepted), so a hostile process connecting to
//! the name cannot stall the parent; a connection with a wrong token is
//! dropped and the wait goes on. Once one
//! socket is chosen the listener and the other socket are closed. The
//! token is no secret from our own uid (it can read our environment, and
//! could ptrace us anyway): it keeps a process that merely finds the name
//! from posing as the child.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::channels::RuntimeChannels;
use super::peer_process::PeerProcess;
use super::wire::{MESSAGE_LEN, Message, TOKEN_LEN};
use crate::channel::ReceiveMode;
use crate::sys::inherit::{self, Handed};
use crate::sys::{fd, random, shm, socket};

/// The environment variable that tells a spawned child where its control
/// socket is: `<fd>:<dev>:<ino>:<name>:<token hex>`.
pub(crate) const CONTROL_ENV: &str = "REMORA_CONTROL";

/// Longest a connection to the listener may take to send its hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to the listener awaiting their hello, at most (the oldest
/// is dropped for a new one).
const MAX_UNGREETED: usize = 8;

/// The listener's backlog: connections the kernel queues until the
/// parent's first run-time call accepts them. Any local process can fill
/// it (an abstract name carries no permissions, and `/proc/net/unix` lists
/// it): one that keeps it full before the child connects makes the
/// child's fallback fail after its short retry ([`CONNECT_RETRY`]), and
/// the child's run-time calls are then `Disconnected` (a denial of the
/// fallback only: the first channels and the inherited socket are
/// unaffected, and the parent keeps only connections of our uid or root).
const LISTEN_BACKLOG: i32 = 64;

/// Connections accepted by one step, at most.
const MAX_ACCEPTS_PER_STEP: usize = 16;

/// Set by the first [`child_control`] that takes the inherited number: it
/// is closed once only, whichever threads race to `connect()`.
static CONTROL_TAKEN: AtomicBool = AtomicBool::new(false);

/// The parent's side of the rendezvous with one child.
#[derive(Debug)]
pub(crate) struct Rendezvous {
    /// The parent's socketpair end (`None` once the child closed its end).
    pair: Option<OwnedFd>,
    /// The abstract listener (`None`: it could not be bound).
    listener: Option<OwnedFd>,
    token: [u8; TOKEN_LEN],
    /// The child process (a copy of its pidfd, or its pid for `waitid`).
    death: PeerProcess,
    /// Accepted connections awaiting their hello: socket, peer uid, when.
    ungreeted: VecDeque<(OwnedFd, u32, Instant)>,
}

/// What one [`Rendezvous::step`] found.
#[derive(Debug)]
pub(crate) enum Step {
    /// The child's control socket (and its uid, when it came through the
    /// listener).
    Linked {
        sock: OwnedFd,
        peer_uid: Option<u32>,
    },
    /// No control socket will ever come: the child is gone (`None`) or
    /// sent garbage on its own socket (`Some`: why).
    Gone(Option<&'static str>),
    /// Nothing yet.
    Pending,
}

/// What the parent hands to the spawn.
#[derive(Debug)]
pub(crate) struct ChildEnd {
    /// The child's socket: to inherit, then close in the parent.
    pub(crate) sock: OwnedFd,
    /// The [`CONTROL_ENV`] value.
    pub(crate) env: String,
}

impl Rendezvous {
    /// Makes the socketpair, the listener and the token.
    pub(crate) fn create() -> io::Result<(Rendezvous, ChildEnd)> {
        let (ours, theirs) = socket::seqpacket_pair()?;
        let id = fd::stat(theirs.as_fd())?;
        let token = random::random_u128()?.to_ne_bytes();
        let name = format!(
            "remora-ctl.{}.{:016x}",
            std::process::id(),
            random::random_u128()? as u64
        );
        // No listener (say, no abstract namespace in a sandbox): the
        // inherited socket alone.
        let listener = socket::listen(name.as_bytes(), LISTEN_BACKLOG).ok();
        let env = format!(
            "{}:{}:{}:{}:{}:{}:{}",
            theirs.as_raw_fd(),
            id.dev,
            id.ino,
            if listener.is_some() {
                name.as_str()
            } else {
                ""
            },
            hex(&token),
            std::process::id(),
            // The effective uid: what SO_PEERCRED records for the listener.
            shm::current_uid(),
        );
        let rendezvous = Rendezvous {
            pair: Some(ours),
            listener,
            token,
            death: PeerProcess::Unknown,
            ungreeted: VecDeque::new(),
        };
        Ok((rendezvous, ChildEnd { sock: theirs, env }))
    }

    /// Lets `send` queue one message for the child on our socketpair end
    /// before it runs (a FIFO set's pipe ends, `SCM_RIGHTS`): the child
    /// reads it first thing in `connect()`, before its hello.
    pub(crate) fn queue_with(
        &self,
        send: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let pair = self.pair.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        send(pair.as_fd())
    }

    /// Once the child runs: how to see it exit (a pidfd, or, without
    /// `pidfd_open`, its pid: `waitid(WNOWAIT)`).
    pub(crate) fn watch_child(&mut self, child: PeerProcess) {
        self.death = child;
    }

    /// Looks, without blocking, for the child's hello.
    pub(crate) fn step(&mut self) -> Step {
        if let Some(pair) = &self.pair {
            match read_hello(pair.as_fd()) {
                Hello::Nothing => {}
                Hello::Closed => self.pair = None,
                Hello::Token(t, fresh) if t == self.token => {
                    let pair = self.pair.take().expect("checked above");
                    return Step::Linked {
                        sock: fresh.unwrap_or(pair),
                        peer_uid: None,
                    };
                }
                // The socketpair is the child's alone: what comes on it
                // is the child's word.
                Hello::Token(..) => return Step::Gone(Some("the child's hello had a wrong token")),
                Hello::Garbage => {
                    return Step::Gone(Some("the child sent garbage on its control socket"));
                }
            }
        }
        if let Some((sock, uid)) = self.accept_some().or_else(|| self.greet()) {
            return Step::Linked {
                sock,
                peer_uid: Some(uid),
            };
        }
        let dead = self.death.exited();
        if dead || (self.pair.is_none() && self.listener.is_none()) {
            return Step::Gone(None);
        }
        Step::Pending
    }

    /// Reads the hellos of the connections waiting for theirs: the
    /// child's socket and uid if one said hello with the token; strangers
    /// (a wrong token, garbage), quitters and the too slow are dropped.
    fn greet(&mut self) -> Option<(OwnedFd, u32)> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.ungreeted.len() {
            let (sock, uid, since) = &self.ungreeted[i];
            match read_hello(sock.as_fd()) {
                Hello::Token(t, fresh) if t == self.token => {
                    let uid = *uid;
                    let (sock, _, _) = self.ungreeted.remove(i).expect("in range");
                    return Some((fresh.unwrap_or(sock), uid));
                }
                Hello::Nothing if now.duration_since(*since) < HELLO_TIMEOUT => i += 1,
                _ => drop(self.ungreeted.remove(i)),
            }
        }
        None
    }

    /// Accepts what waits on the listener, keeping connections of our uid
    /// (or root) only, and at most [`MAX_UNGREETED`] of them awaiting
    /// their hello. Each one's first message is read as it is accepted,
    /// and the waiting ones' again before the oldest is dropped for a new
    /// one: a flood of silent connections behind the child's cannot push
    /// it out once it has said hello. Returns the child's socket and uid
    /// when found.
    fn accept_some(&mut self) -> Option<(OwnedFd, u32)> {
        let ours = shm::current_uid();
        for _ in 0..MAX_ACCEPTS_PER_STEP {
            let sock = socket::accept(self.listener.as_ref()?.as_fd()).ok()?;
            let Ok(cred) = socket::peer_cred(sock.as_fd()) else {
                continue;
            };
            if cred.uid != ours && cred.uid != 0 {
                continue;
            }
            match read_hello(sock.as_fd()) {
                Hello::Token(t, fresh) if t == self.token => {
                    return Some((fresh.unwrap_or(sock), cred.uid));
                }
                Hello::Nothing => {}
                // A stranger or a quitter.
                _ => continue,
            }
            if self.ungreeted.len() == MAX_UNGREETED {
                if let Some(found) = self.greet() {
                    return Some(found);
                }
                if self.ungreeted.len() == MAX_UNGREETED {
                    self.ungreeted.pop_front();
                }
            }
            self.ungreeted.push_back((sock, cred.uid, Instant::now()));
        }
        None
    }

    /// Sleeps until something may have arrived, or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<()> {
        // Without a pidfd the caller's slice (5 ms at most) bounds how late
        // the child's death is seen.
        let mut fds: Vec<libc::pollfd> = self
            .pair
            .iter()
            .chain(&self.listener)
            .chain(self.ungreeted.iter().map(|(s, _, _)| s))
            .map(AsRawFd::as_raw_fd)
            .chain(self.death.poll_fd())
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        socket::poll(&mut fds, Some(timeout)).map(drop)
    }
}

/// What a socket's first message was.
enum Hello {
    Nothing,
    Closed,
    /// A hello: its token, and the fresh control socket it carried (a
    /// child made by this crate always sends one; see [`child_control`]).
    Token([u8; TOKEN_LEN], Option<OwnedFd>),
    Garbage,
}

/// Reads one message without blocking. A hello may carry one descriptor,
/// a `SOCK_SEQPACKET` socket; anything else attached makes it garbage
/// (and is closed with it).
fn read_hello(sock: BorrowedFd<'_>) -> Hello {
    let mut buf = [0u8; MESSAGE_LEN + 1];
    let got = match socket::recv(sock, &mut buf, true) {
        Ok(got) => got,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Hello::Nothing,
        Err(_) => return Hello::Closed,
    };
    if got.len == 0 && !got.truncated && !got.control_truncated {
        return Hello::Closed;
    }
    if got.truncated || got.control_truncated {
        return Hello::Garbage;
    }
    let mut fds = got.fds;
    let fresh = match fds.len() {
        0 => None,
        1 => fds.pop(),
        _ => return Hello::Garbage,
    };
    if fresh
        .as_ref()
        .is_some_and(|f| !socket::is_seqpacket(f.as_fd()))
    {
        return Hello::Garbage;
    }
    match Message::decode(&buf[..got.len]) {
        Ok(Message::Hello { token }) => Hello::Token(token, fresh),
        _ => Hello::Garbage,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; TOKEN_LEN]> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * TOKEN_LEN {
        return None;
    }
    let mut out = [0u8; TOKEN_LEN];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// What [`CONTROL_ENV`] says.
struct Spec<'a> {
    fd: RawFd,
    dev: u64,
    ino: u64,
    name: &'a str,
    token: [u8; TOKEN_LEN],
    /// The parent's pid (in its own PID namespace) and effective uid: who
    /// must own the listener the child connects to.
    pid: i32,
    uid: u32,
}

fn parse(value: &str) -> Option<Spec<'_>> {
    let mut parts = value.split(':');
    let spec = Spec {
        fd: parts.next()?.parse().ok()?,
        dev: parts.next()?.parse().ok()?,
        ino: parts.next()?.parse().ok()?,
        name: parts.next()?,
        token: unhex(parts.next()?)?,
        pid: parts.next()?.parse().ok()?,
        uid: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(spec)
}

/// Whether the listener at the other end of a connection, credentials
/// `cred`, is the parent's. Abstract names carry no permissions: once the
/// parent's listener is gone (its `Child` dropped), any local user may
/// bind the freed name, so the owner is checked before anything is sent.
/// The pid is as the kernel shows it in our PID namespace: 0 when the
/// parent's is not visible from ours (a child in a nested namespace), and
/// then only the uid can be checked (a squatter of the parent's uid could
/// ptrace the parent anyway). A child in a user namespace where the
/// parent's uid is not mapped sees the overflow uid: refused.
fn is_parents(cred: &socket::PeerCred, spec: &Spec<'_>) -> bool {
    cred.uid == spec.uid && (cred.pid == spec.pid || cred.pid == 0)
}

/// Longest the child retries connecting to a listener whose backlog is
/// full (`EAGAIN`).
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Connects to the parent's listener `name`, retrying a full backlog for
/// [`CONNECT_RETRY`] (the parent drains it at its run-time calls).
fn connect_listener(name: &str) -> Option<OwnedFd> {
    let give_up = Instant::now() + CONNECT_RETRY;
    loop {
        match socket::connect(name.as_bytes()) {
            Ok(sock) => return Some(sock),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

/// The child's control socket: the inherited one if it is still open here
/// and is that very socket, else a connection to the parent's listener
/// (checked to be the parent's); `None` when there is neither (a second
/// `connect()` in this process, the parent gone, a listener of another
/// process). With the socket, the peer's credentials.
/// The flag: the socket is the inherited socketpair end (where the
/// parent may have queued a message before the spawn).
fn find_socket(spec: &Spec<'_>) -> Option<(OwnedFd, Option<socket::PeerCred>, bool)> {
    // AcqRel: exactly one caller in the process sees `false` and goes on
    // (taking the inherited number, or connecting to the listener); the
    // others see its take. A second `connect()` never reconnects.
    if CONTROL_TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    let inherited = Handed {
        fd: spec.fd,
        dev: spec.dev,
        ino: spec.ino,
        kind: libc::S_IFSOCK,
    };
    // The one record of inherited numbers taken in this process: a
    // `REMORA_CHANNEL` cannot name this socket too.
    if let Some(sock) = inherit::own_inherited(&inherited) {
        // Ours now, at once (before the first channels are attached,
        // whether or not that works): our own children must not
        // inherit it (the spawn cleared close-on-exec to hand it down).
        // SAFETY: fcntl on a descriptor we own; no pointers.
        unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        // A socketpair records its creator: the parent.
        let cred = socket::peer_cred(sock.as_fd()).ok();
        return Some((sock, cred, true));
    }
    if spec.name.is_empty() {
        return None;
    }
    let sock = connect_listener(spec.name)?;
    // A connection records the listener's owner; nothing is sent to a
    // stranger (dropping the socket tells it nothing but a hang-up).
    let cred = socket::peer_cred(sock.as_fd()).ok()?;
    is_parents(&cred, spec).then_some((sock, Some(cred), false))
}

/// A spawned child's control socket, taken by `connect()` before it
/// attaches its first channels (so the inherited number is close-on-exec
/// as early as can be), and the hello it owes the parent.
#[derive(Debug)]
pub(crate) struct ChildControl {
    found: Option<(OwnedFd, Option<socket::PeerCred>, bool)>,
    token: [u8; TOKEN_LEN],
}

impl ChildControl {
    /// The inherited socketpair end, if that is what was found (not a
    /// connection to the listener): where the parent queued a FIFO set's
    /// pipe ends before the spawn.
    pub(crate) fn inherited_socket(&self) -> Option<BorrowedFd<'_>> {
        match &self.found {
            Some((sock, _, true)) => Some(sock.as_fd()),
            _ => None,
        }
    }
}

/// Takes the control socket [`CONTROL_ENV`] names (once per process).
pub(crate) fn take_control() -> ChildControl {
    let value = std::env::var(CONTROL_ENV).ok();
    let spec = value.as_deref().and_then(parse);
    ChildControl {
        found: spec.as_ref().and_then(find_socket),
        token: spec.map_or([0; TOKEN_LEN], |s| s.token),
    }
}

/// A spawned child's run-time channels (from `connect()`, once its first
/// channels are attached): says hello on the socket `taken` found, and
/// watches the parent through it. Without a socket every run-time call is
/// `Disconnected`; the first channels work regardless.
pub(crate) fn child_control(taken: ChildControl, first: Vec<String>) -> RuntimeChannels {
    let ChildControl { found, token } = taken;
    // The found socket's peer credentials are the parent's: a socketpair
    // records its creator, a connection the listener's owner (checked
    // above).
    let peer = |sock: &OwnedFd, cred: &Option<socket::PeerCred>| match cred {
        Some(c) => {
            socket::peer_pidfd(sock.as_fd(), c).map_or(PeerProcess::Unknown, PeerProcess::Pidfd)
        }
        None => PeerProcess::Unknown,
    };
    // The hello hands the parent a fresh socket that only this process
    // holds (close-on-exec), and the control channel moves to it: every
    // process between parent and child (a wrapper such as `sh -c 'app;
    // cleanup'`, a helper started before `connect()`) inherited a copy of
    // the found socket, which would keep it from ever hanging up when we
    // die or drop it.
    let found = found.and_then(|(sock, cred, _)| {
        let watch = peer(&sock, &cred);
        let (mine, theirs) = socket::seqpacket_pair().ok()?;
        let hello = Message::Hello { token }.encode();
        socket::send(sock.as_fd(), &hello, &[theirs.as_fd()]).ok()?;
        Some((mine, cred, watch))
    });
    match found {
        Some((sock, cred, watch)) => RuntimeChannels::connected(
            Some(sock),
            cred.map(|c| c.uid),
            first,
            watch,
            ReceiveMode::InPlace,
        ),
        None => RuntimeChannels::connected(
            None,
            None,
            first,
            PeerProcess::Unknown,
            ReceiveMode::InPlace,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, pid: i32, uid: u32) -> Spec<'_> {
        Spec {
            fd: -1,
            dev: 0,
            ino: 0,
            name,
            token: [0; TOKEN_LEN],
            pid,
            uid,
        }
    }

    #[test]
    fn only_the_parents_listener_is_trusted() {
        let cred = |pid, uid| socket::PeerCred { pid, uid, gid: 0 };
        let parent = spec("n", 42, 1000);
        assert!(is_parents(&cred(42, 1000), &parent));
        // Not visible from our PID namespace: the uid alone.
        assert!(is_parents(&cred(0, 1000), &parent));
        // Another process of the parent's uid, or another uid.
        assert!(!is_parents(&cred(43, 1000), &parent));
        assert!(!is_parents(&cred(42, 65534), &parent));
        assert!(!is_parents(&cred(0, 65534), &parent));
    }

    /// The listener path is taken once per process too: a second
    /// `connect()` does not reconnect to the name (the only test in this
    /// binary that takes the control socket).
    #[test]
    fn the_listener_is_connected_to_once_per_process() {
        let name = format!("remora-ctl-test.{}", std::process::id());
        let listener = socket::listen(name.as_bytes(), 4).unwrap();
        let ours = spec(&name, std::process::id() as i32, shm::current_uid());
        let (sock, cred, _) = find_socket(&ours).expect("our own listener");
        assert_eq!(cred.map(|c| c.pid), Some(std::process::id() as i32));
        assert!(find_socket(&ours).is_none());
        drop((sock, listener));
    }

    #[test]
    fn the_variable_round_trips() {
        let token = [0x5a; TOKEN_LEN];
        let value = format!("7:8:9:remora-ctl.1.ab:{}:42:1000", hex(&token));
        let spec = parse(&value).unwrap();
        assert_eq!(
            (spec.fd, spec.dev, spec.ino, spec.name, spec.pid, spec.uid),
            (7, 8, 9, "remora-ctl.1.ab", 42, 1000)
        );
        assert_eq!(spec.token, token);
        for bad in [
            "",
            "7:8:9:n",
            "x:8:9:n:00",
            "7:8:9:n:zz",
            &format!("7:8:9:n:{}", hex(&token)),
            &format!("7:8:9:n:{}:x:1", hex(&token)),
            &format!("{value}:extra"),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
