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
