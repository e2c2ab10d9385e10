//! Round-trip latency and throughput of remora next to the baselines that
//! bound it, measured in one run on one machine.
//!
//! ```text
//! cargo run --release --example pingpong                 # everything, < 60 s
//! cargo run --release --example pingpong -- --rows spin,baselines --sizes 64
//! cargo run --release --example pingpong -- --iters 0.2  # scale iteration counts
//! cargo run --release --example pingpong -- --no-pin     # leave placement to the scheduler
//! cargo run --release --example pingpong -- --rows typed # typed: copy (default) vs in place
//! ```
//!
//! The parent spawns this binary again as its child with `remora::Spawner`.
//! Every round trip writes `size` fresh bytes on each side and reads (and
//! verifies) every byte the other side wrote, exactly like the baselines in
//! `baselines.rs`, so zero-copy is not measured as "touched nothing". By
//! default the parent runs on CPU 0 and the child on CPU 1.
//!
//! The raw rows (`spin`, `adaptive`, `block`, `fifo`) measure the protocol:
//! the parent declares trust in its child (this same binary) with the
//! `unsafe` `trust_peer`, so both sides read in place. The `typed` rows
//! send `Blob { seq, data: Vec<u8> }` both ways (`Spin`) and compare the
//! receive modes: `typed-inplace` (both sides trusted, zero-copy),
//! `typed-copy` (the spawner's defaults: the parent copies each reply into
//! its private buffer, the child reads in place) and `typed-copy2` (both
//! sides copy, as both ends of a `Segment` do by default).

mod baselines;
mod calls;
mod waitset;

use std::time::{Duration, Instant};

use baselines::{Samples, fill, format_ns, ping_seed, pong_seed, verify};
use remora::{
    ChannelConfig, Child, RawReceiver, RawSender, Receiver, Sender, Spawner, Transport,
    WaitStrategy,
};

/// A baseline row: `(payload, iters, warmup) -> samples`.
type Baseline = fn(usize, usize, usize) -> Samples;

/// Payload ring: room for two 4 MiB messages in flight.
const PAYLOAD_CAPACITY: usize = 16 << 20;
/// The small streaming ring: about what crossbeam's `bounded(1024)` holds
/// (1024 slots of 72 bytes; a 64-byte remora frame takes 80).
const SMALL_RING: usize = 128 << 10;
const SIZES: [usize; 4] = [64, 4096, 65536, 4 << 20];
const ROLE_ENV: &str = "PINGPONG_ROLE";

/// What the parent asks the child to do next (on the `ctl` channel).
#[derive(rkyv::Archive, rkyv::Serialize, Debug)]
enum Control {
    /// Echo `rounds` round trips of `size` bytes, waiting with `strategy`.
    PingPong {
        strategy: u8,
        size: u64,
        rounds: u32,
    },
    /// Receive `count` 64-byte messages (on the small ring, or on the
    /// payload ring), then reply once.
    Stream {
        strategy: u8,
        count: u64,
        small_ring: bool,
    },
    /// Echo `rounds` typed round trips of `size` bytes on the typed
    /// channel, copying each received message first if `copy`.
    Typed {
        size: u64,
        rounds: u32,
        copy: bool,
    },
    Quit,
}

/// The typed rows' message.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Blob {
    seq: u32,
    data: Vec<u8>,
}

fn strategy_code(s: WaitStrategy) -> u8 {
    match s {
        WaitStrategy::Spin => 0,
        WaitStrategy::Block => 1,
        _ => 2,
    }
}

fn strategy_from(code: u8) -> WaitStrategy {
    match code {
        0 => WaitStrategy::Spin,
        1 => WaitStrategy::Block,
        _ => WaitStrategy::Adaptive,
    }
}

struct Args {
    rows: Vec<String>,
    sizes: Vec<usize>,
    scale: f64,
    pin: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        rows: [
            "spin",
            "adaptive",
            "block",
            "fifo",
            "baselines",
            "typed",
            "throughput",
            "calls",
        ]
        .map(String::from)
        .to_vec(),
        sizes: SIZES.to_vec(),
        scale: 1.0,
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
            "--no-pin" => args.pin = false,
            "--help" | "-h" => {
                println!(
                    "usage: pingpong [--rows spin,adaptive,block,fifo,baselines,typed,throughput,calls] [--sizes 64,4096,...] [--iters SCALE] [--no-pin]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown flag {other} (try --help)"),
        }
    }
    args
}

