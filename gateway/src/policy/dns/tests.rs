//! The tracker fed as the datapath feeds it: a device's query sampled on the LAN side, the
//! resolver's answer on the WAN side (or leaving the LAN, from a resolver on the gateway), each an IP/UDP datagram built by etherparse around a
//! DNS message built by hickory-proto. Every forgery of issue 17 opens nothing.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4},
    time::SystemTime,
};

use gateway_ebpf::{lane, proto};
use hickory_proto::{
    op::{Message, MessageType, Query},
    rr::{Name, RData, Record as WireRecord, RecordType, rdata},
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
const DEVICE_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
const DEVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
pub(crate) const RESOLVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 78, 0, 53), 53);
const NAME: &str = "upload.camera.example.com";

pub(crate) enum Record<'a> {
    A(&'a str, u32, [u8; 4]),
    Aaaa(&'a str, u32, Ipv6Addr),
    Cname(&'a str, u32, &'a str),
}

/// A DNS message on the wire asking `question` (type `kind`), with `records` as its answer
/// section when it is a response.
pub(crate) fn message(id: u16, question: &str, kind: RecordType, response: bool, records: &[Record<'_>]) -> Vec<u8> {
    let name = |text: &str| Name::from_ascii(text).expect("valid test name");
    let mut message = Message::new();
    message.set_id(id).set_message_type(if response { MessageType::Response } else { MessageType::Query });
    message.add_query(Query::query(name(question), kind));
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

fn time(at_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000) + Duration::from_millis(at_ms)
}

/// A DNS sample of `kind` as the datapath copies it: from the IP header on.
pub(crate) fn udp_sample(
    kind: SampleKind,
    src: impl Into<SocketAddr>,
    dst: impl Into<SocketAddr>,
    dns: &[u8],
    at: SystemTime,
) -> PacketSample {
    let (src, dst) = (src.into(), dst.into());
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => etherparse::PacketBuilder::ipv4(from.octets(), to.octets(), 64),
        (IpAddr::V6(from), IpAddr::V6(to)) => etherparse::PacketBuilder::ipv6(from.octets(), to.octets(), 64),
        _ => panic!("{src} and {dst} are of different families"),
    }
    .udp(src.port(), dst.port());
    let mut data = Vec::with_capacity(builder.size(dns.len()));
    builder.write(&mut data, dns).expect("udp datagram");
    PacketSample {
        time: at,
        mac: DEVICE_MAC,
        kind,
        frame_bytes: data.len() as u32 + 14,
        payload_offset: data.len() - dns.len(),
        data,
        verdict: gateway_ebpf::verdict::PASS,
    }
}

/// A tracker for the device `DEVICE_MAC` of class `policies`.
struct Device {
    tracker: DnsTracker,
    policies: Vec<PolicyId>,
    now: Instant,
}

impl Device {
    fn new(policy: &CompiledPolicy, policies: &[PolicyId]) -> Self {
        Self::with_config(policy, policies, &DnsConfig::default())
    }

    fn with_config(policy: &CompiledPolicy, policies: &[PolicyId], config: &DnsConfig) -> Self {
        Self { tracker: DnsTracker::new(policy, config), policies: policies.to_vec(), now: Instant::now() }
    }

    fn feed(&mut self, sample: &PacketSample) -> Outcome {
        let policies = self.policies.clone();
        self.tracker.sample(sample, |mac| if mac == DEVICE_MAC { policies } else { Vec::new() }, self.now)
    }

    /// The device asks `RESOLVER` from `port`.
    fn ask(&mut self, port: u16, id: u16, name: &str, kind: RecordType, at_ms: u64) {
        let query = message(id, name, kind, false, &[]);
        let from = SocketAddrV4::new(DEVICE_IP, port);
        let outcome = self.feed(&udp_sample(SampleKind::Dns, from, RESOLVER, &query, time(at_ms)));
        assert_eq!(outcome, Outcome::Query { evicted: 0 });
    }

    /// `resolver` answers the device's `port` with `dns`, as the WAN program samples it.
    fn answer_from(&mut self, resolver: SocketAddrV4, port: u16, dns: &[u8], at_ms: u64) -> Outcome {
        let to = SocketAddrV4::new(DEVICE_IP, port);
        self.feed(&udp_sample(SampleKind::DnsAnswer, resolver, to, dns, time(at_ms)))
    }

    /// A query for `name`'s A records and `RESOLVER`'s answer with `records`: what it opened.
    fn resolve(&mut self, id: u16, name: &str, records: &[Record<'_>]) -> DnsUpdate {
        self.ask(40_000 + id, id, name, RecordType::A, 0);
        let answer = message(id, name, RecordType::A, true, records);
        match self.answer_from(RESOLVER, 40_000 + id, &answer, 20) {
            Outcome::Answer(update) => update,
            other => panic!("answer not matched: {other:?}"),
        }
    }
}

fn refusal(outcome: Outcome) -> Option<Refusal> {
    match outcome {
        Outcome::Refused(refused) => Some(refused.reason),
        _ => None,
    }
}

#[test]
fn cname_chain_to_a_cdn_opens_the_final_addresses_for_the_shortest_ttl() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    let update = camera.resolve(
        1,
        NAME,
        &[
            Record::Cname(NAME, 300, "upload.camera.example.com.edge.cdnprovider.test"),
            Record::Cname("upload.camera.example.com.edge.cdnprovider.test", 120, "e17.cdnprovider.test"),
            Record::A("e17.cdnprovider.test", 600, [10, 78, 1, 17]),
            // Not what the query asked (A): ignored.
            Record::Aaaa("e17.cdnprovider.test", 600, "2001:db8:78::17".parse().expect("addr")),
        ],
    );
    assert_eq!(update.added.len(), 1, "{update:?}");
    let v4 = &update.added[0].rule;
    assert_eq!(v4.net, "10.78.1.17/32".parse::<IpNet>().expect("net"));
    assert_eq!((v4.policy_id, v4.proto), (CAMERA, proto::TCP));
    assert_eq!(v4.matches, outbound(&[(443, 443)]));
    assert_eq!(update.added[0].expires, camera.now + Duration::from_secs(120));
    assert_eq!(update.added[0].name, NAME);
    // The same answer to a new query refreshes, adds nothing.
    let again = camera.resolve(2, NAME, &[Record::A(NAME, 300, [10, 78, 1, 17])]);
    assert!(again.added.is_empty());
    assert_eq!(camera.tracker.active().len(), 1);
}

#[test]
fn aaaa_queries_open_ipv6_addresses() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    camera.ask(40_001, 1, NAME, RecordType::AAAA, 0);
    let v6: Ipv6Addr = "2001:db8:78::17".parse().expect("addr");
    let answer = message(1, NAME, RecordType::AAAA, true, &[Record::Aaaa(NAME, 300, v6), Record::A(NAME, 300, [1; 4])]);
    let Outcome::Answer(update) = camera.answer_from(RESOLVER, 40_001, &answer, 10) else { panic!("not matched") };
    assert_eq!(update.added.len(), 1);
    assert_eq!(update.added[0].rule.net, IpNet::from(IpAddr::V6(v6)));
}

