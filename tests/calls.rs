//! Calls (`Client` / `Server`) between two processes, every case run over
//! both transports (`calls!` instantiates the suite for `Transport::Shm`
//! and `Transport::Fifo`, as `conformance.rs` does for channels).
//!
//! The parent spawns this test binary again in a role `child_entry` plays:
//! a server (`serve`, `hold`) or a peer forging reply frames with raw ends
//! (`forge`). Every test runs under a watchdog, kills its child on failure
//! and checks that nothing is left in /dev/shm or the temp dirs. Results
//! never depend on speed: orderings are forced by the protocol (a held call
//! is answered only when the next request arrives), and time bounds are
//! seconds for things that take microseconds.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Watchdog, remora_fifo_dirs, remora_segments, role};
use remora::{
    CallError, ChannelConfig, Client, RecvError, Replies, Requests, Segment, Server, Spawner,
    Ticket, Transport,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request: `n`, and what the server is to do with it.
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy, Debug)]
#[rkyv(derive(Debug))]
struct Job {
    n: u64,
    action: u8,
}

/// Answer `Ok(2n)` now, after answering every held call (newest first).
const NOW: u8 = 0;
/// Hold; answer `Ok(2n)` later.
const HOLD_OK: u8 = 1;
/// Hold; answer `Err("odd n")` later.
const HOLD_ERR: u8 = 2;
/// Hold; abandon explicitly later.
const HOLD_ABANDON: u8 = 3;
/// Drop the incoming call unanswered, at once.
const DROP: u8 = 4;

type Wire = (
    remora::Sender<Requests<Job>>,
    remora::Receiver<Replies<u64, String>>,
);

/// Wire status words (see `src/call/wire.rs`), for the forging peer.
const OK: u32 = 1;
const REJECTED: u32 = 3;

