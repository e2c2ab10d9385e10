//! A FIFO set: every channel of one parent/child pair, as the parent
//! creates it before spawning and the child takes it in `connect`, and the
//! hand-over between them.
//!
//! Per channel, two `pipe2` pipes (parent to child, child to parent); per
//! set, one attach pipe and one claim pipe (holding one byte). Before the
//! child runs, the parent queues ONE message on the spawned child's
//! control socketpair (`runtime::spawned`) carrying the child's ends with
//! `SCM_RIGHTS`: the claim pipe's read end, the attach pipe's write end,
//! per channel the child's write and read end. Nothing is inherited: no
//! wrapper or helper between parent and child holds a pipe end, so the
//! child's death or hang-up is seen at once. `REMORA_CHANNEL` describes
//! the same ends:
//!
//! ```text
//! pipes:<parent pid>:<claim end>:<attach end>:<channel>:<channel>...
//! channel = <capacity>.<wait hint>.<hex name>.<c2p write end>.<p2c read end>
//! end     = <fd>.<dev>.<ino>   (the parent's number, the pipe's identity)
//! ```
//!
//! Every number is plain decimal; the whole value is parsed strictly and
//! the channels checked with the parent's own `config::validate`. The
//! child reads the message from the inherited socketpair (received once,
//! by one process: the claim), checks every end against the variable
//! (device, inode, a FIFO), and reads the claim byte. Without the
//! socketpair (a wrapper closed it) it opens the parent's kept copies as
//! `/proc/<parent>/fd/<n>` (`sys::inherit::open_in_proc`), the claim
//! pipe first: whoever reads its one byte owns the set, so a second
//! process (through `/proc` or after the message) gets `AlreadyClaimed`.
//! Then the child writes one byte to the attach pipe (see `link`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::link::{FifoEnd, FifoLink, Handover};
use super::receiver::{Expect, FifoReceiver};
use super::sender::FifoSender;
use crate::codec::ANY_FINGERPRINT;
use crate::config::{self, ChannelConfig};
use crate::error::{ChannelError, OpenError};
use crate::peer::PeerWatch;
use crate::side::Direction;
use crate::sys::inherit::{Handed, open_in_proc};
use crate::sys::signal::SigpipeBlock;
use crate::sys::{fd, pipe, socket};
use crate::wait::WaitStrategy;

/// One channel's two ends, until taken.
#[derive(Debug)]
struct Ends {
    tx: FifoSender,
    rx: FifoReceiver,
}

/// Every FIFO channel of one parent/child pair, on one side.
#[derive(Debug)]
pub(crate) struct FifoSet {
    link: Arc<FifoLink>,
    /// The direction this side receives on.
    incoming: Direction,
    /// Parent side: the `REMORA_CHANNEL` value.
    env: String,
    channels: Vec<ChannelConfig>,
    ends: Mutex<Vec<Option<Ends>>>,
}

/// What `REMORA_CHANNEL` tells the child (see the module docs).
#[derive(Debug, PartialEq)]
pub(crate) struct HandOver {
    pid: u32,
    channels: Vec<ChannelConfig>,
    /// The claim pipe's and the attach pipe's end, then per channel its
    /// c2p and p2c ends.
    ends: Vec<Handed>,
}

impl FifoSet {
    /// Parent side: makes the pipes, and the variable that describes the
    /// child's ends ([`FifoSet::queue`] hands them over).
    pub(crate) fn create(configs: &[ChannelConfig]) -> Result<FifoSet, OpenError> {
        config::validate(configs)?;
        let new_pipe = || pipe::pipe().map_err(OpenError::io("pipe2"));
        let (claim, claim_w) = new_pipe()?;
        // The one byte whoever claims the set reads. Our write end goes
        // now: a drained claim pipe reads as end of file.
        fd::write(claim_w.as_fd(), &[1]).map_err(OpenError::io("write"))?;
        drop(claim_w);
        let (attach, attach_end) = new_pipe()?;
        let mut kept = vec![claim, attach_end];
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
        let env = HandOver {
            pid: std::process::id(),
            channels: configs.to_vec(),
            ends,
        }
        .encode();
        let link = Arc::new(FifoLink::new(Some(Handover {
            attach,
            kept,
            queue: None,
        })));
        let mut set = FifoSet::new(link, Direction::ToCreator, configs.to_vec(), pipes);
        set.env = env;
        Ok(set)
    }

