//! A FIFO set: every channel of one parent/child pair, as the parent creates
//! it before spawning and the child opens it in `connect`.
//!
//! # Open protocol (no open-order deadlock)
//!
//! Every descriptor is opened `O_NONBLOCK`, so no `open` ever waits for the
//! other side:
//!
//! 1. Parent, before spawning: `mkfifo` both FIFOs of each channel (0600),
//!    open each one `O_RDWR` (the placeholder, see `pipe`) and then with its
//!    real direction (write `p2c`, read `c2p`: both succeed because the
//!    placeholder is a reader and a writer), check with `fstat` that both
//!    are the FIFO we made, write the manifest, spawn.
//! 2. Child, in `connect`: check the directory (ours, 0700), claim it
//!    (`O_EXCL` create of `claim`: a second `connect` is refused), read and
//!    validate the manifest, open read `p2c` (always succeeds) and write
//!    `c2p` (succeeds: the parent holds readers), check each with `fstat`
//!    (a FIFO, ours, 0600), then remove the directory.
//! 3. Parent, on its next operation on each end: sees the directory gone and
//!    drops that end's placeholder; from then on EOF and `EPIPE` mean the
//!    child closed its end.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::dir::{self, CLAIM, Direction, MANIFEST};
use super::link::{DirHandle, FifoLink};
use super::manifest::{self, ChannelSpec, Manifest};
use super::pipe::Pipe;
use super::plan::plan;
use super::receiver::{Expect, FifoReceiver};
use super::sender::FifoSender;
use crate::channel::{RawReceiver, RawSender, ReceiveMode, RecvEnd, SendEnd};
use crate::codec::ANY_FINGERPRINT;
use crate::config::ChannelConfig;
use crate::error::{ChannelError, OpenError};
use crate::layout::MAX_CHANNELS;
use crate::peer::PeerWatch;
use crate::sys::{fd, fifo, shm};

/// Pipe buffers are asked for the channel capacity, within these bounds
/// (1 MiB is Linux's default `pipe-max-size` for unprivileged users).
const MIN_PIPE: usize = 4096;
const MAX_PIPE: usize = 1 << 20;

/// Which end of the set this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Parent,
    Child,
}

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
    side: Side,
    path: PathBuf,
    channels: Vec<ChannelSpec>,
    ends: Mutex<Vec<Option<Ends>>>,
}

