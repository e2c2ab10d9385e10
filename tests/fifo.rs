//! FIFO-transport specifics: the real fallback (in a mount namespace where
//! /dev/shm is unusable), `REMORA_TRANSPORT`, malformed frames from a peer
//! that bypasses remora, the directory's layout and permissions, tampering,
//! and cleanup whatever happens to either process.
//!
//! The behaviour both transports share is in `conformance.rs`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Watchdog, remora_fifo_dirs, role};
use remora::{
    CHANNEL_ENV, ChannelConfig, OpenError, RecvError, SpawnError, Spawner, StreamFault,
    TRANSPORT_ENV, Transport,
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

/// The FIFO directory named by a child's `REMORA_CHANNEL`.
fn fifo_dir_from_env() -> PathBuf {
    let v = std::env::var(CHANNEL_ENV).unwrap();
    PathBuf::from(v.strip_prefix("fifo:").expect("a fifo: channel"))
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

#[test]
fn fifo_directory_goes_under_xdg_runtime_dir_when_usable() {
    let _s = serial();
    let _w = Watchdog::new("XDG_RUNTIME_DIR", Duration::from_secs(60));
    let xdg = std::env::temp_dir().join(format!("remora-test-xdg-{}", std::process::id()));
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, PermissionsExt::from_mode(0o700)).unwrap();
    for (dir, expect_xdg) in [(xdg.clone(), true), (xdg.join("missing"), false)] {
        let probe = command("xdg_probe")
            .env("XDG_RUNTIME_DIR", &dir)
            .env("REMORA_TEST_EXPECT_XDG", if expect_xdg { "1" } else { "0" })
            .spawn()
            .unwrap();
        wait_success(probe, Duration::from_secs(30));
    }
    std::fs::remove_dir(&xdg).expect("nothing left in the XDG directory");
}

/// Spawns over FIFOs and checks where the directory went.
fn xdg_probe() {
    let xdg = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").unwrap());
    let expect_xdg = std::env::var("REMORA_TEST_EXPECT_XDG").unwrap() == "1";
    let mut child = Spawner::new("sleep")
        .arg("60")
        .channel("c")
        .transport(Transport::Fifo)
        .spawn()
        .unwrap();
    let dirs = remora_fifo_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(
        dirs[0].parent() == Some(xdg.as_path()),
        expect_xdg,
        "{dirs:?}"
    );
    if !expect_xdg {
        assert_eq!(dirs[0].parent(), Some(std::env::temp_dir().as_path()));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(remora_fifo_dirs().is_empty());
}

// ---------------------------------------------------------------------------
// Malformed frames from a peer that writes the FIFO directly.
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

/// The scribbler: opens the FIFOs by hand (no `connect`), waits for the
/// parent's HELLO, writes `scribble(case)`, and exits.
fn scribbler() {
    let case = std::env::var("REMORA_TEST_CASE").unwrap();
    let dir = fifo_dir_from_env();
    let mut p2c = std::fs::OpenOptions::new()
        .read(true)
        .open(dir.join("0.p2c"))
        .unwrap();
    let mut c2p = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("0.c2p"))
        .unwrap();
    let mut hello = [0u8; 32];
    std::io::Read::read_exact(&mut p2c, &mut hello).unwrap();
    if case != "truncated_dead" {
        // Like `connect`: gone from the file system once attached, so the
        // parent sees EOF when we exit. `truncated_dead` leaves it, so the
        // parent must notice our death through the pidfd instead.
        std::fs::remove_dir_all(&dir).unwrap();
    }
    c2p.write_all(&scribble(&case)).unwrap();
}

// ---------------------------------------------------------------------------
// The directory.
// ---------------------------------------------------------------------------

/// Spawns `role` over FIFOs with its stdin piped: roles wait for a line on
/// stdin before they connect, so the test can look at (or tamper with) the
/// directory first.
fn spawn_gated(role: &str, channel: &str) -> (remora::Child, PathBuf) {
    let child = spawner(role)
        .stdin(Stdio::piped())
        .channel(channel)
        .transport(Transport::Fifo)
        .spawn()
        .unwrap();
    assert!(!child.is_attached());
    let dirs = common::fifo_dirs_of(std::process::id());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    (child, dirs.into_iter().next().unwrap())
}

fn release_gate(child: &mut remora::Child) {
    let stdin = child.process_mut().stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
}

fn wait_gate() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn directory_is_private_holds_no_channel_names_and_goes_at_attach() {
    let _s = serial();
    let _w = Watchdog::new("directory layout", Duration::from_secs(60));
    let (child, dir) = spawn_gated("gated_echo", "../not a path/ä");
    let mut child = KillOnDrop(child);
    assert_eq!(mode(&dir), 0o700);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["0.c2p", "0.p2c", "manifest"]);
    for fifo in ["0.c2p", "0.p2c"] {
        let meta = std::fs::symlink_metadata(dir.join(fifo)).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(mode(&dir.join(fifo)), 0o600);
    }
    assert_eq!(mode(&dir.join("manifest")), 0o600);
    // Messages sent before the child attaches wait in the pipe.
    let (mut tx, mut rx) = child.channel::<u64, u64>("../not a path/ä").unwrap();
    tx.send(&1).unwrap();
    release_gate(&mut child);
    assert_eq!(*rx.recv_timeout(Duration::from_secs(30)).unwrap(), 2);
    assert!(child.is_attached());
    assert!(
        !dir.exists(),
        "the child removes the directory when it attaches"
    );
    drop((tx, rx));
    assert!(child.wait().unwrap().success());
}

