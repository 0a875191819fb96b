//! The datapath's policy entries: `CompiledRule`, one LPM entry per (policy id, protocol,
//! remote prefix) with its port matches (remote port × device port × opener), in
//! `gateway_ebpf`'s ABI terms (`to_abi`), and `merge`, which makes every entry
//! self-contained. Pure.
//!
//! The datapath looks up the longest prefix for (policy, protocol), and for (policy, ANY)
//! only when the protocol is not one of `proto::FOLDED` (TCP, UDP, ICMP, ICMPv6), so `merge`
//! makes every entry answer alone:
//! - every ANY entry is copied into each folded protocol ("folded"), so one lookup of the
//!   packet's own protocol finds what ANY allows; the ANY entry stays for other protocols;
//! - an entry's matches include those of every covering prefix of the same protocol and of
//!   ANY, so the most specific entry the datapath finds answers as the files say (an ANY
//!   rule admits every port for every protocol, for its openers; `ports = []` is every port);
//! - matches are normalised (`merged_matches`): one a wider one covers is dropped, ranges
//!   side by side merge. A folded ANY match admits every port, so it covers every match of
//!   its openers; folding can still push an entry past `MAX_PORT_MATCHES` when the openers
//!   differ (an `inbound` ANY rule over an `outbound` TCP rule), and `compile` says so.
use std::collections::BTreeMap;

use gateway_ebpf::{
    MAX_PORT_MATCHES, POLICY_KEY_FIXED_BITS, PolicyKey, PolicyRule, PortMatch, PortRange, opener, proto,
};
use ipnet::IpNet;

use super::{error::Location, model::PolicyId};
use crate::datapath::maps::AbiEntry;

/// One LPM entry: what `policy_id` allows towards `net` for protocol `proto`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompiledRule {
    pub policy_id: PolicyId,
    /// A `gateway_ebpf::proto` number, `proto::ANY` for every protocol.
    pub proto: u8,
    /// Truncated (no host bits).
    pub net: IpNet,
    /// Normalised (`merged_matches`), 1..=`MAX_PORT_MATCHES`.
    pub matches: Vec<PortMatchKey>,
}

/// `PortRange` with ordering, so rules can be sorted and diffed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRangeKey {
    pub first: u16,
    pub last: u16,
}

impl PortRangeKey {
    pub const ALL: Self = Self { first: 0, last: u16::MAX };

    pub fn contains(self, other: Self) -> bool {
        self.first <= other.first && other.last <= self.last
    }

    /// The one range covering both, when they overlap or touch.
    fn joined(self, other: Self) -> Option<Self> {
        let touch =
            u32::from(self.first) <= u32::from(other.last) + 1 && u32::from(other.first) <= u32::from(self.last) + 1;
        touch.then(|| Self { first: self.first.min(other.first), last: self.last.max(other.last) })
    }
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

/// `PortMatch` with ordering: the remote's port, the device's port, and who may open
/// (`gateway_ebpf::opener` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMatchKey {
    pub remote: PortRangeKey,
    pub device: PortRangeKey,
    pub openers: u8,
}

impl PortMatchKey {
    /// Who may open, for listings: `device`, `remote` or `either`.
    pub fn opened_by(self) -> &'static str {
        match self.openers {
            opener::DEVICE => "device",
            opener::REMOTE => "remote",
            _ => "either",
        }
    }

    /// Whether every packet this admits, `wider` admits too.
    fn within(self, wider: Self) -> bool {
        self.openers & !wider.openers == 0 && wider.remote.contains(self.remote) && wider.device.contains(self.device)
    }

    /// The one match admitting exactly what both admit, when there is one.
    fn joined(self, other: Self) -> Option<Self> {
        if (self.remote, self.device) == (other.remote, other.device) {
            return Some(Self { openers: self.openers | other.openers, ..self });
        }
        if self.openers != other.openers {
            return None;
        }
        if self.device == other.device {
            return self.remote.joined(other.remote).map(|remote| Self { remote, ..self });
        }
        if self.remote == other.remote {
            return self.device.joined(other.device).map(|device| Self { device, ..self });
        }
        None
    }

    fn to_abi(self) -> PortMatch {
        PortMatch { remote: self.remote.into(), device: self.device.into(), openers: self.openers, _pad: [0; 3] }
    }
}

