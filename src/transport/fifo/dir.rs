//! The FIFO directory and its manifest (layout and life cycle: see
//! ARCHITECTURE.md, "The FIFO transport").
//!
//! `remora-<pid>-XXXXXX` (0700) under `$XDG_RUNTIME_DIR` if usable, else
//! the temp dir, holds `<i>.p2c` / `<i>.c2p` (FIFOs, 0600) and `manifest`
//! (0600): `REMFIFO 3 <count>\n`, then one `<capacity> <wait hint> <hex
//! name>\n` per channel. Channel names never appear in paths.

use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::config::{self, ChannelConfig};
use crate::error::OpenError;
use crate::side::Direction;
use crate::stale;
use crate::sys::{fd, fifo};
use crate::wait::WaitStrategy;

pub(super) const MANIFEST: &CStr = c"manifest";
const MAGIC: &str = "REMFIFO 3 ";
/// No valid manifest is larger (32 channels, 48-byte names: about 4 KiB).
const MAX_MANIFEST: u64 = 8192;

/// The FIFO carrying `direction` of channel `index`: its name in the
/// directory is an index, never a user's channel name.
pub(super) fn fifo_name(direction: Direction, index: usize) -> CString {
    let suffix = match direction {
        Direction::ToOpener => "p2c",
        Direction::ToCreator => "c2p",
    };
    CString::new(format!("{index}.{suffix}")).expect("no NUL in a formatted index")
}

/// Stale FIFO directories: exactly what `create_locked` makes (`remora-
/// <pid>-<6 mkdtemp characters>`, mode 0700) holding a manifest of this
/// version, unlocked. Anything else named like that is not ours to touch,
/// and even a stale directory loses only the files we put there: a
/// directory holding anything else stays (a review found the sweep removing
/// a user's `remora-1-notes/` whole).
struct StaleDir;

impl stale::Stale for StaleDir {
    fn ours(name: &str) -> bool {
        name.strip_prefix("remora-")
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, suffix)| {
                pid.parse::<u32>().is_ok()
                    && suffix.len() == 6
                    && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
            })
    }

    fn open(dir: &Path, name: &str) -> io::Result<OwnedFd> {
        // O_NOFOLLOW | O_DIRECTORY: a symlink or a file is not ours.
        fifo::open_dir(&dir.join(name))
    }

    /// A 0700 directory with a regular-file manifest of this version. No
    /// manifest (not written yet, or claimed by a child that is removing
    /// the directory itself) means hands off: at worst a directory whose
    /// creator and child both died mid-hand-over stays behind.
    fn lock_aware(object: &OwnedFd) -> bool {
        let private_dir = fd::stat(object.as_fd()).is_ok_and(|id| id.mode & 0o7777 == 0o700);
        // O_NONBLOCK: a FIFO planted under the manifest's name must not
        // block the sweep (and with it every spawn).
        let manifest = fifo::open_at(
            object.as_fd(),
            MANIFEST,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        );
        let Ok(file) = manifest else {
            return false;
        };
        let mut head = [0u8; MAGIC.len()];
        private_dir
            && fd::stat(file.as_fd()).is_ok_and(|id| id.mode & libc::S_IFMT == libc::S_IFREG)
            && fd::pread(file.as_fd(), &mut head, 0).is_ok_and(|n| n == head.len())
            && head == *MAGIC.as_bytes()
    }

    /// Removes the files we put there (the manifest and the FIFOs of up to
    /// `MAX_CHANNELS` channels), then the directory if that left it empty.
    /// Works on the directory the sweep opened and locked (not on a path
    /// that could meanwhile lead elsewhere), save the final `rmdir`, which
    /// fails on anything but an empty directory.
    fn remove(dir: &Path, name: &str, object: &OwnedFd) {
        let _ = fifo::unlink_at(object.as_fd(), MANIFEST);
        for index in 0..crate::layout::MAX_CHANNELS {
            for direction in [Direction::ToOpener, Direction::ToCreator] {
                let _ = fifo::unlink_at(object.as_fd(), &fifo_name(direction, index));
            }
        }
        // Fails (and leaves it) unless the directory is now empty.
        let _ = std::fs::remove_dir(dir.join(name));
    }
}

