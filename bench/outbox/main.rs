//! Events per second through the integrations outbox (SQLite, WAL), on a temp-dir store:
//!
//! 1. `append`: events committed by the writer thread (producers queue, one thread batches
//!    them into transactions), measured until the last is durable, with `[store] synchronous`
//!    = full (the default) and = normal; `commit`: the same, one event per commit waited for
//!    one by one (an audited action's cost), in µs per commit;
//! 2. `publish`: the producer-side cost of `EventBus::publish` while integrations run (what
//!    the datapath pays), in ns per event;
//! 3. `end-to-end`: events published on the bus until a sink has them all and its cursor is
//!    past them: a JSON-lines file sink (ECS) and a syslog TCP sink to a loopback receiver
//!    that discards, each alone, then both together;
//! 4. `flood`: identical refused-enrollment audit events of one device published as fast as
//!    possible into integrations with their sink down, until the intake has aggregated them
//!    and the outbox committed the records: events/s and outbox rows kept, with the default
//!    aggregation and with it off; `aggregate` is the aggregator core alone;
//! 5. `cap`: one prune of an outbox filled to twice its cap (the default 1,000,000 in release),
//!    a quarter of the rows alerts and actions: time, that none of those was dropped, and
//!    bytes per row on disk.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p gateway --bench outbox [-- EVENTS]`.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iotgw::{
    event::{EventBus, EventKind, GatewayEvent, Severity},
    integrations::{
        self, aggregate,
        config::{AggregationConfig, Format, SinkConfig, SinkKind},
        outbox,
    },
    shutdown,
    store::{self, Synchronous},
};

const DEFAULT_EVENTS: usize = 50_000;
/// Single-event commits timed one by one.
const COMMITS: usize = 2_000;
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

