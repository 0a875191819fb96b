//! The update server: HTTPS over rustls with mandatory client certificates chained to the
//! gateway's device CA. The device is the client certificate's (MAC in the subject CN, or a
//! `urn:iotgw:device:<mac>` URI SAN), never anything the request says.
//!
//! Routes (all under `/ota/v1`):
//! - `GET metadata/root.json`, `GET metadata/{N}.root.json`: roots, for rotation;
//! - `GET metadata/timestamp.json`, `GET metadata/{N}.snapshot.json`: signed for the device's
//!   view (see `rollout`);
//! - `GET metadata/{N}.targets.json`, `GET metadata/{N}.{vendor}.json`: stored metadata, vendor
//!   versions only up to what the device's view names;
//! - `GET targets/{dir}/{sha256}.{name}`: an image (TUF consistent-snapshot naming), streamed
//!   from disk with single HTTP Range support (206, 416 on unsatisfiable or multiple ranges),
//!   refused (403) to devices not offered it;
//! - `POST report`: the device's outcome (`rollout::Report`).
//!
//! Reads the repository and the store; writes reports and device versions to the store.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Path as UrlPath, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rusqlite::Connection;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::{
    db,
    repo::{self, Repository, SignedView, View},
    rollout::{Report, ReportStatus, Rollouts},
};
use crate::{device::Mac, shutdown::Shutdown};

/// Time a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Signed views kept in memory (per generation and view) before the cache is cleared.
const VIEW_CACHE_CAPACITY: usize = 1_024;
/// Read size when streaming images from disk.
const STREAM_CHUNK: usize = 64 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The authenticated device of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Device(pub Mac);

/// What the identity registry says about a client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enrollment {
    /// Issued by `identity` to this MAC, not revoked, device not decommissioned.
    Enrolled,
    /// Not in the registry (an external PKI, or a test CA).
    Unknown,
    /// In the registry but unusable; the reason is logged.
    Refused(String),
}

/// Looks a client certificate up in the identity registry.
pub fn enrollment(
    conn: &Connection,
    mac: Mac,
    serial: &crate::identity::names::Serial,
) -> rusqlite::Result<Enrollment> {
    use crate::identity::{lifecycle::Lifecycle, registry};
    let Some(cert) = registry::cert(conn, serial)? else { return Ok(Enrollment::Unknown) };
    if cert.mac != mac {
        return Ok(Enrollment::Refused(format!("certificate is bound to {}, presented for {mac}", cert.mac)));
    }
    if cert.status == registry::CertStatus::Revoked {
        return Ok(Enrollment::Refused("certificate revoked".into()));
    }
    let lifecycle = registry::device(conn, &cert.device)?.map(|d| d.lifecycle);
    if lifecycle == Some(Lifecycle::Decommissioned) {
        return Ok(Enrollment::Refused("device decommissioned".into()));
    }
    Ok(Enrollment::Enrolled)
}

/// `Audit` action published on the bus when a device reports an installed firmware; `detail` is
/// the new version. The inventory records it (`Inventory::set_firmware`).
pub const FIRMWARE_INSTALLED_ACTION: &str = "ota_firmware_installed";
/// `Audit` action published when a device reports a failed update; `detail` says which and why.
pub const INSTALL_FAILED_ACTION: &str = "ota_install_failed";

/// State shared by every connection: the store (one connection, calls off the async threads),
/// the repository, signed views, and the event bus.
pub struct Shared {
    pub conn: Mutex<Connection>,
    pub repo: Repository,
    pub bus: crate::event::EventBus,
    views: Mutex<HashMap<(u64, View), Arc<SignedView>>>,
    /// Woken after each report so the rollout loop reacts at once.
    pub wake: tokio::sync::Notify,
}

impl Shared {
    pub fn new(conn: Connection, repo: Repository, bus: crate::event::EventBus) -> Self {
        Self { conn: Mutex::new(conn), repo, bus, views: Mutex::new(HashMap::new()), wake: tokio::sync::Notify::new() }
    }

