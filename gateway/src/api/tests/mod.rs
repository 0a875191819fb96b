//! Router tests: a real server on 127.0.0.1:0, real HTTP (reqwest), a real inventory in a
//! SQLite file of a temporary folder, and the in-memory datapath.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use reqwest::StatusCode;

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
pub(crate) const ADMIN_TOKEN: &str = "admin-secret-token";
/// The password of the local users `vic` (viewer), `opal` (operator) and `ada` (admin).
pub(crate) const PASSWORD: &str = "correct horse battery staple";
pub(crate) const CAMERA: &str = "98:90:96:9a:86:df";
pub(crate) const PLUG: &str = "50:02:91:00:00:01";
pub(crate) const ABSENT: &str = "02:00:00:00:00:99";

pub(crate) fn test_config(metrics_public: bool) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec![
            TokenEntry { name: "vera".into(), role: Role::Viewer, token_sha256: auth::TokenHash::of(VIEWER_TOKEN) },
            TokenEntry { name: "otto".into(), role: Role::Operator, token_sha256: auth::TokenHash::of(OPERATOR_TOKEN) },
            TokenEntry { name: "root".into(), role: Role::Admin, token_sha256: auth::TokenHash::of(ADMIN_TOKEN) },
        ],
        users: [("vic", Role::Viewer), ("opal", Role::Operator), ("ada", Role::Admin)]
            .into_iter()
            .map(|(name, role)| UserEntry { name: name.into(), role, password_argon2: users::cheap_hash(PASSWORD) })
            .collect(),
        metrics_public,
        ..Config::default()
    }
}

/// A directory removed when dropped (also when the test fails).
pub(crate) struct TempDir(pub iotgw_test_support::services::Scratch);

impl TempDir {
    pub(crate) fn new() -> Self {
        Self(iotgw_test_support::services::scratch("api"))
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
    /// Serve the alert endpoints over this store.
    pub alerts: Option<crate::alerts::AlertStore>,
    /// Show the campaigns of the store this connection is open on.
    pub ota: Option<rusqlite::Connection>,
    /// Publish on this bus (a small one makes a slow stream client lag).
    pub events: Option<crate::event::EventBus>,
    /// Keep sessions with this clock.
    pub session_clock: Option<crate::api::session::Clock>,
    /// Tell this queue what analysts learn as normal, as the controller tells the pipeline.
    pub pipeline: Option<tokio::sync::mpsc::Sender<crate::pipeline::Command>>,
    /// Show this policy at `/api/v1/policies`, as the controller's policy step publishes it.
    pub policies: Option<Arc<dyn PolicySource>>,
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
        let mut state = ApiState::new(&config, directory, datapath.clone()).unwrap().with_interfaces(vec![
            model::AttachedInterface { name: "lan0".into(), role: "lan".into(), mode: "generic".into() },
        ]);
        if let Some(alerts) = options.alerts {
            state = state.with_alerts(alerts);
        }
        if let Some(conn) = options.ota {
            state = state.with_ota(conn);
        }
        if let Some(events) = options.events {
            state = state.with_events(events);
        }
        if let Some(clock) = options.session_clock {
            state = state
                .with_sessions(crate::api::session::SessionStore::new(config.session_lifetimes()).with_clock(clock));
        }
        if let Some(pipeline) = &options.pipeline {
            state = state.with_pipeline(pipeline);
        }
        if let Some(policies) = options.policies {
            state = state.with_policies(policies);
        }
        let listener = bind(&config).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (trigger, shutdown) = crate::shutdown::channel();
        let state = state.with_shutdown(shutdown.clone());
        let mut app = router(state.clone());
        if let Some(store) = &options.soar_store {
            let mut integrations = crate::integrations::Config::default();
            integrations.soar.callers = vec![crate::integrations::config::SoarCaller {
                name: "xsoar".into(),
                token: Some(SOAR_TOKEN.into()),
                secret: None,
            }];
            let soar = super::soar::SoarState::new(&integrations, store, datapath.clone(), state.events.clone())
                .unwrap()
                .with_action_lock(state.action_lock())
                .with_failure_limiter(state.failure_limiter());
            app = app.nest("/api/v1/soar", super::soar::router(soar));
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

    /// An HTTPS client that trusts the server's certificate.
    pub(crate) fn client(&self) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(10)).build().unwrap()
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
    let addr = server.addr;
    let https = server.client();
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

pub(crate) async fn soar_post(server: &Server, body: serde_json::Value, key: &str) -> reqwest::Response {
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

pub(crate) async fn start_with_soar(fixture: &Fixture) -> Server {
    let options = Options { soar_store: Some(fixture.dir.0.join("iotgw.db")), ..Options::default() };
    Server::start_with(fixture.directory(), false, options).await
}

mod access;
mod actions;
mod alerts;
mod hardening;
mod observe;
mod pages;
mod policies;
mod search;
mod session;
mod stream;
