//! Rollout campaigns: which devices are offered which release, and when a campaign moves on
//! or halts.
//!
//! A campaign releases one target (image) to the device classes it is for, in stages: a
//! canary list of devices first, then percentage buckets or classes of devices. Its state is a
//! typed machine, Draft → Canary → Rolling(stage) → Completed | Halted, stored in SQLite
//! (`ota_campaigns`). `decide` is the pure core: from a stage's reports and alerts it says
//! start, advance, halt or wait; `Rollouts::tick` applies it.
//!
//! **How devices are gated (design).** Vendor roles are signed by vendors and cannot be edited
//! per device, and their versions are cumulative. So what a device is offered is chosen one
//! level up: the gateway signs snapshot and timestamp *per device view* (`repo::View`). A
//! device's view names, for each vendor role, the newest role version it may see: the role's
//! released version (raised when a campaign completes), or a campaign's role version once the
//! device's group is in an active stage. A device outside the active stages is served a
//! snapshot naming the older role version, which does not list the new image, and the image
//! itself is refused to it (403). Every change of campaign state starts a new signing
//! generation, and snapshot/timestamp versions are the generation number, so each device's
//! metadata versions only grow (client rollback checks hold). Devices keep what they were
//! offered: halting stops further groups, it does not take signed metadata back.
//! Maintenance windows gate starting and advancing stages; a stage already offered stays
//! offered outside the window. Limitation: one open campaign per vendor role at a time, and
//! completing a campaign releases every target of that role version.
//!
//! Reads and writes `ota_campaigns`, `ota_reports`, `ota_campaign_alerts`, `ota_metadata`.
use std::fmt;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{
    db,
    repo::{Repository, View},
};
use crate::device::Mac;

/// Default failure fraction of a stage above which the campaign halts.
pub const DEFAULT_FAILURE_THRESHOLD: f64 = 0.2;
/// Default time a stage runs after its last report before the next one starts.
pub const DEFAULT_SOAK_SECS: u64 = 600;
/// Default number of updated devices with alerts that halts a campaign.
pub const DEFAULT_ANOMALY_DEVICES: u32 = 1;
/// Percentage buckets are drawn in 1/100 of a percent.
const BUCKETS: u64 = 10_000;

/// Why a campaign operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    #[error("ota store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Repo(#[from] super::repo::RepoError),
    #[error("no campaign {0}")]
    NoCampaign(String),
    #[error("target {0} is not published")]
    NoTarget(String),
    /// One open campaign per vendor role (versions are cumulative).
    #[error("campaign {0} is still open on the same vendor role; complete or halt it first")]
    RoleBusy(String),
    #[error("campaign {id} cannot {action} from state {from}")]
    Transition { id: String, action: &'static str, from: String },
    #[error("{0}")]
    Invalid(String),
}

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

/// What an operator asks for.
#[derive(Clone, Debug)]
pub struct CampaignRequest {
    pub target: String,
    pub canary: Vec<Mac>,
    pub stages: Vec<Stage>,
    pub windows: Vec<Window>,
    pub failure_threshold: f64,
    pub soak_secs: u64,
    pub anomaly_devices: u32,
}

/// A stored campaign's fixed part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub target: String,
    pub role: String,
    pub role_version: u64,
    pub firmware_version: String,
    pub device_classes: Vec<String>,
    pub canary: Vec<Mac>,
    pub stages: Vec<Stage>,
    pub windows: Vec<Window>,
    pub failure_threshold: f64,
    pub soak_secs: u64,
    pub anomaly_devices: u32,
}

