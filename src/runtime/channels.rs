//! [`RuntimeChannels`]: one side's channels opened at run time, over a
//! control socket, and [`OpenedChannel`], one the peer opened.
//!
//! The opening side builds a segment holding just the new channel (its own
//! capacity and wait strategy) in a sealed memfd and sends it over the
//! control socket; the other side checks it exactly as a first segment is
//! checked (memfd, seals, size, layout), claims it, and answers. The new
//! channel has the liveness of the first ones (the claim words, plus a
//! death watch on the peer process) and this side's trust rule (the
//! receive mode its receivers start in).

use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Instant;

use super::control::{Control, SLICE};
use super::error::ServiceError;
use super::peer_process::PeerProcess;
use super::spawned::{Rendezvous, Step};
use super::wire::ChannelRefusal;
use crate::channel::{RawReceiver, RawSender, ReceiveMode, Receiver, Sender};
use crate::codec::{self, Decode, Encode};
use crate::config::ChannelConfig;
use crate::error::ChannelError;
use crate::segment::Segment;
use crate::sys::shm;

/// Run-time channels a side accepts from its peer by default.
pub(crate) const DEFAULT_CHANNEL_LIMIT: usize = 32;

/// The control socket, once known.
#[derive(Debug)]
struct Linked {
    control: Control,
    /// The uid every segment the peer opens must be owned by (`None`: not
    /// known, e.g. a spawned child behind its socketpair, which tells no
    /// credentials of its own).
    peer_uid: Option<u32>,
}

/// Names and counts, both ways.
#[derive(Debug)]
struct Names {
    /// Names opened by either side (reserved while an open is in flight).
    names: Vec<String>,
    /// Channels accepted from the peer so far, and the most we take.
    accepted: usize,
    limit: usize,
}

/// One side's run-time channels.
#[derive(Debug)]
pub(crate) struct RuntimeChannels {
    /// Set at once (a service connection, a child), or by the first call
    /// that finds the child's socket (a parent); `Err` when there is none
    /// (`None`: the peer is gone; `Some`: it broke the protocol, why).
    linked: OnceLock<Result<Linked, Option<&'static str>>>,
    /// A parent's rendezvous with its child, until `linked` is set.
    pending: Mutex<Option<Rendezvous>>,
    names: Mutex<Names>,
    /// The names of the first channels (a run-time channel may not reuse one).
    first: Vec<String>,
    peer: PeerProcess,
    /// The mode this side's receivers start in.
    mode: ReceiveMode,
}

impl RuntimeChannels {
    fn with(
        first: Vec<String>,
        peer: PeerProcess,
        mode: ReceiveMode,
        pending: Option<Rendezvous>,
    ) -> RuntimeChannels {
        RuntimeChannels {
            linked: OnceLock::new(),
            pending: Mutex::new(pending),
            names: Mutex::new(Names {
                names: Vec::new(),
                accepted: 0,
                limit: DEFAULT_CHANNEL_LIMIT,
            }),
            first,
            peer,
            mode,
        }
    }

    /// Over a connected control socket `sock` (`None`: there is none, so
    /// every call is `Disconnected`); segments the peer opens must be
    /// owned by `peer_uid` when given.
    pub(crate) fn connected(
        sock: Option<OwnedFd>,
        peer_uid: Option<u32>,
        first: Vec<String>,
        peer: PeerProcess,
        mode: ReceiveMode,
    ) -> RuntimeChannels {
        let runtime = RuntimeChannels::with(first, peer, mode, None);
        let linked = sock.map(|sock| Linked {
            control: Control::watching(sock, runtime.peer.try_clone()),
            peer_uid,
        });
        let _ = runtime.linked.set(linked.ok_or(None));
        runtime
    }

    /// A parent's, whose child's socket is found at the first call.
    pub(crate) fn pending(
        rendezvous: Rendezvous,
        first: Vec<String>,
        peer: PeerProcess,
        mode: ReceiveMode,
    ) -> RuntimeChannels {
        RuntimeChannels::with(first, peer, mode, Some(rendezvous))
    }

    /// Makes `segment`'s ends watch the peer process.
    pub(crate) fn watch_peer(&self, segment: &Segment) {
        match &self.peer {
            // Without a copy (out of descriptors) the liveness word remains.
            PeerProcess::Pidfd(fd) => {
                if let Ok(fd) = fd.try_clone() {
                    segment.watch_process(fd);
                }
            }
            PeerProcess::Child(pid) => segment.watch_child(*pid),
            PeerProcess::Unknown => {}
        }
    }

