//! A single-producer single-consumer byte ring of variable-length frames.
//!
//! The ring knows nothing of rkyv, futexes or processes: it moves frames
//! through a raw memory region described by a [`RingRegion`].
//!
//! # Positions
//!
//! `head` (consumer) and `tail` (producer) are monotonic `u64` byte counts;
//! the data index is `pos & (cap - 1)` with `cap` a power of two. Bytes in
//! flight are `tail - head`, less the bytes of a skip the consumer is
//! waiting at (below), and never more than `cap`; 64 bits never wrap in
//! practice.
//!
//! # Frames, skips and fillers
//!
//! A frame is a 16-byte [`FrameHeader`] followed by its payload, padded to a
//! multiple of 16 bytes, so every payload starts 16-aligned (rkyv needs it).
//! Frames never wrap, so index 0 is a frame start in every lap. The largest
//! payload that always fits is `cap / 2 - 16` ([`RingRegion::max_payload`]);
//! larger payloads are refused.
//!
//! *Skip*: when a frame does not fit before the end of the data, or to
//! rewind (the producer goes back to index 0 on an empty ring so that an
//! exchange keeps reusing a few cached lines), the producer puts the frame
//! at the next lap start, [`RingRegion::lap_start`]`(tail)`, and writes
//! nothing at the old tail `S`, the skip point. A consumer at `S` finds no
//! stamp there, checks the lap start's, and jumps (see
//! `Consumer::next_frame_at` for the order of those loads). The skipped
//! bytes are never read, so while the consumer's head is `S` the producer
//! counts them free at once (`Producer::base`): a rewind costs the ring no
//! capacity.
//!
//! *Guard slot and fillers*: a consumer waiting at `S` polls the stamp word
//! at index `idx(S)`, which the producer reaches again in the next lap, at
//! `S + cap`, while that consumer may still be waiting. Until the producer
//! sees the consumer's head move past `S`, the slot at `S + cap` holds a
//! frame start (never payload): a frame that would straddle it goes there
//! behind a *filler*, a PAD frame from the tail to `S + cap`, published with
//! it (the frame's stamp first, the filler's last).
//!
//! # Publication: commit stamps
//!
//! Every header carries a commit stamp, [`commit_stamp`]`(pos)` of its own
//! position, written last with a Release store. The consumer polls the stamp
//! at its head (Acquire) instead of the producer's `tail`: the line it polls
//! is the line the frame is in, so a small message costs the consumer one
//! cross-core line transfer where polling `tail` then reading the header
//! cost two in series. When there is no stamp at its head, it also loads
//! the stamp at the next lap start (a skip). The producer still
//! Release-stores `tail` (before the stamp), for in-flight queries, for a
//! producer resuming the ring, and for tools; the consumer never reads it on
//! the hot path.
//!
//! A stamp never matches by accident. The consumer at head `H` reads two
//! stamp words:
//!
//! * At `H`, the word holds (a) 0 from creation, (b) the stamp of another
//!   header at that index, `commit_stamp(H ± k * cap)`, which differs, or
//!   (c) payload bytes, which could hold anything. Payload of an earlier lap
//!   is excluded by the producer: every commit zeroes the stamp word where
//!   the next frame will start, before publishing, whenever that slot is
//!   free. When it is not free, the ring is exactly full and the slot is the
//!   header of the oldest frame in flight, so (b) holds there. Payload of
//!   the next lap is excluded by the guard slot: the producer writes a lap
//!   past `H` only while the consumer is at a skip point `H`, and then keeps
//!   a frame start at `H + cap`.
//! * At index 0 (when `H` is not a lap start), for
//!   `commit_stamp(lap_start(H))`: index 0 only ever holds headers and
//!   next-slot clears, so the stamp appears only once a frame at that lap
//!   start is published. That frame follows the one at `H` if there is one;
//!   the consumer's re-check of `H` after the lap start's Acquire load puts
//!   them back in order.
//!
//! Skipped bytes and filler bodies keep stale bytes, but no consumer polls
//! inside them. Loom models make the producer's payload adversarial
//! ([`RingRegion::track_payload`]).
//!
//! # Trust
//!
//! The peer can write the control block and the data at any time. Each side
//! keeps its own position and the capacity in private fields, reads the
//! peer's index once into a local, and validates it and every frame header
//! before use. A violation is a [`RingFault`] that poisons that end for good.

