//! Segments in sealed memfds, handed over by descriptor rather than by name.
//!
//! The creator builds the segment in a memfd (size set and every page
//! reserved, header and rings initialised), then seals it against any size
//! change (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before anyone else
//! can hold it. The receiver of the descriptor checks, before it maps a
//! byte: a regular file, one that carries seals (a memfd), the three seals,
//! no write seal, and the size it was told; then the usual layout
//! validation and claim. Sealed, the size can never change again, so no
//! peer can raise SIGBUS in us by truncating the segment.
//!
//! Liveness and the claim are exactly those of a named segment: the
//! creator's and opener's robust words in the header, `Attachment`.
//!
//! [`SlotWatch`] lets a service count the clients still holding a slot.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

use super::Segment;
use super::plan::{initialise, plan};
use crate::attachment::{Attachment, register_liveness};
use crate::config::ChannelConfig;
use crate::error::OpenError;
use crate::layout::*;
use crate::peer::PeerWatch;
use crate::side::Side;
use crate::sync::Ordering;
use crate::sys::inherit::{Handed, take_handed};
use crate::sys::{fd, mapping::Mapping, memfd, shm};

/// What `Segment::name` reports for a segment that has no name.
const NO_NAME: &str = "(sealed memfd)";

impl Segment {
    /// Creates a segment declaring `channels` in a new sealed memfd and
    /// returns it with the memfd's descriptor (to hand to the opener; the
    /// segment itself needs no descriptor once mapped).
    ///
    /// A memfd has no name: nothing is left anywhere if this process dies,
    /// and no stale sweep is needed.
    pub(crate) fn create_sealed(
        channels: &[ChannelConfig],
    ) -> Result<(Segment, OwnedFd), OpenError> {
        let (segment, fd, _) = Segment::build_sealed(channels, false)?;
        Ok((segment, fd))
    }

    /// [`Segment::create_sealed`] for a spawned child: the segment keeps a
    /// descriptor of the memfd open (in its `Attachment`, as long as this
    /// side or any end of it lives), so the child can find it under
    /// `/proc/<our pid>/fd/<n>` if the inherited descriptor did not survive
    /// the trip. Returns the segment and where and what the kept descriptor
    /// is (what the child checks it against).
    pub(crate) fn create_sealed_kept(
        channels: &[ChannelConfig],
    ) -> Result<(Segment, SealedId), OpenError> {
        let (segment, fd, kept) = Segment::build_sealed(channels, true)?;
        let id = fd::stat(fd.as_fd()).map_err(OpenError::io("fstat"))?;
        let size = shm::stat(&fd).map_err(OpenError::io("fstat"))?.size;
        let sealed = SealedId {
            fd: kept.expect("asked to keep one"),
            size,
            dev: id.dev,
            ino: id.ino,
        };
        Ok((segment, sealed))
    }

    /// Builds the segment in a new sealed memfd; with `keep`, its
    /// `Attachment` holds a second descriptor of it, whose number is
    /// returned.
    fn build_sealed(
        channels: &[ChannelConfig],
        keep: bool,
    ) -> Result<(Segment, OwnedFd, Option<RawFd>), OpenError> {
        let (entries, total) = plan(channels)?;
        let fd = memfd::create(c"remora").map_err(OpenError::io("memfd_create"))?;
        // Reserve every page now: out of memory is an error here, never a
        // SIGBUS on first touch.
        shm::size_and_reserve(&fd, total).map_err(OpenError::io("fallocate"))?;
        let mapping = Mapping::new(&fd, total).map_err(OpenError::io("mmap"))?;
        let own = register_liveness(&mapping, CREATOR_WORD);
        // SAFETY: the mapping is fresh, `total` bytes long, page-aligned,
        // and the memfd has not left this process: we are its only writer.
        unsafe { initialise(mapping.base(), total, &entries, own.value) };
        let kept = match keep {
            true => Some(fd.try_clone().map_err(OpenError::io("dup"))?),
            false => None,
        };
        let kept_fd = kept.as_ref().map(|k| k.as_raw_fd());
        let segment = Segment {
            link: Arc::new(Attachment::new(mapping, own, OPENER_WORD, None, kept)),
            name: NO_NAME.to_owned(),
            side: Side::Creator,
            taken: Mutex::new(vec![false; entries.len()]),
            channels: entries,
        };
        // Sealed before the descriptor leaves us; F_SEAL_SEAL last of all,
        // so nobody (us included) can ever add or change a seal again.
        memfd::add_seals(fd.as_fd(), memfd::REQUIRED_SEALS)
            .map_err(OpenError::io("F_ADD_SEALS"))?;
        Ok((segment, fd, kept_fd))
    }