    /// Parent side, before the spawn: queues the child's ends on the
    /// control socketpair end `sock` (one message, [`HAND_OVER_TAG`]);
    /// `theirs` is the child's end, a copy of which we keep until settled
    /// to drain the message if the child never reads it (see
    /// `Handover::queue`).
    pub(crate) fn queue(&self, sock: BorrowedFd<'_>, theirs: BorrowedFd<'_>) -> io::Result<()> {
        let copy = theirs.try_clone_to_owned()?;
        self.link.keep_queue(copy);
        self.link
            .with_kept(|kept| {
                let fds: Vec<BorrowedFd<'_>> = kept.iter().map(AsFd::as_fd).collect();
                socket::send(sock, HAND_OVER_TAG, &fds)
            })
            .unwrap_or_else(|| Err(io::ErrorKind::NotConnected.into()))
    }

    /// Child side: takes the ends `hand_over` describes, from the message
    /// queued on `sock` (the inherited control socketpair) if given, else
    /// through the parent's `/proc`, and tells the parent so.
    pub(crate) fn open(
        hand_over: HandOver,
        sock: Option<BorrowedFd<'_>>,
    ) -> Result<FifoSet, OpenError> {
        // AcqRel: exactly one caller in the process sees `false` and
        // tries; the others (a second or racing `connect`) see its try.
        // One try per process, whatever its outcome: the parent drops its
        // copies once the first is over.
        if TRIED.swap(true, Ordering::AcqRel) {
            return Err(OpenError::AlreadyClaimed);
        }
        let fds = match sock {
            Some(sock) => receive(sock, &hand_over)?,
            None => take_in_proc(&hand_over)?,
        };
        let mut fds = fds.into_iter().skip(1); // the claim end has done its job
        let attach = fds.next().expect("counted");
        let mut pipes = Vec::with_capacity(hand_over.channels.len());
        while let (Some(tx), Some(rx)) = (fds.next(), fds.next()) {
            pipes.push([tx, rx]);
        }
        attached(&attach);
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
            Some(Ends {
                tx: FifoSender::new(end(tx), c.capacity),
                rx: FifoReceiver::new(end(rx), c.capacity),
            })
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
        let Some(mut taken) = ends[index].take() else {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        };
        let expect = Expect {
            in_fp: in_fp.unwrap_or(ANY_FINGERPRINT),
            out_fp: out_fp.unwrap_or(ANY_FINGERPRINT),
            direction: self.incoming,
        };
        if let Err(direction) = taken.rx.expect_hello(expect) {
            ends[index] = Some(taken);
            return Err(ChannelError::TypeMismatch {
                name: name.to_owned(),
                direction: direction.describe(),
            });
        }
        let Ends { mut tx, rx } = taken;
        let tx = out_fp.map(|fp| {
            tx.send_hello(fp, expect.in_fp);
            tx
        });
        Ok((tx, in_fp.and(Some(rx)), self.channels[index].wait))
    }
}

// Dropping a `FifoSet` leaves the kept copies to its `FifoLink`, shared
// by every end taken: the last of them drops them. Ends never taken are
// dropped with the set, so the child sees those directions hang up.

impl HandOver {
    /// The variable's value (see the module docs).
    fn encode(&self) -> String {
        let end = |h: &Handed| format!("{}.{}.{}", h.fd, h.dev, h.ino);
        let (claim, attach) = (end(&self.ends[0]), end(&self.ends[1]));
        let mut out = format!("{}:{claim}:{attach}", self.pid);
        for (c, pair) in self.channels.iter().zip(self.ends[2..].chunks(2)) {
            let name: String = c.name().bytes().map(|b| format!("{b:02x}")).collect();
            let hint = c.wait.to_hint();
            let (tx, rx) = (end(&pair[0]), end(&pair[1]));
            out += &format!(":{}.{hint}.{name}.{tx}.{rx}", c.capacity);
        }
        out
    }

