//! Events per second through the integrations outbox (SQLite, WAL, synchronous=NORMAL), on a
//! temp-dir store:
//!
//! 1. `append`: events committed by the writer thread (producers queue, one thread batches
//!    them into transactions), measured until the last is durable;
//! 2. `publish`: the producer-side cost of `EventBus::publish` while integrations run (what
//!    the datapath pays), in ns per event;
//! 3. `end-to-end`: events published on the bus until a sink has them all and its cursor is
//!    past them: a JSON-lines file sink (ECS) and a syslog TCP sink to a loopback receiver
//!    that discards, each alone, then both together.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p gateway --bench outbox [-- EVENTS]`.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iotgw::{
    event::{EventBus, EventKind, GatewayEvent, Severity},
    integrations::{
        self,
        config::{Format, SinkConfig, SinkKind},
        outbox,
    },
    shutdown,
};

const DEFAULT_EVENTS: usize = 50_000;
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

async fn bench_append(events: usize) {
    let dir = fresh_dir("append");
    let writer = outbox::Writer::start(&dir.join("store.db"), vec!["s".into()], u64::MAX / 2).unwrap();
    let start = Instant::now();
    for n in 0..events - 1 {
        writer.append(event(n)).await.unwrap();
    }
    writer.append_durable(vec![event(events - 1)]).await.unwrap();
    println!("append      {}", rate(events, start.elapsed()));
    drop(writer);
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
        bench_append(events).await;
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
    });
}
