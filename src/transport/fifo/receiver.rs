//! The FIFO transport's receiving end: read the byte stream into a private
//! 16-aligned buffer and hand out frames in place.
//!
//! The stream is the peer's to write: every header (kind, and length
//! against the largest message) is checked *before* waiting for the
//! payload; the buffer never grows. A bad header, a missing or second
//! HELLO, or a stream that ends inside a frame poisons the receiver
//! ([`RecvError::Malformed`], a disagreeing HELLO [`RecvError::TypeMismatch`])
//! and closes its read end. The peer's HELLO is checked when the channel is
//! taken if it is already there (then a `ChannelError::TypeMismatch`, as
//! with shared memory), else at the first receive.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::link::{FifoEnd, FifoLink};
use super::wire::{self, HEADER, HELLO, HELLO_FRAME, HELLO_LEN, MSG};
use crate::aligned::AlignedBuf;
use crate::codec::ANY_FINGERPRINT;
use crate::error::{RecvError, StreamFault};
use crate::side::Direction;
use crate::sys::pipe;
use crate::transport::{Incoming, ReleaseToken};
use crate::wait::{Deadline, WaitStrategy, Waited};

/// What this end expects of the peer's HELLO.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expect {
    /// Our fingerprints for the type we receive and the one we send back.
    pub(super) in_fp: u64,
    pub(super) out_fp: u64,
    /// The direction we receive on.
    pub(super) direction: Direction,
}

/// What a wait set sees of a FIFO receiver, published by the receiver
/// whenever it reads, releases or fails. Single writer; Relaxed
/// throughout: the set only decides whether to report, the receiver's own
/// `try_recv` decides the rest.
#[derive(Debug, Default)]
pub(crate) struct FifoState {
    /// Bytes read from the pipe and not yet released.
    buffered: AtomicUsize,
    /// Changes whenever the receiver read or released something.
    pub(crate) moves: AtomicU64,
    /// Nothing more will come: poisoned, dropped, or end of stream with
    /// nothing buffered.
    pub(crate) finished: AtomicBool,
    /// The peer's HELLO is not consumed yet (it is no message).
    hello: AtomicBool,
    /// The wait sets' duplicate of the read end, made by the first
    /// `watch`, closed with the receiver (when it drops or fails for good):
    /// a set never keeps the pipe open behind its back, so the peer's sends
    /// see `Disconnected` then instead of filling the pipe.
    fd: Mutex<Option<OwnedFd>>,
}

impl FifoState {
    fn fd(&self) -> std::sync::MutexGuard<'_, Option<OwnedFd>> {
        self.fd.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A wait set's probe of a FIFO receiver: its own duplicate of the child's
/// pidfd (parent side), the receiver's published state, the peer watch.
#[cfg_attr(loom, allow(dead_code))]
#[derive(Debug)]
pub(crate) struct FifoWatch {
    pub(crate) peer_fd: Option<OwnedFd>,
    pub(crate) state: Arc<FifoState>,
    link: Arc<FifoLink>,
}

#[cfg_attr(loom, allow(dead_code))]
impl FifoWatch {
    /// Message bytes waiting, in the pipe or the receiver's buffer;
    /// `None` once the receiver closed.
    pub(crate) fn pending(&self) -> Option<usize> {
        let queued = pipe::queued(self.state.fd().as_ref()?.as_fd());
        // Relaxed: see `FifoState`.
        let buffered = self.state.buffered.load(Ordering::Relaxed);
        Some(unread(
            queued + buffered,
            self.state.hello.load(Ordering::Relaxed),
        ))
    }

    /// Whether no writer is left (`POLLHUP`; the parent's kept copy counts
    /// as one until settled, settled here too), or the receiver closed.
    pub(crate) fn hung_up(&self) -> bool {
        self.link.settle();
        (self.state.fd().as_ref())
            .is_none_or(|fd| pipe::revents(fd.as_fd(), libc::POLLIN) & libc::POLLHUP != 0)
    }

