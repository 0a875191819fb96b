//! The `[integrations]` section of the gateway TOML: the sinks events are delivered to (each
//! with its transport, format, secret and filter), the SOAR inbound callers, and the outbox
//! limits. Reads nothing but the parsed TOML; `problems()` lists every bad value at once.
use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::event::{GatewayEvent, Severity};

/// Default syslog facility: 13, "log audit" (RFC 5424 table 1), where security tools look.
pub const DEFAULT_SYSLOG_FACILITY: u8 = 13;
/// Default private enterprise number in SD-IDs. 32473 is reserved for documentation
/// (RFC 5612); operators with their own PEN set `enterprise_id`.
pub const DEFAULT_ENTERPRISE_ID: u32 = 32_473;
/// Default APP-NAME in syslog headers and product name in CEF.
pub const DEFAULT_APP_NAME: &str = "iotgw";
/// Events read from the outbox per delivery round of one sink.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// First retry delay after a failed delivery.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest retry delay: a sink down for hours is retried at least this often.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// Time allowed for one connection or HTTP request before it counts as failed.
pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);
/// The outbox keeps at most this many undelivered events; beyond it the oldest are dropped
/// (and counted) so a sink that never returns cannot fill the disk.
pub const DEFAULT_MAX_OUTBOX_EVENTS: u64 = 1_000_000;
/// Default `integrations.aggregation.window_ms`: repeated events of one actor, device, kind
/// and action within this window become one counted record.
pub const DEFAULT_AGGREGATION_WINDOW: Duration = Duration::from_secs(10);
/// Default `integrations.aggregation.burst`: events of one key stored one by one in a window
/// before the rest are counted into one record (the first ones keep their full detail).
pub const DEFAULT_AGGREGATION_BURST: u64 = 10;
/// Default `integrations.aggregation.flood_alert_events`: events of one key in one window that
/// make it a flood worth an alert. The issue's flood was 8,276 refused enrollments in 10 s;
/// a device that renews or reconnects does a handful.
pub const DEFAULT_FLOOD_ALERT_EVENTS: u64 = 100;
/// Longest `integrations.aggregation.window_ms` accepted: counts held in memory are lost by a
/// crash (the first `burst` events of the window are stored), so the window stays short.
pub const MAX_AGGREGATION_WINDOW: Duration = Duration::from_secs(300);
/// Accepted clock difference for signed requests (webhook receivers and SOAR callers):
/// a signature older or newer than this is refused, which bounds replay.
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);
/// Default ServiceNow-style incident table path.
pub const DEFAULT_ITSM_TABLE_PATH: &str = "/api/now/table/incident";
/// Default minimum severity for which a ticket is opened.
pub const DEFAULT_ITSM_MIN_SEVERITY: Severity = Severity::High;

/// The whole `[integrations]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Hostname written in syslog headers and `host.name`; the system hostname when unset.
    pub hostname: Option<String>,
    pub app_name: String,
    pub enterprise_id: u32,
    /// Most events the outbox keeps undelivered. Over it, audit, lifecycle and policy events
    /// are dropped, lowest severity and oldest first (and counted); alerts and actions are
    /// never dropped and stay beyond the cap (see `outbox`).
    pub max_outbox_events: u64,
    /// Repeated events counted into one record, and floods alerted (`[integrations.aggregation]`).
    pub aggregation: AggregationConfig,
    /// Every destination of events.
    pub sinks: Vec<SinkConfig>,
    /// Incoming SOAR actions.
    pub soar: SoarConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: None,
            app_name: DEFAULT_APP_NAME.into(),
            enterprise_id: DEFAULT_ENTERPRISE_ID,
            max_outbox_events: DEFAULT_MAX_OUTBOX_EVENTS,
            aggregation: AggregationConfig::default(),
            sinks: Vec::new(),
            soar: SoarConfig::default(),
        }
    }
}

/// `[integrations.aggregation]`: how a flood of one event becomes a few counted records and
/// one alert per window (`integrations::aggregate`). Alerts and actions are never aggregated.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationConfig {
    /// Window in milliseconds over which events of one actor, device, kind and action are
    /// counted into one record, flushed when the window closes. 0 turns aggregation and flood
    /// alerts off. At most `MAX_AGGREGATION_WINDOW`.
    pub window_ms: u64,
    /// Events of one key stored individually in each window before the rest are counted
    /// (at least 1).
    pub burst: u64,
    /// Events of one key in one window that raise an `event_flood` alert, one per window per
    /// source (actor and device). 0: no flood alert.
    pub flood_alert_events: u64,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_AGGREGATION_WINDOW.as_millis() as u64,
            burst: DEFAULT_AGGREGATION_BURST,
            flood_alert_events: DEFAULT_FLOOD_ALERT_EVENTS,
        }
    }
}

