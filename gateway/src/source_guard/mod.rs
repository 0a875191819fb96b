//! Source-address validation (IP Source Guard, as DHCP snooping switches do it): which
//! device holds which IPv4 address, so the LAN program drops (or only counts) frames a
//! device sends from an address bound to another, and an alert names the device.
//!
//! - `bindings`: the binding table, a sync core. Addresses are bound from what the gateway
//!   observes: a trusted DHCP server's ACK (moves a lease to its new holder), a device's own
//!   claims (an ARP announcement or request with its own MAC as sender, a DHCP REQUEST),
//!   each only when no other device holds the address; and `[[source_guard.static]]`
//!   (devices with fixed addresses), which nothing moves. Learned bindings lapse after
//!   `binding_secs` without a claim.
//! - `violations`: turns the datapath's per-device violation counters into alerts, at most
//!   one per device per `alert_interval_secs`.
//! - `controller::source_guard` runs both and is the only writer of `SOURCE_BINDINGS_V4`
//!   (through `datapath::maps`).
//!
//! Bootstrapping: an address bound to nobody passes (learn, then enforce). A DHCP client
//! sends from 0.0.0.0, which is never bound; a device's first frames after it took an address
//! pass until the controller bound it from its ARP or DHCP; a device with a static address
//! is bound by its first ARP (every IPv4 host resolves its gateway before sending through it).
//! ARP probes (RFC 5227, sender 0.0.0.0) claim nothing.
//!
//! Enrolment adds no binding of its own: the EST server learns an enrolling device's MAC from
//! the kernel's neighbour table (`identity::resolve`), that is from the same ARP this module
//! reads, so it is no stronger evidence. An enrolled device with a fixed address belongs in
//! `[[source_guard.static]]`.
//!
//! The gateway's own DHCP server (dnsmasq on the gateway) is not observed: its ACKs leave
//! through the gateway's stack, where the LAN egress program samples only DNS. Its clients are
//! bound by their REQUESTs and ARPs as claims; a lease it moves to another device moves when
//! the first device's binding lapses or it sends a RELEASE.
//!
//! IPv6 is not validated yet: SLAAC and privacy addresses are chosen by the device and
//! announced only through duplicate address detection (a Neighbor Solicitation from ::), and
//! a device holds several at once, rotating; binding them needs FCFS SAVI (RFC 6620) on the
//! ICMPv6 the LAN program does not sample today. The LAN program passes IPv6 unchecked.
use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::device::Mac;

pub mod bindings;
pub mod claims;
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
    pub address: Ipv4Addr,
}

/// `[source_guard]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// Seconds a learnt binding (DHCP, ARP) lasts without a claim renewing it.
    pub binding_secs: u64,
    /// MACs of the DHCP servers on the LAN whose ACKs bind the address they give (a lease
    /// moved to another device moves with it). Other servers' replies bind nothing.
    pub dhcp_servers: Vec<Mac>,
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
        let address = Ipv4Addr::new(192, 168, 1, 10);
        let config = Config {
            static_bindings: vec![StaticBinding { mac: mac(1), address }, StaticBinding { mac: mac(2), address }],
            ..Config::default()
        };
        assert_eq!(config.problems().len(), 1, "{:?}", config.problems());
        let broadcast = StaticBinding { mac: mac(1), address: Ipv4Addr::BROADCAST };
        let config = Config { static_bindings: vec![broadcast], binding_secs: 0, ..Config::default() };
        assert_eq!(config.problems().len(), 2, "{:?}", config.problems());
        assert!(Config::default().problems().is_empty());
    }
}
