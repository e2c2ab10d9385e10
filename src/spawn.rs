//! The process spawner (parent side) and `connect` (child side).
//!
//! The parent declares channels on a [`Spawner`], which creates the segment
//! and starts the child with one environment variable, [`CHANNEL_ENV`],
//! naming it. The child calls [`connect`], which opens, validates and claims
//! the segment and removes its name from `/dev/shm` at once, so nothing is
//! left behind once the child is attached. Each side watches the other
//! process (pidfd / `getppid`), so a blocked call returns `Disconnected`
//! within about 50 ms of the peer's death.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::channel::{RawReceiver, RawSender, Receiver, Sender};
use crate::codec::{Decode, Encode};
use crate::error::{ChannelError, ConnectError, SpawnError};
use crate::segment::{ChannelConfig, Segment};

/// The environment variable through which a spawned child finds its
/// segment: `shm:/remora-<pid>-<random>`.
pub const CHANNEL_ENV: &str = "REMORA_CHANNEL";

/// Starts a child process with remora channels: `std::process::Command` plus
/// channel declarations.
///
/// ```no_run
/// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Request { id: u32 }
/// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Reply { id: u32 }
/// let mut child = remora::Spawner::new("path/to/app")
///     .arg("--verbose")
///     .channel("echo")
///     .spawn()?;
/// let (mut tx, mut rx) = child.channel::<Request, Reply>("echo")?;
/// tx.send(&Request { id: 1 })?;
/// assert_eq!(rx.recv()?.id, 1);
/// let status = child.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Spawner {
    command: Command,
    channels: Vec<ChannelConfig>,
}

impl Spawner {
    /// A spawner for `program`, like [`Command::new`].
    pub fn new(program: impl AsRef<OsStr>) -> Spawner {
        Spawner {
            command: Command::new(program),
            channels: Vec::new(),
        }
    }

    /// Adds an argument, like [`Command::arg`].
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Spawner {
        self.command.arg(arg);
        self
    }

    /// Adds arguments, like [`Command::args`].
    pub fn args<I, S>(&mut self, args: I) -> &mut Spawner
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable, like [`Command::env`].
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Spawner {
        self.command.env(key, val);
        self
    }

    /// Removes an environment variable, like [`Command::env_remove`].
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Spawner {
        self.command.env_remove(key);
        self
    }

    /// Sets the working directory, like [`Command::current_dir`].
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Spawner {
        self.command.current_dir(dir);
        self
    }

    /// Configures the child's stdin, like [`Command::stdin`].
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Spawner {
        self.command.stdin(cfg);
        self
    }

    /// Configures the child's stdout, like [`Command::stdout`].
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Spawner {
        self.command.stdout(cfg);
        self
    }

    /// Configures the child's stderr, like [`Command::stderr`].
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Spawner {
        self.command.stderr(cfg);
        self
    }

    /// Declares a duplex channel `name` with the default capacity (1 MiB
    /// per direction) and wait strategy.
    pub fn channel(&mut self, name: impl Into<String>) -> &mut Spawner {
        self.channels.push(ChannelConfig::new(name));
        self
    }

    /// Declares a channel with explicit settings (capacity, wait strategy).
    pub fn channel_with(&mut self, config: ChannelConfig) -> &mut Spawner {
        self.channels.push(config);
        self
    }

    /// Creates the segment and starts the child. Returns at once; the child
    /// attaches whenever it calls [`connect`].
    pub fn spawn(&mut self) -> Result<Child, SpawnError> {
        let segment = Segment::create(&self.channels).map_err(SpawnError::Segment)?;
        self.command
            .env(CHANNEL_ENV, format!("shm:{}", segment.name()));
        let spawned = self.command.spawn();
        // Do not leak this segment's name into later spawns of this Spawner.
        self.command.env_remove(CHANNEL_ENV);
        let process = spawned.map_err(SpawnError::Spawn)?; // drops (unlinks) the segment
        segment.watch_child(process.id());
        Ok(Child { process, segment })
    }
}

