//! detect: is this abnormal? Reads `pipeline::Input`s (flows, samples, traffic counters,
//! classes), compares them with each device's baseline (which it feeds: `Baselines` learns
//! only from inputs no detector flagged) and with absolute limits, and writes `Alert`s: one
//! per incident (device + detector) when it starts, and a `resolved` one when it has been
//! calm for `calm_secs`. Every alert says what was expected, what was seen and how its score
//! was computed, and carries what it observed in a form a baseline can learn (`Observation`)
//! when an analyst calls it normal; what was so learnt (`baseline::learned`) raises no alert.
//!
//! Some detectors need no history of the device, so a device that just appeared is covered
//! too: scans, floods and ARP spoofing against absolute limits, command-and-control
//! protocols (`c2`), beaconing (`beacon`) and threat-intelligence lists (`intel`); and what
//! the baselined devices of its type reach (the class baseline) exempts it as its own would.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    baseline::{
        self, Baselines, DeviceBaseline, Profile, Service, is_group_or_unspecified, is_initiation, stats::feature,
    },
    datapath::{
        events::{DatapathEvent, FlowObservation, PacketSample, SampleKind},
        traffic::TrafficSample,
    },
    device::Mac,
    event::{Measure, Observation},
    pipeline::Input,
};

pub mod alert;
mod arp;
mod beacon;
mod budget;
mod c2;
mod flows;
pub mod intel;
mod novelty;
pub mod offline;
mod resolver;
pub mod synthetic;
mod traffic;

pub use alert::{Alert, DetectorKind, IncidentId, Technique};

/// Packet rates are per second over the last second of traffic samples, however long each
/// sample is: shorter samples only make a flood show sooner.
pub const RATE_SPAN: Duration = Duration::from_secs(1);
/// Slack on `RATE_SPAN` for samples read a little late.
const RATE_SLACK: Duration = Duration::from_millis(50);
/// Window over which scans, new-flow rates and ARP storms are counted.
pub const DEFAULT_SCAN_WINDOW: Duration = Duration::from_secs(10);
/// Distinct hosts a device may open flows to in one window before it is a scan (when its
/// baseline does not show more).
pub const DEFAULT_SCAN_HOSTS: usize = 24;
/// Distinct ports on one host in one window before it is a (vertical) port scan.
pub const DEFAULT_SCAN_PORTS: usize = 16;
/// Times the learnt maximum of distinct hosts per window a scan must exceed.
pub const DEFAULT_SCAN_FACTOR: f64 = 2.0;
/// Packets per second from a device without a baseline that make a flood.
pub const DEFAULT_FLOOD_PPS: f64 = 5_000.0;
/// New flows per window from a device without a baseline that make a flood.
pub const DEFAULT_FLOOD_FLOWS: usize = 400;
/// Smallest flood threshold for a baselined device, packets per second.
pub const DEFAULT_FLOOD_MIN_PPS: f64 = 300.0;
/// Times the learnt per-window maximum a per-second rate must exceed to be a flood.
pub const DEFAULT_FLOOD_FACTOR: f64 = 5.0;
/// Times the learnt per-window maximum bytes sent a window must exceed.
pub const DEFAULT_VOLUME_FACTOR: f64 = 4.0;
/// Standard deviations above the learnt mean a window must also exceed.
pub const DEFAULT_VOLUME_SIGMAS: f64 = 6.0;
/// Smallest volume threshold, bytes per window (small devices send next to nothing).
pub const DEFAULT_VOLUME_MIN_BYTES: u64 = 1_000_000;
/// Gratuitous ARPs per window from one MAC that make a storm.
pub const DEFAULT_ARP_STORM: usize = 20;
/// How long an IP-to-MAC binding learnt from ARP holds against a second claimant.
pub const DEFAULT_ARP_BINDING: Duration = Duration::from_secs(3_600);
/// Distinct upstream prefixes after which a pool service's destinations count as rotating.
pub const DEFAULT_DIVERSE_SERVICE_PREFIXES: usize = 4;
/// Share of a service's learnt flows that reached a prefix new to it, from which (with two
/// prefixes or more) the service counts as rotating.
pub const DEFAULT_ROTATING_SHARE: f64 = 0.25;
/// Quiet time after which an incident is resolved.
pub const DEFAULT_CALM: Duration = Duration::from_secs(60);
/// Flows remembered per device for the scan window (a scanner at line rate stays bounded).
pub const RECENT_FLOWS_CAPACITY: usize = 8_192;
/// Rise in score at which an open incident is alerted again.
pub const ESCALATION_STEP: f64 = 0.1;
/// Flows listed as evidence in one alert.
pub const EVIDENCE_FLOWS: usize = 10;
/// Ports whose appearance towards a new LAN peer weighs more: remote shells and file shares.
pub const ADMIN_PORTS: [u16; 8] = [22, 23, 445, 2323, 3389, 5555, 5900, 7547];
/// Telnet ports Mirai and its descendants scan.
pub const TELNET_PORTS: [u16; 2] = [23, 2323];

