//! The local HTTP API: status, inventory (searched and paged: `search`), audit log, flows,
//! policies and the operator actions (quarantine, release, block), Prometheus metrics and the
//! OpenAPI document.
//!
//! Reads the inventory through `DeviceDirectory` (SQLite, called off the runtime), the running
//! policy through `PolicySource` and the datapath through `datapath::Control`. Writes only
//! through the actions: `Control::set_access` then an audit entry via the directory, and an
//! `Action` event on the `EventBus`. Bound to 127.0.0.1 by default; every endpoint but the
//! OpenAPI document needs a bearer token (see `auth`) or the console's session cookie
//! (`signin`, `session`, `users`; `gate` holds them for this server and the fleet hub's), and a source that keeps presenting bad credentials is
//! answered 429 (`throttle`). `server` holds the connection limits (timeouts, sizes,
//! JSON error bodies) and serves over TLS when `tls_cert` and `tls_key` are set; beyond
//! loopback, plain HTTP needs `insecure_plaintext = true`.
//!
//! `router(state)` returns a plain `axum::Router`, so the controller can merge other routers
//! (the SOAR actions of `soar`, mounted under `/api/v1/soar`) before handing it to `serve`.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use serde::Deserialize;

use crate::{datapath::Control, event::EventBus};

pub mod actions;
pub mod alert_summary;
pub mod alerts;
pub mod auth;
pub mod device_pages;
pub mod directory;
pub mod error;
pub mod exposition;
pub mod gate;
pub mod handlers;
pub mod inventory_directory;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod ota;
pub mod paging;
pub mod policy_view;
pub mod search;
pub mod server;
pub mod session;
pub mod signin;
pub mod soar;
pub mod stream;
pub mod throttle;
pub mod users;

pub use auth::{Caller, CallerKind, Role, TokenEntry, TokenSet, TokensError};
pub use directory::{AccessChange, DeviceDirectory, DirectoryError, PolicySource};
pub use error::ApiError;
pub use gate::{Authority, Gate};
pub use inventory_directory::InventoryDirectory;
pub use metrics::{DatapathCounters, Metrics};
pub use policy_view::SharedPolicy;
pub use users::{UserEntry, UserSet, UsersError};

/// Where the API listens unless configured: loopback only, so nothing off the box reaches it.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Largest request body accepted (actions carry at most a short reason).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The `[api]` section of the gateway config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Accepted tokens: `{ name, role = "viewer" | "operator" | "admin", token_sha256 }`.
    pub tokens: Vec<TokenEntry>,
    /// A TOML file of more `[[tokens]]` entries (kept apart so the config can be world-readable).
    pub tokens_file: Option<PathBuf>,
    /// Local console users: `{ name, role, password_argon2 }` (`iotgw user hash-password`).
    pub users: Vec<UserEntry>,
    /// A TOML file of more `[[users]]` entries.
    pub users_file: Option<PathBuf>,
    /// A console session not used for this long ends (default 1800).
    pub session_idle_secs: u64,
    /// A console session ends this long after sign-in, used or not (default 43200).
    pub session_max_secs: u64,
    /// Serve `/metrics` without a token (for a Prometheus that cannot send one).
    pub metrics_public: bool,
    /// PEM certificate chain and private key: with both, the API is served over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on an address beyond loopback (tokens then cross the network in clear).
    pub insecure_plaintext: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            tokens: Vec::new(),
            tokens_file: None,
            users: Vec::new(),
            users_file: None,
            session_idle_secs: session::DEFAULT_IDLE.as_secs(),
            session_max_secs: session::DEFAULT_MAX.as_secs(),
            metrics_public: false,
            tls_cert: None,
            tls_key: None,
            insecure_plaintext: false,
        }
    }
}

