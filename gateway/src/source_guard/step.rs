//! The source guard's sync core: claims in, map writes out (`Write`), and violation counts
//! in, alerts out. `controller::source_guard` runs it and applies the writes.
use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use super::{
    Config,
    bindings::{Bindings, Outcome, Source},
    claims::{self, Claim},
    violations::{Violation, Violations},
};
use crate::{datapath::events::PacketSample, detect::Alert, device::Mac};

/// A change `SOURCE_BINDINGS_V4` or `SOURCE_BINDINGS_V6` must take (by the address's family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Bind { address: IpAddr, mac: Mac },
    Unbind { address: IpAddr },
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
    pub fn new(config: Config, pinned: &[(IpAddr, Mac)], now: Instant) -> (Self, Vec<Write>) {
        let mut bindings = Bindings::new(Duration::from_secs(config.binding_secs), config.max_addresses_per_device);
        let mut writes = Vec::new();
        for &(address, mac) in pinned {
            // Beyond a lowered `max_addresses_per_device`, or no longer bindable: the map
            // forgets it too, so it holds nothing the table does not.
            if !bindings.observe(mac, address, Source::Claim, now).changes_holder() {
                writes.push(Write::Unbind { address });
            }
        }
        for binding in &config.static_bindings {
            if bindings.observe(binding.mac, binding.address, Source::Static, now).changes_holder() {
                writes.push(Write::Bind { address: binding.address, mac: binding.mac });
            }
        }
        (Self { config, bindings, violations: Violations::default() }, writes)
    }

    /// Takes in one sample's claims, if it makes any; returns the writes they need (with
    /// those of the probed addresses that settled meanwhile).
    pub fn observe(&mut self, sample: &PacketSample, now: Instant) -> Vec<Write> {
        let mut writes = self.settle(now);
        let claims = claims::from_sample(sample, &self.config.dhcp_servers, &self.config.dhcpv6_servers);
        writes.extend(claims.into_iter().filter_map(|claim| self.take(claim, now)));
        writes
    }

    /// The probed addresses nobody defended within `bindings::PROBE_WAIT`, to bind.
    pub fn settle(&mut self, now: Instant) -> Vec<Write> {
        let settled = self.bindings.settle(now);
        for (address, mac) in &settled {
            tracing::debug!(%address, device = %mac, "probed source address bound");
        }
        settled.into_iter().map(|(address, mac)| Write::Bind { address, mac }).collect()
    }

    fn take(&mut self, claim: Claim, now: Instant) -> Option<Write> {
        match claim {
            Claim::Holds { mac, address, source } => self.holds(mac, address, source, now),
            Claim::Releases { mac, address } => {
                self.bindings.release(mac, address).then_some(Write::Unbind { address })
            }
            Claim::Probes { mac, address } => {
                if let Outcome::Refused { holder } = self.bindings.probe(mac, address, now) {
                    tracing::debug!(%address, device = %mac, %holder, "probe for an address another device holds");
                }
                None
            }
            Claim::Lease { to, duid_mac, address, ended } => {
                // The client is whoever holds the address the REPLY went to.
                let Some(client) = self.bindings.holder(to.into()).or(duid_mac) else {
                    tracing::debug!(%address, %to, "DHCPv6 lease to a client holding no address; not bound");
                    return None;
                };
                let address = IpAddr::V6(address);
                if ended {
                    return self.bindings.release(client, address).then_some(Write::Unbind { address });
                }
                self.holds(client, address, Source::DhcpLease, now)
            }
        }
    }

    fn holds(&mut self, mac: Mac, address: IpAddr, source: Source, now: Instant) -> Option<Write> {
        let outcome = self.bindings.observe(mac, address, source, now);
        match outcome {
            Outcome::Moved { from } => {
                tracing::info!(%address, device = %mac, %from, ?source, "source address moved to another device");
            }
            Outcome::Refused { holder } => {
                tracing::debug!(%address, device = %mac, %holder, ?source, "source address held by another device; claim refused");
            }
            Outcome::OverLimit => {
                tracing::debug!(%address, device = %mac, limit = self.config.max_addresses_per_device, "device holds its most addresses; claim not bound");
            }
            Outcome::Bound => tracing::debug!(%address, device = %mac, ?source, "source address bound"),
            Outcome::Renewed | Outcome::Ignored | Outcome::Tentative => {}
        }
        outcome.changes_holder().then_some(Write::Bind { address, mac })
    }

    /// The bindings that lapsed by `now`, to remove from the map, and the probed addresses
    /// that settled, to add.
    pub fn expire(&mut self, now: Instant) -> Vec<Write> {
        let mut writes: Vec<Write> =
            self.bindings.expire(now).into_iter().map(|address| Write::Unbind { address }).collect();
        writes.extend(self.settle(now));
        writes
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
    use std::net::Ipv6Addr;

    use super::*;
    use crate::source_guard::StaticBinding;

    const A: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
    const B: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);
    const FIXED: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 2));

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

    /// A DHCPv6 REPLY from `server` (its link-local address) to `to`, leasing `address`.
    fn reply(server: Mac, to: Ipv6Addr, address: Ipv6Addr, valid_life: u32) -> PacketSample {
        let server_link_local = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x53);
        let reply = dhcproto::v6::MessageType::Reply;
        crate::source_guard::claims::tests::dhcpv6_leasing(server, server_link_local, to, reply, address, valid_life)
    }

    #[test]
    fn a_dhcpv6_lease_goes_to_whoever_holds_the_address_the_reply_is_sent_to() {
        const SERVER: Mac = Mac([0x02, 0, 0, 0, 0, 0x53]);
        let (a_link_local, b_link_local) =
            (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x0a), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x0b));
        let leased = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x50);
        let config = Config { dhcpv6_servers: vec![SERVER], ..Config::default() };
        let now = Instant::now();
        let pinned = [(a_link_local.into(), A), (b_link_local.into(), B)];
        let (mut guard, _) = Guard::new(config, &pinned, now);
        let server_link_local = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x53));
        let bind = |address: Ipv6Addr, mac| Write::Bind { address: address.into(), mac };
        assert_eq!(
            guard.observe(&reply(SERVER, a_link_local, leased, 3_600), now),
            [Write::Bind { address: server_link_local, mac: SERVER }, bind(leased, A)]
        );
        assert_eq!(guard.observe(&reply(SERVER, b_link_local, leased, 3_600), now), [bind(leased, B)], "moved");
        let unknown = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x0c);
        assert_eq!(guard.observe(&reply(SERVER, unknown, leased, 3_600), now), [], "a client holding nothing");
        assert_eq!(
            guard.observe(&reply(SERVER, b_link_local, leased, 0), now),
            [Write::Unbind { address: leased.into() }],
            "lifetime 0: the server took it back"
        );
    }

    #[test]
    fn pinned_bindings_beyond_the_limit_leave_the_map() {
        let pinned: Vec<(IpAddr, Mac)> =
            (1..=3).map(|n| (IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n)), A)).collect();
        let config = Config { max_addresses_per_device: 2, ..Config::default() };
        let (guard, writes) = Guard::new(config, &pinned, Instant::now());
        assert_eq!(guard.bound(), 2);
        assert_eq!(writes.len(), 1);
        assert!(matches!(writes[0], Write::Unbind { .. }));
    }

    #[test]
    fn pinned_bindings_lapse_unless_renewed() {
        let now = Instant::now();
        let (mut guard, _) = Guard::new(Config { binding_secs: 60, ..Config::default() }, &[(FIXED, B)], now);
        assert!(guard.expire(now + Duration::from_secs(59)).is_empty());
        assert_eq!(guard.expire(now + Duration::from_secs(60)), [Write::Unbind { address: FIXED }]);
    }
}
