//! Channels opened at run time between a parent and the child it spawned
//! (`Child::open_channel` / `Connection::accept_channel` and the other way
//! round): both directions, typed and raw, capacities, refusals, timeouts,
//! death on either side, a wrapper that closes inherited descriptors (the
//! listener fallback), hostile children on the control socket, and a leak
//! check.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::service::memfd_mappings;
use common::{KillOnDrop, Watchdog};
use remora::{
    ChannelConfig, OpenedChannel, ReceiveMode, RecvError, SendError, ServiceError, Spawner,
    WaitStrategy,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// One cross-process test at a time (2 cores).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const ENTRY: [&str; 4] = common::CHILD_ENTRY;

/// What a run-time channel looks like in these tests.
fn config(name: &str) -> ChannelConfig {
    ChannelConfig::new(name)
        .capacity(1 << 16)
        .wait_strategy(WaitStrategy::Block)
}

fn spawner(role: &str) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .channel_with(
            ChannelConfig::new("c")
                .capacity(4096)
                .wait_strategy(WaitStrategy::Block),
        );
    s
}

fn spawn(role: &str) -> KillOnDrop {
    KillOnDrop(spawner(role).spawn().unwrap())
}

/// Round trips on the first channel "c" (the child echoes it).
fn first_channel_works(child: &remora::Child) {
    let (mut tx, mut rx) = child.raw_channel("c").unwrap();
    for i in 0..20u32 {
        tx.send(&i.to_le_bytes()).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(&*got, &i.to_le_bytes());
    }
}

/// `n + 1` for every `n` (typed ends).
fn typed_round_trip(tx: &mut remora::Sender<u64>, rx: &mut remora::Receiver<u64>, n: u64) {
    tx.send(&n).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got.to_native(), n + 1);
}

fn raw_round_trip(tx: &mut remora::RawSender, rx: &mut remora::RawReceiver, len: usize) {
    let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    tx.send(&msg).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(&*got, &msg[..]);
}

fn disconnected<T: std::fmt::Debug>(r: Result<T, ServiceError>) -> bool {
    matches!(r, Err(ServiceError::Disconnected))
}

#[test]
fn parent_opens_child_accepts_typed_and_raw() {
    let _s = serial();
    let _w = Watchdog::new("parent opens", Duration::from_secs(60));
    // Not `KillOnDrop`: this `Child` is dropped while its channels live.
    let child = spawner("acceptor").spawn().unwrap();
    let pid = child.id();
    let (mut tx, mut rx) = child.open_channel::<u64, u64>(config("typed")).unwrap();
    assert_eq!(rx.receive_mode(), ReceiveMode::Copy);
    for n in 0..100 {
        typed_round_trip(&mut tx, &mut rx, n);
    }
    let (mut rtx, mut rrx) = child
        .open_raw_channel(config("raw-big").capacity(1 << 20))
        .unwrap();
    assert_eq!(rrx.receive_mode(), ReceiveMode::Copy);
    // Far bigger than the first channel's ring could carry: the run-time
    // channel has its own capacity.
    raw_round_trip(&mut rtx, &mut rrx, 300_000);
    // A small custom capacity is honoured too: 4 KiB carries 2032 bytes.
    let (mut small, _small_rx) = child
        .open_raw_channel(config("raw-small").capacity(4096))
        .unwrap();
    assert!(matches!(
        small.send(&[0u8; 4000]),
        Err(SendError::TooLarge { .. })
    ));
    let (mut t2, mut r2) = child
        .open_channel_timeout::<u64, u64>(config("typed-2"), Duration::from_secs(10))
        .unwrap();
    typed_round_trip(&mut t2, &mut r2, 7);
    first_channel_works(&child);
    // The `Child` may go while run-time channels are in use.
    drop(child);
    for n in 100..110 {
        typed_round_trip(&mut tx, &mut rx, n);
    }
    raw_round_trip(&mut rtx, &mut rrx, 1000);
    // The child exits once every end of ours is gone.
    drop((tx, rx, rtx, rrx, small, _small_rx, t2, r2));
    let mut status = 0;
    // SAFETY: reaping our own child into a local; no other memory.
    let reaped = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    assert_eq!(reaped, pid as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status:#x}"
    );
}

/// The control socket does not depend on the first channels' transport:
/// a child over FIFOs gets run-time channels in sealed memfds all the same.
#[test]
fn a_fifo_child_has_run_time_channels_too() {
    let _s = serial();
    let _w = Watchdog::new("fifo child", Duration::from_secs(60));
    let child = KillOnDrop(
        spawner("acceptor")
            .transport(remora::Transport::Fifo)
            .spawn()
            .unwrap(),
    );
    assert_eq!(child.transport(), remora::Transport::Fifo);
    let (mut tx, mut rx) = child.open_channel::<u64, u64>(config("typed")).unwrap();
    typed_round_trip(&mut tx, &mut rx, 3);
    first_channel_works(&child);
}

