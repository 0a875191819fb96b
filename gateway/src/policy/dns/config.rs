//! `[policy.dns]` of the gateway configuration: how long a device's DNS query waits for its
//! answer, how many queries are remembered, and how long an answered address stays open.
//! The same rules hold for answers from upstream and from a resolver on the gateway itself
//! (sampled on the LAN interface's egress; nothing to configure: the gateway's addresses are
//! its LAN interface's and `[policy] gateway_addresses`, and only tell the two apart in
//! `/metrics`).
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// An answer counts only when it arrives within this many milliseconds of its query (stub
    /// resolvers give up after a few seconds and ask again).
    pub query_timeout_ms: u64,
    /// Shortest life of an answered address, in seconds: a device usually connects a moment
    /// after its answer arrives, and a TTL of 0-5 s (common on CDNs) must not close the door
    /// before it does.
    pub ttl_floor_secs: u64,
    /// Longest life (the TTL cap), in seconds: stale addresses age out even when an answer
    /// claims a TTL of days or years.
    pub ttl_ceiling_secs: u64,
    /// Queries remembered per device; a device asking more forgets its oldest (counted).
    pub max_pending_per_device: usize,
    /// Queries remembered over all devices; beyond this the oldest is forgotten (counted).
    pub max_pending: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            query_timeout_ms: 5_000,
            ttl_floor_secs: 30,
            ttl_ceiling_secs: 3_600,
            max_pending_per_device: 64,
            max_pending: 8_192,
        }
    }
}

/// Longest `query_timeout_ms` accepted: a minute is already far beyond any stub resolver's.
const MAX_QUERY_TIMEOUT_MS: u64 = 60_000;
/// Longest `ttl_ceiling_secs` accepted: a week.
const MAX_TTL_CEILING_SECS: u64 = 7 * 24 * 3_600;

impl DnsConfig {
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    pub fn ttl_floor(&self) -> Duration {
        Duration::from_secs(self.ttl_floor_secs)
    }

    pub fn ttl_ceiling(&self) -> Duration {
        Duration::from_secs(self.ttl_ceiling_secs)
    }

    /// Every semantic problem of the `[policy.dns]` section.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=MAX_QUERY_TIMEOUT_MS).contains(&self.query_timeout_ms) {
            problems.push(format!(
                "policy.dns.query_timeout_ms = {} must be within 1..={MAX_QUERY_TIMEOUT_MS}",
                self.query_timeout_ms
            ));
        }
        if !(1..=MAX_TTL_CEILING_SECS).contains(&self.ttl_ceiling_secs) {
            problems.push(format!(
                "policy.dns.ttl_ceiling_secs = {} must be within 1..={MAX_TTL_CEILING_SECS}",
                self.ttl_ceiling_secs
            ));
        }
        if self.ttl_floor_secs > self.ttl_ceiling_secs {
            problems.push(format!(
                "policy.dns.ttl_floor_secs = {} must not be above ttl_ceiling_secs = {}",
                self.ttl_floor_secs, self.ttl_ceiling_secs
            ));
        }
        if self.max_pending_per_device == 0 || self.max_pending_per_device > self.max_pending {
            problems.push(format!(
                "policy.dns.max_pending_per_device = {} must be within 1..=max_pending ({})",
                self.max_pending_per_device, self.max_pending
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_every_bad_value_is_reported() {
        assert!(DnsConfig::default().problems().is_empty());
        let bad = DnsConfig {
            query_timeout_ms: 0,
            ttl_floor_secs: 90,
            ttl_ceiling_secs: 60,
            max_pending_per_device: 100,
            max_pending: 10,
        };
        assert_eq!(bad.problems().len(), 3, "{:?}", bad.problems());
        let years = DnsConfig { ttl_ceiling_secs: 10 * 365 * 86_400, ..DnsConfig::default() };
        assert_eq!(years.problems().len(), 1);
    }
}
