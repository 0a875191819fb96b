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
    /// A protocol botnets use for command and control (IRC) or to spread (telnet out),
    /// towards the Internet, that neither the device nor its type learnt. Needs no baseline.
    C2Protocol,
    /// Connections at a regular period to one address no DNS answer named. Needs no baseline.
    Beaconing,
    /// A destination (address, network or DNS name) on a threat-intelligence list.
    ThreatIntel,
    /// Frames from an IPv4 or IPv6 source address bound to another device (`crate::source_guard`).
    SourceSpoof,
    /// The answer to a device's DNS query came from a resolver the site does not trust (its
    /// own choice): it names nothing. Needs no baseline.
    UntrustedResolver,
}

impl DetectorKind {
    pub const ALL: [DetectorKind; 11] = [
        DetectorKind::NewDestination,
        DetectorKind::Volume,
        DetectorKind::Scan,
        DetectorKind::Flood,
        DetectorKind::LateralMovement,
        DetectorKind::ArpSpoof,
        DetectorKind::C2Protocol,
        DetectorKind::Beaconing,
        DetectorKind::ThreatIntel,
        DetectorKind::SourceSpoof,
        DetectorKind::UntrustedResolver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::NewDestination => "new_destination",
            DetectorKind::Volume => "volume",
            DetectorKind::Scan => "scan",
            DetectorKind::Flood => "flood",
            DetectorKind::LateralMovement => "lateral_movement",
            DetectorKind::ArpSpoof => "arp_spoof",
            DetectorKind::C2Protocol => "c2_protocol",
            DetectorKind::Beaconing => "beaconing",
            DetectorKind::ThreatIntel => "threat_intel",
            DetectorKind::SourceSpoof => "source_spoof",
            DetectorKind::UntrustedResolver => "untrusted_resolver",
        }
    }

    /// The MITRE ATT&CK techniques (Enterprise, then ICS) an alert of this detector is
    /// evidence of, for SIEMs that file alerts by technique.
    pub fn techniques(self) -> &'static [Technique] {
        use attack::*;
        match self {
            DetectorKind::NewDestination => &[APPLICATION_LAYER_PROTOCOL, ICS_STANDARD_APPLICATION_LAYER_PROTOCOL],
            DetectorKind::Volume => &[EXFILTRATION_OVER_C2_CHANNEL],
            DetectorKind::Scan => &[NETWORK_SERVICE_DISCOVERY, ICS_REMOTE_SYSTEM_DISCOVERY],
            DetectorKind::Flood => &[NETWORK_DENIAL_OF_SERVICE, ICS_DENIAL_OF_SERVICE],
            DetectorKind::LateralMovement => &[REMOTE_SERVICES, ICS_REMOTE_SERVICES],
            DetectorKind::ArpSpoof => &[ADVERSARY_IN_THE_MIDDLE, ARP_CACHE_POISONING, ICS_ADVERSARY_IN_THE_MIDDLE],
            DetectorKind::C2Protocol => {
                &[APPLICATION_LAYER_PROTOCOL, NON_STANDARD_PORT, ICS_STANDARD_APPLICATION_LAYER_PROTOCOL]
            }
            DetectorKind::Beaconing => &[APPLICATION_LAYER_PROTOCOL, ICS_STANDARD_APPLICATION_LAYER_PROTOCOL],
            DetectorKind::ThreatIntel => &[APPLICATION_LAYER_PROTOCOL, ICS_STANDARD_APPLICATION_LAYER_PROTOCOL],
            // Sending as another device is masquerading as it (and the first step of a
            // man-in-the-middle when the stolen address is the one answered).
            DetectorKind::SourceSpoof => &[MASQUERADING, ADVERSARY_IN_THE_MIDDLE, ICS_MASQUERADING],
            // Resolving through a server of its own is DNS used as the C2's protocol.
            DetectorKind::UntrustedResolver => &[DNS, ICS_STANDARD_APPLICATION_LAYER_PROTOCOL],
        }
    }

    /// The techniques of the detector named `name` (none for names no detector has, such as
    /// aggregates made downstream).
    pub fn techniques_of(name: &str) -> &'static [Technique] {
        Self::parse(name).map_or(&[], Self::techniques)
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

