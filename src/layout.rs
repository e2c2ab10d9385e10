//! The shared-memory layout, byte for byte.
//!
//! ```text
//! offset 0      SegmentHeader   magic, version, init word, size, creator pid,
//!                               claim word, channel count, aggregate bells
//!        64     ChannelDescriptor × MAX_CHANNELS   name, two ring descriptors
//!        page   ring block      RingControl (640 B) + data (capacity bytes)
//!        page   ring block      ... one per channel direction
//! ```
//!
//! Everything here is `#[repr(C)]` and pinned with `static_assertions`, so a
//! parent and a child built from the same remora version agree on every
//! offset. The peer can write any of these bytes at any time: plain fields are
//! only read through raw pointers into private copies, and validated before
//! use; only the atomics are ever borrowed.

use crossbeam_utils::CachePadded;

use crate::doorbell::{AggregateBell, Doorbell};
use crate::sync::{AtomicU32, AtomicU64};

/// "REMORA" + layout generation, little-endian: the first 8 bytes of a segment.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"REMORA\x00\x01");
/// Bumped whenever any struct in this file, or the ring protocol over
/// them, changes: 4 is the skip rewind (no PAD at the data end), which a
/// version-3 consumer would wait at for good.
pub(crate) const LAYOUT_VERSION: u32 = 4;
/// Value of [`SegmentHeader::init`] once the creator finished writing.
pub(crate) const INIT_READY: u32 = 0x5245_4459; // "REDY"
/// Most channels one segment can hold.
pub(crate) const MAX_CHANNELS: usize = 32;
/// Longest channel name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 48;
/// Ring blocks start on page boundaries.
pub(crate) const PAGE: usize = 4096;

/// Offset of [`SegmentHeader::creator_alive`].
pub(crate) const CREATOR_WORD: usize = std::mem::offset_of!(SegmentHeader, creator_alive);
/// Offset of [`SegmentHeader::opener_alive`].
pub(crate) const OPENER_WORD: usize = std::mem::offset_of!(SegmentHeader, opener_alive);
/// Offset of [`SegmentHeader::creator_bell`].
pub(crate) const CREATOR_BELL: usize = std::mem::offset_of!(SegmentHeader, creator_bell);
/// Offset of [`SegmentHeader::opener_bell`].
pub(crate) const OPENER_BELL: usize = std::mem::offset_of!(SegmentHeader, opener_bell);

/// The fixed header at offset 0.
#[repr(C)]
pub(crate) struct SegmentHeader {
    /// [`MAGIC`].
    pub(crate) magic: u64,
    /// [`LAYOUT_VERSION`].
    pub(crate) version: u32,
    /// [`INIT_READY`] once everything else is written (Release store).
    pub(crate) init: AtomicU32,
    /// Total segment size in bytes, as created.
    pub(crate) total_size: u64,
    /// The creating process (informational; liveness uses the words below).
    pub(crate) creator_pid: u32,
    /// Number of used entries in `channels`.
    pub(crate) channel_count: u32,
    /// The creator's robust liveness word (see `sys::robust`): its
    /// sentinel's TID, set before `init`; `FUTEX_OWNER_DIED` once it died.
    pub(crate) creator_alive: std::sync::atomic::AtomicU32,
    pub(crate) _pad: u32,
    /// The opener's liveness word, and the claim: 0 until one opener
    /// compare-exchanges its sentinel's TID in; a second opener is refused.
    pub(crate) opener_alive: std::sync::atomic::AtomicU32,
    pub(crate) _pad2: u32,
    /// "Something arrived for the creator": bumped (and woken) by the
    /// opener's notifiers when a `WaitSet` of the creator is armed on one
    /// of the rings it notifies (see `doorbell::AggregateBell`).
    pub(crate) creator_bell: AggregateBell,
    /// The same for the opener, bumped by the creator's notifiers.
    pub(crate) opener_bell: AggregateBell,
    pub(crate) _reserved: [u32; 2],
    /// The channel directory.
    pub(crate) channels: [ChannelDescriptor; MAX_CHANNELS],
}

/// One named duplex channel: two rings.
#[repr(C)]
pub(crate) struct ChannelDescriptor {
    /// UTF-8 name, `name_len` bytes used.
    pub(crate) name: [u8; MAX_NAME_LEN],
    pub(crate) name_len: u32,
    /// The creator's wait strategy for the channel (0 adaptive, 1 spin,
    /// 2 block): the opener's default too. Unknown values mean adaptive.
    pub(crate) wait_hint: u32,
    /// Indexed by `side::Direction::index`: creator-to-opener first.
    pub(crate) rings: [RingDescriptor; 2],
    pub(crate) _reserved: [u8; 24],
}

