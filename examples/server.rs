//! One parent thread serving 32 children with a `WaitSet`: each child sends
//! typed requests and waits for each reply; the parent waits on all 32
//! request receivers and the 32 children's exits at once, answers whatever
//! is ready, and prints a summary.
//!
//! ```text
//! cargo run --release --example server
//! cargo run --release --example server -- 64 2000   # children, requests each
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::time::Instant;

use remora::{Child, EventKind, Key, Receiver, Sender, Spawner, WaitSet};

/// Child → parent.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Request {
    id: u32,
    a: u64,
    b: u64,
}

/// Parent → child.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Reply {
    id: u32,
    sum: u64,
}

/// The parent's ends for one child.
struct Client {
    child: Child,
    tx: Sender<Reply>,
    rx: Receiver<Request>,
    served: u64,
}

/// What a key in the set stands for.
#[derive(Clone, Copy)]
enum Member {
    Requests(usize),
    Exit(usize),
}

fn main() -> Result<(), Box<dyn Error>> {
    if std::env::var_os(remora::CHANNEL_ENV).is_some() {
        return child();
    }
    let mut args = std::env::args().skip(1);
    let children: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let requests: u32 = args.next().map_or(Ok(1000), |a| a.parse())?;

    let mut clients = Vec::new();
    for _ in 0..children {
        let child = Spawner::new(std::env::current_exe()?)
            .env("SERVER_REQUESTS", requests.to_string())
            .channel("rpc")
            .spawn()?;
        let (tx, rx) = child.channel::<Reply, Request>("rpc")?;
        clients.push(Client {
            child,
            tx,
            rx,
            served: 0,
        });
    }

    // One set over every child's requests and every child's exit: no
    // thread per child, no file descriptor per channel.
    let mut set = WaitSet::new();
    let mut members: HashMap<Key, Member> = HashMap::new();
    for (i, c) in clients.iter().enumerate() {
        members.insert(set.add(&c.rx)?, Member::Requests(i));
        members.insert(set.add(&c.child)?, Member::Exit(i));
    }

    let start = Instant::now();
    let (mut events, mut disconnects, mut exits) = (0u64, 0, 0);
    // Until every member reported its final event.
    while let Ok(ev) = set.wait() {
        events += 1;
        match (members[&ev.key()], ev.kind()) {
            (Member::Requests(i), EventKind::Readable) => {
                let c = &mut clients[i];
                // Answer what is there; the set reports the channel again
                // once more arrives.
                while let Ok(req) = c.rx.try_recv() {
                    let reply = Reply {
                        id: req.id.into(),
                        sum: req.a.to_native() + req.b.to_native(),
                    };
                    drop(req);
                    c.tx.send(&reply)?;
                    c.served += 1;
                }
            }
            (Member::Requests(_), EventKind::Disconnected) => disconnects += 1,
            (Member::Exit(i), EventKind::Exited) => {
                exits += 1;
                let status = clients[i].child.wait()?;
                assert!(status.success(), "child {i} failed: {status}");
            }
            (_, kind) => unreachable!("unexpected {kind:?}"),
        }
    }
    let elapsed = start.elapsed();
    let total: u64 = clients.iter().map(|c| c.served).sum();
    let min = clients.iter().map(|c| c.served).min().unwrap_or(0);
    let max = clients.iter().map(|c| c.served).max().unwrap_or(0);
    println!("server: one thread, one WaitSet, {children} children");
    println!(
        "  {total} requests in {:.3} s = {:.0} requests/s, {events} events",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!("  per child: min {min}, max {max} requests served");
    println!("  {disconnects} channels disconnected, {exits} children exited");
    assert_eq!(total, children as u64 * u64::from(requests));
    Ok(())
}

fn child() -> Result<(), Box<dyn Error>> {
    let requests: u32 = std::env::var("SERVER_REQUESTS")?.parse()?;
    let conn = remora::connect()?;
    let (mut tx, mut rx) = conn.channel::<Request, Reply>("rpc")?;
    let me = u64::from(std::process::id());
    for id in 0..requests {
        tx.send(&Request {
            id,
            a: me,
            b: id.into(),
        })?;
        let reply = rx.recv()?;
        assert_eq!(
            (reply.id.to_native(), reply.sum.to_native()),
            (id, me + u64::from(id))
        );
    }
    Ok(())
}
