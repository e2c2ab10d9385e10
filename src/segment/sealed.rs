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

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use super::Segment;
use super::plan::{initialise, plan};
use crate::attachment::{Attachment, register_liveness};
use crate::config::ChannelConfig;
use crate::error::OpenError;
use crate::layout::*;
use crate::side::Side;
use crate::sync::Ordering;
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
        let segment = Segment {
            link: Arc::new(Attachment::new(mapping, own, OPENER_WORD, None, None)),
            name: NO_NAME.to_owned(),
            side: Side::Creator,
            taken: Mutex::new(vec![false; entries.len()]),
            channels: entries,
        };
        // Sealed before the descriptor leaves us; F_SEAL_SEAL last of all,
        // so nobody (us included) can ever add or change a seal again.
        memfd::add_seals(fd.as_fd(), memfd::REQUIRED_SEALS)
            .map_err(OpenError::io("F_ADD_SEALS"))?;
        Ok((segment, fd))
    }

    /// Opens, checks, validates and claims the segment in memfd `fd`
    /// received from another process, which said it is `expected_size`
    /// bytes long (`None`: whatever its header records).
    ///
    /// Before mapping: a regular file ([`OpenError::NotMemfd`] otherwise),
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
    /// it, or the peer process is dead, or the peer hung up every channel
    /// (it drops its ends and its segment: untaken channels are hung up
    /// when a segment is dropped). A peer can set its close flags without
    /// leaving: that frees its own slot early, nothing else.
    pub(crate) fn released(&self) -> bool {
        let Some(link) = self.link.upgrade() else {
            return true;
        };
        if link.peer_dead_now() {
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