#[test]
fn a_rule_kept_to_one_family_opens_only_that_familys_answers() {
    let policy = check_text(&POLICY.replace("ports = [443]\n", "ports = [443]\nfamily = \"ipv4\"\n"));
    let mut camera = Device::new(&policy, &[CAMERA]);
    camera.ask(40_001, 1, NAME, RecordType::AAAA, 0);
    let v6: Ipv6Addr = "2001:db8:78::17".parse().expect("addr");
    let answer = message(1, NAME, RecordType::AAAA, true, &[Record::Aaaa(NAME, 300, v6)]);
    let Outcome::Answer(update) = camera.answer_from(RESOLVER, 40_001, &answer, 10) else { panic!("not matched") };
    assert!(update.added.is_empty(), "{update:?}");
    assert!(camera.tracker.is_empty());
    let update = camera.resolve(2, NAME, &[Record::A(NAME, 300, [10, 78, 1, 17])]);
    assert_eq!(update.added.len(), 1);
    assert_eq!(update.added[0].rule.net, "10.78.1.17/32".parse::<IpNet>().expect("net"));
}

#[test]
fn entries_expire_after_their_ttl_and_are_refreshed_by_new_answers() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    let start = camera.now;
    let records = [Record::A("img.cdn.example.net", 90, [10, 78, 2, 2])];
    camera.resolve(1, "img.cdn.example.net", &records);
    assert_eq!(camera.tracker.next_expiry(), Some(start + Duration::from_secs(90)));
    assert!(camera.tracker.tick(start + Duration::from_secs(89)).is_empty());
    camera.now = start + Duration::from_secs(60);
    assert_eq!(camera.resolve(2, "img.cdn.example.net", &records).refreshed, 1);
    assert!(camera.tracker.tick(start + Duration::from_secs(120)).is_empty());
    let gone = camera.tracker.tick(start + Duration::from_secs(150));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].rule.net, "10.78.2.2/32".parse::<IpNet>().expect("net"));
    assert!(camera.tracker.is_empty());
}

