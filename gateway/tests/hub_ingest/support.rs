//! What the hub ingest tests share: a private nats-server and PostgreSQL with the hub's streams
//! and schema, reports published the way gateways publish them (JetStream, `Nats-Msg-Id`), an
//! ingest task run in-process, and the stored rows read back.
#![allow(dead_code, reason = "each test file uses part of it")]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use iotgw::{
    device::{Access, Mac},
    event::{EventKind, GatewayEvent, Severity},
    fleet::{
        connect::{self, Endpoint},
        subjects,
        wire::{Report, ReportBody},
    },
    hub::{self, Hub, ingest},
    inventory::records::{DeviceRecord, TrafficTotals},
    shutdown,
};
use iotgw_test_support::services::{NatsServer, Postgres, Scratch, scratch};
use time::OffsetDateTime;

/// How long a test waits for ingest to get somewhere.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// A fixed moment the reports' times are counted from.
pub const T0_MS: i64 = 1_780_000_000_000;

pub struct Fleet {
    pub nats: NatsServer,
    pub postgres: Postgres,
    pub dir: Scratch,
    pub js: jetstream::Context,
    pub pool: sqlx::PgPool,
}

impl Fleet {
    /// Both servers, the streams and the migrated schema.
    pub async fn start() -> Fleet {
        let nats = NatsServer::start();
        let postgres = Postgres::start();
        let url = nats.url();
        let client = connect::connect(&Endpoint {
            url: &url,
            name: "test-gateways",
            credentials: None,
            tls_ca: None,
            inbox_prefix: None,
        })
        .await
        .expect("connect");
        let js = jetstream::new(client);
        hub::streams::ensure(&js, &test_streams(), Duration::from_secs(3600)).await.expect("streams");
        let pool = hub::store::open(&postgres.url()).await.expect("schema");
        Fleet { nats, postgres, dir: scratch("hub-ingest"), js, pool }
    }

    /// A hub configuration file for these servers, with `extra` appended (say an `[ingest]`
    /// section).
    pub fn config_file(&self, extra: &str) -> PathBuf {
        let path = self.dir.join("hub.toml");
        let text = format!(
            "nats_url = {:?}\ndatabase_url = {:?}\n[streams]\nmax_bytes = {}\n{extra}",
            self.nats.url(),
            self.postgres.url(),
            test_streams().max_bytes
        );
        std::fs::write(&path, text).expect("write hub.toml");
        path
    }

    /// The hub's shared state for `config`, as `hub::service` builds it.
    pub async fn hub(&self, config: &Path) -> Hub {
        let config = hub::Config::load(config).expect("hub.toml loads");
        let pool = hub::store::open(&config.database_url).await.expect("pool");
        Hub { config: Arc::new(config), pool, jetstream: self.js.clone() }
    }

    /// Starts ingest as the hub does; dropping the handle's `stop` ends it.
    pub async fn ingest(&self, extra_config: &str) -> Ingest {
        let hub = self.hub(&self.config_file(extra_config)).await;
        let consumer = ingest::consumer(&hub.jetstream, &hub.config.ingest).await.expect("consumer");
        let stats = Arc::new(ingest::IngestStats::default());
        let (trigger, shutdown) = shutdown::channel();
        let task = tokio::spawn(ingest::run(hub, consumer, stats.clone(), shutdown));
        Ingest { stats, trigger, task }
    }

    /// Publishes `report` on its subject with its message id, as a gateway does.
    pub async fn publish(&self, report: &Report) {
        self.publish_as(&report.subject(), &report.msg_id(), &serde_json::to_vec(report).unwrap()).await;
    }