impl AggregationConfig {
    /// No aggregation: every event is its own record (tests that count records one by one).
    pub fn off() -> Self {
        Self { window_ms: 0, ..Self::default() }
    }

    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

/// How events reach a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// RFC 5424 over UDP (RFC 5426): no delivery confirmation at all.
    SyslogUdp,
    /// RFC 5424 over TCP with octet-counting framing (RFC 6587).
    SyslogTcp,
    /// RFC 5424 over TLS (RFC 5425).
    SyslogTls,
    /// Splunk HTTP Event Collector (`POST /services/collector/event`).
    Hec,
    /// SOAR webhook: one signed JSON POST per event.
    Webhook,
    /// ITSM incident table (ServiceNow shape): one ticket per incident.
    Itsm,
    /// Appends one JSON document per line to a local file.
    File,
}

impl SinkKind {
    /// The name used in the config file and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::SyslogUdp => "syslog_udp",
            SinkKind::SyslogTcp => "syslog_tcp",
            SinkKind::SyslogTls => "syslog_tls",
            SinkKind::Hec => "hec",
            SinkKind::Webhook => "webhook",
            SinkKind::Itsm => "itsm",
            SinkKind::File => "file",
        }
    }
}

/// What one event looks like on the wire (for syslog: the MSG part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Human text (syslog only; the structured data carries the fields).
    Text,
    /// ArcSight Common Event Format.
    Cef,
    /// Elastic Common Schema JSON.
    Ecs,
    /// Open Cybersecurity Schema Framework JSON (Detection Finding / Network Activity / ...).
    Ocsf,
    /// iotgw's own event JSON.
    Native,
}

/// Which events a sink wants.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub min_severity: Severity,
    /// Event kind names (`alert`, `action`, `lifecycle`, `policy_change`, `audit`); empty = all.
    pub kinds: Vec<String>,
}

impl Default for Filter {
    fn default() -> Self {
        Self { min_severity: Severity::Info, kinds: Vec::new() }
    }
}

/// Every kind name a filter may list.
pub const KIND_NAMES: &[&str] = &["alert", "action", "lifecycle", "policy_change", "audit"];

impl Filter {
    pub fn accepts(&self, event: &GatewayEvent) -> bool {
        event.severity >= self.min_severity
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == event.kind_name()))
    }

    /// The kinds as the `,a,b,` list the outbox query matches with `instr` ("" = all).
    pub fn kinds_pattern(&self) -> String {
        if self.kinds.is_empty() { String::new() } else { format!(",{},", self.kinds.join(",")) }
    }
}

/// One destination.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name: the key of its delivery cursor, so renaming a sink restarts its cursor.
    pub name: String,
    pub kind: SinkKind,
    /// `host:port` for syslog sinks.
    #[serde(default)]
    pub address: Option<String>,
    /// Base URL for HTTP sinks (`https://splunk:8088`, `https://x.service-now.com`) or the full
    /// webhook URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Path of the JSON-lines file (file sinks).
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub format: Option<Format>,
    /// HEC token, or ITSM bearer token (`user:password` for basic auth).
    #[serde(default)]
    pub token: Option<String>,
    /// HMAC-SHA256 key of webhook signatures.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM CA bundle trusted for TLS (syslog_tls, https); the system roots are not used when set.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS server name when it differs from the address' host.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default = "default_facility")]
    pub facility: u8,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// ITSM specifics.
    #[serde(default)]
    pub itsm: ItsmConfig,
    /// HEC specifics: index and sourcetype.
    #[serde(default)]
    pub hec_index: Option<String>,
    #[serde(default)]
    pub hec_sourcetype: Option<String>,
}

