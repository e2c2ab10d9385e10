//! A parent that spawns itself as its child and talks to it over two typed
//! channels: `echo` (requests and replies) and `log` (the child reports what
//! it did).
//!
//! ```text
//! cargo run --release --example echo
//! ```

use std::error::Error;

use remora::{Spawner, WaitStrategy};

/// Parent → child on `echo`.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Request {
    id: u32,
    body: String,
}

/// Child → parent on `echo`.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Reply {
    id: u32,
    upper: String,
    len: u32,
}

/// Child → parent on `log`; parent → child on `log` is unused (`()`).
#[derive(rkyv::Archive, rkyv::Serialize)]
struct LogLine {
    text: String,
}

fn main() -> Result<(), Box<dyn Error>> {
    if std::env::var_os(remora::CHANNEL_ENV).is_some() {
        return child();
    }
    let mut child = Spawner::new(std::env::current_exe()?)
        .channel("echo")
        .channel("log")
        .spawn()?;
    println!(
        "parent: spawned child pid {} over {}",
        child.id(),
        child.transport()
    );
    let (mut tx, mut rx) = child.channel::<Request, Reply>("echo")?;
    let (_log_tx, mut log_rx) = child.channel::<(), LogLine>("log")?;

    for (id, body) in ["hello", "zero-copy", "world"].into_iter().enumerate() {
        tx.send(&Request {
            id: id as u32,
            body: body.to_owned(),
        })?;
        let reply = rx.recv()?; // borrowed from the ring: no copy
        println!(
            "parent: reply {} = {:?} ({} bytes)",
            reply.id,
            reply.upper.as_str(),
            reply.len
        );
    }
    drop(tx); // closes `echo`: the child's recv loop ends after draining

    while let Ok(line) = log_rx.recv() {
        println!("parent: child says {:?}", line.text.as_str());
    }
    let status = child.wait()?;
    println!("parent: child exited with {status}");
    Ok(())
}

fn child() -> Result<(), Box<dyn Error>> {
    let conn = remora::connect()?;
    let (mut tx, mut rx) = conn.channel::<Reply, Request>("echo")?;
    let (mut log, _) = conn.channel::<LogLine, ()>("log")?;
    rx.set_wait_strategy(WaitStrategy::Block);
    let mut served = 0;
    while let Ok(req) = rx.recv() {
        tx.send(&Reply {
            id: req.id.into(),
            upper: req.body.to_uppercase(),
            len: req.body.len() as u32,
        })?;
        served += 1;
    }
    log.send(&LogLine {
        text: format!("served {served} requests, then saw the parent close `echo`"),
    })?;
    Ok(())
}
