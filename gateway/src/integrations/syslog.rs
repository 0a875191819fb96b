//! RFC 5424 syslog messages of `GatewayEvent`s, with the event's fields as structured data,
//! and the framings of the transports: one datagram per message (RFC 5426) or octet counting
//! (`LEN SP MSG`, RFC 6587 §3.4.1, the framing RFC 5425 mandates over TLS).
//!
//! Every text from the event goes through `untrusted::escape` here, whatever its producer did:
//! no line break, control or bidi character reaches the receiver, which may split records on
//! line feeds (non-transparent framing, files, many SIEM collectors).
use std::fmt::Write as _;

use crate::{
    detect::DetectorKind,
    event::{EventKind, GatewayEvent},
};

use super::{
    config::Format,
    render::{self, Origin},
};

/// RFC 5424 field limits (§6): longer values are cut, not refused.
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
const MSGID_MAX: usize = 32;
/// The "no value" marker of header fields.
const NILVALUE: &str = "-";
/// Byte order mark that RFC 5424 §6.4 requires before a UTF-8 MSG.
const BOM: &str = "\u{feff}";

/// Renders one RFC 5424 message (without framing). `format` chooses the MSG part; the
/// structured data is always there.
pub fn render(origin: &Origin, facility: u8, format: Format, event: &GatewayEvent) -> String {
    let pri = u16::from(facility) * 8 + u16::from(render::syslog_severity(event.severity));
    let mut out = String::with_capacity(512);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "<{pri}>1 {} {} {} {} {} ",
        timestamp(event.time),
        header_field(&origin.hostname, HOSTNAME_MAX),
        header_field(&origin.app_name, APP_NAME_MAX),
        origin.procid,
        header_field(event.kind_name(), MSGID_MAX),
    );
    structured_data(&mut out, origin.enterprise_id, event);
    let msg = match format {
        Format::Text => crate::untrusted::escape(&render::summary(event)).into_owned(),
        Format::Cef => super::cef::render(origin, event),
        // JSON escapes controls itself; the separators and bidi characters it leaves as they are.
        Format::Ecs => super::json::ecs(origin, &event.escaped()).to_string(),
        Format::Ocsf => super::json::ocsf(origin, &event.escaped()).to_string(),
        Format::Native => super::json::native(&event.escaped()).to_string(),
    };
    out.push(' ');
    // Text is MSG-UTF8 and gets its BOM. CEF and JSON payloads are sent as MSG-ANY: receivers
    // (ArcSight, rsyslog's mmnormalize, JSON parsers) expect `CEF:0|` or `{` as first octet.
    if format == Format::Text && !msg.is_ascii() {
        out.push_str(BOM);
    }
    out.push_str(&msg);
    out
}

/// `LEN SP MSG`: the octet-counting frame of TCP and TLS transports.
pub fn octet_counted(message: &str) -> Vec<u8> {
    let mut frame = format!("{} ", message.len()).into_bytes();
    frame.extend_from_slice(message.as_bytes());
    frame
}

