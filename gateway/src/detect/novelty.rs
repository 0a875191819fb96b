//! The novelty detectors: a baselined device opening a flow its baseline does not explain.
//! Upstream that is a **new destination**, on the LAN **lateral movement**.
//!
//! Before scoring, each first rules out the churn every network has, in words an analyst can
//! check against the baseline:
//! - the device's own profile (learnt prefixes, names, peers and the hosts that called it);
//! - services that rotate their servers while learning already showed it (NTP pools, STUN
//!   relays, CDNs): many prefixes, or a new prefix for a good share of the flows;
//! - traffic the device forwards for a host behind it (`baseline::site`);
//! - what the other devices of its manufacturer reach here (the vendor's cloud);
//! - another well-known public DNS resolver, for a device that resolves names;
//! - on the LAN, an address no live host uses (a stale callback; probes are the scan
//!   detector's), or a service the device already uses with several LAN hosts (an app or a
//!   hub talking to its devices), unless it is a remote shell or file share.
use gateway_ebpf::proto;
use std::net::IpAddr;

use super::{Config, DetectorKind, Observation, Trigger, service_of};
use crate::{
    baseline::{self, Baselines, Profile, Service},
    datapath::events::FlowObservation,
};

/// LAN peers a (non-admin) service must have reached while learning to take new ones.
pub const SHARED_SERVICE_PEERS: usize = 2;

/// DNS, over UDP and TCP: a device with either learnt resolves names.
const DNS_SERVICES: [Service; 2] = [Service { proto: proto::UDP, port: 53 }, Service { proto: proto::TCP, port: 53 }];

/// Anycast addresses of the big public DNS resolvers (Google, Cloudflare, Quad9, OpenDNS,
/// Level 3, AdGuard, 114DNS, DNSPod, AliDNS, Baidu). They serve name resolution only, over
/// DNS, DoT, DoH or HTTP (DNSPod's HTTPDNS on port 80).
pub const DEFAULT_PUBLIC_RESOLVERS: [&str; 24] = [
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
    "1.1.1.1",
    "1.0.0.1",
    "2606:4700:4700::1111",
    "2606:4700:4700::1001",
    "9.9.9.9",
    "149.112.112.112",
    "2620:fe::fe",
    "208.67.222.222",
    "208.67.220.220",
    "4.2.2.1",
    "4.2.2.2",
    "94.140.14.14",
    "94.140.15.15",
    "114.114.114.114",
    "114.114.115.115",
    "119.29.29.29",
    "182.254.116.116",
    "223.5.5.5",
    "223.6.6.6",
    "180.76.76.76",
];

/// True when the learnt `service` already moved between servers enough that a new prefix is
/// expected of it.
fn rotates(config: &Config, service: Option<&baseline::profile::ServiceProfile>) -> bool {
    let Some(service) = service else { return false };
    let prefixes = service.prefixes.len();
    // Either many servers, or a new server for a good share of the flows (each learnt prefix
    // was new exactly once): an NTP client polling a fresh pool member each time.
    prefixes >= config.diverse_service_prefixes
        || (prefixes >= 2 && prefixes as f64 >= config.rotating_share * service.flows as f64)
}

