//! The fleet at scale: a simulated fleet of GATEWAYS gateways (default 1,000, 10 per site)
//! with DEVICES devices each (default 100) reports through a real nats-server (JetStream, file
//! storage) to the real hub ingest, into a real PostgreSQL, both private instances on loopback
//! (`iotgw_test_support::services`). Printed:
//!
//! - `publish`: reports per second into the `IOTGW` stream with publish acknowledgements and
//!   message ids, PUBLISHERS gateways' worth at a time (as gateways publish: each in order);
//! - `ingest`: reports per second from the stream into PostgreSQL by the hub's durable
//!   consumer (batches, one transaction per batch, ack after commit), measured until every
//!   fleet device, event and gateway row is there;
//! - `redeliver`: the same reports published again under new message ids (as after a
//!   gateway's outbox is replayed beyond the duplicate window): rows unchanged;
//! - sizes: stream bytes and PostgreSQL bytes per device and per event, extrapolated to a
//!   million devices;
//! - `api-*`: the fleet API's reads (the hub's router over HTTP on loopback) on a store seeded
//!   by SQL to API_DEVICES fleet devices (default 1,000,000) and as many alerts and events
//!   (`api.rs`), p50 and p99 over ROUNDS requests.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p gateway --bench fleet [-- GATEWAYS [DEVICES [EVENTS
//! [API_DEVICES [ROUNDS]]]]]`, or `cargo xtask bench fleet`; `FLEET_BENCH_ONLY=api` runs the
//! API phase alone (it seeds its own store).
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt as _, stream::FuturesUnordered};
use iotgw::{
    fleet::{subjects, wire::Report},
    hub::{self, Hub, ingest},
};
use iotgw_test_support::services::{NatsServer, Postgres, scratch};
use sha2::{Digest as _, Sha256};

mod api;
mod sim;

const DEFAULT_GATEWAYS: usize = 1_000;
const DEFAULT_DEVICES: usize = 100;
const DEFAULT_EVENTS: usize = 100;
const GATEWAYS_PER_SITE: usize = 10;
/// Gateways publishing at once, and acknowledgements each waits for at most.
const PUBLISHERS: usize = 32;
const IN_FLIGHT: usize = 64;
const INGEST_TIMEOUT: Duration = Duration::from_secs(1_800);
const POLL: Duration = Duration::from_millis(250);
const DEFAULT_API_DEVICES: usize = 1_000_000;
const DEFAULT_ROUNDS: usize = 100;
/// The viewer token the API phase calls with.
pub const TOKEN: &str = "fleet-bench-token";

fn arg(n: usize, default: usize) -> usize {
    std::env::args().skip(1).filter(|a| !a.starts_with('-')).nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let shape = sim::Shape {
        gateways: arg(0, DEFAULT_GATEWAYS),
        gateways_per_site: GATEWAYS_PER_SITE,
        devices: arg(1, DEFAULT_DEVICES),
        events: arg(2, DEFAULT_EVENTS),
    };
    println!(
        "fleet: {} gateways at {} sites, {} devices and {} events each ({} reports)",
        shape.gateways,
        shape.gateways.div_ceil(GATEWAYS_PER_SITE),
        shape.devices,
        shape.events,
        shape.gateways * (shape.devices + shape.events + 1)
    );
    let nats = NatsServer::start();
    let postgres = Postgres::start();
    let client = async_nats::connect(nats.url()).await.expect("connect to nats");
    let js = async_nats::jetstream::new(client);
    let hub = hub_for(&nats, &postgres, js.clone()).await;
    if std::env::var("FLEET_BENCH_ONLY").is_ok_and(|only| only == "api") {
        api::run(hub, arg(3, DEFAULT_API_DEVICES), arg(4, DEFAULT_ROUNDS)).await;
        return;
    }
    hub::streams::ensure(&js, &hub.config.streams, Duration::from_secs(3_600)).await.expect("streams");

    let started = Instant::now();
    let published = publish(&js, shape, "").await;
    let elapsed = started.elapsed();
    println!(
        "publish: {published} reports in {:.1} s = {:.0} reports/s",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64()
    );
    let stream_bytes = stream_bytes(&js).await;
    ingest_phase(&hub, shape, published).await;
    sizes(&hub.pool, shape, stream_bytes).await;
    api::run(hub, arg(3, DEFAULT_API_DEVICES), arg(4, DEFAULT_ROUNDS)).await;
}

