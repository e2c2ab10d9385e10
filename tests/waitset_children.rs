//! `WaitSet` across processes: real spawned children wake the set (their
//! sends ring this process's aggregate bell), a child's death wakes it (its
//! liveness word), a child's exit is reported through its pidfd, and one
//! flooding child does not starve 63 others. Every child runs a watchdog
//! and is killed by `KillOnDrop` if the test fails.

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Watchdog, remora_segments, role};
use remora::{
    ChannelConfig, EventKind, Key, RawReceiver, RawSender, RecvError, Spawner, Transport,
    WaitError, WaitSet, WaitStrategy,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A wait for an event that is on its way: it must come well before the
/// deadline (a set that missed its wake-up would only see the event in its
/// final scan at the deadline).
fn woken(set: &mut WaitSet) -> remora::Event {
    let start = std::time::Instant::now();
    let ev = set.wait_timeout(LONG).expect("no event");
    assert!(
        start.elapsed() < LONG / 2,
        "woken only after {:?}: a lost wake-up",
        start.elapsed()
    );
    ev
}

const LONG: Duration = Duration::from_secs(20);

/// A child with a request channel (child to parent) and a command channel.
struct Kid {
    child: KillOnDrop,
    req: RawReceiver,
    ctl: RawSender,
}

fn spawn_kid() -> Kid {
    spawn_kid_over(Transport::Shm)
}

fn spawn_kid_over(transport: Transport) -> Kid {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.transport(transport);
    s.args(common::CHILD_ENTRY)
        .env(common::ROLE, "kid")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .channel_with(ChannelConfig::new("req").capacity(4096))
        .channel_with(ChannelConfig::new("ctl").capacity(4096));
    let child = KillOnDrop(s.spawn().unwrap());
    let (_, req) = child.raw_channel("req").unwrap();
    let (ctl, _) = child.raw_channel("ctl").unwrap();
    Kid { child, req, ctl }
}

/// Kills `kid` (number `i`) 50 ms into the set's sleep: its two members
/// (`req`, `exit`) report once each, Disconnected and Exited.
fn kill_while_the_set_sleeps(
    set: &mut WaitSet,
    owner: &HashMap<Key, (usize, &str)>,
    kid: &Kid,
    i: usize,
) {
    let victim = kid.child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        common::signal(victim, libc::SIGKILL);
    });
    let mut events = Vec::new();
    while events.len() < 2 {
        let ev = woken(set);
        events.push((owner[&ev.key()], ev.kind()));
    }
    killer.join().unwrap();
    events.sort();
    assert_eq!(
        events,
        [
            ((i, "exit"), EventKind::Exited),
            ((i, "req"), EventKind::Disconnected)
        ]
    );
}

fn spawn_kids(n: usize) -> Vec<Kid> {
    (0..n).map(|_| spawn_kid()).collect()
}

/// Entry point of the re-executed child; does nothing in a normal run.
/// Commands on "ctl": `send N` sends N messages on "req" ("<i>"), `flood`
/// sends as fast as it can until the next command, `exit` returns.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    assert_eq!(role, "kid");
    let _w = Watchdog::new("waitset child", Duration::from_secs(120));
    let conn = remora::connect().unwrap();
    let (mut req, _) = conn.raw_channel("req").unwrap();
    let (_, mut ctl) = conn.raw_channel("ctl").unwrap();
    ctl.set_wait_strategy(WaitStrategy::Block);
    loop {
        let cmd = match ctl.recv() {
            Ok(m) => String::from_utf8(m.to_vec()).unwrap(),
            Err(RecvError::Disconnected) => return,
            Err(e) => panic!("{e:?}"),
        };
        let mut words = cmd.split(' ');
        match words.next().unwrap() {
            "send" => {
                let n: usize = words.next().unwrap().parse().unwrap();
                for i in 0..n {
                    req.send(i.to_string().as_bytes()).unwrap();
                }
            }
            "flood" => loop {
                let _ = req.send_timeout(b"flood", Duration::from_millis(5));
                match ctl.try_recv() {
                    Ok(_) => break,
                    Err(RecvError::Empty) => {}
                    Err(_) => return,
                }
            },
            "until-closed" => loop {
                match req.send_timeout(b"x", Duration::from_secs(60)) {
                    Ok(()) => {}
                    Err(remora::SendError::Disconnected) => return,
                    Err(e) => panic!("{e:?}"),
                }
            },
            "exit" => return,
            other => panic!("unknown command {other}"),
        }
    }
}

