//! Channels opened at run time on a spawned child: how long one open takes
//! (the parent opens, the child accepts), median of 200.
//!
//! ```text
//! cargo run --release --example spawn_open
//! ```

use std::time::{Duration, Instant};

use remora::{ChannelConfig, Spawner, WaitStrategy};

const OPENS: usize = 200;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(remora::CHANNEL_ENV).is_some() {
        // Child: accept every channel the parent opens, echo one message
        // on each, until the parent goes.
        let conn = remora::connect()?;
        conn.set_channel_limit(usize::MAX);
        while let Ok(opened) = conn.accept_channel() {
            let (mut tx, mut rx) = opened.raw_channel()?;
            let msg = rx.recv()?.to_vec();
            tx.send(&msg)?;
        }
        return Ok(());
    }
    let mut child = Spawner::new(std::env::current_exe()?)
        .channel("first")
        .spawn()?;
    let mut opens = Vec::with_capacity(OPENS);
    let mut first_messages = Vec::with_capacity(OPENS);
    for i in 0..=OPENS {
        let config = ChannelConfig::new(format!("rt-{i}"))
            .capacity(4096)
            .wait_strategy(WaitStrategy::Block);
        let start = Instant::now();
        let (mut tx, mut rx) = child.open_raw_channel(config)?;
        let opened = start.elapsed();
        tx.send(b"ping")?;
        rx.recv()?;
        // The first open also waits for the child to start and connect.
        if i > 0 {
            opens.push(opened);
            first_messages.push(start.elapsed());
        }
    }
    println!(
        "open_raw_channel on a spawned child (4 KiB rings), median of {OPENS}: {:?}; open + first round trip: {:?}",
        median(&mut opens),
        median(&mut first_messages)
    );
    drop(child.process_mut().stdin.take());
    child.kill()?;
    child.wait()?;
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
