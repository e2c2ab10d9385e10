//! remora next to its peers, iceoryx2 and ipc-channel: the ping-pong round
//! trip of `examples/pingpong`, measured in one run on one machine.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --rows remora,iceoryx2 --sizes 64
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --iters 0.2 --no-pin
//! ```
//!
//! Every round trip, for every row, is the same work: the parent writes
//! `size` fresh bytes (`fill`), hands them over, the child reads and verifies
//! every byte (`verify`), writes `size` fresh bytes back, and the parent reads
//! and verifies them. `fill` and `verify` are those of
//! `examples/pingpong/baselines.rs`, included below. Each row runs in a fresh
//! child process (this binary, told its row through the environment); by
//! default the parent is pinned to CPU 0 and the child to CPU 1.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[path = "../../../examples/pingpong/baselines.rs"]
mod baselines;
mod common;
mod iox;
mod ipc;
mod remora_rows;

use std::collections::HashMap;

use baselines::{Samples, format_ns};
use common::{ChildEnv, ENV_PIN, Res, RunDir};

const SIZES: [usize; 2] = [64, 4 << 20];

/// Every row, in print order: (name, kind of wait, the row its ratio is
/// taken against).
const ROWS: [(&str, Wait, Option<&str>); 11] = [
    ("raw-shm-spin", Wait::Spin, None),
    ("raw-futex", Wait::Block, None),
    ("2x-memcpy", Wait::Spin, None),
    ("remora-spin", Wait::Spin, Some("raw-shm-spin")),
    ("remora-adaptive", Wait::Spin, Some("remora-spin")),
    ("remora-block", Wait::Block, Some("raw-futex")),
    ("iceoryx2-poll", Wait::Spin, Some("remora-spin")),
    ("iceoryx2-event", Wait::Block, Some("remora-block")),
    ("ipc-channel", Wait::Block, Some("remora-block")),
    ("ipc-bytes", Wait::Block, Some("remora-block")),
    ("ipc-shmem", Wait::Block, Some("remora-block")),
];

/// Rows that sleep in the kernel every round trip get fewer iterations
/// (a futex wake-up across vCPUs costs ~60 µs on the dev VM).
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    Spin,
    Block,
}

struct Args {
    rows: Vec<String>,
    sizes: Vec<usize>,
    scale: f64,
    passes: usize,
    pin: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        rows: vec!["all".into()],
        sizes: SIZES.to_vec(),
        scale: 1.0,
        passes: 4,
        pin: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rows" => args.rows = value().split(',').map(String::from).collect(),
            "--sizes" => {
                args.sizes = value()
                    .split(',')
                    .map(|s| s.parse().expect("size in bytes"))
                    .collect()
            }
            "--iters" => args.scale = value().parse().expect("iteration scale factor"),
            "--passes" => args.passes = value().parse::<usize>().expect("passes").max(1),
            "--no-pin" => args.pin = false,
            "--help" | "-h" => {
                println!(
                    "usage: remora-peers [--rows all|raw|remora|iceoryx2|ipc|ROW,...] \
                     [--sizes 64,4194304] [--iters SCALE] [--passes N] [--no-pin]\n\
                     rows: {}",
                    ROWS.map(|r| r.0).join(", ")
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other} (try --help)"),
        }
    }
    for &size in &args.sizes {
        assert!(
            (8..=4 << 20).contains(&size) && size % 8 == 0,
            "sizes are multiples of 8 from 8 B to 4 MiB (remora's chunked in-place \
             fill keeps `fill`'s word sequence only for those; its ring holds two \
             4 MiB messages)"
        );
    }
    args
}

/// (timed iterations, warm-up rounds) for one pass of a row.
fn iterations(size: usize, wait: Wait, scale: f64, passes: usize) -> (usize, usize) {
    let base = match (size, wait) {
        (0..=4096, Wait::Spin) => 20_000,
        (0..=4096, Wait::Block) => 5_000,
        (4097..=65536, _) => 2_000,
        _ => 200,
    };
    let iters = ((base as f64 * scale / passes as f64) as usize).max(10);
    (iters, (iters / 10).max(5))
}