fn spawner(role: &str, transport: Transport) -> Spawner {
    let mut s = Spawner::new(std::env::current_exe().unwrap());
    s.args(common::CHILD_ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .transport(transport)
        .channel_with(ChannelConfig::new("calls").capacity(1 << 16));
    s
}

fn spawn(role: &str, t: Transport) -> KillOnDrop {
    let child = spawner(role, t)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn over {t}: {e}"));
    assert_eq!(child.transport(), t);
    KillOnDrop(child)
}

fn assert_success(mut child: KillOnDrop) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

fn assert_no_leftovers() {
    assert!(remora_segments().is_empty(), "segment left in /dev/shm");
    assert!(remora_fifo_dirs().is_empty(), "FIFO directory left behind");
}

macro_rules! calls {
    ($module:ident, $transport:expr) => {
        mod $module {
            use super::*;

            const T: Transport = $transport;

            #[test]
            fn replies_out_of_order_reach_their_callers() {
                out_of_order(T);
            }

            #[test]
            fn late_reply_after_timeout_is_discarded() {
                late_reply(T, remora::DEFAULT_IN_FLIGHT);
            }

            #[test]
            fn late_reply_is_discarded_when_its_slot_was_reused() {
                late_reply(T, 1);
            }

            #[test]
            fn forged_repeated_and_replayed_ids_are_protocol_errors() {
                forged_ids(T);
            }

            #[test]
            fn peer_death_fails_every_call_in_flight() {
                death_fails_all(T);
            }

            #[test]
            fn peer_death_ends_a_blocked_call() {
                death_ends_blocked_call(T);
            }

            #[test]
            fn client_death_ends_the_servers_receives_and_replies() {
                client_death(T);
            }

            #[test]
            fn many_calls_in_a_row() {
                many_calls(T);
            }
        }
    };
}

calls!(shm, Transport::Shm);
calls!(fifo, Transport::Fifo);

/// 40 calls pipelined with mixed outcomes; the server answers them newest
/// first (after a final `NOW` call), so every reply arrives in the reverse
/// of its call's order, and each must reach the call it answers.
fn out_of_order(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("calls out of order", Duration::from_secs(60));
    let child = spawn("serve", t);
    let mut client: Client<Job, u64, String> = Client::new(child.channel("calls").unwrap());
    let actions = [HOLD_OK, HOLD_ERR, HOLD_ABANDON, DROP];
    let mut expected: HashMap<Ticket, Job> = HashMap::new();
    for i in 0..40u64 {
        let job = Job {
            n: 1000 + i,
            action: actions[(i * 7 % 4) as usize],
        };
        let ticket = client.start(&job).unwrap();
        assert!(expected.insert(ticket, job).is_none(), "ticket reused");
    }
    let last = Job { n: 7, action: NOW };
    let last_ticket = client.start(&last).unwrap();
    assert_eq!(client.in_flight(), 41);
    let mut order = Vec::new();
    for _ in 0..41 {
        match client.recv_reply() {
            Ok(reply) => {
                let t = reply.ticket();
                let job = if t == last_ticket { last } else { expected[&t] };
                match (job.action, reply.result()) {
                    (HOLD_OK | NOW, Ok(v)) => assert_eq!(*v, job.n * 2),
                    (HOLD_ERR, Err(e)) => assert_eq!(e.as_str(), format!("odd {}", job.n)),
                    (a, r) => panic!("action {a}: wrong outcome {:?}", r.map(|v| v.to_native())),
                }
                order.push(job.n);
            }
            Err(CallError::Abandoned { ticket }) => {
                let job = expected[&ticket];
                assert!(matches!(job.action, HOLD_ABANDON | DROP), "{job:?}");
                order.push(job.n);
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Dropped calls are answered (abandoned) at once, the held ones newest
    // first when `last` arrives, then `last`.
    let dropped: Vec<u64> = (0..40u64)
        .filter(|i| actions[(i * 7 % 4) as usize] == DROP)
        .map(|i| 1000 + i)
        .collect();
    let mut held: Vec<u64> = (0..40u64)
        .filter(|i| actions[(i * 7 % 4) as usize] != DROP)
        .map(|i| 1000 + i)
        .collect();
    held.reverse();
    let want: Vec<u64> = dropped.into_iter().chain(held).chain([7]).collect();
    assert_eq!(order, want);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(client.try_recv_reply().unwrap_err(), CallError::Idle);
    drop(client);
    assert_success(child);
    assert_no_leftovers();
}

/// A call times out (the server holds it until the next request arrives);
/// the next call's reply must be its own, not the late one. With
/// `capacity` 1 the next call reuses the abandoned call's slot.
fn late_reply(t: Transport, capacity: usize) {
    let _s = serial();
    let _w = Watchdog::new("calls late reply", Duration::from_secs(60));
    let child = spawn("serve", t);
    let mut client: Client<Job, u64, String> =
        Client::with_capacity(child.channel("calls").unwrap(), capacity);
    for round in 0..20u64 {
        let held = Job {
            n: round,
            action: HOLD_OK,
        };
        let timed_out = client.call_timeout(&held, Duration::from_millis(5));
        assert_eq!(timed_out.unwrap_err(), CallError::Timeout);
        assert_eq!((client.in_flight(), client.abandoned()), (0, 1));
        // The server answers `held` (late) and then this one.
        let now = Job {
            n: 100 + round,
            action: NOW,
        };
        let reply = client.call(&now).unwrap();
        assert_eq!(*reply.result().unwrap(), (100 + round) * 2, "round {round}");
        drop(reply);
        assert_eq!((client.in_flight(), client.abandoned()), (0, 0));
    }
    drop(client);
    assert_success(child);
    assert_no_leftovers();
}

/// The child forges reply frames (raw ends); none may reach a call, each
/// is a distinct error, and the real replies still get through.
fn forged_ids(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("calls forged ids", Duration::from_secs(60));
    let child = spawn("forge", t);
    let mut client: Client<u64, u64, ()> = Client::from_raw(child.raw_channel("calls").unwrap(), 4);
    let a = client.start(&1).unwrap();
    let b = client.start(&2).unwrap();
    let c = client.start(&3).unwrap();
    let mut next = || client_recv(&mut client);
    assert_eq!(
        next(),
        Err(CallError::Protocol { id: 0, len: 8 }),
        "short frame"
    );
    let forged = a.id() ^ (0x55 << 40);
    assert_eq!(
        next(),
        Err(CallError::Protocol {
            id: forged,
            len: 24
        }),
        "never issued"
    );
    let out_of_range = (a.id() & !0xffff_ffff) | 1000;
    assert_eq!(
        next(),
        Err(CallError::Protocol {
            id: out_of_range,
            len: 24
        }),
        "out of range"
    );
    assert_eq!(next(), Ok((a, 11)), "the real reply");
    assert_eq!(
        next(),
        Err(CallError::Protocol {
            id: a.id(),
            len: 24
        }),
        "a repeat"
    );
    assert_eq!(
        next(),
        Err(CallError::InvalidReply { ticket: b, len: 19 }),
        "bad archive"
    );
    assert_eq!(
        next(),
        Err(CallError::InvalidReply { ticket: c, len: 24 }),
        "bad status"
    );
    assert_eq!(client.in_flight(), 0);
    let d = client.start(&4).unwrap();
    // The replay is of the earlier call that had D's slot (the table
    // reuses freed slots), so only the generation tells them apart.
    let replayed = [a, b, c]
        .into_iter()
        .find(|x| x.slot() == d.slot())
        .unwrap();
    assert_ne!(replayed.id(), d.id());
    let mut next = || client_recv(&mut client);
    assert_eq!(
        next(),
        Err(CallError::Protocol {
            id: replayed.id(),
            len: 24
        }),
        "a replay"
    );
    assert_eq!(next(), Ok((d, 41)));
    drop(client);
    assert_success(child);
    assert_no_leftovers();
}

fn client_recv(client: &mut Client<u64, u64, ()>) -> Result<(Ticket, u64), CallError> {
    let reply = client.recv_reply_timeout(Duration::from_secs(10))?;
    Ok((reply.ticket(), reply.result().unwrap().to_native()))
}

/// Eight calls in flight to a server that never answers; SIGKILL of the
/// server fails them all at once, and the client stays usable (errors, no
/// hang).
fn death_fails_all(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("calls death", Duration::from_secs(60));
    let mut child = spawn("hold", t);
    let mut client: Client<Job, u64, String> = Client::new(child.channel("calls").unwrap());
    for n in 0..8 {
        client.start(&Job { n, action: HOLD_OK }).unwrap();
    }
    // Nothing comes while it lives.
    let waited = client.recv_reply_timeout(Duration::from_millis(20));
    assert_eq!(waited.unwrap_err(), CallError::Timeout);
    assert_eq!(client.in_flight(), 8);
    let killed = Instant::now();
    child.kill().unwrap();
    let err = client
        .recv_reply_timeout(Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err, CallError::Disconnected, "after {:?}", killed.elapsed());
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!((client.in_flight(), client.abandoned()), (0, 0));
    assert_eq!(client.try_recv_reply().unwrap_err(), CallError::Idle);
    let again = client.start(&Job { n: 9, action: NOW });
    assert_eq!(again.unwrap_err(), CallError::Disconnected);
    let _ = child.wait();
    drop(client);
    drop(child);
    assert_no_leftovers();
}

/// A `call` blocked on a server that never answers returns
/// `Disconnected` when the server is killed.
fn death_ends_blocked_call(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("calls blocked death", Duration::from_secs(60));
    let child = spawn("hold", t);
    let mut client: Client<Job, u64, String> = Client::new(child.channel("calls").unwrap());
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        common::signal(pid, libc::SIGKILL);
        Instant::now()
    });
    let err = client
        .call(&Job {
            n: 1,
            action: HOLD_OK,
        })
        .unwrap_err();
    let killed = killer.join().unwrap();
    assert_eq!(err, CallError::Disconnected);
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(client.in_flight(), 0);
    drop(client);
    drop(child);
    assert_no_leftovers();
}

/// The parent serves a child client that starts three calls and then is
/// killed: the deferred replies fail with `Disconnected` (the handle comes
/// back), and receives end with `Disconnected`.
fn client_death(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("calls client death", Duration::from_secs(60));
    let mut child = spawn("call_then_hang", t);
    let mut server: Server<Job, u64, String> = Server::new(child.channel("calls").unwrap());
    let mut held = Vec::new();
    for n in 0..3 {
        let call = server.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(call.n, n);
        held.push(call.defer());
    }
    child.kill().unwrap();
    let killed = Instant::now();
    let err = server.recv_timeout(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err, RecvError::Disconnected);
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    for handle in held {
        let id = handle.id();
        let failed = server.reply(handle, Ok(&1)).unwrap_err();
        assert_eq!(failed.error, remora::SendError::Disconnected);
        assert_eq!(failed.handle.id(), id);
        let failed = server.abandon(failed.handle).unwrap_err();
        assert_eq!(failed.error, remora::SendError::Disconnected);
    }
    let _ = child.wait();
    drop(server);
    drop(child);
    assert_no_leftovers();
}

/// Many one-at-a-time calls, the calls and replies checked.
fn many_calls(t: Transport) {
    let _s = serial();
    let _w = Watchdog::new("calls many", Duration::from_secs(120));
    let child = spawn("serve", t);
    let mut client: Client<Job, u64, String> = Client::new(child.channel("calls").unwrap());
    for n in 0..20_000u64 {
        let reply = client.call(&Job { n, action: NOW }).unwrap();
        assert_eq!(*reply.result().unwrap(), 2 * n);
    }
    drop(client);
    assert_success(child);
    assert_no_leftovers();
}

/// A client forging requests, in one process over a segment: each bad one
/// is `RecvError::Invalid` at the server, rejected to the caller when it
/// carried an id; the good one is served.
#[test]
fn forged_requests_are_invalid_and_rejected() {
    let _s = serial();
    let parent = Segment::create(&[ChannelConfig::new("calls").capacity(1 << 12)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let (mut tx, mut rx) = parent.raw_channel("calls").unwrap();
    let mut server: Server<u64, u64, ()> = Server::from_raw(child.raw_channel("calls").unwrap());
    tx.send(&[0; 8]).unwrap();
    assert!(matches!(server.recv(), Err(RecvError::Invalid { len: 8 })));
    tx.send(&frame(77, 0, &[1, 2, 3])).unwrap();
    assert!(matches!(server.recv(), Err(RecvError::Invalid { len: 19 })));
    tx.send(&frame(78, 9, &5u64.to_le_bytes())).unwrap();
    assert!(matches!(server.recv(), Err(RecvError::Invalid { len: 24 })));
    tx.send(&frame(79, 0, &5u64.to_le_bytes())).unwrap();
    let call = server.recv().unwrap();
    assert_eq!((call.id(), call.to_native()), (79, 5));
    call.reply(Ok(&6)).unwrap();
    let mut replies = Vec::new();
    while let Ok(m) = rx.try_recv() {
        replies.push(m.to_vec());
    }
    assert_eq!(
        replies,
        [
            frame(77, REJECTED, &[]),
            frame(78, REJECTED, &[]),
            frame(79, OK, &6u64.to_le_bytes())
        ]
    );
}

/// Typed call channels carry their types in the fingerprint: a client and
/// a server that disagree are refused when the channel is taken.
#[test]
fn mismatched_call_types_are_refused() {
    let _s = serial();
    let parent = Segment::create(&[ChannelConfig::new("calls").capacity(1 << 12)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let _client: Client<u64, u64, ()> = Client::new(parent.channel("calls").unwrap());
    let err = child
        .channel::<Replies<u64, String>, Requests<u64>>("calls")
        .unwrap_err();
    assert!(
        matches!(err, remora::ChannelError::TypeMismatch { .. }),
        "{err}"
    );
    // A plain channel of the same types is not a call channel either.
    let err = child.channel::<u64, u64>("calls").unwrap_err();
    assert!(
        matches!(err, remora::ChannelError::TypeMismatch { .. }),
        "{err}"
    );
}

/// A call frame: prefix (id, status, reserved) and body.
fn frame(id: u64, status: u32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + body.len());
    f.extend_from_slice(&id.to_le_bytes());
    f.extend_from_slice(&status.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(body);
    f
}

/// Entry point of the re-executed child; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("calls child", Duration::from_secs(120));
    let conn = remora::connect().unwrap();
    match role.as_str() {
        "serve" => serve(conn.channel("calls").unwrap()),
        "hold" => {
            let mut server: Server<Job, u64, String> = Server::new(conn.channel("calls").unwrap());
            let mut held = Vec::new();
            while let Ok(call) = server.recv() {
                held.push(call.defer());
            }
            // Killed before this, normally.
            std::thread::sleep(Duration::from_secs(100));
        }
        "forge" => forge(conn.raw_channel("calls").unwrap()),
        "call_then_hang" => {
            let mut client: Client<Job, u64, String> = Client::new(conn.channel("calls").unwrap());
            for n in 0..3 {
                client.start(&Job { n, action: HOLD_OK }).unwrap();
            }
            // Killed during this, normally.
            let _ = client.recv_reply_timeout(Duration::from_secs(100));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Serves `Job`s as their actions say, until the client is gone.
fn serve(
    ends: (
        remora::Sender<Replies<u64, String>>,
        remora::Receiver<Requests<Job>>,
    ),
) {
    let mut server: Server<Job, u64, String> = Server::new(ends);
    let mut held: Vec<(remora::ReplyHandle, Job)> = Vec::new();
    loop {
        let call = match server.recv() {
            Ok(call) => call,
            Err(RecvError::Disconnected) => return,
            Err(e) => panic!("{e}"),
        };
        let job = Job {
            n: call.n.to_native(),
            action: call.action,
        };
        match job.action {
            NOW => {
                let handle = call.defer();
                while let Some((h, j)) = held.pop() {
                    let sent = match j.action {
                        HOLD_OK => server.reply(h, Ok(&(j.n * 2))),
                        HOLD_ERR => server.reply(h, Err(&format!("odd {}", j.n))),
                        _ => server.abandon(h),
                    };
                    sent.unwrap();
                }
                server.reply(handle, Ok(&(job.n * 2))).unwrap();
            }
            DROP => drop(call),
            _ => held.push((call.defer(), job)),
        }
    }
}

/// Reads three requests, then writes forged and real replies (see
/// `forged_ids`), then one more request and a replay.
fn forge((mut tx, mut rx): (remora::RawSender, remora::RawReceiver)) {
    let mut id = || u64::from_le_bytes(rx.recv().unwrap()[..8].try_into().unwrap());
    let (a, b, c) = (id(), id(), id());
    tx.send(&[0; 8]).unwrap();
    tx.send(&frame(a ^ (0x55 << 40), OK, &11u64.to_le_bytes()))
        .unwrap();
    tx.send(&frame((a & !0xffff_ffff) | 1000, OK, &11u64.to_le_bytes()))
        .unwrap();
    tx.send(&frame(a, OK, &11u64.to_le_bytes())).unwrap();
    tx.send(&frame(a, OK, &12u64.to_le_bytes())).unwrap();
    tx.send(&frame(b, OK, &[1, 2, 3])).unwrap();
    tx.send(&frame(c, 99, &33u64.to_le_bytes())).unwrap();
    let d = id();
    // An earlier id with D's slot (low 32 bits).
    let replayed = [a, b, c]
        .into_iter()
        .find(|x| *x as u32 == d as u32)
        .unwrap();
    tx.send(&frame(replayed, OK, &13u64.to_le_bytes())).unwrap();
    tx.send(&frame(d, OK, &41u64.to_le_bytes())).unwrap();
    // Until the client is gone.
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
}

#[allow(dead_code)]
fn _wire_type_is_what_client_new_takes(w: Wire) -> Client<Job, u64, String> {
    Client::new(w)
}

/// The client's own limits, in one process: `Busy`, `TableFull`, `Idle`,
/// and a handler that panics abandons its call.
#[test]
fn busy_full_idle_and_a_panicking_handler() {
    let _s = serial();
    let parent = Segment::create(&[ChannelConfig::new("calls").capacity(1 << 12)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let mut client: Client<u64, u64, ()> =
        Client::with_capacity(parent.channel("calls").unwrap(), 2);
    let mut server: Server<u64, u64, ()> = Server::new(child.channel("calls").unwrap());
    assert_eq!(client.try_recv_reply().unwrap_err(), CallError::Idle);
    let a = client.start(&1).unwrap();
    assert_eq!(client.call(&2).unwrap_err(), CallError::Busy);
    let b = client.start(&3).unwrap();
    assert_eq!(client.start(&4).unwrap_err(), CallError::TableFull);
    assert_eq!(client.in_flight(), 2);
    // The handler of `a` panics while it holds the call.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let call = server.recv().unwrap();
        assert_eq!(*call, 1);
        panic!("handler bug");
    }));
    assert!(panicked.is_err());
    assert_eq!(
        client.recv_reply().unwrap_err(),
        CallError::Abandoned { ticket: a }
    );
    server.recv().unwrap().reply(Ok(&6)).unwrap();
    let reply = client.recv_reply().unwrap();
    assert_eq!(
        (reply.ticket(), reply.result().unwrap().to_native()),
        (b, 6)
    );
}

/// One slot abandoned twice (the reviewer's case, through the client): the
/// first abandoned call's late reply from a correct server is discarded,
/// never `Protocol`, and never costs the live call its reply. The slot is
/// not reused a third time while the first abandoned id is unanswered
/// (`TableFull`).
#[test]
fn a_slot_abandoned_twice_still_discards_both_late_replies() {
    let _s = serial();
    let parent = Segment::create(&[ChannelConfig::new("calls").capacity(1 << 12)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let mut client: Client<u64, u64, ()> =
        Client::with_capacity(parent.channel("calls").unwrap(), 1);
    let mut server: Server<u64, u64, ()> = Server::new(child.channel("calls").unwrap());
    let a = client.start(&1).unwrap();
    assert!(client.abandon(a));
    let b = client.start(&2).unwrap();
    assert!(client.abandon(b));
    assert_eq!(client.abandoned(), 2);
    assert_eq!(client.start(&3).unwrap_err(), CallError::TableFull);
    // The server answers `a` late; its slot can be reused again after.
    let late_a = server.recv().unwrap().defer();
    server.reply(late_a, Ok(&10)).unwrap();
    let late_b = server.recv().unwrap().defer();
    // No call is live (`recv_reply` is `Idle`), so `start` itself reads
    // the late reply to `a` that has arrived, and the slot comes back.
    assert_eq!(client.try_recv_reply().unwrap_err(), CallError::Idle);
    let c = client.start(&3).unwrap();
    server.reply(late_b, Ok(&20)).unwrap();
    let call = server.recv().unwrap();
    assert_eq!(*call, 3);
    call.reply(Ok(&30)).unwrap();
    let reply = client.recv_reply().unwrap();
    assert_eq!(
        (reply.ticket(), reply.result().unwrap().to_native()),
        (c, 30)
    );
    drop(reply);
    assert_eq!((client.in_flight(), client.abandoned()), (0, 0));
}

/// Fills the reply ring: starts calls and answers each with `try_reply`
/// until the ring is full. Returns the answered tickets and the call whose
/// reply did not fit (ticket, handle).
fn fill_replies(
    client: &mut Client<u64, u64, ()>,
    server: &mut Server<u64, u64, ()>,
) -> (Vec<Ticket>, (Ticket, remora::ReplyHandle)) {
    let mut answered = Vec::new();
    for n in 0.. {
        let ticket = client.start(&n).unwrap();
        let call = server.recv().unwrap();
        match call.try_reply(Ok(&n)) {
            Ok(()) => answered.push(ticket),
            Err(e) => {
                assert_eq!(e.error, remora::SendError::Full);
                return (answered, (ticket, e.handle));
            }
        }
    }
    unreachable!()
}

/// The reply ring is full when an `Incoming` is dropped unanswered: the
/// `ABANDONED` notice is owed, not lost. The client, reading with no
/// deadline of its own, gets it once it has made room, while the server
/// sits in a blocking `recv` (which retries owed notices as it waits).
#[test]
fn an_abandon_notice_owed_on_a_full_reply_ring_still_reaches_the_caller() {
    let _s = serial();
    let _w = Watchdog::new("calls owed abandon notice", Duration::from_secs(60));
    let parent = Segment::create(&[ChannelConfig::new("calls").capacity(1 << 12)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let mut client: Client<u64, u64, ()> =
        Client::with_capacity(parent.channel("calls").unwrap(), 256);
    let mut server: Server<u64, u64, ()> = Server::new(child.channel("calls").unwrap());
    let (answered, (unsent, handle)) = fill_replies(&mut client, &mut server);
    assert!(client.abandon(unsent));
    drop(handle);
    let dropped = client.start(&999).unwrap();
    drop(server.recv().unwrap()); // unanswered, while the ring is full
    assert_eq!(server.owed_notices(), 1);
    std::thread::scope(|s| {
        let serving = s.spawn(|| server.recv().map(|_| ()));
        let mut got = Vec::new();
        loop {
            // A bound far above the expected few milliseconds, so a lost
            // notice fails here instead of waiting forever.
            match client.recv_reply_timeout(Duration::from_secs(20)) {
                Ok(reply) => got.push(reply.ticket()),
                Err(CallError::Abandoned { ticket }) => {
                    assert_eq!(ticket, dropped);
                    break;
                }
                Err(e) => panic!("{e} after {} replies", got.len()),
            }
        }
        assert_eq!(got, answered);
        drop(client);
        assert!(matches!(
            serving.join().unwrap(),
            Err(RecvError::Disconnected)
        ));
    });
    assert_eq!(server.owed_notices(), 0);
}

/// At the bound (64 owed notices) a receive takes no new request (it could
/// owe one more): `try_recv` is `Empty` though a request waits; once the
/// client reads, the notices go out first and the request is served. No
/// notice is lost.
#[test]
fn owed_notices_are_bounded_and_none_is_lost() {
    let _s = serial();
    let parent = Segment::create(&[ChannelConfig::new("calls").capacity(1 << 12)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let mut client: Client<u64, u64, ()> =
        Client::with_capacity(parent.channel("calls").unwrap(), 256);
    let mut server: Server<u64, u64, ()> = Server::new(child.channel("calls").unwrap());
    let (answered, (unsent, handle)) = fill_replies(&mut client, &mut server);
    assert!(client.abandon(unsent));
    drop(handle);
    let mut owed = Vec::new();
    for n in 0..64 {
        owed.push(client.start(&n).unwrap());
        drop(server.try_recv().unwrap());
    }
    assert_eq!(server.owed_notices(), 64);
    let last = client.start(&7).unwrap();
    assert!(matches!(server.try_recv(), Err(RecvError::Empty)));
    assert!(matches!(
        server.recv_timeout(Duration::from_millis(1)),
        Err(RecvError::Timeout)
    ));
    assert_eq!(server.owed_notices(), 64);
    // The client reads what fits in the ring; then the server can send.
    for want in &answered {
        assert_eq!(client.try_recv_reply().unwrap().ticket(), *want);
    }
    let call = server.try_recv().unwrap();
    assert_eq!(*call, 7);
    call.reply(Ok(&8)).unwrap();
    assert_eq!(server.owed_notices(), 0);
    for want in owed {
        assert_eq!(
            client.try_recv_reply().unwrap_err(),
            CallError::Abandoned { ticket: want }
        );
    }
    let reply = client.try_recv_reply().unwrap();
    assert_eq!(
        (reply.ticket(), reply.result().unwrap().to_native()),
        (last, 8)
    );
}
