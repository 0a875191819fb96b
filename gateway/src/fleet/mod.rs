//! The gateway's side of the fleet: it reports to the hub over NATS JetStream and takes policy
//! bundles and commands from it. Gateways connect outbound only (they sit behind NAT).
//!
//! What travels, and on which subject (`subjects`), is `wire`; `config` is the `[fleet]`
//! section. `bundle` is a signed policy bundle, `bundle_watch` takes them from the hub. The
//! hub's side is `crate::hub`; both sides share `subjects`, `wire` and `bundle`, so the wire
//! format has one definition.
//!
//! What a gateway sends: every outbox event (`publisher`, an outbox consumer the integrations
//! host), a snapshot of every device that changed (`inventory_feed`) and a periodic health
//! report (`health`). `Fleet::new` comes first, so the outbox can host the publisher;
//! `Fleet::spawn` then starts the other two. All of it stops with the shutdown signal.
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishError};
use tokio::task::JoinHandle;

use crate::{api::metrics::FleetCounters, integrations::ConsumerState, shutdown::Shutdown};

pub mod bundle;
pub mod bundle_watch;
pub mod commands;
pub mod config;
pub mod connect;
pub mod health;
pub mod inventory_feed;
pub mod publisher;
pub mod subjects;
pub mod wire;

pub use config::Config;

/// The policy bundle this gateway enforces, and the last one it refused: the bundle watcher
/// writes it, the health report reads it.
#[derive(Clone, Debug, Default)]
pub struct BundleStatus {
    pub enforced: Option<u64>,
    pub refused: Option<wire::BundleRefusal>,
}

pub type SharedBundleStatus = Arc<Mutex<BundleStatus>>;

