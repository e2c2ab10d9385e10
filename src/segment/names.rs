//! Segment names, their creator lock, and the stale sweep's view of them.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::error::OpenError;
use crate::layout::{LAYOUT_VERSION, MAGIC};
use crate::stale;
use crate::sys::{fd, random, shm};

/// Creates a fresh, empty shared-memory object under a new unguessable
/// name, holding its creator lock (see `stale`).
pub(super) fn create_locked() -> Result<(String, OwnedFd), OpenError> {
    stale::create_locked(
        || {
            let name = format!(
                "/remora-{}-{:032x}",
                std::process::id(),
                random::random_u128()?
            );
            let fd = shm::create(&name)?;
            Ok((name, fd))
        },
        |name| shm::open(name),
    )
    .map_err(OpenError::io("shm_open"))
}

/// The first layout version whose creators hold a lock on their segment.
const FIRST_LOCKED_LAYOUT: u32 = 3;

/// Shared-memory segments for the stale sweep: `/dev/shm/remora-<pid>-<32
/// hex digits>`, swept when of a layout version from
/// [`FIRST_LOCKED_LAYOUT`] to [`LAYOUT_VERSION`] (older creators held no
/// lock; newer ones are unknown) and unlocked.
pub(super) struct StaleSegment;

impl stale::Stale for StaleSegment {
    fn ours(name: &str) -> bool {
        name.strip_prefix("remora-")
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, id)| {
                pid.parse::<u32>().is_ok()
                    && id.len() == 32
                    && id.bytes().all(|b| b.is_ascii_hexdigit())
            })
    }

    fn open(_dir: &Path, name: &str) -> std::io::Result<OwnedFd> {
        shm::open(&format!("/{name}"))
    }

    /// Read with `pread`: nothing is mapped, so a short or hostile object
    /// cannot raise SIGBUS here.
    fn lock_aware(object: &OwnedFd) -> bool {
        let mut head = [0u8; 12];
        let read = fd::pread(object.as_fd(), &mut head, 0).unwrap_or(0);
        read == head.len()
            && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) == MAGIC
            && (FIRST_LOCKED_LAYOUT..=LAYOUT_VERSION)
                .contains(&u32::from_le_bytes(head[8..].try_into().expect("4 bytes")))
    }

    fn remove(_dir: &Path, name: &str, _object: &OwnedFd) {
        let _ = shm::unlink(&format!("/{name}"));
    }
}
