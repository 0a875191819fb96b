//! `GET /api/v1/status` at the hub: the fleet at a glance. `scope: "fleet"` tells the console
//! it talks to the hub (the gateway says `gateway`).
use std::collections::{BTreeMap, HashMap};

use axum::{Json, Router, extract::State, routing::get};
use serde::{Deserialize, Serialize};

use super::{HubApi, gateways::STALE_AFTER, store_error};
use crate::{
    api::{ApiError, auth::Caller, handlers::state_counts},
    device::Access,
};

/// The fleet's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Always `fleet`.
    pub scope: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// Gateways that ever reported.
    pub gateways: u64,
    /// Of those, the ones silent for longer than `STALE_AFTER`.
    pub stale_gateways: u64,
    /// Fleet devices by access state (as the gateway that saw each last has it), every state
    /// listed.
    pub devices: BTreeMap<String, u64>,
    /// Alerts of the fleet queue not yet resolved (open or acknowledged).
    pub open_alerts: u64,
}

pub fn routes() -> Router<HubApi> {
    Router::new().route("/api/v1/status", get(status))
}

async fn status(State(state): State<HubApi>, _caller: Caller) -> Result<Json<FleetStatus>, ApiError> {
    let pool = state.pool();
    let stale_secs = STALE_AFTER.as_secs_f64();
    let (gateways, stale_gateways): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE last_seen < now() - make_interval(secs => $1)) FROM gateways",
    )
    .bind(stale_secs)
    .fetch_one(pool)
    .await
    .map_err(store_error)?;
    let by_access: Vec<(String, i64)> = sqlx::query_as(
        "SELECT g.access, count(*) FROM fleet_devices f \
         JOIN gateway_devices g ON g.site = f.site AND g.gateway = f.gateway AND g.mac = f.mac \
         GROUP BY g.access",
    )
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    let open_alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE state <> 'resolved'")
        .fetch_one(pool)
        .await
        .map_err(store_error)?;
    let by_access: HashMap<Access, u64> = by_access
        .into_iter()
        .filter_map(|(access, count)| Some((access.parse().ok()?, count.unsigned_abs())))
        .collect();
    Ok(Json(FleetStatus {
        scope: "fleet".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        gateways: gateways.unsigned_abs(),
        stale_gateways: stale_gateways.unsigned_abs(),
        devices: state_counts(&by_access),
        open_alerts: open_alerts.unsigned_abs(),
    }))
}
