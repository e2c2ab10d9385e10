//! The writing end of a ring: reserve space, write in place, commit.

use super::{
    FRAME_ALIGN, FRAME_HEADER, KIND_MSG, KIND_PAD, RingFault, RingRegion, commit_stamp, frame_size,
};
use crate::sync::Ordering;

/// Frames at least this large (header included) rewind to index 0 when the
/// ring is empty (see `Producer::try_rewind`).
const REWIND_MIN: u64 = 4096;
/// Smaller frames rewind too, once the tail is at least this far into the
/// data, checking at most once per this many bytes of progress: a small
/// request/reply exchange then cycles through the first few lines of the
/// ring, which stay in the two cores' caches, instead of writing every
/// message into lines nobody has touched for a lap (measured: the fewer
/// distinct lines a ping-pong cycles through, the faster; ARCHITECTURE.md,
/// "Where the time goes"). Costs one load of the consumer's head per
/// window; a rewind takes no capacity (the skipped bytes are free at once,
/// see [`Producer::skip`]).
pub(crate) const REWIND_WINDOW: u64 = 192;

/// The producer end. Owns the tail; reads the head only when the ring looks
/// full (cached head).
#[derive(Debug)]
pub(crate) struct Producer {
    region: RingRegion,
    /// Our tail. Only we write it, so it is never re-read from shared memory.
    tail: u64,
    /// The last head we read; space up to it is known free.
    cached_head: u64,
    fault: Option<RingFault>,
    /// Payload length of the last commit: the size hint of unsized sends.
    last_len: usize,
    /// No small-frame rewind is tried before the tail reaches this position
    /// (see [`REWIND_WINDOW`]).
    rewind_after: u64,
    /// The small-frame rewind window: [`REWIND_WINDOW`], smaller in loom
    /// models so that their tiny rings rewind.
    window: u64,
    /// The position `S` of the last skip (a frame put at the next lap start,
    /// `lap_start(S)`, leaving `[S, lap_start(S))` unwritten), while the
    /// consumer may not have passed it. While the consumer's head is `S`,
    /// it will next read the frame at the lap start and never the skipped
    /// bytes, so they count as free (see [`Producer::base`]); in exchange
    /// the slot at `S + cap`, which that consumer polls, must hold a frame
    /// start and never payload (see [`Producer::to_guard`]).
    skip: Option<u64>,
}

/// Why [`Producer::reserve`] gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// Not enough contiguous free space right now (or less free space than
    /// the caller's `refill` asked for); retry after the consumer releases.
    Full,
    /// The payload exceeds [`RingRegion::max_payload`]; it never fits.
    TooLarge,
    /// The consumer published an impossible head earlier.
    Fault(RingFault),
}

/// Contiguous space granted by [`Producer::reserve`]; publishes nothing until
/// passed to [`Producer::commit`]. Dropping it abandons the space.
#[derive(Debug)]
#[must_use = "a grant publishes nothing until committed"]
pub(crate) struct Grant {
    /// First payload byte (16-aligned, inside the ring data).
    pub(crate) payload: *mut u8,
    /// Writable payload bytes at `payload`.
    pub(crate) len: usize,
    /// Bytes of filler frame to write at the old tail first (0: none).
    fill: u64,
    /// Bytes skipped, unwritten, from the old tail to the next lap start,
    /// where the frame goes (0: none).
    skip: u64,
}

impl Producer {
    /// Takes the producer end of a ring, resuming at its current tail.
    ///
    /// # Safety
    ///
    /// No other producer may exist for this ring, in any process, while this
    /// one lives.
    pub(crate) unsafe fn new(region: RingRegion) -> Result<Self, RingFault> {
        let ctrl = region.ctrl();
        // Acquire: pairs with the Release stores of the previous owner / the
        // consumer, so the values we start from are complete.
        let tail = ctrl.tail.load(Ordering::Acquire);
        let head = ctrl.head.load(Ordering::Acquire);
        let mut p = Producer {
            region,
            tail,
            cached_head: head,
            fault: None,
            last_len: 0,
            rewind_after: 0,
            window: REWIND_WINDOW,
            skip: None,
        };
        // The same checks as `refresh_head` (with our tail as the bound),
        // plus the tail's own: nothing read here is trusted unchecked.
        let cap = region.capacity();
        // A tail within two capacities of the end of the position space is
        // no honest one (2^64 bytes never pass): refused, so no sum below
        // (a lap start, a guard slot) can wrap. The consumer refuses such a
        // head the same way.
        let valid = tail.is_multiple_of(FRAME_ALIGN)
            && head.is_multiple_of(FRAME_ALIGN)
            && head <= tail
            && tail <= u64::MAX - 2 * cap;
        if valid
            && tail - head > cap
            && region.index(head) != 0
            && tail - region.lap_start(head) <= cap
        {
            // More than a capacity in flight: only a skip from the head
            // explains that (the previous producer went past the guard).
            p.skip = Some(head);
        } else if !valid || tail - head > cap {
            return Err(p.poison(RingFault::BadIndex {
                seen: head,
                ours: tail,
            }));
        }
        // Otherwise no skip is assumed, even if one is pending: with the
        // head as the base the producer stays below `head + cap`, short of
        // the guard slot, which is what a skip would need anyway.
        Ok(p)
    }

