//! `membarrier(2)`: process-wide memory barriers on demand.
//!
//! With `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, one thread makes every running
//! thread of every *registered* process execute a full memory barrier before
//! the call returns. The doorbell uses it to move the cost of its Dekker
//! handshake off the hot path: notifiers, which run on every message, only
//! need a compiler fence, and a waiter, which is about to sleep anyway, pays
//! for one `membarrier` call (see `doorbell.rs`).

use std::sync::OnceLock;

const CMD_QUERY: libc::c_int = 0;
const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes a command and two integer flags, no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) }
}

/// Registers this process so that other processes' global expedited
/// barriers reach its threads. Returns whether this process can rely on
/// expedited barriers (registered here, and able to issue them). Idempotent.
pub(crate) fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let supported = membarrier(CMD_QUERY);
        supported >= 0
            && supported & libc::c_long::from(CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED)
                == libc::c_long::from(CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED)
            && membarrier(CMD_REGISTER_GLOBAL_EXPEDITED) == 0
    })
}

/// Runs a full memory barrier on every running thread of every registered
/// process (including the caller). Returns false if the call failed; the
/// caller must then not rely on it.
pub(crate) fn global_barrier() -> bool {
    membarrier(CMD_GLOBAL_EXPEDITED) == 0
}
