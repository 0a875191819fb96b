//! Integrations: every `GatewayEvent` reaches the SIEM, SOAR and ITSM tools configured in
//! `[integrations]`, and SOAR playbooks can act back on devices.
//!
//! Path of an event: `EventBus` → `intake` task → `outbox::Writer` (SQLite, its own thread) →
//! one `delivery::ConsumerTask` per sink → `transport` (syslog UDP/TCP/TLS, HEC, webhook, file)
//! or `itsm`, rendered by `syslog`, `cef` or `json`. Events are in the store before any sink
//! sees them; each sink delivers in order from its own cursor, at least once, retrying with
//! backoff while it is down. Other modules add consumers of their own (`Consumer`: the fleet
//! publisher), read, retried and pruned for exactly like sinks. The inbound side, SOAR
//! actions, is part of the API (`api::soar`). Reads the gateway config and the store; writes
//! the store's `integration_*` tables and the network.
//!
//! Guarantees, precisely: an event is durable once the outbox writer committed it (a few ms
//! after `EventBus::publish`; `Writer::append_durable` waits for it). From there each sink
//! gets it at least once, in outbox order, across restarts and `kill -9`: the cursor moves
//! only after the sink took a batch, so the batch in flight at a crash is sent again (receivers
//! deduplicate on the event id: SD `id`, CEF `externalId`, ECS `event.id`, OCSF
//! `metadata.uid`, header `X-Iotgw-Event-Id`). Syslog over UDP has no acknowledgement at all;
//! over TCP/TLS "taken" means written to the socket. An event refused for good (HTTP 4xx other
//! than 401/403/404/408/429) goes to `integration_dead_letters` instead of blocking its sink.
//! Repeated events are aggregated before the outbox (`aggregate`): the first `burst` of one
//! actor, device, kind and action in a window are stored one by one, the rest as one record
//! with `repeat = { count, first_seen, last_seen }` when the window closes, and a flood raises
//! an `event_flood` alert. Alerts and actions are never aggregated. The outbox holds at most
//! `max_outbox_events`; beyond that audit, lifecycle and policy events are dropped, lowest
//! severity and oldest first, and counted (`integration_stats`), so a sink gone for good
//! cannot fill the disk with them. Alerts and actions are never dropped: when only they are
//! left over the cap, they stay beyond it (`outbox` says why and what it costs).
//!
//! ```toml
//! [integrations]
//! hostname = "gw-site-1"              # default: the system hostname
//! max_outbox_events = 1000000
//!
//! [integrations.aggregation]
//! window_ms = 10000                   # 0: every event its own record, no flood alert
//! burst = 10                          # stored one by one per key and window, then counted
//! flood_alert_events = 100            # one event_flood alert per window per source
//!
//! [[integrations.sinks]]
//! name = "siem"                       # cursor key: renaming restarts the sink's position
//! kind = "syslog_tls"                 # syslog_udp | syslog_tcp | syslog_tls | hec | webhook | itsm | file
//! address = "siem.example:6514"
//! ca_file = "/etc/iotgw/siem-ca.pem"
//! format = "cef"                      # text | cef | ecs | ocsf | native
//! filter = { min_severity = "medium", kinds = ["alert", "action"] }
//!
//! [[integrations.sinks]]
//! name = "splunk"
//! kind = "hec"
//! url = "https://splunk.example:8088"
//! token = "00000000-0000-0000-0000-000000000000"
//!
//! [[integrations.sinks]]
//! name = "soar"
//! kind = "webhook"
//! url = "https://soar.example/hooks/iotgw"
//! secret = "shared HMAC key"
//!
//! [[integrations.sinks]]
//! name = "servicenow"
//! kind = "itsm"
//! url = "https://example.service-now.com"
//! token = "user:password"             # "user:password" = Basic, otherwise Bearer
//! filter = { kinds = ["alert"] }
//! itsm = { min_severity = "high", fields = { short_description = "iotgw {detector} on {device}" } }
//!
//! [[integrations.soar.callers]]
//! name = "xsoar"
//! token = "bearer token"              # or secret = "HMAC key" for signed calls
//! ```
use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::task::JoinHandle;

