//! The serving side: receives requests with their correlation ids and
//! answers them, at once or later, through reply handles.

use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rkyv::Archived;

use super::ReplyError;
use super::wire::{self, Replies, Requests};
use crate::channel::{
    Deadline, FRAME_PREFIX, RawMessage, RawReceiver, RawSender, ReceiveMode, Receiver, Sender,
};
use crate::codec::{self, Decode, Encode};
use crate::error::{RecvError, SendError};
use crate::sys::clock::MonoTime;
use crate::wait::WaitStrategy;

/// Tags each server, so a handle is only ever answered by its own.
static NEXT_SERVER: AtomicU32 = AtomicU32::new(1);

/// How many `ABANDONED` / `REJECTED` notices a server holds while the reply
/// channel has no room for them. Any bound of at least 1 loses none (a
/// receive takes a new request only below it, and each request owes at
/// most one notice); a larger one only means fewer receives wait on the
/// reply channel. 64 matches the client's default table.
const OWED_NOTICES: usize = 64;

/// While notices are owed, a blocking receive wakes this often to retry
/// them (it cannot also sleep on room in the reply ring).
const NOTICE_RETRY: Duration = Duration::from_millis(10);

/// The serving end of a call channel: receives `Req`s, answers each with
/// `Ok(&Resp)` or `Err(&E)`.
///
/// A thin wrapper over an ordinary channel's two ends (taken with the
/// [`Requests`] / [`Replies`] marker types, inferred from the
/// constructor). [`recv`](Server::recv) gives an [`Incoming`] call: the
/// archived request, validated, read where it lies (a private copy by
/// default, in place for a trusted peer, as a [`Receiver`]'s message).
/// Answer it at once ([`Incoming::reply`]), or [`defer`](Incoming::defer)
/// it to a [`ReplyHandle`] and answer later, after other requests, with
/// [`Server::reply`]; replies may go in any order.
///
/// Serving many clients (or children) from one thread: each server's
/// [`receiver`](Server::receiver) is a plain [`Receiver`], so a
/// wait-on-many over receivers waits on all of them; then
/// [`try_recv`](Server::try_recv) on the one that is ready.
///
/// ```
/// use remora::{ChannelConfig, Client, Segment, Server};
///
/// let parent = Segment::create(&[ChannelConfig::new("kv")])?;
/// let child = Segment::open(parent.name())?; // normally another process
/// let mut client: Client<String, u64, String> = Client::new(parent.channel("kv")?);
/// let mut server: Server<String, u64, String> = Server::new(child.channel("kv")?);
///
/// let a = client.start(&"first".to_owned())?;
/// let b = client.start(&"second".to_owned())?;
/// let first = server.recv()?.defer(); // answered later
/// let second = server.recv()?;
/// let len = second.len() as u64;
/// second.reply(Ok(&len))?;
/// server.reply(first, Err(&"no".to_owned()))?;
///
/// let reply = client.recv_reply()?;
/// assert_eq!((reply.ticket(), reply.result().unwrap().to_native()), (b, 6));
/// # drop(reply);
/// let reply = client.recv_reply()?;
/// assert_eq!(reply.ticket(), a);
/// assert_eq!(reply.result().unwrap_err().as_str(), "no");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<Req, Resp, E> {
    rx: Receiver<Requests<Req>>,
    out: Outbox<Resp, E>,
    tag: u32,
}

/// The reply end and the notices owed on it: an `ABANDONED` or `REJECTED`
/// is sent without waiting (a drop or a receive must not block on the
/// reply ring); if the ring is full it is kept here, allocated once, and
/// sent before the next receive or reply. The caller's blocking
/// `recv_reply` has no other way to learn its call ended.
struct Outbox<Resp, E> {
    tx: Sender<Replies<Resp, E>>,
    /// `(id, status)`, oldest first; never more than [`OWED_NOTICES`], so
    /// it never reallocates.
    owed: Vec<(u64, u32)>,
}

impl<Resp: Encode, E: Encode> Outbox<Resp, E> {
    fn new(tx: Sender<Replies<Resp, E>>) -> Self {
        Outbox {
            tx,
            owed: Vec::with_capacity(OWED_NOTICES),
        }
    }

