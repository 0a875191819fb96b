//! Keeps DNS-name rules true: follows the DNS answers devices receive and turns the addresses
//! of allowed names into /32 and /128 entries that live as long as the answer's TTL (clamped
//! to `DNS_TTL_FLOOR..=DNS_TTL_CEILING`), so CDN-backed names keep working as their addresses
//! move. Reads DNS response messages (parsed by `simple-dns`) and the compiled DNS rules;
//! writes nothing: `active` lists the entries to merge with `CompiledPolicy::rules_with`.
//!
//! Feed it only responses that reached a device from the resolver (the datapath's DNS
//! samples towards the device): whoever answers DNS for a device decides which addresses its
//! DNS-name rules open, exactly as it decides where the device connects.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use simple_dns::{CLASS, Packet, PacketFlag, RCODE, rdata::RData};

use super::{
    compile::{CompiledPolicy, CompiledRule, DnsRule},
    load::PolicyId,
};

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
    /// protocol and ports) are kept, the rest dropped.
    pub fn set_policy(&mut self, policy: &CompiledPolicy) {
        let old = std::mem::take(&mut self.entries);
        let old_rules = std::mem::replace(&mut self.rules, policy.dns_rules.clone());
        for ((index, addr), tracked) in old {
            let before = &old_rules[index];
            let same = |rule: &DnsRule| {
                rule.policy_id == before.policy_id
                    && rule.pattern == before.pattern
                    && rule.protocol == before.protocol
                    && rule.ports == before.ports
            };
            if let Some(new_index) = self.rules.iter().position(same) {
                self.entries.insert((new_index, addr), tracked);
            }
        }
    }

    /// Reads one DNS response received by a device whose policy in force is `policy_id` (its
    /// class policy when enrolled, the lane's id otherwise) and records the addresses of the
    /// names that policy's DNS rules allow.
    pub fn observe(
        &mut self,
        policy_id: PolicyId,
        message: &[u8],
        now: Instant,
    ) -> Result<DnsUpdate, DnsError> {
        let packet = Packet::parse(message).map_err(|error| DnsError::Malformed(error.to_string()))?;
        if !packet.has_flags(PacketFlag::RESPONSE) {
            return Err(DnsError::NotAResponse);
        }
        let mut update = DnsUpdate::default();
        if packet.rcode() != RCODE::NoError {
            return Ok(update);
        }
        let answers = Answers::from_packet(&packet);
        for index in 0..self.rules.len() {
            if self.rules[index].policy_id != policy_id {
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

    fn record(
        &mut self,
        index: usize,
        name: &str,
        addr: IpAddr,
        ttl: u32,
        now: Instant,
        update: &mut DnsUpdate,
    ) {
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
        update.added.push(DnsBinding {
            name: name.to_owned(),
            rule: self.rule_for(index, addr),
            expires,
        });
    }

    fn rule_for(&self, index: usize, addr: IpAddr) -> CompiledRule {
        let rule = &self.rules[index];
        let net = IpNet::from(addr);
        CompiledRule {
            policy_id: rule.policy_id,
            proto: rule.protocol.number_for(&net),
            net,
            ports: rule.ports.clone(),
        }
    }

    /// Drops entries whose time has come and returns what they allowed (the maps must be
    /// resynced when this is not empty).
    pub fn tick(&mut self, now: Instant) -> Vec<DnsBinding> {
        let expired: Vec<(usize, IpAddr)> = self
            .entries
            .iter()
            .filter(|(_, tracked)| tracked.expires <= now)
            .map(|(key, _)| *key)
            .collect();
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
    fn from_packet(packet: &Packet<'_>) -> Self {
        let mut answers = Self { names: HashSet::new(), cnames: HashMap::new(), addresses: HashMap::new() };
        for question in &packet.questions {
            answers.names.insert(canonical(&question.qname.to_string()));
        }
        for record in &packet.answers {
            if record.class != CLASS::IN {
                continue;
            }
            let owner = canonical(&record.name.to_string());
            match &record.rdata {
                RData::A(a) => answers
                    .addresses
                    .entry(owner.clone())
                    .or_default()
                    .push((IpAddr::V4(Ipv4Addr::from(a.address)), record.ttl)),
                RData::AAAA(aaaa) => answers
                    .addresses
                    .entry(owner.clone())
                    .or_default()
                    .push((IpAddr::V6(Ipv6Addr::from(aaaa.address)), record.ttl)),
                RData::CNAME(target) => {
                    answers.cnames.insert(owner.clone(), (canonical(&target.0.to_string()), record.ttl));
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