    /// The read end's number, to poll. The receiver may close it meanwhile
    /// (a poll already asleep keeps watching the old pipe; a number reused
    /// in between only ends that poll early): the caller re-checks with
    /// [`FifoWatch::pending`] after the poll.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.state.fd().as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Whether the peer is known dead, or found dead by the rate-limited
    /// slow check when `thorough`.
    pub(crate) fn peer_gone(&self, thorough: bool) -> bool {
        self.link.peer_known_dead() || (thorough && self.link.poll_peer_gone())
    }
}

/// Message bytes among `bytes` read or readable, less the peer's HELLO if
/// still unread.
fn unread(bytes: usize, hello: bool) -> usize {
    bytes.saturating_sub(if hello { HELLO_FRAME } else { 0 })
}

/// The receiving end of one FIFO.
#[derive(Debug)]
pub(crate) struct FifoReceiver {
    pipe: FifoEnd,
    buf: AlignedBuf,
    /// Unconsumed bytes are `buf[start..end]`; `start` is 16-aligned.
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]`, for fault reports.
    pos: u64,
    max: usize,
    /// `Some` until the peer's HELLO has been checked and consumed.
    expect: Option<Expect>,
    /// The writer side closed: drain what is buffered, then disconnect.
    eof: bool,
    /// The last read emptied the pipe: a blocking receive waits for
    /// readiness before its next read (saves a failing `read` per message
    /// in request/response traffic).
    drained: bool,
    /// Poisoned: returned by every later call.
    fault: Option<RecvError>,
    /// Published for wait sets.
    state: Arc<FifoState>,
}

impl FifoReceiver {
    pub(super) fn new(pipe: FifoEnd, capacity: usize) -> FifoReceiver {
        let max = capacity / 2 - HEADER;
        // Two largest frames (a split frame always fits after compaction),
        // capped so large channels batch at most 64 KiB beyond one.
        let frame = wire::wire_size(max);
        FifoReceiver {
            pipe,
            buf: AlignedBuf::new(frame + frame.min(64 * 1024)),
            start: 0,
            end: 0,
            pos: 0,
            max,
            expect: None,
            eof: false,
            drained: false,
            fault: None,
            state: Arc::default(),
        }
    }

    /// What a wait set watches of this end; `None` once closed.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn watch(&self) -> std::io::Result<Option<FifoWatch>> {
        let Some(fd) = self.pipe.fd() else {
            return Ok(None);
        };
        self.publish();
        let mut dup = self.state.fd();
        if dup.is_none() {
            *dup = Some(fd.try_clone_to_owned()?);
        }
        drop(dup);
        Ok(Some(FifoWatch {
            peer_fd: match self.pipe.link.peer_fd() {
                Some(p) => Some(p.try_clone_to_owned()?),
                None => None,
            },
            state: Arc::clone(&self.state),
            link: Arc::clone(&self.pipe.link),
        }))
    }

    /// Publishes the buffer's state for wait sets (see [`FifoState`]).
    #[inline]
    fn publish(&self) {
        let state = &self.state;
        // Relaxed: see `FifoState`.
        state
            .buffered
            .store(self.end - self.start, Ordering::Relaxed);
        let moves = state.moves.load(Ordering::Relaxed);
        state.moves.store(moves.wrapping_add(1), Ordering::Relaxed);
        let finished = self.fault.is_some() || (self.eof && self.end == self.start);
        state.finished.store(finished, Ordering::Relaxed);
        state.hello.store(self.expect.is_some(), Ordering::Relaxed);
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max
    }

    pub(crate) fn capacity(&self) -> usize {
        2 * (self.max + HEADER)
    }

    /// Bytes in the pipe and in our buffer, less the peer's unread HELLO.
    pub(crate) fn in_flight(&self) -> usize {
        unread(
            self.pipe.queued() + self.end - self.start,
            self.expect.is_some(),
        )
    }

    pub(crate) fn is_full(&self) -> bool {
        self.pipe.is_full()
    }

    /// Whether nothing more will arrive (bytes sent before may still wait):
    /// end of stream, poisoned, or no writer left.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.fault.is_some() || self.eof || self.pipe.hung_up(libc::POLLIN, libc::POLLHUP)
    }

    /// Arms the handshake check and, if the peer's HELLO is already there,
    /// checks it (without consuming it): `Err` names the direction that
    /// disagrees. Reads at most the HELLO: taking a channel must not make
    /// room in the pipe as if messages had been received.
    pub(super) fn expect_hello(&mut self, expect: Expect) -> Result<(), Direction> {
        self.expect = Some(expect);
        let buffered = self.end - self.start;
        if buffered < HELLO_FRAME {
            self.make_room(HELLO_FRAME);
            self.fill(HELLO_FRAME - buffered);
        }
        match self.header() {
            Some((len, HELLO))
                if self.end - self.start >= HELLO_FRAME && len as usize == HELLO_LEN =>
            {
                self.check_hello(expect)
            }
            // Anything else is reported by the first receive.
            _ => Ok(()),
        }
    }

    /// Compares the HELLO at `start` with what we expect.
    fn check_hello(&self, expect: Expect) -> Result<(), Direction> {
        let payload = self
            .buf
            .bytes(self.start + HEADER..self.start + HELLO_FRAME);
        // A one-way take does not use (nor check) one direction.
        let differ = |a: u64, b: u64| a != b && a != ANY_FINGERPRINT && b != ANY_FINGERPRINT;
        if differ(wire::u64_at(payload, 0), expect.in_fp) {
            return Err(expect.direction);
        }
        if differ(wire::u64_at(payload, 8), expect.out_fp) {
            return Err(expect.direction.reverse());
        }
        Ok(())
    }

    /// The next frame, waiting per `deadline`. Delivers every complete
    /// frame the peer wrote before reporting `Disconnected`.
    #[inline]
    pub(crate) fn next_frame(
        &mut self,
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<Incoming, RecvError> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        self.pipe.link.settle();
        let mut waited = false;
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            if self.eof {
                return Err(self.end_of_stream());
            }
            if let (true, Deadline::At(at)) = (self.drained && !waited, deadline)
                && strategy != WaitStrategy::Spin
                && !self.pipe.link.peer_known_dead()
            {
                // Whatever the outcome, the read below comes next.
                (self.drained, waited) = (false, true);
                self.pipe.wait(libc::POLLIN, strategy, at);
            }
            if self.fill(usize::MAX) || self.eof {
                continue;
            }
            // Drained. A dead peer wrote all it ever will before it died.
            if self.pipe.link.peer_known_dead() {
                return Err(self.end_of_stream());
            }
            let Deadline::At(at) = deadline else {
                if self.pipe.link.poll_peer_gone() {
                    continue; // drains, then reports Disconnected
                }
                self.publish(); // a wait set watches the pipe again
                return Err(RecvError::Empty);
            };
            waited = true;
            let timed_out = self.pipe.wait(libc::POLLIN, strategy, at) == Waited::TimedOut;
            if timed_out && !self.pipe.link.poll_peer_gone() {
                self.publish();
                return Err(RecvError::Timeout);
            }
        }
    }

    /// Hands a frame's buffer space back.
    #[inline]
    pub(crate) fn release(&mut self, frame: Incoming) {
        if let ReleaseToken::Buffer { end } = frame.token {
            debug_assert!(end > self.start && end <= self.end);
            self.pos += (end - self.start) as u64;
            self.start = end;
            self.publish();
        } else {
            debug_assert!(false, "a ring frame released to a FIFO");
        }
    }

    /// The next complete message frame in the buffer, checking (and
    /// consuming) the handshake first. `Ok(None)`: more bytes are needed,
    /// and there is room for them.
    #[inline]
    fn parse(&mut self) -> Result<Option<Incoming>, RecvError> {
        loop {
            let Some((len, kind)) = self.header() else {
                self.make_room(HEADER);
                return Ok(None);
            };
            let offset = self.pos;
            let max = if self.expect.is_some() {
                HELLO_LEN
            } else {
                self.max
            };
            let fault = match (kind, self.expect) {
                (MSG, None) if len as usize <= max => None,
                (HELLO, Some(_)) if len as usize == max => None,
                (MSG, None) | (HELLO, Some(_)) => Some(StreamFault::BadLength { len, max, offset }),
                (MSG, Some(_)) => Some(StreamFault::NoHandshake),
                (kind, _) => Some(StreamFault::BadKind { kind, offset }),
            };
            if let Some(fault) = fault {
                return Err(self.poison(RecvError::Malformed(fault)));
            }
            let total = wire::wire_size(len as usize);
            if self.end - self.start < total {
                self.make_room(total);
                return Ok(None);
            }
            let Some(expect) = self.expect else {
                let payload = self.buf.at(self.start + HEADER).cast_const();
                return Ok(Some(Incoming::in_buffer(
                    payload,
                    len as usize,
                    self.start + total,
                )));
            };
            if let Err(direction) = self.check_hello(expect) {
                let direction = direction.describe();
                return Err(self.poison(RecvError::TypeMismatch { direction }));
            }
            self.expect = None;
            self.pos += total as u64;
            self.start += total;
        }
    }

    /// `(len, kind)` of the header at `start`, if one is buffered.
    #[inline]
    fn header(&self) -> Option<(u32, u32)> {
        if self.end - self.start < HEADER {
            return None;
        }
        let h = self.buf.bytes(self.start..self.start + HEADER);
        Some((wire::u32_at(h, 0), wire::u32_at(h, 4)))
    }

    /// Makes sure `need` bytes (at most one largest frame) fit from
    /// `start`, moving the unconsumed bytes to the front if not.
    #[inline]
    fn make_room(&mut self, need: usize) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start + need > self.buf.len() {
            let (start, end) = (self.start, self.end);
            self.buf.bytes_mut(0..end).copy_within(start..end, 0);
            (self.start, self.end) = (0, end - start);
        }
    }

    /// One non-blocking read of at most `limit` bytes into the free tail of
    /// the buffer: whether it brought data (end of stream sets `eof`).
    #[inline]
    fn fill(&mut self, limit: usize) -> bool {
        let to = self.buf.len().min(self.end.saturating_add(limit));
        debug_assert!(to > self.end, "callers make room first");
        while let Some(fd) = self.pipe.fd() {
            match pipe::read(fd, self.buf.bytes_mut(self.end..to)) {
                Ok(0) => break,
                Ok(n) => {
                    self.end += n;
                    self.drained = self.end < to;
                    self.publish();
                    return true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return false,
                // Nothing else is expected of a FIFO we hold open.
                Err(_) => break,
            }
        }
        self.eof = true;
        self.publish();
        false
    }

    /// The stream ended: between frames `Disconnected`, inside one a
    /// truncated frame.
    fn end_of_stream(&mut self) -> RecvError {
        let received = self.end - self.start;
        if received == 0 {
            return RecvError::Disconnected;
        }
        let expected = self
            .header()
            .map_or(HEADER, |(len, _)| wire::wire_size(len as usize));
        let offset = self.pos;
        self.poison(RecvError::Malformed(StreamFault::Truncated {
            received,
            expected,
            offset,
        }))
    }

    /// Fails for good: every later call returns `error`, and the read end
    /// closes now so a peer's writes get `Disconnected`.
    fn poison(&mut self, error: RecvError) -> RecvError {
        self.fault = Some(error);
        self.publish();
        self.close_watch();
        self.pipe.close();
        error
    }

    /// Closes the wait sets' duplicate of the read end (see `FifoState`).
    fn close_watch(&self) {
        drop(self.state.fd().take());
    }
}

impl Drop for FifoReceiver {
    fn drop(&mut self) {
        // Relaxed: see `FifoState`.
        self.state.finished.store(true, Ordering::Relaxed);
        self.close_watch();
    }
}
