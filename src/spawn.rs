//! The process spawner (parent side) and `connect` (child side).
//!
//! The parent declares channels on a [`Spawner`], which sets up the
//! transport (a segment, or FIFO pipes: see [`Transport`]) and starts
//! the child with one environment variable, [`CHANNEL_ENV`], naming it. The
//! child calls [`connect`], which opens, validates and claims it and removes
//! its name (from `/dev/shm`; pipes have none) at once, so nothing is
//! left behind once the child is attached. The kernel reports either
//! side's death to the other (robust-futex liveness words over shared
//! memory, pipe hang-up over FIFOs, a pidfd for a child that never
//! attached), so a waiting call returns `Disconnected` within a millisecond
//! or so, whatever wraps the child (`sh -c`, `timeout`, a PID namespace).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::channel::{RawReceiver, RawSender, ReceiveMode, Receiver, RecvEnd, SendEnd, Sender};
use crate::codec::{self, Decode, Encode};
use crate::config::ChannelConfig;
use crate::error::{ChannelError, ConnectError, OpenError, SpawnError};
use crate::runtime::{
    CONTROL_ENV, PeerProcess, Rendezvous, RuntimeChannels, child_control, take_control,
};
use crate::segment::{SealedId, Segment};
use crate::sys::inherit::InheritList;
use crate::sys::process;
use crate::transport::{FifoSet, HandOver, Transport, shm_unusable};

mod runtime_channels;

/// The environment variable through which a spawned child finds its
/// channels: `memfd:<pid>:<fd>:<size>:<dev>:<ino>` (a sealed segment the
/// child inherits, the default), `shm:/remora-<pid>-<random>` (a named
/// shared-memory segment) or `pipes:<pid>:...` (the FIFO transport's
/// pipes, sent on the control socket: see [`Transport::Fifo`]).
///
/// A second variable, `REMORA_CONTROL`
/// (`<fd>:<dev>:<ino>:<listener name>:<token>:<parent pid>:<parent euid>`),
/// tells the child where its
/// control socket for channels opened at run time is: an inherited
/// `SOCK_SEQPACKET` socket, or, when a wrapper closed it, an abstract
/// socket the parent listens on (see [`Child::open_channel`]).
pub const CHANNEL_ENV: &str = "REMORA_CHANNEL";

/// One side's channels, over whichever transport the spawn chose.
#[derive(Debug)]
enum ChannelSet {
    Shm(Segment),
    Fifo(FifoSet),
}

impl ChannelSet {
    /// Sets up the transport for `channels` as `choice` (already resolved
    /// against the environment) says; with `sealed` (and `choice` not
    /// `Fifo`), a sealed memfd segment first, whose kept descriptor is
    /// returned too. Where memfds are unusable (`memfd_create` refused),
    /// the named segment and the usual fallback.
    fn create(
        choice: Transport,
        channels: &[ChannelConfig],
        sealed: bool,
    ) -> Result<(ChannelSet, Option<SealedId>), SpawnError> {
        if sealed && choice != Transport::Fifo {
            match Segment::create_sealed_kept(channels) {
                Ok((segment, id)) => return Ok((ChannelSet::Shm(segment), Some(id))),
                Err(e @ OpenError::InvalidConfig { .. }) => return Err(SpawnError::Segment(e)),
                Err(_) => {}
            }
        }
        let set = match choice {
            Transport::Shm => Segment::create(channels)
                .map(ChannelSet::Shm)
                .map_err(SpawnError::Segment),
            Transport::Fifo => FifoSet::create(channels)
                .map(ChannelSet::Fifo)
                .map_err(SpawnError::Fifo),
            _ => match Segment::create(channels) {
                Ok(segment) => Ok(ChannelSet::Shm(segment)),
                Err(shm) if shm_unusable(&shm) => match FifoSet::create(channels) {
                    Ok(set) => Ok(ChannelSet::Fifo(set)),
                    Err(fifo) => Err(SpawnError::NoTransport { shm, fifo }),
                },
                Err(e) => Err(SpawnError::Segment(e)),
            },
        }?;
        Ok((set, None))
    }

    fn transport(&self) -> Transport {
        match self {
            ChannelSet::Shm(_) => Transport::Shm,
            ChannelSet::Fifo(_) => Transport::Fifo,
        }
    }

