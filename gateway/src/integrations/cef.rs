//! ArcSight Common Event Format (CEF:0) lines of `GatewayEvent`s, with the escaping of the
//! "Implementing ArcSight CEF" guide: in the header `\` and `|` are escaped; in extension
//! values `\`, `=`, newlines and carriage returns are; extension keys are fixed identifiers.
//! Before that, every value goes through `untrusted::escape`: CEF's own `\n` escape would give
//! the receiver's parser a real line feed back, and a bidi override would survive as such.
use std::fmt::Write as _;

use crate::{
    detect::DetectorKind,
    event::{EventKind, GatewayEvent},
};

use super::render::{self, Origin};

/// Vendor written in the CEF header.
pub const CEF_VENDOR: &str = "iotgw";

/// Renders one CEF line (no trailing newline).
pub fn render(origin: &Origin, event: &GatewayEvent) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("CEF:0");
    for field in [
        CEF_VENDOR,
        &origin.app_name,
        origin.version,
        &render::signature(event),
        &name(event),
        &render::cef_severity(event.severity).to_string(),
    ] {
        out.push('|');
        escape_header(field, &mut out);
    }
    out.push('|');
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", (event.time.unix_timestamp_nanos() / 1_000_000).to_string()),
        ("externalId", event.id.clone()),
        ("cat", event.kind_name().to_owned()),
        ("dvchost", origin.hostname.clone()),
        ("suser", event.actor.clone()),
        ("msg", render::summary(event)),
    ];
    if let Some(repeat) = event.repeat {
        // CEF's baseEventCount, startTime and endTime: how many events an aggregate stands for.
        ext.push(("cnt", repeat.count.to_string()));
        ext.push(("start", (repeat.first_seen.unix_timestamp_nanos() / 1_000_000).to_string()));
        ext.push(("end", (repeat.last_seen.unix_timestamp_nanos() / 1_000_000).to_string()));
    }
    if let Some(mac) = event.device {
        ext.push(("smac", mac.to_string()));
    }
    match event.device_ip {
        Some(std::net::IpAddr::V4(ip)) => ext.push(("src", ip.to_string())),
        // CEF's `src` is IPv4 only; the guide's IPv6 slot is c6a2 ("Source IPv6 Address").
        Some(std::net::IpAddr::V6(ip)) => {
            ext.push(("c6a2", ip.to_string()));
            ext.push(("c6a2Label", "Source IPv6 Address".into()));
        }
        None => {}
    }
    match &event.kind {
        EventKind::Alert { incident_id, detector, score, expected, observed, resolved, .. } => {
            ext.push(("cs1Label", "incident".into()));
            ext.push(("cs1", incident_id.clone()));
            ext.push(("cs2Label", "detector".into()));
            ext.push(("cs2", detector.clone()));
            ext.push(("cs3Label", "expected".into()));
            ext.push(("cs3", expected.clone()));
            ext.push(("cs4Label", "observed".into()));
            ext.push(("cs4", observed.clone()));
            ext.push(("cfp1Label", "score".into()));
            ext.push(("cfp1", format!("{score:.3}")));
            ext.push(("outcome", if *resolved { "resolved" } else { "open" }.into()));
            let techniques = DetectorKind::techniques_of(detector);
            if !techniques.is_empty() {
                // CEF has no ATT&CK key: a labelled custom string, as ArcSight's own rules do.
                ext.push(("cs5Label", "mitreAttackTechniques".into()));
                ext.push(("cs5", techniques.iter().map(|t| t.id).collect::<Vec<_>>().join(",")));
            }
        }
        EventKind::Action { action, reason } => {
            ext.push(("act", action.clone()));
            ext.push(("reason", reason.clone()));
        }
        EventKind::Lifecycle { from, to } => {
            ext.push(("cs1Label", "from".into()));
            ext.push(("cs1", from.clone()));
            ext.push(("cs2Label", "to".into()));
            ext.push(("cs2", to.clone()));
        }
        EventKind::PolicyChange { accepted, detail } => {
            ext.push(("outcome", if *accepted { "success" } else { "failure" }.into()));
            ext.push(("reason", detail.clone()));
        }
        EventKind::Audit { action, detail } => {
            ext.push(("act", action.clone()));
            ext.push(("reason", detail.clone()));
        }
    }
    for (i, (key, value)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{key}=");
        escape_extension(value, &mut out);
    }
    out
}

/// The header's Name: a short phrase (the summary is in `msg`).
fn name(event: &GatewayEvent) -> String {
    match &event.kind {
        EventKind::Alert { detector, resolved: false, .. } => format!("{detector} alert"),
        EventKind::Alert { detector, resolved: true, .. } => format!("{detector} alert resolved"),
        EventKind::Action { action, .. } => format!("device {action}"),
        EventKind::Lifecycle { to, .. } => format!("device {to}"),
        EventKind::PolicyChange { accepted: true, .. } => "policy changed".into(),
        EventKind::PolicyChange { accepted: false, .. } => "policy refused".into(),
        EventKind::Audit { action, .. } => action.clone(),
    }
}

/// Header: backslash and pipe are escaped; a line break has no escape there, so it becomes a
/// space (it would end the record).
fn escape_header(value: &str, out: &mut String) {
    for c in crate::untrusted::escape(value).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Extension value: backslash and equals are escaped, line breaks written as `\n`, `\r`.
/// Pipes are literal there.
fn escape_extension(value: &str, out: &mut String) {
    for c in crate::untrusted::escape(value).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::render::fixtures;

    #[test]
    fn header_escapes_pipe_and_backslash() {
        let mut out = String::new();
        escape_header("a|b\\c\nd\u{202e}", &mut out);
        assert_eq!(out, "a\\|b\\\\c\\\\nd\\\\u202e");
    }

    #[test]
    fn extension_escapes_equals_backslash_and_newlines_but_not_pipes() {
        let mut out = String::new();
        escape_extension("x=1|y\\z\r\nw\u{2028}", &mut out);
        // The line breaks reach the receiver as the text `\r\n`, not as CEF escapes of them.
        assert_eq!(out, "x\\=1|y\\\\z\\\\r\\\\nw\\\\u2028");
    }

    #[test]
    fn alert_line_has_seven_header_fields_and_extensions() {
        let line = render(&fixtures::origin(), &fixtures::alert(false));
        assert!(line.starts_with("CEF:0|iotgw|iotgw|0.1.0|alert:scan|scan alert|8|rt=1795588201123 "), "{line}");
        assert!(line.contains("cs4=40 peers \\= a]b\\\\c\\\\nnext"), "{line}");
        assert!(line.contains("smac=02:00:00:00:00:01 src=10.0.0.5"), "{line}");
        assert!(line.contains("cs5Label=mitreAttackTechniques cs5=T1046,T0846"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn an_alert_of_no_known_detector_carries_no_technique() {
        let mut event = fixtures::alert(false);
        if let EventKind::Alert { detector, .. } = &mut event.kind {
            *detector = "flood_aggregate".into();
        }
        assert!(!render(&fixtures::origin(), &event).contains("cs5"));
    }
}