impl FifoSet {
    /// Parent side: makes the directory, the FIFOs and the manifest.
    pub(crate) fn create(configs: &[ChannelConfig]) -> Result<FifoSet, OpenError> {
        let channels = plan(configs)?;
        // The descriptor keeps an exclusive `flock` on the directory for as
        // long as we own it: the stale sweep leaves locked directories alone.
        let (path, dir_fd) = dir::create_locked().map_err(OpenError::io("mkdtemp"))?;
        let cpath = match fifo::c_path(&path) {
            Ok(cpath) => cpath,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                return Err(OpenError::io("mkdtemp")(e));
            }
        };
        let link = Arc::new(FifoLink::parent(DirHandle {
            path: cpath,
            fd: dir_fd,
            channels: channels.len(),
        }));
        match populate(&link, &channels) {
            Ok(ends) => Ok(FifoSet {
                link,
                side: Side::Parent,
                path,
                ends: Mutex::new(ends.into_iter().map(Some).collect()),
                channels,
            }),
            Err(e) => {
                link.remove_dir();
                Err(e)
            }
        }
    }

    /// Child side: validates, claims and opens the set in directory `path`,
    /// then removes the directory.
    pub(crate) fn open(path: &Path) -> Result<FifoSet, OpenError> {
        let not_found = || OpenError::NotFound {
            name: path.display().to_string(),
        };
        let dir_fd = fifo::open_dir(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => not_found(),
            _ => OpenError::io("open")(e),
        })?;
        let id = fd::stat(dir_fd.as_fd()).map_err(OpenError::io("fstat"))?;
        check_ours(&id)?;
        if !id.is_dir() {
            return Err(OpenError::BadLayout {
                reason: "the FIFO path is not a directory",
            });
        }
        match fifo::create_at(dir_fd.as_fd(), CLAIM, 0o600) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(OpenError::AlreadyClaimed);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(not_found()),
            Err(e) => return Err(OpenError::io("create claim file")(e)),
        }
        let opened = open_claimed(dir_fd.as_fd());
        // Claimed: nobody else may use the directory, whether we succeeded
        // or not. Removing it also tells the parent we are done with it.
        let count = opened
            .as_ref()
            .map_or(MAX_CHANNELS, |(m, _)| m.channels.len());
        if let Ok(cpath) = fifo::c_path(path) {
            dir::remove(&cpath, dir_fd.as_fd(), count);
        }
        let (manifest, pipes) = opened?;
        // No process watch on the parent: its death closes its ends of
        // every FIFO, which our reads see as end of file and our writes as
        // EPIPE (the parent's descriptors are close-on-exec, so no wrapper
        // or grandchild keeps them open).
        let link = Arc::new(FifoLink::child());
        let ends = manifest
            .channels
            .iter()
            .zip(pipes)
            .map(|(spec, (p2c, c2p))| {
                Some(Ends {
                    tx: FifoSender::new(Pipe::new(c2p, Arc::clone(&link)), spec.capacity),
                    rx: FifoReceiver::new(Pipe::new(p2c, Arc::clone(&link)), spec.capacity),
                })
            })
            .collect();
        Ok(FifoSet {
            link,
            side: Side::Child,
            path: path.to_owned(),
            channels: manifest.channels,
            ends: Mutex::new(ends),
        })
    }

    /// The `REMORA_CHANNEL` value that names this set: `fifo:<dir>`.
    pub(crate) fn env_value(&self) -> OsString {
        let mut v = b"fifo:".to_vec();
        v.extend_from_slice(fifo::path_bytes(&self.path));
        OsString::from_vec(v)
    }

    /// Parent side: treat the death of child `pid` as the peer hanging up.
    pub(crate) fn watch_child(&self, pid: u32) {
        self.link.watch(PeerWatch::child(pid));
    }

    /// Whether the child has attached (parent side).
    pub(crate) fn is_attached(&self) -> bool {
        self.link.is_attached()
    }

    /// Parent side: removes the directory if the child has not; afterwards
    /// no child can attach. Idempotent.
    pub(crate) fn remove_dir(&self) {
        self.link.remove_dir();
    }

    /// Whether the directory still exists (parent side, for tests of
    /// cleanup).
    #[allow(dead_code)]
    pub(crate) fn dir_exists(&self) -> bool {
        self.link.dir_path().is_some_and(fifo::exists)
    }

    /// The declared channel names, in declaration order.
    pub(crate) fn channel_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.channels.iter().map(|c| c.name.as_str())
    }

    /// This side's ends of channel `name`, checking the type fingerprints;
    /// the receiver reports `mode` (FIFO frames are private copies in
    /// either mode).
    pub(crate) fn take(
        &self,
        name: &str,
        out_fp: u64,
        in_fp: u64,
        mode: ReceiveMode,
    ) -> Result<(RawSender, RawReceiver), ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut taken) = ends[index].take() else {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        };
        let incoming = match self.side {
            Side::Parent => Direction::ChildToParent,
            Side::Child => Direction::ParentToChild,
        };
        let expect = Expect {
            in_fp,
            out_fp,
            direction: incoming,
        };
        if let Err(direction) = taken.rx.expect_hello(expect) {
            // Leave the channel as it was: it can be taken with the right
            // types (the peer's HELLO is still buffered).
            ends[index] = Some(taken);
            return Err(ChannelError::TypeMismatch {
                name: name.to_owned(),
                direction: direction.describe(),
            });
        }
        taken.tx.send_hello(out_fp, in_fp);
        let wait = self.channels[index].wait;
        Ok((
            RawSender::new(SendEnd::Fifo(taken.tx), wait),
            RawReceiver::new(RecvEnd::Fifo(taken.rx), wait, mode),
        ))
    }
}

/// One-way takes (see `Segment::take_sender`).
impl FifoSet {
    /// This side's sender of channel `name` alone: checks the peer's
    /// handshake (if already there) for this direction only, announces
    /// [`ANY_FINGERPRINT`] for the other, and closes our read end of the
    /// other direction, so the peer's sends there get `EPIPE`
    /// (`Disconnected`).
    pub(crate) fn take_sender(&self, name: &str, out_fp: u64) -> Result<RawSender, ChannelError> {
        let (index, mut taken) = self.take_ends(name, ANY_FINGERPRINT, out_fp)?;
        taken.tx.send_hello(out_fp, ANY_FINGERPRINT);
        let Ends { tx, rx } = taken;
        drop(rx);
        Ok(RawSender::new(SendEnd::Fifo(tx), self.channels[index].wait))
    }

