//! The `waitset` rows (`--rows waitset`): what waiting on many channels
//! costs next to a plain `recv`, and one server thread with a `WaitSet`
//! against one thread per child.
//!
//! * Latency: a child echoes 64-byte pings on one channel; the parent's
//!   `WaitSet` holds that channel and N-1 idle ones (in segments of this
//!   process, 32 channels each), N = 1, 8, 64, 256. Each row alternates
//!   blocks of plain `recv` round trips and set round trips (`send`,
//!   `wait`, `try_recv`) in the same run, for Spin, Adaptive and Block
//!   (both sides wait with the row's strategy).
//! * Requests/s: N children (8, 32) each send 64-byte requests and wait
//!   for the reply, in a closed loop; the parent serves them from one
//!   thread with a `WaitSet`, or from N threads with a plain `recv` each.
//!   Parent threads are not pinned in these rows.

use std::time::{Duration, Instant};

use remora::{
    ChannelConfig, Child, EventKind, RawReceiver, RawSender, Segment, Spawner, WaitSet,
    WaitStrategy,
};

use crate::baselines::{Samples, format_ns};

/// Environment variable naming this module's child roles.
pub const ROLE: &str = "PINGPONG_WAITSET_ROLE";

/// The rows; `scale` scales the iteration counts; `pin`: the latency
/// rows' echo child runs on CPU 1 (the parent is on CPU 0 already).
pub fn rows(scale: f64, pin: bool) {
    println!();
    println!(
        "waitset: 64 B round trip, one active channel among N in one WaitSet, next to plain recv (p50; same run)"
    );
    println!(
        "{:<10} {:>5} {:>12} {:>12} {:>8} {:>10}",
        "strategy", "N", "plain recv", "set wait", "ratio", "diff"
    );
    let mut echo = spawn(if pin { "echo-pinned" } else { "echo" }, 1);
    let (mut tx, mut rx) = echo.raw_channel("c0").expect("c0");
    let mut idle_ends = Vec::new();
    let mut idle_rx: Vec<RawReceiver> = Vec::new();
    for n in [1usize, 8, 64, 256] {
        while idle_rx.len() < n - 1 {
            let (seg_ends, rxs) = idle_segment(32.min(n - 1 - idle_rx.len()));
            idle_ends.push(seg_ends);
            idle_rx.extend(rxs);
        }
        let mut set = WaitSet::new();
        let key = set.add(&rx).expect("add");
        for r in &idle_rx[..n - 1] {
            set.add(r).expect("add idle");
        }
        for strategy in [
            WaitStrategy::Spin,
            WaitStrategy::Adaptive,
            WaitStrategy::Block,
        ] {
            rx.set_wait_strategy(strategy);
            set.set_wait_strategy(strategy);
            let iters = ((if strategy == WaitStrategy::Block {
                2_000.0
            } else {
                10_000.0
            }) * scale) as usize;
            let iters = iters.max(20);
            let (mut plain, mut via_set) = (Vec::new(), Vec::new());
            // Alternate blocks so drift on a busy machine hits both alike.
            for block in 0..10 {
                for _ in 0..iters / 10 {
                    let t = Instant::now();
                    tx.send(&[strategy_code(strategy); 64]).expect("ping");
                    drop(rx.recv().expect("pong"));
                    plain.push(t.elapsed().as_nanos() as u64);
                    let t = Instant::now();
                    tx.send(&[strategy_code(strategy); 64]).expect("ping");
                    let ev = set.wait().expect("wait");
                    assert_eq!((ev.key(), ev.kind()), (key, EventKind::Readable));
                    drop(rx.try_recv().expect("pong after event"));
                    via_set.push(t.elapsed().as_nanos() as u64);
                }
                if block == 0 {
                    // The first block is warm-up.
                    plain.clear();
                    via_set.clear();
                }
            }
            let (p, s) = (Samples(plain).median(), Samples(via_set).median());
            println!(
                "{:<10} {:>5} {:>12} {:>12} {:>7.2}x {:>10}",
                format!("{strategy:?}"),
                n,
                format_ns(p),
                format_ns(s),
                s as f64 / p as f64,
                format!("{:+} ns", s as i64 - p as i64)
            );
        }
    }
    tx.send(&[]).expect("quit");
    drop((tx, rx));
    echo.wait().expect("echo child");
    drop(idle_ends);

    println!();
    println!(
        "waitset: requests/s, N children each in a closed request/reply loop (64 B, Adaptive)"
    );
    unpin();
    for n in [8usize, 32] {
        let per_child = ((40_000.0 * scale) as usize / n).max(50);
        let one = serve(n, per_child, true);
        let many = serve(n, per_child, false);
        println!(
            "  N = {n:>3}: one thread + WaitSet {:>9.0} req/s   {n} threads {:>9.0} req/s   ({:.2}x)",
            one,
            many,
            one / many
        );
    }
}

