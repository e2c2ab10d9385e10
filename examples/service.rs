//! A named service and its clients, started separately.
//!
//! ```text
//! cargo run --release --example service -- serve            # terminal 1: serves "upper"
//! cargo run --release --example service -- client hello     # terminal 2 (any number of them)
//! cargo run --release --example service -- bench            # figures: connect time, 64 B round trips
//! ```
//!
//! The server uppercases every request on `upper`, one thread per client.
//! `bench` serves in-process and starts itself as clients: it prints the
//! median time from `connect_service` to the first message received, and
//! the median 64 B round trip over an accepted connection against a spawned
//! child (same channel settings; both sides spinning or both adaptive).

use std::error::Error;
use std::time::{Duration, Instant};

use remora::{ChannelConfig, RecvError, Service, Spawner, WaitStrategy};

const NAME: &str = "remora-example-upper";

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Request {
    text: String,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Reply {
    text: String,
    client: u32,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(),
        Some("client") => client(args.get(1).map_or("hello", String::as_str)),
        Some("bench") => bench(),
        Some("bench-client") => bench_client(&args[1]),
        _ if std::env::var_os(remora::CHANNEL_ENV).is_some() => spawned_echo(),
        _ => {
            eprintln!("usage: service serve | client [TEXT] | bench");
            std::process::exit(2);
        }
    }
}

fn serve() -> Result<(), Box<dyn Error>> {
    let mut service = Service::bind(NAME, &[ChannelConfig::new("upper").capacity(64 * 1024)])?;
    println!("serving {NAME:?}; run `cargo run --release --example service -- client hello`");
    let mut clients = 0u32;
    loop {
        let conn = service.accept()?;
        clients += 1;
        let id = clients;
        println!(
            "client {id}: pid {} uid {}",
            conn.peer_pid(),
            conn.peer_uid()
        );
        std::thread::spawn(move || {
            let Ok((mut tx, mut rx)) = conn.channel::<Reply, Request>("upper") else {
                return;
            };
            loop {
                let reply = match rx.recv() {
                    Ok(req) => Reply {
                        text: req.text.to_uppercase(),
                        client: id,
                    },
                    Err(RecvError::Disconnected) => break,
                    Err(e) => {
                        eprintln!("client {id}: {e}");
                        break;
                    }
                };
                if tx.send(&reply).is_err() {
                    break;
                }
            }
            println!("client {id}: gone");
        });
    }
}

fn client(text: &str) -> Result<(), Box<dyn Error>> {
    let conn = remora::connect_service_timeout(NAME, Duration::from_secs(5))?;
    let (mut tx, mut rx) = conn.channel::<Request, Reply>("upper")?;
    tx.send(&Request {
        text: text.to_owned(),
    })?;
    let reply = rx.recv()?;
    println!(
        "server (pid {}) says {:?} to client {}",
        conn.peer_pid(),
        reply.text.as_str(),
        reply.client
    );
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

const ROUNDS: usize = 20_000;

/// 64 B round trips on raw ends; the time of each.
fn round_trips(tx: &mut remora::RawSender, rx: &mut remora::RawReceiver) -> Vec<Duration> {
    let msg = [7u8; 64];
    let mut times = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS + 1000 {
        let t = Instant::now();
        tx.send(&msg).unwrap();
        let back = rx.recv().unwrap();
        assert_eq!(back.len(), 64);
        drop(back);
        if i >= 1000 {
            times.push(t.elapsed());
        }
    }
    times
}

fn bench() -> Result<(), Box<dyn Error>> {
    let name = format!("remora-bench-{}", std::process::id());
    let exe = std::env::current_exe()?;
    for strategy in [WaitStrategy::Spin, WaitStrategy::Adaptive] {
        let config = ChannelConfig::new("c")
            .capacity(64 * 1024)
            .wait_strategy(strategy);
        // Accepted connection: the client (another process) measures its
        // connects, then echoes.
        let mut service = Service::bind(&name, std::slice::from_ref(&config))?;
        let client = std::process::Command::new(&exe)
            .args(["bench-client", &name])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let connects = 200;
        for _ in 0..connects {
            let conn = service.accept()?;
            let (mut tx, _rx) = conn.raw_channel("c")?;
            tx.send(b"first")?;
        }
        let conn = service.accept()?;
        let (mut tx, mut rx) = conn.raw_channel("c")?;
        let accepted = median(round_trips(&mut tx, &mut rx));
        drop((tx, rx, conn));
        let out = client.wait_with_output()?;
        let connect = String::from_utf8(out.stdout)?;
        drop(service);

        // Spawned child, same channel settings.
        let mut child = Spawner::new(&exe).channel_with(config.clone()).spawn()?;
        let (mut tx, mut rx) = child.raw_channel("c")?;
        let spawned = median(round_trips(&mut tx, &mut rx));
        drop((tx, rx));
        child.wait()?;
        println!(
            "{strategy:?}: connect to first message {} (median of {connects}); 64 B round trip: accepted {accepted:?}, spawned {spawned:?} (median of {ROUNDS})",
            connect.trim()
        );
    }
    Ok(())
}

/// `bench`'s client: times connect-to-first-message, then echoes.
fn bench_client(name: &str) -> Result<(), Box<dyn Error>> {
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let conn = remora::connect_service(name)?;
        let (_tx, mut rx) = conn.raw_channel("c")?;
        rx.recv()?;
        times.push(t.elapsed());
    }
    println!("{:?}", median(times));
    let conn = remora::connect_service(name)?;
    echo(conn.raw_channel("c")?)
}

/// `bench`'s spawned child: echoes.
fn spawned_echo() -> Result<(), Box<dyn Error>> {
    let conn = remora::connect()?;
    let (tx, mut rx) = conn.raw_channel("c")?;
    // Copy, as on the accepted connection's client.
    rx.distrust_peer();
    echo((tx, rx))
}

fn echo((mut tx, mut rx): (remora::RawSender, remora::RawReceiver)) -> Result<(), Box<dyn Error>> {
    let mut reply = Vec::new();
    while let Ok(msg) = rx.recv() {
        reply.clear();
        reply.extend_from_slice(&msg);
        drop(msg);
        tx.send(&reply)?;
    }
    Ok(())
}
