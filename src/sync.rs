//! The atomics remora's shared-memory protocol is built from.
//!
//! Normal builds use `std`'s atomics. Under `--cfg loom` the same names come
//! from loom, so the loom model tests exercise the real ring and doorbell code
//! rather than a copy of it.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// loom builds: the loom-tracked cell standing for one 16-byte granule of
/// ring data (see `RingRegion::with_cells`). The ring accesses a granule's
/// cell exactly where it reads or writes the granule's bytes (or, for
/// payload bytes the channel layer writes and reads, where it hands them
/// across: the producer at commit, the consumer at peek and at release), so
/// loom checks that every such access is ordered after the peer's by the
/// head/tail protocol, and reports a data race if an ordering is weakened.
#[cfg(loom)]
pub(crate) type DataCell = loom::cell::UnsafeCell<()>;