/// `[detect]` section of the gateway configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub scan_window_secs: u64,
    pub scan_hosts: usize,
    pub scan_ports: usize,
    pub scan_factor: f64,
    pub flood_pps: f64,
    pub flood_flows: usize,
    pub flood_min_pps: f64,
    pub flood_factor: f64,
    pub volume_factor: f64,
    pub volume_sigmas: f64,
    pub volume_min_bytes: u64,
    pub arp_storm: usize,
    pub arp_binding_secs: u64,
    pub calm_secs: u64,
    /// The gateway's own addresses: a second MAC claiming one is the classic MITM.
    pub gateway_ips: Vec<IpAddr>,
    /// MACs of the gateway or upstream router: what they send is forwarded traffic, not a
    /// device's (offline, captures taken on a LAN include the router).
    pub gateway_macs: Vec<Mac>,
    /// A pool service (`udp/123`, see `novelty::ROTATING_SERVICES`) reached at this many
    /// distinct upstream prefixes while learning takes new prefixes as normal (NTP pools and
    /// STUN relays rotate addresses; other services take new addresses only by name).
    pub diverse_service_prefixes: usize,
    /// ... or at two prefixes or more when this share of its flows reached a new one.
    pub rotating_share: f64,
    /// Public DNS resolvers: reaching another one is name resolution, for a device that
    /// resolves names. Their answers name addresses (`trusted_resolvers`).
    pub public_resolvers: Vec<IpAddr>,
    /// Resolvers whose answers name addresses (and so exempt a destination known by name),
    /// besides `gateway_ips`, `public_resolvers`, the routers' (`gateway_macs`) own LAN
    /// addresses and the resolvers DHCP replies of routers and `dhcp_servers` hand out.
    /// Answers from any other resolver name nothing and raise `untrusted_resolver`.
    pub trusted_resolvers: Vec<IpAddr>,
    /// DHCP servers whose replies announce trusted resolvers, besides `gateway_macs`: set at
    /// run time from `source_guard.dhcp_servers`, never read from the file.
    #[serde(skip)]
    pub dhcp_servers: Vec<Mac>,
    /// Threat-intelligence lists (`[[detect.threat_intel]]`, see `intel`), reloaded when
    /// their files change.
    pub threat_intel: Vec<intel::IntelSource>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            scan_window_secs: DEFAULT_SCAN_WINDOW.as_secs(),
            scan_hosts: DEFAULT_SCAN_HOSTS,
            scan_ports: DEFAULT_SCAN_PORTS,
            scan_factor: DEFAULT_SCAN_FACTOR,
            flood_pps: DEFAULT_FLOOD_PPS,
            flood_flows: DEFAULT_FLOOD_FLOWS,
            flood_min_pps: DEFAULT_FLOOD_MIN_PPS,
            flood_factor: DEFAULT_FLOOD_FACTOR,
            volume_factor: DEFAULT_VOLUME_FACTOR,
            volume_sigmas: DEFAULT_VOLUME_SIGMAS,
            volume_min_bytes: DEFAULT_VOLUME_MIN_BYTES,
            arp_storm: DEFAULT_ARP_STORM,
            arp_binding_secs: DEFAULT_ARP_BINDING.as_secs(),
            calm_secs: DEFAULT_CALM.as_secs(),
            gateway_ips: Vec::new(),
            gateway_macs: Vec::new(),
            diverse_service_prefixes: DEFAULT_DIVERSE_SERVICE_PREFIXES,
            rotating_share: DEFAULT_ROTATING_SHARE,
            public_resolvers: novelty::default_public_resolvers(),
            trusted_resolvers: Vec::new(),
            dhcp_servers: Vec::new(),
            threat_intel: Vec::new(),
        }
    }
}

