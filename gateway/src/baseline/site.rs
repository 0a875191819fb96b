//! What the site knows beyond one device's own profile, for telling a device's real novelty
//! from the churn every network has:
//!
//! - **Own addresses**: the IPv4 addresses each device claimed in ARP. A flow from a device's
//!   MAC with another source address is traffic it forwards for a host behind it (a plug's
//!   setup access point relaying the phone that configures it), not the device's own.
//! - **Live LAN hosts**: addresses seen sending on the LAN (flows, ARP). Lateral movement is
//!   a conversation with another live host; a lone flow to an address nobody uses is a stale
//!   callback or a probe (and probes are what the scan detector counts).
//! - **Vendor peers**: the upstream prefixes and DNS names the baselined devices of one
//!   manufacturer (OUI) reach. Vendors run one cloud for all their models: a destination new
//!   to one Edimax plug but known to the other Edimax devices here is that cloud.
//!
//! Fed by `Baselines` from the same inputs; bounded in memory.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
};

use ipnet::IpNet;

use super::{Profile, Service, profile::ServiceProfile};
use crate::device::Mac;

/// Most addresses one device may own (several interfaces, a setup access point, DHCP moves).
pub const MAX_OWN_ADDRESSES: usize = 16;
/// Most live LAN hosts remembered; past it the table starts over (bounded memory).
pub const LIVE_HOSTS_CAPACITY: usize = 65_536;
/// Most prefixes and names pooled per vendor.
pub const VENDOR_CAPACITY: usize = 4_096;

/// What the baselined devices of one manufacturer reach.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VendorPeers {
    /// Baselined devices pooled.
    pub devices: u64,
    pub destinations: BTreeSet<IpNet>,
    pub names: BTreeSet<String>,
    /// Per service, where the vendor's devices reached it (prefixes and flow counts only).
    pub services: BTreeMap<Service, ServiceProfile>,
}

#[derive(Debug, Default)]
pub struct Site {
    own: HashMap<Mac, BTreeSet<Ipv4Addr>>,
    live: HashMap<IpAddr, Mac>,
    vendors: HashMap<[u8; 3], VendorPeers>,
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

    /// Pools a newly baselined device's destinations into its vendor's (universally
    /// administered MACs only: a randomised phone MAC names no manufacturer).
    pub fn pool(&mut self, mac: Mac, profile: &Profile) {
        if mac.is_locally_administered() {
            return;
        }
        let peers = self.vendors.entry(mac.oui()).or_default();
        peers.devices += 1;
        for prefix in &profile.destinations {
            if peers.destinations.len() >= VENDOR_CAPACITY {
                break;
            }
            peers.destinations.insert(*prefix);
        }
        for name in &profile.names {
            if peers.names.len() >= VENDOR_CAPACITY {
                break;
            }
            peers.names.insert(name.clone());
        }
        for (service, theirs) in &profile.services {
            if !peers.services.contains_key(service) && peers.services.len() >= VENDOR_CAPACITY {
                continue;
            }
            let ours = peers.services.entry(*service).or_default();
            ours.flows += theirs.flows;
            for prefix in &theirs.prefixes {
                if ours.prefixes.len() >= VENDOR_CAPACITY {
                    break;
                }
                ours.prefixes.insert(*prefix);
            }
        }
    }

    /// What the other baselined devices of `mac`'s manufacturer reach.
    pub fn vendor_peers(&self, mac: Mac) -> Option<&VendorPeers> {
        if mac.is_locally_administered() {
            return None;
        }
        self.vendors.get(&mac.oui())
    }
}

impl VendorPeers {
    /// True when `addr` lies in a pooled prefix or `name` shares a pooled registrable domain.
    pub fn know(&self, addr: IpAddr, name: Option<&str>) -> bool {
        self.destinations.iter().any(|net| net.contains(&addr))
            || name.is_some_and(|name| {
                let domain = super::profile::registrable_domain(name);
                self.names.iter().any(|known| super::profile::registrable_domain(known) == domain)
            })
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
    fn vendor_peers_pool_universal_macs_only() {
        let mut site = Site::default();
        let mut profile = Profile::default();
        profile.destinations.insert("54.217.230.0/24".parse().unwrap());
        profile.names.insert("www.myedimax.com".into());
        site.pool(mac("74:da:38:4a:76:49"), &profile);
        site.pool(mac("02:00:00:00:00:01"), &profile);
        let other_edimax = mac("74:da:38:23:22:7b");
        let peers = site.vendor_peers(other_edimax).expect("Edimax peers");
        assert_eq!(peers.devices, 1);
        assert!(peers.know("54.217.230.12".parse().unwrap(), None));
        assert!(peers.know("1.2.3.4".parse().unwrap(), Some("eu.myedimax.com")));
        assert!(!peers.know("45.9.148.3".parse().unwrap(), None));
        assert!(site.vendor_peers(mac("02:00:00:00:00:02")).is_none());
        assert!(site.vendor_peers(mac("3c:33:00:98:ee:fd")).is_none());
    }

    #[test]
    fn live_hosts_are_remembered_with_their_mac() {
        let mut site = Site::default();
        site.saw(mac("24:77:03:7c:ea:dc"), "10.10.10.127".parse().unwrap());
        assert_eq!(site.host("10.10.10.127".parse().unwrap()), Some(mac("24:77:03:7c:ea:dc")));
        assert_eq!(site.host("10.22.22.138".parse().unwrap()), None);
    }
}
