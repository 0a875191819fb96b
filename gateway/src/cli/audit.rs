//! `iotgw audit`: the audit log through the local API (`GET /api/v1/audit`, `client`), newest
//! first, filtered by device, actor, action and time, a page at a time; prints a table or JSON.
use std::{io::Write, process::ExitCode};

use super::{
    client::{ApiArgs, Client, PageArgs, Params, block_on, hint_next_page},
    table::{rfc3339, write_json, write_table},
};
use crate::device::Mac;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Entries of this device only.
    #[arg(long)]
    pub device: Option<Mac>,
    /// Entries of this actor only (api:alice, inventory, detector:scan, ...).
    #[arg(long)]
    pub actor: Option<String>,
    /// Entries of this action only (access_changed, device_added, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// Entries at or after this time (RFC 3339, 2026-01-31T12:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    fn params(&self) -> Params {
        [
            ("device", self.device.map(|mac| mac.to_string())),
            ("actor", self.actor.clone()),
            ("action", self.action.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
    }
}

pub fn list(args: Args) -> anyhow::Result<ExitCode> {
    let next = block_on(list_to(&args, &mut std::io::stdout().lock()))?;
    hint_next_page(next.as_deref());
    Ok(ExitCode::SUCCESS)
}

/// `iotgw audit`, written to `out`; returns the cursor of the page after it.
pub async fn list_to(args: &Args, out: &mut impl Write) -> anyhow::Result<Option<String>> {
    let (entries, next) = Client::new(&args.api)?.audit(args.params(), &args.page).await?;
    if args.json {
        write_json(out, &entries)?;
        return Ok(next);
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            let device = e.mac.map_or_else(|| "-".to_owned(), |mac| mac.to_string());
            [rfc3339(e.time), device, e.actor.clone(), e.action.clone(), e.detail.clone()]
        })
        .collect();
    write_table(out, ["TIME", "DEVICE", "ACTOR", "ACTION", "DETAIL"], &rows)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        model::AuditEntry,
        tests::{CAMERA, Fixture, Server, VIEWER_TOKEN},
    };

    #[tokio::test]
    async fn cli_lists_the_audit_log_filtered_as_a_table_or_json() {
        let fixture = Fixture::new();
        let server = Server::start(fixture.directory(), false).await;
        let args = |json: bool, page: PageArgs| Args {
            api: ApiArgs { url: server.base.clone(), token: Some(VIEWER_TOKEN.into()), ca: None },
            device: Some(CAMERA.parse().unwrap()),
            actor: None,
            action: Some("access_changed".into()),
            since: None,
            until: None,
            page,
            json,
        };
        let mut out = Vec::new();
        assert_eq!(list_to(&args(false, PageArgs::default()), &mut out).await.unwrap(), None);
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TIME") && lines[0].contains("DEVICE"), "{table}");
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[1].contains(CAMERA) && lines[1].contains("enrollment"), "{table}");

        let mut out = Vec::new();
        let all = PageArgs { limit: Some(1), all: true, ..PageArgs::default() };
        list_to(&Args { action: None, ..args(true, all) }, &mut out).await.unwrap();
        let entries: Vec<AuditEntry> = serde_json::from_slice(&out).unwrap();
        // device_added, address_added, access_changed (enrollment), class_changed: every page,
        // newest first.
        assert_eq!(entries.len(), 4, "{entries:?}");
        assert!(entries.iter().all(|e| e.mac == Some(CAMERA.parse().unwrap())));
        assert!(entries.windows(2).all(|w| w[0].time >= w[1].time));

        let bad = Args { since: Some("yesterday".into()), ..args(true, PageArgs::default()) };
        let text = format!("{:#}", list_to(&bad, &mut Vec::new()).await.unwrap_err());
        assert!(text.contains("400") && text.contains("RFC 3339"), "{text}");
        server.stop().await;
    }
}