    /// Runs `f` with the store on a blocking thread.
    // The error is the answer a handler sends as is (`?` in a handler returning `Response`),
    // built once per failed request: its size costs nothing worth a box. Clippy 1.99 flags it.
    #[allow(clippy::result_large_err, reason = "the error is the HTTP answer itself")]
    pub async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection, &Repository) -> T + Send + 'static,
    ) -> Result<T, Response> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-statement; SQLite rolled that statement back, so
            // the connection is still consistent and usable.
            let conn = shared.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn, &shared.repo)
        })
        .await
        .map_err(|e| internal(&e))
    }

    fn signed_view(&self, view: View, generation: db::Generation) -> Result<Arc<SignedView>, repo::RepoError> {
        let key = (generation.number, view);
        if let Some(hit) = self.views.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(hit.clone());
        }
        let signed = Arc::new(self.repo.sign_view(&key.1, generation)?);
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if views.len() >= VIEW_CACHE_CAPACITY {
            views.clear();
        }
        views.insert(key, signed.clone());
        Ok(signed)
    }
}

/// Builds the TLS config: server chain and key, client certificates required and chained to
/// the device CA(s) in `device_ca`, and not revoked by any CRL in `device_crls` (PEM).
pub fn tls_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    device_ca: &Path,
    device_crls: &[PathBuf],
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(device_ca)? {
        roots.add(cert).map_err(|e| ServerError::Pem { path: device_ca.to_owned(), detail: e.to_string() })?;
    }
    let mut crls = Vec::new();
    for path in device_crls {
        let bytes = std::fs::read(path).map_err(|source| ServerError::Read { path: path.clone(), source })?;
        for crl in rustls_pemfile::crls(&mut bytes.as_slice()) {
            crls.push(crl.map_err(|e| ServerError::Pem { path: path.clone(), detail: e.to_string() })?);
        }
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        // Revocation is checked for the device certificate; the CA itself is the trust anchor.
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ServerError> {
    let bytes = std::fs::read(path).map_err(|source| ServerError::Read { path: path.to_owned(), source })?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut bytes.as_slice()).collect();
    let certs = certs.map_err(|e| ServerError::Pem { path: path.to_owned(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(ServerError::Pem { path: path.to_owned(), detail: "no certificate".into() });
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, ServerError> {
    let bytes = std::fs::read(path).map_err(|source| ServerError::Read { path: path.to_owned(), source })?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| ServerError::Pem { path: path.to_owned(), detail: e.to_string() })?
        .ok_or_else(|| ServerError::Pem { path: path.to_owned(), detail: "no private key".into() })
}

/// The device MAC and serial of a client certificate: the `urn:iotgw:mac:` SAN, else a
/// subject CN that parses as a MAC.
pub fn device_of(cert: &[u8]) -> Option<(Mac, crate::identity::names::Serial)> {
    use crate::identity::names::{Serial, Urn, parse_urn};
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let serial = Serial::from_bytes(cert.raw_serial());
    let from_san = cert.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => match parse_urn(uri) {
                Ok(Urn::Mac(mac)) => Some(mac),
                _ => None,
            },
            _ => None,
        })
    });
    let mac = from_san.or_else(|| cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok()?.parse().ok()))?;
    Some((mac, serial))
}

/// The HTTP routes (without TLS), for one connection's device.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ota/v1/metadata/{file}", get(metadata))
        .route("/ota/v1/targets/{*path}", get(target))
        .route("/ota/v1/report", post(report))
        .with_state(shared)
}