#[test]
fn child_opens_parent_accepts() {
    let _s = serial();
    let _w = Watchdog::new("child opens", Duration::from_secs(60));
    let mut child = spawn("opener");
    let opened = child.accept_channel().unwrap();
    assert_eq!(opened.name(), "up");
    let (mut tx, mut rx) = opened.channel::<u64, u64>().unwrap();
    assert_eq!(rx.receive_mode(), ReceiveMode::Copy);
    for n in 0..50 {
        typed_round_trip(&mut tx, &mut rx, n);
    }
    let opened = child
        .accept_channel_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(opened.name(), "raw-up");
    let (mut rtx, mut rrx) = opened.raw_channel().unwrap();
    raw_round_trip(&mut rtx, &mut rrx, 100_000);
    first_channel_works(&child);
    // The child exits 0 once our ends go (and checked its receivers read
    // in place).
    drop((tx, rx, rtx, rrx));
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.expect("the child exits").success());
}

#[test]
fn refusals_are_errors() {
    let _s = serial();
    let _w = Watchdog::new("refusals", Duration::from_secs(60));
    let child = spawn("limited"); // takes one run-time channel
    let _a = child.open_raw_channel(config("a")).unwrap();
    match child.open_raw_channel(config("b")) {
        Err(ServiceError::ChannelRefused { reason }) => assert_eq!(reason, "limit"),
        other => panic!("{other:?}"),
    }
    // Names are refused here before anything is sent: a run-time one...
    match child.open_raw_channel(config("a")) {
        Err(ServiceError::ChannelRefused { reason }) => assert_eq!(reason, "duplicate name"),
        other => panic!("{other:?}"),
    }
    // ... and a first channel's.
    match child.open_raw_channel(config("c")) {
        Err(ServiceError::ChannelRefused { reason }) => assert_eq!(reason, "duplicate name"),
        other => panic!("{other:?}"),
    }
    // An invalid config is a segment error.
    assert!(matches!(
        child.open_raw_channel(config("bad").capacity(100)),
        Err(ServiceError::Segment(_))
    ));
    // The parent's own limit: it refuses the child's second open.
    let mut child = spawn("opener");
    child.set_channel_limit(1);
    let up = child.accept_channel().unwrap();
    let (mut tx, mut rx) = up.channel::<u64, u64>().unwrap();
    typed_round_trip(&mut tx, &mut rx, 1);
    drop((tx, rx));
    // The child's open of "raw-up" is refused inside this wait.
    let r = child.accept_channel_timeout(Duration::from_secs(2));
    assert!(
        matches!(r, Err(ServiceError::Timeout | ServiceError::Disconnected)),
        "{r:?}"
    );
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
    // Exit code 3: the opener saw `ChannelRefused { reason: "limit" }`.
    assert_eq!(status.expect("the child exits").code(), Some(3));
}

#[test]
fn timeouts() {
    let _s = serial();
    let _w = Watchdog::new("timeouts", Duration::from_secs(60));
    // A child that never connects: the rendezvous itself times out.
    let never = spawn("never");
    let start = Instant::now();
    let r = never.open_channel_timeout::<u64, u64>(config("x"), Duration::from_millis(200));
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(matches!(never.try_accept_channel(), Ok(None)));
    let r = never.accept_channel_timeout(Duration::from_millis(100));
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
    // A child that connects but never accepts nor opens.
    let idle = spawn("idle");
    first_channel_works(&idle);
    let r = idle.open_channel_timeout::<u64, u64>(config("x"), Duration::from_millis(200));
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
    let r = idle.accept_channel_timeout(Duration::from_millis(200));
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
    assert!(matches!(idle.try_accept_channel(), Ok(None)));
    // The name of an open that timed out is free again.
    let r = idle.open_channel_timeout::<u64, u64>(config("x"), Duration::from_millis(50));
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
}

/// Runs `call` on another thread while the child is killed; it must
/// return `Disconnected` within 10 s.
fn dies_during(
    child: &KillOnDrop,
    call: impl FnOnce(&remora::Child) -> Result<(), ServiceError> + Send,
) {
    let pid = child.id();
    let r = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| call(child));
        std::thread::sleep(Duration::from_millis(200));
        let killed = Instant::now();
        common::signal(pid, libc::SIGKILL);
        let r = waiter.join().unwrap();
        assert!(killed.elapsed() < Duration::from_secs(10));
        r
    });
    assert!(matches!(r, Err(ServiceError::Disconnected)), "{r:?}");
}

#[test]
fn death_during_an_open_or_accept_is_disconnected() {
    let _s = serial();
    let _w = Watchdog::new("death during open", Duration::from_secs(60));
    // "idle" connected (its socket hangs up), "never" did not (its pidfd
    // tells).
    for role in ["idle", "never"] {
        let child = spawn(role);
        dies_during(&child, |c| {
            c.open_channel::<u64, u64>(config("x")).map(drop)
        });
        let child = spawn(role);
        dies_during(&child, |c| c.accept_channel().map(drop));
        let child = spawn(role);
        dies_during(&child, |c| c.open_raw_channel(config("x")).map(drop));
    }
}

