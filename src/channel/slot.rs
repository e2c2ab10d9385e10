//! In-place writes: a bounded, cursor-based writer over a granted frame.

use std::marker::PhantomData;

/// The payload space of one outgoing message, written in place by
/// [`RawSender::send_in_place`](crate::RawSender::send_in_place).
///
/// The space lies in memory the peer process can map, so it is never
/// exposed as a Rust slice: writes go through this type's bounds-checked
/// methods. Bytes not written are sent as they are (stale ring contents).
///
/// ```
/// use std::io::Write;
/// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
/// # let child = remora::Segment::open(parent.name())?;
/// # let (mut tx, _) = parent.raw_channel("c")?;
/// # let (_, mut rx) = child.raw_channel("c")?;
/// tx.send_in_place(11, |slot| {
///     slot.write_all(b"hello").unwrap();
///     slot.write_at(5, b" world");
/// })?;
/// assert_eq!(&*rx.recv()?, b"hello world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Slot<'a> {
    ptr: *mut u8,
    len: usize,
    cursor: usize,
    _frame: PhantomData<&'a mut [u8]>,
}

impl Slot<'_> {
    /// # Safety
    ///
    /// `ptr..ptr + len` must be writable and reserved for this message until
    /// the slot is dropped.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Slot {
            ptr,
            len,
            cursor: 0,
            _frame: PhantomData,
        }
    }

    /// The message length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the slot's [`len`](Slot::len) bytes, for a writer
    /// that produces a large message straight into the ring instead of
    /// copying it in from a buffer of its own ([`Slot::write_at`]).
    ///
    /// Writing through it is `unsafe`: stay within `len` bytes, and only
    /// while the slot lives (inside `send_in_place`'s closure). The bytes
    /// lie in memory the peer process maps too: write through the raw
    /// pointer (`ptr::write_unaligned`, `ptr::copy_nonoverlapping`), never
    /// turn it into a `&mut [u8]`, which would promise Rust that no one
    /// else can touch them.
    ///
    /// ```
    /// # let parent = remora::Segment::create(&[remora::ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = remora::Segment::open(parent.name())?;
    /// # let (mut tx, _) = parent.raw_channel("c")?;
    /// # let (_, mut rx) = child.raw_channel("c")?;
    /// tx.send_in_place(64, |slot| {
    ///     let p = slot.as_mut_ptr();
    ///     for i in 0..8u64 {
    ///         // SAFETY: word `i` lies within the slot's 64 bytes, and the
    ///         // slot lives for this closure.
    ///         unsafe { p.add(8 * i as usize).cast::<u64>().write_unaligned(i.to_le()) };
    ///     }
    /// })?;
    /// assert_eq!(rx.recv()?[8], 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// Copies `bytes` to `offset`.
    ///
    /// # Panics
    ///
    /// If `offset + bytes.len()` exceeds [`Slot::len`]: that is a bug in the
    /// caller, like indexing a slice out of bounds.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset
            .checked_add(bytes.len())
            .filter(|&end| end <= self.len);
        assert!(
            end.is_some(),
            "write of {} bytes at {offset} overflows a {}-byte slot",
            bytes.len(),
            self.len
        );
        // SAFETY: bounds checked above; `new`'s contract makes the range
        // writable and ours; `bytes` is caller memory, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
    }
}

/// Sequential writes from the start of the slot; a write past the end
/// fails with `WriteZero` (after writing what fits).
impl std::io::Write for Slot<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.len - self.cursor);
        self.write_at(self.cursor, &buf[..n]);
        self.cursor += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
