//! Incoming SOAR actions: `POST /actions` (mounted under `/api/v1/soar`) lets a playbook
//! quarantine, release, block or tag a device. Callers authenticate with a bearer token or an
//! HMAC signature (the webhook scheme of `signature`); every request carries an
//! `Idempotency-Key` (or `action_id`), remembered in `integration_actions` with its answer,
//! so a retried call is answered again without acting twice. Accepted actions go through
//! `datapath::DeviceControl`, are written to `integration_audit` with the caller, recorded in
//! the store's device table (`AccessLedger`, so a restart restores them), and are published
//! as `GatewayEvent`s.
use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{
    config::{Config, SoarCaller},
    outbox::now_ms,
    signature,
};
use crate::{
    datapath::{AccessLedger, Control, DeviceAccess},
    device::{Access, Mac},
    event::{EventBus, EventKind, GatewayEvent, Severity},
};

/// Header naming the action for idempotency (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set on answers replayed from the idempotency record.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest accepted idempotency key and tag.
const KEY_MAX: usize = 200;
const TAG_MAX: usize = 64;

/// What a playbook may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoarAction {
    Quarantine,
    Release,
    Block,
    Tag,
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub action: SoarAction,
    pub device: Mac,
    /// For `tag`.
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Alternative to the `Idempotency-Key` header.
    #[serde(default)]
    pub action_id: Option<String>,
}

/// Shared state of the router.
#[derive(Clone)]
pub struct SoarState {
    callers: Arc<Vec<SoarCaller>>,
    tolerance_secs: u64,
    control: Control,
    store: Arc<Mutex<Connection>>,
    /// The inventory's audited path for device-table changes, on its own connection.
    ledger: Arc<Mutex<dyn AccessLedger>>,
    bus: EventBus,
}

impl SoarState {
    /// Opens its own connection to the store at `store_path`.
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
            store: Arc::new(Mutex::new(crate::store::open(store_path)?)),
            ledger: Arc::new(Mutex::new(crate::inventory::Inventory::new(
                crate::store::open(store_path)?,
                crate::inventory::Vendors::empty(),
                None,
            ))),
            bus,
        })
    }
}

/// The SOAR action routes; the API server nests them at `/api/v1/soar`.
pub fn router(state: SoarState) -> Router {
    Router::new().route("/actions", post(action)).with_state(state)
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

async fn action(State(state): State<SoarState>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match authenticate(&state, &headers, &body) {
        Ok(caller) => caller,
        Err(reason) => {
            tracing::warn!(%reason, "SOAR action refused: not authenticated");
            return refuse(StatusCode::UNAUTHORIZED, reason);
        }
    };
    let request: ActionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("bad action request: {e}")),
    };
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.action_id.clone());
    let Some(key) = key.filter(|k| !k.is_empty() && k.len() <= KEY_MAX) else {
        return refuse(StatusCode::BAD_REQUEST, format!("an Idempotency-Key header (1..={KEY_MAX} chars) is required"));
    };
    if request.action == SoarAction::Tag
        && !request
            .tag
            .as_deref()
            .is_some_and(|t| !t.is_empty() && t.len() <= TAG_MAX && t.chars().all(|c| c.is_ascii_graphic()))
    {
        return refuse(StatusCode::BAD_REQUEST, format!("tag needs a `tag` of 1..={TAG_MAX} printable characters"));
    }
    let request_hash = hex::encode(digest(&body));
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
    let before = match state.control.access(mac) {
        Ok(before) => before,
        Err(e) => return Outcome::Refused(StatusCode::BAD_GATEWAY, format!("datapath: {e}")),
    };
    let (action_name, after) = match request.action {
        SoarAction::Quarantine => ("quarantine", Some(with_access(before, Access::Quarantined))),
        SoarAction::Block => ("block", Some(with_access(before, Access::Blocked))),
        SoarAction::Release => {
            let Some(before) = before else {
                return Outcome::Refused(StatusCode::NOT_FOUND, format!("device {mac} is not in the datapath"));
            };
            // A device with a class policy goes back to it; one that never had one, to onboarding.
            let access = if before.policy_id >= gateway_ebpf::lane::FIRST_CLASS_POLICY {
                Access::Enrolled
            } else {
                Access::Onboarding
            };
            ("release", Some(DeviceAccess { access, ..before }))
        }
        SoarAction::Tag => ("tag", None),
    };
    if let Some(after) = after
        && let Err(e) = state.control.set_access(mac, after)
    {
        let _ = audit(&conn, caller, action_name, mac, key, "failed", &e.to_string());
        return Outcome::Refused(StatusCode::BAD_GATEWAY, format!("datapath refused: {e}"));
    }
    let tag = request.tag.clone().unwrap_or_default();
    let body = json!({
        "action_id": key,
        "action": action_name,
        "device": mac.to_string(),
        "previous": before.map_or("unknown", |b| b.access.as_str()),
        "access": after.or(before).map_or("unknown", |a| a.access.as_str()),
        "tag": request.tag,
        "caller": caller,
    });
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
    if let Some(after) = after {
        let mut ledger = state.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        record_change(&mut *ledger, mac, after, caller, action_name, key, &reason);
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

/// Records an applied action in the store's device table. A reason the inventory refuses
/// (control characters, too long) is replaced, never a reason not to record the change.
fn record_change(
    ledger: &mut dyn AccessLedger,
    mac: Mac,
    after: DeviceAccess,
    caller: &str,
    action: &str,
    key: &str,
    reason: &str,
) {
    let actor = format!("soar:{caller}");
    let recorded = ledger.record_change(mac, after, &actor, &format!("{action}: {reason}")).or_else(|_| {
        let fallback = format!("{action}: SOAR action {} (reason refused by the inventory)", key.escape_debug());
        ledger.record_change(mac, after, &actor, &fallback)
    });
    if let Err(error) = recorded {
        tracing::error!(%error, device = %mac, action, "SOAR action applied but not recorded in the device table");
    }
}

fn with_access(before: Option<DeviceAccess>, access: Access) -> DeviceAccess {
    match before {
        Some(before) => DeviceAccess { access, ..before },
        None => DeviceAccess { access, policy_id: 0, class_id: 0 },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soar_actions_are_recorded_in_the_device_table_even_with_a_forged_reason() {
        let mut inventory = crate::inventory::Inventory::new(
            crate::store::open_in_memory().expect("store"),
            crate::inventory::Vendors::empty(),
            None,
        );
        let mac = Mac([2, 0, 0, 0, 0, 7]);
        let blocked = DeviceAccess { access: Access::Blocked, policy_id: 36, class_id: 20 };
        record_change(&mut inventory, mac, blocked, "xsoar", "block", "k-1", "line\n<13>1 forged");
        assert_eq!(inventory.enforced().expect("enforced"), vec![(mac, blocked)]);
        let audit = inventory.audit_log(Some(mac), 10).expect("audit");
        let change = audit.iter().find(|a| a.action == "access_changed").expect("audited");
        assert_eq!(change.actor, "soar:xsoar");
        assert!(
            change.detail.ends_with("block: SOAR action k-1 (reason refused by the inventory)"),
            "{}",
            change.detail
        );
    }
}
