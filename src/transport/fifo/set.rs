//! A FIFO set: every channel of one parent/child pair, on one side, as the
//! parent creates it before spawning and the child takes it in `connect`.
//!
//! Per channel two `pipe2` pipes (parent to child, child to parent); per
//! set a claim pipe holding one byte. The parent queues the child's ends
//! on the spawned child's control socketpair ([`FifoSet::queue`]) and keeps
//! a copy of each until the child has claimed them (`link`), for the
//! `/proc` fallback (`handover`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::handover::{HandOver, TAG};
use super::link::{FifoEnd, FifoLink, Handover};
use super::receiver::{Expect, FifoReceiver};
use super::sender::FifoSender;
use crate::codec::ANY_FINGERPRINT;
use crate::config::{self, ChannelConfig};
use crate::error::{ChannelError, OpenError};
use crate::peer::PeerWatch;
use crate::side::Direction;
use crate::sys::inherit::Handed;
use crate::sys::{fd, pipe, socket};
use crate::wait::WaitStrategy;

/// Every FIFO channel of one parent/child pair, on one side.
#[derive(Debug)]
pub(crate) struct FifoSet {
    link: Arc<FifoLink>,
    /// The direction this side receives on.
    incoming: Direction,
    /// Parent side: the `REMORA_CHANNEL` value after `pipes:`.
    env: String,
    channels: Vec<ChannelConfig>,
    /// Per channel, our sending and receiving end until taken.
    ends: Mutex<Vec<Option<(FifoSender, FifoReceiver)>>>,
}

impl FifoSet {
    /// Parent side: makes the pipes and the variable that describes the
    /// child's ends.
    pub(crate) fn create(configs: &[ChannelConfig]) -> Result<FifoSet, OpenError> {
        config::validate(configs)?;
        let new_pipe = || pipe::pipe().map_err(OpenError::io("pipe2"));
        let (claim, claim_w) = new_pipe()?;
        // The one byte whoever claims the set reads; with our write end
        // gone, a drained claim pipe reads as end of file.
        fd::write(claim_w.as_fd(), &[1]).map_err(OpenError::io("write"))?;
        let mut kept = vec![claim];
        let mut pipes = Vec::with_capacity(configs.len());
        for c in configs {
            let ((p2c_r, p2c_w), (c2p_r, c2p_w)) = (new_pipe()?, new_pipe()?);
            for end in [&p2c_w, &c2p_w] {
                // 1 MiB is Linux's default `pipe-max-size` for unprivileged users.
                pipe::set_pipe_size(end.as_fd(), c.capacity.clamp(4096, 1 << 20));
            }
            pipes.push([p2c_w, c2p_r]);
            kept.extend([c2p_w, p2c_r]);
        }
        let ends = (kept.iter().map(|k| Handed::of(k.as_fd())))
            .collect::<Result<_, _>>()
            .map_err(OpenError::io("fstat"))?;
        let hand_over = HandOver {
            pid: std::process::id(),
            channels: configs.to_vec(),
            ends,
        };
        let link = Arc::new(FifoLink::new(Some(Handover { kept, queue: None })));
        let mut set = FifoSet::new(
            link,
            Direction::ToCreator,
            hand_over.channels.clone(),
            pipes,
        );
        set.env = hand_over.encode();
        Ok(set)
    }

    /// Parent side, before the spawn: queues the child's ends on our end
    /// `sock` of the control socketpair, as one message; `theirs` is the
    /// child's end, a copy of which we keep until the child has claimed
    /// (see `Handover::queue`).
    pub(crate) fn queue(&self, sock: BorrowedFd<'_>, theirs: BorrowedFd<'_>) -> io::Result<()> {
        self.link.keep_queue(theirs.try_clone_to_owned()?);
        let sent = self.link.with_kept(|kept| {
            let fds: Vec<BorrowedFd<'_>> = kept.iter().map(AsFd::as_fd).collect();
            socket::send(sock, TAG, &fds)
        });
        sent.unwrap_or_else(|| Err(io::ErrorKind::NotConnected.into()))
    }