    /// The [`CHANNEL_ENV`] value naming this set.
    fn env_value(&self) -> OsString {
        match self {
            ChannelSet::Shm(segment) => format!("shm:{}", segment.name()).into(),
            ChannelSet::Fifo(set) => format!("pipes:{}", set.env_value()).into(),
        }
    }

    fn watch_child(&self, pid: u32) {
        match self {
            ChannelSet::Shm(segment) => segment.watch_child(pid),
            ChannelSet::Fifo(set) => set.watch_child(pid),
        }
    }

    /// This side's typed ends of channel `name`; the receiver starts in
    /// `mode`.
    fn channel<Out: Encode, In: Decode>(
        &self,
        name: &str,
        mode: ReceiveMode,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        let (tx, rx) = self.take(
            name,
            codec::fingerprint::<Out>(),
            codec::fingerprint::<In>(),
            mode,
        )?;
        Ok((Sender::from_raw(tx), Receiver::from_raw(rx)))
    }

    fn raw_channel(
        &self,
        name: &str,
        mode: ReceiveMode,
    ) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.take(name, codec::RAW_FINGERPRINT, codec::RAW_FINGERPRINT, mode)
    }

    /// This side's ends of channel `name`, checking the type fingerprints.
    fn take(
        &self,
        name: &str,
        out_fp: u64,
        in_fp: u64,
        mode: ReceiveMode,
    ) -> Result<(RawSender, RawReceiver), ChannelError> {
        match self {
            ChannelSet::Shm(segment) => segment.take(name, out_fp, in_fp, mode),
            ChannelSet::Fifo(set) => {
                let (tx, rx, wait) = set.take(name, Some(out_fp), Some(in_fp))?;
                let (tx, rx) = (tx.expect("asked for"), rx.expect("asked for"));
                Ok((
                    RawSender::new(SendEnd::Fifo(tx), wait),
                    RawReceiver::new(RecvEnd::Fifo(rx), wait, mode),
                ))
            }
        }
    }

    fn channel_names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            ChannelSet::Shm(segment) => Box::new(segment.channel_names()),
            ChannelSet::Fifo(set) => Box::new(set.channel_names()),
        }
    }

    fn is_attached(&self) -> bool {
        match self {
            ChannelSet::Shm(segment) => segment.is_claimed(),
            ChannelSet::Fifo(set) => set.is_attached(),
        }
    }

    /// Parent side, once the child is gone: remove the name (segment) or
    /// drop the copies of the child's pipe ends (FIFOs) if it never
    /// attached.
    fn release_name(&self) {
        match self {
            ChannelSet::Shm(segment) => {
                let _ = segment.unlink();
            }
            ChannelSet::Fifo(set) => set.give_up(),
        }
    }
}

/// One-way takes (see [`Segment::sender`]).
impl ChannelSet {
    fn take_sender(&self, name: &str, fp: u64) -> Result<RawSender, ChannelError> {
        match self {
            ChannelSet::Shm(segment) => segment.take_sender(name, fp),
            ChannelSet::Fifo(set) => {
                let (tx, _, wait) = set.take(name, Some(fp), None)?;
                Ok(RawSender::new(SendEnd::Fifo(tx.expect("asked for")), wait))
            }
        }
    }

    fn take_receiver(
        &self,
        name: &str,
        fp: u64,
        mode: ReceiveMode,
    ) -> Result<RawReceiver, ChannelError> {
        match self {
            ChannelSet::Shm(segment) => segment.take_receiver(name, fp, mode),
            ChannelSet::Fifo(set) => {
                let (_, rx, wait) = set.take(name, None, Some(fp))?;
                Ok(RawReceiver::new(
                    RecvEnd::Fifo(rx.expect("asked for")),
                    wait,
                    mode,
                ))
            }
        }
    }
}

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
    transport: Transport,
    sealed: bool,
    /// The descriptors the next child inherits, read by the `pre_exec`
    /// hook installed at the first spawn that hands one down.
    inherit: Option<Arc<InheritList>>,
}

