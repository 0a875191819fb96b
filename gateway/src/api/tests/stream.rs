//! The live event stream over real HTTP: an alert recorded by the real recorder is announced
//! only once a GET reads it, access changes and new devices are `device` events, a client that
//! lags is told to resync, and the stream outlives the request timeout but not the server.
use iotgw_test_support::wait;
use reqwest::StatusCode;

use super::*;
use crate::{
    alerts::{AlertStore, Recorder},
    event::{EventBus, EventKind, GatewayEvent, Severity},
};

/// A client reading `/api/v1/stream`, one event at a time.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(server: &Server) -> Self {
        // No client timeout (the stream is meant to stay open): the wait for its head is bounded here.
        let request = reqwest::Client::new().get(format!("{}/api/v1/stream", server.base)).bearer_auth(VIEWER_TOKEN);
        let response = wait::within("the stream's response head", EVENT_WAIT, request.send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: String::new() }
    }

    /// The next event's name and data, skipping comments; `None` when the stream ended.
    /// Bounded as a whole (`EVENT_WAIT`), not per chunk: a keep-alive comment every 15 s would
    /// start a per-chunk timeout again and again while the event never comes.
    async fn next(&mut self) -> Option<(String, serde_json::Value)> {
        let reading = async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
                    let Some(event) = field("event: ") else { continue };
                    let data = field("data: ").map_or(serde_json::Value::Null, |d| serde_json::from_str(&d).unwrap());
                    return Some((event, data));
                }
                match self.response.chunk().await {
                    Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                    Ok(None) | Err(_) => return None,
                }
            }
        };
        wait::within("the stream's next event (or its end)", EVENT_WAIT, reading).await
    }

    /// The next event named `name`, skipping others; bounded as a whole (`EVENT_WAIT`).
    async fn next_named(&mut self, name: &str) -> serde_json::Value {
        let wait = async {
            loop {
                let (event, data) = self.next().await.unwrap_or_else(|| panic!("the stream ended before {name}"));
                if event == name {
                    return data;
                }
            }
        };
        wait::within(&format!("a {name} event"), EVENT_WAIT, wait).await
    }
}

/// Longest wait for an event. Generous: under the whole suite's load (680 tests, SQLite
/// writes with `synchronous = FULL`) 5 s once proved too short for a committed alert.
const EVENT_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_streamed_once_a_get_reads_it_and_analysts_changes_follow() {
    let fixture = Fixture::new();
    let path = fixture.dir.0.join("iotgw.db");
    let options = Options { alerts: Some(AlertStore::open(&path).unwrap()), ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;
    let bus = server.state.events.clone();
    let recorder_store = AlertStore::open(&path).unwrap().announcing(server.state.alert_changes.clone());
    let recorder = Recorder::spawn(recorder_store, &bus).unwrap();
    let mut events = Events::open(&server).await;

    const ALERTS: u32 = 20;
    for n in 0..ALERTS {
        bus.publish(super::pages::alert(CAMERA, &format!("scan-{n}"), Severity::High, 0));
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ALERTS as usize {
        let alert = events.next_named("alert").await;
        assert_eq!(
            (alert["state"].as_str(), alert["device"].as_str(), alert["severity"].as_str()),
            (Some("open"), Some(CAMERA), Some("high"))
        );
        let id = alert["id"].as_i64().unwrap();
        // Announced after the commit: the record is there for whoever reads it now.
        let read = get(&server, &format!("/api/v1/alerts/{id}"), Some(VIEWER_TOKEN)).await;
        assert_eq!(read.status(), StatusCode::OK, "alert {id} announced before it was readable");
        seen.insert(id);
    }

    let id = *seen.iter().next().unwrap();
    super::pages::acknowledge(&server, id).await;
    // The record's change (the store's announcement) and the audit (the bus) reach the stream
    // through two channels: either may come first.
    let (mut changed, mut audit) = (None, None);
    while changed.is_none() || audit.is_none() {
        let (event, data) = events.next().await.expect("the stream ended before the acknowledgement's events");
        match event.as_str() {
            "alert" => changed = Some(data),
            "audit" => audit = Some(data),
            _ => {}
        }
    }
    let (changed, audit) = (changed.unwrap(), audit.unwrap());
    assert_eq!((changed["id"].as_i64(), changed["state"].as_str()), (Some(id), Some("acknowledged")));
    assert_eq!(audit["action"], "alert_acknowledged", "{audit}");
    server.stop().await;
    recorder.join();
}

#[tokio::test]
async fn access_changes_and_new_devices_are_device_events() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let mut events = Events::open(&server).await;

    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let device = events.next_named("device").await;
    assert_eq!(device, serde_json::json!({"mac": CAMERA, "state": "quarantined"}));
    let audit = events.next_named("audit").await;
    assert_eq!((audit["device"].as_str(), audit["action"].as_str()), (Some(CAMERA), Some("quarantine")));

    // A device seen for the first time, published as the controller's inventory step does.
    let newcomer: Mac = "02:00:00:00:00:42".parse().unwrap();
    let (ip, cloud) = ("192.168.1.42".parse().unwrap(), "203.0.113.7".parse().unwrap());
    let crate::pipeline::Input::Datapath(flow) =
        crate::detect::synthetic::tcp_syn(newcomer, SystemTime::now(), ip, cloud, 40_000, 443)
    else {
        unreachable!("tcp_syn makes a datapath event")
    };
    let changes = fixture.inventory.lock().unwrap().handle(&flow).unwrap();
    for event in changes.iter().filter_map(|change| change.to_gateway_event()) {
        server.state.events.publish(event);
    }
    let device = events.next_named("device").await;
    assert_eq!(device, serde_json::json!({"mac": "02:00:00:00:00:42", "state": "unknown"}));
    server.stop().await;
    // What was sent before still arrives; then the stream ends, all within one wait: a stream
    // that outlived the server would send keep-alives (and nothing else) forever.
    wait::within("the stream's end after the server stopped", EVENT_WAIT, async {
        while events.next().await.is_some() {}
    })
    .await;
}

#[tokio::test]
async fn a_client_that_lags_is_told_to_resync_and_the_stream_outlives_the_request_timeout() {
    let fixture = Fixture::new();
    let limits = server::Limits { request_timeout: Duration::from_millis(500), ..server::Limits::default() };
    let options = Options { events: Some(EventBus::new(4)), limits, ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;
    let mut events = Events::open(&server).await;
    let note = |n: u32| {
        GatewayEvent::new(
            Severity::Info,
            None,
            "test",
            EventKind::Audit { action: format!("note-{n}"), detail: String::new() },
        )
    };
    // Published without yielding: the stream's task cannot read in between, so it lags.
    for n in 0..50 {
        server.state.events.publish(note(n));
    }
    let (first, _) = events.next().await.unwrap();
    assert_eq!(first, "resync");
    let after = events.next_named("audit").await;
    assert_eq!(after["action"], "note-46", "the oldest still held follows: {after}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    server.state.events.publish(note(99));
    let mut last = events.next_named("audit").await;
    while last["action"] != "note-99" {
        last = events.next_named("audit").await;
    }
    server.stop().await;
}
