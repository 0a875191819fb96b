//! Compiles a checked `Policy` into what the datapath enforces: one entry per (policy id,
//! protocol, destination prefix) with its port ranges, in `gateway_ebpf`'s ABI terms. Pure:
//! reads a `Policy`, writes nothing; `datapath::maps` syncs the result into the LPM maps.
//!
//! Policy ids: the onboarding lane is `lane::ONBOARDING` (1), the quarantine allow-list
//! `lane::QUARANTINE` (2), and class `id` N gets `lane::FIRST_CLASS_POLICY + N`. The update
//! lane has no id of its own (no datapath state would use it): its rules are folded into the
//! quarantine allow-list when `[lanes.quarantine] include_update = true`, and into every class
//! with `update_lane = true`.
//!
//! The datapath is stateless and looks up the longest prefix for (policy, protocol) and for
//! (policy, ANY), so the compiler makes every entry self-contained:
//! - an entry's port ranges include those of every covering prefix of the same protocol and
//!   of ANY, so the most specific entry the datapath finds answers as the files say;
//! - an ANY entry inside a covering protocol-specific entry is copied into that protocol, so a
//!   protocol-specific lookup that stops at the covering entry cannot miss it;
//! - `inbound` rules allow the device's replies towards the remote on every port (the remote's
//!   source port is ephemeral and the datapath checks destination ports only).
use std::collections::BTreeMap;

use gateway_ebpf::{
    MAX_PORT_RANGES, POLICY_KEY_FIXED_BITS, PolicyKey, PolicyRule, PortRange, maps::POLICY_CAPACITY,
    proto,
};
use ipnet::IpNet;

use super::{
    classify::Classifier,
    error::{ErrorKind, Location, PolicyError},
    load::{
        ALL_PORTS, ClassId, Defaults, Direction, DnsPattern, Policy, PolicyId, Protocol,
        ResponseSpec, Rule, merge_ranges,
    },
};

/// A class as the device table sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledClass {
    pub name: String,
    pub class_id: ClassId,
    pub policy_id: PolicyId,
}

/// One LPM entry: what `policy_id` allows towards `net` for protocol `proto`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompiledRule {
    pub policy_id: PolicyId,
    /// A `gateway_ebpf::proto` number, `proto::ANY` for every protocol.
    pub proto: u8,
    /// Truncated (no host bits).
    pub net: IpNet,
    /// Sorted, merged, 1..=`MAX_PORT_RANGES` ranges.
    pub ports: Vec<PortRangeKey>,
}

/// `PortRange` with ordering, so rules can be sorted and diffed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRangeKey {
    pub first: u16,
    pub last: u16,
}

impl From<PortRange> for PortRangeKey {
    fn from(range: PortRange) -> Self {
        Self { first: range.first, last: range.last }
    }
}

impl From<PortRangeKey> for PortRange {
    fn from(range: PortRangeKey) -> Self {
        Self { first: range.first, last: range.last }
    }
}

/// A compiled rule in the ABI's types, ready for `POLICY_V4` or `POLICY_V6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiEntry {
    /// Key for `POLICY_V4` with its LPM prefix length (`POLICY_KEY_FIXED_BITS` + prefix).
    V4 { prefix_len: u32, key: PolicyKey<4>, rule: PolicyRule },
    V6 { prefix_len: u32, key: PolicyKey<16>, rule: PolicyRule },
}

impl CompiledRule {
    /// The LPM prefix length of this entry: policy id and protocol are always fully matched.
    pub fn lpm_prefix_len(&self) -> u32 {
        POLICY_KEY_FIXED_BITS + u32::from(self.net.prefix_len())
    }

    /// The map value. Ranges beyond `MAX_PORT_RANGES` cannot occur: `compile` refuses them.
    pub fn abi_rule(&self) -> PolicyRule {
        let mut rule = PolicyRule::default();
        for (slot, range) in rule.ports.iter_mut().zip(&self.ports) {
            *slot = (*range).into();
        }
        rule.port_count = self.ports.len().min(MAX_PORT_RANGES) as u32;
        rule
    }