impl Spawner {
    /// A spawner for `program`, like [`Command::new`].
    pub fn new(program: impl AsRef<OsStr>) -> Spawner {
        Spawner {
            command: Command::new(program),
            channels: Vec::new(),
            transport: Transport::Auto,
            sealed: true,
            inherit: None,
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

    /// Sets several environment variables, like [`Command::envs`].
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/app")
    ///     .envs([("RUST_LOG", "info"), ("LANG", "C")])
    ///     .channel("c")
    ///     .spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Spawner
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.command.envs(vars);
        self
    }

    /// Clears the environment the child inherits, like
    /// [`Command::env_clear`]. [`CHANNEL_ENV`] is still set at spawn.
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("/usr/bin/app")
    ///     .env_clear()
    ///     .env("PATH", "/usr/bin")
    ///     .channel("c")
    ///     .spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn env_clear(&mut self) -> &mut Spawner {
        self.command.env_clear();
        self
    }

    /// Puts the child in process group `pgroup` (0: a new group led by
    /// the child), like [`CommandExt::process_group`](std::os::unix::process::CommandExt::process_group).
    ///
    /// ```no_run
    /// // The child gets its own group: a Ctrl-C at the terminal does not reach it.
    /// let child = remora::Spawner::new("path/to/app").process_group(0).channel("c").spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn process_group(&mut self, pgroup: i32) -> &mut Spawner {
        std::os::unix::process::CommandExt::process_group(&mut self.command, pgroup);
        self
    }

    /// Runs the child as user `id`, like
    /// [`CommandExt::uid`](std::os::unix::process::CommandExt::uid). The
    /// segment is private to the parent's user (mode 0600, owner checked
    /// at open), so a child of another user cannot attach to it: this
    /// suits a wrapper that drops privileges itself.
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/app").uid(1000).gid(1000).channel("c").spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn uid(&mut self, id: u32) -> &mut Spawner {
        std::os::unix::process::CommandExt::uid(&mut self.command, id);
        self
    }

    /// Runs the child with group `id`, like
    /// [`CommandExt::gid`](std::os::unix::process::CommandExt::gid).
    pub fn gid(&mut self, id: u32) -> &mut Spawner {
        std::os::unix::process::CommandExt::gid(&mut self.command, id);
        self
    }

    /// Runs `f` in the child between `fork` and `exec`, like
    /// [`CommandExt::pre_exec`](std::os::unix::process::CommandExt::pre_exec).
    ///
    /// # Safety
    ///
    /// As for `CommandExt::pre_exec`: `f` runs in a forked copy of a
    /// possibly multi-threaded process and must only do what is
    /// async-signal-safe (no allocation, no locks).
    ///
    /// ```no_run
    /// let mut spawner = remora::Spawner::new("path/to/app");
    /// // SAFETY: setsid is async-signal-safe.
    /// unsafe {
    ///     spawner.pre_exec(|| {
    ///         libc::setsid();
    ///         Ok(())
    ///     })
    /// };
    /// let child = spawner.channel("c").spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn pre_exec<F>(&mut self, f: F) -> &mut Spawner
    where
        F: FnMut() -> io::Result<()> + Send + Sync + 'static,
    {
        // SAFETY: forwarded to the caller.
        unsafe { std::os::unix::process::CommandExt::pre_exec(&mut self.command, f) };
        self
    }

    /// The underlying [`Command`], for settings this type does not mirror.
    /// [`CHANNEL_ENV`] is set (and removed again) by [`Spawner::spawn`]
    /// whatever is done here.
    ///
    /// ```no_run
    /// use std::os::unix::process::CommandExt;
    /// let mut spawner = remora::Spawner::new("path/to/app");
    /// spawner.command_mut().arg0("app-worker");
    /// let child = spawner.channel("c").spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
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

    /// Chooses the transport (default [`Transport::Auto`]).
    ///
    /// Precedence: an explicit `Shm` or `Fifo` here always wins; at `Auto`
    /// the parent's [`REMORA_TRANSPORT`](crate::TRANSPORT_ENV) decides if it
    /// is set (so operators can force FIFOs on a host without touching the
    /// code), else shared memory with a FIFO fallback. The child needs no
    /// setting: [`connect`] follows [`CHANNEL_ENV`].
    ///
    /// ```no_run
    /// use remora::{Spawner, Transport};
    /// let child = Spawner::new("path/to/app")
    ///     .channel("echo")
    ///     .transport(Transport::Shm) // fail rather than fall back
    ///     .spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn transport(&mut self, transport: Transport) -> &mut Spawner {
        self.transport = transport;
        self
    }

    /// Hands the child its segment as a sealed memfd instead of a named
    /// `/dev/shm` object (default `true`): sealed against resizing, so
    /// neither side can raise SIGBUS in the other by truncating it, and
    /// needing no `/dev/shm` at all (a read-only or full one no longer
    /// forces the FIFO fallback).
    ///
    /// The child inherits the descriptor (its number is in
    /// [`CHANNEL_ENV`] as `memfd:<pid>:<fd>:<size>:<dev>:<ino>`); if a
    /// wrapper closed it (`sudo` closes every descriptor above 2),
    /// [`connect`] opens it as `/proc/<parent pid>/fd/<fd>` instead, which
    /// the kernel allows to the parent's own user and root. Either way the
    /// child checks it is that very file, sealed, of that size, before
    /// mapping it. Where memfds are unusable the spawn falls back to the
    /// named segment (and, at [`Transport::Auto`], to FIFOs). Ignored with
    /// [`Transport::Fifo`].
    ///
    /// A child in another PID namespace (with its own `/proc`) whose wrapper
    /// also closes descriptors finds neither the descriptor nor the
    /// parent's `/proc` entry: turn this off for such children, so they
    /// get a named `/dev/shm` segment (which a truncating child can then
    /// turn into SIGBUS in the parent: see the README's threat model).
    ///
    /// ```no_run
    /// // A child behind `sudo unshare --pid --mount-proc`, say:
    /// let child = remora::Spawner::new("path/to/app").channel("c").sealed(false).spawn()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sealed(&mut self, sealed: bool) -> &mut Spawner {
        self.sealed = sealed;
        self
    }

    /// Makes the next spawned child (only) inherit `fds`; see
    /// [`InheritList`]. The hook is installed once per `Spawner`.
    fn inherit_in_child(&mut self, fds: &[RawFd]) -> Result<(), SpawnError> {
        let list = match &self.inherit {
            Some(list) => list,
            None => {
                let list = InheritList::new();
                let hook = InheritList::hook(Arc::clone(&list));
                // SAFETY: the hook only loads atomics and calls fcntl, both
                // async-signal-safe: no allocation, no lock.
                unsafe { std::os::unix::process::CommandExt::pre_exec(&mut self.command, hook) };
                self.inherit.insert(list)
            }
        };
        list.set(fds).map_err(SpawnError::Spawn)
    }

    /// Sets up the transport and starts the child. Returns at once; the
    /// child attaches whenever it calls [`connect`].
    ///
    /// Errors: [`SpawnError::Segment`] / [`SpawnError::Fifo`] when the
    /// chosen transport cannot be set up, [`SpawnError::NoTransport`] when
    /// `Auto` found neither usable, [`SpawnError::InvalidTransport`] for a
    /// bad `REMORA_TRANSPORT`, [`SpawnError::Spawn`] when the program cannot
    /// start. The control socket for run-time channels is best effort:
    /// if it cannot be made (no socketpair, out of descriptors, no
    /// randomness), the child starts without it and run-time channel calls
    /// on either side return `Disconnected`.
    pub fn spawn(&mut self) -> Result<Child, SpawnError> {
        let choice = self
            .transport
            .resolve()
            .map_err(SpawnError::InvalidTransport)?;
        let (set, sealed) = ChannelSet::create(choice, &self.channels, self.sealed)?;
        let (mut rendezvous, mut control) = Rendezvous::create().ok().unzip();
        // A FIFO set's pipe ends go over the control socketpair, queued
        // before the child runs (never inherited: a wrapper or helper
        // between us and the child would hold them too, and hide the
        // child's hang-up). Without the socket the child takes them
        // through our /proc.
        if let (ChannelSet::Fifo(fifo), Some(r), Some(c)) = (&set, &rendezvous, &control)
            && r.queue_with(|sock| fifo.queue(sock, c.sock.as_fd()))
                .is_err()
        {
            // Not queued: no control socket at all, rather than one the
            // child would read an empty queue on (AlreadyClaimed).
            (rendezvous, control) = (None, None);
        }
        // Every descriptor the child inherits, in one list.
        let mut inherit: Vec<RawFd> = control.iter().map(|c| c.sock.as_raw_fd()).collect();
        let env = match sealed {
            Some(id) => {
                inherit.push(id.fd);
                format!(
                    "memfd:{}:{}:{}:{}:{}",
                    std::process::id(),
                    id.fd,
                    id.size,
                    id.dev,
                    id.ino
                )
                .into()
            }
            None => set.env_value(),
        };
        self.inherit_in_child(&inherit)?;
        self.command.env(CHANNEL_ENV, env);
        match &control {
            Some(control) => self.command.env(CONTROL_ENV, &control.env),
            // Never our own parent's variable: the child would find that
            // listener.
            None => self.command.env_remove(CONTROL_ENV),
        };
        let spawned = self.command.spawn();
        // Do not leak this set's name (or descriptor) into later
        // spawns of this Spawner.
        self.command.env_remove(CHANNEL_ENV);
        self.command.env_remove(CONTROL_ENV);
        // The child has its end: ours would keep it from ever hanging up.
        drop(control);
        if let Some(inherit) = &self.inherit {
            inherit.clear();
        }
        let process = spawned.map_err(SpawnError::Spawn)?; // drops (removes) the set
        set.watch_child(process.id());
        let pidfd = process::pidfd_open(process.id()).ok();
        // Without pidfds (or a copy), `waitid(WNOWAIT)` on the child.
        let watch = || {
            pidfd
                .as_ref()
                .and_then(|fd| fd.try_clone().ok())
                .map_or(PeerProcess::Child(process.id()), PeerProcess::Pidfd)
        };
        let peer = watch();
        let first = set.channel_names().map(str::to_owned).collect();
        let runtime = match rendezvous {
            Some(mut rendezvous) => {
                rendezvous.watch_child(watch());
                RuntimeChannels::pending(rendezvous, first, peer, ReceiveMode::Copy)
            }
            None => RuntimeChannels::connected(None, None, first, peer, ReceiveMode::Copy),
        };
        Ok(Child {
            process,
            channels: set,
            pidfd,
            runtime,
        })
    }
}