/// A running child process and the parent's side of its channels.
///
/// Like [`std::process::Child`], dropping it neither kills nor reaps the
/// process; it does remove the segment's name if the child never attached.
/// Channel ends taken from it stay usable after it is dropped.
#[derive(Debug)]
pub struct Child {
    process: std::process::Child,
    segment: Segment,
}

impl Child {
    /// Takes the parent's ends of channel `name`: a sender of `Out` and a
    /// receiver of `In` (the child declares the same channel with the types
    /// swapped). Each channel can be taken once.
    pub fn channel<Out: Encode, In: Decode>(
        &self,
        name: &str,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        self.segment.channel(name)
    }

    /// Takes the parent's ends of channel `name` as raw byte channels.
    pub fn raw_channel(&self, name: &str) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.segment.raw_channel(name)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Whether the child has attached to its segment.
    pub fn is_attached(&self) -> bool {
        self.segment.is_claimed()
    }

    /// Waits for the child to exit, like [`std::process::Child::wait`].
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.process.wait()?;
        let _ = self.segment.unlink();
        Ok(status)
    }

    /// Checks whether the child has exited, like
    /// [`std::process::Child::try_wait`].
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.process.try_wait()?;
        if status.is_some() {
            let _ = self.segment.unlink();
        }
        Ok(status)
    }

    /// Sends SIGKILL, like [`std::process::Child::kill`]. Blocked calls on
    /// the parent's ends then return `Disconnected` once the child is dead.
    pub fn kill(&mut self) -> io::Result<()> {
        self.process.kill()
    }

    /// The underlying `std::process::Child`, e.g. for its stdio pipes.
    pub fn process_mut(&mut self) -> &mut std::process::Child {
        &mut self.process
    }
}

/// The child's side of its segment, from [`connect`].
#[derive(Debug)]
pub struct Connection {
    segment: Segment,
}

/// Child side: attaches to the segment named by [`CHANNEL_ENV`].
///
/// Opens, validates and claims the segment, then removes its name so that
/// nothing is left in `/dev/shm` and no other process can attach (a
/// grandchild that inherited the variable gets an error). From then on the
/// channels report `Disconnected` if the parent dies.
///
/// ```no_run
/// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Request { id: u32 }
/// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Reply { id: u32 }
/// let conn = remora::connect()?;
/// let (mut tx, mut rx) = conn.channel::<Reply, Request>("echo")?;
/// while let Ok(req) = rx.recv() {
///     tx.send(&Reply { id: req.id.into() })?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect() -> Result<Connection, ConnectError> {
    let value = std::env::var_os(CHANNEL_ENV).ok_or(ConnectError::NotSpawned)?;
    let value = value.to_str().ok_or_else(|| ConnectError::BadVariable {
        value: value.to_string_lossy().into_owned(),
    })?;
    let name = value
        .strip_prefix("shm:")
        .filter(|n| n.starts_with("/remora-"))
        .ok_or_else(|| ConnectError::BadVariable {
            value: value.to_owned(),
        })?;
    let segment = Segment::open(name).map_err(ConnectError::Open)?;
    // Attached: the name has done its job. Removing it here (rather than
    // waiting for the parent to notice) leaves nothing in /dev/shm.
    let _ = crate::sys::shm::unlink(name);
    segment.watch_creator();
    Ok(Connection { segment })
}

impl Connection {
    /// Takes the child's ends of channel `name`: a sender of `Out` and a
    /// receiver of `In` (the parent's `In` and `Out`).
    pub fn channel<Out: Encode, In: Decode>(
        &self,
        name: &str,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        self.segment.channel(name)
    }

    /// Takes the child's ends of channel `name` as raw byte channels.
    pub fn raw_channel(&self, name: &str) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.segment.raw_channel(name)
    }

    /// The channels the parent declared, in declaration order.
    pub fn channel_names(&self) -> impl Iterator<Item = &str> {
        self.segment.channel_names()
    }
}

/// Opt-in: asks the kernel to send `signal` to this process when its parent
/// dies (`PR_SET_PDEATHSIG`), for children that should not outlive it even
/// while not blocked in a remora call.
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    crate::sys::process::set_parent_death_signal(signal)
}