impl CampaignSpec {
    pub fn in_window(&self, now: OffsetDateTime) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.contains(now))
    }

    /// The group (0 = canary, k+1 = stage k) of a device, or None if the campaign is not for it.
    pub fn group_of(&self, id: &CampaignId, mac: Mac, class: Option<&str>) -> Option<usize> {
        if self.canary.contains(&mac) {
            return Some(0);
        }
        let class = class.filter(|c| self.device_classes.iter().any(|d| d == c))?;
        let bucket = bucket(id, mac);
        self.stages
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

/// A campaign's lifecycle. Transitions take `self` and return the next state or an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Draft,
    Canary,
    Rolling {
        stage: usize,
    },
    Completed,
    /// `group`: the last group offered the release; None when halted before it started.
    Halted {
        group: Option<usize>,
        reason: String,
    },
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Draft => f.write_str("draft"),
            State::Canary => f.write_str("canary"),
            State::Rolling { stage } => write!(f, "rolling(stage {})", stage + 1),
            State::Completed => f.write_str("completed"),
            State::Halted { group: Some(group), reason } => write!(f, "halted(group {group}: {reason})"),
            State::Halted { group: None, reason } => write!(f, "halted(before start: {reason})"),
        }
    }
}

impl State {
    /// Groups `0..=n` are offered the release; None when no group is.
    pub fn active_groups(&self, stages: usize) -> Option<usize> {
        match self {
            State::Draft => None,
            State::Canary => Some(0),
            State::Rolling { stage } => Some(stage + 1),
            State::Completed => Some(stages + 1),
            State::Halted { group, .. } => *group,
        }
    }

    /// The group whose reports decide the next step.
    fn current_group(&self) -> Option<usize> {
        match self {
            State::Canary => Some(0),
            State::Rolling { stage } => Some(stage + 1),
            _ => None,
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self, State::Completed)
    }

    fn refuse(self, id: &CampaignId, action: &'static str) -> RolloutError {
        RolloutError::Transition { id: id.0.clone(), action, from: self.to_string() }
    }

    pub fn start(self, id: &CampaignId) -> Result<State, RolloutError> {
        match self {
            State::Draft => Ok(State::Canary),
            other => Err(other.refuse(id, "start")),
        }
    }

    pub fn advance(self, id: &CampaignId, stages: usize) -> Result<State, RolloutError> {
        let next = |k: usize| if k < stages { State::Rolling { stage: k } } else { State::Completed };
        match self {
            State::Canary => Ok(next(0)),
            State::Rolling { stage } => Ok(next(stage + 1)),
            other => Err(other.refuse(id, "advance")),
        }
    }

    pub fn halt(self, id: &CampaignId, reason: String) -> Result<State, RolloutError> {
        match self {
            State::Draft => Ok(State::Halted { group: None, reason }),
            State::Canary => Ok(State::Halted { group: Some(0), reason }),
            State::Rolling { stage } => Ok(State::Halted { group: Some(stage + 1), reason }),
            other => Err(other.refuse(id, "halt")),
        }
    }

    pub fn resume(self, id: &CampaignId) -> Result<State, RolloutError> {
        match self {
            State::Halted { group: None, .. } => Ok(State::Draft),
            State::Halted { group: Some(0), .. } => Ok(State::Canary),
            State::Halted { group: Some(group), .. } => Ok(State::Rolling { stage: group - 1 }),
            other => Err(other.refuse(id, "resume")),
        }
    }
}

/// What the current group has shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub size: usize,
    pub successes: usize,
    /// Failures reported since the campaign was last resumed.
    pub failures: usize,
    /// Devices updated by this campaign that raised alerts since the last resume.
    pub anomalous: usize,
}

/// The decision `decide` takes for an open campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Start,
    Advance,
    Halt(String),
    Wait,
}

