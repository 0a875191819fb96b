//! The binding table: which device holds each IPv4 and IPv6 address, and on what
//! authority. A sync core: `observe` takes one claim and says what changed; `expire` lapses
//! learnt bindings. Writes nothing itself (`controller::source_guard` writes the maps).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use crate::device::Mac;

/// On what authority a device holds an address, weakest first: a stronger source takes an
/// address from a weaker one's holder, never the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The device said so itself, first come first served: an ARP with its own MAC as sender,
    /// a DHCP REQUEST, a neighbour solicitation or advertisement (duplicate address
    /// detection's included), a DHCPv6 request from the address.
    Claim,
    /// A trusted DHCP or DHCPv6 server's ACK or REPLY gave it the address.
    DhcpLease,
    /// `[[source_guard.static]]`.
    Static,
}

/// What one observation did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The address was free (or its binding had lapsed): now the device's.
    Bound,
    /// The device already held it: its binding lasts longer.
    Renewed,
    /// A stronger source moved the address from `from` (a lease given to another device).
    Moved { from: Mac },
    /// Another device holds it on an authority this observation does not outrank: nothing
    /// changed (two devices claiming one address is a conflict or an attack, not a move).
    Refused { holder: Mac },
    /// The device already holds `max_per_device` addresses: a claim of one more binds
    /// nothing (a device inventing addresses cannot fill the map).
    OverLimit,
    /// A duplicate address detection probe for a free address: bound to the prober once
    /// `PROBE_WAIT` passed without another device using or defending it (`settle`).
    Tentative,
    /// Not an address a device can hold (unspecified, broadcast, multicast, loopback,
    /// IPv4-mapped).
    Ignored,
}

impl Outcome {
    /// Whether the map must be written (the address now points at the observing device).
    pub fn changes_holder(self) -> bool {
        matches!(self, Outcome::Bound | Outcome::Moved { .. })
    }
}

#[derive(Clone, Copy, Debug)]
struct Binding {
    mac: Mac,
    source: Source,
    renewed: Instant,
}

/// Whether a device can hold `address` as its own. `::` (duplicate address detection) and
/// 0.0.0.0 (a DHCP client) are every device's, so never bound; link-local addresses are bound
/// like any other (RFC 6620 §2.2).
pub fn is_bindable(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_bindable_v4(v4),
        IpAddr::V6(v6) => {
            !(v6.is_unspecified() || v6.is_multicast() || v6.is_loopback() || v6.to_ipv4_mapped().is_some())
        }
    }
}

fn is_bindable_v4(address: Ipv4Addr) -> bool {
    !(address.is_unspecified() || address.is_broadcast() || address.is_multicast() || address.is_loopback())
}

/// How long a probed address stays tentative: duplicate address detection waits a
/// RetransTimer (1 s) per probe for a defence, one probe by default (RFC 4862 §5.1, RFC 4861
/// §10), and the defending advertisement takes a sample's trip to arrive.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Address → holder.
#[derive(Debug)]
pub struct Bindings {
    by_address: HashMap<IpAddr, Binding>,
    /// Addresses probed by duplicate address detection and not yet bound: address → the
    /// prober and when (FCFS SAVI's tentative state, RFC 6620 §2.3.2). A device defending the
    /// address (its advertisement is a claim of it) takes it instead, so a probe cannot take
    /// an idle device's address from it.
    tentative: HashMap<IpAddr, (Mac, Instant)>,
    /// Addresses each device holds, on any authority.
    held: HashMap<Mac, usize>,
    lifetime: Duration,
    max_per_device: usize,
}

impl Bindings {
    /// An empty table whose learnt bindings last `lifetime` without a renewal, and whose
    /// devices claim at most `max_per_device` addresses each (leases and static bindings
    /// count towards it but are never refused).
    pub fn new(lifetime: Duration, max_per_device: usize) -> Self {
        Self { by_address: HashMap::new(), tentative: HashMap::new(), held: HashMap::new(), lifetime, max_per_device }
    }