use crate::{event::EventBus, shutdown::Shutdown};

pub mod aggregate;
pub mod cef;
pub mod config;
pub mod delivery;
mod intake;
pub mod itsm;
pub mod json;
pub mod outbox;
pub mod render;
pub mod signature;
pub mod syslog;
pub mod transport;

pub use config::Config;
pub use intake::QUEUE_CAPACITY as INTAKE_QUEUE_CAPACITY;
pub use outbox::MIGRATIONS;

/// Why integrations could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrationsError {
    #[error("integrations config: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("outbox consumer {0:?} is named like a configured sink")]
    ConsumerName(String),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
}

/// One sink's backlog, for the API and metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SinkBacklog {
    pub sink: String,
    pub kind: config::SinkKind,
    /// Events waiting for this sink (after its filter).
    pub pending: u64,
    /// When the oldest waiting event was written (unix ms).
    pub oldest_pending_ms: Option<i64>,
    /// Events delivered since the sink was first configured.
    pub delivered_total: u64,
    #[serde(flatten)]
    pub status: delivery::SinkStatus,
}

/// An outbox consumer another module brings (the fleet publisher): it gets its own cursor row
/// (`name`, in `integration_cursors`) and is read, retried and pruned for like a sink.
pub struct Consumer {
    pub name: String,
    /// The events it wants.
    pub filter: config::Filter,
    pub pacing: delivery::Pacing,
    pub destination: Box<dyn delivery::Destination>,
}

/// A consumer's reader and live status, shared by its task and backlog queries. Cloneable.
#[derive(Clone)]
pub struct ConsumerState {
    reader: Arc<Mutex<outbox::Reader>>,
    status: Arc<Mutex<delivery::SinkStatus>>,
}

/// What waits for one consumer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Events in the outbox after its cursor (that pass its filter).
    pub events: u64,
    /// When the oldest of them was written (unix ms).
    pub oldest_ms: Option<i64>,
    /// Events it has taken since it was first started.
    pub delivered_total: u64,
}

impl ConsumerState {
    fn open(store_path: &Path, name: &str, filter: &config::Filter) -> Result<Self, outbox::OutboxError> {
        Ok(Self {
            reader: Arc::new(Mutex::new(outbox::Reader::open(store_path, name, filter)?)),
            status: Arc::new(Mutex::new(delivery::SinkStatus::default())),
        })
    }

    /// What waits, read off the async runtime.
    pub async fn pending(&self) -> Result<Pending, outbox::OutboxError> {
        let (events, oldest_ms, delivered_total) = delivery::with_reader(&self.reader, |r| r.pending()).await?;
        Ok(Pending { events, oldest_ms, delivered_total })
    }

