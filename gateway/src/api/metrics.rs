//! The gateway's Prometheus metrics. Components update one shared `Metrics` (alerts from
//! `detect`, actions from `respond` and the API, datapath counters from the stats poller,
//! backlog from `integrations`, DNS answers refused or matched from the policy step);
//! `GET /metrics` encodes it in the text exposition format.
//!
//! Counters the kernel keeps (datapath packets, drops, lost events) are mirrored as snapshots
//! and encoded at scrape time, because their totals live in BPF maps, not here.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use gateway_ebpf::{counter, reason};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{counter::ConstCounter, counter::Counter, family::Family, gauge::ConstGauge, gauge::Gauge},
    registry::Registry,
};

use super::model::CountersSummary;
use crate::{
    device::Access,
    policy::dns::{AnswerSource, Refusal},
};

/// Prefix of every metric name (the registry adds it, to collectors' metrics too).
pub const NAMESPACE: &str = "iotgw";
/// Content type of a scrape: OpenMetrics text, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every lifecycle state, so `iotgw_devices` reports zeros rather than missing series.
const ALL_STATES: [Access; 5] =
    [Access::Unknown, Access::Onboarding, Access::Enrolled, Access::Quarantined, Access::Blocked];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    detector: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    /// `api`, `detector`, ... (the part of the actor before `:`), to bound cardinality.
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// Datapath counters read from `GLOBAL_STATS`, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathCounters {
    pub lan_packets: u64,
    pub wan_packets: u64,
    pub events_lost: u64,
    pub redirected: u64,
    pub flow_insert_failed: u64,
    /// Frames from another device's address passed because `source_guard.mode` is `log`.
    pub spoofed_source_passed: u64,
    pub drops: [u64; reason::COUNT],
}

impl DatapathCounters {
    /// From the `GLOBAL_STATS` array indexed by `gateway_ebpf::counter` (already summed over
    /// CPUs). Missing slots read as 0.
    pub fn from_global_stats(values: &[u64]) -> Self {
        let at = |index: u32| values.get(index as usize).copied().unwrap_or(0);
        let mut drops = [0; reason::COUNT];
        for (code, drop) in drops.iter_mut().enumerate() {
            *drop = at(counter::DROPS_BASE + code as u32);
        }
        Self {
            lan_packets: at(counter::LAN_PACKETS),
            wan_packets: at(counter::WAN_PACKETS),
            events_lost: at(counter::EVENTS_LOST),
            redirected: at(counter::REDIRECTED),
            flow_insert_failed: at(counter::FLOW_INSERT_FAILED),
            spoofed_source_passed: at(counter::SPOOFED_SOURCE_PASSED),
            drops,
        }
    }

    /// Reads `GLOBAL_STATS` from the live datapath (the stats poller calls this, then
    /// `Metrics::set_datapath_counters`).
    pub fn from_maps(maps: &crate::datapath::maps::Maps) -> Self {
        let values: Vec<u64> = (0..counter::COUNT).map(|index| maps.global_counter(index)).collect();
        Self::from_global_stats(&values)
    }

    pub fn summary(&self) -> CountersSummary {
        CountersSummary {
            lan_packets: self.lan_packets,
            wan_packets: self.wan_packets,
            redirected: self.redirected,
            events_lost: self.events_lost,
            flow_insert_failed: self.flow_insert_failed,
            drops: reason::NAMES.iter().zip(self.drops).map(|(name, n)| ((*name).to_owned(), n)).collect(),
        }
    }
}

/// Values others own and publish as a whole; encoded at scrape time.
#[derive(Debug, Default)]
struct Snapshots {
    datapath: Option<DatapathCounters>,
    map_fill: Vec<crate::datapath::fill::MapFill>,
    integration_backlog: BTreeMap<String, u64>,
    fleet: Option<FleetCounters>,
}

#[derive(Debug, Default)]
struct SnapshotCollector(Arc<Mutex<Snapshots>>);

