//! The fleet alert queue: `GET /api/v1/alerts` (filters state, severity, site, gateway,
//! device, detector; newest first, paged by (last_seen, id)), `GET /api/v1/alerts/{id}` and
//! `PATCH /api/v1/alerts/{id}` (the gateway API's `AlertChange`: acknowledge, resolve, reopen,
//! assign, note; operator role). The hub keeps the analysts' state: a change is checked as the
//! gateway's store checks it and written with its `hub_audit` entry in one transaction.
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    response::Response,
    routing::get,
};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;

use super::{HubApi, audit, query, store_error};
use crate::{
    alerts::{self as store, AlertsError, Change, Resolution, parse_severity},
    api::{
        ApiError,
        alerts::{AlertNote, AlertSummary, alert_id, parse_change},
        auth::Caller,
        gate::Operator,
        handlers::parse_mac,
        paging::paged,
        search::filter_text,
    },
    device::Mac,
    event::Severity,
};

/// Alerts per page unless `limit` says (as the gateway's queue).
pub const DEFAULT_PAGE: usize = 50;
/// Most alerts per page.
pub const MAX_PAGE: usize = 500;

/// One alert of the fleet queue: the gateway API's summary, with its gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetAlert {
    #[serde(flatten)]
    pub summary: AlertSummary,
    pub site: String,
    pub gateway: String,
}

/// `GET /api/v1/alerts/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetAlertDetail {
    #[serde(flatten)]
    pub alert: FleetAlert,
    /// Flows involved, from the latest repeat.
    pub flows: Vec<String>,
    /// Actions the gateway took because of it are its events; the hub lists none here.
    pub responses: Vec<serde_json::Value>,
    /// Oldest first.
    pub notes: Vec<AlertNote>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsParams {
    state: Option<String>,
    severity: Option<String>,
    site: Option<String>,
    gateway: Option<String>,
    device: Option<String>,
    detector: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// What the queue's columns do not hold, read from the latest repeat as the gateway sent it
/// (`event::GatewayEvent`); missing fields are left empty rather than failing the queue.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Latest {
    actor: String,
    score: f64,
    expected: String,
    observed: String,
    device_ip: Option<std::net::IpAddr>,
    flows: Vec<String>,
}

pub fn routes() -> Router<HubApi> {
    Router::new().route("/api/v1/alerts", get(list)).route("/api/v1/alerts/{id}", get(show).patch(change))
}

/// The columns of `Row`, as a literal for `concat!` (sqlx takes only static SQL).
macro_rules! select_alerts {
    () => {
        "SELECT id, site, gateway, incident_id, mac, detector, severity, state, resolution, assignee, \
         first_seen, last_seen, count, ended, latest FROM alerts"
    };
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    site: String,
    gateway: String,
    incident_id: String,
    mac: Option<String>,
    detector: String,
    severity: i16,
    state: String,
    resolution: Option<String>,
    assignee: Option<String>,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
    count: i64,
    ended: bool,
    latest: sqlx::types::Json<serde_json::Value>,
}

impl Row {
    /// The alert, and the flows of its latest repeat.
    fn view(self) -> (FleetAlert, Vec<String>) {
        let latest: Latest = serde_json::from_value(self.latest.0).unwrap_or_default();
        let summary = AlertSummary {
            id: self.id,
            incident_id: self.incident_id,
            detector: self.detector,
            actor: latest.actor,
            severity: Severity::from_rank(i64::from(self.severity)).unwrap_or(Severity::Info),
            score: latest.score,
            expected: latest.expected,
            observed: latest.observed,
            device: self.mac.and_then(|mac| mac.parse().ok()),
            device_ip: latest.device_ip,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            count: self.count.unsigned_abs(),
            calm_since: self.ended.then_some(self.last_seen),
            state: self.state.parse().unwrap_or(store::State::Open),
            resolution: self.resolution.and_then(|r| r.parse().ok()),
            assignee: self.assignee,
        };
        (FleetAlert { summary, site: self.site, gateway: self.gateway }, latest.flows)
    }
}

/// An alert list's request, checked: the filters given and where the page starts.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    pub state: Option<store::State>,
    pub severity: Option<Severity>,
    pub site: Option<String>,
    pub gateway: Option<String>,
    pub device: Option<Mac>,
    pub detector: Option<String>,
    /// The sort key of the last alert of the previous page.
    pub after: Option<(OffsetDateTime, i64)>,
    pub limit: usize,
}

impl AlertFilter {
    fn from_params(params: AlertsParams) -> Result<Self, ApiError> {
        let limit = match params.limit.unwrap_or(DEFAULT_PAGE) {
            limit @ 1..=MAX_PAGE => limit,
            _ => return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}"))),
        };
        let after = match query::after::<(i64, i64)>(params.cursor)? {
            Some((micros, id)) => Some((query::from_micros(micros)?, id)),
            None => None,
        };
        Ok(Self {
            state: params.state.as_deref().map(str::parse).transpose().map_err(ApiError::BadRequest)?,
            severity: params.severity.as_deref().map(parse_severity).transpose().map_err(ApiError::BadRequest)?,
            site: query::name("site", params.site)?,
            gateway: query::name("gateway", params.gateway)?,
            device: params.device.as_deref().map(parse_mac).transpose()?,
            detector: filter_text("detector", params.detector)?,
            after,
            limit,
        })
    }

    /// The statement the list runs: the filters given, newest first, the page after `after`.
    pub fn query(&self) -> QueryBuilder<Postgres> {
        let mut select = query::Select::new(select_alerts!());
        select
            .equal("state", self.state.map(store::State::as_str))
            .equal("severity", self.severity.map(|s| i16::try_from(s.rank()).unwrap_or(i16::MAX)))
            .equal("site", self.site.clone())
            .equal("gateway", self.gateway.clone())
            .equal("mac", self.device.map(|mac| mac.to_string()))
            .equal("detector", self.detector.clone());
        if let Some((time, id)) = self.after {
            select.and().push("(last_seen, id) < (").push_bind(time).push(", ").push_bind(id).push(")");
        }
        select.page("last_seen DESC, id DESC", self.limit)
    }
}

