//! What one device (or one class of devices) normally does: destinations, DNS names,
//! services, LAN peers, per-window volumes and the timing of periodic flows. `Profile`s are
//! built by `Learning` and read by `detect`; they serialise to JSON for the store.
use gateway_ebpf::proto;
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    time::SystemTime,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::stats::RunningStats;

/// A protocol and the destination port the device connects to. Serialised as
/// `"<proto number>/<port>"` so it can key a JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    /// IP protocol number.
    pub proto: u8,
    /// 0 for protocols without ports.
    pub port: u16,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", proto_name(self.proto), self.port)
    }
}

impl Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}/{}", self.proto, self.port))
    }
}

impl<'de> Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = text
            .split_once('/')
            .and_then(|(proto, port)| Some(Service { proto: proto.parse().ok()?, port: port.parse().ok()? }));
        parsed.ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not <proto>/<port>")))
    }
}

/// `tcp`, `udp`, `icmp`, ... or the number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        proto::ICMP => "icmp".into(),
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// Where a service was reached during learning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceProfile {
    /// Upstream prefixes (see `Config::prefix_v4` / `prefix_v6`).
    pub prefixes: BTreeSet<IpNet>,
    /// DNS names the destination addresses were resolved from.
    pub names: BTreeSet<String>,
    /// LAN hosts.
    pub peers: BTreeSet<IpAddr>,
    /// How many flows used it.
    pub flows: u64,
}

/// Inter-arrival statistics of the flows towards one service and prefix (Welford, seconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Periodicity {
    #[serde(with = "time_secs")]
    pub last: Option<SystemTime>,
    pub count: u64,
    pub mean_secs: f64,
    m2: f64,
}

impl Periodicity {
    pub fn observe(&mut self, time: SystemTime) {
        if let Some(gap) = self.last.and_then(|last| time.duration_since(last).ok()) {
            let x = gap.as_secs_f64();
            self.count += 1;
            let delta = x - self.mean_secs;
            self.mean_secs += delta / self.count as f64;
            self.m2 += delta * (x - self.mean_secs);
        }
        self.last = Some(time);
    }

    pub fn std_dev_secs(&self) -> f64 {
        if self.count < 2 { 0.0 } else { (self.m2 / (self.count - 1) as f64).sqrt() }
    }

    /// A flow is periodic when its gaps vary by less than a quarter of their mean over at
    /// least `MIN_PERIODIC_GAPS` gaps (telemetry pushed every N seconds, NTP polls).
    pub fn is_periodic(&self) -> bool {
        self.count >= MIN_PERIODIC_GAPS && self.std_dev_secs() < PERIODIC_MAX_COEFFICIENT_OF_VARIATION * self.mean_secs
    }
}

/// Gaps needed before a flow may be called periodic.
pub const MIN_PERIODIC_GAPS: u64 = 4;
/// Largest standard deviation / mean ratio of a periodic flow's gaps.
pub const PERIODIC_MAX_COEFFICIENT_OF_VARIATION: f64 = 0.25;

/// Everything learnt about a device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Per service (`tcp/443`): where it went.
    pub services: BTreeMap<Service, ServiceProfile>,
    /// Every upstream prefix contacted, any service.
    pub destinations: BTreeSet<IpNet>,
    /// Every DNS name asked for or answered to the device.
    pub names: BTreeSet<String>,
    /// LAN hosts the device opened flows to.
    pub peers: BTreeSet<IpAddr>,
    /// LAN hosts that opened flows to the device (the phone app or hub that drives it): a
    /// flow back to one of them is an existing relationship, not lateral movement.
    #[serde(default)]
    pub callers: BTreeSet<IpAddr>,
    /// Per-window features (see `stats::FEATURES`).
    pub windows: RunningStats,
    /// IPv4 addresses the device claimed in ARP.
    #[serde(default)]
    pub arp_claims: BTreeSet<std::net::Ipv4Addr>,
    /// Per `service prefix` key: timing of repeated flows.
    pub timing: BTreeMap<String, Periodicity>,
    /// Flows learnt from.
    pub flows: u64,
}

impl Profile {
    /// Unions another profile into this one (class baselines, seeding).
    pub fn merge(&mut self, other: &Profile) {
        for (service, theirs) in &other.services {
            let ours = self.services.entry(*service).or_default();
            ours.prefixes.extend(theirs.prefixes.iter().copied());
            ours.names.extend(theirs.names.iter().cloned());
            ours.peers.extend(theirs.peers.iter().copied());
            ours.flows += theirs.flows;
        }
        self.destinations.extend(other.destinations.iter().copied());
        self.names.extend(other.names.iter().cloned());
        self.peers.extend(other.peers.iter().copied());
        self.callers.extend(other.callers.iter().copied());
        // ARP claims stay per device: a class seed must not let one device claim another's
        // address.
        self.windows.merge(&other.windows);
        for (key, timing) in &other.timing {
            self.timing.entry(key.clone()).or_insert_with(|| timing.clone());
        }
        self.flows += other.flows;
    }

    /// True when the device and `addr` talked while it learnt, whichever side began.
    pub fn knows_peer(&self, addr: IpAddr) -> bool {
        self.peers.contains(&addr) || self.callers.contains(&addr)
    }

    /// True when `addr` lies in a learnt upstream prefix.
    pub fn knows_destination(&self, addr: IpAddr) -> bool {
        self.destinations.iter().any(|net| net.contains(&addr))
    }

    /// True when `name` or its registrable domain was seen while learning: CDNs rotate host
    /// names under one domain (`a1.cdn.vendor.co.uk`, `a2.cdn.vendor.co.uk`).
    pub fn knows_name(&self, name: &str) -> bool {
        names_cover(&self.names, name)
    }

    /// The periodic flows, for export and for explaining alerts.
    pub fn periodic(&self) -> impl Iterator<Item = (&String, &Periodicity)> {
        self.timing.iter().filter(|(_, t)| t.is_periodic())
    }
}

/// True when `name` or its registrable domain (`crate::domain`, by the public suffix list)
/// is among `names`: `other.co.uk` never covers `vendor.co.uk`, nor one customer's
/// `*.cloudfront.net` host another's.
pub fn names_cover(names: &BTreeSet<String>, name: &str) -> bool {
    let domain = crate::domain::registrable(name);
    names.iter().any(|known| known == name || crate::domain::registrable(known) == domain)
}

/// Serde for an optional `SystemTime` as seconds since the epoch.
mod time_secs {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        Ok(secs.filter(|s| s.is_finite() && *s >= 0.0).map(|s| UNIX_EPOCH + Duration::from_secs_f64(s)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_cover_hosts_of_one_registrant_only() {
        let names: BTreeSet<String> = ["a.cdn.example.co.uk".to_owned()].into();
        assert!(names_cover(&names, "b.cdn.example.co.uk"));
        assert!(names_cover(&names, "example.co.uk"));
        assert!(!names_cover(&names, "other.co.uk"));
        assert!(!names_cover(&names, "a.cdn.other.co.uk"));
    }

    #[test]
    fn telemetry_every_minute_is_periodic_and_bursts_are_not() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut telemetry = Periodicity::default();
        for (i, jitter) in [0, 2, 1, 3, 0, 2].iter().enumerate() {
            telemetry.observe(start + Duration::from_secs(60 * i as u64 + jitter));
        }
        assert!(telemetry.is_periodic(), "{telemetry:?}");
        let mut bursts = Periodicity::default();
        for offset in [0, 1, 2, 300, 301, 900] {
            bursts.observe(start + Duration::from_secs(offset));
        }
        assert!(!bursts.is_periodic());
    }
}