#[test]
fn kill_9_reaches_run_time_channel_ends() {
    let _s = serial();
    let _w = Watchdog::new("kill -9", Duration::from_secs(60));
    // A channel the parent opened (the parent created its segment) ...
    let mut child = spawn("acceptor");
    let (mut tx, mut rx) = child.open_raw_channel(config("mine")).unwrap();
    raw_round_trip(&mut tx, &mut rx, 10);
    child.kill().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
        RecvError::Disconnected
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while tx.send(b"x") != Err(SendError::Disconnected) {
        assert!(Instant::now() < deadline, "send never saw the death");
    }
    assert!(disconnected(
        child.accept_channel_timeout(Duration::from_secs(10))
    ));
    // ... and one the child opened (the child created it, we claimed it).
    let mut child = spawn("opener");
    let (mut tx, mut rx) = child
        .accept_channel()
        .unwrap()
        .channel::<u64, u64>()
        .unwrap();
    typed_round_trip(&mut tx, &mut rx, 1);
    child.kill().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
        RecvError::Disconnected
    );
}

/// The parent dies while its child waits in `accept_channel`: the child's
/// call returns `Disconnected` (a middle process is the parent, and is
/// killed).
#[test]
fn parent_death_reaches_the_child() {
    let _s = serial();
    let _w = Watchdog::new("parent death", Duration::from_secs(60));
    // "middle": the parent never made a run-time call (the child's hello
    // is still unread: the kernel resets the socket); "middle_waiting":
    // it waits in `accept_channel` (it read the hello: a plain hang-up).
    for role in ["middle", "middle_waiting"] {
        let (middle, lines) = common::spawn_reporting(role);
        lines.wait_for("ACCEPTING", Duration::from_secs(20));
        if role == "middle_waiting" {
            lines.wait_for("MIDDLE_LINKED", Duration::from_secs(20));
        }
        middle.kill();
        lines.wait_for("ACCEPT_DISCONNECTED", Duration::from_secs(10));
    }
}

/// A wrapper that closes every inherited descriptor above 2 (as `sudo`
/// does): the child reaches the parent's listener instead, with its token.
#[test]
fn a_wrapper_that_closes_descriptors_falls_back_to_the_listener() {
    let _s = serial();
    let _w = Watchdog::new("closer", Duration::from_secs(60));
    let mut child = spawn("closer");
    let (mut tx, mut rx) = child
        .open_channel_timeout::<u64, u64>(config("typed"), Duration::from_secs(20))
        .unwrap();
    typed_round_trip(&mut tx, &mut rx, 5);
    first_channel_works(&child);
    drop((tx, rx));
    child.kill().unwrap();
    // The same with strangers of our uid on the listener first (fewer
    // than its backlog): silent ones, ones with a wrong token, ones
    // sending garbage. None of them stalls or fools the parent, though it
    // keeps only 8 waiting for a hello at a time.
    let child = spawn("closer_slow");
    let name = control_listener(child.id());
    let mut strangers = Vec::new();
    for i in 0..12 {
        let sock = connect_abstract(&name).expect("the listener is there");
        match i % 3 {
            0 => {}
            1 => send_raw(&sock, &hello([0x11; 16])),
            _ => send_raw(&sock, b"not a hello at all"),
        }
        strangers.push(sock);
    }
    let start = Instant::now();
    let (mut tx, mut rx) = child
        .open_channel_timeout::<u64, u64>(config("typed"), Duration::from_secs(20))
        .unwrap();
    typed_round_trip(&mut tx, &mut rx, 9);
    assert!(start.elapsed() < Duration::from_secs(20));
    // Resolved: the listener is gone (the child it served still runs).
    assert_eq!(control_listeners(), 0);
}

/// The child (behind a descriptor-closing wrapper) said hello on the
/// listener, then more silent connections of our uid than the parent keeps
/// waiting came in behind it, all before the parent's first run-time call:
/// the child's connection is not pushed out.
#[test]
fn a_flood_behind_the_childs_hello_does_not_push_it_out() {
    let _s = serial();
    let _w = Watchdog::new("flood", Duration::from_secs(60));
    let child = spawn("closer_announcer");
    let name = control_listener(child.id());
    let (_tx, mut rx) = child.raw_channel("c").unwrap();
    // The child has connected and said hello (in `connect()`).
    rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let strangers: Vec<_> = (0..12)
        .map(|_| connect_abstract(&name).expect("the listener is there"))
        .collect();
    let (mut tx, mut rx) = child
        .open_channel_timeout::<u64, u64>(config("typed"), Duration::from_secs(10))
        .unwrap();
    typed_round_trip(&mut tx, &mut rx, 4);
    drop(strangers);
}

/// The control socket is best effort: a spawn whose socketpair fails (a
/// seccomp filter makes remora's `EMFILE`, in a middle process) still starts
/// the child, and run-time calls on both sides are `Disconnected`.
#[test]
fn a_spawn_without_a_control_socket_still_works() {
    let _s = serial();
    let _w = Watchdog::new("no socketpair", Duration::from_secs(60));
    let middle = common::self_command("no_socketpair_parent")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    common::guard(middle).wait_success(Duration::from_secs(40));
}

