//! A named POSIX shared-memory segment holding a directory of duplex
//! channels, each made of two rings.
//!
//! The creator (the parent) lays out the header, the channel directory and
//! the rings, reserves every page up front, and publishes an init word last.
//! The opener (the child) checks owner, size, magic, version, init word and
//! the whole directory before it trusts anything, then claims the segment so
//! a second opener is refused. See `ARCHITECTURE.md` for the byte layout.

use std::os::fd::AsFd;
use std::ptr::{NonNull, addr_of, addr_of_mut};
use std::sync::{Arc, Mutex};

use crate::channel::{RawReceiver, RawSender, ReceiveMode, Receiver, RecvEnd, SendEnd, Sender};
use crate::codec::{self, Decode, Encode};
use crate::error::{ChannelError, OpenError};
use crate::layout::*;
use crate::link::{Link, register_liveness};
use crate::peer::PeerWatch;
use crate::ring::{Consumer, MAX_CAPACITY, MIN_CAPACITY, Producer, RingRegion};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::sys::{fd, futex, lock, mapping::Mapping, random, shm};
use crate::transport::{ShmReceiver, ShmSender};
use crate::wait::WaitStrategy;

/// Default ring capacity per direction: 1 MiB (largest message 512 KiB − 16).
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// A channel to declare in a new segment.
///
/// ```
/// let cfg = remora::ChannelConfig::new("echo").capacity(64 * 1024);
/// assert_eq!(cfg.max_message(), 32 * 1024 - 16);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    name: String,
    pub(crate) capacity: usize,
    pub(crate) wait: WaitStrategy,
}

impl ChannelConfig {
    /// A channel named `name` with [`DEFAULT_CAPACITY`] per direction.
    pub fn new(name: impl Into<String>) -> Self {
        ChannelConfig {
            name: name.into(),
            capacity: DEFAULT_CAPACITY,
            wait: WaitStrategy::default(),
        }
    }

    /// Sets the wait strategy both sides' ends of this channel start with
    /// (each side can still change its own ends later).
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.wait = strategy;
        self
    }

    /// Sets the ring capacity of each direction in bytes: a power of two
    /// from 64 B to 2 GiB. The largest message is half of it minus 16.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The largest encoded message this configuration carries.
    /// (0 for a capacity too small to be accepted).
    pub fn max_message(&self) -> usize {
        (self.capacity / 2).saturating_sub(crate::ring::FRAME_HEADER)
    }
}

/// Which end of the segment this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Creator,
    Opener,
}

/// Private, validated copy of one directory entry.
#[derive(Clone, Debug)]
struct ChannelEntry {
    name: String,
    wait: WaitStrategy,
    /// `(offset, capacity)` per direction.
    rings: [(usize, usize); 2],
}

/// A mapped remora segment: the creator's or the opener's view.
///
/// The creator calls [`Segment::create`] and passes [`Segment::name`] to the
/// other process, which calls [`Segment::open`]. Each side then takes each
/// channel's sender and receiver once with [`Segment::channel`] (typed) or
/// [`Segment::raw_channel`] (bytes). Channel ends keep the mapping alive, so
/// the `Segment` may be dropped while they are in use.
///
/// ```
/// use remora::{ChannelConfig, Segment};
///
/// let parent = Segment::create(&[ChannelConfig::new("numbers").capacity(4096)])?;
/// // In real use this runs in the child process, given `parent.name()`.
/// let child = Segment::open(parent.name())?;
///
/// let (mut tx, _rx) = parent.channel::<u64, u64>("numbers")?;
/// let (_tx, mut rx) = child.channel::<u64, u64>("numbers")?;
/// tx.send(&42)?;
/// assert_eq!(*rx.recv()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Segment {
    link: Arc<Link>,
    name: String,
    side: Side,
    channels: Vec<ChannelEntry>,
    taken: Mutex<Vec<bool>>,
}

