//! Soak: two processes stream messages of random sizes up to 64 KiB both
//! ways at once over one channel, checking order, length and checksum of
//! every message: zero loss, zero corruption. Once over shared memory, once
//! over FIFOs.
//!
//! The CI variant streams 200,000 messages each way in release builds
//! (20,000 in debug builds, where checksumming is ~30x slower). The long
//! variant streams 10,000,000 each way:
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! Both print their throughput (messages/s and MB/s of payload, both
//! directions together); run with `--nocapture` to see it.

mod common;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::stream::Msg;
use common::{KillOnDrop, Rng, Watchdog, open_fd_count, remora_segments, role};
use remora::{Receiver, RecvError, Sender, Spawner, Transport};

/// Messages each way in the CI variant.
const CI_MESSAGES: u64 = if cfg!(debug_assertions) {
    20_000
} else {
    200_000
};
/// Messages each way in the long variant.
const LONG_MESSAGES: u64 = 10_000_000;
/// Largest payload.
const MAX_LEN: usize = 64 * 1024;
/// The per-direction seeds: each side regenerates nothing, but the sizes
/// are a function of (seed, seq) so the receiver knows each length.
const PARENT_SEED: u64 = 0x5041_5245_4e54;
const CHILD_SEED: u64 = 0x0043_4849_4c44;
const MESSAGES_ENV: &str = "REMORA_TEST_SOAK_MESSAGES";

/// One soak at a time: it wants both cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Payload length of message `seq`: log-uniform from 0 to 64 KiB, so most
/// messages are small and every size class up to the maximum is common
/// (mean about 4 KiB).
fn length(seed: u64, seq: u64) -> usize {
    let mut rng = Rng::new(seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let h = rng.next_u64();
    if h.is_multiple_of(1000) {
        return MAX_LEN;
    }
    let bits = (h >> 10) % 17; // 0..=16
    ((h >> 20) as usize) & ((1 << bits) - 1)
}

/// A word-at-a-time checksum, seeded by `seq` (FNV-1a byte by byte, as in
/// `common::checksum`, would cost more than the transport here).
fn fast_checksum(seq: u64, bytes: &[u8]) -> u64 {
    let mut h = seq ^ 0x243f_6a88_85a3_08d3 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Sends `n` messages (sizes from `my_seed`) on a thread while receiving and
/// checking `n` (sizes from `peer_seed`); returns the payload bytes moved
/// both ways.
fn exchange(
    mut tx: Sender<Msg>,
    mut rx: Receiver<Msg>,
    n: u64,
    my_seed: u64,
    peer_seed: u64,
) -> u64 {
    let sender = std::thread::spawn(move || {
        let mut rng = Rng::new(my_seed);
        let mut data = Vec::with_capacity(MAX_LEN);
        let mut bytes = 0;
        for seq in 0..n {
            data.resize(length(my_seed, seq), 0);
            rng.fill(&mut data);
            let sum = fast_checksum(seq, &data);
            let msg = Msg { seq, data, sum };
            tx.send(&msg).unwrap_or_else(|e| panic!("send {seq}: {e}"));
            data = msg.data;
            bytes += data.len() as u64;
        }
        (tx, bytes) // keep the channel open until the receiver is done too
    });
    let mut bytes = 0;
    for seq in 0..n {
        let msg = rx.recv().unwrap_or_else(|e| panic!("recv {seq}: {e}"));
        assert_eq!(msg.seq, seq, "lost, duplicated or reordered message");
        assert_eq!(
            msg.data.len(),
            length(peer_seed, seq),
            "message {seq}: wrong length"
        );
        assert_eq!(
            msg.sum,
            fast_checksum(seq, &msg.data),
            "message {seq} corrupted"
        );
        bytes += msg.data.len() as u64;
    }
    let (tx, sent) = sender.join().expect("sender thread");
    drop(tx);
    // The peer closes its sender once it has received everything too.
    let end = rx.recv_timeout(Duration::from_secs(60)).map(|m| m.seq);
    assert_eq!(end, Err(RecvError::Disconnected));
    sent + bytes
}

fn soak(n: u64, limit: Duration, transport: Transport) {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _w = Watchdog::new("soak", limit);
    let fds = open_fd_count();
    let mut child = KillOnDrop(
        // Not current_exe(): the long run must survive a rebuild that
        // replaces the binary on disk meanwhile.
        Spawner::new("/proc/self/exe")
            .transport(transport) // whatever REMORA_TRANSPORT says
            .args(common::CHILD_ENTRY)
            .env(common::ROLE, "soak")
            .env(MESSAGES_ENV, n.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .channel("soak") // 1 MiB per direction: 16 of the largest messages
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = child.channel::<Msg, Msg>("soak").unwrap();
    let start = Instant::now();
    let bytes = exchange(tx, rx, n, PARENT_SEED, CHILD_SEED);
    let elapsed = start.elapsed();
    assert!(child.wait().unwrap().success(), "soak child failed");
    drop(child);
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "soak over {transport}: {n} messages each way (sizes 0..=64 KiB, mean {:.0} B) in {elapsed:.2?}: \
         {:.0} messages/s, {:.0} MB/s of payload (both directions together)",
        bytes as f64 / (2 * n) as f64,
        (2 * n) as f64 / secs,
        bytes as f64 / secs / 1e6,
    );
    assert!(open_fd_count() <= fds, "file descriptors leaked");
    assert!(remora_segments().is_empty(), "segment left in /dev/shm");
}

#[test]
fn soak_random_sizes_both_ways() {
    soak(CI_MESSAGES, Duration::from_secs(300), Transport::Shm);
}

#[test]
fn soak_random_sizes_both_ways_over_fifos() {
    soak(CI_MESSAGES, Duration::from_secs(300), Transport::Fifo);
}

#[test]
#[ignore = "long: 10,000,000 messages each way"]
fn long_soak_random_sizes_both_ways() {
    soak(LONG_MESSAGES, Duration::from_secs(4 * 3600), Transport::Shm);
}

#[test]
#[ignore = "long: 10,000,000 messages each way over FIFOs"]
fn long_soak_random_sizes_both_ways_over_fifos() {
    soak(
        LONG_MESSAGES,
        Duration::from_secs(4 * 3600),
        Transport::Fifo,
    );
}

/// Entry point of the re-executed child; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    assert_eq!(role, "soak");
    let n: u64 = std::env::var(MESSAGES_ENV).unwrap().parse().unwrap();
    let _w = Watchdog::new("soak child", Duration::from_secs(4 * 3600));
    let conn = remora::connect().unwrap();
    let (tx, rx) = conn.channel::<Msg, Msg>("soak").unwrap();
    exchange(tx, rx, n, CHILD_SEED, PARENT_SEED);
}
