//! The alerts an analyst works through: `GET /api/v1/alerts` (filters, sort, cursor pages),
//! `GET /api/v1/alerts/{id}` and `PATCH /api/v1/alerts/{id}` (state, resolution, assignee,
//! note; operator role), `POST` and `DELETE /api/v1/alerts/{id}/learn` (learn a false positive
//! as the device's normal, or take it back; operator role). The types here are the API's contract; `alerts` (the store) maps
//! into them. Store calls run on the blocking pool; a change is audited by the store and
//! published as an `Audit` event here, and a learning change is then handed to the detection
//! loop (`pipeline::Command::Learned`).
use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    response::Response,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    ApiState,
    auth::Caller,
    error::ApiError,
    gate::Operator,
    handlers::{parse_mac, with_locked},
    model::ErrorBody,
    paging::paged,
};
use crate::{
    alerts::{self, AlertsError, Change, Cursor, Filter, Order, SortKey},
    device::Mac,
    event::Severity,
};

/// One alert record, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertSummary {
    pub id: i64,
    /// Repeats of one incident update one record until it is resolved.
    pub incident_id: String,
    /// `scan`, `volume`, `new_destination`, `identity_clone`, `event_flood`, ...
    pub detector: String,
    /// Who raised it: `detector:scan`, ...
    pub actor: String,
    /// The highest of its repeats.
    #[schema(value_type = String, example = "high")]
    pub severity: Severity,
    /// The highest of its repeats.
    pub score: f64,
    /// What the baseline or limit allows, in words (latest repeat).
    pub expected: String,
    /// What was seen, in words (latest repeat).
    pub observed: String,
    #[schema(value_type = Option<String>, example = "98:90:96:9a:86:df")]
    pub device: Option<Mac>,
    #[schema(value_type = Option<String>)]
    pub device_ip: Option<std::net::IpAddr>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
    /// Alerts of the incident this record stands for.
    pub count: u64,
    /// When the detector said the incident is over (absent while it goes on): the detector's
    /// view, apart from the analyst's `state`.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub calm_since: Option<OffsetDateTime>,
    /// `open`, `acknowledged` or `resolved`.
    #[schema(value_type = String, example = "open")]
    pub state: alerts::State,
    /// `true_positive`, `false_positive` or `benign`, once resolved.
    #[schema(value_type = Option<String>)]
    pub resolution: Option<alerts::Resolution>,
    pub assignee: Option<String>,
}

/// An action taken because of the alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertResponse {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    pub actor: String,
    /// `quarantine`, `block`, `update_lane`, `release`, ...
    pub action: String,
    pub reason: String,
}

/// An analyst's note (never edited nor removed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertNote {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    pub author: String,
    pub text: String,
}

/// `GET /api/v1/alerts/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub summary: AlertSummary,
    /// Flows involved, `proto src:port -> dst:port`, first seen first.
    pub flows: Vec<String>,
    /// Actions taken because of it, oldest first.
    pub responses: Vec<AlertResponse>,
    /// Oldest first.
    pub notes: Vec<AlertNote>,
    /// Whether what it observed is learnt as the device's normal (`POST .../learn`).
    pub learned: bool,
    /// What learning it would take (or took), in words: `tcp/443 to 203.0.113.0/24`,
    /// `scan_hosts up to 50 (observed 40)`. Empty when its detector observed nothing a
    /// baseline may take.
    pub learnable: Vec<String>,
}

/// Body of `PATCH /api/v1/alerts/{id}`: at least one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertChange {
    /// `acknowledged` or `resolved` (from open), `resolved` (from acknowledged), `open` (from
    /// resolved, to reopen).
    pub state: Option<String>,
    /// Required with `state = resolved`: `true_positive`, `false_positive` or `benign`.
    pub resolution: Option<String>,
    /// Who works on it (at most 64 bytes, no control characters); `""` unassigns.
    pub assignee: Option<String>,
    /// Appended to the notes (at most 512 bytes once escaped).
    pub note: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// `open`, `acknowledged` or `resolved`.
    state: Option<String>,
    /// `info`, `low`, `medium`, `high` or `critical`.
    severity: Option<String>,
    /// The device's MAC address.
    device: Option<String>,
    /// Detector name, e.g. `scan`.
    detector: Option<String>,
    /// RFC 3339: alerts last seen at or after.
    since: Option<String>,
    /// RFC 3339: alerts last seen before.
    until: Option<String>,
    /// `last_seen` (default), `first_seen`, `score` or `severity`.
    sort: Option<String>,
    /// `desc` (default) or `asc`.
    order: Option<String>,
    /// Records per page (default 50, at most 500).
    limit: Option<usize>,
    /// The `Next-Cursor` of the previous page.
    cursor: Option<String>,
}