    /// Opens, checks, validates and claims the segment in memfd `fd`
    /// received from another process, which said it is `expected_size`
    /// bytes long (`None`: whatever its header records).
    ///
    /// Before mapping: a regular file ([`OpenError::NotMemfd`] otherwise),
    /// on tmpfs (`NotMemfd`: a hugetlbfs memfd lets its owner punch holes),
    /// able to carry seals (`NotMemfd`), sealed against shrinking and
    /// growing for good ([`OpenError::MissingSeals`]), not write-sealed,
    /// of the expected size ([`OpenError::BadSize`]); with `owner`, owned by
    /// that uid ([`OpenError::WrongOwner`]). Then as [`Segment::open`]. The
    /// descriptor is closed when this returns: the mapping keeps the memory.
    pub(crate) fn open_sealed(
        fd: OwnedFd,
        expected_size: Option<u64>,
        owner: Option<u32>,
    ) -> Result<Segment, OpenError> {
        let id = fd::stat(fd.as_fd()).map_err(OpenError::io("fstat"))?;
        if id.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(OpenError::NotMemfd {
                reason: "not a regular file (a pipe, socket, directory or device)",
            });
        }
        // Before the seals: a hugetlbfs memfd carries them too, but can
        // still have holes punched in it (SIGBUS on touch).
        if !memfd::on_tmpfs(fd.as_fd()).map_err(OpenError::io("fstatfs"))? {
            return Err(OpenError::NotMemfd {
                reason: "not on tmpfs (a hugetlbfs memfd, or a file on a disk)",
            });
        }
        if let Some(expected) = owner.filter(|&o| o != id.uid) {
            return Err(OpenError::WrongOwner {
                owner: id.uid,
                expected,
            });
        }
        let seals = match memfd::seals(fd.as_fd()) {
            Ok(seals) => seals,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(OpenError::NotMemfd {
                    reason: "a file that cannot carry seals (on a disk or in /dev/shm?)",
                });
            }
            Err(e) => return Err(OpenError::io("F_GET_SEALS")(e)),
        };
        if seals & memfd::REQUIRED_SEALS != memfd::REQUIRED_SEALS {
            return Err(OpenError::MissingSeals {
                found: seals,
                required: memfd::REQUIRED_SEALS,
            });
        }
        if seals & memfd::WRITE_SEALS != 0 {
            return Err(OpenError::BadLayout {
                reason: "the segment memfd is write-sealed",
            });
        }
        // Read after the seals: from here on the size cannot change.
        let size = shm::stat(&fd).map_err(OpenError::io("fstat"))?.size;
        let recorded = expected_size.unwrap_or(size);
        if size != recorded || size < size_of::<SegmentHeader>() as u64 {
            return Err(OpenError::BadSize {
                actual: size,
                recorded,
            });
        }
        let len = usize::try_from(size).map_err(|_| OpenError::BadSize {
            actual: size,
            recorded,
        })?;
        let mapping = Mapping::new(&fd, len).map_err(OpenError::io("mmap"))?;
        Segment::attach(mapping, len, NO_NAME.to_owned())
    }

    /// Child side of a sealed spawn: finds the memfd `id` its parent
    /// `parent_pid` described, then checks and claims it as
    /// [`Segment::open_sealed`] does.
    ///
    /// The descriptor is the inherited one, or the parent's
    /// `/proc/<pid>/fd/<n>`, checked to be that very file either way (see
    /// [`take_handed`]; [`OpenError::HandOverLost`] if neither). It is
    /// closed once the segment is mapped. Only the first call in the
    /// process may take it; a later one gets [`OpenError::AlreadyClaimed`]
    /// (the segment can be claimed once anyway).
    pub(crate) fn open_inherited(parent_pid: u32, id: SealedId) -> Result<Segment, OpenError> {
        let handed = Handed {
            fd: id.fd,
            dev: id.dev,
            ino: id.ino,
            kind: libc::S_IFREG,
        };
        let fd = take_handed(parent_pid, handed, libc::O_RDWR)?;
        Segment::open_sealed(fd, Some(id.size), None)
    }

    /// From now on, treat the exit of the process behind `pidfd` as the
    /// peer hanging up (a service's peer; first watch wins).
    pub(crate) fn watch_process(&self, pidfd: OwnedFd) {
        self.link.watch(PeerWatch::Process { pidfd });
    }

    /// Test hook: claims the segment as an opener whose liveness word is
    /// `word` (a fake, or `NO_SENTINEL`), without a sentinel.
    #[cfg(test)]
    pub(crate) fn fake_claim(&self, word: u32) {
        // SAFETY: OPENER_WORD is the header's aligned atomic claim word,
        // inside the live mapping.
        let claim = unsafe {
            &*self
                .link
                .mapping()
                .base()
                .add(OPENER_WORD)
                .cast::<std::sync::atomic::AtomicU32>()
        };
        // Release: as a real claim (nothing else is published here).
        claim.store(word, Ordering::Release);
    }

    /// A watch on this (creator-side) segment that tells when its slot is
    /// free again; see [`SlotWatch::released`].
    pub(crate) fn slot_watch(&self) -> SlotWatch {
        let (out_dir, in_dir) = self.directions();
        SlotWatch {
            link: Arc::downgrade(&self.link),
            peer_rings: self
                .channels
                .iter()
                .map(|c| (c.rings[in_dir.index()].0, c.rings[out_dir.index()].0))
                .collect(),
        }
    }
}

