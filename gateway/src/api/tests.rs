//! Router tests: a real server on 127.0.0.1:0, real HTTP (reqwest), a real inventory in a
//! SQLite file of a temporary folder, and the in-memory datapath.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use reqwest::StatusCode;
use serde_json::json;

use super::{inventory_directory::InventoryDirectory, *};
use crate::{
    datapath::{
        DeviceAccess, DeviceControl as _, MemoryDatapath,
        events::{DatapathEvent, FlowObservation},
    },
    device::{Access, Mac},
    inventory::Inventory,
};

pub(crate) const VIEWER_TOKEN: &str = "viewer-secret-token";
pub(crate) const OPERATOR_TOKEN: &str = "operator-secret-token";
pub(crate) const CAMERA: &str = "98:90:96:9a:86:df";
pub(crate) const PLUG: &str = "50:02:91:00:00:01";
pub(crate) const ABSENT: &str = "02:00:00:00:00:99";

pub(crate) fn test_config(metrics_public: bool) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec![
            TokenEntry { name: "vera".into(), role: Role::Viewer, token_sha256: auth::TokenHash::of(VIEWER_TOKEN) },
            TokenEntry { name: "otto".into(), role: Role::Operator, token_sha256: auth::TokenHash::of(OPERATOR_TOKEN) },
        ],
        metrics_public,
        ..Config::default()
    }
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let path = std::env::temp_dir().join(format!("iotgw-api-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real inventory in a SQLite file, fed like the controller feeds it: the camera
/// (192.168.1.20, enrolled in class `camera`) and the plug (192.168.1.21, never enrolled) each
/// opened three HTTPS flows.
pub(crate) struct Fixture {
    pub dir: TempDir,
    pub inventory: Arc<Mutex<Inventory>>,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = TempDir::new();
        let conn = crate::schema::open(&dir.0.join("iotgw.db")).unwrap();
        let mut inventory = Inventory::new(conn, crate::inventory::Vendors::empty(), None);
        let now = SystemTime::now();
        for (mac, ip, age) in [(PLUG, "192.168.1.21", 60), (CAMERA, "192.168.1.20", 10)] {
            let mac: Mac = mac.parse().unwrap();
            for i in 0..3u16 {
                let flow = FlowObservation {
                    time: now - Duration::from_secs(age - u64::from(i)),
                    mac,
                    src: ip.parse().unwrap(),
                    dst: "203.0.113.7".parse().unwrap(),
                    src_port: 40_000 + i,
                    dst_port: 443,
                    proto: gateway_ebpf::proto::TCP,
                    frame_bytes: 74,
                    tcp_flags: 0x02,
                    syn: None,
                    verdict: gateway_ebpf::verdict::PASS,
                    reason: gateway_ebpf::reason::NONE,
                    access: Access::Unknown,
                };
                inventory.handle(&DatapathEvent::Flow(flow)).unwrap();
            }
        }
        let camera: Mac = CAMERA.parse().unwrap();
        inventory.set_access(camera, Access::Enrolled, "enrollment", "certificate issued").unwrap();
        inventory.set_class(camera, "camera", "policy-file").unwrap();
        Self { dir, inventory: Arc::new(Mutex::new(inventory)) }
    }

    pub(crate) fn directory(&self) -> Arc<InventoryDirectory> {
        Arc::new(InventoryDirectory::new(self.inventory.clone()))
    }

    /// Access-change audit rows of `mac`, read through a connection of their own (so from the
    /// file, not from the API's handle).
    pub(crate) fn access_audit(&self, mac: &str) -> Vec<(String, String)> {
        let conn = crate::schema::open(&self.dir.0.join("iotgw.db")).unwrap();
        let mut statement = conn
            .prepare(
                "SELECT actor, detail FROM inventory_audit WHERE mac = ?1 AND action = 'access_changed' ORDER BY id",
            )
            .unwrap();
        statement
            .query_map([mac], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    pub(crate) fn stored_access(&self, mac: &str) -> String {
        let conn = crate::schema::open(&self.dir.0.join("iotgw.db")).unwrap();
        conn.query_row("SELECT access FROM inventory_devices WHERE mac = ?1", [mac], |row| row.get(0)).unwrap()
    }
}

/// A running API server.
pub(crate) struct Server {
    pub base: String,
    pub datapath: Arc<MemoryDatapath>,
    pub state: ApiState,
    trigger: crate::shutdown::Trigger,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

/// The SOAR caller `Server::start_with` mounts, as the controller does.
pub(crate) const SOAR_TOKEN: &str = "soar-secret-token";

/// What else a test server runs.
#[derive(Default)]
pub(crate) struct Options {
    /// Mount the SOAR routes at /api/v1/soar over this store (caller `xsoar`, `SOAR_TOKEN`).
    pub soar_store: Option<std::path::PathBuf>,
    pub limits: server::Limits,
}

impl Server {
    pub(crate) async fn start(directory: Arc<dyn DeviceDirectory>, metrics_public: bool) -> Self {
        Self::start_with(directory, metrics_public, Options::default()).await
    }

    pub(crate) async fn start_with(
        directory: Arc<dyn DeviceDirectory>,
        metrics_public: bool,
        options: Options,
    ) -> Self {
        let datapath = Arc::new(MemoryDatapath::default());
        let camera: Mac = CAMERA.parse().unwrap();
        datapath
            .set_access(
                camera,
                DeviceAccess {
                    access: Access::Enrolled,
                    policy_id: gateway_ebpf::lane::FIRST_CLASS_POLICY + 1,
                    class_id: 1,
                },
            )
            .unwrap();
        let config = test_config(metrics_public);
        let state = ApiState::new(&config, directory, datapath.clone()).unwrap().with_interfaces(vec![
            model::AttachedInterface { name: "lan0".into(), role: "lan".into(), mode: "generic".into() },
        ]);
        let listener = bind(&config).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut app = router(state.clone());
        if let Some(store) = &options.soar_store {
            let mut integrations = crate::integrations::Config::default();
            integrations.soar.callers = vec![crate::integrations::config::SoarCaller {
                name: "xsoar".into(),
                token: Some(SOAR_TOKEN.into()),
                secret: None,
            }];
            let soar =
                crate::integrations::SoarState::new(&integrations, store, datapath.clone(), state.events.clone())
                    .unwrap()
                    .with_action_lock(state.action_lock())
                    .with_failure_limiter(state.failure_limiter());
            app = app.nest("/api/v1/soar", crate::integrations::router(soar));
        }
        let task = tokio::spawn(serve_with(listener, app, None, options.limits, shutdown));
        Self { base, datapath, state, trigger, task }
    }

    pub(crate) async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await.unwrap().unwrap().unwrap();
    }

    fn access(&self, mac: &str) -> Option<Access> {
        self.datapath.access(mac.parse().unwrap()).unwrap().map(|a| a.access)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap()
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> reqwest::Response {
    let request = client().get(format!("{}{path}", server.base));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap()
}

async fn post(server: &Server, path: &str, token: &str, body: Option<&str>) -> reqwest::Response {
    let request = client().post(format!("{}{path}", server.base)).bearer_auth(token);
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(body.to_owned()),
        None => request,
    };
    request.send().await.unwrap()
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn viewer_reads_status_devices_device_flows_and_policies() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let status = get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await;
    assert_eq!(status.status(), StatusCode::OK);
    let status = json(status).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["devices"]["enrolled"], 1);
    assert_eq!(status["devices"]["unknown"], 1);
    assert_eq!(status["devices"]["blocked"], 0);
    assert_eq!(status["datapath"]["interfaces"][0]["name"], "lan0");

    let devices = json(get(&server, "/api/v1/devices", Some(VIEWER_TOKEN)).await).await;
    assert_eq!(devices.as_array().unwrap().len(), 2);
    assert_eq!(devices[0]["mac"], CAMERA, "most recently seen first");
    assert_eq!(devices[0]["policy"], "camera");
    assert_eq!(devices[0]["ips"][0], "192.168.1.20");

    let device = json(get(&server, &format!("/api/v1/devices/{CAMERA}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(device["ips"][0], "192.168.1.20");
    assert_eq!(device["flows_total"], 3);
    assert_eq!(device["enforcement"]["access"], "enrolled");
    assert!(device["restore_access"].is_null());

    let flows = get(&server, &format!("/api/v1/devices/{CAMERA}/flows?limit=2"), Some(VIEWER_TOKEN)).await;
    assert_eq!(flows.status(), StatusCode::OK);
    assert_eq!(json(flows).await.as_array().unwrap().len(), 2);

    let policies = get(&server, "/api/v1/policies", Some(VIEWER_TOKEN)).await;
    assert_eq!(policies.status(), StatusCode::OK);
    assert!(json(policies).await["classes"].is_array());
    server.stop().await;
}

#[tokio::test]
async fn unauthenticated_requests_get_401_with_a_bearer_challenge() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    for token in [None, Some("not-a-token")] {
        for path in ["/api/v1/status", "/api/v1/devices", "/api/v1/policies", "/metrics"] {
            let response = get(&server, path, token).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} {token:?}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    let response = client().post(format!("{}/api/v1/devices/{CAMERA}/quarantine", server.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Basic credentials are not a bearer token.
    let response = client()
        .get(format!("{}/api/v1/status", server.base))
        .basic_auth("otto", Some(OPERATOR_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    server.stop().await;
}

#[tokio::test]
async fn viewer_actions_are_refused_with_403_and_change_nothing() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    for action in ["quarantine", "release", "block"] {
        let response = post(&server, &format!("/api/v1/devices/{CAMERA}/{action}"), VIEWER_TOKEN, None).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{action}");
        assert!(json(response).await["error"].as_str().unwrap().contains("operator"));
    }
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    assert_eq!(fixture.access_audit(CAMERA).len(), 1, "only the enrollment");
    assert_eq!(fixture.stored_access(CAMERA), "enrolled");
    server.stop().await;
}

#[tokio::test]
async fn operator_quarantine_enforces_in_the_datapath_and_is_audited() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let response = post(
        &server,
        &format!("/api/v1/devices/{CAMERA}/quarantine"),
        OPERATOR_TOKEN,
        Some(r#"{"reason":"INC-42 scan"}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!(body["previous"], "enrolled");
    assert_eq!(body["access"], "quarantined");
    assert_eq!(body["changed"], true);
    assert_eq!(body["actor"], "api:otto");
    assert_eq!(server.access(CAMERA), Some(Access::Quarantined));
    // The class policy survives isolation, so release can give it back.
    let entry = server.datapath.access(CAMERA.parse().unwrap()).unwrap().unwrap();
    assert_eq!(entry.policy_id, gateway_ebpf::lane::FIRST_CLASS_POLICY + 1);
    assert_eq!(fixture.stored_access(CAMERA), "quarantined");
    let audit = fixture.access_audit(CAMERA);
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1], ("api:otto".to_owned(), "enrolled -> quarantined: quarantine: INC-42 scan".to_owned()));

    // A second quarantine changes and records nothing.
    let again = json(post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, None).await).await;
    assert_eq!(again["changed"], false);
    assert_eq!(fixture.access_audit(CAMERA).len(), 2);

    let detail = json(get(&server, &format!("/api/v1/devices/{CAMERA}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(detail["restore_access"], "enrolled");
    assert_eq!(detail["audit"][0]["actor"], "api:otto");
    assert_eq!(detail["audit"][0]["from"], "enrolled");
    assert_eq!(detail["audit"][0]["to"], "quarantined");
    server.stop().await;
}

#[tokio::test]
async fn release_restores_the_access_held_before_quarantine_and_block() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let mac = CAMERA;
    for action in ["quarantine", "block"] {
        let response = post(&server, &format!("/api/v1/devices/{mac}/{action}"), OPERATOR_TOKEN, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{action}");
    }
    assert_eq!(server.access(mac), Some(Access::Blocked));
    let released = json(post(&server, &format!("/api/v1/devices/{mac}/release"), OPERATOR_TOKEN, None).await).await;
    assert_eq!(released["previous"], "blocked");
    assert_eq!(released["access"], "enrolled");
    assert_eq!(server.access(mac), Some(Access::Enrolled));
    assert_eq!(fixture.access_audit(mac).len(), 4);
    assert_eq!(fixture.stored_access(mac), "enrolled");

    // The plug was onboarding (no datapath entry): release puts it back there, not enrolled.
    post(&server, &format!("/api/v1/devices/{PLUG}/block"), OPERATOR_TOKEN, None).await;
    assert_eq!(server.access(PLUG), Some(Access::Blocked));
    let released = json(post(&server, &format!("/api/v1/devices/{PLUG}/release"), OPERATOR_TOKEN, None).await).await;
    assert_eq!(released["access"], "unknown");
    assert_eq!(server.access(PLUG), None);

    // Nothing to release any more.
    let response = post(&server, &format!("/api/v1/devices/{mac}/release"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    server.stop().await;
}

#[tokio::test]
async fn unknown_device_is_404_and_bad_input_is_400_with_nothing_changed() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    assert_eq!(
        get(&server, &format!("/api/v1/devices/{ABSENT}"), Some(VIEWER_TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&server, &format!("/api/v1/devices/{ABSENT}/flows"), Some(VIEWER_TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    let response = post(&server, &format!("/api/v1/devices/{ABSENT}/quarantine"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.access(ABSENT), None);

    let response = get(&server, "/api/v1/devices/not-a-mac", Some(VIEWER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(json(response).await["error"].as_str().unwrap().contains("not a MAC address"));
    assert_eq!(
        post(&server, "/api/v1/devices/98:90:96/block", OPERATOR_TOKEN, None).await.status(),
        StatusCode::BAD_REQUEST
    );
    for query in ["limit=0", "limit=100000", "limit=x", "bogus=1"] {
        let response = get(&server, &format!("/api/v1/devices/{CAMERA}/flows?{query}"), Some(VIEWER_TOKEN)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    // A reason with a line break is escaped, not refused: see
    // `an_api_reason_forging_a_syslog_line_is_escaped_in_the_audit_and_every_rendering`.
    for body in ["{", r#"{"reason": 5}"#, r#"{"why": "x"}"#] {
        let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let long = format!(r#"{{"reason": "{}"}}"#, "x".repeat(handlers::MAX_REASON_BYTES + 1));
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(&long)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    assert_eq!(fixture.access_audit(CAMERA).len(), 1);
    assert!(fixture.access_audit(ABSENT).is_empty());
    assert_eq!(get(&server, "/api/v1/nothing", Some(VIEWER_TOKEN)).await.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn unrecorded_action_is_undone_in_the_datapath() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    // The store refuses writes from the API's handle (as with a full disk or a lost lock).
    fixture.inventory.lock().unwrap().connection().pragma_update(None, "query_only", true).unwrap();
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/block"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    let response = post(&server, &format!("/api/v1/devices/{PLUG}/block"), OPERATOR_TOKEN, None).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(server.access(PLUG), None);
    assert_eq!(fixture.stored_access(CAMERA), "enrolled");
    assert_eq!(fixture.access_audit(CAMERA).len(), 1);
    server.stop().await;
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1)).map(|s| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    })
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_actions_and_devices() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, None).await;
    let mut stats = vec![0u64; gateway_ebpf::counter::COUNT as usize];
    stats[(gateway_ebpf::counter::DROPS_BASE + gateway_ebpf::reason::QUARANTINE) as usize] = 17;
    server.state.metrics.set_datapath_counters(DatapathCounters::from_global_stats(&stats));
    server.state.metrics.set_integration_backlog("syslog", 3);

    let response = get(&server, "/metrics", Some(VIEWER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let scrape = scrape(&response.text().await.unwrap());
    assert_eq!(sample(&scrape, "iotgw_devices", ("state", "quarantined")), Some(1.0));
    assert_eq!(sample(&scrape, "iotgw_devices", ("state", "unknown")), Some(1.0));
    assert_eq!(sample(&scrape, "iotgw_devices", ("state", "enrolled")), Some(0.0));
    assert_eq!(sample(&scrape, "iotgw_actions_total", ("action", "quarantine")), Some(1.0));
    let reason = gateway_ebpf::reason::NAMES[gateway_ebpf::reason::QUARANTINE as usize];
    assert_eq!(sample(&scrape, "iotgw_datapath_drops_total", ("reason", reason)), Some(17.0));
    assert_eq!(sample(&scrape, "iotgw_integration_backlog", ("sink", "syslog")), Some(3.0));

    let status = json(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await).await;
    assert_eq!(status["datapath"]["counters"]["drops"][reason], 17);
    assert_eq!(status["integration_backlog"]["syslog"], 3);
    server.stop().await;

    let fixture = Fixture::new();
    let open = Server::start(fixture.directory(), true).await;
    assert_eq!(get(&open, "/metrics", None).await.status(), StatusCode::OK);
    assert_eq!(get(&open, "/api/v1/status", None).await.status(), StatusCode::UNAUTHORIZED);
    open.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_every_route_and_the_bearer_scheme() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let response = get(&server, "/api/v1/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document = json(response).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (path, method) in [
        ("/api/v1/status", "get"),
        ("/api/v1/devices", "get"),
        ("/api/v1/devices/{mac}", "get"),
        ("/api/v1/devices/{mac}/flows", "get"),
        ("/api/v1/policies", "get"),
        ("/api/v1/devices/{mac}/quarantine", "post"),
        ("/api/v1/devices/{mac}/release", "post"),
        ("/api/v1/devices/{mac}/block", "post"),
        ("/metrics", "get"),
        ("/api/v1/soar/actions", "post"),
    ] {
        assert!(document["paths"][path][method].is_object(), "{method} {path} missing");
    }
    assert!(document["components"]["schemas"]["DeviceDetail"].is_object());
    server.stop().await;
}

#[tokio::test]
async fn policies_show_what_the_policy_component_published() {
    let policies = Arc::new(SharedPolicy::default());
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let state = server.state.clone().with_policies(policies.clone());
    let (trigger, shutdown) = crate::shutdown::channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(serve_on(listener, router(state), None, shutdown));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let compiled = crate::policy::check(&[dir]).unwrap();
    policies.set(policy_view::snapshot(&compiled));
    policies.refused("camera.toml:3:1: bad".into());
    let body: serde_json::Value = client()
        .get(format!("{base}/api/v1/policies"))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["classes"].as_array().unwrap().len(), compiled.classes.len());
    assert_eq!(body["version"], policy_view::version(&compiled));
    assert_eq!(body["last_refused"], "camera.toml:3:1: bad");
    let status: serde_json::Value = client()
        .get(format!("{base}/api/v1/status"))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["policy_version"], policy_view::version(&compiled));
    trigger.trigger();
    task.await.unwrap().unwrap();
    server.stop().await;
}

#[test]
fn api_section_of_the_gateway_config_parses_and_bad_hashes_point_at_their_line() {
    let path = std::path::Path::new("gateway.toml");
    let config = crate::config::parse(path, "").unwrap();
    assert_eq!(config.api.listen, DEFAULT_LISTEN);
    assert!(config.api.listen.ip().is_loopback());
    assert!(!config.api.metrics_public);

    let hash = auth::TokenHash::of(OPERATOR_TOKEN);
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:9090\"\nmetrics_public = true\ntokens = [\n  {{ name = \"otto\", role = \"operator\", token_sha256 = \"{}\" }},\n]\n",
        hex::encode(hash.0)
    );
    let config = crate::config::parse(path, &text).unwrap();
    assert_eq!(config.api.listen.port(), 9090);
    let set = TokenSet::load(&config.api).unwrap();
    assert_eq!(set.authenticate(OPERATOR_TOKEN).map(|c| c.role), Some(Role::Operator));

    let bad = "[api]\ntokens = [\n  { name = \"otto\", role = \"operator\", token_sha256 = \"plain-token\" },\n]\n";
    let error = crate::config::parse(path, bad).unwrap_err().to_string();
    assert!(error.starts_with("gateway.toml:3:") && error.contains("64 hex digits"), "{error}");
    let error = crate::config::parse(path, "[api]\nrole = \"admin\"\n").unwrap_err().to_string();
    assert!(error.contains("unknown field"), "{error}");
}

// --- hardening: SOAR beside the API, forged lines, throttling, limits ----------------------

async fn soar_post(server: &Server, body: serde_json::Value, key: &str) -> reqwest::Response {
    client()
        .post(format!("{}/api/v1/soar/actions", server.base))
        .bearer_auth(SOAR_TOKEN)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn start_with_soar(fixture: &Fixture) -> Server {
    let options = Options { soar_store: Some(fixture.dir.0.join("iotgw.db")), ..Options::default() };
    Server::start_with(fixture.directory(), false, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_quarantined_through_soar_is_shown_and_released_through_the_api() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let quarantine = json!({ "action": "quarantine", "device": CAMERA.to_uppercase(), "reason": "XSOAR case 7" });
    let response = soar_post(&server, quarantine, "case-7").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.access(CAMERA), Some(Access::Quarantined));
    // The inventory knows what the playbook did, with who and why.
    assert_eq!(fixture.stored_access(CAMERA), "quarantined");
    assert_eq!(
        fixture.access_audit(CAMERA).last().unwrap(),
        &("soar:xsoar".to_owned(), "enrolled -> quarantined: quarantine: XSOAR case 7".to_owned())
    );
    let detail = json(get(&server, &format!("/api/v1/devices/{CAMERA}"), Some(VIEWER_TOKEN)).await).await;
    assert_eq!(detail["restore_access"], "enrolled");

    let release = post(&server, &format!("/api/v1/devices/{CAMERA}/release"), OPERATOR_TOKEN, None).await;
    assert_eq!(release.status(), StatusCode::OK, "{}", release.text().await.unwrap());
    let entry = server.datapath.access(CAMERA.parse().unwrap()).unwrap().unwrap();
    assert_eq!(entry.access, Access::Enrolled);
    assert_eq!(entry.policy_id, gateway_ebpf::lane::FIRST_CLASS_POLICY + 1, "class policy back");
    assert_eq!(fixture.stored_access(CAMERA), "enrolled");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_soar_quarantined_before_the_inventory_saw_it_is_released_through_the_api() {
    // Before: SOAR wrote only the datapath, so the API answered 404 for this MAC (listing,
    // showing and releasing it) while XDP kept it quarantined.
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let response = soar_post(&server, json!({ "action": "quarantine", "device": ABSENT }), "intel-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.access(ABSENT), Some(Access::Quarantined));
    let detail = get(&server, &format!("/api/v1/devices/{ABSENT}"), Some(VIEWER_TOKEN)).await;
    assert_eq!(detail.status(), StatusCode::OK);
    assert_eq!(json(detail).await["enforcement"]["access"], "quarantined");

    let release = post(&server, &format!("/api/v1/devices/{ABSENT}/release"), OPERATOR_TOKEN, None).await;
    assert_eq!(release.status(), StatusCode::OK, "{}", release.text().await.unwrap());
    assert_eq!(server.access(ABSENT), None, "back to what it was: no entry in the device table");
    assert_eq!(fixture.stored_access(ABSENT), "unknown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soar_body_over_16_kib_is_refused_with_413_and_stores_nothing() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let reason = "x".repeat(MAX_BODY_BYTES);
    let response =
        soar_post(&server, json!({ "action": "quarantine", "device": CAMERA, "reason": reason }), "big").await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json(response).await["error"].as_str().unwrap().contains("16384"));
    // A 1 MiB reason, the size that was stored before. The server may answer and close before
    // the client has written it all (the client then sees a reset): either way, nothing acts.
    let reason = "x".repeat(1 << 20);
    let body = json!({ "action": "quarantine", "device": CAMERA, "reason": reason }).to_string();
    let sent = client()
        .post(format!("{}/api/v1/soar/actions", server.base))
        .bearer_auth(SOAR_TOKEN)
        .header("idempotency-key", "huge")
        .body(body)
        .send()
        .await;
    if let Ok(response) = sent {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    let conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM integration_audit", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 0);
    server.stop().await;
}

/// A reason forging a syslog record, with a Unicode line separator and a bidi override.
const FORGED_REASON: &str = "INC-1\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - released\u{2028}ok\u{202e}gpj.exe";
/// The same, escaped (`untrusted`).
const FORGED_ESCAPED: &str = "INC-1\\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - released\\u2028ok\\u202egpj.exe";

#[tokio::test]
async fn an_api_reason_forging_a_syslog_line_is_escaped_in_the_audit_and_every_rendering() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let mut events = server.state.events.subscribe();
    let body = json!({ "reason": FORGED_REASON }).to_string();
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    crate::integrations::render::fixtures::assert_renders_safely(&event, FORGED_ESCAPED);
    let (_, detail) = fixture.access_audit(CAMERA).pop().unwrap();
    assert_eq!(detail, format!("enrolled -> quarantined: quarantine: {FORGED_ESCAPED}"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soar_reason_forging_a_syslog_line_is_escaped_in_the_audit_and_every_rendering() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let mut events = server.state.events.subscribe();
    let response =
        soar_post(&server, json!({ "action": "block", "device": CAMERA, "reason": FORGED_REASON }), "forge-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    crate::integrations::render::fixtures::assert_renders_safely(&event, FORGED_ESCAPED);
    let conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    let detail: String = conn.query_row("SELECT detail FROM integration_audit", [], |r| r.get(0)).unwrap();
    assert_eq!(detail, FORGED_ESCAPED);
    // A key is an identifier: refused, not rewritten.
    let body = json!({ "action": "tag", "device": CAMERA, "tag": "x", "action_id": "k\nforged" });
    let response = client()
        .post(format!("{}/api/v1/soar/actions", server.base))
        .bearer_auth(SOAR_TOKEN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(json(response).await["error"].as_str().unwrap().contains("k\\nforged"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_throttled_per_source_with_429_and_retry_after() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let (mut unauthorized, mut throttled) = (0, 0);
    let start = std::time::Instant::now();
    for attempt in 0..200 {
        let response = get(&server, "/api/v1/status", Some(&format!("guess-{attempt}"))).await;
        match response.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&wait), "{wait}");
                assert!(json(response).await["error"].as_str().unwrap().contains("too many"));
            }
            other => panic!("attempt {attempt}: {other}"),
        }
    }
    let elapsed = start.elapsed();
    // The burst of 10, plus one per second the loop took.
    let allowed = 10 + elapsed.as_secs() as usize + 1;
    assert!(unauthorized <= allowed, "{unauthorized} bad tokens looked at in {elapsed:?}");
    assert_eq!(unauthorized + throttled, 200);
    eprintln!("200 bad-token requests in {elapsed:?}: {unauthorized} answered 401, {throttled} answered 429");
    // The source is throttled on the SOAR route too, and even a good token waits.
    let response = soar_post(&server, json!({ "action": "tag", "device": CAMERA, "tag": "x" }), "t-1").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // After the wait, a good token is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn errors_405_413_414_431_carry_the_json_error_body() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let check = |what: &'static str, expected: StatusCode| {
        move |response: reqwest::Response| async move {
            assert_eq!(response.status(), expected, "{what}");
            assert_eq!(response.headers()["content-type"], "application/json", "{what}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(!body["error"].as_str().unwrap().is_empty(), "{what}: {body}");
            body
        }
    };
    let response = client().delete(format!("{}/api/v1/status", server.base)).send().await.unwrap();
    assert!(response.headers()["allow"].to_str().unwrap().contains("GET"));
    check("405", StatusCode::METHOD_NOT_ALLOWED)(response).await;
    let big = json!({ "reason": "x".repeat(MAX_BODY_BYTES) }).to_string();
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(&big)).await;
    check("413", StatusCode::PAYLOAD_TOO_LARGE)(response).await;
    let long = format!("/api/v1/devices/{}", "a".repeat(server::MAX_URI_BYTES));
    check("414", StatusCode::URI_TOO_LONG)(get(&server, &long, Some(VIEWER_TOKEN)).await).await;
    let response = client()
        .get(format!("{}/api/v1/status", server.base))
        .bearer_auth(VIEWER_TOKEN)
        .header("x-padding", "p".repeat(server::MAX_HEADER_BYTES))
        .send()
        .await
        .unwrap();
    check("431", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)(response).await;
    let mut many = client().get(format!("{}/api/v1/status", server.base)).bearer_auth(VIEWER_TOKEN);
    for i in 0..=server::MAX_HEADERS {
        many = many.header(format!("x-h{i}"), "1");
    }
    check("431 (count)", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)(many.send().await.unwrap()).await;
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    server.stop().await;
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fixture = Fixture::new();
    let limits = server::Limits { header_read_timeout: Duration::from_millis(300), ..server::Limits::default() };
    let server = Server::start_with(fixture.directory(), false, Options { limits, ..Options::default() }).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    // Reads until the server closes; panics if it has not within `limit`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
        let mut read = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut read))
            .await
            .expect("the server closed the connection in time")
            .ok();
        read
    }
    // Sends nothing at all.
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(3)).await;
    // Sends half a head (slowloris).
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    closed_within(&mut slow, Duration::from_secs(3)).await;
    // Keeps a served connection open without a next request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..answer.len().min(80)]));
    eprintln!("three connections closed by the server in {:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn one_source_cannot_hold_more_than_its_share_of_connections() {
    use tokio::io::AsyncReadExt as _;
    let fixture = Fixture::new();
    let limits = server::Limits { max_connections_per_source: 4, ..server::Limits::default() };
    let server = Server::start_with(fixture.directory(), false, Options { limits, ..Options::default() }).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The fifth is closed at once (well before the 10 s head timeout).
    let mut fifth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), fifth.read_to_end(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the fifth connection was not closed: {read:?}");
    // The four held ones are still open.
    let mut byte = [0u8; 1];
    let still = tokio::time::timeout(Duration::from_millis(200), held[0].read(&mut byte)).await;
    assert!(still.is_err(), "a held connection was closed: {still:?}");
    // Once they are gone, the source is served again.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        // Until the server has seen the four close, a new connection may still be turned away.
        let response = client().get(format!("{}/api/v1/status", server.base)).bearer_auth(VIEWER_TOKEN).send().await;
        if response.is_ok_and(|r| r.status() == StatusCode::OK) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    server.stop().await;
}

#[test]
fn an_api_beyond_loopback_needs_tls_or_an_explicit_insecure_plaintext() {
    let path = std::path::Path::new("gateway.toml");
    let error = crate::config::parse(path, "[api]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err().to_string();
    assert!(error.contains("beyond loopback") && error.contains("insecure_plaintext"), "{error}");
    let error = crate::config::parse(path, "[api]\nlisten = \"[::]:8080\"\n").unwrap_err().to_string();
    assert!(error.contains("beyond loopback"), "{error}");
    let error = crate::config::parse(path, "[api]\ntls_cert = \"/c.pem\"\n").unwrap_err().to_string();
    assert!(error.contains("tls_cert and api.tls_key must be set together"), "{error}");
    let plain = crate::config::parse(path, "[api]\nlisten = \"0.0.0.0:8080\"\ninsecure_plaintext = true\n").unwrap();
    assert!(!plain.api.tls());
    let tls = "[api]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n";
    assert!(crate::config::parse(path, tls).unwrap().api.tls());
}

/// An API server over TLS with a self-signed certificate for 127.0.0.1 (as an operator would
/// install one), in `fixture`'s folder.
pub(crate) struct TlsServer {
    pub addr: std::net::SocketAddr,
    pub config: Config,
    pub cert: rcgen::Certificate,
    pub cert_path: std::path::PathBuf,
    trigger: crate::shutdown::Trigger,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl TlsServer {
    pub(crate) async fn start(fixture: &Fixture) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (fixture.dir.0.join("api.pem"), fixture.dir.0.join("api.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let config = Config { tls_cert: Some(cert_path.clone()), tls_key: Some(key_path), ..test_config(false) };
        let tls = tls_config(&config).unwrap().expect("TLS configured");
        let datapath = Arc::new(MemoryDatapath::default());
        datapath
            .set_access(
                CAMERA.parse().unwrap(),
                DeviceAccess {
                    access: Access::Enrolled,
                    policy_id: gateway_ebpf::lane::FIRST_CLASS_POLICY,
                    class_id: 1,
                },
            )
            .unwrap();
        let state = ApiState::new(&config, fixture.directory(), datapath).unwrap();
        let listener = bind(&config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let task = tokio::spawn(serve_on(listener, router(state), Some(tls), shutdown));
        Self { addr, config, cert, cert_path, trigger, task }
    }

    pub(crate) async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_tls_to_a_real_tls_client() {
    let fixture = Fixture::new();
    let server = TlsServer::start(&fixture).await;
    let (addr, cert) = (server.addr, &server.cert);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https =
        reqwest::Client::builder().use_preconfigured_tls(client_tls).timeout(Duration::from_secs(10)).build().unwrap();
    let response = https.get(format!("https://{addr}/api/v1/status")).bearer_auth(VIEWER_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["devices"]["enrolled"], 1);
    let response = https.get(format!("https://{addr}/api/v1/status")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "tokens still checked over TLS");
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(client().get(format!("http://{addr}/api/v1/status")).bearer_auth(VIEWER_TOKEN).send().await.is_err());
    // A client that does not trust the certificate cannot talk to it.
    let untrusting = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    assert!(untrusting.get(format!("https://{addr}/api/v1/openapi.json")).send().await.is_err());

    // A key that does not parse is a clear error, before anything is served.
    std::fs::write(server.config.tls_key.as_ref().unwrap(), "not a key").unwrap();
    let error = tls_config(&server.config).unwrap_err().to_string();
    assert!(error.contains("api.key") && error.contains("no private key"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_gets_408_with_the_json_error_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fixture = Fixture::new();
    let limits = server::Limits { request_timeout: Duration::from_millis(300), ..server::Limits::default() };
    let server = Server::start_with(fixture.directory(), false, Options { limits, ..Options::default() }).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/devices/{CAMERA}/quarantine HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"reason\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("content-type: application/json") && answer.contains("{\"error\":"), "{answer}");
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled), "nothing acted");
    server.stop().await;
}
