//! Integrations: every `GatewayEvent` reaches the SIEM, SOAR and ITSM tools configured in
//! `[integrations]`, and SOAR playbooks can act back on devices.
//!
//! Path of an event: `EventBus` → intake task → `outbox::Writer` (SQLite, its own thread) →
//! one `delivery::SinkTask` per sink → `transport` (syslog UDP/TCP/TLS, HEC, webhook, file)
//! or `itsm`, rendered by `syslog`, `cef` or `json`. Events are in the store before any sink
//! sees them; each sink delivers in order from its own cursor, at least once, retrying with
//! backoff while it is down. `soar` is the inbound side (an axum router). Reads the gateway
//! config and the store; writes the store's `integration_*` tables and the network.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::task::JoinHandle;

use crate::{event::EventBus, shutdown::Shutdown};

pub mod cef;
pub mod config;
pub mod delivery;
pub mod itsm;
pub mod json;
pub mod outbox;
pub mod render;
pub mod signature;
pub mod soar;
pub mod syslog;
pub mod transport;

pub use config::Config;
pub use outbox::MIGRATIONS;
pub use soar::{SoarState, router};

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
pub fn spawn(config: Config, store_path: &Path, bus: EventBus, shutdown: Shutdown) -> Result<Integrations, IntegrationsError> {
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
    tasks.push(tokio::spawn(intake(bus.subscribe(), writer.clone(), filters, shutdown)));
    tracing::info!(sinks = sinks.len(), store = %store_path.display(), "integrations started");
    Ok(Integrations { writer: Some(writer), sinks, tasks })
}

/// Copies bus events that some sink wants into the outbox. Lagging behind the bus loses
/// events (counted in the log); the outbox write is the only work done here.
async fn intake(
    mut events: tokio::sync::broadcast::Receiver<crate::event::GatewayEvent>,
    writer: outbox::Writer,
    filters: Vec<config::Filter>,
    mut shutdown: Shutdown,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.wait() => break,
        };
        match event {
            Ok(event) => {
                if filters.iter().any(|f| f.accepts(&event)) && writer.append(event).await.is_err() {
                    tracing::error!("outbox writer stopped; events are no longer stored");
                    break;
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::error!(missed, "integrations fell behind the event bus; events lost before the outbox")
            }
            Err(RecvError::Closed) => break,
        }
    }
    // Drain what is already queued so a clean shutdown stores everything it received.
    while let Ok(event) = events.try_recv() {
        if filters.iter().any(|f| f.accepts(&event)) && writer.append(event).await.is_err() {
            break;
        }
    }
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

    /// Waits for every task to stop (after shutdown was triggered).
    pub async fn join(self) {
        drop(self.writer);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Cloneable handle giving `backlog()` without owning the tasks.
#[derive(Clone)]
pub struct BacklogSource(Arc<Vec<SinkHandle>>);

impl BacklogSource {
    pub async fn backlog(&self) -> Vec<SinkBacklog> {
        backlog_of(&self.0).await
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

/// The default store path helper for tests and the bench.
pub fn store_path_in(dir: &Path) -> PathBuf {
    dir.join("iotgw.db")
}
