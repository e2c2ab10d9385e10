//! The control socket of a live connection: channels opened at run time.
//!
//! The handshake's socket stays open for the connection's life. Either side
//! opens a channel by building a one-channel segment in a sealed memfd and
//! sending `open` with it; the other side takes it with `accept_channel`
//! (checked exactly like the first segment, then claimed) and answers
//! `open-accepted`, or `open-refused` (limit, duplicate name, failed
//! checks). Any thread of either side may wait on the socket: whoever reads
//! a message files it in the shared state (incoming requests, answers to
//! our requests), and every waiter polls with a short slice, so a message
//! read by another thread is seen within the slice.
//!
//! A peer that sends garbage, too many descriptors, or hangs up closes the
//! control channel for good: later calls return `Disconnected`. So does a
//! peer process that exited (its pidfd, polled beside the socket), once
//! what it queued has been read: another process may hold a copy of its
//! end, so the socket alone need not hang up. Requests
//! waiting for `accept_channel` are bounded ([`MAX_WAITING`]): more are
//! refused on arrival (their descriptors closed at once).
//!
//! Answers are kept only for requests in flight (sent, and their opener
//! still waiting): an answer to an id we never sent is a protocol
//! violation (the channel closes), and a late answer to one whose opener
//! gave up is dropped. So what the peer sends can never make the state
//! grow beyond the requests this side made. One `pump` reads at most
//! [`MAX_PER_PUMP`] messages, so a flooding peer cannot hold the state's
//! lock, or a waiter, past its deadline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::ServiceError;
use super::peer_process::PeerProcess;
use super::wire::{ChannelRefusal, MESSAGE_LEN, Message};
use crate::sys::socket;

/// Requests from the peer not yet accepted, at most.
pub(crate) const MAX_WAITING: usize = 16;

/// Messages read by one `pump` at most (then the waiter checks its
/// deadline; the rest stay queued in the socket).
const MAX_PER_PUMP: usize = 64;

/// Longest sleep before a waiter re-reads the shared state.
pub(crate) const SLICE: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub(crate) struct Control {
    sock: OwnedFd,
    /// The peer process: polled beside the socket, since another process
    /// holding a copy of the peer's end keeps the socket from hanging up.
    peer: PeerProcess,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    next_id: u32,
    /// Whether every id has been sent once (`next_id` wrapped).
    wrapped: bool,
    /// Our requests sent and still awaited by their opener.
    in_flight: HashSet<u32>,
    /// The peer's `open` requests: id, memfd, announced size.
    pub(crate) waiting: VecDeque<(u32, OwnedFd, u64)>,
    /// Answers to our requests in flight (never more than `in_flight`).
    answers: HashMap<u32, Result<(), ChannelRefusal>>,
    /// The peer hung up or broke the protocol.
    closed: bool,
}

impl State {
    /// Whether `id` was ever sent by this side.
    fn issued(&self, id: u32) -> bool {
        self.wrapped || id < self.next_id
    }

    /// Files the peer's answer to our request `id`: kept for a request in
    /// flight, dropped for one whose opener gave up (or already answered),
    /// and a protocol violation (returns `false`) for one never sent.
    fn file_answer(&mut self, id: u32, answer: Result<(), ChannelRefusal>) -> bool {
        if self.in_flight.remove(&id) {
            self.answers.insert(id, answer);
            true
        } else {
            self.issued(id)
        }
    }

    /// Answers held (test hook: must stay bounded by requests in flight).
    #[cfg(test)]
    pub(crate) fn answers_len(&self) -> usize {
        self.answers.len()
    }

