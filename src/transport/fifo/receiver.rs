//! The FIFO transport's receiving end: read the byte stream into a private
//! 16-aligned buffer and hand out frames in place.
//!
//! # Trust
//!
//! The stream is the peer's to write, so every header is checked before
//! anything else happens: its kind, and its length against this channel's
//! largest message, *before* waiting for the payload. The buffer is
//! allocated once and never grows; a bad header, a second handshake, a
//! missing one, or a stream that ends inside a frame poisons the receiver
//! with [`RecvError::Malformed`]: every later call returns the same error.
//! Nothing the peer writes can make us panic or allocate.
//!
//! # The handshake
//!
//! The first frame must be the peer's HELLO (see `wire`): the type it sends
//! here must be the type we receive, and the type it expects back must be
//! the type we send. The check runs when the channel is taken, if the HELLO
//! is already readable (the peer took the channel first: the mismatch is a
//! [`ChannelError::TypeMismatch`](crate::ChannelError::TypeMismatch) then,
//! as with shared memory), and otherwise at the first receive
//! ([`RecvError::TypeMismatch`]).

use super::dir::Direction;
use super::link::Pipe;
use super::wait::{Outcome, Waiter};
use super::wire::{self, AlignedBuf, HEADER, HELLO, HELLO_FRAME, HELLO_LEN, MSG};
use crate::codec::ANY_FINGERPRINT;
use crate::error::{RecvError, StreamFault};
use crate::transport::{Incoming, ReleaseToken};
use crate::wait::Deadline;
use crate::wait::WaitStrategy;

/// How a receive buffer is sized: two largest frames, so a frame split
/// across reads always fits after compaction while others queue behind it,
/// capped so large channels batch at most 64 KiB beyond one frame.
fn buffer_size(max: usize) -> usize {
    let frame = wire::wire_size(max);
    frame + frame.min(64 * 1024)
}

/// What this end expects of the peer's HELLO.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expect {
    /// Our fingerprint for the type we receive.
    pub(super) in_fp: u64,
    /// Our fingerprint for the type we send back.
    pub(super) out_fp: u64,
    /// The direction we receive on.
    pub(super) direction: Direction,
}

/// Result of one non-blocking read.
enum Fill {
    Data,
    Eof,
    WouldBlock,
}

/// The receiving end of one FIFO.
#[derive(Debug)]
pub(crate) struct FifoReceiver {
    pipe: Pipe,
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
    /// The last read emptied the pipe: a blocking receive then waits for
    /// readiness first instead of trying a read that would fail.
    drained: bool,
    /// Poisoned: returned by every later call.
    fault: Option<RecvError>,
}

impl FifoReceiver {
    /// A receiver for a channel of `capacity` bytes per direction.
    pub(super) fn new(pipe: Pipe, capacity: usize) -> FifoReceiver {
        let max = capacity / 2 - HEADER;
        FifoReceiver {
            pipe,
            buf: AlignedBuf::new(buffer_size(max)),
            start: 0,
            end: 0,
            pos: 0,
            max,
            expect: None,
            eof: false,
            drained: false,
            fault: None,
        }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max
    }

    /// The channel's declared capacity per direction (see
    /// `FifoSender::capacity`).
    pub(crate) fn capacity(&self) -> usize {
        2 * (self.max + HEADER)
    }

    /// Bytes received and not yet handed out: those still in the pipe
    /// (`FIONREAD`) and those read into our buffer, less the peer's
    /// handshake while it is unread. A frame the sender has only partly
    /// written counts with the part in the pipe. One system call.
    pub(crate) fn in_flight(&self) -> usize {
        let total = self.pipe.fd().map_or(0, crate::sys::fd::queued) + (self.end - self.start);
        match self.expect {
            Some(_) => total.saturating_sub(HELLO_FRAME),
            None => total,
        }
    }

    /// Whether the pipe holds at least its buffer size (`FIONREAD` against
    /// `F_GETPIPE_SZ`). A pipe whose pages are partly filled can be full
    /// with fewer bytes; that is not seen here. Two system calls.
    pub(crate) fn is_full(&self) -> bool {
        self.pipe
            .fd()
            .is_some_and(|fd| crate::sys::fd::queued(fd) >= crate::sys::fd::pipe_size(fd))
    }

