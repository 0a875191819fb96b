//! Signed firmware updates (OTA) through the gateway.
//!
//! - `metadata`: TUF roles, canonical-JSON Ed25519 signing and verification.
//! - `keys`: key files (written crash-safe with `crate::fsutil`).
//! - `repo`: the repository on disk (root, targets, vendor delegations, images); accepts vendor
//!   uploads only when signatures, hashes, expiry and versions check out.
//! - `rollout`: campaigns (staged groups, windows, automatic halt) and per-device views.
//! - `server`: HTTPS + mTLS update service with Range downloads and device reports.
//! - `client`: the device side (verifies metadata itself, resumes downloads, reports).
//! - `db`: the `ota_*` tables (component `ota` in the store).
//!
//! Reads the repository folder, its keys, the store and the event bus (alerts); writes the
//! store and audit events on the bus.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{
    event::{EventBus, EventKind, GatewayEvent, Severity},
    shutdown::Shutdown,
};

pub mod client;
pub mod db;
pub mod keys;
pub mod metadata;
pub mod repo;
pub mod rollout;
pub mod server;

/// Schema of the ota tables.
pub const MIGRATIONS: &[crate::store::Migration] = db::MIGRATIONS;

/// Default port of the update service, on the LAN interface's address unless `listen` says
/// otherwise (devices fetch firmware from the LAN; the WAN side never reaches it). The
/// update lane of the shipped policies (`policies/lanes.toml`) opens this port.
pub const DEFAULT_PORT: u16 = 8444;
/// Default repository folder.
pub const DEFAULT_REPO_DIR: &str = "/var/lib/iotgw/ota";
/// Default device CA certificate: `identity`'s generated CA
/// (`identity::DEFAULT_STATE_DIR` / `identity::ca::CA_CERT_FILE`).
pub const DEFAULT_DEVICE_CA: &str = "/var/lib/iotgw/identity/ca.cert.pem";
/// Default cap on simultaneous device connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
/// Default interval of the rollout loop (reports also wake it at once).
pub const DEFAULT_TICK: Duration = Duration::from_secs(10);

/// This component's section of the gateway config file.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run the update service from `iotgw run`.
    pub enabled: bool,
    /// Listener address. Unset: the LAN interface's first address on `DEFAULT_PORT`.
    pub listen: Option<SocketAddr>,
    pub repo_dir: PathBuf,
    /// Where the repository keys live (default `repo_dir/keys`).
    pub keys_dir: Option<PathBuf>,
    /// PEM of the CA(s) device client certificates must chain to.
    pub device_ca: PathBuf,
    /// PEM CRLs of the device CA: revoked device certificates are refused (read at start).
    pub device_crls: Vec<PathBuf>,
    /// The update service's TLS certificate chain (PEM) and its key. Unset (both): the
    /// identity CA issues one at each start, as it does EST's, for `[identity] server_names`
    /// and the address the service listens on, so devices that trust the CA trust it.
    pub server_cert: Option<PathBuf>,
    pub server_key: Option<PathBuf>,
    pub max_connections: usize,
    pub tick_secs: u64,
    /// Serve only certificates the identity registry issued (not revoked, device not
    /// decommissioned). Turn off only when device certificates come from another PKI.
    pub require_enrollment: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: false,
            // A literal that always parses.
            listen: None,
            repo_dir: DEFAULT_REPO_DIR.into(),
            keys_dir: None,
            device_ca: DEFAULT_DEVICE_CA.into(),
            device_crls: Vec::new(),
            server_cert: None,
            server_key: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tick_secs: DEFAULT_TICK.as_secs(),
            require_enrollment: true,
        }
    }
}

impl Config {
    /// Every semantic problem of the `[ota]` section.
    pub fn problems(&self) -> Vec<String> {
        if self.server_cert.is_some() == self.server_key.is_some() {
            return Vec::new();
        }
        vec!["ota.server_cert and ota.server_key must be set together (or neither: the identity CA issues one)".into()]
    }

    pub fn repository(&self) -> repo::Repository {
        repo::Repository::open(&self.repo_dir, self.keys_dir.as_deref())
    }
}

/// Why the update service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtaError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Repo(#[from] repo::RepoError),
    /// No server certificate is configured and the identity CA could not issue one.
    #[error("issuing the update service's certificate from the identity CA: {0}")]
    Certificate(#[from] crate::identity::ca::CaError),
    /// Neither `ota.listen` nor a LAN interface address says where to listen.
    #[error("ota.listen is unset and the LAN interface has no address to bind the update service to")]
    NoListenAddress,
}

/// The running service.
pub struct Running {
    /// The bound address (useful when `listen` has port 0).
    pub local_addr: SocketAddr,
    /// Ends after shutdown, once the accept loop and the rollout loop have stopped.
    pub handle: tokio::task::JoinHandle<()>,
}

