//! The EST server (RFC 7030) over rustls, plus the mTLS hello and the CRL:
//!
//! | path | method | auth | answer |
//! | --- | --- | --- | --- |
//! | `/.well-known/est/cacerts` | GET | none | CA bundle, base64 certs-only PKCS#7 |
//! | `/.well-known/est/simpleenroll` | POST base64 PKCS#10 | token (Basic password or Bearer) or factory cert (mTLS) | the certificate, base64 certs-only PKCS#7 |
//! | `/.well-known/est/simplereenroll` | POST base64 PKCS#10 | current certificate (mTLS) | the new certificate |
//! | `/.well-known/est/csrattrs` | GET | none | base64 CsrAttrs |
//! | `/api/identity/hello` | GET | certificate (mTLS) | JSON; marks the device authenticated → enrolled |
//! | `/crl` (also `/.well-known/est/crl`) | GET | none | DER CRL (`application/pkix-crl`) |
//!
//! Client certificates are requested but optional at the TLS layer: rustls checks that the
//! client holds the key (CertificateVerify), and `check` + `core` then decide about the
//! certificate itself, so that an expired, revoked or foreign certificate gets an HTTP error
//! that says why rather than a bare TLS alert.
//!
//! Reads requests; writes through `core`; publishes through `service`.
use std::{net::SocketAddr, sync::Arc, time::Duration as StdDuration};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use super::{
    admission::{self, Decision},
    ca::IssuingCa,
    check::{self, CheckError},
    core::{Bootstrap, IdentityError},
    pkcs7,
    service::{self, ServiceError, Shared, blocking},
};
use crate::{device::Mac, shutdown::Shutdown};

/// Largest request body accepted (a CSR with a 4096-bit RSA key is under 2 KiB of base64).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most connections served at once; more wait in the kernel's accept queue. No source holds
/// more than `identity.max_connections_per_source` of them, nor any for long (`Limits`).
pub const MAX_CONNECTIONS: usize = 512;

/// How long a connection may take at each stage, and who may open one.
pub struct Limits {
    /// From accept to the end of the TLS handshake.
    pub handshake: StdDuration,
    /// From the handshake to the end of the request headers.
    pub headers: StdDuration,
    /// From accept to close (one request per connection: keep-alive is off).
    pub connection: StdDuration,
    /// Per-source concurrency and rate.
    pub admission: Arc<admission::Admission>,
}
/// RFC 7030 §4.2.1 content type of a request body.
pub const CONTENT_TYPE_PKCS10: &str = "application/pkcs10";
/// RFC 7030 §4.1.3 / §4.2.3 content type of certificate answers.
pub const CONTENT_TYPE_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
pub const CONTENT_TYPE_CSRATTRS: &str = "application/csrattrs";
pub const CONTENT_TYPE_CRL: &str = "application/pkix-crl";
/// Realm announced with 401 answers.
pub const AUTH_REALM: &str = "Basic realm=\"iotgw-est\"";

