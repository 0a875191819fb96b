//! The client of the local API the device and audit commands share: where the API is
//! (`--api`/`IOTGW_API`), the token (`--token`/`IOTGW_TOKEN`), the certificate to trust for an
//! API served over TLS (`--api-ca`/`IOTGW_API_CA`), and paging (`--limit`, `--cursor`,
//! `--all`). Turns 401/403/404/409/429 and an unreachable API into one clear line each, and
//! not found, unauthorised and unreachable into their own exit codes (`Failure`).
use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::{
    api::{
        model::{ActionRequest, ActionResponse, AuditEntry, DeviceDetail, DeviceSummary, ErrorBody, FlowRecord},
        paging::NEXT_CURSOR,
    },
    device::Mac,
};

/// Where the API listens by default (`api::DEFAULT_LISTEN`).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
/// How long one request may take before the CLI gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the API.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Base URL of the gateway's API.
    #[arg(long = "api", env = "IOTGW_API", default_value = DEFAULT_API_URL)]
    pub url: String,
    /// Bearer token (prefer the IOTGW_TOKEN variable: arguments show in `ps`).
    #[arg(long, env = "IOTGW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate(s) to trust for an `https://` API (its own certificate or CA), instead
    /// of the system's roots.
    #[arg(long = "api-ca", env = "IOTGW_API_CA")]
    pub ca: Option<std::path::PathBuf>,
}

/// Which page of a list to fetch.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PageArgs {
    /// Rows per page (the API's default is 100, its maximum 1000).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Continue after a previous page (the cursor it printed).
    #[arg(long, conflicts_with = "all")]
    pub cursor: Option<String>,
    /// Fetch every page, not only the first.
    #[arg(long)]
    pub all: bool,
}

