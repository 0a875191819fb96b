//! baseline: what each device normally does. Reads flow observations and packet samples
//! (`datapath::events`), per-device traffic counters (`TrafficSample`) and device classes;
//! writes per-device `Profile`s through a typed lifecycle (`Learning` → `Baselined`), per-class
//! profiles that seed new devices of a known class, and (through `store`) the `baseline_*`
//! tables. `export` renders a profile as a MUD-style policy for ops to review.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::{
    datapath::events::{DatapathEvent, FlowObservation, PacketSample, SampleKind},
    device::Mac,
};

pub mod export;
pub mod profile;
pub mod site;
pub mod stats;
pub mod store;

pub use profile::{Profile, Service};
pub use site::Site;
pub use store::MIGRATIONS;

/// Default learning period of a device without a class-specific one: long enough for
/// telemetry pushed every few minutes to show up several times.
pub const DEFAULT_LEARNING_PERIOD: Duration = Duration::from_secs(30 * 60);
/// Learning period of a device seeded from its class's baseline.
pub const DEFAULT_SEEDED_LEARNING_PERIOD: Duration = Duration::from_secs(5 * 60);
/// Length of the windows the numeric features are counted over.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Windows a device must have been seen in before it may leave learning.
pub const DEFAULT_MIN_LEARNING_WINDOWS: u64 = 3;
/// Upstream destinations are learnt as prefixes of these lengths (cloud services move
/// within a provider's /24; IPv6 providers hand out /48s).
pub const DEFAULT_PREFIX_V4: u8 = 24;
pub const DEFAULT_PREFIX_V6: u8 = 48;
/// Most DNS answers remembered (address → name); the oldest half is dropped past it.
pub const DNS_CACHE_CAPACITY: usize = 65_536;

/// Private, link-local and unique-local ranges: the LAN when neither configured nor known
/// from the LAN interface (offline analysis of captures).
pub const DEFAULT_LAN_PREFIXES: [&str; 6] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10"];

/// `DEFAULT_LAN_PREFIXES`, parsed (valid CIDR literals, checked by a unit test).
static PRIVATE_PREFIXES: std::sync::LazyLock<Vec<IpNet>> =
    std::sync::LazyLock::new(|| DEFAULT_LAN_PREFIXES.iter().filter_map(|p| p.parse().ok()).collect());

/// `[baseline]` section of the gateway configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Learning period of devices without a class-specific one, in seconds.
    pub learning_secs: u64,
    /// Learning period per device class, in seconds.
    pub class_learning_secs: BTreeMap<String, u64>,
    /// Learning period of a device whose class already has a baseline, in seconds.
    pub seeded_learning_secs: u64,
    /// Feature window, in seconds.
    pub window_secs: u64,
    pub min_learning_windows: u64,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Address ranges of the LAN (peers, lateral movement). Empty: `iotgw run` takes the LAN
    /// interface's subnets (a private upstream is not the LAN); offline, the private ranges.
    pub lan_prefixes: Vec<IpNet>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            learning_secs: DEFAULT_LEARNING_PERIOD.as_secs(),
            class_learning_secs: BTreeMap::new(),
            seeded_learning_secs: DEFAULT_SEEDED_LEARNING_PERIOD.as_secs(),
            window_secs: DEFAULT_WINDOW.as_secs(),
            min_learning_windows: DEFAULT_MIN_LEARNING_WINDOWS,
            prefix_v4: DEFAULT_PREFIX_V4,
            prefix_v6: DEFAULT_PREFIX_V6,
            lan_prefixes: Vec::new(),
        }
    }
}

