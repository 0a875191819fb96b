//! HTTP sinks and the SOAR endpoint against a local axum server standing in for Splunk HEC, a
//! SOAR webhook receiver and a ServiceNow-like incident table. The receiver checks tokens and
//! signatures with its own HMAC code (not iotgw's) and records every body.
#[path = "integrations/support.rs"]
mod support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, patch, post},
};
use hmac::{Hmac, Mac as _};
use iotgw::{
    datapath::{Control, DeviceAccess, DeviceControl, MemoryDatapath},
    device::Access,
    event::{EventBus, EventKind, GatewayEvent, Severity},
    integrations::{
        self,
        config::{Format, SinkConfig, SinkKind, SoarCaller},
    },
    shutdown,
};
use serde_json::{Value, json};
use sha2::Sha256;
use support::*;

const WAIT: Duration = Duration::from_secs(20);
const FORGED: &str = "inc-1\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\u{2028}x\u{202e}y";
const FORGED_ESCAPED: &str = "inc-1\\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\\u2028x\\u202ey";

/// Every string in a JSON document, decoded.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(fields) => {
            fields.iter().flat_map(|(k, v)| std::iter::once(k.clone()).chain(strings(v))).collect()
        }
        _ => Vec::new(),
    }
}
const HEC_TOKEN: &str = "hec-token-1";
const HOOK_SECRET: &str = "hook-secret";
const ITSM_USER: &str = "admin:s3cret";

#[derive(Default)]
struct Recorded {
    hec: Vec<Value>,
    hec_refused: usize,
    hooks: Vec<Value>,
    hooks_refused: usize,
    /// sys_id => fields
    tickets: BTreeMap<String, serde_json::Map<String, Value>>,
    posts: usize,
    patches: Vec<(String, Value)>,
    /// Create the next ticket but answer 503, as if the answer was lost.
    lose_next_post_answer: bool,
    /// Webhook bodies containing this are refused with 400.
    reject_containing: Option<String>,
}

type Shared = Arc<Mutex<Recorded>>;

async fn hec(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Splunk {HEC_TOKEN}")) {
        state.lock().unwrap().hec_refused += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let events: Vec<Value> =
        serde_json::Deserializer::from_slice(&body).into_iter::<Value>().map(Result::unwrap).collect();
    state.lock().unwrap().hec.extend(events);
    StatusCode::OK
}

/// The receiver's own check: HMAC-SHA256 over `timestamp.body`, 300 s window.
async fn hook(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let timestamp = header("x-iotgw-timestamp");
    let mut mac = <Hmac<Sha256>>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    let fresh =
        timestamp.parse::<i64>().is_ok_and(|t| (time::OffsetDateTime::now_utc().unix_timestamp() - t).abs() <= 300);
    if header("x-iotgw-signature") != expected || !fresh {
        state.lock().unwrap().hooks_refused += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if let Some(bad) = state.lock().unwrap().reject_containing.as_deref()
        && String::from_utf8_lossy(&body).contains(bad)
    {
        return StatusCode::BAD_REQUEST;
    }
    let mut doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["id"], header("x-iotgw-event-id"));
    doc["_received_timestamp"] = json!(timestamp);
    state.lock().unwrap().hooks.push(doc);
    StatusCode::OK
}

fn itsm_authorized(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(ITSM_USER));
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

async fn incident_create(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(fields): Json<serde_json::Map<String, Value>>,
) -> (StatusCode, Json<Value>) {
    if !itsm_authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    let mut state = state.lock().unwrap();
    state.posts += 1;
    let sys_id = format!("sys{:04}", state.tickets.len() + 1);
    state.tickets.insert(sys_id.clone(), fields);
    if std::mem::take(&mut state.lose_next_post_answer) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "gateway timeout" })));
    }
    (StatusCode::CREATED, Json(json!({ "result": { "sys_id": sys_id, "number": "INC0001" } })))
}

async fn incident_query(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !itsm_authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    let (field, value) = query["sysparm_query"].split_once('=').unwrap();
    let state = state.lock().unwrap();
    let found: Vec<Value> = state
        .tickets
        .iter()
        .filter(|(_, fields)| fields.get(field).and_then(Value::as_str) == Some(value))
        .map(|(sys_id, _)| json!({ "sys_id": sys_id }))
        .collect();
    (StatusCode::OK, Json(json!({ "result": found })))
}