/// A running child process and the parent's side of its channels.
///
/// Like [`std::process::Child`], dropping it neither kills nor reaps the
/// process. Channel ends taken from it stay usable after it is dropped, and
/// a child that has not attached yet can still attach while any of them
/// lives: the segment's name (or the parent's copies of the child's pipe
/// ends) goes when the child
/// attaches, when it is seen dead, or when this `Child` and every end taken
/// from it are gone. Channels never taken hang up when it is dropped.
///
/// So a temporary `Child` is fine:
///
/// ```no_run
/// let (mut tx, _rx) = remora::Spawner::new("path/to/app")
///     .channel("log")
///     .spawn()?
///     .raw_channel("log")?; // the `Child` is dropped here; the app can still connect
/// tx.send(b"hello")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Child {
    process: std::process::Child,
    channels: ChannelSet,
    /// Our own pidfd on the child (the liveness watch has another).
    pidfd: Option<OwnedFd>,
    /// Channels opened at run time (`spawn/runtime_channels.rs`).
    runtime: RuntimeChannels,
}

impl Child {
    /// Takes the parent's ends of channel `name`: a sender of `Out` and a
    /// receiver of `In` (the child declares the same channel with the types
    /// swapped). Each channel can be taken once.
    ///
    /// The receiver does not trust the child: it starts in
    /// [`ReceiveMode::Copy`], so nothing the child writes can make the
    /// parent's safe code unsound. Reading in place takes the `unsafe`
    /// [`Receiver::trust_peer`].
    ///
    /// ```no_run
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Request { id: u32 }
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Reply { id: u32 }
    /// let child = remora::Spawner::new("path/to/app").channel("echo").spawn()?;
    /// let (tx, rx) = child.channel::<Request, Reply>("echo")?;
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel<Out: Encode, In: Decode>(
        &self,
        name: &str,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        self.channels.channel(name, ReceiveMode::Copy)
    }