impl std::fmt::Display for PortMatchKey {
    /// `device 0-65535->443-443`: who may open (`device`, `remote` or `either`), then the
    /// device's ports and the remote's, as a packet from the device goes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (device, remote) = (self.device, self.remote);
        write!(f, "{} {}-{}->{}-{}", self.opened_by(), device.first, device.last, remote.first, remote.last)
    }
}

impl CompiledRule {
    /// The LPM prefix length of this entry: policy id and protocol are always fully matched.
    pub fn lpm_prefix_len(&self) -> u32 {
        POLICY_KEY_FIXED_BITS + u32::from(self.net.prefix_len())
    }

    /// The map value. Matches beyond `MAX_PORT_MATCHES` cannot occur: `compile` refuses them.
    pub fn abi_rule(&self) -> PolicyRule {
        let mut rule = PolicyRule::default();
        for (slot, admitted) in rule.matches.iter_mut().zip(&self.matches) {
            *slot = admitted.to_abi();
        }
        rule.match_count = self.matches.len().min(MAX_PORT_MATCHES) as u32;
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

/// An entry with the rule it came from: before `merge`, one rule's (or a DNS answer's)
/// contribution; after, a merged entry before the port-range limit is applied.
#[derive(Clone, Debug)]
pub(super) struct RawEntry {
    pub policy_id: PolicyId,
    pub proto: u8,
    pub net: IpNet,
    pub matches: Vec<PortMatchKey>,
    /// The (first) rule that asked for it directly; `None` for DNS-derived entries.
    pub at: Option<Location>,
}

impl RawEntry {
    pub fn into_rule(self) -> CompiledRule {
        CompiledRule { policy_id: self.policy_id, proto: self.proto, net: self.net, matches: self.matches }
    }
}

impl From<&CompiledRule> for RawEntry {
    /// An entry already compiled (or DNS-derived), merged again with others.
    fn from(rule: &CompiledRule) -> Self {
        Self { policy_id: rule.policy_id, proto: rule.proto, net: rule.net, matches: rule.matches.clone(), at: None }
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

/// `matches` normalised: sorted, without a match another covers, and with matches that
/// differ in one range only, side by side, joined. Admits exactly what `matches` admits.
pub fn merged_matches(matches: impl IntoIterator<Item = PortMatchKey>) -> Vec<PortMatchKey> {
    let mut merged: Vec<PortMatchKey> = matches.into_iter().collect();
    merged.sort();
    merged.dedup();
    // Quadratic in the matches of one entry, which are few (the datapath holds eight).
    let mut changed = true;
    while changed {
        changed = false;
        'pairs: for i in 0..merged.len() {
            for j in 0..merged.len() {
                if i == j {
                    continue;
                }
                if merged[i].within(merged[j]) {
                    merged.remove(i);
                    changed = true;
                    break 'pairs;
                }
                if let Some(joined) = merged[i].joined(merged[j]) {
                    merged[i] = joined;
                    merged.remove(j);
                    changed = true;
                    break 'pairs;
                }
            }
        }
    }
    merged.sort();
    merged
}

/// Groups contributions per key, copies ANY entries into covering protocol entries, and
/// unions covering prefixes' matches into each entry (see the module doc). Result sorted.
pub(super) fn merge(contributions: Vec<RawEntry>) -> Vec<RawEntry> {
    type Key = (PolicyId, u8, IpNet);
    type Direct = BTreeMap<Key, (Vec<PortMatchKey>, Option<Location>)>;
    /// Adds `matches` to the entry at `key`, which keeps the first rule that asked for it.
    fn add(direct: &mut Direct, key: Key, matches: Vec<PortMatchKey>, at: Option<Location>) {
        let slot = direct.entry(key).or_default();
        slot.0.extend(matches);
        if slot.1.is_none() {
            slot.1 = at;
        }
    }
    let mut direct = Direct::new();
    for contribution in contributions {
        let key = (contribution.policy_id, contribution.proto, contribution.net.trunc());
        add(&mut direct, key, contribution.matches, contribution.at);
    }
    // Every ANY entry gets a copy in each folded protocol, so the datapath answers those
    // protocols with one lookup (see the module doc).
    let lengths = PrefixLengths::new(direct.keys());
    let mut copies = Vec::new();
    for ((policy_id, proto_number, net), (matches, at)) in &direct {
        if *proto_number != proto::ANY {
            continue;
        }
        for folded in proto::FOLDED {
            copies.push(((*policy_id, folded, *net), matches.clone(), at.clone()));
        }
    }
    for (key, matches, at) in copies {
        add(&mut direct, key, matches, at);
    }
    // Inherit from covering (or equal) prefixes of the same protocol or ANY, same policy: at
    // most one lookup per shorter prefix length, so large (DNS-grown) sets stay fast.
    let mut merged = Vec::with_capacity(direct.len());
    for ((policy_id, proto_number, net), (matches, at)) in &direct {
        let mut all = matches.clone();
        let mut take = |key: &Key| {
            if let Some((other, _)) = direct.get(key) {
                all.extend(other.iter().copied());
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
        merged.push(RawEntry {
            policy_id: *policy_id,
            proto: *proto_number,
            net: *net,
            matches: merged_matches(all),
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

#[cfg(test)]
pub(super) mod tests {
    use gateway_ebpf::lane;

    use super::*;
    use crate::policy::{CompiledPolicy, check_text};

    /// The policy id of class `c` in `class_c`.
    pub(in crate::policy) const C: u32 = lane::FIRST_CLASS_POLICY + 1;

    /// Policy text of one class `c` (id 1) allowing `rules`, each the keys of one inline table.
    pub(in crate::policy) fn class_c(rules: &[&str]) -> String {
        let allow: String = rules.iter().map(|rule| format!("  {{ {rule} }},\n")).collect();
        format!("[[class]]\nname = \"c\"\nid = 1\nallow = [\n{allow}]\n")
    }

    /// The entry of `policy` for (`id`, `proto_number`, `net`), panicking when there is none.
    pub(in crate::policy) fn entry<'a>(
        policy: &'a CompiledPolicy,
        id: u32,
        proto_number: u8,
        net: &str,
    ) -> &'a CompiledRule {
        let net: IpNet = net.parse().expect("test net");
        policy
            .rules
            .iter()
            .find(|rule| rule.policy_id == PolicyId(id) && rule.proto == proto_number && rule.net == net)
            .unwrap_or_else(|| panic!("no entry {id} {proto_number} {net} in {:#?}", policy.rules))
    }

    /// What an outbound rule to remote ports `list` (from any device port) compiles to.
    pub(in crate::policy) fn outbound(list: &[(u16, u16)]) -> Vec<PortMatchKey> {
        list.iter().map(|(first, last)| matching((*first, *last), (0, u16::MAX), opener::DEVICE)).collect()
    }

    /// One match: remote ports, device ports, `opener` bits.
    pub(in crate::policy) fn matching(remote: (u16, u16), device: (u16, u16), openers: u8) -> PortMatchKey {
        PortMatchKey {
            remote: PortRangeKey { first: remote.0, last: remote.1 },
            device: PortRangeKey { first: device.0, last: device.1 },
            openers,
        }
    }

    #[test]
    fn covering_prefixes_lend_their_ports_to_more_specific_entries() {
        let policy = check_text(&class_c(&[
            r#"nets = ["10.0.0.0/8"], protocol = "tcp", ports = [443]"#,
            r#"nets = ["10.1.0.0/16"], protocol = "tcp", ports = [80]"#,
            r#"nets = ["10.1.2.0/24"], ports = [], protocol = "any""#,
            r#"nets = ["10.2.0.0/16"], protocol = "udp", ports = [53]"#,
        ]));
        // /16 gets the /8's 443: an LPM lookup for 10.1.x.x:443 stops at the /16.
        assert_eq!(entry(&policy, C, proto::TCP, "10.1.0.0/16").matches, outbound(&[(80, 80), (443, 443)]));
        // The ANY /24 sits inside TCP entries, so a TCP copy exists that allows everything.
        assert_eq!(entry(&policy, C, proto::TCP, "10.1.2.0/24").matches, outbound(&[(0, 65_535)]));
        assert_eq!(entry(&policy, C, proto::ANY, "10.1.2.0/24").matches, outbound(&[(0, 65_535)]));
        // UDP /16 is not inside anything UDP or ANY: unchanged, and no TCP leak.
        assert_eq!(entry(&policy, C, proto::UDP, "10.2.0.0/16").matches, outbound(&[(53, 53)]));
        assert!(!policy.rules.iter().any(|rule| rule.proto == proto::TCP && rule.net.to_string() == "10.2.0.0/16"));
    }

    #[test]
    fn any_rules_fold_into_every_folded_protocol_admitting_every_port() {
        let policy = check_text(&class_c(&[
            r#"nets = ["10.9.0.0/16", "2001:db8::/32"], protocol = "any""#,
            r#"nets = ["10.9.1.0/24"], protocol = "tcp", ports = [443]"#,
        ]));
        let every_port = outbound(&[(0, 65_535)]);
        for net in ["10.9.0.0/16", "2001:db8::/32"] {
            // The ANY entry stays (other protocols), and each folded protocol has a copy.
            assert_eq!(entry(&policy, C, proto::ANY, net).matches, every_port);
            for folded in proto::FOLDED {
                assert_eq!(entry(&policy, C, folded, net).matches, every_port, "{net} {folded}");
            }
        }
        // The more specific TCP entry carries its covering ANY /16: every port.
        assert_eq!(entry(&policy, C, proto::TCP, "10.9.1.0/24").matches, every_port);
        assert_eq!(policy.rules.len(), 2 * (1 + proto::FOLDED.len()) + 1);
    }

    #[test]
    fn folding_an_any_rule_of_the_same_opener_cannot_overflow_the_match_limit() {
        // A TCP entry at the limit with an ANY rule of the same opener inside it: the TCP copy
        // of the ANY /32 admits every port and so covers the /24's eight.
        let policy = check_text(&class_c(&[
            r#"nets = ["10.78.0.0/24"], protocol = "tcp", ports = [1, 3, 5, 7, 9, 11, 13, 15]"#,
            r#"nets = ["10.78.0.1"], protocol = "any""#,
        ]));
        assert_eq!(entry(&policy, C, proto::TCP, "10.78.0.0/24").matches.len(), MAX_PORT_MATCHES);
        assert_eq!(entry(&policy, C, proto::TCP, "10.78.0.1/32").matches, outbound(&[(0, 65_535)]));
        assert_eq!(entry(&policy, C, proto::UDP, "10.78.0.1/32").matches, outbound(&[(0, 65_535)]));
    }

    #[test]
    fn abi_entries_carry_network_order_ids_and_lpm_prefix_lengths() {
        let rule = CompiledRule {
            policy_id: PolicyId(0x0102_0304),
            proto: proto::TCP,
            net: "10.77.0.0/16".parse().expect("net"),
            matches: outbound(&[(80, 80), (443, 443)]),
        };
        match rule.to_abi() {
            AbiEntry::V4 { prefix_len, key, rule } => {
                assert_eq!(prefix_len, POLICY_KEY_FIXED_BITS + 16);
                assert_eq!(key.policy_id, [1, 2, 3, 4]);
                assert_eq!(key.proto, proto::TCP);
                assert_eq!(key.addr, [10, 77, 0, 0]);
                assert_eq!(rule.match_count, 2);
                assert_eq!(rule.matches[1].remote, PortRange { first: 443, last: 443 });
                assert_eq!(rule.matches[1].device, PortRange::ALL);
                assert_eq!(rule.matches[1].openers, opener::DEVICE);
                assert_eq!(rule.matches[2], PortMatch::default());
            }
            other => panic!("expected v4, got {other:?}"),
        }
        let v6 = CompiledRule { net: "2001:db8::/32".parse().expect("net"), ..rule };
        assert!(
            matches!(v6.to_abi(), AbiEntry::V6 { prefix_len: 96, key, .. } if key.addr[..4] == [0x20, 0x01, 0x0d, 0xb8])
        );
    }
}

#[cfg(test)]
mod normalising {
    use gateway_ebpf::opener::{DEVICE, EITHER, REMOTE};

    use super::{merged_matches, tests::matching};

    #[test]
    fn covered_matches_go_and_neighbours_join_only_when_one_range_differs() {
        let all = (0, u16::MAX);
        let merged = merged_matches([
            matching((80, 80), all, DEVICE),
            matching((81, 90), all, DEVICE),
            // Same ranges, other opener: one match for both openers.
            matching((443, 443), all, DEVICE),
            matching((443, 443), all, REMOTE),
            // Covered by the joined 80-90.
            matching((85, 85), (1000, 2000), DEVICE),
            // Differs in both ranges: stays apart.
            matching((554, 554), (8000, 8000), REMOTE),
            matching((555, 555), (8001, 8001), REMOTE),
        ]);
        assert_eq!(
            merged,
            vec![
                matching((80, 90), all, DEVICE),
                matching((443, 443), all, EITHER),
                matching((554, 554), (8000, 8000), REMOTE),
                matching((555, 555), (8001, 8001), REMOTE),
            ]
        );
    }
}
