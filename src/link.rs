//! What every channel end of one segment shares: the mapping (kept alive by
//! the `Arc` each end holds) and the watch on the peer process.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::sys::clock::MonoTime;

use crate::sys::mapping::Mapping;
use crate::sys::process;

/// Shortest interval between two liveness checks made by polling calls.
const POLL_PERIOD: Duration = Duration::from_millis(10);

/// How this side learns that the peer process died without closing its
/// channel ends (`kill -9`, a crash, `abort`).
#[derive(Debug)]
pub(crate) enum PeerWatch {
    /// The parent watches its child through a pidfd (readable on exit).
    Child {
        /// `None` on kernels without `pidfd_open`: then `waitid(WNOWAIT)`.
        pidfd: Option<OwnedFd>,
        pid: u32,
    },
    /// The child watches its parent: reparenting means the parent died.
    Parent {
        /// The parent's pid, as recorded by the segment's creator.
        pid: u32,
    },
}

impl PeerWatch {
    /// Watches child `pid`.
    pub(crate) fn child(pid: u32) -> PeerWatch {
        PeerWatch::Child {
            pidfd: process::pidfd_open(pid).ok(),
            pid,
        }
    }

    /// Whether the watched process is gone (may make a system call).
    pub(crate) fn is_gone(&self) -> bool {
        match self {
            PeerWatch::Child {
                pidfd: Some(fd), ..
            } => process::pidfd_exited(fd),
            PeerWatch::Child { pidfd: None, pid } => process::child_exited(*pid),
            PeerWatch::Parent { pid } => process::parent_pid() != *pid,
        }
    }
}

/// The shared state behind a segment's channel ends.
#[derive(Debug)]
pub(crate) struct Link {
    mapping: Mapping,
    /// Set once the peer process is known (after spawn / at connect); until
    /// then only clean closes (dropped ends) are seen.
    peer: OnceLock<PeerWatch>,
    /// Latched once the peer is seen dead, so later calls skip the check.
    peer_dead: AtomicBool,
    /// When [`Link::poll_peer_gone`] last asked the kernel (monotonic ns).
    last_poll: AtomicU64,
    /// Creator side: the segment name, until unlinked (`None` after).
    name: Mutex<Option<String>>,
}

impl Link {
    /// `name` is the segment name this side must unlink (creator), if any.
    pub(crate) fn new(mapping: Mapping, name: Option<String>) -> Link {
        Link {
            mapping,
            peer: OnceLock::new(),
            peer_dead: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
            name: Mutex::new(name),
        }
    }

    /// Removes the segment name from /dev/shm if this side owns it and it is
    /// still there. Idempotent.
    pub(crate) fn unlink_name(&self) -> std::io::Result<()> {
        let name = self.name.lock().unwrap_or_else(|p| p.into_inner()).take();
        match name.map(|n| crate::sys::shm::unlink(&n)) {
            Some(Err(e)) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Starts watching the peer process (first call wins).
    pub(crate) fn watch(&self, watch: PeerWatch) {
        let _ = self.peer.set(watch);
    }

    /// Whether the peer is known dead, without a system call.
    #[inline]
    pub(crate) fn peer_known_dead(&self) -> bool {
        // Relaxed: a latch; what the dead peer wrote is ordered by the ring's
        // own Acquire loads, which callers re-do after seeing this.
        self.peer_dead.load(Ordering::Relaxed)
    }

    /// For calls about to report `Empty`, `Full` or `Timeout` (the `try_`
    /// forms and short timeouts never reach a wait's liveness check): checks
    /// whether the peer is gone, asking the kernel at most once per
    /// [`POLL_PERIOD`] per segment so busy polling stays cheap.
    pub(crate) fn poll_peer_gone(&self) -> bool {
        if self.peer_known_dead() {
            return true;
        }
        let now = MonoTime::now().as_nanos();
        // Relaxed: a rate limiter; two threads checking at once is harmless.
        let last = self.last_poll.load(Ordering::Relaxed);
        if now.saturating_sub(last) < POLL_PERIOD.as_nanos() as u64 {
            return false;
        }
        self.last_poll.store(now, Ordering::Relaxed);
        self.check_peer_gone()
    }

    /// Checks whether the peer process is gone (may make a system call).
    pub(crate) fn check_peer_gone(&self) -> bool {
        if self.peer_known_dead() {
            return true;
        }
        let gone = self.peer.get().is_some_and(PeerWatch::is_gone);
        if gone {
            self.peer_dead.store(true, Ordering::Relaxed);
            // A dead child can no longer attach: drop the name now.
            let _ = self.unlink_name();
        }
        gone
    }
}
