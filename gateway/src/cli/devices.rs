//! `iotgw devices|device|quarantine|release|block`: clients of the local API (HTTP, bearer
//! token). Reads `--api`/`IOTGW_API`, `--token`/`IOTGW_TOKEN` and, for an API served over TLS
//! with a certificate of its own, `--api-ca`/`IOTGW_API_CA`; prints tables or JSON on stdout;
//! turns 401/403/404/409/429 and an unreachable API into one clear line each.
use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::Context as _;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::{
    api::model::{ActionRequest, ActionResponse, DeviceDetail, DeviceSummary, ErrorBody, FlowRecord},
    device::Mac,
};

/// Where the API listens by default (`api::DEFAULT_LISTEN`).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
/// How long one request may take before the CLI gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Flows shown by `iotgw device`.
pub const FLOWS_SHOWN: usize = 10;

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

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The device's MAC address (aa:bb:cc:dd:ee:ff).
    pub mac: Mac,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    /// The device's MAC address (aa:bb:cc:dd:ee:ff).
    pub mac: Mac,
    /// Why (kept in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

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

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<T> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|error| self.unreachable(error))?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.with_context(|| format!("reading the API's answer to {what}"));
        }
        // The API explains itself in {"error": ...}; keep its words.
        let detail = response.json::<ErrorBody>().await.map(|body| body.error).unwrap_or_default();
        anyhow::bail!(match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() =>
                "the API needs a token (401): pass --token or set IOTGW_TOKEN".to_owned(),
            StatusCode::UNAUTHORIZED => "the API refused the token (401): check --token or IOTGW_TOKEN".to_owned(),
            StatusCode::FORBIDDEN => format!("not allowed (403): {detail}"),
            StatusCode::TOO_MANY_REQUESTS => format!("throttled (429): {detail}"),
            StatusCode::NOT_FOUND => format!("{what}: not found (404): {detail}"),
            _ => format!("{what} failed ({status}): {detail}"),
        })
    }

    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        if error.is_connect() {
            anyhow::anyhow!("cannot reach the iotgw API at {}: is `iotgw run` running there? ({error})", self.base)
        } else if error.is_timeout() {
            anyhow::anyhow!("the iotgw API at {} did not answer within {REQUEST_TIMEOUT:?}", self.base)
        } else {
            anyhow::anyhow!("request to the iotgw API at {} failed: {error}", self.base)
        }
    }

    pub async fn devices(&self) -> anyhow::Result<Vec<DeviceSummary>> {
        self.send(self.http.get(format!("{}/api/v1/devices", self.base)), "listing devices").await
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

    /// GET `path` with `query`, for the CLI's other API clients (`cli::alerts`).
    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
    ) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query), what).await
    }

    /// PATCH `path` with the JSON `body`.
    pub(super) async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        what: &str,
    ) -> anyhow::Result<T> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body), what).await
    }
}