impl Config {
    /// The resolvers whose answers name addresses, and the DHCP servers whose replies add
    /// theirs (see `trusted_resolvers`; routers' own LAN addresses are added as they are seen).
    pub fn trusted_resolver_set(&self) -> baseline::TrustedResolvers {
        let configured = self.trusted_resolvers.iter().chain(&self.gateway_ips).chain(&self.public_resolvers);
        let dhcp_servers = self.gateway_macs.iter().chain(&self.dhcp_servers);
        baseline::TrustedResolvers::new(configured.copied(), dhcp_servers.copied())
    }

    /// Every bad value, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.scan_window_secs == 0 {
            problems.push("detect.scan_window_secs must be at least 1".to_owned());
        }
        for (name, value) in [
            ("scan_factor", self.scan_factor),
            ("flood_pps", self.flood_pps),
            ("flood_min_pps", self.flood_min_pps),
            ("flood_factor", self.flood_factor),
            ("volume_factor", self.volume_factor),
            ("volume_sigmas", self.volume_sigmas),
            ("rotating_share", self.rotating_share),
        ] {
            if !(value.is_finite() && value > 0.0) {
                problems.push(format!("detect.{name} = {value} must be a positive number"));
            }
        }
        problems.extend(self.threat_intel.iter().flat_map(intel::IntelSource::problems));
        problems
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.scan_window_secs.max(1))
    }
}

/// An initiated flow kept for the scan window.
#[derive(Clone, Debug)]
struct RecentFlow {
    time: SystemTime,
    dst: IpAddr,
    port: u16,
    text: String,
}

/// One traffic sample, as the rate and volume detectors keep it.
#[derive(Clone, Copy, Debug)]
struct TrafficSpan {
    start: SystemTime,
    end: SystemTime,
    tx_bytes: u64,
    tx_packets: u64,
}

/// Per-device state of the detectors.
#[derive(Debug, Default)]
struct DeviceState {
    recent: VecDeque<RecentFlow>,
    /// Traffic samples within the window.
    traffic: VecDeque<TrafficSpan>,
    gratuitous_arps: VecDeque<SystemTime>,
    ip: Option<IpAddr>,
    /// Connection timing per unnamed upstream destination (`beacon`).
    beacons: beacon::Beacons,
}

/// An open incident.
#[derive(Debug)]
struct Incident {
    last_trigger: SystemTime,
    device_ip: Option<IpAddr>,
    /// Highest score alerted so far.
    score: f64,
    /// The highest value of each rate the incident reached, alerted or not: what its
    /// `resolved` alert hands on for learning (a scan keeps growing between escalations).
    peaks: Vec<Observation>,
}

impl Incident {
    /// Keeps `seen` when it is a rate above this incident's peak of that measure.
    fn raise_peak(&mut self, seen: Option<Observation>) {
        let Some(seen @ Observation::Rate { measure, observed, .. }) = seen else { return };
        let peak = self.peaks.iter_mut().find(|p| matches!(p, Observation::Rate { measure: m, .. } if *m == measure));
        match peak {
            Some(Observation::Rate { observed: highest, .. }) if *highest >= observed => {}
            Some(peak) => *peak = seen,
            None => self.peaks.push(seen),
        }
    }
}

/// What one detector concluded about one input, before incident bookkeeping.
struct Trigger {
    detector: DetectorKind,
    score: f64,
    expected: String,
    observed: String,
    flows: Vec<String>,
    /// What to learn, should an analyst call it normal (`None`: nothing a baseline may take).
    observation: Option<Observation>,
}

/// The detect step (with the baseline step it feeds).
pub struct Detector {
    config: Config,
    baselines: Baselines,
    devices: HashMap<Mac, DeviceState>,
    incidents: HashMap<(Mac, DetectorKind), Incident>,
    /// IPv4 → (MAC that claimed it, when last claimed).
    arp_bindings: HashMap<Ipv4Addr, (Mac, SystemTime)>,
    /// The threat-intelligence lists in force.
    intel: Arc<intel::ThreatIntel>,
    now: SystemTime,
}

