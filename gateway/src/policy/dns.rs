//! Keeps DNS-name rules true: follows the DNS answers devices receive and turns the addresses
//! of allowed names into /32 and /128 entries that live as long as the answer's TTL (clamped
//! to `DNS_TTL_FLOOR..=DNS_TTL_CEILING`), so CDN-backed names keep working as their addresses
//! move. Reads DNS response messages (parsed by `hickory-proto`) and the compiled DNS rules;
//! writes nothing: `active` lists the entries to merge with `CompiledPolicy::rules_with`.
//!
//! Feed it only responses that reached a device from upstream (the WAN program's DNS samples
//! towards the device), never DNS-looking packets a device sent: a device forging an answer
//! would otherwise open its own class's rules to any address. Whoever answers DNS for a
//! device decides which addresses its DNS-name rules open, as it decides where the device
//! connects. Answers truncated by the datapath's sample size are refused as malformed.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{DNSClass, RData},
};
use ipnet::IpNet;

use super::{
    compile::{CompiledPolicy, DnsRule},
    entries::CompiledRule,
    model::PolicyId,
};
use crate::device::Access;

/// Shortest life of a DNS-derived entry: a device usually connects a moment after its answer
/// arrives, and a TTL of 0-5 s (common on CDNs) must not close the door before it does.
pub const DNS_TTL_FLOOR: Duration = Duration::from_secs(30);
/// Longest life: stale addresses must age out even when a resolver hands out day-long TTLs.
pub const DNS_TTL_CEILING: Duration = Duration::from_secs(3600);
/// Most DNS-derived addresses tracked at once, so answers cannot grow memory (or the LPM
/// maps) without bound; further answers are ignored until entries expire.
pub const MAX_DNS_ENTRIES: usize = 8192;
/// Longest CNAME chain followed (resolvers rarely return more than 3-4 links).
pub const MAX_CNAME_CHAIN: usize = 8;

/// The policies the datapath checks for a device in state `access` whose class policy is
/// `class_policy` (as `gateway-ebpf`'s `policy::from_device` does): enrolled devices have
/// their class and the onboarding lane, quarantined ones the quarantine lane, unknown and
/// enrolling ones the onboarding lane, blocked ones nothing.
pub fn policies_in_force(access: Access, class_policy: PolicyId) -> Vec<PolicyId> {
    match access {
        Access::Enrolled => vec![class_policy, PolicyId::ONBOARDING],
        Access::Quarantined => vec![PolicyId::QUARANTINE],
        Access::Unknown | Access::Onboarding => vec![PolicyId::ONBOARDING],
        Access::Blocked => Vec::new(),
    }
}

/// Why a DNS message was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// Not a well-formed DNS message.
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    /// A query, not a response.
    #[error("DNS message is not a response")]
    NotAResponse,
}

/// What one DNS response changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsUpdate {
    /// New entries (the maps must be resynced when this is not empty).
    pub added: Vec<DnsBinding>,
    /// Entries whose expiry moved later.
    pub refreshed: usize,
    /// Addresses ignored because `MAX_DNS_ENTRIES` was reached.
    pub dropped: usize,
}

/// A name's address, allowed by a DNS rule until `expires`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsBinding {
    /// The name the rule matched (the start of the CNAME chain).
    pub name: String,
    pub rule: CompiledRule,
    pub expires: Instant,
}

#[derive(Clone, Debug)]
struct Tracked {
    name: String,
    expires: Instant,
}

/// Follows DNS answers for the policy's DNS-name rules. A sync core: the caller feeds
/// responses and calls `tick` when `next_expiry` passes.
#[derive(Debug, Default)]
pub struct DnsTracker {
    rules: Vec<DnsRule>,
    /// (index into `rules`, address) → name and expiry.
    entries: HashMap<(usize, IpAddr), Tracked>,
}

impl DnsTracker {
    pub fn new(policy: &CompiledPolicy) -> Self {
        Self { rules: policy.dns_rules.clone(), entries: HashMap::new() }
    }

