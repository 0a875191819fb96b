//! The one internal event model. Every alert, enforcement action, lifecycle change, policy
//! change and audit record is a `GatewayEvent`; `integrations` renders it for SIEM, SOAR and
//! ITSM sinks, and the API shows it. Producers publish on an `EventBus`.
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::device::Mac;

/// How bad an event is, ordered from least to most severe (syslog and CEF map from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    /// The severity as stored (0 for info up to 4 for critical), so SQL filters and sorts it.
    pub fn rank(self) -> i64 {
        self as i64
    }

    /// The severity stored as `rank`.
    pub fn from_rank(rank: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.rank() == rank)
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A detection fired.
    Alert {
        /// Stable id of the incident (repeated alerts of one incident share it).
        incident_id: String,
        /// Detector name, e.g. `new_destination`, `volume`, `scan`.
        detector: String,
        /// 0.0 ..= 1.0 (or more when far beyond the threshold).
        score: f64,
        /// What was expected, in words an analyst reads.
        expected: String,
        /// What was seen.
        observed: String,
        /// Flows involved, as text `proto src:port -> dst:port`.
        flows: Vec<String>,
        /// True when the incident is over (ITSM closes its ticket).
        resolved: bool,
    },
    /// The gateway (or a human) changed what a device may do.
    Action {
        /// `quarantine`, `release`, `block`, `update_lane`, `tag`, `alert`.
        action: String,
        /// Why, e.g. the alert's incident id or an operator's comment.
        reason: String,
    },
    /// A device's lifecycle moved (seen, enrolled, renewed, revoked, decommissioned, ...).
    Lifecycle { from: String, to: String },
    /// The running policy changed (or a reload was refused).
    PolicyChange { accepted: bool, detail: String },
    /// Anything else worth an audit record.
    Audit { action: String, detail: String },
}

/// One event, with who and what it concerns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayEvent {
    /// Unique, for deduplication downstream.
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub severity: Severity,
    /// The device concerned, if any.
    pub device: Option<Mac>,
    /// The device's IP when known (SIEMs key on it).
    pub device_ip: Option<std::net::IpAddr>,
    /// Who or what caused it: `detector:scan`, `api:alice`, `policy-file`, `enrollment`.
    pub actor: String,
    #[serde(flatten)]
    pub kind: EventKind,
    /// Set when this record stands for several events (`integrations::aggregate`): a flood of
    /// one actor, device, kind and action within a window is stored and sent once, counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
    /// For an `Action` taken because of an alert: that alert's incident id (`respond` sets
    /// it), so the alert's record lists the responses it triggered (`alerts`). Not named
    /// `incident_id`: the flattened `Alert` kind has that field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responds_to: Option<String>,
    /// For a detector's `Alert`: what it saw, machine-readable (`detect` sets it), so an
    /// analyst can learn it as the device's normal (`alerts`, `baseline::learned`); a
    /// `resolved` alert carries the peak of each rate its incident reached. Empty when nothing
    /// seen is a baseline's to take (a forged ARP sender, a claim on the gateway's address) and
    /// on every other producer's alerts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
}

/// What a detector observed, in terms a device's baseline can take as normal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// An upstream destination, as the prefix baselines learn destinations as, reached on a
    /// service (IP protocol number, destination port; 0 for protocols without ports).
    Destination { prefix: ipnet::IpNet, proto: u8, port: u16 },
    /// A LAN host reached on a service.
    Peer { addr: std::net::IpAddr, proto: u8, port: u16 },
    /// An IPv4 address the device claimed in ARP while another device held it.
    Claim { addr: std::net::Ipv4Addr },
    /// A measure above the limit in force when it fired.
    Rate { measure: Measure, observed: f64, limit: f64 },
}

/// What a rate detector counts (per device).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Distinct hosts reached in a scan window.
    ScanHosts,
    /// Distinct ports reached on one host in a scan window.
    ScanPorts,
    /// New flows opened in a scan window.
    NewFlows,
    /// Packets sent per second.
    PacketsPerSecond,
    /// Bytes sent in a window.
    BytesSent,
    /// Gratuitous ARPs sent in a window.
    GratuitousArps,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::ScanHosts => "scan_hosts",
            Measure::ScanPorts => "scan_ports",
            Measure::NewFlows => "new_flows",
            Measure::PacketsPerSecond => "packets_per_second",
            Measure::BytesSent => "bytes_sent",
            Measure::GratuitousArps => "gratuitous_arps",
        }
    }
}

/// How many events an aggregate record stands for, and when the first and last happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeat {
    /// Events this record stands for (at least 1).
    pub count: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

