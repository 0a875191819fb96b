//! Detection over packet captures: `datapath::replay` turns capture files into the events
//! and per-interval counters XDP would have produced, and they run through the same
//! `Detector` as live traffic, with the threat-intelligence lists of `detect.threat_intel`
//! loaded as `iotgw run` loads them. Reads capture files and those lists; writes nothing
//! (`iotgw analyze` renders the result).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::{
    Alert, Detector, DetectorKind,
    intel::{self, IntelError},
};
use crate::{
    datapath::replay::{self, IntervalCounters, ReplayError, ReplayItem},
    datapath::traffic::TrafficSample,
    device::Mac,
    pipeline::Input,
};

/// Counter interval of offline replays: the lead's live poller reads the XDP counters every
/// second too.
pub const REPLAY_INTERVAL: Duration = Duration::from_secs(1);

/// The traffic samples of one replayed interval.
pub fn traffic_inputs(counters: &IntervalCounters) -> impl Iterator<Item = Input> + '_ {
    counters.devices.iter().map(|(mac, c)| {
        Input::Traffic(TrafficSample {
            mac: *mac,
            interval_start: counters.start,
            interval: counters.length,
            counters: *c,
        })
    })
}

/// Runs one replayed item through the detector.
pub fn handle_item(detector: &mut Detector, item: ReplayItem) -> Vec<Alert> {
    match item {
        ReplayItem::Event(event) => detector.handle(&Input::Datapath(event)),
        ReplayItem::Interval(counters) => traffic_inputs(&counters).flat_map(|input| detector.handle(&input)).collect(),
    }
}

/// Replays capture files (in the order given) through the detector; returns every alert,
/// each with the file it came from.
pub fn replay_files(detector: &mut Detector, paths: &[PathBuf]) -> Result<Vec<(PathBuf, Alert)>, ReplayError> {
    let mut alerts = Vec::new();
    replay::replay_files(paths, REPLAY_INTERVAL, |path: &Path, item| {
        alerts.extend(handle_item(detector, item).into_iter().map(|alert| (path.to_owned(), alert)));
    })?;
    Ok(alerts)
}

/// Share of a MAC's flows with a source address outside the LAN above which it is a router.
pub const ROUTER_FORWARDED_SHARE: f64 = 0.5;
/// Forwarded flows a MAC must have sent before the share counts.
pub const ROUTER_MIN_FORWARDED: u64 = 10;
const PORT_DHCP_SERVER: u16 = 67;

/// The router(s) in captures taken on a LAN: the MAC sending the most flows whose source
/// address lies outside the LAN (forwarded traffic; more than half its flows), and MACs
/// answering DHCP from port 67. Live, the
/// gateway is iotgw itself and never appears on its LAN ingress; offline its frames must be
/// set aside (`detect::Config::gateway_macs`) or they look like one device talking to all.
pub fn infer_gateways(paths: &[PathBuf], lan: &crate::baseline::Config) -> Result<Vec<Mac>, ReplayError> {
    let mut forwarded: BTreeMap<Mac, (u64, u64)> = BTreeMap::new();
    let mut dhcp_servers = std::collections::BTreeSet::new();
    replay::replay_files(paths, REPLAY_INTERVAL, |_, item| {
        if let ReplayItem::Event(crate::datapath::events::DatapathEvent::Flow(flow)) = item {
            if flow.proto == 0x11 && flow.src_port == PORT_DHCP_SERVER {
                dhcp_servers.insert(flow.mac);
            }
            let counts = forwarded.entry(flow.mac).or_default();
            counts.1 += 1;
            if !flow.src.is_unspecified() && !lan.is_lan(flow.src) {
                counts.0 += 1;
            }
        }
    })?;
    // A LAN has one upstream router: the MAC forwarding the most traffic from outside
    // (a device in setup mode NATing a phone forwards far less). DHCP servers route too.
    let busiest = forwarded
        .into_iter()
        .filter(|(_, (out, all))| *out >= ROUTER_MIN_FORWARDED && *out as f64 > ROUTER_FORWARDED_SHARE * *all as f64)
        .max_by_key(|(_, (out, _))| *out)
        .map(|(mac, _)| mac);
    let mut gateways: Vec<Mac> = busiest.into_iter().chain(dhcp_servers).collect();
    gateways.sort();
    gateways.dedup();
    Ok(gateways)
}