/// Makes a fresh private directory holding its creator lock (see `stale`),
/// after sweeping stale ones from the same place: `(path, locked fd)`.
pub(super) fn create_locked() -> io::Result<(PathBuf, OwnedFd)> {
    let mut bases: Vec<PathBuf> = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .into_iter()
        .collect();
    bases.push(std::env::temp_dir());
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for base in bases {
        stale::sweep::<StaleDir>(&base);
        let template = base.join(format!("remora-{}-XXXXXX", std::process::id()));
        // A sweep may take a fresh directory even before we open it (to
        // lock it; `create_locked` handles the rest): make another.
        let create = || {
            let mut tries = 0;
            loop {
                let path = fifo::mkdtemp(&template)?;
                match fifo::open_dir(&path) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) && tries < 3 => tries += 1,
                    fd => return Ok((path, fd?)),
                }
            }
        };
        match stale::create_locked(create, |path| fifo::open_dir(path)) {
            Ok(made) => return Ok(made),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The manifest's bytes.
pub(super) fn encode(channels: &[ChannelConfig]) -> String {
    let mut out = format!("{MAGIC}{}\n", channels.len());
    for c in channels {
        let _ = write!(out, "{} {} ", c.capacity, c.wait.to_hint());
        c.name().bytes().for_each(|b| {
            let _ = write!(out, "{b:02x}");
        });
        out.push('\n');
    }
    out
}

/// Reads and validates the manifest (`file`, already claimed): the same
/// rules as the parent's declarations.
pub(super) fn decode(file: OwnedFd) -> Result<Vec<ChannelConfig>, OpenError> {
    let bad = || OpenError::BadLayout {
        reason: "the FIFO manifest is malformed",
    };
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(MAX_MANIFEST)
        .read_to_end(&mut bytes)
        .map_err(OpenError::io("read manifest"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    // A truncation loses the final newline, or lines.
    let body = text.strip_prefix(MAGIC).and_then(|t| t.strip_suffix('\n'));
    let (count, lines) = body.and_then(|b| b.split_once('\n')).ok_or_else(bad)?;
    let mut channels = Vec::new();
    for line in lines.split('\n') {
        let mut fields = line.split(' ');
        let mut next = || fields.next().ok_or_else(bad);
        let capacity = next()?.parse::<usize>().map_err(|_| bad())?;
        let wait = WaitStrategy::from_hint(next()?.parse().map_err(|_| bad())?);
        let hex = next()?.as_bytes();
        if fields.next().is_some() || hex.len() % 2 != 0 {
            return Err(bad());
        }
        let name = hex
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .and_then(|name| String::from_utf8(name).ok())
            .ok_or_else(bad)?;
        channels.push(
            ChannelConfig::new(name)
                .capacity(capacity)
                .wait_strategy(wait),
        );
    }
    if count != channels.len().to_string() || config::validate(&channels).is_err() {
        return Err(bad());
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_is_an_error() {
        let channels = vec![
            ChannelConfig::new("echo")
                .capacity(4096)
                .wait_strategy(WaitStrategy::Spin),
            ChannelConfig::new("événements 2"),
        ];
        let bytes = encode(&channels).into_bytes();
        let decode_bytes = |b: &[u8]| {
            let (r, mut w) = std::io::pipe().unwrap();
            std::io::Write::write_all(&mut w, b).unwrap();
            drop(w);
            decode(OwnedFd::from(r))
        };
        assert_eq!(decode_bytes(&bytes).unwrap(), channels);
        for cut in 0..bytes.len() {
            assert!(decode_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [
            "REMFIFO 3 0\n",
            "REMFIFO 3 1\n4096 0 6\n",
            "REMFIFO 3 1\n4000 0 61\n",
            "REMFIFO 3 1\n4096 0 61 x\n",
            "REMFIFO 3 1\n4096 0 61\n4096 0 62\n",
        ] {
            assert!(decode_bytes(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
