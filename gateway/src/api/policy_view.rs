//! The running policy as `GET /api/v1/policies` shows it. The policy step hands every policy
//! it puts in force to `SharedPolicy::set` (a `PolicyInForce`: the `policy::CompiledPolicy`,
//! shared, and the `respond::ResponsePolicy` in force) and every refused reload to
//! `SharedPolicy::refused`. The view (`PolicySnapshot`, one entry per rule: 10,000 rules at
//! scale) is built from it on the first read after a change, not on the policy step, so a
//! reload never waits for it and a read never sees an older policy than the one set.
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{
    directory::PolicySource,
    model::{
        PolicyClass, PolicyLane, PolicyPorts, PolicyReload, PolicyResponse, PolicyRule, PolicySnapshot, PolicyVerdicts,
    },
};
use crate::{
    policy::{
        CompiledPolicy, CompiledRule, PortMatchKey,
        model::{Lane, Rule},
    },
    respond::{ResponsePolicy, ResponseRule},
};

/// Hex digits of the content hash shown as the policy version.
const VERSION_HEX_DIGITS: usize = 16;

/// The version of a compiled policy: a hash of what the datapath enforces (classes, LPM
/// rules, DNS-name rules, default verdicts). Reformatting a file keeps it; any change to what
/// is enforced changes it. Hashes a fixed binary encoding of those (`Encoding`), which costs a
/// few bytes a rule, not their `Debug` text.
pub fn version(policy: &CompiledPolicy) -> String {
    let mut encoding = Encoding::default();
    encoding.count(policy.classes.len());
    for class in &policy.classes {
        encoding.text(&class.name);
        encoding.bytes(&class.class_id.0.to_be_bytes());
        encoding.bytes(&class.policy_id.0.to_be_bytes());
    }
    encoding.count(policy.rules.len());
    for rule in &policy.rules {
        encoding.rule(rule);
    }
    let verdicts = &policy.verdicts;
    encoding.bytes(&[verdicts.malformed, verdicts.unknown, verdicts.policy_miss, verdicts.quarantine]);
    encoding.count(policy.dns_rules.len());
    for rule in &policy.dns_rules {
        // Without `at`: where a rule is written is not what it enforces.
        encoding.bytes(&rule.policy_id.0.to_be_bytes());
        encoding.text(&rule.pattern.name);
        encoding.bytes(&[u8::from(rule.pattern.wildcard)]);
        encoding.text(rule.protocol.as_str());
        encoding.matches(&rule.matches_v4);
        encoding.matches(&rule.matches_v6);
    }
    let mut text = hex::encode(Sha256::digest(&encoding.0));
    text.truncate(VERSION_HEX_DIGITS);
    text
}

/// What `version` hashes: every variable-length part is prefixed with its length and every
/// number has a fixed width, so two different policies never encode to the same bytes.
#[derive(Default)]
struct Encoding(Vec<u8>);

impl Encoding {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn count(&mut self, count: usize) {
        self.bytes(&(count as u64).to_be_bytes());
    }

    fn text(&mut self, text: &str) {
        self.count(text.len());
        self.bytes(text.as_bytes());
    }

    fn rule(&mut self, rule: &CompiledRule) {
        self.bytes(&rule.policy_id.0.to_be_bytes());
        self.bytes(&[rule.proto]);
        match rule.net {
            ipnet::IpNet::V4(net) => {
                self.bytes(&[4, net.prefix_len()]);
                self.bytes(&net.addr().octets());
            }
            ipnet::IpNet::V6(net) => {
                self.bytes(&[6, net.prefix_len()]);
                self.bytes(&net.addr().octets());
            }
        }
        self.matches(&rule.matches);
    }

    fn matches(&mut self, matches: &[PortMatchKey]) {
        self.count(matches.len());
        for m in matches {
            for port in [m.remote.first, m.remote.last, m.device.first, m.device.last] {
                self.bytes(&port.to_be_bytes());
            }
            self.bytes(&[m.openers]);
        }
    }
}

/// A policy put in force, as the API is told of it: what the view is built from.
#[derive(Clone, Debug)]
pub struct PolicyInForce {
    pub policy: Arc<CompiledPolicy>,
    /// The response rules the pipeline runs (a reload whose rules are refused keeps the
    /// previous ones).
    pub responses: ResponsePolicy,
    /// `version(&policy)`.
    pub version: String,
    pub loaded_at: OffsetDateTime,
}

