//! What a detection says: `Alert` (score, evidence, flows) and its mapping onto the one
//! event model (`EventKind::Alert`). Reads nothing, writes nothing.
use std::{fmt, net::IpAddr, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    datapath::events::FlowObservation,
    device::Mac,
    event::{EventKind, GatewayEvent, Observation, Severity},
};

/// Which detector fired. Names are stable: response rules and SIEM filters use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// An upstream destination outside the device's baseline.
    NewDestination,
    /// Bytes or new flows per window far above the baseline.
    Volume,
    /// Many distinct hosts, or many ports on one host, in a short window.
    Scan,
    /// Packets or new flows per second far above the baseline or an absolute limit.
    Flood,
    /// A connection to a LAN device the baseline never talked to.
    LateralMovement,
    /// An IP address claimed by a second MAC, a forged ARP sender, or a gratuitous ARP storm.
    ArpSpoof,
}

impl DetectorKind {
    pub const ALL: [DetectorKind; 6] = [
        DetectorKind::NewDestination,
        DetectorKind::Volume,
        DetectorKind::Scan,
        DetectorKind::Flood,
        DetectorKind::LateralMovement,
        DetectorKind::ArpSpoof,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::NewDestination => "new_destination",
            DetectorKind::Volume => "volume",
            DetectorKind::Scan => "scan",
            DetectorKind::Flood => "flood",
            DetectorKind::LateralMovement => "lateral_movement",
            DetectorKind::ArpSpoof => "arp_spoof",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable id of an incident: one per device and detector, so repeats deduplicate downstream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentId(pub String);

impl IncidentId {
    pub fn new(mac: Mac, detector: DetectorKind) -> Self {
        Self(format!("{detector}:{mac}"))
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One detection (or the end of one: `resolved`).
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub time: SystemTime,
    pub mac: Mac,
    pub device_ip: Option<IpAddr>,
    pub detector: DetectorKind,
    pub incident: IncidentId,
    /// 0.0 ..= 1.0; how it was computed is part of `observed`.
    pub score: f64,
    /// What the baseline or the limit allows, in words.
    pub expected: String,
    /// What was seen, in words, ending with how the score was computed.
    pub observed: String,
    /// The flows involved, `proto src:port -> dst:port`.
    pub flows: Vec<String>,
    /// What was seen, for learning it as normal (see `GatewayEvent::observations`).
    pub observations: Vec<Observation>,
    pub resolved: bool,
}

/// Scores at or above this are `High`.
pub const HIGH_SCORE: f64 = 0.8;
/// Scores at or above this are `Medium`.
pub const MEDIUM_SCORE: f64 = 0.6;

impl Alert {
    pub fn severity(&self) -> Severity {
        if self.resolved {
            Severity::Info
        } else if self.score >= HIGH_SCORE {
            Severity::High
        } else if self.score >= MEDIUM_SCORE {
            Severity::Medium
        } else {
            Severity::Low
        }
    }

    /// The alert as a `GatewayEvent` (actor `detector:<name>`).
    pub fn to_event(&self) -> GatewayEvent {
        let mut event = GatewayEvent::new(
            self.severity(),
            Some(self.mac),
            format!("detector:{}", self.detector),
            EventKind::Alert {
                incident_id: self.incident.0.clone(),
                detector: self.detector.as_str().to_owned(),
                score: self.score,
                expected: self.expected.clone(),
                observed: self.observed.clone(),
                flows: self.flows.clone(),
                resolved: self.resolved,
            },
        );
        event.time = time::OffsetDateTime::from(self.time);
        event.device_ip = self.device_ip;
        event.observations = self.observations.clone();
        event
    }
}

/// Score of a rate past its threshold: ½ at the threshold, rising towards 1 (¾ at twice,
/// 0.95 at ten times). Written out in every alert as `1 − ½·threshold/observed`.
pub fn ratio_score(observed: f64, threshold: f64) -> f64 {
    if observed <= 0.0 {
        return 0.0;
    }
    (1.0 - 0.5 * threshold / observed).clamp(0.0, 1.0)
}

/// A flow as text for evidence lists.
pub fn flow_text(flow: &FlowObservation) -> String {
    let proto = crate::baseline::profile::proto_name(flow.proto);
    let (src, dst) = match (flow.src, flow.dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => (format!("[{s}]"), format!("[{d}]")),
        (s, d) => (s.to_string(), d.to_string()),
    };
    format!("{proto} {src}:{} -> {dst}:{}", flow.src_port, flow.dst_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_score_is_half_at_the_threshold_and_rises() {
        assert_eq!(ratio_score(10.0, 10.0), 0.5);
        assert_eq!(ratio_score(20.0, 10.0), 0.75);
        assert!((ratio_score(100.0, 10.0) - 0.95).abs() < 1e-9);
    }

    #[test]
    fn detector_names_round_trip() {
        for kind in DetectorKind::ALL {
            assert_eq!(DetectorKind::parse(kind.as_str()), Some(kind));
        }
    }
}
