//! Command-and-control protocols: a device opening IRC (the channel of Mirai-family,
//! Kaiten/Tsunami and many older IoT botnets) or telnet (how Mirai spreads) towards the
//! Internet. Neither needs any history of the device: an IoT device has no use for them
//! unless its own baseline or its type's shows it, and what a baseline learnt came from
//! inputs no detector flagged.
use gateway_ebpf::proto;

use super::{DetectorKind, Observation, TELNET_PORTS, Trigger, service_of};
use crate::{
    baseline::{Baselines, Profile},
    datapath::events::FlowObservation,
};

/// IRC's ports: 6665-6669 plain, 6697 over TLS.
pub const IRC_PORTS: [u16; 6] = [6665, 6666, 6667, 6668, 6669, 6697];
/// Score of IRC towards the Internet: a botnet channel, seldom anything else on IoT.
pub const IRC_SCORE: f64 = 0.9;
/// Score of one telnet connection towards the Internet (a scan adds its own alert).
pub const TELNET_OUT_SCORE: f64 = 0.7;

/// An upstream IRC or telnet connection neither the device's profile nor its type's shows.
pub(super) fn c2_protocol(baselines: &Baselines, flow: &FlowObservation, text: &str) -> Option<Trigger> {
    if flow.proto != proto::TCP || baselines.is_forwarded(flow) {
        return None;
    }
    let (score, what) = if IRC_PORTS.contains(&flow.dst_port) {
        (IRC_SCORE, "IRC, the command-and-control channel of Mirai-family and Kaiten/Tsunami bots")
    } else if TELNET_PORTS.contains(&flow.dst_port) {
        (TELNET_OUT_SCORE, "telnet out, how Mirai-family bots spread")
    } else {
        return None;
    };
    let service = service_of(flow);
    let prefix = baselines.config().prefix_of(flow.dst);
    let learnt = |profile: &Profile| profile.services.get(&service).is_some_and(|s| s.prefixes.contains(&prefix));
    let type_peers = baselines.type_peers(flow.mac);
    if baselines.device(flow.mac).is_some_and(|b| learnt(b.profile()))
        || type_peers.is_some_and(|(_, c)| learnt(&c.profile))
    {
        return None;
    }
    let basis = super::novelty::type_peers_note(type_peers);
    Some(Trigger {
        detector: DetectorKind::C2Protocol,
        score,
        expected: format!("no {service} to {prefix}: the device's profile shows none{basis}"),
        observed: format!("{} on {service}: {what}; score = {score:.1}", flow.dst),
        flows: vec![text.to_owned()],
        observation: Some(Observation::Destination { prefix, proto: service.proto, port: service.port }),
    })
}
