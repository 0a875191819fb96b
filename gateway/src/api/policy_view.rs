//! The running policy as `GET /api/v1/policies` shows it: reads a `policy::CompiledPolicy`,
//! writes a `PolicySnapshot`. The controller calls `snapshot` after every accepted reload and
//! hands it to `SharedPolicy::set` (and `SharedPolicy::refused` when a reload is refused).
use sha2::{Digest as _, Sha256};

use super::model::{PolicyClass, PolicySnapshot};
use crate::policy::CompiledPolicy;

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
        hasher.update(format!("{:?}{:?}{:?}{:?}", rule.policy_id, rule.pattern, rule.protocol, rule.ports));
    }
    let mut text = hex::encode(hasher.finalize());
    text.truncate(VERSION_HEX_DIGITS);
    text
}

/// What the API shows of `policy`, loaded now.
pub fn snapshot(policy: &CompiledPolicy) -> PolicySnapshot {
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
                .chain(m.fingerprint_types.iter().map(|t| format!("type {t}")))
                .chain(m.cert_subjects.iter().map(|s| format!("cert_subject {s}")))
                .collect();
            PolicyClass { name: class.name.clone(), policy_id: class.policy_id.0, matches, rules: class.rules.len() }
        })
        .collect();
    PolicySnapshot {
        version: Some(version(policy)),
        loaded_at: Some(time::OffsetDateTime::now_utc()),
        files: source.files.iter().map(|path| path.display().to_string()).collect(),
        classes,
        ..PolicySnapshot::default()
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
        let snapshot = snapshot(&policy);
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
