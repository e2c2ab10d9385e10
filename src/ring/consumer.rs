//! The reading end of a ring: peek a frame in place, release it.

use super::{
    FRAME_ALIGN, FRAME_HEADER, FrameHeader, KIND_MSG, KIND_PAD, RingFault, RingRegion, frame_size,
};
use crate::sync::Ordering;

/// The consumer end. Owns the head; reads the tail only when the ring looks
/// empty (cached tail).
#[derive(Debug)]
pub(crate) struct Consumer {
    region: RingRegion,
    /// Our head. Only we write it, so it is never re-read from shared memory.
    head: u64,
    /// The last tail we read and validated; frames up to it are published.
    cached_tail: u64,
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
            cached_tail: head,
            fault: None,
        };
        if !head.is_multiple_of(FRAME_ALIGN) {
            return Err(c.poison(RingFault::BadIndex {
                seen: head,
                ours: head,
            }));
        }
        c.refresh_tail()?;
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

    /// Re-reads the producer's tail and validates it. Returns whether any
    /// bytes are published beyond our head.
    fn refresh_tail(&mut self) -> Result<bool, RingFault> {
        // Acquire: pairs with the producer's Release store of `tail`, making
        // the frames it published visible to our reads.
        let tail = self.region.ctrl().tail.load(Ordering::Acquire);
        if tail < self.cached_tail || !tail.is_multiple_of(FRAME_ALIGN) {
            return Err(self.poison(RingFault::BadIndex {
                seen: tail,
                ours: self.head,
            }));
        }
        if tail - self.head > self.region.capacity() {
            return Err(self.poison(RingFault::Overfull {
                in_flight: tail - self.head,
                capacity: self.region.capacity(),
            }));
        }
        self.cached_tail = tail;
        Ok(tail != self.head)
    }

    /// Bytes published and not yet released (frame headers, padding and PAD
    /// frames included), re-reading the producer's tail without side
    /// effects: an invalid tail is ignored (the last valid one counts) and
    /// left for the next `peek` to report. For queries (`&self`).
    pub(crate) fn in_flight(&self) -> u64 {
        // Acquire: as in `refresh_tail`.
        let tail = self.region.ctrl().tail.load(Ordering::Acquire);
        let valid = tail >= self.cached_tail
            && tail.is_multiple_of(FRAME_ALIGN)
            && tail - self.head <= self.region.capacity();
        if valid { tail } else { self.cached_tail }.saturating_sub(self.head)
    }

    /// The fault that poisoned this end, if any.
    pub(crate) fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Whether a frame is published (re-reading the tail if needed). Used by
    /// waiters as their wake-up condition; also true once poisoned, so the
    /// waiter returns to see the fault.
    pub(crate) fn has_data(&mut self) -> bool {
        self.fault.is_some() || self.cached_tail != self.head || self.refresh_tail() != Ok(false)
    }

    /// The next published message frame, validated, or `None` if the ring
    /// is empty. PAD frames are skipped. Repeated peeks return the same frame
    /// until it is released.
    #[inline]
    pub(crate) fn peek(&mut self) -> Result<Option<Frame>, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        if self.cached_tail == self.head && !self.refresh_tail()? {
            return Ok(None);
        }
        let cap = self.region.capacity();
        let mut pos = self.head;
        loop {
            let avail = self.cached_tail - pos;
            if avail == 0 {
                // Only a PAD was published (no correct producer does that);
                // drop it so the space is not lost.
                self.advance(pos);
                return Ok(None);
            }
            let idx = self.region.index(pos);
            let to_end = cap - idx;
            self.region.track_read(idx, FRAME_HEADER as u64);
            // SAFETY: `idx` is 16-aligned and `cap - idx >= 16` (positions
            // and `cap` are multiples of 16), so the header is in bounds and
            // aligned. The bytes were published by the Acquire load of the
            // tail; the volatile read copies them once into a local, and the
            // copy is validated below before anything trusts it.
            let header = unsafe { self.region.at(idx).cast::<FrameHeader>().read_volatile() };
            let (len, kind) = (header.len, header.kind);
            match kind {
                KIND_MSG => {
                    let size = frame_size(u64::from(len));
                    if size > to_end || size > avail || len as usize > self.region.max_payload() {
                        return Err(self.poison(RingFault::BadLength { len, pos }));
                    }
                    // The caller reads the payload from here until release.
                    self.region
                        .track_read(idx + FRAME_HEADER as u64, size - FRAME_HEADER as u64);
                    return Ok(Some(Frame {
                        payload: self.region.at(idx + FRAME_HEADER as u64),
                        len: len as usize,
                        end: pos + size,
                    }));
                }
                KIND_PAD => {
                    if u64::from(len) + FRAME_HEADER as u64 != to_end || to_end > avail {
                        return Err(self.poison(RingFault::BadLength { len, pos }));
                    }
                    pos += to_end;
                }
                _ => return Err(self.poison(RingFault::BadKind { kind, pos })),
            }
        }
    }

    /// Releases `frame` (the one [`Consumer::peek`] returned last) and any
    /// PAD before it, handing the space back to the producer.
    #[inline]
    pub(crate) fn release(&mut self, frame: Frame) {
        debug_assert!(frame.end > self.head && frame.end <= self.cached_tail);
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
