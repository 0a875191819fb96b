//! The running policy as `GET /api/v1/policies` shows it: reads a `policy::CompiledPolicy` and
//! the `respond::ResponsePolicy` in force, writes a `PolicySnapshot`. The controller calls
//! `snapshot` after every accepted reload and hands it to `SharedPolicy::set` (and
//! `SharedPolicy::refused` when a reload is refused).
use sha2::{Digest as _, Sha256};

use super::model::{PolicyClass, PolicyLane, PolicyPorts, PolicyResponse, PolicyRule, PolicySnapshot, PolicyVerdicts};
use crate::{
    policy::{
        CompiledPolicy,
        model::{Lane, Rule},
    },
    respond::{ResponsePolicy, ResponseRule},
};

/// Hex digits of the content hash shown as the policy version.
const VERSION_HEX_DIGITS: usize = 16;

/// The version of a compiled policy: a hash of what the datapath enforces (classes, LPM
/// rules, DNS-name rules, default verdicts). Reformatting a file keeps it; any change to what
/// is enforced changes it.
pub fn version(policy: &CompiledPolicy) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{:?}", policy.classes));
    hasher.update(format!("{:?}", policy.rules));
    hasher.update(format!("{:?}", policy.verdicts));
    for rule in &policy.dns_rules {
        // Without `at`: where a rule is written is not what it enforces.
        let (pattern, v4, v6) = (&rule.pattern, &rule.matches_v4, &rule.matches_v6);
        hasher.update(format!("{:?}{pattern:?}{:?}{v4:?}{v6:?}", rule.policy_id, rule.protocol));
    }
    let mut text = hex::encode(hasher.finalize());
    text.truncate(VERSION_HEX_DIGITS);
    text
}

/// What the API shows of `policy` with the response rules `responses` (the ones the pipeline
/// runs, which a reload may have kept), loaded now.
pub fn snapshot(policy: &CompiledPolicy, responses: &ResponsePolicy) -> PolicySnapshot {
    let source = &policy.source;
    let classes = source
        .classes
        .iter()
        .map(|class| {
            let m = &class.matcher;
            let matches = m
                .macs
                .iter()
                .map(|mac| format!("mac {mac}"))
                .chain(m.ouis.iter().map(|oui| format!("oui {}", hex_colon(oui))))
                .chain(m.fingerprint_types.iter().map(|t| match m.fingerprint_confidence_percent {
                    0 => format!("type {t}"),
                    percent => format!("type {t} ≥ {percent}%"),
                }))
                .chain(m.cert_subjects.iter().map(|s| format!("cert_subject {s}")))
                .collect();
            PolicyClass {
                name: class.name.clone(),
                policy_id: class.policy_id.0,
                matches,
                rules: class.rules.len(),
                description: class.description.clone(),
                allow: class.rules.iter().map(rule).collect(),
                include: class.include.clone(),
                update_lane: class.update_lane,
                at: class.at.to_string(),
            }
        })
        .collect();
    let lanes = &source.lanes;
    let defaults = &source.defaults;
    PolicySnapshot {
        version: Some(version(policy)),
        loaded_at: Some(time::OffsetDateTime::now_utc()),
        files: source.files.iter().map(|path| path.display().to_string()).collect(),
        classes,
        verdicts: Some(PolicyVerdicts {
            malformed: defaults.malformed.as_str().into(),
            unknown_device: defaults.unknown_device.as_str().into(),
            policy_miss: defaults.policy_miss.as_str().into(),
            quarantine: defaults.quarantine.as_str().into(),
        }),
        lanes: vec![
            lane("onboarding", &lanes.onboarding, false),
            lane("quarantine", &lanes.quarantine, lanes.quarantine_includes_update),
            lane("update", &lanes.update, false),
        ],
        responses: responses.rules.iter().map(response).collect(),
        ..PolicySnapshot::default()
    }
}

fn rule(rule: &Rule) -> PolicyRule {
    PolicyRule {
        description: rule.description.clone(),
        nets: rule.nets.iter().map(ToString::to_string).collect(),
        names: rule.names.iter().map(ToString::to_string).collect(),
        protocol: rule.protocol.as_str().into(),
        ports: rule.ports.iter().map(|range| PolicyPorts { first: range.first, last: range.last }).collect(),
        source_ports: rule
            .source_ports
            .iter()
            .map(|range| PolicyPorts { first: range.first, last: range.last })
            .collect(),
        icmp_types: rule.icmp.iter().map(ToString::to_string).collect(),
        direction: rule.direction.as_str().into(),
        family: rule.family.map(|family| family.as_str().into()),
        at: rule.at.to_string(),
    }
}

fn lane(name: &str, lane: &Lane, includes_update: bool) -> PolicyLane {
    PolicyLane {
        name: name.into(),
        description: lane.description.clone(),
        allow: lane.rules.iter().map(rule).collect(),
        includes_update,
        at: lane.at.as_ref().map(ToString::to_string),
    }
}

fn response(rule: &ResponseRule) -> PolicyResponse {
    let mut exempt_macs: Vec<String> = rule.exempt_macs.iter().map(ToString::to_string).collect();
    exempt_macs.sort();
    let mut exempt_classes: Vec<String> = rule.exempt_classes.iter().cloned().collect();
    exempt_classes.sort();
    PolicyResponse {
        name: rule.name.clone(),
        detectors: rule.detectors.iter().map(|d| d.as_str().to_owned()).collect(),
        min_score: rule.min_score,
        action: rule.action.as_str().into(),
        max_per_device: rule.max_per_device,
        device_period_secs: rule.device_period.as_secs(),
        max_global: rule.max_global,
        global_period_secs: rule.global_period.as_secs(),
        exempt_macs,
        exempt_classes,
        at: rule.origin.clone(),
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_policies() -> CompiledPolicy {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        crate::policy::check(&[dir], crate::respond::rules::policy_errors).expect("the shipped policies check")
    }

    #[test]
    fn shipped_policies_show_every_class_with_its_matchers() {
        let policy = shipped_policies();
        let responses = crate::respond::rules::from_policy(&policy.source).expect("the shipped response rules");
        let snapshot = snapshot(&policy, &responses);
        assert_eq!(snapshot.classes.len(), policy.classes.len());
        assert!(!snapshot.classes.is_empty());
        assert!(snapshot.classes.iter().all(|c| c.policy_id >= gateway_ebpf::lane::FIRST_CLASS_POLICY));
        assert!(snapshot.classes.iter().any(|c| !c.matches.is_empty()), "{:?}", snapshot.classes);
        assert!(snapshot.files.iter().any(|f| f.ends_with("camera.toml")), "{:?}", snapshot.files);
        assert_eq!(snapshot.version.as_deref().map(str::len), Some(VERSION_HEX_DIGITS));
    }

    #[test]
    fn version_changes_with_what_is_enforced_only() {
        let policy = shipped_policies();
        assert_eq!(version(&policy), version(&shipped_policies()));
        let mut changed = policy.clone();
        changed.rules.pop();
        assert_ne!(version(&policy), version(&changed));
    }
}
