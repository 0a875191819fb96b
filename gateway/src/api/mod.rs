//! The local HTTP API: status, inventory, flows, policies and the operator actions
//! (quarantine, release, block), Prometheus metrics and the OpenAPI document.
//!
//! Reads the inventory through `DeviceDirectory` (SQLite, called off the runtime), the running
//! policy through `PolicySource` and the datapath through `datapath::Control`. Writes only
//! through the actions: `Control::set_access` then an audit entry via the directory, and an
//! `Action` event on the `EventBus`. Bound to 127.0.0.1 by default; every endpoint but the
//! OpenAPI document needs a bearer token (see `auth`).
//!
//! `router(state)` returns a plain `axum::Router`, so the controller can merge other routers
//! (the SOAR webhook) before handing it to `serve`.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::HeaderMap,
    routing::{get, post},
};
use serde::Deserialize;

use crate::{datapath::Control, event::EventBus};

pub mod actions;
pub mod auth;
pub mod directory;
pub mod error;
pub mod handlers;
pub mod inventory_directory;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod policy_view;

pub use auth::{Caller, Role, TokenEntry, TokenSet, TokensError};
pub use directory::{AccessChange, DeviceDirectory, DirectoryError, PolicySource, SharedPolicy};
pub use error::ApiError;
pub use inventory_directory::InventoryDirectory;
pub use metrics::{DatapathCounters, Metrics};

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
    /// Accepted tokens: `{ name, role = "viewer" | "operator", token_sha256 }`.
    pub tokens: Vec<TokenEntry>,
    /// A TOML file of more `[[tokens]]` entries (kept apart so the config can be world-readable).
    pub tokens_file: Option<PathBuf>,
    /// Serve `/metrics` without a token (for a Prometheus that cannot send one).
    pub metrics_public: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { listen: DEFAULT_LISTEN, tokens: Vec::new(), tokens_file: None, metrics_public: false }
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
    tokens: Arc<TokenSet>,
    started: Instant,
    action_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ApiState {
    /// Loads the tokens (and the tokens file) named in `config`. Metrics, policy source, event
    /// bus and interfaces start empty; set the shared ones with the `with_*` methods.
    pub fn new(config: &Config, directory: Arc<dyn DeviceDirectory>, control: Control) -> Result<Self, TokensError> {
        let tokens = TokenSet::load(config)?;
        if tokens.is_empty() {
            tracing::warn!("no API tokens configured ([api] tokens or tokens_file): every API request will get 401");
        }
        Ok(Self {
            directory,
            control,
            metrics: Arc::new(Metrics::new()),
            policies: Arc::new(SharedPolicy::default()),
            events: EventBus::default(),
            interfaces: Arc::new(Vec::new()),
            metrics_public: config.metrics_public,
            tokens: Arc::new(tokens),
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

    pub fn with_interfaces(mut self, interfaces: Vec<model::AttachedInterface>) -> Self {
        self.interfaces = Arc::new(interfaces);
        self
    }

    /// The caller presenting the request's bearer token; counts refusals.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let header = headers.get(axum::http::header::AUTHORIZATION).map(|value| value.to_str());
        let result = match header {
            None => Err(ApiError::MissingToken),
            Some(Err(_)) => Err(ApiError::InvalidToken),
            Some(Ok(value)) => auth::bearer_token(value)
                .ok_or(ApiError::MissingToken)
                .and_then(|token| self.tokens.authenticate(token).ok_or(ApiError::InvalidToken)),
        };
        if result.is_err() {
            self.metrics.record_auth_failure();
        }
        result
    }
}

/// The API's routes, with `state` applied. Merge other routers into it before `serve`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/status", get(handlers::status))
        .route("/api/v1/devices", get(handlers::devices))
        .route("/api/v1/devices/{mac}", get(handlers::device))
        .route("/api/v1/devices/{mac}/flows", get(handlers::flows))
        .route("/api/v1/devices/{mac}/quarantine", post(handlers::quarantine))
        .route("/api/v1/devices/{mac}/release", post(handlers::release))
        .route("/api/v1/devices/{mac}/block", post(handlers::block))
        .route("/api/v1/policies", get(handlers::policies))
        .route("/api/v1/openapi.json", get(handlers::openapi))
        .route("/metrics", get(handlers::metrics))
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
}

/// Binds `config.listen`.
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, ServeError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
    if !config.listen.ip().is_loopback() {
        tracing::warn!(addr = %config.listen, "api listens beyond loopback without TLS: tokens cross the network in clear");
    }
    Ok(listener)
}

/// Serves `app` (from `router`, possibly merged with others) on `config.listen` until
/// `shutdown` fires, then lets in-flight requests finish.
pub async fn serve(config: &Config, app: Router, shutdown: crate::shutdown::Shutdown) -> Result<(), ServeError> {
    serve_on(bind(config).await?, app, shutdown).await
}

/// `serve` on an already bound listener (tests bind 127.0.0.1:0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    mut shutdown: crate::shutdown::Shutdown,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    tracing::info!(%addr, "api listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .map_err(ServeError::Serve)
}

#[cfg(test)]
pub(crate) mod tests;