    /// Takes the parent's ends of channel `name` as raw byte channels
    /// (receiver in [`ReceiveMode::Copy`], as for [`Child::channel`]).
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/app").channel("bytes").spawn()?;
    /// let (mut tx, mut rx) = child.raw_channel("bytes")?;
    /// tx.send(b"ping")?;
    /// let reply = rx.recv()?; // a private copy
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_channel(&self, name: &str) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.channels.raw_channel(name, ReceiveMode::Copy)
    }

    /// The transport in use: [`Transport::Shm`] or [`Transport::Fifo`]
    /// (never `Auto`: this is what `Auto` chose).
    pub fn transport(&self) -> Transport {
        self.channels.transport()
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Whether the child has attached to its channels: claimed the segment,
    /// or (FIFO transport) taken its pipe ends (or given up on them).
    pub fn is_attached(&self) -> bool {
        self.channels.is_attached()
    }

    /// Waits for the child to exit, like [`std::process::Child::wait`].
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.process.wait()?;
        self.channels.release_name();
        Ok(status)
    }

    /// Checks whether the child has exited, like
    /// [`std::process::Child::try_wait`].
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.process.try_wait()?;
        if status.is_some() {
            self.channels.release_name();
        }
        Ok(status)
    }

    /// Sends SIGKILL, like [`std::process::Child::kill`]. Blocked calls on
    /// the parent's ends then return `Disconnected` once the child is dead.
    pub fn kill(&mut self) -> io::Result<()> {
        self.process.kill()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child. Through a pidfd
    /// where the kernel has them, so never to a recycled pid; a child that
    /// was already reaped is left alone (`Ok`).
    ///
    /// ```no_run
    /// # let mut child = remora::Spawner::new("app").channel("c").spawn()?;
    /// child.signal(libc::SIGTERM)?;
    /// let status = child.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn signal(&mut self, signal: i32) -> io::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        match &self.pidfd {
            Some(fd) => process::pidfd_signal(fd, signal),
            // Not reaped (checked above), so the pid is still ours.
            None => {
                // SAFETY: kill has no memory-safety preconditions.
                let ret = unsafe { libc::kill(self.process.id() as libc::pid_t, signal) };
                if ret < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
        }
    }

    /// Waits at most `timeout` for the child to exit: `Ok(None)` if it is
    /// still running then.
    ///
    /// ```no_run
    /// # let mut child = remora::Spawner::new("app").channel("c").spawn()?;
    /// use std::time::Duration;
    /// if child.wait_timeout(Duration::from_secs(5))?.is_none() {
    ///     child.kill()?;
    ///     child.wait()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            match &self.pidfd {
                Some(fd) => {
                    process::pidfd_wait_exit(fd, left)?;
                }
                None => std::thread::sleep(left.min(Duration::from_millis(1))),
            }
        }
    }

    /// A descriptor that becomes readable when the child exits (a pidfd),
    /// for users with their own event loop (`poll`, `epoll`, mio, tokio's
    /// `AsyncFd`). `None` on kernels without `pidfd_open` (before 5.3).
    ///
    /// ```no_run
    /// # let child = remora::Spawner::new("app").channel("c").spawn()?;
    /// use std::os::fd::AsRawFd;
    /// if let Some(fd) = child.pidfd() {
    ///     println!("poll fd {} for the child's exit", fd.as_raw_fd());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// The underlying `std::process::Child`, e.g. for its stdio pipes.
    pub fn process_mut(&mut self) -> &mut std::process::Child {
        &mut self.process
    }
}

