//! The fleet at scale: a simulated fleet of GATEWAYS gateways (default 1,000, 10 per site)
//! with DEVICES devices each (default 100; `--full`: 1,000, the million) reports
//! through a real nats-server (JetStream, file storage) to the real hub, `iotgw hub` run as its
//! own process (`hub_process.rs`), into a real PostgreSQL, both private instances on loopback
//! (`iotgw_test_support::services`). Printed:
//!
//! - `publish`: reports per second into the `IOTGW` stream with publish acknowledgements and
//!   message ids, PUBLISHERS gateways' worth at a time (as gateways publish: each in order);
//! - `ingest`: reports per second from the stream into PostgreSQL by the hub's durable
//!   consumer (batches, one transaction per batch, ack after commit), measured until the
//!   consumer has every report acknowledged (then every row is there: counted once);
//! - `redeliver`: the same reports published again under new message ids (as after a
//!   gateway's outbox is replayed beyond the duplicate window): rows unchanged;
//! - `mix`: the steady mix (`sim::Shape::steady_reports`: one known device seen again per
//!   three events) published as a backlog while the hub runs, until it is all stored;
//! - sizes: stream bytes and PostgreSQL bytes per device and per event, extrapolated to a
//!   million devices;
//! - `lag`: events offered at a steady rate (`--lag-rate`, default 10,000/s) for `--lag-secs`
//!   (default 20), from each one's `sent_ms` until PostgreSQL shows it (`lag.rs`), halving the
//!   rate until the p99 is within the goal;
//! - `*-cpu`: CPU seconds the hub process, its PostgreSQL backends, the whole cluster and
//!   nats-server spent in each of those phases, per 100,000 reports or events (`cpu.rs`);
//! - `hub-rss`: the hub process's resident memory through those phases, and its peak;
//! - `bundle-*`: one signed policy bundle to every gateway's bucket watch (`bundle.rs`);
//! - `api-*`: the fleet API's reads (the hub's router over HTTP on loopback) on a store seeded
//!   by SQL to API_DEVICES fleet devices (default 1,000,000) and as many alerts and events
//!   (`api.rs`), p50 and p99 over ROUNDS requests.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p gateway --bench fleet [-- [--full] [--lag-rate=N]
//! [--lag-secs=S] [--ingest-batch=N] [--ingest-writers=N] [--skip=redeliver,mix,lag,bundle,api] [GATEWAYS
//! [DEVICES [EVENTS [API_DEVICES [ROUNDS]]]]]]`, or `cargo xtask bench fleet`;
//! `FLEET_BENCH_ONLY=api` runs the API phase alone (it seeds its own store), `=bundle` the
//! bundle phase alone (GATEWAYS watching).
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::{StreamExt as _, stream::FuturesUnordered};
use hub_process::HubProcess;
use iotgw::{
    fleet::{subjects, wire::Report},
    hub::{self, Hub, ingest},
};
use iotgw_test_support::services::{NatsServer, Postgres, free_port, scratch};
use sha2::{Digest as _, Sha256};

mod api;
mod bundle;
mod cpu;
mod hub_process;
mod lag;
mod sim;

const DEFAULT_GATEWAYS: usize = 1_000;
const DEFAULT_DEVICES: usize = 100;
const DEFAULT_EVENTS: usize = 100;
/// `--full`: the fleet, 1,000 gateways × 1,000 devices.
const FULL_DEVICES: usize = 1_000;
/// Phases `--skip=` may leave out.
const SKIPPABLE: [&str; 5] = ["redeliver", "mix", "lag", "bundle", "api"];
const GATEWAYS_PER_SITE: usize = 10;
/// Gateways publishing at once, and acknowledgements each waits for at most.
const PUBLISHERS: usize = 32;
const IN_FLIGHT: usize = 64;
const INGEST_TIMEOUT: Duration = Duration::from_secs(3_600);
const POLL: Duration = Duration::from_millis(250);
const DEFAULT_API_DEVICES: usize = 1_000_000;
const DEFAULT_ROUNDS: usize = 100;
const DEFAULT_LAG_RATE: usize = 10_000;
const DEFAULT_LAG_SECS: u64 = 20;
/// Stream bytes budgeted per report when sizing the stream (594 to 723 measured, plus headroom).
const STREAM_BYTES_PER_REPORT: i64 = 1_024;
/// The viewer token the API phase and the metrics scrape call with.
pub const TOKEN: &str = "fleet-bench-token";