impl GatewayEvent {
    pub fn new(severity: Severity, device: Option<Mac>, actor: impl Into<String>, kind: EventKind) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            time: OffsetDateTime::now_utc(),
            severity,
            device,
            device_ip: None,
            actor: actor.into(),
            kind,
            repeat: None,
            responds_to: None,
            observations: Vec::new(),
        }
    }

    /// The events this record stands for: 1, or an aggregate's count.
    pub fn count(&self) -> u64 {
        self.repeat.map_or(1, |r| r.count)
    }

    /// What an aggregate groups on besides actor, device and kind: the audit action, the
    /// lifecycle step, the policy outcome, the action or the detector.
    pub fn action_name(&self) -> String {
        match &self.kind {
            EventKind::Alert { detector, .. } => detector.clone(),
            EventKind::Action { action, .. } | EventKind::Audit { action, .. } => action.clone(),
            EventKind::Lifecycle { from, to } => format!("{from}->{to}"),
            EventKind::PolicyChange { accepted, .. } => if *accepted { "accepted" } else { "refused" }.to_owned(),
        }
    }

    /// The event kind's name, as used by sink filters (`alert`, `action`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            EventKind::Alert { .. } => "alert",
            EventKind::Action { .. } => "action",
            EventKind::Lifecycle { .. } => "lifecycle",
            EventKind::PolicyChange { .. } => "policy_change",
            EventKind::Audit { .. } => "audit",
        }
    }

    /// The event with every text field passed through `untrusted::escape`: what sinks render.
    /// Producers escape text from devices and callers already; this is the second line, so a
    /// producer that forgot cannot forge a record downstream.
    pub fn escaped(&self) -> GatewayEvent {
        let text = |value: &String| crate::untrusted::escape(value).into_owned();
        let kind = match &self.kind {
            EventKind::Alert { incident_id, detector, score, expected, observed, flows, resolved } => {
                EventKind::Alert {
                    incident_id: text(incident_id),
                    detector: text(detector),
                    score: *score,
                    expected: text(expected),
                    observed: text(observed),
                    flows: flows.iter().map(text).collect(),
                    resolved: *resolved,
                }
            }
            EventKind::Action { action, reason } => EventKind::Action { action: text(action), reason: text(reason) },
            EventKind::Lifecycle { from, to } => EventKind::Lifecycle { from: text(from), to: text(to) },
            EventKind::PolicyChange { accepted, detail } => {
                EventKind::PolicyChange { accepted: *accepted, detail: text(detail) }
            }
            EventKind::Audit { action, detail } => EventKind::Audit { action: text(action), detail: text(detail) },
        };
        GatewayEvent {
            id: text(&self.id),
            time: self.time,
            severity: self.severity,
            device: self.device,
            device_ip: self.device_ip,
            actor: text(&self.actor),
            kind,
            repeat: self.repeat,
            responds_to: self.responds_to.as_ref().map(text),
            // Numbers and addresses only: nothing to escape.
            observations: self.observations.clone(),
        }
    }
}

/// Default number of events a slow subscriber may lag behind before it misses some; the
/// integrations outbox persists events before that matters.
pub const EVENT_BUS_CAPACITY: usize = 4_096;

