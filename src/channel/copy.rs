//! The receiver's private copy buffer ([`ReceiveMode::Copy`]): frames are
//! copied out of shared memory with volatile reads, then validated and read
//! from here, where the peer cannot write.
//!
//! [`ReceiveMode::Copy`]: crate::ReceiveMode::Copy

use crate::aligned::AlignedBuf;

/// Alignment of the buffer: rkyv's, and the ring's frame alignment.
const ALIGN: usize = 16;

/// The buffer for one frame (see [`AlignedBuf`]).
#[derive(Debug)]
pub(crate) struct PrivateBuf(AlignedBuf);

impl PrivateBuf {
    /// A buffer for payloads of up to `max` bytes, allocated once, here.
    pub(crate) fn new(max: usize) -> PrivateBuf {
        PrivateBuf(AlignedBuf::new(max.max(1).next_multiple_of(ALIGN)))
    }

    /// Copies the `len`-byte payload at `src` into the buffer, reading each
    /// byte of shared memory exactly once, and returns the copy's start.
    ///
    /// No reference to the source is ever made: the peer may be writing it
    /// while we copy. The copy may then be torn (a mix of old and new
    /// bytes), but it is ours and no longer changes; what is read from it
    /// is validated afterwards.
    ///
    /// # Safety
    ///
    /// `src` must be 16-aligned and `len.next_multiple_of(16)` bytes from it
    /// must be readable (a validated ring frame: payloads are padded to 16
    /// inside the ring data); `len` must not exceed the `max` given to
    /// [`PrivateBuf::new`].
    #[inline]
    pub(crate) unsafe fn copy_from_shared(&mut self, src: *const u8, len: usize) -> *const u8 {
        let words = len.div_ceil(ALIGN);
        debug_assert!(words * ALIGN <= self.0.len());
        debug_assert!((src as usize).is_multiple_of(ALIGN));
        // SAFETY: per the contract, `words` 16-byte words are readable at
        // `src` and aligned; the buffer holds at least `words` words
        // (`len <= max <= its length`) and is ours (`&mut self`).
        unsafe { copy_words_volatile(src, self.0.at(0), words) };
        self.0.at(0)
    }
}

/// Copies `words` 16-byte words from `src` (shared memory, volatile reads)
/// to `dst` (private memory).
///
/// x86_64: SSE2 16-byte volatile loads, four per step; on the dev VM this
/// runs at memcpy speed from 64 KiB up and costs ~35 ns more than memcpy
/// at 4 KiB (a plain `u128` volatile loop was 2x slower than memcpy: it
/// compiles to two 8-byte loads per word).
///
/// # Safety
///
/// `src..src + 16 * words` must be readable and 16-aligned;
/// `dst..dst + 16 * words` writable, 16-aligned, not overlapping the
/// source, and not accessed by anyone else meanwhile.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn copy_words_volatile(src: *const u8, dst: *mut u8, words: usize) {
    use std::arch::x86_64::__m128i;
    let (s, d) = (src.cast::<__m128i>(), dst.cast::<__m128i>());
    let mut i = 0;
    while i + 4 <= words {
        // SAFETY: `i + 3 < words`: every word is in bounds and aligned per
        // the contract; volatile because the peer may write the source (each
        // word is read exactly once, never re-read or assumed stable).
        unsafe {
            let a = s.add(i).read_volatile();
            let b = s.add(i + 1).read_volatile();
            let c = s.add(i + 2).read_volatile();
            let e = s.add(i + 3).read_volatile();
            d.add(i).write(a);
            d.add(i + 1).write(b);
            d.add(i + 2).write(c);
            d.add(i + 3).write(e);
        }
        i += 4;
    }
    while i < words {
        // SAFETY: as above, `i < words`.
        unsafe { d.add(i).write(s.add(i).read_volatile()) };
        i += 1;
    }
}

/// Portable form of the x86_64 copy: 8-byte volatile loads.
///
/// # Safety
///
/// As for the x86_64 form.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
unsafe fn copy_words_volatile(src: *const u8, dst: *mut u8, words: usize) {
    let (s, d) = (src.cast::<u64>(), dst.cast::<u64>());
    for i in 0..words * 2 {
        // SAFETY: `i < 2 * words` 8-byte words, in bounds and aligned per
        // the contract; volatile as above.
        unsafe { d.add(i).write(s.add(i).read_volatile()) };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_exactly() {
        let src: Vec<u128> = (0..64u128).map(|i| i * 0x0101_0101_0101_0101).collect();
        let mut buf = PrivateBuf::new(1024);
        for len in [0, 1, 15, 16, 17, 63, 64, 65, 100, 1000, 1024] {
            // SAFETY: `src` is 1024 16-aligned bytes; `len <= 1024`.
            let copy = unsafe { buf.copy_from_shared(src.as_ptr().cast(), len) };
            // SAFETY: `len` bytes were just written at `copy`.
            let copy = unsafe { std::slice::from_raw_parts(copy, len) };
            // SAFETY: `src` holds 1024 initialised bytes.
            let orig = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), len) };
            assert_eq!(copy, orig, "length {len}");
        }
    }
}
