//! Property tests of the policy parser, compiler, MUD importer and DNS tracker, run by
//! `cargo test`: random and mutated input never panics, and compiled entries, looked up the
//! way the datapath does, allow exactly what the source rules allow. Seeds are fixed so a
//! failure reproduces; each test is bounded in iterations. Test code only: the cargo-fuzz
//! targets in `fuzz/` do not use it, they call the public API (`parse_sources`, `compile`,
//! `mud`, `DnsTracker`) themselves.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Instant,
};

use gateway_ebpf::{MAX_PORT_MATCHES, opener, proto};
use ipnet::IpNet;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use super::{
    CompiledPolicy, CompiledRule, DnsTracker, PolicyId, compile,
    entries::{PortMatchKey, merged_matches, tests::outbound},
    load::parse_sources,
    mud,
};

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
    let mut tracker = DnsTracker::new(&compiled);
    let sample = include_str!("testdata/lightbulb.mud.json");
    for _ in 0..1000 {
        let length = rng.gen_range(0..300);
        let bytes: Vec<u8> = (0..length).map(|_| rng.r#gen()).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = parse_sources(&[("r.toml".into(), text.clone())]);
        let _ = mud::import(&text, "x", 1);
        let _ = tracker.observe(&[PolicyId(26)], &bytes, Instant::now());
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
    net: IpNet,
    /// `None`: any protocol.
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
    fn admits(&self, probe: &Probe) -> bool {
        let within =
            |ranges: &[(u16, u16)], port: u16| ranges.iter().any(|(first, last)| *first <= port && port <= *last);
        if !self.net.contains(&probe.addr) || self.proto.is_some_and(|p| p != probe.proto) {
            return false;
        }
        [opener::DEVICE, opener::REMOTE].into_iter().filter(|who| self.openers & probe.opener & who != 0).any(|who| {
            match self.proto {
                None => true,
                Some(proto::ICMP) if self.icmp.is_empty() => true,
                Some(proto::ICMP) => {
                    let (kind, code) = ((probe.remote_port >> 8) as u8, probe.remote_port as u8);
                    self.icmp.iter().any(|(wanted, wanted_code)| {
                        // The device sends the message itself, or the reply to the remote's.
                        let sent = if who == opener::DEVICE { Some(*wanted) } else { echo_or_timestamp_reply(*wanted) };
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

/// The reply to an ICMP request among the ones the generator writes (echo, timestamp).
fn echo_or_timestamp_reply(request: u8) -> Option<u8> {
    match request {
        8 => Some(0),
        13 => Some(14),
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

#[test]
fn compiled_entries_with_dns_entries_allow_exactly_what_the_rules_allow() {
    const NETS: &[&str] = &["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.2.0.0/16", "0.0.0.0/0"];
    const PORTS: &[&str] = &["22", "53", "80", "443", "\"8000-8100\"", "\"1-1024\""];
    const SOURCE_PORTS: &[&str] = &["53", "443", "\"40000-40100\"", "\"1024-65535\""];
    const ICMP_TYPES: &[(&str, (u8, Option<u8>))] =
        &[("\"8/0\"", (8, Some(0))), ("\"8\"", (8, None)), ("\"3/1\"", (3, Some(1))), ("\"13\"", (13, None))];
    const PROBE_ADDRS: &[[u8; 4]] =
        &[[10, 1, 2, 3], [10, 1, 2, 4], [10, 1, 5, 5], [10, 2, 0, 1], [10, 3, 0, 1], [11, 0, 0, 1]];
    const PROBE_PORTS: &[u16] = &[22, 53, 80, 443, 1000, 8050, 8883, 9999, 40_050];
    const PROBE_ICMP: &[u16] = &[0x0800, 0x0801, 0x0000, 0x0301, 0x0303, 0x0d00, 0x0e00, 0x0b00];
    let mut rng = StdRng::seed_from_u64(0x1077_0003);
    let mut checked = 0;
    for _ in 0..300 {
        let mut text = String::from("[[class]]\nname = \"c\"\nid = 1\n");
        let mut source = Vec::new();
        for _ in 0..rng.gen_range(1..7) {
            let net = *NETS.choose(&mut rng).expect("non-empty");
            let (protocol, proto_number) =
                *[("tcp", Some(proto::TCP)), ("udp", Some(proto::UDP)), ("icmp", Some(proto::ICMP)), ("any", None)]
                    .choose(&mut rng)
                    .expect("non-empty");
            let (direction, openers) =
                *[("outbound", opener::DEVICE), ("inbound", opener::REMOTE), ("both", opener::EITHER)]
                    .choose(&mut rng)
                    .expect("non-empty");
            let mut rule = SourceRule {
                net: net.parse().expect("net"),
                proto: proto_number,
                ports: vec![(0, u16::MAX)],
                source_ports: vec![(0, u16::MAX)],
                icmp: Vec::new(),
                openers,
            };
            text.push_str(&format!(
                "[[class.allow]]\nnets = [\"{net}\"]\nprotocol = \"{protocol}\"\ndirection = \"{direction}\"\n"
            ));
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
        // DNS-derived host entries (outbound), merged the way the controller merges them.
        let mut dynamic = Vec::new();
        for _ in 0..rng.gen_range(0..4) {
            let addr = IpAddr::V4(Ipv4Addr::from(*PROBE_ADDRS.choose(&mut rng).expect("non-empty")));
            let (proto_number, port) =
                *[(proto::TCP, 8883u16), (proto::UDP, 53), (proto::ANY, 0)].choose(&mut rng).expect("non-empty");
            let (first, last) = if proto_number == proto::ANY { (0, u16::MAX) } else { (port, port) };
            let net = IpNet::from(addr);
            dynamic.push(CompiledRule { policy_id: id, proto: proto_number, net, matches: outbound(&[(first, last)]) });
            source.push(SourceRule {
                net,
                proto: (proto_number != proto::ANY).then_some(proto_number),
                ports: vec![(first, last)],
                source_ports: vec![(0, u16::MAX)],
                icmp: Vec::new(),
                openers: opener::DEVICE,
            });
        }
        let (rules, refused) = compiled.rules_with(&dynamic);
        if !refused.is_empty() {
            continue;
        }
        for addr in PROBE_ADDRS {
            let addr = IpAddr::V4(Ipv4Addr::from(*addr));
            for who in [opener::DEVICE, opener::REMOTE, opener::EITHER] {
                let mut probes = Vec::new();
                // TCP and UDP have rules of their own; ICMPv6 and GRE only get ANY's.
                for proto_number in [proto::TCP, proto::UDP, proto::ICMPV6, GRE] {
                    for remote_port in PROBE_PORTS {
                        for device_port in PROBE_PORTS {
                            let (remote_port, device_port) = (*remote_port, *device_port);
                            probes.push(Probe { addr, proto: proto_number, remote_port, device_port, opener: who });
                        }
                    }
                }
                for message in PROBE_ICMP {
                    probes.push(Probe { addr, proto: proto::ICMP, remote_port: *message, device_port: 0, opener: who });
                }
                for probe in probes {
                    let expected = source.iter().any(|rule| rule.admits(&probe));
                    let actual = datapath_allows(&rules, id, &probe);
                    assert_eq!(actual, expected, "{probe:?}\n{text}\n{dynamic:#?}\n{rules:#?}");
                }
            }
        }
        checked += 1;
    }
    // Refusals (too many combinations) are legitimate, but most policies must be checked.
    assert!(checked > 200, "only {checked} of 300 generated policies compiled");
}