/// The TLS side of the EST listener: a fresh server certificate from the CA, and optional
/// client certificates hinted at our CA and the manufacturer CAs.
pub fn tls_config(
    ca: &IssuingCa,
    manufacturers: &[CertificateDer<'static>],
    names: &[String],
    now: OffsetDateTime,
) -> Result<Arc<rustls::ServerConfig>, ServiceError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = ca.issue_server(names, now, super::SERVER_CERT_VALIDITY)?;
    let mut hints = Vec::new();
    for der in std::iter::once(ca.cert_der()).chain(manufacturers) {
        let cert = check::parse_cert(der).map_err(|e| ServiceError::Identity(e.into()))?;
        hints.push(DistinguishedName::from(cert.subject().as_raw().to_vec()));
    }
    let verifier = Arc::new(OptionalClientCert { hints, algorithms: provider.signature_verification_algorithms });
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// Requests a client certificate, checks proof of key possession, and leaves judging the
/// certificate to `check` and `core` (see the module doc for why).
#[derive(Debug)]
struct OptionalClientCert {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Every handler that acts on a client certificate runs `check::device_cert` or
        // `check::factory_cert` (issuer signature, validity, usages, SAN) and the registry
        // status before trusting it.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Who is on the other end of one TLS connection.
#[derive(Clone, Debug)]
struct Peer {
    addr: SocketAddr,
    leaf: Option<Vec<u8>>,
    intermediates: Vec<CertificateDer<'static>>,
}

/// Accepts TLS connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    limits: Limits,
    mut shutdown: Shutdown,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(shared.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let limits = Arc::new(limits);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            () = shutdown.wait() => break,
        };
        let Ok(permit) = permit else { break };
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "identity: accept failed");
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        // Refused before the handshake: dropping the socket closes it and frees the slot.
        let ticket = match limits.admission.admit(addr.ip(), std::time::Instant::now()) {
            Decision::Admit(ticket) => ticket,
            Decision::Refuse { why, refused, alert } => {
                tracing::debug!(peer = %addr, %why, "identity: connection refused by the per-source limits");
                if alert {
                    let shared = shared.clone();
                    tokio::task::spawn_blocking(move || {
                        let mac = shared.resolver.mac_of(addr.ip());
                        tracing::warn!(peer = %addr, %why, refused, "identity: a source is hammering the EST server");
                        service::publish_admission_alert(&shared.bus, addr.ip(), mac, why, refused);
                    });
                }
                continue;
            }
        };
        let (acceptor, app, limits, mut conn_shutdown) =
            (acceptor.clone(), app.clone(), limits.clone(), shutdown.clone());
        tokio::spawn(async move {
            let (_permit, _ticket) = (permit, ticket);
            let deadline = tokio::time::Instant::now() + limits.connection;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(peer = %addr, %error, "identity: TLS handshake failed"),
                Err(_) => return tracing::debug!(peer = %addr, "identity: TLS handshake timed out"),
            };
            let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
            let peer = Peer {
                addr,
                leaf: certs.first().map(|c| c.as_ref().to_vec()),
                intermediates: certs.iter().skip(1).map(|c| c.clone().into_owned()).collect(),
            };
            let service = hyper_util::service::TowerToHyperService::new(app.layer(Extension(peer)));
            // One request per connection (EST clients enroll, then leave), its headers within
            // `limits.headers`, the whole exchange within `limits.connection`.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.headers)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                result = connection => if let Err(error) = result {
                    tracing::debug!(peer = %addr, %error, "identity: connection ended with an error");
                },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(peer = %addr, "identity: connection closed at its time limit");
                }
                () = conn_shutdown.wait() => {}
            }
        });
    }
    tracing::info!("identity: EST server stopped");
}

/// The routes of the module doc.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route("/.well-known/est/csrattrs", get(csrattrs))
        .route("/.well-known/est/crl", get(crl))
        .route("/crl", get(crl))
        .route("/api/identity/hello", get(hello))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

async fn cacerts(State(shared): State<Arc<Shared>>) -> Response {
    base64_answer(CONTENT_TYPE_CERTS_ONLY, &shared.cacerts)
}

async fn csrattrs() -> Response {
    match pkcs7::csr_attrs() {
        Ok(der) => base64_answer(CONTENT_TYPE_CSRATTRS, &der),
        Err(error) => internal(&error.to_string()),
    }
}

async fn crl(State(shared): State<Arc<Shared>>) -> Response {
    match blocking(move || shared.lock().crl(OffsetDateTime::now_utc())).await {
        Ok(Ok(der)) => ([(header::CONTENT_TYPE, CONTENT_TYPE_CRL)], der).into_response(),
        Ok(Err(error)) => refusal(&error),
        Err(error) => internal(&error.to_string()),
    }
}

/// Which of the two EST enrollments a request is (RFC 7030 §4.2.1, §4.2.2). They differ only
/// in what vouches for the requester: a bootstrap credential for the first certificate, the
/// current certificate (mTLS) for a renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enrollment {
    /// simpleenroll: an enrollment token, else a factory certificate.
    Initial,
    /// simplereenroll: the certificate being replaced.
    Renewal,
}