/// An upstream destination the baseline does not explain.
pub(super) fn new_destination(
    config: &Config,
    baselines: &Baselines,
    profile: &Profile,
    flow: &FlowObservation,
    text: &str,
) -> Option<Trigger> {
    let name = baselines.name_of(flow.dst);
    if profile.knows_destination(flow.dst) || name.is_some_and(|n| profile.knows_name(n)) {
        return None;
    }
    let service = service_of(flow);
    if rotates(config, profile.services.get(&service)) || baselines.is_forwarded(flow) {
        return None;
    }
    // The vendor's cloud: reached by its other devices here, or a service they reach at
    // ever-new servers.
    if baselines
        .site()
        .vendor_peers(flow.mac)
        .is_some_and(|peers| peers.know(flow.dst, name) || rotates(config, peers.services.get(&service)))
    {
        return None;
    }
    if config.public_resolvers.contains(&flow.dst) && DNS_SERVICES.iter().any(|s| profile.services.contains_key(s)) {
        return None;
    }
    let unknown_service = !profile.services.contains_key(&service);
    // Explainable sum: 0.6 for leaving the learnt destinations, +0.2 when no DNS answer
    // named it (hard-coded IPs are how implants reach their controllers), +0.2 for a
    // service the device never used.
    let score = 0.6 + if name.is_none() { 0.2 } else { 0.0 } + if unknown_service { 0.2 } else { 0.0 };
    let prefixes: Vec<String> = profile.destinations.iter().take(6).map(ToString::to_string).collect();
    let names: Vec<&str> = profile.names.iter().take(6).map(String::as_str).collect();
    let vendor = match baselines.site().vendor_peers(flow.mac) {
        Some(peers) => format!("; the {} baselined devices of this vendor here reach none of it", peers.devices),
        None => String::new(),
    };
    Some(Trigger {
        detector: DetectorKind::NewDestination,
        score,
        expected: format!(
            "upstream destinations in the {} learnt prefixes ({}{}) or names under {} ({}); services {}{vendor}",
            profile.destinations.len(),
            prefixes.join(", "),
            if profile.destinations.len() > 6 { ", ..." } else { "" },
            profile.names.len(),
            names.join(", "),
            profile.services.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
        observed: format!(
            "{} ({}) on {service}{}; score = 0.6 new destination{}{} = {score:.1}",
            flow.dst,
            baselines.config().prefix_of(flow.dst),
            match name {
                Some(n) => format!(", resolved from unknown name {n}"),
                None => ", no DNS answer named it".to_owned(),
            },
            if name.is_none() { " + 0.2 no DNS name" } else { "" },
            if unknown_service { " + 0.2 new service" } else { "" },
        ),
        flows: vec![text.to_owned()],
        observation: Some(Observation::Destination {
            prefix: baselines.config().prefix_of(flow.dst),
            proto: service.proto,
            port: service.port,
        }),
    })
}

/// A live LAN host the device had no conversation with while learning.
pub(super) fn lateral(baselines: &Baselines, profile: &Profile, flow: &FlowObservation, text: &str) -> Option<Trigger> {
    if profile.knows_peer(flow.dst) || baselines.is_forwarded(flow) {
        return None;
    }
    let peer = baselines.site().host(flow.dst)?;
    let service = service_of(flow);
    let admin = super::ADMIN_PORTS.contains(&service.port) && service.proto == proto::TCP;
    // A service the device already used with several LAN hosts (the app on a phone, a hub)
    // takes new ones; remote shells and file shares never do.
    let service_peers = profile.services.get(&service).map_or(0, |s| s.peers.len());
    if !admin && service_peers >= SHARED_SERVICE_PEERS {
        return None;
    }
    let unknown_service = !profile.services.contains_key(&service);
    // 0.5 for a new LAN peer, +0.3 for a remote-shell or file-share port, +0.2 for a
    // service the device never used.
    let score = 0.5 + if admin { 0.3 } else { 0.0 } + if unknown_service { 0.2 } else { 0.0 };
    Some(Trigger {
        detector: DetectorKind::LateralMovement,
        score,
        expected: format!(
            "LAN peers {{{}}}, callers {{{}}}",
            profile.peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            profile.callers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
        observed: format!(
            "new LAN peer {} ({peer}) on {service}; score = 0.5 new peer{}{} = {score:.1}",
            flow.dst,
            if admin { " + 0.3 admin port" } else { "" },
            if unknown_service { " + 0.2 new service" } else { "" }
        ),
        flows: vec![text.to_owned()],
        observation: Some(Observation::Peer { addr: flow.dst, proto: service.proto, port: service.port }),
    })
}

/// The default `detect.public_resolvers`.
pub fn default_public_resolvers() -> Vec<IpAddr> {
    DEFAULT_PUBLIC_RESOLVERS.iter().filter_map(|a| a.parse().ok()).collect()
}