    fn names(&self) -> MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The control socket, waiting until `deadline` for a parent's
    /// rendezvous with its child to finish.
    fn link(&self, deadline: Option<Instant>) -> Result<&Linked, ServiceError> {
        loop {
            if let Some(linked) = self.linked.get() {
                return linked.as_ref().map_err(|why| match why {
                    Some(reason) => ServiceError::Protocol { reason },
                    None => ServiceError::Disconnected,
                });
            }
            // A deadline already past (a `try_` form) never waits on the
            // lock, held for up to a poll slice by another waiter: nothing
            // found yet is the answer.
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            let mut pending = if expired {
                match self.pending.try_lock() {
                    Ok(guard) => guard,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => return Err(ServiceError::Timeout),
                }
            } else {
                self.pending.lock().unwrap_or_else(|p| p.into_inner())
            };
            let Some(rendezvous) = pending.as_mut() else {
                continue; // another thread just set `linked`
            };
            let found = match rendezvous.step() {
                Step::Linked { sock, peer_uid } => Ok(Linked {
                    control: Control::watching(sock, self.peer.try_clone()),
                    peer_uid,
                }),
                Step::Gone(why) => Err(why),
                Step::Pending => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(ServiceError::Timeout);
                    }
                    let left = deadline.map_or(SLICE, |d| (d - now).min(SLICE));
                    // Under the lock: other callers wait one slice at most.
                    rendezvous.wait(left).map_err(ServiceError::io("poll"))?;
                    continue;
                }
            };
            let _ = self.linked.set(found);
            // The listener and the unused socket go now.
            *pending = None;
        }
    }

    /// Opens channel `config` and waits until `deadline` for the peer to
    /// accept it; returns this side's typed ends.
    pub(crate) fn open<Out: Encode, In: Decode>(
        &self,
        config: ChannelConfig,
        deadline: Option<Instant>,
    ) -> Result<(Sender<Out>, Receiver<In>), ServiceError> {
        let (tx, rx) = self.open_taking(
            config,
            deadline,
            codec::fingerprint::<Out>(),
            codec::fingerprint::<In>(),
        )?;
        Ok((Sender::from_raw(tx), Receiver::from_raw(rx)))
    }

    /// [`RuntimeChannels::open`] with raw byte ends.
    pub(crate) fn open_raw(
        &self,
        config: ChannelConfig,
        deadline: Option<Instant>,
    ) -> Result<(RawSender, RawReceiver), ServiceError> {
        self.open_taking(
            config,
            deadline,
            codec::RAW_FINGERPRINT,
            codec::RAW_FINGERPRINT,
        )
    }

    fn open_taking(
        &self,
        config: ChannelConfig,
        deadline: Option<Instant>,
        out_fp: u64,
        in_fp: u64,
    ) -> Result<(RawSender, RawReceiver), ServiceError> {
        let name = config.name().to_owned();
        let segment = self.open_segment(config, deadline)?;
        segment
            .take(&name, out_fp, in_fp, self.mode)
            .map_err(ServiceError::Channel)
    }

    /// Sets how many channels this side accepts from the peer.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.names().limit = limit;
    }

    /// Builds, sends and waits for the peer to take a one-channel segment.
    fn open_segment(
        &self,
        config: ChannelConfig,
        deadline: Option<Instant>,
    ) -> Result<Segment, ServiceError> {
        let link = self.link(deadline)?;
        let name = config.name().to_owned();
        {
            let mut names = self.names();
            if self.first.contains(&name) || names.names.contains(&name) {
                return Err(ServiceError::ChannelRefused {
                    reason: "duplicate name",
                });
            }
            names.names.push(name.clone());
        }
        let result = self.open_reserved(link, config, deadline);
        if result.is_err() {
            self.names().names.retain(|n| *n != name);
        }
        result
    }

    fn open_reserved(
        &self,
        link: &Linked,
        config: ChannelConfig,
        deadline: Option<Instant>,
    ) -> Result<Segment, ServiceError> {
        let (segment, memfd) = Segment::create_sealed(&[config]).map_err(ServiceError::Segment)?;
        self.watch_peer(&segment);
        let size = shm::stat(&memfd).map_err(ServiceError::io("fstat"))?.size;
        let id = link.control.send_open(&memfd, size)?;
        drop(memfd);
        match link.control.wait_answer(id, deadline)? {
            // The peer claims before it answers (`accept`): an answer
            // without a claim would leave our ends blind to its death (no
            // liveness word to watch).
            Ok(()) if segment.is_claimed() => Ok(segment),
            Ok(()) => Err(ServiceError::Protocol {
                reason: "the peer accepted a channel without claiming its segment",
            }),
            Err(why) => Err(ServiceError::ChannelRefused {
                reason: match why {
                    ChannelRefusal::Limit => "limit",
                    ChannelRefusal::Duplicate => "duplicate name",
                    ChannelRefusal::Invalid => "invalid segment",
                },
            }),
        }
    }

    /// [`RuntimeChannels::accept`] without waiting: `Ok(None)` when the
    /// peer has opened nothing (the `try_accept_channel` of every user).
    pub(crate) fn try_accept(&self) -> Result<Option<OpenedChannel>, ServiceError> {
        match self.accept(Some(Instant::now())) {
            Ok(opened) => Ok(Some(opened)),
            Err(ServiceError::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until `deadline` for the peer to open a channel, checks and
    /// claims it; refused requests are answered and the wait goes on.
    pub(crate) fn accept(&self, deadline: Option<Instant>) -> Result<OpenedChannel, ServiceError> {
        let link = self.link(deadline)?;
        loop {
            let (id, fd, size) = link
                .control
                .wait(deadline, |state| state.waiting.pop_front())?;
            match self.check_opened(link, fd, size) {
                Ok(opened) => {
                    link.control.answer(id, Ok(()));
                    return Ok(opened);
                }
                Err(why) => link.control.answer(id, Err(why)),
            }
        }
    }

    /// Checks a segment the peer opened, claims it and records its name.
    fn check_opened(
        &self,
        link: &Linked,
        fd: OwnedFd,
        size: u64,
    ) -> Result<OpenedChannel, ChannelRefusal> {
        let full = {
            let names = self.names();
            names.accepted >= names.limit
        };
        if full {
            return Err(ChannelRefusal::Limit);
        }
        let segment = Segment::open_sealed(fd, Some(size), link.peer_uid)
            .map_err(|_| ChannelRefusal::Invalid)?;
        self.watch_peer(&segment);
        let names: Vec<String> = segment.channel_names().map(str::to_owned).collect();
        let [name] = <[String; 1]>::try_from(names).map_err(|_| ChannelRefusal::Invalid)?;
        let mut names = self.names();
        if names.accepted >= names.limit {
            return Err(ChannelRefusal::Limit);
        }
        if self.first.contains(&name) || names.names.contains(&name) {
            return Err(ChannelRefusal::Duplicate);
        }
        names.names.push(name.clone());
        names.accepted += 1;
        Ok(OpenedChannel {
            segment,
            name,
            mode: self.mode,
        })
    }
}

/// A channel the peer opened at run time, accepted with
/// [`ServiceConnection::accept_channel`](crate::ServiceConnection::accept_channel),
/// [`Child::accept_channel`](crate::Child::accept_channel) or
/// [`Connection::accept_channel`](crate::Connection::accept_channel): take
/// its ends once.
///
/// Its receivers start in the mode of the side that accepted it:
/// [`ReceiveMode::Copy`] for a service connection and for a parent,
/// [`ReceiveMode::InPlace`] for a spawned child (which trusts the parent
/// that spawned it, as for its first channels).
///
/// ```no_run
/// # let conn = remora::connect_service("svc")?;
/// let opened = conn.accept_channel()?;
/// println!("the peer opened {:?}", opened.name());
/// let (tx, rx) = opened.channel::<u64, String>()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OpenedChannel {
    segment: Segment,
    name: String,
    mode: ReceiveMode,
}

impl OpenedChannel {
    /// The channel's name, as the peer declared it.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// assert!(!conn.accept_channel()?.name().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This side's typed ends (a sender of `Out`, a receiver of `In`;
    /// the opener's types swapped).
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let (mut tx, mut rx) = conn.accept_channel()?.channel::<u64, u64>()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel<Out: Encode, In: Decode>(
        &self,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        let (tx, rx) = self.segment.take(
            &self.name,
            codec::fingerprint::<Out>(),
            codec::fingerprint::<In>(),
            self.mode,
        )?;
        Ok((Sender::from_raw(tx), Receiver::from_raw(rx)))
    }

    /// This side's raw byte ends.
    ///
    /// ```no_run
    /// # let conn = remora::connect_service("svc")?;
    /// let (mut tx, mut rx) = conn.accept_channel()?.raw_channel()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_channel(&self) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.segment.take(
            &self.name,
            codec::RAW_FINGERPRINT,
            codec::RAW_FINGERPRINT,
            self.mode,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A `try_` form (deadline already past) returns `Timeout` at once
    /// while another caller holds the rendezvous lock (as a waiter does
    /// for a poll slice), instead of waiting for it.
    #[test]
    fn an_expired_deadline_never_waits_on_the_rendezvous_lock() {
        let (rendezvous, _child_end) = Rendezvous::create().unwrap();
        let runtime = RuntimeChannels::pending(
            rendezvous,
            Vec::new(),
            PeerProcess::Unknown,
            ReceiveMode::Copy,
        );
        let held = runtime.pending.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let r = runtime.link(Some(Instant::now())).map(drop);
                tx.send(r).unwrap();
            });
            let got = rx.recv_timeout(Duration::from_secs(10));
            drop(held);
            let got = got.expect("the try_ call waited on the lock");
            assert!(matches!(got, Err(ServiceError::Timeout)), "{got:?}");
        });
    }
}