impl Config {
    /// Every bad value, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.window_secs == 0 {
            problems.push("baseline.window_secs must be at least 1".to_owned());
        }
        if self.prefix_v4 > 32 {
            problems.push(format!("baseline.prefix_v4 = {} is longer than 32", self.prefix_v4));
        }
        if self.prefix_v6 > 128 {
            problems.push(format!("baseline.prefix_v6 = {} is longer than 128", self.prefix_v6));
        }
        problems
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs.max(1))
    }

    /// The learning period of a device of `class`.
    pub fn learning_period(&self, class: Option<&str>, seeded: bool) -> Duration {
        let secs = class.and_then(|c| self.class_learning_secs.get(c).copied()).unwrap_or(if seeded {
            self.seeded_learning_secs
        } else {
            self.learning_secs
        });
        Duration::from_secs(secs)
    }

    pub fn is_lan(&self, addr: IpAddr) -> bool {
        let prefixes = if self.lan_prefixes.is_empty() { &PRIVATE_PREFIXES } else { &self.lan_prefixes };
        prefixes.iter().any(|net| net.contains(&addr))
    }

    /// The prefix an upstream destination is learnt as.
    pub fn prefix_of(&self, addr: IpAddr) -> IpNet {
        let len = if addr.is_ipv4() { self.prefix_v4.min(32) } else { self.prefix_v6.min(128) };
        // The length was just clamped to the family's maximum, so the constructor cannot fail.
        IpNet::new(addr, len).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(addr))
    }
}

/// Per-device traffic counters over one interval (the lead produces them from the XDP
/// per-device counters every second; `analyze` from captures).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrafficSample {
    pub mac: Mac,
    pub interval_start: SystemTime,
    pub interval: Duration,
    /// From the device.
    pub tx_bytes: u64,
    pub tx_packets: u64,
    /// To the device.
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

/// What the baseline, detect and respond steps consume.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Datapath(DatapathEvent),
    Traffic(TrafficSample),
    /// The inventory classified a device (`fingerprint`'s class name).
    Class {
        mac: Mac,
        class: String,
    },
}

impl Input {
    pub fn time(&self) -> Option<SystemTime> {
        match self {
            Input::Datapath(DatapathEvent::Flow(flow)) => Some(flow.time),
            Input::Datapath(DatapathEvent::Sample(sample)) => Some(sample.time),
            Input::Traffic(sample) => Some(sample.interval_start + sample.interval),
            Input::Class { .. } => None,
        }
    }

    pub fn mac(&self) -> Mac {
        match self {
            Input::Datapath(DatapathEvent::Flow(flow)) => flow.mac,
            Input::Datapath(DatapathEvent::Sample(sample)) => sample.mac,
            Input::Traffic(sample) => sample.mac,
            Input::Class { mac, .. } => *mac,
        }
    }
}

/// What an ARP packet claims: `sender_ip` is at `sender_mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpClaim {
    pub sender_mac: Mac,
    pub sender_ip: std::net::Ipv4Addr,
    pub target_ip: std::net::Ipv4Addr,
}

/// Decodes an ARP sample (Ethernet/IPv4 only, by `etherparse`); `None` for anything else,
/// and for probes (sender 0.0.0.0, RFC 5227), which claim nothing.
pub fn arp_claim(sample: &PacketSample) -> Option<ArpClaim> {
    if sample.kind != SampleKind::Arp {
        return None;
    }
    let arp = etherparse::ArpPacketSlice::from_slice(sample.payload()).ok()?;
    let sender_mac = Mac(<[u8; 6]>::try_from(arp.sender_hw_addr()).ok()?);
    let sender_ip = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(arp.sender_protocol_addr()).ok()?);
    let target_ip = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(arp.target_protocol_addr()).ok()?);
    (!sender_ip.is_unspecified()).then_some(ArpClaim { sender_mac, sender_ip, target_ip })
}

/// A DNS name as the profiles keep it: lower case, without the root's trailing dot.
fn dns_name(name: &hickory_proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// TCP flag bits (RFC 9293).
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const PROTO_TCP: u8 = 0x06;
const PROTO_UDP: u8 = 0x11;

/// True when this flow's first packet opens a conversation from the device (a TCP SYN
/// without ACK; UDP from a port not below the destination port, which excludes replies
/// from services like SSDP 1900 → ephemeral; ICMP and the rest always), as opposed to the
/// device answering someone else.
pub fn is_initiation(flow: &FlowObservation) -> bool {
    match flow.proto {
        PROTO_TCP => flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
        PROTO_UDP => flow.src_port >= flow.dst_port,
        _ => true,
    }
}

/// Multicast, broadcast and unspecified destinations are not conversations with a peer.
pub fn is_group_or_unspecified(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.octets()[3] == 255,
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    }
}