/// Where one ring lives and what it carries.
#[repr(C)]
pub(crate) struct RingDescriptor {
    /// Offset of the ring's [`RingControl`] from the segment start.
    pub(crate) offset: u64,
    /// Data capacity in bytes (a power of two); data follows the control block.
    pub(crate) capacity: u64,
    /// Message type fingerprint: 0 until the first side opens the channel.
    pub(crate) fingerprint: AtomicU64,
}

/// The control block in front of every ring's data. Only atomics: both sides
/// may hold references to it.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct RingControl {
    /// Bytes ever published by the producer (monotonic; Release-stored).
    /// Frames are published by their commit stamps (`ring` module docs);
    /// the consumer reads this only when it takes its end and for queries.
    pub(crate) tail: CachePadded<AtomicU64>,
    /// Bytes ever released by the consumer (monotonic; Release-stored).
    pub(crate) head: CachePadded<AtomicU64>,
    /// The consumer sleeps here waiting for data.
    pub(crate) data_bell: CachePadded<Doorbell>,
    /// The producer sleeps here waiting for space.
    pub(crate) space_bell: CachePadded<Doorbell>,
    /// Which ends have hung up.
    pub(crate) ends: CachePadded<CloseFlags>,
}

/// Close flags of one ring: 1 once that end is gone (Release-stored).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CloseFlags {
    pub(crate) producer_closed: AtomicU32,
    pub(crate) consumer_closed: AtomicU32,
}

/// Size of the control block; ring data starts this far into a ring block.
pub(crate) const RING_CONTROL_SIZE: usize = size_of::<RingControl>();

#[cfg(not(loom))]
mod checks {
    use super::*;
    use static_assertions::{const_assert, const_assert_eq};
    use std::mem::offset_of;

    const_assert_eq!(offset_of!(SegmentHeader, magic), 0);
    const_assert_eq!(offset_of!(SegmentHeader, version), 8);
    const_assert_eq!(offset_of!(SegmentHeader, init), 12);
    const_assert_eq!(offset_of!(SegmentHeader, total_size), 16);
    const_assert_eq!(offset_of!(SegmentHeader, creator_pid), 24);
    const_assert_eq!(offset_of!(SegmentHeader, channel_count), 28);
    // Liveness words sit 8-aligned in the first page, 8 bytes apart: their
    // robust-list entries (8 bytes each, same offsets in the private guard
    // page) must not overlap.
    const_assert_eq!(offset_of!(SegmentHeader, creator_alive), 32);
    const_assert_eq!(offset_of!(SegmentHeader, opener_alive), 40);
    // The aggregate bells (wait sets): one futex word per side.
    const_assert_eq!(offset_of!(SegmentHeader, creator_bell), 48);
    const_assert_eq!(offset_of!(SegmentHeader, opener_bell), 52);
    const_assert_eq!(size_of::<AggregateBell>(), 4);
    const_assert_eq!(offset_of!(SegmentHeader, channels), 64);
    const_assert_eq!(size_of::<ChannelDescriptor>(), 128);
    const_assert_eq!(offset_of!(ChannelDescriptor, rings), 56);
    const_assert_eq!(size_of::<RingDescriptor>(), 24);
    const_assert_eq!(size_of::<SegmentHeader>(), 64 + 128 * MAX_CHANNELS);
    const_assert!(size_of::<SegmentHeader>() <= 2 * PAGE);
    // Producer- and consumer-written words never share a cache line.
    const_assert_eq!(offset_of!(RingControl, tail), 0);
    const_assert_eq!(offset_of!(RingControl, head), 128);
    const_assert_eq!(offset_of!(RingControl, data_bell), 256);
    const_assert_eq!(offset_of!(RingControl, space_bell), 384);
    const_assert_eq!(offset_of!(RingControl, ends), 512);
    const_assert_eq!(RING_CONTROL_SIZE, 640);
    // Ring data must start 16-aligned for rkyv (it is 128-aligned).
    const_assert_eq!(RING_CONTROL_SIZE % 128, 0);
    const_assert_eq!(size_of::<Doorbell>(), 8);
}