fn event(n: usize) -> GatewayEvent {
    let mut event = GatewayEvent::new(
        Severity::High,
        Some(iotgw::device::Mac([2, 0, 0, 0, (n >> 8) as u8, n as u8])),
        "detector:volume",
        EventKind::Alert {
            incident_id: format!("inc-{}", n / 10),
            detector: "volume".into(),
            score: 0.8,
            expected: "< 2 MB/h to cloud.example".into(),
            observed: format!("{} MB/h", 20 + n % 7),
            flows: vec!["tcp 10.0.0.5:4000 -> 203.0.113.9:443".into()],
            resolved: false,
        },
    );
    event.device_ip = Some("10.0.0.5".parse().unwrap());
    event
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotgw-bench-outbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rate(events: usize, elapsed: Duration) -> String {
    format!("{:>10.0} events/s  ({events} in {:.3} s)", events as f64 / elapsed.as_secs_f64(), elapsed.as_secs_f64())
}

async fn bench_append(events: usize, level: Synchronous) {
    store::set_synchronous(level);
    let dir = fresh_dir("append");
    let writer = outbox::Writer::start(&dir.join("store.db"), vec!["s".into()], u64::MAX / 2).unwrap();
    let start = Instant::now();
    for n in 0..events - 1 {
        writer.append(event(n)).await.unwrap();
    }
    writer.append_durable(vec![event(events - 1)]).await.unwrap();
    println!("append-{:<6}{}", level.as_str().to_lowercase(), rate(events, start.elapsed()));
    drop(writer);
    store::set_synchronous(Synchronous::default());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Commits of one event each, waited for one by one (what an audited API or SOAR action
/// pays): mean latency, where FULL's fsync per commit shows.
async fn bench_commit(commits: usize, level: Synchronous) {
    store::set_synchronous(level);
    let dir = fresh_dir("commit");
    let writer = outbox::Writer::start(&dir.join("store.db"), vec!["s".into()], u64::MAX / 2).unwrap();
    let start = Instant::now();
    for n in 0..commits {
        writer.append_durable(vec![event(n)]).await.unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "commit-{:<6}{:>8.0} us/commit ({commits} single-event commits in {:.3} s)",
        level.as_str().to_lowercase(),
        elapsed.as_micros() as f64 / commits as f64,
        elapsed.as_secs_f64()
    );
    drop(writer);
    store::set_synchronous(Synchronous::default());
    let _ = std::fs::remove_dir_all(&dir);
}

fn refused() -> GatewayEvent {
    GatewayEvent::new(
        Severity::Low,
        Some(iotgw::device::Mac([2, 0, 0, 0, 0, 1])),
        "enrollment",
        EventKind::Audit {
            action: "simpleenroll_refused".into(),
            detail: "enrollment token unknown or already used".into(),
        },
    )
}

/// A flood of one device's refused enrollments through the intake, sink down.
async fn bench_flood(label: &str, events: usize, aggregation: AggregationConfig) {
    let dir = fresh_dir("flood");
    let store_path = dir.join("store.db");
    let (trigger, shutdown) = shutdown::channel();
    let bus = EventBus::new(events + 16);
    // A syslog sink to a port nothing listens on: everything waits in the outbox.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = integrations::Config {
        hostname: Some("bench".into()),
        sinks: vec![tcp_sink(port)],
        aggregation,
        ..Default::default()
    };
    let handle = integrations::spawn(config, &store_path, bus.clone(), shutdown).unwrap();
    let prepared: Vec<GatewayEvent> = (0..events).map(|_| refused()).collect();
    let start = Instant::now();
    for event in prepared {
        bus.publish(event);
    }
    // Shutdown drains the bus, flushes the open windows and commits: the whole flood stored.
    trigger.trigger();
    handle.join().await;
    let elapsed = start.elapsed();
    let conn = iotgw::schema::open(&store_path).unwrap();
    let rows: i64 =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'integration_outbox'", [], |r| r.get(0)).unwrap();
    let counted: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(COALESCE(json_extract(body, '$.repeat.count'), 1)), 0) FROM integration_outbox WHERE kind = 'audit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted as usize, events, "every event counted once");
    println!("{label:<11} {}  rows kept {rows}", rate(events, elapsed));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The aggregator core alone: the intake's per-event cost.
fn bench_aggregate(events: usize) {
    let mut aggregator = aggregate::Aggregator::new(AggregationConfig::default());
    let prepared: Vec<GatewayEvent> = (0..events).map(|_| refused()).collect();
    let now = std::time::Instant::now();
    let start = Instant::now();
    let mut records = 0;
    for event in prepared {
        records += aggregator.handle(event, now).len();
    }
    records += aggregator.flush().len();
    println!("aggregate   {}  records {records}", rate(events, start.elapsed()));
}

/// One prune of an outbox at twice its cap, a quarter of the rows alerts and actions.
fn bench_cap(cap: u64) {
    let dir = fresh_dir("cap");
    let path = dir.join("store.db");
    let conn = iotgw::schema::open(&path).unwrap();
    conn.execute("INSERT INTO integration_cursors (sink, delivered_seq, updated_ms) VALUES ('down', 0, 0)", [])
        .unwrap();
    let alert_body = serde_json::to_string(&event(0)).unwrap();
    let audit_body = serde_json::to_string(&refused()).unwrap();
    let rows = 2 * cap;
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut insert = conn
            .prepare("INSERT INTO integration_outbox (event_id, kind, severity, created_ms, body) VALUES (?1, ?2, ?3, 0, ?4)")
            .unwrap();
        for n in 0..rows {
            let (kind, severity, body) = match n % 8 {
                0 => ("alert", 3, &alert_body),
                1 => ("action", 2, &alert_body),
                _ => ("audit", (n % 3) as i64, &audit_body),
            };
            insert.execute((format!("e{n}"), kind, severity, body)).unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    let bytes: i64 = conn
        .query_row("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", [], |r| r.get(0))
        .unwrap();
    let protected = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM integration_outbox WHERE kind IN ('alert', 'action')", [], |r| r.get(0))
            .unwrap()
    };
    let before = protected(&conn);
    let start = Instant::now();
    outbox::prune_now(&path, &["down".into()], cap).unwrap();
    let elapsed = start.elapsed();
    let left: i64 = conn.query_row("SELECT COUNT(*) FROM integration_outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(protected(&conn), before, "no alert or action dropped");
    assert_eq!(left as u64, cap);
    println!(
        "cap         prune of {rows} rows to {cap} in {:.3} s, {before} alerts/actions all kept; \
         alert JSON {} B, {} B per row on disk (indexes included)",
        elapsed.as_secs_f64(),
        alert_body.len(),
        bytes / rows as i64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback TCP receiver that reads and discards, like a fast syslog server.
async fn discard_receiver() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut socket, &mut sink).await;
            });
        }
    });
    port
}

