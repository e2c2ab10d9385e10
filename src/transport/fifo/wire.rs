//! Frames on the wire: the ring's 16-byte header, padded payloads, and the
//! handshake frame that opens each direction.
//!
//! ```text
//! frame     = header payload padding
//! header    = len: u32 (exact payload bytes) | kind: u32 | 8 reserved bytes
//! padding   = 0..=15 bytes, so the next header starts 16-aligned
//! ```
//!
//! Integers are in native byte order, exactly as the ring stores its
//! `FrameHeader` (both ends run on the same machine). Padding keeps every
//! payload 16-aligned in the receiver's 16-aligned buffer even when one
//! `read` brings in several frames, so rkyv can read archives in place.
//!
//! The first frame each sender writes, when its channel is taken, is a
//! HELLO whose 16-byte payload is the sender's two type fingerprints: the
//! type it sends on this direction, then the type it expects on the other.
//! See `FifoReceiver` for how it is checked.

use crate::ring::{FRAME_HEADER, KIND_MSG, frame_size};

/// Bytes in a frame header.
pub(super) const HEADER: usize = FRAME_HEADER;
/// `kind` of a message frame (the ring's).
pub(super) const MSG: u32 = KIND_MSG;
/// `kind` of the handshake frame ("HEL1").
pub(super) const HELLO: u32 = u32::from_le_bytes(*b"HEL1");
/// Payload bytes of a HELLO frame: two fingerprints.
pub(super) const HELLO_LEN: usize = 16;
/// Whole HELLO frame on the wire.
pub(super) const HELLO_FRAME: usize = HEADER + HELLO_LEN;

/// Bytes a frame with a `len`-byte payload takes on the wire.
#[inline]
pub(super) fn wire_size(len: usize) -> usize {
    frame_size(len as u64) as usize
}

/// A header's bytes.
#[inline]
pub(super) fn header(len: u32, kind: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&len.to_ne_bytes());
    h[4..8].copy_from_slice(&kind.to_ne_bytes());
    h
}

/// `(len, kind)` of the header at the start of `bytes` (at least 16 long).
#[inline]
pub(super) fn parse_header(bytes: &[u8]) -> (u32, u32) {
    let word =
        |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (word(0), word(4))
}

/// A HELLO payload: the sender's outgoing then incoming fingerprint.
#[inline]
pub(super) fn hello_payload(out_fp: u64, in_fp: u64) -> [u8; HELLO_LEN] {
    let mut p = [0u8; HELLO_LEN];
    p[..8].copy_from_slice(&out_fp.to_ne_bytes());
    p[8..].copy_from_slice(&in_fp.to_ne_bytes());
    p
}

/// `(out_fp, in_fp)` from a HELLO payload (at least 16 bytes).
#[inline]
pub(super) fn parse_hello(payload: &[u8]) -> (u64, u64) {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&payload[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    (word(0), word(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_sizes() {
        assert_eq!(parse_header(&header(1234, MSG)), (1234, MSG));
        assert_eq!(wire_size(0), 16);
        assert_eq!(wire_size(1), 32);
        assert_eq!(wire_size(16), 32);
        assert_eq!(wire_size(17), 48);
        assert_eq!(parse_hello(&hello_payload(7, 9)), (7, 9));
        assert_eq!(HELLO_FRAME, wire_size(HELLO_LEN));
    }
}
