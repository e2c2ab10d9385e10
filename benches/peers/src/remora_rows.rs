//! remora rows: one raw-bytes channel, this binary spawned as the child with
//! `remora::Spawner`, exactly the protocol of `examples/pingpong`: payloads
//! are written in place into the ring (`RawSender::send_in_place`), in
//! L1-sized chunks of `fill` output, and read in place (`RawReceiver::recv`).
//! The
//! transport is pinned to shared memory (`Transport::Shm`), so a
//! `REMORA_TRANSPORT` in the environment cannot turn these into FIFO rows.

use remora::{ChannelConfig, RawReceiver, RawSender, Spawner, Transport, WaitStrategy};

use crate::baselines::{Samples, fill, verify};
use crate::common::{
    ChildEnv, Res, RunDir, Side, Watchdog, child_env, child_rounds, parent_rounds, rounds,
};

/// Ring size per direction: room for two 4 MiB messages in flight, as in
/// `examples/pingpong`.
const CAPACITY: usize = 16 << 20;

pub fn strategy(row: &str) -> WaitStrategy {
    match row {
        "remora-spin" => WaitStrategy::Spin,
        "remora-block" => WaitStrategy::Block,
        "remora-adaptive" => WaitStrategy::Adaptive,
        other => panic!("not a remora row: {other}"),
    }
}

struct RemoraSide {
    tx: RawSender,
    rx: RawReceiver,
    size: usize,
}

impl RemoraSide {
    fn new((mut tx, mut rx): (RawSender, RawReceiver), s: WaitStrategy, size: usize) -> Self {
        tx.set_wait_strategy(s);
        rx.set_wait_strategy(s);
        RemoraSide { tx, rx, size }
    }
}

impl Side for RemoraSide {
    #[inline]
    fn send(&mut self, seed: u64) -> Res {
        send_filled(&mut self.tx, self.size, seed)
    }

    #[inline]
    fn recv(&mut self, seed: u64) -> Res {
        let m = self.rx.recv().map_err(|e| format!("{e:?}"))?;
        verify(&m, seed).map_err(|e| format!("{e:?}"))
    }
}

/// `examples/pingpong`'s `send_filled`: `size` bytes of `fill(.., seed)`
/// content, written straight into the ring in L1-sized chunks (sizes that
/// are multiples of 8 keep the word sequence `fill` defines; the parent
/// checks that).
#[inline]
fn send_filled(tx: &mut RawSender, size: usize, seed: u64) -> Res {
    const CHUNK: usize = 4096;
    let mut chunk = [0u8; CHUNK];
    tx.send_in_place(size, |slot| {
        for start in (0..size).step_by(CHUNK) {
            let n = CHUNK.min(size - start);
            fill(&mut chunk[..n], seed.wrapping_add((start / 8) as u64));
            slot.write_at(start, &chunk[..n]);
        }
    })
    .map_err(|e| format!("{e:?}"))
}

/// Parent side of one remora row.
pub fn run(
    row: &str,
    size: usize,
    iters: usize,
    warmup: usize,
    pin: bool,
    run_dir: &RunDir,
) -> Res<Samples> {
    let s = strategy(row);
    let mut spawner = Spawner::new(std::env::current_exe().map_err(|e| e.to_string())?);
    for (k, v) in child_env(row, size, rounds(iters, warmup), &run_dir.tag, pin) {
        spawner.env(k, v);
    }
    let mut child = spawner
        .channel_with(ChannelConfig::new("pp").capacity(CAPACITY).wait_strategy(s))
        .transport(Transport::Shm)
        .spawn()
        .map_err(|e| format!("spawn: {e:?}"))?;
    let watchdog = Watchdog::arm(row, child.id(), run_dir);
    let result = Some(child.transport())
        .filter(|&t| t == Transport::Shm)
        .ok_or_else(|| format!("transport is {}, not shm", child.transport()))
        .and_then(|_| {
            child
                .raw_channel("pp")
                .map_err(|e| format!("channel: {e:?}"))
        })
        .and_then(|ends| parent_rounds(&mut RemoraSide::new(ends, s, size), iters, warmup));
    if result.is_err() {
        let _ = child.kill();
    }
    drop(watchdog);
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let samples = result?;
    status
        .success()
        .then_some(samples)
        .ok_or_else(|| format!("child failed: {status}"))
}

/// Child side of a remora row.
pub fn child(env: &ChildEnv) -> Res {
    let conn = remora::connect().map_err(|e| format!("connect: {e:?}"))?;
    let ends = conn
        .raw_channel("pp")
        .map_err(|e| format!("channel: {e:?}"))?;
    child_rounds(
        &mut RemoraSide::new(ends, strategy(&env.row), env.size),
        env.rounds,
    )
}