async fn incident_patch(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(sys_id): Path<String>,
    Json(fields): Json<serde_json::Map<String, Value>>,
) -> (StatusCode, Json<Value>) {
    if !itsm_authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    let mut state = state.lock().unwrap();
    let Some(ticket) = state.tickets.get_mut(&sys_id) else { return (StatusCode::NOT_FOUND, Json(json!({}))) };
    ticket.extend(fields.clone());
    state.patches.push((sys_id.clone(), Value::Object(fields)));
    (StatusCode::OK, Json(json!({ "result": { "sys_id": sys_id } })))
}

/// The stand-in receiver, stoppable and restartable on the same port.
struct Receiver {
    state: Shared,
    port: u16,
    stop: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Receiver {
    async fn start() -> Self {
        let mut receiver = Self { state: Shared::default(), port: free_tcp_port(), stop: None };
        receiver.run().await;
        receiver
    }

    async fn run(&mut self) {
        let app = Router::new()
            .route("/services/collector/event", post(hec))
            .route("/hook", post(hook))
            .route("/api/now/table/incident", get(incident_query).post(incident_create))
            .route("/api/now/table/incident/{sys_id}", patch(incident_patch))
            .with_state(self.state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.stop = Some((tx, task));
    }

    /// Closes the listener and every connection: the sink sees the receiver down.
    async fn stop(&mut self) {
        if let Some((tx, task)) = self.stop.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(10), task).await.expect("receiver stops").unwrap();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn hec_sink(receiver: &Receiver) -> SinkConfig {
    let mut sink = fast(SinkConfig::new("splunk", SinkKind::Hec));
    sink.url = Some(receiver.url());
    sink.token = Some(HEC_TOKEN.into());
    sink
}

fn hook_sink(receiver: &Receiver) -> SinkConfig {
    let mut sink = fast(SinkConfig::new("soar-hook", SinkKind::Webhook));
    sink.url = Some(format!("{}/hook", receiver.url()));
    sink.secret = Some(HOOK_SECRET.into());
    sink.format = Some(Format::Native);
    sink
}

fn itsm_sink(receiver: &Receiver) -> SinkConfig {
    let mut sink = fast(SinkConfig::new("servicenow", SinkKind::Itsm));
    sink.url = Some(receiver.url());
    sink.token = Some(ITSM_USER.into());
    sink.filter.kinds = vec!["alert".into()];
    sink
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_webhook_and_itsm_receive_every_event_authenticated() {
    let dir = TempDir::new("http-all");
    let receiver = Receiver::start().await;
    let (trigger, shutdown) = shutdown::channel();
    let bus = EventBus::default();
    let handle = integrations::spawn(
        config(vec![hec_sink(&receiver), hook_sink(&receiver), itsm_sink(&receiver)]),
        &dir.path().join("store.db"),
        bus.clone(),
        shutdown,
    )
    .unwrap();
    let sent = vec![
        nasty_alert("inc-1", false, Severity::High),
        nasty_alert("inc-1", false, Severity::Critical),
        nasty_alert("inc-2", false, Severity::Low),
        GatewayEvent::new(
            Severity::Medium,
            Some(DEVICE),
            "respond",
            // A reason forging a record, with a line separator and a bidi override.
            EventKind::Action { action: "quarantine".into(), reason: FORGED.into() },
        ),
        nasty_alert("inc-1", true, Severity::High),
    ];
    for event in &sent {
        bus.publish(event.clone());
    }
    // Drained only once the HEC sink, which takes every event, has delivered them all: an
    // empty backlog alone may come before the intake has written the last events.
    let all = sent.len() as u64;
    wait_backlog(&handle, "every sink to drain", WAIT, |b| {
        b.iter().all(|s| s.pending == 0 && s.delivered_total > 0)
            && b.iter().any(|s| s.sink == "splunk" && s.delivered_total >= all)
    })
    .await;
    {
        let state = receiver.state.lock().unwrap();
        // HEC: every event, ECS documents in the envelope, in order.
        assert_eq!(state.hec_refused, 0);
        let ids: Vec<Value> = state.hec.iter().map(|e| e["event"]["event"]["id"].clone()).collect();
        assert_eq!(ids, sent.iter().map(|e| json!(e.id)).collect::<Vec<_>>());
        assert_eq!(state.hec[0]["host"], "gw-test");
        assert_eq!(state.hec[0]["event"]["host"]["mac"][0], "02-00-00-00-00-01");
        assert_eq!(state.hec[0]["event"]["source"]["ip"], "10.0.0.5");
        assert_eq!(state.hec[0]["event"]["event"]["kind"], "alert");
        assert_eq!(state.hec[3]["event"]["event"]["type"][0], "denied");
        // Every JSON sink gets escaped text (`untrusted`): line breaks, separators and bidi
        // characters written out, in HEC, webhook and ticket fields alike.
        assert_eq!(state.hec[3]["event"]["event"]["reason"], FORGED_ESCAPED);
        assert_eq!(state.hooks[3]["reason"], FORGED_ESCAPED, "{}", state.hooks[3]);
        let received = serde_json::to_value((&state.hec, &state.hooks)).unwrap();
        let decoded = strings(&received);
        assert!(decoded.iter().all(|text| iotgw::untrusted::is_safe(text)), "{decoded:?}");
        // Tickets: the template's own line breaks stay (a description is multi-line), the
        // alert's text inside it is escaped.
        for ticket in state.tickets.values() {
            let description = ticket["description"].as_str().unwrap();
            assert!(description.contains("a]b\\c\\nnext") && !description.contains("c\nnext"), "{description:?}");
            let lines: Vec<&str> = description.lines().collect();
            assert_eq!(lines.len(), 4, "{description:?}");
            assert!(lines.iter().all(|line| iotgw::untrusted::is_safe(line)), "{description:?}");
        }
        // Webhook: every event, signature verified by the receiver's own code.
        assert_eq!(state.hooks_refused, 0);
        assert_eq!(
            state.hooks.iter().map(|h| h["id"].clone()).collect::<Vec<_>>(),
            sent.iter().map(|e| json!(e.id)).collect::<Vec<_>>()
        );
        // ITSM: one ticket for inc-1 (inc-2 is below the threshold), updated once, then resolved.
        assert_eq!(state.posts, 1, "{:?}", state.tickets);
        let (sys_id, ticket) = state.tickets.iter().next().unwrap();
        assert_eq!(ticket["correlation_id"], "inc-1");
        assert_eq!(ticket["urgency"], "1");
        assert_eq!(ticket["short_description"], "iotgw scan alert on 02:00:00:00:00:01");
        assert_eq!(ticket["state"], "6", "resolved");
        assert_eq!(state.patches.len(), 2);
        assert!(state.patches.iter().all(|(id, _)| id == sys_id));
        assert!(state.patches[0].1["work_notes"].as_str().unwrap().contains("scan again"));
    }
    trigger.trigger();
    joined(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_sink_down_then_back_receives_everything_in_order() {
    let dir = TempDir::new("http-down");
    let mut receiver = Receiver::start().await;
    let (trigger, shutdown) = shutdown::channel();
    let bus = EventBus::default();
    let handle = integrations::spawn(
        config(vec![hec_sink(&receiver), hook_sink(&receiver)]),
        &dir.path().join("store.db"),
        bus.clone(),
        shutdown,
    )
    .unwrap();
    let total = 200;
    for n in 0..20 {
        bus.publish(numbered(n));
    }
    wait_backlog(&handle, "first events delivered", WAIT, |b| b.iter().all(|s| s.delivered_total == 20)).await;
    receiver.stop().await;
    for n in 20..total {
        bus.publish(numbered(n));
    }
    let backlog =
        wait_backlog(&handle, "both sinks failing", WAIT, |b| b.iter().all(|s| s.status.consecutive_failures >= 3))
            .await;
    assert!(backlog.iter().all(|s| s.pending == (total - 20) as u64), "{backlog:#?}");
    assert!(backlog.iter().all(|s| s.oldest_pending_ms.is_some()));
    receiver.run().await;
    wait_backlog(&handle, "the backlog to drain", WAIT, |b| b.iter().all(|s| s.pending == 0)).await;
    {
        let state = receiver.state.lock().unwrap();
        let expected: Vec<String> = (0..total).map(|n| format!("n={n}")).collect();
        let hec: Vec<String> =
            state.hec.iter().map(|e| e["event"]["iotgw"]["signature"].as_str().unwrap().to_owned()).collect();
        assert!(hec.iter().all(|s| s == "audit:seq"));
        let hec_order: Vec<String> =
            state.hec.iter().map(|e| e["event"]["event"]["reason"].as_str().unwrap().to_owned()).collect();
        assert_eq!(hec_order, expected, "HEC: every event once, in order");
        let hook_order: Vec<String> = state.hooks.iter().map(|h| h["detail"].as_str().unwrap().to_owned()).collect();
        assert_eq!(hook_order, expected, "webhook: every event once, in order");
    }
    trigger.trigger();
    joined(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn itsm_lost_answer_does_not_open_a_second_ticket() {
    let dir = TempDir::new("http-itsm-lost");
    let receiver = Receiver::start().await;
    receiver.state.lock().unwrap().lose_next_post_answer = true;
    let (trigger, shutdown) = shutdown::channel();
    let bus = EventBus::default();
    let store = dir.path().join("store.db");
    let mut file = SinkConfig::new("local", SinkKind::File);
    file.path = Some(dir.path().join("events.jsonl"));
    let handle = integrations::spawn(config(vec![itsm_sink(&receiver), file]), &store, bus.clone(), shutdown).unwrap();
    bus.publish(nasty_alert("inc-9", false, Severity::Critical));
    bus.publish(nasty_alert("inc-9", true, Severity::Critical));
    // Only the file sink wants these; the ITSM cursor must still move past them.
    for n in 0..3 {
        bus.publish(numbered(n));
    }
    let backlog =
        wait_backlog(&handle, "ITSM to drain", WAIT, |b| b.iter().all(|s| s.pending == 0 && s.delivered_total > 0))
            .await;
    let lines = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5, "JSON lines file sink: {lines}");
    assert!(lines.lines().all(|l| serde_json::from_str::<Value>(l).unwrap()["@timestamp"].is_string()));
    let conn = iotgw::schema::open(&store).unwrap();
    let last: i64 =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'integration_outbox'", [], |r| r.get(0)).unwrap();
    wait_for("the ITSM cursor past events it filters out", WAIT, || {
        let cursor: i64 = conn
            .query_row("SELECT delivered_seq FROM integration_cursors WHERE sink = 'servicenow'", [], |r| r.get(0))
            .unwrap();
        (cursor == last).then_some(())
    })
    .await;
    assert!(backlog[0].status.last_error.as_deref().unwrap().contains("503"), "{backlog:?}");
    {
        let state = receiver.state.lock().unwrap();
        assert_eq!(state.posts, 1, "the retry found the ticket instead of posting again");
        assert_eq!(state.tickets.len(), 1);
        assert_eq!(state.tickets["sys0001"]["state"], "6");
    }
    trigger.trigger();
    joined(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_hec_token_keeps_events_until_fixed() {
    let dir = TempDir::new("http-token");
    let receiver = Receiver::start().await;
    let store = dir.path().join("store.db");
    let (trigger, shutdown) = shutdown::channel();
    let bus = EventBus::default();
    let mut bad = hec_sink(&receiver);
    bad.token = Some("wrong".into());
    let handle = integrations::spawn(config(vec![bad]), &store, bus.clone(), shutdown).unwrap();
    for n in 0..5 {
        bus.publish(numbered(n));
    }
    wait_backlog(&handle, "refusals", WAIT, |b| b[0].status.consecutive_failures >= 2 && b[0].pending == 5).await;
    trigger.trigger();
    joined(handle).await;
    assert!(receiver.state.lock().unwrap().hec_refused >= 2);
    // The operator fixes the token and restarts: nothing was lost.
    let (trigger, shutdown) = shutdown::channel();
    let handle = integrations::spawn(config(vec![hec_sink(&receiver)]), &store, EventBus::default(), shutdown).unwrap();
    wait_backlog(&handle, "delivery after the fix", WAIT, |b| b[0].pending == 0).await;
    assert_eq!(receiver.state.lock().unwrap().hec.len(), 5);
    trigger.trigger();
    joined(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_refused_for_good_is_set_aside_and_the_rest_delivered() {
    let dir = TempDir::new("http-dead");
    let receiver = Receiver::start().await;
    receiver.state.lock().unwrap().reject_containing = Some("\"n=2\"".into());
    let store = dir.path().join("store.db");
    let (trigger, shutdown) = shutdown::channel();
    let bus = EventBus::default();
    let handle = integrations::spawn(config(vec![hook_sink(&receiver)]), &store, bus.clone(), shutdown).unwrap();
    for n in 0..5 {
        bus.publish(numbered(n));
    }
    let backlog =
        wait_backlog(&handle, "the webhook to drain", WAIT, |b| b[0].pending == 0 && b[0].delivered_total == 4).await;
    assert_eq!(backlog[0].status.dead_letters, 1);
    let details: Vec<String> =
        receiver.state.lock().unwrap().hooks.iter().map(|h| h["detail"].as_str().unwrap().to_owned()).collect();
    assert_eq!(details, ["n=0", "n=1", "n=3", "n=4"]);
    let conn = iotgw::schema::open(&store).unwrap();
    let (body, error): (String, String) =
        conn.query_row("SELECT body, error FROM integration_dead_letters", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(body.contains("n=2") && error.contains("400"), "{body} {error}");
    trigger.trigger();
    joined(handle).await;
}

// --- SOAR inbound -------------------------------------------------------------------------

const SOAR_TOKEN: &str = "soar-token-xyz";
const SOAR_SECRET: &str = "soar-hmac-key";

struct Soar {
    url: String,
    datapath: Arc<MemoryDatapath>,
    store: std::path::PathBuf,
    bus: EventBus,
    _dir: TempDir,
}

async fn soar() -> Soar {
    let dir = TempDir::new("soar");
    let store = dir.path().join("store.db");
    let mut config = config(Vec::new());
    config.soar.callers = vec![
        SoarCaller { name: "xsoar".into(), token: Some(SOAR_TOKEN.into()), secret: None },
        SoarCaller { name: "tines".into(), token: None, secret: Some(SOAR_SECRET.into()) },
    ];
    let datapath = Arc::new(MemoryDatapath::default());
    datapath.set_access(DEVICE, DeviceAccess { access: Access::Enrolled, policy_id: 16, class_id: 3 }).unwrap();
    let control: Control = datapath.clone();
    let bus = EventBus::default();
    let state = iotgw::api::soar::SoarState::new(&config, &store, control, bus.clone()).unwrap();
    let app = Router::new().nest("/api/v1/soar", iotgw::api::soar::router(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/soar/actions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Soar { url, datapath, store, bus, _dir: dir }
}

fn audit_rows(store: &std::path::Path) -> Vec<(String, String, String)> {
    let conn = iotgw::schema::open(store).unwrap();
    let mut stmt = conn.prepare("SELECT caller, action, outcome FROM integration_audit ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

fn signed(body: &str, secret: &str, timestamp: i64) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soar_action_refuses_unauthenticated_and_badly_signed_requests() {
    let soar = soar().await;
    let client = reqwest::Client::new();
    let body = json!({ "action": "block", "device": DEVICE.to_string() }).to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let attempts: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no auth", client.post(&soar.url)),
        ("wrong bearer", client.post(&soar.url).bearer_auth("nope")),
        ("basic auth", client.post(&soar.url).basic_auth("xsoar", Some(SOAR_TOKEN))),
        (
            "wrong key",
            client
                .post(&soar.url)
                .header("x-iotgw-caller", "tines")
                .header("x-iotgw-timestamp", now.to_string())
                .header("x-iotgw-signature", signed(&body, "other-key", now)),
        ),
        (
            "replayed (old timestamp)",
            client
                .post(&soar.url)
                .header("x-iotgw-caller", "tines")
                .header("x-iotgw-timestamp", (now - 3_600).to_string())
                .header("x-iotgw-signature", signed(&body, SOAR_SECRET, now - 3_600)),
        ),
        (
            "signature of another body",
            client
                .post(&soar.url)
                .header("x-iotgw-caller", "tines")
                .header("x-iotgw-timestamp", now.to_string())
                .header("x-iotgw-signature", signed("{}", SOAR_SECRET, now)),
        ),
        (
            "token caller cannot sign",
            client
                .post(&soar.url)
                .header("x-iotgw-caller", "xsoar")
                .header("x-iotgw-timestamp", now.to_string())
                .header("x-iotgw-signature", signed(&body, SOAR_TOKEN, now)),
        ),
    ];
    for (what, request) in attempts {
        let response = request.header("idempotency-key", what).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
    }
    assert_eq!(soar.datapath.access(DEVICE).unwrap().unwrap().access, Access::Enrolled, "nothing enforced");
    assert!(audit_rows(&soar.store).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soar_action_is_idempotent_enforced_and_audited() {
    let soar = soar().await;
    let mut events = soar.bus.subscribe();
    let client = reqwest::Client::new();
    let body = json!({ "action": "quarantine", "device": DEVICE.to_string(), "reason": "playbook 7" }).to_string();
    let send = |key: &str, body: String| {
        client.post(&soar.url).bearer_auth(SOAR_TOKEN).header("idempotency-key", key).body(body).send()
    };
    let first = send("run-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["previous"], "enrolled");
    assert_eq!(first["access"], "quarantined");
    let enforced = soar.datapath.access(DEVICE).unwrap().unwrap();
    assert_eq!(enforced, DeviceAccess { access: Access::Quarantined, policy_id: 16, class_id: 3 });
    let event = iotgw_test_support::wait::within("the SOAR action's event", Duration::from_secs(10), events.recv())
        .await
        .unwrap();
    assert_eq!(event.actor, "soar:xsoar");
    assert!(matches!(event.kind, EventKind::Action { ref action, .. } if action == "quarantine"));

    // The operator releases by hand; the playbook retries its call: it must not re-quarantine.
    soar.datapath.set_access(DEVICE, DeviceAccess { access: Access::Enrolled, ..enforced }).unwrap();
    let again = send("run-1", body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(soar.datapath.access(DEVICE).unwrap().unwrap().access, Access::Enrolled);

    let other_body = json!({ "action": "block", "device": DEVICE.to_string() }).to_string();
    assert_eq!(send("run-1", other_body).await.unwrap().status(), 422, "key reuse for another request");
    assert_eq!(send("", body.clone()).await.unwrap().status(), 400, "key required");
    let bad = json!({ "action": "explode", "device": DEVICE.to_string() }).to_string();
    assert_eq!(send("run-x", bad).await.unwrap().status(), 400);

    // A signed call (the other scheme) blocks; a tag is recorded.
    let block = json!({ "action": "block", "device": DEVICE.to_string() }).to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = client
        .post(&soar.url)
        .header("x-iotgw-caller", "tines")
        .header("x-iotgw-timestamp", now.to_string())
        .header("x-iotgw-signature", signed(&block, SOAR_SECRET, now))
        .header("idempotency-key", "run-2")
        .body(block)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(soar.datapath.access(DEVICE).unwrap().unwrap().access, Access::Blocked);
    let tag = json!({ "action": "tag", "device": DEVICE.to_string(), "tag": "suspicious" }).to_string();
    assert_eq!(send("run-3", tag).await.unwrap().status(), 200);
    let release = json!({ "action": "release", "device": DEVICE.to_string() }).to_string();
    assert_eq!(send("run-4", release).await.unwrap().status(), 200);
    assert_eq!(soar.datapath.access(DEVICE).unwrap().unwrap().access, Access::Enrolled, "class policy back");

    assert_eq!(
        audit_rows(&soar.store),
        vec![
            ("soar:xsoar".into(), "quarantine".into(), "done".into()),
            ("soar:tines".into(), "block".into(), "done".into()),
            ("soar:xsoar".into(), "tag".into(), "done".into()),
            ("soar:xsoar".into(), "release".into(), "done".into()),
        ]
    );
    let conn = iotgw::schema::open(&soar.store).unwrap();
    let tags: i64 = conn
        .query_row("SELECT COUNT(*) FROM integration_device_tags WHERE tag = 'suspicious'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tags, 1);
}
