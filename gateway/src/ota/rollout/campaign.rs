//! The campaign model: which release, for which devices in which groups (canary, then
//! percentage buckets or classes), inside which maintenance windows.
//!
//! Pure data; `Rollouts` stores it in `ota_campaigns` as JSON.
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{RolloutError, State};
use crate::device::Mac;

/// Percentage buckets are drawn in 1/100 of a percent.
const BUCKETS: u64 = 10_000;

/// A campaign id (uuid).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CampaignId(pub String);

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One group after the canary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Devices whose hash bucket falls under this percentage (cumulative: 10 then 50 then 100).
    Percent(u8),
    /// Every device of this class.
    Class(String),
}

impl std::str::FromStr for Stage {
    type Err = RolloutError;

    /// `10%` or `class:NAME`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(class) = s.strip_prefix("class:").filter(|c| !c.is_empty()) {
            return Ok(Stage::Class(class.to_owned()));
        }
        match s.strip_suffix('%').and_then(|p| p.parse::<u8>().ok()) {
            Some(p) if (1..=100).contains(&p) => Ok(Stage::Percent(p)),
            _ => Err(RolloutError::Invalid(format!("stage {s:?}: expected N% (1-100) or class:NAME"))),
        }
    }
}

/// A daily UTC time range, minutes after midnight; `start > end` wraps past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

impl Window {
    pub fn contains(&self, t: OffsetDateTime) -> bool {
        let minute = u16::from(t.hour()) * 60 + u16::from(t.minute());
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl std::str::FromStr for Window {
    type Err = RolloutError;

    /// `HH:MM-HH:MM` in UTC.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RolloutError::Invalid(format!("window {s:?}: expected HH:MM-HH:MM (UTC)"));
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a.trim()).ok_or_else(bad)?, minutes(b.trim()).ok_or_else(bad)?);
        if start == end {
            return Err(bad());
        }
        Ok(Window { start, end })
    }
}

/// How a release rolls out: who gets it first, in which groups, when, and what halts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub canary: Vec<Mac>,
    pub stages: Vec<Stage>,
    pub windows: Vec<Window>,
    pub failure_threshold: f64,
    pub soak_secs: u64,
    pub anomaly_devices: u32,
}

/// What an operator asks for.
#[derive(Clone, Debug)]
pub struct CampaignRequest {
    pub target: String,
    pub plan: Plan,
}

/// A stored campaign's fixed part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub target: String,
    pub role: String,
    pub role_version: u64,
    pub firmware_version: String,
    pub device_classes: Vec<String>,
    /// Stored flattened: the same JSON as when these fields were the spec's own.
    #[serde(flatten)]
    pub plan: Plan,
}

impl CampaignSpec {
    pub fn in_window(&self, now: OffsetDateTime) -> bool {
        self.plan.windows.is_empty() || self.plan.windows.iter().any(|w| w.contains(now))
    }

    /// The group (0 = canary, k+1 = stage k) of a device, or None if the campaign is not for it.
    pub fn group_of(&self, id: &CampaignId, mac: Mac, class: Option<&str>) -> Option<usize> {
        if self.plan.canary.contains(&mac) {
            return Some(0);
        }
        let class = class.filter(|c| self.device_classes.iter().any(|d| d == c))?;
        let bucket = bucket(id, mac);
        self.plan
            .stages
            .iter()
            .position(|stage| match stage {
                Stage::Percent(p) => bucket < u64::from(*p) * (BUCKETS / 100),
                Stage::Class(c) => c == class,
            })
            .map(|k| k + 1)
    }
}

/// A stable pseudo-random bucket in 0..BUCKETS per (campaign, device), so percentage groups are
/// fixed for a campaign and differ between campaigns.
fn bucket(id: &CampaignId, mac: Mac) -> u64 {
    let digest = Sha256::new().chain_update(id.0.as_bytes()).chain_update(mac.0).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// One stored campaign.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub spec: CampaignSpec,
    pub state: State,
    pub stage_started_at: i64,
    pub resumed_at: i64,
}
