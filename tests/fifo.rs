//! FIFO-transport specifics: the real fallback (in a mount namespace where
//! /dev/shm is unusable), `REMORA_TRANSPORT`, malformed frames from a peer
//! that bypasses remora, the hand-over of inherited pipes (a wrapper that
//! closes them, numbers that are not those pipes, a second connect), death
//! before attach, and no descriptor left behind.
//!
//! The behaviour both transports share is in `conformance.rs`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Watchdog, remora_fifo_dirs, role};
use remora::{
    CHANNEL_ENV, ChannelConfig, ConnectError, OpenError, RecvError, SendError, SpawnError, Spawner,
    StreamFault, TRANSPORT_ENV, Transport,
};

/// Records the largest single allocation, to prove that a frame header
/// claiming gigabytes allocates nothing of the sort.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const ENTRY: [&str; 4] = common::CHILD_ENTRY;

/// A spawner that re-executes this test binary in `role`.
fn spawner(role: &str) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    s
}

/// This test binary in `role`, as a plain process.
fn command(role: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

fn wait_success(child: std::process::Child, limit: Duration) {
    common::guard(child).wait_success(limit);
}

fn echo_round_trips(child: &remora::Child, n: u64) {
    let (mut tx, mut rx) = child.channel::<u64, u64>("c").unwrap();
    for i in 0..n {
        tx.send(&i).unwrap();
        assert_eq!(*rx.recv().unwrap(), i + 1);
    }
}

// ---------------------------------------------------------------------------
// The real fallback.
// ---------------------------------------------------------------------------

/// Runs `fallback_inner` in a mount namespace with an unusable /dev/shm.
fn in_namespace_with_dev_shm(options: &str) {
    common::in_dev_shm_namespace(options, "fallback_inner");
    assert!(remora_fifo_dirs().is_empty());
}

#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_auto_falls_back_to_fifo_when_dev_shm_is_read_only() {
    let _s = serial();
    let _w = Watchdog::new("fallback, read-only /dev/shm", Duration::from_secs(90));
    in_namespace_with_dev_shm("ro,size=64k");
}

#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_auto_falls_back_to_fifo_when_dev_shm_is_full() {
    let _s = serial();
    let _w = Watchdog::new("fallback, tiny /dev/shm", Duration::from_secs(90));
    // Room for the segment's name but not its pages: posix_fallocate fails.
    in_namespace_with_dev_shm("size=4k");
}

/// In the namespace: shared memory is unusable, so `Auto` picks FIFOs and
/// works, and a forced `Shm` fails with a clear error.
fn fallback_inner() {
    // The named segment's fallback (a sealed memfd needs no /dev/shm:
    // tests/service_spawn.rs covers that).
    let forced = spawner("echo")
        .channel("c")
        .transport(Transport::Shm)
        .sealed(false)
        .spawn();
    match forced {
        Err(e @ SpawnError::Segment(OpenError::Io { .. })) => {
            eprintln!("forced shm fails as it should: {e}");
        }
        Err(e) => panic!("forced shm failed with an unexpected error: {e}"),
        Ok(_) => panic!("forced shm worked although /dev/shm is unusable"),
    }
    let mut child = KillOnDrop(spawner("echo").channel("c").sealed(false).spawn().unwrap());
    assert_eq!(child.transport(), Transport::Fifo, "Auto did not fall back");
    echo_round_trips(&child, 1000);
    let status = child.wait().unwrap();
    assert!(status.success(), "echo child failed: {status}");
    assert!(remora_fifo_dirs().is_empty());
    eprintln!("Auto fell back to FIFOs and exchanged 1000 round trips");
}

// ---------------------------------------------------------------------------
// REMORA_TRANSPORT.
// ---------------------------------------------------------------------------

#[test]
fn transport_env_applies_only_at_auto() {
    let _s = serial();
    let _w = Watchdog::new("REMORA_TRANSPORT", Duration::from_secs(60));
    for value in ["fifo", "shm", "bogus", ""] {
        let probe = command("env_probe")
            .env(TRANSPORT_ENV, value)
            .env("REMORA_TEST_ENV_VALUE", value)
            .spawn()
            .unwrap();
        wait_success(probe, Duration::from_secs(30));
    }
}