fn default_facility() -> u8 {
    DEFAULT_SYSLOG_FACILITY
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_retry_initial_ms() -> u64 {
    DEFAULT_RETRY_INITIAL.as_millis() as u64
}
fn default_retry_max_ms() -> u64 {
    DEFAULT_RETRY_MAX.as_millis() as u64
}
fn default_timeout_ms() -> u64 {
    DEFAULT_SINK_TIMEOUT.as_millis() as u64
}

impl SinkConfig {
    /// The format, or the kind's natural one.
    pub fn format(&self) -> Format {
        self.format.unwrap_or(match self.kind {
            SinkKind::SyslogUdp | SinkKind::SyslogTcp | SinkKind::SyslogTls => Format::Text,
            SinkKind::Hec | SinkKind::File => Format::Ecs,
            SinkKind::Webhook | SinkKind::Itsm => Format::Native,
        })
    }

    pub fn retry_initial(&self) -> Duration {
        Duration::from_millis(self.retry_initial_ms)
    }
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// A sink with defaults for everything but its name and kind (tests, benchmarks).
    pub fn new(name: impl Into<String>, kind: SinkKind) -> Self {
        Self {
            name: name.into(),
            kind,
            address: None,
            url: None,
            path: None,
            format: None,
            token: None,
            secret: None,
            ca_file: None,
            server_name: None,
            facility: DEFAULT_SYSLOG_FACILITY,
            filter: Filter::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            timeout_ms: default_timeout_ms(),
            itsm: ItsmConfig::default(),
            hec_index: None,
            hec_sourcetype: None,
        }
    }
}

/// ITSM ticketing: which alerts open tickets and how fields map.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItsmConfig {
    /// Path of the table API under the sink's `url`.
    pub table_path: String,
    /// Alerts below this severity open no ticket.
    pub min_severity: Severity,
    /// Ticket field => template. Placeholders: `{incident_id}`, `{detector}`, `{device}`,
    /// `{device_ip}`, `{severity}`, `{urgency}`, `{impact}`, `{expected}`, `{observed}`,
    /// `{score}`, `{actor}`, `{event_id}`, `{time}`.
    pub fields: std::collections::BTreeMap<String, String>,
    /// Fields set when a further alert of an incident with an open ticket arrives.
    pub update_fields: std::collections::BTreeMap<String, String>,
    /// Fields set when the incident is resolved.
    pub resolve_fields: std::collections::BTreeMap<String, String>,
    /// Field that carries the incident id on the ticket, used to find a ticket opened by a
    /// request whose answer was lost (a crash between POST and recording it).
    pub correlation_field: String,
}

impl Default for ItsmConfig {
    fn default() -> Self {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self {
            table_path: DEFAULT_ITSM_TABLE_PATH.into(),
            min_severity: DEFAULT_ITSM_MIN_SEVERITY,
            fields: map(&[
                ("short_description", "iotgw {detector} alert on {device}"),
                ("description", "Observed: {observed}\nExpected: {expected}\nScore: {score}\nDevice IP: {device_ip}"),
                ("urgency", "{urgency}"),
                ("impact", "{impact}"),
                ("category", "security"),
                ("caller_id", "iotgw"),
            ]),
            update_fields: map(&[("work_notes", "iotgw: {detector} again at {time}: {observed}")]),
            resolve_fields: map(&[
                ("state", "6"),
                ("close_code", "Resolved by caller"),
                ("close_notes", "iotgw: incident {incident_id} resolved"),
            ]),
            correlation_field: "correlation_id".into(),
        }
    }
}

/// One system allowed to call the SOAR action endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoarCaller {
    /// Recorded in the audit log as `soar:<name>`.
    pub name: String,
    /// Accepted as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    /// HMAC-SHA256 key: requests carry `X-Iotgw-Caller`, `X-Iotgw-Timestamp` and
    /// `X-Iotgw-Signature` (same scheme as outgoing webhooks).
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoarConfig {
    pub callers: Vec<SoarCaller>,
    pub signature_tolerance_secs: u64,
}

impl Default for SoarConfig {
    fn default() -> Self {
        Self { callers: Vec::new(), signature_tolerance_secs: DEFAULT_SIGNATURE_TOLERANCE.as_secs() }
    }
}

