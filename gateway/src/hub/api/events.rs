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
use sqlx::{Postgres, QueryBuilder};
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
    device::Mac,
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

/// An event list's request, checked: the filters given and where the page starts.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub site: Option<String>,
    pub gateway: Option<String>,
    pub device: Option<Mac>,
    pub kind: Option<String>,
    /// This severity or worse.
    pub severity: Option<Severity>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// The sort key of the last event of the previous page.
    pub after: Option<(OffsetDateTime, String, String, i64)>,
    pub limit: usize,
}

impl EventFilter {
    fn from_params(params: EventsParams) -> Result<Self, ApiError> {
        let after = match query::after::<(i64, String, String, i64)>(params.cursor)? {
            Some((micros, site, gateway, seq)) => Some((query::from_micros(micros)?, site, gateway, seq)),
            None => None,
        };
        Ok(Self {
            site: query::name("site", params.site)?,
            gateway: query::name("gateway", params.gateway)?,
            device: params.device.as_deref().map(parse_mac).transpose()?,
            kind: filter_text("kind", params.kind)?,
            severity: params.severity.as_deref().map(parse_severity).transpose().map_err(ApiError::BadRequest)?,
            since: time_filter("since", params.since)?,
            until: time_filter("until", params.until)?,
            after,
            limit: page_size(params.limit)?,
        })
    }

    /// The statement the list runs: the filters given, newest first, the page after `after`.
    pub fn query(&self) -> QueryBuilder<Postgres> {
        let mut select = query::Select::new(select_events!());
        select
            .equal("site", self.site.clone())
            .equal("gateway", self.gateway.clone())
            .equal("mac", self.device.map(|mac| mac.to_string()))
            .equal("kind", self.kind.clone())
            .compare("severity", " >= ", self.severity.map(|s| i16::try_from(s.rank()).unwrap_or(i16::MAX)))
            .compare("time", " >= ", self.since)
            .compare("time", " < ", self.until);
        if let Some((time, site, gateway, seq)) = &self.after {
            select
                .and()
                .push("(time, site, gateway, seq) < (")
                .push_bind(*time)
                .push(", ")
                .push_bind(site.clone())
                .push(", ")
                .push_bind(gateway.clone())
                .push(", ")
                .push_bind(*seq)
                .push(")");
        }
        select.page("time DESC, site DESC, gateway DESC, seq DESC", self.limit)
    }
}

async fn list(
    State(state): State<HubApi>,
    _caller: Caller,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let filter = EventFilter::from_params(params)?;
    let mut sql = filter.query();
    let rows: Vec<Row> = sql.build_query_as().fetch_all(state.pool()).await.map_err(store_error)?;
    let (rows, next) =
        query::page(rows, filter.limit, |row| (query::micros(row.5), row.0.clone(), row.1.clone(), row.2));
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