    /// `mac` probes `address` (duplicate address detection) at `now`: a free address becomes
    /// tentative, the first prober's; one it already holds is renewed, another's refused.
    pub fn probe(&mut self, mac: Mac, address: IpAddr, now: Instant) -> Outcome {
        if !is_bindable(address) {
            return Outcome::Ignored;
        }
        if let Some(held) = self.by_address.get_mut(&address) {
            if held.mac == mac {
                held.renewed = now;
                return Outcome::Renewed;
            }
            // A lapsed binding's holder may still be there: it defends, or the probe wins.
            if held.source == Source::Static || now.duration_since(held.renewed) < self.lifetime {
                return Outcome::Refused { holder: held.mac };
            }
        }
        if self.tentative.contains_key(&address) {
            // Two probers at once: both fail duplicate address detection; the first stays.
            return Outcome::Tentative;
        }
        if self.claimed(mac) >= self.max_per_device {
            return Outcome::OverLimit;
        }
        self.tentative.insert(address, (mac, now));
        Outcome::Tentative
    }

    /// Binds the tentative addresses whose probe went undefended for `PROBE_WAIT`; returns
    /// them with their new holder.
    pub fn settle(&mut self, now: Instant) -> Vec<(IpAddr, Mac)> {
        let settled: Vec<(IpAddr, Mac)> = self
            .tentative
            .iter()
            .filter(|(_, (_, probed))| now.duration_since(*probed) >= PROBE_WAIT)
            .map(|(address, (mac, _))| (*address, *mac))
            .collect();
        settled
            .into_iter()
            .filter(|&(address, mac)| {
                self.tentative.remove(&address);
                self.observe(mac, address, Source::Claim, now).changes_holder()
            })
            .collect()
    }

    /// `mac` holds `address` on `source`'s authority, seen at `now`.
    pub fn observe(&mut self, mac: Mac, address: IpAddr, source: Source, now: Instant) -> Outcome {
        if !is_bindable(address) {
            return Outcome::Ignored;
        }
        // A tentative address used or defended, by its prober or another device: this claim
        // decides.
        self.tentative.remove(&address);
        let fresh = Binding { mac, source, renewed: now };
        let over_limit = source == Source::Claim && self.claimed(mac) >= self.max_per_device;
        let Some(held) = self.by_address.get_mut(&address) else {
            if over_limit {
                return Outcome::OverLimit;
            }
            self.insert(address, fresh);
            return Outcome::Bound;
        };
        if held.mac == mac {
            held.source = held.source.max(source);
            held.renewed = now;
            return Outcome::Renewed;
        }
        let lapsed = held.source != Source::Static && now.duration_since(held.renewed) >= self.lifetime;
        // A server's lease outranks a claim, and a newer lease the older one: the server
        // gave the address to another device. A static binding is the operator's.
        let outranked = source > held.source || (source == Source::DhcpLease && held.source == Source::DhcpLease);
        if !(lapsed || outranked) {
            return Outcome::Refused { holder: held.mac };
        }
        if over_limit {
            return Outcome::OverLimit;
        }
        let from = self.remove(address).map(|b| b.mac);
        self.insert(address, fresh);
        match from {
            Some(from) if !lapsed => Outcome::Moved { from },
            _ => Outcome::Bound,
        }
    }

    /// `mac` gave `address` up (a DHCP RELEASE): unbound if it held it on a learnt authority.
    pub fn release(&mut self, mac: Mac, address: IpAddr) -> bool {
        let releasable = self.by_address.get(&address).is_some_and(|b| b.mac == mac && b.source != Source::Static);
        if releasable {
            self.remove(address);
        }
        releasable
    }

    /// Removes the learnt bindings nobody renewed within the lifetime; returns their addresses.
    pub fn expire(&mut self, now: Instant) -> Vec<IpAddr> {
        let lifetime = self.lifetime;
        let lapsed: Vec<IpAddr> = self
            .by_address
            .iter()
            .filter(|(_, b)| b.source != Source::Static && now.duration_since(b.renewed) >= lifetime)
            .map(|(address, _)| *address)
            .collect();
        for address in &lapsed {
            self.remove(*address);
        }
        lapsed
    }

    /// Who holds `address`.
    pub fn holder(&self, address: IpAddr) -> Option<Mac> {
        self.by_address.get(&address).map(|b| b.mac)
    }

