//! The atomics remora's shared-memory protocol is built from.
//!
//! Normal builds use `std`'s atomics. Under `--cfg loom` the same names come
//! from loom, so the loom model tests exercise the real ring and doorbell code
//! rather than a copy of it.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
