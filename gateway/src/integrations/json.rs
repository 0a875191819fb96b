//! JSON renderings of `GatewayEvent`s: Elastic Common Schema (ECS 8.x field names), OCSF 1.1
//! classes where one fits (alerts are Detection Findings, enforcement actions Network
//! Activity with a disposition; the rest Base Events), and iotgw's own serde form.
use serde_json::{Value, json};

use crate::{
    detect::{DetectorKind, Technique, alert::ATTACK_VERSION},
    device::Mac,
    event::{EventKind, GatewayEvent},
};

use super::render::{self, Origin, rfc3339};

/// ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";
/// OCSF schema version the classes follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// OCSF class and category ids used here (schema.ocsf.io).
pub mod ocsf_class {
    pub const BASE_EVENT: u32 = 0;
    pub const DETECTION_FINDING: u32 = 2004;
    pub const NETWORK_ACTIVITY: u32 = 4001;
    pub const FINDINGS_CATEGORY: u32 = 2;
    pub const NETWORK_CATEGORY: u32 = 4;
}

/// ECS wants MACs as uppercase, hyphen-separated (RFC 7042).
fn ecs_mac(mac: Mac) -> String {
    mac.to_string().to_uppercase().replace(':', "-")
}

/// The Elastic Common Schema document. The device concerned is `host`/`source`; the gateway
/// is the `observer`.
pub fn ecs(origin: &Origin, event: &GatewayEvent) -> Value {
    /// event.kind, event.category, event.type, event.action, event.outcome, event.reason.
    type Shape<'a> = (&'a str, &'a [&'a str], &'a [&'a str], String, Option<&'a str>, Option<String>);
    let (kind, category, types, action, outcome, reason): Shape<'_> = match &event.kind {
        EventKind::Alert { detector, resolved, .. } => (
            "alert",
            &["intrusion_detection", "network"],
            if *resolved { &["end"] } else { &["info"] },
            detector.clone(),
            None,
            None,
        ),
        EventKind::Action { action, reason } => {
            let types: &[&str] = match action.as_str() {
                "quarantine" | "block" => &["denied"],
                "release" => &["allowed"],
                _ => &["change"],
            };
            ("event", &["network"], types, action.clone(), Some("success"), Some(reason.clone()))
        }
        EventKind::Lifecycle { to, .. } => ("event", &["host"], &["change"], to.clone(), None, None),
        EventKind::PolicyChange { accepted, detail } => (
            "event",
            &["configuration"],
            &["change"],
            "policy_change".into(),
            Some(if *accepted { "success" } else { "failure" }),
            Some(detail.clone()),
        ),
        EventKind::Audit { action, detail } => {
            ("event", &["configuration"], &["info"], action.clone(), None, Some(detail.clone()))
        }
    };
    let mut doc = json!({
        "@timestamp": rfc3339(event.time),
        "ecs": { "version": ECS_VERSION },
        "message": render::summary(event),
        "event": {
            "id": event.id,
            "kind": kind,
            "category": category,
            "type": types,
            "action": action,
            "severity": render::ocsf_severity_id(event.severity),
            "dataset": format!("iotgw.{}", event.kind_name()),
            "module": "iotgw",
            "provider": origin.app_name,
        },
        "log": { "level": render::severity_name(event.severity) },
        "observer": {
            "hostname": origin.hostname,
            "vendor": "iotgw",
            "product": origin.app_name,
            "version": origin.version,
            "type": "firewall",
        },
        "iotgw": { "actor": event.actor, "signature": render::signature(event) },
    });
    let event_obj = &mut doc["event"];
    if let Some(outcome) = outcome {
        event_obj["outcome"] = json!(outcome);
    }
    if let Some(reason) = reason {
        event_obj["reason"] = json!(reason);
    }
    if let Some(mac) = event.device {
        doc["host"]["mac"] = json!([ecs_mac(mac)]);
        doc["source"]["mac"] = json!(ecs_mac(mac));
    }
    if let Some(repeat) = event.repeat {
        // An aggregate: ECS's event.start/end bound it; the count has no ECS field.
        doc["event"]["start"] = json!(rfc3339(repeat.first_seen));
        doc["event"]["end"] = json!(rfc3339(repeat.last_seen));
        doc["iotgw"]["count"] = json!(repeat.count);
    }
    if let Some(ip) = event.device_ip {
        doc["host"]["ip"] = json!([ip.to_string()]);
        doc["source"]["ip"] = json!(ip.to_string());
    }
    if let EventKind::Alert { incident_id, detector, score, expected, observed, flows, resolved } = &event.kind {
        doc["rule"] = json!({ "name": detector, "id": render::signature(event) });
        doc["event"]["risk_score"] = json!(score * 100.0);
        doc["iotgw"]["incident_id"] = json!(incident_id);
        doc["iotgw"]["expected"] = json!(expected);
        doc["iotgw"]["observed"] = json!(observed);
        doc["iotgw"]["flows"] = json!(flows);
        doc["iotgw"]["resolved"] = json!(resolved);
        let techniques = DetectorKind::techniques_of(detector);
        if !techniques.is_empty() {
            let (subs, bases): (Vec<&Technique>, Vec<&Technique>) =
                techniques.iter().partition(|t| t.is_sub_technique());
            let field = |list: &[&Technique]| {
                json!({
                    "id": list.iter().map(|t| t.id).collect::<Vec<_>>(),
                    "name": list.iter().map(|t| t.name).collect::<Vec<_>>(),
                    "reference": list.iter().map(|t| t.reference()).collect::<Vec<_>>(),
                })
            };
            doc["threat"] = json!({ "framework": "MITRE ATT&CK", "technique": field(&bases) });
            if !subs.is_empty() {
                doc["threat"]["technique"]["subtechnique"] = field(&subs);
            }
        }
    }
    doc
}

