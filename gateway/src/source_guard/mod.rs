//! Source-address validation (IP Source Guard and SAVI, as DHCP-snooping switches do it):
//! which device holds which IPv4 and IPv6 address, so the LAN program drops (or only counts)
//! frames a device sends from an address bound to another, and an alert names the device.
//!
//! - `bindings`: the binding table, a sync core. Addresses are bound from what the gateway
//!   observes (`claims`): a trusted DHCP server's ACK or DHCPv6 server's REPLY (moves a lease
//!   to its new holder; RFC 7513), a device's own claims, first come first served (an ARP
//!   announcement or request with its own MAC as sender, a DHCP REQUEST; for IPv6, RFC 6620:
//!   the target of its duplicate address detection probe, the source of its neighbour
//!   discovery and DHCPv6 messages, the addresses it asks DHCPv6 for), each only when no other
//!   device holds the address and the device holds fewer than `max_addresses_per_device`; and
//!   `[[source_guard.static]]` (devices with fixed addresses), which nothing moves. Learned
//!   bindings lapse after `binding_secs` without a claim.
//! - `violations`: turns the datapath's per-device violation counters into alerts, at most
//!   one per device per `alert_interval_secs`.
//! - `controller::source_guard` runs both and is the only writer of `SOURCE_BINDINGS_V4` and
//!   `SOURCE_BINDINGS_V6` (through `datapath::maps`).
//!
//! Bootstrapping: an address bound to nobody passes (learn, then enforce). A DHCP client
//! sends from 0.0.0.0 and duplicate address detection from `::`, which are never bound; a
//! device's first frames after it took an address pass until the controller bound it from
//! its ARP, DHCP or neighbour discovery; a device with a static address is bound by its first
//! ARP (every IPv4 host resolves its gateway before sending through it). ARP probes (RFC 5227,
//! sender 0.0.0.0) claim nothing.
//!
//! IPv6 hosts choose their own addresses (SLAAC, privacy addresses, RFC 8981) and hold several
//! at once, so IPv6 is learnt first come first served: each new address is probed by duplicate
//! address detection (a neighbour solicitation from `::` for it, RFC 4862 §5.4), which the
//! LAN program samples (`sample_kind::NDP`). The probed address is tentative (RFC 6620
//! §2.3.2): bound to the prober after `bindings::PROBE_WAIT` unless another device defends it
//! (its advertisement from the address claims it) or uses it first, so a probe cannot take an
//! idle device's address whose binding lapsed. A probe for an address another device holds
//! is refused (and answered by the holder: the prober's DAD fails, as the protocol intends).
//! A host that skips the probe (optimistic DAD, or DAD off) is bound by its first neighbour
//! discovery from the address: resolving its router from it, or answering the gateway's
//! solicitation, which any two-way traffic through the gateway causes. Link-local addresses
//! are bound like the others. A DHCPv6 REPLY names its client by the address it is sent to
//! (the client's link-local address, bound by then from the client's own probe or SOLICIT)
//! or else by a DUID-LL/LLT; only the servers in `dhcpv6_servers` lease.
//!
//! Not seen, so not checked: the gateway's own answers (they leave through its stack, not the
//! LAN program), so a device probing one of the gateway's addresses gets it bound after the
//! wait (harmless: the gateway's frames are never checked, and no device may use it without
//! the gateway's defence making its DAD fail); the target of a neighbour advertisement (a
//! device answering for another's address from its own; the ARP detector's IPv6 counterpart
//! is not written).
//!
//! Enrolment adds no binding of its own: the EST server learns an enrolling device's MAC from
//! the kernel's neighbour table (`identity::resolve`), that is from the same ARP and
//! neighbour discovery this module reads, so it is no stronger evidence. An enrolled device
//! with a fixed address belongs in `[[source_guard.static]]`.
//!
//! The gateway's own DHCP server (dnsmasq on the gateway) is not observed: its ACKs leave
//! through the gateway's stack, where the LAN egress program samples only DNS. Its clients are
//! bound by their REQUESTs, ARPs and neighbour discovery as claims; a lease it moves to
//! another device moves when the first device's binding lapses or it sends a RELEASE.
use std::net::IpAddr;

use serde::Deserialize;

use crate::device::Mac;

pub mod bindings;
pub mod claims;
pub mod dhcpv6;
pub mod step;
pub mod violations;

