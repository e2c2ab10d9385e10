//! A spawned child's control socket: how parent and child find it.
//!
//! At spawn the parent makes a `SOCK_SEQPACKET` socketpair and hands one
//! end down (the child inherits it, like the segment's memfd). Since a
//! socket cannot be reopened through `/proc` when a wrapper closed the
//! inherited descriptor (`sudo` closes all above 2), the parent also
//! listens on an abstract socket with a random name. [`CONTROL_ENV`]
//! tells the child both, plus a random 16-byte token:
//! `<fd>:<dev>:<ino>:<name>:<token hex>` (name empty when the listener
//! could not be bound).
//!
//! The child ([`child_control`], from `connect()`) takes the inherited
//! number if it is open and is that very socket (device and inode), once
//! per process; else it connects to the name. Either way it speaks first:
//! a `hello` carrying the token.
//!
//! The parent resolves lazily, at its first run-time channel call
//! ([`Rendezvous::step`]): a hello on its socketpair end, or an accepted
//! connection from our uid (or root) whose first message is a hello with
//! the token. The listener is non-blocking and bounded (a few connections
//! awaiting their hello, each for [`HELLO_TIMEOUT`] at most), so a hostile
//! same-uid process connecting to the name cannot stall the parent; a
//! connection with a wrong token is dropped and the wait goes on. Once one
//! socket is chosen the listener and the other socket are closed. The
//! token is no secret from our own uid (it can read our environment, and
//! could ptrace us anyway): it keeps a process that merely finds the name
//! from posing as the child.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::channels::{PeerProcess, RuntimeChannels};
use super::wire::{MESSAGE_LEN, Message, TOKEN_LEN};
use crate::channel::ReceiveMode;
use crate::sys::{fd, process, random, shm, socket};

/// The environment variable that tells a spawned child where its control
/// socket is: `<fd>:<dev>:<ino>:<name>:<token hex>`.
pub(crate) const CONTROL_ENV: &str = "REMORA_CONTROL";

/// Longest a connection to the listener may take to send its hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections to the listener awaiting their hello, at most (the oldest
/// is dropped for a new one).
const MAX_UNGREETED: usize = 8;