#[test]
fn ttl_is_bounded_by_the_configured_floor_and_ceiling() {
    let config = DnsConfig { ttl_floor_secs: 2, ttl_ceiling_secs: 600, ..DnsConfig::default() };
    let mut camera = Device::with_config(&check_text(POLICY), &[CAMERA], &config);
    let ten_years = 10 * 365 * 86_400;
    for (id, ttl, expected) in [
        (1, 0, 2),
        (2, 300, 300),
        (3, 604_800, 600),
        (4, ten_years, 600),
        // The top bit set reads as 0 (RFC 2181 section 8).
        (5, 0x8000_0000 + 3_600, 2),
    ] {
        let name = format!("h{id}.cdn.example.net");
        let update = camera.resolve(id, &name, &[Record::A(&name, ttl, [10, 78, 3, id as u8])]);
        assert_eq!(update.added[0].expires - camera.now, Duration::from_secs(expected), "TTL {ttl}");
    }
}

#[test]
fn names_outside_the_rules_or_another_policy_open_nothing() {
    let policy = check_text(POLICY);
    let mut camera = Device::new(&policy, &[CAMERA]);
    let evil = camera.resolve(1, "evil.example.com", &[Record::A("evil.example.com", 300, [10, 78, 9, 9])]);
    assert!(evil.added.is_empty());
    // Only strictly below the wildcard.
    let apex = camera.resolve(2, "cdn.example.net", &[Record::A("cdn.example.net", 300, [10, 78, 9, 8])]);
    assert!(apex.added.is_empty());
    // The plug's name seen by a camera does not open it for cameras (nor for plugs).
    let plug_answer = [Record::A("plug.example.org", 300, [10, 78, 9, 7])];
    assert!(camera.resolve(3, "plug.example.org", &plug_answer).added.is_empty());
    let mut plug = Device::new(&policy, &[PLUG]);
    let for_plug = plug.resolve(3, "plug.example.org", &plug_answer);
    assert_eq!(for_plug.added.len(), 1);
    assert_eq!(for_plug.added[0].rule.proto, proto::ICMP);
    // A CNAME pointing *to* an allowed name does not allow the alias's own addresses.
    let alias = camera.resolve(
        4,
        "evil.example.com",
        &[
            Record::Cname("evil.example.com", 300, "x.cdn.example.net"),
            Record::A("evil.example.com", 300, [10, 78, 9, 6]),
        ],
    );
    assert!(alias.added.iter().all(|b| b.rule.net.addr() != IpAddr::from([10, 78, 9, 6])), "{alias:?}");
}

#[test]
fn only_the_question_and_the_cnames_it_leads_to_in_this_answer_count() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    // An answer about another name carries records for an allowed one: not followed.
    let smuggled = camera.resolve(
        1,
        "weather.example.org",
        &[Record::A("weather.example.org", 300, [10, 78, 4, 1]), Record::A(NAME, 300, [10, 78, 4, 2])],
    );
    assert!(smuggled.added.is_empty(), "{smuggled:?}");
    // A CNAME learnt in one answer is not followed from another.
    camera.resolve(2, NAME, &[Record::Cname(NAME, 300, "edge.cdnprovider.test")]);
    let later = camera.resolve(3, "edge.cdnprovider.test", &[Record::A("edge.cdnprovider.test", 300, [10, 78, 4, 3])]);
    assert!(later.added.is_empty());
    // A loop ends the chain.
    let looped = camera.resolve(
        4,
        NAME,
        &[Record::Cname(NAME, 300, "a.cdnprovider.test"), Record::Cname("a.cdnprovider.test", 300, NAME)],
    );
    assert!(looped.added.is_empty());
    assert!(camera.tracker.is_empty());
}