/// The hub's state as `hub::service` builds it, from a configuration file naming both servers
/// and the API phase's viewer token.
async fn hub_for(nats: &NatsServer, postgres: &Postgres, jetstream: async_nats::jetstream::Context) -> Hub {
    let dir = scratch("fleet-bench");
    let path = dir.join("hub.toml");
    let text = format!(
        "nats_url = {:?}\ndatabase_url = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n\
         tokens = [{{ name = \"bench\", role = \"viewer\", token_sha256 = \"{}\" }}]\n",
        nats.url(),
        postgres.url(),
        hex::encode(Sha256::digest(TOKEN.as_bytes()))
    );
    std::fs::write(&path, text).expect("write hub.toml");
    let config = hub::Config::load(&path).expect("hub.toml loads");
    let _ = std::fs::remove_dir_all(&dir);
    let pool = hub::store::open(&config.database_url).await.expect("migrated store");
    Hub { config: Arc::new(config), pool, jetstream }
}

/// Messages and bytes in the report stream, printed; the bytes per report.
async fn stream_bytes(js: &async_nats::jetstream::Context) -> f64 {
    let info = js.get_stream(subjects::REPORT_STREAM).await.expect("stream").info().await.expect("info").clone();
    let per_report = info.state.bytes as f64 / info.state.messages.max(1) as f64;
    println!("stream: {} messages, {} bytes ({per_report:.0} bytes/report)", info.state.messages, info.state.bytes);
    per_report
}

/// Rows ingest writes: gateways, fleet devices, gateway devices, locations, events, alerts.
async fn counts(pool: &sqlx::PgPool) -> [i64; 6] {
    let mut counts = [0; 6];
    for (count, table) in counts.iter_mut().zip(TABLES) {
        // The table names are the literals of TABLES.
        let sql = format!("SELECT count(*) FROM {table}");
        *count = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.expect("count");
    }
    counts
}

const TABLES: [&str; 6] = ["gateways", "fleet_devices", "gateway_devices", "device_locations", "events", "alerts"];

