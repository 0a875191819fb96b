//! The answer section of one response, read from its question only: the question's name,
//! the CNAMEs it leads to inside this answer, and the addresses of the asked type at the end.
//! Records for other names (an answer may carry anything) and CNAMEs learnt from earlier
//! answers count for nothing.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use hickory_proto::{
    op::Message,
    rr::{DNSClass, RData, RecordType},
};

use super::datagram::Question;
use crate::fingerprint::dns::normalize_name;

/// Longest CNAME chain followed (resolvers rarely return more than 3-4 links).
pub const MAX_CNAME_CHAIN: usize = 8;

/// TTLs with the top bit set are read as 0 (RFC 2181 section 8).
const MAX_TTL: u32 = i32::MAX as u32;

/// The answer records, indexed by owner name (lower case, no trailing dot).
pub struct Answers {
    cnames: HashMap<String, (String, u32)>,
    addresses: HashMap<String, Vec<(IpAddr, u32)>>,
}

impl Answers {
    /// The CNAMEs and the addresses of the question's type (A or AAAA; other types give no
    /// address) in `message`'s answer section.
    pub fn from_message(message: &Message, question: &Question) -> Self {
        let mut answers = Self { cnames: HashMap::new(), addresses: HashMap::new() };
        for record in message.answers() {
            if record.dns_class() != DNSClass::IN {
                continue;
            }
            let owner = normalize_name(&record.name().to_ascii());
            let ttl = if record.ttl() > MAX_TTL { 0 } else { record.ttl() };
            let address = match (record.data(), question.kind) {
                (RData::A(a), RecordType::A) => IpAddr::V4(a.0),
                (RData::AAAA(aaaa), RecordType::AAAA) => IpAddr::V6(aaaa.0),
                (RData::CNAME(target), _) => {
                    answers.cnames.insert(owner, (normalize_name(&target.0.to_ascii()), ttl));
                    continue;
                }
                _ => continue,
            };
            answers.addresses.entry(owner).or_default().push((address, ttl));
        }
        answers
    }

    /// The question's name and the names its CNAMEs lead to, in order, at most
    /// `MAX_CNAME_CHAIN` links, stopping at a loop.
    pub fn chain(&self, question: &Question) -> Vec<String> {
        let mut chain = vec![question.name.clone()];
        let mut seen: HashSet<&str> = HashSet::from([question.name.as_str()]);
        while chain.len() <= MAX_CNAME_CHAIN {
            let Some((target, _)) = self.cnames.get(chain.last().map_or("", String::as_str)) else { break };
            if !seen.insert(target) {
                break;
            }
            chain.push(target.clone());
        }
        chain
    }

    /// Addresses `start` (a name of `chain`) resolves to through the rest of `chain`, each
    /// with the smallest TTL along the way (the binding is only as fresh as its weakest link).
    pub fn resolve(&self, chain: &[String], start: usize) -> Vec<(IpAddr, u32)> {
        let mut found = Vec::new();
        let mut ttl = u32::MAX;
        for name in chain.get(start..).unwrap_or_default() {
            for (addr, record_ttl) in self.addresses.get(name).into_iter().flatten() {
                found.push((*addr, ttl.min(*record_ttl)));
            }
            if let Some((_, link_ttl)) = self.cnames.get(name) {
                ttl = ttl.min(*link_ttl);
            }
        }
        found
    }
}