/// FULL-DATE "T" FULL-TIME in UTC with at most 6 fractional digits (RFC 5424 §6.2.3 forbids
/// more, which `time`'s RFC 3339 formatter would write).
fn timestamp(time: time::OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Header fields are PRINTUSASCII (33..=126) without spaces; anything else becomes `_`.
fn header_field(value: &str, max: usize) -> String {
    let cleaned: String = value.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).take(max).collect();
    if cleaned.is_empty() { NILVALUE.to_owned() } else { cleaned }
}

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]` get a backslash, after
/// `untrusted::escape` (a PARAM-VALUE may hold any UTF-8, line feeds included).
fn escape_param(value: &str, out: &mut String) {
    for c in crate::untrusted::escape(value).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Writes `[id name="value" ...]`, skipping absent values.
/// The ATT&CK technique ids of a detector, comma-separated (none for names no detector has).
fn attack_ids(detector: &str) -> Option<String> {
    let techniques = DetectorKind::techniques_of(detector);
    (!techniques.is_empty()).then(|| techniques.iter().map(|t| t.id).collect::<Vec<_>>().join(","))
}

fn element(out: &mut String, id: &str, params: &[(&str, Option<String>)]) {
    out.push('[');
    out.push_str(id);
    for (name, value) in params {
        if let Some(value) = value {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_param(value, out);
            out.push('"');
        }
    }
    out.push(']');
}

/// One SD-ELEMENT for what every event has, one for its kind's fields. SD-IDs carry the
/// enterprise number since they are not IANA-registered (§7.2.2).
fn structured_data(out: &mut String, pen: u32, event: &GatewayEvent) {
    let some = |s: &str| Some(s.to_owned());
    element(
        out,
        &format!("iotgw@{pen}"),
        &[
            ("id", some(&event.id)),
            ("kind", some(event.kind_name())),
            ("severity", some(render::severity_name(event.severity))),
            ("signature", Some(render::signature(event))),
            ("device", event.device.map(|m| m.to_string())),
            ("ip", event.device_ip.map(|ip| ip.to_string())),
            ("actor", some(&event.actor)),
            ("count", event.repeat.map(|r| r.count.to_string())),
            ("first_seen", event.repeat.map(|r| render::rfc3339(r.first_seen))),
            ("last_seen", event.repeat.map(|r| render::rfc3339(r.last_seen))),
        ],
    );
    match &event.kind {
        EventKind::Alert { incident_id, detector, score, expected, observed, flows, resolved } => element(
            out,
            &format!("alert@{pen}"),
            &[
                ("incident", some(incident_id)),
                ("detector", some(detector)),
                ("score", Some(format!("{score:.3}"))),
                ("expected", some(expected)),
                ("observed", some(observed)),
                ("flows", Some(flows.join(", "))),
                ("resolved", Some(resolved.to_string())),
                ("attack", attack_ids(detector)),
            ],
        ),
        EventKind::Action { action, reason } => {
            element(out, &format!("action@{pen}"), &[("action", some(action)), ("reason", some(reason))])
        }
        EventKind::Lifecycle { from, to } => {
            element(out, &format!("lifecycle@{pen}"), &[("from", some(from)), ("to", some(to))])
        }
        EventKind::PolicyChange { accepted, detail } => element(
            out,
            &format!("policy@{pen}"),
            &[("accepted", Some(accepted.to_string())), ("detail", some(detail))],
        ),
        EventKind::Audit { action, detail } => {
            element(out, &format!("audit@{pen}"), &[("action", some(action)), ("detail", some(detail))])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::render::fixtures;

    #[test]
    fn alert_header_has_pri_version_and_six_digit_time() {
        let line = render(&fixtures::origin(), 13, Format::Text, &fixtures::alert(false));
        // facility 13 * 8 + err(3) = 107
        assert!(line.starts_with("<107>1 2026-11-25T06:30:01.123456Z gw-1 iotgw 42 alert [iotgw@32473 "), "{line}");
    }

    #[test]
    fn param_values_escape_quote_backslash_and_bracket() {
        let line = render(&fixtures::origin(), 13, Format::Text, &fixtures::alert(false));
        assert!(line.contains(r#"expected="2 peers | \"cloud\"""#), "{line}");
        // The line feed is written as `\n` (then escaped as a PARAM-VALUE backslash).
        assert!(line.contains("observed=\"40 peers = a\\]b\\\\c\\\\nnext\""), "{line}");
    }

    #[test]
    fn alert_element_carries_the_attack_technique_ids() {
        let line = render(&fixtures::origin(), 13, Format::Text, &fixtures::alert(false));
        assert!(line.contains(r#"resolved="false" attack="T1046,T0846"]"#), "{line}");
    }

    #[test]
    fn forged_lines_and_bidi_overrides_never_reach_the_message() {
        let mut event = fixtures::alert(false);
        event.kind = EventKind::Action {
            action: "quarantine\n<13>1".into(),
            reason: "x\n<13>1 2026-01-01T00:00:00Z gw-1 iotgw - - - forged\u{2028}y\u{202e}z".into(),
        };
        event.actor = "soar:a\rb".into();
        for format in [Format::Text, Format::Cef, Format::Ecs, Format::Ocsf, Format::Native] {
            let line = render(&fixtures::origin(), 13, format, &event);
            assert!(crate::untrusted::is_safe(&line), "{format:?}: {line:?}");
            assert!(line.contains("forged\\u2028y\\u202ez") || line.contains("forged\\\\u2028y"), "{format:?}: {line}");
        }
    }

    #[test]
    fn header_fields_with_spaces_are_cleaned() {
        assert_eq!(header_field("my host", HOSTNAME_MAX), "my_host");
        assert_eq!(header_field("", HOSTNAME_MAX), "-");
        assert_eq!(header_field(&"a".repeat(40), MSGID_MAX).len(), 32);
    }

    #[test]
    fn octet_counting_counts_bytes_not_chars() {
        assert_eq!(octet_counted("é"), b"2 \xc3\xa9".to_vec());
    }

    #[test]
    fn non_ascii_message_starts_with_bom() {
        let mut event = fixtures::alert(false);
        if let EventKind::Alert { observed, .. } = &mut event.kind {
            *observed = "café".into();
        }
        let line = render(&fixtures::origin(), 13, Format::Text, &event);
        assert!(line.contains("] \u{feff}scan alert"), "{line}");
        let cef = render(&fixtures::origin(), 13, Format::Cef, &event);
        assert!(cef.contains("] CEF:0|"), "{cef}");
    }
}