async fn bench_end_to_end(label: &str, events: usize, sinks: Vec<SinkConfig>, dir: &Path) {
    let (trigger, shutdown) = shutdown::channel();
    // The bus must hold the whole burst: this measures the outbox, not broadcast lag.
    let bus = EventBus::new(events + 16);
    let config = integrations::Config { hostname: Some("bench".into()), sinks, ..Default::default() };
    let handle = integrations::spawn(config, &dir.join("store.db"), bus.clone(), shutdown).unwrap();
    let prepared: Vec<GatewayEvent> = (0..events).map(event).collect();
    let start = Instant::now();
    for event in prepared {
        bus.publish(event);
    }
    let publish = start.elapsed();
    loop {
        let backlog = handle.backlog().await;
        if backlog.iter().all(|s| s.delivered_total >= events as u64) {
            break;
        }
        assert!(start.elapsed() < DRAIN_LIMIT, "drain took too long: {backlog:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    println!(
        "{label:<11} {}  publish {:.0} ns/event",
        rate(events, elapsed),
        publish.as_nanos() as f64 / events as f64
    );
    trigger.trigger();
    handle.join().await;
}

fn file_sink(dir: &Path) -> SinkConfig {
    let mut sink = SinkConfig::new("file", SinkKind::File);
    sink.path = Some(dir.join("events.jsonl"));
    sink.format = Some(Format::Ecs);
    sink.batch_size = 1_024;
    sink
}

fn tcp_sink(port: u16) -> SinkConfig {
    let mut sink = SinkConfig::new("syslog", SinkKind::SyslogTcp);
    sink.address = Some(format!("127.0.0.1:{port}"));
    sink.format = Some(Format::Cef);
    sink.batch_size = 1_024;
    sink
}

fn main() {
    // `cargo bench` passes `--bench`; the first plain number is the event count.
    let events = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(DEFAULT_EVENTS);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        println!(
            "iotgw outbox benchmark, {events} alert events, profile {}",
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
        bench_append(events, Synchronous::Full).await;
        bench_append(events, Synchronous::Normal).await;
        bench_commit(COMMITS, Synchronous::Full).await;
        bench_commit(COMMITS, Synchronous::Normal).await;
        let dir = fresh_dir("file");
        bench_end_to_end("file", events, vec![file_sink(&dir)], &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        let port = discard_receiver().await;
        let dir = fresh_dir("tcp");
        bench_end_to_end("syslog-tcp", events, vec![tcp_sink(port)], &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        let dir = fresh_dir("both");
        bench_end_to_end("file+tcp", events, vec![file_sink(&dir), tcp_sink(port)], &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        bench_aggregate(events);
        bench_flood("flood", events, AggregationConfig::default()).await;
        bench_flood("flood-off", events, AggregationConfig::off()).await;
        // The default cap in release (two million rows written first), the event count in debug.
        bench_cap(if cfg!(debug_assertions) { events as u64 } else { integrations::config::DEFAULT_MAX_OUTBOX_EVENTS });
    });
}
