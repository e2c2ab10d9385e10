//! The FIFO transport's sending end: build a frame in a private buffer,
//! write it to the pipe whole.

use super::buffer::AlignedBuf;
use super::pipe::Pipe;
use super::wait::{Outcome, Waiter};
use super::wire::{self, HEADER, HELLO, HELLO_FRAME, MSG};
use crate::channel::Deadline;
use crate::codec::EncodeError;
use crate::error::SendError;
use crate::sys::clock::MonoTime;
use crate::sys::fd;
use crate::sys::signal::SigpipeBlock;
use crate::wait::WaitStrategy;

/// Zeros for the padding of frames written straight from caller bytes.
static PADDING: [u8; 16] = [0; 16];

/// What a frame write takes its bytes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The first `total` bytes of the sender's buffer.
    Buffer { total: usize },
    /// A header, caller bytes written in place (no copy into the buffer:
    /// `writev`), and `pad` bytes of padding.
    Bytes {
        header: [u8; HEADER],
        payload: &'a [u8],
        pad: usize,
    },
}

/// Writes up to this size are atomic on a pipe (`PIPE_BUF`): all or `EAGAIN`.
const PIPE_BUF: usize = libc::PIPE_BUF;
/// Pipe buffers come in pages; a partly filled page can waste up to one.
const PAGE: usize = 4096;

/// The sending end of one FIFO.
///
/// Messages are encoded into a private 16-aligned buffer (header space
/// first), then written with `write(2)`. A frame is never left torn in the
/// pipe: once its first byte is written, the rest is written even past the
/// caller's deadline (timeouts only apply before the first byte), and only
/// the peer's disappearance stops it.
#[derive(Debug)]
pub(crate) struct FifoSender {
    pipe: Pipe,
    /// One frame: header plus the largest payload, padded.
    buf: AlignedBuf,
    max: usize,
    /// The pipe's buffer size, for `try_send` of frames above `PIPE_BUF`.
    pipe_size: usize,
    /// Latched on `EPIPE` or peer death: every later send is `Disconnected`.
    closed: bool,
}

impl FifoSender {
    /// A sender for a channel of `capacity` bytes per direction (largest
    /// message `capacity / 2 - 16`, as on a ring).
    pub(super) fn new(pipe: Pipe, capacity: usize) -> FifoSender {
        let max = capacity / 2 - HEADER;
        let pipe_size = pipe.fd().map_or(0, fd::pipe_size);
        FifoSender {
            pipe,
            buf: AlignedBuf::new(wire::wire_size(max)),
            max,
            pipe_size,
            closed: false,
        }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max
    }

    /// Writes the HELLO that opens this direction (see `wire`). A peer that
    /// is already gone only shows up on the next send.
    pub(super) fn send_hello(&mut self, out_fp: u64, in_fp: u64) {
        self.buf
            .bytes_mut(0..HEADER)
            .copy_from_slice(&wire::header(wire::HELLO_LEN as u32, HELLO));
        self.buf
            .bytes_mut(HEADER..HELLO_FRAME)
            .copy_from_slice(&wire::hello_payload(out_fp, in_fp));
        let source = Source::Buffer { total: HELLO_FRAME };
        let _ = self.write_frame(source, Deadline::NEVER, WaitStrategy::Block);
    }

    /// Sends one message: `write` encodes it into the buffer (it is given
    /// the full largest-message capacity, so `min` only matters for
    /// `TooLarge`), then the frame is written per `deadline`.
    #[inline]
    pub(crate) fn send_with(
        &mut self,
        min: usize,
        deadline: Deadline,
        strategy: WaitStrategy,
        mut write: impl FnMut(*mut u8, usize) -> Result<usize, EncodeError>,
    ) -> Result<(), SendError> {
        if self.closed || self.pipe.link.peer_known_dead() {
            return Err(SendError::Disconnected);
        }
        if min > self.max {
            return Err(SendError::TooLarge { max: self.max });
        }
        self.pipe.settle();
        let len = match write(self.buf.at(HEADER), self.max) {
            Ok(len) if len <= self.max => len,
            Ok(_) | Err(EncodeError::Overflow { .. }) => {
                return Err(SendError::TooLarge { max: self.max });
            }
            Err(EncodeError::Other) => return Err(SendError::Encode),
        };
        self.buf
            .bytes_mut(0..HEADER)
            .copy_from_slice(&wire::header(len as u32, MSG));
        // The padding after the payload goes out as whatever the buffer
        // holds there: initialised bytes of earlier frames, ignored by the
        // receiver.
        let total = wire::wire_size(len);
        self.write_frame(Source::Buffer { total }, deadline, strategy)
    }

