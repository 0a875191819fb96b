//! Incoming SOAR actions: `POST /actions` (mounted under `/api/v1/soar`) lets a playbook
//! quarantine, release, block or tag a device. Callers authenticate with a bearer token or an
//! HMAC signature (the webhook scheme of `signature`); every request carries an
//! `Idempotency-Key` (or `action_id`), remembered in `integration_actions` with its answer,
//! so a retried call is answered again without acting twice. Quarantine, release and block
//! run `api::actions::apply`, the API's own path: the datapath change, the inventory's access
//! and its audit entry (actor `soar:<caller>`), so the API shows, and can release, what a
//! playbook isolated, and a release restores what the device had before. Every call is also
//! written to `integration_audit` with the caller and key, and published as a `GatewayEvent`.
//! Reasons are escaped and keys refused when they hold control or bidi characters
//! (`untrusted`); bodies are capped at `api::MAX_BODY_BYTES`.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{
    DeviceDirectory, InventoryDirectory,
    actions::{self, Action, ApplyError, UnknownDevices},
    model::ErrorBody,
    throttle::{FailureLimiter, Source},
};
use crate::{
    datapath::Control,
    device::Mac,
    event::{EventBus, EventKind, GatewayEvent, Severity},
    integrations::{
        config::{Config, SoarCaller},
        outbox::now_ms,
        signature,
    },
};

/// Header naming the action for idempotency (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set on answers replayed from the idempotency record.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest accepted idempotency key and tag.
const KEY_MAX: usize = 200;
const TAG_MAX: usize = 64;
/// Longest reason, in bytes once escaped: the API's limit (`api::handlers::MAX_REASON_BYTES`),
/// since both land in the same audit log.
pub const REASON_MAX: usize = crate::api::handlers::MAX_REASON_BYTES;

/// What a playbook may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SoarAction {
    Quarantine,
    Release,
    Block,
    Tag,
}

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SoarActionRequest)]
pub struct ActionRequest {
    pub action: SoarAction,
    #[schema(value_type = String, example = "98:90:96:9a:86:df")]
    pub device: Mac,
    /// For `tag`: 1 to 64 printable ASCII characters.
    #[serde(default)]
    pub tag: Option<String>,
    /// Free text for the audit log, at most 512 bytes once control, line-separator and bidi
    /// characters are written out (`\n`, `\uXXXX`).
    #[serde(default)]
    pub reason: Option<String>,
    /// Alternative to the `Idempotency-Key` header.
    #[serde(default)]
    pub action_id: Option<String>,
}

/// The answer to an action (replayed as such for a repeated idempotency key).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SoarActionResponse)]
pub struct ActionResponse {
    /// The idempotency key.
    pub action_id: String,
    /// `quarantine`, `release`, `block` or `tag`.
    pub action: String,
    #[schema(value_type = String)]
    pub device: Mac,
    /// Access before and after (equal for `tag`); `unknown` when not in the device table.
    pub previous: String,
    pub access: String,
    pub tag: Option<String>,
    /// The SOAR caller's name.
    pub caller: String,
}

/// Shared state of the router.
#[derive(Clone)]
pub struct SoarState {
    callers: Arc<Vec<SoarCaller>>,
    tolerance_secs: u64,
    control: Control,
    directory: Arc<dyn DeviceDirectory>,
    store: Arc<Mutex<Connection>>,
    bus: EventBus,
    action_lock: Arc<tokio::sync::Mutex<()>>,
    failures: Arc<FailureLimiter>,
}

impl SoarState {
    /// Opens its own connections to the store at `store_path` (idempotency records, and the
    /// inventory the actions record into).
    pub fn new(
        config: &Config,
        store_path: &Path,
        control: Control,
        bus: EventBus,
    ) -> Result<Self, crate::store::StoreError> {
        Ok(Self {
            callers: Arc::new(config.soar.callers.clone()),
            tolerance_secs: config.soar.signature_tolerance_secs,
            control,
            directory: Arc::new(InventoryDirectory::open(store_path)?),
            store: Arc::new(Mutex::new(crate::store::open(
                store_path,
                &[crate::inventory::MIGRATIONS, crate::integrations::MIGRATIONS],
            )?)),
            bus,
            action_lock: Arc::default(),
            failures: Arc::default(),
        })
    }