    pub fn status(&self) -> delivery::SinkStatus {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

#[derive(Clone)]
struct SinkHandle {
    config: config::SinkConfig,
    state: ConsumerState,
}

/// The running integrations, kept by `run`.
pub struct Integrations {
    writer: Option<outbox::Writer>,
    sinks: Vec<SinkHandle>,
    consumers: Vec<(String, ConsumerState)>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the outbox writer, the bus intake and one task per sink. Returns at once; the tasks
/// stop when `shutdown` fires (undelivered events stay in the outbox for the next start).
pub fn spawn(
    config: Config,
    store_path: &Path,
    bus: EventBus,
    shutdown: Shutdown,
) -> Result<Integrations, IntegrationsError> {
    spawn_with(config, store_path, bus, shutdown, Vec::new())
}

/// `spawn`, with `consumers` reading the outbox beside the sinks. The outbox runs when there
/// is a sink or a consumer.
pub fn spawn_with(
    config: Config,
    store_path: &Path,
    bus: EventBus,
    shutdown: Shutdown,
    consumers: Vec<Consumer>,
) -> Result<Integrations, IntegrationsError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(IntegrationsError::Config(problems));
    }
    if let Some(clash) = consumers.iter().find(|c| config.sinks.iter().any(|s| s.name == c.name)) {
        return Err(IntegrationsError::ConsumerName(clash.name.clone()));
    }
    if config.sinks.is_empty() && consumers.is_empty() {
        tracing::info!("integrations: no sink configured");
        return Ok(Integrations { writer: None, sinks: Vec::new(), consumers: Vec::new(), tasks: Vec::new() });
    }
    let origin = render::Origin::from_config(&config);
    let names: Vec<String> =
        config.sinks.iter().map(|s| s.name.clone()).chain(consumers.iter().map(|c| c.name.clone())).collect();
    let writer = outbox::Writer::start(store_path, names.clone(), config.max_outbox_events)?;
    // Build every transport before starting anything, so a bad CA file fails the start.
    let mut all = Vec::with_capacity(config.sinks.len() + consumers.len());
    for sink in &config.sinks {
        all.push(Consumer {
            name: sink.name.clone(),
            filter: sink.filter.clone(),
            pacing: sink.pacing(),
            destination: Box::new(delivery::Transport::new(sink, &origin, store_path.to_owned())?),
        });
    }
    all.extend(consumers);
    let mut filters = Vec::with_capacity(all.len());
    let mut states = Vec::with_capacity(all.len());
    for consumer in &all {
        filters.push(consumer.filter.clone());
        states.push(ConsumerState::open(store_path, &consumer.name, &consumer.filter)?);
    }
    let mut tasks = Vec::new();
    for (consumer, state) in all.into_iter().zip(&states) {
        let task = delivery::ConsumerTask {
            name: consumer.name,
            pacing: consumer.pacing,
            destination: consumer.destination,
            reader: state.reader.clone(),
            status: state.status.clone(),
            written: writer.written(),
            shutdown: shutdown.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    // Sinks first, in `all` as in `states`; the hosted consumers after them.
    let mut states = states.into_iter();
    let sinks: Vec<SinkHandle> = config
        .sinks
        .iter()
        .zip(states.by_ref())
        .map(|(sink, state)| SinkHandle { config: sink.clone(), state })
        .collect();
    let hosted: Vec<(String, ConsumerState)> = names[config.sinks.len()..].iter().cloned().zip(states).collect();
    // Subscribe here, not in the task: events published right after `spawn` returns count.
    let intake = intake::Intake {
        events: bus.subscribe_queue(intake::QUEUE_CAPACITY),
        bus,
        writer: writer.clone(),
        filters,
        aggregator: aggregate::Aggregator::new(config.aggregation.clone()),
        shutdown,
    };
    tasks.push(tokio::spawn(intake.run()));
    tracing::info!(sinks = sinks.len(), consumers = hosted.len(), store = %store_path.display(), "integrations started");
    Ok(Integrations { writer: Some(writer), sinks, consumers: hosted, tasks })
}

impl Integrations {
    /// The outbox writer, for producers that need an event stored before they go on
    /// (`append_durable`). None when neither a sink nor a consumer is configured.
    pub fn writer(&self) -> Option<&outbox::Writer> {
        self.writer.as_ref()
    }

    /// The backlog of every sink (reads the store off the async runtime).
    pub async fn backlog(&self) -> Vec<SinkBacklog> {
        backlog_of(&self.sinks).await
    }

    /// A cloneable backlog source for the API server.
    pub fn backlog_source(&self) -> BacklogSource {
        BacklogSource(Arc::new(self.sinks.clone()))
    }

    /// The state of the consumer `name` that `spawn_with` started.
    pub fn consumer(&self, name: &str) -> Option<ConsumerState> {
        self.consumers.iter().find(|(n, _)| n == name).map(|(_, state)| state.clone())
    }

    /// Waits for every task to stop (after shutdown was triggered), then for the outbox to
    /// commit what the intake queued, so a clean stop loses nothing.
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(writer) = self.writer
            && let Err(error) = writer.flush().await
        {
            tracing::error!(%error, "outbox flush at shutdown failed");
        }
    }
}

/// Cloneable handle giving `backlog()` without owning the tasks.
#[derive(Clone)]
pub struct BacklogSource(Arc<Vec<SinkHandle>>);

/// How often `BacklogSource::report_every` is usually called from `run` (metrics scrape
/// granularity; the backlog query is one indexed COUNT per sink).
pub const BACKLOG_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl BacklogSource {
    pub async fn backlog(&self) -> Vec<SinkBacklog> {
        backlog_of(&self.0).await
    }

    /// Hands the backlog to `report` (e.g. `api::Metrics::set_integration_backlog`) every
    /// `interval` until shutdown. Spawn it with the controller's other tasks.
    pub async fn report_every(
        self,
        interval: std::time::Duration,
        mut shutdown: Shutdown,
        mut report: impl FnMut(&[SinkBacklog]) + Send + 'static,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => report(&self.backlog().await),
                _ = shutdown.wait() => break,
            }
        }
    }
}

