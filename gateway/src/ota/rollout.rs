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
//! `campaign` holds the campaign model (stages, windows, groups), `progression` the state
//! machine and the decision to start, advance or halt, `devices` what each device is offered
//! and what its reports and alerts count for, `progress` how far each group got (the API's
//! campaign pages).
//!
//! Reads and writes `ota_campaigns`, `ota_reports`, `ota_campaign_alerts`, `ota_metadata`.
use rusqlite::{Connection, params};
use serde::Serialize;

use super::{db, repo::Repository};

mod campaign;
mod devices;
mod progress;
mod progression;

pub use campaign::{Campaign, CampaignId, CampaignRequest, CampaignSpec, Plan, Stage, Window};
pub use devices::{Report, ReportStatus};
pub use progress::{GroupProgress, progress};
pub use progression::{Decision, GroupStats, State, Transition, decide};

/// Default failure fraction of a stage above which the campaign halts.
pub const DEFAULT_FAILURE_THRESHOLD: f64 = 0.2;
/// Default time a stage runs after its last report before the next one starts.
pub const DEFAULT_SOAK_SECS: u64 = 600;
/// Default number of updated devices with alerts that halts a campaign.
pub const DEFAULT_ANOMALY_DEVICES: u32 = 1;

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

/// Campaign operations on the store.
pub struct Rollouts<'a> {
    pub conn: &'a Connection,
    pub repo: &'a Repository,
}

impl Rollouts<'_> {
    /// Creates a campaign in Draft (it starts at the next tick inside a window).
    pub fn create(&self, request: CampaignRequest) -> Result<CampaignId, RolloutError> {
        if !(0.0..=1.0).contains(&request.plan.failure_threshold) {
            return Err(RolloutError::Invalid("failure threshold must be between 0 and 1".into()));
        }
        if request.plan.canary.is_empty() && request.plan.stages.is_empty() {
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
            plan: request.plan,
        };
        let now = db::now_unix();
        self.conn.execute(
            "INSERT INTO ota_campaigns (id, spec, state, stage_started_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
            params![id.0, json(&spec), json(&State::Draft), now],
        )?;
        Ok(id)
    }

    pub fn all(&self) -> Result<Vec<Campaign>, RolloutError> {
        campaigns(self.conn)
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
}

/// Every stored campaign, oldest first (reads `ota_campaigns` only: readers need no
/// repository, see `Rollouts`).
pub fn campaigns(conn: &Connection) -> Result<Vec<Campaign>, RolloutError> {
    let mut stmt = conn
        .prepare("SELECT id, spec, state, stage_started_at, resumed_at FROM ota_campaigns ORDER BY created_at, id")?;
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

fn json<T: Serialize>(value: &T) -> String {
    // Campaign specs and states are plain data; serialising to a String cannot fail.
    serde_json::to_string(value).expect("campaign data serialises")
}

#[cfg(test)]
pub(crate) mod tests;
