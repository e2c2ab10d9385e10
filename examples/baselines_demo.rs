//! Temporary driver for `pingpong/baselines.rs`: prints a table of baseline
//! round trips. `BASELINES_PIN=PARENT,CHILD` pins both sides (e.g. `0,1`).

#[path = "pingpong/baselines.rs"]
mod baselines;

use baselines::{Samples, format_ns};

type Baseline = fn(usize, usize, usize) -> Samples;

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("BASELINES_PIN") {
        let cpu = |s: Option<&str>| s.and_then(|s| s.trim().parse().ok());
        let mut it = spec.split(',');
        let (parent, child) = (cpu(it.next()), cpu(it.next()));
        baselines::set_pinning(parent, child);
        println!("pinning: parent {parent:?}, child {child:?}");
    }
    let t = baselines::timer_overhead(100_000);
    println!(
        "timer overhead (in every sample): median {}, p99 {}",
        format_ns(t.median()),
        format_ns(t.percentile(99.0))
    );
    let runs: [(&str, Baseline); 6] = [
        ("shm_spin", baselines::shm_spin_pingpong),
        ("futex", baselines::futex_pingpong),
        ("pipe", baselines::pipe_pingpong),
        ("unix_socket", baselines::unix_socket_pingpong),
        ("crossbeam", baselines::crossbeam_pingpong),
        ("memcpy_pair", baselines::memcpy_pair),
    ];
    println!(
        "{:<12} {:>8} {:>7} {:>10} {:>10} {:>10}",
        "baseline", "payload", "iters", "median", "p99", "p99.9"
    );
    for (payload, iters) in [(64, 20_000), (4096, 20_000), (65536, 5_000), (4 << 20, 200)] {
        for (name, run) in runs {
            let s = run(payload, iters, (iters / 10).max(10));
            let p50 = format_ns(s.median());
            let [p99, p999] = [99.0, 99.9].map(|p| format_ns(s.percentile(p)));
            println!(
                "{name:<12} {:>8} {iters:>7} {p50:>10} {p99:>10} {p999:>10}",
                size(payload)
            );
        }
    }
    let rate = baselines::crossbeam_throughput(5_000_000);
    println!(
        "crossbeam_throughput (64 B msgs, bounded(1024)): {:.1} M msgs/s",
        rate / 1e6
    );
}
