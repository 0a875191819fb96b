//! What gateways and the hub send each other, as JSON. Fields are only ever added; `v` changes
//! if a message's meaning ever does. Every report carries its origin, so the hub never trusts
//! the subject alone and a message copied to another subject is caught (`Report::check_origin`).
//!
//! Deduplication: each report has a `Nats-Msg-Id` (`msg_id`) that is the same for every retry
//! of the same report, so JetStream drops a retry inside its duplicate window, and the hub's
//! upserts are keyed on the same identity, so a redelivery beyond it changes nothing.
use serde::{Deserialize, Serialize};

use crate::{event::GatewayEvent, inventory::records::DeviceRecord};

pub const VERSION: u32 = 1;

/// One report from a gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub v: u32,
    pub site: String,
    pub gateway: String,
    /// When the gateway sent it (unix ms).
    pub sent_ms: i64,
    #[serde(flatten)]
    pub body: ReportBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportBody {
    /// One outbox event, `seq` its outbox sequence number on that gateway.
    Event { seq: i64, event: GatewayEvent },
    /// A device's state after a change; `changed_ms` orders snapshots of one device.
    Inventory { changed_ms: i64, device: DeviceRecord },
    /// The periodic health report.
    Health { health: Health },
    /// The outcome of a hub command.
    CommandResult { result: CommandResult },
}

/// A gateway's health, every `fleet.health_secs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `iotgw` version.
    pub version: String,
    /// Version of the policy bundle enforced, `None` while running local policy files only.
    pub policy_version: Option<u64>,
    /// The last bundle refused and why, until a later one is applied.
    pub policy_refused: Option<BundleRefusal>,
    /// XDP attach mode (`native`, `generic`), `None` when offline.
    pub xdp_mode: Option<String>,
    /// Entries used per BPF map, with its capacity.
    pub map_fill: Vec<MapFill>,
    /// Events in the outbox not yet acknowledged by the broker.
    pub outbox_backlog: u64,
    pub devices: u64,
    pub uptime_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    pub map: String,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleRefusal {
    pub version: u64,
    pub reason: String,
}

/// An action the hub asks one gateway to enforce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub v: u32,
    /// UUID; the gateway enforces each id once.
    pub id: String,
    pub site: String,
    pub gateway: String,
    pub action: CommandAction,
    pub mac: crate::device::Mac,
    /// Who asked, as the hub authenticated them (`hub:alice`); audited on both sides.
    pub actor: String,
    pub reason: String,
    pub issued_ms: i64,
    /// After this the gateway refuses it (reported as `expired`).
    pub expires_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    Quarantine,
    Release,
    Block,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub command_id: String,
    pub outcome: CommandOutcome,
    /// What was done, or why not, in words.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    Done,
    Refused,
    Expired,
    /// The device is not in this gateway's inventory.
    UnknownDevice,
}

impl Report {
    pub fn new(site: &str, gateway: &str, sent_ms: i64, body: ReportBody) -> Self {
        Self { v: VERSION, site: site.to_owned(), gateway: gateway.to_owned(), sent_ms, body }
    }

    /// The `Nats-Msg-Id` header: one value for every retry of the same report.
    pub fn msg_id(&self) -> String {
        let (site, gateway) = (&self.site, &self.gateway);
        match &self.body {
            ReportBody::Event { seq, .. } => format!("{site}.{gateway}.event.{seq}"),
            ReportBody::Inventory { changed_ms, device } => format!("{site}.{gateway}.inv.{}.{changed_ms}", device.mac),
            ReportBody::Health { .. } => format!("{site}.{gateway}.health.{}", self.sent_ms),
            ReportBody::CommandResult { result } => format!("{site}.{gateway}.cmd_result.{}", result.command_id),
        }
    }

    pub fn kind(&self) -> super::subjects::ReportKind {
        use super::subjects::ReportKind;
        match self.body {
            ReportBody::Event { .. } => ReportKind::Event,
            ReportBody::Inventory { .. } => ReportKind::Inventory,
            ReportBody::Health { .. } => ReportKind::Health,
            ReportBody::CommandResult { .. } => ReportKind::CommandResult,
        }
    }

    /// The subject it is published on.
    pub fn subject(&self) -> String {
        super::subjects::report(&self.site, &self.gateway, self.kind())
    }

    /// The report came on the subject its origin and kind say (the broker's permissions pin
    /// the subject to the credentials, so this pins the content to them too).
    pub fn check_origin(&self, subject: &str) -> Result<(), String> {
        match super::subjects::parse_report(subject) {
            Some((site, gateway, kind)) if site == self.site && gateway == self.gateway && kind == self.kind() => {
                Ok(())
            }
            _ => Err(format!("report from {}.{} ({:?}) arrived on {subject}", self.site, self.gateway, self.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(site: &str, sent_ms: i64) -> Report {
        Report::new(site, "gw-1", sent_ms, ReportBody::Health { health: Health::default() })
    }

    #[test]
    fn a_report_round_trips_with_its_kind_tag() {
        let report = health("s1", 5);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["kind"], "health");
        assert_eq!(json["v"], 1);
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), report);
    }

    #[test]
    fn a_report_on_another_gateways_subject_is_caught() {
        let report = health("s1", 5);
        assert!(report.check_origin(&report.subject()).is_ok());
        assert!(report.check_origin("iotgw.s2.gw-1.health").is_err());
        assert!(report.check_origin("iotgw.s1.gw-1.event").is_err());
    }

    #[test]
    fn a_snapshot_carries_every_level_of_the_type_guess_and_one_without_them_still_reads() {
        let record = serde_json::json!({
            "mac": "02:00:00:00:00:01", "first_seen": "2026-12-01T00:00:00Z", "last_seen": "2026-12-01T00:00:00Z",
            "vendor": null, "locally_administered": true, "hostname": null, "device_type": "EdimaxCam",
            "type_confidence": 0.9, "access": "enrolled", "lifecycle": null, "class": null,
            "firmware_version": null, "cert_subject": null, "device_id": null, "ips": [], "flows_total": 0,
            "traffic": {"tx_bytes": 0, "tx_packets": 0, "rx_bytes": 0, "rx_packets": 0},
        });
        let snapshot = |device: serde_json::Value| {
            serde_json::json!({"v": 1, "site": "s1", "gateway": "gw-1", "sent_ms": 5, "kind": "inventory",
                               "changed_ms": 5, "device": device})
        };
        // From a gateway older than its inventory's generic type: the levels are absent.
        let old: Report = serde_json::from_value(snapshot(record.clone())).expect("an older gateway's snapshot");
        let ReportBody::Inventory { device, .. } = &old.body else { panic!("not a snapshot") };
        assert_eq!((device.generic_type.as_deref(), device.type_vendor.as_deref()), (None, None));

        let mut current = record;
        current["generic_type"] = "ip-camera".into();
        current["generic_confidence"] = 0.95.into();
        current["type_vendor"] = "Edimax".into();
        let report: Report = serde_json::from_value(snapshot(current)).expect("a snapshot");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (&json["device"]["generic_type"], &json["device"]["generic_confidence"]),
            (&"ip-camera".into(), &0.95.into())
        );
        assert_eq!(json["device"]["type_vendor"], "Edimax");
    }

    #[test]
    fn retries_share_a_message_id() {
        assert_eq!(health("s1", 5).msg_id(), health("s1", 5).msg_id());
        assert_ne!(health("s1", 5).msg_id(), health("s1", 6).msg_id());
    }
}