    /// Serializes actions with the API's (`api::ApiState::action_lock`), so a playbook and an
    /// operator acting on one device at once cannot both read the same "before".
    pub fn with_action_lock(mut self, lock: Arc<tokio::sync::Mutex<()>>) -> Self {
        self.action_lock = lock;
        self
    }

    /// Throttles failed authentications with `failures`, the API's (`api::throttle`), so a
    /// source guessing tokens gets 429 on both.
    pub fn with_failure_limiter(mut self, failures: Arc<FailureLimiter>) -> Self {
        self.failures = failures;
        self
    }
}

/// The SOAR action routes; the API server nests them at `/api/v1/soar`. Bodies beyond
/// `api::MAX_BODY_BYTES` get 413.
pub fn router(state: SoarState) -> Router {
    Router::new()
        .route("/actions", post(action))
        .layer(DefaultBodyLimit::max(crate::api::MAX_BODY_BYTES))
        .with_state(state)
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Who is calling, or why not. Tokens are compared through their digests so the comparison
/// time says nothing about the token.
fn authenticate(state: &SoarState, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(auth) = header("authorization") {
        let token = auth.strip_prefix("Bearer ").ok_or("Authorization must be a Bearer token")?;
        let given = digest(token.trim().as_bytes());
        return state
            .callers
            .iter()
            .find(|c| c.token.as_deref().is_some_and(|t| !t.is_empty() && digest(t.as_bytes()) == given))
            .map(|c| c.name.clone())
            .ok_or_else(|| "unknown bearer token".to_owned());
    }
    let name = header(signature::CALLER_HEADER).ok_or("no Authorization and no signature headers")?;
    let caller = state
        .callers
        .iter()
        .find(|c| c.name == name && c.secret.as_deref().is_some_and(|s| !s.is_empty()))
        .ok_or_else(|| format!("unknown signing caller {name:?}"))?;
    let secret = caller.secret.as_deref().unwrap_or_default();
    signature::verify(
        secret.as_bytes(),
        header(signature::TIMESTAMP_HEADER),
        header(signature::SIGNATURE_HEADER),
        body,
        signature::now(),
        state.tolerance_secs,
    )
    .map_err(|e| e.to_string())?;
    Ok(caller.name.clone())
}

/// Runs a playbook's action on a device: quarantine, release and block as the API's own
/// actions (audited with actor `soar:<caller>`), or a tag.
#[utoipa::path(
    post, path = "/api/v1/soar/actions", tag = "soar",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Names the action (or `action_id` in the body): a repeated key is answered again without acting"),
        ("X-Iotgw-Caller" = Option<String>, Header, description = "Signing caller's name (HMAC scheme, instead of a bearer token)"),
        ("X-Iotgw-Timestamp" = Option<String>, Header, description = "Unix seconds the signature covers"),
        ("X-Iotgw-Signature" = Option<String>, Header, description = "v1=<hex HMAC-SHA256 of <timestamp>.<body>>"),
    ),
    request_body(content = ActionRequest, description = "The action; at most 16 KiB"),
    responses(
        (status = 200, body = ActionResponse, description = "Done, or replayed (header Idempotent-Replayed: true)"),
        (status = 400, body = ErrorBody, description = "Bad body, missing or unsafe idempotency key, bad tag, reason too long"),
        (status = 401, body = ErrorBody, description = "No token or signature, or not one of ours"),
        (status = 409, body = ErrorBody, description = "Release of a device that is neither quarantined nor blocked (or not held at all)"),
        (status = 413, body = ErrorBody, description = "Body larger than 16 KiB"),
        (status = 422, body = ErrorBody, description = "The idempotency key was used for another request"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
        (status = 502, body = ErrorBody, description = "The datapath refused the change; nothing was recorded"),
    ),
    security(("soar_bearer" = []), ("soar_signature" = []))
)]
pub async fn action(
    State(state): State<SoarState>,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = Source::of(connection.map_or(Ipv4Addr::UNSPECIFIED.into(), |Extension(ConnectInfo(a))| a.ip()));
    let now = std::time::Instant::now();
    if let Some(wait) = state.failures.retry_after(source, now) {
        let mut response = refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed authentications from this address");
        response.headers_mut().insert(header::RETRY_AFTER, crate::api::error::retry_after_secs(wait).into());
        return response;
    }
    let caller = match authenticate(&state, &headers, &body) {
        Ok(caller) => caller,
        Err(reason) => {
            state.failures.failed(source, now);
            tracing::warn!(reason = %crate::untrusted::escape(&reason), "SOAR action refused: not authenticated");
            return refuse(StatusCode::UNAUTHORIZED, reason);
        }
    };
    let idempotency_header = headers.get(IDEMPOTENCY_HEADER).and_then(|v| v.to_str().ok());
    let (key, request) = match check_request(idempotency_header, &body) {
        Ok(checked) => checked,
        Err((status, message)) => return refuse(status, message),
    };
    let request_hash = hex::encode(digest(&body));
    let _serialized = state.action_lock.clone().lock_owned().await;
    let worker = state.clone();
    let outcome = tokio::task::spawn_blocking(move || execute(&worker, &caller, &key, &request_hash, &request)).await;
    match outcome {
        Ok(Outcome::Done { status, body, replayed, event }) => {
            if let Some(event) = event {
                state.bus.publish(*event);
            }
            let mut response = (status, Json(body)).into_response();
            if replayed {
                response.headers_mut().insert(REPLAYED_HEADER, axum::http::HeaderValue::from_static("true"));
            }
            response
        }
        Ok(Outcome::Refused(status, message)) => refuse(status, message),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("action task failed: {e}")),
    }
}