/// Garbage from the child where its hello belongs: the parent's call is a
/// protocol error (no panic), and the first channels keep working.
#[test]
fn a_child_sending_garbage_on_the_control_socket() {
    let _s = serial();
    let _w = Watchdog::new("garbage", Duration::from_secs(60));
    let child = spawn("garbage_hello");
    let r = child.open_channel_timeout::<u64, u64>(config("x"), Duration::from_secs(10));
    assert!(matches!(r, Err(ServiceError::Protocol { .. })), "{r:?}");
    let r = child.accept_channel_timeout(Duration::from_secs(1));
    assert!(matches!(r, Err(ServiceError::Protocol { .. })), "{r:?}");
    first_channel_works(&child);
    // A good hello, then garbage: the control channel closes.
    let child = spawn("garbage_after_hello");
    let r = child.open_channel_timeout::<u64, u64>(config("x"), Duration::from_secs(10));
    assert!(disconnected(r.map(drop)));
    assert!(disconnected(child.try_accept_channel().map(drop)));
    first_channel_works(&child);
    // An `open` carrying a descriptor that is no sealed memfd (a pipe):
    // refused (the child checks the answer), and the wait goes on.
    let mut child = spawn("bad_segment");
    let r = child.accept_channel_timeout(Duration::from_secs(1));
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
    first_channel_works(&child);
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.expect("the child exits").success());
}

#[test]
fn nothing_leaks() {
    let _s = serial();
    let _w = Watchdog::new("leaks", Duration::from_secs(120));
    // Warm up lazily created state (the sentinel thread, ...).
    {
        let mut child = spawn("acceptor");
        let (mut tx, mut rx) = child.open_raw_channel(config("w")).unwrap();
        raw_round_trip(&mut tx, &mut rx, 10);
        drop((tx, rx));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let fds = common::open_fd_count();
    let maps = memfd_mappings();
    for i in 0..12 {
        // The parent opens (over the inherited socket, or the listener
        // behind a descriptor-closing wrapper), the child opens, or no
        // run-time call is made at all.
        let role = ["acceptor", "opener", "closer", "idle"][i as usize % 4];
        let mut child = spawn(role);
        match role {
            "acceptor" | "closer" => {
                let (mut tx, mut rx) = child.open_channel::<u64, u64>(config("t")).unwrap();
                typed_round_trip(&mut tx, &mut rx, i);
                let (mut rtx, mut rrx) = child.open_raw_channel(config("r")).unwrap();
                raw_round_trip(&mut rtx, &mut rrx, 100);
            }
            "opener" => {
                let opened = child.accept_channel().unwrap();
                let (mut tx, mut rx) = opened.channel::<u64, u64>().unwrap();
                typed_round_trip(&mut tx, &mut rx, i);
            }
            _ => first_channel_works(&child),
        }
        if i % 3 == 0 {
            child.kill().unwrap();
        }
        drop(child);
    }
    assert_eq!(control_listeners(), 0, "a listener outlived its Child");
    assert_eq!(common::open_fd_count(), fds);
    assert_eq!(memfd_mappings(), maps);
    assert!(common::remora_segments().is_empty());
    assert!(common::remora_tmp_entries().is_empty());
}

/// Kills process `pid` (not our child: a grandchild) on drop.
struct KillPid(i32);

impl Drop for KillPid {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory preconditions. The process was
        // alive a moment ago (a recycled pid is the small risk any
        // cleanup of a grandchild takes).
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// The parent's listener is gone (its `Child` dropped, its process
/// alive), the child's inherited socket was closed by a wrapper, and a
/// process of the same uid but another pid has bound the freed abstract
/// name: the child sends it nothing (no hello, no token) and its run-time
/// calls are `Disconnected`.
#[test]
fn a_squatter_on_the_freed_listener_name_gets_nothing() {
    use std::io::Write;
    let _s = serial();
    let _w = Watchdog::new("squatter", Duration::from_secs(60));
    let mut middle = common::self_command("squat_middle")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut go = middle.stdin.take().unwrap();
    let lines = common::StdoutLines::new(middle.stdout.take().unwrap());
    let middle = common::guard(middle);
    let line = lines.wait_for("GATED_CHILD", Duration::from_secs(20));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let _gated = KillPid(fields[1].parse().unwrap());
    let name = fields[2].to_owned();
    lines.wait_for("DROPPED", Duration::from_secs(20));
    // The parent's listener is closed: the name is free for anyone.
    let squatter = listen_abstract(&name).expect("the freed name binds");
    // The wrapped child (stdin inherited through the middle) connects now.
    writeln!(go, "GO").unwrap();
    let said = lines.wait_for("GATED_", Duration::from_secs(20));
    // At most a connection that hung up without a word reached us.
    while let Some(conn) = accept_nonblocking(&squatter) {
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&conn),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert!(
            n <= 0,
            "the squatter received {n} bytes: {:?}",
            &buf[..n as usize]
        );
    }
    assert_eq!(said, "GATED_DISCONNECTED");
    middle.kill();
}

/// The child started a process (inheriting its control socket, not yet
/// close-on-exec) before it called `connect()`, then exited: that process
/// keeps the socket from hanging up, and the parent sees the death through
/// the child's pidfd.
#[test]
fn the_childs_death_is_seen_while_another_process_holds_its_socket() {
    let _s = serial();
    let _w = Watchdog::new("held socket", Duration::from_secs(60));
    let mut child = spawn("forker");
    let (_tx, mut rx) = child.raw_channel("c").unwrap();
    let holder = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let _holder = KillPid(i32::from_le_bytes(holder[..4].try_into().unwrap()));
    // The child exits now; the holder lives 60 s: only the pidfd can tell.
    let r = child.accept_channel_timeout(Duration::from_secs(10));
    assert!(disconnected(r.map(drop)));
    let r = child.open_channel_timeout::<u64, u64>(config("x"), Duration::from_secs(10));
    assert!(disconnected(r.map(drop)));
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.expect("the child exits").success());
}