    /// Sends the owed notices, oldest first: the first waiting per
    /// `first` for room, the rest without waiting. Returns the error that
    /// stopped it (`Full` / `Timeout`; the rest stay owed). A notice the
    /// channel can never carry (the client gone, the ring poisoned) is
    /// dropped: there is nobody left to tell.
    fn flush(&mut self, first: Deadline) -> Option<SendError> {
        let mut sent = 0;
        let mut stopped = None;
        while let Some(&(id, status)) = self.owed.get(sent) {
            let deadline = if sent == 0 { first } else { Deadline::Now };
            match self
                .tx
                .send_framed::<()>(&wire::prefix(id, status), None, deadline)
            {
                Ok(()) => sent += 1,
                Err(e @ (SendError::Full | SendError::Timeout)) => {
                    stopped = Some(e);
                    break;
                }
                Err(_) => sent = self.owed.len(),
            }
        }
        // No allocation: drains in place.
        self.owed.drain(..sent);
        stopped
    }

    /// Tells the caller of `id` its call ended with `status` (`ABANDONED`
    /// or `REJECTED`), now if the reply ring has room (after the notices
    /// owed before it), else owes it.
    fn notify(&mut self, id: u64, status: u32) {
        if self.flush(Deadline::Now).is_none() {
            match self
                .tx
                .send_framed::<()>(&wire::prefix(id, status), None, Deadline::Now)
            {
                Ok(()) => return,
                Err(SendError::Full | SendError::Timeout) => {}
                // Nobody left to tell.
                Err(_) => return,
            }
        }
        // Below the bound by construction (see `OWED_NOTICES`); the check
        // keeps the no-reallocation promise even if that were ever wrong.
        if self.owed.len() < OWED_NOTICES {
            self.owed.push((id, status));
        }
    }
}

impl<Req, Resp, E> std::fmt::Debug for Server<Req, Resp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("rx", &self.rx)
            .field("tx", &self.out.tx)
            .field("owed_notices", &self.out.owed.len())
            .finish_non_exhaustive()
    }
}

/// A call not answered yet: answer it with [`Server::reply`] (or
/// [`Server::abandon`] it).
///
/// Dropping a handle unanswered tells the caller nothing (a handle cannot
/// reach the channel): the caller waits until its own timeout, or until the
/// server goes away. Hence `#[must_use]`; [`Server::abandon`] tells the
/// caller at once ([`CallError::Abandoned`](crate::CallError::Abandoned)).
///
/// ```
/// # use remora::{ChannelConfig, Segment, Client, Server, CallError};
/// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
/// # let child = Segment::open(parent.name())?;
/// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
/// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
/// let ticket = client.start(&1)?;
/// let handle = server.recv()?.defer();
/// server.abandon(handle)?;
/// assert_eq!(client.recv_reply().unwrap_err(), CallError::Abandoned { ticket });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "an unanswered call leaves its caller waiting until it times out"]
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyHandle {
    id: u64,
    server: u32,
}

impl ReplyHandle {
    /// The call's correlation id, as the client sent it (unique among the
    /// client's calls in flight; the server does not check it, the client
    /// does).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// client.start(&2)?;
    /// let a = server.recv()?.defer();
    /// let b = server.recv()?.defer();
    /// assert_ne!(a.id(), b.id());
    /// # server.abandon(a)?; server.abandon(b)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// A received call: dereferences to the archived request (validated).
/// Answer it with [`reply`](Incoming::reply) (or its `try_`/`_timeout`
/// forms), or [`defer`](Incoming::defer) it to answer later.
///
/// Dropped unanswered and not deferred (also when a handler panics), it
/// tells the caller ([`CallError::Abandoned`](crate::CallError::Abandoned))
/// without waiting: at once if the reply channel has room, else the
/// server owes the notice and sends it before its next receive or reply
/// (see [`Server::owed_notices`]).
///
/// ```
/// # use remora::{ChannelConfig, Segment, Client, Server, CallError};
/// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
/// # let child = Segment::open(parent.name())?;
/// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
/// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
/// let ticket = client.start(&7)?;
/// let call = server.recv()?;
/// assert_eq!(*call, 7);
/// drop(call); // unanswered
/// assert_eq!(client.recv_reply().unwrap_err(), CallError::Abandoned { ticket });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Incoming<'a, Req: rkyv::Archive, Resp: Encode, E: Encode> {
    /// The request's bytes: a private copy or a held frame.
    raw: RawMessage<'a>,
    /// The validated request's root, inside `raw`'s bytes.
    root: *const Archived<Req>,
    out: &'a mut Outbox<Resp, E>,
    /// `None` once answered or deferred.
    handle: Option<ReplyHandle>,
}

