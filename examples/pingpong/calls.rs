//! The `calls` rows: a `Client::call` against a raw round trip and a typed
//! one of the same size, in the same run, all in `Spin`; and pipelined
//! calls with 1, 8 and 64 in flight.
//!
//! ```text
//! cargo run --release --example pingpong -- --rows calls --sizes 64,4194304
//! ```
//!
//! Its own child (this binary again, `CALLS_ENV` set) serves three
//! channels: raw echo, typed echo and calls. Every round trip fills `size`
//! fresh bytes on each side and verifies every byte the other side wrote,
//! as the other rows do. Both sides read in place (the parent declares
//! trust in its child with the `unsafe` `trust_peer`, as the raw rows do),
//! so the rows compare the protocols, not the receive modes. The raw row
//! writes straight into the ring (`send_in_place`); the typed and call rows
//! fill a `Vec<u8>` that rkyv then copies into the ring, so `call / typed`
//! is the call layer's own cost and `call / raw` includes that copy. Two
//! more call rows separate the costs: `call-gen` sends a type whose bytes
//! are generated during serialisation, straight into the frame (each byte
//! written once, as the raw row does), and `call-array` (64 B only) sends
//! a `[u8; 64]`, whose archive has no relative pointer to validate.

use std::time::{Duration, Instant};

use remora::{
    ChannelConfig, Child, Client, RawReceiver, RawSender, Receiver, Replies, Requests, Sender,
    Server, Spawner, WaitStrategy,
};

use super::baselines::{self, Samples, fill, ping_seed, pong_seed, verify};
use super::{Args, iterations, print_row};

/// Set in the calls child's environment.
const CALLS_ENV: &str = "PINGPONG_CALLS_ROLE";
/// Room for a 4 MiB message (and its prefix) each way.
const CAPACITY: usize = 16 << 20;
/// Calls per pipelined row.
const PIPELINED: u64 = 200_000;

/// What the parent asks the calls child to do next.
#[derive(rkyv::Archive, rkyv::Serialize)]
enum Ctl {
    Raw { size: u64, rounds: u32 },
    Typed { size: u64, rounds: u32 },
    Serve { size: u64, rounds: u32 },
    ServeGenerated { size: u64, rounds: u32 },
    ServeArray { rounds: u32 },
    Quit,
}

/// The typed and call rows' payload.
type Payload = Vec<u8>;

/// The `call-gen` rows' payload: `len` bytes of `fill(.., seed)`, generated
/// while rkyv serialises it, in L1-sized chunks straight into the frame,
/// as the raw row's `send_in_place` writes them: one write of each byte.
/// Archived as a plain `Vec<u8>`.
struct Generated {
    seed: u64,
    len: usize,
}

impl Generated {
    fn write_chunks<E, S: rkyv::ser::Writer<E> + ?Sized>(
        &self,
        s: &mut S,
        chunk: &mut [u8],
    ) -> Result<(), E> {
        for start in (0..self.len).step_by(chunk.len()) {
            let n = chunk.len().min(self.len - start);
            fill(&mut chunk[..n], self.seed.wrapping_add((start / 8) as u64));
            s.write(&chunk[..n])?;
        }
        Ok(())
    }
}

impl rkyv::Archive for Generated {
    type Archived = rkyv::vec::ArchivedVec<u8>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(self.len, resolver, out);
    }
}

impl<S: rkyv::rancor::Fallible + rkyv::ser::Writer<S::Error> + ?Sized> rkyv::Serialize<S>
    for Generated
{
    fn serialize(&self, s: &mut S) -> Result<Self::Resolver, S::Error> {
        // Bytes need no alignment: the elements start here.
        let pos = s.pos();
        // A small chunk for small payloads: zeroing 4 KiB would cost more
        // than a 64-byte message.
        if self.len <= 256 {
            self.write_chunks(s, &mut [0u8; 256])?;
        } else {
            self.write_chunks(s, &mut [0u8; super::CHUNK])?;
        }
        Ok(rkyv::vec::VecResolver::from_pos(pos))
    }
}

/// Whether this process is the calls child.
pub fn is_child() -> bool {
    std::env::var_os(CALLS_ENV).is_some()
}

struct Peer {
    child: Child,
    ctl: Sender<Ctl>,
    raw_tx: RawSender,
    raw_rx: RawReceiver,
    typed_tx: Sender<Payload>,
    typed_rx: Receiver<Payload>,
    client: Client<Payload, Payload, ()>,
    gen_client: Client<Generated, Generated, ()>,
    array_client: Client<[u8; 64], [u8; 64], ()>,
}