impl Enrollment {
    fn endpoint(self) -> &'static str {
        match self {
            Enrollment::Initial => "simpleenroll",
            Enrollment::Renewal => "simplereenroll",
        }
    }
}

async fn simpleenroll(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    enroll(Enrollment::Initial, shared, peer, &headers, &body).await
}

async fn simplereenroll(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    enroll(Enrollment::Renewal, shared, peer, &headers, &body).await
}

/// One enroll request: the CSR from the body, the certificate from `core`, the outcome
/// published.
async fn enroll(kind: Enrollment, shared: Arc<Shared>, peer: Peer, headers: &HeaderMap, body: &[u8]) -> Response {
    let csr = match csr_body(headers, body) {
        Ok(csr) => csr,
        Err(answer) => return *answer,
    };
    let token = match kind {
        Enrollment::Initial => credential(headers),
        Enrollment::Renewal => None,
    };
    let observed = shared.resolver.mac_of(peer.addr.ip());
    let work = shared.clone();
    let outcome = blocking(move || match kind {
        Enrollment::Initial => {
            let bootstrap = match (&token, &peer.leaf) {
                (Some(token), _) => Bootstrap::Token(token),
                (None, Some(leaf)) => Bootstrap::Factory { leaf, intermediates: &peer.intermediates },
                (None, None) => return Err(IdentityError::NoCredentials),
            };
            work.lock().enroll(&csr, bootstrap, observed, OffsetDateTime::now_utc())
        }
        Enrollment::Renewal => work.lock().reenroll(&csr, peer.leaf.as_deref(), observed, OffsetDateTime::now_utc()),
    })
    .await;
    match outcome {
        Ok(Ok(enrolled)) => {
            let renewal = kind == Enrollment::Renewal;
            let what = if renewal { "identity: renewed" } else { "identity: enrolled" };
            tracing::info!(device = %enrolled.mac, serial = %enrolled.issued.serial, "{what}");
            service::publish_issued(&shared.bus, &enrolled, renewal);
            shared.changed.notify_one();
            certificate_answer(&enrolled.issued.der)
        }
        Ok(Err(error)) => refused(&shared, &error, observed, kind.endpoint()),
        Err(error) => internal(&error.to_string()),
    }
}

/// What `/api/identity/hello` answers.
#[derive(serde::Serialize)]
struct Hello {
    device: String,
    mac: Mac,
    serial: String,
    lifecycle: String,
}

async fn hello(State(shared): State<Arc<Shared>>, Extension(peer): Extension<Peer>) -> Response {
    let observed = shared.resolver.mac_of(peer.addr.ip());
    let work = shared.clone();
    let outcome =
        blocking(move || work.lock().authenticate(peer.leaf.as_deref(), observed, OffsetDateTime::now_utc())).await;
    match outcome {
        Ok(Ok(auth)) => {
            service::publish_authenticated(&shared.bus, &auth);
            shared.changed.notify_one();
            Json(Hello {
                device: auth.device.to_string(),
                mac: auth.mac,
                serial: auth.serial.to_string(),
                lifecycle: auth.to.to_string(),
            })
            .into_response()
        }
        Ok(Err(error)) => refused(&shared, &error, observed, "hello"),
        Err(error) => internal(&error.to_string()),
    }
}

/// The CSR of an enroll request: content type `application/pkcs10`, base64 body. Public so
/// the fuzz targets reach it (`fuzz/`).
pub fn csr_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Box<Response>> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(CONTENT_TYPE_PKCS10) {
        return Err(Box::new(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("content type must be {CONTENT_TYPE_PKCS10} (base64 DER), got {content_type:?}"),
        )));
    }
    pkcs7::decode_base64(body)
        .map_err(|error| Box::new(text(StatusCode::BAD_REQUEST, &format!("malformed certificate request: {error}"))))
}

