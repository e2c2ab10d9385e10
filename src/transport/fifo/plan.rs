//! Turning the spawner's [`ChannelConfig`]s into FIFO channel specs, with
//! the rules (and messages) every transport applies.

use super::manifest::ChannelSpec;
use crate::config::{self, ChannelConfig};
use crate::error::OpenError;

/// Validates `configs` (see [`config::validate`]) and returns their specs.
pub(super) fn plan(configs: &[ChannelConfig]) -> Result<Vec<ChannelSpec>, OpenError> {
    config::validate(configs)?;
    Ok(configs
        .iter()
        .map(|c| ChannelSpec {
            name: c.name().to_owned(),
            capacity: c.capacity,
            wait: c.wait,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_capacity_and_strategy() {
        let specs = plan(&[ChannelConfig::new("x")
            .capacity(1 << 12)
            .wait_strategy(crate::WaitStrategy::Spin)])
        .unwrap();
        assert_eq!(specs[0].capacity, 4096);
        assert_eq!(specs[0].wait, crate::WaitStrategy::Spin);
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
