//! What every wire format shares: the identity of this gateway in the messages (`Origin`),
//! severity scales, and the one-line human summary of a `GatewayEvent`. Reads nothing.
use crate::event::{EventKind, GatewayEvent, Severity};

use super::config::Config;

/// Who speaks in rendered messages.
#[derive(Clone, Debug)]
pub struct Origin {
    pub hostname: String,
    pub app_name: String,
    pub enterprise_id: u32,
    pub procid: u32,
    pub version: &'static str,
}

/// Where Linux keeps the hostname; read rather than calling gethostname(2) to stay safe code.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

impl Origin {
    pub fn from_config(config: &Config) -> Self {
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| std::fs::read_to_string(HOSTNAME_FILE).map(|h| h.trim().to_owned()).unwrap_or_default());
        Self {
            hostname: if hostname.is_empty() { "localhost".into() } else { hostname },
            app_name: config.app_name.clone(),
            enterprise_id: config.enterprise_id,
            procid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// syslog severity (RFC 5424 table 2): critical=2 .. informational=6.
pub fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// CEF severity, 0..=10 (ArcSight: 0-3 low, 4-6 medium, 7-8 high, 9-10 very high).
pub fn cef_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// OCSF `severity_id`: 1 informational .. 5 critical.
pub fn ocsf_severity_id(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// The short name a SIEM rule keys on: `alert:scan`, `action:quarantine`, `lifecycle:enrolled`.
pub fn signature(event: &GatewayEvent) -> String {
    match &event.kind {
        EventKind::Alert { detector, resolved, .. } => {
            if *resolved {
                format!("alert:{detector}:resolved")
            } else {
                format!("alert:{detector}")
            }
        }
        EventKind::Action { action, .. } => format!("action:{action}"),
        EventKind::Lifecycle { to, .. } => format!("lifecycle:{to}"),
        EventKind::PolicyChange { accepted, .. } => {
            if *accepted {
                "policy_change:accepted".into()
            } else {
                "policy_change:refused".into()
            }
        }
        EventKind::Audit { action, .. } => format!("audit:{action}"),
    }
}

/// RFC 3339 form of a time (years beyond 9999 cannot occur in events; they would print empty).
pub fn rfc3339(time: time::OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// One line an analyst reads; an aggregate says how many events it stands for and when.
pub fn summary(event: &GatewayEvent) -> String {
    let mut line = kind_summary(event);
    if let Some(repeat) = event.repeat {
        line.push_str(&format!(
            " ({} events from {} to {})",
            repeat.count,
            rfc3339(repeat.first_seen),
            rfc3339(repeat.last_seen)
        ));
    }
    line
}

fn kind_summary(event: &GatewayEvent) -> String {
    let device = event.device.map_or_else(|| "-".to_owned(), |mac| mac.to_string());
    match &event.kind {
        EventKind::Alert { detector, observed, expected, resolved, incident_id, .. } => {
            let state = if *resolved { "resolved" } else { "alert" };
            format!("{detector} {state} on {device} (incident {incident_id}): observed {observed}; expected {expected}")
        }
        EventKind::Action { action, reason } => format!("{action} {device} by {}: {reason}", event.actor),
        EventKind::Lifecycle { from, to } => format!("device {device} {from} -> {to}"),
        EventKind::PolicyChange { accepted, detail } => {
            format!("policy {} : {detail}", if *accepted { "accepted" } else { "refused" })
        }
        EventKind::Audit { action, detail } => format!("{action} by {}: {detail}", event.actor),
    }
}

/// Every wire form of one event as the sinks send it, named: RFC 5424 with each MSG format,
/// bare CEF, and the JSON bodies of HEC, webhook and file sinks (the escaped event, as
/// `delivery` hands it to them). For tests and diagnostics of what leaves the gateway.
pub fn renderings(origin: &Origin, event: &GatewayEvent) -> Vec<(&'static str, String)> {
    use super::config::Format;
    let escaped = event.escaped();
    let mut out = Vec::new();
    for (name, format) in [
        ("syslog text", Format::Text),
        ("syslog cef", Format::Cef),
        ("syslog ecs", Format::Ecs),
        ("syslog ocsf", Format::Ocsf),
        ("syslog native", Format::Native),
    ] {
        // Facility 13 (log audit), the sinks' default.
        out.push((name, super::syslog::render(origin, 13, format, event)));
    }
    out.push(("cef", super::cef::render(origin, event)));
    out.push(("ecs json", super::json::ecs(origin, &escaped).to_string()));
    out.push(("ocsf json", super::json::ocsf(origin, &escaped).to_string()));
    out.push(("native json", super::json::native(&escaped).to_string()));
    out
}

#[cfg(test)]
pub mod fixtures {
    //! Events with every awkward character a renderer must escape.
    use super::*;
    use crate::device::Mac;

    pub fn origin() -> Origin {
        Origin {
            hostname: "gw-1".into(),
            app_name: "iotgw".into(),
            enterprise_id: 32_473,
            procid: 42,
            version: "0.1.0",
        }
    }

    /// Asserts that no rendering of `event` holds an unsafe character (`untrusted`) and that
    /// each shows `escaped`, the escaped form of the hostile text, as such or with its
    /// backslashes escaped once more (structured data, CEF, JSON).
    pub fn assert_renders_safely(event: &GatewayEvent, escaped: &str) {
        let doubled = escaped.replace('\\', "\\\\");
        for (form, text) in renderings(&origin(), event) {
            assert!(crate::untrusted::is_safe(&text), "{form} holds an unsafe character: {text:?}");
            assert!(text.contains(escaped) || text.contains(&doubled), "{form} lost {escaped:?}: {text}");
        }
    }

    pub fn alert(resolved: bool) -> GatewayEvent {
        let mut event = GatewayEvent::new(
            Severity::High,
            Some(Mac([0x02, 0, 0, 0, 0, 0x01])),
            "detector:scan",
            EventKind::Alert {
                incident_id: "inc-1".into(),
                detector: "scan".into(),
                score: 0.93,
                expected: "2 peers | \"cloud\"".into(),
                observed: "40 peers = a]b\\c\nnext".into(),
                flows: vec!["tcp 10.0.0.5:4000 -> 10.0.0.9:22".into()],
                resolved,
            },
        );
        event.device_ip = Some("10.0.0.5".parse().unwrap());
        event.time = time::macros::datetime!(2026-11-25 06:30:01.123456789 UTC);
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Repeat;

    #[test]
    fn aggregate_shows_its_count_and_span_in_every_rendering() {
        let mut event = GatewayEvent::new(
            Severity::Low,
            Some(crate::device::Mac([2, 0, 0, 0, 0, 1])),
            "enrollment",
            EventKind::Audit { action: "simpleenroll_refused".into(), detail: "unknown token".into() },
        );
        let first_seen = time::macros::datetime!(2026-11-25 06:30:00 UTC);
        let last_seen = time::macros::datetime!(2026-11-25 06:30:09.5 UTC);
        event.repeat = Some(Repeat { count: 8_266, first_seen, last_seen });
        for (form, text) in renderings(&fixtures::origin(), &event) {
            assert!(text.contains("8266"), "{form} lost the count: {text}");
        }
        let forms: std::collections::HashMap<_, _> = renderings(&fixtures::origin(), &event).into_iter().collect();
        assert!(
            forms["syslog text"].contains(" count=\"8266\" first_seen=\"2026-11-25T06:30:00Z\""),
            "{}",
            forms["syslog text"]
        );
        assert!(forms["cef"].contains("cnt=8266 start=1795588200000 end=1795588209500"), "{}", forms["cef"]);
        let ecs: serde_json::Value = serde_json::from_str(&forms["ecs json"]).unwrap();
        assert_eq!(ecs["iotgw"]["count"], 8_266);
        assert_eq!(ecs["event"]["end"], "2026-11-25T06:30:09.5Z");
        let ocsf: serde_json::Value = serde_json::from_str(&forms["ocsf json"]).unwrap();
        assert_eq!(ocsf["count"], 8_266);
        let native: GatewayEvent = serde_json::from_str(&forms["native json"]).unwrap();
        assert_eq!(native.repeat, event.repeat, "the outbox form round-trips the aggregate");
        let single = GatewayEvent { repeat: None, ..event };
        assert!(
            !crate::integrations::json::native(&single).to_string().contains("repeat"),
            "a single event has no repeat field"
        );
    }
}
