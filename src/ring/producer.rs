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
/// request/reply exchange then keeps to the first few KiB of the ring,
/// whose lines stay in the two cores' caches, instead of writing every
/// message into lines nobody has touched for a lap (measured: ~30 ns of a
/// ~240 ns 64 B round trip). Costs one load of the consumer's head per
/// window, and a PAD frame per rewind.
const REWIND_WINDOW: u64 = 4096;

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
    /// Bytes of PAD frame to write at the old tail first (0: none).
    pad: u64,
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
        };
        // The same checks as `refresh_head` (with our tail as the bound),
        // plus the tail's own: nothing read here is trusted unchecked.
        if !tail.is_multiple_of(FRAME_ALIGN)
            || !head.is_multiple_of(FRAME_ALIGN)
            || head > tail
            || tail - head > region.capacity()
        {
            return Err(p.poison(RingFault::BadIndex {
                seen: head,
                ours: tail,
            }));
        }
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
    /// grant starts at index 0 behind a PAD frame.
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
        } else if self.tail >= self.rewind_after && self.region.index(self.tail) >= REWIND_WINDOW {
            if let Some(grant) = self.try_rewind(expected) {
                return Ok(grant);
            }
            self.rewind_after = self.tail + REWIND_WINDOW;
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

    /// Large frames go back to index 0 when the ring is empty, so a
    /// request/reply exchange of big messages keeps reusing the same (cached,
    /// TLB-mapped) memory instead of marching through the whole ring. Costs
    /// one load of the consumer's head, negligible next to a big frame.
    fn try_rewind(&mut self, need: u64) -> Option<Grant> {
        let idx = self.region.index(self.tail);
        if idx == 0 || need > idx || self.refresh_head().is_err() || self.cached_head != self.tail {
            return None;
        }
        // Empty ring: a PAD over [idx, cap) plus the frame over [0, idx)
        // fit exactly in the capacity.
        Some(Grant {
            payload: self.region.at(FRAME_HEADER as u64),
            len: (idx as usize - FRAME_HEADER).min(self.region.max_payload()),
            pad: self.region.capacity() - idx,
        })
    }

    /// Bytes in flight (published, not yet released: frame headers, padding
    /// and PAD frames included), re-reading the consumer's head without
    /// side effects: an invalid head is ignored (the last valid one counts)
    /// and left for the next `reserve` to report. For queries (`&self`).
    pub(crate) fn in_flight(&self) -> u64 {
        // Acquire: as in `refresh_head`.
        let head = self.region.ctrl().head.load(Ordering::Acquire);
        let valid =
            head >= self.cached_head && head <= self.tail && head.is_multiple_of(FRAME_ALIGN);
        self.tail - if valid { head } else { self.cached_head }
    }

    /// Payload length of the last committed frame (0 before the first).
    pub(crate) fn last_len(&self) -> usize {
        self.last_len
    }

    /// Free bytes (contiguous or not) as of the last valid head we read.
    pub(crate) fn free(&self) -> u64 {
        self.region.capacity() - (self.tail - self.cached_head)
    }

    /// Free bytes after re-reading the head (a bad head poisons this end and
    /// leaves the last valid figure).
    pub(crate) fn refreshed_free(&mut self) -> u64 {
        let _ = self.refresh_head();
        self.free()
    }

    /// Tries to place a frame of `need` bytes using the cached head.
    #[inline]
    fn try_grant(&self, need: u64) -> Option<Grant> {
        let cap = self.region.capacity();
        let free = self.free();
        let idx = self.region.index(self.tail);
        let to_end = cap - idx;
        let max_payload = self.region.max_payload();
        // Space at the tail, up to the data end or the head.
        let here = free.min(to_end);
        if here >= need {
            return Some(Grant {
                payload: self.region.at(idx + FRAME_HEADER as u64),
                len: ((here as usize) - FRAME_HEADER).min(max_payload),
                pad: 0,
            });
        }
        // Space at index 0, behind a PAD frame that fills the rest.
        if free > to_end && free - to_end >= need {
            let wrapped = free - to_end;
            return Some(Grant {
                payload: self.region.at(FRAME_HEADER as u64),
                len: ((wrapped as usize) - FRAME_HEADER).min(max_payload),
                pad: to_end,
            });
        }
        None
    }

    /// Re-reads the consumer's head and validates it.
    fn refresh_head(&mut self) -> Result<(), RingFault> {
        // Acquire: pairs with the consumer's Release store of `head`, so its
        // reads of the frames it released happened before we overwrite them.
        let head = self.region.ctrl().head.load(Ordering::Acquire);
        if head < self.cached_head || head > self.tail || !head.is_multiple_of(FRAME_ALIGN) {
            return Err(self.poison(RingFault::BadIndex {
                seen: head,
                ours: self.tail,
            }));
        }
        self.cached_head = head;
        Ok(())
    }

    /// Publishes `len` bytes of the grant's payload as one message (and the
    /// PAD frame in front of it, if any): the tail, then the commit stamps
    /// (see the module docs), all Release stores.
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
        let pos = start + grant.pad;
        // The caller wrote the payload since the grant; loom sees that
        // write here, before the Release stores that publish it.
        self.region.track_write(
            self.region.index(pos) + FRAME_HEADER as u64,
            frame_size(len as u64) - FRAME_HEADER as u64,
        );
        let end = pos + frame_size(len as u64);
        // Clear the stamp word where the next frame will start, so that no
        // payload byte left there by an earlier lap can pass for its stamp
        // (module docs). Only if the slot is free by our cached head: if
        // not, the ring is exactly full and the slot holds the header of the
        // oldest frame in flight, whose stale stamp cannot match. Relaxed:
        // published by the Release stamp store below, and the consumer
        // only reads the slot after Acquire-loading that stamp.
        if end - self.cached_head < self.region.capacity() {
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
        // visible to a consumer that Acquire-loads this stamp. A frame behind
        // a PAD is stamped first, the PAD last: the PAD's stamp publishes
        // both.
        self.region
            .stamp(self.region.index(pos))
            .store(commit_stamp(pos), Ordering::Release);
        if grant.pad != 0 {
            self.write_header(start, (grant.pad as usize - FRAME_HEADER) as u32, KIND_PAD);
            // Release: as above, for the PAD and, through it, the frame.
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

    /// Whether the consumer has released everything we published.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_drained(&mut self) -> bool {
        self.refresh_head().is_ok() && self.cached_head == self.tail
    }
}
