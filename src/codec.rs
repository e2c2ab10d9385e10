//! rkyv glue: serialise straight into a ring frame, access archives in place.
//!
//! Serialisation uses rkyv's low-level API with a [`FrameWriter`] over the
//! granted frame and a [`SubAllocator`] over a scratch area the sender
//! allocated once, so sending allocates nothing. A frame that is too small is
//! reported as [`EncodeError::Overflow`] (never a panic) so the caller can
//! retry with more space. Access validates with bytecheck (no allocation,
//! bounded nesting depth) unless the caller opts into the unchecked path.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::num::NonZeroUsize;

use rkyv::api::low::LowValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{Failure, Source, Strategy};
use rkyv::ser::allocator::SubAllocator;
use rkyv::ser::{Positional, Serializer, Writer};
use rkyv::validation::Validator;
use rkyv::validation::archive::ArchiveValidator;
use rkyv::{Archive, Archived, Portable, Serialize};

/// Deepest nesting of archived subtrees that validation follows before
/// rejecting a message (guards against stack exhaustion by a hostile peer).
pub(crate) const MAX_DEPTH: usize = 64;

/// The rkyv serializer remora hands to [`Serialize`] implementations.
pub type FrameSerializer<'a> = Strategy<Serializer<FrameWriter<'a>, SubAllocator<'a>, ()>, Failure>;

/// The rkyv validator remora uses for received messages.
pub type FrameValidator<'a> = LowValidator<'a, Failure>;

/// Types remora can send: anything that derives rkyv's `Archive` and
/// `Serialize` (without shared pointers such as `Rc`/`Arc`, which the
/// allocation-free serializer does not support).
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Ping { seq: u64, note: String }
///
/// fn assert_encode<T: remora::Encode>() {}
/// assert_encode::<Ping>();
/// ```
pub trait Encode: Archive + for<'a> Serialize<FrameSerializer<'a>> {}
impl<T: Archive + for<'a> Serialize<FrameSerializer<'a>>> Encode for T {}

/// Types remora can receive: their archived form can be validated with
/// bytecheck (rkyv's default `bytecheck` feature derives this).
pub trait Decode: Archive<Archived: Portable + for<'a> CheckBytes<FrameValidator<'a>>> {}
impl<T: Archive<Archived: Portable + for<'a> CheckBytes<FrameValidator<'a>>>> Decode for T {}

/// An rkyv [`Writer`] over raw frame memory.
///
/// It writes through a raw pointer, never through a `&mut [u8]`, because the
/// frame lives in memory the peer process can also map.
pub struct FrameWriter<'a> {
    ptr: *mut u8,
    cap: usize,
    pos: usize,
    overflowed: bool,
    _frame: PhantomData<&'a mut [u8]>,
}

impl Positional for FrameWriter<'_> {
    #[inline]
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: Source> Writer<E> for FrameWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        if self.overflowed || bytes.len() > self.cap - self.pos {
            // The frame is too small. Stop writing but keep counting, so
            // the serialisation runs to the end and reports the size the
            // archive needs (rkyv only ever writes forwards and never reads
            // back what it wrote).
            self.overflowed = true;
            self.pos = self.pos.saturating_add(bytes.len());
            return Ok(());
        }
        // SAFETY: `pos + bytes.len() <= cap`, and `new`'s contract makes
        // `ptr..ptr + cap` writable and exclusively ours; `bytes` is local
        // memory, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.pos), bytes.len())
        };
        self.pos += bytes.len();
        Ok(())
    }
}

/// Why [`encode`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EncodeError {
    /// The frame was too small; the archive needs `needed` bytes.
    Overflow {
        /// The archive's exact length.
        needed: usize,
    },
    /// Serialisation failed for another reason (e.g. scratch space too small).
    Other,
}

/// Serialises `value` into `cap` bytes at `dst`; returns the archive length.
/// If it does not fit, nothing is written past `cap` and the error says how
/// long the archive is: `cap == 0` (with any 16-aligned, non-null `dst`)
/// only measures.
///
/// # Safety
///
/// `dst..dst + cap` must be writable, 16-aligned at `dst`, and not accessed
/// by anyone else until this call returns; `dst` must be non-null.
#[inline]
pub(crate) unsafe fn encode<T: Encode>(
    value: &T,
    dst: *mut u8,
    cap: usize,
    scratch: &mut [MaybeUninit<u8>],
) -> Result<usize, EncodeError> {
    let writer = FrameWriter {
        ptr: dst,
        cap,
        pos: 0,
        overflowed: false,
        _frame: PhantomData,
    };
    let mut serializer = Serializer::new(writer, SubAllocator::new(scratch), ());
    match rkyv::api::serialize_using::<_, Failure>(value, &mut serializer) {
        Ok(_) => {
            let writer = serializer.into_writer();
            if writer.overflowed {
                Err(EncodeError::Overflow { needed: writer.pos })
            } else {
                Ok(writer.pos)
            }
        }
        Err(_) => Err(EncodeError::Other),
    }
}

/// Validates `bytes` as an archived `T` and returns its root.
#[inline]
pub(crate) fn access<T: Decode>(bytes: &[u8]) -> Result<&Archived<T>, Failure> {
    let mut validator = Validator::new(
        ArchiveValidator::with_max_depth(bytes, NonZeroUsize::new(MAX_DEPTH)),
        (),
    );
    rkyv::api::access_with_context::<Archived<T>, _, Failure>(bytes, &mut validator)
}

/// Returns the root of an archived `T` without validation.
///
/// # Safety
///
/// `bytes` must hold a valid archived `T` at its root position.
#[inline]
pub(crate) unsafe fn access_unchecked<T: Archive>(bytes: &[u8]) -> &Archived<T> {
    // SAFETY: forwarded to the caller.
    unsafe { rkyv::access_unchecked::<Archived<T>>(bytes) }
}

/// A fingerprint of the archived form of `T`: its type name, size and
/// alignment (FNV-1a). Both ends of a channel direction must agree on it.
pub(crate) fn fingerprint<T: Archive>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let name = std::any::type_name::<Archived<T>>();
    let size = size_of::<Archived<T>>() as u64;
    let align = align_of::<Archived<T>>() as u64;
    for b in name
        .bytes()
        .chain(size.to_le_bytes())
        .chain(align.to_le_bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // 0 means "not yet recorded" in the segment.
    h.max(1)
}

/// The fingerprint of a raw-bytes channel direction.
pub(crate) const RAW_FINGERPRINT: u64 = 0x5241_5742_5954_4553; // "RAWBYTES"

/// The fingerprint a one-way take sends (FIFO handshake) for the direction
/// it does not use: it matches any other. Never a real fingerprint
/// ([`fingerprint`] is never 0), and over shared memory a direction nobody
/// uses simply keeps the 0 of "not recorded".
pub(crate) const ANY_FINGERPRINT: u64 = 0;