/// Runs `work` on a small runtime: these commands make one or two requests.
pub(super) fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?.block_on(work)
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    block_on(list_to(&args, &mut std::io::stdout().lock()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    block_on(show_to(&args, &mut std::io::stdout().lock()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn action(args: ActionArgs, action: &str) -> anyhow::Result<ExitCode> {
    block_on(action_to(&args, action, &mut std::io::stdout().lock()))?;
    Ok(ExitCode::SUCCESS)
}

/// `iotgw devices`, written to `out`.
pub async fn list_to(args: &ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let devices = Client::new(&args.api)?.devices().await?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &devices)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows: Vec<[String; 7]> = devices
        .iter()
        .map(|d| {
            [
                d.mac.to_string(),
                d.ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                d.vendor.clone().unwrap_or_else(|| "-".into()),
                match (&d.device_type, d.type_confidence) {
                    (Some(t), Some(c)) => format!("{t} ({:.0}%)", c * 100.0),
                    (Some(t), None) => t.clone(),
                    _ => "-".into(),
                },
                d.state.to_string(),
                rfc3339(d.last_seen),
                human_bytes(d.bytes),
            ]
        })
        .collect();
    write_table(out, ["MAC", "IP", "VENDOR", "TYPE", "STATE", "LAST SEEN", "BYTES"], &rows)?;
    Ok(())
}

/// `iotgw device MAC`, written to `out`.
pub async fn show_to(args: &ShowArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let detail = client.device(args.mac).await?;
    let flows = client.flows(args.mac, FLOWS_SHOWN).await?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "device": detail, "flows": flows }))?;
        writeln!(out)?;
        return Ok(());
    }
    let s = &detail.record.summary;
    let none = || "-".to_owned();
    writeln!(out, "MAC          {}", s.mac)?;
    writeln!(out, "IP           {}", s.ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))?;
    writeln!(out, "Vendor       {}", s.vendor.clone().unwrap_or_else(none))?;
    writeln!(out, "Hostname     {}", detail.record.hostname.clone().unwrap_or_else(none))?;
    let kind = match (&s.device_type, s.type_confidence) {
        (Some(t), Some(c)) => format!("{t} (confidence {c:.2})"),
        (Some(t), None) => t.clone(),
        _ => none(),
    };
    writeln!(out, "Type         {kind}")?;
    writeln!(out, "State        {}", s.state)?;
    let enforced = detail.enforcement.map_or_else(
        || "none (onboarding lane)".to_owned(),
        |e| format!("{} (policy {}, class {})", e.access, e.policy_id, e.class_id),
    );
    writeln!(out, "Enforced     {enforced}")?;
    if let Some(restore) = detail.restore_access {
        writeln!(out, "Release to   {restore}")?;
    }
    writeln!(out, "Policy       {}", s.policy.clone().unwrap_or_else(none))?;
    writeln!(out, "First seen   {}", rfc3339(s.first_seen))?;
    writeln!(out, "Last seen    {}", rfc3339(s.last_seen))?;
    let t = &detail.record.traffic;
    writeln!(
        out,
        "Traffic      {} sent, {} received ({} flows)",
        human_bytes(t.tx_bytes),
        human_bytes(t.rx_bytes),
        detail.record.flows_total
    )?;
    for (label, value) in [
        ("Lifecycle", &detail.record.lifecycle),
        ("Firmware", &detail.record.firmware_version),
        ("Certificate", &detail.record.cert_subject),
    ] {
        if let Some(value) = value {
            writeln!(out, "{label:<13}{value}")?;
        }
    }
    for fingerprint in &detail.record.fingerprints {
        writeln!(out, "Fingerprint  {}: {}", fingerprint.kind, fingerprint.value)?;
    }
    if !detail.record.dns_names.is_empty() {
        writeln!(out, "DNS names    {}", detail.record.dns_names.join(", "))?;
    }
    if !flows.is_empty() {
        writeln!(out, "\nRecent flows")?;
        let rows: Vec<[String; 3]> = flows
            .iter()
            .map(|f| {
                let verdict =
                    if f.reason == "none" { f.verdict.clone() } else { format!("{} ({})", f.verdict, f.reason) };
                [
                    rfc3339(f.time),
                    format!("{} {}:{} -> {}:{}", proto_name(f.proto), f.src, f.src_port, f.dst, f.dst_port),
                    verdict,
                ]
            })
            .collect();
        write_table(out, ["TIME", "FLOW", "VERDICT"], &rows)?;
    }
    if !detail.audit.is_empty() {
        writeln!(out, "\nAudit (newest first)")?;
        let rows: Vec<[String; 4]> = detail
            .audit
            .iter()
            .map(|a| [rfc3339(a.time), a.actor.clone(), a.action.clone(), a.detail.clone()])
            .collect();
        write_table(out, ["TIME", "ACTOR", "ACTION", "DETAIL"], &rows)?;
    }
    Ok(())
}

/// `iotgw quarantine|release|block MAC`, written to `out`.
pub async fn action_to(args: &ActionArgs, action: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let response = Client::new(&args.api)?.action(args.mac, action, args.reason.clone()).await?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &response)?;
        writeln!(out)?;
    } else if response.changed {
        writeln!(
            out,
            "{}: {} -> {} ({} by {})",
            response.mac, response.previous, response.access, response.action, response.actor
        )?;
    } else {
        writeln!(out, "{}: already {}, nothing changed", response.mac, response.access)?;
    }
    Ok(())
}

pub(super) fn write_table<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