/// Iterations for a payload size: many for small messages, few for 4 MiB.
fn iterations(size: usize, strategy: Option<WaitStrategy>, scale: f64) -> (usize, usize) {
    let base = match size {
        0..=4096 => 20_000,
        4097..=65536 => 4_000,
        _ => 200,
    };
    // A futex round trip costs ~100 µs on a VM: fewer rounds, same precision.
    let base = if strategy == Some(WaitStrategy::Block) {
        base / 4
    } else {
        base
    };
    let iters = ((base as f64 * scale) as usize).max(10);
    (iters, (iters / 10).max(5))
}

fn main() {
    if calls::is_child() {
        return calls::child();
    }
    if let Ok(role) = std::env::var(waitset::ROLE) {
        return waitset::child(&role);
    }
    if std::env::var_os(ROLE_ENV).is_some() {
        return child();
    }
    let args = parse_args();
    if args.pin {
        baselines::set_pinning(Some(0), Some(1));
        baselines::pin_to_cpu(0).expect("pin parent to CPU 0");
    }
    let want = |row: &str| args.rows.iter().any(|r| r == row);
    let mut peers: Vec<Peer> = [Transport::Shm, Transport::Fifo]
        .into_iter()
        .filter(|&t| t == Transport::Shm || want("fifo"))
        .map(|t| Peer::spawn(t, args.pin))
        .collect();

    println!(
        "remora pingpong: round trips in ns (p50 / p99 / p99.9); ratio = remora p50 / baseline p50"
    );
    println!(
        "{:<14} {:>8} {:>10} {:>10} {:>10}   {:<28}",
        "row", "size", "p50", "p99", "p99.9", "ratio"
    );
    for &size in &args.sizes {
        let mut floor = std::collections::HashMap::new();
        if want("baselines") {
            let (iters, warmup) = iterations(size, None, args.scale);
            let rows: [(&str, Baseline); 7] = [
                ("raw-shm-spin", baselines::shm_spin_pingpong),
                ("raw-futex", baselines::futex_pingpong),
                ("pipe", baselines::pipe_pingpong),
                ("unix-socket", baselines::unix_socket_pingpong),
                ("crossbeam", baselines::crossbeam_pingpong),
                ("2x-memcpy", baselines::memcpy_pair),
                ("1-core-work", baselines::local_fill_verify),
            ];
            for (name, f) in rows {
                let (iters, warmup) =
                    if name == "raw-futex" || name == "pipe" || name == "unix-socket" {
                        iterations(size, Some(WaitStrategy::Block), args.scale)
                    } else {
                        (iters, warmup)
                    };
                let s = f(size, iters, warmup);
                print_row(name, size, &s, None);
                floor.insert(name, s.median());
            }
        }
        if want("typed") {
            let (iters, warmup) = iterations(size, Some(WaitStrategy::Spin), args.scale);
            let peer = &mut peers[0];
            let inplace = peer.typed(TypedMode::InPlace, size, iters, warmup);
            print_row("typed-inplace", size, &inplace, None);
            let base = Some(("typed-inplace", inplace.median()));
            let copy = peer.typed(TypedMode::ParentCopies, size, iters, warmup);
            print_row("typed-copy", size, &copy, base);
            let copy2 = peer.typed(TypedMode::BothCopy, size, iters, warmup);
            print_row("typed-copy2", size, &copy2, base);
        }
        for peer in &mut peers {
            let transport = peer.child.transport();
            let mut spin_p50 = None;
            for (row, strategy) in [
                ("spin", WaitStrategy::Spin),
                ("adaptive", WaitStrategy::Adaptive),
                ("block", WaitStrategy::Block),
            ] {
                if !want(row) {
                    continue;
                }
                let (iters, warmup) = iterations(size, Some(strategy), args.scale);
                let s = peer.pingpong(strategy, size, iters, warmup);
                let baseline = match (transport, strategy) {
                    (Transport::Fifo, _) => floor.get("pipe").map(|&b| ("pipe", b)),
                    (_, WaitStrategy::Spin) => {
                        floor.get("raw-shm-spin").map(|&b| ("raw-shm-spin", b))
                    }
                    (_, WaitStrategy::Block) => floor.get("raw-futex").map(|&b| ("raw-futex", b)),
                    _ => spin_p50.map(|b| ("shm-spin", b)),
                };
                print_row(&format!("{transport}-{row}"), size, &s, baseline);
                if size >= 1 << 20 && transport == Transport::Shm {
                    for other in ["2x-memcpy", "1-core-work", "unix-socket"] {
                        if let Some(&b) = floor.get(other) {
                            println!(
                                "{:<14} {:>8} {:>34}   {:.2}x {other}",
                                "",
                                "",
                                "",
                                s.median() as f64 / b as f64
                            );
                        }
                    }
                }
                if strategy == WaitStrategy::Spin {
                    spin_p50 = Some(s.median());
                }
            }
        }
    }
    if want("throughput") {
        let n = (2_000_000.0 * args.scale) as u64;
        let crossbeam = baselines::crossbeam_throughput(n as usize);
        println!();
        println!(
            "one-way 64 B throughput, M msg/s: crossbeam bounded(1024) {:.2}",
            crossbeam / 1e6
        );
        for (ring, small_ring) in [("128 KiB", true), ("16 MiB", false)] {
            let remora = peers[0].stream(WaitStrategy::Adaptive, n, small_ring);
            println!(
                "  remora-adaptive, {ring} ring: {:.2} = {:.2}x crossbeam",
                remora / 1e6,
                remora / crossbeam
            );
        }
    }
    for peer in peers {
        peer.quit();
    }
    if want("calls") {
        calls::rows(&args);
    }
    if want("waitset") {
        waitset::rows(args.scale, args.pin); // opt-in: --rows waitset
    }
}

