//! `GET /api/v1/events`: every event the gateways reported (alerts, actions, lifecycle,
//! policy, audit), newest first, filtered by site, gateway, device, kind, severity and time,
//! paged by (time, site, gateway, seq).
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
    alerts::parse_severity,
    api::{
        ApiError,
        auth::Caller,
        handlers::parse_mac,
        paging::paged,
        search::{filter_text, page_size, time_filter},
    },
    event::Severity,
};

/// One event of one gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub site: String,
    pub gateway: String,
    /// Its place in that gateway's outbox.
    pub seq: i64,
    /// `alert`, `action`, `lifecycle`, `policy`, `audit`.
    pub kind: String,
    pub severity: Severity,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub device: Option<String>,
    pub actor: String,
    /// The event as the gateway sent it.
    pub event: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    site: Option<String>,
    gateway: Option<String>,
    /// The device's MAC address.
    device: Option<String>,
    kind: Option<String>,
    /// This severity or worse.
    severity: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub fn routes() -> Router<HubApi> {
    Router::new().route("/api/v1/events", get(list))
}

type Row =
    (String, String, i64, String, i16, OffsetDateTime, Option<String>, String, sqlx::types::Json<serde_json::Value>);

/// The columns of `Row`, as a literal for `concat!` (sqlx takes only static SQL).
macro_rules! select_events {
    () => {
        "SELECT site, gateway, seq, kind, severity, time, mac, actor, body FROM events"
    };
}

fn view((site, gateway, seq, kind, severity, time, device, actor, body): Row) -> EventView {
    EventView {
        site,
        gateway,
        seq,
        kind,
        severity: Severity::from_rank(i64::from(severity)).unwrap_or(Severity::Info),
        time,
        device,
        actor,
        event: body.0,
    }
}

async fn list(
    State(state): State<HubApi>,
    _caller: Caller,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let severity = params.severity.as_deref().map(parse_severity).transpose().map_err(ApiError::BadRequest)?;
    let since = time_filter("since", params.since)?;
    let until = time_filter("until", params.until)?;
    let limit = page_size(params.limit)?;
    let after: Option<(i64, String, String, i64)> = query::after(params.cursor)?;
    let (after_time, after_site, after_gateway, after_seq) = match after {
        Some((micros, site, gateway, seq)) => (Some(query::from_micros(micros)?), Some(site), Some(gateway), Some(seq)),
        None => (None, None, None, None),
    };
    let sql = concat!(
        select_events!(),
        " WHERE ($1::text IS NULL OR site = $1) AND ($2::text IS NULL OR gateway = $2) \
           AND ($3::text IS NULL OR mac = $3) AND ($4::text IS NULL OR kind = $4) \
           AND ($5::smallint IS NULL OR severity >= $5) \
           AND ($6::timestamptz IS NULL OR time >= $6) AND ($7::timestamptz IS NULL OR time < $7) \
           AND ($8::timestamptz IS NULL OR (time, site, gateway, seq) < ($8, $9, $10, $11)) \
         ORDER BY time DESC, site DESC, gateway DESC, seq DESC LIMIT $12"
    );
    let rows: Vec<Row> = sqlx::query_as(sql)
        .bind(query::name("site", params.site)?)
        .bind(query::name("gateway", params.gateway)?)
        .bind(params.device.as_deref().map(parse_mac).transpose()?.map(|mac| mac.to_string()))
        .bind(filter_text("kind", params.kind)?)
        .bind(severity.map(|s| i16::try_from(s.rank()).unwrap_or(i16::MAX)))
        .bind(since)
        .bind(until)
        .bind(after_time)
        .bind(after_site)
        .bind(after_gateway)
        .bind(after_seq)
        .bind(query::fetch(limit))
        .fetch_all(state.pool())
        .await
        .map_err(store_error)?;
    let (rows, next) = query::page(rows, limit, |row| (query::micros(row.5), row.0.clone(), row.1.clone(), row.2));
    Ok(paged(rows.into_iter().map(view).collect::<Vec<_>>(), next))
}

/// The latest `limit` events of the device `mac` at any gateway, newest first.
pub async fn of_device(pool: &sqlx::PgPool, mac: &str, limit: i64) -> Result<Vec<EventView>, ApiError> {
    let rows: Vec<Row> = sqlx::query_as(concat!(
        select_events!(),
        " WHERE mac = $1 ORDER BY time DESC, site, gateway, seq DESC LIMIT $2"
    ))
    .bind(mac)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    Ok(rows.into_iter().map(view).collect())
}