/// A learning period no capture reaches: with learning captures, learning ends when they do
/// (`end_learning`), not when a device's period would have.
pub const LEARN_UNTIL_TOLD: Duration = Duration::from_secs(10 * 365 * 24 * 3_600);

/// `config` with every learning period set to `LEARN_UNTIL_TOLD`.
pub fn learn_until_told(mut config: crate::baseline::Config) -> crate::baseline::Config {
    config.learning_secs = LEARN_UNTIL_TOLD.as_secs();
    config.seeded_learning_secs = LEARN_UNTIL_TOLD.as_secs();
    config.class_learning_secs.values_mut().for_each(|secs| *secs = LEARN_UNTIL_TOLD.as_secs());
    config
}

/// Ends the learning of every device now (ops: "learn on these captures, then enforce"),
/// except those seen in too few windows. Returns how many devices are baselined.
pub fn end_learning(detector: &mut Detector, now: SystemTime) -> usize {
    detector.baselines_mut().end_learning(now);
    detector.baselines().devices().filter(|(_, b)| b.baselined().is_some()).count()
}

/// Why an offline analysis could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyzeError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A `detect.threat_intel` list could not be read (as `iotgw run` would refuse to start).
    #[error(transparent)]
    Intel(#[from] IntelError),
}

/// Detection over captures as `iotgw analyze` runs it: the router(s) of all the captures are
/// set aside; the threat-intelligence lists of `detect.threat_intel` are loaded and put in
/// force as at run time; each device gets its type from `types` (the inventory's classification);
/// devices learn on `learn` (in order), learning ends at its last packet, then `test` is
/// checked against the baselines. With no `learn` captures every device is still learning
/// while `test` plays, so only the detectors that need no baseline apply (scans, floods, ARP,
/// command-and-control protocols, beaconing, threat intelligence).
pub fn analyze(
    learn: &[PathBuf],
    test: &[PathBuf],
    types: &[(Mac, String)],
    baseline: crate::baseline::Config,
    mut detect: super::Config,
) -> Result<Analysis, AnalyzeError> {
    let threat_intel = intel::load_all(&detect.threat_intel)?;
    let baseline = if learn.is_empty() { baseline } else { learn_until_told(baseline) };
    let all: Vec<PathBuf> = learn.iter().chain(test).cloned().collect();
    let gateways = infer_gateways(&all, &baseline)?;
    detect.gateway_macs.extend(gateways.iter().copied());
    let mut detector = Detector::new(detect, crate::baseline::Baselines::new(baseline));
    let lists = threat_intel.lists().iter().map(ListLoaded::new).collect();
    detector.set_threat_intel(std::sync::Arc::new(threat_intel));
    for (mac, class) in types {
        detector.handle(&Input::Class { mac: *mac, class: class.clone() });
    }
    let learning_alerts = replay_files(&mut detector, learn)?;
    let now = detector.now();
    let baselined = if learn.is_empty() { 0 } else { end_learning(&mut detector, now) };
    let alerts = replay_files(&mut detector, test)?;
    Ok(Analysis {
        threat_intel: lists,
        routers: gateways,
        devices: detector.baselines().devices().count(),
        baselined,
        learning: AlertSummary::new(&learning_alerts),
        alerts: AlertSummary::new(&alerts),
    })
}