impl Detector {
    pub fn new(config: Config, mut baselines: Baselines) -> Self {
        baselines.set_trusted_resolvers(config.trusted_resolver_set());
        Self {
            config,
            baselines,
            devices: HashMap::new(),
            incidents: HashMap::new(),
            arp_bindings: HashMap::new(),
            intel: Arc::default(),
            now: SystemTime::UNIX_EPOCH,
        }
    }

    /// Puts threat-intelligence lists in force (loaded, or reloaded after a file changed).
    pub fn set_threat_intel(&mut self, intel: Arc<intel::ThreatIntel>) {
        self.intel = intel;
    }

    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    pub fn baselines_mut(&mut self) -> &mut Baselines {
        &mut self.baselines
    }

    /// The newest input time seen.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// Checks one input against every detector, then lets the baseline learn from it when
    /// nothing fired. Returns new incidents and incidents that calmed down.
    pub fn handle(&mut self, input: &Input) -> Vec<Alert> {
        if let Some(time) = input.time() {
            self.now = self.now.max(time);
        }
        let mac = input.mac();
        let relayed = self.config.gateway_macs.contains(&mac);
        let mut alerts = Vec::new();
        if let Input::Datapath(DatapathEvent::Sample(sample)) = input {
            let resolution = self.baselines.resolve(sample, relayed);
            if let Some((device, trigger)) = resolver::untrusted_resolver(&self.baselines, resolution) {
                alerts.extend(self.raise(device, vec![trigger]));
            }
        }
        if relayed {
            // Forwarded traffic is no device's; but a router's own LAN address (what it sends
            // from, what it claims in ARP) is a resolver: its DNS answers name the addresses
            // devices then connect to.
            match input {
                Input::Datapath(DatapathEvent::Flow(flow)) => self.baselines.trust_router_address(flow.src),
                Input::Datapath(DatapathEvent::Sample(sample)) => {
                    if let Some(arp) = baseline::arp_claim(sample).filter(|arp| arp.sender_mac == mac) {
                        self.baselines.trust_router_address(IpAddr::V4(arp.sender_ip));
                    }
                }
                _ => {}
            }
            alerts.extend(self.resolve_calm());
            return alerts;
        }
        let triggers = match input {
            Input::Datapath(DatapathEvent::Flow(flow)) => self.check_flow(flow),
            Input::Datapath(DatapathEvent::Sample(sample)) if sample.kind == SampleKind::Arp => self.check_arp(sample),
            Input::Traffic(sample) => self.check_traffic(sample),
            Input::Datapath(DatapathEvent::Budget(crossing)) => self.check_budget(crossing),
            _ => Vec::new(),
        };
        let learn = triggers.is_empty();
        alerts.extend(self.raise(mac, triggers));
        for change in self.baselines.handle(input, learn) {
            tracing::debug!(?change, "baseline change");
        }
        alerts.extend(self.resolve_calm());
        alerts
    }

    /// Opens or escalates `mac`'s incidents for `triggers`; returns the alerts to send.
    fn raise(&mut self, mac: Mac, mut triggers: Vec<Trigger>) -> Vec<Alert> {
        // What an analyst learnt as normal for this device raises no alert. Such inputs still
        // stay out of the profile, so unlearning takes the exception back whole.
        let learned = self.baselines.learned();
        triggers.retain(|t| !t.observation.is_some_and(|seen| learned.covers(mac, &seen)));
        let mut alerts = Vec::new();
        let device_ip = self.devices.get(&mac).and_then(|d| d.ip);
        for trigger in triggers {
            let key = (mac, trigger.detector);
            let mut observed = trigger.observed;
            if let Some(incident) = self.incidents.get_mut(&key) {
                incident.last_trigger = self.now;
                incident.raise_peak(trigger.observation);
                // A growing incident (a scan reaching more hosts) is alerted again when its
                // score has risen by a step, so responses that start at a higher score act.
                if trigger.score < incident.score + ESCALATION_STEP {
                    continue;
                }
                observed = format!("{observed} (escalated from {:.2})", incident.score);
                incident.score = trigger.score;
            } else {
                let mut incident =
                    Incident { last_trigger: self.now, device_ip, score: trigger.score, peaks: Vec::new() };
                incident.raise_peak(trigger.observation);
                self.incidents.insert(key, incident);
            }
            tracing::info!(device = %mac, detector = %trigger.detector, score = trigger.score, "alert");
            alerts.push(Alert {
                time: self.now,
                mac,
                device_ip,
                detector: trigger.detector,
                incident: IncidentId::new(mac, trigger.detector),
                score: trigger.score,
                expected: trigger.expected,
                observed,
                flows: trigger.flows,
                observations: trigger.observation.into_iter().collect(),
                resolved: false,
            });
        }
        alerts
    }