    /// The ring this producer writes.
    pub(crate) fn region(&self) -> &RingRegion {
        &self.region
    }

    /// The fault that poisoned this end, if any.
    pub(crate) fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Sets the small-frame rewind window (tests and loom models, whose
    /// rings are smaller than [`REWIND_WINDOW`]).
    #[cfg(any(test, loom))]
    pub(crate) fn set_rewind_window(&mut self, window: u64) {
        self.window = window;
    }

    fn poison(&mut self, fault: RingFault) -> RingFault {
        self.fault = Some(fault);
        fault
    }

    /// Grants contiguous space for a payload of at least `min` bytes.
    ///
    /// The grant is as large as the contiguous free space allows, capped at
    /// [`RingRegion::max_payload`]: a caller that does not know its size in
    /// advance serialises into it and, if that overflows, asks again with a
    /// larger `min`. Space at the tail is preferred; if it is too small the
    /// grant starts at a guard slot behind a filler, or skips to index 0 of
    /// the next lap (module docs).
    ///
    /// `refill` asks for batching: when the cached head no longer covers the
    /// frame and, re-read, shows fewer than `refill` free bytes, the answer
    /// is [`ReserveError::Full`] even if the frame would fit, so that the
    /// caller waits for the consumer to free a batch instead of trading the
    /// `head` line with it once per frame (0: take any space).
    #[cfg(any(test, loom))]
    #[inline]
    pub(crate) fn reserve(&mut self, min: usize, refill: u64) -> Result<Grant, ReserveError> {
        self.reserve_expecting(min, refill, min)
    }

    /// [`Producer::reserve`] for a payload expected to be about `expect`
    /// bytes (at least `min`): a caller that does not know its size in
    /// advance (a typed send) passes the last message's size, so that big
    /// messages rewind to index 0 like sized ones do (see
    /// [`Producer::try_rewind`]) instead of marching through the ring.
    #[inline]
    pub(crate) fn reserve_expecting(
        &mut self,
        min: usize,
        refill: u64,
        expect: usize,
    ) -> Result<Grant, ReserveError> {
        if let Some(f) = self.fault {
            return Err(ReserveError::Fault(f));
        }
        let max_payload = self.region.max_payload();
        if min > max_payload {
            return Err(ReserveError::TooLarge);
        }
        let need = frame_size(min as u64);
        let expected = frame_size(expect.clamp(min, max_payload) as u64);
        if expected >= REWIND_MIN {
            if let Some(grant) = self.try_rewind(expected) {
                return Ok(grant);
            }
        } else if self.tail >= self.rewind_after && self.region.index(self.tail) >= self.window {
            if let Some(grant) = self.try_rewind(expected) {
                return Ok(grant);
            }
            self.rewind_after = self.tail + self.window;
        }
        // A rewind attempt re-reads the head, which may have poisoned us.
        if let Some(f) = self.fault {
            return Err(ReserveError::Fault(f));
        }
        if let Some(grant) = self.try_grant(need) {
            return Ok(grant);
        }
        self.refresh_head().map_err(ReserveError::Fault)?;
        if self.free() < refill {
            return Err(ReserveError::Full);
        }
        self.try_grant(need).ok_or(ReserveError::Full)
    }

    /// Frames go back to index 0 when the ring is empty (a skip), so a
    /// request/reply exchange keeps reusing the same (cached, TLB-mapped)
    /// memory instead of marching through the whole ring. Costs one load of
    /// the consumer's head. The frame must end by index `idx`: the guard
    /// slot at `tail + cap` (see [`Producer::to_guard`]).
    fn try_rewind(&mut self, need: u64) -> Option<Grant> {
        let idx = self.region.index(self.tail);
        if idx == 0 || need > idx || self.refresh_head().is_err() || self.cached_head != self.tail {
            return None;
        }
        Some(Grant {
            payload: self.region.at(FRAME_HEADER as u64),
            len: (idx as usize - FRAME_HEADER).min(self.region.max_payload()),
            fill: 0,
            skip: self.region.capacity() - idx,
        })
    }

    /// Where the consumer's next read starts, for a consumer whose head is
    /// `head`: the lap start when `head` is the pending skip point (it will
    /// jump there and never read the skipped bytes), else `head`. Space is
    /// counted from here: `tail - base` bytes are in flight.
    #[inline]
    fn base(&self, head: u64) -> u64 {
        if self.skip == Some(head) {
            self.region.lap_start(head)
        } else {
            head
        }
    }

    /// Bytes from the tail to the guard slot, while there is one ahead: with
    /// the consumer's head (as far as we know) at the skip point `S`, that
    /// consumer polls the stamp word at index `idx(S)`, so the slot there in
    /// the next lap, at `S + cap`, must hold a frame start (its word holds 0
    /// or `commit_stamp(S + cap)`), never payload that could read as
    /// `commit_stamp(S)`. No grant straddles it.
    #[inline]
    fn to_guard(&self) -> Option<u64> {
        match self.skip {
            Some(s) if s == self.cached_head && s + self.region.capacity() > self.tail => {
                Some(s + self.region.capacity() - self.tail)
            }
            _ => None,
        }
    }

    /// Bytes in flight (published, not yet released: frame headers, padding
    /// and fillers included; not the bytes of a skip the consumer waits at),
    /// re-reading the consumer's head without
    /// side effects: an invalid head is ignored (the last valid one counts)
    /// and left for the next `reserve` to report. For queries (`&self`).
    pub(crate) fn in_flight(&self) -> u64 {
        // Acquire: as in `refresh_head`.
        let head = self.region.ctrl().head.load(Ordering::Acquire);
        let valid = head >= self.cached_head
            && head <= self.tail
            && head.is_multiple_of(FRAME_ALIGN)
            && self.tail - self.base(head) <= self.region.capacity();
        self.tail - self.base(if valid { head } else { self.cached_head })
    }

    /// Payload length of the last committed frame (0 before the first).
    pub(crate) fn last_len(&self) -> usize {
        self.last_len
    }

    /// Free bytes (contiguous or not) as of the last valid head we read.
    pub(crate) fn free(&self) -> u64 {
        self.region.capacity() - (self.tail - self.base(self.cached_head))
    }

    /// Free bytes after re-reading the head (a bad head poisons this end and
    /// leaves the last valid figure).
    pub(crate) fn refreshed_free(&mut self) -> u64 {
        let _ = self.refresh_head();
        self.free()
    }

    /// Tries to place a frame of `need` bytes using the cached head: at the
    /// tail; else behind a filler at the guard slot, if one is ahead; else
    /// at the next lap start (a skip).
    #[inline]
    fn try_grant(&self, need: u64) -> Option<Grant> {
        let cap = self.region.capacity();
        let free = self.free();
        let idx = self.region.index(self.tail);
        let to_end = cap - idx;
        let max_payload = self.region.max_payload();
        let guard = self.to_guard();
        // Space at the tail, up to the data end, the guard slot or the head.
        let here = free.min(guard.map_or(to_end, |g| g.min(to_end)));
        if here >= need {
            return Some(Grant {
                payload: self.region.at(idx + FRAME_HEADER as u64),
                len: ((here as usize) - FRAME_HEADER).min(max_payload),
                fill: 0,
                skip: 0,
            });
        }
        if let Some(g) = guard {
            // Space at the guard slot, behind a filler from the tail (the
            // guard lies in this lap, so `g < to_end`). Never a skip: index
            // 0 of the next lap holds the skip frame, still unread.
            let room = free.checked_sub(g)?.min(to_end - g);
            return (room >= need).then(|| Grant {
                payload: self.region.at(idx + g + FRAME_HEADER as u64),
                len: ((room as usize) - FRAME_HEADER).min(max_payload),
                fill: g,
                skip: 0,
            });
        }
        // Space at index 0 of the next lap, skipping the rest of this one.
        // On an empty ring `free - to_end` is `idx`: the skip frame ends by
        // its own guard slot.
        if free > to_end && free - to_end >= need {
            let wrapped = free - to_end;
            return Some(Grant {
                payload: self.region.at(FRAME_HEADER as u64),
                len: ((wrapped as usize) - FRAME_HEADER).min(max_payload),
                fill: 0,
                skip: to_end,
            });
        }
        None
    }

    /// Re-reads the consumer's head and validates it.
    fn refresh_head(&mut self) -> Result<(), RingFault> {
        // Acquire: pairs with the consumer's Release store of `head`, so its
        // reads of the frames it released happened before we overwrite them.
        let head = self.region.ctrl().head.load(Ordering::Acquire);
        if head < self.cached_head
            || head > self.tail
            || !head.is_multiple_of(FRAME_ALIGN)
            || self.tail - self.base(head) > self.region.capacity()
        {
            return Err(self.poison(RingFault::BadIndex {
                seen: head,
                ours: self.tail,
            }));
        }
        self.cached_head = head;
        if self.skip.is_some_and(|s| head > s) {
            // The consumer has passed the skip point: no guard any more.
            self.skip = None;
        }
        Ok(())
    }

    /// Publishes `len` bytes of the grant's payload as one message (and the
    /// filler frame in front of it, if any): the tail, then the commit
    /// stamps (see the module docs), all Release stores. A skip grant
    /// records the skip point (see [`Producer::skip`]).
    ///
    /// The caller must have written the payload bytes; `len <= grant.len`.
    #[inline]
    pub(crate) fn commit(&mut self, grant: Grant, len: usize) {
        assert!(
            len <= grant.len,
            "commit of {len} bytes exceeds the grant of {}",
            grant.len
        );
        let start = self.tail;
        let pos = start + grant.fill + grant.skip;
        if grant.skip != 0 {
            // At most one skip is ahead of the consumer: a second one needs
            // index 0 of the lap after, i.e. the first skip frame released.
            debug_assert!(self.skip.is_none_or(|s| s < self.cached_head));
            self.skip = Some(start);
        }
        let size = frame_size(len as u64);
        // The caller wrote the payload since the grant; loom sees that
        // write here, before the Release stores that publish it.
        self.region.track_payload(pos, size - FRAME_HEADER as u64);
        let end = pos + size;
        // Clear the stamp word where the next frame will start, so that no
        // payload byte left there by an earlier lap can pass for its stamp
        // (module docs). Only if the slot is free (by our cached head and
        // any skip): if not, the ring is exactly full and the slot holds the
        // header of the oldest frame in flight, whose stale stamp cannot
        // match. Relaxed: published by the Release stamp store below, and
        // the consumer only reads the slot after Acquire-loading that stamp.
        if end - self.base(self.cached_head) < self.region.capacity() {
            self.region
                .stamp(self.region.index(end))
                .store(0, Ordering::Relaxed);
        }
        self.tail = end;
        self.last_len = len;
        // Release: the frames written above are complete for anyone who
        // Acquire-loads this tail (in-flight queries, a resuming producer).
        // Stored before the stamps, so a consumer that saw a frame's stamp
        // also sees a tail covering it.
        self.region.ctrl().tail.store(end, Ordering::Release);
        // The header's words and its stamp are stored last and back to
        // back: the consumer is polling this line, and every store to it
        // separated from the next by stores to other lines can cost one
        // more transfer of the line.
        self.write_header(pos, len as u32, KIND_MSG);
        // Release: the header, the payload and the cleared next slot become
        // visible to a consumer that Acquire-loads this stamp (at its head,
        // or at the lap start after a skip). Every stamp of an earlier
        // position was stored before it: a consumer's re-check of its head
        // after seeing a lap start's stamp relies on that. A frame behind a
        // filler is stamped first, the filler last: the filler's stamp
        // publishes both.
        self.region
            .stamp(self.region.index(pos))
            .store(commit_stamp(pos), Ordering::Release);
        if grant.fill != 0 {
            self.write_header(start, (grant.fill as usize - FRAME_HEADER) as u32, KIND_PAD);
            // Release: as above, for the filler and, through it, the frame.
            self.region
                .stamp(self.region.index(start))
                .store(commit_stamp(start), Ordering::Release);
        }
    }

    /// Writes the `len` and `kind` words of the header at `pos` (not the
    /// stamp, which `commit` stores last).
    #[inline]
    fn write_header(&self, pos: u64, len: u32, kind: u32) {
        let idx = self.region.index(pos);
        self.region.track_write(idx, FRAME_HEADER as u64);
        let dst = self.region.at(idx).cast::<u64>();
        // One 8-byte store of both words (as `[len, kind]` in memory, the
        // consumer's view), not two 4-byte stores through a stack copy.
        let words = if cfg!(target_endian = "little") {
            u64::from(len) | (u64::from(kind) << 32)
        } else {
            (u64::from(len) << 32) | u64::from(kind)
        };
        // SAFETY: `pos` is a 16-aligned position inside space we own (granted
        // and not yet published), so the first 8 header bytes are in bounds,
        // 8-aligned, and not read by the consumer until the Release store of
        // the stamp in `commit`.
        unsafe { dst.write_volatile(words) };
    }

    /// Whether a frame needing `min` payload bytes could be reserved now,
    /// re-reading the head. Used by waiters as their wake-up condition; also
    /// true once the end is poisoned, so the waiter returns to see the fault.
    pub(crate) fn has_space(&mut self, min: usize) -> bool {
        let need = frame_size(min as u64);
        if self.fault.is_some() || self.try_grant(need).is_some() {
            return true;
        }
        self.refresh_head().is_err() || self.try_grant(need).is_some()
    }

    /// Our tail and the pending skip point.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn tail_and_skip(&self) -> (u64, Option<u64>) {
        (self.tail, self.skip)
    }

    /// Whether the consumer has released everything we published.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_drained(&mut self) -> bool {
        self.refresh_head().is_ok() && self.cached_head == self.tail
    }
}
