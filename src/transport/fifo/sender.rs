//! The FIFO transport's sending end: build a frame in a private buffer,
//! write it to the pipe, keep the rest of a frame the pipe had no room for.
//!
//! # Partial frames
//!
//! A pipe can take part of a frame and then be full. A frame is never left
//! torn: its unwritten rest stays in the buffer (`pending`) and is written
//! before anything else, by the next send of any form or on drop. So a
//! deadline is always kept: the call that started the frame returns `Ok`
//! (accepted, like a frame committed to a ring); a later call that cannot
//! finish the rest in time returns `Full`/`Timeout` for its own, unsent
//! message; dropping the sender waits up to [`DROP_FLUSH`] for the reader,
//! which otherwise sees a truncated frame (`RecvError::Malformed`).

use std::ops::Range;
use std::time::Duration;

use super::link::FifoEnd;
use super::wire::{self, HEADER, HELLO, HELLO_FRAME, MSG};
use crate::aligned::AlignedBuf;
use crate::codec::EncodeError;
use crate::error::SendError;
use crate::sys::fd;
use crate::sys::signal::SigpipeBlock;
use crate::wait::{Deadline, WaitStrategy, Waited};

/// How long dropping a sender waits to finish a pending frame.
pub(crate) const DROP_FLUSH: Duration = Duration::from_secs(1);

/// The sending end of one FIFO.
#[derive(Debug)]
pub(crate) struct FifoSender {
    pipe: FifoEnd,
    /// One frame: header plus the largest payload, padded.
    buf: AlignedBuf,
    max: usize,
    /// `buf[pending]`: the unwritten rest of a frame partly in the pipe.
    pending: Range<usize>,
    /// Latched on `EPIPE` or peer death: every later send is `Disconnected`.
    closed: bool,
}

impl FifoSender {
    /// A sender for `capacity` bytes per direction (largest message
    /// `capacity / 2 - 16`, as on a ring).
    pub(super) fn new(pipe: FifoEnd, capacity: usize) -> FifoSender {
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

    /// The declared capacity (the pipe was asked for it, in whole pages,
    /// within 4 KiB..1 MiB).
    pub(crate) fn capacity(&self) -> usize {
        2 * (self.max + HEADER)
    }

    /// Bytes in the pipe plus the pending rest of a frame.
    pub(crate) fn in_flight(&self) -> usize {
        self.pipe.queued() + self.pending.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.pipe.is_full()
    }

    /// `EPIPE` or the peer's death seen before, or no reader left.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.closed || self.pipe.hung_up(libc::POLLOUT, libc::POLLERR)
    }

    /// Writes the HELLO that opens this direction (see `wire`). A peer
    /// already gone shows up on the next send.
    pub(super) fn send_hello(&mut self, out_fp: u64, in_fp: u64) {
        self.buf
            .bytes_mut(0..HEADER)
            .copy_from_slice(&wire::header(16, HELLO));
        let fps = (self.buf.bytes_mut(HEADER..HELLO_FRAME)).split_at_mut(8);
        fps.0.copy_from_slice(&out_fp.to_ne_bytes());
        fps.1.copy_from_slice(&in_fp.to_ne_bytes());
        let _ = self.write_frame(0..HELLO_FRAME, Deadline::NEVER, WaitStrategy::Block);
    }

    /// Sends `bytes` as one message.
    #[inline]
    pub(crate) fn send_bytes(
        &mut self,
        bytes: &[u8],
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<(), SendError> {
        self.send_with(bytes.len(), true, deadline, strategy, |dst, _| {
            // SAFETY: `dst` has room for the largest message, which
            // `send_with` checked `bytes` does not exceed.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
            Ok(bytes.len())
        })
    }

    /// Sends one message: `write` encodes it into the buffer (given the
    /// largest message's room), then the frame is written per `deadline`.
    /// Unless `sized` (`min` is the exact length), while a pending rest
    /// holds the buffer `write` is first called with no room, to measure,
    /// so an oversized message is `TooLarge` whatever the pipe holds.
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
        let too_large = Err(SendError::TooLarge { max: self.max });
        if min > self.max {
            return too_large;
        }
        self.pipe.link.settle();
        if !self.pending.is_empty() && !sized {
            let dangling = std::ptr::NonNull::<u128>::dangling().as_ptr().cast();
            match write(dangling, 0) {
                Err(EncodeError::Overflow { needed }) if needed > self.max => return too_large,
                Err(EncodeError::Other) => return Err(SendError::Encode),
                Ok(_) | Err(EncodeError::Overflow { .. }) => {}
            }
        }
        if !self.pending.is_empty() {
            let pending = self.pending.clone();
            let n = self.write_frame(pending, deadline, strategy)?;
            self.pending.start += n;
            if !self.pending.is_empty() {
                return Err(self.full_or_gone(deadline));
            }
        }
        let len = match write(self.buf.at(HEADER), self.max) {
            Ok(len) if len <= self.max => len,
            Ok(_) | Err(EncodeError::Overflow { .. }) => return too_large,
            Err(EncodeError::Other) => return Err(SendError::Encode),
        };
        self.buf
            .bytes_mut(0..HEADER)
            .copy_from_slice(&wire::header(len as u32, MSG));
        // The padding goes out as whatever the buffer holds there.
        let total = wire::wire_size(len);
        match self.write_frame(0..total, deadline, strategy)? {
            0 => Err(self.full_or_gone(deadline)),
            n => {
                // Accepted; a rest is already where it must be.
                self.pending = n..total;
                Ok(())
            }
        }
    }

    /// `Full` or `Timeout`, or `Disconnected` if a (rate-limited) check
    /// finds the peer gone: `try_` forms never reach a wait's check.
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

    /// Writes as much of `buf[range]` as the pipe takes before `deadline`;
    /// returns how much. Errors are `Disconnected` (and latch it).
    fn write_frame(
        &mut self,
        range: Range<usize>,
        deadline: Deadline,
        strategy: WaitStrategy,
    ) -> Result<usize, SendError> {
        let mut sigpipe = SigpipeBlock::new();
        let mut written = 0;
        while let Some(fd) = self.pipe.fd() {
            match fd::write(fd, self.buf.bytes(range.start + written..range.end)) {
                Ok(n) if written + n == range.len() => return Ok(range.len()),
                Ok(0) => {}
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {}
                    // EPIPE, or anything unexpected: the channel is done.
                    Some(libc::EPIPE) => {
                        sigpipe.discard();
                        break;
                    }
                    _ => break,
                },
            }
            // The pipe is full.
            let Deadline::At(at) = deadline else {
                return Ok(written);
            };
            if self.pipe.wait(libc::POLLOUT, strategy, at) == Waited::TimedOut {
                return Ok(written);
            }
            if self.pipe.link.peer_known_dead() {
                break;
            }
        }
        self.closed = true;
        Err(SendError::Disconnected)
    }
}

impl Drop for FifoSender {
    fn drop(&mut self) {
        if !self.pending.is_empty() && !self.closed {
            let pending = self.pending.clone();
            let _ = self.write_frame(pending, Deadline::after(DROP_FLUSH), WaitStrategy::Block);
        }
    }
}
