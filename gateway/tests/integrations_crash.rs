//! `kill -9` of a controller holding a backlog loses nothing: a child process (this test
//! binary re-executed) runs integrations with its sink down, publishes events, waits until
//! the outbox holds them, and is SIGKILLed; a new controller on the same store delivers
//! every event, once, in order, when the sink comes up.
#[path = "integrations/support.rs"]
mod support;

use std::{
    io::BufRead as _,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use iotgw::{
    event::EventBus,
    integrations::{
        self,
        config::{SinkConfig, SinkKind},
    },
    shutdown,
};
use serde_json::Value;
use support::*;

const CHILD_ENV: &str = "IOTGW_CRASH_CHILD";
const EVENTS: usize = 500;
const WAIT: Duration = Duration::from_secs(30);
const READY: &str = "IOTGW-CHILD-READY";

fn sink(port: u16) -> SinkConfig {
    let mut sink = SinkConfig::new("splunk", SinkKind::Hec);
    sink.url = Some(format!("http://127.0.0.1:{port}"));
    sink.token = Some("t".into());
    sink.retry_initial_ms = 50;
    sink.retry_max_ms = 200;
    sink.timeout_ms = 2_000;
    sink
}

fn config(port: u16) -> integrations::Config {
    integrations::Config { hostname: Some("gw-crash".into()), sinks: vec![sink(port)], ..Default::default() }
}

/// The child: only does something when started by the parent test with `CHILD_ENV`.
#[test]
#[ignore = "child process of kill_9_with_a_backlog_loses_nothing"]
fn crash_child_controller() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (store, port) = spec.split_once('|').unwrap();
    let port: u16 = port.parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (_trigger, shutdown) = shutdown::channel();
        let bus = EventBus::default();
        let handle = integrations::spawn(config(port), std::path::Path::new(store), bus.clone(), shutdown).unwrap();
        for n in 0..EVENTS {
            bus.publish(numbered(n));
        }
        wait_backlog(&handle, "the outbox to hold every event", WAIT, |b| b[0].pending == EVENTS as u64).await;
        println!("{READY}");
        // The parent kills us with SIGKILL; never exit on our own before that.
        tokio::time::sleep(Duration::from_secs(120)).await;
        panic!("child was not killed");
    });
}

type Received = Arc<Mutex<Vec<Value>>>;

async fn hec(State(received): State<Received>, body: Bytes) -> StatusCode {
    let events = serde_json::Deserializer::from_slice(&body).into_iter::<Value>().map(Result::unwrap);
    received.lock().unwrap().extend(events);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_backlog_loses_nothing() {
    let dir = TempDir::new("crash");
    let store = dir.path().join("store.db");
    let port = free_tcp_port();
    // Nothing listens on `port` yet: the child's sink is down and its backlog grows.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_controller", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{port}", store.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.contains(READY))
    });
    let ready = tokio::time::timeout(WAIT, ready).await.expect("child ready in time").unwrap();
    assert!(ready, "child exited before it was ready");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished: {status:?}");

    let received = Received::default();
    let app = Router::new().route("/services/collector/event", post(hec)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (trigger, shutdown) = shutdown::channel();
    let handle = integrations::spawn(config(port), &store, EventBus::default(), shutdown).unwrap();
    wait_backlog(&handle, "the restarted controller to deliver the backlog", WAIT, |b| b[0].pending == 0).await;
    let got: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event"]["reason"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..EVENTS).map(|n| format!("n={n}")).collect();
    assert_eq!(got, expected, "every event written before the crash, once, in order");
    trigger.trigger();
    handle.join().await;
}
