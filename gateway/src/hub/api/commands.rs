//! The hub API's command routes: an operator quarantines, releases or blocks a device from the
//! hub (`hub::commands::issue`), optionally waiting for the gateway's answer; anyone signed in
//! reads commands and their outcomes.
//!
//! - `POST /api/v1/devices/{mac}/quarantine|release|block`, body (optional)
//!   `{"reason", "site", "gateway", "wait_secs"}`: 200 with the command once the gateway
//!   answered within `wait_secs`, else 202 with it pending.
//! - `GET /api/v1/commands/{id}`, `GET /api/v1/commands?mac=&limit=`.
//!
//! Who calls is the hub API's gate (`api::gate`: tokens, users, console sessions), as on every
//! other route of the hub.
use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    api::{auth::Caller, error::ApiError, gate::Operator, model::ErrorBody},
    device::Mac,
    fleet::wire::CommandAction,
    hub::{
        api::HubApi,
        commands::{self, CommandError, CommandRecord, Request},
    },
};

/// The longest an action request waits for the gateway's answer.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Commands listed when the query does not say.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// Longest reason, escaped (as the gateway API's actions).
const MAX_REASON_BYTES: usize = 1024;

/// The command routes, to merge into the hub API's router.
pub fn routes() -> Router<HubApi> {
    Router::new()
        .route("/api/v1/devices/{mac}/quarantine", post(quarantine))
        .route("/api/v1/devices/{mac}/release", post(release))
        .route("/api/v1/devices/{mac}/block", post(block))
        .route("/api/v1/commands", get(list))
        .route("/api/v1/commands/{id}", get(show))
}

/// The optional body of an action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    pub reason: Option<String>,
    /// The gateway to send it to; both or neither (then the one that saw the device last).
    pub site: Option<String>,
    pub gateway: Option<String>,
    /// Seconds to wait for the gateway's answer, at most `MAX_WAIT`; 0 or none answers at once.
    pub wait_secs: Option<u64>,
}

async fn quarantine(state: State<HubApi>, caller: Operator, mac: Path<String>, body: Bytes) -> Response {
    act(state, caller, mac, CommandAction::Quarantine, body).await
}

async fn release(state: State<HubApi>, caller: Operator, mac: Path<String>, body: Bytes) -> Response {
    act(state, caller, mac, CommandAction::Release, body).await
}

async fn block(state: State<HubApi>, caller: Operator, mac: Path<String>, body: Bytes) -> Response {
    act(state, caller, mac, CommandAction::Block, body).await
}

async fn act(
    State(api): State<HubApi>,
    Operator(caller): Operator,
    Path(mac): Path<String>,
    action: CommandAction,
    body: Bytes,
) -> Response {
    let sent = async {
        let mac: Mac = mac.parse().map_err(|e| ApiError::BadRequest(format!("{mac:?} is not a MAC address: {e}")))?;
        let body = command_body(&body)?;
        let target = match (body.site, body.gateway) {
            (Some(site), Some(gateway)) => Some((site, gateway)),
            (None, None) => None,
            _ => return Err(ApiError::BadRequest("give both site and gateway, or neither".into())),
        };
        let actor = format!("hub:{}", crate::untrusted::escape(&caller.name));
        let request = Request { mac, action, actor, reason: body.reason.unwrap_or_default(), target };
        let hub = &api.hub;
        let id = commands::issue(hub, &request).await.map_err(refusal)?;
        let wait = Duration::from_secs(body.wait_secs.unwrap_or(0)).min(MAX_WAIT);
        commands::wait(hub, id, wait)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::Internal(format!("command {id} vanished")))
    };
    match sent.await {
        Ok(record) => answer(record),
        Err(refused) => refused.into_response(),
    }
}

/// 200 with an answered command, 202 with a pending one.
fn answer(record: CommandRecord) -> Response {
    let status = if record.outcome.is_some() { StatusCode::OK } else { StatusCode::ACCEPTED };
    (status, Json(record)).into_response()
}

/// Parses the optional body; the reason is escaped as the gateway API escapes it (it ends up
/// in audit logs on both sides).
fn command_body(body: &[u8]) -> Result<CommandBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CommandBody::default());
    }
    let mut body: CommandBody = serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!(
            "body must be {{\"reason\", \"site\", \"gateway\", \"wait_secs\"}} or empty: {error}"
        ))
    })?;
    if let Some(reason) = &mut body.reason {
        if let std::borrow::Cow::Owned(escaped) = crate::untrusted::escape(reason) {
            *reason = escaped;
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(ApiError::BadRequest(format!("reason is longer than {MAX_REASON_BYTES} bytes (escaped)")));
        }
    }
    Ok(body)
}

/// A command that was not sent, as an API answer.
fn refusal(error: CommandError) -> ApiError {
    match error {
        CommandError::UnknownDevice(mac) => ApiError::UnknownDevice(mac),
        CommandError::Invalid(why) => ApiError::BadRequest(why),
        CommandError::Store(error) => store_error(error),
        // Recorded as refused; nothing reached the gateway, the caller may try again.
        CommandError::Broker(why) => ApiError::Unavailable(format!(
            "the broker did not take the command ({why}); it is recorded as refused and nothing was sent: try again"
        )),
    }
}

fn store_error(error: sqlx::Error) -> ApiError {
    ApiError::Internal(format!("fleet store: {error}"))
}

async fn show(State(api): State<HubApi>, _: Caller, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return ApiError::BadRequest(format!("{id:?} is not a command id")).into_response();
    };
    match commands::get(api.pool(), id).await {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => {
            let body = ErrorBody { error: format!("no command {id}"), code: None };
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
        Err(error) => store_error(error).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub mac: Option<String>,
    pub limit: Option<i64>,
}

async fn list(
    State(api): State<HubApi>,
    _: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let listed = async {
        let Query(query) = query?;
        let mac = match query.mac {
            Some(mac) => Some(mac.parse::<Mac>().map_err(|e| ApiError::BadRequest(format!("mac: {e}")))?),
            None => None,
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        commands::list(api.pool(), mac, limit).await.map_err(store_error)
    };
    match listed.await {
        Ok(records) => Json(records).into_response(),
        Err(error) => error.into_response(),
    }
}
