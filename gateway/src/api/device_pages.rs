//! What the console's device page reads beside the device record: its traffic over time
//! (`/traffic`), where it connects (`/destinations`) and what its baseline learnt
//! (`/baseline`). Parses the query (a bad value is a 400 and reads nothing), then asks the
//! directory off the runtime. The types here are the API's contract; the inventory and the
//! baseline store map into them (`inventory_directory`).
use std::net::IpAddr;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use super::{
    ApiState,
    auth::Caller,
    directory::{DeviceDirectory, DirectoryError},
    error::ApiError,
    handlers::{blocking, parse_mac},
    model::ErrorBody,
    search::time_filter,
};
use crate::device::Mac;

/// Traffic buckets answered when the query does not say, and at most (a week of minutes).
pub const DEFAULT_TRAFFIC_POINTS: usize = 1_440;
pub const MAX_TRAFFIC_POINTS: usize = 10_080;
/// How far back the traffic goes when `since` is not given.
pub const DEFAULT_TRAFFIC_SPAN: Duration = Duration::days(1);
/// Destinations answered when the query does not say, and at most.
pub const DEFAULT_DESTINATIONS: usize = 100;
pub const MAX_DESTINATIONS: usize = 1_000;

/// A device's traffic in one bucket `[start, start + seconds)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrafficPoint {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub start: OffsetDateTime,
    pub seconds: u32,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

/// Where a device connects: its retained flows to one address, port and protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Destination {
    #[schema(value_type = String, example = "203.0.113.7")]
    pub dst: IpAddr,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub proto: u8,
    /// DNS names the address was the answer to, as the device resolved them (empty when no
    /// answer was seen).
    pub names: Vec<String>,
    /// Flows among the retained ones.
    pub flows: u64,
    /// Sum of the flows' first frames (bytes are counted per device, not per flow).
    pub bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
    /// The latest flow's verdict: `pass`, `drop` or `redirect`.
    pub verdict: String,
}

/// `GET /api/v1/devices/{mac}/baseline`: what the baseline learnt of the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BaselineView {
    /// `none` (nothing stored yet), `learning` or `baselined`.
    pub state: String,
    /// The class it learnt under.
    pub class: Option<String>,
    /// When the stored baseline was last written.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<OffsetDateTime>,
    /// The profile: services with their prefixes and names, destinations, names, peers,
    /// per-window statistics, periodic flows (absent while `state` is `none`).
    #[schema(value_type = Option<Object>)]
    pub profile: Option<serde_json::Value>,
    /// Observations an analyst taught it as normal.
    #[schema(value_type = Vec<Object>)]
    pub learned: Vec<serde_json::Value>,
}

