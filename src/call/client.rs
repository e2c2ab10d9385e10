//! The calling side: sends requests with a correlation id, keeps the
//! in-flight table, and routes each reply to the call it answers.

use std::marker::PhantomData;
use std::time::Duration;

use rkyv::{Archive, Archived};

use super::table::{Route, Table};
use super::wire::{self, Replies, Requests};
use super::{CallError, Ticket};
use crate::channel::{
    Deadline, Delivered, FRAME_PREFIX, RawMessage, RawReceiver, RawSender, ReceiveMode, Receiver,
    Sender,
};
use crate::codec::{self, Decode, Encode};
use crate::error::RecvError;
use crate::wait::WaitStrategy;

/// The in-flight table's size when none is given
/// ([`Client::with_capacity`]).
pub const DEFAULT_IN_FLIGHT: usize = 64;

/// The calling end of a call channel: sends `Req`s, receives `Resp`s (or
/// the handler's `E`).
///
/// Built over the two ends of an ordinary channel taken with the
/// [`Requests`] / [`Replies`] marker types (inferred from the
/// constructor), so it works wherever channels do: [`Child::channel`](crate::Child::channel),
/// [`Connection::channel`](crate::Connection::channel), [`Segment::channel`](crate::Segment::channel),
/// over shared memory or FIFOs.
///
/// * [`call`](Client::call) / [`call_timeout`](Client::call_timeout): one
///   call at a time.
/// * Pipelined: [`start`](Client::start) several calls, then collect their
///   replies with [`recv_reply`](Client::recv_reply) in the order they
///   arrive, each naming its [`Ticket`]. The number of calls in flight is
///   bounded by the table's capacity: a full table is
///   [`CallError::TableFull`], the client's back-pressure.
///
/// Sizing: a server blocked sending a reply into a full reply ring while
/// this client is blocked in `start` on a full request ring would wait for
/// each other. Pick the capacity so that that many replies fit in the
/// reply direction (replies take their archive + 32 bytes of ring, rounded
/// up to 16), or start with [`try_start`](Client::try_start) /
/// [`start_timeout`](Client::start_timeout) and collect replies when the
/// channel is full.
///
/// Each reply goes to the call it answers, whatever order the server
/// answers in. A reply to a call given up on (a `call_timeout` that timed
/// out, or [`abandon`](Client::abandon)) is discarded when it comes, never
/// taken for another call's. A reply with an id that was never issued, or
/// was already answered, is [`CallError::Protocol`] and reaches no call.
/// When the server goes away every call in flight fails at once with
/// [`CallError::Disconnected`].
///
/// The reply is read where it lies, like a [`Receiver`]'s message: in the
/// receiver's private copy ([`ReceiveMode::Copy`], the default for a
/// parent's ends) or in place (a spawned child's ends, or after
/// [`trust_peer`](Client::trust_peer)). No allocation per call: the table
/// is allocated here.
///
/// ```
/// use remora::{ChannelConfig, Client, Segment, Server};
///
/// let parent = Segment::create(&[ChannelConfig::new("math")])?;
/// let child = Segment::open(parent.name())?; // normally another process
/// let mut client: Client<(u32, u32), u32, String> = Client::new(parent.channel("math")?);
/// let mut server: Server<(u32, u32), u32, String> = Server::new(child.channel("math")?);
///
/// let ticket = client.start(&(6, 7))?;
/// let call = server.recv()?; // the request, read in place
/// let product = call.0.to_native() * call.1.to_native();
/// call.reply(Ok(&product))?;
/// let reply = client.recv_reply()?;
/// assert_eq!(reply.ticket(), ticket);
/// assert_eq!(*reply.result().unwrap(), 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Client<Req, Resp, E> {
    tx: Sender<Requests<Req>>,
    rx: Receiver<Replies<Resp, E>>,
    table: Table,
}

impl<Req, Resp, E> std::fmt::Debug for Client<Req, Resp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tx", &self.tx)
            .field("rx", &self.rx)
            .field("table", &self.table)
            .finish()
    }
}

