//! What one device showed, as a fixed-length feature vector for the device-type classifier.
//! Reads new-flow events, parsed samples (`sample::Parsed`) and traffic counters of one
//! device; keeps bounded state (sets are capped) and writes nothing.
//!
//! Identifiers of one unit (its MAC, its IPs, digits in its host name) are left out on
//! purpose: the classifier must learn the *type* from behaviour, not recognise the unit.
//! Strings (host names, DNS names, JA3, option lists) go through feature hashing with a
//! stable hash (FNV-1a), so a shipped model keeps its meaning across builds.
use std::{collections::BTreeSet, net::IpAddr};

use super::{
    dhcp::DhcpFingerprint, dns::DnsObservation, openset::Tokens, sample::Parsed, syn::initial_ttl, tls::ClientHello,
};
use crate::{datapath::events::FlowObservation, datapath::traffic::TrafficCounters};

/// Feature groups in vector order, with their lengths: evaluation can leave a group out to
/// measure what it brings (`iotgw fingerprint eval --without hostname`).
pub const GROUPS: [(&str, usize); 8] = [
    ("dhcp", 2 + 64 + 1 + 8 + 1 + 8),
    ("hostname", 2 + 8),
    ("dns", 1 + 32 + 32),
    ("ssdp", 1 + 16 + 8),
    ("syn", 7 + 8),
    ("tls", 4 + 16),
    ("flows", 9 + 16 + 16),
    ("volume", 6 + 2),
];

/// Length of the vector `DeviceFeatures::vector` returns. Changing the layout changes this
/// and requires retraining the shipped model (`Model::dimensions` is checked at load).
pub const DIMENSIONS: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < GROUPS.len() {
        total += GROUPS[i].1;
        i += 1;
    }
    total
};

/// Where group `name` sits in the vector.
pub fn group_range(name: &str) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for (group, len) in GROUPS {
        if group == name {
            return Some(start..start + len);
        }
        start += len;
    }
    None
}

/// Most distinct values kept per set: a device resolving random names must not grow memory.
pub const MAX_SET: usize = 512;

/// Destination ports common on IoT networks, each its own feature.
const WELL_KNOWN_PORTS: [u16; 16] =
    [53, 67, 80, 123, 443, 1883, 1900, 5353, 5683, 8080, 8443, 8883, 9999, 49_153, 10_000, 554];

const BUCKETS_SMALL: usize = 8;
const BUCKETS_MEDIUM: usize = 16;
const BUCKETS_LARGE: usize = 32;
/// Option 55 codes 1..=64 each get a feature; higher codes are counted together.
const DHCP_OPTION_FEATURES: usize = 64;

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

fn bucket(text: &str, buckets: usize) -> usize {
    (stable_hash(text.as_bytes()) % buckets as u64) as usize
}

/// A host name without what varies per unit: a hex suffix after a separator (`-1A2B`), or a
/// trailing run of 6+ hex digits (a MAC suffix, `GainSpanca9152`). Model numbers stay: they
/// name the type (`DCH-S220` vs `DCH-S160`).
pub fn hostname_model(hostname: &str) -> String {
    let lower = hostname.to_ascii_lowercase();
    let hex_run = lower.chars().rev().take_while(char::is_ascii_hexdigit).count();
    let mut cut = lower.len();
    if let Some(at) = lower.rfind(['-', '_', '.']) {
        let suffix = &lower[at + 1..];
        if suffix.len() >= 4 && suffix.chars().all(|c| c.is_ascii_hexdigit()) {
            cut = at;
        }
    }
    if hex_run >= 6 {
        cut = cut.min(lower.len() - hex_run);
    }
    lower[..cut].trim_end_matches(['-', '_', '.']).to_owned()
}

fn insert_capped<T: Ord>(set: &mut BTreeSet<T>, value: T) -> bool {
    if set.len() >= MAX_SET {
        return false;
    }
    set.insert(value)
}

fn is_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_unique_local() || v6.is_multicast(),
    }
}