/// Checks what `Auto` and the explicit choices give under the
/// `REMORA_TRANSPORT` this process was started with.
fn env_probe() {
    let value = std::env::var("REMORA_TEST_ENV_VALUE").unwrap();
    let spawn = |t: Transport| Spawner::new("true").channel("c").transport(t).spawn();
    let reap = |mut c: remora::Child| assert!(c.wait().unwrap().success());
    let auto = spawn(Transport::Auto);
    match value.as_str() {
        "fifo" | "shm" | "" => {
            let child = auto.unwrap();
            let want = if value == "fifo" {
                Transport::Fifo
            } else {
                Transport::Shm
            };
            assert_eq!(child.transport(), want, "REMORA_TRANSPORT={value:?}");
            reap(child);
        }
        _ => match auto {
            Err(e @ SpawnError::InvalidTransport(_)) => eprintln!("as expected: {e}"),
            other => panic!("bad REMORA_TRANSPORT accepted: {other:?}"),
        },
    }
    // An explicit choice wins over the variable, even a bad one.
    let shm = spawn(Transport::Shm).unwrap();
    assert_eq!(shm.transport(), Transport::Shm);
    reap(shm);
    let fifo = spawn(Transport::Fifo).unwrap();
    assert_eq!(fifo.transport(), Transport::Fifo);
    reap(fifo);
    assert!(remora_fifo_dirs().is_empty());
}

// ---------------------------------------------------------------------------
// Malformed frames from a peer that writes the pipes directly.
// ---------------------------------------------------------------------------

/// The wire format, as documented in `src/transport/fifo/wire.rs`.
mod wire {
    pub const MSG: u32 = 0x3147_534d; // "MSG1"
    pub const HELLO: u32 = u32::from_le_bytes(*b"HEL1");
    pub const RAW_FINGERPRINT: u64 = 0x5241_5742_5954_4553;

    pub fn header(len: u32, kind: u32) -> Vec<u8> {
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&kind.to_ne_bytes());
        h.extend_from_slice(&[0; 8]);
        h
    }

    pub fn hello(out_fp: u64, in_fp: u64) -> Vec<u8> {
        let mut f = header(16, HELLO);
        f.extend_from_slice(&out_fp.to_ne_bytes());
        f.extend_from_slice(&in_fp.to_ne_bytes());
        f
    }

    /// A message frame with its payload padded to 16.
    pub fn msg(payload: &[u8]) -> Vec<u8> {
        let mut f = header(payload.len() as u32, MSG);
        f.extend_from_slice(payload);
        f.resize(16 + payload.len().div_ceil(16) * 16, 0);
        f
    }
}

/// What the scribbler writes for each case, after waiting for our HELLO.
fn scribble(case: &str) -> Vec<u8> {
    let hello = wire::hello(wire::RAW_FINGERPRINT, wire::RAW_FINGERPRINT);
    let cat = |parts: &[Vec<u8>]| parts.concat();
    match case {
        "oversized" => cat(&[hello, wire::header(0xffff_fff0, wire::MSG)]),
        "bad_kind" => cat(&[hello, wire::msg(b"ok"), wire::header(8, 0xdead_beef)]),
        "truncated" | "truncated_dead" => {
            cat(&[hello, wire::header(1000, wire::MSG), vec![0xab; 100]])
        }
        "no_hello" => wire::msg(b"hi"),
        "hello_len" => wire::header(4000, wire::HELLO),
        "wrong_fingerprint" => cat(&[wire::hello(1, 2), wire::msg(b"never")]),
        other => panic!("unknown case {other}"),
    }
}