/// A reply: the server's `Ok(Resp)` or `Err(E)`, archived and validated,
/// read where it lies (see [`Client`]). Holds the client's receiver until
/// dropped.
///
/// ```
/// # use remora::{ChannelConfig, Segment, Client, Server};
/// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
/// # let child = Segment::open(parent.name())?;
/// let mut client: Client<String, u64, String> = Client::new(parent.channel("c")?);
/// let mut server: Server<String, u64, String> = Server::new(child.channel("c")?);
/// client.start(&"not a number".to_owned())?;
/// let call = server.recv()?;
/// match call.parse::<u64>() {
///     Ok(n) => call.reply(Ok(&n))?,
///     Err(e) => call.reply(Err(&e.to_string()))?,
/// }
/// let reply = client.recv_reply()?;
/// assert!(!reply.is_ok());
/// assert_eq!(reply.result().unwrap_err().as_str(), "invalid digit found in string");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Reply<'a, Resp: Archive, E: Archive> {
    /// The frame (or private copy), released on drop.
    raw: RawMessage<'a>,
    ticket: Ticket,
    ok: bool,
    /// The validated root: an `Archived<Resp>` if `ok`, else an
    /// `Archived<E>`, inside `raw`'s bytes.
    root: *const u8,
    _types: PhantomData<fn() -> (Resp, E)>,
}