/// Prints the calls rows.
pub fn rows(args: &Args) {
    let mut peer = Peer::spawn(args.pin);
    println!();
    println!(
        "calls (Spin, both sides in place): call vs raw and typed round trips, 3 alternations"
    );
    for &size in &args.sizes {
        let (iters, warmup) = iterations(size, Some(WaitStrategy::Spin), args.scale);
        let mut ratios = Vec::new();
        for _ in 0..3 {
            let raw = peer.raw(size, iters, warmup);
            print_row("call-raw", size, &raw, None);
            let typed = peer.typed(size, iters, warmup);
            print_row("call-typed", size, &typed, Some(("call-raw", raw.median())));
            let call = peer.call(size, iters, warmup);
            print_row("call", size, &call, Some(("call-raw", raw.median())));
            let generated = peer.call_generated(size, iters, warmup);
            print_row(
                "call-gen",
                size,
                &generated,
                Some(("call-raw", raw.median())),
            );
            let array = (size == 64).then(|| peer.call_array(iters, warmup));
            if let Some(array) = &array {
                print_row("call-array", size, array, Some(("call-raw", raw.median())));
            }
            let (c, r, t) = (
                call.median() as f64,
                raw.median() as f64,
                typed.median() as f64,
            );
            ratios.push((
                c / r,
                c / t,
                generated.median() as f64 / r,
                array.map_or(f64::NAN, |a| a.median() as f64 / r),
            ));
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{:<14} {:>8}   median of 3: call/raw {:.2}x, call/typed {:.2}x, call-gen/raw {:.2}x{}",
            "",
            size,
            med(ratios.iter().map(|r| r.0).collect()),
            med(ratios.iter().map(|r| r.1).collect()),
            med(ratios.iter().map(|r| r.2).collect()),
            if size == 64 {
                format!(
                    ", call-array/raw {:.2}x",
                    med(ratios.iter().map(|r| r.3).collect())
                )
            } else {
                String::new()
            },
        );
    }
    let calls = ((PIPELINED as f64 * args.scale) as u64).max(1000);
    for depth in [1, 8, 64] {
        let rate = peer.pipelined(depth, calls);
        println!(
            "calls pipelined 64 B, {depth:>2} in flight: {:.2} M calls/s",
            rate / 1e6
        );
    }
    peer.quit();
}

impl Peer {
    fn spawn(pin: bool) -> Peer {
        let child = Spawner::new(std::env::current_exe().expect("current_exe"))
            .env(CALLS_ENV, "1")
            .env("PINGPONG_PIN", if pin { "1" } else { "0" })
            .channel_with(ChannelConfig::new("ctl").capacity(4096))
            .channel_with(ChannelConfig::new("raw").capacity(CAPACITY))
            .channel_with(ChannelConfig::new("typed").capacity(CAPACITY))
            .channel_with(ChannelConfig::new("calls").capacity(CAPACITY))
            .channel_with(ChannelConfig::new("gen").capacity(CAPACITY))
            .channel_with(ChannelConfig::new("array").capacity(1 << 16))
            .spawn()
            .expect("spawn calls child");
        let (ctl, _) = child.channel::<Ctl, ()>("ctl").expect("ctl");
        let (mut raw_tx, mut raw_rx) = child.raw_channel("raw").expect("raw");
        let (mut typed_tx, mut typed_rx) = child.channel("typed").expect("typed");
        let mut client: Client<Payload, Payload, ()> =
            Client::new(child.channel("calls").expect("calls"));
        let mut gen_client: Client<Generated, Generated, ()> =
            Client::new(child.channel("gen").expect("gen"));
        let mut array_client: Client<[u8; 64], [u8; 64], ()> =
            Client::new(child.channel("array").expect("array"));
        // SAFETY: the child is this same binary, whose code never writes a
        // frame after sending it: the rows compare protocols in place.
        unsafe {
            raw_rx.trust_peer();
            typed_rx.trust_peer();
            client.trust_peer();
            gen_client.trust_peer();
            array_client.trust_peer();
        }
        raw_tx.set_wait_strategy(WaitStrategy::Spin);
        raw_rx.set_wait_strategy(WaitStrategy::Spin);
        typed_tx.set_wait_strategy(WaitStrategy::Spin);
        typed_rx.set_wait_strategy(WaitStrategy::Spin);
        client.set_wait_strategy(WaitStrategy::Spin);
        gen_client.set_wait_strategy(WaitStrategy::Spin);
        array_client.set_wait_strategy(WaitStrategy::Spin);
        Peer {
            child,
            ctl,
            raw_tx,
            raw_rx,
            typed_tx,
            typed_rx,
            client,
            gen_client,
            array_client,
        }
    }

