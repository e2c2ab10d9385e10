//! Monotonic time as plain nanoseconds.
//!
//! Futex deadlines are absolute `CLOCK_MONOTONIC` timestamps, so remora keeps
//! its own deadlines in that clock rather than in [`std::time::Instant`]
//! (whose epoch is opaque). Reading the clock goes through the vDSO: no
//! system call.

use std::time::Duration;

/// A point on `CLOCK_MONOTONIC`, in nanoseconds since an arbitrary epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MonoTime(u64);

impl MonoTime {
    /// The current monotonic time.
    pub(crate) fn now() -> MonoTime {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
        // exists on Linux, so the call cannot fail.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        MonoTime(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// `now + d`, saturating far in the future instead of overflowing.
    pub(crate) fn after(d: Duration) -> MonoTime {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime(MonoTime::now().0.saturating_add(nanos))
    }

    /// `self + d`, saturating far in the future instead of overflowing.
    pub(crate) fn plus(self, d: Duration) -> MonoTime {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime(self.0.saturating_add(nanos))
    }

    /// Nanoseconds since the clock's epoch.
    pub(crate) fn as_nanos(self) -> u64 {
        self.0
    }

    /// The earlier of two times.
    pub(crate) fn min(self, other: MonoTime) -> MonoTime {
        if self <= other { self } else { other }
    }

    /// This time as a `timespec`, for `FUTEX_WAIT_BITSET`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: (self.0 / 1_000_000_000) as libc::time_t,
            tv_nsec: (self.0 % 1_000_000_000) as libc::c_long,
        }
    }

    /// Far enough in the future to mean "no deadline".
    pub(crate) const NEVER: MonoTime = MonoTime(u64::MAX / 2);
}
