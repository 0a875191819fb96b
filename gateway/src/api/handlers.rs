//! The HTTP handlers: authenticate, parse, call the directory (off the runtime) and the
//! datapath, answer JSON. Each handler's `#[utoipa::path]` is its entry in the OpenAPI
//! document, so the document cannot list an endpoint the router does not serve.
use std::collections::BTreeMap;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{ConnectInfo, Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, Method, Uri, header},
    response::IntoResponse,
};
use serde::Deserialize;

use super::{
    ApiState,
    actions::{self, Action},
    auth::Caller,
    error::ApiError,
    gate::Operator,
    metrics,
    model::{
        ActionRequest, ActionResponse, DatapathStatus, DeviceDetail, Enforcement, ErrorBody, FlowRecord,
        PolicySnapshot, Status,
    },
};
use crate::{
    device::{Access, Mac},
    event::{EventKind, GatewayEvent, Severity},
};

/// Flows returned when the query does not say.
pub const DEFAULT_FLOWS_LIMIT: usize = 100;
/// Most flows one request may ask for.
pub const MAX_FLOWS_LIMIT: usize = 10_000;
/// Audit entries shown with a device.
pub const AUDIT_SHOWN: usize = 50;
/// Longest reason an action accepts, in bytes once escaped (`untrusted`): the audit entry
/// holds it with the action's name and the state change, within the inventory's `MAX_TEXT`.
pub const MAX_REASON_BYTES: usize = 512;

/// Every lifecycle state, so status lists zeros rather than leaving states out.
const ALL_STATES: [Access; 5] =
    [Access::Unknown, Access::Onboarding, Access::Enrolled, Access::Quarantined, Access::Blocked];

/// Runs store and datapath calls on the blocking pool, off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| ApiError::Internal(format!("worker failed: {error}")))?
}

/// Runs `work` on `shared` (a store behind a lock), on the blocking pool. A lock a panic
/// poisoned is refused: the store may be mid-change.
pub(super) async fn with_locked<S: Send + 'static, T: Send + 'static>(
    shared: std::sync::Arc<std::sync::Mutex<S>>,
    what: &'static str,
    work: impl FnOnce(&mut S) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(move || {
        let mut locked = shared.lock().map_err(|_| ApiError::Internal(format!("{what} lock poisoned by a panic")))?;
        work(&mut locked)
    })
    .await
}

pub(crate) fn parse_mac(text: &str) -> Result<Mac, ApiError> {
    text.parse().map_err(|error: crate::device::ParseMacError| ApiError::BadRequest(error.to_string()))
}

pub(crate) fn state_counts(counts: &std::collections::HashMap<Access, u64>) -> BTreeMap<String, u64> {
    ALL_STATES.iter().map(|s| (s.as_str().to_owned(), counts.get(s).copied().unwrap_or(0))).collect()
}

/// Version, uptime, datapath, device counts, policy version and integration backlog.
#[utoipa::path(
    get, path = "/api/v1/status", tag = "status",
    responses(
        (status = 200, body = Status, description = "Success"),
        (status = 401, body = ErrorBody, description = "No or unknown token"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn status(State(state): State<ApiState>, _caller: Caller) -> Result<Json<Status>, ApiError> {
    let directory = state.directory.clone();
    let counts = blocking(move || Ok(directory.devices_by_state()?)).await?;
    state.metrics.set_devices_by_state(&counts);
    Ok(Json(Status {
        scope: "gateway".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        datapath: DatapathStatus {
            interfaces: state.interfaces.as_ref().clone(),
            counters: state.metrics.datapath_counters().map(|c| c.summary()),
        },
        devices: state_counts(&counts),
        policy_version: state.policies.version(),
        integration_backlog: state.metrics.integration_backlog(),
    }))
}

/// One device: inventory record, what the datapath enforces, recent audit entries.
#[utoipa::path(
    get, path = "/api/v1/devices/{mac}", tag = "devices",
    params(("mac" = String, Path, description = "MAC address, e.g. 98:90:96:9a:86:df")),
    responses(
        (status = 200, body = DeviceDetail, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not a MAC address"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 404, body = ErrorBody, description = "Not in the inventory"),
    ),
    security(("bearer" = []))
)]
pub async fn device(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(mac): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let mac = parse_mac(&mac)?;
    let (directory, control) = (state.directory.clone(), state.control.clone());
    let detail = blocking(move || {
        let record = directory.device(mac)?.ok_or(ApiError::UnknownDevice(mac))?;
        let enforced = control.access(mac)?;
        let current = enforced.map_or(Access::Unknown, |e| e.access);
        // The isolating entry may be older than the entries shown: search further for it.
        let isolated = actions::is_isolated(current);
        let audit = directory.audit_log(mac, if isolated { actions::AUDIT_SCAN_LIMIT } else { AUDIT_SHOWN })?;
        let restore_access = isolated.then(|| {
            actions::restore_access(&audit)
                .unwrap_or_else(|| actions::fallback_restore(enforced.map_or(0, |e| e.policy_id)))
        });
        Ok(DeviceDetail {
            record,
            enforcement: enforced.map(|e| Enforcement {
                access: e.access,
                policy_id: e.policy_id,
                class_id: e.class_id,
            }),
            restore_access,
            audit: audit.into_iter().take(AUDIT_SHOWN).collect(),
            mud: directory.mud(mac)?,
        })
    })
    .await?;
    Ok(Json(detail))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowsQuery {
    /// Most flows to return, newest first (default 100, at most 10000).
    limit: Option<usize>,
}

/// A device's most recent flows.
#[utoipa::path(
    get, path = "/api/v1/devices/{mac}/flows", tag = "devices",
    params(("mac" = String, Path, description = "MAC address"), FlowsQuery),
    responses(
        (status = 200, body = Vec<FlowRecord>, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not a MAC address, or a bad query or body"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 404, body = ErrorBody, description = "The device is not in the inventory"),
    ),
    security(("bearer" = []))
)]
pub async fn flows(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(mac): Path<String>,
    query: Result<Query<FlowsQuery>, QueryRejection>,
) -> Result<Json<Vec<FlowRecord>>, ApiError> {
    let mac = parse_mac(&mac)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_FLOWS_LIMIT);
    if limit == 0 || limit > MAX_FLOWS_LIMIT {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_FLOWS_LIMIT}")));
    }
    let directory = state.directory.clone();
    let flows = blocking(move || {
        directory.device(mac)?.ok_or(ApiError::UnknownDevice(mac))?;
        Ok(directory.flows(mac, limit)?)
    })
    .await?;
    Ok(Json(flows))
}

