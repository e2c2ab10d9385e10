//! ipc-channel rows. The child (this binary again, `std::process::Command`)
//! connects to the parent's `IpcOneShotServer`, creates one channel per
//! direction and sends the parent its ends (the ping sender and the pong
//! receiver). Three ways to carry the payload:
//!
//! * `ipc-channel`: `IpcSender<ByteBuf>` / `IpcReceiver<ByteBuf>`, the typed
//!   (serde + postcard) API; `serde_bytes::ByteBuf` so the bytes are
//!   serialised as one block, not element by element. Each side moves the
//!   buffer it received back into the next message, so no allocation is
//!   added on the sending side beyond what the library does.
//! * `ipc-bytes`: `IpcBytesSender` / `IpcBytesReceiver`, raw bytes, no serde.
//! * `ipc-shmem`: `IpcSender<IpcSharedMemory>`: each message is a fresh
//!   shared-memory region (`IpcSharedMemory::from_bytes` copies the written
//!   buffer into it), received as a mapping and read in place. ipc-channel's
//!   way to pass large payloads.
//!
//! Every receive blocks in the kernel (a Unix socket read), so these rows
//! are matched with remora Block.

use std::process::Command;

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
    IpcSharedMemory,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::baselines::{Samples, fill, verify};
use crate::common::{
    ChildEnv, ChildGuard, ENV_IPC_SERVER, Res, RunDir, Side, Watchdog, child_env, child_rounds,
    parent_rounds, rounds,
};

/// What the child sends through the one-shot server: the parent's ends.
#[derive(Serialize, Deserialize)]
enum Boot {
    Typed(IpcSender<ByteBuf>, IpcReceiver<ByteBuf>),
    Bytes(IpcBytesSender, IpcBytesReceiver),
    Shmem(IpcSender<IpcSharedMemory>, IpcReceiver<IpcSharedMemory>),
}

fn err<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

enum IpcSide {
    Typed {
        tx: IpcSender<ByteBuf>,
        rx: IpcReceiver<ByteBuf>,
        /// The buffer to write next: the last one received, or a new one.
        buf: Option<Vec<u8>>,
    },
    Bytes {
        tx: IpcBytesSender,
        rx: IpcBytesReceiver,
        buf: Vec<u8>,
    },
    Shmem {
        tx: IpcSender<IpcSharedMemory>,
        rx: IpcReceiver<IpcSharedMemory>,
        buf: Vec<u8>,
    },
}

impl IpcSide {
    fn new(boot: Boot, size: usize) -> IpcSide {
        match boot {
            Boot::Typed(tx, rx) => IpcSide::Typed {
                tx,
                rx,
                buf: Some(vec![0; size]),
            },
            Boot::Bytes(tx, rx) => IpcSide::Bytes {
                tx,
                rx,
                buf: vec![0; size],
            },
            Boot::Shmem(tx, rx) => IpcSide::Shmem {
                tx,
                rx,
                buf: vec![0; size],
            },
        }
    }
}

impl Side for IpcSide {
    fn send(&mut self, seed: u64) -> Res {
        match self {
            IpcSide::Typed { tx, buf, .. } => {
                let mut b = buf.take().ok_or("no buffer to send")?;
                fill(&mut b, seed);
                tx.send(ByteBuf::from(b)).map_err(err("send"))
            }
            IpcSide::Bytes { tx, buf, .. } => {
                fill(buf, seed);
                tx.send(buf).map_err(err("send"))
            }
            IpcSide::Shmem { tx, buf, .. } => {
                fill(buf, seed);
                tx.send(IpcSharedMemory::from_bytes(buf))
                    .map_err(err("send"))
            }
        }
    }

    fn recv(&mut self, seed: u64) -> Res {
        match self {
            IpcSide::Typed { rx, buf, .. } => {
                let m = rx.recv().map_err(err("recv"))?.into_vec();
                verify(&m, seed).map_err(err("verify"))?;
                *buf = Some(m);
                Ok(())
            }
            IpcSide::Bytes { rx, .. } => {
                let m = rx.recv().map_err(err("recv"))?;
                verify(&m, seed).map_err(err("verify"))
            }
            IpcSide::Shmem { rx, .. } => {
                let m = rx.recv().map_err(err("recv"))?;
                verify(&m, seed).map_err(err("verify"))
            }
        }
    }
}

/// Parent side of one ipc-channel row.
pub fn run(
    row: &str,
    size: usize,
    iters: usize,
    warmup: usize,
    pin: bool,
    run_dir: &RunDir,
) -> Res<Samples> {
    let (server, name) = IpcOneShotServer::<Boot>::new().map_err(err("one-shot server"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .envs(child_env(
            row,
            size,
            rounds(iters, warmup),
            &run_dir.tag,
            pin,
        ))
        .env(ENV_IPC_SERVER, name)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let child = ChildGuard(child);
    let watchdog = Watchdog::arm(row, child.0.id(), run_dir);
    let samples = server
        .accept()
        .map_err(err("accept"))
        .and_then(|(_, boot)| parent_rounds(&mut IpcSide::new(boot, size), iters, warmup));
    drop(watchdog);
    let exit = child.finish(row);
    let samples = samples?;
    exit?;
    Ok(samples)
}

/// Child side of an ipc-channel row.
pub fn child(env: &ChildEnv) -> Res {
    let name = std::env::var(ENV_IPC_SERVER).map_err(err(ENV_IPC_SERVER))?;
    let bootstrap = IpcSender::<Boot>::connect(name).map_err(err("connect"))?;
    let (boot, mine) = match env.row.as_str() {
        "ipc-channel" => {
            let (ping_tx, ping_rx) = ipc::channel().map_err(err("channel"))?;
            let (pong_tx, pong_rx) = ipc::channel().map_err(err("channel"))?;
            (Boot::Typed(ping_tx, pong_rx), Boot::Typed(pong_tx, ping_rx))
        }
        "ipc-bytes" => {
            let (ping_tx, ping_rx) = ipc::bytes_channel().map_err(err("channel"))?;
            let (pong_tx, pong_rx) = ipc::bytes_channel().map_err(err("channel"))?;
            (Boot::Bytes(ping_tx, pong_rx), Boot::Bytes(pong_tx, ping_rx))
        }
        "ipc-shmem" => {
            let (ping_tx, ping_rx) = ipc::channel().map_err(err("channel"))?;
            let (pong_tx, pong_rx) = ipc::channel().map_err(err("channel"))?;
            (Boot::Shmem(ping_tx, pong_rx), Boot::Shmem(pong_tx, ping_rx))
        }
        other => return Err(format!("not an ipc-channel row: {other}")),
    };
    bootstrap.send(boot).map_err(err("bootstrap"))?;
    child_rounds(&mut IpcSide::new(mine, env.size), env.rounds)
}
