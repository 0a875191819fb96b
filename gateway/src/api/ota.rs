//! The console's OTA page: `GET /api/v1/ota/campaigns` and `/api/v1/ota/campaigns/{id}`, each
//! campaign with its target, state, stages (which is active), per-stage progress and why it
//! halted. Reads the OTA tables (`ota::rollout::campaigns`, `ota::rollout::progress`) on the
//! API's own connection, on the blocking pool; writes nothing (campaigns are created, halted
//! and resumed with `iotgw ota campaign`).
use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ApiState, auth::Caller, error::ApiError, handlers::with_locked, model::ErrorBody};
use crate::ota::rollout::{self, Stage, State as CampaignState};

/// One rollout campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Campaign {
    pub id: String,
    /// The firmware image (target path) it releases.
    pub target: String,
    pub firmware_version: String,
    /// The vendor role that signed it.
    pub role: String,
    /// Device classes it is for.
    pub device_classes: Vec<String>,
    /// `draft`, `canary`, `rolling`, `completed` or `halted`.
    pub state: String,
    /// The index in `stages` of the stage whose reports decide the next step; absent unless
    /// the campaign is in its canary or rolling.
    pub active_stage: Option<usize>,
    /// Why it halted (automatically or by an operator), while halted.
    pub halt_reason: Option<String>,
    /// The canary first, then each stage.
    pub stages: Vec<CampaignStage>,
    /// Maintenance windows (UTC, `HH:MM-HH:MM`); empty when any time will do.
    pub windows: Vec<String>,
    /// Failure fraction of a stage above which it halts.
    pub failure_threshold: f64,
    /// When the current stage (or state) began.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub stage_started_at: OffsetDateTime,
}

/// One stage of a campaign and how far it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CampaignStage {
    /// `canary`, a cumulative percentage (`50%`) or a class (`class:camera`).
    pub name: String,
    /// Devices in the stage.
    pub devices: usize,
    /// Devices offered the release (all of the stage's once it started, else 0).
    pub offered: usize,
    /// Devices that installed it.
    pub installed: usize,
    /// Devices whose install failed (their latest report).
    pub failed: usize,
}

fn state_name(state: &CampaignState) -> &'static str {
    match state {
        CampaignState::Draft => "draft",
        CampaignState::Canary => "canary",
        CampaignState::Rolling { .. } => "rolling",
        CampaignState::Completed => "completed",
        CampaignState::Halted { .. } => "halted",
    }
}

fn stage_name(stage: &Stage) -> String {
    match stage {
        Stage::Percent(percent) => format!("{percent}%"),
        Stage::Class(class) => format!("class:{class}"),
    }
}

fn minutes(at: u16) -> String {
    format!("{:02}:{:02}", at / 60, at % 60)
}

/// What the API (and `iotgw ota campaign status --json`) shows of `campaign`, with its
/// groups' progress.
pub fn view(conn: &rusqlite::Connection, campaign: rollout::Campaign) -> Result<Campaign, rollout::RolloutError> {
    let groups = rollout::progress(conn, &campaign)?;
    let plan = &campaign.spec.plan;
    let names = std::iter::once("canary".to_owned()).chain(plan.stages.iter().map(stage_name));
    let stages = names
        .zip(groups)
        .map(|(name, group)| CampaignStage {
            name,
            devices: group.devices,
            offered: if group.offered { group.devices } else { 0 },
            installed: group.installed,
            failed: group.failed,
        })
        .collect();
    let halt_reason = match &campaign.state {
        CampaignState::Halted { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    Ok(Campaign {
        state: state_name(&campaign.state).to_owned(),
        active_stage: campaign.state.current_group(),
        halt_reason,
        stages,
        windows: plan.windows.iter().map(|w| format!("{}-{}", minutes(w.start), minutes(w.end))).collect(),
        failure_threshold: plan.failure_threshold,
        stage_started_at: OffsetDateTime::from_unix_timestamp(campaign.stage_started_at)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        id: campaign.id.0,
        target: campaign.spec.target,
        firmware_version: campaign.spec.firmware_version,
        role: campaign.spec.role,
        device_classes: campaign.spec.device_classes,
    })
}

fn ota_error(error: rollout::RolloutError) -> ApiError {
    ApiError::Internal(format!("ota store: {error}"))
}

/// Runs `work` on the OTA connection, on the blocking pool.
async fn with_ota<T: Send + 'static>(
    state: &ApiState,
    work: impl FnOnce(&rusqlite::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let conn = state.ota.clone().ok_or_else(|| ApiError::Internal("this server shows no OTA campaigns".into()))?;
    with_locked(conn, "OTA store", move |conn| work(conn)).await
}

/// Every rollout campaign, oldest first, with its stages' progress.
#[utoipa::path(
    get, path = "/api/v1/ota/campaigns", tag = "ota",
    responses(
        (status = 200, body = Vec<Campaign>, description = "Success"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn campaigns(State(state): State<ApiState>, _caller: Caller) -> Result<Json<Vec<Campaign>>, ApiError> {
    let campaigns = with_ota(&state, |conn| {
        rollout::campaigns(conn).map_err(ota_error)?.into_iter().map(|c| view(conn, c).map_err(ota_error)).collect()
    })
    .await?;
    Ok(Json(campaigns))
}

/// One rollout campaign with its stages' progress.
#[utoipa::path(
    get, path = "/api/v1/ota/campaigns/{id}", tag = "ota",
    params(("id" = String, Path, description = "The campaign's id")),
    responses(
        (status = 200, body = Campaign, description = "Success"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 404, body = ErrorBody, description = "No such campaign"),
    ),
    security(("bearer" = []))
)]
pub async fn campaign_by_id(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Campaign>, ApiError> {
    let shown = with_ota(&state, move |conn| {
        let found = rollout::campaigns(conn).map_err(ota_error)?.into_iter().find(|c| c.id.0 == id);
        view(conn, found.ok_or(ApiError::UnknownCampaign(id))?).map_err(ota_error)
    })
    .await?;
    Ok(Json(shown))
}
