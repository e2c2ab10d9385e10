//! Spawned children with a sealed memfd segment (`Spawner::sealed`): the
//! inherited descriptor, the `/proc/<parent>/fd` hand-over when a wrapper
//! closed it, the seals holding against a child that tries to shrink the
//! segment, death in both directions, and (root only) a spawn that needs no
//! `/dev/shm` at all.

mod common;

use common::service::memfd_mappings;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{KillOnDrop, Watchdog};
use remora::{CHANNEL_ENV, ChannelConfig, RecvError, Spawner, Transport, WaitStrategy};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const ENTRY: [&str; 4] = common::CHILD_ENTRY;

fn spawner(role: &str) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .sealed(true)
        .channel_with(
            ChannelConfig::new("c")
                .capacity(4096)
                .wait_strategy(WaitStrategy::Block),
        );
    s
}

fn echo_round_trips(child: &remora::Child, n: u32) {
    let (mut tx, mut rx) = child.raw_channel("c").unwrap();
    for i in 0..n {
        tx.send(&i.to_le_bytes()).unwrap();
        assert_eq!(&*rx.recv().unwrap(), &i.to_le_bytes());
    }
}

#[test]
fn a_sealed_spawn_echoes_and_leaves_nothing() {
    let _s = serial();
    let _w = Watchdog::new("sealed spawn", Duration::from_secs(60));
    let fds = common::open_fd_count();
    let mut child = KillOnDrop(spawner("echo").spawn().unwrap());
    assert_eq!(child.transport(), Transport::Shm);
    // Nothing in /dev/shm, ever.
    assert!(common::remora_segments().is_empty());
    echo_round_trips(&child, 1000);
    assert!(child.wait().unwrap().success());
    drop(child);
    assert_eq!(common::open_fd_count(), fds);
    assert_eq!(memfd_mappings(), 0);
    assert!(common::remora_segments().is_empty());
    assert!(common::remora_tmp_entries().is_empty());
}

/// A wrapper that closes every inherited descriptor above 2 (as `sudo`
/// does) before it runs the child: the child finds the segment through
/// `/proc/<parent>/fd/<n>`.
#[test]
fn a_sealed_spawn_survives_a_wrapper_that_closes_descriptors() {
    let _s = serial();
    let _w = Watchdog::new("sealed spawn, closed fds", Duration::from_secs(60));
    let mut child = KillOnDrop(spawner("closer").spawn().unwrap());
    echo_round_trips(&child, 100);
    assert!(child.wait().unwrap().success());
}

/// The child tries to shrink the segment (through the descriptor it
/// inherited, and through `/proc`) before attaching: the seals refuse
/// both, and the parent keeps using the segment without SIGBUS.
#[test]
fn a_child_cannot_shrink_a_sealed_segment() {
    let _s = serial();
    let _w = Watchdog::new("sealed spawn, shrinker", Duration::from_secs(60));
    let mut child = KillOnDrop(spawner("shrinker").spawn().unwrap());
    echo_round_trips(&child, 100);
    assert!(child.wait().unwrap().success());
}

