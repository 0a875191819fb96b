//! What the site knows beyond one device's own profile, for telling a device's real novelty
//! from the churn every network has:
//!
//! - **Own addresses**: the IPv4 addresses each device claimed in ARP. A flow from a device's
//!   MAC with another source address is traffic it forwards for a host behind it (a plug's
//!   setup access point relaying the phone that configures it), not the device's own.
//! - **Live LAN hosts**: addresses seen sending on the LAN (flows, ARP). Lateral movement is
//!   a conversation with another live host; a lone flow to an address nobody uses is a stale
//!   callback or a probe (and probes are what the scan detector counts).
//!
//! What the other devices of a device's *type* reach is its class baseline (`Baselines::class`),
//! not a pool by OUI: an OUI names the Wi-Fi chip's maker as often as the product's, and
//! Espressif's covers unrelated products of many brands.
//!
//! Fed by `Baselines` from the same inputs; bounded in memory.
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
};

use crate::device::Mac;

/// Most addresses one device may own (several interfaces, a setup access point, DHCP moves).
pub const MAX_OWN_ADDRESSES: usize = 16;
/// Most live LAN hosts remembered; past it the table starts over (bounded memory).
pub const LIVE_HOSTS_CAPACITY: usize = 65_536;

#[derive(Debug, Default)]
pub struct Site {
    own: HashMap<Mac, BTreeSet<Ipv4Addr>>,
    live: HashMap<IpAddr, Mac>,
}

impl Site {
    /// `mac` claimed `addr` for itself (ARP sender fields matching the frame).
    pub fn claim(&mut self, mac: Mac, addr: Ipv4Addr) {
        if addr.is_unspecified() {
            return;
        }
        let own = self.own.entry(mac).or_default();
        if own.len() < MAX_OWN_ADDRESSES {
            own.insert(addr);
        }
        self.saw(mac, IpAddr::V4(addr));
    }

    /// `addr` sent something from `mac`.
    pub fn saw(&mut self, mac: Mac, addr: IpAddr) {
        if addr.is_unspecified() {
            return;
        }
        if self.live.len() >= LIVE_HOSTS_CAPACITY && !self.live.contains_key(&addr) {
            self.live.clear();
        }
        self.live.insert(addr, mac);
    }

    /// True when `src` is an IPv4 address `mac` does not own, while it owns others (or the
    /// `learnt` claims say so). Without any claim the flow counts as the device's own: a
    /// device must never escape detection because its ARP was not seen.
    pub fn is_forwarded(&self, mac: Mac, src: IpAddr, learnt: &BTreeSet<Ipv4Addr>) -> bool {
        let IpAddr::V4(src) = src else { return false };
        if src.is_unspecified() {
            return false;
        }
        let live = self.own.get(&mac);
        let known = live.is_some_and(|own| !own.is_empty()) || !learnt.is_empty();
        known && !live.is_some_and(|own| own.contains(&src)) && !learnt.contains(&src)
    }

    /// The MAC last seen sending from `addr`, if any.
    pub fn host(&self, addr: IpAddr) -> Option<Mac> {
        self.live.get(&addr).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(text: &str) -> Mac {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_the_device_never_claimed_is_forwarded_once_it_claimed_one() {
        let mut site = Site::default();
        let plug = mac("94:10:3e:41:c2:05");
        let phone_behind_it: IpAddr = "10.22.22.2".parse().unwrap();
        let none = BTreeSet::new();
        // No claim seen yet: everything counts as the device's own.
        assert!(!site.is_forwarded(plug, phone_behind_it, &none));
        site.claim(plug, "10.10.10.158".parse().unwrap());
        assert!(site.is_forwarded(plug, phone_behind_it, &none));
        assert!(!site.is_forwarded(plug, "10.10.10.158".parse().unwrap(), &none));
        // Claims learnt in the baseline count after a restart too.
        let restarted = Site::default();
        let learnt: BTreeSet<Ipv4Addr> = ["10.10.10.158".parse().unwrap()].into();
        assert!(restarted.is_forwarded(plug, phone_behind_it, &learnt));
        assert!(!restarted.is_forwarded(plug, "10.10.10.158".parse().unwrap(), &learnt));
    }

    #[test]
    fn live_hosts_are_remembered_with_their_mac() {
        let mut site = Site::default();
        site.saw(mac("24:77:03:7c:ea:dc"), "10.10.10.127".parse().unwrap());
        assert_eq!(site.host("10.10.10.127".parse().unwrap()), Some(mac("24:77:03:7c:ea:dc")));
        assert_eq!(site.host("10.22.22.138".parse().unwrap()), None);
    }
}
