//! Integrations: every `GatewayEvent` reaches the SIEM, SOAR and ITSM tools configured in
//! `[integrations]`, and SOAR playbooks can act back on devices.
//!
//! Path of an event: `EventBus` → intake task → `outbox::Writer` (SQLite, its own thread) →
//! one `delivery::SinkTask` per sink → `transport` (syslog UDP/TCP/TLS, HEC, webhook, file)
//! or `itsm`, rendered by `syslog`, `cef` or `json`. Events are in the store before any sink
//! sees them; each sink delivers in order from its own cursor, at least once, retrying with
//! backoff while it is down. The inbound side, SOAR actions, is part of the API (`api::soar`). Reads the gateway
//! config and the store; writes the store's `integration_*` tables and the network.
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
pub mod itsm;
pub mod json;
pub mod outbox;
pub mod render;
pub mod signature;
pub mod syslog;
pub mod transport;

pub use config::Config;
pub use outbox::MIGRATIONS;

/// Why integrations could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrationsError {
    #[error("integrations config: {}", .0.join("; "))]
    Config(Vec<String>),
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

struct SinkHandle {
    config: config::SinkConfig,
    reader: Arc<Mutex<outbox::Reader>>,
    status: Arc<Mutex<delivery::SinkStatus>>,
}

/// The running integrations, kept by `run`.
pub struct Integrations {
    writer: Option<outbox::Writer>,
    sinks: Vec<SinkHandle>,
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
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(IntegrationsError::Config(problems));
    }
    if config.sinks.is_empty() {
        tracing::info!("integrations: no sink configured");
        return Ok(Integrations { writer: None, sinks: Vec::new(), tasks: Vec::new() });
    }
    let origin = render::Origin::from_config(&config);
    let names = config.sinks.iter().map(|s| s.name.clone()).collect();
    let writer = outbox::Writer::start(store_path, names, config.max_outbox_events)?;
    // Build every transport before starting anything, so a bad CA file fails the start.
    let mut prepared = Vec::new();
    for sink in &config.sinks {
        let transport = delivery::Transport::new(sink, &origin, store_path.to_owned())?;
        let reader = Arc::new(Mutex::new(outbox::Reader::open(store_path, &sink.name, &sink.filter)?));
        prepared.push((sink.clone(), transport, reader));
    }
    let mut tasks = Vec::new();
    let mut sinks = Vec::new();
    for (sink, transport, reader) in prepared {
        let status = Arc::new(Mutex::new(delivery::SinkStatus::default()));
        let task = delivery::SinkTask {
            config: sink.clone(),
            origin: origin.clone(),
            transport,
            reader: reader.clone(),
            status: status.clone(),
            written: writer.written(),
            shutdown: shutdown.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
        sinks.push(SinkHandle { config: sink, reader, status });
    }
    let filters: Vec<config::Filter> = config.sinks.iter().map(|s| s.filter.clone()).collect();
    // Subscribe here, not in the task: events published right after `spawn` returns count.
    let aggregator = aggregate::Aggregator::new(config.aggregation.clone());
    let intake = intake(bus.subscribe(), bus.clone(), writer.clone(), filters, aggregator, shutdown);
    tasks.push(tokio::spawn(intake));
    tracing::info!(sinks = sinks.len(), store = %store_path.display(), "integrations started");
    Ok(Integrations { writer: Some(writer), sinks, tasks })
}

/// Copies bus events that some sink wants into the outbox, through the aggregator (a flood
/// becomes a few counted records and an alert, which also goes to the bus's recorders, the
/// alert store). Lagging behind the bus loses events (counted in the log); aggregation and
/// the outbox write are the only work done here.
async fn intake(
    mut events: tokio::sync::broadcast::Receiver<crate::event::GatewayEvent>,
    bus: EventBus,
    writer: outbox::Writer,
    filters: Vec<config::Filter>,
    mut aggregator: aggregate::Aggregator,
    mut shutdown: Shutdown,
) {
    use tokio::sync::broadcast::error::RecvError;
    let wanted = |event: &crate::event::GatewayEvent| filters.iter().any(|f| f.accepts(event));
    let store = async |records: Vec<crate::event::GatewayEvent>| -> bool {
        for flood in records.iter().filter(|record| aggregate::is_flood_alert(record)) {
            bus.publish_to_recorders(flood);
        }
        for record in records.into_iter().filter(wanted) {
            if writer.append(record).await.is_err() {
                tracing::error!("outbox writer stopped; events are no longer stored");
                return false;
            }
        }
        true
    };
    let mut ticks = tokio::time::interval(aggregator.tick_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = ticks.tick(), if aggregator.enabled() => {
                if !store(aggregator.close_due(std::time::Instant::now())).await {
                    return;
                }
                continue;
            }
            _ = shutdown.wait() => break,
        };
        match event {
            Ok(event) => {
                if wanted(&event) && !store(aggregator.handle(event, std::time::Instant::now())).await {
                    return;
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::error!(missed, "integrations fell behind the event bus; events lost before the outbox")
            }
            Err(RecvError::Closed) => break,
        }
    }
    // Drain what is already queued, then what is counted, so a clean shutdown stores
    // everything it received.
    while let Ok(event) = events.try_recv() {
        if wanted(&event) && !store(aggregator.handle(event, std::time::Instant::now())).await {
            return;
        }
    }
    store(aggregator.flush()).await;
}

impl Integrations {
    /// The outbox writer, for producers that need an event stored before they go on
    /// (`append_durable`). None when no sink is configured.
    pub fn writer(&self) -> Option<&outbox::Writer> {
        self.writer.as_ref()
    }

    /// The backlog of every sink (reads the store off the async runtime).
    pub async fn backlog(&self) -> Vec<SinkBacklog> {
        backlog_of(&self.sinks).await
    }

    /// A cloneable backlog source for the API server.
    pub fn backlog_source(&self) -> BacklogSource {
        BacklogSource(Arc::new(
            self.sinks
                .iter()
                .map(|s| SinkHandle { config: s.config.clone(), reader: s.reader.clone(), status: s.status.clone() })
                .collect(),
        ))
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
        let pending = delivery::with_reader(&sink.reader, |r| r.pending()).await;
        let status = sink.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let (pending, oldest_pending_ms, delivered_total) = pending.unwrap_or_else(|error| {
            tracing::warn!(sink = %sink.config.name, %error, "cannot read the sink backlog");
            (0, None, 0)
        });
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