mod consumer;
mod producer;

pub(crate) use consumer::{Consumer, Frame as RingFrame};
pub(crate) use producer::{Producer, ReserveError};

use std::fmt;
use std::ptr::NonNull;

use crate::layout::RingControl;

/// Bytes in a frame header; also the frame alignment.
pub(crate) const FRAME_HEADER: usize = 16;
/// Every frame starts and ends on this alignment.
pub(crate) const FRAME_ALIGN: u64 = 16;
/// Cache line size assumed by [`RingRegion::prefetch`].
#[cfg_attr(loom, allow(dead_code))]
const LINE: u64 = 64;
/// Most lines of one frame [`RingRegion::prefetch`] asks for; beyond a few
/// lines the hardware's own stream prefetcher has taken over.
#[cfg_attr(loom, allow(dead_code))]
const PREFETCH_LINES: u64 = 4;
/// Smallest accepted capacity.
pub(crate) const MIN_CAPACITY: usize = 64;
/// Largest accepted capacity (frame lengths are `u32`).
pub(crate) const MAX_CAPACITY: usize = 1 << 31;

/// `kind` of a frame carrying a message ("MSG1"). The FIFO transport's
/// frames use the same header and kind.
pub(crate) const KIND_MSG: u32 = 0x3147_534d;
/// `kind` of a filler frame ("PAD1"): bytes to pass over, from the head to
/// a guard slot in the same lap (module docs).
const KIND_PAD: u32 = 0x3144_4150;

/// The header in front of every frame, as it sits in the ring.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameHeader {
    /// Exact payload length in bytes (without padding).
    pub(crate) len: u32,
    /// [`KIND_MSG`] or [`KIND_PAD`] (a filler).
    pub(crate) kind: u32,
    /// [`commit_stamp`] of the frame's position once published. Accessed
    /// only atomically ([`RingRegion::stamp`]); this field only fixes the
    /// layout. (The FIFO transport's headers leave it 0.)
    pub(crate) stamp: u64,
}
static_assertions::const_assert_eq!(size_of::<FrameHeader>(), FRAME_HEADER);
/// Offset of the stamp word in a header (8-aligned).
#[cfg_attr(loom, allow(dead_code))]
const STAMP_OFFSET: u64 = 8;
static_assertions::const_assert_eq!(std::mem::offset_of!(FrameHeader, stamp), 8);

/// The stamp that publishes a frame (or filler) at ring position `pos`: never 0
/// (positions stay far below `u64::MAX`), and different for every position,
/// so neither fresh memory nor a header of an earlier lap matches it.
#[inline]
pub(crate) const fn commit_stamp(pos: u64) -> u64 {
    !pos
}

/// Frame size for a payload of `len` bytes: header plus padded payload.
#[inline]
pub(crate) const fn frame_size(len: u64) -> u64 {
    FRAME_HEADER as u64 + ((len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1))
}

/// A protocol violation seen in the ring: the peer (or something else)
/// wrote values no correct producer/consumer can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFault {
    /// The peer's index moved backwards, past ours, or off alignment.
    BadIndex {
        /// The value read from shared memory.
        seen: u64,
        /// Our own position at the time.
        ours: u64,
    },
    /// The peer published more bytes than the ring holds.
    Overfull {
        /// Bytes claimed in flight.
        in_flight: u64,
        /// Ring capacity.
        capacity: u64,
    },
    /// A frame header has an unknown kind.
    BadKind {
        /// The kind word found.
        kind: u32,
        /// Ring position of the frame.
        pos: u64,
    },
    /// A frame's length runs past the data end, past what was published, or
    /// past the largest deliverable message, or (behind a skip) past the
    /// head's own index a lap later; or a filler frame is malformed or out
    /// of place.
    BadLength {
        /// The length word found.
        len: u32,
        /// Ring position of the frame.
        pos: u64,
    },
}

