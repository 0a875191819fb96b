//! `GET /api/v1/alerts/summary`: the console overview's alert counts (open records by
//! severity, records by state) and alerts over time, bucketed. The store answers from counts
//! its triggers keep and from a covering index (`alerts::summary`), on the blocking pool.
use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Query, State},
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use super::{ApiState, alerts::with_store, auth::Caller, error::ApiError, model::ErrorBody, search::time_filter};
use crate::{alerts, event::Severity};

/// The range shown when `since` is not given.
pub const DEFAULT_SPAN: Duration = Duration::days(1);
/// The bucket when `bucket_secs` is not given, and the shortest allowed.
pub const DEFAULT_BUCKET_SECS: i64 = 3_600;
pub const MIN_BUCKET_SECS: i64 = 60;

/// `GET /api/v1/alerts/summary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertsSummary {
    /// Open records by severity, every severity listed (zeros included).
    pub open_by_severity: BTreeMap<String, u64>,
    /// Records by state, every state listed.
    pub by_state: BTreeMap<String, u64>,
    /// Records whose incident began in each bucket from `since` to now, oldest first.
    pub over_time: Vec<AlertBucket>,
}

/// Records whose incident began in `[start, start + bucket_secs)`, by severity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertBucket {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub start: OffsetDateTime,
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub info: u64,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// Start of `over_time` (RFC 3339; default a day ago).
    since: Option<String>,
    /// Bucket length in seconds (default 3600, at least 60; at most 1000 buckets).
    bucket_secs: Option<i64>,
}

fn severity_names(counts: &BTreeMap<Severity, u64>) -> BTreeMap<String, u64> {
    counts
        .iter()
        .map(|(severity, count)| (crate::integrations::render::severity_name(*severity).to_owned(), *count))
        .collect()
}

impl From<alerts::Summary> for AlertsSummary {
    fn from(summary: alerts::Summary) -> Self {
        let count =
            |bucket: &alerts::summary::Bucket, severity| bucket.by_severity.get(&severity).copied().unwrap_or(0);
        Self {
            open_by_severity: severity_names(&summary.open_by_severity),
            by_state: summary.by_state.iter().map(|(state, count)| (state.as_str().to_owned(), *count)).collect(),
            over_time: summary
                .over_time
                .iter()
                .map(|bucket| AlertBucket {
                    start: bucket.start,
                    critical: count(bucket, Severity::Critical),
                    high: count(bucket, Severity::High),
                    medium: count(bucket, Severity::Medium),
                    low: count(bucket, Severity::Low),
                    info: count(bucket, Severity::Info),
                })
                .collect(),
        }
    }
}

/// Alert counts for the console's overview: open by severity, by state, and over time.
#[utoipa::path(
    get, path = "/api/v1/alerts/summary", tag = "alerts",
    params(SummaryParams),
    responses(
        (status = 200, body = AlertsSummary, description = "Success"),
        (status = 400, body = ErrorBody, description = "A bad since or bucket, or more than 1000 buckets"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn summary(
    State(state): State<ApiState>,
    _caller: Caller,
    query: Result<Query<SummaryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AlertsSummary>, ApiError> {
    let Query(params) = query?;
    let until = OffsetDateTime::now_utc();
    let since = time_filter("since", params.since)?.unwrap_or(until - DEFAULT_SPAN);
    if since >= until {
        return Err(ApiError::BadRequest("since must be in the past".into()));
    }
    let bucket_secs = params.bucket_secs.unwrap_or(DEFAULT_BUCKET_SECS);
    if bucket_secs < MIN_BUCKET_SECS {
        return Err(ApiError::BadRequest(format!("bucket_secs must be at least {MIN_BUCKET_SECS}")));
    }
    let bucket = Duration::seconds(bucket_secs);
    let summary = with_store(&state, move |store| store.summary(since, until, bucket)).await?;
    Ok(Json(summary.into()))
}