fn main() {
    if let Some(env) = ChildEnv::from_env() {
        return child(env);
    }
    let args = parse_args();
    let want = |row: &str| {
        args.rows
            .iter()
            .any(|r| r == "all" || r == row || (r.len() >= 3 && row.starts_with(r.as_str())))
    };
    let run_dir = RunDir::create().expect("create the run directory");
    // SAFETY: no other thread exists yet (nothing has been spawned), so
    // nothing reads the environment concurrently. ipc-channel's one-shot
    // server puts its socket directory under TMPDIR: now inside the run dir.
    unsafe { std::env::set_var("TMPDIR", &run_dir.dir) };
    if args.pin {
        baselines::set_pinning(Some(0), Some(1));
        baselines::pin_to_cpu(0).expect("pin parent to CPU 0");
    }
    println!(
        "remora vs iceoryx2 vs ipc-channel: ping-pong round trips ({}), \
         payload written and read on both sides",
        if args.pin {
            "parent on CPU 0, child on CPU 1"
        } else {
            "not pinned"
        }
    );
    println!(
        "{} passes over all rows, samples pooled per row; pass p50s = lowest..highest \
         median of a single pass",
        args.passes
    );
    println!("ratio = this row's p50 / the named row's p50 (same size, same run)\n");
    println!(
        "{:<19} {:>8} {:>7} {:>10} {:>10} {:>21}   ratio",
        "row", "size", "n", "p50", "p99", "pass p50s"
    );
    let rows: Vec<_> = ROWS.into_iter().filter(|r| want(r.0)).collect();
    let mut p50: HashMap<(&str, usize), u64> = HashMap::new();
    let mut failures = Vec::new();
    for &size in &args.sizes {
        // Rows take turns pass by pass, so a burst of outside load does not
        // land on one row only.
        let mut pooled: Vec<(Vec<u64>, Vec<u64>)> = vec![Default::default(); rows.len()];
        for _ in 0..args.passes {
            for (i, &(row, wait, _)) in rows.iter().enumerate() {
                if failures.contains(&(row, size)) {
                    continue;
                }
                let (iters, warmup) = iterations(size, wait, args.scale, args.passes);
                match run_row(row, size, iters, warmup, args.pin, &run_dir) {
                    Ok(s) => {
                        pooled[i].1.push(s.median());
                        pooled[i].0.extend(s.0);
                    }
                    Err(e) => {
                        println!("{row:<19} {size:>8}   FAILED: {e}");
                        failures.push((row, size));
                    }
                }
            }
        }
        for (&(row, _, against), (samples, pass_p50)) in rows.iter().zip(pooled) {
            if failures.contains(&(row, size)) {
                continue;
            }
            let s = Samples(samples);
            let ratio = against
                .and_then(|a| p50.get(&(a, size)).map(|&b| (a, b)))
                .map(|(a, b)| format!("{:.2}x {a}", s.median() as f64 / b as f64))
                .unwrap_or_default();
            let (lo, hi) = (pass_p50.iter().min(), pass_p50.iter().max());
            let range = format!("{}..{}", format_ns(*lo.unwrap()), format_ns(*hi.unwrap()));
            println!(
                "{row:<19} {size:>8} {:>7} {:>10} {:>10} {range:>21}   {ratio}",
                s.0.len(),
                format_ns(s.median()),
                format_ns(s.percentile(99.0)),
            );
            p50.insert((row, size), s.median());
        }
    }
    summary(&p50, &args.sizes);
    let left = run_dir.remove();
    if !left.is_empty() {
        println!(
            "\nremoved what iceoryx2 left in /dev/shm: {}",
            left.join(" ")
        );
    }
    assert!(failures.is_empty(), "rows failed: {failures:?}");
}

fn run_row(
    row: &str,
    size: usize,
    iters: usize,
    warmup: usize,
    pin: bool,
    run_dir: &RunDir,
) -> Res<Samples> {
    match row {
        "raw-shm-spin" => Ok(baselines::shm_spin_pingpong(size, iters, warmup)),
        "raw-futex" => Ok(baselines::futex_pingpong(size, iters, warmup)),
        "2x-memcpy" => Ok(baselines::memcpy_pair(size, iters, warmup)),
        r if r.starts_with("remora-") => remora_rows::run(r, size, iters, warmup, pin, run_dir),
        r if r.starts_with("iceoryx2-") => iox::run(r, size, iters, warmup, pin, run_dir),
        r if r.starts_with("ipc-") => ipc::run(r, size, iters, warmup, pin, run_dir),
        other => Err(format!("unknown row {other}")),
    }
}

/// The comparisons issue 6 asks for, spelled out.
fn summary(p50: &HashMap<(&str, usize), u64>, sizes: &[usize]) {
    let pairs = [
        ("remora-spin", "iceoryx2-poll"),
        ("remora-block", "iceoryx2-event"),
        ("remora-block", "ipc-channel"),
        ("remora-block", "ipc-bytes"),
        ("remora-block", "ipc-shmem"),
        ("remora-spin", "ipc-bytes"),
    ];
    let mut header = false;
    for &size in sizes {
        for (ours, theirs) in pairs {
            let (Some(&a), Some(&b)) = (p50.get(&(ours, size)), p50.get(&(theirs, size))) else {
                continue;
            };
            if !header {
                println!("\nmedians compared (< 1: remora is faster):");
                header = true;
            }
            println!(
                "  {size:>8} B  {ours:<13} / {theirs:<19} = {:.2}  ({} vs {})",
                a as f64 / b as f64,
                format_ns(a),
                format_ns(b)
            );
        }
    }
}

fn child(env: ChildEnv) {
    // Never outlive the parent, whatever it is blocked in.
    remora::set_parent_death_signal(libc::SIGKILL).expect("PR_SET_PDEATHSIG");
    if std::env::var(ENV_PIN).as_deref() == Ok("1") {
        baselines::pin_to_cpu(1).expect("pin child to CPU 1");
    }
    let result = match env.row.as_str() {
        r if r.starts_with("remora-") => remora_rows::child(&env),
        r if r.starts_with("iceoryx2-") => iox::child(&env),
        r if r.starts_with("ipc-") => ipc::child(&env),
        other => Err(format!("unknown row {other}")),
    };
    if let Err(e) = result {
        eprintln!("child {} ({} B): {e}", env.row, env.size);
        std::process::exit(1);
    }
}
