//! The client's in-flight table: which correlation ids are live, which were
//! abandoned (their late replies are discarded), and which were never
//! issued or already answered (their replies are protocol violations).
//!
//! An id is `slot | generation << 32`. A slot's generation moves on each
//! time it is freed, so an id is live at most once: a repeat or replay of
//! an answered id no longer matches. Everything is allocated in `new`; no
//! operation allocates.
//!
//! A slot remembers at most one older abandoned generation (`stale`), and
//! an abandoned slot is reused only while it remembers none: reusing it
//! again would have to forget an id whose late reply a correct server may
//! still send, and that reply would then be reported as forged. So each
//! unanswered id the client ever sent is either a slot's current
//! generation or its `stale` one, until its reply comes (or the server is
//! gone); a full table whose abandoned slots all hold a stale id is
//! `TableFull`.

use super::Ticket;

/// One slot's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// A call waiting for its reply.
    Live,
    /// A call its caller gave up on: its reply, if it comes, is discarded.
    Abandoned,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The generation of the slot's current (or next) id; never 0.
    generation: u32,
    state: State,
    /// An older generation of this slot that was abandoned and whose slot
    /// was then reused (the table was full): its late reply is discarded
    /// once. At most one per slot: a slot holding one is not reused again
    /// while abandoned (see the module docs).
    stale: Option<u32>,
}

/// Where a reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// To the caller of this live call (its slot is now free).
    Deliver(Ticket),
    /// Nowhere, silently: the call was abandoned (its slot is now free).
    Discard,
    /// Nowhere, as a protocol violation: no such call is in flight.
    Unknown,
}

/// The in-flight table.
#[derive(Debug)]
pub(crate) struct Table {
    slots: Box<[Slot]>,
    /// Free slot indices (a stack, preallocated to the capacity).
    free: Vec<u32>,
    live: usize,
    /// Abandoned ids whose reply has not come: slots in `Abandoned` plus
    /// `stale` ones.
    abandoned: usize,
}