/// Children's sends wake a set asleep in `Block` (another process bumps this
/// side's aggregate bell); a SIGKILLed child wakes it through its liveness
/// word (its receiver: `Disconnected`) and its pidfd (its `Child`:
/// `Exited`), each reported once; the others keep working.
#[test]
fn children_wake_the_set_and_death_is_reported_once() {
    let _s = serial();
    let _w = Watchdog::new("waitset children", Duration::from_secs(120));
    let mut kids = spawn_kids(4);
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    let mut owner: HashMap<Key, (usize, &str)> = HashMap::new();
    for (i, kid) in kids.iter().enumerate() {
        owner.insert(set.add(&kid.req).unwrap(), (i, "req"));
        owner.insert(set.add(&*kid.child).unwrap(), (i, "exit"));
    }
    // Messages from every child, sent while the set sleeps.
    let mut got = vec![0; 4];
    for round in 0..3 {
        for (i, kid) in kids.iter_mut().enumerate() {
            kid.ctl
                .send(format!("send {}", i + round).as_bytes())
                .unwrap();
        }
        let want: usize = (0..4).map(|i| i + round).sum();
        let mut n = 0;
        while n < want {
            let ev = woken(&mut set);
            assert_eq!(ev.kind(), EventKind::Readable);
            let (i, what) = owner[&ev.key()];
            assert_eq!(what, "req");
            while let Ok(m) = kids[i].req.try_recv() {
                drop(m);
                got[i] += 1;
                n += 1;
            }
        }
    }
    assert_eq!(got, [3, 6, 9, 12]);
    // Kill child 2 while the set sleeps: both its members report once.
    kill_while_the_set_sleeps(&mut set, &owner, &kids[2], 2);
    assert_eq!(set.try_wait(), Err(WaitError::Empty), "reported once");
    // The others keep working, then exit in an orderly way.
    kids[3].ctl.send(b"send 1").unwrap();
    let ev = woken(&mut set);
    assert_eq!(
        (owner[&ev.key()], ev.kind()),
        ((3, "req"), EventKind::Readable)
    );
    drop(kids[3].req.try_recv().unwrap());
    for i in [0, 1, 3] {
        kids[i].ctl.send(b"exit").unwrap();
    }
    let mut finals = Vec::new();
    loop {
        match set.wait_timeout(LONG) {
            Ok(ev) => finals.push((owner[&ev.key()], ev.kind())),
            Err(WaitError::NoMembers) => break,
            Err(e) => panic!("{e}: {finals:?}"),
        }
    }
    finals.sort();
    let want: Vec<_> = [0, 1, 3]
        .into_iter()
        .flat_map(|i| {
            [
                ((i, "exit"), EventKind::Exited),
                ((i, "req"), EventKind::Disconnected),
            ]
        })
        .collect();
    assert_eq!(finals, want);
    for kid in kids.iter_mut() {
        kid.child.wait().unwrap();
    }
    drop(kids);
    assert!(remora_segments().is_empty());
}