    /// Child side: takes the ends `hand_over` describes, from the message
    /// on `sock` (the inherited control socketpair) if given, else through
    /// the parent's `/proc`.
    pub(crate) fn open(
        hand_over: HandOver,
        sock: Option<BorrowedFd<'_>>,
    ) -> Result<FifoSet, OpenError> {
        let mut fds = hand_over.take(sock)?.into_iter().skip(1);
        let mut pipes = Vec::with_capacity(hand_over.channels.len());
        while let (Some(tx), Some(rx)) = (fds.next(), fds.next()) {
            pipes.push([tx, rx]);
        }
        // No watch on the parent: its death closes its ends of every pipe
        // (no other process holds them).
        let link = Arc::new(FifoLink::new(None));
        Ok(FifoSet::new(
            link,
            Direction::ToOpener,
            hand_over.channels,
            pipes,
        ))
    }

    /// A set of `channels` over `pipes`: per channel, our sending and our
    /// receiving end.
    fn new(
        link: Arc<FifoLink>,
        incoming: Direction,
        channels: Vec<ChannelConfig>,
        pipes: Vec<[OwnedFd; 2]>,
    ) -> FifoSet {
        let end = |fd| FifoEnd::new(fd, Arc::clone(&link));
        let ends = channels.iter().zip(pipes).map(|(c, [tx, rx])| {
            let tx = FifoSender::new(end(tx), c.capacity);
            Some((tx, FifoReceiver::new(end(rx), c.capacity)))
        });
        let ends = Mutex::new(ends.collect());
        FifoSet {
            link,
            incoming,
            env: String::new(),
            channels,
            ends,
        }
    }

    /// What follows `pipes:` in the `REMORA_CHANNEL` value that describes
    /// this set to the child.
    pub(crate) fn env_value(&self) -> &str {
        &self.env
    }

    /// Parent side: treat the death of child `pid` as the peer hanging up.
    pub(crate) fn watch_child(&self, pid: u32) {
        self.link.watch(PeerWatch::child(pid));
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.link.is_attached()
    }

    /// Parent side, once the child is reaped: drops the kept copies.
    pub(crate) fn give_up(&self) {
        self.link.give_up();
    }

    pub(crate) fn channel_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.channels.iter().map(|c| c.name())
    }

    /// This side's ends of channel `name`, after checking the peer's
    /// handshake, if already there, against our fingerprints, with the
    /// channel's wait strategy. (The channel-set layer wraps them in public
    /// channel ends: this transport knows nothing of those.)
    ///
    /// A direction this side does not use (`None`; a one-way take) is
    /// neither checked nor announced ([`ANY_FINGERPRINT`]), and its end
    /// closes now: an unused receiver's read end, so the peer's sends
    /// there get `EPIPE`; an unused sender's write end, without a
    /// handshake, so the peer's receiver sees the end of the stream (both
    /// `Disconnected`). On a mismatch the channel stays as it was (the
    /// peer's HELLO still buffered).
    pub(crate) fn take(
        &self,
        name: &str,
        out_fp: Option<u64>,
        in_fp: Option<u64>,
    ) -> Result<(Option<FifoSender>, Option<FifoReceiver>, WaitStrategy), ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let Some((mut tx, mut rx)) = ends[index].take() else {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        };
        let expect = Expect {
            in_fp: in_fp.unwrap_or(ANY_FINGERPRINT),
            out_fp: out_fp.unwrap_or(ANY_FINGERPRINT),
            direction: self.incoming,
        };
        if let Err(direction) = rx.expect_hello(expect) {
            ends[index] = Some((tx, rx));
            return Err(ChannelError::TypeMismatch {
                name: name.to_owned(),
                direction: direction.describe(),
            });
        }
        if let Some(fp) = out_fp {
            tx.send_hello(fp, expect.in_fp);
        }
        Ok((
            out_fp.and(Some(tx)),
            in_fp.and(Some(rx)),
            self.channels[index].wait,
        ))
    }
}

// Dropping a `FifoSet` leaves the kept copies to its `FifoLink`, shared
// by every end taken: the last of them drops them. Ends never taken are
// dropped with the set, so the child sees those directions hang up.
