//! What every channel end of one segment shares: the mapping (kept alive by
//! the `Arc` each end holds) and the watch on the peer process.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::mapping::Mapping;

/// How this side learns that the peer process died without closing its
/// channel ends.
#[derive(Debug)]
pub(crate) enum PeerWatch {
    /// Nothing to watch: only clean closes (dropped ends) are seen.
    Untracked,
}

impl PeerWatch {
    fn is_gone(&self) -> bool {
        match self {
            PeerWatch::Untracked => false,
        }
    }
}

/// The shared state behind a segment's channel ends.
#[derive(Debug)]
pub(crate) struct Link {
    mapping: Mapping,
    peer: PeerWatch,
    /// Latched once the peer is seen dead, so later calls skip the check.
    peer_dead: AtomicBool,
}

impl Link {
    pub(crate) fn new(mapping: Mapping, peer: PeerWatch) -> Link {
        Link {
            mapping,
            peer,
            peer_dead: AtomicBool::new(false),
        }
    }

    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Whether the peer is known dead, without a system call.
    #[inline]
    pub(crate) fn peer_known_dead(&self) -> bool {
        // Relaxed: a latch; what the dead peer wrote is ordered by the ring's
        // own Acquire loads, which callers re-do after seeing this.
        self.peer_dead.load(Ordering::Relaxed)
    }

    /// Checks whether the peer process is gone (may make a system call).
    pub(crate) fn check_peer_gone(&self) -> bool {
        if self.peer_known_dead() {
            return true;
        }
        let gone = self.peer.is_gone();
        if gone {
            self.peer_dead.store(true, Ordering::Relaxed);
        }
        gone
    }
}
