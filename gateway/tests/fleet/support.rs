//! Shared fixtures of the fleet publishing tests: a real nats-server with the hub's streams, a
//! gateway's reporting side (outbox, publisher, inventory feed, health) over a store of its
//! own, and reading back what the `IOTGW` stream holds.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use async_nats::jetstream;
use iotgw::{
    event::{EventBus, EventKind, GatewayEvent, Severity},
    fleet::{self, wire::Report},
    hub::{self, config::Streams},
    integrations::{self, Integrations},
    shutdown,
};
use iotgw_test_support::services::{NatsServer, Scratch, scratch};

pub const SITE: &str = "berlin-3";
pub const GATEWAY: &str = "gw-1";

/// A broker with the hub's streams, and a client of its own to read them.
pub struct Broker {
    pub nats: NatsServer,
    pub js: jetstream::Context,
}

impl Broker {
    pub async fn start() -> Self {
        Self::on(NatsServer::start()).await
    }

    /// The hub's streams on `nats`, a JetStream server already running.
    pub async fn on(nats: NatsServer) -> Self {
        let url = nats.url();
        let endpoint = fleet::connect::Endpoint {
            url: &url,
            name: "test-reader",
            credentials: None,
            tls_ca: None,
            inbox_prefix: None,
        };
        let js = jetstream::new(fleet::connect::connect(&endpoint).await.expect("connect"));
        // A small stream: JetStream reserves `max_bytes` of the disk up front, and a test needs
        // little of it.
        let limits = Streams { max_bytes: 256 << 20, ..Streams::default() };
        hub::streams::ensure(&js, &limits, Duration::from_secs(3600)).await.expect("streams");
        Self { nats, js }
    }

    /// Every message of the report stream on `subject`, in stream order: its id header and
    /// the report.
    pub async fn reports(&self, subject: &str) -> Vec<(String, Report)> {
        let stream = self.js.get_stream(fleet::subjects::REPORT_STREAM).await.expect("report stream");
        let last = stream.get_info().await.expect("stream info").state.last_sequence;
        let mut out = Vec::new();
        for sequence in 1..=last {
            let Ok(message) = stream.get_raw_message(sequence).await else { continue };
            if message.subject.as_str() != subject {
                continue;
            }
            let id = message.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default();
            let report: Report = serde_json::from_slice(&message.payload).expect("a report");
            report.check_origin(subject).expect("origin matches the subject");
            out.push((id, report));
        }
        out
    }
}

/// One gateway's reporting side: the outbox with the fleet publisher, the inventory feed and
/// health reports, on `store`.
pub struct Gateway {
    pub bus: EventBus,
    pub store: PathBuf,
    trigger: shutdown::Trigger,
    integrations: Integrations,
    fleet: fleet::Running,
}

impl Gateway {
    pub async fn start(url: &str, store: &Path) -> Self {
        Self::start_with(&config(url), store).await
    }

    /// A gateway with `config` as its `[fleet]` section.
    pub async fn start_with(config: &fleet::Config, store: &Path) -> Self {
        // As the controller does before anything else: the store with every table.
        iotgw::schema::open(store).expect("store");
        let (trigger, shutdown) = shutdown::channel();
        let bus = EventBus::default();
        let client = fleet::connect::connect_gateway(config).await.expect("fleet connect");
        let link = fleet::Fleet::new(config, client);
        let integrations = integrations::spawn_with(
            integrations::Config { aggregation: integrations::config::AggregationConfig::off(), ..Default::default() },
            store,
            bus.clone(),
            shutdown.clone(),
            vec![link.publisher()],
        )
        .expect("outbox");
        let outbox = integrations.consumer(fleet::publisher::CONSUMER).expect("the publisher's cursor");
        let health = fleet::health::Sources {
            bundle: fleet::SharedBundleStatus::default(),
            xdp_mode: None,
            map_fill: Box::new(Vec::new),
        };
        let fleet = link.spawn(fleet::Parts { store: store.to_owned(), outbox, health }, shutdown);
        Self { bus, store: store.to_owned(), trigger, integrations, fleet }
    }

    pub async fn counters(&self) -> iotgw::api::metrics::FleetCounters {
        self.fleet.link().counters().await
    }

    /// Stops cleanly, as at SIGTERM.
    pub async fn stop(self) {
        self.trigger.trigger();
        // Bounded: a task that ignored the shutdown fails the test instead of hanging it.
        let stopping = async {
            self.integrations.join().await;
            self.fleet.join().await;
        };
        iotgw_test_support::wait::within("the gateway's tasks to stop at shutdown", Duration::from_secs(30), stopping)
            .await;
    }
}

/// The `[fleet]` section of the test's gateway, reaching the broker at `url`.
pub fn config(url: &str) -> fleet::Config {
    fleet::Config {
        nats_url: Some(url.to_owned()),
        site: SITE.into(),
        gateway: GATEWAY.into(),
        health_secs: 1,
        ..Default::default()
    }
}

/// A store file in a fresh folder, removed with it when dropped.
pub struct Store {
    path: PathBuf,
    _folder: Scratch,
}

impl std::ops::Deref for Store {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

pub fn store(what: &str) -> Store {
    let folder = scratch(what);
    Store { path: folder.join("store.db"), _folder: folder }
}

/// An audit event numbered `n` (its detail), so order and identity can be checked.
pub fn numbered(n: usize) -> GatewayEvent {
    GatewayEvent::new(
        Severity::Info,
        None,
        "test",
        EventKind::Audit { action: "numbered".into(), detail: n.to_string() },
    )
}

pub fn number_of(report: &Report) -> usize {
    match &report.body {
        fleet::wire::ReportBody::Event { event, .. } => match &event.kind {
            EventKind::Audit { detail, .. } => detail.parse().expect("a numbered event"),
            other => panic!("not a numbered event: {other:?}"),
        },
        other => panic!("not an event report: {other:?}"),
    }
}

/// Polls `probe` until it returns `Some`, or panics after `limit` (a probe that hangs
/// included).
pub async fn wait_for<T>(what: &str, limit: Duration, probe: impl AsyncFnMut() -> Option<T>) -> T {
    iotgw_test_support::wait::until_async(what, limit, probe).await
}
