//! The DNS queries devices sent, so that only the answer to one of them counts: same
//! resolver address and port (where the query went), same device address and port (where it
//! came from), same id, same question, within the query's timeout, once. Memory is bounded
//! per device and in total; a query pushed out is counted.
//!
//! Times are the datapath's (`PacketSample::time`, from one monotonic clock), so a query and
//! its answer are compared as the programs saw them, however long the queue between them.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use super::{config::DnsConfig, datagram::Question};
use crate::device::Mac;

/// Why an answer counts for nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a DNS response the gateway can read (or cut by the sample size).
    Malformed,
    /// No query of the device's asked anything of that resolver from that port.
    Unsolicited,
    /// A query of the device's is waiting on that resolver and port, with another id.
    WrongId,
    /// The query it answers asked another name or record type.
    WrongQuestion,
    /// Its query was already answered.
    Duplicate,
    /// Its query (same device port and id) went to another resolver address or port.
    WrongResolver,
    /// It came after its query's timeout.
    Late,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::Malformed,
        Refusal::Unsolicited,
        Refusal::WrongId,
        Refusal::WrongQuestion,
        Refusal::Duplicate,
        Refusal::WrongResolver,
        Refusal::Late,
    ];

    /// The name in logs and in `/metrics`' `reason` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unsolicited => "unsolicited",
            Refusal::WrongId => "wrong_id",
            Refusal::WrongQuestion => "wrong_name_or_type",
            Refusal::Duplicate => "duplicate",
            Refusal::WrongResolver => "wrong_resolver",
            Refusal::Late => "late",
        }
    }
}

/// One exchange as the device sees it: its MAC and address, and the resolver it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Exchange {
    pub mac: Mac,
    pub device: SocketAddr,
    pub resolver: SocketAddr,
    pub id: u16,
}

#[derive(Debug)]
struct Pending {
    question: Question,
    sent: SystemTime,
    answered: bool,
    /// Order of arrival, for evicting the oldest.
    seq: u64,
}

/// The queries devices sent, waiting for (or recently given) their answer.
#[derive(Debug)]
pub struct QueryBook {
    timeout: Duration,
    per_device: usize,
    total: usize,
    pending: HashMap<Exchange, Pending>,
    /// Every query by age (`seq`), oldest first.
    by_age: BTreeMap<u64, Exchange>,
    /// Each device's queries by age.
    by_device: HashMap<Mac, BTreeMap<u64, Exchange>>,
    next_seq: u64,
}

impl QueryBook {
    pub fn new(config: &DnsConfig) -> Self {
        Self {
            timeout: config.query_timeout(),
            per_device: config.max_pending_per_device,
            total: config.max_pending,
            pending: HashMap::new(),
            by_age: BTreeMap::new(),
            by_device: HashMap::new(),
            next_seq: 0,
        }
    }

    /// How long a query is kept: its timeout, and as long again so that a late or second
    /// answer is told apart from an unsolicited one.
    fn kept_for(&self) -> Duration {
        self.timeout * 2
    }