    /// This side's receiver of channel `name` alone: checks the peer's
    /// handshake for this direction only, and closes our write end of the
    /// other direction without a handshake, so the peer's receiver there
    /// sees the end of the stream (`Disconnected`).
    pub(crate) fn take_receiver(
        &self,
        name: &str,
        in_fp: u64,
        mode: ReceiveMode,
    ) -> Result<RawReceiver, ChannelError> {
        let (index, taken) = self.take_ends(name, in_fp, ANY_FINGERPRINT)?;
        let Ends { tx, rx } = taken;
        drop(tx);
        Ok(RawReceiver::new(
            RecvEnd::Fifo(rx),
            self.channels[index].wait,
            mode,
        ))
    }

    /// Takes channel `name`'s ends out of the set after checking the
    /// peer's handshake, if already there, against `in_fp`/`out_fp`
    /// (either may be [`ANY_FINGERPRINT`]); on a mismatch the channel stays
    /// as it was.
    fn take_ends(
        &self,
        name: &str,
        in_fp: u64,
        out_fp: u64,
    ) -> Result<(usize, Ends), ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut taken) = ends[index].take() else {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        };
        let direction = match self.side {
            Side::Parent => Direction::ChildToParent,
            Side::Child => Direction::ParentToChild,
        };
        let expect = Expect {
            in_fp,
            out_fp,
            direction,
        };
        if let Err(direction) = taken.rx.expect_hello(expect) {
            ends[index] = Some(taken);
            return Err(ChannelError::TypeMismatch {
                name: name.to_owned(),
                direction: direction.describe(),
            });
        }
        Ok((index, taken))
    }
}

// Dropping a `FifoSet` leaves the directory to its `FifoLink`, which every
// channel end taken from the set shares: a child that has not attached yet
// can still attach while the parent holds ends; the last of them removes the
// directory. Ends never taken are dropped with the set, so the child sees
// those directions hang up.

/// Checks that a file we are about to trust is ours and private.
fn check_ours(id: &fd::FileId) -> Result<(), OpenError> {
    let uid = shm::current_uid();
    if id.uid != uid {
        return Err(OpenError::WrongOwner {
            owner: id.uid,
            expected: uid,
        });
    }
    if id.open_to_others() {
        return Err(OpenError::BadLayout {
            reason: "a FIFO-transport file is accessible to other users (mode is not 0600/0700)",
        });
    }
    Ok(())
}

/// Parent: makes and opens both FIFOs of every channel, writes the manifest.
fn populate(link: &Arc<FifoLink>, channels: &[ChannelSpec]) -> Result<Vec<Ends>, OpenError> {
    let dir = link.dir_fd().expect("the parent's link owns the directory");
    // mkdtemp's mode is filtered by the umask; make it exactly 0700.
    fd::chmod(dir, 0o700).map_err(OpenError::io("fchmod"))?;
    let mut ends = Vec::with_capacity(channels.len());
    for (i, spec) in channels.iter().enumerate() {
        let p2c = parent_end(dir, i, Direction::ParentToChild, spec.capacity, link)?;
        let c2p = parent_end(dir, i, Direction::ChildToParent, spec.capacity, link)?;
        ends.push(Ends {
            tx: FifoSender::new(p2c, spec.capacity),
            rx: FifoReceiver::new(c2p, spec.capacity),
        });
    }
    let manifest = Manifest {
        creator_pid: std::process::id(),
        channels: channels.to_vec(),
    };
    let file = fifo::create_at(dir, MANIFEST, 0o600).map_err(OpenError::io("create manifest"))?;
    fd::chmod(file.as_fd(), 0o600).map_err(OpenError::io("fchmod"))?;
    std::fs::File::from(file)
        .write_all(&manifest.encode())
        .map_err(OpenError::io("write manifest"))?;
    Ok(ends)
}