impl<Req: Encode, Resp: Decode, E: Decode> Client<Req, Resp, E> {
    /// A client over a channel's two ends, with room for
    /// [`DEFAULT_IN_FLIGHT`] calls in flight.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// assert_eq!(client.capacity(), remora::DEFAULT_IN_FLIGHT);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(ends: (Sender<Requests<Req>>, Receiver<Replies<Resp, E>>)) -> Self {
        Self::with_capacity(ends, DEFAULT_IN_FLIGHT)
    }

    /// A client with room for `capacity` calls in flight (at least 1).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, CallError};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::with_capacity(parent.channel("c")?, 1);
    /// client.start(&1)?;
    /// assert_eq!(client.start(&2), Err(CallError::TableFull));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_capacity(
        ends: (Sender<Requests<Req>>, Receiver<Replies<Resp, E>>),
        capacity: usize,
    ) -> Self {
        let (tx, rx) = ends;
        Client {
            tx,
            rx,
            table: Table::new(capacity),
        }
    }

    /// A client over a raw channel's ends, with room for `capacity` calls
    /// in flight: for a peer that speaks the call framing (see
    /// [`Requests`]) without remora's typed ends, e.g. one in another
    /// language. Nothing checks that the peer agrees on the types (a raw
    /// channel's fingerprint is the same for all); replies are validated
    /// all the same.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let client: Client<u32, u32, ()> = Client::from_raw(parent.raw_channel("c")?, 16);
    /// assert_eq!(client.capacity(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_raw(ends: (RawSender, RawReceiver), capacity: usize) -> Self {
        let (tx, rx) = ends;
        Self::with_capacity((Sender::from_raw(tx), Receiver::from_raw(rx)), capacity)
    }

    /// How many calls can be in flight at once.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let client: Client<u32, u32, ()> = Client::with_capacity(parent.channel("c")?, 8);
    /// assert_eq!(client.capacity(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Calls started and not yet answered (abandoned ones excluded).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let ticket = client.start(&1)?;
    /// assert_eq!(client.in_flight(), 1);
    /// client.abandon(ticket);
    /// assert_eq!(client.in_flight(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn in_flight(&self) -> usize {
        self.table.live()
    }

    /// Abandoned calls whose late reply has not come yet. Their slots are
    /// reused when the table is otherwise full, once per slot: a slot
    /// remembers one older abandoned id besides its current one, so its
    /// late reply is still discarded. A slot whose older abandoned id is
    /// still unanswered is not reused again while its current call is
    /// abandoned too ([`CallError::TableFull`] if no other slot can be
    /// had): forgetting that id would turn a correct server's late reply
    /// into a [`CallError::Protocol`]. So at most twice the capacity of
    /// abandoned calls wait for a reply.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let ticket = client.start(&1)?;
    /// client.abandon(ticket);
    /// assert_eq!(client.abandoned(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abandoned(&self) -> usize {
        self.table.abandoned()
    }

    /// Whether `ticket` is a call of this client still waiting for its
    /// reply.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let ticket = client.start(&1)?;
    /// assert!(client.is_in_flight(ticket));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_in_flight(&self, ticket: Ticket) -> bool {
        self.table.is_live(ticket)
    }

    /// Gives up on a call: its slot stays reserved until its reply comes,
    /// which is then discarded (or until the slot is needed, once: see
    /// [`abandoned`](Client::abandoned)). Returns whether the call was in
    /// flight.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server, CallError};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// let old = client.start(&1)?;
    /// assert!(client.abandon(old));
    /// let new = client.start(&2)?;
    /// for _ in 0..2 {
    ///     let call = server.recv()?;
    ///     let n = call.to_native();
    ///     call.reply(Ok(&n))?;
    /// }
    /// // The reply to the abandoned call is discarded.
    /// let reply = client.recv_reply()?;
    /// assert_eq!((reply.ticket(), reply.result().unwrap().to_native()), (new, 2));
    /// # drop(reply);
    /// assert_eq!(client.try_recv_reply().unwrap_err(), CallError::Idle);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abandon(&mut self, ticket: Ticket) -> bool {
        self.table.abandon(ticket)
    }

    /// The sending end underneath (for its queries).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// assert!(client.sender().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sender(&self) -> &Sender<Requests<Req>> {
        &self.tx
    }

    /// The receiving end underneath: its queries, and waiting on it with
    /// others (a reply is waiting when it has a message).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// assert!(client.receiver().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receiver(&self) -> &Receiver<Replies<Resp, E>> {
        &self.rx
    }

    /// Sets how both ends wait (default [`WaitStrategy::Adaptive`]).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, WaitStrategy};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// client.set_wait_strategy(WaitStrategy::Spin);
    /// assert_eq!(client.receiver().wait_strategy(), WaitStrategy::Spin);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.tx.set_wait_strategy(strategy);
        self.rx.set_wait_strategy(strategy);
    }

    /// Reads replies in place, zero-copy; see
    /// [`Receiver::trust_peer`].
    ///
    /// # Safety
    ///
    /// As for [`Receiver::trust_peer`]: the server never writes a reply's
    /// frame after committing it.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, ReceiveMode};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// // SAFETY: (for the example) the server runs in this process.
    /// unsafe { client.trust_peer() };
    /// assert_eq!(client.receive_mode(), ReceiveMode::InPlace);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn trust_peer(&mut self) {
        // SAFETY: forwarded to the caller.
        unsafe { self.rx.trust_peer() };
    }

    /// Reads replies in a private copy ([`ReceiveMode::Copy`]); see
    /// [`Receiver::distrust_peer`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, ReceiveMode};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// client.distrust_peer();
    /// assert_eq!(client.receive_mode(), ReceiveMode::Copy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn distrust_peer(&mut self) {
        self.rx.distrust_peer();
    }

    /// Where replies are read; see [`ReceiveMode`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, ReceiveMode};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// assert_eq!(client.receive_mode(), ReceiveMode::Copy); // a Segment's default
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_mode(&self) -> ReceiveMode {
        self.rx.receive_mode()
    }

    /// Calls: sends `req` and waits for its reply.
    ///
    /// One call at a time: with pipelined calls in flight this is
    /// [`CallError::Busy`] (their replies could come first, with nowhere
    /// to go). Abandoned calls do not count: their late replies are
    /// discarded on the way.
    ///
    /// Errors: see [`CallError`]. On [`CallError::Protocol`] or a lasting
    /// receive error this call is abandoned (its reply, if it still comes,
    /// is discarded); on `Disconnected` every call failed.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<String, u64, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<String, u64, ()> = Server::new(child.channel("c")?);
    /// let worker = std::thread::spawn(move || {
    ///     let call = server.recv().unwrap();
    ///     let len = call.len() as u64;
    ///     call.reply(Ok(&len)).unwrap();
    /// });
    /// let reply = client.call(&"hello".to_owned())?;
    /// assert_eq!(*reply.result().unwrap(), 5);
    /// # drop(reply); worker.join().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call(&mut self, req: &Req) -> Result<Reply<'_, Resp, E>, CallError> {
        self.call_until(req, Deadline::NEVER)
    }

    /// Calls, waiting at most `timeout` in all (sending and the reply),
    /// else [`CallError::Timeout`]: the call is then abandoned, and its
    /// reply discarded when it comes. There is no `try_call` (a reply
    /// cannot be there at once); use [`try_start`](Client::try_start) and
    /// [`try_recv_reply`](Client::try_recv_reply).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server, CallError};
    /// # use std::time::Duration;
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// let slow = client.call_timeout(&1, Duration::from_millis(1));
    /// assert_eq!(slow.unwrap_err(), CallError::Timeout);
    /// // The server answers late; then the next call's reply arrives.
    /// let late = server.recv()?.defer();
    /// server.reply(late, Ok(&1))?;
    /// client.start(&2)?;
    /// let call = server.recv()?;
    /// call.reply(Ok(&2))?;
    /// // The late reply to call 1 is discarded, not taken for call 2's.
    /// assert_eq!(*client.recv_reply()?.result().unwrap(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call_timeout(
        &mut self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Reply<'_, Resp, E>, CallError> {
        self.call_until(req, Deadline::after(timeout))
    }

    /// Starts a call: sends `req`, waiting for room in the channel if it is
    /// full, and returns its ticket at once. Collect the reply with
    /// [`recv_reply`](Client::recv_reply).
    ///
    /// A full in-flight table is [`CallError::TableFull`] at once, never a
    /// wait: only this client's own `recv_reply` can free a slot.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// let tickets = [client.start(&1)?, client.start(&2)?, client.start(&3)?];
    /// // The server answers in reverse order.
    /// let mut handles = Vec::new();
    /// for _ in 0..3 {
    ///     handles.push(server.recv()?.defer());
    /// }
    /// for (n, handle) in handles.into_iter().enumerate().rev() {
    ///     server.reply(handle, Ok(&(n as u32 + 1)))?;
    /// }
    /// for _ in 0..3 {
    ///     let reply = client.recv_reply()?;
    ///     let i = tickets.iter().position(|t| *t == reply.ticket()).unwrap();
    ///     assert_eq!(*reply.result().unwrap(), i as u32 + 1);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start(&mut self, req: &Req) -> Result<Ticket, CallError> {
        self.start_until(req, Deadline::NEVER)
    }

    /// Starts a call if the channel has room now, else
    /// [`CallError::Send`]`(`[`SendError::Full`](crate::SendError::Full)`)`
    /// (nothing sent).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, CallError, SendError};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let mut started = 0;
    /// let full = loop {
    ///     match client.try_start(&1) {
    ///         Ok(_) => started += 1,
    ///         Err(e) => break e,
    ///     }
    /// };
    /// // A 4 KiB ring holds 64 requests of 32 bytes; the table, 64 calls.
    /// assert!(full == CallError::Send(SendError::Full) || full == CallError::TableFull);
    /// assert_eq!(client.in_flight(), started);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_start(&mut self, req: &Req) -> Result<Ticket, CallError> {
        self.start_until(req, Deadline::Now)
    }

    /// Starts a call, waiting at most `timeout` for room in the channel,
    /// else [`CallError::Timeout`] (nothing sent).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client};
    /// # use std::time::Duration;
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let ticket = client.start_timeout(&1, Duration::from_millis(10))?;
    /// assert!(client.is_in_flight(ticket));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_timeout(&mut self, req: &Req, timeout: Duration) -> Result<Ticket, CallError> {
        self.start_until(req, Deadline::after(timeout))
    }

    /// Waits for the next reply to any call in flight, in arrival order.
    ///
    /// Why arrival order and no wait for one given ticket: a reply is read
    /// where it lies, in the ring (or the receiver's single private copy),
    /// and the ring is consumed in order; holding other calls' replies
    /// aside would need a buffer per slot of the channel's largest message,
    /// or an allocation per reply. Route with [`Reply::ticket`] (or
    /// [`Ticket::slot`] into your own array) instead.
    ///
    /// Errors: [`CallError::Idle`] at once if no call is in flight;
    /// per-call failures name their ticket; see [`CallError`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// let ticket = client.start(&20)?;
    /// let call = server.recv()?;
    /// let n = call.to_native() + 1;
    /// call.reply(Ok(&n))?;
    /// let reply = client.recv_reply()?;
    /// assert_eq!((reply.ticket(), reply.result().unwrap().to_native()), (ticket, 21));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_reply(&mut self) -> Result<Reply<'_, Resp, E>, CallError> {
        self.next_reply(Deadline::NEVER, None)
    }

    /// The next reply if one is waiting, else [`CallError::Empty`].
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, CallError};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// client.start(&1)?;
    /// assert_eq!(client.try_recv_reply().unwrap_err(), CallError::Empty);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_reply(&mut self) -> Result<Reply<'_, Resp, E>, CallError> {
        self.next_reply(Deadline::Now, None)
    }

    /// The next reply, waiting at most `timeout`, else
    /// [`CallError::Timeout`] (every call stays in flight).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, CallError};
    /// # use std::time::Duration;
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let ticket = client.start(&1)?;
    /// let waited = client.recv_reply_timeout(Duration::from_millis(1));
    /// assert_eq!(waited.unwrap_err(), CallError::Timeout);
    /// assert!(client.is_in_flight(ticket));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_reply_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Reply<'_, Resp, E>, CallError> {
        self.next_reply(Deadline::after(timeout), None)
    }

    fn call_until(
        &mut self,
        req: &Req,
        deadline: Deadline,
    ) -> Result<Reply<'_, Resp, E>, CallError> {
        if self.table.live() > 0 {
            return Err(CallError::Busy);
        }
        let ticket = self.start_until(req, deadline)?;
        // Ours is the only live call, so any reply delivered is ours.
        self.next_reply(deadline, Some(ticket))
    }

    #[inline]
    fn start_until(&mut self, req: &Req, deadline: Deadline) -> Result<Ticket, CallError> {
        let ticket = match self.table.issue() {
            Some(ticket) => ticket,
            None => {
                self.discard_late_replies()?;
                self.table.issue().ok_or(CallError::TableFull)?
            }
        };
        let head = wire::prefix(ticket.id(), wire::REQUEST);
        match self.tx.send_framed(&head, Some(req), deadline) {
            Ok(()) => Ok(ticket),
            Err(e) => {
                // Nothing was sent: the id never left this process.
                self.table.cancel(ticket);
                Err(e.into())
            }
        }
    }

    /// With no call live but the table full of abandoned calls (whose
    /// slots cannot all be reused, see [`Client::abandoned`]), nothing
    /// else would ever read their late replies (`recv_reply` is `Idle`):
    /// read those that have arrived, without waiting, so their slots come
    /// back. A reply no call can take here is `Protocol`, as anywhere.
    #[cold]
    fn discard_late_replies(&mut self) -> Result<(), CallError> {
        if self.table.live() > 0 || self.table.abandoned() == 0 {
            // Live calls' replies are `recv_reply`'s to take.
            return Ok(());
        }
        let raw = self.rx.raw_mut();
        loop {
            let mut msg = match raw.next(Deadline::Now) {
                Ok(msg) => msg,
                Err(RecvError::Empty) => return Ok(()),
                Err(RecvError::Disconnected) => {
                    self.table.fail_all();
                    return Err(CallError::Disconnected);
                }
                Err(e) => return Err(e.into()),
            };
            // SAFETY: `msg` is from `next`; the bytes are used only until
            // the `release_held` just below.
            let bytes = unsafe { msg.bytes() };
            let len = bytes.len();
            let routed = wire::parse(bytes).map(|(id, _)| (id, self.table.route(id)));
            raw.release_held(&mut msg);
            match routed {
                Some((_, Route::Discard)) => continue,
                // No call is live, so none is delivered.
                Some((id, _)) => return Err(CallError::Protocol { id, len }),
                None => return Err(CallError::Protocol { id: 0, len }),
            }
        }
    }

    /// Receives until a reply for a live call arrives (discarding late
    /// ones) or an error. `own`: the call `call` waits for, abandoned on
    /// errors that do not end it.
    #[inline]
    fn next_reply(
        &mut self,
        deadline: Deadline,
        own: Option<Ticket>,
    ) -> Result<Reply<'_, Resp, E>, CallError> {
        let (msg, ticket, ok, root) = match self.receive_routed(deadline) {
            Ok(found) => found,
            Err(e) => {
                if let Some(own) = own {
                    // Gone already if the error named it or was a
                    // disconnect; else its reply may still come.
                    self.table.abandon(own);
                }
                return Err(e);
            }
        };
        Ok(Reply {
            raw: RawMessage::new(self.rx.raw_mut(), msg),
            ticket,
            ok,
            root,
            _types: PhantomData,
        })
    }

    /// The receive loop of [`next_reply`](Client::next_reply), without
    /// borrowing `self` past its return (the reply is built from the
    /// delivered frame afterwards).
    #[inline]
    fn receive_routed(
        &mut self,
        deadline: Deadline,
    ) -> Result<(Delivered, Ticket, bool, *const u8), CallError> {
        loop {
            if self.table.live() == 0 {
                return Err(CallError::Idle);
            }
            let raw = self.rx.raw_mut();
            let mut msg = match raw.next(deadline) {
                Ok(msg) => msg,
                Err(RecvError::Disconnected) => {
                    // Everything the server sent was received: no call in
                    // flight can be answered any more.
                    self.table.fail_all();
                    return Err(CallError::Disconnected);
                }
                Err(e) => return Err(e.into()),
            };
            // SAFETY: `msg` is from `next`; the bytes are used only until
            // the `release_held` below, or (on success) by the reply built
            // from `msg`, which borrows the receiver for as long.
            let bytes = unsafe { msg.bytes() };
            let len = bytes.len();
            let Some((id, status)) = wire::parse(bytes) else {
                raw.release_held(&mut msg);
                return Err(CallError::Protocol { id: 0, len });
            };
            let ticket = match self.table.route(id) {
                Route::Deliver(ticket) => ticket,
                Route::Discard => {
                    raw.release_held(&mut msg);
                    continue;
                }
                Route::Unknown => {
                    raw.release_held(&mut msg);
                    return Err(CallError::Protocol { id, len });
                }
            };
            let body = &bytes[FRAME_PREFIX..];
            let root = match status {
                wire::OK => codec::access::<Resp>(body)
                    .map(|r| (true, r as *const Archived<Resp> as *const u8))
                    .ok(),
                wire::ERR => codec::access::<E>(body)
                    .map(|r| (false, r as *const Archived<E> as *const u8))
                    .ok(),
                wire::REJECTED | wire::ABANDONED => {
                    raw.release_held(&mut msg);
                    return Err(if status == wire::REJECTED {
                        CallError::Rejected { ticket }
                    } else {
                        CallError::Abandoned { ticket }
                    });
                }
                _ => None,
            };
            return match root {
                Some((ok, root)) => Ok((msg, ticket, ok, root)),
                None => {
                    raw.release_held(&mut msg);
                    Err(CallError::InvalidReply { ticket, len })
                }
            };
        }
    }
}