impl fmt::Display for RingFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RingFault::BadIndex { seen, ours } => {
                write!(f, "peer index {seen} is inconsistent with ours ({ours})")
            }
            RingFault::Overfull {
                in_flight,
                capacity,
            } => write!(
                f,
                "peer published {in_flight} bytes into a ring of {capacity}"
            ),
            RingFault::BadKind { kind, pos } => {
                write!(f, "frame at position {pos} has unknown kind {kind:#x}")
            }
            RingFault::BadLength { len, pos } => {
                write!(f, "frame at position {pos} has impossible length {len}")
            }
        }
    }
}

/// Where a ring lives: its control block and its data bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingRegion {
    ctrl: NonNull<RingControl>,
    data: NonNull<u8>,
    /// Private copy of the capacity: never re-read from shared memory.
    cap: u64,
    /// loom builds: one tracked cell per 16-byte granule of `data`, or
    /// null (untracked). See [`crate::sync::DataCell`].
    #[cfg(loom)]
    cells: *const crate::sync::DataCell,
    /// loom builds: one loom atomic per 16-byte granule standing for that
    /// granule's stamp word (loom cannot make an atomic out of plain memory).
    #[cfg(loom)]
    stamps: *const crate::sync::AtomicU64,
}

// SAFETY: a region is a pair of pointers into memory that outlives every
// producer/consumer built on it (their owners keep the mapping alive); the
// protocol, not the pointer type, governs access.
unsafe impl Send for RingRegion {}