impl Segment {
    /// Creates a segment declaring `channels`, under a fresh unguessable
    /// name `/remora-<pid>-<128 random bits>` (mode 0600, `O_EXCL`).
    ///
    /// Every page is reserved now, so a full `/dev/shm` is an
    /// [`OpenError::Io`] from `posix_fallocate` here, never a SIGBUS later.
    pub fn create(channels: &[ChannelConfig]) -> Result<Segment, OpenError> {
        let (entries, total) = plan(channels)?;
        sweep_stale_segments();
        let (name, fd) = create_locked()?;
        let mapped = shm::size_and_reserve(&fd, total)
            .map_err(OpenError::io("posix_fallocate"))
            .and_then(|()| Mapping::new(&fd, total).map_err(OpenError::io("mmap")));
        let mapping = match mapped {
            Ok(m) => m,
            Err(e) => {
                let _ = shm::unlink(&name);
                return Err(e);
            }
        };
        let own = register_liveness(&mapping, CREATOR_WORD);
        // SAFETY: the mapping is fresh, `total` bytes long, page-aligned, and
        // no other process knows its name yet: we are its only writer.
        unsafe { initialise(mapping.base(), total, &entries, own.value) };
        Ok(Segment {
            link: Arc::new(Link::new(
                mapping,
                own,
                OPENER_WORD,
                Some(name.clone()),
                Some(fd),
            )),
            name,
            side: Side::Creator,
            taken: Mutex::new(vec![false; entries.len()]),
            channels: entries,
        })
    }

