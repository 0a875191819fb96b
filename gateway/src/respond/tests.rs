use std::{path::Path, sync::Arc, time::Duration};

use super::*;
use crate::{
    baseline::tests::start,
    datapath::{DeviceControl as _, MemoryDatapath},
    detect::{DetectorKind, IncidentId, synthetic},
};

const RULES: &str = r#"
[[response]]
name = "quarantine attacks"
detectors = ["scan", "flood", "arp_spoof", "lateral_movement", "volume"]
min_score = 0.6
action = "quarantine"
max_per_device = 1
max_global = 5
exempt_classes = ["hvac"]
exempt_macs = ["02:00:91:00:00:09"]

[[response]]
name = "update lane for strays"
detectors = ["new_destination"]
min_score = 0.7
action = "update_lane"

[[response]]
name = "tell someone"
detectors = ["*"]
action = "alert"
max_global = 1000
"#;

/// The response rules of `RULES` (shared with the pipeline's tests).
pub(crate) fn policy() -> ResponsePolicy {
    rules::parse(Path::new("response.toml"), RULES).unwrap()
}

pub(crate) fn enrolled() -> DeviceAccess {
    DeviceAccess { access: Access::Enrolled, policy_id: 29, class_id: 13 }
}

fn alert(mac: Mac, detector: DetectorKind, score: f64, at_secs: u64) -> Alert {
    Alert {
        time: start() + Duration::from_secs(at_secs),
        mac,
        device_ip: None,
        detector,
        incident: IncidentId::new(mac, detector),
        score,
        expected: "x".into(),
        observed: "y".into(),
        flows: vec![],
        observations: vec![],
        resolved: false,
    }
}

fn responder() -> (Responder, Arc<MemoryDatapath>) {
    let datapath = Arc::new(MemoryDatapath::default());
    (Responder::new(policy(), datapath.clone()), datapath)
}

fn action_names(events: &[GatewayEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Action { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn scan_alert_quarantines_and_is_audited() {
    let (mut responder, datapath) = responder();
    let mac = synthetic::plug(1).mac;
    datapath.set_access(mac, enrolled()).unwrap();
    let events = responder.handle(&alert(mac, DetectorKind::Scan, 0.9, 0));
    assert_eq!(action_names(&events), vec!["quarantine"]);
    assert_eq!(
        datapath.access(mac).unwrap(),
        Some(DeviceAccess { access: Access::Quarantined, policy_id: 29, class_id: 13 }),
        "class and policy kept for the release"
    );
    let audits: Vec<_> = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Audit { action, .. } if action == "respond.quarantine"))
        .collect();
    assert_eq!(audits.len(), 1);
    assert_eq!(events[0].actor, "respond:quarantine attacks");
    let EventKind::Action { reason, .. } = &events[0].kind else { panic!() };
    assert!(reason.contains("scan:02:00:91:00:00:01") && reason.contains("response.toml:2:1"), "{reason}");
}

#[test]
fn low_score_only_alerts() {
    let (mut responder, datapath) = responder();
    let mac = synthetic::plug(1).mac;
    datapath.set_access(mac, enrolled()).unwrap();
    let events = responder.handle(&alert(mac, DetectorKind::Scan, 0.55, 0));
    assert_eq!(action_names(&events), vec!["alert"]);
    assert_eq!(datapath.access(mac).unwrap(), Some(enrolled()));
    assert!(responder.hold(mac).is_none());
}

#[test]
fn new_destination_moves_the_device_to_the_update_lane_then_escalates() {
    let (mut responder, datapath) = responder();
    let mac = synthetic::meter(1).mac;
    datapath.set_access(mac, enrolled()).unwrap();
    let events = responder.handle(&alert(mac, DetectorKind::NewDestination, 0.8, 0));
    assert_eq!(action_names(&events), vec!["update_lane"]);
    assert_eq!(
        datapath.access(mac).unwrap(),
        Some(DeviceAccess { access: Access::Enrolled, policy_id: gateway_ebpf::lane::QUARANTINE, class_id: 13 })
    );
    // A stronger detection escalates; the hold remembers the access before the first action.
    responder.handle(&alert(mac, DetectorKind::Scan, 0.9, 5));
    assert_eq!(datapath.access(mac).unwrap().unwrap().access, Access::Quarantined);
    assert_eq!(responder.hold(mac).unwrap().previous, Some(enrolled()));
    // A weaker one does not step back down.
    let events = responder.handle(&alert(mac, DetectorKind::NewDestination, 0.8, 10));
    assert!(action_names(&events).is_empty(), "{events:#?}");
    assert_eq!(datapath.access(mac).unwrap().unwrap().access, Access::Quarantined);
}

#[test]
fn release_restores_what_the_device_had_and_is_audited() {
    let (mut responder, datapath) = responder();
    let mac = synthetic::camera(1).mac;
    datapath.set_access(mac, enrolled()).unwrap();
    responder.handle(&alert(mac, DetectorKind::Volume, 0.9, 0));
    let events = responder.release(mac, "api:alice").unwrap();
    assert_eq!(datapath.access(mac).unwrap(), Some(enrolled()));
    assert_eq!(action_names(&events), vec!["release"]);
    assert_eq!(events[0].actor, "api:alice");
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::Audit { action, .. } if action == "respond.release")));
    assert!(matches!(responder.release(mac, "api:alice"), Err(RespondError::NotHeld { .. })));
}