/// One-way takes: one end of a channel used in one direction.
impl Child {
    /// Takes only the parent's sender of channel `name`: no placeholder
    /// type for the other direction, whose type is not checked. The
    /// channel counts as taken, and its other direction is hung up now, as
    /// if its receiver had been taken and dropped: the child's sends there
    /// get [`SendError::Disconnected`](crate::SendError::Disconnected).
    /// Over FIFOs the type is checked at once if the child took its end
    /// first, else by the child's receiver (as for [`Child::channel`]).
    ///
    /// ```no_run
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Job { id: u32 }
    /// let child = remora::Spawner::new("path/to/worker").channel("jobs").spawn()?;
    /// let mut jobs = child.sender::<Job>("jobs")?; // the child: conn.receiver::<Job>("jobs")
    /// jobs.send(&Job { id: 1 })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sender<T: Encode>(&self, name: &str) -> Result<Sender<T>, ChannelError> {
        self.channels
            .take_sender(name, codec::fingerprint::<T>())
            .map(Sender::from_raw)
    }

    /// Takes only the parent's receiver of channel `name` (in
    /// [`ReceiveMode::Copy`], as for [`Child::channel`]); see
    /// [`Child::sender`]. The other direction is hung up now, as if its
    /// sender had been taken and dropped: the child's receiver there
    /// reports [`RecvError::Disconnected`](crate::RecvError::Disconnected).
    ///
    /// ```no_run
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Event { code: u32 }
    /// let child = remora::Spawner::new("path/to/worker").channel("events").spawn()?;
    /// let mut events = child.receiver::<Event>("events")?;
    /// while let Ok(event) = events.recv() {
    ///     println!("event {}", event.code);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver<T: Decode>(&self, name: &str) -> Result<Receiver<T>, ChannelError> {
        self.channels
            .take_receiver(name, codec::fingerprint::<T>(), ReceiveMode::Copy)
            .map(Receiver::from_raw)
    }

    /// [`Child::sender`] for raw bytes.
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/worker").channel("log").spawn()?;
    /// let mut log = child.raw_sender("log")?;
    /// log.send(b"hello")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_sender(&self, name: &str) -> Result<RawSender, ChannelError> {
        self.channels.take_sender(name, codec::RAW_FINGERPRINT)
    }

    /// [`Child::receiver`] for raw bytes (in [`ReceiveMode::Copy`]).
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/worker").channel("log").spawn()?;
    /// let mut log = child.raw_receiver("log")?;
    /// let first = log.recv()?.to_vec();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_receiver(&self, name: &str) -> Result<RawReceiver, ChannelError> {
        self.channels
            .take_receiver(name, codec::RAW_FINGERPRINT, ReceiveMode::Copy)
    }
}