impl BaselineView {
    /// A device the baseline has stored nothing for.
    pub fn none() -> Self {
        Self { state: "none".into(), class: None, updated_at: None, profile: None, learned: Vec::new() }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrafficParams {
    /// Buckets starting at or after this time (RFC 3339; default a day before `until`).
    since: Option<String>,
    /// Buckets starting before this time (RFC 3339; default now).
    until: Option<String>,
    /// Most buckets (default 1440, at most 10080): the newest of the range when it holds more.
    limit: Option<usize>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DestinationsParams {
    /// Most destinations (default 100, at most 1000).
    limit: Option<usize>,
}

/// The traffic range a query asks for, or why it cannot.
fn traffic_range(params: TrafficParams) -> Result<(OffsetDateTime, OffsetDateTime, usize), ApiError> {
    let until = time_filter("until", params.until)?.unwrap_or_else(OffsetDateTime::now_utc);
    let since = time_filter("since", params.since)?.unwrap_or(until - DEFAULT_TRAFFIC_SPAN);
    if since >= until {
        return Err(ApiError::BadRequest("since must be before until".into()));
    }
    let limit = bounded("limit", params.limit, DEFAULT_TRAFFIC_POINTS, MAX_TRAFFIC_POINTS)?;
    Ok((since, until, limit))
}

fn bounded(name: &str, value: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match value.unwrap_or(default) {
        value @ 1.. if value <= max => Ok(value),
        _ => Err(ApiError::BadRequest(format!("{name} must be between 1 and {max}"))),
    }
}

/// Reads `read` of the device `mac` off the runtime: 400 for a bad MAC, 404 for a device the
/// inventory does not hold.
async fn device_read<T: Send + 'static>(
    state: &ApiState,
    mac: &str,
    read: impl FnOnce(&dyn DeviceDirectory, Mac) -> Result<T, DirectoryError> + Send + 'static,
) -> Result<T, ApiError> {
    let mac = parse_mac(mac)?;
    let directory = state.directory.clone();
    blocking(move || {
        directory.device(mac)?.ok_or(ApiError::UnknownDevice(mac))?;
        Ok(read(directory.as_ref(), mac)?)
    })
    .await
}

/// A device's traffic over time, oldest bucket first.
#[utoipa::path(
    get, path = "/api/v1/devices/{mac}/traffic", tag = "devices",
    params(("mac" = String, Path, description = "MAC address"), TrafficParams),
    responses(
        (status = 200, body = Vec<TrafficPoint>, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not a MAC address, or a bad time or limit"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 404, body = ErrorBody, description = "The device is not in the inventory"),
    ),
    security(("bearer" = []))
)]
pub async fn traffic(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(mac): Path<String>,
    query: Result<Query<TrafficParams>, QueryRejection>,
) -> Result<Json<Vec<TrafficPoint>>, ApiError> {
    let (since, until, limit) = traffic_range(query?.0)?;
    Ok(Json(device_read(&state, &mac, move |directory, mac| directory.traffic(mac, since, until, limit)).await?))
}

/// Where a device connects, busiest first, with the DNS names it resolved.
#[utoipa::path(
    get, path = "/api/v1/devices/{mac}/destinations", tag = "devices",
    params(("mac" = String, Path, description = "MAC address"), DestinationsParams),
    responses(
        (status = 200, body = Vec<Destination>, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not a MAC address, or a bad limit"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 404, body = ErrorBody, description = "The device is not in the inventory"),
    ),
    security(("bearer" = []))
)]
pub async fn destinations(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(mac): Path<String>,
    query: Result<Query<DestinationsParams>, QueryRejection>,
) -> Result<Json<Vec<Destination>>, ApiError> {
    let limit = bounded("limit", query?.0.limit, DEFAULT_DESTINATIONS, MAX_DESTINATIONS)?;
    Ok(Json(device_read(&state, &mac, move |directory, mac| directory.destinations(mac, limit)).await?))
}

/// What the baseline learnt of a device.
#[utoipa::path(
    get, path = "/api/v1/devices/{mac}/baseline", tag = "devices",
    params(("mac" = String, Path, description = "MAC address")),
    responses(
        (status = 200, body = BaselineView, description = "Success (state `none` when nothing is learnt yet)"),
        (status = 400, body = ErrorBody, description = "Not a MAC address"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 404, body = ErrorBody, description = "The device is not in the inventory"),
    ),
    security(("bearer" = []))
)]
pub async fn baseline(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(mac): Path<String>,
) -> Result<Json<BaselineView>, ApiError> {
    let stored = device_read(&state, &mac, |directory, mac| directory.baseline(mac)).await?;
    Ok(Json(stored.unwrap_or_else(BaselineView::none)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_ranges_are_checked() {
        let params = |since: Option<&str>, until: Option<&str>, limit| TrafficParams {
            since: since.map(str::to_owned),
            until: until.map(str::to_owned),
            limit,
        };
        let (since, until, limit) = traffic_range(params(None, Some("2026-01-02T00:00:00Z"), None)).unwrap();
        assert_eq!((until - since, limit), (DEFAULT_TRAFFIC_SPAN, DEFAULT_TRAFFIC_POINTS));
        assert!(traffic_range(params(Some("2026-01-02T00:00:00Z"), Some("2026-01-01T00:00:00Z"), None)).is_err());
        assert!(traffic_range(params(Some("yesterday"), None, None)).is_err());
        assert!(traffic_range(params(None, None, Some(0))).is_err());
        assert!(traffic_range(params(None, None, Some(MAX_TRAFFIC_POINTS + 1))).is_err());
        assert_eq!(traffic_range(params(None, None, Some(MAX_TRAFFIC_POINTS))).unwrap().2, MAX_TRAFFIC_POINTS);
    }
}
