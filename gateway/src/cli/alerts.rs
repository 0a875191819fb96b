//! `iotgw alerts` and `iotgw alert ID show|ack|resolve|reopen|assign|note|learn|unlearn`: the
//! alert records, through the local API (the same `--api`/`--token` as `iotgw devices`). Prints
//! tables or JSON on stdout; a refused change is one line saying why.
use std::{io::Write, process::ExitCode};

use crate::api::alerts::{AlertChange, AlertDetail, AlertSummary};

use super::{
    client::{ApiArgs, Client, PageArgs, block_on, hint_next_page},
    table::{rfc3339, write_json, write_table},
};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// open, acknowledged or resolved.
    #[arg(long)]
    pub state: Option<String>,
    /// The device's MAC address.
    #[arg(long)]
    pub device: Option<String>,
    /// info, low, medium, high or critical.
    #[arg(long)]
    pub severity: Option<String>,
    /// Detector name, e.g. scan.
    #[arg(long)]
    pub detector: Option<String>,
    /// last_seen (default), first_seen, score or severity; newest or highest first.
    #[arg(long)]
    pub sort: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AlertArgs {
    /// The alert's id (first column of `iotgw alerts`).
    pub id: i64,
    #[command(subcommand)]
    pub step: Step,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do with the alert.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Step {
    /// Show it with its evidence, responses and notes.
    Show,
    /// Acknowledge it (someone is on it).
    Ack {
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve it.
    Resolve {
        /// true_positive, false_positive or benign.
        #[arg(long)]
        resolution: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Reopen a resolved alert.
    Reopen {
        #[arg(long)]
        note: Option<String>,
    },
    /// Assign it to someone ("" unassigns).
    Assign { assignee: String },
    /// Add a note.
    Note { text: String },
    /// Learn what a false-positive alert observed as its device's normal (audited).
    Learn,
    /// Take that learning back: the detectors flag it again (audited).
    Unlearn,
}

impl Step {
    /// The change it asks for; `None` for the steps that are no `PATCH`.
    fn change(&self) -> Option<AlertChange> {
        let state = |state: &str, note: &Option<String>| AlertChange {
            state: Some(state.into()),
            note: note.clone(),
            ..AlertChange::default()
        };
        Some(match self {
            Step::Show | Step::Learn | Step::Unlearn => return None,
            Step::Ack { note } => state("acknowledged", note),
            Step::Resolve { resolution, note } => {
                AlertChange { resolution: Some(resolution.clone()), ..state("resolved", note) }
            }
            Step::Reopen { note } => state("open", note),
            Step::Assign { assignee } => AlertChange { assignee: Some(assignee.clone()), ..AlertChange::default() },
            Step::Note { text } => AlertChange { note: Some(text.clone()), ..AlertChange::default() },
        })
    }
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    block_on(list_to(&args, &mut std::io::stdout().lock()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn alert(args: AlertArgs) -> anyhow::Result<ExitCode> {
    block_on(alert_to(&args, &mut std::io::stdout().lock()))?;
    Ok(ExitCode::SUCCESS)
}

/// `iotgw alerts`, written to `out`.
pub async fn list_to(args: &ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let query: Vec<(&str, String)> = [
        ("state", &args.state),
        ("device", &args.device),
        ("severity", &args.severity),
        ("detector", &args.detector),
        ("sort", &args.sort),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.clone().map(|value| (name, value)))
    .collect();
    let (alerts, next): (Vec<AlertSummary>, _) =
        Client::new(&args.api)?.list("/api/v1/alerts", query, &args.page, "listing alerts").await?;
    if args.json {
        write_json(out, &alerts)?;
    } else {
        let rows: Vec<[String; 8]> = alerts.iter().map(row).collect();
        write_table(out, ["ID", "LAST SEEN", "SEVERITY", "SCORE", "DETECTOR", "DEVICE", "COUNT", "STATE"], &rows)?;
    }
    hint_next_page(next.as_deref());
    Ok(())
}

fn row(a: &AlertSummary) -> [String; 8] {
    let mut state = a.state.to_string();
    if let Some(resolution) = a.resolution {
        state = format!("{state} ({resolution})");
    }
    if let Some(assignee) = &a.assignee {
        state = format!("{state}, {assignee}");
    }
    [
        a.id.to_string(),
        rfc3339(a.last_seen),
        crate::integrations::render::severity_name(a.severity).to_owned(),
        format!("{:.2}", a.score),
        a.detector.clone(),
        a.device.map_or_else(|| "-".to_owned(), |mac| mac.to_string()),
        a.count.to_string(),
        state,
    ]
}

/// `iotgw alert ID ...`, written to `out`.
pub async fn alert_to(args: &AlertArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let path = format!("/api/v1/alerts/{}", args.id);
    let what = format!("alert {}", args.id);
    let learn = format!("{path}/learn");
    let detail: AlertDetail = match (&args.step, args.step.change()) {
        (Step::Learn, _) => client.call(reqwest::Method::POST, &learn, &what).await?,
        (Step::Unlearn, _) => client.call(reqwest::Method::DELETE, &learn, &what).await?,
        (_, None) => client.get(&path, &[], &what).await?,
        (_, Some(change)) => client.patch(&path, &change, &what).await?,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &detail)?;
        writeln!(out)?;
        return Ok(());
    }
    let a = &detail.summary;
    let [id, last_seen, severity, score, detector, device, count, state] = row(a);
    writeln!(out, "Alert        {id} ({})", a.incident_id)?;
    writeln!(out, "State        {state}")?;
    writeln!(out, "Detector     {detector} ({severity}, score {score})")?;
    writeln!(out, "Device       {device}")?;
    writeln!(out, "Seen         {count} time(s), {} .. {last_seen}", rfc3339(a.first_seen))?;
    if let Some(calm) = a.calm_since {
        writeln!(out, "Calm since   {}", rfc3339(calm))?;
    }
    writeln!(out, "Expected     {}", a.expected)?;
    writeln!(out, "Observed     {}", a.observed)?;
    for flow in &detail.flows {
        writeln!(out, "Flow         {flow}")?;
    }
    let label = if detail.learned { "Learnt       " } else { "Learnable    " };
    for observation in &detail.learnable {
        writeln!(out, "{label}{observation}")?;
    }
    if !detail.responses.is_empty() {
        writeln!(out, "\nResponses")?;
        let rows: Vec<[String; 4]> = detail
            .responses
            .iter()
            .map(|r| [rfc3339(r.time), r.actor.clone(), r.action.clone(), r.reason.clone()])
            .collect();
        write_table(out, ["TIME", "ACTOR", "ACTION", "REASON"], &rows)?;
    }
    if !detail.notes.is_empty() {
        writeln!(out, "\nNotes")?;
        let rows: Vec<[String; 3]> =
            detail.notes.iter().map(|n| [rfc3339(n.time), n.author.clone(), n.text.clone()]).collect();
        write_table(out, ["TIME", "AUTHOR", "NOTE"], &rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        alerts::AlertStore,
        api::tests::{CAMERA, Fixture, OPERATOR_TOKEN, Options, Server, VIEWER_TOKEN},
        event::{EventKind, GatewayEvent, Measure, Observation, Severity},
    };

    fn api(server: &Server, token: &str) -> ApiArgs {
        ApiArgs { url: server.base.clone(), token: Some(token.into()), ca: None }
    }

    fn list_args(server: &Server, json: bool) -> ListArgs {
        ListArgs {
            state: None,
            device: Some(CAMERA.into()),
            severity: None,
            detector: None,
            sort: None,
            page: PageArgs::default(),
            api: api(server, VIEWER_TOKEN),
            json,
        }
    }

    #[test]
    fn alert_steps_parse_as_the_help_says() {
        use clap::Parser as _;
        let cli =
            crate::cli::Cli::try_parse_from(["iotgw", "alert", "5", "resolve", "--resolution", "benign", "--json"])
                .unwrap();
        let crate::cli::Command::Alert(args) = cli.command else { panic!("{cli:?}") };
        assert_eq!((args.id, args.json), (5, true));
        let change = args.step.change().unwrap();
        assert_eq!((change.state.as_deref(), change.resolution.as_deref()), (Some("resolved"), Some("benign")));
        let cli = crate::cli::Cli::try_parse_from(["iotgw", "alert", "5", "note", "two words"]).unwrap();
        let crate::cli::Command::Alert(args) = cli.command else { panic!("{cli:?}") };
        assert_eq!(args.step.change().unwrap().note.as_deref(), Some("two words"));
        assert!(crate::cli::Cli::try_parse_from(["iotgw", "alert", "5", "resolve"]).is_err(), "a resolution is needed");
        let cli = crate::cli::Cli::try_parse_from(["iotgw", "alert", "5", "unlearn"]).unwrap();
        let crate::cli::Command::Alert(args) = cli.command else { panic!("{cli:?}") };
        assert!(matches!(args.step, Step::Unlearn) && args.step.change().is_none());
    }

    #[tokio::test]
    async fn cli_lists_acknowledges_notes_and_resolves_against_a_real_server() {
        let fixture = Fixture::new();
        let mut store = AlertStore::open(&fixture.dir.0.join("iotgw.db")).unwrap();
        let mut scan = GatewayEvent::new(
            Severity::High,
            Some(CAMERA.parse().unwrap()),
            "detector:scan",
            EventKind::Alert {
                incident_id: format!("scan:{CAMERA}"),
                detector: "scan".into(),
                score: 0.9,
                expected: "few hosts".into(),
                observed: "90 hosts".into(),
                flows: vec![],
                resolved: false,
            },
        );
        scan.observations = vec![Observation::Rate { measure: Measure::ScanHosts, observed: 40.0, limit: 24.0 }];
        store.record(&[scan]).unwrap();
        let options = Options { alerts: Some(store), ..Options::default() };
        let server = Server::start_with(fixture.directory(), false, options).await;

        let mut out = Vec::new();
        list_to(&list_args(&server, false), &mut out).await.unwrap();
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID") && lines[0].contains("STATE"), "{table}");
        assert!(lines[1].starts_with("1 ") && lines[1].contains("high") && lines[1].ends_with("open"), "{table}");

        let step = |step: Step, token: &str| AlertArgs { id: 1, step, api: api(&server, token), json: false };
        let mut out = Vec::new();
        alert_to(&step(Step::Ack { note: Some("on it".into()) }, OPERATOR_TOKEN), &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("State        acknowledged"), "{text}");
        assert!(text.contains("api:otto") && text.contains("on it"), "{text}");

        let viewer = format!(
            "{:#}",
            alert_to(&step(Step::Note { text: "x".into() }, VIEWER_TOKEN), &mut Vec::new()).await.unwrap_err()
        );
        assert!(viewer.contains("403"), "{viewer}");
        let bad = Step::Resolve { resolution: "maybe".into(), note: None };
        let refused = format!("{:#}", alert_to(&step(bad, OPERATOR_TOKEN), &mut Vec::new()).await.unwrap_err());
        assert!(refused.contains("400") && refused.contains("maybe"), "{refused}");

        let resolve = Step::Resolve { resolution: "false_positive".into(), note: None };
        let mut out = Vec::new();
        alert_to(&AlertArgs { json: true, ..step(resolve, OPERATOR_TOKEN) }, &mut out).await.unwrap();
        let detail: AlertDetail = serde_json::from_slice(&out).unwrap();
        assert_eq!(detail.summary.resolution, Some(crate::alerts::Resolution::FalsePositive));

        let mut out = Vec::new();
        alert_to(&step(Step::Learn, OPERATOR_TOKEN), &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Learnt       scan_hosts up to 50 (observed 40)"), "{text}");
        let again = format!("{:#}", alert_to(&step(Step::Learn, OPERATOR_TOKEN), &mut Vec::new()).await.unwrap_err());
        assert!(again.contains("409") && again.contains("learnt already"), "{again}");
        let mut out = Vec::new();
        alert_to(&step(Step::Unlearn, OPERATOR_TOKEN), &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Learnable    scan_hosts up to 50 (observed 40)"), "{text}");

        let mut out = Vec::new();
        list_to(&list_args(&server, true), &mut out).await.unwrap();
        let alerts: Vec<AlertSummary> = serde_json::from_slice(&out).unwrap();
        assert_eq!(alerts[0].state, crate::alerts::State::Resolved);
        server.stop().await;
    }
}