/// What `analyze` found.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// The threat-intelligence lists in force.
    pub threat_intel: Vec<ListLoaded>,
    /// MACs set aside as routers.
    pub routers: Vec<Mac>,
    /// Devices seen.
    pub devices: usize,
    /// Devices baselined when learning ended.
    pub baselined: usize,
    /// Alerts raised while learning (absolute limits only).
    pub learning: AlertSummary,
    /// Alerts on the test captures.
    pub alerts: AlertSummary,
}

impl Analysis {
    /// The alerts section of `iotgw analyze`'s text output.
    pub fn render(&self) -> String {
        let routers: Vec<String> = self.routers.iter().map(ToString::to_string).collect();
        let lists: String = self.threat_intel.iter().map(ListLoaded::render).collect();
        format!(
            "{lists}Detection: {} devices, {} baselined, routers set aside: {}\n{}{}",
            self.devices,
            self.baselined,
            if routers.is_empty() { "none".to_owned() } else { routers.join(", ") },
            if self.learning.alerts > 0 {
                format!("While learning — {}", self.learning.render())
            } else {
                String::new()
            },
            self.alerts.render()
        )
    }
}

/// A threat-intelligence list as loaded for the analysis.
#[derive(Clone, Debug, Serialize)]
pub struct ListLoaded {
    pub path: PathBuf,
    pub entries: usize,
    /// Lines refused, and the first few of them (escaped by `intel`).
    pub refused: usize,
    pub refused_examples: Vec<String>,
}

impl ListLoaded {
    fn new(list: &intel::IntelList) -> Self {
        Self {
            path: list.path.clone(),
            entries: list.entries(),
            refused: list.refused,
            refused_examples: list.refused_examples.clone(),
        }
    }

    /// `Threat intelligence: PATH: N entries, M lines refused (...)`.
    fn render(&self) -> String {
        let refused = match self.refused {
            0 => String::new(),
            n => format!(", {n} lines refused ({})", self.refused_examples.join("; ")),
        };
        format!(
            "Threat intelligence: {}: {} entries{refused}\n",
            crate::untrusted::escape(&self.path.display().to_string()),
            self.entries
        )
    }
}

/// The alerts section of an offline analysis: per device, its incidents.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AlertSummary {
    pub alerts: usize,
    pub devices: BTreeMap<Mac, Vec<IncidentSummary>>,
}

/// One incident as `iotgw analyze` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentSummary {
    pub detector: DetectorKind,
    pub incident: String,
    pub score: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: time::OffsetDateTime,
    pub expected: String,
    pub observed: String,
    pub flows: Vec<String>,
    pub file: PathBuf,
}

impl AlertSummary {
    /// Groups open alerts (resolutions are dropped) by device.
    pub fn new(alerts: &[(PathBuf, Alert)]) -> Self {
        let mut summary = AlertSummary::default();
        for (file, alert) in alerts.iter().filter(|(_, a)| !a.resolved) {
            summary.alerts += 1;
            summary.devices.entry(alert.mac).or_default().push(IncidentSummary {
                detector: alert.detector,
                incident: alert.incident.0.clone(),
                score: alert.score,
                first_seen: time::OffsetDateTime::from(alert.time),
                expected: alert.expected.clone(),
                observed: alert.observed.clone(),
                flows: alert.flows.clone(),
                file: file.clone(),
            });
        }
        summary
    }

    /// Plain-text rendering: one block per device, one line per incident plus evidence.
    pub fn render(&self) -> String {
        if self.devices.is_empty() {
            return "Alerts: none\n".to_owned();
        }
        let mut out = format!("Alerts: {} on {} device(s)\n", self.alerts, self.devices.len());
        for (mac, incidents) in &self.devices {
            out.push_str(&format!("  {mac}\n"));
            for incident in incidents {
                out.push_str(&format!(
                    "    {} score {:.2} at {}\n",
                    incident.detector, incident.score, incident.first_seen
                ));
                out.push_str(&format!(
                    "      expected: {}\n      observed: {}\n",
                    incident.expected, incident.observed
                ));
                for flow in incident.flows.iter().take(3) {
                    out.push_str(&format!("      flow: {flow}\n"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