    /// Opens, validates and claims the segment `name` made by
    /// [`Segment::create`] in another process (or this one).
    ///
    /// Checks, before trusting anything: the object is ours (owner uid), its
    /// size matches its header, magic, layout version, init word, and every
    /// channel's ring placement. Then claims it: a second `open` of the same
    /// segment fails with [`OpenError::AlreadyClaimed`].
    pub fn open(name: &str) -> Result<Segment, OpenError> {
        let fd = shm::open(name).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINVAL) => OpenError::NotFound {
                name: name.to_owned(),
            },
            _ => OpenError::Io {
                op: "shm_open",
                source: e,
            },
        })?;
        let info = shm::stat(&fd).map_err(OpenError::io("fstat"))?;
        let uid = shm::current_uid();
        if info.owner_uid != uid {
            return Err(OpenError::WrongOwner {
                owner: info.owner_uid,
                expected: uid,
            });
        }
        if info.mode & 0o077 != 0 {
            return Err(OpenError::BadLayout {
                reason: "segment is accessible to other users (mode is not 0600)",
            });
        }
        let header_size = size_of::<SegmentHeader>() as u64;
        if info.size < header_size {
            return Err(OpenError::BadSize {
                actual: info.size,
                recorded: 0,
            });
        }
        let len = usize::try_from(info.size).map_err(|_| OpenError::BadSize {
            actual: info.size,
            recorded: 0,
        })?;
        let mapping = Mapping::new(&fd, len).map_err(OpenError::io("mmap"))?;
        // SAFETY: the mapping is `len >= size_of::<SegmentHeader>()` bytes.
        let entries = unsafe { validate(mapping.base(), len)? };
        // The claim is our liveness word: link its robust entry first, so the
        // kernel marks the word if we die at any moment after the claim.
        let own = register_liveness(&mapping, OPENER_WORD);
        // SAFETY: validated above: the header is in bounds; `opener_alive`
        // is an aligned atomic word.
        let claim = unsafe { &*addr_of!((*mapping.base().cast::<SegmentHeader>()).opener_alive) };
        // AcqRel: exactly one opener wins; the winner sees the creator's
        // writes (already ordered by the init word's Acquire load).
        if claim
            .compare_exchange(0, own.value, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            own.abandon(&mapping);
            return Err(OpenError::AlreadyClaimed);
        }
        // A creator blocked before we attached sleeps on the 0 we replaced.
        futex::wake_all(claim);
        Ok(Segment {
            link: Arc::new(Link::new(mapping, own, CREATOR_WORD, None, None)),
            name: name.to_owned(),
            side: Side::Opener,
            taken: Mutex::new(vec![false; entries.len()]),
            channels: entries,
        })
    }

    /// Creator side: from now on, treat the death of process `pid` as the
    /// peer hanging up.
    pub(crate) fn watch_child(&self, pid: u32) {
        self.link.watch(PeerWatch::child(pid));
    }

    /// The segment's name, to pass to [`Segment::open`] in the other process.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared channel names, in declaration order.
    pub fn channel_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.channels.iter().map(|c| c.name.as_str())
    }

    /// Whether an opener has claimed the segment.
    pub fn is_claimed(&self) -> bool {
        // SAFETY: the header was validated at create/open; `opener_alive` is
        // an aligned atomic word inside the live mapping.
        let claim = unsafe {
            &*addr_of!((*self.link.mapping().base().cast::<SegmentHeader>()).opener_alive)
        };
        // Acquire: pairs with the opener's claim.
        claim.load(Ordering::Acquire) != 0
    }

    /// Removes the segment's name from `/dev/shm` (creator only; a no-op
    /// when already done). Existing mappings, in both processes, stay valid.
    /// It also happens when the opener attaches through [`crate::connect`],
    /// when the opener is seen dead, and when the last of the creator's
    /// handles (this `Segment` and every channel end taken from it) is
    /// dropped.
    pub fn unlink(&self) -> Result<(), OpenError> {
        self.link.unlink_name().map_err(OpenError::io("shm_unlink"))
    }

    /// Takes this side's ends of channel `name`: a sender of `Out` and a
    /// receiver of `In`.
    ///
    /// The two processes must agree: the creator's `Out` is the opener's
    /// `In` and vice versa. A disagreement is caught here, on whichever side
    /// opens second, as [`ChannelError::TypeMismatch`].
    ///
    /// Neither side trusts the other: the receiver starts in
    /// [`ReceiveMode::Copy`] (its copy buffer is allocated here). Reading in
    /// place takes the `unsafe` [`Receiver::trust_peer`].
    ///
    /// ```
    /// use remora::{ChannelConfig, ReceiveMode, Segment};
    /// let a = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let b = Segment::open(a.name())?;
    /// let (mut tx, _) = a.channel::<u32, u32>("c")?;
    /// let (_, mut rx) = b.channel::<u32, u32>("c")?;
    /// assert_eq!(rx.receive_mode(), ReceiveMode::Copy);
    /// tx.send(&3)?;
    /// assert_eq!(*rx.recv()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel<Out: Encode, In: Decode>(
        &self,
        name: &str,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        let (producer, consumer) = self.take(
            name,
            codec::fingerprint::<Out>(),
            codec::fingerprint::<In>(),
            ReceiveMode::Copy,
        )?;
        Ok((Sender::from_raw(producer), Receiver::from_raw(consumer)))
    }

    /// Takes this side's ends of channel `name` as raw byte channels, for
    /// callers with their own encoding. Both sides must use raw ends. The
    /// receiver starts in [`ReceiveMode::Copy`], as for
    /// [`Segment::channel`].
    ///
    /// ```
    /// use remora::{ChannelConfig, Segment};
    /// let a = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let b = Segment::open(a.name())?;
    /// let (mut tx, _) = a.raw_channel("c")?;
    /// let (_, mut rx) = b.raw_channel("c")?;
    /// tx.send(b"bytes")?;
    /// assert_eq!(&*rx.recv()?, b"bytes"); // a private copy
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_channel(&self, name: &str) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.take(
            name,
            codec::RAW_FINGERPRINT,
            codec::RAW_FINGERPRINT,
            ReceiveMode::Copy,
        )
    }

    /// This side's ends of channel `name`, checking the type fingerprints;
    /// the receiver starts in `mode`.
    pub(crate) fn take(
        &self,
        name: &str,
        out_fp: u64,
        in_fp: u64,
        mode: ReceiveMode,
    ) -> Result<(RawSender, RawReceiver), ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if taken[index] {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        }
        let (out_dir, in_dir) = match self.side {
            Side::Creator => (PARENT_TO_CHILD, CHILD_TO_PARENT),
            Side::Opener => (CHILD_TO_PARENT, PARENT_TO_CHILD),
        };
        self.agree_fingerprint(index, out_dir, out_fp)?;
        self.agree_fingerprint(index, in_dir, in_fp)?;
        let out_region = self.region(index, out_dir);
        let in_region = self.region(index, in_dir);
        // Both ring ends first: taking them has no side effects, while a
        // channel end closes its ring when dropped. Were the sender wrapped
        // before the receiver failed, dropping it would close this
        // direction for good.
        // SAFETY: `taken` guarantees one end per channel per side in this
        // process, the side decides which ring we produce into, and the
        // claim guarantees a single process per side.
        let producer = unsafe { Producer::new(out_region) }.map_err(ChannelError::Corrupted)?;
        // SAFETY: as above, for the consuming direction.
        let consumer = unsafe { Consumer::new(in_region) }.map_err(ChannelError::Corrupted)?;
        // SAFETY: both regions lie in this segment's mapping, which the
        // `Link` each end holds keeps alive.
        let sender = unsafe { ShmSender::new(producer, Arc::clone(&self.link)) };
        // SAFETY: as above.
        let receiver = unsafe { ShmReceiver::new(consumer, Arc::clone(&self.link)) };
        taken[index] = true;
        let wait = self.channels[index].wait;
        Ok((
            RawSender::new(SendEnd::Shm(sender), wait),
            RawReceiver::new(RecvEnd::Shm(receiver), wait, mode),
        ))
    }

    /// Records our fingerprint for a direction, or checks the one the other
    /// side recorded.
    fn agree_fingerprint(&self, index: usize, dir: usize, fp: u64) -> Result<(), ChannelError> {
        // SAFETY: `index` is a validated directory entry and `dir < 2`; the
        // fingerprint is an aligned atomic word inside the mapping.
        let slot: &AtomicU64 = unsafe {
            let header = self.link.mapping().base().cast::<SegmentHeader>();
            &*addr_of!((*header).channels[index].rings[dir].fingerprint)
        };
        // AcqRel/Acquire: whichever side records first, the other reads it.
        match slot.compare_exchange(0, fp, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(existing) if existing == fp => Ok(()),
            Err(_) => Err(ChannelError::TypeMismatch {
                name: self.channels[index].name.clone(),
                direction: if dir == PARENT_TO_CHILD {
                    "parent-to-child"
                } else {
                    "child-to-parent"
                },
            }),
        }
    }

    fn region(&self, index: usize, dir: usize) -> RingRegion {
        let (offset, capacity) = self.channels[index].rings[dir];
        let base = self.link.mapping().base();
        // SAFETY: `offset + RING_CONTROL_SIZE + capacity` was validated to lie
        // inside the mapping, which the `Link` (held by every end) keeps alive;
        // the control block is initialised (all-zero is a valid RingControl)
        // and the data is page-aligned plus 640, hence 16-aligned.
        unsafe {
            let ctrl = NonNull::new_unchecked(base.add(offset).cast::<RingControl>());
            let data = NonNull::new_unchecked(base.add(offset + RING_CONTROL_SIZE));
            RingRegion::new(ctrl, data, capacity)
        }
    }
}

