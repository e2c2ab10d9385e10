//! What every channel end of one segment shares: the mapping (kept alive by
//! the `Arc` each end holds) and the watch on the peer process.

use std::sync::Mutex;

use crate::peer::{Peer, PeerWatch};
use crate::sys::mapping::Mapping;

/// The shared state behind a segment's channel ends.
#[derive(Debug)]
pub(crate) struct Link {
    mapping: Mapping,
    peer: Peer,
    /// Creator side: the segment name, until unlinked (`None` after).
    name: Mutex<Option<String>>,
}

impl Link {
    /// `name` is the segment name this side must unlink (creator), if any.
    pub(crate) fn new(mapping: Mapping, name: Option<String>) -> Link {
        Link {
            mapping,
            peer: Peer::default(),
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
        self.peer.watch(watch);
    }

    /// Whether the peer is known dead, without a system call.
    #[inline]
    pub(crate) fn peer_known_dead(&self) -> bool {
        self.peer.known_dead()
    }

    /// Rate-limited liveness check for calls about to report `Empty`,
    /// `Full` or `Timeout` (see [`Peer::poll_gone`]).
    pub(crate) fn poll_peer_gone(&self) -> bool {
        self.peer.poll_gone(|| self.on_peer_death())
    }

    /// Checks whether the peer process is gone (may make a system call).
    pub(crate) fn check_peer_gone(&self) -> bool {
        self.peer.check_gone(|| self.on_peer_death())
    }

    /// A dead child can no longer attach: drop the name now.
    fn on_peer_death(&self) {
        let _ = self.unlink_name();
    }
}
