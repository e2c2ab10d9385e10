//! Spawner and lifecycle: real child processes (this test binary re-executed
//! through `remora::Spawner`), each test under a watchdog, no leftovers.
//! (Streams and drain-then-disconnect are in `conformance.rs`, kill -9 of
//! either side in `liveness.rs`.)

mod common;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Watchdog, remora_segments, role};
use remora::{ChannelConfig, Child, RecvError, SendError, Spawner};

/// These tests spawn many processes; on 2 cores they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A spawner that re-executes this test binary in `role`.
fn spawner(role: &str) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(common::CHILD_ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    s
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Num(u64);

#[test]
fn three_channels_each_served_from_its_own_thread() {
    let _s = serial();
    let _w = Watchdog::new("three channels", Duration::from_secs(120));
    let mut child = spawner("echo3")
        .channel("a")
        .channel("b")
        .channel("c")
        .spawn()
        .unwrap();
    let threads: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let (mut tx, mut rx) = child.channel::<Num, Num>(name).unwrap();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    tx.send(&Num(i)).unwrap();
                    assert_eq!(rx.recv().unwrap().0, i + 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(child.wait().unwrap().success());
    assert!(remora_segments().is_empty());
}

#[test]
fn child_exiting_before_connecting_disconnects_the_parent() {
    let _s = serial();
    let _w = Watchdog::new("early exit", Duration::from_secs(60));
    let mut child = spawner("exit_early").channel("c").spawn().unwrap();
    let (_tx, mut rx) = child.channel::<Num, Num>("c").unwrap();
    let start = Instant::now();
    assert!(matches!(
        rx.recv().map(|m| m.0),
        Err(RecvError::Disconnected)
    ));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert!(
        remora_segments().is_empty(),
        "segment of a never-attached child left behind"
    );
}

#[test]
fn eight_children_at_once() {
    let _s = serial();
    let _w = Watchdog::new("eight children", Duration::from_secs(240));
    let mut children: Vec<Child> = (0..8)
        .map(|_| spawner("echo1").channel("c").spawn().unwrap())
        .collect();
    let threads: Vec<_> = children
        .iter()
        .map(|child| {
            let (mut tx, mut rx) = child.channel::<Num, Num>("c").unwrap();
            std::thread::spawn(move || {
                for i in 0..ROUND_TRIPS {
                    tx.send(&Num(i)).unwrap();
                    assert_eq!(rx.recv().unwrap().0, i + 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    assert!(remora_segments().is_empty());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn spawn_exit_cycles_leak_nothing() {
    let _s = serial();
    let _w = Watchdog::new("spawn cycles", Duration::from_secs(240));
    let fds = open_fds();
    // 1,000 children that never attach (the cheapest child there is) ...
    let t = Instant::now();
    for _ in 0..1000 {
        let mut child = Spawner::new("true").channel("c").spawn().unwrap();
        assert!(child.wait().unwrap().success());
    }
    eprintln!("1000 never-attached children: {:?}", t.elapsed());
    // ... and 100 that attach, exchange, and exit, or are killed.
    for i in 0..100 {
        let mut child = spawner("echo_once").channel("c").spawn().unwrap();
        let (mut tx, mut rx) = child.channel::<Num, Num>("c").unwrap();
        tx.send(&Num(i)).unwrap();
        assert_eq!(rx.recv().unwrap().0, i + 1);
        drop((tx, rx)); // the child's recv loop ends on Disconnected
        if i % 2 == 0 {
            kill_and_reap(&mut child);
        } else {
            assert!(child.wait().unwrap().success());
        }
    }
    // `<=`: another test's thread may have closed a pipe meanwhile; a leak
    // of one fd per cycle would show as hundreds more.
    assert!(
        open_fds() <= fds,
        "file descriptors leaked: {fds} before, {} after",
        open_fds()
    );
    assert!(remora_segments().is_empty(), "segments leaked");
}

const ROUND_TRIPS: u64 = 100_000;

/// `Spawner::…spawn()?.channel(..)?` drops the `Child` at once, before the
/// child connects: the child must still attach and talk, and the channel
/// nobody can take any more must hang up.
#[test]
fn a_dropped_child_handle_does_not_strand_the_child() {
    let _s = serial();
    let _w = Watchdog::new("dropped Child handle", Duration::from_secs(60));
    for transport in [remora::Transport::Shm, remora::Transport::Fifo] {
        let (mut tx, mut rx) = spawner("echo_pid")
            .transport(transport)
            .channel("c")
            .channel("unused")
            .spawn()
            .unwrap()
            .channel::<Num, Num>("c")
            .unwrap();
        tx.send(&Num(41)).unwrap();
        let pid = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .0
            .to_native();
        tx.send(&Num(1)).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap().0, 2);
        drop((tx, rx));
        let mut status = 0;
        // SAFETY: reaps our own child; `status` is writable.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        assert_eq!(reaped, pid as libc::pid_t);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{transport}: child failed ({status:#x})"
        );
        assert!(remora_segments().is_empty());
        assert!(common::remora_fifo_dirs().is_empty());
    }
}

/// Dropping the creator's `Segment` while its channel ends live must not
/// strand an opener that has not attached yet.
#[test]
fn a_dropped_segment_handle_keeps_its_name_while_ends_live() {
    let parent = remora::Segment::create(&[
        ChannelConfig::new("c").capacity(4096),
        ChannelConfig::new("unused").capacity(4096),
    ])
    .unwrap();
    let name = parent.name().to_owned();
    let (mut tx, _rx) = parent.raw_channel("c").unwrap();
    drop(parent);
    let child = remora::Segment::open(&name).expect("the name must outlive the Segment handle");
    let (_ctx, mut crx) = child.raw_channel("c").unwrap();
    tx.send(b"hi").unwrap();
    assert_eq!(&*crx.recv().unwrap(), b"hi");
    // Nobody can take the creator's side of "unused" any more.
    let (mut utx, mut urx) = child.raw_channel("unused").unwrap();
    assert_eq!(urx.try_recv().err(), Some(RecvError::Disconnected));
    assert_eq!(utx.try_send(b"x"), Err(SendError::Disconnected));
    drop((tx, _rx));
    assert!(!remora_segments().iter().any(|n| name.ends_with(n.as_str())));
}

/// `Spawner` mirrors `Command` (envs, env_clear, process_group, pre_exec,
/// command_mut) and `Child` offers signals, a bounded wait and a pidfd.
#[test]
fn spawner_and_child_mirror_command() {
    use std::os::unix::process::ExitStatusExt;
    let _s = serial();
    let _w = Watchdog::new("Command parity", Duration::from_secs(60));
    let mut spawner = spawner("report_process");
    spawner
        .env("INHERITED_BEFORE_CLEAR", "x")
        .env_clear()
        .envs([("PARITY_A", "1"), ("PARITY_B", "2")])
        .env(common::ROLE, "report_process")
        .process_group(0);
    spawner.command_mut().env("PARITY_C", "3");
    // SAFETY: only an async-signal-safe call between fork and exec.
    unsafe {
        spawner.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        })
    };
    let mut child = spawner.channel("c").spawn().unwrap();
    let (_tx, mut rx) = child.raw_channel("c").unwrap();
    let report = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        std::str::from_utf8(&report).unwrap(),
        "own group: true, umask: 77, env: 1 2 3 -"
    );
    drop(report);
    assert!(child.pidfd().is_some(), "pidfd_open exists on this kernel");
    // Still running: a bounded wait says so.
    assert_eq!(child.wait_timeout(Duration::from_millis(50)).unwrap(), None);
    child.signal(libc::SIGTERM).unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("exited after SIGTERM");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // Reaped: signalling again is harmless.
    child.signal(libc::SIGTERM).unwrap();
    assert!(remora_segments().is_empty());
}

/// Entry point of the re-executed children; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("lifecycle child", Duration::from_secs(240));
    if role == "exit_early" {
        std::process::exit(3);
    }
    let conn = remora::connect().unwrap();
    assert!(
        matches!(remora::connect(), Err(remora::ConnectError::Open(_))),
        "second connect must fail"
    );
    match role.as_str() {
        "echo1" | "echo_once" => {
            let (mut tx, mut rx) = conn.channel::<Num, Num>("c").unwrap();
            while let Ok(n) = rx.recv() {
                let reply = Num(n.0 + 1);
                drop(n);
                tx.send(&reply).unwrap();
            }
        }
        "echo3" => {
            let threads: Vec<_> = ["a", "b", "c"]
                .into_iter()
                .map(|name| {
                    let (mut tx, mut rx) = conn.channel::<Num, Num>(name).unwrap();
                    std::thread::spawn(move || {
                        while let Ok(n) = rx.recv() {
                            let reply = Num(n.0 + 1);
                            drop(n);
                            tx.send(&reply).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        "echo_pid" => {
            let (mut tx, mut rx) = conn.channel::<Num, Num>("c").unwrap();
            let (_utx, mut urx) = conn.channel::<Num, Num>("unused").unwrap();
            let r = urx.recv_timeout(Duration::from_secs(20)).map(|m| m.0);
            assert!(matches!(r, Err(RecvError::Disconnected)), "unused: {r:?}");
            drop(rx.recv().unwrap());
            tx.send(&Num(u64::from(std::process::id()))).unwrap();
            while let Ok(n) = rx.recv() {
                let reply = Num(n.0 + 1);
                drop(n);
                tx.send(&reply).unwrap();
            }
        }
        "report_process" => {
            let (mut tx, _rx) = conn.raw_channel("c").unwrap();
            // SAFETY: plain queries without pointers; umask is restored.
            let (own_group, umask) = unsafe {
                let mask = libc::umask(0);
                libc::umask(mask);
                (libc::getpgrp() == libc::getpid(), mask)
            };
            let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "-".into());
            let report = format!(
                "own group: {own_group}, umask: {umask:o}, env: {} {} {} {}",
                var("PARITY_A"),
                var("PARITY_B"),
                var("PARITY_C"),
                var("INHERITED_BEFORE_CLEAR"),
            );
            tx.send(report.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}
