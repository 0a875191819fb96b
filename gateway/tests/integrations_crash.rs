//! `kill -9` of a controller holding a backlog loses nothing: a child process (this test
//! binary re-executed) runs integrations with its sink down, publishes events, waits until
//! the outbox holds them, and is SIGKILLed; a new controller on the same store delivers
//! every event, once, in order, when the sink comes up.
#[path = "common/crash_child.rs"]
mod crash_child;
#[path = "integrations/support.rs"]
mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use iotgw::{
    event::EventBus,
    integrations::{
        self,
        config::{AggregationConfig, SinkConfig, SinkKind},
    },
    shutdown,
};
use serde_json::Value;
use support::*;

const CHILD_ENV: &str = "IOTGW_CRASH_CHILD";
const EVENTS: usize = 500;
const WAIT: Duration = Duration::from_secs(30);

/// Small batches, so a kill during delivery lands between batches and inside one.
const MID_DELIVERY_BATCH: usize = 10;

fn sink(port: u16) -> SinkConfig {
    let mut sink = SinkConfig::new("splunk", SinkKind::Hec);
    sink.batch_size = MID_DELIVERY_BATCH;
    sink.url = Some(format!("http://127.0.0.1:{port}"));
    sink.token = Some("t".into());
    sink.retry_initial_ms = 50;
    sink.retry_max_ms = 200;
    sink.timeout_ms = 2_000;
    sink
}

fn config(port: u16) -> integrations::Config {
    // These tests follow `numbered` events (one key) one by one: aggregation off here;
    // `integrations_flood.rs` tests it.
    integrations::Config {
        hostname: Some("gw-crash".into()),
        sinks: vec![sink(port)],
        aggregation: AggregationConfig::off(),
        ..Default::default()
    }
}

/// The child: only does something when started by the parent test with `CHILD_ENV`.
#[test]
#[ignore = "child process of kill_9_with_a_backlog_loses_nothing"]
fn crash_child_controller() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.split('|');
    let (store, port, mode) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let port: u16 = port.parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (_trigger, shutdown) = shutdown::channel();
        let bus = EventBus::default();
        let handle = integrations::spawn(config(port), std::path::Path::new(store), bus.clone(), shutdown).unwrap();
        for n in 0..EVENTS {
            bus.publish(numbered(n));
        }
        match mode {
            // Sink down: everything waits in the outbox.
            "backlog" => {
                wait_backlog(&handle, "the outbox to hold every event", WAIT, |b| b[0].pending == EVENTS as u64).await
            }
            // Sink up and slow: killed in the middle of delivering.
            _ => wait_backlog(&handle, "delivery under way", WAIT, |b| b[0].delivered_total >= 100).await,
        };
        println!("{}", crash_child::READY);
        // The parent kills us with SIGKILL; never exit on our own before that.
        tokio::time::sleep(Duration::from_secs(120)).await;
        panic!("child was not killed");
    });
}

type Received = Arc<Mutex<Vec<Value>>>;

async fn hec(State(received): State<Received>, body: Bytes) -> StatusCode {
    // A slow receiver, so the child is killed with requests in flight.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let events = serde_json::Deserializer::from_slice(&body).into_iter::<Value>().map(Result::unwrap);
    received.lock().unwrap().extend(events);
    StatusCode::OK
}

async fn start_receiver(port: u16) -> Received {
    let received = Received::default();
    let app = Router::new().route("/services/collector/event", post(hec)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    received
}

/// Runs the child until it says it is ready, then SIGKILLs it.
async fn run_and_kill_child(store: &std::path::Path, port: u16, mode: &str) {
    crash_child::run_and_kill(
        "crash_child_controller",
        (CHILD_ENV, format!("{}|{port}|{mode}", store.display())),
        WAIT,
    )
    .await;
}

fn order(received: &Received) -> Vec<usize> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event"]["reason"].as_str().unwrap().strip_prefix("n=").unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_backlog_loses_nothing() {
    let dir = TempDir::new("crash");
    let store = dir.path().join("store.db");
    let port = free_tcp_port();
    // Nothing listens on `port` yet: the child's sink is down and its backlog grows.
    run_and_kill_child(&store, port, "backlog").await;
    let received = start_receiver(port).await;

    let (trigger, shutdown) = shutdown::channel();
    let handle = integrations::spawn(config(port), &store, EventBus::default(), shutdown).unwrap();
    wait_backlog(&handle, "the restarted controller to deliver the backlog", WAIT, |b| b[0].pending == 0).await;
    assert_eq!(
        order(&received),
        (0..EVENTS).collect::<Vec<_>>(),
        "every event written before the crash, once, in order"
    );
    trigger.trigger();
    joined(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_resumes_where_the_cursor_stood() {
    let dir = TempDir::new("crash-mid");
    let store = dir.path().join("store.db");
    let port = free_tcp_port();
    let received = start_receiver(port).await;
    run_and_kill_child(&store, port, "delivering").await;
    let before = order(&received).len();
    assert!((100..EVENTS).contains(&before), "killed mid-delivery ({before} received)");

    let (trigger, shutdown) = shutdown::channel();
    let handle = integrations::spawn(config(port), &store, EventBus::default(), shutdown).unwrap();
    wait_backlog(&handle, "the restarted controller to finish", WAIT, |b| b[0].pending == 0).await;
    let got = order(&received);
    // At least once: the batch in flight at the kill may come twice, nothing is missing, and
    // apart from that one replayed batch the order holds.
    let mut first_seen = Vec::new();
    for n in &got {
        if !first_seen.contains(n) {
            first_seen.push(*n);
        }
    }
    assert_eq!(first_seen, (0..EVENTS).collect::<Vec<_>>(), "nothing lost, first deliveries in order");
    assert!(
        got.len() - EVENTS <= MID_DELIVERY_BATCH,
        "at most the batch in flight is repeated ({} extra)",
        got.len() - EVENTS
    );
    trigger.trigger();
    joined(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_keeps_every_published_event() {
    let dir = TempDir::new("clean-stop");
    let store = dir.path().join("store.db");
    // Nothing listens: every event must wait in the outbox.
    let port = free_tcp_port();
    let (trigger, shutdown) = shutdown::channel();
    let bus = EventBus::default();
    let handle = integrations::spawn(config(port), &store, bus.clone(), shutdown).unwrap();
    for n in 0..EVENTS {
        bus.publish(numbered(n));
    }
    trigger.trigger();
    joined(handle).await;
    let conn = iotgw::schema::open(&store).unwrap();
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM integration_outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, EVENTS as i64, "published before the stop, stored after it");
}