#[test]
fn tampered_directory_is_refused_by_the_child() {
    let _s = serial();
    let _w = Watchdog::new("tampering", Duration::from_secs(60));
    type Tamper = fn(&Path);
    let cases: [(&str, Tamper); 6] = [
        // The claim is the manifest's unlink: none left means claimed.
        ("manifest already claimed", |d| {
            std::fs::remove_file(d.join("manifest")).unwrap();
        }),
        ("manifest magic", |d| {
            let p = d.join("manifest");
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[0] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
        }),
        ("manifest truncated", |d| {
            let p = d.join("manifest");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        }),
        ("manifest lists a channel twice", |d| {
            let p = d.join("manifest");
            let text = std::fs::read_to_string(&p).unwrap();
            let line = text.lines().nth(1).unwrap().to_owned();
            std::fs::write(&p, format!("REMFIFO 3 2\n{line}\n{line}\n")).unwrap();
        }),
        ("fifo readable by others", |d| {
            std::fs::set_permissions(d.join("0.p2c"), PermissionsExt::from_mode(0o644)).unwrap();
        }),
        ("fifo replaced by a file", |d| {
            std::fs::remove_file(d.join("0.c2p")).unwrap();
            std::fs::write(d.join("0.c2p"), b"not a fifo").unwrap();
            std::fs::set_permissions(d.join("0.c2p"), PermissionsExt::from_mode(0o600)).unwrap();
        }),
    ];
    for (what, tamper) in cases {
        let (child, dir) = spawn_gated("gated_refused", "c");
        let mut child = KillOnDrop(child);
        let (_tx, mut rx) = child.raw_channel("c").unwrap();
        tamper(&dir);
        release_gate(&mut child);
        // The child fails to connect (and says so in its exit status); it
        // removes the claimed directory, so we see the end of the stream.
        let start = Instant::now();
        let r = rx.recv_timeout(Duration::from_secs(30)).map(|m| m.to_vec());
        assert_eq!(r, Err(RecvError::Disconnected), "{what}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{what}: child did not see the expected error"
        );
        assert!(remora_fifo_dirs().is_empty(), "{what}: directory left");
    }
}