impl Config {
    /// Every semantic problem of the `[api]` section.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                problems.push("api.tls_cert and api.tls_key must be set together".to_owned());
            }
            (None, None) if !self.listen.ip().is_loopback() && !self.insecure_plaintext => problems.push(format!(
                "api.listen = {} is beyond loopback: set api.tls_cert and api.tls_key, or \
                 api.insecure_plaintext = true to send tokens in clear",
                self.listen
            )),
            _ => {}
        }
        problems.extend(users::problems(&self.users).into_iter().map(|problem| format!("api.users: {problem}")));
        let longest = session::LONGEST.as_secs();
        if !(1..=longest).contains(&self.session_idle_secs) || !(1..=longest).contains(&self.session_max_secs) {
            problems.push(format!("api.session_idle_secs and api.session_max_secs must be between 1 and {longest}"));
        } else if self.session_idle_secs > self.session_max_secs {
            problems.push(format!(
                "api.session_idle_secs = {} is longer than api.session_max_secs = {}",
                self.session_idle_secs, self.session_max_secs
            ));
        }
        problems
    }

    /// How long console sessions live.
    pub fn session_lifetimes(&self) -> session::Lifetimes {
        session::Lifetimes {
            idle: std::time::Duration::from_secs(self.session_idle_secs),
            max: std::time::Duration::from_secs(self.session_max_secs),
        }
    }

    /// Whether the API is served over TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub directory: Arc<dyn DeviceDirectory>,
    pub control: Control,
    pub metrics: Arc<Metrics>,
    pub policies: Arc<dyn PolicySource>,
    pub events: EventBus,
    /// Interfaces the XDP programs are attached to, for the status.
    pub interfaces: Arc<Vec<model::AttachedInterface>>,
    pub metrics_public: bool,
    /// The alert records; `None` in a server that keeps none (the alert endpoints then fail).
    pub alerts: Option<Arc<std::sync::Mutex<crate::alerts::AlertStore>>>,
    /// A connection with the OTA tables (`ota`); `None` in a server that shows no campaigns.
    pub ota: Option<Arc<std::sync::Mutex<rusqlite::Connection>>>,
    /// Committed alert changes, from the recorder's store and the API's (`stream`).
    alert_changes: crate::alerts::Changes,
    /// Ends the event streams (`stream`) when the server shuts down.
    shutdown: Option<crate::shutdown::Shutdown>,
    /// The detection loop, told of what analysts learn as normal (`alerts::learn`). Weak: the
    /// API must not keep the loop running past shutdown.
    pub pipeline: Option<tokio::sync::mpsc::WeakSender<crate::pipeline::Command>>,
    gate: Gate,
    started: Instant,
    action_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Why the API's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    Users(#[from] UsersError),
}

impl ApiState {
    /// Loads the tokens and users (and their files) named in `config`; no one is signed in.
    /// Metrics, policy source, event bus and interfaces start empty; set the shared ones with
    /// the `with_*` methods.
    pub fn new(
        config: &Config,
        directory: Arc<dyn DeviceDirectory>,
        control: Control,
    ) -> Result<Self, CredentialsError> {
        Ok(Self {
            directory,
            control,
            metrics: Arc::new(Metrics::new()),
            policies: Arc::new(SharedPolicy::default()),
            events: EventBus::default(),
            interfaces: Arc::new(Vec::new()),
            metrics_public: config.metrics_public,
            alerts: None,
            ota: None,
            alert_changes: crate::alerts::changes(),
            shutdown: None,
            pipeline: None,
            gate: Gate::new(config)?,
            started: Instant::now(),
            action_lock: Arc::default(),
        })
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn with_policies(mut self, policies: Arc<dyn PolicySource>) -> Self {
        self.policies = policies;
        self
    }

    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// Serves `alerts`, which then announces the analysts' changes on `alert_changes`.
    pub fn with_alerts(mut self, alerts: crate::alerts::AlertStore) -> Self {
        let alerts = alerts.announcing(self.alert_changes.clone());
        self.alerts = Some(Arc::new(std::sync::Mutex::new(alerts)));
        self
    }

    /// Shows the campaigns of the store `conn` is open on (with `ota::MIGRATIONS`).
    pub fn with_ota(mut self, conn: rusqlite::Connection) -> Self {
        self.ota = Some(Arc::new(std::sync::Mutex::new(conn)));
        self
    }

    /// Streams the alert changes announced on `changes`: the channel the recorder's store
    /// announces on (`AlertStore::announcing`). Call it before `with_alerts`, whose store then
    /// announces there too.
    pub fn with_alert_changes(mut self, changes: crate::alerts::Changes) -> Self {
        self.alert_changes = changes;
        self
    }

    /// Ends the event streams when `shutdown` fires (else they run until the client leaves).
    pub fn with_shutdown(mut self, shutdown: crate::shutdown::Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Tells `pipeline` what analysts learn as normal, without keeping it alive.
    pub fn with_pipeline(mut self, pipeline: &tokio::sync::mpsc::Sender<crate::pipeline::Command>) -> Self {
        self.pipeline = Some(pipeline.downgrade());
        self
    }

    pub fn with_interfaces(mut self, interfaces: Vec<model::AttachedInterface>) -> Self {
        self.interfaces = Arc::new(interfaces);
        self
    }

    /// Keeps the console's sessions in `sessions` (tests give it a clock of their own).
    pub fn with_sessions(mut self, sessions: session::SessionStore) -> Self {
        self.gate = self.gate.with_sessions(sessions);
        self
    }

    /// The lock every device action takes (API and SOAR), for routers acting beside the API.
    pub fn action_lock(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.action_lock.clone()
    }

    /// Throttles failed authentications with `failures` (shared with the SOAR routes).
    pub fn with_failure_limiter(mut self, failures: Arc<throttle::FailureLimiter>) -> Self {
        self.gate = self.gate.with_failure_limiter(failures);
        self
    }

    /// The failure limiter, for routers authenticating beside the API.
    pub fn failure_limiter(&self) -> Arc<throttle::FailureLimiter> {
        self.gate.failure_limiter()
    }
}

impl Authority for ApiState {
    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn count_auth_failure(&self) {
        self.metrics.record_auth_failure();
    }

    /// Into the inventory's ledger, and published on the event bus like other audit records.
    async fn audit(&self, actor: String, action: &'static str, detail: String) -> Result<(), ApiError> {
        let directory = self.directory.clone();
        let (stored_actor, stored_detail) = (actor.clone(), detail.clone());
        handlers::blocking(move || Ok(directory.record_audit(&stored_actor, action, &stored_detail)?)).await?;
        self.events.publish(crate::event::GatewayEvent::new(
            crate::event::Severity::Info,
            None,
            actor,
            crate::event::EventKind::Audit { action: action.to_owned(), detail },
        ));
        Ok(())
    }
}

/// The API's routes, with `state` applied. Merge other routers into it before `serve`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/status", get(handlers::status))
        // The searchable inventory (`search`).
        .route("/api/v1/devices", get(search::devices))
        .route("/api/v1/audit", get(search::audit))
        .route("/api/v1/summary", get(search::summary))
        .route("/api/v1/devices/{mac}", get(handlers::device))
        .route("/api/v1/devices/{mac}/flows", get(handlers::flows))
        .route("/api/v1/devices/{mac}/quarantine", post(handlers::quarantine))
        .route("/api/v1/devices/{mac}/release", post(handlers::release))
        .route("/api/v1/devices/{mac}/block", post(handlers::block))
        .route("/api/v1/policies", get(handlers::policies))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/summary", get(alert_summary::summary))
        .route("/api/v1/devices/{mac}/traffic", get(device_pages::traffic))
        .route("/api/v1/devices/{mac}/destinations", get(device_pages::destinations))
        .route("/api/v1/devices/{mac}/baseline", get(device_pages::baseline))
        .route("/api/v1/ota/campaigns", get(ota::campaigns))
        .route("/api/v1/ota/campaigns/{id}", get(ota::campaign_by_id))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/alerts/{id}", get(alerts::show).patch(alerts::change))
        .route("/api/v1/alerts/{id}/learn", post(alerts::learn).delete(alerts::unlearn))
        .route("/api/v1/openapi.json", get(handlers::openapi))
        .route("/metrics", get(handlers::metrics))
        .merge(signin::routes())
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Why the API could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("api server failed: {0}")]
    Serve(std::io::Error),
    /// An `[api]` setting that cannot work (see `Config::problems`).
    #[error("api config: {0}")]
    Config(String),
    /// The TLS certificate or key cannot be read or used.
    #[error("api TLS: {path}: {detail}")]
    Tls { path: PathBuf, detail: String },
}

