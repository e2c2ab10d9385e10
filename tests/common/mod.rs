//! Shared harness for cross-process tests: re-executes the test binary as
//! the child, with a watchdog on both sides so a bug fails instead of hangs.
#![allow(dead_code)]

pub mod alloc;
pub mod service;
pub mod stream;

use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE: &str = "REMORA_TEST_ROLE";

/// The arguments that make this test binary run only its `child_entry`
/// test, quietly: how every cross-process test runs itself as the child
/// (with [`ROLE`] saying what the child does).
pub const CHILD_ENTRY: [&str; 4] = ["child_entry", "--exact", "--nocapture", "-q"];

/// This test binary, run again as a child in `role` (its `child_entry`).
pub fn self_command(role: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(CHILD_ENTRY).env(ROLE, role);
    cmd
}

/// The role this process plays, if it is a re-executed child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Kills and reaps the child on drop, so a failing test leaves no process.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the child to exit successfully within `timeout`.
    pub fn wait_success(mut self, timeout: Duration) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "child failed: {status}");
                return;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGKILL now and reaps the child.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Aborts the whole process (killing nothing else) if not dropped within
/// `limit`: a hung test fails loudly instead of hanging CI. Children die with
/// their own watchdog, or by the parent's `ChildGuard`s being unreachable, so
/// each child also runs one.
pub struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    pub fn new(label: &'static str, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: {label} exceeded {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog { cancel: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
    }
}

/// Names of remora segments currently in /dev/shm.
pub fn remora_segments() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("remora-{}-", std::process::id())))
                .collect()
        })
        .unwrap_or_default()
}

