//! Compiles a checked `Policy` into what the datapath enforces: the rules of each policy id
//! as `entries` (merged, within the datapath's limits), the DNS-name rules, the default
//! verdicts and the device → class matcher. Pure: reads a `Policy`, writes nothing;
//! `datapath::maps` syncs the result into the LPM maps.
//!
//! Policy ids: the onboarding lane is `lane::ONBOARDING` (1), the quarantine allow-list
//! `lane::QUARANTINE` (2), and class `id` N gets `lane::FIRST_CLASS_POLICY + N`. The update
//! lane has no id of its own (no datapath state would use it): its rules are folded into the
//! quarantine allow-list when `[lanes.quarantine] include_update = true`, and into every class
//! with `update_lane = true`.
use std::sync::Arc;

use gateway_ebpf::{MAX_PORT_MATCHES, icmp_pair, maps::POLICY_CAPACITY, opener};
use ipnet::IpNet;

use super::{
    classify::Classifier,
    entries::{CompiledRule, PortMatchKey, PortRangeKey, RawEntry, merge, merged_matches, proto_name},
    error::{ErrorKind, Location, PolicyError},
    model::{ClassId, Direction, IcmpMatch, Policy, PolicyId, Protocol, ResponseSpec, Rule},
    values::DnsPattern,
    verdict::Verdicts,
};

/// A class as the device table sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledClass {
    pub name: String,
    pub class_id: ClassId,
    pub policy_id: PolicyId,
}

/// A DNS-name rule, made concrete by `DnsTracker` from the answers devices receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRule {
    pub policy_id: PolicyId,
    pub pattern: DnsPattern,
    pub protocol: Protocol,
    /// What a resolved IPv4 address gets (`port_matches`).
    pub matches_v4: Vec<PortMatchKey>,
    /// What a resolved IPv6 address gets (ICMP replies differ by family).
    pub matches_v6: Vec<PortMatchKey>,
    pub at: Location,
}