/// Everything one device has shown so far. Feed it with `add_*`, read it with `vector`.
#[derive(Clone, Debug, Default)]
pub struct DeviceFeatures {
    dhcp: Option<DhcpFingerprint>,
    dns_names: BTreeSet<String>,
    syn: Option<gateway_ebpf::SynFingerprint>,
    tls: Option<ClientHello>,
    server_names: BTreeSet<String>,
    /// What its SSDP messages named (`ssdp::SsdpMessage::names`).
    ssdp: BTreeSet<String>,
    flows: u64,
    flows_tcp: u64,
    flows_udp: u64,
    flows_icmp: u64,
    flows_ipv6: u64,
    flows_local: u64,
    first_frame_bytes_sum: u64,
    first_frame_bytes_max: u32,
    destinations: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
    traffic: TrafficCounters,
    active_intervals: u64,
    arp: u64,
    /// Whether anything that changes the vector arrived since `take_changed`.
    changed: bool,
}

impl DeviceFeatures {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new flow opened by the device.
    pub fn add_flow(&mut self, flow: &FlowObservation) {
        self.flows += 1;
        match flow.proto {
            gateway_ebpf::proto::TCP => self.flows_tcp += 1,
            gateway_ebpf::proto::UDP => self.flows_udp += 1,
            gateway_ebpf::proto::ICMP | gateway_ebpf::proto::ICMPV6 => self.flows_icmp += 1,
            _ => {}
        }
        if flow.dst.is_ipv6() {
            self.flows_ipv6 += 1;
        }
        if is_local(&flow.dst) {
            self.flows_local += 1;
        }
        self.first_frame_bytes_sum += u64::from(flow.frame_bytes);
        self.first_frame_bytes_max = self.first_frame_bytes_max.max(flow.frame_bytes);
        insert_capped(&mut self.destinations, flow.dst);
        if matches!(flow.proto, gateway_ebpf::proto::TCP | gateway_ebpf::proto::UDP) {
            insert_capped(&mut self.ports, flow.dst_port);
        }
        if self.syn.is_none() {
            self.syn = flow.syn;
        }
        self.changed = true;
    }

    /// A sample the device sent. Only what the device itself says counts: DHCP requests,
    /// DNS queries, ClientHellos, ARP.
    pub fn add_sample(&mut self, parsed: &Parsed) {
        match parsed {
            Parsed::Dhcp(dhcp) if dhcp.from_client => {
                // The richest message wins (a DISCOVER may carry fewer options than a REQUEST).
                let richer = self.dhcp.as_ref().is_none_or(|old| {
                    dhcp.parameter_request_list.len() > old.parameter_request_list.len()
                        || (old.vendor_class.is_none() && dhcp.vendor_class.is_some())
                        || (old.hostname.is_none() && dhcp.hostname.is_some())
                });
                if richer {
                    self.dhcp = Some(dhcp.clone());
                }
            }
            Parsed::Dns(DnsObservation { is_response: false, queries, .. }) => {
                for name in queries {
                    insert_capped(&mut self.dns_names, name.clone());
                }
            }
            Parsed::Tls(hello) => {
                if let Some(name) = &hello.server_name {
                    insert_capped(&mut self.server_names, name.clone());
                }
                if self.tls.is_none() {
                    self.tls = Some(hello.clone());
                }
            }
            Parsed::Ssdp(message) => {
                for name in &message.names {
                    insert_capped(&mut self.ssdp, name.clone());
                }
            }
            Parsed::Arp(_) => self.arp += 1,
            _ => return,
        }
        self.changed = true;
    }

    /// The device's traffic during one interval.
    pub fn add_traffic(&mut self, counters: &TrafficCounters) {
        self.traffic.add(counters);
        if counters.tx_packets > 0 {
            self.active_intervals += 1;
        }
        self.changed = true;
    }

    /// True once after anything changed: lets the inventory reclassify only when useful.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Whether anything identifying was seen at all (a device seen only as a destination has
    /// nothing to classify).
    pub fn is_empty(&self) -> bool {
        self.flows == 0
            && self.dhcp.is_none()
            && self.dns_names.is_empty()
            && self.tls.is_none()
            && self.ssdp.is_empty()
            && self.arp == 0
    }