/// What our receiver must report for each case.
fn expected(case: &str) -> RecvError {
    match case {
        "oversized" => RecvError::Malformed(StreamFault::BadLength {
            len: 0xffff_fff0,
            max: 2032,
            offset: 32,
        }),
        "bad_kind" => RecvError::Malformed(StreamFault::BadKind {
            kind: 0xdead_beef,
            offset: 64,
        }),
        "truncated" | "truncated_dead" => RecvError::Malformed(StreamFault::Truncated {
            received: 116,
            expected: 1024,
            offset: 32,
        }),
        "no_hello" => RecvError::Malformed(StreamFault::NoHandshake),
        "hello_len" => RecvError::Malformed(StreamFault::BadLength {
            len: 4000,
            max: 16,
            offset: 0,
        }),
        "wrong_fingerprint" => RecvError::TypeMismatch {
            direction: "child-to-parent",
        },
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn malformed_frames_are_errors_not_panics_or_huge_allocations() {
    let _s = serial();
    let _w = Watchdog::new("malformed frames", Duration::from_secs(120));
    for case in [
        "oversized",
        "bad_kind",
        "truncated",
        "truncated_dead",
        "no_hello",
        "hello_len",
        "wrong_fingerprint",
    ] {
        let mut child = KillOnDrop(
            spawner("scribbler")
                .env("REMORA_TEST_CASE", case)
                .channel_with(ChannelConfig::new("c").capacity(4096))
                .transport(Transport::Fifo)
                .spawn()
                .unwrap(),
        );
        let (_tx, mut rx) = child.raw_channel("c").unwrap();
        if case == "bad_kind" {
            let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(&*first, b"ok", "good frames before the bad one arrive");
        }
        LARGEST.store(0, Ordering::Relaxed);
        let got = rx.recv_timeout(Duration::from_secs(30)).map(|m| m.to_vec());
        let largest = LARGEST.load(Ordering::Relaxed);
        eprintln!("{case}: {got:?} (largest allocation meanwhile: {largest} B)");
        assert_eq!(got, Err(expected(case)), "{case}");
        assert!(largest < 1 << 20, "{case}: allocated {largest} bytes");
        // Poisoned: every later call says the same.
        assert_eq!(rx.try_recv().map(|m| m.to_vec()), Err(expected(case)));
        assert_eq!(rx.recv().map(|m| m.to_vec()), Err(expected(case)));
        let status = child.wait().unwrap();
        assert!(status.success(), "{case}: scribbler failed: {status}");
        assert!(remora_fifo_dirs().is_empty(), "{case}: directory left");
    }
}

/// The scribbler: opens its pipe ends by hand (no `connect`, through the
/// parent's `/proc`),
/// waits for the parent's HELLO, writes `scribble(case)`, and exits.
fn scribbler() {
    let case = std::env::var("REMORA_TEST_CASE").unwrap();
    let (mut claim, mut channels) = common::fifo_child_ends();
    let (mut c2p, mut p2c) = channels.remove(0);
    let mut hello = [0u8; 32];
    std::io::Read::read_exact(&mut p2c, &mut hello).unwrap();
    if case != "truncated_dead" {
        // Like `connect`: claim (every end is taken), so the parent drops
        // its copies and sees EOF when we exit. `truncated_dead` does not,
        // so the parent must notice our death through the pidfd instead.
        std::io::Read::read_exact(&mut claim, &mut [0]).unwrap();
    }
    c2p.write_all(&scribble(&case)).unwrap();
}

// ---------------------------------------------------------------------------
// The hand-over.
// ---------------------------------------------------------------------------

fn fifo_spawner(role: &str) -> Spawner {
    let mut s = spawner(role);
    s.channel("c").transport(Transport::Fifo);
    s
}

/// A wrapper that closes every inherited descriptor above 2 (as `sudo`
/// does, the control socket that carries the pipe ends among them) before
/// it runs the child: the child finds its pipe ends through
/// `/proc/<parent>/fd/<n>`, as a sealed segment's child does.
#[test]
fn pipes_survive_a_wrapper_that_closes_descriptors() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, closed fds", Duration::from_secs(60));
    let mut child = KillOnDrop(fifo_spawner("closer").spawn().unwrap());
    echo_round_trips(&child, 100);
    assert!(child.is_attached());
    assert!(child.wait().unwrap().success());
}

/// A `REMORA_CHANNEL` naming a file that is not what it is said to be is
/// refused with `HandOverLost`, never taken: (1) a `memfd:` value naming
/// the inherited control socket's number and identity (the control socket
/// took that number first: no second owner, and it is no regular file);
/// (2) a `pipes:` value whose claim end names a regular file of the
/// parent's (this test binary, open here) with its true identity, taken
/// through `/proc` (the wrapper closed the control socket): not a FIFO.
#[test]
fn a_hand_over_naming_a_non_fifo_is_refused() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, not a fifo", Duration::from_secs(60));
    let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    let meta = exe.metadata().unwrap();
    let file = format!("{}.{}.{}", exe.as_raw_fd(), meta.dev(), meta.ino());
    for case in ["memfd_names_control", "claim_names_file"] {
        let mut child = KillOnDrop(
            fifo_spawner("non_fifo")
                .env("REMORA_TEST_CASE", case)
                .env("REMORA_TEST_FILE", &file)
                .spawn()
                .unwrap(),
        );
        let status = child.wait().unwrap();
        assert!(status.success(), "{case}: the child saw another outcome");
    }
    drop(exe);
}