impl<Resp: Archive, E: Archive> Reply<'_, Resp, E> {
    /// The server's answer: `Ok(&Archived<Resp>)` or the handler's
    /// `Err(&Archived<E>)`, validated.
    ///
    /// See [`Reply`] for an example.
    pub fn result(&self) -> Result<&Archived<Resp>, &Archived<E>> {
        if self.ok {
            // SAFETY: `root` is the root of an archive validated as a
            // `Resp` (`ok`), inside `raw`'s bytes, which stay unchanged
            // while `self` lives (a private copy is rewritten only by the
            // next receive, which `raw`'s borrow prevents; a frame read in
            // place is released only on drop, and its stability is
            // `trust_peer`'s promise; FIFO frames are private).
            Ok(unsafe { &*(self.root as *const Archived<Resp>) })
        } else {
            // SAFETY: as above, validated as an `E` (`!ok`).
            Err(unsafe { &*(self.root as *const Archived<E>) })
        }
    }

    /// Whether the server answered `Ok`.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// server.recv()?.reply(Ok(&1))?;
    /// assert!(client.recv_reply()?.is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_ok(&self) -> bool {
        self.ok
    }

    /// The call this reply answers.
    ///
    /// See [`Client::start`] for an example.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// The reply's archive bytes (after the 16-byte call prefix).
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// # let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// # let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// client.start(&1)?;
    /// server.recv()?.reply(Ok(&0x0102_0304))?;
    /// assert_eq!(client.recv_reply()?.bytes(), 0x0102_0304u32.to_le_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes(&self) -> &[u8] {
        &self.raw.bytes()[FRAME_PREFIX..]
    }
}

impl<Resp: Archive, E: Archive> std::fmt::Debug for Reply<'_, Resp, E>
where
    Archived<Resp>: std::fmt::Debug,
    Archived<E>: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("ticket", &self.ticket)
            .field("result", &self.result())
            .finish()
    }
}