    /// Whether nothing more will arrive: end of stream or the peer's death
    /// seen before, this end poisoned, no writer left on the pipe
    /// (`POLLHUP`; the parent's placeholder counts as a writer until its
    /// next receive after the child attached), or the (rate-limited)
    /// process watch finds the child dead. Bytes sent before may still be
    /// waiting.
    pub(crate) fn is_disconnected(&self) -> bool {
        if self.fault.is_some() || self.eof || self.pipe.link.peer_known_dead() {
            return true;
        }
        let Some(fd) = self.pipe.fd() else {
            return true;
        };
        crate::sys::fd::revents(fd, libc::POLLIN) & libc::POLLHUP != 0
            || self.pipe.link.poll_peer_gone()
    }

    /// Arms the handshake check; then, if the peer's HELLO is already
    /// readable, checks it now (without consuming it). On a mismatch
    /// returns the direction that disagrees.
    ///
    /// Reads at most the HELLO's 32 bytes: taking a channel must not pull
    /// messages out of the pipe (which would make room for the sender as if
    /// they had been received).
    pub(super) fn expect_hello(&mut self, expect: Expect) -> Result<(), Direction> {
        self.expect = Some(expect);
        let buffered = self.end - self.start;
        if buffered < HELLO_FRAME {
            self.make_room(HELLO_FRAME);
            if let Fill::Eof = self.fill(HELLO_FRAME - buffered) {
                self.eof = true;
            }
        }
        if self.end - self.start < HELLO_FRAME {
            return Ok(());
        }
        match self.header() {
            (len, HELLO) if len as usize == HELLO_LEN => self.check_hello(expect),
            // Anything else is reported by the first receive.
            _ => Ok(()),
        }
    }

    /// Compares the HELLO at `start` with what we expect.
    fn check_hello(&self, expect: Expect) -> Result<(), Direction> {
        let payload = self
            .buf
            .bytes(self.start + HEADER..self.start + HELLO_FRAME);
        let (peer_out, peer_in) = (wire::u64_at(payload, 0), wire::u64_at(payload, 8));
        // A one-way take does not use (nor check) one direction.
        let differ = |a: u64, b: u64| a != b && a != ANY_FINGERPRINT && b != ANY_FINGERPRINT;
        if differ(peer_out, expect.in_fp) {
            return Err(expect.direction);
        }
        if differ(peer_in, expect.out_fp) {
            return Err(expect.direction.reverse());
        }
        Ok(())
    }

    /// The receive loop: the next frame, waiting per `deadline`. Delivers
    /// every complete frame the peer wrote before reporting `Disconnected`.
    #[inline]
    pub(crate) fn next_frame(
        &mut self,
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<Incoming, RecvError> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        self.pipe.settle();
        let mut peer_gone = self.pipe.link.peer_known_dead();
        let mut waiter: Option<Waiter> = None;
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            if self.eof {
                return Err(self.end_of_stream());
            }
            // After a read that emptied the pipe, data is rarely back by the
            // next blocking receive (a reply has to come first): wait for
            // readiness and save the read that would fail (a system call per
            // message in request/response traffic).
            let wait_first =
                self.drained && waiter.is_none() && !peer_gone && strategy != WaitStrategy::Spin;
            if let (true, Deadline::At(at)) = (wait_first, deadline) {
                self.drained = false;
                let waiter = waiter.insert(Waiter::new(strategy, at));
                // Whatever the outcome, the read below comes next.
                if waiter.wait(&mut self.pipe, libc::POLLIN) == Outcome::PeerGone {
                    peer_gone = true;
                }
            }
            match self.fill(usize::MAX) {
                Fill::Data => continue,
                Fill::Eof => {
                    self.eof = true;
                    continue;
                }
                Fill::WouldBlock => {}
            }
            // Nothing more to read. A dead peer wrote everything it ever will
            // before it died, and we just drained the pipe.
            if peer_gone {
                return Err(self.end_of_stream());
            }
            let Deadline::At(at) = deadline else {
                if self.pipe.link.poll_peer_gone() {
                    peer_gone = true;
                    continue; // drains, then reports Disconnected
                }
                return Err(RecvError::Empty);
            };
            let waiter = waiter.get_or_insert_with(|| Waiter::new(strategy, at));
            match waiter.wait(&mut self.pipe, libc::POLLIN) {
                Outcome::Retry => {}
                Outcome::TimedOut if self.pipe.link.poll_peer_gone() => peer_gone = true,
                Outcome::TimedOut => return Err(RecvError::Timeout),
                Outcome::PeerGone => peer_gone = true,
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
            if self.end - self.start < HEADER {
                self.make_room(HEADER);
                return Ok(None);
            }
            let (len, kind) = self.header();
            let offset = self.pos;
            match (kind, self.expect) {
                (MSG, None) if len as usize <= self.max => {}
                (MSG, None) => {
                    return Err(self.poison(RecvError::Malformed(StreamFault::BadLength {
                        len,
                        max: self.max,
                        offset,
                    })));
                }
                (HELLO, Some(_)) if len as usize == HELLO_LEN => {}
                (HELLO, Some(_)) => {
                    return Err(self.poison(RecvError::Malformed(StreamFault::BadLength {
                        len,
                        max: HELLO_LEN,
                        offset,
                    })));
                }
                (MSG, Some(_)) => {
                    return Err(self.poison(RecvError::Malformed(StreamFault::NoHandshake)));
                }
                (kind, _) => {
                    return Err(
                        self.poison(RecvError::Malformed(StreamFault::BadKind { kind, offset }))
                    );
                }
            }
            let total = wire::wire_size(len as usize);
            if self.end - self.start < total {
                self.make_room(total);
                return Ok(None);
            }
            if let Some(expect) = self.expect {
                if let Err(direction) = self.check_hello(expect) {
                    return Err(self.poison(RecvError::TypeMismatch {
                        direction: direction.describe(),
                    }));
                }
                self.expect = None;
                self.pos += total as u64;
                self.start += total;
                continue;
            }
            let payload = self.buf.at(self.start + HEADER).cast_const();
            return Ok(Some(Incoming::in_buffer(
                payload,
                len as usize,
                self.start + total,
            )));
        }
    }