/// A child serving pingpong rows over one transport.
struct Peer {
    child: Child,
    ctl: Sender<Control>,
    tx: RawSender,
    rx: RawReceiver,
    stream: RawSender,
    typed_tx: Sender<Blob>,
    typed_rx: Receiver<Blob>,
}

/// Who copies in a typed row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TypedMode {
    /// Both sides read in place (both trust their peer).
    InPlace,
    /// The spawner's defaults: the parent copies, the child reads in place.
    ParentCopies,
    /// Both sides copy (both ends of a `Segment` by default).
    BothCopy,
}

impl Peer {
    fn spawn(transport: Transport, pin: bool) -> Peer {
        let child = Spawner::new(std::env::current_exe().expect("current_exe"))
            .env(ROLE_ENV, "child")
            .env("PINGPONG_PIN", if pin { "1" } else { "0" })
            .transport(transport)
            .channel_with(ChannelConfig::new("ctl").capacity(4096))
            .channel_with(ChannelConfig::new("pp").capacity(PAYLOAD_CAPACITY))
            .channel_with(ChannelConfig::new("stream").capacity(SMALL_RING))
            .channel_with(ChannelConfig::new("typed").capacity(PAYLOAD_CAPACITY))
            .spawn()
            .expect("spawn child");
        let (ctl, _) = child.channel::<Control, ()>("ctl").expect("ctl channel");
        let (tx, mut rx) = child.raw_channel("pp").expect("pp channel");
        // SAFETY: the child is this same binary, whose code never writes a
        // frame after sending it: the raw rows measure the protocol in place.
        unsafe { rx.trust_peer() };
        let (stream, _) = child.raw_channel("stream").expect("stream channel");
        let (typed_tx, typed_rx) = child.channel("typed").expect("typed channel");
        Peer {
            child,
            ctl,
            tx,
            rx,
            stream,
            typed_tx,
            typed_rx,
        }
    }

