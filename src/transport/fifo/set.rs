//! A FIFO set: every channel of one parent/child pair, as the parent
//! creates it before spawning and the child takes it in `connect`, and the
//! hand-over between them.
//!
//! Per channel, two `pipe2` pipes (parent to child, child to parent), and
//! one attach pipe per set. The child inherits its ends (close-on-exec
//! cleared in it alone, by the spawner) and finds them from
//! `REMORA_CHANNEL`:
//!
//! ```text
//! pipes:<parent pid>:<attach end>:<channel>:<channel>...
//! channel = <capacity>.<wait hint>.<hex name>.<c2p write end>.<p2c read end>
//! end     = <fd>.<dev>.<ino>   (the child's number, the pipe's identity)
//! ```
//!
//! Every number is plain decimal; the whole value is parsed strictly and
//! the channels checked with the parent's own `config::validate`. The
//! child takes its ends (`sys::inherit::take_handed`: inherited, else
//! `/proc/<parent>/fd/<n>`, identity-checked), then writes one byte to the
//! attach pipe (see `link`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use super::link::{FifoEnd, FifoLink, Handover};
use super::receiver::{Expect, FifoReceiver};
use super::sender::FifoSender;
use crate::codec::ANY_FINGERPRINT;
use crate::config::{self, ChannelConfig};
use crate::error::{ChannelError, OpenError};
use crate::peer::PeerWatch;
use crate::side::Direction;
use crate::sys::inherit::{Handed, take_handed};
use crate::sys::signal::SigpipeBlock;
use crate::sys::{fd, pipe};
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
    /// Parent side: the `REMORA_CHANNEL` value and the descriptors the
    /// child inherits.
    env: String,
    handed: Vec<RawFd>,
    channels: Vec<ChannelConfig>,
    ends: Mutex<Vec<Option<Ends>>>,
}

/// What `REMORA_CHANNEL` tells the child (see the module docs).
#[derive(Debug, PartialEq)]
pub(crate) struct HandOver {
    pid: u32,
    channels: Vec<ChannelConfig>,
    /// The attach pipe's end, then per channel its c2p and p2c ends.
    ends: Vec<Handed>,
}

impl FifoSet {
    /// Parent side: makes the pipes, and the variable that describes the
    /// child's ends.
    pub(crate) fn create(configs: &[ChannelConfig]) -> Result<FifoSet, OpenError> {
        config::validate(configs)?;
        let new_pipe = || pipe::pipe().map_err(OpenError::io("pipe2"));
        let (attach, attach_end) = new_pipe()?;
        let mut kept = vec![attach_end];
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
        let handed = kept.iter().map(AsRawFd::as_raw_fd).collect();
        let link = Arc::new(FifoLink::new(Some(Handover {
            attach,
            _kept: kept,
        })));
        let mut set = FifoSet::new(link, Direction::ToCreator, configs.to_vec(), pipes);
        (set.env, set.handed) = (env, handed);
        Ok(set)
    }

    /// Child side: takes the ends `hand_over` describes and tells the
    /// parent so.
    pub(crate) fn open(hand_over: HandOver) -> Result<FifoSet, OpenError> {
        // The attach end, then per channel our write and our read end.
        let access = [libc::O_WRONLY, libc::O_WRONLY, libc::O_RDONLY];
        let access = access
            .into_iter()
            .chain(access[1..].iter().copied().cycle());
        let ends: Vec<_> = hand_over.ends.iter().copied().zip(access).collect();
        let mut fds = take_handed(hand_over.pid, &ends)?.into_iter();
        // Tell the parent we are done with the hand-over, whether we got
        // every end or not: it drops its copies, so it sees us hang up at
        // once if we gave up. (No reader left: the parent is gone, and the
        // pipes report it. EPIPE is ignored.)
        if let Some(Ok(attach)) = fds.next() {
            let mut sigpipe = SigpipeBlock::new();
            if fd::write(attach.as_fd(), &[1]).is_err() {
                sigpipe.discard();
            }
        }
        let mut fds = fds.collect::<Result<Vec<_>, _>>()?.into_iter();
        let mut pipes = Vec::with_capacity(hand_over.channels.len());
        while let (Some(tx), Some(rx)) = (fds.next(), fds.next()) {
            pipes.push([tx, rx]);
        }
        // No watch on the parent: its death closes its ends of every pipe
        // (they are close-on-exec: no wrapper keeps them open).
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
            handed: Vec::new(),
            channels,
            ends,
        }
    }

    /// What follows `pipes:` in the `REMORA_CHANNEL` value that describes
    /// this set to the child.
    pub(crate) fn env_value(&self) -> &str {
        &self.env
    }

    /// The descriptors the child must inherit.
    pub(crate) fn handed_fds(&self) -> &[RawFd] {
        &self.handed
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
        let mut out = format!("{}:{}", self.pid, end(&self.ends[0]));
        for (c, pair) in self.channels.iter().zip(self.ends[1..].chunks(2)) {
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
        let attach: Vec<&str> = parts.next()?.split('.').collect();
        let mut ends = vec![handed(&attach)?];
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
        let fds = ends.iter().map(|h| h.fd);
        let twice = fds
            .clone()
            .enumerate()
            .any(|(i, n)| fds.clone().skip(i + 1).any(|m| m == n));
        if twice || config::validate(&channels).is_err() {
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
    })
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
        let ends = (0..1 + 2 * channels.len())
            .map(|i| Handed {
                fd: 1000 + i as RawFd,
                dev: 15,
                ino: 4_000_000_000 + i as u64,
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
            good.replace(".1002.", ".1001."),
            // A capacity that is not a power of two.
            good.replacen(":1048576.", ":1000.", 1),
            String::new(),
        ];
        for value in bad {
            assert_eq!(HandOver::decode(&value), None, "{value}");
        }
    }
}
