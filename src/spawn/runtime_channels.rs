//! Channels opened at run time between a parent and the child it spawned:
//! the same calls as on a [`ServiceConnection`](crate::ServiceConnection),
//! on [`Child`] and [`Connection`].
//!
//! Every spawned child gets a control socket (see `runtime/spawned.rs`):
//! inherited, or, when a wrapper closed inherited descriptors, reached
//! through an abstract socket the parent listens on. Either side opens a
//! channel with its own capacity; the other accepts it. The segment is a
//! sealed memfd checked before it is mapped, as a first sealed segment is.
//! Trust as for the first channels: the parent's receivers copy
//! ([`ReceiveMode::Copy`](crate::ReceiveMode::Copy)), the child's read in
//! place ([`ReceiveMode::InPlace`](crate::ReceiveMode::InPlace)).
//! Liveness too: either process's death reaches the new channels' ends
//! (the claim words, plus the parent's pidfd on the child), and the
//! calls here (the control socket's waiters poll the peer process, not
//! only its socket, which another process may hold a copy of).

use std::time::Duration;

use super::{Child, Connection};
use crate::channel::{RawReceiver, RawSender, Receiver, Sender};
use crate::codec::{Decode, Encode};
use crate::config::ChannelConfig;
use crate::runtime::{OpenedChannel, ServiceError, deadline_after};

/// Channels opened at run time, parent side.
///
/// The child's control socket is found at the first of these calls (the
/// child says hello from [`connect`](crate::connect)); until the child has
/// connected, they wait (or time out), and a child that exits first makes
/// them [`ServiceError::Disconnected`] (so does a control socket the spawn
/// could not make: it is best effort). Ends taken stay usable after the
/// `Child` is dropped.
impl Child {
    /// Opens a new channel to the child and waits until it accepts it
    /// ([`Connection::accept_channel`]); returns the parent's ends (a
    /// sender of `Out`, a receiver of `In` in
    /// [`ReceiveMode::Copy`](crate::ReceiveMode::Copy)).
    ///
    /// Errors: [`ServiceError::ChannelRefused`] (the child is at its
    /// limit, the name is taken, or the segment failed its checks),
    /// [`ServiceError::Disconnected`] (the child exited, closed its
    /// control socket, or broke the protocol), [`ServiceError::Protocol`]
    /// (the child sent garbage before its hello), [`ServiceError::Segment`]
    /// for an invalid `config` (or no memfd on this host),
    /// [`ServiceError::Channel`] if the ends cannot be taken.
    ///
    /// ```no_run
    /// use remora::ChannelConfig;
    /// let child = remora::Spawner::new("path/to/worker").channel("control").spawn()?;
    /// let (mut tx, mut rx) = child.open_channel::<String, u64>(ChannelConfig::new("bulk").capacity(1 << 24))?;
    /// tx.send(&"a big job".to_owned())?;
    /// let done = rx.recv()?.to_native();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_channel<Out: Encode, In: Decode>(
        &self,
        config: ChannelConfig,
    ) -> Result<(Sender<Out>, Receiver<In>), ServiceError> {
        self.runtime.open(config, None)
    }

    /// [`Child::open_channel`] giving up after `timeout` with
    /// [`ServiceError::Timeout`] (the child did not connect or accept in
    /// time; if it accepts later, its ends report `Disconnected`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let child = remora::Spawner::new("path/to/worker").channel("control").spawn()?;
    /// let (tx, rx) = child.open_channel_timeout::<u64, u64>(remora::ChannelConfig::new("x"), Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_channel_timeout<Out: Encode, In: Decode>(
        &self,
        config: ChannelConfig,
        timeout: Duration,
    ) -> Result<(Sender<Out>, Receiver<In>), ServiceError> {
        self.runtime.open(config, deadline_after(timeout))
    }

    /// [`Child::open_channel`] with raw byte ends.
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/worker").channel("control").spawn()?;
    /// let (mut tx, rx) = child.open_raw_channel(remora::ChannelConfig::new("bytes").capacity(1 << 20))?;
    /// tx.send(b"raw")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_raw_channel(
        &self,
        config: ChannelConfig,
    ) -> Result<(RawSender, RawReceiver), ServiceError> {
        self.runtime.open_raw(config, None)
    }

    /// Waits for the child to open a channel ([`Connection::open_channel`]),
    /// checks and claims it, and returns it (take its ends with
    /// [`OpenedChannel::channel`]; receivers copy). Requests beyond
    /// [`Child::set_channel_limit`], of a name already used with this
    /// child, or whose segment fails the checks are refused (the child
    /// gets [`ServiceError::ChannelRefused`]) and the wait goes on.
    ///
    /// Errors: [`ServiceError::Disconnected`] once the child is gone.
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/worker").channel("control").spawn()?;
    /// let opened = child.accept_channel()?;
    /// let (tx, mut rx) = opened.channel::<(), String>()?;
    /// println!("{}: {}", opened.name(), rx.recv()?.as_str());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_channel(&self) -> Result<OpenedChannel, ServiceError> {
        self.runtime.accept(None)
    }

    /// [`Child::accept_channel`] without waiting: `Ok(None)` when the
    /// child has opened nothing (or not connected yet).
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/worker").channel("control").spawn()?;
    /// if let Some(opened) = child.try_accept_channel()? {
    ///     println!("the child opened {}", opened.name());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_accept_channel(&self) -> Result<Option<OpenedChannel>, ServiceError> {
        self.runtime.try_accept()
    }

    /// [`Child::accept_channel`] giving up after `timeout` with
    /// [`ServiceError::Timeout`].
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/worker").channel("control").spawn()?;
    /// let opened = child.accept_channel_timeout(std::time::Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_channel_timeout(&self, timeout: Duration) -> Result<OpenedChannel, ServiceError> {
        self.runtime.accept(deadline_after(timeout))
    }

    /// How many channels the parent accepts from the child over its life
    /// (default 32); requests beyond are refused.
    ///
    /// ```no_run
    /// let child = remora::Spawner::new("path/to/worker").channel("control").spawn()?;
    /// child.set_channel_limit(4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_channel_limit(&self, limit: usize) {
        self.runtime.set_limit(limit);
    }
}

