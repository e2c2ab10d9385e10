//! A counting global allocator proves that calls allocate nothing once the
//! client and server exist: in one thread over a segment (both sides'
//! paths, receivers in the default `ReceiveMode::Copy`, the late-reply
//! discard included; and the slow paths: notices owed on a full reply
//! ring, an abandoned slot reused), and between two processes over both
//! transports (the child server counts its own allocations and fails if it
//! saw any).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::alloc::allocations_during;
use remora::{CallError, ChannelConfig, Client, RecvError, Segment, Server, Spawner, Transport};

static SERIAL: Mutex<()> = Mutex::new(());

#[global_allocator]
static GLOBAL: common::alloc::Counting = common::alloc::Counting;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Request {
    key: String,
    values: Vec<u32>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Response {
    sum: u64,
    note: String,
}

fn request() -> Request {
    Request {
        key: "a key longer than the inline string limit".into(),
        values: (0..64).collect(),
    }
}

#[test]
fn calls_in_one_thread_do_not_allocate() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let parent = Segment::create(&[ChannelConfig::new("calls").capacity(1 << 16)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let mut client: Client<Request, Response, String> =
        Client::with_capacity(parent.channel("calls").unwrap(), 8);
    let mut server: Server<Request, Response, String> =
        Server::new(child.channel("calls").unwrap());
    let req = request();
    let resp = Response {
        sum: 2016,
        note: "a note longer than the inline string limit".into(),
    };
    let err = "an error longer than the inline string limit".to_owned();
    let mut round = |n: u64| {
        for _ in 0..n {
            // Pipelined: four calls, answered at once, deferred, with an
            // error, and one abandoned by its caller (discarded late).
            let tickets = [
                client.start(&req).unwrap(),
                client.try_start(&req).unwrap(),
                client.start_timeout(&req, Duration::from_secs(1)).unwrap(),
                client.start(&req).unwrap(),
            ];
            assert!(client.abandon(tickets[3]));
            let first = server.recv().unwrap();
            assert_eq!(first.values.len(), 64);
            first.reply(Ok(&resp)).unwrap();
            let second = server.try_recv().unwrap().defer();
            let third = server.recv_timeout(Duration::from_secs(1)).unwrap();
            assert_eq!(third.key, req.key);
            third.reply(Err(&err)).unwrap();
            server.reply(second, Ok(&resp)).unwrap();
            let fourth = server.recv().unwrap().defer();
            server.try_reply(fourth, Ok(&resp)).unwrap();
            let mut got = 0;
            while got < 3 {
                let reply = client.recv_reply().unwrap();
                match reply.result() {
                    Ok(r) => assert_eq!(r.sum, 2016),
                    Err(e) => assert_eq!(e.as_str(), err),
                }
                assert!(tickets[..3].contains(&reply.ticket()));
                got += 1;
            }
            // No call is live: nothing to wait for. The abandoned call's
            // reply is discarded by the next receive, on the way to `t`'s.
            assert!(matches!(client.try_recv_reply(), Err(CallError::Idle)));
            let t = client.start(&req).unwrap();
            server.recv().unwrap().reply(Ok(&resp)).unwrap();
            let reply = client.recv_reply_timeout(Duration::from_secs(1)).unwrap();
            assert_eq!(reply.ticket(), t);
            drop(reply);
            assert_eq!((client.in_flight(), client.abandoned()), (0, 0));
            assert!(matches!(server.try_recv(), Err(RecvError::Empty)));
        }
    };
    assert!(allocations_during(|| drop(std::hint::black_box(Box::new(1u8)))) >= 1);
    round(100);
    let n = allocations_during(|| round(5_000));
    assert_eq!(n, 0, "{n} heap allocations in 5,000 rounds of calls");
}

/// The slow paths allocate nothing either: notices owed on a full reply
/// ring (kept, then flushed), and a one-slot table abandoned twice (not
/// reused a third time; `start` reads the late reply to get it back).
#[test]
fn owed_notices_and_abandoned_slot_reuse_do_not_allocate() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let parent = Segment::create(&[
        ChannelConfig::new("owed").capacity(1 << 12),
        ChannelConfig::new("reuse").capacity(1 << 12),
    ])
    .unwrap();
    let child = Segment::open(parent.name()).unwrap();
    let mut client: Client<u64, u64, ()> =
        Client::with_capacity(parent.channel("owed").unwrap(), 256);
    let mut server: Server<u64, u64, ()> = Server::new(child.channel("owed").unwrap());
    let mut one: Client<u64, u64, ()> = Client::with_capacity(parent.channel("reuse").unwrap(), 1);
    let mut one_server: Server<u64, u64, ()> = Server::new(child.channel("reuse").unwrap());
    let mut round = |n: u64| {
        for _ in 0..n {
            // Fill the reply ring.
            let mut answered = 0;
            let (held, handle) = loop {
                let ticket = client.start(&1).unwrap();
                match server.recv().unwrap().try_reply(Ok(&1)) {
                    Ok(()) => answered += 1,
                    Err(e) => break (ticket, e.handle),
                }
            };
            // Drop calls unanswered until a notice (smaller than a reply)
            // does not fit either and is owed.
            let mut notices = 0;
            while server.owed_notices() == 0 {
                client.start(&2).unwrap();
                drop(server.recv().unwrap());
                notices += 1;
            }
            for _ in 0..answered {
                client.recv_reply().unwrap();
            }
            assert!(matches!(server.try_recv(), Err(RecvError::Empty)));
            assert_eq!(server.owed_notices(), 0);
            for _ in 0..notices {
                assert!(matches!(
                    client.recv_reply().unwrap_err(),
                    CallError::Abandoned { .. }
                ));
            }
            server.reply(handle, Ok(&3)).unwrap();
            assert_eq!(client.recv_reply().unwrap().ticket(), held);
            assert_eq!((client.in_flight(), client.abandoned()), (0, 0));
            // A one-slot table abandoned twice.
            let a = one.start(&1).unwrap();
            one.abandon(a);
            let b = one.start(&2).unwrap();
            one.abandon(b);
            assert_eq!(one.start(&3).unwrap_err(), CallError::TableFull);
            let late = one_server.recv().unwrap().defer();
            one_server.reply(late, Ok(&1)).unwrap();
            let late = one_server.recv().unwrap().defer();
            one_server.reply(late, Ok(&2)).unwrap();
            let c = one.start(&3).unwrap();
            one_server.recv().unwrap().reply(Ok(&3)).unwrap();
            assert_eq!(one.recv_reply().unwrap().ticket(), c);
            assert_eq!((one.in_flight(), one.abandoned()), (0, 0));
        }
    };
    round(10);
    let n = allocations_during(|| round(200));
    assert_eq!(n, 0, "{n} heap allocations in 200 rounds of slow paths");
}

#[test]
fn calls_between_processes_do_not_allocate_shm() {
    between_processes(Transport::Shm);
}

#[test]
fn calls_between_processes_do_not_allocate_fifo() {
    between_processes(Transport::Fifo);
}

/// Warm-up and measured calls; the child measures the same split.
const WARM_UP: u64 = 200;
const MEASURED: u64 = 10_000;

fn between_processes(t: Transport) {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _w = common::Watchdog::new("calls zero-alloc", Duration::from_secs(120));
    let mut child = Spawner::new(std::env::current_exe().unwrap())
        .args(common::CHILD_ENTRY)
        .env(common::ROLE, "serve")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .transport(t)
        .channel_with(ChannelConfig::new("calls").capacity(1 << 16))
        .spawn()
        .unwrap();
    let mut client: Client<Request, Response, String> =
        Client::new(child.channel("calls").unwrap());
    let req = request();
    let mut round = |n: u64| {
        for _ in 0..n {
            let reply = client.call(&req).unwrap();
            assert_eq!(reply.result().unwrap().sum, 2016);
            drop(reply);
            let reply = client.call_timeout(&req, Duration::from_secs(10)).unwrap();
            assert_eq!(reply.result().unwrap().note, "note");
        }
    };
    round(WARM_UP / 2);
    let n = allocations_during(|| round(MEASURED / 2));
    assert_eq!(n, 0, "{n} heap allocations in {MEASURED} calls over {t}");
    drop(client);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the server allocated (or failed): {status}"
    );
}

/// Entry point of the re-executed child; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    assert_eq!(role, "serve");
    let _w = common::Watchdog::new("calls zero-alloc child", Duration::from_secs(120));
    let conn = remora::connect().unwrap();
    let mut server: Server<Request, Response, String> = Server::new(conn.channel("calls").unwrap());
    let resp = Response {
        sum: 2016,
        note: "note".into(),
    };
    let mut serve = |n: u64| {
        for _ in 0..n {
            let call = server.recv().unwrap();
            assert_eq!(call.values.len(), 64);
            call.reply(Ok(&resp)).unwrap();
        }
    };
    serve(WARM_UP);
    let n = allocations_during(|| serve(MEASURED));
    assert_eq!(n, 0, "{n} heap allocations serving {MEASURED} calls");
    assert!(matches!(server.recv(), Err(RecvError::Disconnected)));
}