    /// Key and value for the map of this entry's family.
    pub fn to_abi(&self) -> AbiEntry {
        let policy_id = self.policy_id.0.to_be_bytes();
        let prefix_len = self.lpm_prefix_len();
        let rule = self.abi_rule();
        match self.net {
            IpNet::V4(net) => AbiEntry::V4 {
                prefix_len,
                key: PolicyKey { policy_id, proto: self.proto, _pad: [0; 3], addr: net.addr().octets() },
                rule,
            },
            IpNet::V6(net) => AbiEntry::V6 {
                prefix_len,
                key: PolicyKey { policy_id, proto: self.proto, _pad: [0; 3], addr: net.addr().octets() },
                rule,
            },
        }
    }
}

/// A DNS-name rule, made concrete by `DnsTracker` from the answers devices receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRule {
    pub policy_id: PolicyId,
    pub pattern: DnsPattern,
    pub protocol: Protocol,
    /// What a resolved address gets (inbound rules already widened to every port).
    pub ports: Vec<PortRangeKey>,
    pub at: Location,
}

/// Default verdicts as `gateway_ebpf::verdict` codes, for `GatewayConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdicts {
    pub malformed: u8,
    pub unknown: u8,
    pub policy_miss: u8,
    pub quarantine: u8,
}

impl From<Defaults> for Verdicts {
    fn from(defaults: Defaults) -> Self {
        Self {
            malformed: defaults.malformed.code(),
            unknown: defaults.unknown_device.code(),
            policy_miss: defaults.policy_miss.code(),
            quarantine: defaults.quarantine.code(),
        }
    }
}

/// Everything the datapath needs from the policy files, plus the device → class matcher.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    /// Sorted by class id.
    pub classes: Vec<CompiledClass>,
    /// Sorted; unique per (policy_id, proto, net).
    pub rules: Vec<CompiledRule>,
    pub dns_rules: Vec<DnsRule>,
    pub verdicts: Verdicts,
    /// `[[response]]` tables, raw, for `crate::respond`.
    pub responses: Vec<ResponseSpec>,
    /// The checked source, for display (`/policies`) and re-checks.
    pub source: Policy,
    pub(super) classifier: Classifier,
}

/// Names a policy id in messages.
fn policy_name(policy: &Policy, id: PolicyId) -> String {
    match id {
        PolicyId::ONBOARDING => "onboarding lane".into(),
        PolicyId::QUARANTINE => "quarantine lane".into(),
        _ => policy
            .classes
            .iter()
            .find(|class| class.policy_id == id)
            .map_or_else(|| format!("policy {}", id.0), |class| format!("class {:?}", class.name)),
    }
}

/// A raw contribution before merging.
#[derive(Clone, Debug)]
pub(super) struct Contribution {
    pub policy_id: PolicyId,
    pub proto: u8,
    pub net: IpNet,
    pub ports: Vec<PortRangeKey>,
    /// The rule that asked for it (None for DNS-derived entries).
    pub at: Option<Location>,
}