    /// Switches to a reloaded policy: entries whose rule is unchanged (same policy id, name,
    /// protocol and port matches) are kept, the rest dropped.
    pub fn set_policy(&mut self, policy: &CompiledPolicy) {
        let old = std::mem::take(&mut self.entries);
        let old_rules = std::mem::replace(&mut self.rules, policy.dns_rules.clone());
        for ((index, addr), tracked) in old {
            let before = &old_rules[index];
            let same = |rule: &DnsRule| {
                rule.policy_id == before.policy_id
                    && rule.pattern == before.pattern
                    && rule.protocol == before.protocol
                    && (&rule.matches_v4, &rule.matches_v6) == (&before.matches_v4, &before.matches_v6)
            };
            if let Some(new_index) = self.rules.iter().position(same) {
                self.entries.insert((new_index, addr), tracked);
            }
        }
    }

    /// Reads one DNS response received by a device and records the addresses of the names
    /// that the DNS rules of `policies` allow: the policies in force for that device
    /// (`policies_in_force`). Entries belong to the policy, so every device of the class
    /// benefits, as the datapath's per-policy maps require.
    pub fn observe(&mut self, policies: &[PolicyId], message: &[u8], now: Instant) -> Result<DnsUpdate, DnsError> {
        let message = Message::from_vec(message).map_err(|error| DnsError::Malformed(error.to_string()))?;
        if message.message_type() != MessageType::Response {
            return Err(DnsError::NotAResponse);
        }
        let mut update = DnsUpdate::default();
        if message.response_code() != ResponseCode::NoError {
            return Ok(update);
        }
        let answers = Answers::from_message(&message);
        for index in 0..self.rules.len() {
            if !policies.contains(&self.rules[index].policy_id) {
                continue;
            }
            for start in &answers.names {
                if !self.rules[index].pattern.matches(start) {
                    continue;
                }
                for (addr, ttl) in answers.resolve(start) {
                    self.record(index, start, addr, ttl, now, &mut update);
                }
            }
        }
        Ok(update)
    }

    fn record(&mut self, index: usize, name: &str, addr: IpAddr, ttl: u32, now: Instant, update: &mut DnsUpdate) {
        let life = Duration::from_secs(u64::from(ttl)).clamp(DNS_TTL_FLOOR, DNS_TTL_CEILING);
        let expires = now + life;
        if let Some(tracked) = self.entries.get_mut(&(index, addr)) {
            if expires > tracked.expires {
                tracked.expires = expires;
                update.refreshed += 1;
            }
            return;
        }
        if self.entries.len() >= MAX_DNS_ENTRIES {
            update.dropped += 1;
            return;
        }
        self.entries.insert((index, addr), Tracked { name: name.to_owned(), expires });
        update.added.push(DnsBinding { name: name.to_owned(), rule: self.rule_for(index, addr), expires });
    }

    fn rule_for(&self, index: usize, addr: IpAddr) -> CompiledRule {
        let rule = &self.rules[index];
        let net = IpNet::from(addr);
        CompiledRule {
            policy_id: rule.policy_id,
            proto: rule.protocol.number_for(&net),
            net,
            matches: rule.matches_for(&net).to_vec(),
        }
    }

    /// Drops entries whose time has come and returns what they allowed (the maps must be
    /// resynced when this is not empty).
    pub fn tick(&mut self, now: Instant) -> Vec<DnsBinding> {
        let expired: Vec<(usize, IpAddr)> =
            self.entries.iter().filter(|(_, tracked)| tracked.expires <= now).map(|(key, _)| *key).collect();
        let mut gone = Vec::with_capacity(expired.len());
        for key in expired {
            if let Some(tracked) = self.entries.remove(&key) {
                gone.push(DnsBinding {
                    name: tracked.name,
                    rule: self.rule_for(key.0, key.1),
                    expires: tracked.expires,
                });
            }
        }
        gone
    }

    /// When `tick` next has something to do.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().map(|tracked| tracked.expires).min()
    }

    /// Every live DNS-derived entry, sorted, one per (policy, protocol, address) and rule.
    pub fn active(&self) -> Vec<CompiledRule> {
        let mut rules: Vec<CompiledRule> =
            self.entries.keys().map(|(index, addr)| self.rule_for(*index, *addr)).collect();
        rules.sort();
        rules.dedup();
        rules
    }

    /// Number of tracked (rule, address) pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The answer section of one response, indexed by owner name (lower-case, no trailing dot).
struct Answers {
    /// Question names and answer owner names: where a rule's match may start.
    names: HashSet<String>,
    cnames: HashMap<String, (String, u32)>,
    addresses: HashMap<String, Vec<(IpAddr, u32)>>,
}