/// The token of `Authorization: Basic` (its password; the user name is ignored) or
/// `Authorization: Bearer`. Public so the fuzz targets reach it (`fuzz/`).
pub fn credential(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        return decoded.split_once(':').map(|(_, password)| password.to_owned());
    }
    None
}

fn certificate_answer(der: &[u8]) -> Response {
    match pkcs7::certs_only(&[der]) {
        Ok(p7) => base64_answer(CONTENT_TYPE_CERTS_ONLY, &p7),
        Err(error) => internal(&error.to_string()),
    }
}

fn base64_answer(content_type: &'static str, der: &[u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::HeaderName::from_static("content-transfer-encoding"), HeaderValue::from_static("base64")),
        ],
        pkcs7::encode_base64(der),
    )
        .into_response()
}

fn refused(shared: &Shared, error: &IdentityError, observed: Option<Mac>, endpoint: &str) -> Response {
    let error_text = crate::untrusted::escape(&error.to_string()).into_owned();
    tracing::info!(endpoint, peer_mac = ?observed, error = %error_text, "identity: request refused");
    service::publish_refusal(&shared.bus, error, observed, endpoint);
    if matches!(error, IdentityError::CloneSuspected { .. }) {
        shared.changed.notify_one();
    }
    refusal(error)
}

/// The HTTP status of each refusal.
pub fn status(error: &IdentityError) -> StatusCode {
    use IdentityError as E;
    match error {
        E::Check(check) => match check {
            CheckError::WrongIssuer { .. }
            | CheckError::Expired { .. }
            | CheckError::NotYetValid { .. }
            | CheckError::BadUsage { .. }
            | CheckError::BadSanForm { .. }
            | CheckError::FactoryCertWithoutMac { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        },
        E::NoCredentials | E::NoClientCertificate | E::TokenUnknown => StatusCode::UNAUTHORIZED,
        E::SanMismatch { .. } => StatusCode::BAD_REQUEST,
        E::TokenUsed
        | E::TokenExpired { .. }
        | E::MacMismatch { .. }
        | E::CertUnknown(_)
        | E::CertRevoked(_)
        | E::CertSuperseded(_)
        | E::Held(_)
        | E::CloneSuspected { .. }
        | E::Lifecycle { .. } => StatusCode::FORBIDDEN,
        E::UnknownSerial(_) | E::UnknownDevice(_) | E::NoHold(_) => StatusCode::NOT_FOUND,
        E::AlreadyRevoked(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refusal(error: &IdentityError) -> Response {
    let status = status(error);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(%error, "identity: internal error");
        return internal("internal error");
    }
    let mut answer = text(status, &error.to_string());
    if status == StatusCode::UNAUTHORIZED {
        answer.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(AUTH_REALM));
    }
    answer
}

fn internal(message: &str) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, message)
}

fn text(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer_credentials_are_read() {
        let mut headers = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("device:s3cret");
        headers.insert(header::AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        assert_eq!(credential(&headers).as_deref(), Some("s3cret"));
        headers.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(credential(&headers).as_deref(), Some("tok"));
        headers.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
        assert_eq!(credential(&headers), None);
    }

    #[test]
    fn csr_body_needs_pkcs10_and_base64() {
        let mut headers = HeaderMap::new();
        assert_eq!(csr_body(&headers, b"AAAA").unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        headers.insert(header::CONTENT_TYPE, CONTENT_TYPE_PKCS10.parse().unwrap());
        assert_eq!(csr_body(&headers, b"!!not base64!!").unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(csr_body(&headers, b"AAEC\r\nAwQ=").unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn refusals_map_to_statuses() {
        assert_eq!(status(&IdentityError::TokenUnknown), StatusCode::UNAUTHORIZED);
        assert_eq!(status(&IdentityError::TokenUsed), StatusCode::FORBIDDEN);
        assert_eq!(status(&IdentityError::Check(CheckError::WeakKey { bits: 1024 })), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(&IdentityError::Check(CheckError::Expired { serial: "1".into(), not_after: "x".into() })),
            StatusCode::FORBIDDEN
        );
    }
}