    /// One typed row: `warmup + iters` round trips of a `size`-byte `Blob`.
    fn typed(&mut self, mode: TypedMode, size: usize, iters: usize, warmup: usize) -> Samples {
        let (tx, rx) = (&mut self.typed_tx, &mut self.typed_rx);
        tx.set_wait_strategy(WaitStrategy::Spin);
        rx.set_wait_strategy(WaitStrategy::Spin);
        if mode == TypedMode::InPlace {
            // SAFETY: the child is this same binary (see `Peer::spawn`).
            unsafe { rx.trust_peer() };
        } else {
            rx.distrust_peer();
        }
        let total = (iters + warmup) as u32;
        self.ctl
            .send(&Control::Typed {
                size: size as u64,
                rounds: total,
                copy: mode == TypedMode::BothCopy,
            })
            .expect("control");
        let mut blob = Blob {
            seq: 0,
            data: vec![0; size],
        };
        let mut samples = Vec::with_capacity(iters);
        for k in 1..=total {
            let t0 = Instant::now();
            blob.seq = k;
            fill(&mut blob.data, ping_seed(k));
            tx.send(&blob).expect("typed send");
            let reply = rx.recv().expect("typed recv");
            assert_eq!(reply.seq, k);
            verify(&reply.data, pong_seed(k)).expect("corrupt typed pong");
            drop(reply);
            let dt = t0.elapsed();
            if k as usize > warmup {
                samples.push(dt.as_nanos() as u64);
            }
        }
        Samples(samples)
    }

    fn pingpong(
        &mut self,
        strategy: WaitStrategy,
        size: usize,
        iters: usize,
        warmup: usize,
    ) -> Samples {
        remora_pingpong(
            &mut self.ctl,
            &mut self.tx,
            &mut self.rx,
            strategy,
            size,
            iters,
            warmup,
        )
    }

    fn stream(&mut self, strategy: WaitStrategy, count: u64, small_ring: bool) -> f64 {
        let tx = if small_ring {
            &mut self.stream
        } else {
            &mut self.tx
        };
        remora_stream(&mut self.ctl, tx, &mut self.rx, strategy, count, small_ring)
    }

    fn quit(mut self) {
        self.ctl.send(&Control::Quit).expect("quit");
        drop((self.tx, self.rx, self.stream, self.ctl));
        drop((self.typed_tx, self.typed_rx));
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "child failed: {status}");
    }
}

fn print_row(name: &str, size: usize, s: &Samples, baseline: Option<(&str, u64)>) {
    let ratio = baseline
        .map(|(b, p50)| format!("{:.2}x {b}", s.median() as f64 / p50 as f64))
        .unwrap_or_default();
    println!(
        "{:<14} {:>8} {:>10} {:>10} {:>10}   {ratio}",
        name,
        size,
        format_ns(s.median()),
        format_ns(s.percentile(99.0)),
        format_ns(s.percentile(99.9)),
    );
}

/// Sends `size` bytes of `fill(.., seed)` content, generated straight into
/// the ring word by word through the slot's raw pointer, as the raw
/// shared-memory baseline fills its buffer (sizes are multiples of 8).
/// (Until issue 15's third pass this filled an L1-sized chunk and copied it
/// in with `write_at`: one more pass over the payload than the baseline,
/// which was all of the 4 MiB gap to it.)
fn send_filled(tx: &mut RawSender, size: usize, seed: u64) {
    assert_eq!(size % 8, 0, "payload sizes are multiples of 8");
    tx.send_in_place(size, |slot| {
        let p = slot.as_mut_ptr();
        for i in 0..size / 8 {
            let word = seed.wrapping_add(i as u64).to_le();
            // SAFETY: word `i` lies within the slot's `size` bytes, and the
            // slot lives for this closure.
            unsafe { p.add(8 * i).cast::<u64>().write_unaligned(word) };
        }
    })
    .expect("send");
}

/// Bytes a typed payload writer generates per step (`calls.rs`): fits in L1.
const CHUNK: usize = 4096;

fn set_strategy(tx: &mut RawSender, rx: &mut RawReceiver, strategy: WaitStrategy) {
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
}

