//! A call's identity on the client: its slot in the in-flight table and
//! the slot's generation, which together form the correlation id on the
//! wire.

/// A call in flight, as [`Client::start`](crate::Client::start) returns it
/// and [`Reply::ticket`](crate::Reply::ticket) names it.
///
/// Tickets are small `Copy` values: compare them to route replies, or use
/// [`slot`](Ticket::slot) (below the client's capacity, unique among the
/// calls in flight) to index your own per-call state without a map.
///
/// ```
/// # use remora::{ChannelConfig, Segment, Client, Server};
/// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
/// # let child = Segment::open(parent.name())?;
/// let mut client: Client<u32, u32, ()> = Client::with_capacity(parent.channel("c")?, 4);
/// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
/// let a = client.start(&1)?;
/// let b = client.start(&2)?;
/// assert_ne!(a, b);
/// assert!(a.slot() < 4 && b.slot() < 4 && a.slot() != b.slot());
/// # for _ in 0..2 { let c = server.recv()?; let n = c.to_native(); c.reply(Ok(&n)).unwrap(); }
/// # client.recv_reply()?; client.recv_reply()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    index: u32,
    generation: u32,
}

impl Ticket {
    pub(crate) fn new(index: u32, generation: u32) -> Ticket {
        Ticket { index, generation }
    }

    /// The ticket a correlation id names (whether or not it was issued).
    pub(crate) fn from_id(id: u64) -> Ticket {
        Ticket {
            index: id as u32,
            generation: (id >> 32) as u32,
        }
    }

    /// The correlation id on the wire: [`slot`](Ticket::slot) in the low
    /// 32 bits, the slot's generation (never 0) in the high 32. What a
    /// server sees as [`ReplyHandle::id`](crate::ReplyHandle::id), and
    /// what [`CallError::Protocol`](crate::CallError::Protocol) reports.
    ///
    /// ```
    /// # use remora::{ChannelConfig, Segment, Client, Server};
    /// # let parent = Segment::create(&[ChannelConfig::new("c").capacity(4096)])?;
    /// # let child = Segment::open(parent.name())?;
    /// let mut client: Client<u32, u32, ()> = Client::new(parent.channel("c")?);
    /// let mut server: Server<u32, u32, ()> = Server::new(child.channel("c")?);
    /// let ticket = client.start(&1)?;
    /// assert_eq!(server.recv()?.id(), ticket.id());
    /// assert_eq!(ticket.id() as u32 as usize, ticket.slot());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(self) -> u64 {
        u64::from(self.index) | u64::from(self.generation) << 32
    }

    pub(crate) fn index(self) -> u32 {
        self.index
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }

    /// The call's slot in the client's in-flight table: below the client's
    /// [`capacity`](crate::Client::capacity), and different for every
    /// call in flight at the same time (a slot is reused once its call is
    /// over). See [`Ticket`] for an example.
    pub fn slot(self) -> usize {
        self.index as usize
    }
}