    /// Resolves incidents quiet for `calm_secs` (also call it on a timer when inputs stop).
    pub fn resolve_calm(&mut self) -> Vec<Alert> {
        let calm = Duration::from_secs(self.config.calm_secs);
        let now = self.now;
        let quiet: Vec<_> = self
            .incidents
            .iter()
            .filter(|(_, i)| now.duration_since(i.last_trigger).unwrap_or_default() >= calm)
            .map(|(key, _)| *key)
            .collect();
        let mut alerts = Vec::new();
        for (mac, detector) in quiet {
            let Some(incident) = self.incidents.remove(&(mac, detector)) else { continue };
            alerts.push(Alert {
                time: now,
                mac,
                device_ip: incident.device_ip,
                detector,
                incident: IncidentId::new(mac, detector),
                score: 0.0,
                expected: format!("no {detector} activity for {} s", calm.as_secs()),
                observed: format!("calm since {}", describe_time(incident.last_trigger)),
                flows: Vec::new(),
                observations: incident.peaks,
                resolved: true,
            });
        }
        alerts.sort_by(|a, b| a.incident.cmp(&b.incident));
        alerts
    }

    /// Advances the clock without input (live: a timer), resolving calm incidents.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Alert> {
        self.now = self.now.max(now);
        self.resolve_calm()
    }

    fn check_flow(&mut self, flow: &FlowObservation) -> Vec<Trigger> {
        let window = self.config.window();
        let state = self.devices.entry(flow.mac).or_default();
        state.ip = Some(flow.src);
        if !is_initiation(flow) {
            return Vec::new();
        }
        let text = alert::flow_text(flow);
        while state.recent.front().is_some_and(|f| apart(flow.time, f.time) > window) {
            state.recent.pop_front();
        }
        if state.recent.len() >= RECENT_FLOWS_CAPACITY {
            state.recent.pop_front();
        }
        state.recent.push_back(RecentFlow { time: flow.time, dst: flow.dst, port: flow.dst_port, text: text.clone() });
        let baseline = self.baselines.device(flow.mac);
        let mut triggers = Vec::new();
        triggers.extend(flows::scan(&self.config, state, flow, baseline));
        triggers.extend(flows::flow_flood(&self.config, state, self.baselines.rate_reference(flow.mac)));
        if is_group_or_unspecified(flow.dst) {
            return triggers;
        }
        let lan = self.baselines.config().is_lan(flow.dst);
        if let Some(profile) = baseline.and_then(DeviceBaseline::baselined) {
            if lan {
                triggers.extend(novelty::lateral(&self.baselines, profile, flow, &text));
            } else {
                triggers.extend(novelty::new_destination(&self.config, &self.baselines, profile, flow, &text));
            }
        }
        if !lan {
            // No history needed: these hold from a device's first flow on.
            triggers.extend(intel::listed(&self.intel, &self.baselines, flow, &text));
            triggers.extend(c2::c2_protocol(&self.baselines, flow, &text));
            triggers.extend(beacon::beaconing(&self.config, &self.baselines, state, flow, &text));
        }
        triggers
    }
}

fn service_of(flow: &FlowObservation) -> Service {
    let has_port = flow.proto == gateway_ebpf::proto::TCP || flow.proto == gateway_ebpf::proto::UDP;
    Service { proto: flow.proto, port: if has_port { flow.dst_port } else { 0 } }
}

/// How far apart two times are, whichever comes first: replayed captures may go back in
/// time between files, and a window must not survive that.
fn apart(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).or_else(|_| b.duration_since(a)).unwrap_or_default()
}

fn describe_time(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".to_owned())
}

fn describe_age(now: SystemTime, then: SystemTime) -> String {
    format!("{} s", now.duration_since(then).unwrap_or_default().as_secs())
}

#[cfg(test)]
mod tests;