    /// The addresses `mac` holds, in order (IPv4 first).
    pub fn addresses_of(&self, mac: Mac) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> =
            self.by_address.iter().filter(|(_, b)| b.mac == mac).map(|(address, _)| *address).collect();
        addresses.sort();
        addresses
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// Addresses `mac` holds or probes.
    fn claimed(&self, mac: Mac) -> usize {
        let probing = self.tentative.values().filter(|(prober, _)| *prober == mac).count();
        self.held.get(&mac).copied().unwrap_or(0) + probing
    }

    fn insert(&mut self, address: IpAddr, binding: Binding) {
        *self.held.entry(binding.mac).or_default() += 1;
        self.by_address.insert(address, binding);
    }

    fn remove(&mut self, address: IpAddr) -> Option<Binding> {
        let binding = self.by_address.remove(&address)?;
        if let std::collections::hash_map::Entry::Occupied(mut count) = self.held.entry(binding.mac) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        Some(binding)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    const A: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
    const B: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);
    const ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
    const HOUR: Duration = Duration::from_secs(3_600);
    const LIMIT: usize = 4;
    /// A SLAAC address and a link-local one.
    const SLAAC: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0x10, 0, 0, 0x10));
    const LINK_LOCAL: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 0x10));

    #[test]
    fn a_claim_binds_a_free_address_and_renews_it_for_its_holder() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        assert_eq!(table.observe(A, ADDRESS, Source::Claim, now), Outcome::Bound);
        assert_eq!(table.observe(A, ADDRESS, Source::Claim, now + HOUR / 2), Outcome::Renewed);
        assert!(table.expire(now + HOUR).is_empty(), "renewed half-way, so it lasts");
        assert_eq!(table.holder(ADDRESS), Some(A));
    }

    #[test]
    fn a_second_claimant_is_refused_while_the_binding_lasts() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        table.observe(A, ADDRESS, Source::Claim, now);
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now), Outcome::Refused { holder: A });
        assert_eq!(table.holder(ADDRESS), Some(A));
        // Nor does claiming through DHCP help: a REQUEST is a claim like ARP.
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now + HOUR / 2), Outcome::Refused { holder: A });
    }

    #[test]
    fn a_lapsed_binding_goes_to_the_next_claimant() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        table.observe(A, ADDRESS, Source::Claim, now);
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now + HOUR), Outcome::Bound);
        assert_eq!(table.holder(ADDRESS), Some(B));
    }

    #[test]
    fn a_dhcp_lease_moves_the_address_to_its_new_holder() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        table.observe(A, ADDRESS, Source::DhcpLease, now);
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now), Outcome::Refused { holder: A });
        assert_eq!(table.observe(B, ADDRESS, Source::DhcpLease, now), Outcome::Moved { from: A });
        assert_eq!(table.addresses_of(B), [ADDRESS]);
        assert!(table.addresses_of(A).is_empty());
    }

    #[test]
    fn a_lease_outranks_a_claim_but_not_a_static_binding() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        table.observe(A, ADDRESS, Source::Claim, now);
        assert_eq!(table.observe(B, ADDRESS, Source::DhcpLease, now), Outcome::Moved { from: A });
        let fixed = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));
        table.observe(A, fixed, Source::Static, now);
        assert_eq!(table.observe(B, fixed, Source::DhcpLease, now), Outcome::Refused { holder: A });
        assert!(table.expire(now + 10 * HOUR).contains(&ADDRESS));
        assert_eq!(table.holder(fixed), Some(A), "static bindings never lapse");
        assert!(!table.release(A, fixed), "nor are they released");
    }

    #[test]
    fn a_release_frees_only_the_holders_address() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        table.observe(A, ADDRESS, Source::DhcpLease, now);
        assert!(!table.release(B, ADDRESS));
        assert!(table.release(A, ADDRESS));
        assert!(table.is_empty());
    }

    #[test]
    fn unspecified_broadcast_and_multicast_addresses_are_never_bound() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        for address in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 251)] {
            assert_eq!(table.observe(A, address.into(), Source::DhcpLease, now), Outcome::Ignored);
        }
        let ipv6 = ["::", "ff02::1:ff00:10", "::1", "::ffff:192.168.1.20"];
        for address in ipv6 {
            let address: IpAddr = address.parse().expect("an IPv6 address");
            assert_eq!(table.observe(A, address, Source::Claim, now), Outcome::Ignored, "{address}");
        }
        assert!(table.is_empty());
    }

    #[test]
    fn ipv6_addresses_are_first_come_first_served_link_local_included() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        for address in [LINK_LOCAL, SLAAC] {
            assert_eq!(table.observe(A, address, Source::Claim, now), Outcome::Bound);
            assert_eq!(table.observe(B, address, Source::Claim, now), Outcome::Refused { holder: A });
        }
        assert_eq!(table.addresses_of(A), [SLAAC, LINK_LOCAL]);
        assert!(table.addresses_of(B).is_empty());
        // A DHCPv6 lease moves an address claimed first come first served, as DHCP does.
        assert_eq!(table.observe(B, SLAAC, Source::DhcpLease, now), Outcome::Moved { from: A });
        assert!(table.release(B, SLAAC));
        assert_eq!(table.holder(SLAAC), None);
    }

    #[test]
    fn a_probed_address_binds_once_undefended_and_a_defence_keeps_it_with_its_holder() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        assert_eq!(table.probe(A, SLAAC, now), Outcome::Tentative);
        assert_eq!(table.holder(SLAAC), None, "unbound while tentative: it passes");
        assert!(table.settle(now + PROBE_WAIT / 2).is_empty());
        assert_eq!(table.settle(now + PROBE_WAIT), [(SLAAC, A)]);
        assert_eq!(table.probe(B, SLAAC, now + PROBE_WAIT), Outcome::Refused { holder: A });

        // B's binding of its link-local lapsed while it was idle; A probes that address and B,
        // still there, defends it (its advertisement claims it): B keeps it.
        table.observe(B, LINK_LOCAL, Source::Claim, now);
        let later = now + HOUR;
        assert_eq!(table.probe(A, LINK_LOCAL, later), Outcome::Tentative);
        assert_eq!(table.observe(B, LINK_LOCAL, Source::Claim, later), Outcome::Renewed);
        assert!(table.settle(later + PROBE_WAIT).is_empty(), "the defence ended the probe");
        assert_eq!(table.holder(LINK_LOCAL), Some(B));
        // The prober using the address at once binds it without waiting.
        let other = IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x77));
        table.probe(A, other, later);
        assert_eq!(table.observe(A, other, Source::Claim, later), Outcome::Bound);
        assert!(table.settle(later + PROBE_WAIT).is_empty());
    }

    #[test]
    fn a_device_claims_at_most_its_limit_but_leases_and_renewals_still_count() {
        let (mut table, now) = (Bindings::new(HOUR, LIMIT), Instant::now());
        let address = |n: u16| IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n));
        for n in 0..LIMIT as u16 {
            assert_eq!(table.observe(A, address(n), Source::Claim, now), Outcome::Bound);
        }
        assert_eq!(table.observe(A, address(99), Source::Claim, now), Outcome::OverLimit);
        assert_eq!(table.observe(A, address(0), Source::Claim, now), Outcome::Renewed, "held ones renew");
        assert_eq!(table.observe(A, address(99), Source::DhcpLease, now), Outcome::Bound, "a server's word counts");
        // Freed addresses make room again: a lapse, a release or a lease moved away.
        assert!(table.release(A, address(99)));
        assert!(table.release(A, address(1)));
        assert_eq!(table.observe(A, address(98), Source::Claim, now), Outcome::Bound);
        assert_eq!(table.observe(B, address(2), Source::DhcpLease, now), Outcome::Moved { from: A });
        assert_eq!(table.observe(A, address(97), Source::Claim, now), Outcome::Bound);
        assert_eq!(table.addresses_of(A).len(), LIMIT);
        assert_eq!(table.expire(now + HOUR).len(), LIMIT + 1);
        assert_eq!(table.observe(A, address(96), Source::Claim, now + HOUR), Outcome::Bound);
    }
}
