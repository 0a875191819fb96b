//! The fleet's foundations against the real servers: the hub's streams are created on Debian's
//! nats-server (2.9) and survive being ensured twice; a gateway's report published with its
//! message id is stored once however often it is retried; the hub's schema migrates on
//! PostgreSQL and migrating again changes nothing.
use std::time::Duration;

use iotgw::{
    fleet::{
        connect::{self, Endpoint},
        wire::{Health, Report, ReportBody},
    },
    hub::{self, config::Streams},
};
use iotgw_test_support::services::{NatsServer, Postgres};

#[tokio::test]
async fn streams_are_created_once_and_retries_are_deduplicated() {
    let nats = NatsServer::start();
    let url = nats.url();
    let client =
        connect::connect(&Endpoint { url: &url, name: "test", credentials: None, tls_ca: None, inbox_prefix: None })
            .await
            .expect("connect");
    let js = async_nats::jetstream::new(client);
    let ttl = Duration::from_secs(3600);
    hub::streams::ensure(&js, &Streams::default(), ttl).await.expect("create streams");
    hub::streams::ensure(&js, &Streams::default(), ttl).await.expect("ensure again");

    let report = Report::new("s1", "gw-1", 1_000, ReportBody::Health { health: Health::default() });
    let payload = serde_json::to_vec(&report).unwrap();
    for _ in 0..3 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", report.msg_id().as_str());
        let ack = js
            .publish_with_headers(report.subject(), headers, payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        assert_eq!(ack.sequence, 1, "a retry is acknowledged as the first copy");
    }
    let mut stream = js.get_stream(iotgw::fleet::subjects::REPORT_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn the_hub_schema_migrates_on_postgres_and_again_without_change() {
    let postgres = Postgres::start();
    let pool = hub::store::open(&postgres.url()).await.expect("migrate");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    for table in ["alerts", "commands", "device_locations", "events", "fleet_devices", "gateway_devices", "gateways"] {
        assert!(tables.iter().any(|t| t == table), "{table} missing from {tables:?}");
    }
    pool.close().await;
    hub::store::open(&postgres.url()).await.expect("migrating again is a no-op");
}