/// One MITRE ATT&CK technique.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Technique {
    /// `T1046`, `T1557.002`, `T0846` (ICS ids start with `T0`).
    pub id: &'static str,
    pub name: &'static str,
}

impl Technique {
    /// `ICS` for ATT&CK for ICS, `Enterprise` otherwise.
    pub fn matrix(&self) -> &'static str {
        if self.id.starts_with("T0") { "ICS" } else { "Enterprise" }
    }

    /// True for a sub-technique (`T1557.002`).
    pub fn is_sub_technique(&self) -> bool {
        self.id.contains('.')
    }

    /// The technique's page on attack.mitre.org.
    pub fn reference(&self) -> String {
        format!("https://attack.mitre.org/techniques/{}/", self.id.replace('.', "/"))
    }
}

/// The ATT&CK release the names below follow.
pub const ATTACK_VERSION: &str = "16";

/// The ATT&CK techniques the detectors map to.
pub mod attack {
    use super::Technique;

    pub const APPLICATION_LAYER_PROTOCOL: Technique = Technique { id: "T1071", name: "Application Layer Protocol" };
    pub const DNS: Technique = Technique { id: "T1071.004", name: "Application Layer Protocol: DNS" };
    pub const NON_STANDARD_PORT: Technique = Technique { id: "T1571", name: "Non-Standard Port" };
    pub const EXFILTRATION_OVER_C2_CHANNEL: Technique = Technique { id: "T1041", name: "Exfiltration Over C2 Channel" };
    pub const NETWORK_SERVICE_DISCOVERY: Technique = Technique { id: "T1046", name: "Network Service Discovery" };
    pub const NETWORK_DENIAL_OF_SERVICE: Technique = Technique { id: "T1498", name: "Network Denial of Service" };
    pub const REMOTE_SERVICES: Technique = Technique { id: "T1021", name: "Remote Services" };
    pub const ADVERSARY_IN_THE_MIDDLE: Technique = Technique { id: "T1557", name: "Adversary-in-the-Middle" };
    pub const ARP_CACHE_POISONING: Technique = Technique { id: "T1557.002", name: "ARP Cache Poisoning" };
    pub const ICS_STANDARD_APPLICATION_LAYER_PROTOCOL: Technique =
        Technique { id: "T0869", name: "Standard Application Layer Protocol" };
    pub const ICS_REMOTE_SYSTEM_DISCOVERY: Technique = Technique { id: "T0846", name: "Remote System Discovery" };
    pub const ICS_DENIAL_OF_SERVICE: Technique = Technique { id: "T0814", name: "Denial of Service" };
    pub const ICS_REMOTE_SERVICES: Technique = Technique { id: "T0886", name: "Remote Services" };
    pub const ICS_ADVERSARY_IN_THE_MIDDLE: Technique = Technique { id: "T0830", name: "Adversary-in-the-Middle" };
    pub const MASQUERADING: Technique = Technique { id: "T1036", name: "Masquerading" };
    pub const ICS_MASQUERADING: Technique = Technique { id: "T0849", name: "Masquerading" };
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

    #[test]
    fn every_detector_maps_to_well_formed_attack_techniques() {
        for kind in DetectorKind::ALL {
            let techniques = kind.techniques();
            assert!(!techniques.is_empty(), "{kind}");
            for technique in techniques {
                let (base, sub) = technique.id.split_once('.').unwrap_or((technique.id, "001"));
                let well_formed = base.len() == 5
                    && base.starts_with('T')
                    && base[1..].bytes().all(|b| b.is_ascii_digit())
                    && sub.len() == 3
                    && sub.bytes().all(|b| b.is_ascii_digit());
                assert!(well_formed, "{kind}: {technique:?}");
            }
        }
        assert_eq!(DetectorKind::techniques_of("scan")[0].id, "T1046");
        assert_eq!(
            DetectorKind::techniques_of("arp_spoof")[1].reference(),
            "https://attack.mitre.org/techniques/T1557/002/"
        );
        assert_eq!(DetectorKind::techniques_of("scan")[1].matrix(), "ICS");
        assert!(DetectorKind::techniques_of("flood_aggregate").is_empty());
    }
}
