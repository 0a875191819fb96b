//! The host's interfaces as the controller needs them: MAC, addresses, subnets and index,
//! from getifaddrs (sysfs may belong to another network namespace than ours when started
//! through `nsenter --net`), and where a device-facing service binds on the LAN side.
use anyhow::Context as _;

/// An interface's MAC address, from getifaddrs (sysfs may belong to another network
/// namespace than ours when started through `nsenter --net`).
pub fn interface_mac(interface: &str) -> anyhow::Result<[u8; 6]> {
    nix::ifaddrs::getifaddrs()
        .context("getifaddrs")?
        .filter(|ifa| ifa.interface_name == interface)
        .find_map(|ifa| ifa.address?.as_link_addr()?.addr())
        .with_context(|| format!("interface {interface} has no link-layer address (does it exist?)"))
}

/// An interface's own addresses (IPv4 first, as getifaddrs lists them), from getifaddrs.
pub fn interface_addresses(interface: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let mut addresses = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")?.filter(|ifa| ifa.interface_name == interface) {
        let Some(address) = ifa.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.push(std::net::IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.push(std::net::IpAddr::V6(v6.ip()));
        }
    }
    Ok(addresses)
}

/// The subnets of an interface's addresses, plus the link-local ranges: what the LAN is
/// when `[baseline] lan_prefixes` is not configured.
pub fn interface_subnets(interface: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let mut subnets: Vec<ipnet::IpNet> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")?.filter(|ifa| ifa.interface_name == interface) {
        let (Some(address), Some(netmask)) = (ifa.address, ifa.netmask) else { continue };
        let net = if let (Some(a), Some(m)) = (address.as_sockaddr_in(), netmask.as_sockaddr_in()) {
            ipnet::Ipv4Net::with_netmask(a.ip(), m.ip()).ok().map(|n| ipnet::IpNet::V4(n.trunc()))
        } else if let (Some(a), Some(m)) = (address.as_sockaddr_in6(), netmask.as_sockaddr_in6()) {
            ipnet::Ipv6Net::with_netmask(a.ip(), m.ip()).ok().map(|n| ipnet::IpNet::V6(n.trunc()))
        } else {
            None
        };
        subnets.extend(net.filter(|n| !subnets.contains(n)));
    }
    for link_local in ["169.254.0.0/16", "fe80::/10"] {
        // Literals: they parse.
        subnets.extend(link_local.parse::<ipnet::IpNet>().ok().filter(|n| !subnets.contains(n)));
    }
    Ok(subnets)
}

pub fn is_link_local(net: &ipnet::IpNet) -> bool {
    match net.addr() {
        std::net::IpAddr::V4(a) => a.is_link_local(),
        std::net::IpAddr::V6(a) => a.is_unicast_link_local(),
    }
}

/// An interface's index.
pub fn if_index(interface: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(interface).with_context(|| format!("interface {interface} not found"))
}

/// Where a device-facing service listens: `listen` when configured, else the first of the LAN
/// interface's addresses (IPv4 first) on `port`. Binding 0.0.0.0 would offer the service to
/// the WAN side too.
pub fn lan_side(
    listen: Option<std::net::SocketAddr>,
    lan_addresses: &[std::net::IpAddr],
    port: u16,
) -> Option<std::net::SocketAddr> {
    listen.or_else(|| {
        let first = lan_addresses.iter().find(|a| a.is_ipv4()).or(lan_addresses.first())?;
        Some(std::net::SocketAddr::new(*first, port))
    })
}
