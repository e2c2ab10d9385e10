//! How the child gets its pipe ends: the `pipes:` variable, the message
//! on the control socket, the `/proc` fallback and the claim. Design and
//! trade-offs: ARCHITECTURE.md, "The FIFO transport".
//!
//! ```text
//! pipes:<parent pid>:<claim end>:<channel>:<channel>...
//! channel = <capacity>.<wait hint>.<hex name>.<c2p write end>.<p2c read end>
//! end     = <fd>.<dev>.<ino>   (the parent's number, the pipe's identity)
//! ```

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{self, ChannelConfig};
use crate::error::OpenError;
use crate::sys::inherit::{Handed, open_in_proc};
use crate::sys::{pipe, socket};
use crate::wait::WaitStrategy;

/// The data of the hand-over message (its descriptors are the ends).
pub(super) const TAG: &[u8] = b"remora-pipes-1";

/// What `REMORA_CHANNEL` tells the child.
#[derive(Debug, PartialEq)]
pub(crate) struct HandOver {
    pub(super) pid: u32,
    pub(super) channels: Vec<ChannelConfig>,
    /// The claim pipe's read end, then per channel the child's write and
    /// read end: the message's descriptors, in order.
    pub(super) ends: Vec<Handed>,
}

/// Set by the first [`HandOver::take`] in this process.
static TRIED: AtomicBool = AtomicBool::new(false);

impl HandOver {
    /// The variable's value after `pipes:`.
    pub(super) fn encode(&self) -> String {
        let end = |h: &Handed| format!("{}.{}.{}", h.fd, h.dev, h.ino);
        let mut out = format!("{}:{}", self.pid, end(&self.ends[0]));
        for (c, pair) in self.channels.iter().zip(self.ends[1..].chunks(2)) {
            let name: String = c.name().bytes().map(|b| format!("{b:02x}")).collect();
            let (hint, tx, rx) = (c.wait.to_hint(), end(&pair[0]), end(&pair[1]));
            out += &format!(":{}.{hint}.{name}.{tx}.{rx}", c.capacity);
        }
        out
    }

    /// Parses what follows `pipes:`, strictly; `None` if anything is off.
    pub(crate) fn decode(spec: &str) -> Option<HandOver> {
        let mut parts = spec.split(':');
        let pid = number(parts.next()?)?;
        let mut claim = parts.next()?.split('.');
        let mut ends = vec![handed(&mut claim)?];
        claim.next().is_none().then_some(())?;
        let mut channels = Vec::new();
        for part in parts {
            let mut f = part.split('.');
            let (capacity, hint) = (number(f.next()?)?, number(f.next()?)?);
            let config = ChannelConfig::new(unhex(f.next()?)?)
                .capacity(capacity)
                .wait_strategy(WaitStrategy::from_hint(hint));
            ends.extend([handed(&mut f)?, handed(&mut f)?]);
            f.next().is_none().then_some(())?;
            channels.push(config);
        }
        // First: it caps the channels (so the ends) before the quadratic
        // check for a number named twice.
        config::validate(&channels).ok()?;
        let fds = ends.iter().map(|h| h.fd);
        let twice = (fds.clone().enumerate()).any(|(i, n)| fds.clone().skip(i + 1).any(|m| m == n));
        (!twice).then_some(HandOver {
            pid,
            channels,
            ends,
        })
    }

    /// Child side: the ends, from the message on `sock` (the inherited
    /// control socketpair) if given, else through the parent's `/proc`,
    /// and the claim. One try per process: later ones are
    /// `AlreadyClaimed`.
    pub(super) fn take(&self, sock: Option<BorrowedFd<'_>>) -> Result<Vec<OwnedFd>, OpenError> {
        // AcqRel: exactly one caller in the process sees `false` and
        // tries; the others see its try.
        if TRIED.swap(true, Ordering::AcqRel) {
            return Err(OpenError::AlreadyClaimed);
        }
        match sock {
            Some(sock) => self.receive(sock),
            None => self.open_in_proc(),
        }
    }