/// Where a kept memfd is and what it is: the descriptor number in the
/// creator, its size, and its identity (device and inode).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SealedId {
    pub(crate) fd: RawFd,
    pub(crate) size: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// Whether the peer of a segment is done with it, for a service's bound on
/// clients. Holds no strong reference: it never keeps a segment mapped.
#[derive(Debug)]
pub(crate) struct SlotWatch {
    link: Weak<Attachment>,
    /// Per channel: offsets of the ring the peer produces into and of the
    /// ring it consumes.
    peer_rings: Vec<(usize, usize)>,
}

impl SlotWatch {
    /// True once this side dropped the segment and every end taken from
    /// it, or the peer process is dead (its word, or its pidfd: may make a
    /// system call), or the peer hung up every channel
    /// (it drops its ends and its segment: untaken channels are hung up
    /// when a segment is dropped). A peer can set its close flags without
    /// leaving: that frees its own slot early, nothing else.
    pub(crate) fn released(&self) -> bool {
        let Some(link) = self.link.upgrade() else {
            return true;
        };
        // The word, then the pidfd (a peer that claimed with a word the
        // kernel never marks is seen dead only there).
        if link.check_peer_gone() {
            return true;
        }
        let base = link.mapping().base();
        self.peer_rings.iter().all(|&(produced, consumed)| {
            // SAFETY: both offsets were validated (or planned) to hold a
            // ring control block inside the mapping, which `link` keeps
            // alive; a sealed segment cannot shrink (and a named one is only
            // watched while the creator holds it). `RingControl` is all
            // atomics, so a shared reference is fine whatever the peer writes.
            let (p, c) = unsafe {
                (
                    &*base.add(produced).cast::<RingControl>(),
                    &*base.add(consumed).cast::<RingControl>(),
                )
            };
            // Acquire: pairs with the peer's Release close stores (nothing
            // is read after them, but it keeps the usual pairing).
            p.ends.producer_closed.load(Ordering::Acquire) != 0
                && c.ends.consumer_closed.load(Ordering::Acquire) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::inherit::{INHERITED_TAKES, reset_taken};
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::Barrier;

    fn config() -> [ChannelConfig; 1] {
        [ChannelConfig::new("c").capacity(4096)]
    }

    /// Two threads of a sealed-spawned child calling `connect()` at once
    /// both found the inherited number to be the memfd, and both took
    /// ownership of it: it was closed twice (an IO-safety violation; the
    /// second close may hit an unrelated descriptor that reused the
    /// number). Only one may take it.
    #[test]
    fn racing_inherited_opens_take_the_number_once() {
        for _ in 0..50 {
            let (segment, id) = Segment::create_sealed_kept(&config()).unwrap();
            // The "inherited" descriptor: a number nobody here owns.
            // SAFETY: fcntl on an open descriptor; no pointers.
            let n = unsafe { libc::fcntl(id.fd, libc::F_DUPFD_CLOEXEC, 100) };
            assert!(n >= 0);
            let id = SealedId { fd: n, ..id };
            // A fresh "process": nobody has taken an inherited number yet.
            reset_taken();
            let barrier = Arc::new(Barrier::new(2));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        barrier.wait();
                        Segment::open_inherited(std::process::id(), id).map(drop)
                    })
                })
                .collect();
            let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            drop(segment);
            // SeqCst: a test counter read after every thread joined (the
            // joins order it already); the strongest ordering costs nothing here.
            let takes = INHERITED_TAKES.load(Ordering::SeqCst);
            assert!(takes <= 1, "{takes} threads took fd {n}: {results:?}");
            assert_eq!(
                results.iter().filter(|r| r.is_ok()).count(),
                1,
                "{results:?}"
            );
        }
    }

    /// A sealed memfd of ours passes the tmpfs check (and the rest).
    #[test]
    fn a_memfd_is_on_tmpfs() {
        let (_segment, fd) = Segment::create_sealed(&config()).unwrap();
        assert!(memfd::on_tmpfs(fd.as_fd()).unwrap());
        let size = shm::stat(&fd).unwrap().size;
        Segment::open_sealed(fd, Some(size), None).unwrap();
    }

    /// A file elsewhere than on tmpfs is refused by the tmpfs check itself
    /// (before: by the seal check, since a disk file cannot carry seals).
    #[test]
    fn a_file_off_tmpfs_is_refused_by_the_tmpfs_check() {
        let dir = std::env::temp_dir();
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir)
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                eprintln!("skipped: no O_TMPFILE in {dir:?}: {e}");
                return;
            }
        };
        if memfd::on_tmpfs(file.as_fd()).unwrap() {
            eprintln!("skipped: {dir:?} is a tmpfs");
            return;
        }
        let r = Segment::open_sealed(file, None, None);
        assert!(
            matches!(r, Err(OpenError::NotMemfd { reason }) if reason.contains("tmpfs")),
            "{r:?}"
        );
    }

    /// A hugetlbfs memfd carries the seals but lets its owner punch holes
    /// (SIGBUS in our mapping): refused before mapping.
    #[test]
    fn a_hugetlb_memfd_is_refused() {
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB;
        // SAFETY: the name is NUL-terminated; no other pointers.
        let raw = unsafe { libc::memfd_create(c"remora-huge".as_ptr(), flags) };
        if raw < 0 {
            eprintln!(
                "skipped: no hugetlb memfd: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        // One 2 MiB huge page's worth (no page is allocated by this).
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), 2 << 20) } != 0 {
            eprintln!("skipped: ftruncate: {}", std::io::Error::last_os_error());
            return;
        }
        if memfd::add_seals(fd.as_fd(), memfd::REQUIRED_SEALS).is_err() {
            eprintln!("skipped: this kernel cannot seal a hugetlb memfd");
            return;
        }
        assert!(!memfd::on_tmpfs(fd.as_fd()).unwrap());
        let r = Segment::open_sealed(fd, Some(2 << 20), None);
        assert!(
            matches!(r, Err(OpenError::NotMemfd { reason }) if reason.contains("tmpfs")),
            "{r:?}"
        );
    }
}