fn arg(n: usize, default: usize) -> usize {
    std::env::args().skip(1).filter(|a| !a.starts_with('-')).nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// `--name` given, or the value of `--name=VALUE`.
fn flag(name: &str) -> Option<String> {
    std::env::args().skip(1).find_map(|a| {
        let rest = a.strip_prefix("--")?.strip_prefix(name)?;
        if rest.is_empty() { Some(String::new()) } else { rest.strip_prefix('=').map(str::to_owned) }
    })
}

/// The phases `--skip=a,b` names, each one of SKIPPABLE (any other name is refused).
fn skip_list() -> Vec<String> {
    let list = flag("skip").unwrap_or_default();
    let names: Vec<String> = list.split(',').filter(|name| !name.is_empty()).map(str::to_owned).collect();
    if let Some(unknown) = names.iter().find(|name| !SKIPPABLE.contains(&name.as_str())) {
        panic!("--skip={list}: {unknown:?} is not one of {SKIPPABLE:?}");
    }
    names
}

fn flag_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    flag(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("--{name}={v}: not a number")))
}

#[tokio::main]
async fn main() {
    let full = flag("full").is_some();
    let skip = skip_list();
    let skipped = |phase: &str| skip.iter().any(|name| name == phase);
    let shape = sim::Shape {
        gateways: arg(0, DEFAULT_GATEWAYS),
        gateways_per_site: GATEWAYS_PER_SITE,
        devices: arg(1, if full { FULL_DEVICES } else { DEFAULT_DEVICES }),
        events: arg(2, DEFAULT_EVENTS),
    };
    let (lag_rate, lag_secs) = (flag_number("lag-rate", DEFAULT_LAG_RATE), flag_number("lag-secs", DEFAULT_LAG_SECS));
    let reports = shape.gateways * (shape.devices + shape.events + 1);
    println!(
        "fleet: {} gateways at {} sites, {} devices and {} events each ({reports} reports, {} devices)",
        shape.gateways,
        shape.gateways.div_ceil(GATEWAYS_PER_SITE),
        shape.devices,
        shape.events,
        shape.gateways * shape.devices
    );
    let nats = NatsServer::start();
    let postgres = Postgres::start();
    // The reports twice (redeliver), the steady mix and the lag phase's events (its halving
    // steps sum to under twice the first), all kept: the stream's retention is by limits.
    let mix_reports = shape.gateways * (shape.events + shape.events / sim::STEADY_EVENTS_PER_SNAPSHOT);
    let stream_limit =
        (2 * reports as i64 + mix_reports as i64 + 2 * (lag_rate as i64) * lag_secs as i64) * STREAM_BYTES_PER_REPORT;
    check_disk(&nats.store, stream_limit);
    let client = async_nats::connect(nats.url()).await.expect("connect to nats");
    let js = jetstream::new(client);
    let dir = scratch("fleet-bench");
    let hub = hub_for(&dir, &nats, &postgres.url(), stream_limit, js.clone()).await;
    let only = std::env::var("FLEET_BENCH_ONLY").unwrap_or_default();
    if only == "api" {
        api::run(hub, arg(3, DEFAULT_API_DEVICES), arg(4, DEFAULT_ROUNDS)).await;
        return;
    }
    hub::streams::ensure(&js, &hub.config.streams, Duration::from_secs(3_600)).await.expect("streams");
    if only == "bundle" {
        bundle::run(&hub, &nats.url(), shape).await;
        return;
    }

    let started = Instant::now();
    let published = publish(&js, shape.gateways, |gateway| shape.reports(gateway), "").await;
    let elapsed = started.elapsed();
    println!(
        "publish: {published} reports in {:.1} s = {:.0} reports/s",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64()
    );
    let stream_bytes = stream_bytes(&js).await;

    let api_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let process_config = dir.join("hub-process.toml");
    // The hub's connections named, so that their CPU time is told apart from the bench's.
    let hub_database = format!("{}?application_name={}", postgres.url(), cpu::HUB_APPLICATION);
    write_config(&process_config, &nats, &hub_database, stream_limit, &api_addr.to_string());
    let started = Instant::now();
    let mut hub_process = HubProcess::start(&process_config, api_addr, dir.join("hub.log")).await;
    let meter = cpu::Meter::new(hub_process.pid(), &postgres.dir.join("data"));
    let cpu_at_start = meter.read(&hub.pool).await;
    let rss_at_start = hub_process.rss_kib();
    let rows = ingest_phase(&hub, &mut hub_process, shape, published, started).await;
    meter.read(&hub.pool).await.since(cpu_at_start).print("ingest", published, "reports");
    if !skipped("redeliver") {
        let before = meter.read(&hub.pool).await;
        redeliver_phase(&hub, &mut hub_process, shape, rows).await;
        meter.read(&hub.pool).await.since(before).print("redeliver", published, "reports");
    }
    sizes(&hub.pool, shape, stream_bytes).await;
    let mut first_event = shape.events;
    if !skipped("mix") {
        let before = meter.read(&hub.pool).await;
        mix_phase(&hub, &mut hub_process, shape).await;
        meter.read(&hub.pool).await.since(before).print("mix", shape.gateways * shape.events, "events");
        first_event += shape.events;
    }
    if !skipped("lag") {
        lag::run(&hub, &mut hub_process, &meter, shape, first_event, lag_rate, lag_secs).await;
    }
    hub_process.report(rss_at_start);
    hub_process.stop();

    if !skipped("bundle") {
        bundle::run(&hub, &nats.url(), shape).await;
    }
    if !skipped("api") {
        api::run(hub, arg(3, DEFAULT_API_DEVICES), arg(4, DEFAULT_ROUNDS)).await;
    }
}