/// A device still building its baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    #[serde(with = "epoch_secs")]
    pub started: SystemTime,
    pub period: Duration,
    pub profile: Profile,
    /// The class whose baseline seeded this one.
    pub seeded_from: Option<String>,
}

/// A device whose baseline is learnt and frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baselined {
    #[serde(with = "epoch_secs")]
    pub since: SystemTime,
    pub profile: Profile,
}

/// Why learning cannot finish yet.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum NotReady {
    #[error("learning for {elapsed:?} of {period:?}")]
    Early { elapsed: Duration, period: Duration },
    #[error("seen in {seen} windows, needs {needed}")]
    TooFewWindows { seen: u64, needed: u64 },
}

impl Learning {
    pub fn new(started: SystemTime, period: Duration, seed: Option<(&str, &Profile)>) -> Self {
        let mut profile = Profile::default();
        if let Some((_, class_profile)) = seed {
            profile.merge(class_profile);
            // Seeded numeric statistics come from other devices; this device's own windows
            // are what must reach `min_windows`.
            profile.windows = stats::RunningStats::default();
        }
        Self { started, period, profile, seeded_from: seed.map(|(class, _)| class.to_owned()) }
    }

    /// Freezes the profile once the period is over and enough windows were seen; hands the
    /// learning state back otherwise.
    #[expect(clippy::result_large_err, reason = "a typed transition hands its state back on failure, by value")]
    pub fn finish(self, now: SystemTime, min_windows: u64) -> Result<Baselined, (Self, NotReady)> {
        let elapsed = now.duration_since(self.started).unwrap_or_default();
        if elapsed < self.period {
            let period = self.period;
            return Err((self, NotReady::Early { elapsed, period }));
        }
        if self.profile.windows.count < min_windows {
            let seen = self.profile.windows.count;
            return Err((self, NotReady::TooFewWindows { seen, needed: min_windows }));
        }
        Ok(Baselined { since: now, profile: self.profile })
    }
}

impl Baselined {
    /// Starts over (after a firmware update, or when ops ask for it).
    pub fn relearn(self, now: SystemTime, period: Duration) -> Learning {
        Learning::new(now, period, None)
    }
}

/// A device's baseline lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeviceBaseline {
    Learning(Learning),
    Baselined(Baselined),
}

impl DeviceBaseline {
    pub fn profile(&self) -> &Profile {
        match self {
            DeviceBaseline::Learning(l) => &l.profile,
            DeviceBaseline::Baselined(b) => &b.profile,
        }
    }

    /// The frozen profile, when there is one.
    pub fn baselined(&self) -> Option<&Profile> {
        match self {
            DeviceBaseline::Baselined(b) => Some(&b.profile),
            DeviceBaseline::Learning(_) => None,
        }
    }

    pub fn state_name(&self) -> &'static str {
        match self {
            DeviceBaseline::Learning(_) => "learning",
            DeviceBaseline::Baselined(_) => "baselined",
        }
    }
}

/// Features of the window being counted for a device.
#[derive(Clone, Debug)]
struct OpenWindow {
    start: SystemTime,
    features: Array1<f64>,
    hosts: std::collections::HashSet<IpAddr>,
}

/// A device's entry: its lifecycle plus what is being counted now.
#[derive(Clone, Debug)]
struct DeviceEntry {
    baseline: DeviceBaseline,
    class: Option<String>,
    window: Option<OpenWindow>,
    /// Changed since the last `take_dirty`.
    dirty: bool,
}

/// A class's pooled profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassBaseline {
    pub devices: u64,
    pub profile: Profile,
}

