//! iceoryx2 rows: two publish-subscribe services of `[u8]` slices, one per
//! direction, with zero-copy samples (`loan_slice_uninit`, write the payload
//! in place, `send`; `receive`, read the payload in place).
//!
//! * `iceoryx2-poll`: the receiver busy-polls `receive()` (with
//!   `spin_loop()` between attempts), the counterpart of remora Spin.
//! * `iceoryx2-event`: after each `send` the sender also `notify()`s an
//!   event service; the receiver drains `receive()` and otherwise sleeps in
//!   `Listener::timed_wait`, the counterpart of remora Block. This is
//!   iceoryx2's documented event-based pattern (publish-subscribe plus event).
//!
//! The child is this binary again, started with `std::process::Command`.
//! Both processes use the same iceoryx2 `Config`: root path `/tmp/rpeers<pid>/`
//! and file prefix `rpeers<pid>_`, so everything a run creates is in one
//! directory and under one `/dev/shm` prefix, and the parent removes both at
//! the end (see `RunDir`).

use std::process::Command;
use std::time::Duration;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::baselines::{Samples, verify};
use crate::common::{
    ChildEnv, ChildGuard, Res, RunDir, Side, StallCheck, Watchdog, child_env, child_rounds,
    fill_uninit, parent_rounds, rounds,
};

type Pub = Publisher<ipc::Service, [u8], ()>;
type Sub = Subscriber<ipc::Service, [u8], ()>;

/// Longest single sleep of the event-based receiver before it re-checks.
const EVENT_SLICE: Duration = Duration::from_millis(100);

fn err<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

fn config(tag: &str) -> Res<Config> {
    let mut cfg = Config::default();
    let root = format!("{}/", RunDir::dir_for(tag).display());
    cfg.global
        .set_root_path(&Path::new(root.as_bytes()).map_err(err("root path"))?);
    cfg.global.prefix = FileName::new(RunDir::shm_prefix(tag).as_bytes()).map_err(err("prefix"))?;
    Ok(cfg)
}

fn node(tag: &str) -> Res<Node<ipc::Service>> {
    NodeBuilder::new()
        .config(&config(tag)?)
        // Ctrl-C must still end the program: we never call `node.wait()`.
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(err("node"))
}

fn service_name(tag: &str, row: &str, size: usize, what: &str) -> Res<ServiceName> {
    ServiceName::new(format!("{tag}/{row}/{size}/{what}").as_str()).map_err(err("name"))
}

/// The four services of one row; `create` in the parent, `open` in the child.
struct Services {
    ping: PortFactoryPs,
    pong: PortFactoryPs,
    ping_ev: PortFactoryEv,
    pong_ev: PortFactoryEv,
}

type PortFactoryPs =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;
type PortFactoryEv = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;

impl Services {
    fn new(node: &Node<ipc::Service>, env: &ChildEnv, create: bool) -> Res<Services> {
        let ps = |what: &str| -> Res<PortFactoryPs> {
            let b = node
                .service_builder(&service_name(&env.tag, &env.row, env.size, what)?)
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .max_nodes(2)
                .history_size(0);
            match create {
                true => b.create().map_err(err(what)),
                false => b.open().map_err(err(what)),
            }
        };
        let ev = |what: &str| -> Res<PortFactoryEv> {
            let b = node
                .service_builder(&service_name(&env.tag, &env.row, env.size, what)?)
                .event()
                .max_notifiers(1)
                .max_listeners(1)
                .max_nodes(2);
            match create {
                true => b.create().map_err(err(what)),
                false => b.open().map_err(err(what)),
            }
        };
        Ok(Services {
            ping: ps("ping")?,
            pong: ps("pong")?,
            ping_ev: ev("ping-ev")?,
            pong_ev: ev("pong-ev")?,
        })
    }
}

struct IoxSide {
    size: usize,
    publisher: Pub,
    subscriber: Sub,
    /// `Some` for `iceoryx2-event`.
    event: Option<(Notifier<ipc::Service>, Listener<ipc::Service>)>,
}

impl IoxSide {
    /// `tx`/`rx`: the services this side publishes to and subscribes to.
    fn new(
        tx: (&PortFactoryPs, &PortFactoryEv),
        rx: (&PortFactoryPs, &PortFactoryEv),
        size: usize,
        row: &str,
    ) -> Res<IoxSide> {
        let event_based = row == "iceoryx2-event";
        let publisher =
            tx.0.publisher_builder()
                .initial_max_slice_len(size)
                .create()
                .map_err(err("publisher"))?;
        let subscriber =
            rx.0.subscriber_builder()
                .create()
                .map_err(err("subscriber"))?;
        let event = match event_based {
            false => None,
            true => Some((
                tx.1.notifier_builder().create().map_err(err("notifier"))?,
                rx.1.listener_builder().create().map_err(err("listener"))?,
            )),
        };
        Ok(IoxSide {
            size,
            publisher,
            subscriber,
            event,
        })
    }
}

impl Side for IoxSide {
    #[inline]
    fn send(&mut self, seed: u64) -> Res {
        let mut sample = self
            .publisher
            .loan_slice_uninit(self.size)
            .map_err(err("loan"))?;
        fill_uninit(sample.payload_mut(), seed);
        // SAFETY: `fill_uninit` wrote every byte of the payload.
        let sample = unsafe { sample.assume_init() };
        sample.send().map_err(err("send"))?;
        if let Some((notifier, _)) = &self.event {
            notifier.notify().map_err(err("notify"))?;
        }
        Ok(())
    }

    #[inline]
    fn recv(&mut self, seed: u64) -> Res {
        let mut stall = StallCheck::new();
        loop {
            if let Some(sample) = self.subscriber.receive().map_err(err("receive"))? {
                return verify(sample.payload(), seed).map_err(err("verify"));
            }
            match &self.event {
                // Returns at once if a notification is pending (e.g. the one
                // for a sample we already took): we then re-check and sleep.
                Some((_, listener)) => {
                    listener
                        .timed_wait(|_| {}, EVENT_SLICE)
                        .map_err(err("wait"))?;
                }
                None => std::hint::spin_loop(),
            }
            stall.tick()?;
        }
    }
}

/// Parent side of one iceoryx2 row (`iceoryx2-poll` or `iceoryx2-event`).
pub fn run(
    row: &str,
    size: usize,
    iters: usize,
    warmup: usize,
    pin: bool,
    run_dir: &RunDir,
) -> Res<Samples> {
    let env = ChildEnv {
        row: row.to_owned(),
        size,
        rounds: rounds(iters, warmup),
        tag: run_dir.tag.clone(),
    };
    let node = node(&run_dir.tag)?;
    let services = Services::new(&node, &env, true)?;
    let s = &services;
    let mut side = IoxSide::new((&s.ping, &s.ping_ev), (&s.pong, &s.pong_ev), size, row)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .envs(child_env(row, size, env.rounds, &run_dir.tag, pin))
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let child = ChildGuard(child);
    let watchdog = Watchdog::arm(row, child.0.id(), run_dir);
    let samples = parent_rounds(&mut side, iters, warmup);
    drop(watchdog);
    let exit = child.finish(row);
    let samples = samples?;
    exit?;
    drop((side, services, node));
    Ok(samples)
}

/// Child side of an iceoryx2 row.
pub fn child(env: &ChildEnv) -> Res {
    let node = node(&env.tag)?;
    let s = Services::new(&node, env, false)?;
    let mut side = IoxSide::new(
        (&s.pong, &s.pong_ev),
        (&s.ping, &s.ping_ev),
        env.size,
        &env.row,
    )?;
    child_rounds(&mut side, env.rounds)
}