impl DnsRule {
    /// What a resolved address in `net` gets.
    pub fn matches_for(&self, net: &IpNet) -> &[PortMatchKey] {
        match net {
            IpNet::V4(_) => &self.matches_v4,
            IpNet::V6(_) => &self.matches_v6,
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

/// Compiles `policy`, or says every reason it cannot be enforced.
pub fn compile(policy: &Policy) -> Result<CompiledPolicy, Vec<PolicyError>> {
    let mut contributions = Vec::new();
    let mut dns_rules = Vec::new();
    for (policy_id, rules) in policy_rule_sets(policy) {
        for rule in rules {
            for net in &rule.nets {
                let matches = port_matches(rule, net);
                // A rule that lets the device send nothing here (an inbound ICMP rule for
                // messages without a reply, a network outside its family) adds no entry.
                if matches.is_empty() {
                    continue;
                }
                contributions.push(RawEntry {
                    policy_id,
                    proto: rule.protocol.number_for(net),
                    net: *net,
                    matches,
                    at: Some(rule.at.clone()),
                });
            }
            let v4 = port_matches(rule, &IpNet::V4(Default::default()));
            let v6 = port_matches(rule, &IpNet::V6(Default::default()));
            for pattern in &rule.names {
                let same = |known: &&mut DnsRule| {
                    known.policy_id == policy_id && known.pattern == *pattern && known.protocol == rule.protocol
                };
                match dns_rules.iter_mut().find(same) {
                    Some(known) => {
                        known.matches_v4 = merged_matches(known.matches_v4.iter().chain(&v4).copied());
                        known.matches_v6 = merged_matches(known.matches_v6.iter().chain(&v6).copied());
                    }
                    None => dns_rules.push(DnsRule {
                        policy_id,
                        pattern: pattern.clone(),
                        protocol: rule.protocol,
                        matches_v4: v4.clone(),
                        matches_v6: v6.clone(),
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
        if entry.matches.len() > MAX_PORT_MATCHES {
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
    let file = policy.files.first().cloned().unwrap_or_else(|| Arc::new(".".into()));
    Location::file(&file)
}

fn too_many(policy: &Policy, entry: &RawEntry) -> ErrorKind {
    ErrorKind::TooManyPortRanges {
        policy: policy_name(policy, entry.policy_id),
        proto: proto_name(entry.proto).into(),
        net: entry.net.to_string(),
        count: entry.matches.len(),
        max: MAX_PORT_MATCHES,
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
        // Includes are acyclic (checked by `checks`); `seen` also stops diamonds repeating.
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

/// What `rule` lets a device send towards `net` (whose family picks ICMP or ICMPv6), as
/// the datapath reads the device's packets: the remote's port is the destination, the
/// device's the source. The opener's `ports` are its destination: the remote's for
/// `outbound`, the device's for `inbound`; `source_ports` the other side. ICMP has no ports:
/// the remote's "port" is the device's message (`type << 8 | code`), the device's own message
/// for `outbound`, the reply to the remote's request for `inbound` (requests without a reply
/// give the device nothing to send). Nothing outside the rule's `family`. Normalised.
pub fn port_matches(rule: &Rule, net: &IpNet) -> Vec<PortMatchKey> {
    if !rule.reaches_family_of(net) {
        return Vec::new();
    }
    let all = [PortRangeKey::ALL];
    let openers: &[u8] = match rule.direction {
        Direction::Outbound => &[opener::DEVICE],
        Direction::Inbound => &[opener::REMOTE],
        Direction::Both => &[opener::DEVICE, opener::REMOTE],
    };
    let service: Vec<PortRangeKey> = rule.ports.iter().map(|range| (*range).into()).collect();
    let source: Vec<PortRangeKey> = rule.source_ports.iter().map(|range| (*range).into()).collect();
    let mut matches = Vec::new();
    for &opened_by in openers {
        let (remote, device): (Vec<PortRangeKey>, &[PortRangeKey]) = match rule.protocol {
            Protocol::Icmp if !rule.icmp.is_empty() => {
                let ip_proto = rule.protocol.number_for(net);
                (icmp_sent_by_device(&rule.icmp, ip_proto, opened_by), &all)
            }
            Protocol::Tcp | Protocol::Udp if opened_by == opener::DEVICE => (service.clone(), &source),
            Protocol::Tcp | Protocol::Udp => (source.clone(), &service),
            Protocol::Icmp | Protocol::Any => (all.to_vec(), &all),
        };
        for remote in &remote {
            for device in device {
                matches.push(PortMatchKey { remote: *remote, device: *device, openers: opened_by });
            }
        }
    }
    merged_matches(matches)
}

/// The `type << 8 | code` ranges of the ICMP messages (`ip_proto`) a device sends under
/// `icmp`: the listed messages when it opens, their replies when the remote does.
fn icmp_sent_by_device(icmp: &[IcmpMatch], ip_proto: u8, opened_by: u8) -> Vec<PortRangeKey> {
    let message = |kind: u8, code: Option<u8>| {
        let base = u16::from(kind) << 8;
        match code {
            Some(code) => PortRangeKey { first: base | u16::from(code), last: base | u16::from(code) },
            None => PortRangeKey { first: base, last: base | 0xff },
        }
    };
    icmp.iter()
        .filter_map(|wanted| {
            if opened_by == opener::DEVICE {
                return Some(message(wanted.kind, wanted.code));
            }
            // Only a request has a reply to send.
            match icmp_pair(ip_proto, wanted.kind) {
                Some((request, reply)) if request == wanted.kind => Some(message(reply, wanted.code)),
                _ => None,
            }
        })
        .collect()
}

impl CompiledPolicy {
    /// The class named `name`.
    pub fn class(&self, name: &str) -> Option<&CompiledClass> {
        self.classes.iter().find(|class| class.name == name)
    }

    /// The entries to enforce with DNS-derived `dynamic` entries (from `DnsTracker::active`)
    /// merged in. A dynamic entry that would push a destination past `MAX_PORT_MATCHES` is
    /// left out (the static entry, if any, stays as compiled); the second value lists those.
    /// One that admits nothing (no matches) adds no entry.
    pub fn rules_with(&self, dynamic: &[CompiledRule]) -> (Vec<CompiledRule>, Vec<CompiledRule>) {
        let dynamic: Vec<&CompiledRule> = dynamic.iter().filter(|rule| !rule.matches.is_empty()).collect();
        if dynamic.is_empty() {
            return (self.rules.clone(), Vec::new());
        }
        let contributions = self.rules.iter().chain(dynamic).map(RawEntry::from).collect();
        let mut rules = Vec::new();
        let mut refused = Vec::new();
        for entry in merge(contributions) {
            if entry.matches.len() <= MAX_PORT_MATCHES {
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

    use gateway_ebpf::{lane, opener, proto, verdict};

    use super::*;
    use crate::policy::{
        check_text,
        entries::tests::{C, class_c, entry, matching, outbound},
        load::parse_sources,
    };

    fn compiled(text: &str) -> Result<CompiledPolicy, Vec<PolicyError>> {
        let policy = parse_sources(&[(PathBuf::from("t.toml"), text.to_owned())])?;
        compile(&policy)
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
        let policy = check_text(&text);
        assert_eq!(
            entry(&policy, lane::ONBOARDING, proto::UDP, "10.77.0.1/32").matches,
            outbound(&[(53, 53), (67, 67)])
        );
        assert_eq!(entry(&policy, lane::QUARANTINE, proto::TCP, "10.77.0.1/32").matches, outbound(&[(8444, 8444)]));
        let class_id = lane::FIRST_CLASS_POLICY + 5;
        assert_eq!(policy.classes[0].policy_id, PolicyId(class_id));
        assert_eq!(entry(&policy, class_id, proto::TCP, "10.77.0.1/32").matches, outbound(&[(8444, 8444)]));
        assert_eq!(entry(&policy, class_id, proto::TCP, "10.78.0.0/24").matches, outbound(&[(443, 443)]));
        assert_eq!(policy.verdicts.quarantine, verdict::DROP);
        assert_eq!(policy.verdicts.policy_miss, verdict::PASS);
        assert_eq!(policy.verdicts.malformed, verdict::DROP);
        assert_eq!(policy.rules.len(), 5);
    }

    #[test]
    fn inbound_rules_admit_the_devices_own_port_for_connections_the_remote_opens() {
        let policy = check_text(&class_c(&[
            r#"nets = ["10.77.0.20", "2001:db8::20"], protocol = "tcp", ports = [554], direction = "inbound""#,
            r#"nets = ["10.77.0.21"], protocol = "udp", ports = [5683], source_ports = ["1024-65535"], direction = "both""#,
            r#"nets = ["10.77.0.22"], protocol = "tcp", ports = [443], source_ports = ["40000-40100"]"#,
        ]));
        let all = (0, u16::MAX);
        for net in ["10.77.0.20/32", "2001:db8::20/128"] {
            assert_eq!(entry(&policy, C, proto::TCP, net).matches, vec![matching(all, (554, 554), opener::REMOTE)]);
        }
        // `both`: each opener's destination is the service port, its source the other.
        assert_eq!(
            entry(&policy, C, proto::UDP, "10.77.0.21/32").matches,
            vec![
                matching((1024, 65_535), (5683, 5683), opener::REMOTE),
                matching((5683, 5683), (1024, 65_535), opener::DEVICE)
            ]
        );
        assert_eq!(
            entry(&policy, C, proto::TCP, "10.77.0.22/32").matches,
            vec![matching((443, 443), (40_000, 40_100), opener::DEVICE)]
        );
    }

    #[test]
    fn icmp_types_become_the_devices_messages_and_follow_the_family() {
        let policy = check_text(&class_c(&[
            r#"nets = ["10.77.0.1", "2001:db8::1"], protocol = "icmp""#,
            r#"nets = ["10.77.0.2"], protocol = "icmp", icmp_types = ["8/0", "3"]"#,
            r#"nets = ["10.77.0.3", "2001:db8::3"], protocol = "icmp", icmp_types = ["8", "128", "3"], direction = "inbound""#,
            r#"nets = ["10.77.0.4"], protocol = "icmp", icmp_types = ["11"], direction = "inbound""#,
        ]));
        let all = (0, u16::MAX);
        assert_eq!(entry(&policy, C, proto::ICMP, "10.77.0.1/32").matches, vec![matching(all, all, opener::DEVICE)]);
        assert_eq!(
            entry(&policy, C, proto::ICMPV6, "2001:db8::1/128").matches,
            vec![matching(all, all, opener::DEVICE)]
        );
        // Outbound: the device's own messages; type 3 with any code.
        assert_eq!(
            entry(&policy, C, proto::ICMP, "10.77.0.2/32").matches,
            vec![matching((0x0300, 0x03ff), all, opener::DEVICE), matching((0x0800, 0x0800), all, opener::DEVICE)]
        );
        // Inbound: the reply to the remote's request, by family (8 → 0 for ICMP, 128 → 129 for
        // ICMPv6); a message without a reply (3, and 8 in ICMPv6) lets the device send nothing.
        assert_eq!(
            entry(&policy, C, proto::ICMP, "10.77.0.3/32").matches,
            vec![matching((0, 0xff), all, opener::REMOTE)]
        );
        assert_eq!(
            entry(&policy, C, proto::ICMPV6, "2001:db8::3/128").matches,
            vec![matching((0x8100, 0x81ff), all, opener::REMOTE)]
        );
        assert!(!policy.rules.iter().any(|rule| rule.net.to_string() == "10.77.0.4/32"));
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
        assert_eq!(compiled(&merged).expect("one range 1-9").rules[0].matches, outbound(&[(1, 9)]));
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
        let policy = check_text(text);
        let leaf = lane::FIRST_CLASS_POLICY + 4;
        assert_eq!(entry(&policy, leaf, proto::UDP, "10.77.0.1/32").matches, outbound(&[(53, 53)]));
        assert_eq!(policy.rules.len(), 4);
    }

    #[test]
    fn dynamic_entries_merge_and_overflowing_ones_are_refused() {
        let policy = check_text(&class_c(&[
            r#"nets = ["10.78.0.0/24"], protocol = "tcp", ports = [443]"#,
            r#"names = ["api.example.com"], protocol = "tcp", ports = [8883]"#,
        ]));
        let inside = CompiledRule {
            policy_id: PolicyId(C),
            proto: proto::TCP,
            net: "10.78.0.7/32".parse().expect("net"),
            matches: outbound(&[(8883, 8883)]),
        };
        let (rules, refused) = policy.rules_with(std::slice::from_ref(&inside));
        assert!(refused.is_empty());
        let merged = rules.iter().find(|rule| rule.net == inside.net).expect("dynamic entry");
        assert_eq!(merged.matches, outbound(&[(443, 443), (8883, 8883)]));
        let wide = CompiledRule {
            net: "10.78.0.8/32".parse().expect("net"),
            matches: outbound(&(0..9).map(|n| (n * 10, n * 10)).collect::<Vec<_>>()),
            ..inside
        };
        let (rules, refused) = policy.rules_with(std::slice::from_ref(&wide));
        assert_eq!(refused.len(), 1);
        assert!(!rules.iter().any(|rule| rule.net == wide.net));
    }

    #[test]
    fn a_rule_kept_to_one_family_reaches_only_that_family() {
        let policy = check_text(&class_c(&[
            r#"nets = ["0.0.0.0/0"], protocol = "tcp", ports = [443], family = "ipv4""#,
            r#"names = ["api.example.com"], protocol = "tcp", ports = [8883], family = "ipv6""#,
        ]));
        assert_eq!(policy.rules.len(), 1);
        let rule = &policy.source.classes[0].rules[0];
        assert!(port_matches(rule, &"2001:db8::/32".parse().expect("net")).is_empty());
        assert_eq!(port_matches(rule, &"10.0.0.0/8".parse().expect("net")), outbound(&[(443, 443)]));
        // The name opens its AAAA answers only.
        let dns = &policy.dns_rules[0];
        assert!(dns.matches_v4.is_empty());
        assert_eq!(dns.matches_v6, outbound(&[(8883, 8883)]));
    }

    #[test]
    fn more_entries_than_the_lpm_map_holds_is_an_error() {
        let capacity = POLICY_CAPACITY as usize;
        let nets: Vec<String> =
            (0..=capacity).map(|n| format!("\"10.{}.{}.{}\"", n >> 16, (n >> 8) & 0xff, n & 0xff)).collect();
        let text = class_c(&[&format!("nets = [{}], protocol = \"tcp\"", nets.join(","))]);
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