/// A wrapper that outlives the child (`sh -c 'app; ...'`) holds a copy of
/// the child's control socket and is the process the pidfd watches: the
/// child's death is seen through the liveness word of the segment it
/// attached to.
#[test]
fn a_wrapper_that_outlives_the_child_does_not_hide_its_death() {
    let _s = serial();
    let _w = Watchdog::new("outliving wrapper", Duration::from_secs(60));
    let exe = std::env::current_exe().unwrap();
    let mut spawner = Spawner::new("sh");
    // After the app exits, the wrapper becomes `sleep` (same pid), so the
    // guard below kills it.
    spawner
        .args(["-c", "\"$0\" \"$@\"; exec sleep 30"])
        .arg(&exe)
        .args(ENTRY)
        .env(common::ROLE, "brief")
        .stdin(Stdio::null())
        .channel_with(
            ChannelConfig::new("c")
                .capacity(4096)
                .wait_strategy(WaitStrategy::Block),
        );
    let child = KillOnDrop(spawner.spawn().unwrap());
    let (mut tx, mut rx) = child.raw_channel("c").unwrap();
    tx.send(b"ping").unwrap();
    assert_eq!(&*rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"ping");
    // The app exits after its echo; the first channel sees it at once.
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Disconnected)
    ));
    let start = Instant::now();
    let r = child.accept_channel_timeout(Duration::from_secs(10));
    assert!(
        matches!(r, Err(ServiceError::Disconnected)),
        "the wrapper hid the child's death: {:?}",
        r.map(drop)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// The same the other way round: the parent (a middle process) dies while
/// a process it forked holds a copy of its end of the child's socket; the
/// child's `accept_channel` sees the death through the parent's pidfd.
#[test]
fn the_parents_death_is_seen_while_another_process_holds_its_socket() {
    let _s = serial();
    let _w = Watchdog::new("held parent socket", Duration::from_secs(60));
    let (middle, lines) = common::spawn_reporting("middle_forked");
    let line = lines.wait_for("HOLDER", Duration::from_secs(20));
    let _holder = KillPid(line.split_whitespace().nth(1).unwrap().parse().unwrap());
    lines.wait_for("ACCEPTING", Duration::from_secs(20));
    middle.kill();
    // The child waits up to 30 s; its parent's death must end it first.
    lines.wait_for("ACCEPT_DISCONNECTED", Duration::from_secs(20));
}

/// A child whose `connect()` fails (a bad `REMORA_CHANNEL`) still took
/// its control socket: no grandchild can inherit it.
#[test]
fn a_failed_connect_leaves_no_inheritable_control_socket() {
    let _s = serial();
    let _w = Watchdog::new("failed connect", Duration::from_secs(60));
    let mut child = spawn("wrap_bad_channel");
    let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.expect("the child exits").success());
}

/// Without `pidfd_open` (a seccomp filter makes it `ENOSYS`, in a middle
/// process), a child that exits before it connects is seen gone through
/// `waitid`: the rendezvous returns `Disconnected`, not `Timeout`.
#[test]
fn without_pidfds_a_child_that_never_connects_is_seen_gone() {
    let _s = serial();
    let _w = Watchdog::new("no pidfd", Duration::from_secs(60));
    let middle = common::self_command("no_pidfd_parent")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    common::guard(middle).wait_success(Duration::from_secs(40));
}

// ---------------------------------------------------------------------------
// Raw control-socket helpers (what a hostile process could do).
// ---------------------------------------------------------------------------

/// A hello as the wire format has it, with `token`.
fn hello(token: [u8; 16]) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(b"RMSV");
    m[4..8].copy_from_slice(&1u32.to_le_bytes());
    m[8..12].copy_from_slice(&8u32.to_le_bytes());
    m[16..32].copy_from_slice(&token);
    m
}

fn send_raw(sock: &std::os::fd::OwnedFd, data: &[u8]) {
    use std::os::fd::AsRawFd;
    // SAFETY: `data` is readable for its length.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    assert_eq!(
        n,
        data.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// The `REMORA_CONTROL` fields of this process.
fn control_var() -> (i32, String, [u8; 16]) {
    let v = std::env::var("REMORA_CONTROL").unwrap();
    let parts: Vec<&str> = v.split(':').collect();
    assert_eq!(parts.len(), 7, "{v}");
    let mut token = [0u8; 16];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(&parts[4][2 * i..2 * i + 2], 16).unwrap();
    }
    (parts[0].parse().unwrap(), parts[3].to_owned(), token)
}

