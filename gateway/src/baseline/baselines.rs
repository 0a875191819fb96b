//! The baseline step: every device's lifecycle (`Learning` → `Baselined`) with the window
//! being counted, the class baselines that seed new devices of a known class, and what the
//! DNS answers and ARP claims seen so far say about addresses.
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use gateway_ebpf::proto;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

use super::{
    Config, DeviceBaseline, Learning, Profile, Service, Site, arp_claim, is_group_or_unspecified, is_initiation,
    learned,
    resolutions::{Resolution, Resolutions, TrustedResolvers},
    stats, store,
};
use crate::{
    datapath::events::{DatapathEvent, FlowObservation, PacketSample, SampleKind},
    device::Mac,
    pipeline::Input,
};

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
    /// The DNS exchanges followed, and the names trusted answers gave addresses.
    resolutions: Resolutions,
    /// Own addresses, live hosts and vendor peers (see `site`).
    site: Site,
    /// What analysts learnt as normal, per device (see `learned`).
    learned: learned::Exceptions,
}

impl Baselines {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            devices: HashMap::new(),
            classes: HashMap::new(),
            classes_dirty: Vec::new(),
            resolutions: Resolutions::default(),
            site: Site::default(),
            learned: learned::Exceptions::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Restores stored state (see `store::load`).
    pub fn restore(&mut self, devices: Vec<store::DeviceRecord>, classes: Vec<(String, ClassBaseline)>) {
        for record in devices {
            self.devices.insert(
                record.mac,
                DeviceEntry { baseline: record.baseline, class: record.class, window: None, dirty: false },
            );
        }
        self.classes.extend(classes);
    }

    /// What analysts learnt as normal (`learned`).
    pub fn learned(&self) -> &learned::Exceptions {
        &self.learned
    }

    /// Applies an analyst's learning, or its reversal, already committed to the store.
    pub fn apply_learned(&mut self, edit: learned::Edit) {
        self.learned.apply(edit);
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

    /// The profile a device's rates are held to: its own once baselined, else (the crowd
    /// baseline) its type's, with the type's name; `None` before either exists.
    pub fn rate_reference(&self, mac: Mac) -> Option<(&Profile, Option<&str>)> {
        if let Some(profile) = self.device(mac).and_then(DeviceBaseline::baselined) {
            return Some((profile, None));
        }
        let (class, peers) = self.type_peers(mac)?;
        (peers.profile.windows.count > 0).then_some((&peers.profile, Some(class)))
    }

    /// The device's type and what the baselined devices of that type reach (the crowd
    /// baseline), once one of them is baselined.
    pub fn type_peers(&self, mac: Mac) -> Option<(&str, &ClassBaseline)> {
        let class = self.class_of(mac)?;
        Some((class, self.classes.get(class)?))
    }

    pub fn devices(&self) -> impl Iterator<Item = (Mac, &DeviceBaseline)> {
        self.devices.iter().map(|(mac, e)| (*mac, &e.baseline))
    }

    /// The DNS name a trusted resolver last gave `addr` for, in answer to a device's query.
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        self.resolutions.name_of(addr)
    }

    /// Puts the resolvers whose answers name addresses in force (`resolutions`).
    pub fn set_trusted_resolvers(&mut self, trusted: TrustedResolvers) {
        self.resolutions.set_trusted(trusted);
    }

    /// Trusts a router's own LAN address as a resolver (it relays or answers the LAN's DNS).
    pub fn trust_router_address(&mut self, addr: IpAddr) {
        if self.config.is_lan(addr) {
            self.resolutions.trusted_mut().learn(addr);
        }
    }

    /// Follows one DNS or DHCP sample (`resolutions`): a device's query, an answer to it, a
    /// trusted DHCP server's resolvers. `relayed`: sent by a router (`detect.gateway_macs`),
    /// whose responses go to the device at their destination address.
    pub fn resolve(&mut self, sample: &PacketSample, relayed: bool) -> Resolution {
        let site = &self.site;
        self.resolutions.observe(sample, relayed, |addr| site.host(addr))
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
                    open.features[stats::feature::TX_BYTES] += sample.counters.tx_bytes as f64;
                    open.features[stats::feature::TX_PACKETS] += sample.counters.tx_packets as f64;
                    open.features[stats::feature::RX_BYTES] += sample.counters.rx_bytes as f64;
                    open.features[stats::feature::RX_PACKETS] += sample.counters.rx_packets as f64;
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
            learn_flow(&self.config, &self.resolutions, &mut learning.profile, flow);
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

    /// Learns the names a device asks for (its own queries: what it resolves is its
    /// behaviour). Which answers name addresses is `resolve`'s.
    fn observe_dns(&mut self, sample: &PacketSample, learn: bool) {
        if !learn || sample.kind != SampleKind::Dns {
            return;
        }
        let Ok(datagram) = crate::policy::dns::Datagram::read(sample) else { return };
        if datagram.is_response() {
            return;
        }
        let now = sample.time;
        let entry = Self::entry(&mut self.devices, &self.config, sample.mac, now);
        if let DeviceBaseline::Learning(learning) = &mut entry.baseline {
            learning.profile.names.insert(datagram.question.name);
            entry.dirty = true;
        }
    }
}

/// No ARP claims (for `is_forwarded` on a device never seen).
static EMPTY_CLAIMS: std::collections::BTreeSet<std::net::Ipv4Addr> = std::collections::BTreeSet::new();

/// Adds an initiated flow to a learning profile.
fn learn_flow(config: &Config, dns: &Resolutions, profile: &mut Profile, flow: &FlowObservation) {
    let service = Service {
        proto: flow.proto,
        port: if flow.proto == proto::TCP || flow.proto == proto::UDP { flow.dst_port } else { 0 },
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
        if let Some(name) = dns.name_of(flow.dst) {
            service_profile.names.insert(name.to_owned());
            profile.names.insert(name.to_owned());
        }
        format!("{service} {prefix}")
    };
    profile.timing.entry(key).or_default().observe(flow.time);
}