/// A parent running with stdin, stdout and stderr closed never puts a pipe
/// end at 0-2 (where its next `println!`, or a child inheriting its
/// stdio, would write into a channel): the pipes are moved above 2.
#[test]
fn pipe_ends_stay_above_stdio_in_a_parent_without_stdio() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, no stdio", Duration::from_secs(60));
    wait_success(
        command("stdio_less_parent").spawn().unwrap(),
        Duration::from_secs(30),
    );
}

/// A wrapper that outlives the child (`sh -c 'app; sleep'`) does not hide
/// its death: the pipe ends came over the control socket, so the wrapper
/// never held them. The parent's receiver sees `Disconnected` once the
/// app exits, while the wrapper lives. (With the ends inherited, the
/// wrapper kept the child's write end open: `Timeout`.)
#[test]
fn a_wrapper_that_outlives_the_child_does_not_hide_its_hang_up() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, wrapper outlives", Duration::from_secs(60));
    let mut child = wrapped_echo_once("sh", "\"$0\" \"$@\"; exec sleep 30");
    hang_up_seen(&mut child);
}

/// The `echo_once` child behind `shell -c script` (the script runs
/// `"$0" "$@"`, this test binary), over FIFOs.
fn wrapped_echo_once(shell: &str, script: &str) -> KillOnDrop {
    let mut s = Spawner::new(shell);
    s.arg("-c")
        .arg(script)
        .arg(std::env::current_exe().unwrap())
        .args(ENTRY)
        .env(common::ROLE, "echo_once")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .channel("c")
        .transport(Transport::Fifo);
    KillOnDrop(s.spawn().unwrap())
}

/// A wrapper that keeps the control socket but closes it for the child
/// alone (as Python's `subprocess` does with `close_fds`), then outlives
/// it: the child takes its ends through `/proc`, and the hand-over
/// message, never read, must not keep the pipes open (its descriptors
/// would stay in flight in the wrapper's copy of the socket). The parent
/// drains it once the child has attached.
#[test]
fn a_wrapper_that_closes_the_socket_for_the_child_alone_does_not_hide_its_hang_up() {
    let _s = serial();
    let _w = Watchdog::new(
        "fifo spawn, socket closed for the child",
        Duration::from_secs(60),
    );
    // Runs the child with the control socket's number closed (bash: dash
    // takes no descriptor numbers above 9), then becomes `sleep` holding
    // its own copy.
    let mut child = wrapped_echo_once(
        "bash",
        r#"fd=${REMORA_CONTROL%%:*}; eval "\"\$0\" \"\$@\" $fd>&-"; exec sleep 30"#,
    );
    hang_up_seen(&mut child);
}

/// A helper the child starts before `connect()` (here `cat`, reading the
/// child's stdin) does not hide the child's hang-up (its channel ends
/// dropped while it lives on, so the watch on its death cannot see it):
/// the helper inherited the control socket, not the pipe ends.
#[test]
fn a_helper_started_before_connect_does_not_hide_the_hang_up() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, helper", Duration::from_secs(60));
    let mut child = KillOnDrop(
        fifo_spawner("helper_then_echo")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    hang_up_seen(&mut child);
    assert!(child.try_wait().unwrap().is_none(), "seen by death");
    // Lets the child and the helper go (end of their stdin).
    drop(child.process_mut().stdin.take());
    assert!(child.wait().unwrap().success());
}

/// One echo, then the child hangs up (exits, or drops its ends) while
/// something of its (a wrapper, a helper) lives on: the receiver must see
/// `Disconnected` well within its 10 s timeout.
fn hang_up_seen(child: &mut KillOnDrop) {
    let (mut tx, mut rx) = child.channel::<u64, u64>("c").unwrap();
    tx.send(&1).unwrap();
    assert_eq!(*rx.recv_timeout(Duration::from_secs(20)).unwrap(), 2);
    let start = Instant::now();
    let r = rx.recv_timeout(Duration::from_secs(10)).map(|m| *m);
    assert_eq!(r, Err(RecvError::Disconnected));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// The claim holds across processes: after the child attached, a copy of
/// it re-spawned with its environment (it takes the `/proc` path: the
/// control socket is close-on-exec in the child by then) and a helper it
/// started before `connect()` (it inherited the control socket, whose
/// message the child already received) both get `AlreadyClaimed`, while
/// the parent still keeps its copies (no call here settles them).
#[test]
fn a_second_process_cannot_claim_the_pipes() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, second process", Duration::from_secs(60));
    let mut child = KillOnDrop(fifo_spawner("reclaim").spawn().unwrap());
    let status = child.wait().unwrap();
    assert!(status.success(), "a second process claimed the pipes");
}