// ---------------------------------------------------------------------------
// Nothing left behind.
// ---------------------------------------------------------------------------

#[test]
fn nothing_left_when_the_child_dies_or_never_attaches() {
    let _s = serial();
    let _w = Watchdog::new("leftovers", Duration::from_secs(60));
    // kill -9 before the child attached, then wait.
    let (child, dir) = spawn_gated("gated_echo", "c");
    let mut child = KillOnDrop(child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dir.exists(), "wait removes the directory of a dead child");

    // kill -9 before attaching, and the Child dropped without a wait.
    let (mut child, dir) = spawn_gated("gated_echo", "c");
    let pid = child.id();
    child.kill().unwrap();
    drop(child);
    assert!(!dir.exists(), "dropping the Child removes the directory");
    assert_eq!(reap(pid), -1);

    // The Child dropped while the child still runs: it can no longer attach.
    let (mut child, dir) = spawn_gated("gated_late", "c");
    release_gate(&mut child);
    let pid = child.id();
    let stdin = child.process_mut().stdin.take();
    drop(child);
    assert!(!dir.exists());
    drop(stdin); // lets the child go on and try to connect
    assert_eq!(reap(pid), 0, "the late child must see NotFound");

    // kill -9 after attaching (a channel taken, mid-exchange).
    let (child, dir) = spawn_gated("gated_echo", "c");
    let mut child = KillOnDrop(child);
    let (mut tx, mut rx) = child.channel::<u64, u64>("c").unwrap();
    release_gate(&mut child);
    tx.send(&5).unwrap();
    assert_eq!(*rx.recv().unwrap(), 6);
    child.kill().unwrap();
    assert!(matches!(
        rx.recv().map(|m| *m),
        Err(RecvError::Disconnected)
    ));
    child.wait().unwrap();
    assert!(!dir.exists());
    assert!(remora_fifo_dirs().is_empty());
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

#[test]
fn a_dead_parents_directory_is_swept() {
    let _s = serial();
    let _w = Watchdog::new("stale sweep", Duration::from_secs(60));
    // A middle process sets up FIFOs for a child that never attaches, then
    // is killed: nobody removes its directory...
    let mut middle = command("stale_middle")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let middle_pid = middle.id();
    let out = middle.stdout.take().unwrap();
    let middle = common::guard(middle);
    common::StdoutLines::new(out).wait_for("READY", Duration::from_secs(30));
    middle.kill();
    let stale = common::fifo_dirs_of(middle_pid);
    assert_eq!(stale.len(), 1, "the killed parent leaves its directory");
    // ... until the next FIFO set of the same user sweeps it.
    let mut child = Spawner::new("true")
        .channel("c")
        .transport(Transport::Fifo)
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!stale[0].exists(), "stale directory not swept");
    assert!(remora_fifo_dirs().is_empty());
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
        "xdg_probe" => xdg_probe(),
        "scribbler" => scribbler(),
        "stale_middle" => {
            let _child = Spawner::new("true")
                .channel("c")
                .transport(Transport::Fifo)
                .spawn()
                .unwrap();
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        "echo" => {
            let conn = remora::connect().unwrap();
            serve_echo(&conn);
        }
        "gated_echo" => {
            wait_gate();
            let conn = remora::connect().unwrap();
            serve_echo(&conn);
        }
        "gated_refused" => {
            wait_gate();
            match remora::connect() {
                Err(remora::ConnectError::Open(e)) => eprintln!("refused as expected: {e}"),
                Err(e) => panic!("unexpected error: {e}"),
                Ok(_) => panic!("a tampered directory was accepted"),
            }
        }
        "gated_late" => {
            wait_gate();
            // Wait for the parent to drop its Child (it closes our stdin).
            wait_gate();
            match remora::connect() {
                Err(remora::ConnectError::Open(OpenError::NotFound { .. })) => {}
                other => panic!("late connect: {:?}", other.map(|_| ())),
            }
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
