//! A FIFO set: every channel of one parent/child pair, as the parent creates
//! it before spawning and the child opens it in `connect`.
//!
//! Every open is `O_NONBLOCK`, so none waits for the other side. Parent:
//! `mkfifo` each FIFO (0600), open it `O_RDWR` (the placeholder, see
//! `link`) and in its real direction, write the manifest, spawn. Child:
//! check the directory (ours, 0700), claim it by unlinking the manifest it
//! opened (a second `connect` finds none), open its ends, check each with
//! `fstat`, remove the directory.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::dir::{self, MANIFEST};
use super::link::{FifoEnd, FifoLink};
use super::receiver::{Expect, FifoReceiver};
use super::sender::FifoSender;
use crate::codec::ANY_FINGERPRINT;
use crate::config::{self, ChannelConfig};
use crate::error::{ChannelError, OpenError};
use crate::peer::PeerWatch;
use crate::side::Direction;
use crate::sys::{fd, fifo, shm};
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
    env: OsString,
    channels: Vec<ChannelConfig>,
    ends: Mutex<Vec<Option<Ends>>>,
}

impl FifoSet {
    /// Parent side: makes the directory, the FIFOs and the manifest.
    pub(crate) fn create(configs: &[ChannelConfig]) -> Result<FifoSet, OpenError> {
        config::validate(configs)?;
        let (path, dir_fd) = dir::create_locked().map_err(OpenError::io("mkdtemp"))?;
        let cpath = fifo::c_path(&path).expect("mkdtemp made it from a C string");
        let link = Arc::new(FifoLink::new(Some((cpath, dir_fd))));
        let dir = link.dir_fd().expect("the parent's link owns the directory");
        let populate = || {
            // mkdtemp's and mkfifo's modes are filtered by the umask.
            fd::chmod(dir, 0o700).map_err(OpenError::io("fchmod"))?;
            let mut pipes = Vec::with_capacity(configs.len());
            for (i, c) in configs.iter().enumerate() {
                pipes.push([
                    parent_end(dir, i, Direction::ToOpener, c.capacity)?,
                    parent_end(dir, i, Direction::ToCreator, c.capacity)?,
                ]);
            }
            let file = fifo::create_at(dir, MANIFEST, 0o600).map_err(OpenError::io("manifest"))?;
            fd::chmod(file.as_fd(), 0o600).map_err(OpenError::io("fchmod"))?;
            std::fs::File::from(file)
                .write_all(dir::encode(configs).as_bytes())
                .map_err(OpenError::io("write manifest"))?;
            Ok(pipes)
        };
        let pipes = populate().inspect_err(|_| link.remove_dir())?;
        let mut env = OsString::from("fifo:");
        env.push(&path);
        let incoming = Direction::ToCreator;
        Ok(FifoSet::new(link, incoming, env, configs.to_vec(), pipes))
    }

