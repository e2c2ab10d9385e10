//! Round trip over remora's FIFO transport next to a raw pipe round trip,
//! measured in the same run on the same machine.
//!
//! ```text
//! cargo run --release --example fifo_rtt                  # unpinned
//! cargo run --release --example fifo_rtt -- --pin         # parent CPU 0, child CPU 1
//! cargo run --release --example fifo_rtt -- --scale 0.2   # fewer iterations
//! cargo run --release --example fifo_rtt -- --only block  # one wait strategy
//! ```
//!
//! Both sides do the same work as the `pipe` baseline of
//! `pingpong/baselines.rs`: every round trip fills a `size`-byte buffer with
//! fresh bytes and sends it on each side, and reads (and verifies) every
//! byte the other side wrote. The baseline does it with blocking
//! `write`/`read` on two anonymous pipes (1 MiB buffers); remora does it
//! with `RawSender::send` / `RawReceiver::recv` on a raw channel over
//! `Transport::Fifo` (default 1 MiB capacity, so 1 MiB pipe buffers too;
//! the frame goes out with one `writev` from the caller's buffer and is
//! verified in place in the receive buffer), the child being this binary
//! re-executed by `remora::Spawner`. Medians
//! and p99 of the parent-side round trip are printed, with the ratio to the
//! baseline.

#[path = "pingpong/baselines.rs"]
mod baselines;

use std::time::Instant;

use baselines::{Samples, fill, format_ns, ping_seed, pong_seed, verify};
use remora::{RawReceiver, RawSender, Spawner, Transport, WaitStrategy};

/// Set in the child: `<size> <rounds> <strategy> <cpu or ->`.
const CHILD_ENV: &str = "FIFO_RTT_CHILD";

const STRATEGIES: [WaitStrategy; 3] = [
    WaitStrategy::Adaptive,
    WaitStrategy::Block,
    WaitStrategy::Spin,
];

fn strategy_name(s: WaitStrategy) -> &'static str {
    match s {
        WaitStrategy::Spin => "spin",
        WaitStrategy::Block => "block",
        _ => "adaptive",
    }
}

fn strategy_from(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::Spin,
        "block" => WaitStrategy::Block,
        _ => WaitStrategy::Adaptive,
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pin = args.iter().any(|a| a == "--pin");
    let scale: f64 = args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| strategy_from(s));
    if pin {
        baselines::set_pinning(Some(0), Some(1));
        baselines::pin_to_cpu(0).expect("pin the parent to CPU 0");
    }
    println!(
        "fifo_rtt: pinning {}, medians of the parent-side round trip",
        if pin {
            "parent CPU 0, child CPU 1"
        } else {
            "off"
        }
    );
    println!(
        "{:<16} {:>8} {:>7} {:>10} {:>10} {:>8}",
        "what", "payload", "iters", "median", "p99", "/ pipe"
    );
    for (size, iters) in [(64usize, 20_000usize), (65536, 5_000)] {
        let iters = ((iters as f64 * scale) as usize).max(100);
        let warmup = (iters / 10).max(10);
        let pipe = baselines::pipe_pingpong(size, iters, warmup);
        row("pipe (raw)", size, iters, &pipe, pipe.median());
        for strategy in STRATEGIES
            .into_iter()
            .filter(|s| only.is_none_or(|o| o == *s))
        {
            let s = fifo_pingpong(size, iters, warmup, strategy, pin);
            let label = format!("fifo {}", strategy_name(strategy));
            row(&label, size, iters, &s, pipe.median());
        }
    }
}

fn row(label: &str, size: usize, iters: usize, s: &Samples, pipe_median: u64) {
    let size = if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    };
    println!(
        "{label:<16} {size:>8} {iters:>7} {:>10} {:>10} {:>7.2}x",
        format_ns(s.median()),
        format_ns(s.percentile(99.0)),
        s.median() as f64 / pipe_median as f64
    );
}

/// Parent: `iters + warmup` round trips of `size` bytes over a FIFO raw
/// channel with a freshly spawned child.
fn fifo_pingpong(
    size: usize,
    iters: usize,
    warmup: usize,
    strategy: WaitStrategy,
    pin: bool,
) -> Samples {
    let total = iters + warmup;
    let spec = format!(
        "{size} {total} {} {}",
        strategy_name(strategy),
        if pin { "1" } else { "-" }
    );
    let mut child = Spawner::new(std::env::current_exe().expect("current_exe"))
        .env(CHILD_ENV, spec)
        .transport(Transport::Fifo)
        .channel("rtt")
        .spawn()
        .expect("spawn the child");
    assert_eq!(child.transport(), Transport::Fifo);
    let (mut tx, mut rx) = child.raw_channel("rtt").expect("channel");
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    let mut samples = Vec::with_capacity(iters);
    let mut buf = vec![0u8; size];
    for k in 1..=total as u32 {
        let t0 = Instant::now();
        fill(&mut buf, ping_seed(k));
        tx.send(&buf).expect("ping");
        let reply = rx.recv().expect("pong");
        verify(&reply, pong_seed(k)).expect("corrupt pong");
        drop(reply);
        let dt = t0.elapsed();
        if k as usize > warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    drop((tx, rx));
    let status = child.wait().expect("wait");
    assert!(status.success(), "child failed: {status}");
    Samples(samples)
}

/// Child: echoes `rounds` round trips.
fn child(spec: &str) {
    let mut it = spec.split_whitespace();
    let size: usize = it.next().unwrap().parse().unwrap();
    let rounds: u32 = it.next().unwrap().parse().unwrap();
    let strategy = strategy_from(it.next().unwrap());
    if let Some(cpu) = it.next().and_then(|c| c.parse().ok()) {
        baselines::pin_to_cpu(cpu).expect("pin the child");
    }
    let conn = remora::connect().expect("connect");
    let (mut tx, mut rx): (RawSender, RawReceiver) = conn.raw_channel("rtt").expect("channel");
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    let mut buf = vec![0u8; size];
    for k in 1..=rounds {
        let ping = rx.recv().expect("ping");
        verify(&ping, ping_seed(k)).expect("corrupt ping");
        drop(ping);
        fill(&mut buf, pong_seed(k));
        tx.send(&buf).expect("pong");
    }
}