/// OCSF `attack` objects: one per technique, a sub-technique under its parent's id.
fn ocsf_attacks(detector: &str) -> Vec<Value> {
    DetectorKind::techniques_of(detector)
        .iter()
        .map(|t| match t.id.split_once('.') {
            Some((parent, _)) => json!({
                "technique": { "uid": parent },
                "sub_technique": { "uid": t.id, "name": t.name, "src_url": t.reference() },
                "version": ATTACK_VERSION,
            }),
            None => json!({
                "technique": { "uid": t.id, "name": t.name, "src_url": t.reference() },
                "version": ATTACK_VERSION,
            }),
        })
        .collect()
}

/// The OCSF event.
pub fn ocsf(origin: &Origin, event: &GatewayEvent) -> Value {
    let time_ms = (event.time.unix_timestamp_nanos() / 1_000_000) as i64;
    let severity_id = render::ocsf_severity_id(event.severity);
    let device = json!({
        "mac": event.device.map(|m| m.to_string()),
        "ip": event.device_ip.map(|ip| ip.to_string()),
        "type_id": 0,
    });
    let metadata = json!({
        "version": OCSF_VERSION,
        "uid": event.id,
        "product": { "name": origin.app_name, "vendor_name": "iotgw", "version": origin.version },
        "log_name": event.kind_name(),
    });
    let common = |class_uid: u32, category_uid: u32, activity_id: u32, activity_name: &str| {
        let mut doc = json!({
            "class_uid": class_uid,
            "category_uid": category_uid,
            "activity_id": activity_id,
            "activity_name": activity_name,
            "type_uid": class_uid * 100 + activity_id,
            "time": time_ms,
            "severity_id": severity_id,
            "severity": render::severity_name(event.severity),
            "message": render::summary(event),
            "metadata": metadata,
            "observer": { "hostname": origin.hostname },
        });
        // OCSF base-event attributes of an aggregate: count, start_time and end_time (ms).
        if let Some(repeat) = event.repeat {
            doc["count"] = json!(repeat.count);
            doc["start_time"] = json!((repeat.first_seen.unix_timestamp_nanos() / 1_000_000) as i64);
            doc["end_time"] = json!((repeat.last_seen.unix_timestamp_nanos() / 1_000_000) as i64);
        }
        doc
    };
    match &event.kind {
        EventKind::Alert { incident_id, detector, score, expected, observed, flows, resolved } => {
            // Detection Finding activities: 1 Create, 3 Close; status 1 New, 4 Resolved.
            let (activity_id, activity, status_id, status) =
                if *resolved { (3, "Close", 4, "Resolved") } else { (1, "Create", 1, "New") };
            let mut doc = common(ocsf_class::DETECTION_FINDING, ocsf_class::FINDINGS_CATEGORY, activity_id, activity);
            doc["status_id"] = json!(status_id);
            doc["status"] = json!(status);
            doc["confidence_score"] = json!((score * 100.0).round().min(100.0) as u32);
            doc["finding_info"] = json!({
                "uid": incident_id,
                "title": format!("{detector} alert"),
                "desc": format!("observed {observed}; expected {expected}"),
                "types": [detector],
                "analytic": { "name": detector, "type_id": 1, "type": "Rule" },
                "attacks": ocsf_attacks(detector),
            });
            doc["device"] = device.clone();
            doc["evidences"] = json!(flows.iter().map(|f| json!({ "data": { "flow": f } })).collect::<Vec<_>>());
            doc["unmapped"] = json!({ "actor": event.actor });
            doc
        }
        EventKind::Action { action, reason } => {
            // Security-control profile dispositions: 1 Allowed, 2 Blocked, 3 Quarantined, 99 Other.
            let (disposition_id, disposition) = match action.as_str() {
                "quarantine" => (3, "Quarantined"),
                "block" => (2, "Blocked"),
                "release" => (1, "Allowed"),
                _ => (99, "Other"),
            };
            let mut doc = common(ocsf_class::NETWORK_ACTIVITY, ocsf_class::NETWORK_CATEGORY, 99, action);
            doc["disposition_id"] = json!(disposition_id);
            doc["disposition"] = json!(disposition);
            doc["src_endpoint"] = device.clone();
            doc["status_detail"] = json!(reason);
            doc["actor"] = json!({ "app_name": event.actor });
            doc
        }
        _ => {
            let mut doc = common(ocsf_class::BASE_EVENT, 0, 99, event.kind_name());
            doc["device"] = device;
            doc["unmapped"] = native(event);
            doc
        }
    }
}

