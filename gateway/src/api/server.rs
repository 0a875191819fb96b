//! The API's HTTP/1.1 server, with the limits an exposed service needs: connections that
//! send nothing are closed (`header_read_timeout`, which also bounds an idle keep-alive
//! connection waiting for its next request), requests that take too long get 408, URIs and
//! header sections beyond `MAX_URI_BYTES` / `MAX_HEADER_BYTES` get 414 / 431, at most
//! `max_connections` are served at once and `max_connections_per_source` from one source (an
//! address, an IPv6 /64: more are closed at once), and every error answer (405, 408, 413,
//! 414, 431, ...) carries the API's JSON body `{"error": "..."}`. Optionally over TLS (rustls).
//!
//! Reads the listener; every request goes to the router with the peer's address as
//! `ConnectInfo<SocketAddr>` (`auth` throttles failures per source with it).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt as _;

use super::{MAX_BODY_BYTES, ServeError, model::ErrorBody, throttle::Source};
use crate::shutdown::Shutdown;

/// Time a client has to send a request's head, and that an idle keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a request has, body included, before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request target (path and query) answered; longer ones get 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section (names, values and separators) answered; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in a request; more get 431.
pub const MAX_HEADERS: usize = 64;
/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections served at once for one source (`throttle::Source`); more are closed when
/// accepted, so one host cannot hold every slot.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 32;
/// hyper's own limits, past ours: beyond them hyper answers 414 or 431 itself, without a body.
const HYPER_MAX_HEADERS: usize = 2 * MAX_HEADERS;
const HYPER_MAX_BUFFER: usize = 4 * MAX_HEADER_BYTES;
/// Most bytes of a non-JSON error body carried over into the JSON one.
const ERROR_TEXT_MAX: usize = 4 * 1024;

/// Timeouts and connection limits (tests shorten them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_source: MAX_CONNECTIONS_PER_SOURCE,
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` fires, then
/// lets the requests in flight finish (each within `request_timeout`).
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    mut shutdown: Shutdown,
) -> Result<(), ServeError> {
    let app = harden(app, limits);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let sources: Arc<Mutex<HashMap<Source, usize>>> = Arc::default();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            () = shutdown.wait() => break,
        };
        // Invariant: the semaphore is never closed.
        let Ok(permit) = permit else { break };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        while connections.try_join_next().is_some() {}
        let Some(per_source) = PerSource::enter(&sources, Source::of(peer.ip()), limits.max_connections_per_source)
        else {
            tracing::debug!(%peer, "api: too many connections from this source; closed");
            continue;
        };
        let (app, acceptor, closing) = (app.clone(), acceptor.clone(), closing_rx.clone());
        connections.spawn(async move {
            let _slots = (permit, per_source);
            match acceptor {
                None => connection(tcp, peer, app, limits, closing).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => connection(tls, peer, app, limits, closing).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "api: TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "api: TLS handshake timed out"),
                },
            }
        });
    }
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One source's share of the connections, given back on drop.
struct PerSource {
    sources: Arc<Mutex<HashMap<Source, usize>>>,
    source: Source,
}

impl PerSource {
    /// Counts a connection of `source`, or `None` when it already holds `max`.
    fn enter(sources: &Arc<Mutex<HashMap<Source, usize>>>, source: Source, max: usize) -> Option<Self> {
        let mut counts = sources.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(source).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Self { sources: sources.clone(), source })
    }
}

impl Drop for PerSource {
    fn drop(&mut self) {
        let mut counts = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// One connection: HTTP/1.1 with the head timeout; on shutdown, the request in flight ends
/// and the connection closes.
async fn connection<Io>(
    io: Io,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUFFER);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "api connection closed");
            }
        }
        // The guard `wait_for` returns is dropped inside, so the future stays `Send`.
        () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The limits every route shares, outermost first: JSON error bodies, the request timeout,
/// the URI and header limits.
fn harden(app: Router, limits: Limits) -> Router {
    app.layer(middleware::from_fn(check_head))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(middleware::from_fn(json_errors))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message, code: None })).into_response()
}

/// 414 and 431 with a JSON body, under hyper's own (bodiless) limits.
async fn check_head(request: Request, next: Next) -> Response {
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return error(StatusCode::URI_TOO_LONG, format!("request target longer than {MAX_URI_BYTES} bytes"));
    }
    let headers = request.headers();
    // Each field as sent: name, ": ", value, CRLF.
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers beyond {MAX_HEADERS} fields or {MAX_HEADER_BYTES} bytes"),
        );
    }
    next.run(request).await
}

/// Gives every error answer without a JSON body (axum's 405 and 413, the timeout's 408,
/// extractor rejections) the API's `{"error": "..."}`, keeping status and headers.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let message = match status {
        // axum adds the `Allow` header outside this layer.
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path (see the Allow header)".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body larger than {MAX_BODY_BYTES} bytes"),
        StatusCode::REQUEST_TIMEOUT => "request not completed in time".to_owned(),
        _ => {
            let text = axum::body::to_bytes(body, ERROR_TEXT_MAX).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_owned();
            if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text }
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::to_vec(&ErrorBody { error: message, code: None }).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}