/// The pure core of a rollout: from state, the group's stats and the clock, the next step.
pub fn decide(
    spec: &CampaignSpec,
    state: &State,
    stats: &GroupStats,
    now: OffsetDateTime,
    stage_started_at: i64,
) -> Decision {
    match state {
        State::Draft if spec.in_window(now) => return Decision::Start,
        State::Canary | State::Rolling { .. } => {}
        _ => return Decision::Wait,
    }
    if spec.anomaly_devices > 0 && stats.anomalous >= spec.anomaly_devices as usize {
        return Decision::Halt(format!("{} updated device(s) behave anomalously (alerts)", stats.anomalous));
    }
    if stats.size > 0 {
        let rate = stats.failures as f64 / stats.size as f64;
        if rate > spec.failure_threshold {
            return Decision::Halt(format!(
                "failure rate {:.0}% ({}/{}) above {:.0}%",
                rate * 100.0,
                stats.failures,
                stats.size,
                spec.failure_threshold * 100.0
            ));
        }
    }
    let done = stats.successes + stats.failures >= stats.size;
    let soaked = stats.size == 0 || now.unix_timestamp() - stage_started_at >= spec.soak_secs as i64;
    if done && soaked && spec.in_window(now) { Decision::Advance } else { Decision::Wait }
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

/// A state change, for the event bus and the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub id: CampaignId,
    pub from: State,
    pub to: State,
}

/// Campaign operations on the store.
pub struct Rollouts<'a> {
    pub conn: &'a Connection,
    pub repo: &'a Repository,
}

