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
//! The datapath looks up the longest prefix for (policy, protocol), and for (policy, ANY)
//! only when the protocol is not one of `proto::FOLDED` (TCP, UDP, ICMP, ICMPv6), so the
//! compiler makes every entry self-contained:
//! - every ANY entry is copied into each folded protocol ("folded"), so one lookup of the
//!   packet's own protocol finds what ANY allows; the ANY entry stays for other protocols;
//! - an entry's port ranges include those of every covering prefix of the same protocol and
//!   of ANY, so the most specific entry the datapath finds answers as the files say (an ANY
//!   rule admits its ports for every protocol; `ports = []` is every port);
//! - folding cannot push an entry past `MAX_PORT_RANGES`: ANY rules take no ports (they admit
//!   every port, or are `inbound`), so a folded copy is the single range 0-65535 and merging
//!   it into an entry leaves that one range;
//! - `inbound` rules allow the device's replies towards the remote on every port (the remote's
//!   source port is ephemeral and the datapath checks destination ports only).
use std::collections::BTreeMap;

use gateway_ebpf::{
    MAX_PORT_RANGES, POLICY_KEY_FIXED_BITS, PolicyKey, PolicyRule, PortRange, maps::POLICY_CAPACITY, proto,
};
use ipnet::IpNet;

use super::{
    classify::Classifier,
    error::{ErrorKind, Location, PolicyError},
    load::{
        ALL_PORTS, ClassId, Defaults, Direction, DnsPattern, Policy, PolicyId, Protocol, ResponseSpec, Rule,
        merge_ranges,
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
    V4 {
        prefix_len: u32,
        key: PolicyKey<4>,
        rule: PolicyRule,
    },
    V6 {
        prefix_len: u32,
        key: PolicyKey<16>,
        rule: PolicyRule,
    },
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
                let same = |known: &&mut DnsRule| {
                    known.policy_id == policy_id && known.pattern == *pattern && known.protocol == rule.protocol
                };
                match dns_rules.iter_mut().find(same) {
                    Some(known) => {
                        let all = known.ports.iter().chain(&ports).map(|range| (*range).into());
                        known.ports = merge_ranges(all.collect()).into_iter().map(Into::into).collect();
                    }
                    None => dns_rules.push(DnsRule {
                        policy_id,
                        pattern: pattern.clone(),
                        protocol: rule.protocol,
                        ports: ports.clone(),
                        at: rule.at.clone(),
                    }),
                }
            }
        }
    }
    let merged = merge(contributions);
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    for entry in merged {
        if entry.ports.len() > MAX_PORT_RANGES {
            let at = entry.at.clone().unwrap_or_else(|| policy_location(policy));
            errors.push(PolicyError::new(at, too_many(policy, &entry)));
        } else {
            rules.push(entry.into_rule());
        }
    }
    for (family, capacity) in [(4u8, POLICY_CAPACITY), (6, POLICY_CAPACITY)] {
        let count =
            rules.iter().filter(|rule| matches!((family, rule.net), (4, IpNet::V4(_)) | (6, IpNet::V6(_)))).count();
        if count > capacity as usize {
            let at = policy_location(policy);
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
            .map(|class| CompiledClass { name: class.name.clone(), class_id: class.id, policy_id: class.policy_id })
            .collect(),
        rules,
        dns_rules,
        verdicts: policy.defaults.into(),
        responses: policy.responses.clone(),
        classifier: Classifier::new(policy),
        source: policy.clone(),
    })
}

