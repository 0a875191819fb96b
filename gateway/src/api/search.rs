//! The inventory an operator searches: devices filtered, searched and sorted, the audit log,
//! both a page at a time, and the device counts of the console's overview. Parses and checks
//! the query (a bad value is a 400 and reads nothing), then asks the directory off the runtime
//! (`inventory::search` does the work on the store's indexes).
//!
//! Lists stay JSON arrays, as `GET /api/v1/devices` always answered, paged as `paging` says.
use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    response::Response,
};
use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    ApiState,
    auth::Caller,
    error::ApiError,
    handlers::{blocking, parse_mac, state_counts},
    model::{AuditEntry, DeviceSummary, ErrorBody, InventorySummary},
    paging::paged,
};
use crate::inventory::search::{
    AuditCursor, AuditFilter, AuditQuery, DEFAULT_PAGE, DeviceCursor, DeviceFilter, DeviceQuery, DeviceSort,
    MAX_FILTER_TEXT, MAX_PAGE,
};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DevicesParams {
    /// Access state: `unknown`, `onboarding`, `enrolled`, `quarantined` or `blocked`.
    state: Option<String>,
    /// Device type, exactly, at any level of the classifier's answer: product
    /// (`EdimaxPlug1101W`), vendor or generic type (`smart-plug`, `ip-camera`); empty for
    /// untyped devices.
    #[serde(rename = "type")]
    device_type: Option<String>,
    /// Vendor, exactly as listed.
    vendor: Option<String>,
    /// Policy class, exactly.
    class: Option<String>,
    /// Search: a MAC prefix (`98:90:96`, `98-90-96`), an IP prefix (`192.168.1.`) or part of
    /// the host name (3 characters or more); ASCII letters in any case.
    q: Option<String>,
    /// `last_seen` (default) or `first_seen`, newest first; `mac`, `vendor` or `type`, A to Z.
    sort: Option<String>,
    /// Devices per page (default 100, at most 1000).
    limit: Option<usize>,
    /// The `Next-Cursor` of the previous page, with the same sort.
    cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// The device's MAC address.
    device: Option<String>,
    /// Who, exactly (`api:alice`, `inventory`, `detector:scan`, ...).
    actor: Option<String>,
    /// What, exactly (`access_changed`, `device_added`, ...).
    action: Option<String>,
    /// Entries at or after this time (RFC 3339).
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    until: Option<String>,
    /// Entries per page (default 100, at most 1000).
    limit: Option<usize>,
    /// The `Next-Cursor` of the previous page.
    cursor: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

/// A page size between 1 and `MAX_PAGE`, `DEFAULT_PAGE` when absent.
pub(crate) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        _ => Err(bad(format!("limit must be between 1 and {MAX_PAGE}"))),
    }
}

/// An exact-match filter: present, not blank, not longer than `MAX_FILTER_TEXT`.
pub(crate) fn filter_text(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(value) if value.trim().is_empty() => Err(bad(format!("{name} must not be empty"))),
        Some(value) if value.len() > MAX_FILTER_TEXT => {
            Err(bad(format!("{name} is longer than {MAX_FILTER_TEXT} bytes")))
        }
        value => Ok(value),
    }
}

pub(crate) fn time_filter(name: &str, value: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|text| {
            OffsetDateTime::parse(&text, &Rfc3339)
                .map_err(|_| bad(format!("{name} must be an RFC 3339 time (2026-01-31T12:00:00Z), not {text:?}")))
        })
        .transpose()
}