/// One-way takes: one end of a channel, checking only that direction's
/// type; the other direction is hung up at once.
impl Segment {
    /// Takes only this side's sender of channel `name`, for a channel used
    /// in one direction: no placeholder type for the other one, and only
    /// this direction's type is checked against the peer's
    /// ([`ChannelError::TypeMismatch`] on whichever side takes second).
    ///
    /// The channel counts as taken (its receiver cannot be taken later),
    /// and the other direction is hung up now, as if its receiver had been
    /// taken and dropped: the peer's sends there get
    /// [`SendError::Disconnected`](crate::SendError::Disconnected).
    ///
    /// ```
    /// use remora::{ChannelConfig, Segment};
    /// let a = Segment::create(&[ChannelConfig::new("log").capacity(4096)])?;
    /// let b = Segment::open(a.name())?;
    /// let mut tx = a.sender::<String>("log")?;
    /// let mut rx = b.receiver::<String>("log")?;
    /// tx.send(&"started".to_owned())?;
    /// assert_eq!(rx.recv()?.as_str(), "started");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sender<T: Encode>(&self, name: &str) -> Result<Sender<T>, ChannelError> {
        self.take_sender(name, codec::fingerprint::<T>())
            .map(Sender::from_raw)
    }

    /// Takes only this side's receiver of channel `name` (in
    /// [`ReceiveMode::Copy`], as for [`Segment::channel`]); see
    /// [`Segment::sender`]. Only this direction's type is checked. The
    /// other direction is hung up now, as if its sender had been taken and
    /// dropped: the peer's receiver there reports
    /// [`RecvError::Disconnected`](crate::RecvError::Disconnected).
    ///
    /// ```
    /// use remora::{ChannelConfig, Segment};
    /// let a = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let b = Segment::open(a.name())?;
    /// let mut rx = a.receiver::<u64>("c")?;
    /// let (mut tx, mut unused) = b.channel::<u64, ()>("c")?; // the peer took both ends
    /// tx.send(&7)?;
    /// assert_eq!(*rx.recv()?, 7);
    /// assert!(unused.is_disconnected()); // nothing will come that way
    /// assert!(matches!(unused.recv(), Err(remora::RecvError::Disconnected)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver<T: Decode>(&self, name: &str) -> Result<Receiver<T>, ChannelError> {
        self.take_receiver(name, codec::fingerprint::<T>(), ReceiveMode::Copy)
            .map(Receiver::from_raw)
    }

    /// [`Segment::sender`] for raw bytes: the peer must use raw ends for
    /// this direction too.
    ///
    /// ```
    /// # let a = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let b = remora::Segment::open(a.name())?;
    /// let mut tx = a.raw_sender("c")?;
    /// let mut rx = b.raw_receiver("c")?;
    /// tx.send(b"bytes")?;
    /// assert_eq!(&*rx.recv()?, b"bytes");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_sender(&self, name: &str) -> Result<RawSender, ChannelError> {
        self.take_sender(name, codec::RAW_FINGERPRINT)
    }

    /// [`Segment::receiver`] for raw bytes (in [`ReceiveMode::Copy`]).
    ///
    /// ```
    /// # let a = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let b = remora::Segment::open(a.name())?;
    /// let rx = b.raw_receiver("c")?;
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_receiver(&self, name: &str) -> Result<RawReceiver, ChannelError> {
        self.take_receiver(name, codec::RAW_FINGERPRINT, ReceiveMode::Copy)
    }

    /// This side's sender of channel `name` alone, checking its fingerprint
    /// only; hangs up the inbound direction (as a dropped receiver).
    pub(crate) fn take_sender(&self, name: &str, fp: u64) -> Result<RawSender, ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if taken[index] {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        }
        let (out_dir, in_dir) = self.directions();
        self.agree_fingerprint(index, out_dir, fp)?;
        // SAFETY: as in `take`: one end per channel per side in this
        // process (`taken`), one process per side (the claim).
        let producer = unsafe { Producer::new(self.region(index, out_dir)) }
            .map_err(ChannelError::Corrupted)?;
        // SAFETY: the region lies in this segment's mapping, which the
        // `Link` the end holds keeps alive.
        let sender = unsafe { ShmSender::new(producer, Arc::clone(&self.link)) };
        taken[index] = true;
        let inbound = self.region(index, in_dir);
        let ctrl = inbound.ctrl();
        // Release: as a dropped receiver's close.
        ctrl.ends.consumer_closed.store(1, Ordering::Release);
        ctrl.space_bell.ring();
        Ok(RawSender::new(
            SendEnd::Shm(sender),
            self.channels[index].wait,
        ))
    }

    /// This side's receiver of channel `name` alone, checking its
    /// fingerprint only; hangs up the outbound direction (as a dropped
    /// sender).
    pub(crate) fn take_receiver(
        &self,
        name: &str,
        fp: u64,
        mode: ReceiveMode,
    ) -> Result<RawReceiver, ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if taken[index] {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        }
        let (out_dir, in_dir) = self.directions();
        self.agree_fingerprint(index, in_dir, fp)?;
        // SAFETY: as in `take_sender`, for the consuming direction.
        let consumer = unsafe { Consumer::new(self.region(index, in_dir)) }
            .map_err(ChannelError::Corrupted)?;
        // SAFETY: as in `take_sender`.
        let receiver = unsafe { ShmReceiver::new(consumer, Arc::clone(&self.link)) };
        taken[index] = true;
        let outbound = self.region(index, out_dir);
        let ctrl = outbound.ctrl();
        // Release: as a dropped sender's close (nothing was committed).
        ctrl.ends.producer_closed.store(1, Ordering::Release);
        ctrl.data_bell.ring();
        Ok(RawReceiver::new(
            RecvEnd::Shm(receiver),
            self.channels[index].wait,
            mode,
        ))
    }

    /// `(outbound, inbound)` ring directions for this side.
    fn directions(&self) -> (usize, usize) {
        match self.side {
            Side::Creator => (PARENT_TO_CHILD, CHILD_TO_PARENT),
            Side::Opener => (CHILD_TO_PARENT, PARENT_TO_CHILD),
        }
    }
}