/// Panics unless the disk of `store` has room for the stream's limit, which JetStream reserves
/// when it creates the stream.
fn check_disk(store: &Path, stream_limit: i64) {
    let disk = nix::sys::statvfs::statvfs(store).expect("statvfs of the nats store");
    let free = disk.blocks_available() as u128 * disk.fragment_size() as u128;
    println!(
        "stream limit {:.1} GiB (max_bytes), {:.1} GiB free on its disk",
        gib(stream_limit as f64),
        gib(free as f64)
    );
    assert!(free > stream_limit as u128 * 2, "not enough disk for a {stream_limit}-byte stream and its redelivery");
}

fn gib(bytes: f64) -> f64 {
    bytes / f64::from(1u32 << 30)
}

/// Writes the hub's configuration file: both servers, the stream limit, the API on `listen`
/// with the bench's viewer token, and `--ingest-batch=N`, `--ingest-writers=N` as `[ingest] batch`,
/// `writers` when given.
fn write_config(path: &Path, nats: &NatsServer, database_url: &str, stream_limit: i64, listen: &str) {
    let mut text = format!(
        "nats_url = {:?}\ndatabase_url = {:?}\n[streams]\nmax_bytes = {stream_limit}\n[api]\nlisten = {listen:?}\n\
         tokens = [{{ name = \"bench\", role = \"viewer\", token_sha256 = \"{}\" }}]\n",
        nats.url(),
        database_url,
        hex::encode(Sha256::digest(TOKEN.as_bytes()))
    );
    let mut ingest = String::new();
    if let Some(batch) = flag("ingest-batch") {
        ingest.push_str(&format!("batch = {}\n", batch.parse::<usize>().expect("--ingest-batch=N")));
    }
    if let Some(writers) = flag("ingest-writers") {
        ingest.push_str(&format!("writers = {}\n", writers.parse::<usize>().expect("--ingest-writers=N")));
    }
    if !ingest.is_empty() {
        text.push_str(&format!("[ingest]\n{ingest}"));
    }
    std::fs::write(path, text).expect("write the hub's config");
}