    /// Tells the child what to serve for `iters + warmup` rounds (the
    /// message `make` builds from that count); returns the count.
    fn start(&mut self, iters: usize, warmup: usize, make: impl FnOnce(u32) -> Ctl) -> u32 {
        let total = (iters + warmup) as u32;
        self.ctl.send(&make(total)).expect("ctl");
        total
    }

    fn raw(&mut self, size: usize, iters: usize, warmup: usize) -> Samples {
        let total = self.start(iters, warmup, |rounds| Ctl::Raw {
            size: size as u64,
            rounds,
        });
        timed(total, warmup, |k| {
            super::send_filled(&mut self.raw_tx, size, ping_seed(k));
            let reply = self.raw_rx.recv().expect("raw recv");
            verify(&reply, pong_seed(k)).expect("corrupt raw pong");
        })
    }

    fn typed(&mut self, size: usize, iters: usize, warmup: usize) -> Samples {
        let total = self.start(iters, warmup, |rounds| Ctl::Typed {
            size: size as u64,
            rounds,
        });
        let mut data = vec![0u8; size];
        timed(total, warmup, |k| {
            fill(&mut data, ping_seed(k));
            self.typed_tx.send(&data).expect("typed send");
            let reply = self.typed_rx.recv().expect("typed recv");
            verify(&reply, pong_seed(k)).expect("corrupt typed pong");
        })
    }

    fn call(&mut self, size: usize, iters: usize, warmup: usize) -> Samples {
        let total = self.start(iters, warmup, |rounds| Ctl::Serve {
            size: size as u64,
            rounds,
        });
        let mut data = vec![0u8; size];
        timed(total, warmup, |k| {
            fill(&mut data, ping_seed(k));
            let reply = self.client.call(&data).expect("call");
            verify(reply.result().expect("ok"), pong_seed(k)).expect("corrupt call reply");
        })
    }

    fn call_generated(&mut self, size: usize, iters: usize, warmup: usize) -> Samples {
        let total = self.start(iters, warmup, |rounds| Ctl::ServeGenerated {
            size: size as u64,
            rounds,
        });
        timed(total, warmup, |k| {
            let req = Generated {
                seed: ping_seed(k),
                len: size,
            };
            let reply = self.gen_client.call(&req).expect("call");
            verify(reply.result().expect("ok"), pong_seed(k)).expect("corrupt call-gen reply");
        })
    }

    /// 64-byte calls of a `[u8; 64]`: an archive with no relative pointer
    /// to check, so what remains is the call protocol itself.
    fn call_array(&mut self, iters: usize, warmup: usize) -> Samples {
        let total = self.start(iters, warmup, |rounds| Ctl::ServeArray { rounds });
        let mut data = [0u8; 64];
        timed(total, warmup, |k| {
            fill(&mut data, ping_seed(k));
            let reply = self.array_client.call(&data).expect("call");
            verify(reply.result().expect("ok"), pong_seed(k)).expect("corrupt call-array reply");
        })
    }

    /// `calls` 64-byte calls with `depth` in flight; calls per second.
    fn pipelined(&mut self, depth: usize, calls: u64) -> f64 {
        self.ctl
            .send(&Ctl::Serve {
                size: 64,
                rounds: calls as u32,
            })
            .expect("ctl");
        let mut data = vec![0u8; 64];
        let mut seqs = vec![0u32; self.client.capacity()];
        let (mut started, mut done) = (0u64, 0u64);
        let t0 = Instant::now();
        while done < calls {
            while started < calls && self.client.in_flight() < depth {
                let k = started as u32 + 1;
                fill(&mut data, ping_seed(k));
                let ticket = self.client.start(&data).expect("start");
                seqs[ticket.slot()] = k;
                started += 1;
            }
            let reply = self.client.recv_reply().expect("reply");
            let k = seqs[reply.ticket().slot()];
            verify(reply.result().expect("ok"), pong_seed(k)).expect("corrupt pipelined reply");
            done += 1;
        }
        calls as f64 / t0.elapsed().as_secs_f64()
    }

    fn quit(mut self) {
        self.ctl.send(&Ctl::Quit).expect("quit");
        drop((
            self.ctl,
            self.raw_tx,
            self.raw_rx,
            self.typed_tx,
            self.typed_rx,
        ));
        drop((self.client, self.gen_client, self.array_client));
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "calls child failed: {status}");
    }
}