    /// Publishes any payload on any subject with a message id, and waits for the stream's ack.
    pub async fn publish_as(&self, subject: &str, msg_id: &str, payload: &[u8]) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        self.js
            .publish_with_headers(subject.to_owned(), headers, payload.to_vec().into())
            .await
            .expect("publish")
            .await
            .expect("stream ack");
    }

    /// Messages the hub's consumer was given but has not acknowledged, and those not given yet.
    pub async fn consumer_backlog(&self) -> (usize, u64) {
        let stream = self.js.get_stream(subjects::REPORT_STREAM).await.expect("stream");
        let mut consumer: jetstream::consumer::PullConsumer =
            stream.get_consumer(ingest::CONSUMER).await.expect("consumer");
        let info = consumer.info().await.expect("consumer info");
        (info.num_ack_pending, info.num_pending)
    }

    /// Waits until the hub's consumer has every message acknowledged (or terminated).
    pub async fn wait_consumer_done(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let backlog = self.consumer_backlog().await;
            if backlog == (0, 0) {
                return;
            }
            assert!(Instant::now() < deadline, "(unacknowledged, not delivered) still {backlog:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `sql` counts `n`.
    pub async fn wait_count(&self, sql: &'static str, n: i64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let count = self.count(sql).await;
            if count == n {
                return;
            }
            assert!(Instant::now() < deadline, "{sql}: {count}, not {n}, after {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every row of every table ingest writes, as text: equal snapshots, equal stores.
    pub async fn snapshot(&self) -> Vec<String> {
        let mut tables = Vec::new();
        for table in [
            "gateways",
            "gateway_devices",
            "fleet_devices",
            "device_locations",
            "events",
            "alerts",
            "commands",
            "hub_audit",
        ] {
            let sql = format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]')::text FROM {table} t"
            );
            // The table names are the literals above.
            let rows: String =
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.pool).await.expect("snapshot");
            tables.push(format!("{table}: {rows}"));
        }
        tables
    }
}

/// The hub's stream limits, but at most 1 GiB: JetStream refuses a stream whose limit exceeds
/// the disk space it may use (75% of what is free), and test machines are not that roomy.
fn test_streams() -> hub::config::Streams {
    hub::config::Streams { max_bytes: 1 << 30, ..Default::default() }
}

/// An ingest task running in this process.
pub struct Ingest {
    pub stats: Arc<ingest::IngestStats>,
    pub trigger: shutdown::Trigger,
    pub task: tokio::task::JoinHandle<()>,
}

impl Ingest {
    /// Waits until `done` holds of the stats.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&ingest::IngestSnapshot) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stats = self.stats.snapshot();
            if done(&stats) {
                return;
            }
            assert!(Instant::now() < deadline, "ingest did not get to {what} within {PATIENCE:?}: {stats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` messages were stored or refused.
    pub async fn wait_handled(&self, n: u64) {
        self.wait_for(&format!("{n} messages"), |s| s.reports + s.refused >= n).await;
    }

    /// Asks it to stop and waits until it has.
    pub async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(PATIENCE, self.task).await.expect("ingest stops").expect("ingest did not panic");
    }
}

pub fn mac(last: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, last])
}

pub fn time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

/// An alert event of `incident`, from the scan detector.
pub fn alert(site: &str, gateway: &str, seq: i64, incident: &str, resolved: bool) -> Report {
    let mut event = GatewayEvent::new(
        if resolved { Severity::Low } else { Severity::High },
        Some(mac(1)),
        "detector:scan",
        EventKind::Alert {
            incident_id: incident.into(),
            detector: "scan".into(),
            score: 0.9,
            expected: "few hosts".into(),
            observed: "many hosts".into(),
            flows: vec![],
            resolved,
        },
    );
    event.time = time(T0_MS + seq * 1_000);
    Report::new(site, gateway, T0_MS + seq * 1_000, ReportBody::Event { seq, event })
}

/// Any other event: an action.
pub fn action(site: &str, gateway: &str, seq: i64) -> Report {
    let mut event = GatewayEvent::new(
        Severity::Medium,
        Some(mac(1)),
        "respond:quarantine attacks",
        EventKind::Action { action: "quarantine".into(), reason: "scan".into() },
    );
    event.time = time(T0_MS + seq * 1_000);
    Report::new(site, gateway, T0_MS + seq * 1_000, ReportBody::Event { seq, event })
}

/// A device snapshot as `gateway` saw it at `seen_ms`.
pub fn inventory(site: &str, gateway: &str, device: Mac, seen_ms: i64, cert_subject: Option<&str>) -> Report {
    let device = DeviceRecord {
        mac: device,
        first_seen: time(seen_ms - 60_000),
        last_seen: time(seen_ms),
        vendor: Some("Acme".into()),
        locally_administered: true,
        hostname: Some("cam-7".into()),
        device_type: Some("camera".into()),
        type_confidence: Some(0.9),
        type_vendor: None,
        type_vendor_confidence: None,
        generic_type: Some("ip-camera".into()),
        generic_confidence: Some(0.95),
        access: Access::Enrolled,
        lifecycle: Some("enrolled".into()),
        class: Some("cameras".into()),
        firmware_version: None,
        cert_subject: cert_subject.map(Into::into),
        device_id: None,
        ips: vec![],
        flows_total: 3,
        traffic: TrafficTotals::default(),
    };
    Report::new(site, gateway, seen_ms, ReportBody::Inventory { changed_ms: seen_ms, device })
}