/// Default `source_guard.binding_secs`: an hour without a claim. Active hosts refresh their
/// neighbours (and so claim their address) every few minutes, and renew DHCP leases at half
/// their lifetime.
pub const DEFAULT_BINDING_SECS: u64 = 3_600;
/// Default `source_guard.alert_interval_secs`.
pub const DEFAULT_ALERT_INTERVAL_SECS: u64 = 60;
/// Shortest `source_guard.alert_interval_secs` accepted (each check reads the violation map).
pub const MIN_ALERT_INTERVAL_SECS: u64 = 1;
/// Default `source_guard.max_addresses_per_device`: an IPv6 host holds a link-local, a
/// stable and a few temporary addresses per prefix (RFC 8981 rotates them daily), an IPv4
/// host one or two; a device claiming more is inventing addresses.
pub const DEFAULT_MAX_ADDRESSES_PER_DEVICE: usize = 16;

/// What the LAN program does with a frame from another device's address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No check, no bindings learnt.
    Off,
    /// Passed, counted and alerted on: what `enforce` would drop, without breaking anything
    /// while the bindings are learnt.
    #[default]
    Log,
    /// Dropped, counted (`spoofed_source` in `iotgw_datapath_drops_total`) and alerted on.
    Enforce,
}

impl Mode {
    /// `GatewayConfig::source_guard`.
    pub fn code(self) -> u8 {
        match self {
            Mode::Off => gateway_ebpf::source_guard::OFF,
            Mode::Log => gateway_ebpf::source_guard::LOG,
            Mode::Enforce => gateway_ebpf::source_guard::ENFORCE,
        }
    }
}

/// A device with a fixed address (`[[source_guard.static]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticBinding {
    pub mac: Mac,
    /// IPv4 or IPv6.
    pub address: IpAddr,
}

/// `[source_guard]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// Seconds a learnt binding (DHCP, DHCPv6, ARP, neighbour discovery) lasts without a
    /// claim renewing it.
    pub binding_secs: u64,
    /// MACs of the DHCP servers on the LAN whose ACKs bind the address they give (a lease
    /// moved to another device moves with it). Other servers' replies bind nothing.
    pub dhcp_servers: Vec<Mac>,
    /// MACs of the DHCPv6 servers on the LAN whose REPLYs bind the IA addresses they give.
    pub dhcpv6_servers: Vec<Mac>,
    /// Addresses one device may hold before its claims (first come first served) bind
    /// nothing more; leases and static bindings count but are never refused.
    pub max_addresses_per_device: usize,
    /// Seconds between checks of the violation counters: at most one alert per device each.
    pub alert_interval_secs: u64,
    /// Devices with fixed addresses: bound from the start, never moved.
    #[serde(rename = "static")]
    pub static_bindings: Vec<StaticBinding>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            binding_secs: DEFAULT_BINDING_SECS,
            dhcp_servers: Vec::new(),
            dhcpv6_servers: Vec::new(),
            max_addresses_per_device: DEFAULT_MAX_ADDRESSES_PER_DEVICE,
            alert_interval_secs: DEFAULT_ALERT_INTERVAL_SECS,
            static_bindings: Vec::new(),
        }
    }
}

impl Config {
    /// Every semantic problem of the section.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.binding_secs == 0 {
            problems.push("source_guard.binding_secs must be above 0".to_owned());
        }
        if self.alert_interval_secs < MIN_ALERT_INTERVAL_SECS {
            problems.push(format!("source_guard.alert_interval_secs must be at least {MIN_ALERT_INTERVAL_SECS}"));
        }
        if self.max_addresses_per_device == 0 {
            problems.push("source_guard.max_addresses_per_device must be above 0".to_owned());
        }
        let mut seen = std::collections::HashMap::new();
        for binding in &self.static_bindings {
            if !bindings::is_bindable(binding.address) {
                problems.push(format!("source_guard.static: {} is not a device address", binding.address));
            }
            if let Some(other) = seen.insert(binding.address, binding.mac)
                && other != binding.mac
            {
                problems.push(format!(
                    "source_guard.static: {} is bound to both {other} and {}",
                    binding.address, binding.mac
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_address_given_to_two_devices_is_refused() {
        let mac = |last| Mac([2, 0, 0, 0, 0, last]);
        let address = IpAddr::from([192, 168, 1, 10]);
        let config = Config {
            static_bindings: vec![StaticBinding { mac: mac(1), address }, StaticBinding { mac: mac(2), address }],
            ..Config::default()
        };
        assert_eq!(config.problems().len(), 1, "{:?}", config.problems());
        let broadcast = StaticBinding { mac: mac(1), address: std::net::Ipv4Addr::BROADCAST.into() };
        let unspecified = StaticBinding { mac: mac(1), address: std::net::Ipv6Addr::UNSPECIFIED.into() };
        let config = Config {
            static_bindings: vec![broadcast, unspecified],
            binding_secs: 0,
            max_addresses_per_device: 0,
            ..Config::default()
        };
        assert_eq!(config.problems().len(), 4, "{:?}", config.problems());
        assert!(Config::default().problems().is_empty());
    }
}