/// Reads an authenticated caller's body: the action, its idempotency key (the
/// `Idempotency-Key` header, else `action_id`), the reason escaped and bounded, the tag checked.
/// Every refusal is a 400 with its reason. Public so the fuzz targets reach it (`fuzz/`).
pub fn check_request(
    idempotency_header: Option<&str>,
    body: &[u8],
) -> Result<(String, ActionRequest), (StatusCode, String)> {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    let mut request: ActionRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("bad action request: {e}")))?;
    let key = idempotency_header.map(str::to_owned).or_else(|| request.action_id.clone());
    let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= KEY_MAX) else {
        return Err(bad(format!("an Idempotency-Key header (1..={KEY_MAX} chars) is required")));
    };
    // The key names the action in the audit log and in the default reason: an identifier,
    // refused rather than changed when it holds a line break or a bidi override.
    crate::untrusted::check("action_id", &key).map_err(|unsafe_key| bad(unsafe_key.to_string()))?;
    if let Some(reason) = &mut request.reason {
        // Free text from a playbook (often an alert's description): kept, with its line breaks,
        // controls and bidi characters written out (`untrusted`), so it cannot forge a record.
        if let std::borrow::Cow::Owned(escaped) = crate::untrusted::escape(reason) {
            *reason = escaped;
        }
        if reason.len() > REASON_MAX {
            return Err(bad(format!("reason is longer than {REASON_MAX} bytes (escaped)")));
        }
    }
    if request.action == SoarAction::Tag
        && !request
            .tag
            .as_deref()
            .is_some_and(|t| !t.is_empty() && t.len() <= TAG_MAX && t.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(bad(format!("tag needs a `tag` of 1..={TAG_MAX} printable characters")));
    }
    Ok((key, request))
}

enum Outcome {
    Done { status: StatusCode, body: serde_json::Value, replayed: bool, event: Option<Box<GatewayEvent>> },
    Refused(StatusCode, String),
}