/// A death wakes a set that watches only the dead child's receivers (no
/// `Child` member, no pidfd): through the child's liveness word in the
/// set's `futex_waitv`. The other child's channel keeps working.
#[test]
fn death_alone_wakes_a_sleeping_set() {
    let _s = serial();
    let _w = Watchdog::new("waitset death wake-up", Duration::from_secs(120));
    let mut kids = spawn_kids(2);
    // Both attached (each sends one message first).
    for kid in &mut kids {
        kid.ctl.send(b"send 1").unwrap();
        drop(kid.req.recv_timeout(LONG).unwrap());
    }
    for strategy in [WaitStrategy::Block, WaitStrategy::Adaptive] {
        let mut set = WaitSet::new();
        set.set_wait_strategy(strategy);
        let a = set.add(&kids[0].req).unwrap();
        let b = set.add(&kids[1].req).unwrap();
        if strategy == WaitStrategy::Block {
            let victim = kids[0].child.id();
            let killer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                common::signal(victim, libc::SIGKILL);
            });
            let ev = woken(&mut set);
            killer.join().unwrap();
            assert_eq!((ev.key(), ev.kind()), (a, EventKind::Disconnected));
        } else {
            // Reported once per set: a new set sees the death at once.
            let ev = woken(&mut set);
            assert_eq!((ev.key(), ev.kind()), (a, EventKind::Disconnected));
        }
        kids[1].ctl.send(b"send 1").unwrap();
        let ev = woken(&mut set);
        assert_eq!((ev.key(), ev.kind()), (b, EventKind::Readable));
        drop(kids[1].req.try_recv().unwrap());
    }
    kids[1].ctl.send(b"exit").unwrap();
    for kid in &mut kids {
        kid.child.wait().unwrap();
    }
    drop(kids);
    assert!(remora_segments().is_empty());
}

/// A FIFO receiver dropped while in a set closes its pipe at once: the
/// set's view of it must not keep the pipe open, or the child's sends would
/// fill it and block instead of failing with `Disconnected`.
#[test]
fn dropped_fifo_receiver_in_a_set_disconnects_the_child() {
    let _s = serial();
    let _w = Watchdog::new("waitset fifo drop", Duration::from_secs(120));
    let Kid {
        mut child,
        req,
        mut ctl,
    } = spawn_kid_over(Transport::Fifo);
    let mut set = WaitSet::new();
    let key = set.add(&req).unwrap();
    drop(req);
    ctl.send(b"until-closed").unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("the child's sends never saw Disconnected");
    assert!(status.success());
    let ev = set.try_wait().unwrap();
    assert_eq!((ev.key(), ev.kind()), (key, EventKind::Disconnected));
    drop(ctl);
    assert!(common::remora_fifo_dirs().is_empty());
}

/// Shared-memory and FIFO children in one set, with their exits (segments
/// and descriptors at once: the descriptor relay): both transports wake
/// the set, and the FIFO child's death reports its receiver and its exit
/// once each.
#[test]
fn shm_and_fifo_children_in_one_set() {
    let _s = serial();
    let _w = Watchdog::new("waitset mixed transports", Duration::from_secs(120));
    let mut kids = vec![
        spawn_kid_over(Transport::Shm),
        spawn_kid_over(Transport::Fifo),
        spawn_kid_over(Transport::Fifo),
    ];
    assert_eq!(kids[1].child.transport(), Transport::Fifo);
    for strategy in [WaitStrategy::Block, WaitStrategy::Adaptive] {
        let mut set = WaitSet::new();
        set.set_wait_strategy(strategy);
        let mut owner: HashMap<Key, (usize, &str)> = HashMap::new();
        for (i, kid) in kids.iter().enumerate() {
            owner.insert(set.add(&kid.req).unwrap(), (i, "req"));
            owner.insert(set.add(&*kid.child).unwrap(), (i, "exit"));
        }
        for round in 1..=3 {
            for kid in kids.iter_mut() {
                kid.ctl.send(format!("send {round}").as_bytes()).unwrap();
            }
            let mut got = [0; 3];
            while got.iter().sum::<usize>() < 3 * round {
                let ev = woken(&mut set);
                assert_eq!(ev.kind(), EventKind::Readable, "{strategy:?}");
                let (i, _) = owner[&ev.key()];
                while let Ok(m) = kids[i].req.try_recv() {
                    drop(m);
                    got[i] += 1;
                }
            }
            assert_eq!(got, [round; 3], "{strategy:?}");
        }
    }
    let mut set = WaitSet::new();
    let mut owner: HashMap<Key, (usize, &str)> = HashMap::new();
    for (i, kid) in kids.iter().enumerate() {
        owner.insert(set.add(&kid.req).unwrap(), (i, "req"));
        owner.insert(set.add(&*kid.child).unwrap(), (i, "exit"));
    }
    kill_while_the_set_sleeps(&mut set, &owner, &kids[1], 1);
    kids[2].ctl.send(b"send 2").unwrap();
    let ev = woken(&mut set);
    assert_eq!(
        (owner[&ev.key()], ev.kind()),
        ((2, "req"), EventKind::Readable)
    );
    for kid in kids.iter_mut() {
        let _ = kid.ctl.send(b"exit");
        while kid.req.try_recv().is_ok() {}
        kid.child.wait().unwrap();
    }
    drop(kids);
    assert!(remora_segments().is_empty());
    assert!(common::remora_fifo_dirs().is_empty());
}

