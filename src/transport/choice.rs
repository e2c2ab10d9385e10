//! Which transport a spawner uses, the `REMORA_TRANSPORT` override, and when
//! `Auto` falls back from shared memory to FIFOs (anonymous pipes).

use std::fmt;
use std::str::FromStr;

use crate::error::{OpenError, ParseTransportError};

/// The environment variable that picks the transport when a [`Spawner`]
/// is left at [`Transport::Auto`]: `auto`, `shm` or `fifo`.
///
/// Read by the parent at [`Spawner::spawn`]; an explicit
/// [`Spawner::transport`] of `Shm` or `Fifo` wins over it. The child needs
/// nothing: it learns the transport from `REMORA_CHANNEL`.
///
/// [`Spawner`]: crate::Spawner
/// [`Spawner::spawn`]: crate::Spawner::spawn
/// [`Spawner::transport`]: crate::Spawner::transport
pub const TRANSPORT_ENV: &str = "REMORA_TRANSPORT";

/// How the two processes move messages. Both transports offer the same API
/// and guarantees; they differ in speed and in what the host must allow.
///
/// * [`Shm`](Transport::Shm): rings in a POSIX shared-memory segment,
///   zero-copy both ways, futex wake-ups. Needs a usable `/dev/shm`.
/// * [`Fifo`](Transport::Fifo): the same frames over two anonymous pipes
///   per channel, handed to the child alone. Each message is copied through
///   the kernel once each way (then read in place from a private buffer);
///   works wherever pipes do, with no file system at all.
/// * [`Auto`](Transport::Auto) (default): [`TRANSPORT_ENV`] if set, else
///   shared memory, falling back to FIFOs when the segment cannot be
///   created, reserved or mapped (`EACCES`, `EPERM`, `EROFS`, `ENOENT`,
///   `ENOSPC`, `ENOSYS`, `EINVAL`, ...: a missing, read-only, full or
///   forbidden `/dev/shm`). Configuration errors do not fall back.
///
/// ```no_run
/// use remora::{Spawner, Transport};
///
/// let child = Spawner::new("path/to/app")
///     .channel("echo")
///     .transport(Transport::Fifo) // e.g. a sandbox without /dev/shm
///     .spawn()?;
/// assert_eq!(child.transport(), Transport::Fifo);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The names parse and print as in [`TRANSPORT_ENV`]:
///
/// ```
/// use remora::Transport;
/// assert_eq!("fifo".parse::<Transport>(), Ok(Transport::Fifo));
/// assert_eq!(Transport::default().to_string(), "auto");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// [`TRANSPORT_ENV`] if set; else shared memory with a FIFO fallback.
    #[default]
    Auto,
    /// Shared memory only: spawning fails if the segment cannot be made.
    Shm,
    /// Pipes only: two `pipe2` pipes per channel, whose child ends the
    /// parent sends on the child's control socket before it runs (never
    /// inherited: a wrapper or helper between them never holds a pipe end,
    /// so none hides the child's hang-up; the message is received once,
    /// by one process).
    ///
    /// The trade-off of that hand-over: nothing on any file system (no
    /// directory, no writable temp dir needed, nothing left behind if
    /// either side is killed), but the socket can be lost on the way. A
    /// wrapper that closes inherited descriptors (`sudo` closes all above
    /// 2) is covered: the child then opens each end as
    /// `/proc/<parent pid>/fd/<n>`, after checking it is that very pipe,
    /// as it does for a sealed segment. A child that can reach neither
    /// (such a wrapper plus another PID namespace with its own `/proc`, or
    /// another user) fails to connect with
    /// [`OpenError::HandOverLost`](crate::OpenError::HandOverLost). Until
    /// the child has taken its ends the parent keeps copies of them, and
    /// reports the child's death through a pidfd rather than the pipes.
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/app")
    ///     .channel("c")
    ///     .transport(remora::Transport::Fifo)
    ///     .spawn()?;
    /// // The child: remora::connect() takes its pipe ends.
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    Fifo,
}

impl FromStr for Transport {
    type Err = ParseTransportError;

    /// `auto`, `shm` or `fifo`, ignoring ASCII case and surrounding spaces.
    fn from_str(s: &str) -> Result<Transport, ParseTransportError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Transport::Auto),
            "shm" => Ok(Transport::Shm),
            "fifo" => Ok(Transport::Fifo),
            _ => Err(ParseTransportError {
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::Shm => "shm",
            Transport::Fifo => "fifo",
        })
    }
}

impl Transport {
    /// The transport a spawn should use: `self` unless it is `Auto`, in
    /// which case [`TRANSPORT_ENV`] decides (unset or empty: `Auto`).
    pub(crate) fn resolve(self) -> Result<Transport, ParseTransportError> {
        if self != Transport::Auto {
            return Ok(self);
        }
        match std::env::var_os(TRANSPORT_ENV) {
            None => Ok(Transport::Auto),
            Some(v) if v.is_empty() => Ok(Transport::Auto),
            Some(v) => v.to_string_lossy().parse(),
        }
    }
}

/// Whether a failure to create a segment means shared memory is unusable on
/// this host (so `Auto` should fall back to FIFOs), rather than a problem
/// FIFOs would have too (bad configuration, no file descriptors left).
pub(crate) fn shm_unusable(e: &OpenError) -> bool {
    let OpenError::Io { op, source } = e else {
        return false;
    };
    if *op == "getrandom" {
        return false;
    }
    matches!(
        source.raw_os_error(),
        Some(
            libc::EACCES
                | libc::EPERM
                | libc::EROFS
                | libc::ENOENT
                | libc::ENOTDIR
                | libc::ENOSPC
                | libc::EDQUOT
                | libc::EFBIG
                | libc::ENOMEM
                | libc::ENOSYS
                | libc::ENODEV
                | libc::EOPNOTSUPP
                | libc::EINVAL
                | libc::ENAMETOOLONG
        )
    )
}