impl Table {
    /// A table of `capacity` slots (at least 1, at most `u32::MAX`).
    pub(crate) fn new(capacity: usize) -> Table {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        let slots = vec![
            Slot {
                generation: 1,
                state: State::Free,
                stale: None,
            };
            capacity
        ]
        .into_boxed_slice();
        // Pushed in reverse so slot 0 is used first (easier to read in
        // tests and traces; nothing depends on it).
        let free = (0..capacity as u32).rev().collect();
        Table {
            slots,
            free,
            live: 0,
            abandoned: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Calls waiting for a reply.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Calls abandoned whose reply has not come (including those whose
    /// slot was reused).
    pub(crate) fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Makes a new live call, or `None` if no slot can take one.
    /// A free slot is taken first; if there is none, an abandoned one that
    /// holds no stale id yet is reused (its old id becomes its stale one,
    /// so its late reply is still discarded silently). An abandoned slot
    /// that already holds a stale id is not reused: that would forget an
    /// id whose reply may still come. The search is a scan, only when no
    /// slot is free.
    pub(crate) fn issue(&mut self) -> Option<Ticket> {
        let index = match self.free.pop() {
            Some(index) => index,
            None if self.abandoned > 0 => {
                let index = self
                    .slots
                    .iter()
                    .position(|s| s.state == State::Abandoned && s.stale.is_none())?;
                let slot = &mut self.slots[index];
                // The abandoned id stays unanswered (still counted in
                // `abandoned`), now as the stale one.
                slot.stale = Some(slot.generation);
                slot.generation = next_generation(slot.generation);
                index as u32
            }
            None => return None,
        };
        let slot = &mut self.slots[index as usize];
        slot.state = State::Live;
        self.live += 1;
        Some(Ticket::new(index, slot.generation))
    }

    /// Takes back a call whose request was never sent.
    pub(crate) fn cancel(&mut self, ticket: Ticket) {
        if self.is_live(ticket) {
            self.live -= 1;
            self.free_slot(ticket.index());
        }
    }

    /// Gives up on a live call: its reply will be discarded. Returns
    /// whether it was live.
    pub(crate) fn abandon(&mut self, ticket: Ticket) -> bool {
        if !self.is_live(ticket) {
            return false;
        }
        self.slots[ticket.index() as usize].state = State::Abandoned;
        self.live -= 1;
        self.abandoned += 1;
        true
    }

    /// Whether `ticket` is a live call of this table.
    pub(crate) fn is_live(&self, ticket: Ticket) -> bool {
        self.slots
            .get(ticket.index() as usize)
            .is_some_and(|s| s.state == State::Live && s.generation == ticket.generation())
    }

    /// Where the reply carrying `id` goes; frees the slot of a call it
    /// ends.
    pub(crate) fn route(&mut self, id: u64) -> Route {
        let ticket = Ticket::from_id(id);
        let Some(slot) = self.slots.get_mut(ticket.index() as usize) else {
            return Route::Unknown;
        };
        if slot.generation == ticket.generation() {
            match slot.state {
                State::Live => {
                    self.live -= 1;
                    self.free_slot(ticket.index());
                    return Route::Deliver(ticket);
                }
                State::Abandoned => {
                    self.abandoned -= 1;
                    self.free_slot(ticket.index());
                    return Route::Discard;
                }
                State::Free => return Route::Unknown,
            }
        }
        if slot.stale == Some(ticket.generation()) {
            slot.stale = None;
            self.abandoned -= 1;
            return Route::Discard;
        }
        Route::Unknown
    }

    /// Ends every call (the server is gone): the table is empty after.
    pub(crate) fn fail_all(&mut self) {
        self.free.clear();
        for (index, slot) in self.slots.iter_mut().enumerate().rev() {
            if slot.state != State::Free {
                slot.generation = next_generation(slot.generation);
            }
            slot.state = State::Free;
            slot.stale = None;
            self.free.push(index as u32);
        }
        self.live = 0;
        self.abandoned = 0;
    }

    fn free_slot(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.state = State::Free;
        // The answered id must never match again.
        slot.generation = next_generation(slot.generation);
        // Never more than `capacity` entries: no reallocation.
        self.free.push(index);
    }
}

/// The generation after `g`, skipping 0 (so no id is ever below 2^32).
/// Wraps after 2^32 - 1 reuses of one slot: a reply held back that long
/// could match again, the one limit of the scheme.
fn next_generation(g: u32) -> u32 {
    g.checked_add(1).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_live_once_and_abandoned_replies_are_discarded() {
        let mut t = Table::new(2);
        let a = t.issue().unwrap();
        let b = t.issue().unwrap();
        assert_ne!(a, b);
        assert_eq!(t.issue(), None, "two slots, two live calls");
        assert_eq!(t.route(b.id()), Route::Deliver(b));
        assert_eq!(t.route(b.id()), Route::Unknown, "a repeat");
        assert!(t.abandon(a));
        assert!(!t.abandon(a));
        assert_eq!(t.route(a.id()), Route::Discard);
        assert_eq!(
            t.route(a.id()),
            Route::Unknown,
            "a repeat of a discarded one"
        );
        assert_eq!(t.route(u64::MAX), Route::Unknown, "out of range");
        assert_eq!(t.route(0), Route::Unknown, "generation 0 is never issued");
        assert_eq!((t.live(), t.abandoned()), (0, 0));
    }

    #[test]
    fn a_full_table_reuses_abandoned_slots_and_still_discards_their_replies() {
        let mut t = Table::new(1);
        let a = t.issue().unwrap();
        t.abandon(a);
        let b = t.issue().unwrap();
        assert_eq!(a.index(), b.index());
        assert_ne!(a, b);
        assert_eq!(t.route(a.id()), Route::Discard);
        assert_eq!(t.route(a.id()), Route::Unknown);
        assert_eq!(t.route(b.id()), Route::Deliver(b));
    }

    /// The reviewer's case: one slot abandoned twice. The first abandoned
    /// id must not be forgotten (its late reply from a correct server
    /// would be taken for a forgery), so the slot is not reused a second
    /// time while that id is unanswered.
    #[test]
    fn a_slot_is_not_reused_while_it_remembers_an_unanswered_abandoned_id() {
        let mut t = Table::new(1);
        let a = t.issue().unwrap();
        assert!(t.abandon(a));
        let b = t.issue().unwrap();
        assert!(t.abandon(b));
        assert_eq!(t.abandoned(), 2);
        assert_eq!(t.issue(), None, "reusing it again would forget `a`");
        assert_eq!(t.route(a.id()), Route::Discard, "a's late reply");
        assert_eq!(t.route(a.id()), Route::Unknown, "a replay of it");
        let c = t.issue().unwrap();
        assert_eq!(t.route(b.id()), Route::Discard, "b's late reply");
        assert_eq!(t.route(b.id()), Route::Unknown, "a replay of it");
        assert_eq!(t.route(c.id()), Route::Deliver(c));
        assert_eq!((t.live(), t.abandoned()), (0, 0));
    }

    /// Late replies in either order, over many abandon/reuse rounds of a
    /// full table: every id a correct server answers once is Discard (or
    /// Deliver), never Unknown, and the counts come back to zero.
    #[test]
    fn every_abandoned_id_is_discarded_once_whatever_the_reuse() {
        let mut t = Table::new(2);
        let mut unanswered = Vec::new();
        for round in 0..50 {
            // Bounded, so a table that reuses slots forever fails here
            // instead of looping.
            for _ in 0..=2 * t.capacity() {
                let Some(ticket) = t.issue() else { break };
                assert!(t.abandon(ticket));
                unanswered.push(ticket);
            }
            assert!(unanswered.len() <= 2 * t.capacity(), "round {round}");
            assert_eq!(t.issue(), None, "round {round}: full");
            // The server answers some of them, oldest or newest first.
            let answered = if round % 2 == 0 {
                unanswered.remove(0)
            } else {
                unanswered.pop().unwrap()
            };
            assert_eq!(t.route(answered.id()), Route::Discard, "round {round}");
            assert_eq!(t.route(answered.id()), Route::Unknown, "round {round}");
        }
        for ticket in unanswered {
            assert_eq!(t.route(ticket.id()), Route::Discard);
        }
        assert_eq!((t.live(), t.abandoned()), (0, 0));
    }

    #[test]
    fn fail_all_empties_the_table_and_retires_every_id() {
        let mut t = Table::new(3);
        let a = t.issue().unwrap();
        let b = t.issue().unwrap();
        t.abandon(b);
        t.fail_all();
        assert_eq!((t.live(), t.abandoned()), (0, 0));
        assert_eq!(t.route(a.id()), Route::Unknown);
        assert_eq!(t.route(b.id()), Route::Unknown);
        let issued: Vec<_> = (0..3).map(|_| t.issue().unwrap()).collect();
        assert!(!issued.contains(&a) && !issued.contains(&b));
        assert_eq!(t.issue(), None);
    }
}