pub(super) fn rfc3339(time: time::OffsetDateTime) -> String {
    time.replace_nanosecond(0)
        .unwrap_or(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time.to_string())
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn proto_name(proto: u8) -> String {
    match proto {
        gateway_ebpf::proto::TCP => "tcp".into(),
        gateway_ebpf::proto::UDP => "udp".into(),
        gateway_ebpf::proto::ICMP => "icmp".into(),
        gateway_ebpf::proto::ICMPV6 => "icmpv6".into(),
        other => format!("proto {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::tests::{ABSENT, CAMERA, Fixture, OPERATOR_TOKEN, Server, TlsServer, VIEWER_TOKEN};

    fn api(server: &Server, token: Option<&str>) -> ApiArgs {
        ApiArgs { url: format!("{}/", server.base), token: token.map(str::to_owned), ca: None }
    }

    #[tokio::test]
    async fn cli_lists_shows_and_acts_against_a_real_server() {
        let fixture = Fixture::new();
        let server = Server::start(fixture.directory(), false).await;
        let mut out = Vec::new();
        list_to(&ListArgs { api: api(&server, Some(VIEWER_TOKEN)), json: false }, &mut out).await.unwrap();
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("MAC") && lines[0].contains("LAST SEEN"), "{table}");
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[1].starts_with(CAMERA) && lines[1].contains("192.168.1.20") && lines[1].contains("enrolled"),
            "{table}"
        );

        let mut out = Vec::new();
        list_to(&ListArgs { api: api(&server, Some(VIEWER_TOKEN)), json: true }, &mut out).await.unwrap();
        let parsed: Vec<DeviceSummary> = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed.len(), 2);

        let mac: Mac = CAMERA.parse().unwrap();
        let mut out = Vec::new();
        let quarantine =
            ActionArgs { mac, reason: Some("INC-7".into()), api: api(&server, Some(OPERATOR_TOKEN)), json: false };
        action_to(&quarantine, "quarantine", &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{CAMERA}: enrolled -> quarantined (quarantine by api:otto)\n")
        );

        let mut out = Vec::new();
        show_to(&ShowArgs { mac, api: api(&server, Some(VIEWER_TOKEN)), json: false }, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("State        quarantined"), "{text}");
        assert!(text.contains("Release to   enrolled"), "{text}");
        assert!(text.contains("Recent flows") && text.contains("tcp 192.168.1.20:40000 -> 203.0.113.7:443"), "{text}");
        assert!(text.contains("api:otto") && text.contains("enrolled -> quarantined: quarantine: INC-7"), "{text}");

        let mut out = Vec::new();
        let release = ActionArgs { mac, reason: None, api: api(&server, Some(OPERATOR_TOKEN)), json: true };
        action_to(&release, "release", &mut out).await.unwrap();
        let response: ActionResponse = serde_json::from_slice(&out).unwrap();
        assert_eq!(response.access, crate::device::Access::Enrolled);
        server.stop().await;
    }

    #[tokio::test]
    async fn cli_errors_say_what_went_wrong() {
        let fixture = Fixture::new();
        let server = Server::start(fixture.directory(), false).await;
        let mac: Mac = CAMERA.parse().unwrap();
        let error = |result: anyhow::Result<()>| format!("{:#}", result.unwrap_err());

        let text = error(list_to(&ListArgs { api: api(&server, None), json: false }, &mut Vec::new()).await);
        assert!(text.contains("401") && text.contains("IOTGW_TOKEN"), "{text}");
        let text = error(list_to(&ListArgs { api: api(&server, Some("wrong")), json: false }, &mut Vec::new()).await);
        assert!(text.contains("refused the token (401)"), "{text}");
        let viewer_block = ActionArgs { mac, reason: None, api: api(&server, Some(VIEWER_TOKEN)), json: false };
        let text = error(action_to(&viewer_block, "block", &mut Vec::new()).await);
        assert!(text.contains("403") && text.contains("operator"), "{text}");
        let absent = ShowArgs { mac: ABSENT.parse().unwrap(), api: api(&server, Some(VIEWER_TOKEN)), json: false };
        let text = error(show_to(&absent, &mut Vec::new()).await);
        assert!(text.contains("404") && text.contains(ABSENT), "{text}");
        let release = ActionArgs { mac, reason: None, api: api(&server, Some(OPERATOR_TOKEN)), json: false };
        let text = error(action_to(&release, "release", &mut Vec::new()).await);
        assert!(text.contains("409") && text.contains("nothing to release"), "{text}");

        // A port that was just listening and is now closed refuses connections.
        let base = server.base.clone();
        server.stop().await;
        let gone = ApiArgs { url: base.clone(), token: Some(VIEWER_TOKEN.into()), ca: None };
        let text = error(list_to(&ListArgs { api: gone, json: false }, &mut Vec::new()).await);
        assert!(text.contains("cannot reach the iotgw API") && text.contains(&base), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cli_reaches_an_api_served_over_tls_with_its_certificate() {
        let fixture = Fixture::new();
        let server = TlsServer::start(&fixture).await;
        let url = format!("https://{}", server.addr);
        let args = |ca: Option<std::path::PathBuf>| ListArgs {
            api: ApiArgs { url: url.clone(), token: Some(VIEWER_TOKEN.into()), ca },
            json: true,
        };
        let mut out = Vec::new();
        list_to(&args(Some(server.cert_path.clone())), &mut out).await.unwrap();
        let parsed: Vec<DeviceSummary> = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed.len(), 2);
        // Without the certificate, the system's roots do not vouch for it.
        let text = format!("{:#}", list_to(&args(None), &mut Vec::new()).await.unwrap_err());
        assert!(text.contains(&url), "{text}");
        server.stop().await;
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn table_columns_align_to_the_widest_cell() {
        let mut out = Vec::new();
        write_table(&mut out, ["A", "B"], &[["long cell".into(), "x".into()], ["s".into(), "y".into()]]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "A          B\nlong cell  x\ns          y\n");
    }
}
