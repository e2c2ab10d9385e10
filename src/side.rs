//! Which end of a channel set this process is, and which way a ring flows:
//! one spelling for both transports.

/// The two ends of a segment or FIFO set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Made it: the parent (`Spawner`) or `Segment::create`.
    Creator,
    /// Attached to it: the child (`connect`) or `Segment::open`.
    Opener,
}

/// The way one ring (or pipe) of a channel flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the creator (parent) to the opener (child).
    ToOpener,
    /// From the opener (child) to the creator (parent).
    ToCreator,
}

impl Side {
    /// The direction this side sends in.
    pub(crate) fn outgoing(self) -> Direction {
        match self {
            Side::Creator => Direction::ToOpener,
            Side::Opener => Direction::ToCreator,
        }
    }

    /// The direction this side receives from.
    pub(crate) fn incoming(self) -> Direction {
        match self {
            Side::Creator => Direction::ToCreator,
            Side::Opener => Direction::ToOpener,
        }
    }
}

impl Direction {
    /// Index of this direction's ring in a channel descriptor.
    pub(crate) fn index(self) -> usize {
        match self {
            Direction::ToOpener => 0,
            Direction::ToCreator => 1,
        }
    }

    /// The other direction of the same channel.
    pub(crate) fn reverse(self) -> Direction {
        match self {
            Direction::ToOpener => Direction::ToCreator,
            Direction::ToCreator => Direction::ToOpener,
        }
    }

    /// How errors name it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Direction::ToOpener => "parent-to-child",
            Direction::ToCreator => "child-to-parent",
        }
    }
}