/// Accepts TLS connections until shutdown; each authenticated connection is served on its own
/// task. At most `max_connections` at once; more are closed at accept.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    max_connections: usize,
    require_enrollment: bool,
    mut shutdown: Shutdown,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(shared.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "ota accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "ota connection refused: too many connections");
            continue;
        };
        // Small TLS handshake and header writes must not wait for delayed ACKs (Nagle).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "ota TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let device = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| device_of(c));
            let Some((mac, serial)) = device else {
                tracing::warn!(%peer, "ota client certificate names no device");
                return;
            };
            let lookup = serial.clone();
            match shared.with_store(move |conn, _| enrollment(conn, mac, &lookup)).await {
                Ok(Ok(Enrollment::Enrolled)) => {}
                Ok(Ok(Enrollment::Unknown)) if !require_enrollment => {}
                Ok(Ok(Enrollment::Unknown)) => {
                    tracing::warn!(%peer, device = %mac, %serial, "ota refused: certificate not issued by the identity registry");
                    return;
                }
                Ok(Ok(Enrollment::Refused(reason))) => {
                    tracing::warn!(%peer, device = %mac, %serial, reason, "ota refused");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "ota enrollment lookup failed");
                    return;
                }
                Err(_) => return,
            }
            let service = hyper_util::service::TowerToHyperService::new(app.layer(Extension(Device(mac))));
            let io = hyper_util::rt::TokioIo::new(tls);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!(%peer, device = %mac, error = %e, "ota connection ended");
            }
        });
    }
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "ota request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Starts a new generation when the current one's timestamp is half-way to expiry.
fn fresh_generation(conn: &Connection) -> rusqlite::Result<db::Generation> {
    let half = repo::TIMESTAMP_LIFETIME.whole_seconds() / 2;
    match db::current_generation(conn)? {
        Some(g) if db::now_unix() - g.issued_at < half => Ok(g),
        _ => db::bump_generation(conn),
    }
}

async fn metadata(
    State(shared): State<Arc<Shared>>,
    Extension(Device(mac)): Extension<Device>,
    UrlPath(file): UrlPath<String>,
) -> Response {
    let Some(name) = file.strip_suffix(".json") else { return not_found() };
    let request = match name.split_once('.') {
        None => (None, name.to_owned()),
        Some((version, role)) => match version.parse::<u64>() {
            Ok(version) => (Some(version), role.to_owned()),
            Err(_) => return not_found(),
        },
    };
    let shared2 = shared.clone();
    let result = shared
        .with_store(move |conn, repo| -> Result<Option<Vec<u8>>, String> {
            let rollouts = Rollouts { conn, repo };
            match request {
                (None, role) if role == "root" => {
                    let version = db::role(conn, "root").map_err(|e| e.to_string())?.map_or(0, |r| r.version);
                    repo.metadata_bytes(conn, "root", version).map_err(|e| e.to_string())
                }
                (Some(v), role) if role == "root" || role == "targets" => {
                    repo.metadata_bytes(conn, &role, v).map_err(|e| e.to_string())
                }
                (None, role) if role == "timestamp" => {
                    let generation = fresh_generation(conn).map_err(|e| e.to_string())?;
                    let view = rollouts.view_for(mac).map_err(|e| e.to_string())?;
                    Ok(Some(shared2.signed_view(view, generation).map_err(|e| e.to_string())?.timestamp.clone()))
                }
                (Some(v), role) if role == "snapshot" => {
                    let Some(generation) = db::generation(conn, v).map_err(|e| e.to_string())? else { return Ok(None) };
                    let view = rollouts.view_for(mac).map_err(|e| e.to_string())?;
                    Ok(Some(shared2.signed_view(view, generation).map_err(|e| e.to_string())?.snapshot.clone()))
                }
                (Some(v), role) => {
                    let view = rollouts.view_for(mac).map_err(|e| e.to_string())?;
                    // Newer vendor versions than the device's view stay hidden from it.
                    if view.roles.get(&role).is_none_or(|allowed| v > *allowed) {
                        return Ok(None);
                    }
                    repo.metadata_bytes(conn, &role, v).map_err(|e| e.to_string())
                }
                (None, _) => Ok(None),
            }
        })
        .await;
    match result {
        Ok(Ok(Some(bytes))) => json_bytes(bytes),
        Ok(Ok(None)) => not_found(),
        Ok(Err(e)) => internal(&e),
        Err(response) => response,
    }
}