impl Drop for Segment {
    /// Hangs up this side of every channel that was never taken: those can
    /// no longer be taken, so the peer's ends report `Disconnected` instead
    /// of waiting for nobody. Taken channels are untouched, and the name
    /// stays until the opener attaches or the last channel end is dropped
    /// (see `Link`), so dropping a `Segment` (or a `Child`) early never
    /// strands a peer that has not attached yet.
    fn drop(&mut self) {
        let taken = std::mem::take(self.taken.get_mut().unwrap_or_else(|p| p.into_inner()));
        let (out_dir, in_dir) = match self.side {
            Side::Creator => (PARENT_TO_CHILD, CHILD_TO_PARENT),
            Side::Opener => (CHILD_TO_PARENT, PARENT_TO_CHILD),
        };
        // Never touch a segment someone shrank (SIGBUS): skip the courtesy.
        let total = self.channels.last().map_or(0, |c| {
            let (offset, capacity) = c.rings[1];
            offset + crate::layout::RING_CONTROL_SIZE + capacity
        });
        if taken.iter().all(|&t| t) || !self.link.size_at_least(total) {
            return;
        }
        for index in (0..taken.len()).filter(|&i| !taken[i]) {
            let out = self.region(index, out_dir);
            let ctrl = out.ctrl();
            // Release: as a dropped sender's close (nothing was committed).
            ctrl.ends.producer_closed.store(1, Ordering::Release);
            ctrl.data_bell.ring();
            let inbound = self.region(index, in_dir);
            let ctrl = inbound.ctrl();
            // Release: as a dropped receiver's close.
            ctrl.ends.consumer_closed.store(1, Ordering::Release);
            ctrl.space_bell.ring();
        }
    }
}