/// The fleet's tables in the gateway's store: where each feed other than the outbox's got to.
pub const MIGRATIONS: &[crate::store::Migration] = &[crate::store::Migration {
    component: "fleet",
    version: 1,
    sql: "
    CREATE TABLE fleet_positions (
        feed TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    ",
}];

/// Publishes reports as one gateway: `site`/`gateway` fill every report's origin.
#[derive(Clone)]
pub struct Reporter {
    jetstream: jetstream::Context,
    site: String,
    gateway: String,
    timeout: Duration,
}

impl Reporter {
    /// A reporter whose publishes (handing a report to the client, and its acknowledgement
    /// each) time out after `timeout`.
    pub fn new(mut jetstream: jetstream::Context, site: &str, gateway: &str, timeout: Duration) -> Self {
        jetstream.set_timeout(timeout);
        Self { jetstream, site: site.to_owned(), gateway: gateway.to_owned(), timeout }
    }

    /// Sends `body` as this gateway's report, with its `Nats-Msg-Id`; the future resolves with
    /// the broker's acknowledgement.
    async fn send(&self, body: wire::ReportBody) -> Result<PublishAckFuture, PublishError> {
        let report = wire::Report::new(&self.site, &self.gateway, crate::integrations::outbox::now_ms(), body);
        // A report is strings, numbers and enums only: it always serializes.
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", report.msg_id().as_str());
        self.jetstream.publish_with_headers(report.subject(), headers, payload.into()).await
    }

    /// Sends every body and waits for the acknowledgements in order: how many from the start
    /// were acknowledged, and the first error (pipelined, so a batch costs one round trip).
    pub async fn send_all(&self, bodies: Vec<wire::ReportBody>) -> (usize, Option<String>) {
        let mut acks = Vec::new();
        let mut failure = None;
        for body in bodies {
            // The client queues while disconnected; a full queue would wait for the broker.
            match tokio::time::timeout(self.timeout, self.send(body)).await {
                Ok(Ok(ack)) => acks.push(ack),
                // Stop sending; what was sent is still acknowledged below.
                Ok(Err(error)) => {
                    failure = Some(format!("not sent: {error}"));
                    break;
                }
                Err(_) => {
                    failure = Some("not sent: the client's queue stayed full".to_owned());
                    break;
                }
            }
        }
        let sent = acks.len();
        for (taken, ack) in acks.into_iter().enumerate() {
            if let Err(error) = ack.await {
                return (taken, Some(format!("not acknowledged: {error}")));
            }
        }
        (sent, failure)
    }
}

/// Reports the broker acknowledged since start, by kind.
#[derive(Debug, Default)]
pub struct Published {
    pub events: AtomicU64,
    pub inventory: AtomicU64,
    pub health: AtomicU64,
}

/// This gateway's link to the fleet, connected (or connecting in the background) before the
/// outbox starts, so the outbox can host the publisher.
pub struct Fleet {
    client: async_nats::Client,
    reporter: Reporter,
    published: Arc<Published>,
    health_every: Duration,
}

/// What `Fleet::spawn` needs from the rest of the gateway.
pub struct Parts {
    /// The store the inventory lives in.
    pub store: PathBuf,
    /// The publisher's outbox consumer (`Integrations::consumer(publisher::CONSUMER)`).
    pub outbox: ConsumerState,
    pub health: health::Sources,
}

impl Fleet {
    /// The reporting side on the gateway's broker connection (`connect::connect_gateway`; a
    /// broker that is not up yet is retried in the background, reports wait in the outbox and
    /// the store meanwhile).
    pub fn new(config: &Config, client: async_nats::Client) -> Self {
        let reporter =
            Reporter::new(config.jetstream(client.clone()), &config.site, &config.gateway, publisher::ACK_TIMEOUT);
        Self {
            client,
            reporter,
            published: Arc::default(),
            health_every: Duration::from_secs(config.health_secs.max(1)),
        }
    }

    /// The outbox consumer that publishes every event: hand it to `integrations::spawn_with`.
    pub fn publisher(&self) -> crate::integrations::Consumer {
        publisher::Publisher::consumer(self.reporter.clone(), self.published.clone())
    }

    /// Starts the inventory feed and the health reports; they stop on `shutdown`.
    pub fn spawn(self, parts: Parts, shutdown: Shutdown) -> Running {
        let feed = inventory_feed::InventoryFeed {
            reporter: self.reporter.clone(),
            store: parts.store.clone(),
            published: self.published.clone(),
            shutdown: shutdown.clone(),
        };
        let health = health::HealthReports {
            reporter: self.reporter.clone(),
            every: self.health_every,
            sources: parts.health,
            outbox: parts.outbox.clone(),
            store: parts.store,
            published: self.published.clone(),
            shutdown,
        };
        let tasks = vec![tokio::spawn(feed.run()), tokio::spawn(health.run())];
        let link = Link { client: self.client, published: self.published, outbox: parts.outbox };
        Running { tasks, link }
    }
}

/// The fleet tasks, to drain at shutdown.
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
    link: Link,
}

impl Running {
    /// The link's counters, for the metrics step.
    pub fn link(&self) -> Link {
        self.link.clone()
    }

    /// Waits for the fleet tasks to stop (after the shutdown signal).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A cloneable view of the fleet link's state.
#[derive(Clone)]
pub struct Link {
    client: async_nats::Client,
    published: Arc<Published>,
    outbox: ConsumerState,
}

impl Link {
    pub async fn counters(&self) -> FleetCounters {
        let backlog_events = self.outbox.pending().await.map_or_else(
            |error| {
                tracing::warn!(%error, "cannot read the fleet backlog");
                0
            },
            |pending| pending.events,
        );
        FleetCounters {
            connected: self.client.connection_state() == async_nats::connection::State::Connected,
            backlog_events,
            published_events: self.published.events.load(Ordering::Relaxed),
            published_inventory: self.published.inventory.load(Ordering::Relaxed),
            published_health: self.published.health.load(Ordering::Relaxed),
        }
    }
}