/// Wake-ups through the descriptor paths come from the event, not from the
/// 50 ms re-scan a set with FIFO members also does: a FIFO-only set (the
/// calling thread polls) and a FIFO + shared-memory set (the descriptor
/// relay polls), 10 wake-ups each, median under 10 ms.
#[test]
fn fifo_wake_ups_are_prompt() {
    let _s = serial();
    let _w = Watchdog::new("waitset fifo wake-ups", Duration::from_secs(120));
    let mut fifo = spawn_kid_over(Transport::Fifo);
    let shm = spawn_kid_over(Transport::Shm);
    for with_shm in [false, true] {
        let mut set = WaitSet::new();
        set.set_wait_strategy(WaitStrategy::Block);
        let key = set.add(&fifo.req).unwrap();
        if with_shm {
            set.add(&shm.req).unwrap();
        }
        let mut times = Vec::new();
        for _ in 0..10 {
            // Let the set fall asleep first.
            let ctl = &mut fifo.ctl;
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    ctl.send(b"send 1").unwrap();
                });
                let start = Instant::now();
                let ev = woken(&mut set);
                times.push(start.elapsed().saturating_sub(Duration::from_millis(20)));
                assert_eq!((ev.key(), ev.kind()), (key, EventKind::Readable));
            });
            drop(fifo.req.try_recv().unwrap());
        }
        times.sort();
        let median = times[times.len() / 2];
        eprintln!("FIFO wake-up (with shm members: {with_shm}): median {median:?}");
        assert!(
            median < Duration::from_millis(10),
            "FIFO wake-ups come from the re-scan, not the pipe: median {median:?}"
        );
    }
    for mut kid in [fifo, shm] {
        kid.ctl.send(b"exit").unwrap();
        kid.child.wait().unwrap();
    }
}