/// Binds `config.listen`.
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, ServeError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ServeError::Config(problems.join("; ")));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
    if !config.listen.ip().is_loopback() && !config.tls() {
        tracing::warn!(addr = %config.listen, "api listens beyond loopback without TLS (insecure_plaintext): tokens cross the network in clear");
    }
    Ok(listener)
}

/// The rustls server configuration of `config.tls_cert` and `config.tls_key`, or `None` when
/// the API is served in plain HTTP.
pub fn tls_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, ServeError> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let tls_error = |path: &PathBuf, detail: String| ServeError::Tls { path: path.clone(), detail };
    let pem = std::fs::read(cert_path).map_err(|e| tls_error(cert_path, e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls_error(cert_path, "no certificate".into()));
    }
    let pem = std::fs::read(key_path).map_err(|e| tls_error(key_path, e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| tls_error(key_path, e.to_string()))?
        .ok_or_else(|| tls_error(key_path, "no private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(cert_path, e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// Serves `app` (from `router`, possibly merged with others) on `config.listen` until
/// `shutdown` fires, then lets in-flight requests finish.
pub async fn serve(config: &Config, app: Router, shutdown: crate::shutdown::Shutdown) -> Result<(), ServeError> {
    let tls = tls_config(config)?;
    serve_on(bind(config).await?, app, tls, shutdown).await
}

/// `serve` on an already bound listener (tests bind 127.0.0.1:0), with the default limits.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: crate::shutdown::Shutdown,
) -> Result<(), ServeError> {
    serve_with(listener, app, tls, server::Limits::default(), shutdown).await
}

/// `serve_on` with other limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: server::Limits,
    shutdown: crate::shutdown::Shutdown,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    tracing::info!(%addr, tls = tls.is_some(), "api listening");
    server::run(listener, app, tls, limits, shutdown).await
}

#[cfg(test)]
pub(crate) mod tests;