/// What `Baselines::handle` changed that others care about.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The device left learning.
    Baselined { mac: Mac, class: Option<String> },
}

/// The baseline step: every device's lifecycle and the class baselines.
pub struct Baselines {
    config: Config,
    devices: HashMap<Mac, DeviceEntry>,
    classes: HashMap<String, ClassBaseline>,
    classes_dirty: Vec<String>,
    /// Address → DNS name it was given as an answer for (any device asked).
    dns: HashMap<IpAddr, String>,
    /// Own addresses, live hosts and vendor peers (see `site`).
    site: Site,
}

impl Baselines {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            devices: HashMap::new(),
            classes: HashMap::new(),
            classes_dirty: Vec::new(),
            dns: HashMap::new(),
            site: Site::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Restores stored state (see `store::load`).
    pub fn restore(&mut self, devices: Vec<store::DeviceRecord>, classes: Vec<(String, ClassBaseline)>) {
        for record in devices {
            if let DeviceBaseline::Baselined(baselined) = &record.baseline {
                self.site.pool(record.mac, &baselined.profile);
            }
            self.devices.insert(
                record.mac,
                DeviceEntry { baseline: record.baseline, class: record.class, window: None, dirty: false },
            );
        }
        self.classes.extend(classes);
    }

    pub fn device(&self, mac: Mac) -> Option<&DeviceBaseline> {
        self.devices.get(&mac).map(|e| &e.baseline)
    }

    /// What the site knows beyond each device's own profile.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// True when `flow` is traffic its device forwards for a host behind it (see `site`).
    pub fn is_forwarded(&self, flow: &FlowObservation) -> bool {
        let learnt = self.devices.get(&flow.mac).map(|e| &e.baseline.profile().arp_claims);
        self.site.is_forwarded(flow.mac, flow.src, learnt.unwrap_or(&EMPTY_CLAIMS))
    }

    pub fn class_of(&self, mac: Mac) -> Option<&str> {
        self.devices.get(&mac).and_then(|e| e.class.as_deref())
    }

    pub fn class(&self, class: &str) -> Option<&ClassBaseline> {
        self.classes.get(class)
    }

    pub fn devices(&self) -> impl Iterator<Item = (Mac, &DeviceBaseline)> {
        self.devices.iter().map(|(mac, e)| (*mac, &e.baseline))
    }