impl Answers {
    fn from_message(message: &Message) -> Self {
        let mut answers = Self { names: HashSet::new(), cnames: HashMap::new(), addresses: HashMap::new() };
        for query in message.queries() {
            answers.names.insert(canonical(&query.name().to_ascii()));
        }
        for record in message.answers() {
            if record.dns_class() != DNSClass::IN {
                continue;
            }
            let owner = canonical(&record.name().to_ascii());
            match record.data() {
                RData::A(a) => {
                    answers.addresses.entry(owner.clone()).or_default().push((IpAddr::V4(a.0), record.ttl()))
                }
                RData::AAAA(aaaa) => {
                    answers.addresses.entry(owner.clone()).or_default().push((IpAddr::V6(aaaa.0), record.ttl()))
                }
                RData::CNAME(target) => {
                    answers.cnames.insert(owner.clone(), (canonical(&target.0.to_ascii()), record.ttl()));
                }
                _ => continue,
            }
            answers.names.insert(owner);
        }
        answers
    }

    /// Addresses `start` resolves to through at most `MAX_CNAME_CHAIN` CNAMEs, each with the
    /// smallest TTL along its chain (the binding is only as fresh as its weakest link).
    fn resolve(&self, start: &str) -> Vec<(IpAddr, u32)> {
        let mut found = Vec::new();
        let mut name = start.to_owned();
        let mut ttl = u32::MAX;
        let mut visited = HashSet::new();
        for _ in 0..=MAX_CNAME_CHAIN {
            if !visited.insert(name.clone()) {
                break;
            }
            for (addr, record_ttl) in self.addresses.get(&name).into_iter().flatten() {
                found.push((*addr, ttl.min(*record_ttl)));
            }
            match self.cnames.get(&name) {
                Some((target, link_ttl)) => {
                    ttl = ttl.min(*link_ttl);
                    name = target.clone();
                }
                None => break,
            }
        }
        found
    }
}

