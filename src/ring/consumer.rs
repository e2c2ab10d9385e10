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
        // A head so close to the end of the position space that a skip
        // from it would wrap is no honest one (2^64 bytes never pass).
        let cap = c.region.capacity();
        if !head.is_multiple_of(FRAME_ALIGN) || head > u64::MAX - 2 * cap {
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
        // More than a capacity in flight only after a skip from the head
        // (see `Producer::skip`): then no more than a capacity from the lap
        // start on.
        if tail - head > cap && (c.region.index(head) == 0 || tail - c.region.lap_start(head) > cap)
        {
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

    /// Bytes published and not yet released (frame headers, padding and
    /// fillers included), reading the producer's tail without side effects:
    /// an invalid tail counts as nothing in flight, and is no fault (the
    /// stamps, not the tail, say what is published). For queries (`&self`).
    ///
    /// After a skip the skipped bytes are not in flight: counted from the
    /// lap start.
    pub(crate) fn in_flight(&self) -> u64 {
        // Acquire: pairs with the producer's Release store of `tail`.
        let tail = self.region.ctrl().tail.load(Ordering::Acquire);
        let base = self.next_frame_at().unwrap_or(self.head);
        let valid = tail >= base
            && tail.is_multiple_of(FRAME_ALIGN)
            && tail - base <= self.region.capacity();
        if valid { tail - base } else { 0 }
    }

    /// Whether the header slot at `pos` carries the stamp that publishes it.
    #[inline(always)]
    fn stamped(&self, pos: u64) -> Result<(), u64> {
        // Acquire: pairs with the producer's Release store of this stamp in
        // `Producer::commit`, making the frame's header and payload (and,
        // for a filler, the frame after it) visible to our reads.
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

    /// Where the next published frame starts: the head, or after a skip
    /// the next lap start; `None` if nothing is published.
    ///
    /// The producer puts a frame at the next lap start instead of the head
    /// when the rest of the lap is too small for it, or to rewind on an
    /// empty ring; it writes nothing at the head then (module docs). So:
    /// no stamp at the head, the lap start's stamp, and still no stamp at
    /// the head once that one is seen. The re-check is what keeps the order:
    /// the lap start's stamp may also belong to a frame published after the
    /// one at the head, whose stamp our first load missed; the Acquire load
    /// of the lap start's stamp makes the head's (stored earlier by the
    /// producer) visible to the re-load, and the head's slot cannot have
    /// been reused since (its frame is not released).
    #[inline(always)]
    fn next_frame_at(&self) -> Option<u64> {
        let head = self.head;
        if self.stamped(head).is_ok() {
            return Some(head);
        }
        if self.region.index(head) == 0 {
            return None; // a lap start never skips
        }
        let lap = self.region.lap_start(head);
        self.stamped(lap).ok()?;
        Some(if self.stamped(head).is_ok() {
            head
        } else {
            lap
        })
    }

    /// Whether a frame is published. Used by waiters as their wake-up
    /// condition; also true once poisoned, so the waiter returns to see the
    /// fault.
    pub(crate) fn has_data(&mut self) -> bool {
        self.fault.is_some() || self.next_frame_at().is_some()
    }

    /// The next published message frame, validated, or `None` if the ring
    /// is empty. Filler frames and skipped bytes are passed over. Repeated
    /// peeks return the same frame until it is released.
    #[inline(always)]
    pub(crate) fn peek(&mut self) -> Result<Option<Frame>, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        let Some(mut pos) = self.next_frame_at() else {
            return Ok(None);
        };
        let cap = self.region.capacity();
        // Most bytes the frame may take: the rest of the lap; behind a
        // skip, only up to the head's own index (the frame then ends by
        // `head + cap`, a capacity past the head: an honest skip frame ends
        // by the producer's guard slot there).
        let mut room = if pos == self.head {
            cap - self.region.index(pos)
        } else {
            self.region.index(self.head)
        };
        loop {
            let idx = self.region.index(pos);
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
                    if size > room || len as usize > self.region.max_payload() {
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
                // A filler: only at the head (never at a lap start, never a
                // second one), a whole number of granules, ending before
                // the data end (an honest one ends at a guard slot, whose
                // index is never 0), with a frame behind it.
                KIND_PAD if pos == self.head && idx != 0 => {
                    let size = FRAME_HEADER as u64 + u64::from(len);
                    if !size.is_multiple_of(FRAME_ALIGN) || size >= room {
                        return Err(self.poison(RingFault::BadLength { len, pos }));
                    }
                    room -= size;
                    pos += size;
                    // The filler's stamp published the frame behind it: a
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
    /// filler or skipped bytes before it, handing the space back to the
    /// producer.
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