    /// Whether the control channel is closed (test hook).
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Control {
    /// Over `sock`, with no watch on the peer process (its hang-up ends
    /// the control channel).
    #[cfg(test)]
    pub(crate) fn new(sock: OwnedFd) -> Control {
        Control::watching(sock, PeerProcess::Unknown)
    }

    /// Over `sock`, whose peer is `peer`: once it has exited, what it
    /// queued is still read, then the control channel closes.
    pub(crate) fn watching(sock: OwnedFd, peer: PeerProcess) -> Control {
        Control {
            sock,
            peer,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `open` for a new segment; returns the request id.
    pub(crate) fn send_open(&self, memfd: &OwnedFd, size: u64) -> Result<u32, ServiceError> {
        let mut state = self.lock();
        if state.closed {
            return Err(ServiceError::Disconnected);
        }
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        state.wrapped |= state.next_id == 0;
        socket::send(
            self.sock.as_fd(),
            &Message::Open { id, size }.encode(),
            &[memfd.as_fd()],
        )
        .map_err(ServiceError::io("sendmsg"))?;
        state.in_flight.insert(id);
        Ok(id)
    }

    /// Answers the peer's request `id`.
    pub(crate) fn answer(&self, id: u32, answer: Result<(), ChannelRefusal>) {
        let msg = match answer {
            Ok(()) => Message::OpenAccepted { id },
            Err(why) => Message::OpenRefused { id, why },
        };
        // Best effort: a peer that left needs no answer.
        let _ = socket::send(self.sock.as_fd(), &msg.encode(), &[]);
    }

    /// Waits for the answer to our request `id`. However it returns, `id`
    /// is no longer in flight: an answer arriving later is dropped.
    pub(crate) fn wait_answer(
        &self,
        id: u32,
        deadline: Option<Instant>,
    ) -> Result<Result<(), ChannelRefusal>, ServiceError> {
        let answer = self.wait(deadline, |state| state.answers.remove(&id));
        let mut state = self.lock();
        state.in_flight.remove(&id);
        state.answers.remove(&id);
        answer
    }

    /// Waits until `ready` finds what it wants in the state (after every
    /// message read), the peer goes, or `deadline` passes.
    pub(crate) fn wait<T>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, ServiceError> {
        loop {
            // Asked before the pump: whatever the peer sent before it died
            // is queued by now, so a drained socket holds all it said.
            let peer_gone = self.peer.exited();
            {
                let mut state = self.lock();
                let drained = self.pump(&mut state);
                if let Some(found) = ready(&mut state) {
                    return Ok(found);
                }
                if peer_gone && drained {
                    state.closed = true;
                }
                if state.closed {
                    return Err(ServiceError::Disconnected);
                }
            }
            let now = Instant::now();
            let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(now).min(SLICE));
            if deadline.is_some_and(|d| now >= d) {
                return Err(ServiceError::Timeout);
            }
            let pollfd = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // Without a pidfd (`PeerProcess::Child`), the slice bounds how
            // late the death is seen.
            let mut pfd = [
                pollfd(self.sock.as_raw_fd()),
                pollfd(self.peer.poll_fd().unwrap_or(-1)),
            ];
            socket::poll(&mut pfd, Some(left)).map_err(ServiceError::io("poll"))?;
        }
    }

    /// Reads the messages waiting (at most [`MAX_PER_PUMP`]), filing each
    /// in `state`. Returns whether the socket was drained (nothing left
    /// to read, or closed).
    fn pump(&self, state: &mut State) -> bool {
        for _ in 0..MAX_PER_PUMP {
            if state.closed {
                return true;
            }
            let mut buf = [0u8; MESSAGE_LEN + 1];
            let got = match socket::recv(self.sock.as_fd(), &mut buf, true) {
                Ok(got) => got,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return true,
                Err(_) => {
                    state.closed = true;
                    return true;
                }
            };
            let end_of_stream = got.len == 0 && !got.truncated && got.fds.is_empty();
            if end_of_stream || got.truncated || got.control_truncated {
                state.closed = true;
                return true;
            }
            let mut fds = got.fds;
            match Message::decode(&buf[..got.len]) {
                Ok(Message::Open { id, size }) if fds.len() == 1 => {
                    let fd = fds.pop().expect("one descriptor");
                    if state.waiting.len() < MAX_WAITING {
                        state.waiting.push_back((id, fd, size));
                    } else {
                        drop(fd);
                        self.answer(id, Err(ChannelRefusal::Limit));
                    }
                }
                Ok(Message::OpenAccepted { id }) if fds.is_empty() => {
                    state.closed = !state.file_answer(id, Ok(()));
                }
                Ok(Message::OpenRefused { id, why }) if fds.is_empty() => {
                    state.closed = !state.file_answer(id, Err(why));
                }
                // Garbage, a handshake message, descriptors where none
                // belong, or an answer to a request never sent (above):
                // the control channel is done (the descriptors
                // are closed with `fds`).
                _ => state.closed = true,
            }
        }
        state.closed
    }
}