#[test]
fn names_are_compared_without_regard_to_case() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    camera.ask(40_001, 1, "Upload.Camera.EXAMPLE.com", RecordType::A, 0);
    let answer = message(1, "upload.camera.example.COM", RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 5, 5])]);
    let Outcome::Answer(update) = camera.answer_from(RESOLVER, 40_001, &answer, 10) else { panic!("not matched") };
    assert_eq!(update.added.len(), 1);
}

/// The forgeries of issue 17 (and a few more), each against a real query waiting for its
/// answer: each is refused with its reason, opens nothing, and leaves the genuine answer
/// to count once.
#[test]
fn every_forged_answer_opens_nothing_and_the_genuine_one_counts_once() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    let forged_addr = [10, 78, 66, 6];
    let forged = |id: u16, name: &str| message(id, name, RecordType::A, true, &[Record::A(name, 300, forged_addr)]);
    let other_resolver = SocketAddrV4::new(Ipv4Addr::new(10, 78, 0, 54), 53);
    let other_port = SocketAddrV4::new(*RESOLVER.ip(), 5_353);

    assert_eq!(refusal(camera.answer_from(RESOLVER, 40_007, &forged(7, NAME), 0)), Some(Refusal::Unsolicited));
    camera.ask(40_007, 7, NAME, RecordType::A, 10);
    let aaaa = message(7, NAME, RecordType::AAAA, true, &[Record::Aaaa(NAME, 300, Ipv6Addr::LOCALHOST)]);
    let cases = [
        (RESOLVER, 40_007, forged(8, NAME), Refusal::WrongId),
        (RESOLVER, 40_007, forged(7, "x.cdn.example.net"), Refusal::WrongQuestion),
        (RESOLVER, 40_007, aaaa, Refusal::WrongQuestion),
        (other_resolver, 40_007, forged(7, NAME), Refusal::WrongResolver),
        (other_port, 40_007, forged(7, NAME), Refusal::WrongResolver),
        (RESOLVER, 40_008, forged(7, NAME), Refusal::Unsolicited),
        (RESOLVER, 40_007, message(7, NAME, RecordType::A, false, &[]), Refusal::Malformed),
    ];
    for (from, port, dns, reason) in cases {
        assert_eq!(refusal(camera.answer_from(from, port, &dns, 20)), Some(reason), "{from} → {port}");
    }
    assert!(camera.tracker.is_empty(), "no forgery opened anything");

    let genuine = message(7, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 0, 2])]);
    let Outcome::Answer(update) = camera.answer_from(RESOLVER, 40_007, &genuine, 30) else { panic!("not matched") };
    assert_eq!(update.added.len(), 1);
    assert_eq!(refusal(camera.answer_from(RESOLVER, 40_007, &forged(7, NAME), 40)), Some(Refusal::Duplicate));
    assert_eq!(camera.tracker.active().len(), 1, "only the genuine address is open");

    camera.ask(40_009, 9, NAME, RecordType::A, 100);
    assert_eq!(refusal(camera.answer_from(RESOLVER, 40_009, &forged(9, NAME), 5_101)), Some(Refusal::Late));
    assert_eq!(camera.tracker.active().len(), 1);
}

#[test]
fn lan_side_answers_and_queries_the_datapath_dropped_are_not_queries() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    let device = SocketAddrV4::new(DEVICE_IP, 40_001);
    // The device sends an answer itself (LAN side): never an answer, never a query.
    let own_answer = message(1, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 6, 6])]);
    let lan = udp_sample(SampleKind::Dns, device, RESOLVER, &own_answer, time(0));
    assert_eq!(camera.feed(&lan), Outcome::Ignored(DnsError::NotAQuery));
    // A query the datapath dropped reached no resolver: its answer is unsolicited.
    let query = message(2, NAME, RecordType::A, false, &[]);
    let dropped = PacketSample {
        verdict: gateway_ebpf::verdict::DROP,
        ..udp_sample(SampleKind::Dns, device, RESOLVER, &query, time(0))
    };
    assert_eq!(camera.feed(&dropped), Outcome::Ignored(DnsError::QueryNotPassed));
    let answer = message(2, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 6, 7])]);
    assert_eq!(refusal(camera.answer_from(RESOLVER, 40_001, &answer, 10)), Some(Refusal::Unsolicited));
    // A query to another port than 53 is not followed (the WAN program samples port 53 only).
    let elsewhere = SocketAddrV4::new(*RESOLVER.ip(), 5_353);
    let odd = udp_sample(SampleKind::Dns, device, elsewhere, &query, time(0));
    assert_eq!(camera.feed(&odd), Outcome::Ignored(DnsError::NotAQuery));
    assert!(camera.tracker.is_empty());
}

