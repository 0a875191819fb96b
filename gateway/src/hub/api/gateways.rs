//! `GET /api/v1/gateways`: every gateway that ever reported, by site, with its last health
//! report and whether it went silent. Paged by (site, gateway).
use std::time::Duration;

use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    response::Response,
    routing::get,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{HubApi, query, store_error};
use crate::{
    api::{ApiError, auth::Caller, paging::paged, search::page_size},
    fleet::wire::Health,
};

/// A gateway silent this long is stale: ten default health periods (`fleet.health_secs` = 30),
/// so a broker hiccup or a slow hub does not mark the fleet stale.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// One gateway, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayView {
    pub site: String,
    pub gateway: String,
    /// Its first report of any kind, to the second (as `last_seen`).
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Its last report of any kind, to the second: ingest writes a gateway's row at most once a
    /// second, however many reports it sends (`hub::ingest`).
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Silent for longer than `STALE_AFTER`.
    pub stale: bool,
    /// The policy bundle version it enforces (from its last health report).
    pub policy_version: Option<u64>,
    /// `iotgw` version it runs.
    pub version: Option<String>,
    /// Its last health report, as sent; absent until the first.
    pub health: Option<Health>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaysParams {
    site: Option<String>,
    /// `true`: only the stale; `false`: only the live.
    stale: Option<bool>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub fn routes() -> Router<HubApi> {
    Router::new().route("/api/v1/gateways", get(list))
}

type Row = (String, String, OffsetDateTime, OffsetDateTime, bool, Option<sqlx::types::Json<serde_json::Value>>);

async fn list(
    State(state): State<HubApi>,
    _caller: Caller,
    params: Result<Query<GatewaysParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let site = query::name("site", params.site)?;
    let limit = page_size(params.limit)?;
    let after: Option<(String, String)> = query::after(params.cursor)?;
    let (after_site, after_gateway) = after.unzip();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT site, gateway, first_seen, last_seen, \
                last_seen < now() - make_interval(secs => $1) AS stale, health \
         FROM gateways \
         WHERE ($2::text IS NULL OR site = $2) \
           AND ($3::boolean IS NULL OR (last_seen < now() - make_interval(secs => $1)) = $3) \
           AND ($4::text IS NULL OR (site, gateway) > ($4, $5)) \
         ORDER BY site, gateway LIMIT $6",
    )
    .bind(STALE_AFTER.as_secs_f64())
    .bind(site)
    .bind(params.stale)
    .bind(after_site)
    .bind(after_gateway)
    .bind(query::fetch(limit))
    .fetch_all(state.pool())
    .await
    .map_err(store_error)?;
    let (rows, next) = query::page(rows, limit, |row| (row.0.clone(), row.1.clone()));
    Ok(paged(rows.into_iter().map(view).collect::<Vec<_>>(), next))
}

fn view((site, gateway, first_seen, last_seen, stale, health): Row) -> GatewayView {
    // A report this hub's version cannot read is shown without its health rather than failing
    // the whole list.
    let health: Option<Health> = health.and_then(|json| serde_json::from_value(json.0).ok());
    GatewayView {
        site,
        gateway,
        first_seen,
        last_seen,
        stale,
        policy_version: health.as_ref().and_then(|h| h.policy_version),
        version: health.as_ref().map(|h| h.version.clone()),
        health,
    }
}