async fn backlog_of(sinks: &[SinkHandle]) -> Vec<SinkBacklog> {
    let mut out = Vec::with_capacity(sinks.len());
    for sink in sinks {
        let Pending { events: pending, oldest_ms: oldest_pending_ms, delivered_total } =
            sink.state.pending().await.unwrap_or_else(|error| {
                tracing::warn!(sink = %sink.config.name, %error, "cannot read the sink backlog");
                Pending::default()
            });
        let status = sink.state.status();
        out.push(SinkBacklog {
            sink: sink.config.name.clone(),
            kind: sink.config.kind,
            pending,
            oldest_pending_ms,
            delivered_total,
            status,
        });
    }
    out
}

/// The backlog in Prometheus text exposition format, for the API's `/metrics`.
pub fn metrics_text(backlog: &[SinkBacklog]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    /// Name, type, help, value.
    type Metric = (&'static str, &'static str, &'static str, fn(&SinkBacklog) -> f64);
    let metrics: [Metric; 5] = [
        ("iotgw_integration_backlog_events", "gauge", "Events waiting in the outbox for the sink.", |b| {
            b.pending as f64
        }),
        ("iotgw_integration_delivered_events_total", "counter", "Events the sink has taken.", |b| {
            b.delivered_total as f64
        }),
        ("iotgw_integration_consecutive_failures", "gauge", "Failed delivery attempts since the last success.", |b| {
            f64::from(b.status.consecutive_failures)
        }),
        ("iotgw_integration_dead_letters_total", "counter", "Events the sink refused for good (this run).", |b| {
            b.status.dead_letters as f64
        }),
        ("iotgw_integration_oldest_pending_age_seconds", "gauge", "Age of the oldest waiting event.", |b| {
            b.oldest_pending_ms.map_or(0.0, |ms| (outbox::now_ms() - ms).max(0) as f64 / 1_000.0)
        }),
    ];
    for (name, kind, help, value) in metrics {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for sink in backlog {
            let label = sink.sink.replace(['"', '\\', '\n'], "_");
            let _ = writeln!(out, "{name}{{sink=\"{label}\",kind=\"{}\"}} {}", sink.kind.as_str(), value(sink));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_has_one_series_per_sink_with_escaped_labels() {
        let backlog = vec![SinkBacklog {
            sink: "a\"b".into(),
            kind: config::SinkKind::Hec,
            pending: 7,
            oldest_pending_ms: None,
            delivered_total: 3,
            status: delivery::SinkStatus::default(),
        }];
        let text = metrics_text(&backlog);
        assert!(text.contains("iotgw_integration_backlog_events{sink=\"a_b\",kind=\"hec\"} 7\n"), "{text}");
        assert!(text.contains("# TYPE iotgw_integration_delivered_events_total counter\n"), "{text}");
    }
}