/// The hub's state as `hub::service` builds it, for the bench's own use (the API phase serves
/// on any free port).
async fn hub_for(
    dir: &Path,
    nats: &NatsServer,
    database_url: &str,
    stream_limit: i64,
    jetstream: jetstream::Context,
) -> Hub {
    let path = dir.join("hub.toml");
    write_config(&path, nats, database_url, stream_limit, "127.0.0.1:0");
    let config = hub::Config::load(&path).expect("hub.toml loads");
    let pool = hub::store::open(&config.database_url).await.expect("migrated store");
    Hub { config: Arc::new(config), pool, jetstream }
}

/// Messages and bytes in the report stream, printed; the bytes per report.
async fn stream_bytes(js: &jetstream::Context) -> f64 {
    let info = js.get_stream(subjects::REPORT_STREAM).await.expect("stream").info().await.expect("info").clone();
    let per_report = info.state.bytes as f64 / info.state.messages.max(1) as f64;
    println!("stream: {} messages, {} bytes ({per_report:.0} bytes/report)", info.state.messages, info.state.bytes);
    per_report
}

/// Rows ingest writes: gateways, fleet devices, gateway devices, locations, events, alerts.
pub async fn counts(pool: &sqlx::PgPool) -> [i64; 6] {
    let mut counts = [0; 6];
    for (count, table) in counts.iter_mut().zip(TABLES) {
        // The table names are the literals of TABLES.
        let sql = format!("SELECT count(*) FROM {table}");
        *count = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.expect("count");
    }
    counts
}

const TABLES: [&str; 6] = ["gateways", "fleet_devices", "gateway_devices", "device_locations", "events", "alerts"];

/// Whether the hub's consumer has every message of the stream delivered and acknowledged
/// (ingest acknowledges after the commit).
async fn consumer_drained(js: &jetstream::Context) -> bool {
    let stream = js.get_stream(subjects::REPORT_STREAM).await.expect("stream");
    let mut consumer: PullConsumer = stream.get_consumer(ingest::CONSUMER).await.expect("the hub's consumer");
    let info = consumer.info().await.expect("consumer info");
    info.num_pending == 0 && info.num_ack_pending == 0
}

/// The hub's ingest from the start of the stream (the hub process started at `started`) until
/// its consumer has every report acknowledged, which it does after the commit: then every
/// gateway, fleet device and event is in PostgreSQL (the rows of TABLES, counted once then).
/// Counting the rows while ingest runs would read the tables whole every POLL: at a million
/// devices that is PostgreSQL's CPU taken from ingest by the bench.
async fn ingest_phase(
    hub: &Hub,
    process: &mut HubProcess,
    shape: sim::Shape,
    published: usize,
    started: Instant,
) -> [i64; 6] {
    let expected =
        (shape.gateways as i64, (shape.gateways * shape.devices) as i64, (shape.gateways * shape.events) as i64);
    let elapsed = drained(hub, process, "ingest", started).await;
    let rows = counts(&hub.pool).await;
    assert_eq!((rows[0], rows[1], rows[4]), expected, "ingest: rows (gateways, fleet devices, events) once drained");
    println!(
        "ingest: {published} reports in {elapsed:.1} s = {:.0} reports/s, {:.0} events/s (until every report is stored and acknowledged)",
        published as f64 / elapsed,
        expected.2 as f64 / elapsed
    );
    println!(
        "ingest: rows {}",
        TABLES.iter().zip(rows).map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ")
    );
    println!("ingest: hub metrics {}", process.metrics().await);
    rows
}

/// Waits until the hub's consumer is drained, sampling the hub's memory for `phase`; the
/// seconds since `started`.
async fn drained(hub: &Hub, process: &mut HubProcess, phase: &'static str, started: Instant) -> f64 {
    while !consumer_drained(&hub.jetstream).await {
        process.sample(phase);
        assert!(started.elapsed() < INGEST_TIMEOUT, "{phase}: the hub's consumer not drained");
        tokio::time::sleep(POLL).await;
    }
    started.elapsed().as_secs_f64()
}

