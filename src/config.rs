//! What a channel is declared with, and the rules every transport applies to
//! a set of declarations (one place, one set of messages).

use crate::error::OpenError;
use crate::layout::{MAX_CHANNELS, MAX_NAME_LEN};
use crate::ring::{MAX_CAPACITY, MIN_CAPACITY};
use crate::wait::WaitStrategy;

/// Default ring capacity per direction: 1 MiB (largest message 512 KiB − 16).
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// A channel to declare: on a [`Spawner`](crate::Spawner) (either
/// transport) or in a new [`Segment`](crate::Segment).
///
/// ```
/// let cfg = remora::ChannelConfig::new("echo").capacity(64 * 1024);
/// assert_eq!(cfg.max_message(), 32 * 1024 - 16);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    name: String,
    pub(crate) capacity: usize,
    pub(crate) wait: WaitStrategy,
}

impl ChannelConfig {
    /// A channel named `name` with [`DEFAULT_CAPACITY`] per direction.
    pub fn new(name: impl Into<String>) -> Self {
        ChannelConfig {
            name: name.into(),
            capacity: DEFAULT_CAPACITY,
            wait: WaitStrategy::default(),
        }
    }

    /// Sets the wait strategy both sides' ends of this channel start with
    /// (each side can still change its own ends later).
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.wait = strategy;
        self
    }

    /// Sets the ring capacity of each direction in bytes: a power of two
    /// from 64 B to 2 GiB. The largest message is half of it minus 16.
    ///
    /// The capacity is what a sender may buffer while the receiver keeps
    /// up: each message takes a 16-byte header plus its length rounded up
    /// to 16, and a message that does not fit before the end of the ring
    /// goes to its start, leaving the bytes it skipped unused until the
    /// receiver gets there (less than one message). A send that finds the
    /// ring empty may go back to its start early, so that a request/reply
    /// exchange keeps reusing a few cached lines; that costs no capacity:
    /// an empty ring takes as many messages whatever was sent before.
    ///
    /// ```
    /// let cfg = remora::ChannelConfig::new("bulk").capacity(1 << 20);
    /// assert_eq!(cfg.max_message(), (1 << 19) - 16);
    /// ```
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The largest encoded message this configuration carries.
    /// (0 for a capacity too small to be accepted).
    pub fn max_message(&self) -> usize {
        (self.capacity / 2).saturating_sub(crate::ring::FRAME_HEADER)
    }
}

/// Checks a set of declarations: 1 to [`MAX_CHANNELS`] channels, names of 1
/// to [`MAX_NAME_LEN`] bytes, no name twice, capacities powers of two from
/// [`MIN_CAPACITY`] to [`MAX_CAPACITY`].
pub(crate) fn validate(channels: &[ChannelConfig]) -> Result<(), OpenError> {
    let invalid = |reason: String| Err(OpenError::InvalidConfig { reason });
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return invalid(format!(
            "{} channels declared; 1 to {MAX_CHANNELS} are allowed",
            channels.len()
        ));
    }
    for (i, c) in channels.iter().enumerate() {
        if c.name.is_empty() || c.name.len() > MAX_NAME_LEN {
            return invalid(format!(
                "channel name {:?} must be 1 to {MAX_NAME_LEN} bytes",
                c.name
            ));
        }
        if channels[..i].iter().any(|d| d.name == c.name) {
            return invalid(format!("channel {:?} declared twice", c.name));
        }
        if !c.capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&c.capacity) {
            return invalid(format!(
                "channel {:?}: capacity {} must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}",
                c.name, c.capacity
            ));
        }
    }
    Ok(())
}
