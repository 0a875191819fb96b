//! The novelty detectors: a baselined device opening a flow its baseline does not explain.
//! Upstream that is a **new destination**, on the LAN **lateral movement**.
//!
//! Before scoring, each first rules out the churn every network has, in words an analyst can
//! check against the baseline:
//! - the device's own profile (learnt prefixes, names, peers and the hosts that called it);
//!   a new address counts as known only through its prefix or **the DNS name that resolved
//!   to it** (a CDN or a new firmware's servers under the names the device already used);
//! - pool services (NTP, STUN/TURN: `ROTATING_SERVICES`) whose servers the device already
//!   took at ever-new addresses while learning. Only those: an HTTPS service reached at
//!   many /24s does not take an unnamed new one, or command and control on 443 would hide;
//! - traffic the device forwards for a host behind it (`baseline::site`);
//! - what the baselined devices of its **type** reach here (its class baseline: the same
//!   names, or the same prefix on the same service), never a pool by OUI, which names the
//!   Wi-Fi chip's maker as often as the product's;
//! - another well-known public DNS resolver, for a device that resolves names;
//! - on the LAN, an address no live host uses (a stale callback; probes are the scan
//!   detector's), or a service the device already uses with several LAN hosts (an app or a
//!   hub talking to its devices), unless it is a remote shell or file share.
use gateway_ebpf::proto;
use std::net::IpAddr;

use super::{Config, DetectorKind, Observation, Trigger, service_of};
use crate::{
    baseline::{self, Baselines, ClassBaseline, Profile, Service},
    datapath::events::FlowObservation,
};

/// LAN peers a (non-admin) service must have reached while learning to take new ones.
pub const SHARED_SERVICE_PEERS: usize = 2;

/// DNS, over UDP and TCP: a device with either learnt resolves names.
pub(super) const DNS_SERVICES: [Service; 2] =
    [Service { proto: proto::UDP, port: 53 }, Service { proto: proto::TCP, port: 53 }];

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

/// Services whose servers are handed out by address from pools that move (NTP pools, STUN
/// and TURN relays): a device that already took new servers of one while learning takes
/// more. The only services where an address no DNS answer named is routine.
pub const ROTATING_SERVICES: [Service; 6] = [
    Service { proto: proto::UDP, port: 123 },
    Service { proto: proto::UDP, port: 3478 },
    Service { proto: proto::TCP, port: 3478 },
    Service { proto: proto::UDP, port: 5349 },
    Service { proto: proto::TCP, port: 5349 },
    Service { proto: proto::UDP, port: 19302 },
];

/// True when `service` is a pool service and its learnt `profile` already moved between
/// servers enough that a new prefix is expected of it.
fn rotates(config: &Config, service: Service, profile: Option<&baseline::profile::ServiceProfile>) -> bool {
    let Some(profile) = profile.filter(|_| ROTATING_SERVICES.contains(&service)) else { return false };
    let prefixes = profile.prefixes.len();
    // Either many servers, or a new server for a good share of the flows (each learnt prefix
    // was new exactly once): an NTP client polling a fresh pool member each time.
    prefixes >= config.diverse_service_prefixes
        || (prefixes >= 2 && prefixes as f64 >= config.rotating_share * profile.flows as f64)
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
    if rotates(config, service, profile.services.get(&service)) || baselines.is_forwarded(flow) {
        return None;
    }
    // The cloud of the device's type: the same service at a prefix or under a name its
    // peers used, or a pool service they take at ever-new servers.
    let prefix = baselines.config().prefix_of(flow.dst);
    let type_peers = baselines.type_peers(flow.mac);
    if type_peers.is_some_and(|(_, peers)| {
        let theirs = peers.profile.services.get(&service);
        theirs.is_some_and(|s| {
            s.prefixes.contains(&prefix) || name.is_some_and(|n| baseline::profile::names_cover(&s.names, n))
        }) || rotates(config, service, theirs)
    }) {
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
    let peers = type_peers_note(type_peers);
    Some(Trigger {
        detector: DetectorKind::NewDestination,
        score,
        expected: format!(
            "upstream destinations in the {} learnt prefixes ({}{}) or names under {} ({}); services {}{peers}",
            profile.destinations.len(),
            prefixes.join(", "),
            if profile.destinations.len() > 6 { ", ..." } else { "" },
            profile.names.len(),
            names.join(", "),
            profile.services.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
        observed: format!(
            "{} ({prefix}) on {service}{}; score = 0.6 new destination{}{} = {score:.1}",
            flow.dst,
            match name {
                Some(n) => format!(", resolved from unknown name {n}"),
                None => ", no DNS answer named it".to_owned(),
            },
            if name.is_none() { " + 0.2 no DNS name" } else { "" },
            if unknown_service { " + 0.2 new service" } else { "" },
        ),
        flows: vec![text.to_owned()],
        observation: Some(Observation::Destination { prefix, proto: service.proto, port: service.port }),
    })
}

/// `; the N baselined <type> devices here reach none of it` when the device has type peers.
pub(super) fn type_peers_note(type_peers: Option<(&str, &ClassBaseline)>) -> String {
    match type_peers {
        Some((class, peers)) => format!("; the {} baselined {class} devices here reach none of it", peers.devices),
        None => String::new(),
    }
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