/// Compiles `policy`, or says every reason it cannot be enforced.
pub fn compile(policy: &Policy) -> Result<CompiledPolicy, Vec<PolicyError>> {
    let mut contributions = Vec::new();
    let mut dns_rules = Vec::new();
    for (policy_id, rules) in policy_rule_sets(policy) {
        for rule in rules {
            let ports = rule_ports(rule);
            for net in &rule.nets {
                contributions.push(Contribution {
                    policy_id,
                    proto: rule.protocol.number_for(net),
                    net: *net,
                    ports: ports.clone(),
                    at: Some(rule.at.clone()),
                });
            }
            for pattern in &rule.names {
                dns_rules.push(DnsRule {
                    policy_id,
                    pattern: pattern.clone(),
                    protocol: rule.protocol,
                    ports: ports.clone(),
                    at: rule.at.clone(),
                });
            }
        }
    }
    let merged = merge(contributions);
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    for entry in merged {
        if entry.ports.len() > MAX_PORT_RANGES {
            let at = entry.at.clone().unwrap_or_else(|| Location::file(&policy.files[0]));
            errors.push(PolicyError::new(at, too_many(policy, &entry)));
        } else {
            rules.push(entry.into_rule());
        }
    }
    for (family, capacity) in [(4u8, POLICY_CAPACITY), (6, POLICY_CAPACITY)] {
        let count = rules
            .iter()
            .filter(|rule| matches!((family, rule.net), (4, IpNet::V4(_)) | (6, IpNet::V6(_))))
            .count();
        if count > capacity as usize {
            let at = Location::file(&policy.files[0]);
            errors.push(PolicyError::new(at, ErrorKind::CapacityExceeded { family, count, capacity }));
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.at.cmp(&b.at));
        errors.dedup();
        return Err(errors);
    }
    Ok(CompiledPolicy {
        classes: policy
            .classes
            .iter()
            .map(|class| CompiledClass {
                name: class.name.clone(),
                class_id: class.id,
                policy_id: class.policy_id,
            })
            .collect(),
        rules,
        dns_rules,
        verdicts: policy.defaults.into(),
        responses: policy.responses.clone(),
        classifier: Classifier::new(policy),
        source: policy.clone(),
    })
}

fn too_many(policy: &Policy, entry: &Merged) -> ErrorKind {
    ErrorKind::TooManyPortRanges {
        policy: policy_name(policy, entry.policy_id),
        proto: proto_name(entry.proto).into(),
        net: entry.net.to_string(),
        count: entry.ports.len(),
        max: MAX_PORT_RANGES,
    }
}

/// Lower-case protocol names for messages and listings.
pub fn proto_name(number: u8) -> &'static str {
    match number {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        proto::ICMPV6 => "icmpv6",
        proto::ANY => "any",
        _ => "other",
    }
}

/// The rules each policy id gets: lanes, classes with their includes and the update lane.
fn policy_rule_sets(policy: &Policy) -> Vec<(PolicyId, Vec<&Rule>)> {
    let lanes = &policy.lanes;
    let mut sets = vec![(PolicyId::ONBOARDING, lanes.onboarding.rules.iter().collect::<Vec<_>>())];
    let mut quarantine: Vec<&Rule> = lanes.quarantine.rules.iter().collect();
    if lanes.quarantine_includes_update {
        quarantine.extend(&lanes.update.rules);
    }
    sets.push((PolicyId::QUARANTINE, quarantine));
    for class in &policy.classes {
        let mut rules: Vec<&Rule> = Vec::new();
        // Includes are acyclic (checked by `load`); `seen` also stops diamonds repeating.
        let mut seen = vec![class.name.as_str()];
        let mut pending = vec![class];
        while let Some(current) = pending.pop() {
            rules.extend(&current.rules);
            if current.update_lane {
                rules.extend(&lanes.update.rules);
            }
            for name in &current.include {
                if !seen.contains(&name.as_str()) {
                    seen.push(name);
                    if let Some(included) = policy.class(name) {
                        pending.push(included);
                    }
                }
            }
        }
        sets.push((class.policy_id, rules));
    }
    sets
}

/// A rule's ports as the datapath sees them (see the module doc on `inbound`).
fn rule_ports(rule: &Rule) -> Vec<PortRangeKey> {
    match rule.direction {
        Direction::Outbound => rule.ports.iter().map(|range| (*range).into()).collect(),
        Direction::Inbound | Direction::Both => vec![ALL_PORTS.into()],
    }
}

/// One merged entry (before the port-range limit is applied).
#[derive(Clone, Debug)]
pub(super) struct Merged {
    pub policy_id: PolicyId,
    pub proto: u8,
    pub net: IpNet,
    pub ports: Vec<PortRangeKey>,
    /// First rule that contributed directly (None if only DNS answers did).
    pub at: Option<Location>,
}

impl Merged {
    pub fn into_rule(self) -> CompiledRule {
        CompiledRule { policy_id: self.policy_id, proto: self.proto, net: self.net, ports: self.ports }
    }
}