/// The child's side of its channels, from [`connect`].
#[derive(Debug)]
pub struct Connection {
    channels: ChannelSet,
    /// Channels opened at run time (`spawn/runtime_channels.rs`).
    runtime: RuntimeChannels,
}

/// Child side: attaches to the channels named by [`CHANNEL_ENV`], over
/// whichever transport the parent chose.
///
/// Opens, validates and claims the segment (or takes the FIFO pipes), then
/// removes its name so that nothing is left in `/dev/shm`
/// and no other process can attach (a grandchild that inherited the
/// variable gets an error). From then on the channels report
/// `Disconnected` if the parent dies.
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
    // Run-time channels: take the control socket first (once per process),
    // so the inherited number is close-on-exec even if attaching fails; say
    // hello once attached, so the parent's first run-time call finds it.
    let control = take_control();
    let channels = connect_channels(control.inherited_socket())?;
    let runtime = child_control(
        control,
        channels.channel_names().map(str::to_owned).collect(),
    );
    Ok(Connection { channels, runtime })
}

/// [`connect`]'s first channels, over whichever transport the parent
/// chose; `sock` is the inherited control socketpair (a FIFO set's ends
/// are queued there), if found.
fn connect_channels(sock: Option<BorrowedFd<'_>>) -> Result<ChannelSet, ConnectError> {
    let value = std::env::var_os(CHANNEL_ENV).ok_or(ConnectError::NotSpawned)?;
    let bad = || ConnectError::BadVariable {
        value: value.to_string_lossy().into_owned(),
    };
    if let Some(spec) = value.to_str().and_then(|v| v.strip_prefix("pipes:")) {
        let hand_over = HandOver::decode(spec).ok_or_else(bad)?;
        let set = FifoSet::open(hand_over, sock).map_err(ConnectError::Open)?;
        return Ok(ChannelSet::Fifo(set));
    }
    if let Some(spec) = value.to_str().and_then(|v| v.strip_prefix("memfd:")) {
        let numbers: Vec<u64> = spec.split(':').map_while(|n| n.parse().ok()).collect();
        let &[pid, fd, size, dev, ino] = numbers.as_slice() else {
            return Err(bad());
        };
        let (Ok(pid), Ok(fd)) = (u32::try_from(pid), RawFd::try_from(fd)) else {
            return Err(bad());
        };
        let id = SealedId { fd, size, dev, ino };
        let segment = Segment::open_inherited(pid, id).map_err(ConnectError::Open)?;
        return Ok(ChannelSet::Shm(segment));
    }
    let name = value
        .to_str()
        .and_then(|v| v.strip_prefix("shm:"))
        .filter(|n| n.starts_with("/remora-"))
        .ok_or_else(bad)?;
    let segment = Segment::open(name).map_err(ConnectError::Open)?;
    // Attached: the name has done its job. Removing it here (rather than
    // waiting for the parent to notice) leaves nothing in /dev/shm.
    let _ = crate::sys::shm::unlink(name);
    Ok(ChannelSet::Shm(segment))
}

