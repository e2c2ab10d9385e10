//! What every row shares: the round-trip protocol, the child's environment,
//! the watchdog, the child guard and the run directory that holds (and on
//! exit removes) every file a run creates.

use std::io;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::baselines::{Samples, ping_seed, pong_seed};

/// Which row a child process serves (`remora-spin`, `iceoryx2-poll`, ...).
pub const ENV_ROW: &str = "PEERS_CHILD_ROW";
/// Payload size in bytes.
pub const ENV_SIZE: &str = "PEERS_CHILD_SIZE";
/// Number of timed plus warm-up rounds.
pub const ENV_ROUNDS: &str = "PEERS_CHILD_ROUNDS";
/// `1`: the child pins itself to CPU 1.
pub const ENV_PIN: &str = "PEERS_CHILD_PIN";
/// The run's tag (`rpeers<parent pid>`): names the run directory, the
/// iceoryx2 file prefix and its services.
pub const ENV_TAG: &str = "PEERS_CHILD_TAG";
/// ipc-channel: the parent's one-shot server name.
pub const ENV_IPC_SERVER: &str = "PEERS_CHILD_IPC_SERVER";

/// A side that makes no progress for this long gives up (the peer stalled).
pub const STALL: Duration = Duration::from_secs(10);
/// A whole row (child start to child exit) taking longer than this is
/// treated as hung: the watchdog kills the child, cleans up and exits.
pub const ROW_LIMIT: Duration = Duration::from_secs(120);

pub type Res<T = ()> = Result<T, String>;

/// One process's end of a ping-pong link.
///
/// `send` writes all `size` payload bytes (`fill` with `seed`) and hands them
/// over; `recv` waits for the peer's message and reads and verifies every
/// byte (`verify` with `seed`). Both are the same work as the `pingpong`
/// example's remora rows and baselines.
pub trait Side {
    fn send(&mut self, seed: u64) -> Res;
    fn recv(&mut self, seed: u64) -> Res;
}

/// The parent's half: an untimed handshake (the child's round 0), `warmup`
/// untimed and `iters` timed round trips, then an untimed goodbye ping that
/// lets the child exit only after its last reply was consumed.
pub fn parent_rounds<S: Side>(side: &mut S, iters: usize, warmup: usize) -> Res<Samples> {
    side.recv(pong_seed(0))
        .map_err(|e| format!("handshake: {e}"))?;
    let total = rounds(iters, warmup);
    let mut samples = Vec::with_capacity(iters);
    for k in 1..=total {
        let t0 = Instant::now();
        side.send(ping_seed(k))
            .map_err(|e| format!("round {k}: send: {e}"))?;
        side.recv(pong_seed(k))
            .map_err(|e| format!("round {k}: recv: {e}"))?;
        let dt = t0.elapsed();
        if k as usize > warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    side.send(ping_seed(total + 1))
        .map_err(|e| format!("goodbye: {e}"))?;
    Ok(Samples(samples))
}

/// The child's half of [`parent_rounds`].
pub fn child_rounds<S: Side>(side: &mut S, total: u32) -> Res {
    side.send(pong_seed(0))?;
    for k in 1..=total {
        side.recv(ping_seed(k))?;
        side.send(pong_seed(k))?;
    }
    side.recv(ping_seed(total + 1))
}

pub fn rounds(iters: usize, warmup: usize) -> u32 {
    u32::try_from(iters + warmup).expect("too many iterations")
}

/// [`crate::baselines::fill`] for a loaned, not yet initialised buffer: the
/// same bytes, written the same way (one 8-byte store per word).
pub fn fill_uninit(buf: &mut [MaybeUninit<u8>], seed: u64) {
    let mut words = buf.chunks_exact_mut(8);
    for (i, w) in (&mut words).enumerate() {
        w.write_copy_of_slice(&seed.wrapping_add(i as u64).to_le_bytes());
    }
    for b in words.into_remainder() {
        b.write(seed as u8);
    }
}

/// Gives up with [`STALL`] once a wait loop has made no progress for that
/// long; checks the clock only every 1024 calls.
pub struct StallCheck {
    since: Option<Instant>,
    calls: u32,
}

impl StallCheck {
    pub fn new() -> StallCheck {
        StallCheck {
            since: None,
            calls: 0,
        }
    }

    pub fn tick(&mut self) -> Res {
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(1024)
            && self.since.get_or_insert_with(Instant::now).elapsed() > STALL
        {
            return Err(format!("peer made no progress for {STALL:?}"));
        }
        Ok(())
    }
}

/// Child side: reads the row parameters the parent put in the environment.
pub struct ChildEnv {
    pub row: String,
    pub size: usize,
    pub rounds: u32,
    pub tag: String,
}

impl ChildEnv {
    pub fn from_env() -> Option<ChildEnv> {
        let row = std::env::var(ENV_ROW).ok()?;
        let get = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("child: {k} not set"));
        Some(ChildEnv {
            row,
            size: get(ENV_SIZE).parse().expect("child: size"),
            rounds: get(ENV_ROUNDS).parse().expect("child: rounds"),
            tag: get(ENV_TAG),
        })
    }
}