impl From<alerts::Alert> for AlertSummary {
    fn from(a: alerts::Alert) -> Self {
        Self {
            id: a.id,
            incident_id: a.incident_id,
            detector: a.detector,
            actor: a.actor,
            severity: a.severity,
            score: a.score,
            expected: a.expected,
            observed: a.observed,
            device: a.device,
            device_ip: a.device_ip,
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            count: a.count,
            calm_since: a.calm_since,
            state: a.state,
            resolution: a.resolution,
            assignee: a.assignee,
        }
    }
}

impl From<alerts::AlertDetail> for AlertDetail {
    fn from(d: alerts::AlertDetail) -> Self {
        Self {
            summary: d.alert.into(),
            flows: d.flows,
            responses: d
                .responses
                .into_iter()
                .map(|r| AlertResponse { time: r.time, actor: r.actor, action: r.action, reason: r.reason })
                .collect(),
            notes: d.notes.into_iter().map(|n| AlertNote { time: n.time, author: n.author, text: n.text }).collect(),
            learned: d.learned,
            learnable: d.observations.iter().map(crate::baseline::learned::describe).collect(),
        }
    }
}

/// The store query a request's parameters ask for, or why they cannot.
fn store_query(query: AlertsQuery) -> Result<alerts::Query, ApiError> {
    fn parsed<T>(value: Option<String>, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, ApiError> {
        value.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)
    }
    let time = |name: &'static str| {
        move |text: &str| {
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|error| format!("{name} must be an RFC 3339 time: {error}"))
        }
    };
    let filter = Filter {
        state: parsed(query.state, |s| s.parse())?,
        severity: parsed(query.severity, alerts::parse_severity)?,
        device: query.device.as_deref().map(parse_mac).transpose()?,
        detector: query.detector,
        since: parsed(query.since, time("since"))?,
        until: parsed(query.until, time("until"))?,
    };
    Ok(alerts::Query {
        filter,
        sort: parsed(query.sort, |s| s.parse::<SortKey>())?.unwrap_or_default(),
        order: parsed(query.order, |s| s.parse::<Order>())?.unwrap_or_default(),
        limit: query.limit,
        cursor: query.cursor.as_deref().map(Cursor::decode).transpose()?,
    })
}

fn store(state: &ApiState) -> Result<std::sync::Arc<std::sync::Mutex<alerts::AlertStore>>, ApiError> {
    state.alerts.clone().ok_or_else(|| ApiError::Internal("this server keeps no alert store".into()))
}

/// Runs `work` on the alert store, on the blocking pool.
pub(super) async fn with_store<T: Send + 'static>(
    state: &ApiState,
    work: impl FnOnce(&mut alerts::AlertStore) -> Result<T, AlertsError> + Send + 'static,
) -> Result<T, ApiError> {
    with_locked(store(state)?, "alert store", move |store| Ok(work(store)?)).await
}

pub(crate) fn alert_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::BadRequest(format!("{text:?} is not an alert id")))
}

/// The change a `PATCH /api/v1/alerts/{id}` body asks for (`AlertChange`), its names parsed.
pub(crate) fn parse_change(body: &[u8]) -> Result<Change, ApiError> {
    let request: AlertChange = serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!("body must be {{state, resolution, assignee, note}}: {error}"))
    })?;
    Ok(Change {
        state: request.state.as_deref().map(str::parse).transpose().map_err(ApiError::BadRequest)?,
        resolution: request.resolution.as_deref().map(str::parse).transpose().map_err(ApiError::BadRequest)?,
        assignee: request.assignee,
        note: request.note,
    })
}

/// Alert records, newest first unless `sort`/`order` say otherwise, one page at a time.
#[utoipa::path(
    get, path = "/api/v1/alerts", tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, body = Vec<AlertSummary>, description = "Success",
            headers(("next-cursor" = String, description = "Cursor of the next page; absent on the last"))),
        (status = 400, body = ErrorBody, description = "A bad filter, sort, limit or cursor"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    _caller: Caller,
    query: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let query = store_query(query)?;
    let page = with_store(&state, move |store| store.list(&query)).await?;
    let alerts: Vec<AlertSummary> = page.alerts.into_iter().map(Into::into).collect();
    Ok(paged(alerts, page.next_cursor.map(|cursor| cursor.encode())))
}