impl Connection {
    /// Takes the child's ends of channel `name`: a sender of `Out` and a
    /// receiver of `In` (the parent's `In` and `Out`).
    ///
    /// The receiver trusts the parent that spawned this process and reads
    /// in place ([`ReceiveMode::InPlace`]): that parent can write this
    /// process's memory anyway (`/proc/<pid>/mem`, `ptrace`), so trusting
    /// it adds no exposure. [`Receiver::distrust_peer`] switches to copies.
    ///
    /// ```no_run
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Request { id: u32 }
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Reply { id: u32 }
    /// let conn = remora::connect()?;
    /// let (tx, rx) = conn.channel::<Reply, Request>("echo")?;
    /// assert_eq!(rx.receive_mode(), remora::ReceiveMode::InPlace);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn channel<Out: Encode, In: Decode>(
        &self,
        name: &str,
    ) -> Result<(Sender<Out>, Receiver<In>), ChannelError> {
        self.channels.channel(name, ReceiveMode::InPlace)
    }

    /// Takes the child's ends of channel `name` as raw byte channels
    /// (receiver in [`ReceiveMode::InPlace`], as for
    /// [`Connection::channel`]).
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// let (mut tx, mut rx) = conn.raw_channel("bytes")?;
    /// while let Ok(msg) = rx.recv() {
    ///     let reply = msg.to_vec();
    ///     drop(msg);
    ///     tx.send(&reply)?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_channel(&self, name: &str) -> Result<(RawSender, RawReceiver), ChannelError> {
        self.channels.raw_channel(name, ReceiveMode::InPlace)
    }

    /// The channels the parent declared, in declaration order.
    pub fn channel_names(&self) -> impl Iterator<Item = &str> {
        self.channels.channel_names()
    }

    /// The transport the parent chose: [`Transport::Shm`] or
    /// [`Transport::Fifo`].
    pub fn transport(&self) -> Transport {
        self.channels.transport()
    }
}

/// One-way takes: one end of a channel used in one direction.
impl Connection {
    /// Takes only the child's sender of channel `name`; the other
    /// direction is hung up, as for [`Child::sender`].
    ///
    /// ```no_run
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Event { code: u32 }
    /// let conn = remora::connect()?;
    /// let mut events = conn.sender::<Event>("events")?; // the parent: child.receiver::<Event>("events")
    /// events.send(&Event { code: 200 })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sender<T: Encode>(&self, name: &str) -> Result<Sender<T>, ChannelError> {
        self.channels
            .take_sender(name, codec::fingerprint::<T>())
            .map(Sender::from_raw)
    }

    /// Takes only the child's receiver of channel `name` (in
    /// [`ReceiveMode::InPlace`], as for [`Connection::channel`]); the other
    /// direction is hung up, as for [`Child::receiver`].
    ///
    /// ```no_run
    /// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Job { id: u32 }
    /// let conn = remora::connect()?;
    /// let mut jobs = conn.receiver::<Job>("jobs")?;
    /// while let Ok(job) = jobs.recv() {
    ///     println!("job {}", job.id);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver<T: Decode>(&self, name: &str) -> Result<Receiver<T>, ChannelError> {
        self.channels
            .take_receiver(name, codec::fingerprint::<T>(), ReceiveMode::InPlace)
            .map(Receiver::from_raw)
    }

    /// [`Connection::sender`] for raw bytes.
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// let mut log = conn.raw_sender("log")?;
    /// log.send(b"child started")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_sender(&self, name: &str) -> Result<RawSender, ChannelError> {
        self.channels.take_sender(name, codec::RAW_FINGERPRINT)
    }

    /// [`Connection::receiver`] for raw bytes (in [`ReceiveMode::InPlace`]).
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// let mut input = conn.raw_receiver("input")?;
    /// let n = input.drain(|bytes| println!("{} bytes", bytes.len()))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_receiver(&self, name: &str) -> Result<RawReceiver, ChannelError> {
        self.channels
            .take_receiver(name, codec::RAW_FINGERPRINT, ReceiveMode::InPlace)
    }
}

/// Opt-in: asks the kernel to send `signal` to this process when its parent
/// dies (`PR_SET_PDEATHSIG`), for children that should not outlive it even
/// while not blocked in a remora call.
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    crate::sys::process::set_parent_death_signal(signal)
}
