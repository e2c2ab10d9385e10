//! The client's in-flight table: which correlation ids are live, which were
//! abandoned (their late replies are discarded), and which were never
//! issued or already answered (their replies are protocol violations).
//!
//! An id is `slot | generation << 32`. A slot's generation moves on each
//! time it is freed, so an id is live at most once: a repeat or replay of
//! an answered id no longer matches. Everything is allocated in `new`; no
//! operation allocates.

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
    /// once. Only the latest one is remembered.
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

    /// Calls abandoned whose reply has not come.
    pub(crate) fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Makes a new live call, or `None` if every slot holds a live call.
    /// A free slot is taken first; if there is none, an abandoned one is
    /// reused (its old id is remembered as stale, so its late reply is
    /// still discarded silently).
    pub(crate) fn issue(&mut self) -> Option<Ticket> {
        let index = match self.free.pop() {
            Some(index) => index,
            None if self.abandoned > 0 => {
                let index = self
                    .slots
                    .iter()
                    .position(|s| s.state == State::Abandoned)?;
                let slot = &mut self.slots[index];
                slot.stale = Some(slot.generation);
                slot.generation = next_generation(slot.generation);
                self.abandoned -= 1;
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