    /// Child side: validates, claims and opens the set in directory `path`,
    /// then removes the directory.
    pub(crate) fn open(path: &Path) -> Result<FifoSet, OpenError> {
        let dir_fd = fifo::open_dir(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => OpenError::NotFound {
                name: path.display().to_string(),
            },
            _ => OpenError::io("open")(e),
        })?;
        let id = fd::stat(dir_fd.as_fd()).map_err(OpenError::io("fstat"))?;
        check_ours(&id, libc::S_IFDIR)?;
        let dir = dir_fd.as_fd();
        // The claim: whoever unlinks the manifest owns the directory.
        let claimed = fifo::open_at(dir, MANIFEST, libc::O_RDONLY).and_then(|file| {
            fifo::unlink_at(dir, MANIFEST)?;
            Ok(file)
        });
        let manifest = match claimed {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(OpenError::AlreadyClaimed);
            }
            Err(e) => return Err(OpenError::io("claim manifest")(e)),
        };
        let opened = open_claimed(dir, manifest);
        // Claimed, whether we succeeded or not: removing the directory also
        // tells the parent we are done with it.
        let _ = std::fs::remove_dir_all(path);
        let (channels, pipes) = opened?;
        // No watch on the parent: its death closes its ends of every FIFO
        // (its descriptors are close-on-exec: no wrapper keeps them open).
        let link = Arc::new(FifoLink::new(None));
        let incoming = Direction::ToOpener;
        Ok(FifoSet::new(
            link,
            incoming,
            OsString::new(),
            channels,
            pipes,
        ))
    }

    /// A set of `channels` over `pipes`: per channel, our sending and our
    /// receiving end, each with its placeholder (parent side).
    fn new(
        link: Arc<FifoLink>,
        incoming: Direction,
        env: OsString,
        channels: Vec<ChannelConfig>,
        pipes: Vec<[(OwnedFd, Option<OwnedFd>); 2]>,
    ) -> FifoSet {
        let pipe = |(fd, placeholder)| FifoEnd::new(fd, placeholder, Arc::clone(&link));
        let ends = channels.iter().zip(pipes).map(|(c, [tx, rx])| {
            Some(Ends {
                tx: FifoSender::new(pipe(tx), c.capacity),
                rx: FifoReceiver::new(pipe(rx), c.capacity),
            })
        });
        let ends = Mutex::new(ends.collect());
        FifoSet {
            link,
            incoming,
            env,
            channels,
            ends,
        }
    }

    /// The `REMORA_CHANNEL` value that names this set: `fifo:<dir>`.
    pub(crate) fn env_value(&self) -> OsString {
        self.env.clone()
    }

    /// Parent side: treat the death of child `pid` as the peer hanging up.
    pub(crate) fn watch_child(&self, pid: u32) {
        self.link.watch(PeerWatch::child(pid));
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.link.is_attached()
    }

    /// Parent side: removes the directory if the child has not; afterwards
    /// no child can attach. Idempotent.
    pub(crate) fn remove_dir(&self) {
        self.link.remove_dir();
    }

    pub(crate) fn channel_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.channels.iter().map(|c| c.name())
    }

    /// This side's ends of channel `name`, checking the type fingerprints,
    /// with the channel's wait strategy. (The channel-set layer wraps them in
    /// public channel ends: this transport knows nothing of those.)
    pub(crate) fn take(
        &self,
        name: &str,
        out_fp: u64,
        in_fp: u64,
    ) -> Result<(FifoSender, FifoReceiver, WaitStrategy), ChannelError> {
        let (wait, mut ends) = self.take_ends(name, in_fp, out_fp)?;
        ends.tx.send_hello(out_fp, in_fp);
        Ok((ends.tx, ends.rx, wait))
    }

    /// This side's sender alone: announces [`ANY_FINGERPRINT`] for the
    /// other direction and closes our read end of it, so the peer's sends
    /// there get `EPIPE` (`Disconnected`).
    pub(crate) fn take_sender(
        &self,
        name: &str,
        out_fp: u64,
    ) -> Result<(FifoSender, WaitStrategy), ChannelError> {
        let (wait, mut ends) = self.take_ends(name, ANY_FINGERPRINT, out_fp)?;
        ends.tx.send_hello(out_fp, ANY_FINGERPRINT);
        Ok((ends.tx, wait))
    }

    /// This side's receiver alone: our write end of the other direction
    /// closes without a handshake, so the peer's receiver there sees the
    /// end of the stream (`Disconnected`).
    pub(crate) fn take_receiver(
        &self,
        name: &str,
        in_fp: u64,
    ) -> Result<(FifoReceiver, WaitStrategy), ChannelError> {
        let (wait, ends) = self.take_ends(name, in_fp, ANY_FINGERPRINT)?;
        Ok((ends.rx, wait))
    }

    /// Takes channel `name`'s ends out of the set after checking the
    /// peer's handshake, if already there, against `in_fp`/`out_fp`
    /// (either may be [`ANY_FINGERPRINT`]); on a mismatch the channel stays
    /// as it was (the peer's HELLO still buffered).
    fn take_ends(
        &self,
        name: &str,
        in_fp: u64,
        out_fp: u64,
    ) -> Result<(WaitStrategy, Ends), ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut taken) = ends[index].take() else {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        };
        let expect = Expect {
            in_fp,
            out_fp,
            direction: self.incoming,
        };
        if let Err(direction) = taken.rx.expect_hello(expect) {
            ends[index] = Some(taken);
            return Err(ChannelError::TypeMismatch {
                name: name.to_owned(),
                direction: direction.describe(),
            });
        }
        Ok((self.channels[index].wait, taken))
    }
}

// Dropping a `FifoSet` leaves the directory to its `FifoLink`, shared by
// every end taken: the last of them removes it. Ends never taken are
// dropped with the set, so the child sees those directions hang up.

