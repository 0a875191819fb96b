//! The binding table: which device holds each IPv4 address, and on what authority. A sync
//! core: `observe` takes one claim and says what changed; `expire` lapses learnt bindings.
//! Writes nothing itself (`controller::source_guard` writes the map).
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use crate::device::Mac;

/// On what authority a device holds an address, weakest first: a stronger source takes an
/// address from a weaker one's holder, never the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The device said so itself: an ARP with its own MAC as sender, a DHCP REQUEST.
    Claim,
    /// A trusted DHCP server's ACK gave it the address.
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
    /// Not an address a device can hold (0.0.0.0, broadcast, multicast, loopback).
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

/// Whether a device can hold `address` as its own.
pub fn is_bindable(address: Ipv4Addr) -> bool {
    !(address.is_unspecified() || address.is_broadcast() || address.is_multicast() || address.is_loopback())
}

/// Address → holder.
#[derive(Debug)]
pub struct Bindings {
    by_address: HashMap<Ipv4Addr, Binding>,
    lifetime: Duration,
}

impl Bindings {
    /// An empty table whose learnt bindings last `lifetime` without a renewal.
    pub fn new(lifetime: Duration) -> Self {
        Self { by_address: HashMap::new(), lifetime }
    }

    /// `mac` holds `address` on `source`'s authority, seen at `now`.
    pub fn observe(&mut self, mac: Mac, address: Ipv4Addr, source: Source, now: Instant) -> Outcome {
        if !is_bindable(address) {
            return Outcome::Ignored;
        }
        let fresh = Binding { mac, source, renewed: now };
        let Some(held) = self.by_address.get_mut(&address) else {
            self.by_address.insert(address, fresh);
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
        if lapsed || outranked {
            let from = held.mac;
            *held = fresh;
            return if lapsed { Outcome::Bound } else { Outcome::Moved { from } };
        }
        Outcome::Refused { holder: held.mac }
    }

    /// `mac` gave `address` up (a DHCP RELEASE): unbound if it held it on a learnt authority.
    pub fn release(&mut self, mac: Mac, address: Ipv4Addr) -> bool {
        let releasable = self.by_address.get(&address).is_some_and(|b| b.mac == mac && b.source != Source::Static);
        if releasable {
            self.by_address.remove(&address);
        }
        releasable
    }

    /// Removes the learnt bindings nobody renewed within the lifetime; returns their addresses.
    pub fn expire(&mut self, now: Instant) -> Vec<Ipv4Addr> {
        let lifetime = self.lifetime;
        let lapsed: Vec<Ipv4Addr> = self
            .by_address
            .iter()
            .filter(|(_, b)| b.source != Source::Static && now.duration_since(b.renewed) >= lifetime)
            .map(|(address, _)| *address)
            .collect();
        for address in &lapsed {
            self.by_address.remove(address);
        }
        lapsed
    }

    /// Who holds `address`.
    pub fn holder(&self, address: Ipv4Addr) -> Option<Mac> {
        self.by_address.get(&address).map(|b| b.mac)
    }

    /// The addresses `mac` holds, in order.
    pub fn addresses_of(&self, mac: Mac) -> Vec<Ipv4Addr> {
        let mut addresses: Vec<Ipv4Addr> =
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
    const B: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);
    const HOUR: Duration = Duration::from_secs(3_600);

    #[test]
    fn a_claim_binds_a_free_address_and_renews_it_for_its_holder() {
        let (mut table, now) = (Bindings::new(HOUR), Instant::now());
        assert_eq!(table.observe(A, ADDRESS, Source::Claim, now), Outcome::Bound);
        assert_eq!(table.observe(A, ADDRESS, Source::Claim, now + HOUR / 2), Outcome::Renewed);
        assert!(table.expire(now + HOUR).is_empty(), "renewed half-way, so it lasts");
        assert_eq!(table.holder(ADDRESS), Some(A));
    }

    #[test]
    fn a_second_claimant_is_refused_while_the_binding_lasts() {
        let (mut table, now) = (Bindings::new(HOUR), Instant::now());
        table.observe(A, ADDRESS, Source::Claim, now);
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now), Outcome::Refused { holder: A });
        assert_eq!(table.holder(ADDRESS), Some(A));
        // Nor does claiming through DHCP help: a REQUEST is a claim like ARP.
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now + HOUR / 2), Outcome::Refused { holder: A });
    }

    #[test]
    fn a_lapsed_binding_goes_to_the_next_claimant() {
        let (mut table, now) = (Bindings::new(HOUR), Instant::now());
        table.observe(A, ADDRESS, Source::Claim, now);
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now + HOUR), Outcome::Bound);
        assert_eq!(table.holder(ADDRESS), Some(B));
    }

    #[test]
    fn a_dhcp_lease_moves_the_address_to_its_new_holder() {
        let (mut table, now) = (Bindings::new(HOUR), Instant::now());
        table.observe(A, ADDRESS, Source::DhcpLease, now);
        assert_eq!(table.observe(B, ADDRESS, Source::Claim, now), Outcome::Refused { holder: A });
        assert_eq!(table.observe(B, ADDRESS, Source::DhcpLease, now), Outcome::Moved { from: A });
        assert_eq!(table.addresses_of(B), [ADDRESS]);
        assert!(table.addresses_of(A).is_empty());
    }

    #[test]
    fn a_lease_outranks_a_claim_but_not_a_static_binding() {
        let (mut table, now) = (Bindings::new(HOUR), Instant::now());
        table.observe(A, ADDRESS, Source::Claim, now);
        assert_eq!(table.observe(B, ADDRESS, Source::DhcpLease, now), Outcome::Moved { from: A });
        let fixed = Ipv4Addr::new(192, 168, 1, 2);
        table.observe(A, fixed, Source::Static, now);
        assert_eq!(table.observe(B, fixed, Source::DhcpLease, now), Outcome::Refused { holder: A });
        assert!(table.expire(now + 10 * HOUR).contains(&ADDRESS));
        assert_eq!(table.holder(fixed), Some(A), "static bindings never lapse");
        assert!(!table.release(A, fixed), "nor are they released");
    }

    #[test]
    fn a_release_frees_only_the_holders_address() {
        let (mut table, now) = (Bindings::new(HOUR), Instant::now());
        table.observe(A, ADDRESS, Source::DhcpLease, now);
        assert!(!table.release(B, ADDRESS));
        assert!(table.release(A, ADDRESS));
        assert!(table.is_empty());
    }

    #[test]
    fn unspecified_broadcast_and_multicast_addresses_are_never_bound() {
        let (mut table, now) = (Bindings::new(HOUR), Instant::now());
        for address in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 251)] {
            assert_eq!(table.observe(A, address, Source::DhcpLease, now), Outcome::Ignored);
        }
        assert!(table.is_empty());
    }
}