    /// Parses what follows `pipes:`; `None` if anything is off.
    pub(crate) fn decode(spec: &str) -> Option<HandOver> {
        let mut parts = spec.split(':');
        let pid = number(parts.next()?)?;
        let claim: Vec<&str> = parts.next()?.split('.').collect();
        let attach: Vec<&str> = parts.next()?.split('.').collect();
        let mut ends = vec![handed(&claim)?, handed(&attach)?];
        let mut channels = Vec::new();
        for part in parts {
            let fields: Vec<&str> = part.split('.').collect();
            let &[capacity, hint, name, ..] = fields.as_slice() else {
                return None;
            };
            let (tx, rx) = (fields.get(3..6)?, fields.get(6..)?);
            ends.extend([handed(tx)?, handed(rx)?]);
            let name = (name.len() % 2 == 0).then_some(name)?.as_bytes();
            let name = name.chunks(2).map(|pair| {
                let pair = std::str::from_utf8(pair).ok()?;
                u8::from_str_radix(pair, 16).ok()
            });
            let name = String::from_utf8(name.collect::<Option<_>>()?).ok()?;
            let config = ChannelConfig::new(name)
                .capacity(number(capacity)?)
                .wait_strategy(WaitStrategy::from_hint(number(hint)?));
            channels.push(config);
        }
        // Validated first: it caps the channels (and so the ends) before
        // the quadratic check for a number named twice.
        config::validate(&channels).ok()?;
        let fds = ends.iter().map(|h| h.fd);
        let twice = fds
            .clone()
            .enumerate()
            .any(|(i, n)| fds.clone().skip(i + 1).any(|m| m == n));
        if twice {
            return None;
        }
        Some(HandOver {
            pid,
            channels,
            ends,
        })
    }
}

/// Plain decimal digits only (no sign, no blanks), in range.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| s.parse().ok()).flatten()
}

/// An end: exactly `<fd>.<dev>.<ino>`.
fn handed(fields: &[&str]) -> Option<Handed> {
    let &[fd, dev, ino] = fields else {
        return None;
    };
    Some(Handed {
        fd: number(fd)?,
        dev: number(dev)?,
        ino: number(ino)?,
        kind: libc::S_IFIFO,
    })
}

/// Set by the first [`FifoSet::open`] in this process.
static TRIED: AtomicBool = AtomicBool::new(false);

/// The data of the hand-over message (its descriptors are the ends).
pub(crate) const HAND_OVER_TAG: &[u8] = b"remora-pipes-1";

/// Child side: the ends from the message the parent queued on `sock`
/// before the spawn. Received once, by one process: nothing queued (or
/// the claim byte gone: a process took the set through `/proc`) is
/// `AlreadyClaimed`. Every end must be the one the variable names (device,
/// inode, a FIFO); if not, `HandOverLost`, after telling the parent the
/// hand-over is over (it then drops its copies, and sees us hang up).
fn receive(sock: BorrowedFd<'_>, hand_over: &HandOver) -> Result<Vec<OwnedFd>, OpenError> {
    let mut buf = [0u8; 32];
    let lost = |why: &str| OpenError::HandOverLost {
        path: "the control socket".to_owned(),
        source: io::Error::other(why.to_owned()),
    };
    let got = match socket::recv_fds(sock, &mut buf, socket::MAX_HANDED_FDS) {
        Ok(got) if got.len == 0 && got.fds.is_empty() => return Err(OpenError::AlreadyClaimed),
        Ok(got) => got,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(OpenError::AlreadyClaimed),
        Err(e) => return Err(OpenError::io("recvmsg")(e)),
    };
    let fds = (got.fds.into_iter().map(pipe::above_stdio))
        .collect::<io::Result<Vec<_>>>()
        .map_err(OpenError::io("fcntl"))?;
    let whole = !got.truncated && !got.control_truncated && &buf[..got.len] == HAND_OVER_TAG;
    if !whole || fds.len() != hand_over.ends.len() {
        return Err(lost("the hand-over message is not the one described"));
    }
    if !fds
        .iter()
        .zip(&hand_over.ends)
        .all(|(fd, h)| h.is(fd.as_fd()))
    {
        if hand_over.ends[1].is(fds[1].as_fd()) {
            attached(&fds[1]);
        }
        return Err(lost(
            "a received pipe end is not the one the variable names",
        ));
    }
    claim(&fds[0])?;
    Ok(fds)
}