/// The listener's backlog: connections the kernel queues until the
/// parent's first run-time call accepts them. A process of our uid that
/// fills it before the child connects makes the child's fallback fail
/// (its run-time calls are then `Disconnected`); such a process could
/// ptrace either of us anyway.
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
    /// Readable once the child exited (a copy of its pidfd).
    death: Option<OwnedFd>,
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
            "{}:{}:{}:{}:{}",
            theirs.as_raw_fd(),
            id.dev,
            id.ino,
            if listener.is_some() {
                name.as_str()
            } else {
                ""
            },
            hex(&token)
        );
        let rendezvous = Rendezvous {
            pair: Some(ours),
            listener,
            token,
            death: None,
            ungreeted: VecDeque::new(),
        };
        Ok((rendezvous, ChildEnd { sock: theirs, env }))
    }

    /// Once the child runs: its pidfd, readable when it exits.
    pub(crate) fn watch_child(&mut self, pidfd: Option<OwnedFd>) {
        self.death = pidfd;
    }

    /// Looks, without blocking, for the child's hello.
    pub(crate) fn step(&mut self) -> Step {
        if let Some(pair) = &self.pair {
            match read_hello(pair.as_fd()) {
                Hello::Nothing => {}
                Hello::Closed => self.pair = None,
                Hello::Token(t) if t == self.token => {
                    let sock = self.pair.take().expect("checked above");
                    return Step::Linked {
                        sock,
                        peer_uid: None,
                    };
                }
                // The socketpair is the child's alone: what comes on it
                // is the child's word.
                Hello::Token(_) => return Step::Gone(Some("the child's hello had a wrong token")),
                Hello::Garbage => {
                    return Step::Gone(Some("the child sent garbage on its control socket"));
                }
            }
        }
        self.accept_some();
        let now = Instant::now();
        let mut i = 0;
        while i < self.ungreeted.len() {
            let (sock, uid, since) = &self.ungreeted[i];
            match read_hello(sock.as_fd()) {
                Hello::Token(t) if t == self.token => {
                    let uid = *uid;
                    let (sock, _, _) = self.ungreeted.remove(i).expect("in range");
                    return Step::Linked {
                        sock,
                        peer_uid: Some(uid),
                    };
                }
                Hello::Nothing if now.duration_since(*since) < HELLO_TIMEOUT => i += 1,
                // A stranger (wrong token, garbage), a quitter, or too slow.
                _ => drop(self.ungreeted.remove(i)),
            }
        }
        let dead = self.death.as_ref().is_some_and(process::pidfd_exited);
        if dead || (self.pair.is_none() && self.listener.is_none()) {
            return Step::Gone(None);
        }
        Step::Pending
    }

    /// Accepts what waits on the listener, keeping connections of our uid
    /// (or root) only, and at most [`MAX_UNGREETED`] of them.
    fn accept_some(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        let ours = shm::current_uid();
        for _ in 0..MAX_ACCEPTS_PER_STEP {
            let Ok(sock) = socket::accept(listener.as_fd()) else {
                return;
            };
            let Ok(cred) = socket::peer_cred(sock.as_fd()) else {
                continue;
            };
            if cred.uid != ours && cred.uid != 0 {
                continue;
            }
            if self.ungreeted.len() == MAX_UNGREETED {
                self.ungreeted.pop_front();
            }
            self.ungreeted.push_back((sock, cred.uid, Instant::now()));
        }
    }

    /// Sleeps until something may have arrived, or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .pair
            .iter()
            .chain(&self.listener)
            .chain(self.ungreeted.iter().map(|(s, _, _)| s))
            .chain(&self.death)
            .map(|f| libc::pollfd {
                fd: f.as_raw_fd(),
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
    Token([u8; TOKEN_LEN]),
    Garbage,
}

/// Reads one message without blocking (descriptors refused: the kernel
/// closes any attached, and a message with them is garbage).
fn read_hello(sock: BorrowedFd<'_>) -> Hello {
    let mut buf = [0u8; MESSAGE_LEN + 1];
    let got = match socket::recv(sock, &mut buf, false) {
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
    match Message::decode(&buf[..got.len]) {
        Ok(Message::Hello { token }) => Hello::Token(token),
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
}

fn parse(value: &str) -> Option<Spec<'_>> {
    let mut parts = value.split(':');
    let spec = Spec {
        fd: parts.next()?.parse().ok()?,
        dev: parts.next()?.parse().ok()?,
        ino: parts.next()?.parse().ok()?,
        name: parts.next()?,
        token: unhex(parts.next()?)?,
    };
    parts.next().is_none().then_some(spec)
}

/// The child's control socket: the inherited one if it is still open here
/// and is that very socket, else a connection to the parent's listener;
/// `None` when there is neither (no [`CONTROL_ENV`], a malformed one, a
/// second `connect()` in this process, the parent gone).
fn find_socket(spec: &Spec<'_>) -> Option<OwnedFd> {
    if spec.fd > 2 {
        // SAFETY: only borrowed for the `fstat` below, while the number is
        // open (fstat fails harmlessly with EBADF otherwise).
        let borrowed = unsafe { BorrowedFd::borrow_raw(spec.fd) };
        let ours = fd::stat(borrowed).is_ok_and(|s| {
            s.dev == spec.dev && s.ino == spec.ino && s.mode & libc::S_IFMT == libc::S_IFSOCK
        });
        if ours {
            // AcqRel: exactly one caller in the process sees `false` and
            // owns the number; the others see its take.
            if CONTROL_TAKEN.swap(true, Ordering::AcqRel) {
                return None;
            }
            // SAFETY: the descriptor is open and is the parent's socket
            // (device and inode checked), inherited for us alone: no other
            // owner in this process knows of it, and the swap above lets
            // only one caller ever take it.
            let sock = unsafe { OwnedFd::from_raw_fd(spec.fd) };
            // Ours now: our own children must not inherit it (the spawn
            // cleared close-on-exec to hand it down).
            // SAFETY: fcntl on a descriptor we own; no pointers.
            unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            return Some(sock);
        }
    }
    if spec.name.is_empty() {
        return None;
    }
    socket::connect(spec.name.as_bytes()).ok()
}

/// A spawned child's run-time channels (from `connect()`): finds the
/// control socket, says hello, and watches the parent through it. Without
/// a socket every run-time call is `Disconnected`; the first channels work
/// regardless.
pub(crate) fn child_control(first: Vec<String>) -> RuntimeChannels {
    let value = std::env::var(CONTROL_ENV).ok();
    let spec = value.as_deref().and_then(parse);
    let sock = spec.as_ref().and_then(|spec| {
        let sock = find_socket(spec)?;
        let hello = Message::Hello { token: spec.token }.encode();
        socket::send(sock.as_fd(), &hello, &[]).ok()?;
        Some(sock)
    });
    // The socket's peer credentials are the parent's: a socketpair records
    // its creator, a connection the listener's owner.
    let cred = sock
        .as_ref()
        .and_then(|s| socket::peer_cred(s.as_fd()).ok());
    let peer = match (&sock, &cred) {
        (Some(s), Some(c)) => {
            socket::peer_pidfd(s.as_fd(), c).map_or(PeerProcess::Unknown, PeerProcess::Pidfd)
        }
        _ => PeerProcess::Unknown,
    };
    RuntimeChannels::connected(sock, cred.map(|c| c.uid), first, peer, ReceiveMode::InPlace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_round_trips() {
        let token = [0x5a; TOKEN_LEN];
        let value = format!("7:8:9:remora-ctl.1.ab:{}", hex(&token));
        let spec = parse(&value).unwrap();
        assert_eq!(
            (spec.fd, spec.dev, spec.ino, spec.name),
            (7, 8, 9, "remora-ctl.1.ab")
        );
        assert_eq!(spec.token, token);
        for bad in [
            "",
            "7:8:9:n",
            "x:8:9:n:00",
            "7:8:9:n:zz",
            &format!("{value}:extra"),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