impl Config {
    /// Every semantic problem, each prefixed with its place in the file.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let aggregation = &self.aggregation;
        if aggregation.window() > MAX_AGGREGATION_WINDOW {
            problems.push(format!(
                "integrations.aggregation.window_ms = {} must be at most {}",
                aggregation.window_ms,
                MAX_AGGREGATION_WINDOW.as_millis()
            ));
        }
        if aggregation.burst == 0 {
            problems.push("integrations.aggregation.burst must be at least 1".to_owned());
        }
        let mut names = std::collections::HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let at = format!("integrations.sinks[{i}] ({})", sink.name);
            if sink.name.is_empty() {
                problems.push(format!("{at}: name must not be empty"));
            }
            if !names.insert(sink.name.as_str()) {
                problems.push(format!("{at}: name is used twice"));
            }
            match sink.kind {
                SinkKind::SyslogUdp | SinkKind::SyslogTcp | SinkKind::SyslogTls => {
                    if sink.address.is_none() {
                        problems.push(format!("{at}: address (host:port) is required"));
                    }
                    if sink.facility > 23 {
                        problems.push(format!("{at}: facility must be 0..=23"));
                    }
                }
                SinkKind::Hec | SinkKind::Webhook | SinkKind::Itsm => {
                    match sink.url.as_deref().map(reqwest::Url::parse) {
                        None => problems.push(format!("{at}: url is required")),
                        Some(Err(e)) => problems.push(format!("{at}: url: {e}")),
                        Some(Ok(_)) => {}
                    }
                    if sink.kind == SinkKind::Hec && sink.token.is_none() {
                        problems.push(format!("{at}: token (HEC token) is required"));
                    }
                    if sink.kind == SinkKind::Webhook && sink.secret.as_deref().is_none_or(str::is_empty) {
                        problems.push(format!("{at}: secret (HMAC key) is required"));
                    }
                }
                SinkKind::File => {
                    if sink.path.is_none() {
                        problems.push(format!("{at}: path is required"));
                    }
                }
            }
            let format = sink.format();
            let syslog = matches!(sink.kind, SinkKind::SyslogUdp | SinkKind::SyslogTcp | SinkKind::SyslogTls);
            if format == Format::Text && !syslog {
                problems.push(format!("{at}: format \"text\" is only for syslog sinks"));
            }
            if format == Format::Cef && !(syslog || sink.kind == SinkKind::File || sink.kind == SinkKind::Hec) {
                problems.push(format!("{at}: format \"cef\" needs a syslog, hec or file sink"));
            }
            for kind in &sink.filter.kinds {
                if !KIND_NAMES.contains(&kind.as_str()) {
                    problems
                        .push(format!("{at}: filter.kinds: unknown kind {kind:?} (known: {})", KIND_NAMES.join(", ")));
                }
            }
            if sink.batch_size == 0 {
                problems.push(format!("{at}: batch_size must be above 0"));
            }
            if sink.retry_initial_ms == 0 || sink.retry_max_ms < sink.retry_initial_ms {
                problems.push(format!("{at}: need 0 < retry_initial_ms <= retry_max_ms"));
            }
            if let Some(ca) = &sink.ca_file
                && !ca.is_file()
            {
                problems.push(format!("{at}: ca_file {} is not a readable file", ca.display()));
            }
        }
        for (i, caller) in self.soar.callers.iter().enumerate() {
            let at = format!("integrations.soar.callers[{i}] ({})", caller.name);
            if caller.name.is_empty() {
                problems.push(format!("{at}: name must not be empty"));
            }
            let token = caller.token.as_deref().is_some_and(|t| !t.is_empty());
            let secret = caller.secret.as_deref().is_some_and(|s| !s.is_empty());
            if !token && !secret {
                problems.push(format!("{at}: needs a token or a secret"));
            }
        }
        if self.max_outbox_events == 0 {
            problems.push("integrations.max_outbox_events must be above 0".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn full_sink_list_parses_with_defaults() {
        let config = parse(
            r#"
            [[sinks]]
            name = "siem"
            kind = "syslog_tls"
            address = "127.0.0.1:6514"
            format = "cef"
            filter = { min_severity = "medium", kinds = ["alert", "action"] }

            [[sinks]]
            name = "splunk"
            kind = "hec"
            url = "https://splunk:8088"
            token = "abc"

            [[soar.callers]]
            name = "xsoar"
            token = "t"
            "#,
        );
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert_eq!(config.sinks[0].filter.min_severity, Severity::Medium);
        assert_eq!(config.sinks[1].format(), Format::Ecs);
        assert_eq!(config.sinks[1].batch_size, DEFAULT_BATCH_SIZE);
    }

    #[test]
    fn aggregation_defaults_and_bad_values_are_reported() {
        let config = parse("");
        assert_eq!(config.aggregation, AggregationConfig::default());
        assert_eq!(config.aggregation.window(), DEFAULT_AGGREGATION_WINDOW);
        assert!(config.problems().is_empty());
        let config = parse("[aggregation]\nwindow_ms = 3600000\nburst = 0\n");
        let problems = config.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("integrations.aggregation.window_ms = 3600000"), "{problems:?}");
        assert!(problems[1].contains("integrations.aggregation.burst"), "{problems:?}");
        assert!(toml::from_str::<Config>("[aggregation]\nwindow = 5\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn every_bad_sink_value_is_reported() {
        let config = parse(
            r#"
            [[sinks]]
            name = "a"
            kind = "hec"
            url = "not a url"
            [[sinks]]
            name = "a"
            kind = "webhook"
            url = "http://x/"
            format = "text"
            filter = { kinds = ["alrt"] }
            [[soar.callers]]
            name = "nobody"
            "#,
        );
        let problems = config.problems();
        // url, token, duplicate name, missing secret, text format, unknown kind, caller auth.
        assert_eq!(problems.len(), 7, "{problems:#?}");
    }

    #[test]
    fn unknown_sink_key_is_refused() {
        assert!(toml::from_str::<Config>("[[sinks]]\nname='a'\nkind='file'\npath='x'\nbogus=1\n").is_err());
    }
}