/// The running policy.
#[utoipa::path(
    get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, body = PolicySnapshot, description = "Success"), (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"), (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)")),
    security(("bearer" = []))
)]
pub async fn policies(State(state): State<ApiState>, _caller: Caller) -> Result<impl IntoResponse, ApiError> {
    let policies = state.policies.clone();
    // The first read after a reload builds the view, and 10,000 rules take a while to build
    // and to serialise: both on the blocking pool, so other requests are not held up.
    let body = blocking(move || {
        serde_json::to_vec(&*policies.snapshot()).map_err(|error| ApiError::Internal(format!("policy view: {error}")))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

/// Parses the optional action body: empty, or `{"reason": "..."}`.
fn action_request(body: &[u8]) -> Result<ActionRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionRequest::default());
    }
    let mut request: ActionRequest = serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("body must be {{\"reason\": \"...\"}} or empty: {error}")))?;
    if let Some(reason) = &mut request.reason {
        // Reasons end up in the audit log, syslog and ticket lines: a line break would forge a
        // record there. It is kept as the text `\n` (`untrusted`), like every other control,
        // line-separator or bidi character; the length limit counts the escaped text.
        if let std::borrow::Cow::Owned(escaped) = crate::untrusted::escape(reason) {
            *reason = escaped;
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(ApiError::BadRequest(format!("reason is longer than {MAX_REASON_BYTES} bytes (escaped)")));
        }
    }
    Ok(request)
}

/// Enforces `action` on the device and records it. Serialized by `state.action_lock`, so two
/// concurrent actions on a device cannot both read the same "before" state.
async fn act(
    state: ApiState,
    caller: Caller,
    mac: &str,
    action: Action,
    body: &[u8],
) -> Result<Json<ActionResponse>, ApiError> {
    let mac = parse_mac(mac)?;
    let request = action_request(body)?;
    let _serialized = state.action_lock.clone().lock_owned().await;
    let actor = caller.actor();
    let reason = request.reason.unwrap_or_default();
    let (directory, control) = (state.directory.clone(), state.control.clone());
    let (apply_actor, apply_reason) = (actor.clone(), reason.clone());
    let actions::Outcome { plan, changed } = blocking(move || {
        Ok(actions::apply(
            directory.as_ref(),
            control.as_ref(),
            mac,
            action,
            &apply_actor,
            &apply_reason,
            actions::UnknownDevices::Refuse,
        )?)
    })
    .await?;
    if changed {
        tracing::info!(device = %mac, action = action.as_str(), from = %plan.from, to = %plan.to, actor, "device access changed");
        state.metrics.record_action(action.as_str(), &actor);
        state.events.publish(GatewayEvent::new(
            Severity::Medium,
            Some(mac),
            actor.clone(),
            EventKind::Action { action: action.as_str().to_owned(), reason },
        ));
    }
    Ok(Json(ActionResponse {
        mac,
        action: action.as_str().to_owned(),
        previous: plan.from,
        access: plan.to,
        changed,
        actor,
    }))
}

/// Moves the device to the quarantine allow-list.
#[utoipa::path(
    post, path = "/api/v1/devices/{mac}/quarantine", tag = "actions",
    params(("mac" = String, Path, description = "MAC address")),
    request_body(content = Option<ActionRequest>, description = "Optional reason for the audit log"),
    responses(
        (status = 200, body = ActionResponse, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not a MAC address, or a bad query or body"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 403, body = ErrorBody, description = "Token lacks the operator role"),
        (status = 404, body = ErrorBody, description = "The device is not in the inventory"),
        (status = 502, body = ErrorBody, description = "The datapath refused; nothing recorded"),
    ),
    security(("bearer" = []))
)]
pub async fn quarantine(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(mac): Path<String>,
    body: Bytes,
) -> Result<Json<ActionResponse>, ApiError> {
    act(state, caller, &mac, Action::Quarantine, &body).await
}