impl Rollouts<'_> {
    /// Creates a campaign in Draft (it starts at the next tick inside a window).
    pub fn create(&self, request: CampaignRequest) -> Result<CampaignId, RolloutError> {
        if !(0.0..=1.0).contains(&request.failure_threshold) {
            return Err(RolloutError::Invalid("failure threshold must be between 0 and 1".into()));
        }
        if request.canary.is_empty() && request.stages.is_empty() {
            return Err(RolloutError::Invalid("a campaign needs a canary list or stages".into()));
        }
        let target =
            db::target(self.conn, &request.target)?.ok_or_else(|| RolloutError::NoTarget(request.target.clone()))?;
        if let Some(open) = self
            .all()?
            .into_iter()
            .find(|c| c.spec.role == target.role && c.state.is_open() && !matches!(c.state, State::Halted { .. }))
        {
            return Err(RolloutError::RoleBusy(open.id.0));
        }
        let accepted = db::role(self.conn, &target.role)?.map_or(0, |r| r.version);
        let id = CampaignId(uuid::Uuid::new_v4().to_string());
        let spec = CampaignSpec {
            target: target.path,
            role: target.role,
            // Offer the newest accepted version of the role: it lists this target and any
            // earlier one (versions are cumulative).
            role_version: accepted.max(target.role_version),
            firmware_version: target.firmware_version,
            device_classes: target.device_classes,
            canary: request.canary,
            stages: request.stages,
            windows: request.windows,
            failure_threshold: request.failure_threshold,
            soak_secs: request.soak_secs,
            anomaly_devices: request.anomaly_devices,
        };
        let now = db::now_unix();
        self.conn.execute(
            "INSERT INTO ota_campaigns (id, spec, state, stage_started_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
            params![id.0, json(&spec), json(&State::Draft), now],
        )?;
        Ok(id)
    }

    pub fn all(&self) -> Result<Vec<Campaign>, RolloutError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, spec, state, stage_started_at, resumed_at FROM ota_campaigns ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, spec, state, stage_started_at, resumed_at) = row?;
            let parse = |what: &str, e: serde_json::Error| {
                RolloutError::Invalid(format!("campaign {id}: stored {what} unreadable: {e}"))
            };
            out.push(Campaign {
                spec: serde_json::from_str(&spec).map_err(|e| parse("spec", e))?,
                state: serde_json::from_str(&state).map_err(|e| parse("state", e))?,
                id: CampaignId(id),
                stage_started_at,
                resumed_at,
            });
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Result<Campaign, RolloutError> {
        self.all()?.into_iter().find(|c| c.id.0 == id).ok_or_else(|| RolloutError::NoCampaign(id.to_owned()))
    }

    fn save(&self, campaign: &Campaign, to: &State, resumed: bool) -> Result<Transition, RolloutError> {
        let now = db::now_unix();
        self.conn.execute(
            "UPDATE ota_campaigns SET state = ?2, stage_started_at = ?3, updated_at = ?3,
                 resumed_at = CASE WHEN ?4 THEN ?3 ELSE resumed_at END WHERE id = ?1",
            params![campaign.id.0, json(to), now, resumed],
        )?;
        if matches!(to, State::Completed) {
            db::release_role(self.conn, &campaign.spec.role, campaign.spec.role_version)?;
        }
        // What devices may see changed: every view gets a higher version.
        db::bump_generation(self.conn)?;
        Ok(Transition { id: campaign.id.clone(), from: campaign.state.clone(), to: to.clone() })
    }

    pub fn halt(&self, id: &str, reason: &str) -> Result<Transition, RolloutError> {
        let c = self.get(id)?;
        let to = c.state.clone().halt(&c.id, reason.to_owned())?;
        self.save(&c, &to, false)
    }

    pub fn resume(&self, id: &str) -> Result<Transition, RolloutError> {
        let c = self.get(id)?;
        let to = c.state.clone().resume(&c.id)?;
        self.save(&c, &to, true)
    }

    /// The current group's stats.
    pub fn stats(&self, c: &Campaign) -> Result<GroupStats, RolloutError> {
        let Some(group) = c.state.current_group() else { return Ok(GroupStats::default()) };
        let devices = db::devices(self.conn)?;
        let mut members: Vec<Mac> = devices
            .iter()
            .filter(|d| c.spec.group_of(&c.id, d.mac, Some(&d.device_class)) == Some(group))
            .map(|d| d.mac)
            .collect();
        if group == 0 {
            // Canary devices count even before they ever checked in: they are expected.
            for mac in &c.spec.canary {
                if !members.contains(mac) {
                    members.push(*mac);
                }
            }
        }
        let outcomes = db::campaign_outcomes(self.conn, &c.id.0)?;
        let mut stats = GroupStats { size: members.len(), ..GroupStats::default() };
        for (mac, status, at) in &outcomes {
            if !members.contains(mac) {
                continue;
            }
            match status.as_str() {
                "success" => stats.successes += 1,
                "failure" if *at >= c.resumed_at => stats.failures += 1,
                _ => {}
            }
        }
        let updated: Vec<Mac> = outcomes.iter().filter(|(_, s, _)| s == "success").map(|(m, _, _)| *m).collect();
        stats.anomalous =
            db::campaign_alerted(self.conn, &c.id.0, c.resumed_at)?.iter().filter(|m| updated.contains(m)).count();
        Ok(stats)
    }

    /// Applies `decide` to every open campaign.
    pub fn tick(&self, now: OffsetDateTime) -> Result<Vec<Transition>, RolloutError> {
        let mut out = Vec::new();
        for c in self.all()? {
            if !c.state.is_open() || matches!(c.state, State::Halted { .. }) {
                continue;
            }
            let stats = self.stats(&c)?;
            let to = match decide(&c.spec, &c.state, &stats, now, c.stage_started_at) {
                Decision::Wait => continue,
                Decision::Start => c.state.clone().start(&c.id)?,
                Decision::Advance => c.state.clone().advance(&c.id, c.spec.stages.len())?,
                Decision::Halt(reason) => c.state.clone().halt(&c.id, reason)?,
            };
            out.push(self.save(&c, &to, false)?);
        }
        Ok(out)
    }

    /// Campaigns that currently offer their release to `mac`.
    fn offering(&self, mac: Mac) -> Result<Vec<Campaign>, RolloutError> {
        let class = db::device(self.conn, mac)?.map(|d| d.device_class);
        Ok(self
            .all()?
            .into_iter()
            .filter(|c| {
                let active = c.state.active_groups(c.spec.stages.len());
                let group = c.spec.group_of(&c.id, mac, class.as_deref());
                matches!((active, group), (Some(a), Some(g)) if g <= a) || matches!(c.state, State::Completed)
            })
            .collect())
    }

    /// Records a device report against the campaigns offering to it. Returns their ids.
    pub fn record_report(&self, mac: Mac, report: &Report) -> Result<Vec<CampaignId>, RolloutError> {
        let mut ids = Vec::new();
        for c in self.offering(mac)? {
            if matches!(c.state, State::Completed) {
                continue;
            }
            let concerns = match report.status {
                ReportStatus::Success => report.version == c.spec.firmware_version,
                ReportStatus::Failure => report.target.as_deref() == Some(c.spec.target.as_str()),
                ReportStatus::Current => false,
            };
            if concerns {
                db::insert_report(
                    self.conn,
                    mac,
                    Some(&c.id.0),
                    report.target.as_deref(),
                    Some(&report.version),
                    report.status.as_str(),
                    &report.detail,
                )?;
                ids.push(c.id);
            }
        }
        if ids.is_empty() {
            db::insert_report(
                self.conn,
                mac,
                None,
                report.target.as_deref(),
                Some(&report.version),
                report.status.as_str(),
                &report.detail,
            )?;
        }
        let version = (report.status != ReportStatus::Failure).then_some(report.version.as_str());
        db::upsert_device(self.conn, mac, &report.device_class, version, report.status.as_str(), &report.detail)?;
        Ok(ids)
    }

    /// Records an alert on a device against the open campaigns that updated it.
    pub fn record_alert(&self, mac: Mac, incident: &str) -> Result<usize, RolloutError> {
        let mut hits = 0;
        for c in self.all()? {
            if !c.state.is_open() {
                continue;
            }
            let updated =
                db::campaign_outcomes(self.conn, &c.id.0)?.iter().any(|(m, s, _)| *m == mac && s == "success");
            if updated {
                db::insert_campaign_alert(self.conn, &c.id.0, mac, incident)?;
                hits += 1;
            }
        }
        Ok(hits)
    }

    /// The metadata view of one device (see the module doc).
    pub fn view_for(&self, mac: Mac) -> Result<View, RolloutError> {
        let targets_version = db::role(self.conn, "targets")?.map_or(0, |r| r.version);
        let mut view = View { targets_version, ..View::default() };
        for row in db::roles(self.conn)? {
            if super::repo::TOP_ROLES.contains(&row.role.as_str()) {
                continue;
            }
            if row.released_version > 0 {
                view.roles.insert(row.role.clone(), row.released_version.min(row.version));
            }
        }
        for c in self.offering(mac)? {
            let entry = view.roles.entry(c.spec.role.clone()).or_insert(0);
            *entry = (*entry).max(c.spec.role_version);
        }
        Ok(view)
    }

    /// Whether `mac` may download `target` (it is listed in a role version its view includes).
    pub fn may_download(&self, mac: Mac, target: &str) -> Result<bool, RolloutError> {
        let Some(row) = db::target(self.conn, target)? else { return Ok(false) };
        let view = self.view_for(mac)?;
        Ok(view.roles.get(&row.role).is_some_and(|v| *v >= row.role_version))
    }
}

