//! `iotgw devices|device|quarantine|release|block`: clients of the local API (`client`). Lists
//! devices a page at a time with the API's filters, search and sorts; prints tables or JSON
//! on stdout.
use std::{io::Write, process::ExitCode};

use super::{
    client::{ApiArgs, Client, PageArgs, Params, block_on, hint_next_page},
    table::{rfc3339, write_json, write_table},
};
use crate::device::Mac;

/// Flows shown by `iotgw device`.
pub const FLOWS_SHOWN: usize = 10;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub filter: DeviceFilterArgs,
    #[command(flatten)]
    pub page: PageArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which devices `iotgw devices` lists, in which order (`GET /api/v1/devices`); the API
/// checks the values.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeviceFilterArgs {
    /// Access state: unknown, onboarding, enrolled, quarantined or blocked.
    #[arg(long)]
    pub state: Option<String>,
    /// Device type, exactly (camera, smart_plug, ...).
    #[arg(long = "type")]
    pub device_type: Option<String>,
    /// Vendor, exactly as listed.
    #[arg(long)]
    pub vendor: Option<String>,
    /// Policy class, exactly.
    #[arg(long)]
    pub class: Option<String>,
    /// A MAC prefix, an IP prefix or part of the host name (3 characters or more), any case.
    #[arg(short = 'q', long = "search")]
    pub search: Option<String>,
    /// last_seen (default) or first_seen, newest first; mac, vendor or type, A to Z.
    #[arg(long)]
    pub sort: Option<String>,
}

impl DeviceFilterArgs {
    fn params(&self) -> Params {
        [
            ("state", &self.state),
            ("type", &self.device_type),
            ("vendor", &self.vendor),
            ("class", &self.class),
            ("q", &self.search),
            ("sort", &self.sort),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.clone()?)))
        .collect()
    }
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

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let next = block_on(list_to(&args, &mut std::io::stdout().lock()))?;
    hint_next_page(next.as_deref());
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

/// `iotgw devices`, written to `out`; returns the cursor of the page after it.
pub async fn list_to(args: &ListArgs, out: &mut impl Write) -> anyhow::Result<Option<String>> {
    let (devices, next) = Client::new(&args.api)?.devices(args.filter.params(), &args.page).await?;
    if args.json {
        write_json(out, &devices)?;
        return Ok(next);
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
    Ok(next)
}

/// `iotgw device MAC`, written to `out`.
pub async fn show_to(args: &ShowArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let detail = client.device(args.mac).await?;
    let flows = client.flows(args.mac, FLOWS_SHOWN).await?;
    if args.json {
        write_json(out, &serde_json::json!({ "device": detail, "flows": flows }))?;
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
        write_json(out, &response)?;
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
    use crate::api::{
        model::{ActionResponse, DeviceSummary},
        tests::{ABSENT, CAMERA, Fixture, OPERATOR_TOKEN, PLUG, Server, TlsServer, VIEWER_TOKEN},
    };

    fn api(server: &Server, token: Option<&str>) -> ApiArgs {
        ApiArgs { url: format!("{}/", server.base), token: token.map(str::to_owned), ca: None }
    }

    fn listing(api: ApiArgs, json: bool) -> ListArgs {
        ListArgs { api, filter: DeviceFilterArgs::default(), page: PageArgs::default(), json }
    }

    #[tokio::test]
    async fn cli_lists_shows_and_acts_against_a_real_server() {
        let fixture = Fixture::new();
        let server = Server::start(fixture.directory(), false).await;
        let mut out = Vec::new();
        list_to(&listing(api(&server, Some(VIEWER_TOKEN)), false), &mut out).await.unwrap();
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("MAC") && lines[0].contains("LAST SEEN"), "{table}");
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[1].starts_with(CAMERA) && lines[1].contains("192.168.1.20") && lines[1].contains("enrolled"),
            "{table}"
        );

        let mut out = Vec::new();
        list_to(&listing(api(&server, Some(VIEWER_TOKEN)), true), &mut out).await.unwrap();
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
        fn error<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
            format!("{:#}", result.unwrap_err())
        }

        let text = error(list_to(&listing(api(&server, None), false), &mut Vec::new()).await);
        assert!(text.contains("401") && text.contains("IOTGW_TOKEN"), "{text}");
        let text = error(list_to(&listing(api(&server, Some("wrong")), false), &mut Vec::new()).await);
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
        let text = error(list_to(&listing(gone, false), &mut Vec::new()).await);
        assert!(text.contains("cannot reach the iotgw API") && text.contains(&base), "{text}");
    }

    #[tokio::test]
    async fn cli_filters_and_pages_devices() {
        let fixture = Fixture::new();
        let server = Server::start(fixture.directory(), false).await;
        let listed = |filter: DeviceFilterArgs, page: PageArgs| {
            let args = ListArgs { api: api(&server, Some(VIEWER_TOKEN)), filter, page, json: true };
            async move {
                let mut out = Vec::new();
                let next = list_to(&args, &mut out).await?;
                let devices: Vec<DeviceSummary> = serde_json::from_slice(&out)?;
                anyhow::Ok((devices.iter().map(|d| d.mac.to_string()).collect::<Vec<_>>(), next))
            }
        };
        let enrolled = DeviceFilterArgs { state: Some("enrolled".into()), ..DeviceFilterArgs::default() };
        assert_eq!(listed(enrolled, PageArgs::default()).await.unwrap(), (vec![CAMERA.to_owned()], None));
        let searched = DeviceFilterArgs { search: Some("192.168.1.21".into()), ..DeviceFilterArgs::default() };
        assert_eq!(listed(searched, PageArgs::default()).await.unwrap().0, [PLUG]);

        let one = PageArgs { limit: Some(1), ..PageArgs::default() };
        let (first, next) = listed(DeviceFilterArgs::default(), one.clone()).await.unwrap();
        assert_eq!(first, [CAMERA], "most recently seen first");
        let rest = PageArgs { cursor: next, ..one.clone() };
        assert_eq!(listed(DeviceFilterArgs::default(), rest).await.unwrap(), (vec![PLUG.to_owned()], None));
        let all = PageArgs { all: true, ..one };
        assert_eq!(listed(DeviceFilterArgs::default(), all).await.unwrap(), (vec![CAMERA.into(), PLUG.into()], None));

        let bogus = DeviceFilterArgs { state: Some("bogus".into()), ..DeviceFilterArgs::default() };
        let text = format!("{:#}", listed(bogus, PageArgs::default()).await.unwrap_err());
        assert!(text.contains("400") && text.contains("state must be an access state"), "{text}");
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cli_reaches_an_api_served_over_tls_with_its_certificate() {
        let fixture = Fixture::new();
        let server = TlsServer::start(&fixture).await;
        let url = format!("https://{}", server.addr);
        let args = |ca| listing(ApiArgs { url: url.clone(), token: Some(VIEWER_TOKEN.into()), ca }, true);
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
}
