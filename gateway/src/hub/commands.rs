//! Actions from the centre: the hub records a command (and who asked, in `hub_audit`), sends it
//! on the stream `IOTGW_CMD` to the gateway that sees the device, and learns the outcome from
//! the gateway's `CommandResult` report (`record_result`, called by the ingest). A gateway that
//! is offline takes the command from the stream when it is back, unless it expired first.
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Hub;
use crate::{
    device::Mac,
    fleet::{
        subjects,
        wire::{self, Command, CommandAction, CommandResult},
    },
};

/// How often `wait` looks at the command's outcome.
const POLL: Duration = Duration::from_millis(100);

/// Why a command was not sent, or cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No gateway given and none has reported the device.
    #[error("no gateway has reported device {0}: name the site and gateway")]
    UnknownDevice(Mac),
    #[error("{0}")]
    Invalid(String),
    #[error("fleet store: {0}")]
    Store(#[from] sqlx::Error),
    /// The broker did not take the command; it is recorded as refused.
    #[error("the broker did not take the command: {0}")]
    Broker(String),
}

/// What an operator asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub mac: Mac,
    pub action: CommandAction,
    /// `hub:<name>`, audited at the hub and at the gateway.
    pub actor: String,
    pub reason: String,
    /// The gateway to send it to; `None` for the one that saw the device last.
    pub target: Option<(String, String)>,
}

/// A command and, once the gateway answered, its outcome.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct CommandRecord {
    pub id: Uuid,
    pub site: String,
    pub gateway: String,
    pub mac: String,
    pub action: String,
    pub actor: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// `None` while pending; then `done`, `refused`, `expired` or `unknown_device`.
    pub outcome: Option<String>,
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub done_at: Option<OffsetDateTime>,
}

/// The command's name as stored and audited (`quarantine`, `release`, `block`).
pub fn action_name(action: CommandAction) -> &'static str {
    crate::fleet::commands::action(action).as_str()
}

/// Records the command, audits it with its actor and sends it to its gateway, to be taken
/// before `now + command_ttl_secs`. Returns its id.
pub async fn issue(hub: &Hub, request: &Request) -> Result<Uuid, CommandError> {
    check_text(request)?;
    let (site, gateway) = match &request.target {
        Some((site, gateway)) => {
            for token in [site, gateway] {
                subjects::check_token(token).map_err(CommandError::Invalid)?;
            }
            (site.clone(), gateway.clone())
        }
        None => sqlx::query_as::<_, (String, String)>("SELECT site, gateway FROM fleet_devices WHERE mac = $1")
            .bind(request.mac.to_string())
            .fetch_optional(&hub.pool)
            .await?
            .ok_or(CommandError::UnknownDevice(request.mac))?,
    };
    let id = Uuid::new_v4();
    let issued_at = OffsetDateTime::now_utc();
    let ttl = Duration::from_secs(hub.config.command_ttl_secs);
    let expires_at = issued_at + ttl;
    let action = action_name(request.action);
    let mut tx = hub.pool.begin().await?;
    sqlx::query(
        "INSERT INTO commands (id, site, gateway, mac, action, actor, reason, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(&site)
    .bind(&gateway)
    .bind(request.mac.to_string())
    .bind(action)
    .bind(&request.actor)
    .bind(&request.reason)
    .bind(issued_at)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO hub_audit (time, actor, action, site, gateway, mac, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(issued_at)
    .bind(&request.actor)
    .bind(format!("command_{action}"))
    .bind(&site)
    .bind(&gateway)
    .bind(request.mac.to_string())
    .bind(format!("command {id}: {}", request.reason))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let command = Command {
        v: wire::VERSION,
        id: id.to_string(),
        site: site.clone(),
        gateway: gateway.clone(),
        action: request.action,
        mac: request.mac,
        actor: request.actor.clone(),
        reason: request.reason.clone(),
        issued_ms: unix_ms(issued_at),
        expires_ms: unix_ms(expires_at),
    };
    if let Err(error) = send(hub, &command).await {
        let refused = CommandResult {
            command_id: command.id.clone(),
            outcome: wire::CommandOutcome::Refused,
            detail: format!("not sent: the broker did not take it ({error})"),
        };
        record_result(&hub.pool, &site, &gateway, &refused).await?;
        return Err(CommandError::Broker(error.to_string()));
    }
    Ok(id)
}

/// The gateway audits actor and reason as they are: refuse what its store would refuse.
fn check_text(request: &Request) -> Result<(), CommandError> {
    let invalid = |e: crate::inventory::InventoryError| CommandError::Invalid(e.to_string());
    crate::inventory::check_text("actor", &request.actor).map_err(invalid)?;
    if !request.reason.is_empty() {
        crate::inventory::check_text("reason", &request.reason).map_err(invalid)?;
    }
    Ok(())
}

/// Publishes `command` on its gateway's subject and waits for JetStream to store it.
async fn send(hub: &Hub, command: &Command) -> Result<(), async_nats::Error> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("cmd.{}", command.id).as_str());
    let subject = subjects::command(&command.site, &command.gateway);
    let payload = serde_json::to_vec(command)?;
    hub.jetstream.publish_with_headers(subject, headers, payload.into()).await?.await?;
    Ok(())
}

/// Records a gateway's answer to a command it was sent. The first answer stands (a
/// redelivered report changes nothing); an answer from another gateway than the command's is
/// ignored. Returns whether it was recorded.
pub async fn record_result(
    executor: impl sqlx::PgExecutor<'_>,
    site: &str,
    gateway: &str,
    result: &CommandResult,
) -> Result<bool, sqlx::Error> {
    let Ok(id) = Uuid::parse_str(&result.command_id) else {
        tracing::warn!(site, gateway, command = %result.command_id, "result for a command id that is not a UUID");
        return Ok(false);
    };
    let outcome = serde_json::to_value(result.outcome).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let updated = sqlx::query(
        "UPDATE commands SET outcome = $4, detail = $5, done_at = now()
         WHERE id = $1 AND site = $2 AND gateway = $3 AND outcome IS NULL",
    )
    .bind(id)
    .bind(site)
    .bind(gateway)
    .bind(outcome.as_str())
    .bind(&result.detail)
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// The command `id`, if the hub sent it.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<CommandRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, site, gateway, mac, action, actor, reason, issued_at, expires_at, outcome, detail, done_at
         FROM commands WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The latest commands, newest first, at most `limit`; of one device when `mac` is given.
pub async fn list(pool: &PgPool, mac: Option<Mac>, limit: i64) -> Result<Vec<CommandRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, site, gateway, mac, action, actor, reason, issued_at, expires_at, outcome, detail, done_at
         FROM commands WHERE ($1::text IS NULL OR mac = $1) ORDER BY issued_at DESC, id LIMIT $2",
    )
    .bind(mac.map(|m| m.to_string()))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Waits up to `timeout` for the gateway's answer; returns the command as it then stands
/// (`outcome` still `None` when the gateway has not answered), `None` for an unknown id.
pub async fn wait(hub: &Hub, id: Uuid, timeout: Duration) -> Result<Option<CommandRecord>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let record = get(&hub.pool, id).await?;
        let answered = record.as_ref().is_none_or(|r| r.outcome.is_some());
        if answered || tokio::time::Instant::now() >= deadline {
            return Ok(record);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}