fn lock(snapshots: &Mutex<Snapshots>) -> MutexGuard<'_, Snapshots> {
    // The data is plain numbers, valid even if a writer panicked mid-update.
    snapshots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots = lock(&self.0);
        if let Some(d) = &snapshots.datapath {
            for (name, help, value) in [
                ("datapath_lan_packets", "Frames seen on the LAN interface.", d.lan_packets),
                ("datapath_wan_packets", "Frames seen on the WAN interface.", d.wan_packets),
                ("datapath_redirected", "Frames redirected to the quarantine interface.", d.redirected),
                ("datapath_events_lost", "Ring-buffer records XDP could not reserve.", d.events_lost),
                (
                    "datapath_flow_insert_failed",
                    "Flows not tracked because the flow map was full.",
                    d.flow_insert_failed,
                ),
                (
                    "datapath_spoofed_source_passed",
                    "Frames from an IPv4 or IPv6 address bound to another device, passed (source_guard.mode = log; under enforce they count as drops, reason spoofed_source).",
                    d.spoofed_source_passed,
                ),
            ] {
                encode_one(&mut encoder, name, help, ConstCounter::new(value))?;
            }
            let mut family = encoder.encode_descriptor(
                "datapath_drops",
                "Frames not passed by XDP, by reason.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (reason_name, value) in reason::NAMES.iter().zip(d.drops) {
                let labels = [("reason", *reason_name)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        encode_map_fill(&snapshots.map_fill, &mut encoder)?;
        let mut family = encoder.encode_descriptor(
            "integration_backlog",
            "Events waiting in the integrations outbox, by sink.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (sink, value) in &snapshots.integration_backlog {
            let labels = [("sink", sink.as_str())];
            gauge(*value).encode(family.encode_family(&labels)?)?;
        }
        if let Some(fleet) = &snapshots.fleet {
            encode_fleet(fleet, &mut encoder)?;
        }
        Ok(())
    }
}

/// Each map's entries and capacity (gauges) and LRU evictions (a counter), labelled by map.
fn encode_map_fill(
    fills: &[crate::datapath::fill::MapFill],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    if fills.is_empty() {
        return Ok(());
    }
    for (name, help, read) in [
        (
            "datapath_map_entries",
            "Entries a BPF map holds.",
            (|f| f.entries) as fn(&crate::datapath::fill::MapFill) -> u64,
        ),
        ("datapath_map_capacity", "Entries a BPF map can hold (its max_entries).", |f| f.capacity),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for fill in fills {
            gauge(read(fill)).encode(family.encode_family(&[("map", fill.map)])?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "datapath_map_evictions",
        "Entries an LRU map evicted to make room (flows, per-device counters) since it was created.",
        None,
        MetricType::Counter,
    )?;
    for fill in fills {
        if let Some(evictions) = fill.evictions {
            ConstCounter::new(evictions).encode(family.encode_family(&[("map", fill.map)])?)?;
        }
    }
    Ok(())
}

/// A gauge of a count (saturating: a count beyond `i64::MAX` is not one we will see).
pub fn gauge(value: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Encodes one metric without labels, for collectors that build their values at scrape time.
pub fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl prometheus_client::encoding::EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A severity as its label value (`high`, as in the API).
pub fn severity_label(severity: crate::event::Severity) -> String {
    serde_json::to_value(severity).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `registry` as a scrape's body.
pub fn encode_registry(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Whether a scrape may read the metrics: with a token, or by anyone when `public`
/// (`metrics_public`, for a Prometheus that cannot send one).
pub fn authorize_scrape<S: super::Authority>(
    state: &S,
    public: bool,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<(), super::ApiError> {
    if !public {
        state.authenticate(method, headers, peer)?;
    }
    Ok(())
}

/// What `/metrics` shows of the gateway's link to the fleet (`fleet::Fleet` fills it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounters {
    pub connected: bool,
    /// Outbox events the broker has not acknowledged yet.
    pub backlog_events: u64,
    pub published_events: u64,
    pub published_inventory: u64,
    pub published_health: u64,
}

/// The link to the fleet's broker (only when `[fleet]` is configured).
fn encode_fleet(fleet: &FleetCounters, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    for (name, help, metric) in [
        ("fleet_connected", "1 while the gateway is connected to the fleet broker.", gauge(u64::from(fleet.connected))),
        (
            "fleet_backlog_events",
            "Outbox events the fleet broker has not acknowledged yet.",
            gauge(fleet.backlog_events),
        ),
    ] {
        encode_one(encoder, name, help, metric)?;
    }
    let mut family = encoder.encode_descriptor(
        "fleet_published",
        "Reports the fleet broker acknowledged, by kind.",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (kind, value) in [
        ("event", fleet.published_events),
        ("inventory", fleet.published_inventory),
        ("health", fleet.published_health),
    ] {
        ConstCounter::new(value).encode(family.encode_family(&[("kind", kind)])?)?;
    }
    Ok(())
}

/// The shared metrics registry. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    devices: Family<StateLabels, Gauge>,
    alerts: Family<AlertLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    events_lost: Family<StageLabels, Counter>,
    auth_failures: Counter,
    dns_answers_refused: Family<ReasonLabels, Counter>,
    dns_answers_matched: Family<SourceLabels, Counter>,
    dns_queries_evicted: Counter,
    snapshots: Arc<Mutex<Snapshots>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(NAMESPACE);
        // `register` ends each help string with a period itself; collectors' help strings
        // (`encode_one`) carry their own.
        let devices = Family::<StateLabels, Gauge>::default();
        registry.register("devices", "Devices in the inventory, by lifecycle state", devices.clone());
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register("alerts", "Alerts raised, by detector and severity", alerts.clone());
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register("actions", "Enforcement actions taken, by action and source", actions.clone());
        let events_lost = Family::<StageLabels, Counter>::default();
        registry.register(
            "events_lost",
            "Events the controller dropped in userspace, by stage (queue full, subscriber lagging)",
            events_lost.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "api_auth_failures",
            "API requests refused for a missing or unknown token",
            auth_failures.clone(),
        );
        let dns_answers_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dns_answers_refused",
            "DNS answers that opened nothing, by reason (no matching query, wrong id, ...)",
            dns_answers_refused.clone(),
        );
        let dns_answers_matched = Family::<SourceLabels, Counter>::default();
        registry.register(
            "dns_answers_matched",
            "DNS answers matched to a device's query (DNS-name rules follow only these), by source (upstream, \
             or a resolver on the gateway itself)",
            dns_answers_matched.clone(),
        );
        let dns_queries_evicted = Counter::default();
        registry.register(
            "dns_queries_evicted",
            "Devices' DNS queries forgotten before their answer to keep within the per-device or total bound",
            dns_queries_evicted.clone(),
        );
        let snapshots = Arc::new(Mutex::new(Snapshots::default()));
        registry.register_collector(Box::new(SnapshotCollector(snapshots.clone())));
        for state in ALL_STATES {
            devices.get_or_create(&StateLabels { state: state.as_str() }).set(0);
        }
        // Every reason at 0 from the start, so a scrape shows them all.
        for reason in Refusal::ALL {
            let _ = dns_answers_refused.get_or_create(&ReasonLabels { reason: reason.as_str() });
        }
        for source in AnswerSource::ALL {
            let _ = dns_answers_matched.get_or_create(&SourceLabels { source: source.as_str() });
        }
        Self {
            registry,
            devices,
            alerts,
            actions,
            events_lost,
            auth_failures,
            dns_answers_refused,
            dns_answers_matched,
            dns_queries_evicted,
            snapshots,
        }
    }

    /// Replaces the device counts (states not listed become 0).
    pub fn set_devices_by_state(&self, counts: &std::collections::HashMap<Access, u64>) {
        for state in ALL_STATES {
            let count = counts.get(&state).copied().unwrap_or(0);
            self.devices
                .get_or_create(&StateLabels { state: state.as_str() })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn record_alert(&self, detector: &str, severity: crate::event::Severity) {
        self.alerts
            .get_or_create(&AlertLabels { detector: detector.to_owned(), severity: severity_label(severity) })
            .inc();
    }

    /// Counts one action; `actor` is `source:name` as in the audit log (only `source` is kept).
    pub fn record_action(&self, action: &str, actor: &str) {
        let source = actor.split_once(':').map_or(actor, |(source, _)| source).to_owned();
        self.actions.get_or_create(&ActionLabels { action: action.to_owned(), source }).inc();
    }

    /// Counts `count` events dropped by the controller at `stage`.
    pub fn record_events_lost(&self, stage: &str, count: u64) {
        self.events_lost.get_or_create(&StageLabels { stage: stage.to_owned() }).inc_by(count);
    }

    pub fn record_auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Counts a DNS answer that opened nothing, under its reason.
    pub fn record_dns_refusal(&self, reason: Refusal) {
        self.dns_answers_refused.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
    }

    /// Counts a DNS answer matched to its query, under who sent it.
    pub fn record_dns_match(&self, source: AnswerSource) {
        self.dns_answers_matched.get_or_create(&SourceLabels { source: source.as_str() }).inc();
    }

    /// Counts `count` DNS queries forgotten to make room.
    pub fn record_dns_queries_evicted(&self, count: u64) {
        self.dns_queries_evicted.inc_by(count);
    }

    /// Publishes the latest datapath counters (the stats poller calls this periodically).
    pub fn set_datapath_counters(&self, counters: DatapathCounters) {
        lock(&self.snapshots).datapath = Some(counters);
    }

    /// Publishes how full each BPF map is (`Maps::fill_levels`).
    pub fn set_map_fill(&self, fills: Vec<crate::datapath::fill::MapFill>) {
        lock(&self.snapshots).map_fill = fills;
    }

    /// How full each BPF map was at the last read.
    pub fn map_fill(&self) -> Vec<crate::datapath::fill::MapFill> {
        lock(&self.snapshots).map_fill.clone()
    }

    pub fn datapath_counters(&self) -> Option<DatapathCounters> {
        lock(&self.snapshots).datapath.clone()
    }

    /// Publishes how many events wait in `sink`'s outbox.
    pub fn set_integration_backlog(&self, sink: &str, pending: u64) {
        lock(&self.snapshots).integration_backlog.insert(sink.to_owned(), pending);
    }

    pub fn integration_backlog(&self) -> BTreeMap<String, u64> {
        lock(&self.snapshots).integration_backlog.clone()
    }

    /// Publishes the state of the link to the fleet's broker.
    pub fn set_fleet(&self, counters: FleetCounters) {
        lock(&self.snapshots).fleet = Some(counters);
    }

    /// The text exposition format (OpenMetrics text, which Prometheus scrapes).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        encode_registry(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition text")
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        scrape.samples.iter().find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))).map(
            |s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            },
        )
    }

    #[test]
    fn datapath_counters_come_from_global_stats_slots() {
        let mut stats = vec![0u64; counter::COUNT as usize];
        stats[counter::LAN_PACKETS as usize] = 10;
        stats[counter::EVENTS_LOST as usize] = 3;
        stats[(counter::DROPS_BASE + reason::POLICY_DENY) as usize] = 7;
        let counters = DatapathCounters::from_global_stats(&stats);
        assert_eq!(counters.lan_packets, 10);
        assert_eq!(counters.events_lost, 3);
        assert_eq!(counters.drops[reason::POLICY_DENY as usize], 7);
        assert_eq!(counters.summary().drops[reason::NAMES[reason::POLICY_DENY as usize]], 7);
    }

    #[test]
    fn every_help_string_ends_in_one_period_in_both_formats() {
        let metrics = Metrics::new();
        let mut stats = vec![0u64; counter::COUNT as usize];
        stats[counter::LAN_PACKETS as usize] = 1;
        metrics.set_datapath_counters(DatapathCounters::from_global_stats(&stats));
        metrics.set_integration_backlog("siem", 1);
        metrics.set_fleet(FleetCounters::default());
        let openmetrics = metrics.encode().unwrap();
        let classic = super::super::exposition::classic(&openmetrics);
        for text in [&openmetrics, &classic] {
            let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
            assert!(helps.len() > 10, "{text}");
            for help in helps {
                assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
            }
        }
        let scrape = parse(&classic);
        assert_eq!(value(&scrape, "iotgw_datapath_lan_packets_total", None), Some(1.0), "{classic}");
        assert!(!classic.contains("# EOF"), "{classic}");
    }

    #[test]
    fn every_published_value_appears_in_the_scrape() {
        let metrics = Metrics::new();
        metrics
            .set_devices_by_state(&std::collections::HashMap::from([(Access::Enrolled, 4), (Access::Quarantined, 1)]));
        metrics.record_alert("scan", crate::event::Severity::High);
        metrics.record_action("quarantine", "api:alice");
        metrics.record_action("quarantine", "detector:scan");
        metrics.record_action("quarantine", "api:bob");
        metrics.record_events_lost("event_bus", 5);
        metrics.record_dns_refusal(Refusal::WrongId);
        metrics.record_dns_refusal(Refusal::WrongId);
        metrics.record_dns_match(AnswerSource::GatewayResolver);
        metrics.record_dns_queries_evicted(3);
        let mut stats = vec![0u64; counter::COUNT as usize];
        stats[(counter::DROPS_BASE + reason::BLOCKED) as usize] = 9;
        stats[counter::EVENTS_LOST as usize] = 2;
        metrics.set_datapath_counters(DatapathCounters::from_global_stats(&stats));
        metrics.set_integration_backlog("siem", 12);
        metrics.set_fleet(FleetCounters {
            connected: true,
            backlog_events: 7,
            published_events: 30,
            ..Default::default()
        });

        let scrape = parse(&metrics.encode().unwrap());
        assert_eq!(value(&scrape, "iotgw_devices", Some(("state", "enrolled"))), Some(4.0));
        assert_eq!(value(&scrape, "iotgw_devices", Some(("state", "blocked"))), Some(0.0));
        assert_eq!(value(&scrape, "iotgw_alerts_total", Some(("detector", "scan"))), Some(1.0));
        assert_eq!(value(&scrape, "iotgw_actions_total", Some(("source", "api"))), Some(2.0));
        assert_eq!(value(&scrape, "iotgw_events_lost_total", Some(("stage", "event_bus"))), Some(5.0));
        assert_eq!(value(&scrape, "iotgw_dns_answers_refused_total", Some(("reason", "wrong_id"))), Some(2.0));
        assert_eq!(value(&scrape, "iotgw_dns_answers_refused_total", Some(("reason", "unsolicited"))), Some(0.0));
        let matched = |source| value(&scrape, "iotgw_dns_answers_matched_total", Some(("source", source)));
        assert_eq!((matched("gateway_resolver"), matched("upstream")), (Some(1.0), Some(0.0)));
        assert_eq!(value(&scrape, "iotgw_dns_queries_evicted_total", None), Some(3.0));
        let blocked = reason::NAMES[reason::BLOCKED as usize];
        assert_eq!(value(&scrape, "iotgw_datapath_drops_total", Some(("reason", blocked))), Some(9.0));
        assert_eq!(value(&scrape, "iotgw_datapath_events_lost_total", None), Some(2.0));
        assert_eq!(value(&scrape, "iotgw_integration_backlog", Some(("sink", "siem"))), Some(12.0));
        assert_eq!(value(&scrape, "iotgw_fleet_connected", None), Some(1.0));
        assert_eq!(value(&scrape, "iotgw_fleet_backlog_events", None), Some(7.0));
        assert_eq!(value(&scrape, "iotgw_fleet_published_total", Some(("kind", "event"))), Some(30.0));
    }
}