fn device_query(params: DevicesParams) -> Result<DeviceQuery, ApiError> {
    let sort = match params.sort.as_deref() {
        None => DeviceSort::default(),
        Some(text) => DeviceSort::parse(text).ok_or_else(|| {
            let known: Vec<&str> = DeviceSort::ALL.iter().map(|s| s.as_str()).collect();
            bad(format!("sort must be one of {}, not {text:?}", known.join(", ")))
        })?,
    };
    let access = params
        .state
        .map(|text| text.parse().map_err(|_| bad(format!("state must be an access state, not {text:?}"))))
        .transpose()?;
    let search = params.q.filter(|q| !q.trim().is_empty());
    if search.as_ref().is_some_and(|q| q.len() > MAX_FILTER_TEXT) {
        return Err(bad(format!("q is longer than {MAX_FILTER_TEXT} bytes")));
    }
    Ok(DeviceQuery {
        filter: DeviceFilter {
            access,
            device_type: filter_text("type", params.device_type)?,
            vendor: filter_text("vendor", params.vendor)?,
            class: filter_text("class", params.class)?,
            search,
        },
        sort,
        limit: page_size(params.limit)?,
        after: params.cursor.map(|text| DeviceCursor::decode(&text, sort)).transpose().map_err(cursor_error)?,
    })
}

fn audit_query(params: AuditParams) -> Result<AuditQuery, ApiError> {
    let since = time_filter("since", params.since)?;
    let until = time_filter("until", params.until)?;
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(bad("since must be before until".into()));
    }
    Ok(AuditQuery {
        filter: AuditFilter {
            mac: params.device.as_deref().map(parse_mac).transpose()?,
            actor: filter_text("actor", params.actor)?,
            action: filter_text("action", params.action)?,
            since,
            until,
        },
        limit: page_size(params.limit)?,
        after: params.cursor.map(|text| AuditCursor::decode(&text)).transpose().map_err(cursor_error)?,
    })
}

pub(crate) fn cursor_error(error: crate::inventory::search::InvalidCursor) -> ApiError {
    bad(format!("{error}: start again without one"))
}

/// Devices of the inventory, a page at a time: filtered, searched, sorted.
#[utoipa::path(
    get, path = "/api/v1/devices", tag = "devices",
    params(DevicesParams),
    responses(
        (status = 200, body = Vec<DeviceSummary>, description = "Success",
            headers(("next-cursor" = String, description = "Cursor of the next page; absent on the last"))),
        (status = 400, body = ErrorBody, description = "A bad filter, sort, limit or cursor"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn devices(
    State(state): State<ApiState>,
    _caller: Caller,
    query: Result<Query<DevicesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = device_query(query?.0)?;
    let directory = state.directory.clone();
    let page = blocking(move || Ok(directory.devices(&query)?)).await?;
    Ok(paged(page.items, page.next))
}

/// The audit log of every device and of the gateway, newest first, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "devices",
    params(AuditParams),
    responses(
        (status = 200, body = Vec<AuditEntry>, description = "Success",
            headers(("next-cursor" = String, description = "Cursor of the next page; absent on the last"))),
        (status = 400, body = ErrorBody, description = "A bad filter, time, limit or cursor"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn audit(
    State(state): State<ApiState>,
    _caller: Caller,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = audit_query(query?.0)?;
    let directory = state.directory.clone();
    let page = blocking(move || Ok(directory.audit(&query)?)).await?;
    Ok(paged(page.items, page.next))
}

/// Device counts by access state, device type and class, for the console's overview.
#[utoipa::path(
    get, path = "/api/v1/summary", tag = "devices",
    responses(
        (status = 200, body = InventorySummary, description = "Success"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn summary(State(state): State<ApiState>, _caller: Caller) -> Result<Json<InventorySummary>, ApiError> {
    let directory = state.directory.clone();
    let counts = blocking(move || Ok(directory.counts()?)).await?;
    state.metrics.set_devices_by_state(&counts.by_access);
    Ok(Json(InventorySummary {
        total: counts.total,
        by_state: state_counts(&counts.by_access),
        by_type: counts.by_type.into_iter().collect(),
        untyped: counts.untyped,
        by_class: counts.by_class.into_iter().collect(),
        unclassified: counts.unclassified,
    }))
}