    /// `(len, kind)` of the header at `start` (at least 16 bytes buffered).
    #[inline]
    fn header(&self) -> (u32, u32) {
        let h = self.buf.bytes(self.start..self.start + HEADER);
        (wire::u32_at(h, 0), wire::u32_at(h, 4))
    }

    /// Makes sure `need` bytes from `start` fit in the buffer, moving the
    /// unconsumed bytes to the front if not. `need` is at most one largest
    /// frame, which always fits.
    #[inline]
    fn make_room(&mut self, need: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start + need > self.buf.len() {
            let (start, end) = (self.start, self.end);
            self.buf.bytes_mut(0..end).copy_within(start..end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// One non-blocking read of at most `limit` bytes into the free tail of
    /// the buffer.
    #[inline]
    fn fill(&mut self, limit: usize) -> Fill {
        let to = self.buf.len().min(self.end.saturating_add(limit));
        // Callers make room for the frame they wait for first, so there is.
        debug_assert!(to > self.end);
        let Some(fd) = self.pipe.fd() else {
            return Fill::Eof;
        };
        loop {
            match crate::sys::fd::read(fd, self.buf.bytes_mut(self.end..to)) {
                Ok(0) => return Fill::Eof,
                Ok(n) => {
                    self.end += n;
                    self.drained = self.end < to;
                    return Fill::Data;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Fill::WouldBlock,
                    // Nothing else is expected from a FIFO we hold open;
                    // treat it as the end of the stream.
                    _ => return Fill::Eof,
                },
            }
        }
    }

    /// The stream ended: a clean end between frames is `Disconnected`, one
    /// inside a frame is a truncated frame.
    fn end_of_stream(&mut self) -> RecvError {
        let buffered = self.end - self.start;
        if buffered == 0 {
            return RecvError::Disconnected;
        }
        let expected = if buffered >= HEADER {
            let (len, _) = self.header();
            wire::wire_size(len as usize)
        } else {
            HEADER
        };
        self.poison(RecvError::Malformed(StreamFault::Truncated {
            received: buffered,
            expected,
            offset: self.pos,
        }))
    }

    /// Fails for good: records `error` for every later call and closes the
    /// read end now, as dropping the receiver would, so a peer blocked on
    /// (or about to fill) the pipe gets `Disconnected`.
    fn poison(&mut self, error: RecvError) -> RecvError {
        self.fault = Some(error);
        self.pipe.close();
        error
    }
}
