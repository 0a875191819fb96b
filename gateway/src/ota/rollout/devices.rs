//! The device side of campaigns: which campaigns offer their release to a device, the
//! metadata view it is served (see the design note in `rollout`), and what its reports and
//! alerts count for.
//!
//! Reads `ota_metadata`, `ota_targets`, `ota_devices`; writes `ota_reports`, `ota_devices`,
//! `ota_campaign_alerts`.
use serde::{Deserialize, Serialize};

use super::{Campaign, CampaignId, RolloutError, Rollouts, State};
use crate::{
    device::Mac,
    ota::{
        db,
        repo::{TOP_ROLES, View},
    },
};

impl Rollouts<'_> {
    /// Campaigns that currently offer their release to `mac`.
    fn offering(&self, mac: Mac) -> Result<Vec<Campaign>, RolloutError> {
        let class = db::device(self.conn, mac)?.map(|d| d.device_class);
        Ok(self
            .all()?
            .into_iter()
            .filter(|c| {
                let active = c.state.active_groups(c.spec.plan.stages.len());
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
            if TOP_ROLES.contains(&row.role.as_str()) {
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