/// The same reports again under new message ids, until ingest has stored each again: `rows`
/// must be unchanged.
async fn redeliver_phase(hub: &Hub, process: &mut HubProcess, shape: sim::Shape, rows: [i64; 6]) {
    let started = Instant::now();
    let again = publish(&hub.jetstream, shape.gateways, |gateway| shape.reports(gateway), ".again").await;
    let republished = started.elapsed().as_secs_f64();
    let elapsed = drained(hub, process, "redeliver", started).await;
    let after = counts(&hub.pool).await;
    println!(
        "redeliver: {again} reports again under new ids: published in {republished:.1} s, all stored again after \
         {elapsed:.1} s ({:.0} reports/s); rows {}",
        again as f64 / elapsed,
        if after == rows { "unchanged" } else { "CHANGED" }
    );
    println!("redeliver: rows {after:?}, hub metrics {}", process.metrics().await);
    assert_eq!(after, rows, "a redelivery changed rows");
}

/// The steady mix (`sim::Shape::steady_reports`) published while the hub runs, until its
/// consumer has every report stored and acknowledged: events/s and reports/s from the first
/// publish (the backlog builds faster than ingest drains it, so this is ingest's rate).
async fn mix_phase(hub: &Hub, process: &mut HubProcess, shape: sim::Shape) {
    let events_before = counts(&hub.pool).await[4];
    let started = Instant::now();
    let published = publish(&hub.jetstream, shape.gateways, |gateway| shape.steady_reports(gateway), "").await;
    let publishing = started.elapsed().as_secs_f64();
    let elapsed = drained(hub, process, "mix", started).await;
    let events = (shape.gateways * shape.events) as i64;
    let stored = counts(&hub.pool).await[4] - events_before;
    println!(
        "mix: {events} events and {} snapshots of known devices (1 per {} events): published in {publishing:.1} s, \
         all stored after {elapsed:.1} s = {:.0} events/s, {:.0} reports/s",
        published as i64 - events,
        sim::STEADY_EVENTS_PER_SNAPSHOT,
        events as f64 / elapsed,
        published as f64 / elapsed
    );
    assert_eq!(stored, events, "mix: events stored differ from those sent");
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
    proc_status_kib("self", "VmRSS").unwrap_or(0)
}

/// A memory figure (`VmRSS`, `VmHWM`) of process `pid` (or `self`) in KiB, from
/// `/proc/<pid>/status`; `None` when the process is gone.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// p50, p99 and the largest of a set of times.
pub struct Spread {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(mut times: Vec<Duration>) -> Spread {
        assert!(!times.is_empty(), "no times to summarise");
        times.sort_unstable();
        let n = times.len();
        Spread { p50: times[n / 2], p99: times[(n * 99 / 100).min(n - 1)], max: times[n - 1] }
    }
}

/// Publishes `report` as a gateway does (its subject, its `Nats-Msg-Id`, `id_suffix` making a
/// replay's ids new); the acknowledgement to wait for.
pub async fn publish_report(
    js: &jetstream::Context,
    report: &Report,
    id_suffix: &str,
) -> jetstream::context::PublishAckFuture {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{}{id_suffix}", report.msg_id()).as_str());
    let payload = serde_json::to_vec(report).expect("report JSON");
    js.publish_with_headers(report.subject(), headers, payload.into()).await.expect("publish")
}

/// Publishes the reports of `gateways` gateways (`reports_of` each), PUBLISHERS gateways at a
/// time, each in order with at most IN_FLIGHT unacknowledged; `id_suffix` makes the message ids
/// new (a replay).
async fn publish(
    js: &jetstream::Context,
    gateways_count: usize,
    reports_of: impl Fn(usize) -> Vec<Report>,
    id_suffix: &str,
) -> usize {
    let mut gateways = FuturesUnordered::new();
    let mut next = 0;
    let mut total = 0;
    loop {
        while gateways.len() < PUBLISHERS && next < gateways_count {
            gateways.push(publish_gateway(js.clone(), reports_of(next), id_suffix.to_owned()));
            next += 1;
        }
        match gateways.next().await {
            Some(count) => total += count,
            None => return total,
        }
    }
}

async fn publish_gateway(js: jetstream::Context, reports: Vec<Report>, id_suffix: String) -> usize {
    let mut acks = FuturesUnordered::new();
    let count = reports.len();
    for report in reports {
        let ack = publish_report(&js, &report, &id_suffix).await;
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