impl<Req: Decode, Resp: Encode, E: Encode> Server<Req, Resp, E> {
    /// A server over a channel's two ends.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// assert!(server.receiver().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(ends: (Sender<Replies<Resp, E>>, Receiver<Requests<Req>>)) -> Self {
        let (tx, rx) = ends;
        Server {
            rx,
            out: Outbox::new(tx),
            // Relaxed: a unique number is all that is needed.
            tag: NEXT_SERVER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A server over a raw channel's ends; see [`Client::from_raw`](crate::Client::from_raw)
    /// (no type check between the peers; requests are validated all the
    /// same).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let server: Server<u32, u32, ()> = Server::from_raw(parent.raw_channel("c")?);
    /// # drop(server);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_raw(ends: (RawSender, RawReceiver)) -> Self {
        let (tx, rx) = ends;
        Self::new((Sender::from_raw(tx), Receiver::from_raw(rx)))
    }

    /// The receiving end underneath: wait on it (with others) for the
    /// next request, or query it.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// assert!(!server.receiver().is_disconnected());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver(&self) -> &Receiver<Requests<Req>> {
        &self.rx
    }

    /// The sending end underneath (for its queries).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// assert!(server.sender().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sender(&self) -> &Sender<Replies<Resp, E>> {
        &self.out.tx
    }

    /// `ABANDONED` / `REJECTED` notices waiting for room in the reply
    /// channel (it was full when they were due). They go out, oldest
    /// first, before the next receive or reply; a blocking receive also
    /// retries them every few milliseconds while it waits. At most 64 are
    /// held: with 64 owed, a receive first waits (within its deadline) for
    /// room to send one, so none is ever lost
    /// ([`try_recv`](Server::try_recv) is then [`RecvError::Empty`],
    /// [`recv_timeout`](Server::recv_timeout) [`RecvError::Timeout`]). If
    /// the client is gone they are dropped: nobody is left to tell.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// drop(server.recv()?); // unanswered: the reply channel has room
    /// assert_eq!(server.owed_notices(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn owed_notices(&self) -> usize {
        self.out.owed.len()
    }

    /// Sets how both ends wait (default [`WaitStrategy::Adaptive`]).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server, WaitStrategy};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// server.set_wait_strategy(WaitStrategy::Block);
    /// assert_eq!(server.sender().wait_strategy(), WaitStrategy::Block);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.out.tx.set_wait_strategy(strategy);
        self.rx.set_wait_strategy(strategy);
    }

    /// Reads requests in place, zero-copy; see [`Receiver::trust_peer`].
    ///
    /// # Safety
    ///
    /// As for [`Receiver::trust_peer`]: the client never writes a
    /// request's frame after committing it.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server, ReceiveMode};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// // SAFETY: (for the example) the client runs in this process.
    /// unsafe { server.trust_peer() };
    /// assert_eq!(server.receive_mode(), ReceiveMode::InPlace);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn trust_peer(&mut self) {
        // SAFETY: forwarded to the caller.
        unsafe { self.rx.trust_peer() };
    }

    /// Reads requests in a private copy ([`ReceiveMode::Copy`]).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server, ReceiveMode};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// server.distrust_peer();
    /// assert_eq!(server.receive_mode(), ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn distrust_peer(&mut self) {
        self.rx.distrust_peer();
    }

    /// Where requests are read; see [`ReceiveMode`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server, ReceiveMode};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// assert_eq!(server.receive_mode(), ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_mode(&self) -> ReceiveMode {
        self.rx.receive_mode()
    }

    /// Waits for the next call.
    ///
    /// Errors: as [`Receiver::recv`]. A request that is too short for the
    /// call prefix, or does not validate as `Req`, is
    /// [`RecvError::Invalid`] (skipped); if it carried an id, the caller is
    /// told ([`CallError::Rejected`](crate::CallError::Rejected)), at once
    /// or, if the reply channel is full, later (see
    /// [`owed_notices`](Server::owed_notices)).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<String, (), ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<String, (), ()> = Server::new(child.channel("c")?);
    /// client.start(&"hi".to_owned())?;
    /// let call = server.recv()?;
    /// assert_eq!(call.as_str(), "hi");
    /// call.reply(Ok(&()))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&mut self) -> Result<Incoming<'_, Req, Resp, E>, RecvError> {
        self.recv_until(Deadline::NEVER)
    }

    /// The next call if one is waiting, else [`RecvError::Empty`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server, RecvError};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// assert!(matches!(server.try_recv(), Err(RecvError::Empty)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Incoming<'_, Req, Resp, E>, RecvError> {
        self.recv_until(Deadline::Now)
    }

    /// The next call, waiting at most `timeout`, else
    /// [`RecvError::Timeout`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Server, RecvError};
    /// # use std::time::Duration;
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut server: Server<u32, u32, ()> = Server::new(parent.channel("c")?);
    /// let waited = server.recv_timeout(Duration::from_millis(1));
    /// assert!(matches!(waited, Err(RecvError::Timeout)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Incoming<'_, Req, Resp, E>, RecvError> {
        self.recv_until(Deadline::after(timeout))
    }

    /// Answers a deferred call, waiting for room in the reply channel.
    /// On failure the handle comes back in the [`ReplyError`].
    ///
    /// # Panics
    ///
    /// If `handle` came from another server (a bug in the caller, like an
    /// index out of bounds).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// let handle = server.recv()?.defer();
    /// server.reply(handle, Ok(&2))?;
    /// assert_eq!(*client.recv_reply()?.result().unwrap(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply(
        &mut self,
        handle: ReplyHandle,
        result: Result<&Resp, &E>,
    ) -> Result<(), ReplyError> {
        self.reply_until(handle, Some(result), Deadline::NEVER)
    }

    /// Answers a deferred call if the reply channel has room now, else
    /// [`SendError::Full`](crate::SendError::Full) with the handle back.
    ///
    /// # Panics
    ///
    /// As [`reply`](Server::reply).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// let handle = server.recv()?.defer();
    /// server.try_reply(handle, Err(&()))?;
    /// assert!(!client.recv_reply()?.is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_reply(
        &mut self,
        handle: ReplyHandle,
        result: Result<&Resp, &E>,
    ) -> Result<(), ReplyError> {
        self.reply_until(handle, Some(result), Deadline::Now)
    }

    /// Answers a deferred call, waiting at most `timeout` for room, else
    /// [`SendError::Timeout`](crate::SendError::Timeout) with the handle
    /// back.
    ///
    /// # Panics
    ///
    /// As [`reply`](Server::reply).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # use std::time::Duration;
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// let handle = server.recv()?.defer();
    /// server.reply_timeout(handle, Ok(&3), Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply_timeout(
        &mut self,
        handle: ReplyHandle,
        result: Result<&Resp, &E>,
        timeout: Duration,
    ) -> Result<(), ReplyError> {
        self.reply_until(handle, Some(result), Deadline::after(timeout))
    }

    /// Tells the caller its call will not be answered
    /// ([`CallError::Abandoned`](crate::CallError::Abandoned)), waiting
    /// for room in the reply channel. See [`ReplyHandle`] for an example.
    ///
    /// # Panics
    ///
    /// As [`reply`](Server::reply).
    pub fn abandon(&mut self, handle: ReplyHandle) -> Result<(), ReplyError> {
        self.reply_until(handle, None, Deadline::NEVER)
    }

    /// [`abandon`](Server::abandon) if the reply channel has room now, else
    /// [`SendError::Full`](crate::SendError::Full) with the handle back.
    ///
    /// # Panics
    ///
    /// As [`reply`](Server::reply).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// let handle = server.recv()?.defer();
    /// server.try_abandon(handle)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_abandon(&mut self, handle: ReplyHandle) -> Result<(), ReplyError> {
        self.reply_until(handle, None, Deadline::Now)
    }

    /// [`abandon`](Server::abandon), waiting at most `timeout` for room.
    ///
    /// # Panics
    ///
    /// As [`reply`](Server::reply).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # use std::time::Duration;
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// let handle = server.recv()?.defer();
    /// server.abandon_timeout(handle, Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abandon_timeout(
        &mut self,
        handle: ReplyHandle,
        timeout: Duration,
    ) -> Result<(), ReplyError> {
        self.reply_until(handle, None, Deadline::after(timeout))
    }

    fn reply_until(
        &mut self,
        handle: ReplyHandle,
        result: Option<Result<&Resp, &E>>,
        deadline: Deadline,
    ) -> Result<(), ReplyError> {
        assert_eq!(
            handle.server, self.tag,
            "a ReplyHandle was answered by another server than its own"
        );
        self.out.flush(Deadline::Now);
        send_reply(&mut self.out.tx, handle, result, deadline)
    }

    #[inline]
    fn recv_until(&mut self, deadline: Deadline) -> Result<Incoming<'_, Req, Resp, E>, RecvError> {
        let Server { rx, out, tag } = self;
        let raw = rx.raw_mut();
        let mut msg = loop {
            if out.owed.is_empty() {
                break raw.next(deadline)?;
            }
            // At the bound, wait (within the deadline) for room for one
            // before taking a request that could owe another.
            let full = out.owed.len() >= OWED_NOTICES;
            let stopped = out.flush(if full { deadline } else { Deadline::Now });
            if out.owed.len() >= OWED_NOTICES {
                return Err(match stopped {
                    Some(SendError::Timeout) => RecvError::Timeout,
                    _ => RecvError::Empty,
                });
            }
            if out.owed.is_empty() {
                continue;
            }
            // Still owed: wait for a request, but come back to them
            // every NOTICE_RETRY (the client may be blocked on one).
            let Deadline::At(end) = deadline else {
                break raw.next(deadline)?;
            };
            let slice = MonoTime::after(NOTICE_RETRY).min(end);
            match raw.next(Deadline::At(slice)) {
                Ok(msg) => break msg,
                Err(RecvError::Timeout) if MonoTime::now() < end => continue,
                Err(e) => return Err(e),
            }
        };
        // SAFETY: `msg` is from `next`; the bytes are used only until the
        // `release_held` below, or by the call built from `msg`, which
        // borrows the receiver for as long.
        let bytes = unsafe { msg.bytes() };
        let len = bytes.len();
        let parsed = wire::parse(bytes);
        let root = match parsed {
            Some((_, wire::REQUEST)) => codec::access::<Req>(&bytes[FRAME_PREFIX..]).ok(),
            _ => None,
        };
        match (parsed, root) {
            (Some((id, _)), Some(root)) => Ok(Incoming {
                raw: RawMessage::new(raw, msg),
                root: root as *const _,
                out,
                handle: Some(ReplyHandle { id, server: *tag }),
            }),
            (parsed, _) => {
                raw.release_held(&mut msg);
                if let Some((id, _)) = parsed {
                    // Without waiting (a receive must not block on the
                    // reply ring); owed if the ring is full.
                    out.notify(id, wire::REJECTED);
                }
                Err(RecvError::Invalid { len })
            }
        }
    }
}

