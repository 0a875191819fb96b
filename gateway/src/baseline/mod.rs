//! baseline: what each device normally does. Reads flow observations and packet samples
//! (`datapath::events`), per-device traffic counters (`TrafficSample`) and device classes;
//! writes per-device `Profile`s through a typed lifecycle (`Learning` → `Baselined`), per-class
//! profiles that seed new devices of a known class, and (through `store`) the `baseline_*`
//! tables. `export` renders a profile as a MUD-style policy for ops to review; `learned` holds
//! what analysts learnt as normal from false-positive alerts.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod baselines;
pub mod export;
pub mod learned;
mod packet;
pub mod profile;
pub mod resolutions;
pub mod site;
pub mod stats;
pub mod store;

pub use baselines::{Baselines, Change, ClassBaseline};
pub use packet::{ArpClaim, arp_claim, is_group_or_unspecified, is_initiation};
pub use profile::{Profile, Service};
pub use resolutions::{Resolution, TrustedResolvers};
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
