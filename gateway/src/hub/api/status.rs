//! `GET /api/v1/status` at the hub: the fleet at a glance. `scope: "fleet"` tells the console
//! it talks to the hub (the gateway says `gateway`). The fleet counts are read here for
//! `metrics` too, from the counters the store keeps (migration 0005), never by counting a
//! large table.
use std::collections::{BTreeMap, HashMap};

use axum::{Json, Router, extract::State, routing::get};
use serde::{Deserialize, Serialize};

use super::{HubApi, gateways::STALE_AFTER, store_error};
use crate::{
    api::{ApiError, auth::Caller, handlers::state_counts},
    device::Access,
    event::Severity,
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
    /// Whether the hub keeps up with the reports.
    pub ingest: IngestStatus,
}

/// How far behind the gateways ingest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestStatus {
    /// Reports waiting in the stream for the hub.
    pub pending: u64,
    /// Milliseconds from the broker storing the newest report of ingest's last batch to its
    /// commit.
    pub lag_ms: u64,
}

pub fn routes() -> Router<HubApi> {
    Router::new().route("/api/v1/status", get(status))
}

async fn status(State(state): State<HubApi>, _caller: Caller) -> Result<Json<FleetStatus>, ApiError> {
    let pool = state.pool();
    let (gateways, stale_gateways) = gateway_counts(pool).await.map_err(store_error)?;
    let by_access: Vec<(String, i64)> =
        sqlx::query_as("SELECT access, sum(devices)::int8 FROM fleet_device_counts GROUP BY access")
            .fetch_all(pool)
            .await
            .map_err(store_error)?;
    let open_alerts = open_alerts_by_severity(pool).await.map_err(store_error)?.into_iter().map(|(_, n)| n).sum();
    let by_access: HashMap<Access, u64> = by_access
        .into_iter()
        .filter_map(|(access, count)| Some((access.parse().ok()?, count.unsigned_abs())))
        .collect();
    let ingest = state.ingest_snapshot().await;
    Ok(Json(FleetStatus {
        scope: "fleet".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        gateways,
        stale_gateways,
        devices: state_counts(&by_access),
        open_alerts,
        ingest: IngestStatus { pending: ingest.pending, lag_ms: ingest.lag_ms },
    }))
}

/// Gateways that ever reported, and those of them silent for longer than `STALE_AFTER`.
pub(super) async fn gateway_counts(pool: &sqlx::PgPool) -> Result<(u64, u64), sqlx::Error> {
    let (gateways, stale): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE last_seen < now() - make_interval(secs => $1)) FROM gateways",
    )
    .bind(STALE_AFTER.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok((gateways.unsigned_abs(), stale.unsigned_abs()))
}

/// Alerts not yet resolved, by severity, every severity listed.
pub(super) async fn open_alerts_by_severity(pool: &sqlx::PgPool) -> Result<Vec<(Severity, u64)>, sqlx::Error> {
    let counts: Vec<(i16, i64)> =
        sqlx::query_as("SELECT severity, sum(alerts)::int8 FROM open_alert_counts GROUP BY severity")
            .fetch_all(pool)
            .await?;
    Ok(Severity::ALL
        .into_iter()
        .map(|severity| {
            let count = counts.iter().find(|(rank, _)| i64::from(*rank) == severity.rank()).map_or(0, |(_, n)| *n);
            (severity, count.unsigned_abs())
        })
        .collect())
}
