//! Keeps DNS-name rules true: follows the DNS exchanges of devices and turns the answered
//! addresses of allowed names into /32 and /128 entries that live as long as the answer's TTL
//! (bounded by `[policy.dns]` `ttl_floor_secs..=ttl_ceiling_secs`), so CDN-backed names keep
//! working as their addresses move. Reads DNS samples (IP and UDP headers by etherparse, DNS
//! by `hickory-proto`) and the compiled DNS rules; writes nothing: `active` lists the entries
//! to merge with `CompiledPolicy::rules_with`.
//!
//! An answer counts only when it answers a query the device sent (`queries`):
//! - the query is a LAN-side sample (`SampleKind::Dns`) the datapath passed, sent to port 53;
//! - the answer is a `SampleKind::DnsAnswer`: sent towards the device by upstream (the WAN
//!   program's sample) or by the gateway's own stack, i.e. a resolver on the gateway that
//!   DHCP hands out (the LAN egress program's sample; packets the gateway merely forwards,
//!   such as a device's forgery routed to another device, are not sampled there);
//! - it comes from the address and port the query went to (upstream, or the gateway's LAN
//!   address for its own resolver), to the device's address and port it came from, with its
//!   id and its question (name compared case-insensitively, type), within
//!   `query_timeout_ms`, and only the first such answer;
//! - only the question's name and the CNAMEs it leads to inside that answer are followed,
//!   and only addresses of the asked type (`answers`).
//!
//! Anything else is refused (`Refusal`, counted per reason by the caller). A device cannot
//! open a name by forging an answer on the LAN (those are never answers here), nor can a host
//! upstream by sending an answer nobody asked for. Whoever answers a device's query decides
//! which addresses its DNS-name rules open, as it decides where the device connects. Answers
//! truncated by the datapath's sample size are refused as malformed. The WAN program samples
//! IPv4 only, so answers from upstream count over IPv4 only (they may carry AAAA records);
//! the gateway's own resolver is followed over IPv4 and IPv6.
pub mod answers;
pub mod config;
mod datagram;
pub mod queries;
pub mod refusal_log;
#[cfg(test)]
pub(crate) mod tests;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hickory_proto::op::ResponseCode;
use ipnet::IpNet;

use self::{
    answers::Answers,
    queries::{Exchange, QueryBook},
};
pub use self::{
    config::DnsConfig,
    datagram::{Datagram, Question},
    queries::Refusal,
};
use super::{
    compile::{CompiledPolicy, DnsRule},
    entries::CompiledRule,
    model::PolicyId,
};
use crate::{
    datapath::{
        events::{PacketSample, SampleKind},
        replay::PORT_DNS,
    },
    device::{Access, Mac},
};

/// Most DNS-derived addresses tracked at once, so answers cannot grow memory (or the LPM
/// maps) without bound; further answers are ignored until entries expire.
pub const MAX_DNS_ENTRIES: usize = 8192;

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

/// Why a LAN-side DNS sample is not a query to follow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// Not a well-formed DNS message over UDP with one question.
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    /// A response, or a message not sent to the DNS port.
    #[error("not a DNS query to port 53")]
    NotAQuery,
    /// The datapath did not pass the query: no resolver got it, so no answer can be genuine.
    #[error("query not passed by the datapath")]
    QueryNotPassed,
    /// Not a DNS sample.
    #[error("not a DNS sample")]
    NotDns,
}

/// An answer that counts for nothing: why, for which device, and what it claimed to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Refusal,
    pub device: Mac,
    /// Where it came from (none when it could not be read).
    pub resolver: Option<SocketAddr>,
    /// Its question (untrusted text: escape before logging).
    pub question: Option<Question>,
}

/// What one DNS sample did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A device's query, remembered; `evicted` older queries were forgotten to make room.
    Query { evicted: usize },
    /// The answer to a remembered query, and what it opened.
    Answer(DnsUpdate),
    /// An answer that counts for nothing.
    Refused(Refused),
    /// A LAN-side DNS packet that is not a query to follow (a device's own answer, a query
    /// the datapath dropped, ...), or not a DNS sample.
    Ignored(DnsError),
}

/// What one DNS response changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsUpdate {
    /// Who answered.
    pub source: AnswerSource,
    /// New entries (the maps must be resynced when this is not empty).
    pub added: Vec<DnsBinding>,
    /// Entries whose expiry moved later.
    pub refreshed: usize,
    /// Addresses ignored because `MAX_DNS_ENTRIES` was reached.
    pub dropped: usize,
}

/// Who answered a device's query (counted apart in `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AnswerSource {
    /// A resolver beyond the gateway.
    #[default]
    Upstream,
    /// A resolver on the gateway itself: the answer came from one of its addresses.
    GatewayResolver,
}

impl AnswerSource {
    pub const ALL: [AnswerSource; 2] = [AnswerSource::Upstream, AnswerSource::GatewayResolver];

    /// The name in `/metrics`' `source` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            AnswerSource::Upstream => "upstream",
            AnswerSource::GatewayResolver => "gateway_resolver",
        }
    }
}

/// A name's address, allowed by a DNS rule until `expires`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsBinding {
    /// The name the rule matched (the question's, or one its CNAMEs lead to).
    pub name: String,
    pub rule: CompiledRule,
    pub expires: Instant,
}

#[derive(Clone, Debug)]
struct Tracked {
    name: String,
    expires: Instant,
}

