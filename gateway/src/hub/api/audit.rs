//! The hub's own audit log, `hub_audit`: what people did at the hub (sign-ins, alert work,
//! commands), written by `record` and read by `GET /api/v1/audit`, newest first, filtered by
//! actor, action, site, gateway, device and time, paged by id.
use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    response::Response,
    routing::get,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{HubApi, query, store_error};
use crate::api::{
    ApiError,
    auth::Caller,
    handlers::parse_mac,
    paging::paged,
    search::{filter_text, page_size, time_filter},
};

/// One entry to write: who did what, to which gateway or device.
#[derive(Clone, Copy, Debug, Default)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub site: Option<&'a str>,
    pub gateway: Option<&'a str>,
    pub mac: Option<&'a str>,
    pub detail: &'a str,
}

/// Writes `entry`, timed now, through `executor` (the pool, or the transaction of the change
/// it records, so the change and its entry commit together).
pub async fn record<'e>(executor: impl sqlx::PgExecutor<'e>, entry: &Entry<'_>) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO hub_audit (time, actor, action, site, gateway, mac, detail) \
         VALUES (now(), $1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.site)
    .bind(entry.gateway)
    .bind(entry.mac)
    .bind(entry.detail)
    .execute(executor)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// One entry, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditView {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub site: Option<String>,
    pub gateway: Option<String>,
    pub mac: Option<String>,
    pub detail: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    site: Option<String>,
    gateway: Option<String>,
    /// The device's MAC address.
    device: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub fn routes() -> Router<HubApi> {
    Router::new().route("/api/v1/audit", get(list))
}

async fn list(
    State(state): State<HubApi>,
    _caller: Caller,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let limit = page_size(params.limit)?;
    let after: Option<i64> = query::after(params.cursor)?;
    let mut select = query::Select::new("SELECT id, time, actor, action, site, gateway, mac, detail FROM hub_audit");
    select
        .equal("actor", filter_text("actor", params.actor)?)
        .equal("action", filter_text("action", params.action)?)
        .equal("site", query::name("site", params.site)?)
        .equal("gateway", query::name("gateway", params.gateway)?)
        .equal("mac", params.device.as_deref().map(parse_mac).transpose()?.map(|mac| mac.to_string()))
        .compare("time", " >= ", time_filter("since", params.since)?)
        .compare("time", " < ", time_filter("until", params.until)?)
        .compare("id", " < ", after);
    let rows: Vec<AuditView> =
        select.page("id DESC", limit).build_query_as().fetch_all(state.pool()).await.map_err(store_error)?;
    let (rows, next) = query::page(rows, limit, |row| row.id);
    Ok(paged(rows, next))
}
