//! Beaconing: a device connecting to one address no DNS answer named, again and again at a
//! regular period (an implant polling its controller). Needs no history of the device: each
//! device's recent connections per unnamed destination are timed as they come, and only a
//! destination its own frozen baseline or its type's baseline already shows is left out
//! (telemetry to a vendor's hard-coded address, learnt while nothing was flagged).
use gateway_ebpf::proto;
use std::{net::IpAddr, time::Duration};

use super::{Config, DetectorKind, DeviceState, Observation, Trigger, novelty, service_of};
use crate::{
    baseline::{Baselines, Profile, Service, profile::Periodicity},
    datapath::events::FlowObservation,
};

/// Destinations timed per device; past it the table starts over (bounded memory, and a
/// device reaching this many unnamed destinations is the scan detector's).
pub const BEACON_DESTINATIONS: usize = 256;
/// Shortest and longest period called a beacon: faster is a retry loop or a stream, slower
/// than an hour takes longer to see than an incident is kept.
pub const MIN_BEACON_PERIOD: Duration = Duration::from_secs(5);
pub const MAX_BEACON_PERIOD: Duration = Duration::from_secs(3_600);
/// Ports below this are the registered web, mail and name services; raw TCP above it, to an
/// unnamed address, is what bot controllers listen on.
pub const HIGH_PORTS: u16 = 1_024;

/// Per device: connection timing per unnamed destination and service.
pub(super) type Beacons = std::collections::HashMap<(IpAddr, Service), Periodicity>;

/// Times an upstream connection; a trigger when its destination now beacons.
pub(super) fn beaconing(
    config: &Config,
    baselines: &Baselines,
    state: &mut DeviceState,
    flow: &FlowObservation,
    text: &str,
) -> Option<Trigger> {
    let service = service_of(flow);
    let named = baselines.name_of(flow.dst).is_some();
    // Pool services (NTP polls) and name resolution are periodic by design.
    if named
        || novelty::ROTATING_SERVICES.contains(&service)
        || novelty::DNS_SERVICES.contains(&service)
        || config.public_resolvers.contains(&flow.dst)
        || baselines.is_forwarded(flow)
    {
        return None;
    }
    if state.beacons.len() >= BEACON_DESTINATIONS && !state.beacons.contains_key(&(flow.dst, service)) {
        state.beacons.clear();
    }
    let timing = state.beacons.entry((flow.dst, service)).or_default();
    timing.observe(flow.time);
    let period = Duration::from_secs_f64(timing.mean_secs.max(0.0));
    if !timing.is_periodic() || !(MIN_BEACON_PERIOD..=MAX_BEACON_PERIOD).contains(&period) {
        return None;
    }
    let prefix = baselines.config().prefix_of(flow.dst);
    let learnt = |profile: &Profile| profile.services.get(&service).is_some_and(|s| s.prefixes.contains(&prefix));
    let own = baselines.device(flow.mac).and_then(|b| b.baselined()).is_some_and(learnt);
    if own || baselines.type_peers(flow.mac).is_some_and(|(_, peers)| learnt(&peers.profile)) {
        return None;
    }
    let raw_tcp = flow.proto == proto::TCP && flow.dst_port >= HIGH_PORTS;
    // 0.6 for a regular beat to an address no name stands for, + 0.2 when it is raw TCP to
    // a high port.
    let score = 0.6 + if raw_tcp { 0.2 } else { 0.0 };
    Some(Trigger {
        detector: DetectorKind::Beaconing,
        score,
        expected: format!(
            "no periodic connections to an unnamed address outside the learnt ones (periods {}–{} s)",
            MIN_BEACON_PERIOD.as_secs(),
            MAX_BEACON_PERIOD.as_secs()
        ),
        observed: format!(
            "{} connections to {} on {service} every {:.1} s ± {:.1} s, no DNS answer named it; score = 0.6 beacon{} = {score:.1}",
            timing.count + 1,
            flow.dst,
            timing.mean_secs,
            timing.std_dev_secs(),
            if raw_tcp { " + 0.2 raw TCP to a high port" } else { "" }
        ),
        flows: vec![text.to_owned()],
        observation: Some(Observation::Destination { prefix, proto: service.proto, port: service.port }),
    })
}