/// Whether the object's header says layout version [`LAYOUT_VERSION`], the
/// first whose creators hold a lock (read with `pread`: nothing is mapped,
/// so a short or hostile object cannot raise SIGBUS here).
fn lock_aware(fd: &std::os::fd::OwnedFd) -> bool {
    let mut head = [0u8; 12];
    let read = fd::pread(fd.as_fd(), &mut head, 0).unwrap_or(0);
    read == head.len()
        && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) == MAGIC
        && u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) == LAYOUT_VERSION
}

/// Creates a fresh, empty shared-memory object under a new unguessable name
/// and takes its creator lock (see [`sweep_stale_segments`]). Between
/// `shm_open` and `flock` another process's sweep may take the unlocked
/// object for a stale one and unlink it: then the name no longer leads to
/// our object (or the sweep holds the lock), and we start again.
fn create_locked() -> Result<(String, std::os::fd::OwnedFd), OpenError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let name = format!(
            "/remora-{}-{:032x}",
            std::process::id(),
            random::random_u128().map_err(OpenError::io("getrandom"))?
        );
        let fd = shm::create(&name).map_err(OpenError::io("shm_open"))?;
        let locked = lock::try_lock_exclusive(fd.as_fd()).map_err(OpenError::io("flock"))?;
        let still_ours = locked
            && shm::open(&name).is_ok_and(|again| {
                match (fd::stat(fd.as_fd()), fd::stat(again.as_fd())) {
                    (Ok(a), Ok(b)) => a.same_file(&b),
                    _ => false,
                }
            });
        if still_ours {
            return Ok((name, fd));
        }
        if attempts == 3 {
            return Err(OpenError::io("flock")(std::io::Error::from_raw_os_error(
                libc::EWOULDBLOCK,
            )));
        }
    }
}