/// iotgw's own event JSON (what the outbox stores).
pub fn native(event: &GatewayEvent) -> Value {
    // Serializing a GatewayEvent cannot fail: every field is a plain string, number or enum.
    serde_json::to_value(event).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::render::fixtures;

    #[test]
    fn ecs_alert_has_the_fields_siems_key_on() {
        let doc = ecs(&fixtures::origin(), &fixtures::alert(false));
        assert_eq!(doc["@timestamp"], "2026-11-25T06:30:01.123456789Z");
        assert_eq!(doc["event"]["kind"], "alert");
        assert_eq!(doc["event"]["category"][0], "intrusion_detection");
        assert_eq!(doc["event"]["severity"], 4);
        assert_eq!(doc["host"]["mac"][0], "02-00-00-00-00-01");
        assert_eq!(doc["source"]["ip"], "10.0.0.5");
        assert_eq!(doc["rule"]["name"], "scan");
        assert_eq!(doc["threat"]["framework"], "MITRE ATT&CK");
        assert_eq!(doc["threat"]["technique"]["id"], json!(["T1046", "T0846"]));
        assert_eq!(doc["threat"]["technique"]["name"][0], "Network Service Discovery");
    }

    #[test]
    fn arp_spoofing_names_its_sub_technique_in_ecs_and_ocsf() {
        let mut event = fixtures::alert(false);
        if let EventKind::Alert { detector, .. } = &mut event.kind {
            *detector = "arp_spoof".into();
        }
        let doc = ecs(&fixtures::origin(), &event);
        assert_eq!(doc["threat"]["technique"]["id"], json!(["T1557", "T0830"]));
        assert_eq!(doc["threat"]["technique"]["subtechnique"]["id"], json!(["T1557.002"]));
        let finding = ocsf(&fixtures::origin(), &event);
        let attacks = finding["finding_info"]["attacks"].as_array().unwrap();
        assert_eq!(attacks.len(), 3);
        assert_eq!(attacks[1]["technique"]["uid"], "T1557");
        assert_eq!(attacks[1]["sub_technique"]["uid"], "T1557.002");
        assert_eq!(attacks[1]["sub_technique"]["src_url"], "https://attack.mitre.org/techniques/T1557/002/");
    }

    #[test]
    fn ocsf_alert_is_a_detection_finding_and_resolution_closes_it() {
        let open = ocsf(&fixtures::origin(), &fixtures::alert(false));
        assert_eq!(open["class_uid"], 2004);
        assert_eq!(open["type_uid"], 200_401);
        assert_eq!(open["finding_info"]["uid"], "inc-1");
        let closed = ocsf(&fixtures::origin(), &fixtures::alert(true));
        assert_eq!(closed["type_uid"], 200_403);
        assert_eq!(closed["status_id"], 4);
    }

    #[test]
    fn ocsf_quarantine_is_network_activity_with_quarantined_disposition() {
        let event = GatewayEvent::new(
            crate::event::Severity::Medium,
            Some(Mac([2, 0, 0, 0, 0, 1])),
            "soar:xsoar",
            EventKind::Action { action: "quarantine".into(), reason: "inc-1".into() },
        );
        let doc = ocsf(&fixtures::origin(), &event);
        assert_eq!(doc["class_uid"], 4001);
        assert_eq!(doc["disposition_id"], 3);
        assert_eq!(doc["src_endpoint"]["mac"], "02:00:00:00:00:01");
    }
}