/// The listener name in child `pid`'s `REMORA_CONTROL` (read from its
/// environment, as any process of our uid could).
fn control_listener(pid: u32) -> String {
    let mut environ = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/environ"))
        .unwrap()
        .read_to_end(&mut environ)
        .unwrap();
    let var = environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"REMORA_CONTROL="))
        .expect("REMORA_CONTROL in the child's environment");
    let var = String::from_utf8(var.to_vec()).unwrap();
    let name = var.split(':').nth(3).unwrap().to_owned();
    assert!(!name.is_empty(), "{var}");
    name
}

/// Abstract control listeners of this process still bound (from
/// `/proc/net/unix`: listening sockets carry `__SO_ACCEPTCON`, 0x10000, in
/// their flags; connections accepted from them show the same name).
fn control_listeners() -> usize {
    let prefix = format!("@remora-ctl.{}.", std::process::id());
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 7 && f[3] == "00010000" && f[7].starts_with(&prefix))
        .count()
}

/// A `SOCK_SEQPACKET` connection to abstract name `name`.
fn connect_abstract(name: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall; no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path[1..].iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let r = unsafe { libc::connect(fd, (&raw const addr).cast(), len as libc::socklen_t) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// A `SOCK_SEQPACKET` listener (non-blocking) on abstract name `name`.
fn listen_abstract(name: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain syscall; no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path[1..].iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let r = unsafe { libc::bind(fd, (&raw const addr).cast(), len as libc::socklen_t) };
    // SAFETY: plain syscall on our descriptor.
    if r < 0 || unsafe { libc::listen(fd, 16) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// One pending connection on `listener`, if any.
fn accept_nonblocking(listener: &std::os::fd::OwnedFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: null address pointers are allowed.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags,
        )
    };
    // SAFETY: a fresh descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Makes system call `nr` fail with `errno` in this thread and the
/// processes it starts, when its second argument has every bit of
/// `arg1_bits` set (0: always). A seccomp filter; no architecture check: a
/// test on the native ABI only.
fn deny_syscall(nr: libc::c_long, arg1_bits: u32, errno: i32) {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut filter = [
        // seccomp_data.nr is at offset 0 ...
        insn(LD_W_ABS, 0, 0, 0),
        insn(JEQ_K, 0, 4, nr as u32),
        // ... the low half of args[1] at 24 (little-endian).
        insn(LD_W_ABS, 0, 0, 24),
        insn(AND_K, 0, 0, arg1_bits),
        insn(JEQ_K, 0, 1, arg1_bits),
        insn(RET_K, 0, 0, RET_ERRNO | errno as u32),
        insn(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with plain integers.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0);
    // SAFETY: `prog` points at `filter`, both live for the call (the kernel
    // copies the program).
    let r = unsafe { libc::prctl(libc::PR_SET_SECCOMP, 2, &raw const prog, 0, 0) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

// ---------------------------------------------------------------------------
// The child side.
// ---------------------------------------------------------------------------

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    let _w = Watchdog::new("spawn channels child", Duration::from_secs(60));
    match role.as_str() {
        "acceptor" => acceptor(None),
        "limited" => acceptor(Some(1)),
        "opener" => opener(),
        "idle" => {
            let conn = remora::connect().unwrap();
            serve_first(&conn);
            std::thread::sleep(Duration::from_secs(60));
        }
        "never" => std::thread::sleep(Duration::from_secs(60)),
        "closer" | "closer_slow" => {
            if role == "closer_slow" {
                std::thread::sleep(Duration::from_millis(500));
            }
            // SAFETY: close_range has no memory preconditions; nothing in
            // this process uses a descriptor above 2 across the exec below.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            let err = common::self_command("closed_acceptor").exec();
            panic!("exec failed: {err}");
        }
        "closed_acceptor" => {
            // The inherited control socket is gone (the wrapper closed it).
            let (fd, _, _) = control_var();
            // SAFETY: F_GETFD on any number is harmless.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
            acceptor(None);
        }
        "garbage_hello" => {
            let (fd, _, _) = control_var();
            // SAFETY: the inherited socket, borrowed for the send only.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            send_raw(
                &sock.try_clone_to_owned().unwrap(),
                b"garbage where a hello belongs!!",
            );
            let conn = remora::connect().unwrap();
            serve_first(&conn);
            std::thread::sleep(Duration::from_secs(60));
        }
        "garbage_after_hello" => {
            let (fd, _, token) = control_var();
            // SAFETY: the inherited socket, borrowed for the sends only.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let sock = sock.try_clone_to_owned().unwrap();
            send_raw(&sock, &hello(token));
            send_raw(&sock, &[0xff; 32]);
            let conn = remora::connect().unwrap();
            serve_first(&conn);
            std::thread::sleep(Duration::from_secs(60));
        }
        "bad_segment" => {
            let conn = remora::connect().unwrap();
            let first = serve_first(&conn);
            // A bogus open, sent raw on a duplicate of the control socket
            // connect() moved to (no run-time call here pumps it
            // meanwhile). connect() closed the inherited number and holds
            // the fresh socket its hello handed the parent: the one
            // SOCK_SEQPACKET socket in this process.
            let fd = (3..1024)
                .find(|&fd| {
                    let mut kind: libc::c_int = 0;
                    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: `kind` is writable for `len` bytes; on a
                    // number that is not a socket getsockopt just fails.
                    let ok = unsafe {
                        libc::getsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_TYPE,
                            (&raw mut kind).cast(),
                            &mut len,
                        )
                    } == 0;
                    ok && kind == libc::SOCK_SEQPACKET
                })
                .expect("connect() holds a control socket");
            // SAFETY: connect() owns `fd` for the process's life; borrowed
            // for the dup only.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .unwrap();
            send_open_with_pipe(&sock);
            // The parent refuses it as an invalid segment (reason 3).
            let answer = recv_raw(&sock, Duration::from_secs(20));
            assert_eq!(&answer[8..16], &[6, 0, 0, 0, 0xe8, 0x03, 0, 0]);
            assert_eq!(answer[16], 3);
            first.join().unwrap();
        }
        "middle" | "middle_waiting" => {
            let child = spawner("report_acceptor")
                .stdout(Stdio::inherit())
                .spawn()
                .unwrap();
            if role == "middle_waiting" {
                // The child's hello is read within the first slices of
                // this wait; the test kills us in it.
                assert!(matches!(
                    child.accept_channel_timeout(Duration::from_millis(300)),
                    Err(ServiceError::Timeout)
                ));
                println!("MIDDLE_LINKED");
                let _ = child.accept_channel_timeout(Duration::from_secs(60));
            }
            std::thread::sleep(Duration::from_secs(60));
        }
        "report_acceptor" => {
            let conn = remora::connect().unwrap();
            println!("ACCEPTING");
            match conn.accept_channel_timeout(Duration::from_secs(30)) {
                Err(ServiceError::Disconnected) => println!("ACCEPT_DISCONNECTED"),
                other => println!("ACCEPT_OTHER {other:?}"),
            }
        }
        "squat_middle" => {
            let child = spawner("gated")
                .stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .spawn()
                .unwrap();
            // Ends taken keep the first channels attachable.
            let ends = child.raw_channel("c").unwrap();
            let pid = child.id();
            println!("GATED_CHILD {pid} {}", control_listener(pid));
            drop(child);
            println!("DROPPED");
            std::thread::sleep(Duration::from_secs(60));
            drop(ends);
        }
        "gated" => {
            // SAFETY: close_range has no memory preconditions; nothing in
            // this process uses a descriptor above 2 across the exec below.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            let err = common::self_command("gated_child").exec();
            panic!("exec failed: {err}");
        }
        "gated_child" => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let conn = remora::connect().unwrap();
            match conn.accept_channel_timeout(Duration::from_secs(2)) {
                Err(ServiceError::Disconnected) => println!("GATED_DISCONNECTED"),
                other => println!("GATED_OTHER {other:?}"),
            }
        }
        "brief" => {
            // Connects (says hello), echoes one message, exits.
            let conn = remora::connect().unwrap();
            let (mut tx, mut rx) = conn.raw_channel("c").unwrap();
            let msg = rx.recv().unwrap().to_vec();
            tx.send(&msg).unwrap();
        }
        "forker" => {
            // Before `connect()`: the holder inherits the control socket.
            let holder = common::self_command("never")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            let conn = remora::connect().unwrap();
            let (mut tx, _rx) = conn.raw_channel("c").unwrap();
            tx.send(&holder.id().to_le_bytes()).unwrap();
            // Not waited for: the test kills it (it outlives us on purpose).
            std::mem::forget(holder);
        }
        "middle_forked" => {
            let child = spawner("report_acceptor")
                .stdout(Stdio::inherit())
                .spawn()
                .unwrap();
            // SAFETY: the forked copy only calls async-signal-safe
            // functions (sleep, _exit) before it ends.
            let holder = unsafe { libc::fork() };
            if holder == 0 {
                // SAFETY: as above.
                unsafe {
                    libc::sleep(30);
                    libc::_exit(0);
                }
            }
            println!("HOLDER {holder}");
            std::thread::sleep(Duration::from_secs(60));
            drop(child);
        }
        "wrap_bad_channel" => {
            let err = common::self_command("bad_channel")
                .env("REMORA_CHANNEL", "garbage")
                .exec();
            panic!("exec failed: {err}");
        }
        "bad_channel" => {
            let (fd, _, _) = control_var();
            // SAFETY: F_GETFD on any number is harmless.
            let before = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(before >= 0 && before & libc::FD_CLOEXEC == 0, "{before}");
            assert!(remora::connect().is_err());
            // SAFETY: as above.
            let after = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(after == -1 || after & libc::FD_CLOEXEC != 0, "{after}");
        }
        "no_pidfd_parent" => {
            deny_syscall(libc::SYS_pidfd_open, 0, libc::ENOSYS);
            // SAFETY: plain syscall; no pointers.
            let r = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id(), 0) };
            assert_eq!(r, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOSYS)
            );
            let child = Spawner::new("true").channel("c").spawn().unwrap();
            let r = child.open_channel_timeout::<u64, u64>(config("x"), Duration::from_secs(10));
            assert!(disconnected(r.map(drop)));
            let r = child.accept_channel_timeout(Duration::from_secs(10));
            assert!(disconnected(r.map(drop)));
        }
        "closer_announcer" => {
            // SAFETY: as for "closer".
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            let err = common::self_command("announcer").exec();
            panic!("exec failed: {err}");
        }
        "announcer" => {
            let conn = remora::connect().unwrap();
            let (mut tx, _rx) = conn.raw_channel("c").unwrap();
            tx.send(b"connected").unwrap();
            accept_on(&conn);
        }
        "no_socketpair_parent" => {
            // Ours only (non-blocking); std's spawn makes one of its own.
            deny_syscall(
                libc::SYS_socketpair,
                libc::SOCK_NONBLOCK as u32,
                libc::EMFILE,
            );
            // The spawn works without a control socket ...
            let mut child = spawner("acceptor").spawn().unwrap();
            // ... and run-time calls say so.
            let r = child.open_channel_timeout::<u64, u64>(config("x"), Duration::from_secs(10));
            assert!(disconnected(r.map(drop)));
            // The child's too (its acceptor ends on `Disconnected`).
            let status = child.wait_timeout(Duration::from_secs(20)).unwrap();
            assert!(status.expect("the child exits").success());
        }
        other => panic!("unknown role {other}"),
    }
}

