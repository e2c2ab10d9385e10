//! Turning the spawner's [`ChannelConfig`]s into FIFO channel specs, with
//! the same rules (and messages) a segment applies.

use super::manifest::ChannelSpec;
use crate::error::OpenError;
use crate::layout::{MAX_CHANNELS, MAX_NAME_LEN};
use crate::ring::{MAX_CAPACITY, MIN_CAPACITY};
use crate::segment::ChannelConfig;
use crate::wait::WaitStrategy;

/// Validates `configs` and returns their specs.
pub(super) fn plan(configs: &[ChannelConfig]) -> Result<Vec<ChannelSpec>, OpenError> {
    let invalid = |reason: String| OpenError::InvalidConfig { reason };
    if configs.is_empty() || configs.len() > MAX_CHANNELS {
        return Err(invalid(format!(
            "{} channels declared; a spawner holds 1 to {MAX_CHANNELS}",
            configs.len()
        )));
    }
    let mut specs: Vec<ChannelSpec> = Vec::with_capacity(configs.len());
    for c in configs {
        let name = c.name();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "channel name {name:?} must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        if specs.iter().any(|s| s.name == name) {
            return Err(invalid(format!("channel {name:?} declared twice")));
        }
        let (capacity, wait) = capacity_and_wait(c).ok_or_else(|| {
            invalid(format!(
                "channel {name:?}: capacity must be a power of two from {MIN_CAPACITY} to {MAX_CAPACITY}"
            ))
        })?;
        specs.push(ChannelSpec {
            name: name.to_owned(),
            capacity,
            wait,
        });
    }
    Ok(specs)
}

/// The capacity and wait strategy of `c`, if the capacity is valid (the
/// same rule a segment applies).
fn capacity_and_wait(c: &ChannelConfig) -> Option<(usize, WaitStrategy)> {
    let valid = c.capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&c.capacity);
    valid.then_some((c.capacity, c.wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_capacity_and_strategy() {
        let c = ChannelConfig::new("x")
            .capacity(1 << 12)
            .wait_strategy(WaitStrategy::Spin);
        assert_eq!(capacity_and_wait(&c), Some((4096, WaitStrategy::Spin)));
        let c = ChannelConfig::new("y");
        assert_eq!(
            capacity_and_wait(&c),
            Some((crate::DEFAULT_CAPACITY, WaitStrategy::Adaptive))
        );
    }

    #[test]
    fn rejects_what_a_segment_rejects() {
        let bad = [
            vec![],
            vec![ChannelConfig::new("x").capacity(1000)],
            vec![ChannelConfig::new("x").capacity(32)],
            vec![ChannelConfig::new("x").capacity(8)],
            vec![ChannelConfig::new("")],
            vec![ChannelConfig::new("x".repeat(49))],
            vec![ChannelConfig::new("x"), ChannelConfig::new("x")],
        ];
        for cfg in bad {
            assert!(
                matches!(plan(&cfg), Err(OpenError::InvalidConfig { .. })),
                "{cfg:?}"
            );
        }
    }
}
