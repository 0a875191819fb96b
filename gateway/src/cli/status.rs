//! `iotgw status`: the running gateway in a few lines, from `GET /api/v1/status` (`client`):
//! version and uptime, the interfaces XDP is attached to and how, devices by state, the policy
//! in force, the datapath's counters and the integrations' backlog. `--json` prints the API's
//! answer as it is.
use std::{io::Write, process::ExitCode};

use anyhow::Context as _;

use super::{
    client::{ApiArgs, Client, block_on},
    table::write_json,
};
use crate::api::model::Status;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the API's JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    block_on(status_to(&args, &mut std::io::stdout().lock()))?;
    Ok(ExitCode::SUCCESS)
}

/// `iotgw status`, written to `out`.
pub async fn status_to(args: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    let status: Status = Client::new(&args.api)?.get("/api/v1/status", &[], "reading the status").await?;
    if args.json {
        return write_json(out, &status).context("writing the status");
    }
    write_summary(out, &status).context("writing the status")
}

fn write_summary(out: &mut impl Write, status: &Status) -> std::io::Result<()> {
    let uptime = status.uptime_seconds;
    writeln!(
        out,
        "iotgw {} ({}), up {}d {:02}h {:02}m",
        status.version,
        status.scope,
        uptime / 86_400,
        uptime % 86_400 / 3_600,
        uptime % 3_600 / 60
    )?;
    let interfaces: Vec<String> =
        status.datapath.interfaces.iter().map(|i| format!("{} ({}, {})", i.name, i.role, i.mode)).collect();
    let attached = if interfaces.is_empty() { "none".to_owned() } else { interfaces.join(", ") };
    writeln!(out, "XDP attached: {attached}")?;
    let total: u64 = status.devices.values().sum();
    let states: Vec<String> =
        status.devices.iter().filter(|(_, n)| **n > 0).map(|(state, n)| format!("{n} {state}")).collect();
    writeln!(
        out,
        "devices: {total}{}",
        if states.is_empty() { String::new() } else { format!(" ({})", states.join(", ")) }
    )?;
    writeln!(out, "policy: {}", status.policy_version.as_deref().unwrap_or("none loaded"))?;
    if let Some(counters) = &status.datapath.counters {
        let dropped: u64 = counters.drops.values().sum();
        writeln!(
            out,
            "datapath: {} LAN and {} WAN packets, {dropped} dropped, {} redirected, {} events lost",
            counters.lan_packets, counters.wan_packets, counters.redirected, counters.events_lost
        )?;
    }
    let backlog: u64 = status.integration_backlog.values().sum();
    writeln!(out, "integrations backlog: {backlog} event(s)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::{Fixture, Server, VIEWER_TOKEN};

    fn args(url: &str, token: Option<&str>, json: bool) -> Args {
        Args { api: ApiArgs { url: url.to_owned(), token: token.map(str::to_owned), ca: None }, json }
    }

    /// The exit code `iotgw` would end with after `error`.
    fn exit_code_of(error: &anyhow::Error) -> ExitCode {
        crate::cli::exit_code(error)
    }

    #[tokio::test]
    async fn status_prints_a_summary_or_json_and_failures_have_their_exit_codes() {
        let fixture = Fixture::new();
        let server = Server::start(fixture.directory(), false).await;
        let mut out = Vec::new();
        status_to(&args(&server.base, Some(VIEWER_TOKEN), false), &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("iotgw {} (gateway), up ", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(text.contains("\ndevices: "), "{text}");
        let mut out = Vec::new();
        status_to(&args(&server.base, Some(VIEWER_TOKEN), true), &mut out).await.unwrap();
        let status: Status = serde_json::from_slice(&out).unwrap();
        assert_eq!(status.scope, "gateway");

        let no_token = status_to(&args(&server.base, None, false), &mut Vec::new()).await.unwrap_err();
        assert_eq!(exit_code_of(&no_token), ExitCode::from(crate::cli::EXIT_UNAUTHORISED), "{no_token:#}");
        let wrong = status_to(&args(&server.base, Some("not-a-token"), false), &mut Vec::new()).await.unwrap_err();
        assert_eq!(exit_code_of(&wrong), ExitCode::from(crate::cli::EXIT_UNAUTHORISED), "{wrong:#}");
        let client = Client::new(&args(&server.base, Some(VIEWER_TOKEN), false).api).unwrap();
        let missing = client.device("02:00:00:00:0f:0f".parse().unwrap()).await.unwrap_err();
        assert_eq!(exit_code_of(&missing), ExitCode::from(crate::cli::EXIT_NOT_FOUND), "{missing:#}");
        let base = server.base.clone();
        server.stop().await;
        let gone = status_to(&args(&base, Some(VIEWER_TOKEN), false), &mut Vec::new()).await.unwrap_err();
        assert_eq!(exit_code_of(&gone), ExitCode::from(crate::cli::EXIT_UNREACHABLE), "{gone:#}");
        assert_eq!(exit_code_of(&anyhow::anyhow!("anything else")), ExitCode::FAILURE);
        let codes = [crate::cli::EXIT_NOT_FOUND, crate::cli::EXIT_UNREACHABLE, crate::cli::EXIT_UNAUTHORISED];
        assert!(codes.iter().all(|c| ![0, 1, 2, crate::cli::EXIT_CONFIG].contains(c)), "distinct codes");
    }

    #[test]
    fn the_summary_names_interfaces_devices_policy_and_counters() {
        let status = Status {
            scope: "gateway".into(),
            version: "0.1.0".into(),
            uptime_seconds: 90_061,
            datapath: crate::api::model::DatapathStatus {
                interfaces: vec![crate::api::model::AttachedInterface {
                    name: "lan0".into(),
                    role: "lan".into(),
                    mode: "native".into(),
                }],
                counters: Some(crate::api::model::CountersSummary {
                    lan_packets: 10,
                    drops: [("policy_miss".to_owned(), 3)].into(),
                    ..Default::default()
                }),
            },
            devices: [("enrolled".to_owned(), 2), ("quarantined".to_owned(), 1), ("blocked".to_owned(), 0)].into(),
            policy_version: Some("abc123".into()),
            integration_backlog: [("siem".to_owned(), 4)].into(),
        };
        let mut out = Vec::new();
        write_summary(&mut out, &status).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "iotgw 0.1.0 (gateway), up 1d 01h 01m\nXDP attached: lan0 (lan, native)\n\
             devices: 3 (2 enrolled, 1 quarantined)\npolicy: abc123\n\
             datapath: 10 LAN and 0 WAN packets, 3 dropped, 0 redirected, 0 events lost\n\
             integrations backlog: 4 event(s)\n"
        );
    }
}