/// Outcome a device reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Installed the target; `version` is the new firmware.
    Success,
    /// Could not download, verify or install `target`.
    Failure,
    /// A check-in: runs `version`, nothing to do.
    Current,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Success => "success",
            ReportStatus::Failure => "failure",
            ReportStatus::Current => "current",
        }
    }
}

/// Body of `POST /ota/v1/report`. The device is the client certificate's, never the body's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub device_class: String,
    /// The firmware version running (success: the new one).
    pub version: String,
    pub status: ReportStatus,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub detail: String,
}

fn json<T: Serialize>(value: &T) -> String {
    // Campaign specs and states are plain data; serialising to a String cannot fail.
    serde_json::to_string(value).expect("campaign data serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CampaignSpec {
        CampaignSpec {
            target: "acme/cam-2.bin".into(),
            role: "acme".into(),
            role_version: 2,
            firmware_version: "2.0".into(),
            device_classes: vec!["cam".into()],
            canary: vec![Mac([2, 0, 0, 0, 0, 1])],
            stages: vec![Stage::Percent(50), Stage::Percent(100)],
            windows: vec![],
            failure_threshold: 0.2,
            soak_secs: 0,
            anomaly_devices: 1,
        }
    }

    #[test]
    fn lifecycle_transitions_follow_the_machine() {
        let id = CampaignId("c".into());
        let s = State::Draft.start(&id).unwrap();
        assert_eq!(s, State::Canary);
        let s = s.advance(&id, 2).unwrap();
        assert_eq!(s, State::Rolling { stage: 0 });
        let halted = s.clone().halt(&id, "x".into()).unwrap();
        assert_eq!(halted.clone().resume(&id).unwrap(), s);
        let s = s.advance(&id, 2).unwrap().advance(&id, 2).unwrap();
        assert_eq!(s, State::Completed);
        assert!(s.clone().halt(&id, "late".into()).is_err());
        assert!(State::Canary.resume(&id).is_err());
        let halted_draft = State::Draft.halt(&id, "not yet".into()).unwrap();
        assert_eq!(halted_draft.active_groups(2), None);
        assert_eq!(halted_draft.resume(&id).unwrap(), State::Draft);
    }

    #[test]
    fn failing_canary_halts_and_clean_one_advances() {
        let spec = spec();
        let now = OffsetDateTime::now_utc();
        let failing = GroupStats { size: 1, successes: 0, failures: 1, anomalous: 0 };
        assert!(matches!(decide(&spec, &State::Canary, &failing, now, 0), Decision::Halt(_)));
        let clean = GroupStats { size: 1, successes: 1, failures: 0, anomalous: 0 };
        assert_eq!(decide(&spec, &State::Canary, &clean, now, 0), Decision::Advance);
        let pending = GroupStats { size: 2, successes: 1, failures: 0, anomalous: 0 };
        assert_eq!(decide(&spec, &State::Canary, &pending, now, 0), Decision::Wait);
        let anomalous = GroupStats { size: 1, successes: 1, failures: 0, anomalous: 1 };
        assert!(matches!(decide(&spec, &State::Canary, &anomalous, now, 0), Decision::Halt(r) if r.contains("anomal")));
    }

    #[test]
    fn maintenance_window_gates_start_and_advance() {
        let mut spec = spec();
        let window: Window = "22:00-02:00".parse().unwrap();
        spec.windows = vec![window];
        let at = |h: u8| OffsetDateTime::now_utc().replace_time(time::Time::from_hms(h, 30, 0).unwrap());
        assert!(window.contains(at(23)) && window.contains(at(1)) && !window.contains(at(12)));
        assert_eq!(decide(&spec, &State::Draft, &GroupStats::default(), at(12), 0), Decision::Wait);
        assert_eq!(decide(&spec, &State::Draft, &GroupStats::default(), at(23), 0), Decision::Start);
        let clean = GroupStats { size: 1, successes: 1, ..GroupStats::default() };
        assert_eq!(decide(&spec, &State::Canary, &clean, at(12), 0), Decision::Wait);
        assert!("25:00-01:00".parse::<Window>().is_err());
    }

    #[test]
    fn groups_are_canary_then_cumulative_percent_buckets() {
        let spec = spec();
        let id = CampaignId("c".into());
        assert_eq!(spec.group_of(&id, Mac([2, 0, 0, 0, 0, 1]), None), Some(0));
        assert_eq!(spec.group_of(&id, Mac([2, 0, 0, 0, 0, 9]), Some("plug")), None);
        let groups: Vec<_> = (0..200u8).map(|i| spec.group_of(&id, Mac([2, 0, 0, 0, 1, i]), Some("cam"))).collect();
        assert!(groups.iter().all(|g| matches!(g, Some(1 | 2))));
        let first = groups.iter().filter(|g| **g == Some(1)).count();
        assert!((60..140).contains(&first), "about half in the 50% stage, got {first}");
        assert_eq!("class:cam".parse::<Stage>().unwrap(), Stage::Class("cam".into()));
        assert!("0%".parse::<Stage>().is_err());
    }
}
