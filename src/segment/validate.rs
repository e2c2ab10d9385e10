//! Checking a segment made by another process before anything trusts it.

use std::ptr::addr_of;

use super::plan::{ChannelEntry, round_up};
use crate::error::OpenError;
use crate::layout::*;
use crate::ring::{MAX_CAPACITY, MIN_CAPACITY};
use crate::sync::{AtomicU32, Ordering};
use crate::wait::WaitStrategy;

/// Checks a mapped segment before anything trusts it; returns private
/// copies of the directory.
///
/// # Safety
///
/// `base` must be a live mapping of `len >= size_of::<SegmentHeader>()` bytes.
pub(super) unsafe fn validate(base: *mut u8, len: usize) -> Result<Vec<ChannelEntry>, OpenError> {
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
