//! Frames on the wire.
//!
//! ```text
//! frame   = header payload padding   (padding: to the next 16 bytes)
//! header  = len: u32 | kind: u32 | 8 reserved bytes   (native order)
//! HELLO   = the first frame of each direction, kind "HEL1", payload: the
//!           sender's outgoing then incoming type fingerprint (u64 each)
//! ```
//!
//! The header is the ring's; padding keeps every payload 16-aligned in the
//! receiver's 16-aligned buffer ([`AlignedBuf`](crate::aligned::AlignedBuf)),
//! so rkyv can read archives in place.

use crate::ring::{FRAME_HEADER, KIND_MSG, frame_size};

pub(super) const HEADER: usize = FRAME_HEADER;
pub(super) const MSG: u32 = KIND_MSG;
pub(super) const HELLO: u32 = u32::from_le_bytes(*b"HEL1");
pub(super) const HELLO_LEN: usize = 16;
pub(super) const HELLO_FRAME: usize = HEADER + HELLO_LEN;

/// Bytes a frame with a `len`-byte payload takes on the wire.
#[inline]
pub(super) fn wire_size(len: usize) -> usize {
    frame_size(len as u64) as usize
}

#[inline]
pub(super) fn header(len: u32, kind: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&len.to_ne_bytes());
    h[4..8].copy_from_slice(&kind.to_ne_bytes());
    h
}

/// The `at`-th native-endian `u32` and `u64` word readers, for headers
/// (`(len, kind)` = `(u32_at(0), u32_at(4))`) and HELLO payloads.
#[inline]
pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_sizes() {
        let h = header(1234, MSG);
        assert_eq!((u32_at(&h, 0), u32_at(&h, 4)), (1234, MSG));
        assert_eq!(
            [wire_size(0), wire_size(1), wire_size(16), wire_size(17)],
            [16, 32, 32, 48]
        );
        assert_eq!(HELLO_FRAME, wire_size(HELLO_LEN));
    }
}