/// Child side, without the socketpair: the parent's kept copies through
/// `/proc/<parent>/fd/<n>`, the claim pipe first.
fn take_in_proc(hand_over: &HandOver) -> Result<Vec<OwnedFd>, OpenError> {
    // Above 0-2 like every other end (a process that closed its stdio
    // would otherwise get a pipe end as its stdout).
    let take = |h: &Handed, access| -> Result<OwnedFd, OpenError> {
        let fd = open_in_proc(hand_over.pid, *h, access)?;
        pipe::above_stdio(fd).map_err(OpenError::io("F_DUPFD_CLOEXEC"))
    };
    let first = take(&hand_over.ends[0], libc::O_RDONLY)?;
    claim(&first)?;
    let mut fds = vec![first];
    // The attach end, then per channel our write and our read end.
    let access = [libc::O_WRONLY, libc::O_WRONLY, libc::O_RDONLY];
    let access = access
        .into_iter()
        .chain(access[1..].iter().copied().cycle());
    for (h, access) in hand_over.ends[1..].iter().zip(access) {
        match take(h, access) {
            Ok(fd) => fds.push(fd),
            Err(e) => {
                // Tell the parent we gave up: it drops its copies, so it
                // sees us hang up at once.
                if let Some(attach) = fds.get(1) {
                    attached(attach);
                }
                return Err(e);
            }
        }
    }
    Ok(fds)
}

/// Reads the claim pipe's one byte: whoever does owns the set.
fn claim(fd: &OwnedFd) -> Result<(), OpenError> {
    match pipe::read(fd.as_fd(), &mut [0]) {
        Ok(1) => Ok(()),
        // Drained (end of file), or another reader is mid-read.
        _ => Err(OpenError::AlreadyClaimed),
    }
}

/// Tells the parent the hand-over is over (one byte on the attach pipe).
/// No reader left: the parent is gone, and the pipes report it (EPIPE is
/// ignored).
fn attached(attach: &OwnedFd) {
    let mut sigpipe = SigpipeBlock::new();
    if fd::write(attach.as_fd(), &[1]).is_err() {
        sigpipe.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(channels: usize, name_len: usize) -> HandOver {
        let channels: Vec<_> = (0..channels)
            .map(|i| {
                let name = format!("{i:0>name_len$}");
                ChannelConfig::new(name).wait_strategy(WaitStrategy::Spin)
            })
            .collect();
        let ends = (0..2 + 2 * channels.len())
            .map(|i| Handed {
                fd: 1000 + i as std::os::fd::RawFd,
                dev: 15,
                ino: 4_000_000_000 + i as u64,
                kind: libc::S_IFIFO,
            })
            .collect();
        HandOver {
            pid: 4_000_000,
            channels,
            ends,
        }
    }

    #[test]
    fn round_trip_and_size() {
        let h = sample(2, 5);
        assert_eq!(HandOver::decode(&h.encode()), Some(h));
        let largest = sample(32, 48).encode();
        assert!(largest.len() < 6 * 1024, "{} bytes", largest.len());
        let typical = sample(4, 8).encode();
        assert!(typical.len() < 512, "{} bytes", typical.len());
    }

    #[test]
    fn malformed_values_are_refused() {
        let good = sample(1, 3).encode();
        assert!(HandOver::decode(&good).is_some());
        let bad = [
            good.replacen(':', ":+", 1),
            good.replacen('.', "..", 1),
            good.replace("303030", "3030z0"),
            good.replace("303030", "30303"),
            format!("{good}:"),
            // The same descriptor number twice.
            good.replace(".1003.", ".1001."),
            // A capacity that is not a power of two.
            good.replacen(":1048576.", ":1000.", 1),
            String::new(),
        ];
        for value in bad {
            assert_eq!(HandOver::decode(&value), None, "{value}");
        }
    }
}
