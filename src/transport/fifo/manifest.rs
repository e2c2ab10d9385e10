//! The manifest: what the parent tells the child about the channels, in a
//! small file written into the FIFO directory before the child starts.
//!
//! The FIFO paths carry only channel indices (`<i>.p2c`, `<i>.c2p`), so
//! user-chosen names never reach the file system; the names, capacities
//! and wait hints travel here. Layout, little-endian:
//!
//! ```text
//! 0   magic        8 bytes "REMFIFO\x01"
//! 8   version      u32
//! 12  creator pid  u32
//! 16  count        u32
//! 20  reserved     u32
//! 24  count × { name_len: u32, wait_hint: u32, capacity: u64, name: name_len bytes }
//! ```
//!
//! The child validates everything before use (as it validates a segment's
//! directory) and rejects trailing bytes.

use crate::error::OpenError;
use crate::layout::{MAX_CHANNELS, MAX_NAME_LEN};
use crate::ring::{MAX_CAPACITY, MIN_CAPACITY};
use crate::wait::WaitStrategy;

/// First 8 bytes of a manifest.
pub(super) const MAGIC: [u8; 8] = *b"REMFIFO\x01";
/// Bumped whenever the manifest or the wire format changes.
/// 2: the creator holds an exclusive `flock` on the directory (the stale
/// sweep relies on it and leaves older directories alone).
pub(super) const VERSION: u32 = 2;
/// No valid manifest is larger (32 channels with 48-byte names is 2 KiB).
pub(super) const MAX_SIZE: usize = 8192;

/// One channel as both sides see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChannelSpec {
    pub(super) name: String,
    /// Bytes per direction, a power of two; the largest message is half of
    /// it minus 16, as on a ring.
    pub(super) capacity: usize,
    pub(super) wait: WaitStrategy,
}

/// The decoded manifest.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Manifest {
    pub(super) creator_pid: u32,
    pub(super) channels: Vec<ChannelSpec>,
}

impl Manifest {
    /// Serialises the manifest.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.channels.len() * (16 + MAX_NAME_LEN));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.creator_pid.to_le_bytes());
        out.extend_from_slice(&(self.channels.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for c in &self.channels {
            out.extend_from_slice(&(c.name.len() as u32).to_le_bytes());
            out.extend_from_slice(&c.wait.to_hint().to_le_bytes());
            out.extend_from_slice(&(c.capacity as u64).to_le_bytes());
            out.extend_from_slice(c.name.as_bytes());
        }
        out
    }

    /// Parses and validates a manifest read from the directory.
    pub(super) fn decode(bytes: &[u8]) -> Result<Manifest, OpenError> {
        let bad = |reason| OpenError::BadLayout { reason };
        let mut r = Reader(bytes);
        let magic = r.take(8).ok_or(bad("manifest too short"))?;
        if magic != MAGIC {
            let mut found = [0u8; 8];
            found.copy_from_slice(magic);
            return Err(OpenError::BadMagic {
                found: u64::from_le_bytes(found),
            });
        }
        let version = r.u32().ok_or(bad("manifest too short"))?;
        if version != VERSION {
            return Err(OpenError::VersionMismatch {
                found: version,
                expected: VERSION,
            });
        }
        let creator_pid = r.u32().ok_or(bad("manifest too short"))?;
        let count = r.u32().ok_or(bad("manifest too short"))? as usize;
        r.u32().ok_or(bad("manifest too short"))?;
        if count == 0 || count > MAX_CHANNELS {
            return Err(bad("channel count out of range"));
        }
        let mut channels: Vec<ChannelSpec> = Vec::with_capacity(count);
        for _ in 0..count {
            let truncated = || bad("manifest truncated inside a channel entry");
            let name_len = r.u32().ok_or_else(truncated)? as usize;
            let wait = WaitStrategy::from_hint(r.u32().ok_or_else(truncated)?);
            let capacity = r.u64().ok_or_else(truncated)?;
            if name_len == 0 || name_len > MAX_NAME_LEN {
                return Err(bad("channel name length out of range"));
            }
            let name = r.take(name_len).ok_or_else(truncated)?;
            let name = std::str::from_utf8(name).map_err(|_| bad("channel name is not UTF-8"))?;
            if channels.iter().any(|c| c.name == name) {
                return Err(bad("duplicate channel name"));
            }
            let capacity = usize::try_from(capacity)
                .ok()
                .filter(|c| c.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(c))
                .ok_or(bad("channel capacity is not a power of two in range"))?;
            channels.push(ChannelSpec {
                name: name.to_owned(),
                capacity,
                wait,
            });
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes after the manifest"));
        }
        Ok(Manifest {
            creator_pid,
            channels,
        })
    }
}

/// A cursor over the manifest bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Some(u64::from_le_bytes(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            creator_pid: 4242,
            channels: vec![
                ChannelSpec {
                    name: "echo".into(),
                    capacity: 4096,
                    wait: WaitStrategy::Spin,
                },
                ChannelSpec {
                    name: "événements".into(),
                    capacity: 1 << 20,
                    wait: WaitStrategy::Adaptive,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Manifest::decode(&long).is_err());
        let flip = |at: usize, v: u8| {
            let mut b = bytes.clone();
            b[at] = v;
            Manifest::decode(&b).unwrap_err()
        };
        assert!(matches!(flip(0, b'X'), OpenError::BadMagic { .. }));
        assert!(matches!(
            flip(8, 9),
            OpenError::VersionMismatch { found: 9, .. }
        ));
        assert!(matches!(flip(16, 0), OpenError::BadLayout { .. })); // count 0
        assert!(matches!(flip(16, 33), OpenError::BadLayout { .. }));
        assert!(matches!(flip(24, 0), OpenError::BadLayout { .. })); // name_len 0
        assert!(matches!(flip(32, 0x11), OpenError::BadLayout { .. })); // capacity 4113
        assert!(matches!(flip(40, 0xff), OpenError::BadLayout { .. })); // bad UTF-8
    }
}
