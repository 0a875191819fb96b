//! `[datapath]`: which interfaces the XDP programs attach to, how, and how big their maps
//! are.
use std::path::PathBuf;

use serde::Deserialize;

/// How the XDP programs are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Default `datapath.counter_interval_ms`: a quarter of a second keeps a flood's detection
/// well inside the one-second response target.
pub const DEFAULT_COUNTER_INTERVAL_MS: u64 = 250;
/// Shortest `datapath.counter_interval_ms` accepted.
pub const MIN_COUNTER_INTERVAL_MS: u64 = 50;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// The interface facing the devices.
    pub lan_interface: String,
    /// The upstream interface (traffic towards devices is checked there too). Optional.
    pub wan_interface: Option<String>,
    /// Where quarantined traffic is redirected (when the policy's quarantine verdict is
    /// `redirect`). Optional: without it quarantined traffic is dropped.
    pub quarantine_interface: Option<String>,
    /// Destination MAC written into redirected frames (the quarantine host).
    pub quarantine_host_mac: Option<crate::device::Mac>,
    pub attach_mode: AttachMode,
    /// Where maps are pinned.
    pub pin_path: PathBuf,
    /// Copy DHCP, DNS, ARP, SSDP and TLS handshakes to userspace for fingerprinting.
    pub sample_packets: bool,
    /// Entries of the device maps (`DEVICES`, `DEVICE_IPV4`, `DEVICE_STATS`, `BUDGETS`, ...); see
    /// `capacity` for what each costs. A change recreates the maps at the next start.
    pub devices_capacity: u32,
    /// Entries of the IPv4 flow table (`FLOWS_V4`, LRU: beyond it the oldest flows are
    /// evicted).
    pub flows_capacity: u32,
    /// Entries of the IPv6 flow table (`FLOWS_V6`, LRU likewise).
    pub flows_v6_capacity: u32,
    /// Bytes of the event ring buffer (`EVENTS`): a power of two.
    pub events_ring_bytes: u32,
    /// How often per-device counters are read into traffic samples, in milliseconds: how
    /// soon a flood or an exfiltration shows (rates stay per second, over the last second of
    /// samples); each read copies the per-device counter map out in batches (its cost at
    /// 100,000 devices: bench/scale).
    pub counter_interval_ms: u64,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            lan_interface: "eth0".into(),
            wan_interface: None,
            quarantine_interface: None,
            quarantine_host_mac: None,
            attach_mode: AttachMode::Auto,
            pin_path: PathBuf::from(gateway_ebpf::PIN_ROOT),
            sample_packets: true,
            devices_capacity: super::capacity::DEFAULT_DEVICES,
            flows_capacity: super::capacity::DEFAULT_FLOWS,
            flows_v6_capacity: super::capacity::DEFAULT_FLOWS_V6,
            events_ring_bytes: super::capacity::DEFAULT_EVENTS_RING_BYTES,
            counter_interval_ms: DEFAULT_COUNTER_INTERVAL_MS,
        }
    }
}

impl DatapathConfig {
    /// Every semantic problem of the `[datapath]` section.
    pub fn problems(&self) -> Vec<String> {
        let d = self;
        let mut problems = Vec::new();
        if d.lan_interface.is_empty() {
            problems.push("datapath.lan_interface must not be empty".to_owned());
        }
        if d.quarantine_interface.is_some() && d.quarantine_host_mac.is_none() {
            problems.push(
                "datapath.quarantine_host_mac is required to redirect to datapath.quarantine_interface".to_owned(),
            );
        }
        if !(MIN_COUNTER_INTERVAL_MS..=60_000).contains(&d.counter_interval_ms) {
            problems.push(format!(
                "datapath.counter_interval_ms = {} must be within {MIN_COUNTER_INTERVAL_MS}..=60000",
                d.counter_interval_ms
            ));
        }
        problems.extend(super::capacity::problems(d));
        problems
    }
}