impl PolicyInForce {
    /// `policy` with `responses`, loaded now.
    pub fn new(policy: Arc<CompiledPolicy>, responses: ResponsePolicy) -> Self {
        let version = version(&policy);
        Self { policy, responses, version, loaded_at: OffsetDateTime::now_utc() }
    }

    /// What the API shows of it (without the reload outcome, which `SharedPolicy` adds).
    pub fn view(&self) -> PolicySnapshot {
        PolicySnapshot {
            version: Some(self.version.clone()),
            loaded_at: Some(self.loaded_at),
            ..view(&self.policy, &self.responses)
        }
    }
}

/// The `PolicySource` the policy step sets after every reload (accepted or refused).
#[derive(Debug, Default)]
pub struct SharedPolicy(RwLock<Shown>);

/// What `SharedPolicy` holds: the policy in force, the outcome of the last reload, and the
/// view of both once a read built it.
#[derive(Debug, Default)]
struct Shown {
    running: Option<Arc<PolicyInForce>>,
    last_reload: Option<PolicyReload>,
    last_refused: Option<String>,
    last_refused_at: Option<OffsetDateTime>,
    /// Bumped on every `set` and `refused`: a view built from an older state is not kept.
    changes: u64,
    /// The view of this state; `None` until a read after the last change builds it.
    view: Option<Arc<PolicySnapshot>>,
}

impl SharedPolicy {
    /// Shows `running`, the policy a load or reload just put in force (an earlier refusal is
    /// over). Cheap: the view is built by the next read.
    pub fn set(&self, running: PolicyInForce) {
        let mut shown = self.0.write().unwrap_or_else(PoisonError::into_inner);
        shown.last_reload = Some(PolicyReload { at: running.loaded_at, accepted: true });
        shown.running = Some(Arc::new(running));
        shown.last_refused = None;
        shown.last_refused_at = None;
        shown.changed();
    }

    /// Records a refused reload, keeping the running policy.
    pub fn refused(&self, why: String) {
        let now = OffsetDateTime::now_utc();
        let mut shown = self.0.write().unwrap_or_else(PoisonError::into_inner);
        shown.last_refused = Some(why);
        shown.last_refused_at = Some(now);
        shown.last_reload = Some(PolicyReload { at: now, accepted: false });
        shown.changed();
    }
}

impl Shown {
    fn changed(&mut self) {
        self.changes += 1;
        self.view = None;
    }

    /// The view of a state read under the lock, built once the lock is released.
    fn build(
        running: Option<&PolicyInForce>,
        reload: (Option<PolicyReload>, Option<String>, Option<OffsetDateTime>),
    ) -> PolicySnapshot {
        let (last_reload, last_refused, last_refused_at) = reload;
        let shown = running.map(PolicyInForce::view).unwrap_or_default();
        PolicySnapshot { last_reload, last_refused, last_refused_at, ..shown }
    }
}

impl PolicySource for SharedPolicy {
    /// Builds the view on the first read after a change, outside the lock (10,000 rules take
    /// a while in a debug build): a `set` meanwhile is not held up, and the view built then
    /// is returned but not kept, so the next read shows the newer state.
    fn snapshot(&self) -> Arc<PolicySnapshot> {
        let (running, reload, changes) = {
            let shown = self.0.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(view) = &shown.view {
                return Arc::clone(view);
            }
            let reload = (shown.last_reload.clone(), shown.last_refused.clone(), shown.last_refused_at);
            (shown.running.clone(), reload, shown.changes)
        };
        let view = Arc::new(Shown::build(running.as_deref(), reload));
        let mut shown = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if shown.changes == changes {
            shown.view = Some(Arc::clone(&view));
        }
        view
    }

    fn version(&self) -> Option<String> {
        let shown = self.0.read().unwrap_or_else(PoisonError::into_inner);
        shown.running.as_ref().map(|running| running.version.clone())
    }
}

/// What the API shows of `policy` with the response rules `responses` (the ones the pipeline
/// runs, which a reload may have kept); no version, load time or reload outcome.
pub fn view(policy: &CompiledPolicy, responses: &ResponsePolicy) -> PolicySnapshot {
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
        let snapshot = PolicyInForce::new(Arc::new(policy.clone()), responses).view();
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
