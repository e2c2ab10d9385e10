//! One end of one FIFO as a channel end holds it: the descriptor, the
//! parent's placeholder, and the shared link.
//!
//! # The placeholder
//!
//! Before the child exists the parent opens each FIFO twice: once `O_RDWR`
//! (Linux lets a FIFO be opened read-write; it then has a reader *and* a
//! writer, so neither open blocks nor fails with `ENXIO`) and once with its
//! real direction. The `O_RDWR` descriptor, the placeholder, stands in for
//! the child until it attaches: the parent's writes are buffered by the
//! pipe (as a ring buffers them before the child maps the segment) and its
//! reads see "no data yet" rather than end of file.
//!
//! The placeholder must go once the child has opened its ends, or the
//! parent would never see EOF (the child's sender dropped) or `EPIPE` (the
//! child's receiver dropped). The child removes the FIFO directory only
//! after opening every FIFO, so "directory gone" is the signal
//! ([`FifoLink::settled`]); each end checks it on every operation while it
//! still holds its placeholder, and drops it then. If the parent removes the
//! directory itself (child dead, `Child` dropped), no child can attach any
//! more and dropping the placeholders is right as well.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::link::FifoLink;

/// A FIFO end held by a channel end.
#[derive(Debug)]
pub(super) struct Pipe {
    /// `None` once closed early (a receiver that failed for good).
    fd: Option<OwnedFd>,
    /// Parent side, until the child has attached: see the module docs.
    placeholder: Option<OwnedFd>,
    pub(super) link: Arc<FifoLink>,
}

impl Pipe {
    /// The child's (or an already settled) end.
    pub(super) fn new(fd: OwnedFd, link: Arc<FifoLink>) -> Pipe {
        Pipe {
            fd: Some(fd),
            placeholder: None,
            link,
        }
    }

    /// The parent's end, with its placeholder.
    pub(super) fn with_placeholder(fd: OwnedFd, placeholder: OwnedFd, link: Arc<FifoLink>) -> Pipe {
        Pipe {
            fd: Some(fd),
            placeholder: Some(placeholder),
            link,
        }
    }

    /// The descriptor to read or write; `None` once [`close`](Pipe::close)d.
    #[inline]
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Closes this end (and the placeholder) before the channel end is
    /// dropped: a receiver that failed for good closes its read end, so
    /// the peer's writes fail with `EPIPE` instead of filling the pipe and
    /// blocking forever.
    pub(super) fn close(&mut self) {
        self.fd = None;
        self.placeholder = None;
    }

    /// Drops the placeholder once the child is attached (or no longer can
    /// attach). Free once done.
    #[inline]
    pub(super) fn settle(&mut self) {
        if self.placeholder.is_some() && self.link.settled() {
            self.placeholder = None;
        }
    }
}
