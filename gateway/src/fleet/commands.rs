//! Commands from the hub: this gateway's durable pull consumer on `IOTGW_CMD`, filtered to its
//! own subject, so a command sent while the gateway was offline waits in the stream (until it
//! expires) and is taken when the gateway is back.
//!
//! Each command is enforced through `api::actions::apply`, the local API's own path (XDP
//! through `DeviceControl`, the inventory's audited `access_changed` record), with the
//! command's actor (`hub:alice`) and reason. Its result is stored under the command id before
//! it is reported, so a redelivered command is answered from the store and never enforced
//! twice. The command is acknowledged only after JetStream acknowledged the result report:
//! until then the broker redelivers it, and the report's `Nats-Msg-Id` (per command id) keeps
//! the hub from seeing two results.
use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt as _;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{
    subjects,
    wire::{Command, CommandAction, CommandOutcome, CommandResult, Report, ReportBody},
};
use crate::{
    api::{
        actions::{self, Action, ApplyError, UnknownDevices},
        directory::DeviceDirectory,
        inventory_directory::InventoryDirectory,
    },
    datapath::Control,
    event::{EventBus, EventKind, GatewayEvent, Severity},
    integrations::outbox::now_ms,
    shutdown::Shutdown,
};

/// Schema of the table of commands already answered (component `fleet_commands`).
pub const MIGRATIONS: &[crate::store::Migration] = &[crate::store::Migration {
    component: "fleet_commands",
    version: 1,
    sql: "
        -- One row per hub command this gateway answered: a redelivery is answered from here.
        CREATE TABLE fleet_commands (
            id TEXT PRIMARY KEY,
            action TEXT NOT NULL,
            mac TEXT NOT NULL,
            actor TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL,
            done_ms INTEGER NOT NULL
        );
    ",
}];

/// How long the broker waits for an acknowledgement before redelivering a command.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Pause before trying the broker again after a failure, doubling up to `MAX_RETRY` while it
/// keeps failing (the stream is missing until the hub first starts).
const RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why the command consumer cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandsError {
    #[error("opening the store for fleet commands: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Enforces commands and remembers their results (blocks on SQLite: run it off the runtime).
pub struct Executor {
    site: String,
    gateway: String,
    directory: Arc<dyn DeviceDirectory>,
    control: Control,
    /// `fleet_commands`, and the inventory's audit trail.
    answered: Connection,
}

/// What `Executor::execute` did.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    pub result: CommandResult,
    /// The datapath changed (false for a refusal, a no-op, or a redelivery answered from the
    /// store).
    pub changed: bool,
}

impl Executor {
    /// Over the gateway's store at `path` (the inventory and `fleet_commands`).
    pub fn open(site: &str, gateway: &str, path: &Path, control: Control) -> Result<Self, CommandsError> {
        let directory = Arc::new(InventoryDirectory::open(path)?);
        let answered = crate::store::open(path, &[crate::inventory::MIGRATIONS, MIGRATIONS])?;
        Ok(Self { site: site.to_owned(), gateway: gateway.to_owned(), directory, control, answered })
    }

    /// Enforces `command` unless it was answered before (then returns that answer), it is not
    /// for this gateway, or it expired before `now_ms`. `Err` when the store or the datapath
    /// failed: nothing is stored, so a redelivery tries again.
    pub fn execute(&mut self, command: &Command, now_ms: i64) -> Result<Executed, ApplyError> {
        if let Some(result) = self.answer(&command.id)? {
            return Ok(Executed { result, changed: false });
        }
        let (outcome, detail, changed) = if command.site != self.site || command.gateway != self.gateway {
            let to = format!("{}.{}", command.site, command.gateway);
            (CommandOutcome::Refused, format!("addressed to {to}, this is {}.{}", self.site, self.gateway), false)
        } else if let Err(invalid) = crate::inventory::check_text("actor", &command.actor) {
            (CommandOutcome::Refused, invalid.to_string(), false)
        } else if command.expires_ms < now_ms {
            (CommandOutcome::Expired, format!("expired {} ms before it arrived", now_ms - command.expires_ms), false)
        } else {
            let applied = actions::apply(
                self.directory.as_ref(),
                self.control.as_ref(),
                command.mac,
                action(command.action),
                &command.actor,
                &command.reason,
                UnknownDevices::Refuse,
            );
            match applied {
                Ok(outcome) if outcome.changed => {
                    (CommandOutcome::Done, format!("{} -> {}", outcome.plan.from, outcome.plan.to), true)
                }
                Ok(outcome) => (CommandOutcome::Done, format!("already {}", outcome.plan.to), false),
                Err(ApplyError::UnknownDevice(mac)) => {
                    (CommandOutcome::UnknownDevice, format!("no device {mac} in this gateway's inventory"), false)
                }
                Err(ApplyError::Refused(why)) => (CommandOutcome::Refused, why.to_string(), false),
                Err(error) => return Err(error),
            }
        };
        let result = CommandResult { command_id: command.id.clone(), outcome, detail };
        self.remember(command, &result, now_ms)?;
        Ok(Executed { result, changed })
    }