/// A hand-over taken through `/proc` (the control socket closed) whose
/// identity is wrong (the inode of one end altered in the variable, or an
/// end named as the parent's stdin: the `/proc` entry is not that pipe) is
/// refused with `HandOverLost`. The child still ends the hand-over, so the
/// parent sees it hang up while it lives on, not only once it is dead.
/// (Ends received on the control socket come from the parent itself and
/// are not checked against the variable.)
#[test]
fn a_wrong_identity_is_refused() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, wrong identity", Duration::from_secs(90));
    // The inode of the child-to-parent end; the number of the other.
    for case in ["inode", "stdin"] {
        let mut child = KillOnDrop(
            fifo_spawner("tamper")
                .env("REMORA_TEST_CASE", case)
                .stdin(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (mut tx, mut rx) = child.raw_channel("c").unwrap();
        let start = Instant::now();
        let mut sent = 0;
        let mut send_until_disconnected = || loop {
            match tx.send_timeout(&[7; 1000], Duration::from_secs(30)) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10_000, "{case}: the pipe never filled");
        };
        let recv = |rx: &mut remora::RawReceiver| {
            rx.recv_timeout(Duration::from_secs(30)).map(|m| m.to_vec())
        };
        if case == "inode" {
            assert_eq!(send_until_disconnected(), SendError::Disconnected);
        } else {
            assert_eq!(recv(&mut rx), Err(RecvError::Disconnected));
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{case}");
        assert!(child.try_wait().unwrap().is_none(), "{case}: seen by death");
        assert!(child.is_attached(), "{case}: the hand-over is over");
        drop(child.process_mut().stdin.take()); // lets the child exit
        if case == "inode" {
            assert_eq!(recv(&mut rx), Err(RecvError::Disconnected));
        } else {
            assert_eq!(send_until_disconnected(), SendError::Disconnected);
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "{case}: the child saw another error");
    }
}

/// A child that receives a truncated hand-over message (it is out of
/// descriptors: the kernel installs what fits and sets `MSG_CTRUNC`) gets
/// `HandOverLost`, and still ends the hand-over with the claim end it did
/// receive: the parent drops its kept copies and sees the child hang up
/// while it lives (`Disconnected`, not `Timeout`).
#[test]
fn a_truncated_hand_over_still_ends_it() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, truncated hand-over", Duration::from_secs(60));
    let mut child = KillOnDrop(
        fifo_spawner("few_fds")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (_tx, mut rx) = child.raw_channel("c").unwrap();
    let r = rx.recv_timeout(Duration::from_secs(20)).map(|m| m.to_vec());
    assert_eq!(r, Err(RecvError::Disconnected));
    assert!(child.try_wait().unwrap().is_none(), "seen by death");
    assert!(child.is_attached(), "the hand-over is over");
    drop(child.process_mut().stdin.take()); // lets the child exit
    assert!(
        child.wait().unwrap().success(),
        "the child saw another error"
    );
}

/// A wait set alone (no receive call) sees an attached child hang up
/// while it lives: its thorough check settles the hand-over, so the
/// parent's kept copy of the child's write end no longer hides the
/// hang-up.
#[test]
fn a_wait_set_sees_an_attached_child_hang_up() {
    let _s = serial();
    let _w = Watchdog::new("fifo wait set, hang-up", Duration::from_secs(60));
    let mut child = KillOnDrop(
        fifo_spawner("hang_up")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (_tx, rx) = child.raw_channel("c").unwrap();
    let mut set = remora::WaitSet::new();
    let key = set.add(&rx).unwrap();
    let event = set.wait_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        (event.key(), event.kind()),
        (key, remora::EventKind::Disconnected)
    );
    assert!(child.try_wait().unwrap().is_none(), "seen by death");
    drop(child.process_mut().stdin.take());
    assert!(child.wait().unwrap().success());
}

/// Only one `connect` per process: a second one, and one after the first
/// connection is dropped, get `AlreadyClaimed` (the parent may still keep
/// the `/proc` copies the first did not need).
#[test]
fn a_second_connect_is_refused() {
    let _s = serial();
    let _w = Watchdog::new("fifo spawn, second connect", Duration::from_secs(60));
    let mut child = KillOnDrop(fifo_spawner("twice").spawn().unwrap());
    echo_round_trips(&child, 10);
    assert!(child.wait().unwrap().success());
}

/// A child that dies before it attaches (killed, or exits without
/// `connect`) is seen by both of the parent's ends: while the parent keeps
/// its copies of the child's ends no pipe reports the hang-up, so the
/// watch on the child must.
#[test]
fn death_before_attach_disconnects_both_directions() {
    let _s = serial();
    let _w = Watchdog::new("fifo death before attach", Duration::from_secs(90));
    for (role, kill) in [("gated_echo", true), ("exit_unattached", false)] {
        let mut child = KillOnDrop(fifo_spawner(role).stdin(Stdio::piped()).spawn().unwrap());
        let (mut tx, mut rx) = child.raw_channel("c").unwrap();
        tx.send(b"early").unwrap();
        if kill {
            child.kill().unwrap();
        }
        let start = Instant::now();
        // The sender first here (it never reaches a wait while the pipe has
        // room, so it is bounded by the pipe's size), the receiver first
        // in the other case.
        let mut sent = 0;
        let sender = |tx: &mut remora::RawSender, sent: &mut usize| loop {
            match tx.send_timeout(&[7; 1000], Duration::from_secs(30)) {
                Ok(()) => *sent += 1,
                Err(e) => break e,
            }
            assert!(*sent < 10_000, "the pipe never filled");
        };
        if kill {
            assert_eq!(sender(&mut tx, &mut sent), SendError::Disconnected);
            let r = rx.recv_timeout(Duration::from_secs(30)).map(|m| m.to_vec());
            assert_eq!(r, Err(RecvError::Disconnected));
        } else {
            let r = rx.recv_timeout(Duration::from_secs(30)).map(|m| m.to_vec());
            assert_eq!(r, Err(RecvError::Disconnected));
            assert_eq!(sender(&mut tx, &mut sent), SendError::Disconnected);
        }
        eprintln!("{role}: both ends disconnected after {:?}", start.elapsed());
        assert!(start.elapsed() < Duration::from_secs(10), "{role}");
        assert!(!child.is_attached());
        child.wait().unwrap();
    }
}

/// Nothing is left whatever happens: no descriptor of the parent (the
/// kept copies, pidfds, pipe ends), nothing in the temp dir or
/// XDG_RUNTIME_DIR (the transport has no directory any more).
#[test]
fn nothing_left_when_the_child_dies_or_never_attaches() {
    let _s = serial();
    let _w = Watchdog::new("leftovers", Duration::from_secs(90));
    let before = common::open_fd_count();

    // Attached, echoed, waited for.
    let mut child = KillOnDrop(fifo_spawner("echo").spawn().unwrap());
    echo_round_trips(&child, 5);
    child.wait().unwrap();
    drop(child);
    assert_eq!(common::open_fd_count(), before, "after an attached child");

    // kill -9 before attaching, and the Child dropped without a wait.
    let mut child = fifo_spawner("gated_echo")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    child.kill().unwrap();
    drop(child);
    assert_eq!(reap(pid), -1);
    assert_eq!(common::open_fd_count(), before, "after a killed child");

    // The Child dropped, no end taken, while the child still runs: it can
    // still attach (it holds its ends), and finds every channel hung up.
    let mut child = fifo_spawner("gated_late")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdin = child.process_mut().stdin.take();
    drop(child);
    drop(stdin); // lets the child go on and connect
    assert_eq!(reap(pid), 0, "the late child must find its channel hung up");
    assert_eq!(common::open_fd_count(), before, "after a late child");

    // kill -9 after attaching (a channel taken, mid-exchange).
    let mut child = KillOnDrop(fifo_spawner("echo").spawn().unwrap());
    let (mut tx, mut rx) = child.channel::<u64, u64>("c").unwrap();
    tx.send(&5).unwrap();
    assert_eq!(*rx.recv().unwrap(), 6);
    child.kill().unwrap();
    assert!(matches!(
        rx.recv().map(|m| *m),
        Err(RecvError::Disconnected)
    ));
    child.wait().unwrap();
    drop((tx, rx, child));
    assert_eq!(
        common::open_fd_count(),
        before,
        "after a killed attached child"
    );
    assert!(remora_fifo_dirs().is_empty());
    assert!(common::remora_tmp_entries().is_empty());
}

/// Closes every descriptor above 2 (as `sudo` does).
fn close_above_stdio() {
    // SAFETY: close_range has no memory preconditions; nothing in this
    // process uses a descriptor above 2 across the exec that follows.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Reaps child `pid`; returns its exit code (-1 if killed by a signal).
fn reap(pid: u32) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is writable.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    assert_eq!(r, pid as libc::pid_t);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    }
}

