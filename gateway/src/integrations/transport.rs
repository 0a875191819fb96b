//! How a batch of events leaves the gateway for one sink: syslog over UDP, TCP or TLS, Splunk
//! HEC, signed webhooks and a JSON-lines file (ITSM lives in `itsm`). Each `deliver` reports
//! how many events of the batch, from its start, the sink has taken, and why it stopped.
//! Reads the sink's CA file; writes to the network or the sink's file.
use std::{io::Write as _, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpStream, UdpSocket},
};

use super::{
    config::{Format, SinkConfig, SinkKind},
    outbox::Record,
    render::{self, Origin},
    signature, syslog,
};

/// Why a sink did not take an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The sink is down or busy: retry the same event later (backoff).
    Transient(String),
    /// The sink refused this event for good: set it aside and go on.
    Rejected(String),
}

/// Result of one delivery attempt.
#[derive(Debug)]
pub struct Progress {
    /// Events taken, from the start of the batch.
    pub delivered: usize,
    pub failure: Option<Failure>,
}

impl Progress {
    pub fn all(n: usize) -> Self {
        Self { delivered: n, failure: None }
    }
    pub fn transient(delivered: usize, message: impl Into<String>) -> Self {
        Self { delivered, failure: Some(Failure::Transient(message.into())) }
    }
}

/// Why a sink cannot be set up (bad CA file, bad URL); reported at spawn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("sink {sink}: cannot read CA file {path}: {message}")]
    CaFile { sink: String, path: std::path::PathBuf, message: String },
    #[error("sink {sink}: {message}")]
    Setup { sink: String, message: String },
}

/// Splunk HEC event endpoint, under the sink's base URL.
pub const HEC_PATH: &str = "/services/collector/event";
/// Header naming the event in webhook requests, for receivers that deduplicate.
pub const EVENT_ID_HEADER: &str = "x-iotgw-event-id";

/// Renders one event in a JSON-carrying format (HEC, webhook, file).
pub fn json_body(origin: &Origin, format: Format, event: &crate::event::GatewayEvent) -> serde_json::Value {
    match format {
        Format::Ecs => super::json::ecs(origin, event),
        Format::Ocsf => super::json::ocsf(origin, event),
        Format::Cef => serde_json::Value::String(super::cef::render(origin, event)),
        Format::Native | Format::Text => super::json::native(event),
    }
}

/// The PEM certificates of a CA bundle.
pub fn read_ca(sink: &SinkConfig) -> Result<Option<Vec<rustls::pki_types::CertificateDer<'static>>>, TransportError> {
    let Some(path) = &sink.ca_file else { return Ok(None) };
    let fail = |message: String| TransportError::CaFile { sink: sink.name.clone(), path: path.clone(), message };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>().map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(Some(certs))
}

/// Syslog over UDP: one message per datagram. Nothing confirms receipt; only a local ICMP
/// "port unreachable" (reported on the next send) shows the receiver is down.
pub struct UdpSyslog {
    address: String,
    socket: Option<UdpSocket>,
}

impl UdpSyslog {
    pub fn new(address: String) -> Self {
        Self { address, socket: None }
    }

    pub async fn deliver(&mut self, messages: &[String]) -> Progress {
        if self.socket.is_none() {
            match connect_udp(&self.address).await {
                Ok(socket) => self.socket = Some(socket),
                Err(e) => return Progress::transient(0, format!("udp {}: {e}", self.address)),
            }
        }
        let Some(socket) = &self.socket else { return Progress::transient(0, "no socket") };
        for (i, message) in messages.iter().enumerate() {
            if let Err(e) = socket.send(message.as_bytes()).await {
                self.socket = None;
                return Progress::transient(i, format!("udp {}: {e}", self.address));
            }
        }
        Progress::all(messages.len())
    }
}