    /// The DNS name `addr` was last given for, if any.
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        self.dns.get(&addr).map(String::as_str)
    }

    /// Device and class records changed since the last call, for the store.
    pub fn take_dirty(&mut self) -> (Vec<store::DeviceRecord>, Vec<(String, ClassBaseline)>) {
        let devices = self
            .devices
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(mac, e)| {
                e.dirty = false;
                store::DeviceRecord { mac: *mac, class: e.class.clone(), baseline: e.baseline.clone() }
            })
            .collect();
        let mut names = std::mem::take(&mut self.classes_dirty);
        names.sort();
        names.dedup();
        let classes = names.into_iter().filter_map(|c| self.classes.get(&c).map(|b| (c, b.clone()))).collect();
        (devices, classes)
    }

    /// Ends every device's learning now, whatever its period (ops decide the learning
    /// captures or hours are enough). Devices seen in fewer than `min_learning_windows`
    /// windows keep learning.
    pub fn end_learning(&mut self, now: SystemTime) -> Vec<Change> {
        let macs: Vec<Mac> = self.devices.keys().copied().collect();
        let mut changes = Vec::new();
        for mac in macs {
            if let Some(DeviceEntry { baseline: DeviceBaseline::Learning(learning), .. }) = self.devices.get_mut(&mac) {
                learning.period = now.duration_since(learning.started).unwrap_or_default();
                changes.extend(self.advance(mac, now));
            }
        }
        changes
    }

    /// Marks records dirty again (their save failed).
    pub fn mark_dirty(&mut self, devices: &[store::DeviceRecord], classes: &[(String, ClassBaseline)]) {
        for record in devices {
            if let Some(entry) = self.devices.get_mut(&record.mac) {
                entry.dirty = true;
            }
        }
        self.classes_dirty.extend(classes.iter().map(|(class, _)| class.clone()));
    }

    /// Learns from one input. `learn` is false when `detect` found the input anomalous: it
    /// still advances the device's clock but does not enter its profile.
    pub fn handle(&mut self, input: &Input, learn: bool) -> Vec<Change> {
        if let Input::Class { mac, class } = input {
            self.set_class(*mac, class);
            return Vec::new();
        }
        if let Input::Datapath(DatapathEvent::Sample(sample)) = input {
            match sample.kind {
                SampleKind::Dns | SampleKind::DnsAnswer => self.observe_dns(sample, learn),
                SampleKind::Arp => self.observe_arp(sample, learn),
                _ => {}
            }
            return Vec::new();
        }
        let forwarded = match input {
            Input::Datapath(DatapathEvent::Flow(flow)) => {
                let forwarded = self.is_forwarded(flow);
                if !forwarded {
                    // A forwarded source is a host behind the device, not one on the LAN.
                    self.site.saw(flow.mac, flow.src);
                }
                if learn && !forwarded && is_initiation(flow) {
                    self.learn_caller(flow);
                }
                forwarded
            }
            _ => false,
        };
        let Some(now) = input.time() else { return Vec::new() };
        let mac = input.mac();
        let window = self.config.window();
        let entry = Self::entry(&mut self.devices, &self.config, mac, now);
        // Close the open window when this input falls past it.
        let mut closed = None;
        if let Some(open) = &entry.window
            && now.duration_since(open.start).unwrap_or_default() >= window
        {
            closed = entry.window.take();
        }
        if let (Some(open), DeviceBaseline::Learning(learning)) = (closed, &mut entry.baseline) {
            let mut features = open.features;
            features[stats::feature::DISTINCT_HOSTS] = open.hosts.len() as f64;
            learning.profile.windows.push(&features);
            entry.dirty = true;
        }
        let open = entry.window.get_or_insert_with(|| OpenWindow {
            start: now,
            features: Array1::zeros(stats::FEATURE_COUNT),
            hosts: Default::default(),
        });
        if learn {
            match input {
                Input::Traffic(sample) => {
                    open.features[stats::feature::TX_BYTES] += sample.tx_bytes as f64;
                    open.features[stats::feature::TX_PACKETS] += sample.tx_packets as f64;
                    open.features[stats::feature::RX_BYTES] += sample.rx_bytes as f64;
                    open.features[stats::feature::RX_PACKETS] += sample.rx_packets as f64;
                }
                Input::Datapath(DatapathEvent::Flow(flow)) if is_initiation(flow) => {
                    open.features[stats::feature::NEW_FLOWS] += 1.0;
                    if !is_group_or_unspecified(flow.dst) {
                        open.hosts.insert(flow.dst);
                    }
                }
                _ => {}
            }
        }
        // Traffic forwarded for a host behind the device counts in its volumes, not in what
        // it reaches itself.
        if let (true, Input::Datapath(DatapathEvent::Flow(flow)), DeviceBaseline::Learning(learning)) =
            (learn, input, &mut entry.baseline)
            && is_initiation(flow)
            && !forwarded
        {
            learn_flow(&self.config, &self.dns, &mut learning.profile, flow);
            entry.dirty = true;
        }
        self.advance(mac, now)
    }

    /// Moves a device out of learning when its time has come.
    fn advance(&mut self, mac: Mac, now: SystemTime) -> Vec<Change> {
        let min_windows = self.config.min_learning_windows;
        let Some(entry) = self.devices.get_mut(&mac) else { return Vec::new() };
        let DeviceBaseline::Learning(learning) = &entry.baseline else { return Vec::new() };
        if now.duration_since(learning.started).unwrap_or_default() < learning.period {
            return Vec::new();
        }
        let placeholder = DeviceBaseline::Learning(Learning::new(now, Duration::ZERO, None));
        let DeviceBaseline::Learning(learning) = std::mem::replace(&mut entry.baseline, placeholder) else {
            unreachable!("matched Learning just above")
        };
        match learning.finish(now, min_windows) {
            Ok(baselined) => {
                let class = entry.class.clone();
                if let Some(class) = &class {
                    let pooled = self
                        .classes
                        .entry(class.clone())
                        .or_insert_with(|| ClassBaseline { devices: 0, profile: Profile::default() });
                    pooled.devices += 1;
                    pooled.profile.merge(&baselined.profile);
                    self.classes_dirty.push(class.clone());
                }
                self.site.pool(mac, &baselined.profile);
                tracing::info!(device = %mac, flows = baselined.profile.flows, "baseline learnt");
                entry.baseline = DeviceBaseline::Baselined(baselined);
                entry.dirty = true;
                vec![Change::Baselined { mac, class }]
            }
            Err((learning, _not_ready)) => {
                entry.baseline = DeviceBaseline::Learning(learning);
                Vec::new()
            }
        }
    }

    fn entry<'a>(
        devices: &'a mut HashMap<Mac, DeviceEntry>,
        config: &Config,
        mac: Mac,
        now: SystemTime,
    ) -> &'a mut DeviceEntry {
        let entry = devices.entry(mac).or_insert_with(|| DeviceEntry {
            baseline: DeviceBaseline::Learning(Learning::new(now, config.learning_period(None, false), None)),
            class: None,
            window: None,
            dirty: true,
        });
        // A device classified before it sent anything starts learning with its first input.
        if let DeviceBaseline::Learning(learning) = &mut entry.baseline
            && learning.started == SystemTime::UNIX_EPOCH
        {
            learning.started = now;
        }
        entry
    }

    /// Records a device's class; a device still learning with no profile yet is reseeded
    /// from its class's baseline and gets the class's (or the seeded) learning period.
    fn set_class(&mut self, mac: Mac, class: &str) {
        let seed = self.classes.get(class).map(|c| c.profile.clone());
        let config = self.config.clone();
        let entry = self.devices.entry(mac).or_insert_with(|| DeviceEntry {
            baseline: DeviceBaseline::Learning(Learning::new(SystemTime::UNIX_EPOCH, Duration::ZERO, None)),
            class: None,
            window: None,
            dirty: true,
        });
        if entry.class.as_deref() == Some(class) {
            return;
        }
        entry.class = Some(class.to_owned());
        entry.dirty = true;
        if let DeviceBaseline::Learning(learning) = &mut entry.baseline {
            // A device created here has never been seen: its learning starts with its first input.
            let started = if learning.started == SystemTime::UNIX_EPOCH { None } else { Some(learning.started) };
            let period = config.learning_period(Some(class), seed.is_some());
            let mut next =
                Learning::new(started.unwrap_or(SystemTime::UNIX_EPOCH), period, seed.as_ref().map(|p| (class, p)));
            next.profile.merge(&learning.profile);
            next.profile.windows = learning.profile.windows.clone();
            next.profile.arp_claims = learning.profile.arp_claims.clone();
            *learning = next;
        }
    }

    /// Notes the addresses a device claims for itself in ARP (and learns them while it learns).
    fn observe_arp(&mut self, sample: &PacketSample, learn: bool) {
        let Some(claim) = arp_claim(sample) else { return };
        if claim.sender_mac != sample.mac {
            return;
        }
        self.site.claim(sample.mac, claim.sender_ip);
        if !learn {
            return;
        }
        let entry = Self::entry(&mut self.devices, &self.config, sample.mac, sample.time);
        if let DeviceBaseline::Learning(learning) = &mut entry.baseline
            && learning.profile.arp_claims.insert(claim.sender_ip)
        {
            entry.dirty = true;
        }
    }

    /// A LAN host opened a flow to a device that is learning: remember it as that device's
    /// caller (the phone app or hub that drives it).
    fn learn_caller(&mut self, flow: &FlowObservation) {
        if !self.config.is_lan(flow.dst) || is_group_or_unspecified(flow.dst) {
            return;
        }
        let Some(callee) = self.site.host(flow.dst).filter(|callee| *callee != flow.mac) else { return };
        if let Some(entry) = self.devices.get_mut(&callee)
            && let DeviceBaseline::Learning(learning) = &mut entry.baseline
            && learning.profile.callers.insert(flow.src)
        {
            entry.dirty = true;
        }
    }

    /// Remembers which name each address in a DNS answer was given for, without learning
    /// anything into the sender's profile (answers relayed by a router).
    pub fn record_dns_answers(&mut self, sample: &PacketSample) {
        if matches!(sample.kind, SampleKind::Dns | SampleKind::DnsAnswer) {
            self.observe_dns_answers(sample);
        }
    }

    /// Records the answers of a DNS message; returns the names it asked for.
    fn observe_dns_answers(&mut self, sample: &PacketSample) -> Vec<String> {
        let Ok(message) = hickory_proto::op::Message::from_vec(sample.payload()) else {
            // Truncated or malformed DNS: nothing to learn from it.
            return Vec::new();
        };
        let mut names = Vec::new();
        for query in message.queries() {
            names.push(dns_name(query.name()));
        }
        for answer in message.answers() {
            let name = dns_name(answer.name());
            let addr = answer.data().ip_addr();
            if let Some(addr) = addr {
                if self.dns.len() >= DNS_CACHE_CAPACITY {
                    // Bounded memory: forget everything rather than track ages for each entry.
                    self.dns.clear();
                }
                // Keep the question's name: it is what the device asked for (CNAME targets
                // are the CDN's names).
                let asked = names.first().cloned().unwrap_or(name);
                self.dns.insert(addr, asked);
            }
        }
        names
    }

    fn observe_dns(&mut self, sample: &PacketSample, learn: bool) {
        let names = self.observe_dns_answers(sample);
        if !learn || names.is_empty() {
            return;
        }
        let now = sample.time;
        let entry = Self::entry(&mut self.devices, &self.config, sample.mac, now);
        if let DeviceBaseline::Learning(learning) = &mut entry.baseline {
            learning.profile.names.extend(names);
            entry.dirty = true;
        }
    }
}