    fn answer(&self, id: &str) -> Result<Option<CommandResult>, ApplyError> {
        let row = self
            .answered
            .query_row("SELECT outcome, detail FROM fleet_commands WHERE id = ?1", [id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .optional()
            .map_err(store_error)?;
        let Some((outcome, detail)) = row else { return Ok(None) };
        let outcome = serde_json::from_value(serde_json::Value::String(outcome))
            .map_err(|e| store_error(format!("fleet_commands outcome: {e}")))?;
        Ok(Some(CommandResult { command_id: id.to_owned(), outcome, detail }))
    }

    /// Stores the answer and audits the command, refusals too, in one transaction.
    fn remember(&mut self, command: &Command, result: &CommandResult, now_ms: i64) -> Result<(), ApplyError> {
        let outcome = serde_json::to_value(result.outcome).map_err(store_error)?;
        let outcome = outcome.as_str().unwrap_or_default();
        let action = action(command.action).as_str();
        let tx = self.answered.transaction().map_err(store_error)?;
        tx.execute(
            "INSERT INTO fleet_commands (id, action, mac, actor, outcome, detail, done_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![command.id, action, command.mac.to_string(), command.actor, outcome, result.detail, now_ms],
        )
        .map_err(store_error)?;
        // A command refused for its actor is audited under the hub's name.
        let actor = if crate::inventory::check_text("actor", &command.actor).is_ok() { &command.actor } else { "hub" };
        let detail = format!("command {} {action}: {outcome} ({})", command.id, result.detail);
        crate::inventory::ledger::audit(&tx, actor, Some(command.mac), "fleet_command", &detail)
            .map_err(store_error)?;
        tx.commit().map_err(store_error)
    }
}

fn store_error(error: impl std::fmt::Display) -> ApplyError {
    ApplyError::Directory(crate::api::directory::DirectoryError::Store(error.to_string()))
}

/// The local API's action for a hub command.
pub fn action(action: CommandAction) -> Action {
    match action {
        CommandAction::Quarantine => Action::Quarantine,
        CommandAction::Release => Action::Release,
        CommandAction::Block => Action::Block,
    }
}

/// Starts taking this gateway's commands from `client` (which may not be connected yet: the
/// consumer is created once the broker answers). Fails only when the store cannot be opened.
pub fn spawn(
    config: &super::Config,
    client: async_nats::Client,
    store: &Path,
    control: Control,
    bus: EventBus,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, CommandsError> {
    let executor = Executor::open(&config.site, &config.gateway, store, control)?;
    let consumer = Consumer {
        site: config.site.clone(),
        gateway: config.gateway.clone(),
        jetstream: config.jetstream(client),
        executor: Arc::new(Mutex::new(executor)),
        bus,
    };
    Ok(tokio::spawn(consumer.run(shutdown)))
}

struct Consumer {
    site: String,
    gateway: String,
    jetstream: jetstream::Context,
    executor: Arc<Mutex<Executor>>,
    bus: EventBus,
}

impl Consumer {
    async fn run(self, mut shutdown: Shutdown) {
        let mut pause = RETRY;
        while !shutdown.is_triggered() {
            let started = tokio::time::Instant::now();
            let taken = tokio::select! {
                taken = self.take() => taken,
                () = shutdown.wait() => break,
            };
            if started.elapsed() > MAX_RETRY {
                // It ran a while: this is a new failure, not the same one again.
                pause = RETRY;
            }
            if let Err(error) = taken {
                tracing::warn!(%error, retry_in = ?pause, "fleet commands: broker failed");
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.wait() => break,
            }
            pause = (pause * 2).min(MAX_RETRY);
        }
    }

    /// Creates (or finds) the durable consumer and takes commands until the broker fails.
    async fn take(&self) -> Result<(), async_nats::Error> {
        let config = pull::Config {
            durable_name: Some(subjects::command_consumer(&self.site, &self.gateway)),
            filter_subject: subjects::command(&self.site, &self.gateway),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            ..Default::default()
        };
        // By name and filter, without a stream lookup: a gateway's credentials allow only its
        // own consumer (`hub::credentials`).
        let consumer = self.jetstream.create_consumer_on_stream(config, subjects::COMMAND_STREAM).await?;
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => self.handle(message).await?,
                // Missed heartbeats while the broker is away: the stream resumes by itself.
                Err(error) => tracing::debug!(%error, "fleet commands: pull interrupted"),
            }
        }
        Ok(())
    }

    async fn handle(&self, message: jetstream::Message) -> Result<(), async_nats::Error> {
        let command: Command = match serde_json::from_slice(&message.payload) {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "fleet commands: not a command; dropped");
                return message.ack_with(AckKind::Term).await;
            }
        };
        let executor = self.executor.clone();
        let job = command.clone();
        let executed = tokio::task::spawn_blocking(move || {
            executor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).execute(&job, now_ms())
        })
        .await?;
        let executed = match executed {
            Ok(executed) => executed,
            Err(error) => {
                // The store or the datapath failed: let the broker redeliver it later.
                tracing::warn!(%error, command = %command.id, "fleet command not enforced; will retry");
                return message.ack_with(AckKind::Nak(Some(RETRY * 5))).await;
            }
        };
        if executed.changed {
            let action = action(command.action).as_str();
            tracing::info!(device = %command.mac, action, actor = %command.actor, command = %command.id, "device access changed by the hub");
            self.bus.publish(GatewayEvent::new(
                Severity::Medium,
                Some(command.mac),
                command.actor.clone(),
                EventKind::Action { action: action.to_owned(), reason: command.reason.clone() },
            ));
        }
        self.report(executed.result).await?;
        message.double_ack().await
    }

    /// Publishes the result and waits for JetStream's acknowledgement.
    async fn report(&self, result: CommandResult) -> Result<(), async_nats::Error> {
        let report = Report::new(&self.site, &self.gateway, now_ms(), ReportBody::CommandResult { result });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", report.msg_id().as_str());
        let payload = serde_json::to_vec(&report)?;
        self.jetstream.publish_with_headers(report.subject(), headers, payload.into()).await?.await?;
        Ok(())
    }
}