/// Check the key, act, record. Holds the store lock throughout, so two concurrent calls with
/// one key cannot both act.
fn execute(state: &SoarState, caller: &str, key: &str, request_hash: &str, request: &ActionRequest) -> Outcome {
    let mut conn = state.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let internal = |e: rusqlite::Error| Outcome::Refused(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"));
    let seen: Option<(String, i64, String)> = match conn
        .query_row(
            "SELECT request_sha256, status, response FROM integration_actions WHERE idempotency_key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
    {
        Ok(seen) => seen,
        Err(e) => return internal(e),
    };
    if let Some((hash, status, response)) = seen {
        if hash != request_hash {
            return Outcome::Refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Idempotency-Key {key:?} was used for a different request"),
            );
        }
        return Outcome::Done {
            status: StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
            body: serde_json::from_str(&response).unwrap_or_default(),
            replayed: true,
            event: None,
        };
    }
    let mac = request.device;
    let reason = request.reason.clone().unwrap_or_else(|| format!("SOAR action {key}"));
    let actor = format!("soar:{caller}");
    let action = match request.action {
        SoarAction::Quarantine => Some(Action::Quarantine),
        SoarAction::Block => Some(Action::Block),
        SoarAction::Release => Some(Action::Release),
        SoarAction::Tag => None,
    };
    let (action_name, previous, access) = match action {
        Some(action) => {
            let (directory, control) = (state.directory.as_ref(), state.control.as_ref());
            match actions::apply(directory, control, mac, action, &actor, &reason, UnknownDevices::Admit) {
                Ok(outcome) => (action.as_str(), outcome.plan.from.as_str(), outcome.plan.to.as_str()),
                Err(error) => {
                    let status = match &error {
                        // Not with `UnknownDevices::Admit`; kept should the policy change.
                        ApplyError::UnknownDevice(_) => StatusCode::NOT_FOUND,
                        ApplyError::Refused(_) => StatusCode::CONFLICT,
                        ApplyError::Datapath(_) => StatusCode::BAD_GATEWAY,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    let _ = audit(&conn, caller, action.as_str(), mac, key, "failed", &error.to_string());
                    return Outcome::Refused(status, error.to_string());
                }
            }
        }
        None => {
            let enforced = match state.control.access(mac) {
                Ok(enforced) => enforced.map_or("unknown", |e| e.access.as_str()),
                Err(e) => return Outcome::Refused(StatusCode::BAD_GATEWAY, format!("datapath: {e}")),
            };
            ("tag", enforced, enforced)
        }
    };
    let tag = request.tag.clone().unwrap_or_default();
    let answer = ActionResponse {
        action_id: key.to_owned(),
        action: action_name.to_owned(),
        device: mac,
        previous: previous.to_owned(),
        access: access.to_owned(),
        tag: request.tag.clone(),
        caller: caller.to_owned(),
    };
    let body = json!(answer);
    let record = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        if request.action == SoarAction::Tag {
            tx.execute(
                "INSERT OR IGNORE INTO integration_device_tags (mac, tag, caller, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![mac.to_string(), tag, caller, now_ms()],
            )?;
        }
        tx.execute(
            "INSERT INTO integration_actions (idempotency_key, caller, request_sha256, status, response, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key, caller, request_hash, 200, body.to_string(), now_ms()],
        )?;
        audit(&tx, caller, action_name, mac, key, "done", &reason)?;
        tx.commit()
    })();
    if let Err(e) = record {
        // The datapath already changed; say so, the audit trail must not silently miss it.
        tracing::error!(%e, device = %mac, action = action_name, "SOAR action applied but not recorded");
        return internal(e);
    }
    let detail = if request.action == SoarAction::Tag { format!("tag {tag}: {reason}") } else { reason };
    let severity = if request.action == SoarAction::Tag { Severity::Info } else { Severity::Medium };
    let event = GatewayEvent::new(
        severity,
        Some(mac),
        format!("soar:{caller}"),
        EventKind::Action { action: action_name.into(), reason: detail },
    );
    Outcome::Done { status: StatusCode::OK, body, replayed: false, event: Some(Box::new(event)) }
}

fn audit(
    conn: &Connection,
    caller: &str,
    action: &str,
    mac: Mac,
    key: &str,
    outcome: &str,
    detail: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO integration_audit (at_ms, caller, action, device, idempotency_key, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![now_ms(), format!("soar:{caller}"), action, mac.to_string(), key, outcome, detail],
    )
}
