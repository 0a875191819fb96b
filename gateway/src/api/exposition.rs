//! Which text format a `/metrics` scrape gets. The registry encodes OpenMetrics text; a client
//! whose `Accept` header prefers `text/plain` (an old Prometheus, a Telegraf, `curl -H`) gets
//! the classic Prometheus text format 0.0.4 instead, converted line by line. Everything else
//! (no header, `*/*`, today's Prometheus, which lists OpenMetrics first) gets OpenMetrics.
//!
//! The conversion covers what `prometheus-client` writes: counters are named with `_total` in
//! their `HELP` and `TYPE` lines (classic names the series, OpenMetrics the family), `_created`
//! samples, `# UNIT` lines, exemplars and `# EOF` go, `info` becomes a gauge and `unknown`
//! becomes `untyped`.
use axum::http::{HeaderMap, header};

/// Content type of a classic Prometheus scrape.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape's text format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    Classic,
}

impl Exposition {
    /// The format the request's `Accept` header prefers: classic when `text/plain` weighs more
    /// than OpenMetrics (an absent type weighs 0), OpenMetrics otherwise.
    pub fn negotiate(headers: &HeaderMap) -> Self {
        let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        let weight = |wanted: &str| {
            accept
                .iter()
                .flat_map(|value| value.split(','))
                .filter_map(|range| {
                    let mut parts = range.split(';').map(str::trim);
                    let media = parts.next()?;
                    let q =
                        parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
                    media.eq_ignore_ascii_case(wanted).then_some(q)
                })
                .fold(0.0_f32, f32::max)
        };
        if weight("text/plain") > weight("application/openmetrics-text") {
            Exposition::Classic
        } else {
            Exposition::OpenMetrics
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => super::metrics::CONTENT_TYPE,
            Exposition::Classic => CLASSIC,
        }
    }

    /// `openmetrics` (the registry's encoding) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Exposition::OpenMetrics => openmetrics,
            Exposition::Classic => classic(&openmetrics),
        }
    }
}

/// OpenMetrics text as the classic Prometheus text format 0.0.4.
pub fn classic(openmetrics: &str) -> String {
    // HELP comes before TYPE, so the counter families are known first.
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if counters.contains(name) { format!("{name}_total") } else { name.to_owned() };
            // Classic escapes only backslash and line feed; OpenMetrics also the double quote.
            out.push_str(&format!("# HELP {name} {}\n", help.replace("\\\"", "\"")));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let series = line.split(['{', ' ']).next().unwrap_or_default();
        if series.ends_with("_created") {
            continue;
        }
        // An exemplar follows ` # ` after the value.
        let sample = line.split_once(" # ").map_or(line, |(sample, _)| sample);
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accepting(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn text_plain_gets_classic_and_everything_else_openmetrics() {
        assert_eq!(Exposition::negotiate(&HeaderMap::new()), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(&accepting("*/*")), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(&accepting("text/plain")), Exposition::Classic);
        assert_eq!(Exposition::negotiate(&accepting("text/plain; version=0.0.4")), Exposition::Classic);
        // What Prometheus 2.x and 3.x send: OpenMetrics first.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                          q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(&accepting(prometheus)), Exposition::OpenMetrics);
        let old = "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5";
        assert_eq!(Exposition::negotiate(&accepting(old)), Exposition::Classic);
    }

    #[test]
    fn counters_are_named_with_total_and_openmetrics_only_lines_go() {
        let openmetrics = "# HELP iotgw_alerts Alerts raised.\n# TYPE iotgw_alerts counter\n\
                           iotgw_alerts_total{detector=\"scan\"} 2\niotgw_alerts_created{detector=\"scan\"} 1.7e9\n\
                           # HELP iotgw_up_seconds Uptime \\\"now\\\".\n# TYPE iotgw_up_seconds gauge\n\
                           # UNIT iotgw_up_seconds seconds\niotgw_up_seconds 5 # {trace=\"x\"} 1\n# EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP iotgw_alerts_total Alerts raised.\n# TYPE iotgw_alerts_total counter\n\
             iotgw_alerts_total{detector=\"scan\"} 2\n# HELP iotgw_up_seconds Uptime \"now\".\n\
             # TYPE iotgw_up_seconds gauge\niotgw_up_seconds 5\n"
        );
    }
}