    /// Remembers a query the device sent; returns how many older queries were forgotten to
    /// make room. A query sent again with the same id from the same port starts afresh.
    pub fn remember(&mut self, exchange: Exchange, question: Question, sent: SystemTime) -> usize {
        self.expire(sent);
        self.forget(&exchange);
        let mut evicted = 0;
        loop {
            let device_full = self.by_device.get(&exchange.mac).filter(|queries| queries.len() >= self.per_device);
            let oldest = match device_full {
                Some(queries) => queries.values().next(),
                None if self.pending.len() >= self.total => self.by_age.values().next(),
                None => None,
            };
            let Some(oldest) = oldest.copied() else { break };
            self.forget(&oldest);
            evicted += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(exchange, Pending { question, sent, answered: false, seq });
        self.by_age.insert(seq, exchange);
        self.by_device.entry(exchange.mac).or_default().insert(seq, exchange);
        evicted
    }

    /// Matches an answer (`exchange` as the device sees it: its address is the answer's
    /// destination, the resolver its source) to the query it answers, which is then used up.
    pub fn answer(&mut self, exchange: Exchange, question: &Question, at: SystemTime) -> Result<(), Refusal> {
        self.expire(at);
        let timeout = self.timeout;
        if let Some(query) = self.pending.get_mut(&exchange) {
            if query.answered {
                return Err(Refusal::Duplicate);
            }
            if at.duration_since(query.sent).unwrap_or_default() > timeout {
                return Err(Refusal::Late);
            }
            // Not used up: the genuine answer may still come.
            if query.question != *question {
                return Err(Refusal::WrongQuestion);
            }
            query.answered = true;
            return Ok(());
        }
        let others = self.by_device.get(&exchange.mac).into_iter().flat_map(BTreeMap::values);
        let mut refusal = Refusal::Unsolicited;
        for other in others {
            if other.device != exchange.device {
                continue;
            }
            if other.id == exchange.id {
                return Err(Refusal::WrongResolver);
            }
            if other.resolver == exchange.resolver {
                refusal = Refusal::WrongId;
            }
        }
        Err(refusal)
    }

    /// Forgets queries kept long enough.
    fn expire(&mut self, now: SystemTime) {
        let kept_for = self.kept_for();
        while let Some(oldest) = self.by_age.values().next().copied() {
            let sent = self.pending.get(&oldest).map(|query| query.sent);
            if sent.is_some_and(|sent| now.duration_since(sent).unwrap_or_default() < kept_for) {
                break;
            }
            self.forget(&oldest);
        }
    }

    fn forget(&mut self, exchange: &Exchange) {
        let Some(query) = self.pending.remove(exchange) else { return };
        self.by_age.remove(&query.seq);
        if let Some(queries) = self.by_device.get_mut(&exchange.mac) {
            queries.remove(&query.seq);
            if queries.is_empty() {
                self.by_device.remove(&exchange.mac);
            }
        }
    }

    /// Queries remembered.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::RecordType;

    use super::*;

    const CAMERA: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const PLUG: Mac = Mac([2, 0, 0, 0, 0, 2]);

    fn at(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + Duration::from_millis(millis)
    }

    fn exchange(mac: Mac, port: u16, resolver: &str, id: u16) -> Exchange {
        Exchange {
            mac,
            device: SocketAddr::from(([10, 77, 0, 10], port)),
            resolver: resolver.parse().expect("resolver"),
            id,
        }
    }

    fn question(name: &str, kind: RecordType) -> Question {
        Question { name: name.into(), kind }
    }

    const RESOLVER: &str = "10.78.0.53:53";

    fn book_with_one_query() -> (QueryBook, Exchange, Question) {
        let mut book = QueryBook::new(&DnsConfig::default());
        let sent = exchange(CAMERA, 40_000, RESOLVER, 7);
        let asked = question("upload.camera.example.com", RecordType::A);
        assert_eq!(book.remember(sent, asked.clone(), at(0)), 0);
        (book, sent, asked)
    }

    #[test]
    fn the_answer_to_a_query_counts_once() {
        let (mut book, sent, asked) = book_with_one_query();
        assert_eq!(book.answer(sent, &asked, at(30)), Ok(()));
        assert_eq!(book.answer(sent, &asked, at(40)), Err(Refusal::Duplicate));
    }

    #[test]
    fn every_forgery_is_refused_with_its_reason_and_leaves_the_query_for_its_answer() {
        let (mut book, sent, asked) = book_with_one_query();
        let cases = [
            (exchange(CAMERA, 41_000, RESOLVER, 7), asked.clone(), Refusal::Unsolicited),
            (exchange(PLUG, 40_000, RESOLVER, 7), asked.clone(), Refusal::Unsolicited),
            (Exchange { id: 8, ..sent }, asked.clone(), Refusal::WrongId),
            (exchange(CAMERA, 40_000, "10.78.0.54:53", 7), asked.clone(), Refusal::WrongResolver),
            (exchange(CAMERA, 40_000, "10.78.0.53:5353", 7), asked.clone(), Refusal::WrongResolver),
            (exchange(CAMERA, 40_000, "10.78.0.54:53", 8), asked.clone(), Refusal::Unsolicited),
            (sent, question("evil.example.com", RecordType::A), Refusal::WrongQuestion),
            (sent, question("upload.camera.example.com", RecordType::AAAA), Refusal::WrongQuestion),
        ];
        for (forged, claimed, reason) in cases {
            assert_eq!(book.answer(forged, &claimed, at(10)), Err(reason), "{forged:?} {claimed:?}");
        }
        assert_eq!(book.answer(sent, &asked, at(20)), Ok(()), "the genuine answer still counts");
    }

    #[test]
    fn an_answer_after_the_timeout_is_late_then_unsolicited_once_forgotten() {
        let (mut book, sent, asked) = book_with_one_query();
        assert_eq!(book.answer(sent, &asked, at(5_001)), Err(Refusal::Late));
        assert_eq!(book.answer(sent, &asked, at(10_000)), Err(Refusal::Unsolicited));
        assert!(book.is_empty());
    }

    #[test]
    fn a_query_sent_again_waits_afresh() {
        let (mut book, sent, asked) = book_with_one_query();
        assert_eq!(book.answer(sent, &asked, at(10)), Ok(()));
        book.remember(sent, asked.clone(), at(4_000));
        assert_eq!(book.answer(sent, &asked, at(8_000)), Ok(()));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn memory_is_bounded_per_device_and_in_total_oldest_first() {
        let config = DnsConfig { max_pending_per_device: 3, max_pending: 5, ..DnsConfig::default() };
        let mut book = QueryBook::new(&config);
        let asked = question("a.example.com", RecordType::A);
        let mut evicted = 0;
        for id in 0..5 {
            evicted += book.remember(exchange(CAMERA, 40_000 + id, RESOLVER, id), asked.clone(), at(u64::from(id)));
        }
        assert_eq!((evicted, book.len()), (2, 3), "the camera keeps its newest three");
        let oldest = exchange(CAMERA, 40_000, RESOLVER, 0);
        assert_eq!(book.answer(oldest, &asked, at(10)), Err(Refusal::Unsolicited));
        for id in 0..3 {
            evicted += book.remember(exchange(PLUG, 50_000 + id, RESOLVER, id), asked.clone(), at(20));
        }
        assert_eq!((evicted, book.len()), (3, 5), "the oldest query overall made room");
        let camera_newest = exchange(CAMERA, 40_004, RESOLVER, 4);
        assert_eq!(book.answer(camera_newest, &asked, at(30)), Ok(()));
        assert_eq!(book.answer(exchange(CAMERA, 40_002, RESOLVER, 2), &asked, at(30)), Err(Refusal::Unsolicited));
    }
}