/// Sends a reply (`Some`) or an abandonment (`None`) for `handle`.
#[inline]
fn send_reply<Resp: Encode, E: Encode>(
    tx: &mut Sender<Replies<Resp, E>>,
    handle: ReplyHandle,
    result: Option<Result<&Resp, &E>>,
    deadline: Deadline,
) -> Result<(), ReplyError> {
    let sent = match result {
        Some(Ok(resp)) => tx.send_framed(&wire::prefix(handle.id, wire::OK), Some(resp), deadline),
        Some(Err(e)) => tx.send_framed(&wire::prefix(handle.id, wire::ERR), Some(e), deadline),
        None => tx.send_framed::<()>(&wire::prefix(handle.id, wire::ABANDONED), None, deadline),
    };
    sent.map_err(|error| ReplyError { handle, error })
}

impl<Req: Decode, Resp: Encode, E: Encode> Incoming<'_, Req, Resp, E> {
    /// Answers the call, waiting for room in the reply channel; the
    /// request is released after the reply is sent (so a reply may borrow
    /// from it). On failure the handle comes back in the [`ReplyError`],
    /// to answer later with [`Server::reply`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<Vec<u8>, Vec<u8>, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<Vec<u8>, Vec<u8>, ()> = Server::new(child.channel("c")?);
    /// client.start(&vec![1, 2, 3])?;
    /// let call = server.recv()?;
    /// let echo = call.to_vec();
    /// call.reply(Ok(&echo))?;
    /// assert_eq!(client.recv_reply()?.result().unwrap().as_slice(), [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply(self, result: Result<&Resp, &E>) -> Result<(), ReplyError> {
        self.answer(result, Deadline::NEVER)
    }

    /// Answers the call if the reply channel has room now, else
    /// [`SendError::Full`](crate::SendError::Full) with the handle back.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// server.recv()?.try_reply(Ok(&1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_reply(self, result: Result<&Resp, &E>) -> Result<(), ReplyError> {
        self.answer(result, Deadline::Now)
    }

    /// Answers the call, waiting at most `timeout` for room, else
    /// [`SendError::Timeout`](crate::SendError::Timeout) with the handle
    /// back.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # use std::time::Duration;
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// server.recv()?.reply_timeout(Ok(&1), Duration::from_secs(1))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reply_timeout(
        self,
        result: Result<&Resp, &E>,
        timeout: Duration,
    ) -> Result<(), ReplyError> {
        self.answer(result, Deadline::after(timeout))
    }

    /// Releases the request and returns the handle, to answer later with
    /// [`Server::reply`]. See [`Server`] for an example.
    pub fn defer(mut self) -> ReplyHandle {
        self.handle
            .take()
            .expect("an Incoming holds its handle until answered")
    }

    /// The call's correlation id; see [`ReplyHandle::id`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// let call = server.recv()?;
    /// let id = call.id();
    /// assert_eq!(call.defer().id(), id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> u64 {
        self.handle.as_ref().map_or(0, |h| h.id)
    }

    /// The request's archive bytes (after the 16-byte call prefix).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&0x0102_0304)?;
    /// assert_eq!(server.recv()?.bytes(), 0x0102_0304u32.to_le_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes(&self) -> &[u8] {
        &self.raw.bytes()[FRAME_PREFIX..]
    }

    fn answer(mut self, result: Result<&Resp, &E>, deadline: Deadline) -> Result<(), ReplyError> {
        let handle = self
            .handle
            .take()
            .expect("an Incoming holds its handle until answered");
        self.out.flush(Deadline::Now);
        send_reply(&mut self.out.tx, handle, Some(result), deadline)
    }
}

impl<Req: rkyv::Archive, Resp: Encode, E: Encode> Deref for Incoming<'_, Req, Resp, E> {
    type Target = Archived<Req>;

    #[inline]
    fn deref(&self) -> &Archived<Req> {
        // SAFETY: `root` points into the validated bytes held by `raw`,
        // unchanged while `self` lives (see `Message`'s `Deref`: a private
        // copy is rewritten only by the next receive, which `raw`'s borrow
        // prevents; a frame in place is `trust_peer`'s promise; FIFO
        // frames are private).
        unsafe { &*self.root }
    }
}

impl<Req: rkyv::Archive, Resp: Encode, E: Encode> Drop for Incoming<'_, Req, Resp, E> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // Unanswered and not deferred: tell the caller, without
            // waiting (a drop must not block); owed if the ring is full.
            self.out.notify(handle.id, wire::ABANDONED);
        }
    }
}

impl<Req: rkyv::Archive, Resp: Encode, E: Encode> std::fmt::Debug for Incoming<'_, Req, Resp, E>
where
    Archived<Req>: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("id", &self.handle.as_ref().map_or(0, |h| h.id))
            .field("request", &**self)
            .finish()
    }
}