fn canonical(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use gateway_ebpf::{lane, proto};
    use hickory_proto::{
        op::Query,
        rr::{Name, Record as WireRecord, RecordType, rdata},
    };

    use super::*;
    use crate::policy::{check_text, entries::tests::outbound};

    const POLICY: &str = r#"
[[class]]
name = "camera"
id = 10
[[class.allow]]
names = ["upload.camera.example.com", "*.cdn.example.net"]
protocol = "tcp"
ports = [443]
[[class]]
name = "plug"
id = 11
[[class.allow]]
names = ["plug.example.org"]
protocol = "icmp"
"#;

    const CAMERA: PolicyId = PolicyId(lane::FIRST_CLASS_POLICY + 10);
    const PLUG: PolicyId = PolicyId(lane::FIRST_CLASS_POLICY + 11);

    enum Record<'a> {
        A(&'a str, u32, [u8; 4]),
        Aaaa(&'a str, u32, Ipv6Addr),
        Cname(&'a str, u32, &'a str),
    }

    /// A DNS response on the wire, built by hickory-proto.
    fn response(question: &str, records: &[Record<'_>]) -> Vec<u8> {
        let name = |text: &str| Name::from_ascii(text).expect("valid test name");
        let mut message = Message::new();
        message.set_id(0x1234).set_message_type(MessageType::Response);
        message.add_query(Query::query(name(question), RecordType::A));
        for record in records {
            let record = match record {
                Record::A(owner, ttl, addr) => {
                    WireRecord::from_rdata(name(owner), *ttl, RData::A(rdata::A(Ipv4Addr::from(*addr))))
                }
                Record::Aaaa(owner, ttl, addr) => {
                    WireRecord::from_rdata(name(owner), *ttl, RData::AAAA(rdata::AAAA(*addr)))
                }
                Record::Cname(owner, ttl, target) => {
                    WireRecord::from_rdata(name(owner), *ttl, RData::CNAME(rdata::CNAME(name(target))))
                }
            };
            message.add_answer(record);
        }
        message.to_vec().expect("valid test message")
    }

    #[test]
    fn cname_chain_to_a_cdn_opens_the_final_addresses_for_the_shortest_ttl() {
        let mut tracker = DnsTracker::new(&check_text(POLICY));
        let now = Instant::now();
        let message = response(
            "upload.camera.example.com",
            &[
                Record::Cname("upload.camera.example.com", 300, "upload.camera.example.com.edge.cdnprovider.test"),
                Record::Cname("upload.camera.example.com.edge.cdnprovider.test", 120, "e17.cdnprovider.test"),
                Record::A("e17.cdnprovider.test", 600, [10, 78, 1, 17]),
                Record::Aaaa("e17.cdnprovider.test", 600, "2001:db8:78::17".parse().expect("addr")),
            ],
        );
        let update = tracker.observe(&[CAMERA], &message, now).expect("response");
        assert_eq!(update.added.len(), 2, "{update:?}");
        let v4 = &update.added.iter().find(|b| b.rule.net.addr().is_ipv4()).expect("v4").rule;
        assert_eq!(v4.net, "10.78.1.17/32".parse::<IpNet>().expect("net"));
        assert_eq!((v4.policy_id, v4.proto), (CAMERA, proto::TCP));
        assert_eq!(v4.matches, outbound(&[(443, 443)]));
        assert!(update.added.iter().all(|b| b.expires == now + Duration::from_secs(120)));
        assert_eq!(update.added[0].name, "upload.camera.example.com");
        assert_eq!(tracker.active().len(), 2);
        // The same answer again refreshes nothing new.
        let again = tracker.observe(&[CAMERA], &message, now).expect("response");
        assert!(again.added.is_empty());
    }

    #[test]
    fn entries_expire_after_their_ttl_and_are_refreshed_by_new_answers() {
        let mut tracker = DnsTracker::new(&check_text(POLICY));
        let start = Instant::now();
        let message = response("img.cdn.example.net", &[Record::A("img.cdn.example.net", 90, [10, 78, 2, 2])]);
        tracker.observe(&[CAMERA], &message, start).expect("response");
        assert_eq!(tracker.next_expiry(), Some(start + Duration::from_secs(90)));
        assert!(tracker.tick(start + Duration::from_secs(89)).is_empty());
        let refreshed = tracker.observe(&[CAMERA], &message, start + Duration::from_secs(60)).expect("response");
        assert_eq!(refreshed.refreshed, 1);
        assert!(tracker.tick(start + Duration::from_secs(120)).is_empty());
        let gone = tracker.tick(start + Duration::from_secs(150));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].rule.net, "10.78.2.2/32".parse::<IpNet>().expect("net"));
        assert!(tracker.is_empty());
    }

    #[test]
    fn ttl_is_clamped_between_floor_and_ceiling() {
        let mut tracker = DnsTracker::new(&check_text(POLICY));
        let now = Instant::now();
        let message = response(
            "a.cdn.example.net",
            &[
                Record::A("a.cdn.example.net", 0, [10, 78, 3, 1]),
                Record::A("b.cdn.example.net", 604_800, [10, 78, 3, 2]),
            ],
        );
        let update = tracker.observe(&[CAMERA], &message, now).expect("response");
        let life = |addr: [u8; 4]| {
            let net = IpNet::from(IpAddr::from(addr));
            update.added.iter().find(|b| b.rule.net == net).map(|b| b.expires - now)
        };
        assert_eq!(life([10, 78, 3, 1]), Some(DNS_TTL_FLOOR));
        assert_eq!(life([10, 78, 3, 2]), Some(DNS_TTL_CEILING));
    }

    #[test]
    fn names_outside_the_rules_or_another_policy_open_nothing() {
        let mut tracker = DnsTracker::new(&check_text(POLICY));
        let now = Instant::now();
        let other = response("evil.example.com", &[Record::A("evil.example.com", 300, [10, 78, 9, 9])]);
        assert!(tracker.observe(&[CAMERA], &other, now).expect("response").added.is_empty());
        // Only strictly below the wildcard.
        let apex = response("cdn.example.net", &[Record::A("cdn.example.net", 300, [10, 78, 9, 8])]);
        assert!(tracker.observe(&[CAMERA], &apex, now).expect("response").added.is_empty());
        // The plug's name seen by a camera does not open it for cameras (nor for plugs).
        let plug = response("plug.example.org", &[Record::A("plug.example.org", 300, [10, 78, 9, 7])]);
        assert!(tracker.observe(&[CAMERA], &plug, now).expect("response").added.is_empty());
        let for_plug = tracker.observe(&[PLUG], &plug, now).expect("response");
        assert_eq!(for_plug.added.len(), 1);
        assert_eq!(for_plug.added[0].rule.proto, proto::ICMP);
        // A CNAME pointing *to* an allowed name does not allow the alias's owner addresses.
        let alias = response(
            "evil.example.com",
            &[
                Record::Cname("evil.example.com", 300, "x.cdn.example.net"),
                Record::A("evil.example.com", 300, [10, 78, 9, 6]),
            ],
        );
        let update = tracker.observe(&[CAMERA], &alias, now).expect("response");
        assert!(update.added.iter().all(|b| b.rule.net.addr() != IpAddr::from([10, 78, 9, 6])), "{update:?}");
    }

    #[test]
    fn queries_and_garbage_are_refused() {
        let mut tracker = DnsTracker::new(&check_text(POLICY));
        let mut query = Message::new();
        query.set_id(7).add_query(Query::query(Name::from_ascii("upload.camera.example.com").unwrap(), RecordType::A));
        let bytes = query.to_vec().expect("query");
        assert_eq!(tracker.observe(&[CAMERA], &bytes, Instant::now()), Err(DnsError::NotAResponse));
        assert!(matches!(tracker.observe(&[CAMERA], &[1, 2, 3], Instant::now()), Err(DnsError::Malformed(_))));
    }

    #[test]
    fn reload_keeps_entries_of_unchanged_rules_only() {
        let mut tracker = DnsTracker::new(&check_text(POLICY));
        let now = Instant::now();
        let cam = response("upload.camera.example.com", &[Record::A("upload.camera.example.com", 300, [10, 78, 4, 1])]);
        let plug = response("plug.example.org", &[Record::A("plug.example.org", 300, [10, 78, 4, 2])]);
        tracker.observe(&[CAMERA], &cam, now).expect("response");
        tracker.observe(&[PLUG], &plug, now).expect("response");
        let changed = POLICY.replace("protocol = \"icmp\"", "protocol = \"udp\"");
        tracker.set_policy(&check_text(&changed));
        let active = tracker.active();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].policy_id, CAMERA);
    }

    #[test]
    fn truncated_answers_are_refused_as_malformed() {
        let mut tracker = DnsTracker::new(&check_text(POLICY));
        let message =
            response("upload.camera.example.com", &[Record::A("upload.camera.example.com", 300, [10, 78, 5, 1])]);
        let cut = &message[..message.len() - 2];
        assert!(matches!(tracker.observe(&[CAMERA], cut, Instant::now()), Err(DnsError::Malformed(_))));
        assert!(tracker.is_empty());
    }

    #[test]
    fn policies_in_force_follow_the_datapath_states() {
        assert_eq!(policies_in_force(Access::Enrolled, CAMERA), vec![CAMERA, PolicyId::ONBOARDING]);
        assert_eq!(policies_in_force(Access::Quarantined, CAMERA), vec![PolicyId::QUARANTINE]);
        assert_eq!(policies_in_force(Access::Unknown, CAMERA), vec![PolicyId::ONBOARDING]);
        assert!(policies_in_force(Access::Blocked, CAMERA).is_empty());
    }

    #[test]
    fn shipped_camera_policy_gains_its_cdn_address_until_the_ttl_runs_out() {
        let compiled =
            crate::policy::check(&[concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")], crate::policy::no_extension)
                .expect("shipped policies");
        let camera = compiled.class("camera").expect("camera").policy_id;
        let mut tracker = DnsTracker::new(&compiled);
        let now = Instant::now();
        let message = response(
            "upload.camera.example.com",
            &[
                Record::Cname("upload.camera.example.com", 600, "edge7.cdn.camera.example.net"),
                Record::A("edge7.cdn.camera.example.net", 45, [10, 78, 7, 7]),
            ],
        );
        let policies = policies_in_force(Access::Enrolled, camera);
        let update = tracker.observe(&policies, &message, now).expect("response");
        // Both the name and the CDN wildcard allow it; the two bindings make one entry.
        assert_eq!(update.added.len(), 2);
        assert_eq!(tracker.active().len(), 1);
        let (rules, refused) = compiled.rules_with(&tracker.active());
        assert!(refused.is_empty());
        let host: IpNet = "10.78.7.7/32".parse().expect("net");
        let entry = rules.iter().find(|rule| rule.net == host).expect("DNS-derived entry");
        assert_eq!((entry.policy_id, entry.proto), (camera, proto::TCP));
        assert_eq!(entry.matches, outbound(&[(443, 443)]));
        assert_eq!(rules.len(), compiled.rules.len() + 1);
        tracker.tick(now + Duration::from_secs(45));
        let (rules, _) = compiled.rules_with(&tracker.active());
        assert_eq!(rules, compiled.rules);
    }
}