/// Follows DNS exchanges for the policy's DNS-name rules. A sync core: the caller feeds
/// samples and calls `tick` when `next_expiry` passes.
#[derive(Debug)]
pub struct DnsTracker {
    rules: Vec<DnsRule>,
    /// (index into `rules`, address) → name and expiry.
    entries: HashMap<(usize, IpAddr), Tracked>,
    queries: QueryBook,
    ttl_floor: Duration,
    ttl_ceiling: Duration,
    /// The gateway's own addresses: answers from these are its resolver's.
    gateway_addresses: Vec<IpAddr>,
}

impl DnsTracker {
    pub fn new(policy: &CompiledPolicy, config: &DnsConfig) -> Self {
        Self {
            rules: policy.dns_rules.clone(),
            entries: HashMap::new(),
            queries: QueryBook::new(config),
            ttl_floor: config.ttl_floor(),
            ttl_ceiling: config.ttl_ceiling(),
            gateway_addresses: Vec::new(),
        }
    }

    /// Tells answers of a resolver on the gateway (from `addresses`, its own) from answers
    /// from upstream, for `DnsUpdate::source`. Both are matched to queries alike.
    pub fn with_gateway_addresses(self, addresses: Vec<IpAddr>) -> Self {
        Self { gateway_addresses: addresses, ..self }
    }

    /// Switches to a reloaded policy: entries whose rule is unchanged (same policy id, name,
    /// protocol and port matches) are kept, the rest dropped. Queries waiting are kept.
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

    /// Reads one DNS sample: remembers a device's query, or matches an answer (from upstream
    /// or the gateway's own resolver) to one and records the addresses of the names the DNS rules of the device's policies
    /// allow (`policies`, asked only then: `policies_in_force`). Entries belong to the policy,
    /// so every device of the class benefits, as the datapath's per-policy maps require.
    pub fn sample(
        &mut self,
        sample: &PacketSample,
        policies: impl FnOnce(Mac) -> Vec<PolicyId>,
        now: Instant,
    ) -> Outcome {
        match sample.kind {
            SampleKind::Dns => self.query(sample),
            SampleKind::DnsAnswer => self.answer(sample, policies, now),
            _ => Outcome::Ignored(DnsError::NotDns),
        }
    }

    fn query(&mut self, sample: &PacketSample) -> Outcome {
        if sample.verdict != gateway_ebpf::verdict::PASS {
            return Outcome::Ignored(DnsError::QueryNotPassed);
        }
        let datagram = match Datagram::read(sample) {
            Ok(datagram) => datagram,
            Err(error) => return Outcome::Ignored(error),
        };
        if datagram.is_response() || datagram.dst.port() != PORT_DNS {
            return Outcome::Ignored(DnsError::NotAQuery);
        }
        let exchange = Exchange { mac: sample.mac, device: datagram.src, resolver: datagram.dst, id: datagram.id() };
        let evicted = self.queries.remember(exchange, datagram.question, sample.time);
        Outcome::Query { evicted }
    }

    fn answer(&mut self, sample: &PacketSample, policies: impl FnOnce(Mac) -> Vec<PolicyId>, now: Instant) -> Outcome {
        let refused = |reason, datagram: Option<&Datagram>| {
            Outcome::Refused(Refused {
                reason,
                device: sample.mac,
                resolver: datagram.map(|d| d.src),
                question: datagram.map(|d| d.question.clone()),
            })
        };
        let datagram = match Datagram::read(sample) {
            Ok(datagram) if datagram.is_response() => datagram,
            _ => return refused(Refusal::Malformed, None),
        };
        let exchange = Exchange { mac: sample.mac, device: datagram.dst, resolver: datagram.src, id: datagram.id() };
        if let Err(reason) = self.queries.answer(exchange, &datagram.question, sample.time) {
            return refused(reason, Some(&datagram));
        }
        let source = if self.gateway_addresses.contains(&datagram.src.ip()) {
            AnswerSource::GatewayResolver
        } else {
            AnswerSource::Upstream
        };
        Outcome::Answer(DnsUpdate { source, ..self.learn(&policies(sample.mac), &datagram, now) })
    }

    /// Records what a matched answer says for the DNS rules of `policies`.
    fn learn(&mut self, policies: &[PolicyId], datagram: &Datagram, now: Instant) -> DnsUpdate {
        let mut update = DnsUpdate::default();
        if datagram.message.response_code() != ResponseCode::NoError {
            return update;
        }
        let answers = Answers::from_message(&datagram.message, &datagram.question);
        let chain = answers.chain(&datagram.question);
        for index in 0..self.rules.len() {
            if !policies.contains(&self.rules[index].policy_id) {
                continue;
            }
            for (start, name) in chain.iter().enumerate() {
                if !self.rules[index].pattern.matches(name) {
                    continue;
                }
                for (addr, ttl) in answers.resolve(&chain, start) {
                    // A rule kept to the other family (or opening nothing) records nothing.
                    if self.rules[index].matches_for(&IpNet::from(addr)).is_empty() {
                        continue;
                    }
                    self.record(index, name, addr, ttl, now, &mut update);
                }
            }
        }
        update
    }

    fn record(&mut self, index: usize, name: &str, addr: IpAddr, ttl: u32, now: Instant, update: &mut DnsUpdate) {
        let life = Duration::from_secs(u64::from(ttl)).clamp(self.ttl_floor, self.ttl_ceiling);
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