/// FNV-1a over `bytes`, seeded: the checksum the stream tests carry.
pub fn checksum(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------
// Hostile-peer helpers (tests/hostile.rs, tests/soak.rs). Additive only.
// ---------------------------------------------------------------------------

/// A small seeded PRNG (SplitMix64): reproducible test decisions without a
/// dependency. Not for anything but tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fills `buf` with random bytes, eight at a time.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// The seed for a randomised test: `REMORA_TEST_SEED` if set (to replay a
/// failure), else `default`. Printed so every run can be replayed.
pub fn test_seed(label: &str, default: u64) -> u64 {
    let seed = std::env::var("REMORA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("{label}: seed {seed} (set REMORA_TEST_SEED to replay)");
    seed
}

/// Number of open file descriptors of this process.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Entries of the temp dir named `remora-<our pid>-*` (where a FIFO
/// transport would leave its directories). Only ours: other processes on
/// the machine may come and go meanwhile.
pub fn remora_tmp_entries() -> Vec<String> {
    let prefix = format!("remora-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A `remora::Child` that is killed and reaped when dropped, so a failing
/// assertion never leaves a child process behind.
pub struct KillOnDrop(pub remora::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = remora::Child;
    fn deref(&self) -> &remora::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut remora::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Both are no-ops on a child already reaped by `wait`.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` to process `pid` (one of our children).
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory preconditions; `pid` is a child we
    // spawned and have not reaped, so it cannot have been recycled.
    let ret = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        ret,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Waits until every thread of process `pid` is stopped (state `T`/`t` in
/// /proc), i.e. a SIGSTOP has fully taken effect. Panics after `limit`.
pub fn wait_until_stopped(pid: u32, limit: Duration) {
    let start = Instant::now();
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("child is gone");
        let all_stopped = tasks.filter_map(|t| t.ok()).all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // "tid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.trim_start().chars().next());
            matches!(state, Some('T' | 't'))
        });
        if all_stopped {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "process {pid} did not stop within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Median and maximum of a non-empty list of durations.
pub fn median_max(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], *sorted.last().unwrap())
}

// ---------------------------------------------------------------------------
// FIFO-transport helpers (tests/conformance.rs, tests/fifo.rs). Additive only.
// ---------------------------------------------------------------------------

/// Where the FIFO transport makes its directories: $XDG_RUNTIME_DIR (when
/// set) and the temp dir.
pub fn fifo_bases() -> Vec<std::path::PathBuf> {
    let mut bases = vec![std::env::temp_dir()];
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        bases.push(xdg.into());
    }
    bases
}

/// FIFO-transport directories made by process `pid` that still exist.
pub fn fifo_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("remora-{pid}-");
    fifo_bases()
        .iter()
        .filter_map(|b| std::fs::read_dir(b).ok())
        .flat_map(|d| d.filter_map(|e| e.ok()))
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// FIFO-transport directories made by this process that still exist. The
/// transport hands over inherited pipes now and makes none: this checks
/// that nothing named like them appears in the temp dir or XDG_RUNTIME_DIR.
pub fn remora_fifo_dirs() -> Vec<std::path::PathBuf> {
    fifo_dirs_of(std::process::id())
}

/// In a FIFO-transport child: the parent's pid and the parent's numbers
/// of the child's ends, from
/// `REMORA_CHANNEL=pipes:<pid>:<claim end>:<channel>...`
/// (see src/transport/fifo/handover.rs): the claim pipe's read end, then
/// per channel (child-to-parent write end, parent-to-child read end).
pub fn fifo_child_fds() -> (u32, i32, Vec<(i32, i32)>) {
    let v = std::env::var(remora::CHANNEL_ENV).unwrap();
    let mut parts = v.strip_prefix("pipes:").expect("a pipes: value").split(':');
    let fd = |end: &str| end.split('.').next().unwrap().parse::<i32>().unwrap();
    let pid = parts.next().unwrap().parse().unwrap();
    let claim = fd(parts.next().unwrap());
    let channels = parts
        .map(|c| {
            let f: Vec<&str> = c.split('.').collect();
            (f[3].parse().unwrap(), f[6].parse().unwrap())
        })
        .collect();
    (pid, claim, channels)
}

/// In a FIFO-transport child, behind remora's back (no claim): the
/// parent's kept copies of the child's ends, opened through
/// `/proc/<parent>/fd/<n>` (blocking): the claim pipe's read end, then
/// per channel (child-to-parent write end, parent-to-child read end).
pub fn fifo_child_ends() -> (std::fs::File, Vec<(std::fs::File, std::fs::File)>) {
    let (pid, claim, channels) = fifo_child_fds();
    let open = |fd: i32, write: bool| {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(format!("/proc/{pid}/fd/{fd}"))
            .unwrap()
    };
    let channels = channels
        .into_iter()
        .map(|(c2p, p2c)| (open(c2p, true), open(p2c, false)))
        .collect();
    (open(claim, false), channels)
}

/// Takes charge of a process started some other way: killed and reaped on
/// drop.
pub fn guard(child: Child) -> ChildGuard {
    ChildGuard { child: Some(child) }
}

/// This test binary re-executed in `role` (stdin null), killed and reaped
/// on drop, with the lines it prints on stdout to wait for.
pub fn spawn_reporting(role: &str) -> (ChildGuard, StdoutLines) {
    let mut child = self_command(role)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = StdoutLines::new(child.stdout.take().unwrap());
    (guard(child), lines)
}

/// The lines a child prints on stdout, read on a thread of their own so a
/// test can wait for one with a timeout.
pub struct StdoutLines(mpsc::Receiver<String>);

impl StdoutLines {
    pub fn new(out: std::process::ChildStdout) -> StdoutLines {
        use std::io::BufRead;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StdoutLines(rx)
    }

    /// The next line starting with `prefix`, skipping others (the test
    /// harness prints lines of its own); panics if no line comes within
    /// `limit`.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> String {
        loop {
            let line = self
                .0
                .recv_timeout(limit)
                .unwrap_or_else(|_| panic!("no {prefix} line within {limit:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Wake-up latency helpers (tests/wakeups.rs, tests/errors.rs).
// ---------------------------------------------------------------------------

/// The calling thread's kernel id, to hand to [`wait_until_asleep`].
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Waits until thread `tid` of this process sleeps in the kernel (state
/// `S` in `/proc/self/task/<tid>/stat`), i.e. a blocking wait got past any
/// spinning and yielding and went to sleep. Panics after `limit`.
pub fn wait_until_asleep(tid: i32, limit: Duration) {
    let path = format!("/proc/self/task/{tid}/stat");
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        // "tid (comm) S ...": the comm may hold spaces; the state follows
        // the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state == Some("S") {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "thread {tid} did not go to sleep within {limit:?} (state {state:?})"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A pseudo-random pause of `base` plus up to `jitter`, so wake-ups do not
/// line up with any periodic slice of a wait.
pub fn jittered(base: Duration, jitter: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let r = (now.subsec_nanos() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    base + Duration::from_nanos(r % (jitter.as_nanos() as u64).max(1))
}

// ---------------------------------------------------------------------------
// Root-only tests.
// ---------------------------------------------------------------------------

/// Root-only tests are named `root_*` and `#[ignore]`d, so the runner lists
/// them as ignored; CI (as root) runs them with
/// `cargo test --release -- --ignored root_`. Run anyway without root,
/// they fail here rather than pass without testing anything.
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this root-only test needs root: {why}");
}

/// Fails unless `program` runs (`program --version`).
pub fn require_program(program: &str) {
    let ran = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    assert!(ran, "this test needs `{program}` (util-linux)");
}

/// Runs this test binary in `role` inside a new mount namespace whose
/// /dev/shm is a tmpfs mounted with `options` (`ro,size=64k`: read-only;
/// `size=4k`: full), and waits for it to succeed. Root only: callers are
/// `root_*` tests, ignored unless asked for (see [`require_root`]).
pub fn in_dev_shm_namespace(options: &str, role: &str) {
    require_root("mounting a tmpfs over /dev/shm");
    require_program("unshare");
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs -o {options} tmpfs /dev/shm && exec \"$0\" \"$@\""
    );
    let child = std::process::Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", &script])
        .arg(std::env::current_exe().unwrap())
        .args(CHILD_ENTRY)
        .env(ROLE, role)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run unshare");
    guard(child).wait_success(Duration::from_secs(60));
}

/// Child side of the hostile tests: maps the named segment in
/// `REMORA_CHANNEL` (`shm:`, so spawned with `sealed(false)`) a second
/// time, read-write, for the child to scribble on. Returns its base and
/// length; the mapping lives until the process exits. Call before
/// `connect()`, which unlinks the name.
pub fn map_own_segment() -> (*mut u8, usize) {
    use std::os::fd::AsRawFd;
    let var = std::env::var(remora::CHANNEL_ENV).expect("not spawned by remora");
    let name = var
        .strip_prefix("shm:")
        .unwrap_or_else(|| panic!("not a named shared-memory channel: {var}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm{name}"))
        .expect("open the segment before connect() unlinks it");
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a new shared mapping of the whole object; no Rust reference
    // to it exists, and closing the file afterwards leaves it mapped.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap");
    (base.cast(), len)
}
