//! Peer death is reported by the kernel, at once, whatever wraps the child.
//!
//! Every case kills a peer with SIGKILL (or lets it `abort`) while the other
//! side waits in one way — blocked, spinning, adaptive, `try_` polling, a
//! timeout — and measures how long the survivor takes to see
//! `Disconnected`. The median over the kills of a case must stay far below
//! the 50 ms slice of the old polling scheme (a lost kernel wake-up, or a
//! fallback to polling, fails it), messages committed before the death must
//! still arrive first, and a live peer behind `sh -c`, `timeout` or a new PID
//! namespace must never be reported dead.
//!
//! The PID-namespace cases need root: they are the `root_*` tests, listed
//! as ignored; as root, `cargo test --release -- --ignored root_` runs them
//! (CI does).
//!
//! `REMORA_LIVENESS_KILLS=20 cargo test --release --test liveness -- --nocapture --test-threads=1`
//! prints the median and maximum detection time per case over 20 kills.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{StdoutLines, Watchdog, role};
use remora::{
    ChannelConfig, RawReceiver, RawSender, RecvError, Segment, SendError, Spawner, Transport,
    WaitStrategy,
};

/// How each survivor waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Recv,
    TryRecv,
    RecvTimeout,
    /// Fills the ring, then blocks in `send`.
    Send,
    /// Fills the ring, then polls `try_send`.
    TrySend,
}

impl Op {
    fn parse(s: &str) -> Op {
        match s {
            "Recv" => Op::Recv,
            "TryRecv" => Op::TryRecv,
            "RecvTimeout" => Op::RecvTimeout,
            "Send" => Op::Send,
            "TrySend" => Op::TrySend,
            _ => panic!("bad op {s}"),
        }
    }
}

fn strategy(s: &str) -> WaitStrategy {
    match s {
        "Spin" => WaitStrategy::Spin,
        "Block" => WaitStrategy::Block,
        "Adaptive" => WaitStrategy::Adaptive,
        _ => panic!("bad strategy {s}"),
    }
}

/// Messages the dying side commits before it dies; all must arrive.
const COMMITTED: usize = 3;
/// Median detection time a case must stay under (the old scheme polled
/// every 50 ms).
const MEDIAN_BOUND: Duration = Duration::from_millis(10);
/// Longest any single detection may take before the test gives up.
const HARD_BOUND: Duration = Duration::from_secs(5);

static SERIAL: Mutex<()> = Mutex::new(());