/// Removes `/dev/shm/remora-*` segments of ours whose creator is dead (a
/// crashed parent cannot unlink its own). A live creator holds an exclusive
/// `flock` on its segment (see `sys::lock`): a segment whose lock we get has
/// no live creator, in this PID namespace or any other (a creator caught
/// between `shm_open` and `flock` notices and starts again: see
/// [`create_locked`]). Best effort: errors are ignored.
fn sweep_stale_segments() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    let uid = shm::current_uid();
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        // Only names we make: `remora-<pid>-<32 hex digits>`.
        let Some(file_name) = file_name.to_str().filter(|n| {
            n.strip_prefix("remora-")
                .and_then(|rest| rest.split_once('-'))
                .is_some_and(|(pid, id)| pid.parse::<u32>().is_ok() && id.len() == 32)
        }) else {
            continue;
        };
        let name = format!("/{file_name}");
        let Ok(fd) = shm::open(&name) else {
            continue;
        };
        let ours = shm::stat(&fd).is_ok_and(|info| info.owner_uid == uid);
        // Only segments of this layout version promise a creator lock: an
        // older remora's live segment would look abandoned.
        if ours && lock_aware(&fd) && lock::try_lock_exclusive(fd.as_fd()).unwrap_or(false) {
            let _ = shm::unlink(&name);
        }
    }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Validates the configuration and places every ring; returns the entries
/// and the total segment size.
fn plan(channels: &[ChannelConfig]) -> Result<(Vec<ChannelEntry>, usize), OpenError> {
    let invalid = |reason: String| OpenError::InvalidConfig { reason };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(invalid(format!(
            "{} channels declared; a segment holds 1 to {MAX_CHANNELS}",
            channels.len()
        )));
    }
    let mut cursor = round_up(size_of::<SegmentHeader>(), PAGE);
    let mut entries = Vec::with_capacity(channels.len());
    for (i, c) in channels.iter().enumerate() {
        if c.name.is_empty() || c.name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "channel name {:?} must be 1 to {MAX_NAME_LEN} bytes",
                c.name
            )));
        }
        if channels[..i].iter().any(|d| d.name == c.name) {
            return Err(invalid(format!("channel {:?} declared twice", c.name)));
        }
        if !c.capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&c.capacity) {
            return Err(invalid(format!(
                "channel {:?}: capacity {} must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}",
                c.name, c.capacity
            )));
        }
        let mut rings = [(0, 0); 2];
        for ring in &mut rings {
            *ring = (cursor, c.capacity);
            cursor = cursor
                .checked_add(round_up(RING_CONTROL_SIZE + c.capacity, PAGE))
                .ok_or_else(|| invalid("total segment size overflows".into()))?;
        }
        entries.push(ChannelEntry {
            name: c.name.clone(),
            wait: c.wait,
            rings,
        });
    }
    Ok((entries, cursor))
}

/// Writes the header, directory and ring control blocks, then publishes the
/// init word.
///
/// # Safety
///
/// `base` must be a fresh, page-aligned, writable mapping of `total` bytes
/// that no other thread or process accesses yet, and `entries` must come from
/// [`plan`] for that `total`.
unsafe fn initialise(base: *mut u8, total: usize, entries: &[ChannelEntry], alive: u32) {
    let header = base.cast::<SegmentHeader>();
    // SAFETY: per the contract, every write below is in bounds (plan placed
    // all rings inside `total`), aligned, and unobserved until `init` is
    // published with Release at the end.
    unsafe {
        addr_of_mut!((*header).magic).write(MAGIC);
        addr_of_mut!((*header).version).write(LAYOUT_VERSION);
        addr_of_mut!((*header).total_size).write(total as u64);
        addr_of_mut!((*header).creator_pid).write(std::process::id());
        addr_of_mut!((*header).channel_count).write(entries.len() as u32);
        (*addr_of!((*header).creator_alive)).store(alive, Ordering::Relaxed);
        for (i, entry) in entries.iter().enumerate() {
            let desc = addr_of_mut!((*header).channels[i]);
            let mut name = [0u8; MAX_NAME_LEN];
            name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            addr_of_mut!((*desc).name).write(name);
            addr_of_mut!((*desc).name_len).write(entry.name.len() as u32);
            addr_of_mut!((*desc).wait_hint).write(entry.wait.to_hint());
            for (dir, &(offset, capacity)) in entry.rings.iter().enumerate() {
                let ring = addr_of_mut!((*desc).rings[dir]);
                addr_of_mut!((*ring).offset).write(offset as u64);
                addr_of_mut!((*ring).capacity).write(capacity as u64);
                addr_of_mut!((*ring).fingerprint).write(AtomicU64::new(0));
                base.add(offset)
                    .cast::<RingControl>()
                    .write(RingControl::default());
            }
        }
        // Release: publishes everything above to an opener that
        // Acquire-loads the init word.
        (*addr_of!((*header).init)).store(INIT_READY, Ordering::Release);
    }
}