    /// Sends `bytes` as one message, written to the pipe straight from the
    /// caller's memory (`writev` of header, bytes and padding): the kernel's
    /// copy is the only one, as with a plain `write` to a pipe.
    #[inline]
    pub(crate) fn send_bytes(
        &mut self,
        bytes: &[u8],
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<(), SendError> {
        if self.closed || self.pipe.link.peer_known_dead() {
            return Err(SendError::Disconnected);
        }
        if bytes.len() > self.max {
            return Err(SendError::TooLarge { max: self.max });
        }
        self.pipe.settle();
        let source = Source::Bytes {
            header: wire::header(bytes.len() as u32, MSG),
            payload: bytes,
            pad: wire::wire_size(bytes.len()) - HEADER - bytes.len(),
        };
        self.write_frame(source, deadline, strategy)
    }

    /// Whether a `total`-byte frame can start now without having to wait to
    /// finish: it fits in the pipe's free space, or the pipe is empty.
    fn has_room(&self, total: usize) -> bool {
        let Some(fd) = self.pipe.fd() else {
            return true;
        };
        match fd::unread(fd) {
            Ok(0) => true,
            Ok(unread) => {
                let used = unread.div_ceil(PAGE) * PAGE + PAGE;
                self.pipe_size.saturating_sub(used) >= total
            }
            Err(_) => true,
        }
    }

    /// `error` (`Full` or `Timeout`), or `Disconnected` if a (rate-limited)
    /// check finds the peer gone: `try_` forms and short timeouts never reach
    /// a wait's liveness check.
    fn full_or_gone(&mut self, error: SendError) -> SendError {
        if self.pipe.link.poll_peer_gone() {
            self.closed = true;
            SendError::Disconnected
        } else {
            error
        }
    }

    /// Writes one whole frame from `source` to the pipe.
    fn write_frame(
        &mut self,
        source: Source<'_>,
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<(), SendError> {
        let total = match source {
            Source::Buffer { total } => total,
            Source::Bytes { payload, pad, .. } => HEADER + payload.len() + pad,
        };
        // `try_send` must not start a frame it cannot finish at once: frames
        // up to PIPE_BUF are written atomically or not at all; larger ones
        // are checked against the free space first.
        if matches!(deadline, Deadline::Now) && total > PIPE_BUF && !self.has_room(total) {
            return Err(self.full_or_gone(SendError::Full));
        }
        let mut sigpipe = SigpipeBlock::new();
        let mut written = 0;
        let mut waiter: Option<Waiter> = None;
        loop {
            // Senders never close their pipe early; `None` would mean the
            // channel is unusable, like any unexpected error below.
            let Some(fd) = self.pipe.fd() else {
                self.closed = true;
                return Err(SendError::Disconnected);
            };
            let wrote = match &source {
                Source::Buffer { .. } => fd::write(fd, self.buf.bytes(written..total)),
                Source::Bytes {
                    header,
                    payload,
                    pad,
                } => fd::writev(fd, &[header, payload, &PADDING[..*pad]], written),
            };
            match wrote {
                Ok(n) => {
                    written += n;
                    if written == total {
                        return Ok(());
                    }
                    if n > 0 {
                        continue;
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {}
                    Some(libc::EPIPE) => {
                        sigpipe.discard();
                        self.closed = true;
                        return Err(SendError::Disconnected);
                    }
                    // Nothing else is expected from a pipe we hold open; the
                    // channel cannot be used any more either way.
                    _ => {
                        self.closed = true;
                        return Err(SendError::Disconnected);
                    }
                },
            }
            // The pipe is full.
            let until = match deadline {
                _ if written > 0 => MonoTime::NEVER,
                Deadline::Now => return Err(self.full_or_gone(SendError::Full)),
                Deadline::At(at) => at,
            };
            let waiter = waiter.get_or_insert_with(|| Waiter::new(strategy, until));
            if written > 0 {
                waiter.no_deadline();
            }
            match waiter.wait(&mut self.pipe, libc::POLLOUT) {
                Outcome::Retry => {}
                Outcome::TimedOut => return Err(self.full_or_gone(SendError::Timeout)),
                Outcome::PeerGone => {
                    self.closed = true;
                    return Err(SendError::Disconnected);
                }
            }
        }
    }
}