/// The fairness test with real processes: one child sends as fast
/// as it can, 63 others send one message each; every one is served within a
/// bounded number of turns (one message received per event).
#[test]
fn one_flooding_child_does_not_starve_63_others() {
    let _s = serial();
    let _w = Watchdog::new("waitset fairness children", Duration::from_secs(180));
    let mut kids = spawn_kids(64);
    let mut set = WaitSet::new();
    let keys: Vec<Key> = kids.iter().map(|k| set.add(&k.req).unwrap()).collect();
    kids[0].ctl.send(b"flood").unwrap();
    // Wait until the flood is on.
    let start = Instant::now();
    while kids[0].req.is_empty() {
        assert!(start.elapsed() < LONG, "the flood never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    for kid in &mut kids[1..] {
        kid.ctl.send(b"send 1").unwrap();
    }
    let mut served = [false; 64];
    let mut left = 63;
    let mut turns = 0;
    while left > 0 {
        let ev = woken(&mut set);
        turns += 1;
        let i = keys.iter().position(|k| *k == ev.key()).unwrap();
        if let Ok(m) = kids[i].req.try_recv() {
            drop(m);
            if i != 0 && !served[i] {
                served[i] = true;
                left -= 1;
            }
        }
        // The children's sends arrive over time; the bound is on turns
        // taken by the flooder between them, far below an unbounded flood.
        assert!(turns < 20_000, "63 messages not served in {turns} turns");
    }
    kids[0].ctl.send(b"stop").unwrap();
    for kid in &mut kids {
        let _ = kid.ctl.send(b"exit");
    }
    eprintln!("63 children served in {turns} turns next to a flooding child");
    for kid in &mut kids {
        while kid.req.try_recv().is_ok() {}
        kid.child.wait().unwrap();
    }
    drop(kids);
    assert!(remora_segments().is_empty());
}

/// Idle cost: 64 idle children (asleep on their command channel) and a set
/// over their 64 request receivers, waiting 10 s. Prints the parent's CPU
/// time (getrusage) and the children's (/proc/<pid>/task/*/schedstat), as a share of one
/// core. `cargo test --release --test waitset_children -- --ignored --nocapture`
#[test]
#[ignore = "takes 10 s; a measurement, run by hand"]
fn idle_cost_of_64_children() {
    let _s = serial();
    let _w = Watchdog::new("waitset idle", Duration::from_secs(180));
    let mut kids = spawn_kids(64);
    let mut set = WaitSet::new();
    for kid in &kids {
        set.add(&kid.req).unwrap();
    }
    // Let every child attach and fall asleep.
    std::thread::sleep(Duration::from_millis(500));
    let kid_cpu = |kids: &[Kid]| -> f64 { kids.iter().map(|k| proc_cpu(k.child.id())).sum() };
    let (self0, kids0, t0) = (self_cpu(), kid_cpu(&kids), Instant::now());
    assert_eq!(
        set.wait_timeout(Duration::from_secs(10)),
        Err(WaitError::Timeout)
    );
    let wall = t0.elapsed().as_secs_f64();
    let (self1, kids1) = (self_cpu(), kid_cpu(&kids));
    eprintln!(
        "idle 64 children, {wall:.1} s: parent (wait set) {:.3} % of a core, 64 children together {:.3} % (their CPU time since start {kids1:.2} s)",
        100.0 * (self1 - self0) / wall,
        100.0 * (kids1 - kids0) / wall
    );
    assert!(
        (self1 - self0) / wall < 0.01,
        "the idle set costs 1 % or more"
    );
    for kid in &mut kids {
        let _ = kid.ctl.send(b"exit");
        kid.child.wait().unwrap();
    }
}

/// This process's user + system CPU seconds (getrusage).
fn self_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to our struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A process's CPU seconds: the sum over its threads of
/// `/proc/<pid>/task/<tid>/schedstat`'s run time (nanoseconds; `stat`'s
/// clock ticks round a mostly idle process down to 0).
fn proc_cpu(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}

/// Issue: a FIFO member whose `Readable` was reported and left unreceived
/// was not polled on its pipe, but was on its child's pidfd, which stays
/// readable once the child exited: the set's `poll` returned at once,
/// forever, and the wait burnt a core until its deadline.
#[test]
fn an_ignored_fifo_event_after_the_child_exited_does_not_spin() {
    let _s = serial();
    let _w = Watchdog::new("ignored fifo event", Duration::from_secs(60));
    let mut kid = spawn_kid_over(Transport::Fifo);
    let mut set = WaitSet::new();
    set.set_wait_strategy(WaitStrategy::Block);
    set.add(&kid.req).unwrap();
    kid.ctl.send(b"send 1").unwrap();
    assert_eq!(woken(&mut set).kind(), EventKind::Readable);
    // The event is left unhandled; the child then exits.
    kid.ctl.send(b"exit").unwrap();
    kid.child.wait().unwrap();
    let wait = Duration::from_secs(1);
    let c0 = thread_cpu();
    let r = set.wait_timeout(wait);
    let cpu = thread_cpu() - c0;
    // Nothing new to report until the message is received.
    assert_eq!(r.unwrap_err(), WaitError::Timeout);
    // A spinning wait uses the whole second; a sleeping one (re-scanning
    // every 50 ms) a few milliseconds.
    assert!(
        cpu < 0.3 * wait.as_secs_f64(),
        "the set spun: {cpu:.3} s of CPU during a {wait:?} wait"
    );
    // Once received, the member is watched again and drains to the end.
    assert!(kid.req.try_recv().is_ok());
    assert_eq!(woken(&mut set).kind(), EventKind::Disconnected);
}

/// The calling thread's CPU seconds (user + system).
fn thread_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to our struct.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