async fn connect_udp(address: &str) -> std::io::Result<UdpSocket> {
    let target = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// A syslog receiver never sends on the connection; anything readable (EOF, a TLS alert)
    /// means it is closing. Checking before each batch avoids writing into a half-closed
    /// socket, where the kernel would accept the first write and the data would be lost.
    fn looks_closed(&self) -> bool {
        let mut probe = [0u8; 64];
        !matches!(self.tcp().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

/// Syslog over TCP or TLS, octet-counted frames, one connection kept open.
pub struct StreamSyslog {
    address: String,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    timeout: Duration,
    stream: Option<Stream>,
}

impl StreamSyslog {
    pub fn new(sink: &SinkConfig) -> Result<Self, TransportError> {
        let address = sink.address.clone().unwrap_or_default();
        let tls = if sink.kind == SinkKind::SyslogTls {
            let setup = |message: String| TransportError::Setup { sink: sink.name.clone(), message };
            let certs = read_ca(sink)?.ok_or_else(|| setup("syslog_tls needs ca_file".into()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots.add(cert).map_err(|e| setup(format!("CA certificate: {e}")))?;
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| setup(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            let host = sink.server_name.clone().unwrap_or_else(|| {
                address.rsplit_once(':').map_or(address.clone(), |(h, _)| h.trim_matches(['[', ']']).to_owned())
            });
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| setup(format!("server name {host:?}: {e}")))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self { address, tls, timeout: sink.timeout(), stream: None })
    }

    async fn connect(&self) -> std::io::Result<Stream> {
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            None => Stream::Tcp(tcp),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(self.timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                Stream::Tls(Box::new(tls))
            }
        })
    }

    pub async fn close(&mut self) {
        match self.stream.take() {
            Some(Stream::Tcp(mut s)) => {
                let _ = s.shutdown().await;
            }
            Some(Stream::Tls(mut s)) => {
                let _ = s.shutdown().await;
            }
            None => {}
        }
    }

    pub async fn deliver(&mut self, messages: &[String]) -> Progress {
        if self.stream.as_ref().is_some_and(Stream::looks_closed) {
            tracing::info!(address = %self.address, "syslog receiver closed the connection; reconnecting");
            self.stream = None;
        }
        if self.stream.is_none() {
            match self.connect().await {
                Ok(stream) => self.stream = Some(stream),
                Err(e) => return Progress::transient(0, format!("connect {}: {e}", self.address)),
            }
        }
        let mut frames = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
        for message in messages {
            frames.extend_from_slice(&syslog::octet_counted(message));
        }
        let Some(stream) = self.stream.as_mut() else { return Progress::transient(0, "no connection") };
        match tokio::time::timeout(self.timeout, stream.write_all(&frames)).await {
            Ok(Ok(())) => Progress::all(messages.len()),
            Ok(Err(e)) => {
                self.stream = None;
                Progress::transient(0, format!("write {}: {e}", self.address))
            }
            Err(_) => {
                self.stream = None;
                Progress::transient(0, format!("write {}: timed out", self.address))
            }
        }
    }
}

/// An HTTP client trusting the sink's CA file (only it, when set).
pub fn http_client(sink: &SinkConfig) -> Result<reqwest::Client, TransportError> {
    let setup = |message: String| TransportError::Setup { sink: sink.name.clone(), message };
    let mut builder = reqwest::Client::builder().timeout(sink.timeout()).connect_timeout(sink.timeout());
    if let Some(path) = &sink.ca_file {
        let pem = std::fs::read(path).map_err(|e| TransportError::CaFile {
            sink: sink.name.clone(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| setup(e.to_string()))?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| setup(e.to_string()))
}

/// What an HTTP status means for delivery: 2xx taken; 408, 429, 5xx and auth failures
/// (fixable by the operator without losing events) retried; other 4xx refused for good.
pub fn classify(status: reqwest::StatusCode, body: &str) -> Option<Failure> {
    let message = format!("HTTP {status}: {}", body.chars().take(200).collect::<String>());
    if status.is_success() {
        None
    } else if status.is_server_error() || matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429) {
        Some(Failure::Transient(message))
    } else {
        Some(Failure::Rejected(message))
    }
}

/// Splunk HTTP Event Collector: a batch is one POST of concatenated event objects.
pub struct Hec {
    client: reqwest::Client,
    url: String,
    authorization: String,
    index: Option<String>,
    sourcetype: String,
    format: Format,
    origin: Origin,
}

impl Hec {
    pub fn new(sink: &SinkConfig, origin: Origin) -> Result<Self, TransportError> {
        Ok(Self {
            client: http_client(sink)?,
            url: format!("{}{HEC_PATH}", sink.url.as_deref().unwrap_or_default().trim_end_matches('/')),
            authorization: format!("Splunk {}", sink.token.as_deref().unwrap_or_default()),
            index: sink.hec_index.clone(),
            sourcetype: sink
                .hec_sourcetype
                .clone()
                .unwrap_or_else(|| format!("iotgw:{:?}", sink.format()).to_lowercase()),
            format: sink.format(),
            origin,
        })
    }

    fn envelope(&self, record: &Record) -> String {
        let event = &record.event;
        let mut doc = serde_json::json!({
            "time": event.time.unix_timestamp_nanos() as f64 / 1e9,
            "host": self.origin.hostname,
            "source": self.origin.app_name,
            "sourcetype": self.sourcetype,
            "event": json_body(&self.origin, self.format, event),
            "fields": { "severity": render::severity_name(event.severity), "kind": event.kind_name() },
        });
        if let Some(index) = &self.index {
            doc["index"] = serde_json::json!(index);
        }
        doc.to_string()
    }

    async fn post(&self, body: String) -> Option<Failure> {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match response {
            Err(e) => Some(Failure::Transient(format!("POST {}: {e}", self.url))),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                classify(status, &text)
            }
        }
    }

    pub async fn deliver(&mut self, batch: &[Record]) -> Progress {
        let body: String = batch.iter().map(|r| self.envelope(r)).collect::<Vec<_>>().join("\n");
        match self.post(body).await {
            None => Progress::all(batch.len()),
            Some(Failure::Rejected(_)) if batch.len() > 1 => {
                // One bad event must not sink its neighbours: resend one by one to find it.
                for (i, record) in batch.iter().enumerate() {
                    if let Some(failure) = self.post(self.envelope(record)).await {
                        return Progress { delivered: i, failure: Some(failure) };
                    }
                }
                Progress::all(batch.len())
            }
            failure => Progress { delivered: 0, failure },
        }
    }
}

/// SOAR webhook: one signed POST per event.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    format: Format,
    origin: Origin,
}

impl Webhook {
    pub fn new(sink: &SinkConfig, origin: Origin) -> Result<Self, TransportError> {
        Ok(Self {
            client: http_client(sink)?,
            url: sink.url.clone().unwrap_or_default(),
            secret: sink.secret.clone().unwrap_or_default().into_bytes(),
            format: sink.format(),
            origin,
        })
    }

    pub async fn deliver(&mut self, batch: &[Record]) -> Progress {
        for (i, record) in batch.iter().enumerate() {
            let body = json_body(&self.origin, self.format, &record.event).to_string();
            // Signed at send time, so a retry hours later is still inside the tolerance.
            let timestamp = signature::now();
            let response = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(signature::TIMESTAMP_HEADER, timestamp.to_string())
                .header(signature::SIGNATURE_HEADER, signature::sign(&self.secret, timestamp, body.as_bytes()))
                .header(EVENT_ID_HEADER, &record.event.id)
                .body(body)
                .send()
                .await;
            let failure = match response {
                Err(e) => Some(Failure::Transient(format!("POST {}: {e}", self.url))),
                Ok(response) => {
                    let status = response.status();
                    classify(status, &response.text().await.unwrap_or_default())
                }
            };
            if let Some(failure) = failure {
                return Progress { delivered: i, failure: Some(failure) };
            }
        }
        Progress::all(batch.len())
    }
}

/// JSON lines appended to a local file, synced before the cursor moves.
pub struct FileSink {
    path: std::path::PathBuf,
    format: Format,
    origin: Origin,
}

impl FileSink {
    pub fn new(sink: &SinkConfig, origin: Origin) -> Self {
        Self { path: sink.path.clone().unwrap_or_default(), format: sink.format(), origin }
    }

    /// Blocking: call from a blocking thread.
    pub fn deliver_blocking(&self, batch: &[Record]) -> Progress {
        let mut text = String::new();
        for record in batch {
            text.push_str(&json_body(&self.origin, self.format, &record.event).to_string());
            text.push('\n');
        }
        let result = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_data()
        });
        match result {
            Ok(()) => Progress::all(batch.len()),
            Err(e) => Progress::transient(0, format!("{}: {e}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_auth_are_retried_bad_requests_are_not() {
        use reqwest::StatusCode;
        assert_eq!(classify(StatusCode::OK, ""), None);
        assert!(matches!(classify(StatusCode::SERVICE_UNAVAILABLE, ""), Some(Failure::Transient(_))));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, ""), Some(Failure::Transient(_))));
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, ""), Some(Failure::Transient(_))));
        assert!(matches!(classify(StatusCode::BAD_REQUEST, ""), Some(Failure::Rejected(_))));
    }
}