#[test]
fn release_of_a_device_unknown_before_removes_it_from_the_table() {
    let (mut responder, datapath) = responder();
    let mac = synthetic::camera(2).mac;
    responder.handle(&alert(mac, DetectorKind::Flood, 0.9, 0));
    assert_eq!(datapath.access(mac).unwrap().unwrap().access, Access::Quarantined);
    responder.release(mac, "api:bob").unwrap();
    assert_eq!(datapath.access(mac).unwrap(), None);
}

#[test]
fn exempt_macs_and_classes_are_not_quarantined() {
    let (mut responder, datapath) = responder();
    let exempt = Mac([0x02, 0x00, 0x91, 0x00, 0x00, 0x09]);
    let hvac = synthetic::meter(5).mac;
    responder.set_class(hvac, "hvac");
    for mac in [exempt, hvac] {
        datapath.set_access(mac, enrolled()).unwrap();
        let events = responder.handle(&alert(mac, DetectorKind::Scan, 0.95, 0));
        assert_eq!(action_names(&events), vec!["alert"], "{mac}");
        assert!(
            events.iter().any(|e| matches!(&e.kind, EventKind::Audit { detail, .. } if detail.contains("exempts")))
        );
        assert_eq!(datapath.access(mac).unwrap(), Some(enrolled()));
    }
}

#[test]
fn rate_limits_cap_actions_per_device_and_over_the_fleet() {
    let (mut responder, datapath) = responder();
    // Per device: one quarantine per hour; released and scanning again within the hour
    // only alerts.
    let mac = synthetic::plug(1).mac;
    responder.handle(&alert(mac, DetectorKind::Scan, 0.9, 0));
    responder.release(mac, "api:alice").unwrap();
    let events = responder.handle(&alert(mac, DetectorKind::Scan, 0.9, 60));
    assert_eq!(action_names(&events), vec!["alert"]);
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::Audit { detail, .. } if detail.contains("already acted 1 time(s) on this device"))));
    // ... and quarantines again once the hour has passed.
    let events = responder.handle(&alert(mac, DetectorKind::Scan, 0.9, 3_700));
    assert_eq!(action_names(&events), vec!["quarantine"]);

    // Fleet: at most 5 quarantines in 10 minutes.
    let quarantined = (10..20u8)
        .filter(|i| {
            let mac = Mac([0x02, 0x00, 0x77, 0, 0, *i]);
            action_names(&responder.handle(&alert(mac, DetectorKind::Flood, 0.9, 5_000))) == ["quarantine"]
        })
        .count();
    assert_eq!(quarantined, 5);
    let _ = datapath;
}

#[test]
fn resolved_alerts_take_no_action() {
    let (mut responder, _) = responder();
    let mut resolved = alert(synthetic::plug(1).mac, DetectorKind::Scan, 0.9, 0);
    resolved.resolved = true;
    assert!(responder.handle(&resolved).is_empty());
}