/// Parent: makes FIFO `index`/`direction` and opens it (placeholder, then
/// the real end), checking both descriptors are that FIFO.
fn parent_end(
    dir: BorrowedFd<'_>,
    index: usize,
    direction: Direction,
    capacity: usize,
    link: &Arc<FifoLink>,
) -> Result<Pipe, OpenError> {
    let name = dir::fifo_name(index, direction);
    fifo::mkfifo_at(dir, &name, 0o600).map_err(OpenError::io("mkfifo"))?;
    let placeholder = fifo::open_at(dir, &name, libc::O_RDWR | libc::O_NONBLOCK)
        .map_err(OpenError::io("open fifo"))?;
    let id = fd::stat(placeholder.as_fd()).map_err(OpenError::io("fstat"))?;
    if !id.is_fifo() {
        return Err(OpenError::BadLayout {
            reason: "a FIFO we created is not a FIFO",
        });
    }
    // mkfifo's mode is filtered by the umask; make it exactly 0600.
    fd::chmod(placeholder.as_fd(), 0o600).map_err(OpenError::io("fchmod"))?;
    check_ours(&fd::stat(placeholder.as_fd()).map_err(OpenError::io("fstat"))?)?;
    fd::set_pipe_size(placeholder.as_fd(), capacity.clamp(MIN_PIPE, MAX_PIPE));
    let flags = match direction {
        Direction::ParentToChild => libc::O_WRONLY,
        Direction::ChildToParent => libc::O_RDONLY,
    };
    let end =
        fifo::open_at(dir, &name, flags | libc::O_NONBLOCK).map_err(OpenError::io("open fifo"))?;
    if !fd::stat(end.as_fd())
        .map_err(OpenError::io("fstat"))?
        .same_file(&id)
    {
        return Err(OpenError::BadLayout {
            reason: "a FIFO was replaced while we opened it",
        });
    }
    Ok(Pipe::with_placeholder(end, placeholder, Arc::clone(link)))
}

/// Child, after claiming: reads the manifest and opens this side of every
/// FIFO: `(p2c read end, c2p write end)` per channel.
fn open_claimed(dir: BorrowedFd<'_>) -> Result<(Manifest, Vec<(OwnedFd, OwnedFd)>), OpenError> {
    let file =
        fifo::open_at(dir, MANIFEST, libc::O_RDONLY).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => OpenError::BadLayout {
                reason: "the FIFO directory has no manifest",
            },
            _ => OpenError::io("open manifest")(e),
        })?;
    let id = fd::stat(file.as_fd()).map_err(OpenError::io("fstat"))?;
    check_ours(&id)?;
    if !id.is_file() || id.size > manifest::MAX_SIZE as u64 {
        return Err(OpenError::BadLayout {
            reason: "the manifest is not a regular file of plausible size",
        });
    }
    let mut bytes = Vec::with_capacity(id.size as usize);
    std::fs::File::from(file)
        .take(manifest::MAX_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(OpenError::io("read manifest"))?;
    let manifest = Manifest::decode(&bytes)?;
    let mut pipes = Vec::with_capacity(manifest.channels.len());
    for i in 0..manifest.channels.len() {
        let p2c = child_end(dir, i, Direction::ParentToChild)?;
        let c2p = child_end(dir, i, Direction::ChildToParent)?;
        pipes.push((p2c, c2p));
    }
    Ok((manifest, pipes))
}

/// Child: opens its end of FIFO `index`/`direction` and checks it.
fn child_end(
    dir: BorrowedFd<'_>,
    index: usize,
    direction: Direction,
) -> Result<OwnedFd, OpenError> {
    let name = dir::fifo_name(index, direction);
    let flags = match direction {
        Direction::ParentToChild => libc::O_RDONLY,
        Direction::ChildToParent => libc::O_WRONLY,
    };
    let end = match fifo::open_at(dir, &name, flags | libc::O_NONBLOCK) {
        Ok(end) => end,
        // A writing end with no reader: the parent already dropped its
        // receiver of this channel (or died, which the peer watch reports).
        // Like a closed ring, this direction must report `Disconnected` on
        // send, not fail the whole connect: stand in the write end of a
        // pipe whose read end is closed, so every write gets EPIPE.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            let (read, write) = fd::anonymous_pipe().map_err(OpenError::io("pipe2"))?;
            drop(read);
            return Ok(write);
        }
        Err(e) => return Err(OpenError::io("open fifo")(e)),
    };
    let id = fd::stat(end.as_fd()).map_err(OpenError::io("fstat"))?;
    if !id.is_fifo() {
        return Err(OpenError::BadLayout {
            reason: "a channel file in the FIFO directory is not a FIFO",
        });
    }
    check_ours(&id)?;
    Ok(end)
}
