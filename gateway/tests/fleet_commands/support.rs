//! Shared fixtures of the fleet command tests: a hub (nats-server, PostgreSQL, streams, a
//! stand-in for its results ingest) and one gateway's store with a camera enrolled.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _, MemoryDatapath},
    device::{Access, Mac},
    event::EventBus,
    fleet::{
        self,
        connect::{self, Endpoint},
        subjects,
        wire::{CommandAction, Report, ReportBody},
    },
    hub::{
        self, Hub,
        commands::{self as hub_commands, Request},
        config::Streams,
    },
    inventory::Ledger,
    shutdown,
};
use iotgw_test_support::services::{NatsServer, Postgres, Scratch, scratch};

pub const SITE: &str = "berlin";
pub const GATEWAY: &str = "gw-1";
pub const CAMERA: &str = "98:90:96:9a:86:df";
pub const ABSENT: &str = "02:00:00:00:00:99";
pub const ANSWER: Duration = Duration::from_secs(15);
/// Stream limits JetStream accepts on a test machine's disk (it refuses a stream larger than
/// its share of the free space).
pub const TEST_STREAMS: Streams = Streams { max_age_days: 1, max_bytes: 64 << 20, duplicate_window_secs: 7200 };

/// One hub, one gateway store with a camera enrolled, and the servers they run on.
pub struct Fleet {
    pub nats: NatsServer,
    _postgres: Postgres,
    pub hub: Hub,
    pub client: async_nats::Client,
    pub store: std::path::PathBuf,
    pub control: Arc<MemoryDatapath>,
    _folder: Scratch,
}

impl Fleet {
    pub async fn start(command_ttl_secs: u64) -> Fleet {
        let nats = NatsServer::start();
        let postgres = Postgres::start();
        let url = nats.url();
        let client = connect::connect(&Endpoint {
            url: &url,
            name: "test",
            credentials: None,
            tls_ca: None,
            inbox_prefix: None,
        })
        .await
        .expect("connect");
        let js = jetstream::new(client.clone());
        // The stream keeps commands an hour, whatever their own expiry.
        hub::streams::ensure(&js, &TEST_STREAMS, Duration::from_secs(3600)).await.expect("streams");
        let config: hub::Config = toml::from_str(&format!(
            "nats_url = '{url}'\ndatabase_url = '{}'\ncommand_ttl_secs = {command_ttl_secs}",
            postgres.url()
        ))
        .unwrap();
        let pool = hub::store::open(&postgres.url()).await.expect("hub store");
        let hub = Hub { config: Arc::new(config), pool, jetstream: js };
        tokio::spawn(ingest_results(hub.clone()));

        let folder = scratch("fleet-commands");
        let store = folder.join("iotgw.db");
        let control = enrolled_camera(&store);
        // The gateway's view first: a fleet device is always one some gateway has.
        sqlx::query(
            "INSERT INTO gateway_devices (site, gateway, mac, changed_ms, last_seen, access, record) \
             VALUES ($1, $2, $3, 0, now(), 'enrolled', '{}')",
        )
        .bind(SITE)
        .bind(GATEWAY)
        .bind(CAMERA)
        .execute(&hub.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO fleet_devices (mac, first_seen, last_seen, site, gateway, access) \
             VALUES ($1, now(), now(), $2, $3, 'enrolled')",
        )
        .bind(CAMERA)
        .bind(SITE)
        .bind(GATEWAY)
        .execute(&hub.pool)
        .await
        .unwrap();
        Fleet { nats, _postgres: postgres, hub, client, store, control, _folder: folder }
    }

    /// Starts the gateway's command consumer; trigger the returned switch to stop it.
    pub fn gateway(&self) -> (shutdown::Trigger, tokio::task::JoinHandle<()>) {
        let config = fleet::Config {
            nats_url: Some("unused: the client is given".into()),
            site: SITE.into(),
            gateway: GATEWAY.into(),
            ..Default::default()
        };
        let (trigger, shutdown) = shutdown::channel();
        let task = fleet::commands::spawn(
            &config,
            self.client.clone(),
            &self.store,
            self.control.clone(),
            EventBus::default(),
            shutdown,
        )
        .expect("spawn");
        (trigger, task)
    }

    pub async fn issue(&self, action: CommandAction, device: &str, target: Option<(&str, &str)>) -> uuid::Uuid {
        let request = Request {
            mac: mac(device),
            action,
            actor: "hub:alice".into(),
            reason: "scan seen at site B".into(),
            target: target.map(|(s, g)| (s.to_owned(), g.to_owned())),
        };
        hub_commands::issue(&self.hub, &request).await.expect("issue")
    }

    pub async fn outcome(&self, id: uuid::Uuid) -> (String, String) {
        let record = hub_commands::wait(&self.hub, id, ANSWER).await.unwrap().expect("the command is recorded");
        (record.outcome.expect("the gateway answered in time"), record.detail.unwrap_or_default())
    }

    pub fn access(&self) -> Access {
        self.control.access(mac(CAMERA)).unwrap().expect("camera in the datapath").access
    }

    /// The gateway's audit of the camera's access changes: (actor, detail), oldest first.
    pub fn gateway_audit(&self) -> Vec<(String, String)> {
        let mut entries: Vec<_> = Ledger::open(&self.store)
            .unwrap()
            .audit_log(Some(mac(CAMERA)), 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "access_changed")
            .map(|e| (e.actor, e.detail))
            .collect();
        entries.reverse();
        entries
    }
}

/// A gateway store at `store` with the camera enrolled, and a datapath enforcing that.
pub fn enrolled_camera(store: &std::path::Path) -> Arc<MemoryDatapath> {
    let enrolled = DeviceAccess { access: Access::Enrolled, policy_id: 1000, class_id: 3 };
    Ledger::open(store).unwrap().record_access(mac(CAMERA), enrolled, "test", "enrolled").unwrap();
    let control = Arc::new(MemoryDatapath::default());
    control.set_access(mac(CAMERA), enrolled).unwrap();
    control
}

pub fn mac(text: &str) -> Mac {
    text.parse().unwrap()
}

/// Stands in for the hub's ingest: records every command result report.
async fn ingest_results(hub: Hub) {
    let config = pull::Config {
        durable_name: Some("test_results".into()),
        filter_subject: subjects::report("*", "*", subjects::ReportKind::CommandResult),
        ..Default::default()
    };
    let consumer = hub.jetstream.create_consumer_on_stream(config, subjects::REPORT_STREAM).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while let Some(Ok(message)) = messages.next().await {
        let report: Report = serde_json::from_slice(&message.payload).unwrap();
        report.check_origin(&message.subject).unwrap();
        let ReportBody::CommandResult { result } = &report.body else { panic!("not a result: {report:?}") };
        hub_commands::record_result(&hub.pool, &report.site, &report.gateway, result).await.unwrap();
        message.ack().await.unwrap();
    }
}
