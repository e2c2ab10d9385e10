//! A counting global allocator proves that the channel ends of a service
//! connection (declared at bind, and opened at run time) send and receive
//! without allocating, both receivers in their default `ReceiveMode::Copy`:
//! they are the same ring ends as a segment's.

mod common;

use std::thread;
use std::time::Duration;

use common::Watchdog;
use common::alloc::allocations_during;
use remora::{ChannelConfig, Service, ServiceConnection};

#[global_allocator]
static GLOBAL: common::alloc::Counting = common::alloc::Counting;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Request {
    id: u64,
    name: String,
    values: Vec<u32>,
}

/// Both sides of one connection, in this thread.
fn pair(name: &str, channels: &[ChannelConfig]) -> (ServiceConnection, ServiceConnection) {
    let mut service = Service::bind(name, channels).unwrap();
    let n = name.to_owned();
    let client = thread::spawn(move || remora::connect_service(&n).unwrap());
    let server = service.accept().unwrap();
    (server, client.join().unwrap())
}

#[test]
fn service_ends_do_not_allocate() {
    let _w = Watchdog::new("service zero alloc", Duration::from_secs(60));
    let name = format!("t{}-zeroalloc", std::process::id());
    let (server, client) = pair(
        &name,
        &[
            ChannelConfig::new("typed").capacity(1 << 16),
            ChannelConfig::new("raw").capacity(1 << 12),
        ],
    );
    let (mut tx, mut srx) = client.channel::<Request, Request>("typed").unwrap();
    let (mut stx, mut rx) = server.channel::<Request, Request>("typed").unwrap();
    let (mut raw_tx, mut raw_srx) = client.raw_channel("raw").unwrap();
    let (mut raw_stx, mut raw_rx) = server.raw_channel("raw").unwrap();
    // A run-time channel, opened by the server, accepted by the client.
    let opener = thread::scope(|s| {
        let accept = s.spawn(|| client.accept_channel().unwrap());
        let ends = server
            .open_raw_channel(ChannelConfig::new("late").capacity(1 << 12))
            .unwrap();
        (ends, accept.join().unwrap())
    });
    let ((mut late_tx, _), opened) = opener;
    let (_, mut late_rx) = opened.raw_channel().unwrap();

    let req = Request {
        id: 7,
        name: "a name longer than the inline limit".into(),
        values: (0..100).collect(),
    };
    let bytes = [0x5au8; 200];
    let mut round = |n: usize| {
        for _ in 0..n {
            tx.send(&req).unwrap();
            let got = rx.recv().unwrap();
            assert_eq!(got.values.len(), 100);
            drop(got);
            stx.send(&req).unwrap();
            assert_eq!(srx.recv().unwrap().id, 7);
            raw_tx.send(&bytes).unwrap();
            assert_eq!(raw_rx.recv().unwrap().len(), 200);
            raw_stx.send(&bytes).unwrap();
            assert_eq!(raw_srx.recv().unwrap()[0], 0x5a);
            late_tx.send(&bytes).unwrap();
            assert_eq!(late_rx.recv().unwrap().len(), 200);
        }
    };
    round(100); // warm-up
    let allocations = allocations_during(|| round(10_000));
    assert_eq!(allocations, 0, "the hot path allocated");
}
