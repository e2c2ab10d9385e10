//! Laying out a new segment: where each ring goes, and writing the header,
//! the channel directory and the ring control blocks.

use std::ptr::{addr_of, addr_of_mut};

use crate::config::{self, ChannelConfig};
use crate::error::OpenError;
use crate::layout::*;
use crate::sync::{AtomicU64, Ordering};
use crate::wait::WaitStrategy;

/// Private, validated copy of one directory entry.
#[derive(Clone, Debug)]
pub(super) struct ChannelEntry {
    pub(super) name: String,
    pub(super) wait: WaitStrategy,
    /// `(offset, capacity)` per direction.
    pub(super) rings: [(usize, usize); 2],
}

pub(super) fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Validates the configuration (see [`config::validate`]) and places every ring; returns the entries
/// and the total segment size.
pub(super) fn plan(channels: &[ChannelConfig]) -> Result<(Vec<ChannelEntry>, usize), OpenError> {
    config::validate(channels)?;
    let invalid = |reason: String| OpenError::InvalidConfig { reason };
    let mut cursor = round_up(size_of::<SegmentHeader>(), PAGE);
    let mut entries = Vec::with_capacity(channels.len());
    for c in channels {
        let mut rings = [(0, 0); 2];
        for ring in &mut rings {
            *ring = (cursor, c.capacity);
            cursor = cursor
                .checked_add(round_up(RING_CONTROL_SIZE + c.capacity, PAGE))
                .ok_or_else(|| invalid("total segment size overflows".into()))?;
        }
        entries.push(ChannelEntry {
            name: c.name().to_owned(),
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
pub(super) unsafe fn initialise(base: *mut u8, total: usize, entries: &[ChannelEntry], alive: u32) {
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