/// Restores the access the device had before it was quarantined or blocked.
#[utoipa::path(
    post, path = "/api/v1/devices/{mac}/release", tag = "actions",
    params(("mac" = String, Path, description = "MAC address")),
    request_body(content = Option<ActionRequest>, description = "Optional reason for the audit log"),
    responses(
        (status = 200, body = ActionResponse, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not a MAC address, or a bad query or body"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 403, body = ErrorBody, description = "The token lacks the operator role"),
        (status = 404, body = ErrorBody, description = "The device is not in the inventory"),
        (status = 409, body = ErrorBody, description = "The device is neither quarantined nor blocked"),
        (status = 502, body = ErrorBody, description = "The datapath refused the change; nothing was recorded"),
    ),
    security(("bearer" = []))
)]
pub async fn release(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(mac): Path<String>,
    body: Bytes,
) -> Result<Json<ActionResponse>, ApiError> {
    act(state, caller, &mac, Action::Release, &body).await
}

/// Drops all of the device's traffic.
#[utoipa::path(
    post, path = "/api/v1/devices/{mac}/block", tag = "actions",
    params(("mac" = String, Path, description = "MAC address")),
    request_body(content = Option<ActionRequest>, description = "Optional reason for the audit log"),
    responses(
        (status = 200, body = ActionResponse, description = "Success"),
        (status = 400, body = ErrorBody, description = "Not a MAC address, or a bad query or body"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 403, body = ErrorBody, description = "The token lacks the operator role"),
        (status = 404, body = ErrorBody, description = "The device is not in the inventory"),
        (status = 502, body = ErrorBody, description = "The datapath refused the change; nothing was recorded"),
    ),
    security(("bearer" = []))
)]
pub async fn block(
    State(state): State<ApiState>,
    Operator(caller): Operator,
    Path(mac): Path<String>,
    body: Bytes,
) -> Result<Json<ActionResponse>, ApiError> {
    act(state, caller, &mac, Action::Block, &body).await
}

/// Prometheus metrics: OpenMetrics text, or the classic text format when `Accept` prefers
/// `text/plain` (`exposition`). Needs a token unless `metrics_public`.
#[utoipa::path(
    get, path = "/metrics", tag = "metrics",
    responses(
        (status = 200, content_type = "application/openmetrics-text", body = String, description = "Success (text/plain; version=0.0.4 when Accept prefers text/plain)"),
        (status = 401, body = ErrorBody, description = "No token, or not one of ours (WWW-Authenticate: Bearer)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []), ())
)]
pub async fn metrics(
    State(state): State<ApiState>,
    connection: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    method: Method,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let peer = connection.map(|Extension(ConnectInfo(addr))| addr.ip());
    metrics::authorize_scrape(&state, state.metrics_public, &method, &headers, peer)?;
    let directory = state.directory.clone();
    // Device counts are read at scrape time; a store error leaves the last counts in place
    // rather than failing the whole scrape.
    match blocking(move || Ok(directory.devices_by_state()?)).await {
        Ok(counts) => state.metrics.set_devices_by_state(&counts),
        Err(error) => tracing::warn!(%error, "metrics: device counts not refreshed"),
    }
    let text = state.metrics.encode().map_err(|error| ApiError::Internal(format!("metrics encoding: {error}")))?;
    let format = super::exposition::Exposition::negotiate(&headers);
    Ok(([(header::CONTENT_TYPE, format.content_type())], format.render(text)))
}

/// The OpenAPI 3 document of this API (public: it holds no data).
pub async fn openapi() -> impl IntoResponse {
    Json(super::openapi::document())
}

/// JSON 404 for unknown paths.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_reason_fits_the_inventory_audit_detail() {
        // "<from> -> <to>: <action>: <reason>" with the longest names.
        let detail = format!("quarantined -> quarantined: quarantine: {}", "x".repeat(MAX_REASON_BYTES));
        assert!(detail.len() <= crate::inventory::MAX_TEXT, "{} > {}", detail.len(), crate::inventory::MAX_TEXT);
    }

    #[test]
    fn action_body_may_be_empty_or_carry_a_reason() {
        assert_eq!(action_request(b"").unwrap(), ActionRequest::default());
        assert_eq!(action_request(b" \n").unwrap(), ActionRequest::default());
        assert_eq!(action_request(br#"{"reason":"x"}"#).unwrap().reason.as_deref(), Some("x"));
        assert_eq!(action_request(br#"{"reason":"a\u0007b\nc"}"#).unwrap().reason.as_deref(), Some("a\\u0007b\\nc"));
        let long = format!(r#"{{"reason":"{}"}}"#, "\\n".repeat(MAX_REASON_BYTES / 2 + 1));
        assert!(action_request(long.as_bytes()).is_err(), "the escaped reason is too long");
    }
}