/// No ARP claims (for `is_forwarded` on a device never seen).
static EMPTY_CLAIMS: std::collections::BTreeSet<std::net::Ipv4Addr> = std::collections::BTreeSet::new();

/// Adds an initiated flow to a learning profile.
fn learn_flow(config: &Config, dns: &HashMap<IpAddr, String>, profile: &mut Profile, flow: &FlowObservation) {
    let service = Service {
        proto: flow.proto,
        port: if flow.proto == PROTO_TCP || flow.proto == PROTO_UDP { flow.dst_port } else { 0 },
    };
    profile.flows += 1;
    let service_profile = profile.services.entry(service).or_default();
    service_profile.flows += 1;
    if is_group_or_unspecified(flow.dst) {
        return;
    }
    let key = if config.is_lan(flow.dst) {
        profile.peers.insert(flow.dst);
        service_profile.peers.insert(flow.dst);
        format!("{service} {}", flow.dst)
    } else {
        let prefix = config.prefix_of(flow.dst);
        profile.destinations.insert(prefix);
        service_profile.prefixes.insert(prefix);
        if let Some(name) = dns.get(&flow.dst) {
            service_profile.names.insert(name.clone());
            profile.names.insert(name.clone());
        }
        format!("{service} {prefix}")
    };
    profile.timing.entry(key).or_default().observe(flow.time);
}

/// Serde for `SystemTime` as seconds since the epoch.
mod epoch_secs {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = f64::deserialize(d)?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(serde::de::Error::custom(format!("{secs} is not a time")));
        }
        Ok(UNIX_EPOCH + Duration::from_secs_f64(secs))
    }
}

#[cfg(test)]
pub(crate) mod tests;