#[test]
fn garbage_and_truncated_answers_are_refused_as_malformed() {
    let mut camera = Device::new(&check_text(POLICY), &[CAMERA]);
    camera.ask(40_001, 1, NAME, RecordType::A, 0);
    let answer = message(1, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 5, 1])]);
    let to = SocketAddrV4::new(DEVICE_IP, 40_001);
    let mut cut = udp_sample(SampleKind::DnsAnswer, RESOLVER, to, &answer, time(10));
    cut.data.truncate(cut.data.len() - 2);
    assert_eq!(refusal(camera.feed(&cut)), Some(Refusal::Malformed));
    let mut garbage = cut.clone();
    garbage.data = vec![1, 2, 3];
    assert_eq!(refusal(camera.feed(&garbage)), Some(Refusal::Malformed));
    assert!(camera.tracker.is_empty());
    // The query still waits for its whole answer.
    assert!(matches!(camera.answer_from(RESOLVER, 40_001, &answer, 20), Outcome::Answer(_)));
}

#[test]
fn reload_keeps_entries_of_unchanged_rules_only() {
    let mut both = Device::new(&check_text(POLICY), &[CAMERA, PLUG]);
    both.resolve(1, NAME, &[Record::A(NAME, 300, [10, 78, 4, 1])]);
    both.resolve(2, "plug.example.org", &[Record::A("plug.example.org", 300, [10, 78, 4, 2])]);
    let changed = POLICY.replace("protocol = \"icmp\"", "protocol = \"udp\"");
    both.tracker.set_policy(&check_text(&changed));
    let active = both.tracker.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].policy_id, CAMERA);
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
    let camera_policy = compiled.class("camera").expect("camera").policy_id;
    let mut camera = Device::new(&compiled, &policies_in_force(Access::Enrolled, camera_policy));
    let update = camera.resolve(
        1,
        NAME,
        &[
            Record::Cname(NAME, 600, "edge7.cdn.camera.example.net"),
            Record::A("edge7.cdn.camera.example.net", 45, [10, 78, 7, 7]),
        ],
    );
    // Both the name and the CDN wildcard allow it; the two bindings make one entry.
    assert_eq!(update.added.len(), 2);
    assert_eq!(camera.tracker.active().len(), 1);
    let (rules, refused) = compiled.rules_with(&camera.tracker.active());
    assert!(refused.is_empty());
    let host: IpNet = "10.78.7.7/32".parse().expect("net");
    let entry = rules.iter().find(|rule| rule.net == host).expect("DNS-derived entry");
    assert_eq!((entry.policy_id, entry.proto), (camera_policy, proto::TCP));
    assert_eq!(entry.matches, outbound(&[(443, 443)]));
    assert_eq!(rules.len(), compiled.rules.len() + 1);
    camera.tracker.tick(camera.now + Duration::from_secs(45));
    let (rules, _) = compiled.rules_with(&camera.tracker.active());
    assert_eq!(rules, compiled.rules);
}

/// Where a resolver on the gateway itself listens: its LAN addresses.
const GATEWAY_V4: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 53);
const GATEWAY_V6: &str = "[fd77::1]:53";

/// The camera, its tracker told the gateway's own addresses.
fn camera_behind_a_resolving_gateway() -> Device {
    let policy = check_text(POLICY);
    let mut camera = Device::new(&policy, &[CAMERA]);
    let gateway: SocketAddr = GATEWAY_V6.parse().expect("address");
    let addresses = vec![IpAddr::V4(*GATEWAY_V4.ip()), gateway.ip()];
    camera.tracker = DnsTracker::new(&policy, &DnsConfig::default()).with_gateway_addresses(addresses);
    camera
}