impl RingRegion {
    /// Describes a ring.
    ///
    /// # Safety
    ///
    /// `ctrl` must point to an initialised [`RingControl`] and `data` to
    /// `cap` bytes, both valid (and 16-aligned for `data`) for as long as any
    /// [`Producer`] or [`Consumer`] made from this region exists. `cap` must
    /// be a power of two in `MIN_CAPACITY..=MAX_CAPACITY`. At most one
    /// producer and one consumer may exist for a ring, across all processes.
    pub(crate) unsafe fn new(ctrl: NonNull<RingControl>, data: NonNull<u8>, cap: usize) -> Self {
        debug_assert!(cap.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&cap));
        debug_assert_eq!(data.as_ptr() as usize % FRAME_ALIGN as usize, 0);
        RingRegion {
            ctrl,
            data,
            cap: cap as u64,
            #[cfg(loom)]
            cells: std::ptr::null(),
            #[cfg(loom)]
            stamps: std::ptr::null(),
        }
    }

    /// loom builds: tracks every access to the data through `cells`, one
    /// per 16-byte granule, and keeps the stamp words in `stamps`, one per
    /// granule (all 0 initially, like fresh ring memory).
    ///
    /// # Safety
    ///
    /// `cells` and `stamps` must each point to `capacity / 16` elements that
    /// live as long as every producer and consumer made from the returned
    /// region.
    #[cfg(loom)]
    pub(crate) unsafe fn with_cells(
        self,
        cells: *const crate::sync::DataCell,
        stamps: *const crate::sync::AtomicU64,
    ) -> Self {
        RingRegion {
            cells,
            stamps,
            ..self
        }
    }

    /// Whether a frame for a consumer whose head is `pos` is published: the
    /// stamp at `pos`, or (after a skip) the one at the next lap start. What
    /// a wait set's probe asks of a receiver's ring, with `pos` the head as
    /// stored in shared memory. A `pos` off the frame alignment (a
    /// scribbled head) counts as published, so the receiver runs and
    /// reports what it finds.
    #[cfg_attr(loom, allow(dead_code))] // wait sets are not built under loom
    pub(crate) fn is_published(&self, pos: u64) -> bool {
        if !pos.is_multiple_of(FRAME_ALIGN) {
            return true;
        }
        // Acquire (both): pairs with the producer's Release store of the
        // stamp, as in the consumer's own check. No re-check of `pos` is
        // needed for a yes/no: either way the consumer then finds a frame.
        let idx = self.index(pos);
        self.stamp(idx).load(crate::sync::Ordering::Acquire) == commit_stamp(pos)
            || (idx != 0
                && self.stamp(0).load(crate::sync::Ordering::Acquire)
                    == commit_stamp(self.lap_start(pos)))
    }

    /// Where a consumer whose head is `head` takes its next frame from, as
    /// its producer counts room: the next lap start after a skip from
    /// `head` (no stamp at `head`, the lap start's there), else `head`.
    /// What a wait set's probe of a sender uses, with `head` as stored in
    /// shared memory (a scribbled one only makes the count garbage).
    #[cfg_attr(loom, allow(dead_code))] // wait sets are not built under loom
    pub(crate) fn room_base(&self, head: u64) -> u64 {
        let idx = self.index(head);
        let lap = self.lap_start(head);
        // Acquire (both): as in `is_published`.
        let skipped = head.is_multiple_of(FRAME_ALIGN)
            && idx != 0
            && self.stamp(idx).load(crate::sync::Ordering::Acquire) != commit_stamp(head)
            && self.stamp(0).load(crate::sync::Ordering::Acquire) == commit_stamp(lap);
        if skipped { lap } else { head }
    }

    /// The position of the next lap's start after `pos`: where a frame that
    /// skips the rest of `pos`'s lap goes. (`pos + cap` for a `pos` at a
    /// lap start, which never skips.) Wrapping: `pos` may be a position the
    /// peer wrote.
    #[inline(always)]
    pub(crate) fn lap_start(&self, pos: u64) -> u64 {
        pos.wrapping_sub(self.index(pos)).wrapping_add(self.cap)
    }

    /// The stamp word of the header slot at data index `idx` (16-aligned,
    /// `< cap`).
    #[inline(always)]
    fn stamp(&self, idx: u64) -> &crate::sync::AtomicU64 {
        debug_assert!(idx.is_multiple_of(FRAME_ALIGN) && idx < self.cap);
        #[cfg(not(loom))]
        {
            // SAFETY: `idx` is 16-aligned and `idx + 16 <= cap`, so the word
            // at `idx + 8` is 8-aligned and inside the data, which outlives
            // `self` (`new`'s contract). Shared memory the peer writes may
            // sit behind an atomic: both processes access a stamp word only
            // atomically, and the other accesses to these bytes (payload of
            // another lap) are ordered against ours by the head/tail/stamp
            // protocol.
            unsafe { crate::sync::AtomicU64::from_ptr(self.at(idx + STAMP_OFFSET).cast()) }
        }
        #[cfg(loom)]
        {
            assert!(!self.stamps.is_null(), "loom rings need with_cells");
            // SAFETY: `with_cells`' contract: `cap / 16` live atomics, and
            // `idx / 16 < cap / 16`.
            unsafe { &*self.stamps.add((idx / FRAME_ALIGN) as usize) }
        }
    }

    /// Records a write of data `idx..idx + len` (16-aligned, in bounds) for
    /// loom; nothing in normal builds.
    #[inline(always)]
    fn track_write(&self, idx: u64, len: u64) {
        #[cfg(loom)]
        self.each_cell(idx, len, |cell| cell.with_mut(|_| ()));
        #[cfg(not(loom))]
        let _ = (idx, len);
    }

    /// Records the caller's write of a frame's payload, `len` bytes after
    /// the header at position `pos`, for loom; nothing in normal builds.
    ///
    /// In loom builds each payload granule also stores, in the model's stamp
    /// word for that granule, the stamp a consumer one lap behind would poll
    /// there, `commit_stamp(q - cap)`: the worst payload an honest peer can
    /// send (real payload bytes overwrite the stamp words they cover; loom
    /// keeps those words apart). A producer that wrote payload over the slot
    /// such a consumer polls would then hand it a frame read from payload,
    /// which fails the model.
    #[inline(always)]
    fn track_payload(&self, pos: u64, len: u64) {
        let idx = self.index(pos) + FRAME_HEADER as u64;
        self.track_write(idx, len);
        #[cfg(loom)]
        if !self.stamps.is_null() {
            let mut q = pos + FRAME_HEADER as u64;
            while q < pos + FRAME_HEADER as u64 + len {
                // Relaxed: stands for plain payload bytes, published (if at
                // all) by the frame's stamp like the rest of the payload.
                self.stamp(self.index(q)).store(
                    commit_stamp(q.wrapping_sub(self.cap)),
                    crate::sync::Ordering::Relaxed,
                );
                q += FRAME_ALIGN;
            }
        }
    }

    /// Records a read of data `idx..idx + len` for loom; nothing in normal
    /// builds.
    #[inline(always)]
    fn track_read(&self, idx: u64, len: u64) {
        #[cfg(loom)]
        self.each_cell(idx, len, |cell| cell.with(|_| ()));
        #[cfg(not(loom))]
        let _ = (idx, len);
    }

    #[cfg(loom)]
    fn each_cell(&self, idx: u64, len: u64, f: impl Fn(&crate::sync::DataCell)) {
        if self.cells.is_null() {
            return;
        }
        let first = idx / FRAME_ALIGN;
        let end = (idx + len)
            .div_ceil(FRAME_ALIGN)
            .min(self.cap / FRAME_ALIGN);
        for granule in first..end {
            // SAFETY: `with_cells`' contract: `cap / 16` live cells, and
            // `granule < cap / 16`.
            f(unsafe { &*self.cells.add(granule as usize) });
        }
    }

    /// The shared control block. Only atomics, so a shared reference is sound
    /// even though the peer writes it.
    #[inline]
    pub(crate) fn ctrl(&self) -> &RingControl {
        // SAFETY: `new`'s contract keeps the control block alive and
        // initialised while `self` is usable; it holds only atomics.
        unsafe { self.ctrl.as_ref() }
    }

    /// Data capacity in bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.cap
    }

    /// The largest payload [`Producer::reserve`] will grant: `cap / 2 - 16`,
    /// which fits in an empty ring whatever its position.
    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        (self.cap / 2) as usize - FRAME_HEADER
    }

    /// Pointer to data index `idx` (`idx <= cap`: the payload pointer of an
    /// empty frame at the very end is one past the data).
    #[inline]
    fn at(&self, idx: u64) -> *mut u8 {
        debug_assert!(idx <= self.cap);
        // SAFETY: idx <= cap keeps the pointer inside the data region or one
        // past its end.
        unsafe { self.data.as_ptr().add(idx as usize) }
    }

    /// Asks the CPU to start loading the cache lines of data
    /// `idx..idx + len` after the first (at most [`PREFETCH_LINES`] of
    /// them), so that the misses on a frame's lines overlap instead of
    /// coming one after the other as the caller reads. A hint: no effect on
    /// what any read returns.
    #[inline(always)]
    fn prefetch(&self, idx: u64, len: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            let first = (idx | (LINE - 1)) + 1;
            let end = (idx + len).min(first + PREFETCH_LINES * LINE);
            let mut line = first;
            while line < end {
                // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU
                // has. A prefetch never faults and reads nothing into the
                // program; `line < idx + len <= cap` keeps the pointer
                // inside the data anyway.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        self.at(line).cast::<i8>(),
                    )
                };
                line += LINE;
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        let _ = (idx, len);
    }

    #[inline]
    fn index(&self, pos: u64) -> u64 {
        pos & (self.cap - 1)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