/// One alert record with its evidence flows, responses and notes.
#[utoipa::path(
    get, path = "/api/v1/alerts/{id}", tag = "alerts",
    params(("id" = i64, Path, description = "The alert's id")),
    responses(
        (status = 200, body = AlertDetail, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not an alert id"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 404, body = ErrorBody, description = "No such alert"),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AlertDetail>, ApiError> {
    let id = alert_id(&id)?;
    Ok(Json(with_store(&state, move |store| store.get(id)).await?.into()))
}

/// Moves an alert through its lifecycle, assigns it or adds a note; audited with the caller.
#[utoipa::path(
    patch, path = "/api/v1/alerts/{id}", tag = "alerts",
    params(("id" = i64, Path, description = "The alert's id")),
    request_body = AlertChange,
    responses(
        (status = 200, body = AlertDetail, description = "The alert as it now is"),
        (status = 400, body = ErrorBody, description = "A bad body: nothing to change, an unknown state or resolution, resolving without a resolution, unsafe or too long text"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 403, body = ErrorBody, description = "The token lacks the operator role"),
        (status = 404, body = ErrorBody, description = "No such alert"),
        (status = 409, body = ErrorBody, description = "The alert's state does not allow it; nothing changed"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn change(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AlertDetail>, ApiError> {
    let id = alert_id(&id)?;
    let change = parse_change(&body)?;
    let actor = caller.actor();
    let (detail, audit) = with_store(&state, move |store| store.change(id, change, &actor)).await?;
    state.events.publish(audit);
    Ok(Json(detail.into()))
}

/// Learns what an alert resolved `false_positive` observed as its device's normal: the same
/// observation raises no alert from then on (rates: up to 1.25× the value seen). Audited
/// (`learn_normal`) with the caller; kept across restarts.
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/learn", tag = "alerts",
    params(("id" = i64, Path, description = "The alert's id")),
    responses(
        (status = 200, body = AlertDetail, description = "The alert as it now is (`learned: true`)"),
        (status = 400, body = ErrorBody, description = "Not an alert id"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 403, body = ErrorBody, description = "The token lacks the operator role"),
        (status = 404, body = ErrorBody, description = "No such alert"),
        (status = 409, body = ErrorBody, description = "Not resolved false_positive, learnt already, nothing learnable, or a rate too far above its limit; nothing changed"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn learn(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Json<AlertDetail>, ApiError> {
    change_learning(state, &caller, &id, alerts::AlertStore::learn).await
}

/// Takes back what an alert taught its device's baseline: the detectors flag those
/// observations again. Audited (`unlearn_normal`) with the caller.
#[utoipa::path(
    delete, path = "/api/v1/alerts/{id}/learn", tag = "alerts",
    params(("id" = i64, Path, description = "The alert's id")),
    responses(
        (status = 200, body = AlertDetail, description = "The alert as it now is (`learned: false`)"),
        (status = 400, body = ErrorBody, description = "Not an alert id"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 403, body = ErrorBody, description = "The token lacks the operator role"),
        (status = 404, body = ErrorBody, description = "No such alert"),
        (status = 409, body = ErrorBody, description = "The alert is not learnt; nothing changed"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn unlearn(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Json<AlertDetail>, ApiError> {
    change_learning(state, &caller, &id, alerts::AlertStore::unlearn).await
}

/// What a learning step of the store returns: the record, its audit event, the pipeline's edit.
type Learning = (alerts::AlertDetail, crate::event::GatewayEvent, crate::baseline::learned::Edit);

/// Runs `step` (learn or unlearn) on alert `id` as the caller, publishes its audit event and
/// hands its edit to the detection loop.
async fn change_learning(
    state: ApiState,
    caller: &Caller,
    id: &str,
    step: fn(&mut alerts::AlertStore, i64, &str) -> Result<Learning, AlertsError>,
) -> Result<Json<AlertDetail>, ApiError> {
    let id = alert_id(id)?;
    let actor = caller.actor();
    let (detail, audit, edit) = with_store(&state, move |store| step(store, id, &actor)).await?;
    state.events.publish(audit);
    tell_pipeline(&state, edit).await;
    Ok(Json(detail.into()))
}

/// Hands a committed learning change to the detection loop. Without one (stopped, or a
/// server that runs none) the change still stands: the loop reads it from the store at start.
async fn tell_pipeline(state: &ApiState, edit: crate::baseline::learned::Edit) {
    let Some(pipeline) = state.pipeline.as_ref().and_then(|weak| weak.upgrade()) else {
        tracing::warn!("no detection loop running: the learning change applies from its next start");
        return;
    };
    if pipeline.send(crate::pipeline::Command::Learned(edit)).await.is_err() {
        tracing::warn!("the detection loop stopped: the learning change applies from its next start");
    }
}
