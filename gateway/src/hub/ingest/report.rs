//! One message of the report stream, decoded and checked before anything of it is stored.
//!
//! Gateways are many, and one may be stolen: a report is taken only if it is a report, and if
//! the site and gateway it names are those of its subject (the broker pins a gateway's
//! credentials to its own subjects, so this pins the content to them too). Every string in it
//! is escaped (`crate::untrusted`) where it enters the hub, which also keeps out the NUL
//! characters PostgreSQL's text and JSONB cannot hold.
use serde_json::Value;

use crate::{
    fleet::wire::{Report, VERSION},
    untrusted,
};

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The payload is not a report of a kind this hub knows.
    #[error("not a report: {0}")]
    NotAReport(String),
    /// A wire version this hub does not read (a newer gateway): its meaning may differ.
    #[error("wire version {0}; this hub reads version {VERSION}")]
    Version(u32),
    /// The body names another site, gateway or kind than the subject it came on.
    #[error("forged origin: {0}")]
    ForgedOrigin(String),
    /// A time in it is outside what can be stored.
    #[error("time out of range: {0} ms")]
    TimeOutOfRange(i64),
    /// The database refused the report on its own (found when a batch failed on its data).
    #[error("the store refused it: {0}")]
    Unstorable(String),
}

/// The report in `payload`, received on `subject`, with every string escaped.
pub fn decode(subject: &str, payload: &[u8]) -> Result<Report, Refusal> {
    let report: Report = if is_plain(payload) {
        // Every string in it is a piece of the text as written: nothing to escape.
        serde_json::from_slice(payload).map_err(|e| Refusal::NotAReport(e.to_string()))?
    } else {
        let mut value: Value = serde_json::from_slice(payload).map_err(|e| Refusal::NotAReport(e.to_string()))?;
        escape_strings(&mut value);
        serde_json::from_value(value).map_err(|e| Refusal::NotAReport(e.to_string()))?
    };
    if report.v != VERSION {
        return Err(Refusal::Version(report.v));
    }
    report.check_origin(subject).map_err(Refusal::ForgedOrigin)?;
    time_of_ms(report.sent_ms).ok_or(Refusal::TimeOutOfRange(report.sent_ms))?;
    Ok(report)
}

/// Whether `payload` is UTF-8 without an unsafe character or a JSON escape (`\`): then every
/// string JSON decodes from it is safe as it is, and decoding need not go through a `Value` to
/// escape them (the common case).
fn is_plain(payload: &[u8]) -> bool {
    !payload.contains(&b'\\') && std::str::from_utf8(payload).is_ok_and(untrusted::is_safe)
}

/// Unix milliseconds as a time, `None` when out of range.
pub fn time_of_ms(ms: i64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Escapes every string in `value`, object keys included.
fn escape_strings(value: &mut Value) {
    match value {
        Value::String(text) => {
            if !untrusted::is_safe(text) {
                *text = untrusted::escape(text).into_owned();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_strings),
        Value::Object(map) => {
            if map.keys().any(|key| !untrusted::is_safe(key)) {
                let entries = std::mem::take(map);
                map.extend(entries.into_iter().map(|(key, value)| (untrusted::escape(&key).into_owned(), value)));
            }
            map.values_mut().for_each(escape_strings);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::wire::{CommandOutcome, CommandResult, ReportBody};

    fn result(detail: &str) -> Report {
        let result = CommandResult { command_id: "c1".into(), outcome: CommandOutcome::Done, detail: detail.into() };
        Report::new("s1", "gw-1", 1_000, ReportBody::CommandResult { result })
    }

    #[test]
    fn a_report_on_its_own_subject_is_taken_with_its_text_escaped() {
        let report = result("done\nFAKE\u{0}\u{202e}");
        let payload = serde_json::to_vec(&report).unwrap();
        let decoded = decode(&report.subject(), &payload).expect("taken");
        let ReportBody::CommandResult { result } = decoded.body else { panic!("kind changed") };
        assert_eq!(result.detail, "done\\nFAKE\\u0000\\u202e");
    }

    #[test]
    fn unsafe_text_is_escaped_whether_written_raw_or_as_a_json_escape() {
        let report = result("ok");
        let plain = serde_json::to_vec(&report).unwrap();
        assert!(is_plain(&plain), "a report of safe text takes the direct path");
        assert_eq!(decode(&report.subject(), &plain).expect("taken"), report);
        // A bidi override written raw (JSON needs no escape for it) and as `\u202e`.
        for written in ["\u{202e}", "\\u202e"] {
            let payload = String::from_utf8(plain.clone()).unwrap().replace("\"ok\"", &format!("\"ok{written}\""));
            assert!(!is_plain(payload.as_bytes()), "{payload}");
            let ReportBody::CommandResult { result } = decode(&report.subject(), payload.as_bytes()).unwrap().body
            else {
                panic!("kind changed")
            };
            assert_eq!(result.detail, "ok\\u202e", "{payload}");
        }
    }

    #[test]
    fn a_report_claiming_another_gateway_is_refused() {
        let report = result("ok");
        let payload = serde_json::to_vec(&report).unwrap();
        for subject in ["iotgw.s2.gw-1.cmd_result", "iotgw.s1.gw-2.cmd_result", "iotgw.s1.gw-1.event"] {
            assert!(matches!(decode(subject, &payload), Err(Refusal::ForgedOrigin(_))), "{subject}");
        }
    }

    #[test]
    fn what_is_not_a_report_is_refused() {
        for payload in [&b"{"[..], b"{\"v\":1}", b"[]", b"\xff"] {
            assert!(matches!(decode("iotgw.s1.gw-1.event", payload), Err(Refusal::NotAReport(_))));
        }
        let mut report = result("ok");
        report.sent_ms = i64::MAX;
        let payload = serde_json::to_vec(&report).unwrap();
        assert!(matches!(decode(&report.subject(), &payload), Err(Refusal::TimeOutOfRange(_))));
    }

    #[test]
    fn a_report_of_another_wire_version_is_refused() {
        let mut report = result("ok");
        report.v = VERSION + 1;
        let payload = serde_json::to_vec(&report).unwrap();
        assert!(matches!(decode(&report.subject(), &payload), Err(Refusal::Version(v)) if v == VERSION + 1));
    }
}