/// Echoes the first channel "c" on a thread of its own.
fn serve_first(conn: &remora::Connection) -> std::thread::JoinHandle<()> {
    let (tx, rx) = conn.raw_channel("c").unwrap();
    std::thread::spawn(move || raw_echo(tx, rx))
}

/// One message from `sock`, waiting at most `limit`.
fn recv_raw(sock: &std::os::fd::OwnedFd, limit: Duration) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as i32) };
    assert_eq!(n, 1, "no message within {limit:?}");
    let mut buf = vec![0u8; 64];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert!(n >= 0, "{}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

fn raw_echo(mut tx: remora::RawSender, mut rx: remora::RawReceiver) {
    while let Ok(msg) = rx.recv() {
        let reply = msg.to_vec();
        drop(msg);
        if tx.send(&reply).is_err() {
            break;
        }
    }
}

fn typed_echo(mut tx: remora::Sender<u64>, mut rx: remora::Receiver<u64>) {
    while let Ok(n) = rx.recv() {
        let n = n.to_native();
        if tx.send(&(n + 1)).is_err() {
            break;
        }
    }
}

/// Accepts run-time channels until the parent goes, echoing each on a
/// thread (typed `n + 1` for names starting with "t", raw otherwise); exits
/// once every echo ended.
fn acceptor(limit: Option<usize>) {
    let conn = remora::connect().unwrap();
    serve_first(&conn);
    if let Some(limit) = limit {
        conn.set_channel_limit(limit);
    }
    accept_on(&conn);
}

/// [`acceptor`]'s loop, on `conn`.
fn accept_on(conn: &remora::Connection) {
    let mut echoes = Vec::new();
    loop {
        let opened: OpenedChannel = match conn.accept_channel() {
            Ok(opened) => opened,
            Err(ServiceError::Disconnected) => break,
            Err(e) => panic!("accept: {e:?}"),
        };
        if opened.name().starts_with('t') {
            let (tx, rx) = opened.channel::<u64, u64>().unwrap();
            assert_eq!(rx.receive_mode(), ReceiveMode::InPlace);
            echoes.push(std::thread::spawn(move || typed_echo(tx, rx)));
        } else {
            let (tx, rx) = opened.raw_channel().unwrap();
            assert_eq!(rx.receive_mode(), ReceiveMode::InPlace);
            echoes.push(std::thread::spawn(move || raw_echo(tx, rx)));
        }
    }
    for echo in echoes {
        echo.join().unwrap();
    }
}

/// Opens "up" (typed) and "raw-up" (raw) and echoes both; exits 3 if the
/// second is refused for the parent's limit.
fn opener() {
    let conn = remora::connect().unwrap();
    serve_first(&conn);
    let (tx, rx) = conn.open_channel::<u64, u64>(config("up")).unwrap();
    assert_eq!(rx.receive_mode(), ReceiveMode::InPlace);
    let up = std::thread::spawn(move || typed_echo(tx, rx));
    match conn.open_raw_channel(config("raw-up").capacity(1 << 20)) {
        Ok((tx, rx)) => {
            assert_eq!(rx.receive_mode(), ReceiveMode::InPlace);
            raw_echo(tx, rx);
        }
        Err(ServiceError::ChannelRefused { reason: "limit" }) => {
            up.join().unwrap();
            std::process::exit(3);
        }
        Err(e) => panic!("open raw-up: {e:?}"),
    }
    up.join().unwrap();
}

/// Sends an `open` (id 1000) carrying a pipe instead of a sealed memfd.
fn send_open_with_pipe(sock: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let mut msg = [0u8; 32];
    msg[0..4].copy_from_slice(b"RMSV");
    msg[4..8].copy_from_slice(&1u32.to_le_bytes());
    msg[8..12].copy_from_slice(&4u32.to_le_bytes());
    msg[12..16].copy_from_slice(&1000u32.to_le_bytes());
    msg[16..24].copy_from_slice(&8192u64.to_le_bytes());
    let mut iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: msg.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: `control` holds one header with 4 bytes of data (CMSG_SPACE).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::copy_nonoverlapping(pipe.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), 4);
    }
    // SAFETY: `hdr` points at live `iov` and `control`.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
    assert_eq!(n, 32, "{}", std::io::Error::last_os_error());
}