/// The environment a child of `row` needs (besides anything row-specific).
pub fn child_env(
    row: &str,
    size: usize,
    rounds: u32,
    tag: &str,
    pin: bool,
) -> Vec<(&'static str, String)> {
    vec![
        (ENV_ROW, row.to_owned()),
        (ENV_SIZE, size.to_string()),
        (ENV_ROUNDS, rounds.to_string()),
        (ENV_TAG, tag.to_owned()),
        (ENV_PIN, if pin { "1" } else { "0" }.to_owned()),
    ]
}

/// Kills the child and ends the whole run if a row overruns [`ROW_LIMIT`]:
/// every loop in this program is bounded, this bounds the blocking calls
/// that have no timeout (ipc-channel's `accept` and `recv`).
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn arm(row: &str, pid: u32, run_dir: &RunDir) -> Watchdog {
        let (stop, wait) = mpsc::channel::<()>();
        let (row, cleanup) = (row.to_owned(), run_dir.clone());
        let thread = std::thread::spawn(move || {
            if wait.recv_timeout(ROW_LIMIT) != Err(mpsc::RecvTimeoutError::Timeout) {
                return; // disarmed
            }
            eprintln!("{row}: no result after {ROW_LIMIT:?}; killing child {pid} and exiting");
            let pid = pid as libc::pid_t;
            let mut status = 0;
            // SAFETY: `pid` is our child, not reaped yet (the row's guard
            // reaps it only after disarming this watchdog), so it names that
            // process; `status` is a valid out pointer.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            cleanup.remove();
            std::process::exit(2);
        });
        Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `std::process::Child` that is killed (if still running) and reaped
/// when dropped, also when the row panics.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Waits up to 5 s for a clean exit; kills it after that.
    pub fn finish(mut self, row: &str) -> Res {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.0.try_wait().map_err(|e| format!("{row}: wait: {e}"))? {
                Some(s) if s.success() => return Ok(()),
                Some(s) => return Err(format!("{row}: child failed: {s}")),
                None if Instant::now() > deadline => {
                    return Err(format!("{row}: child did not exit; killed"));
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `/tmp/rpeers<pid>/`: the iceoryx2 root path and the `TMPDIR` of this run
/// (ipc-channel's one-shot server socket directory), removed at the end with
/// every `/dev/shm/rpeers<pid>_*` (iceoryx2's shared memory, with its
/// prefix set to `rpeers<pid>_`).
#[derive(Clone)]
pub struct RunDir {
    pub tag: String,
    pub dir: PathBuf,
}

impl RunDir {
    pub fn tag_for(pid: u32) -> String {
        format!("rpeers{pid}")
    }

    pub fn dir_for(tag: &str) -> PathBuf {
        Path::new("/tmp").join(tag)
    }

    /// The parent's run directory; first removes what earlier runs that
    /// died without cleaning up (e.g. on Ctrl-C) left behind.
    pub fn create() -> io::Result<RunDir> {
        remove_stale_runs();
        let tag = RunDir::tag_for(std::process::id());
        let dir = RunDir::dir_for(&tag);
        std::fs::create_dir_all(&dir)?;
        Ok(RunDir { tag, dir })
    }

    /// The iceoryx2 file prefix of this run.
    pub fn shm_prefix(tag: &str) -> String {
        format!("{tag}_")
    }

    /// Removes the run directory and this run's `/dev/shm` entries; returns
    /// the names of the `/dev/shm` entries that were still there.
    pub fn remove(&self) -> Vec<String> {
        let _ = std::fs::remove_dir_all(&self.dir);
        remove_shm_with_prefix(&RunDir::shm_prefix(&self.tag))
    }
}

fn remove_shm_with_prefix(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// `rpeers<pid>` with `pid` no longer running.
fn stale_pid(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("rpeers")?;
    let digits = digits.split('_').next()?;
    let pid: u32 = digits.parse().ok()?;
    (!Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

fn remove_stale_runs() {
    for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        if let Some(pid) = stale_pid(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
            remove_shm_with_prefix(&RunDir::shm_prefix(&RunDir::tag_for(pid)));
        }
    }
    for entry in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        if stale_pid(&entry.file_name().to_string_lossy()).is_some() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