async fn list(
    State(state): State<HubApi>,
    _caller: Caller,
    params: Result<Query<AlertsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let filter = AlertFilter::from_params(params)?;
    let mut sql = filter.query();
    let rows: Vec<Row> = sql.build_query_as().fetch_all(state.pool()).await.map_err(store_error)?;
    let (rows, next) = query::page(rows, filter.limit, |row| (query::micros(row.last_seen), row.id));
    Ok(paged(rows.into_iter().map(|row| row.view().0).collect::<Vec<_>>(), next))
}

async fn show(
    State(state): State<HubApi>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<FleetAlertDetail>, ApiError> {
    let id = alert_id(&id)?;
    Ok(Json(detail(state.pool(), id).await?))
}

async fn detail<'e>(executor: impl sqlx::PgExecutor<'e> + Copy, id: i64) -> Result<FleetAlertDetail, ApiError> {
    let row: Row = sqlx::query_as(concat!(select_alerts!(), " WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::Alert(AlertsError::NotFound(id)))?;
    let notes: Vec<(OffsetDateTime, String, String)> =
        sqlx::query_as("SELECT time, author, text FROM alert_notes WHERE alert_id = $1 ORDER BY time")
            .bind(id)
            .fetch_all(executor)
            .await
            .map_err(store_error)?;
    let (alert, flows) = row.view();
    Ok(FleetAlertDetail {
        alert,
        flows,
        responses: Vec::new(),
        notes: notes.into_iter().map(|(time, author, text)| AlertNote { time, author, text }).collect(),
    })
}

/// Works an alert: the state, resolution, assignee and note of `AlertChange`, audited in
/// `hub_audit` with the caller.
async fn change(
    State(state): State<HubApi>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<FleetAlertDetail>, ApiError> {
    let id = alert_id(&id)?;
    let change = store::checked(parse_change(&body)?)?;
    let actor = caller.actor();
    let mut tx = state.pool().begin().await.map_err(store_error)?;
    let current: Option<(String, String, String, String, Option<String>)> =
        sqlx::query_as("SELECT state, site, gateway, incident_id, mac FROM alerts WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
    let (from, site, gateway, incident_id, mac) = current.ok_or(ApiError::Alert(AlertsError::NotFound(id)))?;
    let from: store::State = from.parse().map_err(ApiError::Internal)?;
    let said = apply(&mut tx, id, from, &change, &actor).await?;
    let action = match change.state {
        Some(store::State::Acknowledged) => "alert_acknowledged",
        Some(store::State::Resolved) => "alert_resolved",
        Some(store::State::Open) => "alert_reopened",
        None => "alert_updated",
    };
    let said = format!("alert {id} ({incident_id}): {}", said.join("; "));
    let entry = audit::Entry {
        actor: &actor,
        action,
        site: Some(&site),
        gateway: Some(&gateway),
        mac: mac.as_deref(),
        detail: &said,
    };
    audit::record(&mut *tx, &entry).await?;
    tx.commit().await.map_err(store_error)?;
    tracing::info!(alert = id, action, actor, "fleet alert changed");
    Ok(Json(detail(state.pool(), id).await?))
}

/// Writes `change` (checked) to alert `id`, now in state `from`; says what changed, in words.
async fn apply(
    tx: &mut sqlx::PgConnection,
    id: i64,
    from: store::State,
    change: &Change,
    actor: &str,
) -> Result<Vec<String>, ApiError> {
    let mut said = Vec::new();
    if let Some(to) = change.state {
        if !from.may_become(to) {
            return Err(ApiError::Alert(AlertsError::Transition { id, from, to }));
        }
        sqlx::query("UPDATE alerts SET state = $2, resolution = $3 WHERE id = $1")
            .bind(id)
            .bind(to.as_str())
            .bind(change.resolution.map(Resolution::as_str))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        said.push(format!("{from} -> {to}"));
        if let Some(resolution) = change.resolution {
            said.push(format!("resolution {resolution}"));
        }
    }
    if let Some(assignee) = &change.assignee {
        let assignee = Some(assignee.as_str()).filter(|a| !a.is_empty());
        sqlx::query("UPDATE alerts SET assignee = $2 WHERE id = $1")
            .bind(id)
            .bind(assignee)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        said.push(assignee.map_or_else(|| "unassigned".to_owned(), |a| format!("assigned to {a}")));
    }
    if let Some(note) = &change.note {
        sqlx::query("INSERT INTO alert_notes (alert_id, time, author, text) VALUES ($1, now(), $2, $3)")
            .bind(id)
            .bind(actor)
            .bind(note)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        said.push(format!("note: {note}"));
    }
    Ok(said)
}