    /// The names the device gave of itself and its software, by kind, for the open-set gate
    /// (`openset::Tokens`): DHCP option list and vendor class, host name (unit parts removed),
    /// registrable domains it asked for or named in TLS, SSDP names, JA3, SYN options with
    /// initial TTL.
    pub fn tokens(&self) -> Tokens {
        let mut tokens = Tokens::default();
        if let Some(dhcp) = &self.dhcp {
            if !dhcp.parameter_request_list.is_empty() {
                tokens.insert("dhcp-options", dhcp.parameter_list_text());
            }
            if let Some(vendor) = &dhcp.vendor_class {
                tokens.insert("dhcp-vendor", vendor.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.'));
            }
            if let Some(hostname) = &dhcp.hostname {
                tokens.insert("hostname", hostname_model(hostname));
            }
        }
        for name in self.dns_names.iter().chain(&self.server_names) {
            tokens.insert("domain", crate::domain::registrable(name));
        }
        for name in &self.ssdp {
            tokens.insert("ssdp", name.as_str());
        }
        if let Some(tls) = &self.tls {
            tokens.insert("ja3", tls.ja3_hash.as_str());
        }
        if let Some(syn) = &self.syn {
            let count = usize::from(syn.option_count).min(syn.option_kinds.len());
            tokens.insert("syn", format!("{}/{}", hex::encode(&syn.option_kinds[..count]), initial_ttl(syn.ttl)));
        }
        tokens
    }

    /// The feature vector, `DIMENSIONS` long.
    pub fn vector(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(DIMENSIONS);
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let log = |x: u64| (x as f64).ln_1p();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let one_hot = |v: &mut Vec<f64>, buckets: usize, text: Option<&str>| {
            let start = v.len();
            v.resize(start + buckets, 0.0);
            if let Some(text) = text {
                v[start + bucket(text, buckets)] = 1.0;
            }
        };
        let bag = |v: &mut Vec<f64>, buckets: usize, texts: &mut dyn Iterator<Item = &str>| {
            let start = v.len();
            v.resize(start + buckets, 0.0);
            for text in texts {
                v[start + bucket(text, buckets)] = 1.0;
            }
        };

        // DHCP: options 55 (which and in what order), 60, 12.
        let dhcp = self.dhcp.as_ref();
        let list = dhcp.map(|d| d.parameter_request_list.as_slice()).unwrap_or_default();
        v.push(flag(dhcp.is_some()));
        v.push(list.len() as f64);
        let start = v.len();
        v.resize(start + DHCP_OPTION_FEATURES, 0.0);
        for code in list.iter().filter(|c| (1..=DHCP_OPTION_FEATURES).contains(&usize::from(**c))) {
            v[start + usize::from(*code) - 1] = 1.0;
        }
        v.push(list.iter().filter(|c| usize::from(**c) > DHCP_OPTION_FEATURES).count() as f64);
        one_hot(&mut v, BUCKETS_SMALL, dhcp.filter(|_| !list.is_empty()).map(|d| d.parameter_list_text()).as_deref());
        let vendor = dhcp.and_then(|d| d.vendor_class.as_deref());
        v.push(flag(vendor.is_some()));
        one_hot(&mut v, BUCKETS_SMALL, vendor.map(|vc| vc.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')));
        let hostname = dhcp.and_then(|d| d.hostname.as_deref()).map(hostname_model);
        v.push(flag(hostname.is_some()));
        v.push(hostname.as_ref().map_or(0.0, |h| h.len() as f64));
        one_hot(&mut v, BUCKETS_SMALL, hostname.as_deref());

        // DNS: the services it talks to.
        v.push(log(self.dns_names.len() as u64));
        let names = || self.dns_names.iter().chain(&self.server_names).map(String::as_str);
        let domains: Vec<String> = names().map(crate::domain::registrable).collect();
        bag(&mut v, BUCKETS_LARGE, &mut domains.iter().map(String::as_str));
        bag(&mut v, BUCKETS_LARGE, &mut names());

        // SSDP: the UPnP device type and product it announces, and its UPnP stack.
        v.push(flag(!self.ssdp.is_empty()));
        let (servers, identity): (Vec<&String>, Vec<&String>) =
            self.ssdp.iter().partition(|n| n.starts_with("server:"));
        bag(&mut v, BUCKETS_MEDIUM, &mut identity.into_iter().map(String::as_str));
        bag(&mut v, BUCKETS_SMALL, &mut servers.into_iter().map(String::as_str));

        // TCP SYN: the stack.
        let syn = self.syn.as_ref();
        v.push(flag(syn.is_some()));
        v.push(syn.map_or(0.0, |s| f64::from(initial_ttl(s.ttl))));
        v.push(syn.map_or(0.0, |s| f64::from(s.window)));
        v.push(syn.map_or(0.0, |s| f64::from(s.mss)));
        v.push(syn.map_or(-1.0, |s| if s.window_scale == u8::MAX { -1.0 } else { f64::from(s.window_scale) }));
        v.push(syn.map_or(0.0, |s| f64::from(s.option_count)));
        v.push(syn.map_or(0.0, |s| f64::from(s.dont_fragment)));
        let options = syn.map(|s| {
            let count = usize::from(s.option_count).min(s.option_kinds.len());
            hex::encode(&s.option_kinds[..count])
        });
        one_hot(&mut v, BUCKETS_SMALL, options.as_deref());

        // TLS ClientHello: the TLS library.
        let tls = self.tls.as_ref();
        v.push(flag(tls.is_some()));
        v.push(tls.map_or(0.0, |t| f64::from(t.version)));
        v.push(tls.map_or(0.0, |t| t.ciphers.len() as f64));
        v.push(tls.map_or(0.0, |t| t.extensions.len() as f64));
        one_hot(&mut v, BUCKETS_MEDIUM, tls.map(|t| t.ja3_hash.as_str()));

        // Flows: how it talks.
        v.push(log(self.flows));
        v.push(log(self.destinations.len() as u64));
        v.push(log(self.ports.len() as u64));
        v.push(ratio(self.flows_tcp, self.flows));
        v.push(ratio(self.flows_udp, self.flows));
        v.push(ratio(self.flows_icmp, self.flows));
        v.push(ratio(self.flows_ipv6, self.flows));
        v.push(ratio(self.flows_local, self.flows));
        v.push(if self.flows == 0 { 0.0 } else { self.first_frame_bytes_sum as f64 / self.flows as f64 });
        for port in WELL_KNOWN_PORTS {
            v.push(flag(self.ports.contains(&port)));
        }
        let other_ports: Vec<String> =
            self.ports.iter().filter(|p| !WELL_KNOWN_PORTS.contains(p)).map(u16::to_string).collect();
        bag(&mut v, BUCKETS_MEDIUM, &mut other_ports.iter().map(String::as_str));

        // Volume.
        v.push(f64::from(self.first_frame_bytes_max));
        v.push(log(self.traffic.tx_packets));
        v.push(log(self.traffic.tx_bytes));
        v.push(ratio(self.traffic.tx_bytes, self.traffic.tx_packets));
        v.push(ratio(self.traffic.rx_bytes, self.traffic.tx_bytes.max(1)).ln_1p());
        v.push(log(self.active_intervals));
        v.push(log(self.arp));
        v.push(flag(self.arp > 0));
        debug_assert_eq!(v.len(), DIMENSIONS);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_has_the_declared_length_empty_or_full() {
        let mut features = DeviceFeatures::new();
        assert_eq!(features.vector().len(), DIMENSIONS);
        assert!(features.is_empty());
        features.add_sample(&Parsed::Dhcp(DhcpFingerprint {
            parameter_request_list: vec![1, 3, 6, 15, 119, 252],
            vendor_class: Some("udhcp 1.19.4".into()),
            hostname: Some("WeMo-1A2B".into()),
            from_client: true,
            ..Default::default()
        }));
        features
            .add_sample(&Parsed::Dns(DnsObservation { queries: vec!["api.xbcs.net".into()], ..Default::default() }));
        assert!(features.take_changed());
        assert!(!features.take_changed());
        let vector = features.vector();
        assert_eq!(vector.len(), DIMENSIONS);
        assert_eq!(vector[0], 1.0);
        assert_eq!(vector[1], 6.0);
        assert_eq!(vector[2 + 15 - 1], 1.0, "option 15 requested");
        assert_eq!(vector[group_range("hostname").unwrap().start], 1.0, "host name present");
        assert_eq!(group_range("volume").unwrap().end, DIMENSIONS);
        features.add_sample(&Parsed::Ssdp(super::super::ssdp::SsdpMessage { names: vec!["usn:insight-1_0".into()] }));
        let ssdp = group_range("ssdp").unwrap();
        assert_eq!(features.vector()[ssdp.start], 1.0, "SSDP seen");
        assert_eq!(features.tokens().0["ssdp"].iter().collect::<Vec<_>>(), ["usn:insight-1_0"]);
    }

    #[test]
    fn hostname_model_drops_unit_specific_parts() {
        assert_eq!(hostname_model("WeMo.Switch-1A2B"), "wemo.switch");
        assert_eq!(hostname_model("EDIMAX_7a08"), "edimax");
        assert_eq!(hostname_model("ESP_06D902"), "esp");
        assert_eq!(hostname_model("GainSpanca9152"), "gainspan");
        assert_eq!(hostname_model("DCH-S220"), "dch-s220");
        assert_eq!(hostname_model("Philips-hue"), "philips-hue");
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
