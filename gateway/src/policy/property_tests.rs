//! Property tests of the policy parser, compiler, MUD importer and DNS tracker, run by
//! `cargo test`: random and mutated input never panics, and compiled entries, looked up the
//! way the datapath does, allow exactly what the source rules allow, in IPv4 and IPv6. Seeds are fixed so a
//! failure reproduces; each test is bounded in iterations. Test code only: the cargo-fuzz
//! targets in `fuzz/` do not use it, they call the public API (`parse_sources`, `compile`,
//! `mud`, `DnsTracker`) themselves.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::Instant,
};

use gateway_ebpf::{MAX_PORT_MATCHES, opener, proto};
use ipnet::IpNet;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use hickory_proto::rr::RecordType;

use super::{
    CompiledPolicy, CompiledRule, DnsTracker, PolicyId, compile,
    dns::tests::{RESOLVER, Record, message, udp_sample},
    entries::{PortMatchKey, merged_matches},
    load::parse_sources,
    model::Family,
    mud,
};
use crate::datapath::events::{PacketSample, SampleKind};

/// The shipped policy files, the seeds of the mutation corpus.
fn shipped() -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
    let files = super::load::toml_files(&dir).expect("policies/ is readable");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable policy file");
            (path, text)
        })
        .collect()
}

/// Fragments that make TOML interesting: table headers, quotes, brackets, keys we know.
const FRAGMENTS: &[&str] = &[
    "[[class]]\n",
    "[[class.allow]]\n",
    "[lanes.update]\n",
    "[defaults]\n",
    "[[response]]\n",
    "\"",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    "\n",
    "#",
    "name = \"x\"\n",
    "id = 65536\n",
    "id = -1\n",
    "ports = [\"1-\", 99999]\n",
    "nets = [\"::/129\"]\n",
    "include = [\"camera\"]\n",
    "protocol = \"icmp\"\n",
    "icmp_types = [\"8/0\", \"3\", 256]\n",
    "source_ports = [1, \"2-1\"]\n",
    "direction = \"inbound\"\n",
    "\u{1F600}",
    "\\u0000",
    "'''",
    "names = [\"*.*\"]\n",
];

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..rng.gen_range(1..6) {
        let at = if chars.is_empty() { 0 } else { rng.gen_range(0..chars.len()) };
        match rng.gen_range(0..5) {
            0 if !chars.is_empty() => {
                chars.remove(at);
            }
            1 => {
                let fragment = FRAGMENTS.choose(rng).expect("non-empty");
                for (offset, c) in fragment.chars().enumerate() {
                    chars.insert(at + offset, c);
                }
            }
            2 if !chars.is_empty() => chars[at] = char::from(rng.gen_range(0x20u8..0x7f)),
            3 => chars.truncate(at),
            _ => {
                // Duplicate a slice (repeats tables and keys).
                let end = (at + rng.gen_range(0..200)).min(chars.len());
                let slice: Vec<char> = chars[at..end].to_vec();
                let insert_at = rng.gen_range(0..=chars.len());
                for (offset, c) in slice.into_iter().enumerate() {
                    chars.insert(insert_at + offset, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_policy_files_never_panic_and_errors_point_inside_the_files() {
    let corpus = shipped();
    let mut rng = StdRng::seed_from_u64(0x1077_0001);
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..1500 {
        let mut sources = corpus.clone();
        let victim = rng.gen_range(0..sources.len());
        sources[victim].1 = mutate(&mut rng, &sources[victim].1);
        match parse_sources(&sources) {
            Ok(policy) => {
                // Whatever parses must compile or be refused with errors, never panic.
                if let Ok(compiled) = compile(&policy) {
                    check_invariants(&compiled);
                }
            }
            Err(errors) => {
                refused += 1;
                assert!(!errors.is_empty());
                for error in errors {
                    let text = &sources.iter().find(|(path, _)| *path == *error.at.file).expect("known file").1;
                    assert!(error.at.line >= 1 && error.at.line <= text.lines().count().max(1) + 1, "{error}");
                    assert!(error.at.column >= 1);
                }
            }
        }
    }
    assert!(refused > 100, "mutations should mostly break the files ({refused} refused)");
    assert!(started.elapsed().as_secs() < 120, "fuzz loop too slow");
}

#[test]
fn random_bytes_never_panic_the_parser_the_mud_importer_or_the_dns_tracker() {
    let mut rng = StdRng::seed_from_u64(0x1077_0002);
    let compiled = super::check(&[concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")], super::no_extension)
        .expect("shipped policies");
    let mut tracker = DnsTracker::new(&compiled, &super::dns::DnsConfig::default());
    let sample = include_str!("testdata/lightbulb.mud.json");
    for _ in 0..1000 {
        let length = rng.gen_range(0..300);
        let bytes: Vec<u8> = (0..length).map(|_| rng.r#gen()).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = parse_sources(&[("r.toml".into(), text.clone())]);
        let _ = mud::import(&text, "x", 1);
        // The bytes as a whole sample, then as a query (the same bytes with the QR bit clear)
        // and its answer, so that whatever parses reaches the answer's records.
        let (device, resolver) = (SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 10), 40_000), RESOLVER);
        let mut query = bytes.clone();
        if let Some(flags) = query.get_mut(2) {
            *flags &= 0x7f;
        }
        let time = std::time::SystemTime::UNIX_EPOCH;
        let raw =
            PacketSample { data: bytes.clone(), ..udp_sample(SampleKind::DnsAnswer, resolver, device, &[], time) };
        for sample in [
            raw,
            udp_sample(SampleKind::Dns, device, resolver, &query, time),
            udp_sample(SampleKind::DnsAnswer, resolver, device, &bytes, time),
        ] {
            let _ = tracker.sample(&sample, |_| vec![PolicyId(26)], Instant::now());
        }
        let _ = mud::import(&mutate(&mut rng, sample), "x", 1);
    }
}

/// Every entry is within the ABI's limits, normalised.
fn check_invariants(compiled: &CompiledPolicy) {
    for rule in &compiled.rules {
        assert!(!rule.matches.is_empty() && rule.matches.len() <= MAX_PORT_MATCHES, "{rule:?}");
        assert_eq!(rule.net, rule.net.trunc());
        assert_eq!(merged_matches(rule.matches.clone()), rule.matches, "{rule:?}");
    }
}

/// A protocol outside `proto::FOLDED`: only ANY entries admit it.
const GRE: u8 = 0x2f;

/// A packet from a device as the datapath judges it.
#[derive(Clone, Copy, Debug)]
struct Probe {
    addr: IpAddr,
    proto: u8,
    /// The destination port; ICMP: `type << 8 | code`.
    remote_port: u16,
    /// The source port; 0 for ICMP.
    device_port: u16,
    /// `opener` bits: what the datapath knows of who opened.
    opener: u8,
}

/// What a rule in the random policies says, evaluated directly from its words.
struct SourceRule {
    nets: Vec<IpNet>,
    /// Its `names`: what they resolve to is given to `admits`.
    names: Vec<&'static str>,
    /// `family`: `None` for both.
    family: Option<Family>,
    /// `None`: any protocol. `ICMP` stands for the ICMP of the packet's family (ICMPv6 to an
    /// IPv6 address).
    proto: Option<u8>,
    /// The opener's destination ports.
    ports: Vec<(u16, u16)>,
    /// The opener's source ports.
    source_ports: Vec<(u16, u16)>,
    /// ICMP (type, code); empty: every message.
    icmp: Vec<(u8, Option<u8>)>,
    /// `opener` bits: who may open.
    openers: u8,
}

impl SourceRule {
    /// Whether the rule admits `probe`, its names having resolved to `resolved`.
    fn admits(&self, probe: &Probe, resolved: &[(&str, IpAddr)]) -> bool {
        let within =
            |ranges: &[(u16, u16)], port: u16| ranges.iter().any(|(first, last)| *first <= port && port <= *last);
        let v6 = probe.addr.is_ipv6();
        if self.family.is_some_and(|family| (family == Family::Ipv6) != v6) {
            return false;
        }
        let named = resolved.iter().any(|(name, addr)| self.names.contains(name) && *addr == probe.addr);
        if !(named || self.nets.iter().any(|net| net.contains(&probe.addr))) {
            return false;
        }
        let proto = match self.proto {
            Some(proto::ICMP) if v6 => Some(proto::ICMPV6),
            other => other,
        };
        if proto.is_some_and(|p| p != probe.proto) {
            return false;
        }
        [opener::DEVICE, opener::REMOTE].into_iter().filter(|who| self.openers & probe.opener & who != 0).any(|who| {
            match proto {
                None => true,
                Some(proto::ICMP | proto::ICMPV6) if self.icmp.is_empty() => true,
                Some(proto::ICMP | proto::ICMPV6) => {
                    let (kind, code) = ((probe.remote_port >> 8) as u8, probe.remote_port as u8);
                    self.icmp.iter().any(|(wanted, wanted_code)| {
                        // The device sends the message itself, or the reply to the remote's.
                        let sent = if who == opener::DEVICE { Some(*wanted) } else { reply_to(v6, *wanted) };
                        sent == Some(kind) && wanted_code.is_none_or(|c| c == code)
                    })
                }
                Some(_) if who == opener::DEVICE => {
                    within(&self.ports, probe.remote_port) && within(&self.source_ports, probe.device_port)
                }
                Some(_) => within(&self.ports, probe.device_port) && within(&self.source_ports, probe.remote_port),
            }
        })
    }
}

/// The reply to an ICMP request among the types the generator writes: echo and timestamp in
/// ICMP, echo in ICMPv6 (RFC 792, RFC 4443); the others have none.
fn reply_to(v6: bool, request: u8) -> Option<u8> {
    match (v6, request) {
        (false, 8) => Some(0),
        (false, 13) => Some(14),
        (true, 128) => Some(129),
        _ => None,
    }
}

/// The datapath as `gateway-ebpf/src/policy.rs` implements it: for the folded protocols
/// (`proto::FOLDED`), allowed when the longest (policy, proto) prefix admits the packet; for
/// the others, when that one or the longest (policy, ANY) prefix does. Also checks the
/// entries answer the same under the two-lookup reading for every protocol (ANY folding
/// changes nothing) and under the strict one.
fn datapath_allows(rules: &[CompiledRule], policy: PolicyId, probe: &Probe) -> bool {
    let longest = |wanted: u8| longest_prefix(rules, policy, probe.addr, wanted);
    let admits = |rule: Option<&CompiledRule>| rule.is_some_and(|rule| admits_packet(rule, probe));
    let lenient = admits(longest(probe.proto)) || admits(longest(proto::ANY));
    let strict = longest(probe.proto).or_else(|| longest(proto::ANY)).is_some_and(|rule| admits_packet(rule, probe));
    assert_eq!(lenient, strict, "entries must answer the same under either lookup order");
    if proto::FOLDED.contains(&probe.proto) {
        let one_lookup = admits(longest(probe.proto));
        assert_eq!(one_lookup, lenient, "a folded protocol's own entry must answer for ANY too");
        one_lookup
    } else {
        lenient
    }
}

/// The entry an LPM lookup of (`policy`, `proto_number`, `addr`) finds.
fn longest_prefix(rules: &[CompiledRule], policy: PolicyId, addr: IpAddr, proto_number: u8) -> Option<&CompiledRule> {
    rules
        .iter()
        .filter(|rule| rule.policy_id == policy && rule.proto == proto_number && rule.net.contains(&addr))
        .max_by_key(|rule| rule.net.prefix_len())
}

/// `rule_allows` of the datapath: a match of the packet's opener holding both its ports.
fn admits_packet(rule: &CompiledRule, probe: &Probe) -> bool {
    rule.matches.iter().any(|admitted: &PortMatchKey| {
        admitted.openers & probe.opener != 0
            && admitted.remote.first <= probe.remote_port
            && probe.remote_port <= admitted.remote.last
            && admitted.device.first <= probe.device_port
            && probe.device_port <= admitted.device.last
    })
}

/// A port list as the files write it and as ranges.
fn port_list(rng: &mut StdRng, choices: &[&str]) -> (String, Vec<(u16, u16)>) {
    let count = rng.gen_range(1..3);
    let chosen: Vec<&str> = choices.choose_multiple(rng, count).copied().collect();
    let ranges = chosen
        .iter()
        .map(|port| {
            let trimmed = port.trim_matches('"');
            match trimmed.split_once('-') {
                Some((a, b)) => (a.parse().expect("port"), b.parse().expect("port")),
                None => {
                    let p = trimmed.parse().expect("port");
                    (p, p)
                }
            }
        })
        .collect();
    (chosen.join(", "), ranges)
}

/// A query for `name` (A or AAAA by `addr`'s family) and the resolver's answer with `addr`,
/// fed to `tracker` as the datapath samples them; the answer must open something.
fn resolve(tracker: &mut DnsTracker, policy: PolicyId, id: u16, name: &str, addr: IpAddr) {
    let device = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 10), 40_000 + id);
    let (kind, record) = match addr {
        IpAddr::V4(v4) => (RecordType::A, Record::A(name, 300, v4.octets())),
        IpAddr::V6(v6) => (RecordType::AAAA, Record::Aaaa(name, 300, v6)),
    };
    let time = std::time::SystemTime::UNIX_EPOCH;
    let query = udp_sample(SampleKind::Dns, device, RESOLVER, &message(id, name, kind, false, &[]), time);
    let answer = message(id, name, kind, true, &[record]);
    let answer = udp_sample(SampleKind::DnsAnswer, RESOLVER, device, &answer, time);
    let now = Instant::now();
    for sample in [query, answer] {
        tracker.sample(&sample, |_| vec![policy], now);
    }
}

#[test]
fn compiled_entries_with_dns_entries_allow_exactly_what_the_rules_allow() {
    const NETS_V4: &[&str] = &["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.2.0.0/16", "0.0.0.0/0"];
    const NETS_V6: &[&str] =
        &["2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "2001:db8:1:2::3/128", "2001:db8:2::/48", "::/0"];
    const NAMES: &[&str] = &["a.example", "b.example"];
    const PORTS: &[&str] = &["22", "53", "80", "443", "\"8000-8100\"", "\"1-1024\""];
    const SOURCE_PORTS: &[&str] = &["53", "443", "\"40000-40100\"", "\"1024-65535\""];
    // ICMP and ICMPv6 types with and without a reply, written for rules of either family.
    const ICMP_TYPES: &[(&str, (u8, Option<u8>))] = &[
        ("\"8/0\"", (8, Some(0))),
        ("\"8\"", (8, None)),
        ("\"3/1\"", (3, Some(1))),
        ("\"13\"", (13, None)),
        ("\"128\"", (128, None)),
        ("\"128/0\"", (128, Some(0))),
        ("\"1/4\"", (1, Some(4))),
    ];
    const PROBE_ADDRS: &[&str] = &[
        "10.1.2.3",
        "10.1.2.4",
        "10.1.5.5",
        "10.2.0.1",
        "10.3.0.1",
        "11.0.0.1",
        "2001:db8:1:2::3",
        "2001:db8:1:2::4",
        "2001:db8:1:5::5",
        "2001:db8:2::1",
        "2001:db8:3::1",
        "2001:db9::1",
    ];
    const PROBE_PORTS: &[u16] = &[22, 53, 80, 443, 1000, 8050, 8883, 9999, 40_050];
    const PROBE_ICMP: &[u16] =
        &[0x0800, 0x0801, 0x0000, 0x0301, 0x0303, 0x0d00, 0x0e00, 0x0b00, 0x8000, 0x8100, 0x0104];
    let mut rng = StdRng::seed_from_u64(0x1077_0003);
    let (mut checked, mut one_family, mut named) = (0, 0, 0);
    let mut admitted = [0usize; 2];
    for _ in 0..300 {
        let mut text = String::from("[[class]]\nname = \"c\"\nid = 1\n");
        let mut source = Vec::new();
        for _ in 0..rng.gen_range(1..7) {
            let family = *[None, None, Some(Family::Ipv4), Some(Family::Ipv6)].choose(&mut rng).expect("non-empty");
            let candidates: Vec<&str> = match family {
                None => NETS_V4.iter().chain(NETS_V6).copied().collect(),
                Some(Family::Ipv4) => NETS_V4.to_vec(),
                Some(Family::Ipv6) => NETS_V6.to_vec(),
            };
            // Networks, names, or both.
            let (with_nets, with_names) =
                *[(true, false), (true, false), (false, true), (true, true)].choose(&mut rng).expect("non-empty");
            let count = rng.gen_range(1..3);
            let nets: Vec<&str> =
                if with_nets { candidates.choose_multiple(&mut rng, count).copied().collect() } else { Vec::new() };
            let names: Vec<&'static str> =
                if with_names { vec![*NAMES.choose(&mut rng).expect("non-empty")] } else { Vec::new() };
            let (protocol, proto_number) =
                *[("tcp", Some(proto::TCP)), ("udp", Some(proto::UDP)), ("icmp", Some(proto::ICMP)), ("any", None)]
                    .choose(&mut rng)
                    .expect("non-empty");
            let (direction, openers) =
                *[("outbound", opener::DEVICE), ("inbound", opener::REMOTE), ("both", opener::EITHER)]
                    .choose(&mut rng)
                    .expect("non-empty");
            let mut rule = SourceRule {
                nets: nets.iter().map(|net| net.parse().expect("net")).collect(),
                names: names.clone(),
                family,
                proto: proto_number,
                ports: vec![(0, u16::MAX)],
                source_ports: vec![(0, u16::MAX)],
                icmp: Vec::new(),
                openers,
            };
            let quoted = |list: &[&str]| list.iter().map(|item| format!("\"{item}\"")).collect::<Vec<_>>().join(", ");
            text.push_str(&format!("[[class.allow]]\nprotocol = \"{protocol}\"\ndirection = \"{direction}\"\n"));
            if with_nets {
                text.push_str(&format!("nets = [{}]\n", quoted(&nets)));
            }
            if with_names {
                text.push_str(&format!("names = [{}]\n", quoted(&names)));
            }
            if let Some(family) = family {
                text.push_str(&format!("family = \"{}\"\n", family.as_str()));
                one_family += 1;
            }
            if matches!(protocol, "tcp" | "udp") {
                let (written, ranges) = port_list(&mut rng, PORTS);
                text.push_str(&format!("ports = [{written}]\n"));
                rule.ports = ranges;
                if rng.gen_bool(0.5) {
                    let (written, ranges) = port_list(&mut rng, SOURCE_PORTS);
                    text.push_str(&format!("source_ports = [{written}]\n"));
                    rule.source_ports = ranges;
                }
            }
            if protocol == "icmp" && rng.gen_bool(0.7) {
                let count = rng.gen_range(1..3);
                let chosen: Vec<_> = ICMP_TYPES.choose_multiple(&mut rng, count).copied().collect();
                let written: Vec<&str> = chosen.iter().map(|(written, _)| *written).collect();
                text.push_str(&format!("icmp_types = [{}]\n", written.join(", ")));
                rule.icmp = chosen.iter().map(|(_, parsed)| *parsed).collect();
            }
            source.push(rule);
        }
        let policy = parse_sources(&[("p.toml".into(), text.clone())]).expect("generated policies are valid");
        let compiled = match compile(&policy) {
            Ok(compiled) => compiled,
            // Too many port combinations for one destination is a legitimate refusal.
            Err(errors) => {
                assert!(
                    errors.iter().all(|e| matches!(e.kind, super::ErrorKind::TooManyPortRanges { .. })),
                    "{errors:?}"
                );
                continue;
            }
        };
        check_invariants(&compiled);
        let id = compiled.classes[0].policy_id;
        // Names resolve to addresses of either family, through the tracker, whose entries
        // merge with the compiled ones the way the controller merges them.
        let mut tracker = DnsTracker::new(&compiled, &super::dns::DnsConfig::default());
        let mut resolved = Vec::new();
        for query_id in 0..rng.gen_range(0..4) {
            let name = *NAMES.choose(&mut rng).expect("non-empty");
            let addr: IpAddr = PROBE_ADDRS.choose(&mut rng).expect("non-empty").parse().expect("addr");
            resolve(&mut tracker, id, query_id, name, addr);
            resolved.push((name, addr));
        }
        let dynamic = tracker.active();
        named += dynamic.len();
        let (rules, refused) = compiled.rules_with(&dynamic);
        if !refused.is_empty() {
            continue;
        }
        for addr in PROBE_ADDRS {
            let addr: IpAddr = addr.parse().expect("addr");
            // The family's own ICMP has rules of its own; the other one, and GRE, only ANY's.
            let (icmp, other_icmp) =
                if addr.is_ipv6() { (proto::ICMPV6, proto::ICMP) } else { (proto::ICMP, proto::ICMPV6) };
            for who in [opener::DEVICE, opener::REMOTE, opener::EITHER] {
                let mut probes = Vec::new();
                for proto_number in [proto::TCP, proto::UDP, other_icmp, GRE] {
                    for remote_port in PROBE_PORTS {
                        for device_port in PROBE_PORTS {
                            let (remote_port, device_port) = (*remote_port, *device_port);
                            probes.push(Probe { addr, proto: proto_number, remote_port, device_port, opener: who });
                        }
                    }
                }
                for message in PROBE_ICMP {
                    probes.push(Probe { addr, proto: icmp, remote_port: *message, device_port: 0, opener: who });
                }
                for probe in probes {
                    let expected = source.iter().any(|rule| rule.admits(&probe, &resolved));
                    let actual = datapath_allows(&rules, id, &probe);
                    assert_eq!(actual, expected, "{probe:?}\n{text}\n{resolved:?}\n{dynamic:#?}\n{rules:#?}");
                    admitted[usize::from(addr.is_ipv6())] += usize::from(actual);
                }
            }
        }
        checked += 1;
    }
    // Refusals (too many combinations) are legitimate, but most policies must be checked, and
    // each family, names and one-family rules must be exercised.
    assert!(checked > 200, "only {checked} of 300 generated policies compiled");
    assert!(admitted.iter().all(|count| *count > 10_000), "admitted (IPv4, IPv6): {admitted:?}");
    assert!(named > 100 && one_family > 200, "{named} DNS entries, {one_family} one-family rules");
}
