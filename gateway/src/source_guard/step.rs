//! The source guard's sync core: claims in, map writes out (`Write`), and violation counts
//! in, alerts out. `controller::source_guard` runs it and applies the writes.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant, SystemTime},
};

use super::{
    Config,
    bindings::{Bindings, Outcome, Source},
    claims::{self, Claim},
    violations::{Violation, Violations},
};
use crate::{datapath::events::PacketSample, detect::Alert, device::Mac};

/// A change `SOURCE_BINDINGS_V4` must take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Bind { address: Ipv4Addr, mac: Mac },
    Unbind { address: Ipv4Addr },
}

/// The binding table and the violation counts, with the configuration they follow.
pub struct Guard {
    config: Config,
    bindings: Bindings,
    violations: Violations,
}

impl Guard {
    /// Starts from the bindings a previous controller left in the map (taken as claims made
    /// now: they lapse unless renewed) and the configured static ones (which win any
    /// conflict with them). Returns the writes that make the map match.
    pub fn new(config: Config, pinned: &[(Ipv4Addr, Mac)], now: Instant) -> (Self, Vec<Write>) {
        let mut bindings = Bindings::new(Duration::from_secs(config.binding_secs));
        for &(address, mac) in pinned {
            bindings.observe(mac, address, Source::Claim, now);
        }
        let mut writes = Vec::new();
        for binding in &config.static_bindings {
            if bindings.observe(binding.mac, binding.address, Source::Static, now).changes_holder() {
                writes.push(Write::Bind { address: binding.address, mac: binding.mac });
            }
        }
        (Self { config, bindings, violations: Violations::default() }, writes)
    }

    /// Takes in one sample's claim, if it makes one; returns the write it needs.
    pub fn observe(&mut self, sample: &PacketSample, now: Instant) -> Option<Write> {
        match claims::from_sample(sample, &self.config.dhcp_servers)? {
            Claim::Holds { mac, address, source } => {
                let outcome = self.bindings.observe(mac, address, source, now);
                match outcome {
                    Outcome::Moved { from } => {
                        tracing::info!(%address, device = %mac, %from, ?source, "source address moved to another device");
                    }
                    Outcome::Refused { holder } => {
                        tracing::debug!(%address, device = %mac, %holder, ?source, "source address held by another device; claim refused");
                    }
                    Outcome::Bound => tracing::debug!(%address, device = %mac, ?source, "source address bound"),
                    Outcome::Renewed | Outcome::Ignored => {}
                }
                outcome.changes_holder().then_some(Write::Bind { address, mac })
            }
            Claim::Releases { mac, address } => {
                self.bindings.release(mac, address).then_some(Write::Unbind { address })
            }
        }
    }

    /// The bindings that lapsed by `now`, to remove from the map.
    pub fn expire(&mut self, now: Instant) -> Vec<Write> {
        self.bindings.expire(now).into_iter().map(|address| Write::Unbind { address }).collect()
    }

    /// The alerts for the devices that spoofed since the last check.
    pub fn check(&mut self, read: &[Violation], now: SystemTime) -> Vec<Alert> {
        let interval = Duration::from_secs(self.config.alert_interval_secs);
        self.violations.check(read, &self.bindings, self.config.mode, interval, now)
    }

    /// Addresses bound now.
    pub fn bound(&self) -> usize {
        self.bindings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source_guard::StaticBinding;

    const A: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
    const B: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);
    const FIXED: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    #[test]
    fn static_bindings_take_their_address_from_a_pinned_binding() {
        let config = Config { static_bindings: vec![StaticBinding { mac: A, address: FIXED }], ..Config::default() };
        let (guard, writes) = Guard::new(config, &[(FIXED, B)], Instant::now());
        assert_eq!(writes, [Write::Bind { address: FIXED, mac: A }]);
        assert_eq!(guard.bound(), 1);
        let config = Config { static_bindings: vec![StaticBinding { mac: A, address: FIXED }], ..Config::default() };
        let (_, writes) = Guard::new(config, &[(FIXED, A)], Instant::now());
        assert!(writes.is_empty(), "the map already holds it");
    }

    #[test]
    fn pinned_bindings_lapse_unless_renewed() {
        let now = Instant::now();
        let (mut guard, _) = Guard::new(Config { binding_secs: 60, ..Config::default() }, &[(FIXED, B)], now);
        assert!(guard.expire(now + Duration::from_secs(59)).is_empty());
        assert_eq!(guard.expire(now + Duration::from_secs(60)), [Write::Unbind { address: FIXED }]);
    }
}