/// Checks a mapped segment before anything trusts it; returns private
/// copies of the directory.
///
/// # Safety
///
/// `base` must be a live mapping of `len >= size_of::<SegmentHeader>()` bytes.
unsafe fn validate(base: *mut u8, len: usize) -> Result<Vec<ChannelEntry>, OpenError> {
    let header = base.cast::<SegmentHeader>();
    // SAFETY: `len` covers the header; every plain field is read once, by
    // volatile copy, into a local that is checked before use.
    let (magic, version) = unsafe {
        (
            addr_of!((*header).magic).read_volatile(),
            addr_of!((*header).version).read_volatile(),
        )
    };
    if magic != MAGIC {
        return Err(OpenError::BadMagic { found: magic });
    }
    if version != LAYOUT_VERSION {
        return Err(OpenError::VersionMismatch {
            found: version,
            expected: LAYOUT_VERSION,
        });
    }
    // SAFETY: an aligned atomic word inside the header.
    let init: &AtomicU32 = unsafe { &*addr_of!((*header).init) };
    // Acquire: pairs with the creator's Release store; everything it wrote
    // before is visible to the reads below.
    if init.load(Ordering::Acquire) != INIT_READY {
        return Err(OpenError::NotReady);
    }
    // SAFETY: as above.
    let (total, count) = unsafe {
        (
            addr_of!((*header).total_size).read_volatile(),
            addr_of!((*header).channel_count).read_volatile(),
        )
    };
    if total != len as u64 {
        return Err(OpenError::BadSize {
            actual: len as u64,
            recorded: total,
        });
    }
    let bad = |reason| Err(OpenError::BadLayout { reason });
    if count == 0 || count as usize > MAX_CHANNELS {
        return bad("channel count out of range");
    }
    let mut entries: Vec<ChannelEntry> = Vec::with_capacity(count as usize);
    let mut cursor = round_up(size_of::<SegmentHeader>(), PAGE);
    for i in 0..count as usize {
        // SAFETY: `i < MAX_CHANNELS`, so the descriptor is inside the header.
        let (name, name_len, wait_hint) = unsafe {
            let desc = addr_of!((*header).channels[i]);
            (
                addr_of!((*desc).name).read_volatile(),
                addr_of!((*desc).name_len).read_volatile(),
                addr_of!((*desc).wait_hint).read_volatile(),
            )
        };
        let Some(name) = name.get(..name_len as usize).filter(|n| !n.is_empty()) else {
            return bad("channel name length out of range");
        };
        let Ok(name) = std::str::from_utf8(name) else {
            return bad("channel name is not UTF-8");
        };
        if entries.iter().any(|e| e.name == name) {
            return bad("duplicate channel name");
        }
        let mut rings = [(0usize, 0usize); 2];
        for (dir, ring) in rings.iter_mut().enumerate() {
            // SAFETY: as above; `dir < 2`.
            let (offset, capacity) = unsafe {
                let r = addr_of!((*header).channels[i].rings[dir]);
                (
                    addr_of!((*r).offset).read_volatile(),
                    addr_of!((*r).capacity).read_volatile(),
                )
            };
            let (Ok(offset), Ok(capacity)) = (usize::try_from(offset), usize::try_from(capacity))
            else {
                return bad("ring placement out of range");
            };
            if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
                return bad("ring capacity is not a power of two in range");
            }
            // Rings are laid out in order without overlap; anything else is
            // either corruption or an attempt to alias two rings.
            if offset % PAGE != 0 || offset < cursor {
                return bad("ring offset misaligned or overlapping");
            }
            let end = offset
                .checked_add(RING_CONTROL_SIZE + capacity)
                .filter(|&end| end <= len);
            let Some(end) = end else {
                return bad("ring extends past the end of the segment");
            };
            cursor = end;
            *ring = (offset, capacity);
        }
        entries.push(ChannelEntry {
            name: name.to_owned(),
            wait: WaitStrategy::from_hint(wait_hint),
            rings,
        });
    }
    Ok(entries)
}