/// Checks that a file we are about to trust has type `kind`, is ours and
/// private.
fn check_ours(id: &fd::FileId, kind: libc::mode_t) -> Result<(), OpenError> {
    let uid = shm::current_uid();
    if id.uid != uid {
        return Err(OpenError::WrongOwner {
            owner: id.uid,
            expected: uid,
        });
    }
    let reason = if id.mode & libc::S_IFMT != kind {
        "a FIFO-transport file is not of the expected type"
    } else if id.mode & 0o077 != 0 {
        "a FIFO-transport file is accessible to other users (mode is not 0600/0700)"
    } else {
        return Ok(());
    };
    Err(OpenError::BadLayout { reason })
}

/// Parent: makes FIFO `index`/`direction` and opens it: (the real end,
/// the placeholder), both checked to be that FIFO.
fn parent_end(
    dir: BorrowedFd<'_>,
    index: usize,
    direction: Direction,
    capacity: usize,
) -> Result<(OwnedFd, Option<OwnedFd>), OpenError> {
    let name = dir::fifo_name(direction, index);
    fifo::mkfifo_at(dir, &name, 0o600).map_err(OpenError::io("mkfifo"))?;
    let open = |flags| {
        let fd =
            fifo::open_at(dir, &name, flags | libc::O_NONBLOCK).map_err(OpenError::io("open"))?;
        let id = fd::stat(fd.as_fd()).map_err(OpenError::io("fstat"))?;
        Ok::<_, OpenError>((fd, id))
    };
    let (placeholder, id) = open(libc::O_RDWR)?;
    fd::chmod(placeholder.as_fd(), 0o600).map_err(OpenError::io("fchmod"))?;
    check_ours(
        &fd::stat(placeholder.as_fd()).map_err(OpenError::io("fstat"))?,
        libc::S_IFIFO,
    )?;
    // 1 MiB is Linux's default `pipe-max-size` for unprivileged users.
    fd::set_pipe_size(placeholder.as_fd(), capacity.clamp(4096, 1 << 20));
    let (end, same) = open([libc::O_WRONLY, libc::O_RDONLY][direction as usize])?;
    if !same.same_file(&id) {
        return Err(OpenError::BadLayout {
            reason: "a FIFO was replaced while we opened it",
        });
    }
    Ok((end, Some(placeholder)))
}

/// Child, after claiming: reads the manifest and opens this side of every
/// FIFO: (c2p write end, p2c read end) per channel.
#[allow(clippy::type_complexity)]
fn open_claimed(
    dir: BorrowedFd<'_>,
    manifest: OwnedFd,
) -> Result<(Vec<ChannelConfig>, Vec<[(OwnedFd, Option<OwnedFd>); 2]>), OpenError> {
    check_ours(
        &fd::stat(manifest.as_fd()).map_err(OpenError::io("fstat"))?,
        libc::S_IFREG,
    )?;
    let channels = dir::decode(manifest)?;
    let pipes = (0..channels.len()).map(|i| {
        let c2p = child_end(dir, i, Direction::ToCreator)?;
        Ok([(c2p, None), (child_end(dir, i, Direction::ToOpener)?, None)])
    });
    Ok((channels, pipes.collect::<Result<_, OpenError>>()?))
}

/// Child: opens its end of FIFO `index`/`direction` and checks it.
fn child_end(
    dir: BorrowedFd<'_>,
    index: usize,
    direction: Direction,
) -> Result<OwnedFd, OpenError> {
    let flags = [libc::O_RDONLY, libc::O_WRONLY][direction as usize] | libc::O_NONBLOCK;
    let end = match fifo::open_at(dir, &dir::fifo_name(direction, index), flags) {
        Ok(end) => end,
        // No reader: the parent already dropped its receiver (or died).
        // Like a closed ring, sends must report `Disconnected`, not fail
        // the connect: a pipe whose read end is closed gives EPIPE.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            let (_, write) = std::io::pipe().map_err(OpenError::io("pipe"))?;
            return Ok(write.into());
        }
        Err(e) => return Err(OpenError::io("open fifo")(e)),
    };
    check_ours(
        &fd::stat(end.as_fd()).map_err(OpenError::io("fstat"))?,
        libc::S_IFIFO,
    )?;
    Ok(end)
}