async fn target(
    State(shared): State<Arc<Shared>>,
    Extension(Device(mac)): Extension<Device>,
    UrlPath(path): UrlPath<String>,
    request: Request,
) -> Response {
    // `{dir}/{sha256}.{name}` → target `{dir}/{name}`, and the hash must be the published one.
    let (dir, file) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, f)| (d, f));
    let Some((hash, name)) = file.split_once('.') else { return not_found() };
    let target = if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") };
    if repo::check_target_path(&target).is_err() {
        return not_found();
    }
    let hash = hash.to_owned();
    let lookup = target.clone();
    let allowed = shared
        .with_store(move |conn, repo| -> Result<Option<(bool, PathBuf)>, String> {
            let Some(row) = db::target(conn, &lookup).map_err(|e| e.to_string())? else { return Ok(None) };
            if row.sha256 != hash {
                return Ok(None);
            }
            let may = Rollouts { conn, repo }.may_download(mac, &lookup).map_err(|e| e.to_string())?;
            Ok(Some((may, repo.target_path(&lookup))))
        })
        .await;
    let file = match allowed {
        Ok(Ok(Some((true, file)))) => file,
        Ok(Ok(Some((false, _)))) => {
            return (StatusCode::FORBIDDEN, "this release is not offered to this device yet").into_response();
        }
        Ok(Ok(None)) => return not_found(),
        Ok(Err(e)) => return internal(&e),
        Err(response) => return response,
    };
    // tower-http's ServeFile streams from disk in chunks and implements single Range requests
    // (206 + Content-Range; 416 for unsatisfiable or multi-range requests).
    let serve = tower_http::services::ServeFile::new(file).with_buf_chunk_size(STREAM_CHUNK);
    match serve.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => internal(&e),
    }
}

async fn report(
    State(shared): State<Arc<Shared>>,
    Extension(Device(mac)): Extension<Device>,
    Json(mut report): Json<Report>,
) -> Response {
    if report.device_class.is_empty()
        || !crate::untrusted::is_safe(&report.device_class)
        || report.version.parse::<super::metadata::FirmwareVersion>().is_err()
    {
        return (StatusCode::UNPROCESSABLE_ENTITY, "device_class and a dotted version are required").into_response();
    }
    // What the device says went wrong is free text for the store, the audit event and the
    // SIEM: its line breaks, controls and bidi characters are written out (`untrusted`).
    report.detail = crate::untrusted::escape(&report.detail).into_owned();
    report.target = report.target.map(|target| crate::untrusted::escape(&target).into_owned());
    let logged = report.clone();
    let result = shared.with_store(move |conn, repo| Rollouts { conn, repo }.record_report(mac, &report)).await;
    match result {
        Ok(Ok(campaigns)) => {
            tracing::info!(device = %mac, status = logged.status.as_str(), version = %logged.version, campaigns = campaigns.len(), "ota report");
            use crate::event::{EventKind, GatewayEvent, Severity};
            let event = match logged.status {
                ReportStatus::Success => Some((Severity::Info, FIRMWARE_INSTALLED_ACTION, logged.version.clone())),
                ReportStatus::Failure => Some((
                    Severity::Low,
                    INSTALL_FAILED_ACTION,
                    format!("{}: {}", logged.target.as_deref().unwrap_or("?"), logged.detail),
                )),
                ReportStatus::Current => None,
            };
            if let Some((severity, action, detail)) = event {
                shared.bus.publish(GatewayEvent::new(
                    severity,
                    Some(mac),
                    "ota",
                    EventKind::Audit { action: action.into(), detail },
                ));
            }
            shared.wake.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(e)) => internal(&e),
        Err(response) => response,
    }
}