fn wait_gate() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

/// Re-executes this test binary in `role` with `REMORA_CHANNEL` set to
/// `value`, keeping the inherited descriptors (as a wrapper would).
fn exec_as(role: &str, value: &str) -> ! {
    let err = common::self_command(role).env(CHANNEL_ENV, value).exec();
    panic!("exec failed: {err}");
}

#[test]
fn handles_stay_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<remora::Child>();
    send_sync::<remora::Connection>();
    send::<remora::RawSender>();
    send::<remora::RawReceiver>();
    send::<remora::Sender<u64>>();
    send::<remora::Receiver<u64>>();
}

// ---------------------------------------------------------------------------
// The child side.
// ---------------------------------------------------------------------------

/// Entry point of the re-executed children; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("fifo test child", Duration::from_secs(120));
    match role.as_str() {
        "fallback_inner" => fallback_inner(),
        "env_probe" => env_probe(),
        "scribbler" => scribbler(),
        "echo" => {
            let conn = remora::connect().unwrap();
            serve_echo(&conn);
        }
        "gated_echo" => {
            wait_gate();
            let conn = remora::connect().unwrap();
            serve_echo(&conn);
        }
        "gated_late" => {
            // Wait for the parent to drop its Child (it closes our stdin).
            wait_gate();
            let conn = remora::connect().unwrap();
            let (mut tx, mut rx) = conn.raw_channel("c").unwrap();
            assert_eq!(rx.recv().map(|m| m.to_vec()), Err(RecvError::Disconnected));
            assert_eq!(tx.send(b"x"), Err(SendError::Disconnected));
        }
        "exit_unattached" => {}
        "hang_up" => {
            let conn = remora::connect().unwrap();
            let (tx, _rx) = conn.raw_channel("c").unwrap();
            drop(tx);
            wait_gate();
        }
        "closer" => {
            close_above_stdio();
            exec_as("echo_proc", &std::env::var(CHANNEL_ENV).unwrap());
        }
        "echo_proc" => {
            // The control socket (and with it the pipe ends it carries) is
            // closed here: the wrapper closed it.
            let control = std::env::var("REMORA_CONTROL").unwrap();
            let fd: i32 = control.split(':').next().unwrap().parse().unwrap();
            // SAFETY: F_GETFD on any number is harmless.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
            let conn = remora::connect().unwrap();
            serve_echo(&conn);
        }
        "stdio_less_parent" => {
            for fd in 0..3 {
                // SAFETY: closes this process's stdio numbers; nothing here
                // owns them as Rust objects (std's stdio tolerates EBADF).
                unsafe { libc::close(fd) };
            }
            let mut s = fifo_spawner("echo");
            s.stdin(Stdio::inherit()).stdout(Stdio::inherit());
            let mut child = KillOnDrop(s.spawn().unwrap());
            for fd in 0..3 {
                let path = format!("/proc/self/fd/{fd}");
                if let Ok(meta) = std::fs::metadata(&path) {
                    assert!(!meta.file_type().is_fifo(), "a pipe end at fd {fd}");
                }
            }
            echo_round_trips(&child, 3);
            child.wait().unwrap();
        }
        "echo_once" => {
            let conn = remora::connect().unwrap();
            let (mut tx, mut rx) = conn.channel::<u64, u64>("c").unwrap();
            let n = *rx.recv().unwrap();
            tx.send(&(n + 1)).unwrap();
        }
        "helper_then_echo" => {
            // Started before `connect()`: inherits what this process
            // inherited and has not made close-on-exec yet.
            let mut helper = Command::new("cat").stdout(Stdio::null()).spawn().unwrap();
            let conn = remora::connect().unwrap();
            let (mut tx, mut rx) = conn.channel::<u64, u64>("c").unwrap();
            let n = *rx.recv().unwrap();
            tx.send(&(n + 1)).unwrap();
            drop((tx, rx, conn));
            // Lives on, hung up, until the parent closes our stdin (the
            // helper's too).
            wait_gate();
            helper.wait().unwrap();
        }
        "reclaim" => {
            let mut helper = command("late_connect")
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            let conn = remora::connect().unwrap();
            // The helper connects now, after us.
            drop(helper.stdin.take());
            let copy = command("late_connect").spawn().unwrap();
            wait_success(copy, Duration::from_secs(30));
            wait_success(helper, Duration::from_secs(30));
            drop(conn);
        }
        "late_connect" => {
            wait_gate();
            let r = remora::connect().map(|_| ());
            assert!(
                matches!(r, Err(ConnectError::Open(OpenError::AlreadyClaimed))),
                "a second process: {r:?}"
            );
        }
        "non_fifo" => {
            let case = std::env::var("REMORA_TEST_CASE").unwrap();
            let value = std::env::var(CHANNEL_ENV).unwrap();
            let mut parts: Vec<String> = value.split(':').map(str::to_owned).collect();
            let value = if case == "memfd_names_control" {
                let control = std::env::var("REMORA_CONTROL").unwrap();
                let c: Vec<&str> = control.split(':').collect();
                format!("memfd:{}:{}:4096:{}:{}", parts[1], c[0], c[1], c[2])
            } else {
                parts[2] = std::env::var("REMORA_TEST_FILE").unwrap();
                close_above_stdio();
                parts.join(":")
            };
            exec_as("refused_at_once", &value);
        }
        "refused_at_once" => match remora::connect() {
            Err(ConnectError::Open(e @ OpenError::HandOverLost { .. })) => {
                eprintln!("refused as expected: {e}");
            }
            other => panic!("a non-FIFO was accepted: {:?}", other.map(|_| ())),
        },
        "tamper" => {
            let case = std::env::var("REMORA_TEST_CASE").unwrap();
            let value = std::env::var(CHANNEL_ENV).unwrap();
            let mut parts: Vec<String> = value.split(':').map(str::to_owned).collect();
            let mut fields: Vec<String> = parts[3].split('.').map(str::to_owned).collect();
            match case.as_str() {
                // The child-to-parent end's inode.
                "inode" => fields[5] = (fields[5].parse::<u64>().unwrap() ^ 1).to_string(),
                // The parent-to-child end's number: the parent's stdin.
                _ => fields[6] = "0".to_owned(),
            }
            parts[3] = fields.join(".");
            close_above_stdio();
            exec_as("refused", &parts.join(":"));
        }
        "refused" => {
            match remora::connect() {
                Err(ConnectError::Open(e @ OpenError::HandOverLost { .. })) => {
                    eprintln!("refused as expected: {e}");
                }
                other => panic!("a wrong identity was accepted: {:?}", other.map(|_| ())),
            }
            // Live on until the parent closes our stdin.
            wait_gate();
        }
        "few_fds" => {
            // Room for two more descriptors: the hand-over has three (the
            // claim end, one channel's two ends). The limit is on numbers,
            // so it goes just past the second free one.
            // SAFETY: F_GETFD only asks whether the number is open.
            let free = |n: i32| unsafe { libc::fcntl(n, libc::F_GETFD) } < 0;
            let second_free = (0..).filter(|&n| free(n)).nth(1).unwrap();
            let mut rl = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `rl` is a valid rlimit struct for both calls.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
            rl.rlim_cur = second_free as libc::rlim_t + 1;
            // SAFETY: as above.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
            match remora::connect() {
                Err(ConnectError::Open(e @ OpenError::HandOverLost { .. })) => {
                    eprintln!("refused as expected: {e}");
                }
                other => panic!("a truncated hand-over: {:?}", other.map(|_| ())),
            }
            // Live on until the parent closes our stdin.
            wait_gate();
        }
        "twice" => {
            let conn = remora::connect().unwrap();
            let again = remora::connect().map(|_| ());
            assert!(
                matches!(again, Err(ConnectError::Open(OpenError::AlreadyClaimed))),
                "{again:?}"
            );
            serve_echo(&conn);
            drop(conn);
            let late = remora::connect().map(|_| ());
            assert!(
                matches!(late, Err(ConnectError::Open(OpenError::AlreadyClaimed))),
                "{late:?}"
            );
        }
        other => panic!("unknown role {other}"),
    }
}

fn serve_echo(conn: &remora::Connection) {
    let name = conn.channel_names().next().unwrap().to_owned();
    let (mut tx, mut rx) = conn.channel::<u64, u64>(&name).unwrap();
    while let Ok(n) = rx.recv() {
        let reply = *n + 1;
        drop(n);
        tx.send(&reply).unwrap();
    }
}
