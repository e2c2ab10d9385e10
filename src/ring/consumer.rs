//! The reading end of a ring: peek a frame in place, release it.

use super::{
    FRAME_ALIGN, FRAME_HEADER, KIND_MSG, KIND_PAD, RingFault, RingRegion, commit_stamp, frame_size,
};
use crate::sync::Ordering;

/// The consumer end. Owns the head; learns of new frames from the commit
/// stamp at its head (see the module docs), not from the producer's tail.
#[derive(Debug)]
pub(crate) struct Consumer {
    region: RingRegion,
    /// Our head. Only we write it, so it is never re-read from shared memory.
    head: u64,
    fault: Option<RingFault>,
}

/// A published frame, validated, borrowed from the ring until released.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    /// First payload byte (16-aligned, inside the ring data).
    pub(crate) payload: *const u8,
    /// Exact payload length.
    pub(crate) len: usize,
    /// Position just past this frame: the head after release.
    end: u64,
}

impl Consumer {
    /// Takes the consumer end of a ring, resuming at its current head.
    ///
    /// # Safety
    ///
    /// No other consumer may exist for this ring, in any process, while this
    /// one lives.
    pub(crate) unsafe fn new(region: RingRegion) -> Result<Self, RingFault> {
        let ctrl = region.ctrl();
        // Acquire: pairs with the Release stores of both ends' indices.
        let head = ctrl.head.load(Ordering::Acquire);
        let mut c = Consumer {
            region,
            head,
            fault: None,
        };
        if !head.is_multiple_of(FRAME_ALIGN) {
            return Err(c.poison(RingFault::BadIndex {
                seen: head,
                ours: head,
            }));
        }
        // The tail is checked once here: the hot path never reads it.
        // Acquire: pairs with the producer's Release store of `tail`.
        let tail = c.region.ctrl().tail.load(Ordering::Acquire);
        if tail < head || !tail.is_multiple_of(FRAME_ALIGN) {
            return Err(c.poison(RingFault::BadIndex {
                seen: tail,
                ours: head,
            }));
        }
        if tail - head > c.region.capacity() {
            return Err(c.poison(RingFault::Overfull {
                in_flight: tail - head,
                capacity: c.region.capacity(),
            }));
        }
        Ok(c)
    }

    /// The ring this consumer reads.
    pub(crate) fn region(&self) -> &RingRegion {
        &self.region
    }

    fn poison(&mut self, fault: RingFault) -> RingFault {
        self.fault = Some(fault);
        fault
    }

    /// Bytes published and not yet released (frame headers, padding and PAD
    /// frames included), reading the producer's tail without side effects:
    /// an invalid tail counts as nothing in flight, and is no fault (the
    /// stamps, not the tail, say what is published). For queries (`&self`).
    pub(crate) fn in_flight(&self) -> u64 {
        // Acquire: pairs with the producer's Release store of `tail`.
        let tail = self.region.ctrl().tail.load(Ordering::Acquire);
        let valid = tail >= self.head
            && tail.is_multiple_of(FRAME_ALIGN)
            && tail - self.head <= self.region.capacity();
        if valid { tail - self.head } else { 0 }
    }

    /// Whether the header slot at `pos` carries the stamp that publishes it.
    #[inline(always)]
    fn stamped(&self, pos: u64) -> Result<(), u64> {
        // Acquire: pairs with the producer's Release store of this stamp in
        // `Producer::commit`, making the frame's header and payload (and,
        // for a PAD, the frame after it) visible to our reads.
        let seen = self
            .region
            .stamp(self.region.index(pos))
            .load(Ordering::Acquire);
        if seen == commit_stamp(pos) {
            Ok(())
        } else {
            Err(seen)
        }
    }

    /// The fault that poisoned this end, if any.
    pub(crate) fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Whether a frame is published (re-reading the tail if needed). Used by
    /// waiters as their wake-up condition; also true once poisoned, so the
    /// waiter returns to see the fault.
    pub(crate) fn has_data(&mut self) -> bool {
        self.fault.is_some() || self.stamped(self.head).is_ok()
    }

    /// The next published message frame, validated, or `None` if the ring
    /// is empty. PAD frames are skipped. Repeated peeks return the same frame
    /// until it is released.
    #[inline(always)]
    pub(crate) fn peek(&mut self) -> Result<Option<Frame>, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        if self.stamped(self.head).is_err() {
            return Ok(None);
        }
        let cap = self.region.capacity();
        let mut pos = self.head;
        // Most bytes the frame may take: behind a PAD, only the space before
        // the PAD (a frame at index 0 must not reach into it: the frame's
        // end would then lie more than a capacity past the head).
        let mut room = u64::MAX;
        loop {
            let idx = self.region.index(pos);
            let to_end = cap - idx;
            self.region.track_read(idx, FRAME_HEADER as u64);
            // SAFETY: `idx` is 16-aligned and `cap - idx >= 16` (positions
            // and `cap` are multiples of 16), so the header's first 8 bytes
            // are in bounds and aligned. They were published by the Acquire
            // load of the stamp; the volatile read copies them once into a
            // local, and the copy is validated below before anything trusts
            // it.
            let [len, kind] = unsafe { self.region.at(idx).cast::<[u32; 2]>().read_volatile() };
            match kind {
                KIND_MSG => {
                    let size = frame_size(u64::from(len));
                    if size > to_end.min(room) || len as usize > self.region.max_payload() {
                        return Err(self.poison(RingFault::BadLength { len, pos }));
                    }
                    // The caller reads the payload from here until release.
                    self.region
                        .track_read(idx + FRAME_HEADER as u64, size - FRAME_HEADER as u64);
                    self.region.prefetch(idx, size);
                    return Ok(Some(Frame {
                        payload: self.region.at(idx + FRAME_HEADER as u64),
                        len: len as usize,
                        end: pos + size,
                    }));
                }
                // A PAD runs exactly to the data end, and only one leads to
                // a frame (a PAD at index 0 would cover the whole ring).
                KIND_PAD if pos == self.head && idx != 0 => {
                    if u64::from(len) + FRAME_HEADER as u64 != to_end {
                        return Err(self.poison(RingFault::BadLength { len, pos }));
                    }
                    room = idx;
                    pos += to_end;
                    // The PAD's stamp published the frame behind it: a
                    // correct producer stamped that one first.
                    if let Err(seen) = self.stamped(pos) {
                        return Err(self.poison(RingFault::BadIndex { seen, ours: pos }));
                    }
                }
                KIND_PAD => return Err(self.poison(RingFault::BadLength { len, pos })),
                _ => return Err(self.poison(RingFault::BadKind { kind, pos })),
            }
        }
    }

    /// Releases `frame` (the one [`Consumer::peek`] returned last) and any
    /// PAD before it, handing the space back to the producer.
    #[inline]
    pub(crate) fn release(&mut self, frame: Frame) {
        debug_assert!(frame.end > self.head && frame.end - self.head <= self.region.capacity());
        // The caller's last read of the payload, before the Release store
        // that hands the space back.
        let size = frame_size(frame.len as u64);
        self.region
            .track_read(self.region.index(frame.end - size), size);
        self.advance(frame.end);
    }

    #[inline]
    fn advance(&mut self, pos: u64) {
        self.head = pos;
        // Release: our reads of the released frames happen before the
        // producer, Acquire-loading this head, overwrites them.
        self.region.ctrl().head.store(pos, Ordering::Release);
    }
}