/// Where to point problems of the policy as a whole: its first file.
fn policy_location(policy: &Policy) -> Location {
    let file = policy.files.first().cloned().unwrap_or_else(|| std::sync::Arc::new(".".into()));
    Location::file(&file)
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
    // Every ANY entry gets a copy in each folded protocol, so the datapath answers those
    // protocols with one lookup (see the module doc).
    let lengths = PrefixLengths::new(direct.keys());
    let mut copies = Vec::new();
    for ((policy_id, proto_number, net), (ports, at)) in &direct {
        if *proto_number != proto::ANY {
            continue;
        }
        for folded in proto::FOLDED {
            copies.push(((*policy_id, folded, *net), ports.clone(), at.clone()));
        }
    }
    for (key, ports, at) in copies {
        let slot = direct.entry(key).or_default();
        slot.0.extend(ports);
        if slot.1.is_none() {
            slot.1 = at;
        }
    }
    // Inherit from covering (or equal) prefixes of the same protocol or ANY, same policy: at
    // most one lookup per shorter prefix length, so large (DNS-grown) sets stay fast.
    let mut merged = Vec::with_capacity(direct.len());
    for ((policy_id, proto_number, net), (ports, at)) in &direct {
        let mut all = ports.clone();
        let mut take = |key: &Key| {
            if let Some((other_ports, _)) = direct.get(key) {
                all.extend(other_ports.iter().copied());
            }
        };
        if *proto_number != proto::ANY {
            take(&(*policy_id, proto::ANY, *net));
        }
        for outer in lengths.supernets(*policy_id, net) {
            take(&(*policy_id, *proto_number, outer));
            if *proto_number != proto::ANY {
                take(&(*policy_id, proto::ANY, outer));
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

/// Prefix lengths in use per (policy, address family): the only lengths a covering entry
/// can have, so merging looks up a handful of prefixes per entry instead of up to 128.
struct PrefixLengths(BTreeMap<(PolicyId, bool), Vec<u8>>);

impl PrefixLengths {
    fn new<'a>(keys: impl Iterator<Item = &'a (PolicyId, u8, IpNet)>) -> Self {
        let mut lengths: BTreeMap<(PolicyId, bool), Vec<u8>> = BTreeMap::new();
        for (policy_id, _, net) in keys {
            let list = lengths.entry((*policy_id, net.addr().is_ipv4())).or_default();
            if !list.contains(&net.prefix_len()) {
                list.push(net.prefix_len());
            }
        }
        Self(lengths)
    }

    /// The strictly shorter prefixes of `net` that some entry of `policy_id` may have.
    fn supernets(&self, policy_id: PolicyId, net: &IpNet) -> impl Iterator<Item = IpNet> {
        let lengths = self.0.get(&(policy_id, net.addr().is_ipv4())).map_or(&[][..], Vec::as_slice);
        let net = *net;
        lengths
            .iter()
            .filter(move |length| **length < net.prefix_len())
            .filter_map(move |length| IpNet::new(net.addr(), *length).ok().map(|outer| outer.trunc()))
    }
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use gateway_ebpf::{lane, verdict};

    use super::*;
    use crate::policy::load::parse_sources;

    fn compiled(text: &str) -> Result<CompiledPolicy, Vec<PolicyError>> {
        let policy = parse_sources(&[(PathBuf::from("t.toml"), text.to_owned())])?;
        compile(&policy)
    }

    fn entry<'a>(policy: &'a CompiledPolicy, id: u32, proto_number: u8, net: &str) -> &'a CompiledRule {
        let net: IpNet = net.parse().expect("test net");
        policy
            .rules
            .iter()
            .find(|rule| rule.policy_id == PolicyId(id) && rule.proto == proto_number && rule.net == net)
            .unwrap_or_else(|| panic!("no entry {id} {proto_number} {net} in {:#?}", policy.rules))
    }

    fn ports(list: &[(u16, u16)]) -> Vec<PortRangeKey> {
        list.iter().map(|(first, last)| PortRangeKey { first: *first, last: *last }).collect()
    }

    const LANES: &str = r#"
[lanes.onboarding]
[[lanes.onboarding.allow]]
nets = ["10.77.0.1"]
protocol = "udp"
ports = [53, 67]
[lanes.quarantine]
include_update = true
[[lanes.quarantine.allow]]
nets = ["10.77.0.1"]
protocol = "udp"
ports = [53]
[lanes.update]
[[lanes.update.allow]]
nets = ["10.77.0.1"]
protocol = "tcp"
ports = [8444]
[defaults]
quarantine = "drop"
policy_miss = "pass"
"#;

    #[test]
    fn lanes_use_reserved_ids_and_update_folds_into_quarantine_and_classes() {
        let text = format!(
            "{LANES}\n[[class]]\nname = \"cam\"\nid = 5\nupdate_lane = true\n[[class.allow]]\nnets = [\"10.78.0.0/24\"]\nprotocol = \"tcp\"\nports = [443]\n"
        );
        let policy = compiled(&text).expect("valid");
        assert_eq!(entry(&policy, lane::ONBOARDING, proto::UDP, "10.77.0.1/32").ports, ports(&[(53, 53), (67, 67)]));
        assert_eq!(entry(&policy, lane::QUARANTINE, proto::TCP, "10.77.0.1/32").ports, ports(&[(8444, 8444)]));
        let class_id = lane::FIRST_CLASS_POLICY + 5;
        assert_eq!(policy.classes[0].policy_id, PolicyId(class_id));
        assert_eq!(entry(&policy, class_id, proto::TCP, "10.77.0.1/32").ports, ports(&[(8444, 8444)]));
        assert_eq!(entry(&policy, class_id, proto::TCP, "10.78.0.0/24").ports, ports(&[(443, 443)]));
        assert_eq!(policy.verdicts.quarantine, verdict::DROP);
        assert_eq!(policy.verdicts.policy_miss, verdict::PASS);
        assert_eq!(policy.verdicts.malformed, verdict::DROP);
        assert_eq!(policy.rules.len(), 5);
    }

    #[test]
    fn covering_prefixes_lend_their_ports_to_more_specific_entries() {
        let text = r#"
[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.0.0.0/8"]
protocol = "tcp"
ports = [443]
[[class.allow]]
nets = ["10.1.0.0/16"]
protocol = "tcp"
ports = [80]
[[class.allow]]
nets = ["10.1.2.0/24"]
ports = []
protocol = "any"
[[class.allow]]
nets = ["10.2.0.0/16"]
protocol = "udp"
ports = [53]
"#;
        let policy = compiled(text).expect("valid");
        let id = lane::FIRST_CLASS_POLICY + 1;
        // /16 gets the /8's 443: an LPM lookup for 10.1.x.x:443 stops at the /16.
        assert_eq!(entry(&policy, id, proto::TCP, "10.1.0.0/16").ports, ports(&[(80, 80), (443, 443)]));
        // The ANY /24 sits inside TCP entries, so a TCP copy exists that allows everything.
        assert_eq!(entry(&policy, id, proto::TCP, "10.1.2.0/24").ports, ports(&[(0, 65_535)]));
        assert_eq!(entry(&policy, id, proto::ANY, "10.1.2.0/24").ports, ports(&[(0, 65_535)]));
        // UDP /16 is not inside anything UDP or ANY: unchanged, and no TCP leak.
        assert_eq!(entry(&policy, id, proto::UDP, "10.2.0.0/16").ports, ports(&[(53, 53)]));
        assert!(!policy.rules.iter().any(|rule| rule.proto == proto::TCP && rule.net.to_string() == "10.2.0.0/16"));
    }

    #[test]
    fn any_rules_fold_into_every_folded_protocol_admitting_every_port() {
        let text = r#"
[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.9.0.0/16", "2001:db8::/32"]
protocol = "any"
[[class.allow]]
nets = ["10.9.1.0/24"]
protocol = "tcp"
ports = [443]
"#;
        let policy = compiled(text).expect("valid");
        let id = lane::FIRST_CLASS_POLICY + 1;
        let every_port = ports(&[(0, 65_535)]);
        for net in ["10.9.0.0/16", "2001:db8::/32"] {
            // The ANY entry stays (other protocols), and each folded protocol has a copy.
            assert_eq!(entry(&policy, id, proto::ANY, net).ports, every_port);
            for folded in proto::FOLDED {
                assert_eq!(entry(&policy, id, folded, net).ports, every_port, "{net} {folded}");
            }
        }
        // The more specific TCP entry carries its covering ANY /16: every port.
        assert_eq!(entry(&policy, id, proto::TCP, "10.9.1.0/24").ports, every_port);
        assert_eq!(policy.rules.len(), 2 * (1 + proto::FOLDED.len()) + 1);
    }

    #[test]
    fn folding_cannot_overflow_the_port_range_limit_because_any_admits_every_port() {
        // A TCP entry at the limit with an ANY rule inside it: the TCP copy of the ANY /32 is
        // the single range 0-65535 (ANY rules take no ports), the /24 keeps its eight.
        let text = r#"
[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.78.0.0/24"]
protocol = "tcp"
ports = [1, 3, 5, 7, 9, 11, 13, 15]
[[class.allow]]
nets = ["10.78.0.1"]
protocol = "any"
"#;
        let policy = compiled(text).expect("eight ranges and one full range fit");
        let id = lane::FIRST_CLASS_POLICY + 1;
        assert_eq!(entry(&policy, id, proto::TCP, "10.78.0.0/24").ports.len(), MAX_PORT_RANGES);
        assert_eq!(entry(&policy, id, proto::TCP, "10.78.0.1/32").ports, ports(&[(0, 65_535)]));
        assert_eq!(entry(&policy, id, proto::UDP, "10.78.0.1/32").ports, ports(&[(0, 65_535)]));
    }

    #[test]
    fn inbound_rules_allow_replies_on_every_port_and_icmp_follows_the_family() {
        let text = r#"
[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.77.0.20", "2001:db8::20"]
protocol = "tcp"
ports = [554]
direction = "inbound"
[[class.allow]]
nets = ["10.77.0.1", "2001:db8::1"]
protocol = "icmp"
"#;
        let policy = compiled(text).expect("valid");
        let id = lane::FIRST_CLASS_POLICY + 1;
        assert_eq!(entry(&policy, id, proto::TCP, "10.77.0.20/32").ports, ports(&[(0, 65_535)]));
        assert_eq!(entry(&policy, id, proto::TCP, "2001:db8::20/128").ports, ports(&[(0, 65_535)]));
        entry(&policy, id, proto::ICMP, "10.77.0.1/32");
        entry(&policy, id, proto::ICMPV6, "2001:db8::1/128");
    }

    #[test]
    fn too_many_port_ranges_for_one_destination_is_an_error_at_the_rule() {
        let text = r#"
[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.78.0.1"]
protocol = "tcp"
ports = [1, 3, 5, 7, 9]
[[class.allow]]
nets = ["10.78.0.1"]
protocol = "tcp"
ports = [11, 13, 15, 17]
"#;
        let errors = compiled(text).expect_err("nine ranges");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].at.line, errors[0].at.column), (5, 1));
        assert!(matches!(&errors[0].kind, ErrorKind::TooManyPortRanges { count: 9, max: 8, .. }));
        assert!(errors[0].to_string().starts_with("t.toml:5:1: class \"c\": tcp to 10.78.0.1/32 needs 9"));
        // Adjacent ports merge into one range and fit.
        let merged = text.replace("[11, 13, 15, 17]", "[2, 4, 6, 8]");
        assert_eq!(compiled(&merged).expect("one range 1-9").rules[0].ports, ports(&[(1, 9)]));
    }

    #[test]
    fn includes_bring_rules_and_diamonds_do_not_duplicate() {
        let text = r#"
[[class]]
name = "base"
id = 1
[[class.allow]]
nets = ["10.77.0.1"]
protocol = "udp"
ports = [53]
[[class]]
name = "mid-a"
id = 2
include = ["base"]
[[class]]
name = "mid-b"
id = 3
include = ["base"]
[[class]]
name = "leaf"
id = 4
include = ["mid-a", "mid-b"]
"#;
        let policy = compiled(text).expect("valid");
        let leaf = lane::FIRST_CLASS_POLICY + 4;
        assert_eq!(entry(&policy, leaf, proto::UDP, "10.77.0.1/32").ports, ports(&[(53, 53)]));
        assert_eq!(policy.rules.len(), 4);
    }

    #[test]
    fn abi_entries_carry_network_order_ids_and_lpm_prefix_lengths() {
        let rule = CompiledRule {
            policy_id: PolicyId(0x0102_0304),
            proto: proto::TCP,
            net: "10.77.0.0/16".parse().expect("net"),
            ports: ports(&[(80, 80), (443, 443)]),
        };
        match rule.to_abi() {
            AbiEntry::V4 { prefix_len, key, rule } => {
                assert_eq!(prefix_len, POLICY_KEY_FIXED_BITS + 16);
                assert_eq!(key.policy_id, [1, 2, 3, 4]);
                assert_eq!(key.proto, proto::TCP);
                assert_eq!(key.addr, [10, 77, 0, 0]);
                assert_eq!(rule.port_count, 2);
                assert_eq!(rule.ports[1], PortRange { first: 443, last: 443 });
                assert_eq!(rule.ports[2], PortRange::default());
            }
            other => panic!("expected v4, got {other:?}"),
        }
        let v6 = CompiledRule { net: "2001:db8::/32".parse().expect("net"), ..rule };
        assert!(
            matches!(v6.to_abi(), AbiEntry::V6 { prefix_len: 96, key, .. } if key.addr[..4] == [0x20, 0x01, 0x0d, 0xb8])
        );
    }

    #[test]
    fn dynamic_entries_merge_and_overflowing_ones_are_refused() {
        let text = r#"
[[class]]
name = "c"
id = 1
[[class.allow]]
nets = ["10.78.0.0/24"]
protocol = "tcp"
ports = [443]
[[class.allow]]
names = ["api.example.com"]
protocol = "tcp"
ports = [8883]
"#;
        let policy = compiled(text).expect("valid");
        let id = PolicyId(lane::FIRST_CLASS_POLICY + 1);
        let inside = CompiledRule {
            policy_id: id,
            proto: proto::TCP,
            net: "10.78.0.7/32".parse().expect("net"),
            ports: ports(&[(8883, 8883)]),
        };
        let (rules, refused) = policy.rules_with(std::slice::from_ref(&inside));
        assert!(refused.is_empty());
        let merged = rules.iter().find(|rule| rule.net == inside.net).expect("dynamic entry");
        assert_eq!(merged.ports, ports(&[(443, 443), (8883, 8883)]));
        let wide = CompiledRule {
            net: "10.78.0.8/32".parse().expect("net"),
            ports: (0..9).map(|n| PortRangeKey { first: n * 10, last: n * 10 }).collect(),
            ..inside
        };
        let (rules, refused) = policy.rules_with(std::slice::from_ref(&wide));
        assert_eq!(refused.len(), 1);
        assert!(!rules.iter().any(|rule| rule.net == wide.net));
    }

    #[test]
    fn more_entries_than_the_lpm_map_holds_is_an_error() {
        let capacity = POLICY_CAPACITY as usize;
        let nets: Vec<String> =
            (0..=capacity).map(|n| format!("\"10.{}.{}.{}\"", n >> 16, (n >> 8) & 0xff, n & 0xff)).collect();
        let text = format!(
            "[[class]]\nname = \"c\"\nid = 1\n[[class.allow]]\nnets = [{}]\nprotocol = \"tcp\"\n",
            nets.join(",")
        );
        let started = std::time::Instant::now();
        let errors = compiled(&text).expect_err("one entry too many");
        assert_eq!(
            errors.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
            vec![ErrorKind::CapacityExceeded { family: 4, count: capacity + 1, capacity: POLICY_CAPACITY }]
        );
        // Merging is one lookup per prefix length, not quadratic: this stays well under the
        // one-second reload budget even in a debug build.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