#[test]
fn death_is_seen_both_ways_over_a_sealed_segment() {
    let _s = serial();
    let _w = Watchdog::new("sealed spawn, death", Duration::from_secs(60));
    // The child dies: the parent's blocked recv sees it.
    let mut child = KillOnDrop(spawner("echo").spawn().unwrap());
    let (mut tx, mut rx) = child.raw_channel("c").unwrap();
    tx.send(b"x").unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"x");
    child.kill().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
        RecvError::Disconnected
    );
    drop(child);
    // The parent dies: a middle process spawns a sealed grandchild and is
    // killed; the grandchild reports Disconnected on its stdout.
    let (middle, lines) = common::spawn_reporting("middle");
    lines.wait_for("ATTACHED", Duration::from_secs(20));
    middle.kill();
    lines.wait_for("PARENT_GONE", Duration::from_secs(10));
}

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    let _w = Watchdog::new("sealed spawn child", Duration::from_secs(60));
    match role.as_str() {
        "echo" => echo_role(),
        "closer" => {
            // SAFETY: close_range has no memory preconditions; nothing in
            // this process uses a descriptor above 2 across the exec below.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            let err = common::self_command("echo_proc").exec();
            panic!("exec failed: {err}");
        }
        "echo_proc" => {
            // The inherited number is closed here (the wrapper closed it).
            let v = std::env::var(CHANNEL_ENV).unwrap();
            let fd: i32 = v.split(':').nth(2).unwrap().parse().unwrap();
            // SAFETY: F_GETFD on any number is harmless.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
            echo_role();
        }
        "shrinker" => {
            let v = std::env::var(CHANNEL_ENV).unwrap();
            assert!(v.starts_with("memfd:"), "{v}");
            let parts: Vec<&str> = v.split(':').collect();
            let (ppid, fd) = (parts[1], parts[2].parse::<i32>().unwrap());
            // SAFETY: ftruncate on the inherited descriptor (or a closed
            // number: EBADF); no memory is involved.
            let r = unsafe { libc::ftruncate(fd, 0) };
            assert_eq!(r, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/{ppid}/fd/{fd}"))
                .unwrap();
            assert_eq!(
                file.set_len(0).unwrap_err().raw_os_error(),
                Some(libc::EPERM)
            );
            assert_eq!(
                file.set_len(1 << 30).unwrap_err().raw_os_error(),
                Some(libc::EPERM)
            );
            drop(file);
            echo_role();
        }
        "middle" => {
            let mut child = spawner("orphan").stdout(Stdio::inherit()).spawn().unwrap();
            let (mut tx, _rx) = child.raw_channel("c").unwrap();
            tx.send(b"go").unwrap();
            let _ = child.wait();
        }
        "orphan" => {
            let conn = remora::connect().unwrap();
            let (_tx, mut rx) = conn.raw_channel("c").unwrap();
            assert_eq!(&*rx.recv().unwrap(), b"go");
            println!("ATTACHED");
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(20)).unwrap_err(),
                RecvError::Disconnected
            );
            println!("PARENT_GONE");
        }
        "dev_shm_inner" => dev_shm_inner(),
        other => panic!("unknown role {other}"),
    }
}

fn echo_role() {
    let v = std::env::var(CHANNEL_ENV).unwrap();
    assert!(v.starts_with("memfd:"), "{v}");
    let conn = remora::connect().unwrap();
    // The descriptor is closed once mapped: nothing for a grandchild.
    // (The number may be reused since, by the control socket `connect`
    // opens when a wrapper closed the inherited one, or its pidfd on the
    // parent; never by the memfd, a regular file.)
    let fd: i32 = v.split(':').nth(2).unwrap().parse().unwrap();
    // SAFETY: an all-zero stat is a valid value; fstat writes at most it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable; fstat on any number is harmless.
    let open = unsafe { libc::fstat(fd, &mut st) } == 0;
    assert!(!open || st.st_mode & libc::S_IFMT != libc::S_IFREG);
    assert!(matches!(
        remora::connect(),
        Err(remora::ConnectError::Open(_))
    ));
    let (mut tx, mut rx) = conn.raw_channel("c").unwrap();
    while let Ok(msg) = rx.recv() {
        let reply = msg.to_vec();
        drop(msg);
        if tx.send(&reply).is_err() {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// Root only: no /dev/shm needed.
// ---------------------------------------------------------------------------

fn in_namespace_with_dev_shm(options: &str) {
    common::in_dev_shm_namespace(options, "dev_shm_inner");
}

#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_a_sealed_spawn_works_with_a_read_only_dev_shm() {
    let _s = serial();
    let _w = Watchdog::new("sealed, read-only /dev/shm", Duration::from_secs(90));
    in_namespace_with_dev_shm("ro,size=64k");
}

#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_a_sealed_spawn_works_with_a_full_dev_shm() {
    let _s = serial();
    let _w = Watchdog::new("sealed, full /dev/shm", Duration::from_secs(90));
    in_namespace_with_dev_shm("size=4k");
}

/// In the namespace: /dev/shm is unusable, yet a sealed spawn gets shared
/// memory (no FIFO fallback) and works.
fn dev_shm_inner() {
    let mut child = KillOnDrop(spawner("echo").spawn().unwrap());
    assert_eq!(child.transport(), Transport::Shm, "fell back to FIFOs");
    echo_round_trips(&child, 1000);
    assert!(child.wait().unwrap().success());
    // A named segment is still impossible here (the test is real).
    assert!(remora::Segment::create(&[ChannelConfig::new("c")]).is_err());
}