    /// The message the parent queued on `sock` before the spawn, and the
    /// claim. It is received once, by one process: nothing there is
    /// `AlreadyClaimed` (as is a claim pipe already drained: a `/proc`
    /// taker came first).
    /// It comes from the parent's end of a socketpair nobody else holds,
    /// so its ends are not checked against the variable (`/proc`'s are).
    fn receive(&self, sock: BorrowedFd<'_>) -> Result<Vec<OwnedFd>, OpenError> {
        let mut buf = [0u8; 32];
        let got = match socket::recv_fds(sock, &mut buf, socket::MAX_HANDED_FDS) {
            Ok(got) if got.len == 0 && got.fds.is_empty() => return Err(OpenError::AlreadyClaimed),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(OpenError::AlreadyClaimed);
            }
            Err(e) => return Err(OpenError::io("recvmsg")(e)),
        };
        // The message came, so its first end is the claim pipe's, and with
        // it in hand we hold every end: claim now, whatever follows (a
        // failure below still ends the hand-over, so the parent sees us
        // hang up).
        if got.fds.first().is_some_and(|first| !claim(first)) {
            return Err(OpenError::AlreadyClaimed);
        }
        let whole = !got.truncated && !got.control_truncated && &buf[..got.len] == TAG;
        if whole && got.fds.len() == self.ends.len() {
            return (got.fds.into_iter().map(pipe::above_stdio))
                .collect::<io::Result<Vec<_>>>()
                .map_err(OpenError::io("fcntl"));
        }
        let why = match got.control_truncated {
            true => "the hand-over message came cut short (out of descriptors?)",
            false => "the hand-over message is not the one described",
        };
        Err(OpenError::HandOverLost {
            path: "the control socket".to_owned(),
            source: io::Error::other(why),
        })
    }

    /// The parent's kept copies, as `/proc/<parent>/fd/<n>`, each checked
    /// against the variable, then the claim (last: only a process that
    /// holds every end may end the hand-over). On a failure after the claim
    /// end is open, the claim byte is read all the same: the hand-over is
    /// over, the parent drops its copies and sees this process hang up.
    fn open_in_proc(&self) -> Result<Vec<OwnedFd>, OpenError> {
        // The claim end, then per channel our write and our read end.
        let access = [libc::O_RDONLY].into_iter();
        let access = access.chain([libc::O_WRONLY, libc::O_RDONLY].into_iter().cycle());
        let mut fds = Vec::with_capacity(self.ends.len());
        for (h, access) in self.ends.iter().zip(access) {
            // Above 0-2 like every other end (a process that closed its
            // stdio would otherwise get a pipe end as its stdout).
            let taken = open_in_proc(self.pid, *h, access).map_err(OpenError::from);
            match taken.and_then(|fd| pipe::above_stdio(fd).map_err(OpenError::io("fcntl"))) {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    if let Some(first) = fds.first() {
                        claim(first);
                    }
                    return Err(e);
                }
            }
        }
        claim(&fds[0])
            .then_some(fds)
            .ok_or(OpenError::AlreadyClaimed)
    }
}

/// Reads the claim pipe's one byte: whoever does owns the set, and the
/// parent, seeing the pipe empty, drops its copies (see `link`).
fn claim(fd: &OwnedFd) -> bool {
    // Drained (end of file), or another reader is mid-read: not ours.
    matches!(pipe::read(fd.as_fd(), &mut [0]), Ok(1))
}

/// Plain decimal digits only (no sign, no blanks), in range.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| s.parse().ok()).flatten()
}

/// A name as two lowercase or uppercase hex digits per byte, UTF-8.
fn unhex(s: &str) -> Option<String> {
    let hex = s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit());
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok());
    String::from_utf8(hex.then(|| bytes.collect::<Option<_>>())??).ok()
}

/// An end: exactly three fields, `<fd>.<dev>.<ino>`, of a pipe.
fn handed<'a>(fields: &mut impl Iterator<Item = &'a str>) -> Option<Handed> {
    Some(Handed {
        fd: number(fields.next()?)?,
        dev: number(fields.next()?)?,
        ino: number(fields.next()?)?,
        kind: libc::S_IFIFO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(channels: usize, name_len: usize) -> HandOver {
        let channels: Vec<_> = (0..channels)
            .map(|i| {
                ChannelConfig::new(format!("{i:0>name_len$}")).wait_strategy(WaitStrategy::Spin)
            })
            .collect();
        let ends = (0..1 + 2 * channels.len())
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
            good.replace("303030", "30+030"),
            good.replace("303030", "30303"),
            format!("{good}:"),
            format!("{good}.7"),
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
