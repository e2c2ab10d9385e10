//! The FIFO transport's sending end: build a frame in a private buffer,
//! write it to the pipe, keep the rest of a frame the pipe had no room for.

use std::ops::Range;
use std::time::Duration;

use super::buffer::AlignedBuf;
use super::pipe::Pipe;
use super::wait::{Outcome, Waiter};
use super::wire::{self, HEADER, HELLO, HELLO_FRAME, MSG};
use crate::codec::EncodeError;
use crate::error::SendError;
use crate::sys::fd;
use crate::sys::signal::SigpipeBlock;
use crate::wait::Deadline;
use crate::wait::WaitStrategy;

/// Zeros for the padding of frames written straight from caller bytes.
static PADDING: [u8; 16] = [0; 16];

/// How long dropping a sender waits for the reader to make room for the
/// rest of a pending frame before giving up (the reader then sees a
/// truncated frame: `RecvError::Malformed`, never mis-framed data).
pub(crate) const DROP_FLUSH: Duration = Duration::from_secs(1);

/// What a frame write takes its bytes from.
enum Source<'a> {
    /// These bytes of the sender's buffer.
    Buffer(Range<usize>),
    /// A header, caller bytes written in place (no copy into the buffer:
    /// `writev`), and `pad` bytes of padding.
    Bytes {
        header: [u8; HEADER],
        payload: &'a [u8],
        pad: usize,
    },
}

/// How far a frame write got before its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrote {
    /// The whole frame.
    All,
    /// This many bytes (more than none, less than all).
    Part(usize),
    /// Nothing: the pipe had no room before the deadline.
    Nothing,
}

/// The sending end of one FIFO.
///
/// Messages are encoded into a private 16-aligned buffer (header space
/// first), then written with `write(2)` (raw messages: `writev` straight
/// from the caller's bytes).
///
/// # Partial frames
///
/// A pipe can take part of a frame and then be full. A frame is never left
/// torn: its unwritten rest is kept in the buffer (`pending`) and written
/// before anything else, by the next send call of any form or, at the
/// latest, when the sender is dropped. So a deadline is always honoured:
///
/// * the call that started the frame returns `Ok`: the message is
///   accepted, exactly like one committed to a ring, and will be delivered
///   once the reader makes room;
/// * a later call that cannot finish the pending rest before its deadline
///   returns `Full`/`Timeout` for *its own* message, which was not sent
///   (still the caller's, to retry);
/// * dropping the sender waits up to [`DROP_FLUSH`] for the reader to take
///   the rest; if it does not, the reader sees a truncated frame
///   (`RecvError::Malformed`), never mis-framed data.
///
/// Only the peer's disappearance ends a blocking `send` mid-frame.
#[derive(Debug)]
pub(crate) struct FifoSender {
    pipe: Pipe,
    /// One frame: header plus the largest payload, padded. Also holds the
    /// rest of a partly written frame (`pending`).
    buf: AlignedBuf,
    max: usize,
    /// `buf[pending]` is the unwritten rest of a frame whose first bytes
    /// are in the pipe (empty: none).
    pending: Range<usize>,
    /// Latched on `EPIPE` or peer death: every later send is `Disconnected`.
    closed: bool,
}

impl FifoSender {
    /// A sender for a channel of `capacity` bytes per direction (largest
    /// message `capacity / 2 - 16`, as on a ring).
    pub(super) fn new(pipe: Pipe, capacity: usize) -> FifoSender {
        let max = capacity / 2 - HEADER;
        FifoSender {
            pipe,
            buf: AlignedBuf::new(wire::wire_size(max)),
            max,
            pending: 0..0,
            closed: false,
        }
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max
    }

    /// The channel's declared capacity per direction (the pipe's own buffer
    /// was asked for it, in whole pages, within 4 KiB..1 MiB).
    pub(crate) fn capacity(&self) -> usize {
        2 * (self.max + HEADER)
    }

    /// Bytes written and not yet read out of the pipe (`FIONREAD`: the
    /// receiver may have read more into its own buffer, which we cannot
    /// see; our handshake counts until it does), plus the unwritten rest of
    /// a partly written frame. One system call.
    pub(crate) fn in_flight(&self) -> usize {
        self.pipe.fd().map_or(0, fd::queued) + self.pending.len()
    }

    /// Whether the pipe holds at least its buffer size (`FIONREAD` against
    /// `F_GETPIPE_SZ`), so not even the smallest frame fits. (`poll`'s
    /// `POLLOUT` would not do: it reports a pipe with no free page as full
    /// while its last page still takes small writes.) A pipe whose pages
    /// are only partly used can refuse a write with fewer bytes in it; that
    /// is not seen here. Two system calls.
    pub(crate) fn is_full(&self) -> bool {
        self.pipe
            .fd()
            .is_some_and(|fd| fd::queued(fd) >= fd::pipe_size(fd))
    }

    /// Whether no send can succeed any more: `EPIPE` or the peer's death
    /// seen before, no reader left on the pipe (`POLLERR`; the parent's
    /// placeholder counts as a reader until its next send after the child
    /// attached), or the (rate-limited) process watch finds the child dead.
    pub(crate) fn is_disconnected(&self) -> bool {
        if self.closed || self.pipe.link.peer_known_dead() {
            return true;
        }
        let Some(fd) = self.pipe.fd() else {
            return true;
        };
        fd::revents(fd, libc::POLLOUT) & libc::POLLERR != 0 || self.pipe.link.poll_peer_gone()
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
        let _ = self.write_frame(
            Source::Buffer(0..HELLO_FRAME),
            Deadline::NEVER,
            WaitStrategy::Block,
        );
    }

