//! A named POSIX shared-memory segment holding a directory of duplex
//! channels, each made of two rings.
//!
//! The creator (the parent) lays out the header, the channel directory and
//! the rings, reserves every page up front, and publishes an init word last.
//! The opener (the child) checks owner, size, magic, version, init word and
//! the whole directory before it trusts anything, then claims the segment so
//! a second opener is refused. See `ARCHITECTURE.md` for the byte layout.
//!
//! This file holds the `Segment` handle (create, open and claim, channel
//! hand-out, drop); `plan.rs` lays a new segment out, `validate.rs` checks
//! one made by another process, `names.rs` makes names under a creator lock
//! and tells the stale sweep which objects are segments.

mod names;
mod plan;
mod sealed;
mod validate;

use std::ptr::{NonNull, addr_of};
use std::sync::{Arc, Mutex};

use self::names::{StaleSegment, create_locked};
use self::plan::{ChannelEntry, initialise, plan};
use self::validate::validate;

pub(crate) use self::sealed::{SealedId, SlotWatch};
use crate::attachment::{Attachment, register_liveness};
use crate::channel::{RawReceiver, RawSender, ReceiveMode, Receiver, RecvEnd, SendEnd, Sender};
use crate::codec::{self, Decode, Encode};
use crate::config::ChannelConfig;
use crate::error::{ChannelError, OpenError};
use crate::layout::*;
use crate::peer::PeerWatch;
use crate::ring::{Consumer, Producer, RingRegion};
use crate::side::{Direction, Side};
use crate::stale;
use crate::sync::{AtomicU64, Ordering};
use crate::sys::{futex, mapping::Mapping, shm};
use crate::transport::{ShmReceiver, ShmSender};

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
    link: Arc<Attachment>,
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
        stale::sweep::<StaleSegment>(std::path::Path::new("/dev/shm"));
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
            link: Arc::new(Attachment::new(
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
        Segment::attach(mapping, len, name.to_owned())
    }

    /// The opener's half of [`Segment::open`] once the object is mapped:
    /// validates the segment, registers this side's liveness word and
    /// claims the segment with it.
    fn attach(mapping: Mapping, len: usize, name: String) -> Result<Segment, OpenError> {
        // SAFETY: the callers map `len >= size_of::<SegmentHeader>()` bytes.
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
            own.abandon();
            return Err(OpenError::AlreadyClaimed);
        }
        // A creator blocked before we attached sleeps on the 0 we replaced.
        futex::wake_all(claim);
        Ok(Segment {
            link: Arc::new(Attachment::new(mapping, own, CREATOR_WORD, None, None)),
            name,
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
        let (index, mut taken) = self.untaken(name)?;
        let (out_dir, in_dir) = (self.side.outgoing(), self.side.incoming());
        // Both checked before either is recorded: a take refused for one
        // direction leaves no record in the other (a retry with other types
        // must not meet its own stale fingerprint).
        self.check_fingerprint(index, out_dir, out_fp)?;
        self.check_fingerprint(index, in_dir, in_fp)?;
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
        // `Attachment` each end holds keeps alive.
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
    fn agree_fingerprint(&self, index: usize, dir: Direction, fp: u64) -> Result<(), ChannelError> {
        // AcqRel/Acquire: whichever side records first, the other reads it.
        match self.fingerprint_slot(index, dir).compare_exchange(
            0,
            fp,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(existing) if existing == fp => Ok(()),
            Err(_) => Err(self.mismatch(index, dir)),
        }
    }

    /// Whether `fp` agrees with what the peer recorded for a direction, if
    /// anything, without recording it.
    fn check_fingerprint(&self, index: usize, dir: Direction, fp: u64) -> Result<(), ChannelError> {
        // Acquire: as in `agree_fingerprint`.
        match self.fingerprint_slot(index, dir).load(Ordering::Acquire) {
            0 => Ok(()),
            existing if existing == fp => Ok(()),
            _ => Err(self.mismatch(index, dir)),
        }
    }

    fn mismatch(&self, index: usize, dir: Direction) -> ChannelError {
        ChannelError::TypeMismatch {
            name: self.channels[index].name.clone(),
            direction: dir.describe(),
        }
    }

    /// The fingerprint word of one direction of channel `index`.
    fn fingerprint_slot(&self, index: usize, dir: Direction) -> &AtomicU64 {
        let dir_index = dir.index();
        // SAFETY: `index` is a validated directory entry and `dir_index < 2`; the
        // fingerprint is an aligned atomic word inside the mapping.
        let slot: &AtomicU64 = unsafe {
            let header = self.link.mapping().base().cast::<SegmentHeader>();
            &*addr_of!((*header).channels[index].rings[dir_index].fingerprint)
        };
        slot
    }

    fn region(&self, index: usize, dir: Direction) -> RingRegion {
        let (offset, capacity) = self.channels[index].rings[dir.index()];
        let base = self.link.mapping().base();
        // SAFETY: `offset + RING_CONTROL_SIZE + capacity` was validated to lie
        // inside the mapping, which the `Attachment` (held by every end) keeps alive;
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
        let (index, mut taken) = self.untaken(name)?;
        let (out_dir, in_dir) = self.directions();
        self.agree_fingerprint(index, out_dir, fp)?;
        // SAFETY: as in `take`: one end per channel per side in this
        // process (`taken`), one process per side (the claim).
        let producer = unsafe { Producer::new(self.region(index, out_dir)) }
            .map_err(ChannelError::Corrupted)?;
        // SAFETY: the region lies in this segment's mapping, which the
        // `Attachment` the end holds keeps alive.
        let sender = unsafe { ShmSender::new(producer, Arc::clone(&self.link)) };
        taken[index] = true;
        self.hang_up(index, in_dir);
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
        let (index, mut taken) = self.untaken(name)?;
        let (out_dir, in_dir) = self.directions();
        self.agree_fingerprint(index, in_dir, fp)?;
        // SAFETY: as in `take_sender`, for the consuming direction.
        let consumer = unsafe { Consumer::new(self.region(index, in_dir)) }
            .map_err(ChannelError::Corrupted)?;
        // SAFETY: as in `take_sender`.
        let receiver = unsafe { ShmReceiver::new(consumer, Arc::clone(&self.link)) };
        taken[index] = true;
        self.hang_up(index, out_dir);
        Ok(RawReceiver::new(
            RecvEnd::Shm(receiver),
            self.channels[index].wait,
            mode,
        ))
    }

    /// Channel `name`'s index, if it exists and was not taken yet, with the
    /// lock on the taken flags (set the flag once the take succeeds).
    fn untaken(
        &self,
        name: &str,
    ) -> Result<(usize, std::sync::MutexGuard<'_, Vec<bool>>), ChannelError> {
        let index = ChannelError::position(self.channel_names(), name)?;
        let taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if taken[index] {
            return Err(ChannelError::AlreadyTaken {
                name: name.to_owned(),
            });
        }
        Ok((index, taken))
    }

    /// Hangs up this side of ring `dir` of channel `index`, as dropping its
    /// end would: the outbound ring as a sender that committed nothing more,
    /// the inbound ring as a receiver. For ends this side will never take.
    fn hang_up(&self, index: usize, dir: Direction) {
        let region = self.region(index, dir);
        let ctrl = region.ctrl();
        if dir == self.side.outgoing() {
            // Release: as a dropped sender's close.
            ctrl.ends.producer_closed.store(1, Ordering::Release);
            ctrl.data_bell.ring_with(|| self.link.peer_bell());
        } else {
            // Release: as a dropped receiver's close.
            ctrl.ends.consumer_closed.store(1, Ordering::Release);
            ctrl.space_bell.ring_with(|| self.link.peer_bell());
        }
    }

    /// `(outbound, inbound)` ring directions for this side.
    fn directions(&self) -> (Direction, Direction) {
        (self.side.outgoing(), self.side.incoming())
    }
}

impl Drop for Segment {
    /// Hangs up this side of every channel that was never taken: those can
    /// no longer be taken, so the peer's ends report `Disconnected` instead
    /// of waiting for nobody. Taken channels are untouched, and the name
    /// stays until the opener attaches or the last channel end is dropped
    /// (see `Attachment`), so dropping a `Segment` (or a `Child`) early never
    /// strands a peer that has not attached yet.
    fn drop(&mut self) {
        let taken = std::mem::take(self.taken.get_mut().unwrap_or_else(|p| p.into_inner()));
        let (out_dir, in_dir) = (self.side.outgoing(), self.side.incoming());
        // Never touch a segment someone shrank (SIGBUS): skip the courtesy.
        let total = self.channels.last().map_or(0, |c| {
            let (offset, capacity) = c.rings[1];
            offset + crate::layout::RING_CONTROL_SIZE + capacity
        });
        if taken.iter().all(|&t| t) || !self.link.size_at_least(total) {
            return;
        }
        for index in (0..taken.len()).filter(|&i| !taken[i]) {
            self.hang_up(index, out_dir);
            self.hang_up(index, in_dir);
        }
    }
}