/// One remora row: `warmup + iters` round trips of `size` bytes each way.
fn remora_pingpong(
    ctl: &mut remora::Sender<Control>,
    tx: &mut RawSender,
    rx: &mut RawReceiver,
    strategy: WaitStrategy,
    size: usize,
    iters: usize,
    warmup: usize,
) -> Samples {
    set_strategy(tx, rx, strategy);
    let total = (iters + warmup) as u32;
    ctl.send(&Control::PingPong {
        strategy: strategy_code(strategy),
        size: size as u64,
        rounds: total,
    })
    .expect("control");
    let mut samples = Vec::with_capacity(iters);
    for k in 1..=total {
        let t0 = Instant::now();
        send_filled(tx, size, ping_seed(k));
        let reply = rx.recv().expect("recv pong");
        verify(&reply, pong_seed(k)).expect("corrupt pong");
        drop(reply);
        let dt = t0.elapsed();
        if k as usize > warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    Samples(samples)
}

/// One-way streaming of `count` 64-byte messages; messages per second.
fn remora_stream(
    ctl: &mut remora::Sender<Control>,
    tx: &mut RawSender,
    rx: &mut RawReceiver,
    strategy: WaitStrategy,
    count: u64,
    small_ring: bool,
) -> f64 {
    set_strategy(tx, rx, strategy);
    ctl.send(&Control::Stream {
        strategy: strategy_code(strategy),
        count,
        small_ring,
    })
    .expect("control");
    let mut m = [0u8; 64];
    let t0 = Instant::now();
    for i in 0..count {
        fill(&mut m, i);
        tx.send(&m).expect("stream send");
    }
    let done = rx.recv().expect("stream ack");
    assert_eq!(&*done, b"ok", "child reported a bad stream");
    drop(done);
    count as f64 / t0.elapsed().as_secs_f64()
}

fn child() {
    if std::env::var("PINGPONG_PIN").as_deref() == Ok("1") {
        baselines::pin_to_cpu(1).expect("pin child to CPU 1");
    }
    let conn = remora::connect().expect("connect");
    let (_, mut ctl) = conn.channel::<(), Control>("ctl").expect("ctl");
    let (mut tx, mut rx) = conn.raw_channel("pp").expect("pp");
    let (_, mut stream) = conn.raw_channel("stream").expect("stream");
    let (mut typed_tx, mut typed_rx) = conn.channel::<Blob, Blob>("typed").expect("typed");
    typed_tx.set_wait_strategy(WaitStrategy::Spin);
    typed_rx.set_wait_strategy(WaitStrategy::Spin);
    let mut blob = Blob {
        seq: 0,
        data: Vec::new(),
    };
    ctl.set_wait_strategy(WaitStrategy::Block);
    loop {
        let cmd = ctl
            .recv_timeout(Duration::from_secs(120))
            .expect("control message");
        match &*cmd {
            ArchivedControl::PingPong {
                strategy,
                size,
                rounds,
            } => {
                set_strategy(&mut tx, &mut rx, strategy_from(*strategy));
                let (size, rounds) = (size.to_native() as usize, rounds.to_native());
                drop(cmd);
                for k in 1..=rounds {
                    let ping = rx.recv().expect("recv ping");
                    verify(&ping, ping_seed(k)).expect("corrupt ping");
                    drop(ping);
                    send_filled(&mut tx, size, pong_seed(k));
                }
            }
            ArchivedControl::Stream {
                strategy,
                count,
                small_ring,
            } => {
                let from = if *small_ring { &mut stream } else { &mut rx };
                set_strategy(&mut tx, from, strategy_from(*strategy));
                let count = count.to_native();
                drop(cmd);
                let mut good = true;
                for i in 0..count {
                    let m = from.recv().expect("stream recv");
                    good &= verify(&m, i).is_ok();
                }
                tx.send(if good { b"ok" } else { b"no" })
                    .expect("stream ack");
            }
            ArchivedControl::Typed { size, rounds, copy } => {
                if *copy {
                    typed_rx.distrust_peer();
                } else {
                    // SAFETY: the parent is this same binary, whose code
                    // never writes a frame after sending it (a child's
                    // default anyway; this undoes an earlier distrust).
                    unsafe { typed_rx.trust_peer() };
                }
                let (size, rounds) = (size.to_native() as usize, rounds.to_native());
                drop(cmd);
                blob.data.resize(size, 0);
                for k in 1..=rounds {
                    let ping = typed_rx.recv().expect("typed recv");
                    assert_eq!(ping.seq, k);
                    verify(&ping.data, ping_seed(k)).expect("corrupt typed ping");
                    drop(ping);
                    blob.seq = k;
                    fill(&mut blob.data, pong_seed(k));
                    typed_tx.send(&blob).expect("typed send");
                }
            }
            ArchivedControl::Quit => return,
        }
    }
}