/// Query parameters of a list request, as name and value.
pub type Params = Vec<(&'static str, String)>;

/// A rustls client configuration trusting only the certificates of the PEM file `ca`.
fn trusting(ca: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    let pem = std::fs::read(ca).with_context(|| format!("reading --api-ca {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("--api-ca {}: not PEM", ca.display()))?;
        roots.add(cert).with_context(|| format!("--api-ca {}: not a usable certificate", ca.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "--api-ca {}: no certificate in it", ca.display());
    Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a request to the API failed, as far as the exit code tells (`Failure::exit_code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 404: no such device, alert, campaign...
    NotFound,
    /// 401 or 403: no token, a wrong one, or a role that may not do this.
    Unauthorised,
    /// No connection, or no answer in time.
    Unreachable,
    /// Anything else the API refused (400, 409, 429, 5xx).
    Other,
}

impl Failure {
    /// The process's exit code for this failure (sysexits; documented in `iotgw --help`).
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::NotFound => super::EXIT_NOT_FOUND,
            Failure::Unauthorised => super::EXIT_UNAUTHORISED,
            Failure::Unreachable => super::EXIT_UNREACHABLE,
            Failure::Other => 1,
        }
    }
}

/// A request the API refused or could not take, with the line that says why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: Failure,
    message: String,
}

/// A client of one gateway's API.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(ca) = &args.ca {
            builder = builder.use_preconfigured_tls(trusting(ca)?);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Self { http, base: args.url.trim_end_matches('/').to_owned(), token: args.token.clone() })
    }

    /// Sends `request`; a success's body as `T`, with the `Next-Cursor` header if any.
    async fn exchange<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<(T, Option<String>)> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|error| self.unreachable(error))?;
        let status = response.status();
        if status.is_success() {
            let next = response.headers().get(NEXT_CURSOR).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = response.json().await.with_context(|| format!("reading the API's answer to {what}"))?;
            return Ok((body, next));
        }
        // The API explains itself in {"error": ...}; keep its words.
        let detail = response.json::<ErrorBody>().await.map(|body| body.error).unwrap_or_default();
        let (kind, message) = match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => {
                (Failure::Unauthorised, "the API needs a token (401): pass --token or set IOTGW_TOKEN".to_owned())
            }
            StatusCode::UNAUTHORIZED => {
                (Failure::Unauthorised, "the API refused the token (401): check --token or IOTGW_TOKEN".to_owned())
            }
            StatusCode::FORBIDDEN => (Failure::Unauthorised, format!("not allowed (403): {detail}")),
            StatusCode::TOO_MANY_REQUESTS => (Failure::Other, format!("throttled (429): {detail}")),
            StatusCode::NOT_FOUND => (Failure::NotFound, format!("{what}: not found (404): {detail}")),
            _ => (Failure::Other, format!("{what} failed ({status}): {detail}")),
        };
        Err(ApiError { kind, message }.into())
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<T> {
        Ok(self.exchange(request, what).await?.0)
    }

    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        let message = if error.is_connect() {
            format!("cannot reach the iotgw API at {}: is `iotgw run` running there? ({error})", self.base)
        } else if error.is_timeout() {
            format!("the iotgw API at {} did not answer within {REQUEST_TIMEOUT:?}", self.base)
        } else {
            format!("request to the iotgw API at {} failed: {error}", self.base)
        };
        ApiError { kind: Failure::Unreachable, message }.into()
    }

    /// The rows of `path` with `params`: one page as `page` says, or every page (`--all`).
    /// Returns the cursor of the page after the last one fetched.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        mut params: Params,
        page: &PageArgs,
        what: &str,
    ) -> anyhow::Result<(Vec<T>, Option<String>)> {
        if let Some(limit) = page.limit {
            params.push(("limit", limit.to_string()));
        }
        let mut cursor = page.cursor.clone();
        let mut rows = Vec::new();
        loop {
            let mut query = params.clone();
            query.extend(cursor.take().map(|cursor| ("cursor", cursor)));
            let request = self.http.get(format!("{}{path}", self.base)).query(&query);
            let (page_rows, next): (Vec<T>, _) = self.exchange(request, what).await?;
            rows.extend(page_rows);
            match next {
                Some(next) if page.all => cursor = Some(next),
                next => return Ok((rows, next)),
            }
        }
    }

    /// GET `path` with `query`, for the CLI's other API clients (`cli::alerts`).
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query), what).await
    }

    /// `method` on `path` without a body (`POST`, `DELETE`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        what: &str,
    ) -> anyhow::Result<T> {
        self.send(self.http.request(method, format!("{}{path}", self.base)), what).await
    }

    /// PATCH `path` with the JSON `body`.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        what: &str,
    ) -> anyhow::Result<T> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body), what).await
    }

    pub async fn devices(
        &self,
        params: Params,
        page: &PageArgs,
    ) -> anyhow::Result<(Vec<DeviceSummary>, Option<String>)> {
        self.list("/api/v1/devices", params, page, "listing devices").await
    }

    pub async fn audit(&self, params: Params, page: &PageArgs) -> anyhow::Result<(Vec<AuditEntry>, Option<String>)> {
        self.list("/api/v1/audit", params, page, "reading the audit log").await
    }

    pub async fn device(&self, mac: Mac) -> anyhow::Result<DeviceDetail> {
        self.send(self.http.get(format!("{}/api/v1/devices/{mac}", self.base)), &format!("device {mac}")).await
    }

    pub async fn flows(&self, mac: Mac, limit: usize) -> anyhow::Result<Vec<FlowRecord>> {
        let url = format!("{}/api/v1/devices/{mac}/flows?limit={limit}", self.base);
        self.send(self.http.get(url), &format!("flows of {mac}")).await
    }

    pub async fn action(&self, mac: Mac, action: &str, reason: Option<String>) -> anyhow::Result<ActionResponse> {
        let url = format!("{}/api/v1/devices/{mac}/{action}", self.base);
        self.send(self.http.post(url).json(&ActionRequest { reason }), &format!("{action} {mac}")).await
    }
}

/// Runs `work` on a small runtime: these commands make one request or a few.
pub fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?.block_on(work)
}

/// Tells the reader on stderr how to fetch the page after this one.
pub fn hint_next_page(next: Option<&str>) {
    if let Some(next) = next {
        eprintln!("more rows follow: repeat with --cursor {next}, or pass --all");
    }
}