/// Groups contributions per key, copies ANY entries into covering protocol entries, and
/// unions covering prefixes' ports into each entry (see the module doc). Result sorted.
pub(super) fn merge(contributions: Vec<Contribution>) -> Vec<Merged> {
    type Key = (PolicyId, u8, IpNet);
    let mut direct: BTreeMap<Key, (Vec<PortRangeKey>, Option<Location>)> = BTreeMap::new();
    for contribution in contributions {
        let net = contribution.net.trunc();
        let slot = direct.entry((contribution.policy_id, contribution.proto, net)).or_default();
        slot.0.extend(contribution.ports);
        if slot.1.is_none() {
            slot.1 = contribution.at;
        }
    }
    // ANY entries inside a covering specific-protocol entry get a copy in that protocol.
    let mut copies = Vec::new();
    for ((policy_id, proto_number, net), (ports, at)) in &direct {
        if *proto_number != proto::ANY {
            continue;
        }
        for (other_policy, other_proto, other_net) in direct.keys() {
            if other_policy == policy_id
                && *other_proto != proto::ANY
                && other_net.contains(net)
                && !direct.contains_key(&(*policy_id, *other_proto, *net))
            {
                copies.push(((*policy_id, *other_proto, *net), ports.clone(), at.clone()));
            }
        }
    }
    for (key, ports, at) in copies {
        let slot = direct.entry(key).or_default();
        slot.0.extend(ports);
        if slot.1.is_none() {
            slot.1 = at;
        }
    }
    // Inherit from covering prefixes of the same protocol or ANY, same policy. Quadratic per
    // policy, which is fine for the thousands of entries the maps hold.
    let mut merged = Vec::with_capacity(direct.len());
    for ((policy_id, proto_number, net), (ports, at)) in &direct {
        let mut all = ports.clone();
        for ((other_policy, other_proto, other_net), (other_ports, _)) in &direct {
            if other_policy == policy_id
                && (other_proto == proto_number || *other_proto == proto::ANY)
                && other_net != net
                && other_net.contains(net)
            {
                all.extend(other_ports.iter().copied());
            }
        }
        let ranges: Vec<PortRange> = all.into_iter().map(Into::into).collect();
        merged.push(Merged {
            policy_id: *policy_id,
            proto: *proto_number,
            net: *net,
            ports: merge_ranges(ranges).into_iter().map(Into::into).collect(),
            at: at.clone(),
        });
    }
    merged
}

impl CompiledPolicy {
    /// The class named `name`.
    pub fn class(&self, name: &str) -> Option<&CompiledClass> {
        self.classes.iter().find(|class| class.name == name)
    }

    /// The entries to enforce with DNS-derived `dynamic` entries (from `DnsTracker::active`)
    /// merged in. A dynamic entry that would push a destination past `MAX_PORT_RANGES` is
    /// left out (the static entry, if any, stays as compiled); the second value lists those.
    pub fn rules_with(&self, dynamic: &[CompiledRule]) -> (Vec<CompiledRule>, Vec<CompiledRule>) {
        if dynamic.is_empty() {
            return (self.rules.clone(), Vec::new());
        }
        let contributions = self
            .rules
            .iter()
            .map(|rule| Contribution {
                policy_id: rule.policy_id,
                proto: rule.proto,
                net: rule.net,
                ports: rule.ports.clone(),
                at: None,
            })
            .chain(dynamic.iter().map(|rule| Contribution {
                policy_id: rule.policy_id,
                proto: rule.proto,
                net: rule.net,
                ports: rule.ports.clone(),
                at: None,
            }))
            .collect();
        let mut rules = Vec::new();
        let mut refused = Vec::new();
        for entry in merge(contributions) {
            if entry.ports.len() <= MAX_PORT_RANGES {
                rules.push(entry.into_rule());
                continue;
            }
            let key = (entry.policy_id, entry.proto, entry.net);
            match self.rules.iter().find(|rule| (rule.policy_id, rule.proto, rule.net) == key) {
                Some(original) => rules.push(original.clone()),
                None => refused.push(entry.into_rule()),
            }
        }
        (rules, refused)
    }
}