/// One case at a time: spinning survivors must not compete for 2 cores.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn kills() -> usize {
    std::env::var("REMORA_LIVENESS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How long to let the survivor settle into its wait before the kill:
/// 20 ms plus up to 10 ms of jitter, so kills do not line up with any
/// periodic slice of the wait.
fn settle_time() -> Duration {
    Duration::from_millis(20) + Duration::from_nanos(mono_ns() % 10_000_000)
}

fn sigkill(pid: u32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// The test-binary invocation a child runs: `entry` with `role`.
fn self_args() -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    std::iter::once(exe.to_string_lossy().into_owned())
        .chain(common::CHILD_ENTRY.iter().map(|a| a.to_string()))
        .collect()
}

/// A plain `Command` for this test binary in `role`.
fn self_command(role: &str) -> Command {
    let me = self_args();
    let mut cmd = Command::new(&me[0]);
    cmd.args(&me[1..]).env(common::ROLE, role);
    cmd
}

/// A spawner for this test binary in `role`, behind `wrapper`.
fn spawner(wrapper: &str, role: &str, transport: Transport, strategy: WaitStrategy) -> Spawner {
    let me = self_args();
    let mut s = match wrapper {
        "none" => {
            let mut s = Spawner::new(&me[0]);
            s.args(&me[1..]);
            s
        }
        // A shell that forks the child and outlives it.
        "sh" => {
            let mut s = Spawner::new("sh");
            s.arg("-c").arg(r#""$0" "$@"; s=$?; exit $s"#).args(&me);
            s
        }
        "timeout" => {
            let mut s = Spawner::new("timeout");
            s.arg("120").args(&me);
            s
        }
        // A new PID namespace: getppid() is 0 in there. A shell is its
        // init (as bwrap brings its own), so the child is not PID 1, which
        // could not SIGKILL itself.
        "unshare" => {
            let mut s = Spawner::new("unshare");
            s.args(["--pid", "--fork", "sh", "-c", r#""$0" "$@"; true"#])
                .args(&me);
            s
        }
        other => panic!("bad wrapper {other}"),
    };
    s.env(common::ROLE, role)
        .env("LV_STRATEGY", format!("{strategy:?}"))
        .transport(transport)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .channel_with(
            ChannelConfig::new("c")
                .capacity(4096)
                .wait_strategy(strategy),
        )
        .channel("ctl");
    s
}

/// Waits in `op` until the peer is gone; returns how many messages arrived
/// first and when `Disconnected` came (CLOCK_MONOTONIC ns).
fn wait_for_death(tx: &mut RawSender, rx: &mut RawReceiver, op: Op) -> (usize, u64) {
    let mut received = 0;
    loop {
        let r = match op {
            Op::Recv => rx.recv().map(drop),
            Op::TryRecv => rx.try_recv().map(drop),
            Op::RecvTimeout => rx.recv_timeout(Duration::from_secs(30)).map(drop),
            Op::Send | Op::TrySend => break,
        };
        match r {
            Ok(()) => received += 1,
            Err(RecvError::Empty) => std::hint::spin_loop(),
            Err(RecvError::Disconnected) => return (received, mono_ns()),
            Err(e) => panic!("{op:?}: unexpected {e:?}"),
        }
    }
    loop {
        let r = match op {
            Op::Send => tx.send(&[7; 64]),
            _ => tx.try_send(&[7; 64]),
        };
        match r {
            Ok(()) => {}
            Err(SendError::Full) => std::hint::spin_loop(),
            Err(SendError::Disconnected) => return (0, mono_ns()),
            Err(e) => panic!("{op:?}: unexpected {e:?}"),
        }
    }
}

/// Collects detection times for one case and checks them.
struct Case {
    label: String,
    times: Vec<Duration>,
}

impl Case {
    fn new(label: String) -> Case {
        Case {
            label,
            times: Vec::new(),
        }
    }

    fn record(&mut self, killed_ns: u64, seen_ns: u64) {
        let t = Duration::from_nanos(seen_ns.saturating_sub(killed_ns));
        assert!(t < HARD_BOUND, "{}: detection took {t:?}", self.label);
        self.times.push(t);
    }

    fn check(self) {
        let (median, max) = common::median_max(&self.times);
        println!(
            "{:<48} median {:>9.3} ms   max {:>9.3} ms   ({} kills)",
            self.label,
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            self.times.len()
        );
        assert!(
            median < MEDIAN_BOUND,
            "{}: median detection {median:?} (bound {MEDIAN_BOUND:?})",
            self.label
        );
    }
}

// ---------------------------------------------------------------------------
// The child dies; the parent waits.
// ---------------------------------------------------------------------------

/// The parent spawns a child (behind `wrapper`) that commits
/// [`COMMITTED`] messages and idles; the parent asks it to SIGKILL itself
/// (its pid may be a PID namespace's own) and waits in `op`.
fn child_death_case(wrapper: &str, t: Transport, s: WaitStrategy, op: Op) {
    let mut case = Case::new(format!("child dies: {t} {wrapper} {s:?} {op:?}"));
    for _ in 0..kills() {
        let mut child = spawner(wrapper, "committer", t, s).spawn().unwrap();
        let lines = StdoutLines::new(child.process_mut().stdout.take().unwrap());
        let (mut tx, mut rx) = child.raw_channel("c").unwrap();
        let (mut ctl_tx, mut ctl_rx) = child.raw_channel("ctl").unwrap();
        drop(ctl_rx.recv_timeout(Duration::from_secs(20)).unwrap());
        if matches!(op, Op::Send | Op::TrySend) {
            // Fill the ring so that the wait below is a wait for room.
            while tx.try_send(&[7; 64]).is_ok() {}
        }
        let killer = std::thread::spawn(move || {
            // Let the survivor get into its wait first.
            std::thread::sleep(settle_time());
            ctl_tx.send(b"die").unwrap();
            let line = lines.wait_for("KILLING", Duration::from_secs(20));
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        let (received, seen) = wait_for_death(&mut tx, &mut rx, op);
        let killed = killer.join().unwrap();
        if !matches!(op, Op::Send | Op::TrySend) {
            assert_eq!(received, COMMITTED, "{}: lost messages", case.label);
        }
        case.record(killed, seen);
        drop((tx, rx, ctl_rx));
        let _ = child.kill();
        let _ = child.wait();
    }
    case.check();
}

fn child_role_committer(conn: remora::Connection) {
    let (mut tx, _rx) = conn.raw_channel("c").unwrap();
    let (mut ctl_tx, mut ctl_rx) = conn.raw_channel("ctl").unwrap();
    for i in 0..COMMITTED {
        tx.send(format!("m{i}").as_bytes()).unwrap();
    }
    ctl_tx.send(b"ready").unwrap();
    // Idle until told to die; `_rx` keeps the other direction open.
    drop(ctl_rx.recv().unwrap());
    let mut out = std::io::stdout();
    writeln!(out, "KILLING {}", mono_ns()).unwrap();
    out.flush().unwrap();
    // SAFETY: signalling ourselves has no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL returned");
}

#[test]
fn child_death_is_seen_at_once_in_every_wait() {
    let _s = serial();
    let _w = Watchdog::new("child death", Duration::from_secs(600));
    for t in [Transport::Shm, Transport::Fifo] {
        for s in [
            WaitStrategy::Block,
            WaitStrategy::Adaptive,
            WaitStrategy::Spin,
        ] {
            for op in [
                Op::Recv,
                Op::TryRecv,
                Op::RecvTimeout,
                Op::Send,
                Op::TrySend,
            ] {
                child_death_case("none", t, s, op);
            }
        }
    }
}

fn child_death_behind(wrapper: &str) {
    for t in [Transport::Shm, Transport::Fifo] {
        child_death_case(wrapper, t, WaitStrategy::Adaptive, Op::Recv);
    }
}

#[test]
fn child_death_behind_wrappers_is_seen_at_once() {
    let _s = serial();
    let _w = Watchdog::new("child death behind wrappers", Duration::from_secs(300));
    for wrapper in WRAPPERS {
        child_death_behind(wrapper);
    }
}

/// The wrappers any user can use; `unshare --pid` (a new PID namespace)
/// needs root: its cases are the `root_*` tests, ignored unless asked for.
const WRAPPERS: [&str; 2] = ["sh", "timeout"];

/// Root and `unshare` for the PID-namespace cases, or a clear failure.
fn require_pid_namespace() {
    common::require_root("a new PID namespace (unshare --pid)");
    common::require_program("unshare");
}

#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_child_death_in_a_pid_namespace_is_seen_at_once() {
    require_pid_namespace();
    let _s = serial();
    let _w = Watchdog::new("child death in a PID namespace", Duration::from_secs(300));
    child_death_behind("unshare");
}

// ---------------------------------------------------------------------------
// The parent dies; the child waits.
// ---------------------------------------------------------------------------

/// The test starts a middle process that spawns the leaf (behind
/// `wrapper`); the leaf waits in `op`; the test kills the middle and reads
/// when the leaf saw `Disconnected` from the shared stdout.
fn parent_death_case(wrapper: &str, t: Transport, s: WaitStrategy, op: Op) {
    parent_death_case_with(wrapper, t, s, op, false);
}

/// [`parent_death_case`]; with `no_waitv`, the leaf runs under a seccomp
/// filter that refuses `futex_waitv` (as some container profiles do), so
/// its waits take the fallback path.
fn parent_death_case_with(wrapper: &str, t: Transport, s: WaitStrategy, op: Op, no_waitv: bool) {
    let note = if no_waitv { " (no futex_waitv)" } else { "" };
    let mut case = Case::new(format!("parent dies: {t} {wrapper} {s:?} {op:?}{note}"));
    for _ in 0..kills() {
        let mut middle = self_command("middle")
            .env("LV_WRAPPER", wrapper)
            .env("LV_TRANSPORT", t.to_string())
            .env("LV_STRATEGY", format!("{s:?}"))
            .env("LV_OP", format!("{op:?}"))
            .env("LV_NO_WAITV", if no_waitv { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = StdoutLines::new(middle.stdout.take().unwrap());
        let middle = common::guard(middle);
        lines.wait_for("LEAF_WAITING", Duration::from_secs(20));
        std::thread::sleep(settle_time());
        let killed = mono_ns();
        sigkill(middle.id());
        let line = lines.wait_for("LEAF_DISCONNECTED", HARD_BOUND);
        let mut words = line.split_whitespace().skip(1);
        let seen: u64 = words.next().unwrap().parse().unwrap();
        let received: usize = words.next().unwrap().parse().unwrap();
        if !matches!(op, Op::Send | Op::TrySend) {
            assert_eq!(received, COMMITTED, "{}: lost messages", case.label);
        }
        case.record(killed, seen);
        drop(middle);
        // The leaf exits on its own once it has reported.
        lines.wait_for("LEAF_EXIT", Duration::from_secs(10));
    }
    case.check();
}

fn middle_role() {
    let t: Transport = std::env::var("LV_TRANSPORT").unwrap().parse().unwrap();
    let s = strategy(&std::env::var("LV_STRATEGY").unwrap());
    let wrapper = std::env::var("LV_WRAPPER").unwrap();
    let mut sp = spawner(&wrapper, "leaf", t, s);
    sp.stdout(Stdio::inherit())
        .env("LV_OP", std::env::var("LV_OP").unwrap());
    let mut leaf = sp.spawn().unwrap();
    let (mut tx, _rx) = leaf.raw_channel("c").unwrap();
    let (_ctl_tx, _ctl_rx) = leaf.raw_channel("ctl").unwrap();
    for i in 0..COMMITTED {
        tx.send(format!("m{i}").as_bytes()).unwrap();
    }
    // Blocks until killed.
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = leaf.try_wait();
    }
}

fn leaf_role(conn: remora::Connection) {
    let op = Op::parse(&std::env::var("LV_OP").unwrap());
    if std::env::var("LV_NO_WAITV").as_deref() == Ok("1") {
        refuse_futex_waitv();
    }
    let (mut tx, mut rx) = conn.raw_channel("c").unwrap();
    let (_ctl_tx, _ctl_rx) = conn.raw_channel("ctl").unwrap();
    // The parent committed its messages before we started waiting for its
    // death (it sent them at once); for the send cases, fill our ring.
    let mut received = 0;
    if matches!(op, Op::Send | Op::TrySend) {
        while tx.try_send(&[1; 64]).is_ok() {}
    } else {
        // Make sure the messages are committed before the kill: wait for
        // them, then leave them unread until the wait below.
        while received == 0 {
            received = usize::from(rx.recv_timeout(Duration::from_secs(20)).is_ok());
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "LEAF_WAITING").unwrap();
    out.flush().unwrap();
    let (more, seen) = wait_for_death(&mut tx, &mut rx, op);
    writeln!(out, "LEAF_DISCONNECTED {seen} {}", received + more).unwrap();
    writeln!(out, "LEAF_EXIT").unwrap();
    out.flush().unwrap();
}

#[test]
fn parent_death_is_seen_at_once_in_every_wait() {
    let _s = serial();
    let _w = Watchdog::new("parent death", Duration::from_secs(600));
    for t in [Transport::Shm, Transport::Fifo] {
        for s in [
            WaitStrategy::Block,
            WaitStrategy::Adaptive,
            WaitStrategy::Spin,
        ] {
            for op in [Op::Recv, Op::TryRecv, Op::Send] {
                parent_death_case("none", t, s, op);
            }
        }
    }
}

/// Installs a seccomp filter on this thread (and its future threads) that
/// fails `futex_waitv` with ENOSYS, like a kernel older than 5.16.
fn refuse_futex_waitv() {
    const SYS_FUTEX_WAITV: u32 = 449; // x86_64 and aarch64 alike
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: SYS_FUTEX_WAITV,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `prog` and `filter` outlive them (the
    // kernel copies the program).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
        let ret = libc::syscall(libc::SYS_futex_waitv, 0usize, 0u32, 0u32, 0usize, 0u32);
        assert_eq!(
            (ret, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ENOSYS)),
            "the filter must refuse futex_waitv"
        );
    }
}

/// Without `futex_waitv` (old kernel, seccomp) blocked waits fall back to
/// short slices that re-read the peer's word: still well under the bound.
#[test]
fn parent_death_is_seen_without_futex_waitv() {
    let _s = serial();
    let _w = Watchdog::new("no futex_waitv", Duration::from_secs(300));
    for s in [WaitStrategy::Block, WaitStrategy::Adaptive] {
        parent_death_case_with("none", Transport::Shm, s, Op::Recv, true);
        parent_death_case_with("none", Transport::Shm, s, Op::Send, true);
    }
}

fn parent_death_behind(wrapper: &str) {
    for t in [Transport::Shm, Transport::Fifo] {
        parent_death_case(wrapper, t, WaitStrategy::Adaptive, Op::Recv);
    }
}

#[test]
fn parent_death_behind_wrappers_is_seen_at_once() {
    let _s = serial();
    let _w = Watchdog::new("parent death behind wrappers", Duration::from_secs(300));
    for wrapper in WRAPPERS {
        parent_death_behind(wrapper);
    }
}

#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_parent_death_in_a_pid_namespace_is_seen_at_once() {
    require_pid_namespace();
    let _s = serial();
    let _w = Watchdog::new("parent death in a PID namespace", Duration::from_secs(300));
    parent_death_behind("unshare");
}

// ---------------------------------------------------------------------------
// No false reports: a live parent behind a wrapper, with long idle stretches.
// ---------------------------------------------------------------------------

fn live_parent_never_reported_dead(wrapper: &str) {
    for t in [Transport::Shm, Transport::Fifo] {
        for s in [WaitStrategy::Block, WaitStrategy::Adaptive] {
            let mut child = spawner(wrapper, "echo", t, s).spawn().unwrap();
            let (mut tx, mut rx) = child.raw_channel("c").unwrap();
            for round in 0..4u8 {
                // Longer than the old 50 ms getppid poll.
                std::thread::sleep(Duration::from_millis(150));
                tx.send(&[round]).unwrap();
                let reply = rx
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("{wrapper} {t} {s:?} round {round}: {e:?}"));
                assert_eq!(&*reply, &[round]);
            }
            drop((tx, rx));
            let status = child.wait().unwrap();
            assert!(status.success(), "{wrapper} {t} {s:?}: child {status}");
        }
    }
}

#[test]
fn a_live_parent_behind_a_wrapper_is_never_reported_dead() {
    let _s = serial();
    let _w = Watchdog::new("no false reports", Duration::from_secs(300));
    for wrapper in WRAPPERS {
        live_parent_never_reported_dead(wrapper);
    }
}

#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_a_live_parent_in_a_pid_namespace_is_never_reported_dead() {
    require_pid_namespace();
    let _s = serial();
    let _w = Watchdog::new("no false reports, PID namespace", Duration::from_secs(300));
    live_parent_never_reported_dead("unshare");
}

fn echo_role(conn: remora::Connection) {
    let (mut tx, mut rx) = conn.raw_channel("c").unwrap();
    loop {
        let m = match rx.recv() {
            Ok(m) => m.to_vec(),
            Err(RecvError::Disconnected) => return,
            Err(e) => panic!("echo child: {e:?} while the parent lives"),
        };
        tx.send(&m).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Segment API peers (no spawner, no pidfd): both directions.
// ---------------------------------------------------------------------------

/// Kills process `pid` (after the survivor has settled into its wait) while
/// this thread waits in `op` on `tx`/`rx`; checks that every committed
/// message arrived first and records the detection time in `case`.
fn kill_and_watch(pid: u32, tx: &mut RawSender, rx: &mut RawReceiver, op: Op, case: &mut Case) {
    if matches!(op, Op::Send | Op::TrySend) {
        // Fill the ring so that the wait is a wait for room.
        while tx.try_send(&[7; 64]).is_ok() {}
    }
    let killer = sigkill_later(pid);
    let (received, seen) = wait_for_death(tx, rx, op);
    let killed = killer.join().unwrap();
    if !matches!(op, Op::Send | Op::TrySend) {
        assert_eq!(received, COMMITTED, "{}: lost messages", case.label);
    }
    case.record(killed, seen);
}

/// SIGKILLs `pid` after [`settle_time`], on a thread of its own; the thread
/// returns when it sent the signal (CLOCK_MONOTONIC ns).
fn sigkill_later(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        std::thread::sleep(settle_time());
        let at = mono_ns();
        sigkill(pid);
        at
    })
}

/// The test creates a segment, a plain `Command` child opens it, commits
/// messages and idles; the test kills it and waits in `op`.
fn segment_opener_death(s: WaitStrategy, op: Op) {
    let mut case = Case::new(format!("Segment::open side dies: {s:?} {op:?}"));
    for _ in 0..kills() {
        let seg =
            Segment::create(&[ChannelConfig::new("c").capacity(4096).wait_strategy(s)]).unwrap();
        let (mut tx, mut rx) = seg.raw_channel("c").unwrap();
        let mut opener = self_command("segment_opener")
            .env("LV_SEGMENT", seg.name())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = StdoutLines::new(opener.stdout.take().unwrap());
        let opener = common::guard(opener);
        lines.wait_for("OPENER_READY", Duration::from_secs(20));
        kill_and_watch(opener.id(), &mut tx, &mut rx, op, &mut case);
        drop(opener);
    }
    case.check();
}

fn segment_opener_role() {
    let seg = Segment::open(&std::env::var("LV_SEGMENT").unwrap()).unwrap();
    let (mut tx, _rx) = seg.raw_channel("c").unwrap();
    for i in 0..COMMITTED {
        tx.send(format!("m{i}").as_bytes()).unwrap();
    }
    println!("OPENER_READY");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A middle process creates a segment and commits messages; the test opens
/// it here, waits in `op`, and kills the creator.
fn segment_creator_death(s: WaitStrategy, op: Op) {
    let mut case = Case::new(format!("Segment::create side dies: {s:?} {op:?}"));
    for _ in 0..kills() {
        let mut creator = self_command("segment_creator")
            .env("LV_STRATEGY", format!("{s:?}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = StdoutLines::new(creator.stdout.take().unwrap());
        let mut stdin = creator.stdin.take().unwrap();
        let creator = common::guard(creator);
        let line = lines.wait_for("CREATED", Duration::from_secs(20));
        let name = line.split_whitespace().nth(1).unwrap().to_owned();
        let seg = Segment::open(&name).unwrap();
        let (mut tx, mut rx) = seg.raw_channel("c").unwrap();
        // Tell the creator we are attached so it can unlink the name.
        stdin.write_all(b"x").unwrap();
        lines.wait_for("COMMITTED", Duration::from_secs(20));
        kill_and_watch(creator.id(), &mut tx, &mut rx, op, &mut case);
        drop(creator);
    }
    case.check();
}

fn segment_creator_role() {
    let s = strategy(&std::env::var("LV_STRATEGY").unwrap());
    let seg = Segment::create(&[ChannelConfig::new("c").capacity(4096).wait_strategy(s)]).unwrap();
    let (mut tx, _rx) = seg.raw_channel("c").unwrap();
    println!("CREATED {}", seg.name());
    let mut byte = [0u8; 1];
    std::io::stdin().read_exact(&mut byte).unwrap();
    seg.unlink().unwrap();
    for i in 0..COMMITTED {
        tx.send(format!("m{i}").as_bytes()).unwrap();
    }
    println!("COMMITTED");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A peer that truncates its own segment (so the kernel cannot read the
/// liveness word there) must not hide its creator's death from the
/// creator's other peers. Regression: with one robust list per process the
/// kernel's walk stopped at the unreadable word, and an opener of an
/// earlier segment waited out its whole timeout.
#[test]
fn a_truncated_sibling_segment_does_not_hide_the_creators_death() {
    let _s = serial();
    let _w = Watchdog::new("truncated sibling", Duration::from_secs(120));
    let mut creator = self_command("two_segments")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = StdoutLines::new(creator.stdout.take().unwrap());
    let creator = common::guard(creator);
    let line = lines.wait_for("SEGMENTS", Duration::from_secs(20));
    let mut names = line.split_whitespace().skip(1);
    let (first, second) = (names.next().unwrap(), names.next().unwrap());
    // We attach to the first (older) segment; the second's "peer" shrinks
    // it to nothing.
    let seg = Segment::open(first).unwrap();
    let (_tx, mut rx) = seg.raw_channel("c").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{second}"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let killer = sigkill_later(creator.id());
    let got = rx.recv_timeout(Duration::from_secs(10)).map(drop);
    let seen = mono_ns();
    let killed = killer.join().unwrap();
    drop(creator);
    let _ = std::fs::remove_file(format!("/dev/shm{second}"));
    assert_eq!(got, Err(RecvError::Disconnected));
    let took = Duration::from_nanos(seen.saturating_sub(killed));
    println!("creator death behind a truncated sibling seen after {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

fn two_segments_role() {
    let first = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let second = Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    println!("SEGMENTS {} {}", first.name(), second.name());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn segment_peer_death_is_seen_at_once_both_ways() {
    let _s = serial();
    let _w = Watchdog::new("segment peer death", Duration::from_secs(300));
    for s in [
        WaitStrategy::Block,
        WaitStrategy::Adaptive,
        WaitStrategy::Spin,
    ] {
        for op in [Op::Recv, Op::TryRecv, Op::Send] {
            segment_opener_death(s, op);
            segment_creator_death(s, op);
        }
    }
    assert!(
        common::remora_segments().is_empty(),
        "segment left in /dev/shm"
    );
}

// ---------------------------------------------------------------------------
// Stale sweeps are namespace-proof.
// ---------------------------------------------------------------------------

/// A sweep run inside another PID namespace, where our pid means nothing
/// (`kill(pid, 0)` says "no such process"), must leave our live segment
/// alone.
#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_a_sweep_in_another_pid_namespace_spares_live_objects() {
    require_pid_namespace();
    let _s = serial();
    let _w = Watchdog::new("namespace-proof sweep", Duration::from_secs(120));
    let seg = Segment::create(&[ChannelConfig::new("c")]).unwrap();
    let seg_file = format!("/dev/shm{}", seg.name());
    let me = self_args();
    let status = Command::new("unshare")
        .args(["--pid", "--fork"])
        .args(&me)
        .env(common::ROLE, "sweeper")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "sweeper: {status}");
    assert!(
        std::path::Path::new(&seg_file).exists(),
        "a live segment was swept from another PID namespace"
    );
    // And a real leftover is still swept: our segment, once we are "dead"
    // to it (the lock is gone with the last descriptor).
    drop(seg);
    assert!(!std::path::Path::new(&seg_file).exists());
}

/// The sweep takes only segments whose creators promise a lock: a live
/// segment of an older remora (no lock) is left alone; an unlocked one of
/// a locking version (3, the first; 4, the current) is swept.
#[test]
fn the_sweep_leaves_older_versions_alone() {
    let _s = serial();
    // A name in our pattern, with a pid nobody has.
    let shm_file = format!("/dev/shm/remora-999999999-{:032x}", mono_ns());
    let mut header = Vec::new();
    header.extend_from_slice(b"REMORA\x00\x01");
    header.extend_from_slice(&1u32.to_le_bytes()); // layout version 1
    header.resize(4096, 0);
    std::fs::write(&shm_file, &header).unwrap();
    let sweep = || drop(Segment::create(&[ChannelConfig::new("c")]).unwrap());
    sweep();
    let survived = std::path::Path::new(&shm_file).exists();
    // Now make it a locking version: unlocked, hence abandoned.
    let mut swept = Vec::new();
    for version in [3u32, 4] {
        header[8..12].copy_from_slice(&version.to_le_bytes());
        std::fs::write(&shm_file, &header).unwrap();
        sweep();
        swept.push(!std::path::Path::new(&shm_file).exists());
    }
    let _ = std::fs::remove_file(&shm_file);
    assert!(survived, "an older version's segment was swept");
    assert_eq!(
        swept,
        [true, true],
        "an abandoned version 3 / 4 segment was not swept"
    );
}

/// Creates a segment (which sweeps first), then exits.
fn sweeper_role() {
    let seg = Segment::create(&[ChannelConfig::new("c")]).unwrap();
    drop(seg);
}

// ---------------------------------------------------------------------------
// The re-executed children.
// ---------------------------------------------------------------------------

#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("liveness child", Duration::from_secs(120));
    match role.as_str() {
        "middle" => middle_role(),
        "segment_opener" => segment_opener_role(),
        "segment_creator" => segment_creator_role(),
        "sweeper" => sweeper_role(),
        "two_segments" => two_segments_role(),
        _ => {
            let conn = remora::connect().unwrap();
            match role.as_str() {
                "committer" => child_role_committer(conn),
                "leaf" => leaf_role(conn),
                "echo" => echo_role(conn),
                other => panic!("unknown role {other}"),
            }
        }
    }
}