/// Channels opened at run time, child side. Without a control socket (the
/// parent is gone, this is a second [`connect`](crate::connect) in the
/// process, the parent could not make one at spawn, or the parent's
/// listener name is now held by another process: the child checks its
/// owner's pid and uid before it says anything) every call is
/// [`ServiceError::Disconnected`]; the first channels work regardless.
impl Connection {
    /// Opens a new channel to the parent and waits until it accepts it
    /// ([`Child::accept_channel`]); returns the child's ends (the receiver
    /// in [`ReceiveMode::InPlace`](crate::ReceiveMode::InPlace), trusting
    /// the parent as for [`Connection::channel`]). Errors as for
    /// [`Child::open_channel`].
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// let (mut tx, _rx) = conn.open_channel::<String, ()>(remora::ChannelConfig::new("log").capacity(1 << 16))?;
    /// tx.send(&"child started".to_owned())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_channel<Out: Encode, In: Decode>(
        &self,
        config: ChannelConfig,
    ) -> Result<(Sender<Out>, Receiver<In>), ServiceError> {
        self.runtime.open(config, None)
    }

    /// [`Connection::open_channel`] giving up after `timeout` with
    /// [`ServiceError::Timeout`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let conn = remora::connect()?;
    /// let (tx, rx) = conn.open_channel_timeout::<u64, u64>(remora::ChannelConfig::new("x"), Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_channel_timeout<Out: Encode, In: Decode>(
        &self,
        config: ChannelConfig,
        timeout: Duration,
    ) -> Result<(Sender<Out>, Receiver<In>), ServiceError> {
        self.runtime.open(config, deadline_after(timeout))
    }

    /// [`Connection::open_channel`] with raw byte ends.
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// let (mut tx, rx) = conn.open_raw_channel(remora::ChannelConfig::new("bytes"))?;
    /// tx.send(b"raw")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_raw_channel(
        &self,
        config: ChannelConfig,
    ) -> Result<(RawSender, RawReceiver), ServiceError> {
        self.runtime.open_raw(config, None)
    }

    /// Waits for the parent to open a channel ([`Child::open_channel`]),
    /// checks and claims it, and returns it (its receivers read in place).
    /// Refusals as for [`Child::accept_channel`].
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// let opened = conn.accept_channel()?;
    /// let (mut tx, mut rx) = opened.channel::<u64, String>()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_channel(&self) -> Result<OpenedChannel, ServiceError> {
        self.runtime.accept(None)
    }

    /// [`Connection::accept_channel`] without waiting: `Ok(None)` when the
    /// parent has opened nothing.
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// while conn.try_accept_channel()?.is_none() {
    ///     // other work
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_accept_channel(&self) -> Result<Option<OpenedChannel>, ServiceError> {
        self.runtime.try_accept()
    }

    /// [`Connection::accept_channel`] giving up after `timeout` with
    /// [`ServiceError::Timeout`].
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// let opened = conn.accept_channel_timeout(std::time::Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_channel_timeout(&self, timeout: Duration) -> Result<OpenedChannel, ServiceError> {
        self.runtime.accept(deadline_after(timeout))
    }

    /// How many channels the child accepts from the parent (default 32);
    /// requests beyond are refused.
    ///
    /// ```no_run
    /// let conn = remora::connect()?;
    /// conn.set_channel_limit(1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_channel_limit(&self, limit: usize) {
        self.runtime.set_limit(limit);
    }
}