/// Runs `f(k)` for `k` in `1..=total`, timing each; keeps those after
/// `warmup`.
fn timed(total: u32, warmup: usize, mut f: impl FnMut(u32)) -> Samples {
    let mut samples = Vec::with_capacity(total as usize);
    for k in 1..=total {
        let t0 = Instant::now();
        f(k);
        if k as usize > warmup {
            samples.push(t0.elapsed().as_nanos() as u64);
        }
    }
    Samples(samples)
}

/// The calls child: serves whatever the parent asks for.
pub fn child() {
    if std::env::var("PINGPONG_PIN").as_deref() == Ok("1") {
        baselines::pin_to_cpu(1).expect("pin child to CPU 1");
    }
    let conn = remora::connect().expect("connect");
    let (_, mut ctl) = conn.channel::<(), Ctl>("ctl").expect("ctl");
    let (mut raw_tx, mut raw_rx) = conn.raw_channel("raw").expect("raw");
    let (mut typed_tx, mut typed_rx) = conn.channel::<Payload, Payload>("typed").expect("typed");
    let ends: (Sender<Replies<Payload, ()>>, Receiver<Requests<Payload>>) =
        conn.channel("calls").expect("calls");
    let mut server: Server<Payload, Payload, ()> = Server::new(ends);
    let mut array_server: Server<[u8; 64], [u8; 64], ()> =
        Server::new(conn.channel("array").expect("array"));
    array_server.set_wait_strategy(WaitStrategy::Spin);
    let mut gen_server: Server<Generated, Generated, ()> =
        Server::new(conn.channel("gen").expect("gen"));
    gen_server.set_wait_strategy(WaitStrategy::Spin);
    raw_tx.set_wait_strategy(WaitStrategy::Spin);
    raw_rx.set_wait_strategy(WaitStrategy::Spin);
    typed_tx.set_wait_strategy(WaitStrategy::Spin);
    typed_rx.set_wait_strategy(WaitStrategy::Spin);
    server.set_wait_strategy(WaitStrategy::Spin);
    ctl.set_wait_strategy(WaitStrategy::Block);
    let mut data = Vec::new();
    loop {
        let cmd = ctl.recv_timeout(Duration::from_secs(300)).expect("control");
        match &*cmd {
            ArchivedCtl::Raw { size, rounds } => {
                let (size, rounds) = (size.to_native() as usize, rounds.to_native());
                drop(cmd);
                for k in 1..=rounds {
                    let ping = raw_rx.recv().expect("raw recv");
                    verify(&ping, ping_seed(k)).expect("corrupt raw ping");
                    drop(ping);
                    super::send_filled(&mut raw_tx, size, pong_seed(k));
                }
            }
            ArchivedCtl::Typed { size, rounds } => {
                let (size, rounds) = (size.to_native() as usize, rounds.to_native());
                drop(cmd);
                data.resize(size, 0);
                for k in 1..=rounds {
                    let ping = typed_rx.recv().expect("typed recv");
                    verify(&ping, ping_seed(k)).expect("corrupt typed ping");
                    drop(ping);
                    fill(&mut data, pong_seed(k));
                    typed_tx.send(&data).expect("typed send");
                }
            }
            ArchivedCtl::Serve { size, rounds } => {
                let (size, rounds) = (size.to_native() as usize, rounds.to_native());
                drop(cmd);
                data.resize(size, 0);
                for k in 1..=rounds {
                    let call = server.recv().expect("call recv");
                    verify(&call, ping_seed(k)).expect("corrupt call");
                    fill(&mut data, pong_seed(k));
                    call.reply(Ok(&data)).expect("reply");
                }
            }
            ArchivedCtl::ServeGenerated { size, rounds } => {
                let (size, rounds) = (size.to_native() as usize, rounds.to_native());
                drop(cmd);
                for k in 1..=rounds {
                    let call = gen_server.recv().expect("call-gen recv");
                    verify(&call, ping_seed(k)).expect("corrupt call-gen");
                    let reply = Generated {
                        seed: pong_seed(k),
                        len: size,
                    };
                    call.reply(Ok(&reply)).expect("reply");
                }
            }
            ArchivedCtl::ServeArray { rounds } => {
                let rounds = rounds.to_native();
                drop(cmd);
                let mut pong = [0u8; 64];
                for k in 1..=rounds {
                    let call = array_server.recv().expect("call-array recv");
                    verify(&*call, ping_seed(k)).expect("corrupt call-array");
                    fill(&mut pong, pong_seed(k));
                    call.reply(Ok(&pong)).expect("reply");
                }
            }
            ArchivedCtl::Quit => return,
        }
    }
}