#[test]
fn the_gateways_own_resolver_opens_names_by_the_same_rules_and_is_counted_apart() {
    let mut camera = camera_behind_a_resolving_gateway();
    let device = SocketAddrV4::new(DEVICE_IP, 40_001);
    let query = message(1, NAME, RecordType::A, false, &[]);
    assert_eq!(
        camera.feed(&udp_sample(SampleKind::Dns, device, GATEWAY_V4, &query, time(0))),
        Outcome::Query { evicted: 0 }
    );

    // Another device's forgery is a LAN-side sample (the LAN egress program never samples
    // what the gateway forwards): never an answer.
    let forged = message(1, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 9, 9])]);
    let from_lan = udp_sample(SampleKind::Dns, GATEWAY_V4, device, &forged, time(5));
    assert_eq!(camera.feed(&from_lan), Outcome::Ignored(DnsError::NotAQuery));
    // The query went to the gateway: an answer from upstream does not answer it.
    assert_eq!(refusal(camera.answer_from(RESOLVER, 40_001, &forged, 6)), Some(Refusal::WrongResolver));
    let wrong_id = message(2, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 9, 9])]);
    assert_eq!(refusal(camera.answer_from(GATEWAY_V4, 40_001, &wrong_id, 7)), Some(Refusal::WrongId));
    assert!(camera.tracker.is_empty());

    let genuine = message(1, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 1, 17])]);
    let Outcome::Answer(update) = camera.answer_from(GATEWAY_V4, 40_001, &genuine, 10) else { panic!("not matched") };
    assert_eq!(update.source, AnswerSource::GatewayResolver);
    assert_eq!(update.added.len(), 1);
    assert_eq!(update.added[0].rule.net, "10.78.1.17/32".parse::<IpNet>().expect("net"));
    assert_eq!(refusal(camera.answer_from(GATEWAY_V4, 40_001, &genuine, 20)), Some(Refusal::Duplicate));
    assert_eq!(refusal(camera.answer_from(GATEWAY_V4, 40_002, &genuine, 20)), Some(Refusal::Unsolicited));
    let late_query = SocketAddrV4::new(DEVICE_IP, 40_003);
    let query = message(3, NAME, RecordType::A, false, &[]);
    camera.feed(&udp_sample(SampleKind::Dns, late_query, GATEWAY_V4, &query, time(0)));
    let late = message(3, NAME, RecordType::A, true, &[Record::A(NAME, 300, [10, 78, 9, 8])]);
    assert_eq!(refusal(camera.answer_from(GATEWAY_V4, 40_003, &late, 5_001)), Some(Refusal::Late));

    // Answers from upstream are still matched, and counted as such.
    assert_eq!(camera.resolve(4, NAME, &[Record::A(NAME, 300, [10, 78, 1, 18])]).source, AnswerSource::Upstream);
}

#[test]
fn the_gateways_own_resolver_is_followed_over_ipv6() {
    let mut camera = camera_behind_a_resolving_gateway();
    let gateway: SocketAddr = GATEWAY_V6.parse().expect("address");
    let device: SocketAddr = "[fd77::10]:40001".parse().expect("address");
    let query = message(1, NAME, RecordType::AAAA, false, &[]);
    assert!(matches!(
        camera.feed(&udp_sample(SampleKind::Dns, device, gateway, &query, time(0))),
        Outcome::Query { .. }
    ));
    let v6: Ipv6Addr = "2001:db8:78::17".parse().expect("addr");
    let answer = message(1, NAME, RecordType::AAAA, true, &[Record::Aaaa(NAME, 300, v6)]);
    let other_device: SocketAddr = "[fd77::11]:40001".parse().expect("address");
    let misdirected = udp_sample(SampleKind::DnsAnswer, gateway, other_device, &answer, time(5));
    assert_eq!(refusal(camera.feed(&misdirected)), Some(Refusal::Unsolicited));
    let Outcome::Answer(update) = camera.feed(&udp_sample(SampleKind::DnsAnswer, gateway, device, &answer, time(10)))
    else {
        panic!("not matched")
    };
    assert_eq!(update.source, AnswerSource::GatewayResolver);
    assert_eq!(update.added.len(), 1);
    assert_eq!(update.added[0].rule.net, IpNet::from(IpAddr::V6(v6)));
}
