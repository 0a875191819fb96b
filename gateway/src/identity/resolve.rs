//! Which MAC a TLS peer has: the kernel's IPv4 neighbour table (`/proc/net/arp`), or a fixed
//! table. Used to bind an enrollment to the MAC actually on the wire and to spot cloning.
//!
//! Reads `/proc/net/arp` on each lookup (small, and always current); writes nothing.
use std::{collections::HashMap, net::IpAddr, path::PathBuf, sync::RwLock};

use crate::device::Mac;

/// Where the kernel lists IPv4 neighbours.
pub const PROC_NET_ARP: &str = "/proc/net/arp";
/// ATF_COM: the entry is complete (the MAC is known).
const ARP_FLAG_COMPLETE: u32 = 0x2;

/// Finds the MAC behind a peer address; `None` when unknown (loopback, routed, IPv6).
pub trait MacResolver: Send + Sync {
    fn mac_of(&self, ip: IpAddr) -> Option<Mac>;
}

/// The kernel neighbour table.
pub struct NeighborTable {
    path: PathBuf,
}

impl Default for NeighborTable {
    fn default() -> Self {
        NeighborTable { path: PROC_NET_ARP.into() }
    }
}

impl NeighborTable {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        NeighborTable { path: path.into() }
    }
}

impl MacResolver for NeighborTable {
    fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        let IpAddr::V4(ip) = ip else { return None };
        let text = std::fs::read_to_string(&self.path).ok()?;
        parse_arp(&text, ip)
    }
}

/// Finds `ip` in `/proc/net/arp` text: `IP HWtype Flags HWaddress Mask Device` per line.
fn parse_arp(text: &str, ip: std::net::Ipv4Addr) -> Option<Mac> {
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [addr, _hw_type, flags, mac, ..] = fields.as_slice() else { return None };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        if addr.parse::<std::net::Ipv4Addr>().ok()? != ip || flags & ARP_FLAG_COMPLETE == 0 {
            return None;
        }
        mac.parse().ok()
    })
}

/// A fixed address → MAC table (DHCP leases, tests).
#[derive(Default)]
pub struct StaticMacs(RwLock<HashMap<IpAddr, Mac>>);

impl StaticMacs {
    pub fn insert(&self, ip: IpAddr, mac: Mac) {
        self.0.write().expect("lock poisoned only by a panic elsewhere").insert(ip, mac);
    }

    pub fn remove(&self, ip: IpAddr) {
        self.0.write().expect("lock poisoned only by a panic elsewhere").remove(&ip);
    }
}

impl MacResolver for StaticMacs {
    fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        self.0.read().expect("lock poisoned only by a panic elsewhere").get(&ip).copied()
    }
}

/// Resolves nothing: the certificate's own MAC is trusted.
pub struct NoResolver;

impl MacResolver for NoResolver {
    fn mac_of(&self, _ip: IpAddr) -> Option<Mac> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device
192.168.7.10     0x1         0x2         02:00:00:00:00:0a     *        lan0
192.168.7.11     0x1         0x0         00:00:00:00:00:00     *        lan0
";

    #[test]
    fn complete_arp_entries_resolve() {
        assert_eq!(parse_arp(ARP, "192.168.7.10".parse().unwrap()), Some(Mac([2, 0, 0, 0, 0, 0x0a])));
    }

    #[test]
    fn incomplete_and_missing_entries_do_not() {
        assert_eq!(parse_arp(ARP, "192.168.7.11".parse().unwrap()), None);
        assert_eq!(parse_arp(ARP, "192.168.7.12".parse().unwrap()), None);
    }

    #[test]
    fn real_table_reads_without_error() {
        // Loopback never has a neighbour entry.
        assert_eq!(NeighborTable::default().mac_of("127.0.0.1".parse().unwrap()), None);
    }
}