/// Fan-out of `GatewayEvent`s to every interested task.
///
/// Three kinds of subscriber: `subscribe` gives a broadcast receiver of bounded capacity, which
/// misses events when it lags (live views, metrics); `subscribe_recorder` gives a queue that gets
/// every event it wants, for a recorder that must miss none (the alert store); `subscribe_queue`
/// gives a bounded queue of every event, for a reader that must miss none but takes every kind
/// (the integrations intake, in front of the outbox). Recorder queues are unbounded so `publish`
/// never blocks (it runs on async workers and on the pipeline thread alike); a recorder takes
/// only the few kinds it records, and drains them in batched transactions far faster than
/// detectors raise alerts. A bounded queue that is full never blocks `publish` either: the event
/// is counted (`queue_overflows`) instead of queued, so memory stays bounded whatever a flood.
#[derive(Clone)]
pub struct EventBus {
    sender: tokio::sync::broadcast::Sender<GatewayEvent>,
    recorders: std::sync::Arc<std::sync::Mutex<Vec<Recorder>>>,
    queues: std::sync::Arc<std::sync::Mutex<Vec<tokio::sync::mpsc::Sender<GatewayEvent>>>>,
    queue_overflows: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One lossless subscriber: the events it wants, and its queue.
struct Recorder {
    wants: fn(&GatewayEvent) -> bool,
    queue: std::sync::mpsc::Sender<GatewayEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(EVENT_BUS_CAPACITY)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: tokio::sync::broadcast::channel(capacity).0,
            recorders: Default::default(),
            queues: Default::default(),
            queue_overflows: Default::default(),
        }
    }

    /// Publishes to every current subscriber; an event with no subscriber is dropped.
    pub fn publish(&self, event: GatewayEvent) {
        tracing::debug!(kind = event.kind_name(), device = ?event.device, "event");
        self.publish_to_recorders(&event);
        self.publish_to_queues(&event);
        let _ = self.sender.send(event);
    }

    fn publish_to_queues(&self, event: &GatewayEvent) {
        use tokio::sync::mpsc::error::TrySendError;
        let mut queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A queue whose receiver is gone has stopped: forget it.
        queues.retain(|queue| match queue.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.queue_overflows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        });
    }

    /// Hands `event` to the recorders only: for an event its producer already delivered to the
    /// queue subscribers' destination itself (integrations stores its `event_flood` alerts in
    /// the outbox directly), so the producer never reads back what it published.
    pub fn publish_to_recorders(&self, event: &GatewayEvent) {
        let mut recorders = self.recorders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A recorder whose receiver is gone has stopped: forget it.
        recorders.retain(|recorder| !(recorder.wants)(event) || recorder.queue.send(event.clone()).is_ok());
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<GatewayEvent> {
        self.sender.subscribe()
    }

    /// A queue of every event published from now on that `wants` accepts; it never lags (see
    /// the type's doc). Read it from a thread of its own (`recv` blocks).
    pub fn subscribe_recorder(&self, wants: fn(&GatewayEvent) -> bool) -> std::sync::mpsc::Receiver<GatewayEvent> {
        let (queue, receiver) = std::sync::mpsc::channel();
        self.recorders.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Recorder { wants, queue });
        receiver
    }

    /// A queue of every event published from now on (not those `publish_to_recorders` hands
    /// out), holding at most `capacity`: it never lags as a broadcast receiver does, and while it
    /// is full further events are counted in `queue_overflows` instead (see the type's doc).
    pub fn subscribe_queue(&self, capacity: usize) -> tokio::sync::mpsc::Receiver<GatewayEvent> {
        let (queue, receiver) = tokio::sync::mpsc::channel(capacity);
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(queue);
        receiver
    }

    /// Events a full `subscribe_queue` queue did not take, since the bus was made.
    pub fn queue_overflows(&self) -> u64 {
        self.queue_overflows.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_and_responses_read_back_as_written() {
        let alert = GatewayEvent::new(
            Severity::High,
            Some(Mac([2, 0, 0, 0, 0, 1])),
            "detector:scan",
            EventKind::Alert {
                incident_id: "scan:02:00:00:00:00:01".into(),
                detector: "scan".into(),
                score: 0.9,
                expected: "few hosts".into(),
                observed: "many hosts".into(),
                flows: vec![],
                resolved: false,
            },
        );
        let mut action = GatewayEvent::new(
            Severity::High,
            alert.device,
            "respond:quarantine attacks",
            EventKind::Action { action: "quarantine".into(), reason: "scan".into() },
        );
        action.responds_to = Some("scan:02:00:00:00:00:01".into());
        for event in [alert, action] {
            let text = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<GatewayEvent>(&text).unwrap(), event, "{text}");
        }
    }

    #[test]
    fn recorders_get_what_they_want_however_far_the_broadcast_lags() {
        let bus = EventBus::new(1);
        let _lagging = bus.subscribe();
        let alerts = bus.subscribe_recorder(|event| event.kind_name() == "alert");
        let audit = || {
            GatewayEvent::new(Severity::Info, None, "t", EventKind::Audit { action: "a".into(), detail: "d".into() })
        };
        let mut flood = audit();
        flood.kind = EventKind::Alert {
            incident_id: "i".into(),
            detector: "event_flood".into(),
            score: 0.6,
            expected: String::new(),
            observed: String::new(),
            flows: vec![],
            resolved: false,
        };
        for _ in 0..10 {
            bus.publish(audit());
            bus.publish(flood.clone());
        }
        bus.publish_to_recorders(&flood);
        assert_eq!(alerts.try_iter().count(), 11);
    }

    #[test]
    fn a_full_queue_counts_what_it_cannot_take_and_never_gets_recorder_only_events() {
        let bus = EventBus::new(1);
        let mut queue = bus.subscribe_queue(3);
        let audit = || {
            GatewayEvent::new(Severity::Info, None, "t", EventKind::Audit { action: "a".into(), detail: "d".into() })
        };
        bus.publish_to_recorders(&audit());
        for _ in 0..5 {
            bus.publish(audit());
        }
        let mut queued = 0;
        while queue.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!((queued, bus.queue_overflows()), (3, 2));
    }
}