    /// Sends one message: `write` encodes it into the buffer (it is given
    /// the full largest-message capacity, so `min` only matters for
    /// `TooLarge`), then the frame is written per `deadline`. `sized`: `min`
    /// is the exact length; if not, and a pending frame holds the buffer,
    /// `write` is called with zero bytes of space to measure the message
    /// first, so an oversized one is `TooLarge` whatever the pipe holds.
    #[inline]
    pub(crate) fn send_with(
        &mut self,
        min: usize,
        sized: bool,
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
        if !self.pending.is_empty() && !sized {
            let dangling = std::ptr::NonNull::<u128>::dangling().as_ptr().cast();
            match write(dangling, 0) {
                Err(EncodeError::Overflow { needed }) if needed > self.max => {
                    return Err(SendError::TooLarge { max: self.max });
                }
                Err(EncodeError::Other) => return Err(SendError::Encode),
                Ok(_) | Err(EncodeError::Overflow { .. }) => {}
            }
        }
        self.finish_pending(deadline, strategy)?;
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
        match self.write_frame(Source::Buffer(0..total), deadline, strategy)? {
            Wrote::All => Ok(()),
            // Accepted: the rest is already where it must be.
            Wrote::Part(n) => {
                self.pending = n..total;
                Ok(())
            }
            Wrote::Nothing => Err(self.full_or_gone(deadline)),
        }
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
        self.finish_pending(deadline, strategy)?;
        let header = wire::header(bytes.len() as u32, MSG);
        let pad = wire::wire_size(bytes.len()) - HEADER - bytes.len();
        let source = Source::Bytes {
            header,
            payload: bytes,
            pad,
        };
        match self.write_frame(source, deadline, strategy)? {
            Wrote::All => Ok(()),
            Wrote::Part(n) => {
                // Accepted: keep a copy of the rest (the caller's bytes are
                // only borrowed for this call).
                self.keep_rest(&[&header, bytes, &PADDING[..pad]], n);
                Ok(())
            }
            Wrote::Nothing => Err(self.full_or_gone(deadline)),
        }
    }

    /// Copies what follows the first `written` bytes of `parts` (one frame)
    /// to the front of the buffer, as the pending rest.
    fn keep_rest(&mut self, parts: &[&[u8]; 3], written: usize) {
        let mut skip = written;
        let mut at = 0;
        for part in parts {
            let from = skip.min(part.len());
            skip -= from;
            let rest = &part[from..];
            self.buf
                .bytes_mut(at..at + rest.len())
                .copy_from_slice(rest);
            at += rest.len();
        }
        self.pending = 0..at;
    }

    /// Writes the pending rest of a started frame, if any, per `deadline`.
    /// If it cannot all go before the deadline, the new message is not
    /// sent: `Full`/`Timeout` (what did go is no longer pending).
    fn finish_pending(
        &mut self,
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<(), SendError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = self.pending.clone();
        match self.write_frame(Source::Buffer(pending), deadline, strategy)? {
            Wrote::All => {
                self.pending = 0..0;
                Ok(())
            }
            Wrote::Part(n) => {
                self.pending.start += n;
                Err(self.full_or_gone(deadline))
            }
            Wrote::Nothing => Err(self.full_or_gone(deadline)),
        }
    }

    /// `Full` (`try_send`) or `Timeout`, or `Disconnected` if a
    /// (rate-limited) check finds the peer gone: `try_` forms and short
    /// timeouts never reach a wait's liveness check.
    fn full_or_gone(&mut self, deadline: Deadline) -> SendError {
        if self.pipe.link.poll_peer_gone() {
            self.closed = true;
            SendError::Disconnected
        } else if let Deadline::Now = deadline {
            SendError::Full
        } else {
            SendError::Timeout
        }
    }

    /// Writes as much of one frame from `source` as the pipe takes before
    /// `deadline`. Errors are `Disconnected` only (and latch it).
    fn write_frame(
        &mut self,
        source: Source<'_>,
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<Wrote, SendError> {
        let total = match &source {
            Source::Buffer(range) => range.len(),
            Source::Bytes { payload, pad, .. } => HEADER + payload.len() + pad,
        };
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
                Source::Buffer(range) => {
                    fd::write(fd, self.buf.bytes(range.start + written..range.end))
                }
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
                        return Ok(Wrote::All);
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
            let out_of_time = match written {
                0 => Wrote::Nothing,
                n => Wrote::Part(n),
            };
            let Deadline::At(at) = deadline else {
                return Ok(out_of_time);
            };
            let waiter = waiter.get_or_insert_with(|| Waiter::new(strategy, at));
            match waiter.wait(&mut self.pipe, libc::POLLOUT) {
                Outcome::Retry => {}
                Outcome::TimedOut => return Ok(out_of_time),
                Outcome::PeerGone => {
                    self.closed = true;
                    return Err(SendError::Disconnected);
                }
            }
        }
    }
}

impl Drop for FifoSender {
    /// Finishes a pending frame if the reader takes it within
    /// [`DROP_FLUSH`]; otherwise the reader sees it truncated.
    fn drop(&mut self) {
        if !self.pending.is_empty() && !self.closed {
            let _ = self.finish_pending(Deadline::after(DROP_FLUSH), WaitStrategy::Block);
        }
    }
}