/// Starts the update server and the rollout loop. Fails before spawning anything if the store,
/// the repository, the certificates or the address are unusable. `identity` names the CA that
/// issues the server's certificate when `config` names none.
pub async fn spawn(
    config: &Config,
    identity: &crate::identity::Config,
    store_path: &Path,
    bus: EventBus,
    shutdown: Shutdown,
) -> Result<Running, OtaError> {
    // The update server checks client certificates against the identity registry.
    let conn = crate::store::open(store_path, &[MIGRATIONS, crate::identity::MIGRATIONS])?;
    let repository = config.repository();
    // The repository must exist: serving without a root would hand devices nothing to trust.
    repository.root(&conn)?;
    let listen = config.listen.ok_or(OtaError::NoListenAddress)?;
    let (chain, key) = server_identity(config, identity, listen)?;
    let tls = server::tls_config(chain, key, &config.device_ca, &config.device_crls)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| server::ServerError::Bind { addr: listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| server::ServerError::Bind { addr: listen, source })?;
    tracing::info!(address = %local_addr, repo = %config.repo_dir.display(), "ota update service listening");
    let shared = Arc::new(server::Shared::new(conn, repository, bus.clone()));
    let serving = tokio::spawn(server::serve(
        listener,
        tls,
        shared.clone(),
        config.max_connections,
        config.require_enrollment,
        shutdown.clone(),
    ));
    let tick = Duration::from_secs(config.tick_secs.max(1));
    let rolling = tokio::spawn(rollout_loop(shared, bus, tick, shutdown));
    let handle = tokio::spawn(async move {
        let _ = serving.await;
        let _ = rolling.await;
    });
    Ok(Running { local_addr, handle })
}

/// The server's certificate chain and key: the configured files, or a certificate the identity
/// CA issues now for its server names and the address the service listens on.
fn server_identity(
    config: &Config,
    identity: &crate::identity::Config,
    listen: SocketAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), OtaError> {
    if let (Some(cert), Some(key)) = (&config.server_cert, &config.server_key) {
        return Ok((server::read_certs(cert)?, server::read_key(key)?));
    }
    let ca = crate::identity::ca::IssuingCa::open(&identity.ca_source())?;
    let mut names = identity.server_names.clone();
    let address = listen.ip().to_string();
    if !listen.ip().is_unspecified() && !names.contains(&address) {
        names.push(address);
    }
    let issued = ca.issue_server(&names, time::OffsetDateTime::now_utc(), crate::identity::SERVER_CERT_VALIDITY)?;
    tracing::info!(names = ?names, "ota server certificate issued by the identity CA");
    Ok(issued)
}

/// Drives campaigns: on every tick, report and alert, applies `Rollouts::tick` and publishes
/// each transition as an audit event.
async fn rollout_loop(shared: Arc<server::Shared>, bus: EventBus, tick: Duration, mut shutdown: Shutdown) {
    let mut alerts = bus.subscribe();
    let mut interval = tokio::time::interval(tick);
    loop {
        let alert = tokio::select! {
            _ = interval.tick() => None,
            () = shared.wake.notified() => None,
            event = alerts.recv() => match event {
                Ok(GatewayEvent { device: Some(mac), kind: EventKind::Alert { incident_id, resolved: false, .. }, .. }) => {
                    Some((mac, incident_id))
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "ota rollout loop lagged behind the event bus");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
            },
            () = shutdown.wait() => break,
        };
        let result = shared
            .with_store(move |conn, repo| {
                let rollouts = rollout::Rollouts { conn, repo };
                if let Some((mac, incident)) = &alert {
                    rollouts.record_alert(*mac, incident)?;
                }
                rollouts.tick(time::OffsetDateTime::now_utc())
            })
            .await;
        match result {
            Ok(Ok(transitions)) => {
                for t in transitions {
                    let halted = matches!(t.to, rollout::State::Halted { .. });
                    tracing::info!(campaign = %t.id, from = %t.from, to = %t.to, "ota campaign");
                    bus.publish(GatewayEvent::new(
                        if halted { Severity::High } else { Severity::Info },
                        None,
                        "ota:rollout",
                        EventKind::Audit {
                            action: "ota_campaign".into(),
                            detail: format!("campaign {}: {} -> {}", t.id, t.from, t.to),
                        },
                    ));
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "ota rollout step failed"),
            Err(_) => tracing::error!("ota rollout step panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ota_section_parses_with_defaults_and_refuses_unknown_keys() {
        let config: Config = toml::from_str("enabled = true\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        assert!(config.enabled);
        assert_eq!(config.listen.map(|a| a.port()), Some(9000));
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.repo_dir, PathBuf::from(DEFAULT_REPO_DIR));
        let err = toml::from_str::<Config>("bogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