/// Runs `n` clients of `per_child` requests each; returns requests/s.
fn serve(n: usize, per_child: usize, one_thread: bool) -> f64 {
    let mut kids: Vec<Child> = (0..n).map(|_| spawn("client", per_child)).collect();
    let mut ends: Vec<(RawSender, RawReceiver)> = kids
        .iter_mut()
        .map(|k| k.raw_channel("c0").expect("c0"))
        .collect();
    let t0 = Instant::now();
    // Start: one byte each, so every child is connected before timing.
    for (tx, _) in &mut ends {
        tx.send(b"go").expect("go");
    }
    let total = n * per_child;
    if one_thread {
        let mut set = WaitSet::new();
        let keys: Vec<_> = ends
            .iter()
            .map(|(_, rx)| set.add(rx).expect("add"))
            .collect();
        let mut served = 0;
        while served < total {
            let ev = set.wait().expect("wait");
            if ev.kind() != EventKind::Readable {
                continue;
            }
            let i = keys.iter().position(|k| *k == ev.key()).expect("key");
            let (tx, rx) = &mut ends[i];
            while let Ok(req) = rx.try_recv() {
                tx.send(&req).expect("reply");
                served += 1;
            }
        }
    } else {
        std::thread::scope(|s| {
            for (tx, rx) in &mut ends {
                s.spawn(move || {
                    for _ in 0..per_child {
                        let req = rx.recv().expect("request");
                        tx.send(&req).expect("reply");
                    }
                });
            }
        });
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    drop(ends);
    for k in &mut kids {
        k.wait().expect("client");
    }
    rate
}

/// A segment of `n` idle channels in this process: its ends (kept open so
/// nothing disconnects) and the creator-side receivers.
fn idle_segment(n: usize) -> (Vec<Box<dyn std::any::Any>>, Vec<RawReceiver>) {
    let names: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
    let configs: Vec<_> = names
        .iter()
        .map(|c| ChannelConfig::new(c).capacity(4096))
        .collect();
    let parent = Segment::create(&configs).expect("idle segment");
    let child = Segment::open(parent.name()).expect("open idle segment");
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut rxs = Vec::new();
    for name in &names {
        let (tx, _) = child.raw_channel(name).expect("idle tx");
        let (_, rx) = parent.raw_channel(name).expect("idle rx");
        keep.push(Box::new(tx));
        rxs.push(rx);
    }
    keep.push(Box::new(child));
    keep.push(Box::new(parent));
    (keep, rxs)
}

fn spawn(role: &str, count: usize) -> Child {
    Spawner::new(std::env::current_exe().expect("current_exe"))
        .env(ROLE, format!("{role} {count}"))
        .channel_with(ChannelConfig::new("c0").capacity(1 << 16))
        .spawn()
        .expect("spawn")
}

fn strategy_code(s: WaitStrategy) -> u8 {
    match s {
        WaitStrategy::Spin => 1,
        WaitStrategy::Adaptive => 2,
        WaitStrategy::Block => 3,
    }
}

/// Lets this thread (and the threads it starts) run on every CPU.
fn unpin() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes into
    // it; sched_setaffinity reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The children of these rows: `echo` returns every ping (waiting with the
/// strategy named in its first byte) until an empty one; `client <n>` sends
/// `n` requests after the parent's go, each after the previous reply.
pub fn child(role: &str) {
    let conn = remora::connect().expect("connect");
    let (mut tx, mut rx) = conn.raw_channel("c0").expect("c0");
    let mut words = role.split(' ');
    match words.next() {
        Some(echo @ ("echo" | "echo-pinned")) => {
            if echo == "echo-pinned" {
                crate::baselines::pin_to_cpu(1).expect("pin echo child to CPU 1");
            }
            loop {
                let ping = rx.recv_timeout(Duration::from_secs(120)).expect("ping");
                if ping.is_empty() {
                    return;
                }
                let strategy = match ping[0] {
                    1 => WaitStrategy::Spin,
                    3 => WaitStrategy::Block,
                    _ => WaitStrategy::Adaptive,
                };
                tx.send(&ping).expect("pong");
                drop(ping);
                rx.set_wait_strategy(strategy);
            }
        }
        Some("client") => {
            let n: usize = words.next().and_then(|c| c.parse().ok()).expect("count");
            drop(rx.recv_timeout(Duration::from_secs(120)).expect("go"));
            let req = [7u8; 64];
            for _ in 0..n {
                tx.send(&req).expect("request");
                drop(rx.recv_timeout(Duration::from_secs(120)).expect("reply"));
            }
        }
        other => panic!("unknown role {other:?}"),
    }
}