/// The hub's ingest (its durable consumer and `ingest::run`) from the start of the stream until
/// every gateway, fleet device and event is in PostgreSQL; then the same reports again under
/// new message ids, until ingest has stored each again, with the rows unchanged.
async fn ingest_phase(hub: &Hub, shape: sim::Shape, published: usize) {
    let expected =
        (shape.gateways as i64, (shape.gateways * shape.devices) as i64, (shape.gateways * shape.events) as i64);
    let stats = Arc::new(ingest::IngestStats::default());
    let (trigger, shutdown) = iotgw::shutdown::channel();
    let started = Instant::now();
    let consumer = ingest::consumer(&hub.jetstream, &hub.config.ingest).await.expect("consumer");
    let task = tokio::spawn(ingest::run(hub.clone(), consumer, stats.clone(), shutdown));
    let rows = loop {
        let rows = counts(&hub.pool).await;
        if (rows[0], rows[1], rows[4]) == expected {
            break rows;
        }
        assert!(started.elapsed() < INGEST_TIMEOUT, "ingest: {rows:?} of {expected:?} after {INGEST_TIMEOUT:?}");
        tokio::time::sleep(POLL).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ingest: {published} reports in {elapsed:.1} s = {:.0} reports/s, {:.0} events/s (until every row is in PostgreSQL)",
        published as f64 / elapsed,
        expected.2 as f64 / elapsed
    );
    println!(
        "ingest: rows {}",
        TABLES.iter().zip(rows).map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ")
    );
    println!("ingest: stats {:?}", stats.snapshot());
    println!("ingest: bench process RSS (publisher, hub ingest and API in one) {} MiB", rss_kib() >> 10);

    let started = Instant::now();
    let again = publish(&hub.jetstream, shape, ".again").await;
    let republished = started.elapsed().as_secs_f64();
    while stats.snapshot().reports < (published + again) as u64 {
        assert!(started.elapsed() < INGEST_TIMEOUT, "redeliver: ingest stuck at {:?}", stats.snapshot());
        tokio::time::sleep(POLL).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = counts(&hub.pool).await;
    println!(
        "redeliver: {again} reports again under new ids: published in {republished:.1} s, all stored again after \
         {elapsed:.1} s ({:.0} reports/s); rows {}",
        again as f64 / elapsed,
        if after == rows { "unchanged" } else { "CHANGED" }
    );
    println!("redeliver: rows {after:?}, stats {:?}", stats.snapshot());
    assert_eq!(after, rows, "a redelivery changed rows");
    trigger.trigger();
    task.await.expect("ingest task");
}

/// PostgreSQL bytes per fleet device and per event, and what a million devices would take.
async fn sizes(pool: &sqlx::PgPool, shape: sim::Shape, stream_per_report: f64) {
    let size = |tables: &'static str| async move {
        let sql = format!("SELECT sum(pg_total_relation_size(t))::bigint FROM unnest('{{{tables}}}'::regclass[]) t");
        let bytes: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.expect("size");
        bytes as f64
    };
    let devices = (shape.gateways * shape.devices) as f64;
    let events = (shape.gateways * shape.events) as f64;
    let per_device = size("gateway_devices,fleet_devices,device_locations").await / devices;
    let per_event = size("events,alerts").await / events;
    println!(
        "sizes (measured): stream {stream_per_report:.0} bytes/report; PostgreSQL {per_device:.0} bytes per fleet device \
         (gateway_devices + fleet_devices + device_locations), {per_event:.0} bytes per event (events + alerts)"
    );
    let gib = |bytes: f64| bytes / f64::from(1u32 << 30);
    let events_per_device = events / devices;
    println!(
        "sizes (extrapolated, not measured): 1,000,000 devices = {:.2} GiB in PostgreSQL; with {events_per_device:.0} \
         events each ({:.0} M events) {:.1} GiB more; their reports {:.1} GiB in the stream",
        gib(per_device * 1e6),
        events_per_device,
        gib(per_event * events_per_device * 1e6),
        gib(stream_per_report * (1.0 + events_per_device) * 1e6)
    );
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Publishes every gateway's reports, PUBLISHERS gateways at a time, each in order with at most
/// IN_FLIGHT unacknowledged; `id_suffix` makes the message ids new (a replay).
async fn publish(js: &async_nats::jetstream::Context, shape: sim::Shape, id_suffix: &str) -> usize {
    let mut gateways = FuturesUnordered::new();
    let mut next = 0;
    let mut total = 0;
    loop {
        while gateways.len() < PUBLISHERS && next < shape.gateways {
            gateways.push(publish_gateway(js.clone(), shape.reports(next), id_suffix.to_owned()));
            next += 1;
        }
        match gateways.next().await {
            Some(count) => total += count,
            None => return total,
        }
    }
}

async fn publish_gateway(js: async_nats::jetstream::Context, reports: Vec<Report>, id_suffix: String) -> usize {
    let mut acks = FuturesUnordered::new();
    let count = reports.len();
    for report in reports {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}{id_suffix}", report.msg_id()).as_str());
        let payload = serde_json::to_vec(&report).expect("report JSON");
        let ack = js.publish_with_headers(report.subject(), headers, payload.into()).await.expect("publish");
        acks.push(ack.into_future());
        while acks.len() >= IN_FLIGHT {
            acks.next().await.expect("ack").expect("acknowledged");
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("acknowledged");
    }
    count
}
